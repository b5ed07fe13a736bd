"""Tests for the wording of nudges, alerts and weekly reports as a mail client shows them.

Each test composes a real notice (mailer.notice.compose_notice) from data shaped like the outbox
payload (rapport/samples.py) and reads the parsed message: subject, plain text and HTML.
"""

from __future__ import annotations

import copy
import json
import re
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from html.parser import HTMLParser
from typing import Any

import pytest

from mailer.compose import Composer
from mailer.notice import Notice, compose_notice
from rapport.samples import DATA

NOW = datetime(2027, 4, 26, 10, 0, tzinfo=UTC)  # a Monday; 07:00 in Buenos Aires (UTC-3)
NB = "\u00a0"  # French puts a no-break space before ":" and ";"
LANGUAGES = ("en", "fr", "es")
LOG = "coordinators+log@example.org"
UNSUBSCRIBE = "coordinators+unsubscribe-k3xq7@example.org"
COMPOSER = Composer()

MARIA = {"name": "Maria Kowalska", "email": "maria@example.pl", "country": "PL",
         "timezone": "Europe/Warsaw"}  # fmt: skip
ISABEL = {"name": "Isabel Ruiz", "email": "isabel+mentoring@example.es", "country": "ES",
          "timezone": "Europe/Madrid"}  # fmt: skip
CARMEN = {"name": "Carmen Delgado", "email": "carmen@example.ar", "country": "AR",
          "timezone": "America/Argentina/Buenos_Aires"}  # fmt: skip


class Html(HTMLParser):
    """The HTML part as a reader sees it: link targets, and the text outside head and title."""

    def __init__(self, markup: str) -> None:
        super().__init__(convert_charrefs=True)
        self.hrefs: list[str] = []
        self.texts: list[str] = []
        self._hidden = 0
        self.feed(markup)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.hrefs.extend(v or "" for k, v in attrs if k == "href")
        if tag in ("head", "title", "style"):
            self._hidden += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in ("head", "title", "style"):
            self._hidden -= 1

    def handle_data(self, data: str) -> None:
        if not self._hidden:
            self.texts.append(data)

    @property
    def text(self) -> str:
        return "".join(self.texts)


class Mail:
    """One composed notice, parsed as a mail client parses it."""

    def __init__(self, message: EmailMessage) -> None:
        self.subject = str(message["Subject"])
        plain, html = message.get_body(("plain",)), message.get_body(("html",))
        assert plain is not None and html is not None
        self.text: str = plain.get_content()
        self.html = Html(html.get_content())


def compose(template: str, language: str, data: dict[str, Any], *, participant: bool) -> Mail:
    notice = Notice(
        template=template,
        language=language,
        default_language="en",
        program_name="ILN",
        from_address="coordinators@example.org",
        recipient_name="Kelsey Brown",
        recipient_email="kelsey@example.org",
        idempotency_key=f"{template}/7/{language}",
        message_id="<rapport.0123456789abcdef@example.org>",
        reply_address="coordinators+k3xq7@example.org",
        unsubscribe_address=UNSUBSCRIBE if participant else None,
        data=json.loads(json.dumps(data)),  # as the outbox row hands it back
    )
    wire = compose_notice(COMPOSER, notice, now=NOW).as_bytes()
    message = BytesParser(policy=policy.default).parsebytes(wire)
    assert isinstance(message, EmailMessage)
    return Mail(message)


def sample(template: str, **changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(DATA[template])
    data.update(changes)
    return data


def nudge(template: str, language: str, partners: list[dict[str, str]], last: str | None) -> Mail:
    data = sample(template, partners=partners, last_contact=last, log_address=LOG)
    return compose(template, language, data, participant=True)


def report(language: str, **changes: Any) -> Mail:
    return compose("report", language, sample("report", **changes), participant=False)


def card(**changes: Any) -> dict[str, Any]:
    """The first sample report card, changed."""
    return {**copy.deepcopy(DATA["report"]["partnerships"][0]), **changes}


# Links ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize(
    "template", ["nudge_pair", "nudge_silent", "nudge_coordinators", "concern", "report"]
)
def test_mailto_links_keep_at_and_plus_literal(template: str, language: str) -> None:
    """Every mailto: link's address keeps '@' and '+' as written: no %40 or %2B in the To."""
    data = sample(template)
    people = {"nudge_pair": "partners", "nudge_silent": "partners", "nudge_coordinators": "members"}
    if template in people:  # one more person, whose address has a '+'
        extra = {"silent": False, "reachable": True} if template == "nudge_coordinators" else {}
        data[people[template]] = [*data[people[template]], {**ISABEL, **extra}]
    participant = template.startswith("nudge_") and template != "nudge_coordinators"
    mail = compose(template, language, data, participant=participant)
    mailtos = [h for h in mail.html.hrefs if h.startswith("mailto:")]
    assert mailtos
    addresses = [h.removeprefix("mailto:").partition("?")[0] for h in mailtos]
    for address in addresses:
        assert "%" not in address, address
        assert re.fullmatch(r"[^@\s]+@[^@\s]+", address), address
    shown = set(addresses)
    if template in people:
        assert ISABEL["email"] in shown
    if participant:
        assert LOG in shown
        assert f"mailto:{UNSUBSCRIBE}?subject=unsubscribe" in mailtos


# Nudge subjects ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("language", "expected"),
    [
        ("en", "ILN: have you said hello to Maria Kowalska?"),
        ("fr", f"ILN{NB}: avez-vous pu écrire à Maria Kowalska{NB}?"),
        ("es", "ILN: ¿ya saludaste a Maria Kowalska?"),
    ],
)
def test_nudge_pair_subject_without_contact_asks_for_a_first_hello(
    language: str, expected: str
) -> None:
    """With no contact ever confirmed, the pair nudge's subject does not speak of catching up."""
    mail = nudge("nudge_pair", language, [MARIA], None)
    assert mail.subject == expected


@pytest.mark.parametrize(
    ("language", "expected"),
    [
        ("en", "ILN: time to catch up with Maria Kowalska?"),
        ("fr", f"ILN{NB}: et si vous repreniez contact avec Maria Kowalska{NB}?"),
        ("es", "ILN: ¿y si retomas el contacto con Maria Kowalska?"),
    ],
)
def test_nudge_pair_subject_after_contact_suggests_catching_up(
    language: str, expected: str
) -> None:
    """With a contact confirmed before, the pair nudge's subject suggests getting back in touch."""
    mail = nudge("nudge_pair", language, [MARIA], "2027-03-05")
    assert mail.subject == expected


@pytest.mark.parametrize(
    ("name", "conjunction"),
    [("Isabel Ruiz", "e"), ("Íñigo Sanz", "e"), ("Hilda Paz", "e"), ("Hierón Vega", "y"),
     ("Maria Kowalska", "y")],
)  # fmt: skip
@pytest.mark.parametrize("last", [None, "2027-03-05"])
def test_spanish_subjects_write_e_before_an_i_sound(
    name: str, conjunction: str, last: str | None
) -> None:
    """Spanish nudge subjects join two partners with "e" before an /i/ sound, as the body does."""
    partners = [{**CARMEN, "name": "Ana López"}, {**ISABEL, "name": name}]
    pair = nudge("nudge_pair", "es", partners, last)
    silent = nudge("nudge_silent", "es", partners, last)
    joined = f"Ana López {conjunction} {name}"
    assert joined in pair.subject
    assert silent.subject == f"ILN: a {joined} les encantaría saber de ti"
    assert joined in pair.text and joined in silent.text


# Time zones ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("language", "line"),
    [
        ("en", "Time zone: America/Argentina/Buenos Aires (UTC-3), now 07:00, Mon"),
        ("fr", f"Fuseau horaire{NB}: America/Argentina/Buenos Aires (UTC-3), actuellement 07:00, "
               "lun."),
        ("es", "Zona horaria: America/Argentina/Buenos Aires (UTC-3), hora local 07:00, lun."),
    ],
)  # fmt: skip
@pytest.mark.parametrize("template", ["nudge_pair", "nudge_silent", "nudge_coordinators"])
def test_time_zone_is_labelled_as_in_topic_emails(template: str, language: str, line: str) -> None:
    """Nudges and alerts show a zone as topic emails do, "Buenos Aires (UTC-3)", and local time."""
    if template == "nudge_coordinators":
        data = sample(template, members=[{**CARMEN, "silent": False, "reachable": True}])
        mail = compose(template, language, data, participant=False)
    else:
        mail = nudge(template, language, [CARMEN], None)
    assert line in mail.text
    assert line in mail.html.text
    assert "Buenos_Aires" not in mail.text and "Buenos_Aires" not in mail.html.text


def test_time_zone_label_carries_the_abbreviation_when_there_is_one() -> None:
    """A zone with a lettered abbreviation is labelled with it and the offset, as topics do."""
    mail = nudge("nudge_pair", "en", [MARIA], None)
    assert "Time zone: Europe/Warsaw (CEST, UTC+2), now 12:00, Mon" in mail.text


# Weekly report -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("language", "one", "two"),
    [
        ("en", "1 new this week", "2 new this week"),
        ("fr", "1 nouveau cette semaine", "2 nouveaux cette semaine"),
        ("es", "1 nueva esta semana", "2 nuevas esta semana"),
    ],
)
def test_report_new_this_week_agrees_with_its_number(language: str, one: str, two: str) -> None:
    """ "New this week" is singular for 1 and plural for more, in the text and the HTML."""
    single, plural = report(language, new=1), report(language, new=2)
    assert f"({one})" in single.text and one in single.html.text
    assert f"({two})" in plural.text and two in plural.html.text
    if one.split()[1] != two.split()[1]:  # English says "new" for both
        assert f"1 {two.split(' ', 1)[1]}" not in single.text + single.html.text


def test_spanish_report_says_puntuacion_not_score() -> None:
    """The Spanish report words a card's score as "puntuación"."""
    mail = report("es")
    assert "#7  En riesgo, puntuación 60, desde hace 14 días (12 de abril de 2027)" in mail.text
    assert "puntuación 60" in mail.html.text
    assert "score" not in mail.text and "score" not in mail.html.text


@pytest.mark.parametrize(
    ("language", "today", "days"),
    [("en", "since today", "0 days"), ("fr", "depuis aujourd’hui", "0 jour"),
     ("es", "desde hoy", "0 días")],
)  # fmt: skip
def test_report_card_held_zero_days_says_since_today(language: str, today: str, days: str) -> None:
    """A card whose state began under a day ago says "since today", not "for 0 days"."""
    mail = report(language, partnerships=[card(days=0)])
    header = next(line for line in mail.text.splitlines() if line.startswith("#7 "))
    assert header.endswith(today)
    assert today in mail.html.text
    assert days not in mail.text and days not in mail.html.text
    one = report(language, partnerships=[card(days=1)])
    assert today not in one.text and today not in one.html.text


@pytest.mark.parametrize(
    ("language", "title", "lines"),
    [
        ("en", "Nudges and alerts sent:",
         ["nudge to the pair (Maria Kowalska) on 5 April 2027",
          "alert to coordinators (Piotr Zieliński) on 12 April 2027"]),
        ("fr", f"Relances et alertes envoyées{NB}:",
         ["relance au binôme (Maria Kowalska) le 5 avril 2027",
          "alerte à l’équipe de coordination (Piotr Zieliński) le 12 avril 2027"]),
        ("es", "Recordatorios y alertas enviados:",
         ["recordatorio a la pareja (Maria Kowalska) el 5 de abril de 2027",
          "alerta a coordinación (Piotr Zieliński) el 12 de abril de 2027"]),
    ],
)  # fmt: skip
def test_report_lists_nudges_and_alerts_under_one_title(
    language: str, title: str, lines: list[str]
) -> None:
    """The report's list of nudges also holds coordinators' alerts, and its title says so."""
    alert = {"template": "nudge_coordinators", "sent": "2027-04-12",
             "to": {"name": "Piotr Zieliński", "email": "piotr@example.org"}}  # fmt: skip
    first = card()
    mail = report(language, partnerships=[card(nudges=[*first["nudges"], alert])])
    assert f"  {title}\n" in mail.text
    assert title in mail.html.text
    for line in lines:
        assert f"    * {line}\n" in mail.text
    assert " a la pareja a " not in mail.text + mail.html.text


def test_french_report_typography_and_neutral_wording() -> None:
    """The French report has a no-break space before ":" and ";" and no masculine-only words."""
    alert = {"template": "nudge_coordinators", "sent": "2027-04-12",
             "to": {"name": "Piotr Zieliński", "email": "piotr@example.org"}}  # fmt: skip
    notes = [{"text": "Maria est en voyage jusqu’en mai.", "date": "2027-04-20"}]
    first = card(nudges=[*card()["nudges"], alert], notes=notes)
    partnerships = [first, *(card(id=9, state="one_sided", notes=notes),)]
    national = DATA["report"]["coordinator"]
    program = {**national, "role": "program"}
    mails = [report("fr", partnerships=partnerships, coordinator=c) for c in (national, program)]
    for mail in mails:
        for where, text in (("text", mail.text), ("html", mail.html.text)):
            words = re.sub(r"\d\d:\d\d", "", text)  # 12:00 takes no space
            assert not re.search(r"[^\u00a0\n]:", words), where
            assert not re.search(r"[^\u00a0];", words), where
            assert "coordinateur" not in text and "silencieux" not in text, where
        assert f"20 avril 2027{NB}: Maria est en voyage" in mail.text
        assert f"(Maria Kowalska, 5 avril 2027){NB}; alerte" in mail.html.text
        assert f"#8 Kelsey Brown et Maria Kowalska{NB}: 3 semaines à risque" in mail.html.text
        assert "[sans nouvelles]" in mail.text
    assert "au titre de la coordination nationale de ILN." in mails[0].text
    assert "au titre de la coordination du programme de ILN." in mails[1].text
