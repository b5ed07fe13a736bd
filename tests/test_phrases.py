"""Tests for the words of health reasons and dates: monitor/phrases.py and program/wording.py."""

from __future__ import annotations

import string
from datetime import UTC, date, datetime, timedelta, timezone
from email import policy
from email.parser import BytesParser

import pytest

from mailer.compose import Composer
from mailer.notice import Notice, _day, compose_notice
from monitor import phrases
from monitor.health import Event, Health, Member, judge, judge_many
from program import wording
from tests.test_health import KELSEY, PAIR, START, checkin, day, message

NB = "\u00a0"  # French puts a no-break space inside « » and before ":" and ";"


def health(events: list[Event], now: float, language: str, started: datetime = START) -> Health:
    return judge(
        members=PAIR,
        events=events,
        started=started,
        status="active",
        now=day(now),
        language=language,
    )


def fields(sentence: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(sentence) if name is not None}


# Phrasebooks ---------------------------------------------------------------------------------


@pytest.mark.parametrize("language", sorted(phrases.PHRASEBOOKS))
def test_every_phrasebook_has_english_keys_and_placeholders(language: str) -> None:
    """Each phrasebook has exactly English's sentence keys, each with the same {placeholders}."""
    book = phrases.PHRASEBOOKS[language]
    english = phrases.ENGLISH.sentences
    assert set(book.sentences) == set(english)
    for key, sentence in english.items():
        assert fields(book.sentences[key]) == fields(sentence), key
    assert book.language == language
    assert len(book.counts) == len(phrases.ENGLISH.counts)


def test_book_reads_the_primary_subtag_and_falls_back_to_english() -> None:
    """book() takes "fr-CA" and "es_MX" by their language; an unknown language gets English."""
    assert phrases.book("fr") is phrases.FRENCH
    assert phrases.book("fr-CA") is phrases.FRENCH
    assert phrases.book("ES_mx") is phrases.SPANISH
    assert phrases.book("de") is phrases.ENGLISH
    assert phrases.book("") is phrases.ENGLISH


def test_counts_in_words_then_in_figures() -> None:
    """Once and twice are words in each language; more is a figure with the word for times."""
    assert [phrases.FRENCH.count(n) for n in (1, 2, 3)] == ["une fois", "deux fois", "3 fois"]
    assert [phrases.SPANISH.count(n) for n in (1, 2, 3)] == ["una vez", "dos veces", "3 veces"]
    assert [phrases.ENGLISH.count(n) for n in (1, 2, 3)] == ["once", "twice", "3 times"]


def test_phrasebook_dates_are_utc_days_with_the_year_only_when_not_now_s() -> None:
    """Phrasebook.date: the UTC calendar day, its year written only when it is not now's."""
    paris = timezone(timedelta(hours=2))
    first = datetime(2026, 4, 2, 1, 30, tzinfo=paris)  # 1 April 2026, 23:30 UTC
    now = datetime(2026, 6, 1, tzinfo=UTC)
    assert phrases.FRENCH.date(first, now) == "1er avril"
    assert phrases.SPANISH.date(first, now) == "1 de abril"
    assert phrases.ENGLISH.date(first, now) == "1 April"
    later = datetime(2027, 1, 5, tzinfo=UTC)
    assert phrases.FRENCH.date(first, later) == "1er avril 2026"
    assert phrases.SPANISH.date(first, later) == "1 de abril de 2026"
    assert phrases.ENGLISH.date(first, later) == "1 April 2026"


# program/wording ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("language", "when", "with_year", "without_year"),
    [
        ("en", date(2026, 3, 3), "3 March 2026", "3 March"),
        ("en", date(2026, 4, 1), "1 April 2026", "1 April"),
        ("fr", date(2026, 3, 3), "3 mars 2026", "3 mars"),
        ("fr", date(2026, 4, 1), "1er avril 2026", "1er avril"),
        ("fr", date(2026, 12, 11), "11 décembre 2026", "11 décembre"),
        ("es", date(2026, 3, 3), "3 de marzo de 2026", "3 de marzo"),
        ("es", date(2026, 4, 1), "1 de abril de 2026", "1 de abril"),
        ("fr-CA", date(2026, 4, 1), "1er avril 2026", "1er avril"),
        ("fr_CA", date(2026, 8, 21), "21 août 2026", "21 août"),
        ("es-419", date(2026, 2, 14), "14 de febrero de 2026", "14 de febrero"),
        ("de", date(2026, 3, 3), "3 March 2026", "3 March"),
        ("", date(2026, 1, 1), "1 January 2026", "1 January"),
    ],
)
def test_dates_in_words(language: str, when: date, with_year: str, without_year: str) -> None:
    """A date in words per language, with and without its year; others fall back to English."""
    assert wording.date_in_words(when, language) == with_year
    assert wording.date_in_words(when, language, year=False) == without_year


def test_language_of_and_calendar_names() -> None:
    """Tags are read by their primary subtag; month and weekday names come from one table."""
    assert wording.language_of("fr-CA") == "fr"
    assert wording.language_of("FR_ca") == "fr"
    assert wording.language_of("es") == "es"
    assert wording.language_of("de") == "en"
    assert wording.LANGUAGES == ("en", "fr", "es")
    assert all(len(wording.MONTHS[lang]) == 12 for lang in wording.LANGUAGES)
    assert all(len(wording.WEEKDAYS[lang]) == 7 for lang in wording.LANGUAGES)
    assert wording.month_name(8, "fr") == "août"
    assert wording.month_name(3, "de") == "March"
    assert wording.weekday_name(2, "es") == "mié."
    assert wording.weekday_name(1, "en") == "Tue"


# Health reasons in French and Spanish ------------------------------------------------------------


def test_quiet_pair_in_each_language() -> None:
    """A quiet pair's reasons are in the programme's language, the first of the month too."""
    events = checkin(1, 4, 1)  # contact confirmed on 6 March, nothing since
    assert health(events, 32, "fr").reasons == (
        f"Aucun contact confirmé depuis le 6 mars (Kelsey (US) a répondu «{NB}1{NB}»"
        " au point d’étape)",
    )
    assert health(events, 32, "es").reasons == (
        "Sin contacto confirmado desde el 6 de marzo (Kelsey (US) respondió «1» al seguimiento)",
    )
    assert health(events, 32, "en").reasons == (
        "No contact confirmed since 6 March (check-in 1 from Kelsey (US))",
    )
    april = day(30)  # 1 April 2026: never in contact, past the grace period
    assert day(30).date() == date(2026, 4, 1)
    got = {lang: health([], 42, lang, started=april) for lang in ("en", "fr", "es")}
    assert {g.state for g in got.values()} == {"quiet"}
    assert got["fr"].reasons == ("Aucun contact confirmé depuis le début, le 1er avril",)
    assert got["es"].reasons == ("Sin contacto confirmado desde el inicio, el 1 de abril",)
    assert got["en"].reasons == ("No contact confirmed since the start on 1 April",)


def test_one_sided_pair_by_silence_in_each_language() -> None:
    """Kelsey writes, Maria is silent: who wrote, how often and since when, in each language."""
    events = [message(2, 1), message(1, 5), message(1, 9)]
    fr, es = health(events, 15, "fr"), health(events, 15, "es")
    assert fr.state == es.state == "one_sided"
    assert fr.reasons == (
        f"Maria (PL) n’a pas donné de nouvelles depuis le 3 mars{NB};"
        " Kelsey (US) a écrit deux fois sans réponse",
        "Aucun contact confirmé depuis le début, le 2 mars",
    )
    assert es.reasons == (
        "Sin noticias de Maria (PL) desde el 3 de marzo; Kelsey (US) escribió dos veces sin"
        " respuesta",
        "Sin contacto confirmado desde el inicio, el 2 de marzo",
    )
    assert health(events, 15, "en").reasons == (
        "No word from Maria (PL) since 3 March; Kelsey (US) wrote twice without an answer",
        "No contact confirmed since the start on 2 March",
    )


def test_one_sided_after_contact_counts_in_each_language() -> None:
    """After confirmed contact, the silence counts from it; three writes are a figure."""
    events = [*checkin(1, 1, 1), message(1, 10), message(1, 12), message(1, 13)]
    assert health(events, 16, "fr").reasons[0] == (
        f"Maria (PL) n’a pas donné de nouvelles depuis le contact confirmé le 3 mars{NB};"
        " Kelsey (US) a écrit 3 fois sans réponse"
    )
    assert health(events, 16, "es").reasons[0] == (
        "Sin noticias de Maria (PL) desde el contacto confirmado el 3 de marzo;"
        " Kelsey (US) escribió 3 veces sin respuesta"
    )


def test_one_sided_pair_by_checkin_2_in_each_language() -> None:
    """A check-in 2 makes the other member silent; both sentences read in the language."""
    events = [*checkin(2, 1, 1), *checkin(1, 14, 2), *checkin(1, 28, 2)]
    fr, es = health(events, 30, "fr"), health(events, 30, "es")
    assert fr.state == es.state == "one_sided"
    assert fr.reasons == (
        f"Maria (PL) n’a pas répondu depuis le 3 mars{NB}; Kelsey (US) a indiqué deux fois"
        f" avoir écrit sans réponse (point d’étape «{NB}2{NB}»)",
        f"Aucun contact confirmé depuis le 3 mars (Maria (PL) a répondu «{NB}1{NB}»"
        " au point d’étape)",
    )
    assert es.reasons == (
        "Maria (PL) no ha respondido desde el 3 de marzo; Kelsey (US) indicó dos veces que"
        " escribió sin respuesta (seguimiento «2»)",
        "Sin contacto confirmado desde el 3 de marzo (Maria (PL) respondió «1» al seguimiento)",
    )


def test_starting_checkin_3_and_urgent_reasons_in_each_language() -> None:
    """Starting, a check-in 3, a withdrawal and a concern with its note, in French and Spanish."""
    assert health(checkin(1, 3, 3), 5, "fr").reasons == (
        f"Partenariat commencé le 2 mars{NB}; pas encore de contact confirmé",
        "Kelsey (US) a indiqué le 5 mars ne pas encore être en contact"
        f" (point d’étape «{NB}3{NB}»)",
    )
    assert health(checkin(1, 3, 3), 5, "es").reasons == (
        "Empezó el 2 de marzo; todavía no hay contacto confirmado",
        "Kelsey (US) indicó el 5 de marzo que todavía no hay contacto (seguimiento «3»)",
    )
    withdrawn = Member(2, "Maria Nowak", "PL", status="withdrawn")
    events = [*checkin(1, 38, 1), Event(1, "concern", day(30), detail=" Partner  cancelled ")]
    for lang, expected in (
        (
            "fr",
            (
                f"Inquiétude signalée par Kelsey (US) le 1er avril{NB}: Partner cancelled",
                "Maria (PL) a quitté le programme",
                f"Dernier contact confirmé le 9 avril (Kelsey (US) a répondu «{NB}1{NB}»"
                " au point d’étape)",
            ),
        ),
        (
            "es",
            (
                "Preocupación señalada por Kelsey (US) el 1 de abril: Partner cancelled",
                "Maria (PL) se retiró",
                "Último contacto confirmado el 9 de abril (Kelsey (US) respondió «1» al"
                " seguimiento)",
            ),
        ),
    ):
        got = judge(
            members=(KELSEY, withdrawn),
            events=events,
            started=START,
            status="active",
            now=day(40),
            language=lang,
        )
        assert got.state == "at_risk"
        assert got.reasons == expected


def test_dates_in_another_year_and_judge_many_with_a_regional_tag() -> None:
    """A date in another year carries it; judge_many reads "fr-CA" as French, "de" as English."""
    new_year = datetime(2026, 1, 1, 0, 30, tzinfo=timezone(timedelta(hours=1)))  # 31 Dec, UTC
    work = [("p", PAIR, [Event(1, "partner_contact", new_year)], new_year, "active")]
    fr = judge_many(work, now=day(0), language="fr-CA")["p"]
    assert fr.reasons == (
        "Aucun contact confirmé depuis le 31 décembre 2025"
        " (Kelsey (US) a écrit à un autre membre avec l’adresse de suivi en copie)",
    )
    es = judge_many(work, now=day(0), language="es_ES")["p"]
    assert es.reasons == (
        "Sin contacto confirmado desde el 31 de diciembre de 2025"
        " (Kelsey (US) escribió a otro miembro con copia a la dirección de seguimiento)",
    )
    de = judge_many(work, now=day(0), language="de")["p"]
    assert de.reasons == (
        "No contact confirmed since 31 December 2025"
        " (Kelsey (US) wrote to a partner, copying the log address)",
    )


def test_dissolved_and_ended_in_each_language() -> None:
    """A dissolved or ended partnership says so in the programme's language."""
    said = {
        (lang, status): judge(
            members=PAIR, events=[], started=START, status=status, now=day(3), language=lang
        ).reasons
        for lang in ("fr", "es")
        for status in ("dissolved", "ended")
    }
    assert said == {
        ("fr", "dissolved"): ("Le partenariat a été dissous",),
        ("fr", "ended"): ("Le partenariat est terminé",),
        ("es", "dissolved"): ("El emparejamiento se disolvió",),
        ("es", "ended"): ("El emparejamiento ha terminado",),
    }


# Notices: the day() helper of the templates -------------------------------------------------------


def test_notice_day_helper_writes_the_first_of_the_month_in_french() -> None:
    """mailer.notice's day() renders "1er" in French only; other days and languages unchanged."""
    assert _day("2026-04-01", "fr") == "1er avril 2026"
    assert _day("2026-04-01T22:00:00+00:00", "fr") == "1er avril 2026"
    assert _day(date(2026, 3, 3), "fr") == "3 mars 2026"
    assert _day("2026-04-01", "es") == "1 de abril de 2026"
    assert _day("2026-04-01", "en") == "1 April 2026"
    assert _day("not a date", "fr") == "not a date"


@pytest.mark.parametrize(
    ("language", "opening", "local"),
    [
        ("fr", "Le 1er avril 2026, Anna Dupont", "12:00, mer."),
        ("es", "El 1 de abril de 2026, Anna Dupont", "12:00, mié."),
        ("en", "On 1 April 2026, Anna Dupont", "12:00, Wed"),
    ],
)
def test_concern_notice_dates_and_weekdays_in_each_language(
    language: str, opening: str, local: str
) -> None:
    """A composed concern alert writes its date and the local weekday in its language."""
    now = datetime(2026, 4, 1, 10, 0, tzinfo=UTC)  # a Wednesday; 12:00 in Paris
    notice = Notice(
        template="concern",
        language=language,
        default_language="en",
        program_name="Test Network",
        from_address="coordinators@example.org",
        recipient_name="Pat Coordinator",
        recipient_email="pat@example.org",
        idempotency_key="concern/7/1",
        message_id="<concern.7@example.org>",
        reply_address="coordinators@example.org",
        data={
            "partnership": 7,
            "phrase": "harass",
            "occurred_at": "2026-04-01T09:30:00+00:00",
            "raised_by": {
                "name": "Anna Dupont",
                "email": "anna@example.org",
                "country": "FR",
                "timezone": "Europe/Paris",
            },
            "members": [],
        },
    )
    wire = compose_notice(Composer(), notice, now=now).as_bytes()
    message = BytesParser(policy=policy.default).parsebytes(wire)
    text_part = message.get_body(("plain",))
    assert text_part is not None
    text = text_part.get_content()
    assert opening in text
    assert local in text
