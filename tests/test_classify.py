"""Tests for mailer/classify.py, checkin.py, mimetext.py, mimeparts.py and autoreply.py: the
fixture corpus, the rules one by one, robustness against arbitrary and hostile input, and the
CLI-facing classify_file."""

from __future__ import annotations

import json
import re
import time
import tomllib
from collections.abc import Callable
from datetime import UTC, datetime
from email.message import Message
from email.parser import BytesHeaderParser
from email.policy import compat32
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailer.autoreply import subject_prefix
from mailer.checkin import asks_unsubscribe, checkin_answer, own_text
from mailer.classify import MAX_REFERENCES, Mailbox, classify, classify_file
from mailer.mimeparts import parse_message, parse_text_parts
from mailer.mimetext import body_text, html_to_text, parse_head, split_head
from program.errors import InputError
from program.inbound import KINDS, Inbound

FIXTURES = Path(__file__).parent / "fixtures" / "mail"
EXPECTED = tomllib.loads((FIXTURES / "expected.toml").read_text(encoding="utf-8"))
MAILBOX = Mailbox("coordinators@example.org", "coordinators+{key}@example.org")
KEY = "abcdefghij2345672345"
TIME_LIMIT = 2.0  # seconds for one pathological message: a safety net, not a benchmark
_HEADER_END = re.compile(rb"\r?\n\r?\n|\r\r")


def _fixture_names() -> list[str]:
    return sorted(p.name for p in FIXTURES.glob("*.eml"))


def _head(raw: bytes) -> bytes:
    found = _HEADER_END.search(raw)
    return raw[: found.end()] if found else raw


def _mail(headers: str, body: str = "Hello\n") -> bytes:
    base = {
        "From": "Maria Gonzalez <maria.gonzalez@example.com>",
        "To": f"coordinators+{KEY}@example.org",
        "Subject": "Re: Topic 2: Setting goals together",
        "Date": "Mon, 3 Mar 2025 10:00:00 +0100",
        "Message-ID": "<reply.1@example.com>",
    }
    lines = [line for line in headers.strip("\n").split("\n") if line]
    given_names = {line.split(":", 1)[0].lower() for line in lines if not line[:1].isspace()}
    top = [f"{k}: {v}" for k, v in base.items() if k.lower() not in given_names]
    return ("\r\n".join(top + lines) + "\r\n\r\n" + body.replace("\n", "\r\n")).encode()


# --- the corpus ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_corpus(name: str) -> None:
    """Each fixture classifies as expected.toml says, field by field."""
    found = classify((FIXTURES / name).read_bytes(), MAILBOX)
    for field, want in EXPECTED[name].items():
        got = getattr(found, field)
        if field == "reason":
            assert want in got, f"{name}: reason {got!r} lacks {want!r}"
        elif field == "bounced":
            assert list(got) == want, f"{name}: bounced {got!r}"
        elif field in ("sender", "reply_key", "in_reply_to") and want == "":
            assert got is None, f"{name}: {field} {got!r}"
        elif field == "checkin" and want == 0:
            assert got is None, f"{name}: checkin {got!r}"
        else:
            assert got == want, f"{name}: {field} {got!r} != {want!r}"


def test_every_fixture_has_an_entry_and_vice_versa() -> None:
    """expected.toml and the .eml files name the same fixtures, at least 80 of them."""
    names = set(_fixture_names())
    assert names == set(EXPECTED), (names - set(EXPECTED), set(EXPECTED) - names)
    assert len(names) >= 80


def test_corpus_covers_every_kind() -> None:
    """The corpus holds examples of all five kinds, the fixtures' name prefixes agree."""
    kinds = {entry["kind"] for entry in EXPECTED.values()}
    assert kinds == set(KINDS)
    prefix = {"human": "human-", "auto_reply": "auto-", "bounce": "bounce-", "bulk": "bulk-"}
    for name, entry in EXPECTED.items():
        if name.startswith(("broken-", "charset-")):
            continue
        assert name.startswith(prefix.get(entry["kind"], "loop-")), name


@pytest.mark.parametrize("name", _fixture_names())
def test_headers_only_agrees_on_kind(name: str) -> None:
    """From the header block alone, every fixture gets the same kind, sender and key, no text."""
    raw = (FIXTURES / name).read_bytes()
    full = classify(raw, MAILBOX)
    head = classify(_head(raw), MAILBOX, headers_only=True)
    assert (head.kind, head.sender, head.reply_key) == (full.kind, full.sender, full.reply_key)
    assert head.text == "" and head.checkin is None


def test_only_human_mail_has_text_or_checkin() -> None:
    """text and checkin are empty for every kind but human."""
    for name in _fixture_names():
        found = classify((FIXTURES / name).read_bytes(), MAILBOX)
        if found.kind != "human":
            assert found.text == "" and found.checkin is None, name


def test_corpus_speed(capsys: pytest.CaptureFixture[str]) -> None:
    """Classification speed on the corpus, printed for information (not asserted)."""
    raws = [(FIXTURES / name).read_bytes() for name in _fixture_names()]
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < 1.0:
        for raw in raws:
            classify(raw, MAILBOX)
        count += len(raws)
    rate = count / (time.perf_counter() - start)
    with capsys.disabled():
        print(f"\nclassify: {rate:,.0f} messages/s on {len(raws)} fixtures")


# --- rules ---------------------------------------------------------------------------------


def test_reply_fields() -> None:
    """A reply yields lower-cased sender and recipients, key, threading ids and a UTC date."""
    raw = _mail(
        f"From: Maria <Maria.Gonzalez@Example.COM>\n"
        f"To: Coordinators+{KEY.upper()}@Example.ORG, Kelsey <kelsey.brown@example.net>\n"
        "Cc: coordinators+log@example.org\n"
        "In-Reply-To: <rapport.0123456789abcdef0123456789abcdef@example.org>\n"
        "References: <a@x> <rapport.0123456789abcdef0123456789abcdef@example.org>",
        "1\n",
    )
    found = classify(raw, MAILBOX)
    assert found.kind == "human" and found.sender == "maria.gonzalez@example.com"
    assert found.recipients == (
        f"coordinators+{KEY}@example.org",
        "kelsey.brown@example.net",
        "coordinators+log@example.org",
    )
    assert found.reply_key == KEY and found.log and not found.unsubscribe
    assert found.in_reply_to == "<rapport.0123456789abcdef0123456789abcdef@example.org>"
    assert found.references[0] == "<a@x>"
    assert found.date == datetime(2025, 3, 3, 9, 0, tzinfo=UTC)
    assert found.checkin == 1 and found.text == "1" and found.size == len(raw)


@pytest.mark.parametrize(
    ("to", "key", "unsubscribe", "log"),
    [
        (f"coordinators+{KEY}@example.org", KEY, False, False),
        (f"coordinators+unsubscribe-{KEY}@example.org", KEY, True, False),
        ("coordinators+unsubscribe@example.org", None, True, False),
        ("coordinators+log@example.org", None, False, True),
        ("coordinators@example.org", None, False, False),
        (f"coordinators+{KEY}@example.net", None, False, False),
        (f"other+{KEY}@example.org", None, False, False),
        ("coordinators+bad key!@example.org", None, False, False),
    ],
)
def test_reply_key_forms(to: str, key: str | None, unsubscribe: bool, log: bool) -> None:
    """The key is read only from addresses shaped like the reply address; log and unsubscribe."""
    found = classify(_mail(f"To: {to}"), MAILBOX)
    assert (found.reply_key, found.unsubscribe, found.log) == (key, unsubscribe, log)


def test_reply_key_from_envelope_headers() -> None:
    """Delivered-To or X-Original-To carries the key when To does not."""
    raw = _mail(f"To: undisclosed-recipients:;\nX-Original-To: coordinators+{KEY}@example.org")
    assert classify(raw, MAILBOX).reply_key == KEY


def test_reply_key_template_elsewhere() -> None:
    """Another reply-address template (key before the domain, suffix in the local part)."""
    mailbox = Mailbox("team@example.net", "team-{key}-reply@example.net")
    found = classify(_mail(f"To: team-{KEY}-reply@example.net"), mailbox)
    assert found.reply_key == KEY


@pytest.mark.parametrize(
    ("headers", "kind", "reason"),
    [
        ("Auto-Submitted: auto-replied", "auto_reply", "Auto-Submitted: auto-replied"),
        ("Auto-Submitted: auto-generated", "auto_reply", "Auto-Submitted: auto-generated"),
        ("Auto-Submitted: auto-notified", "auto_reply", "Auto-Submitted: auto-notified"),
        ("Auto-Submitted: no", "human", "Auto-Submitted: no"),
        ("Auto-Submitted: No (human)", "human", "Auto-Submitted: no"),
        ("X-Auto-Response-Suppress: All", "human", "no automatic"),
        ("X-Auto-Response-Suppress: DR, RN, NRN, OOF, AutoReply", "human", "no automatic"),
        ("X-Autoreply: yes", "auto_reply", "X-Autoreply"),
        ("X-Autorespond: on", "auto_reply", "X-Autorespond"),
        ("Precedence: auto_reply", "auto_reply", "Precedence: auto_reply"),
        ("Precedence: junk", "auto_reply", "Precedence: junk"),
        ("Precedence: bulk", "auto_reply", "Precedence: bulk"),
        ("Precedence: list", "bulk", "Precedence: list"),
        ("Precedence: bulk\nList-Unsubscribe: <mailto:u@example.com>", "bulk", "List-Unsubscribe"),
        ("List-Id: <team.lists.example.net>", "bulk", "List-Id"),
        ("X-MC-User: 0123abc", "bulk", "Mailchimp"),
        ("X-Mailchimp-Campaign: 1", "bulk", "Mailchimp"),
        ("From: Alerts <no-reply@example.com>", "bulk", "no-reply sender"),
        (
            "X-MS-Exchange-Inbox-Rules-Loop: maria.gonzalez@example.com\n"
            "X-Auto-Response-Suppress: All",
            "auto_reply",
            "Exchange out-of-office",
        ),
        (
            "X-MS-Exchange-Inbox-Rules-Loop: maria.gonzalez@example.com\n"
            "X-MS-Exchange-Generated-Message-Source: Mailbox Rules Agent",
            "auto_reply",
            "Exchange out-of-office",
        ),
        ("X-MS-Exchange-Inbox-Rules-Loop: maria.gonzalez@example.com", "human", "no automatic"),
        ("Subject: Automatic reply: Topic 2", "auto_reply", "subject prefix 'Automatic reply'"),
        ("Subject: Re: Automatic reply: Topic 2", "human", "no automatic"),
        ("Subject: Fwd: Undelivered Mail Returned to Sender", "human", "no automatic"),
    ],
)
def test_header_rules(headers: str, kind: str, reason: str) -> None:
    """Each header rule on an otherwise ordinary reply, and the signs that are not rules."""
    found = classify(_mail(headers), MAILBOX)
    assert found.kind == kind and reason in found.reason, found.reason


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ("Message-ID: <rapport.0123456789abcdef0123456789abcdef@example.org>", "Message-ID"),
        ("From: coordinators@example.org\nAuto-Submitted: auto-generated", "our own address"),
        ("From: Example Network <Coordinators@Example.org>", "our own address"),
        (f"List-Unsubscribe: <mailto:coordinators+unsubscribe-{KEY}@example.org>", "List-Unsub"),
    ],
)
def test_loops(headers: str, reason: str) -> None:
    """Our own Message-ID, From or List-Unsubscribe coming back is a loop."""
    found = classify(_mail(headers), MAILBOX)
    assert found.kind == "loop" and reason in found.reason


def test_coordinator_replying_from_program_address_is_a_person() -> None:
    """From our address but answering a thread, without Auto-Submitted: a person wrote it."""
    raw = _mail("From: coordinators@example.org\nIn-Reply-To: <abc@example.com>")
    assert classify(raw, MAILBOX).kind == "human"


def test_someone_elses_rapport_message_id_is_no_loop() -> None:
    """A rapport-shaped Message-ID of another domain is not ours."""
    raw = _mail("Message-ID: <rapport.0123456789abcdef0123456789abcdef@example.net>")
    assert classify(raw, MAILBOX).kind == "human"


@pytest.mark.parametrize(
    ("subject", "prefix"),
    [
        ("Out of Office: Topic 2", "Out of Office"),
        ("Out of Office AutoReply: Topic 2", "Out of Office AutoReply"),
        ("AUTOMATIC REPLY: hi", "Automatic reply"),
        ("Réponse automatique : Thème 2", "Réponse automatique"),
        ("Absence : Thème 2", "Absence"),
        ("Respuesta automática: Tema 2", "Respuesta automática"),
        ("Fuera de la oficina", "Fuera de la oficina"),
        ("Abwesenheitsnotiz: Topic", "Abwesenheitsnotiz"),
        ("Automatische Antwort: Topic", "Automatische Antwort"),
        ("Resposta automática: Topic", "Resposta automática"),
        ("Ausente: Topic", "Ausente"),
        ("Risposta automatica: Topic", "Risposta automatica"),
        ("Fuori sede", "Fuori sede"),
        ("Automatisch antwoord: Topic", "Automatisch antwoord"),
        ("Afwezig: Topic", "Afwezig"),
        ("Odpowiedź automatyczna: Topic", "Odpowiedź automatyczna"),
        ("Automaattinen vastaus: Topic", "Automaattinen vastaus"),
        ("Poissa: Topic", "Poissa"),
        ("Automatiskt svar: Topic", "Automatiskt svar"),
        ("Frånvaro: Topic", "Frånvaro"),
        ("自动回复: Topic", "自动回复"),
        ("自動回覆：Topic", "自動回覆"),
        ("自動返信: Topic", "自動返信"),
        ("不在：Topic", "不在"),
        ("[Auto-Reply] Topic", "Auto-reply"),
        ("AUTO: Olga is out of the office", "Auto"),
        ("Absence of data in week 2", None),
        ("Away next week - can we move the call?", None),
        ("Automobile club", None),
        ("Re: Out of office", None),
        ("Topic 2: Setting goals together", None),
        ("", None),
    ],
)
def test_subject_prefixes(subject: str, prefix: str | None) -> None:
    """Localized auto-reply subject prefixes, and ordinary subjects that only look alike."""
    assert subject_prefix(subject) == prefix


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("1", 1),
        ("2", 2),
        ("3", 3),
        ("1.", 1),
        ("2)", 2),
        ("(3)", 3),
        ("1 - we've met", 1),
        ("1, we talked on Friday", 1),
        ("3 – not yet", 3),
        ("**2**", 2),
        ("1\nWe met.", 1),
        ("Hi Anna,\n\n2 - wrote twice", 2),
        ("Bonjour,\n1", 1),
        ("we have been in touch", 1),
        ("We're in touch!", 1),
        ("In touch :)", 1),
        ("Yes, we met", 1),
        ("No reply yet", 2),
        ("I haven’t heard back", None),  # does not start with a phrase: "I ..."
        ("Haven't heard back yet", 2),
        ("Not yet", 3),
        ("not in touch yet", 3),
        ("Nous sommes en contact", 1),
        ("En contact depuis lundi", 1),
        ("Pas de réponse", 2),
        ("Pas encore de réponse", 2),
        ("Pas encore", 3),
        ("Ya estamos en contacto", 1),
        ("Sí, hablamos", 1),
        ("Sin respuesta", 2),
        ("Todavía no", 3),
        ("todavia no", 3),
        ("Aún no tengo respuesta", 2),
        ("Si vous voulez, on peut parler", None),
        ("12", None),
        ("10:30 works", None),
        ("1st call went well", None),
        ("1.5 hours of talking", None),
        ("2 weeks ago I wrote", None),
        ("3 people joined", None),
        ("4", None),
        ("Yesterday we met", None),
        ("Nothing to report", None),
        ("Thanks! Question 1 is hard.", None),
        ("", None),
    ],
)
def test_checkin_answers(text: str, answer: int | None) -> None:
    """Check-in answers at the start of the own text, in digits and in en/fr/es words."""
    assert checkin_answer(text, ("en", "fr", "es")) == answer


def test_checkin_words_follow_program_languages() -> None:
    """Words count only in the program's languages; digits count in every language."""
    assert checkin_answer("Noch nicht", ("en", "fr", "es")) is None
    assert checkin_answer("Noch nicht", ("en", "de")) == 3
    assert checkin_answer("Pas encore", ("en",)) is None
    assert checkin_answer("2", ()) == 2
    raw = _mail("", "Noch nicht, leider.\n")
    assert classify(raw, Mailbox(MAILBOX.from_address, MAILBOX.reply_address, ("de",))).checkin == 3


@pytest.mark.parametrize(
    ("text", "own"),
    [
        (
            "1\n\nOn Mon, 3 Mar 2025 at 09:00, Network <c@example.org> wrote:\n> Check-in: 1, 2, 3",
            "1",
        ),
        ("1\n\nOn Mon, 3 Mar 2025 at 09:00, Network <\nc@example.org> wrote:\n\n> quoted", "1"),
        ("Oui\n\nLe lun. 3 mars 2025 à 09:00, Réseau <c@example.org> a écrit :\n> x", "Oui"),
        ("Sí\n\nEl lun, 3 mar 2025 a las 9:00, Red (<c@example.org>) escribió:\n> x", "Sí"),
        ("Ja\n\nAm Mo., 3. März 2025 um 09:00 Uhr schrieb Netz <c@example.org>:\n> x", "Ja"),
        ("Sim\n\nEm seg., 3 de mar. de 2025 às 09:00, Rede <c@example.org> escreveu:\n> x", "Sim"),
        ("Tak\n\nW dniu pon., 3.03.2025 o 09:00 Sieć <c@example.org> napisał(a):\n> x", "Tak"),
        ("1\n\n-----Original Message-----\nFrom: Network\nSent: Monday\nCheck-in: 1", "1"),
        ("2\n\n________________________________\nFrom: Network\nSent: Monday\nTo: me", "2"),
        ("2\n\nDe : Réseau <c@example.org>\nEnvoyé : lundi 3 mars 2025 09:00\nÀ : moi", "2"),
        ("2\n\nVon: Netz <c@example.org>\nGesendet: Montag, 3. März 2025\nAn: ich", "2"),
        ("3\n\nSent from my iPhone\n\n> On 3 Mar 2025, at 09:00, Network wrote:", "3"),
        ("3\n\nEnvoyé de mon iPhone", "3"),
        ("3\n\nEnviado desde mi iPhone", "3"),
        ("1\n\n-- \nMaria Gonzalez\n+34 600 000 000", "1"),
        (
            "On 03/03/2025 09:00, Network wrote:\n> Check-in: reply 1\n\n1, we talked",
            "1, we talked",
        ),
        ("Maria wrote:\n> Reply 1, 2 or 3\n2", "2"),
        ("> quoted 1\nmine\n> quoted 2\nalso mine", "mine\nalso mine"),
        (
            "Here is what I wrote:\nthe plan for Tuesday",
            "Here is what I wrote:\nthe plan for Tuesday",
        ),
        ("1\n\n---------- Forwarded message ---------\nFrom: x", "1"),
    ],
)
def test_own_text(text: str, own: str) -> None:
    """Quoted history, attributions, Outlook header blocks and signatures are removed."""
    assert own_text(text) == own


def test_html_to_text_drops_quotes_scripts_and_styles() -> None:
    """HTML to text: blockquotes are history, text after them stays, scripts and styles go."""
    html = (
        "<html><head><style>p{color:red}</style><title>x</title></head><body>"
        "<div>2&nbsp;&ndash; no answer</div><script>var x = '<p>';</script><!-- note -->"
        '<div class="gmail_quote">On Mon, Network &lt;c@example.org&gt; wrote:<br>'
        "<blockquote>Check-in: reply 1, 2 or 3<blockquote>deeper</blockquote></blockquote>"
        "</div><p>After the quote</p></body></html>"
    )
    text = html_to_text(html)
    assert "color:red" not in text and "var x" not in text and "note" not in text
    assert own_text(text) == "2 – no answer\n\nAfter the quote"
    assert own_text("<p>a</p>") == "<p>a</p>"  # own_text itself never parses HTML


@pytest.mark.parametrize(
    ("own", "subject", "wanted"),
    [
        ("unsubscribe", "Re: Topic 2", True),
        ("Please unsubscribe me", "", True),
        ("Désinscription", "", True),
        ("désabonner svp", "", True),
        ("Baja", "", True),
        ("Darme de baja, gracias", "", True),
        ("", "unsubscribe", True),
        ("", "RE: Désinscription", True),
        ("Hi,\n\nunsubscribe", "", True),
        ("How do I unsubscribe my colleague?", "", False),
        ("1", "Re: Topic 2 (unsubscribe link broken?)", False),
        ("Unsubscribed already?", "", False),
    ],
)
def test_unsubscribe_requests(own: str, subject: str, wanted: bool) -> None:
    """A reply asking to unsubscribe, in the footers' words, at the start or as the subject."""
    assert asks_unsubscribe(own, subject) is wanted


# --- bounces ---------------------------------------------------------------------------------


def _dsn(blocks: str, *, sender: str = "MAILER-DAEMON@mx.example.net") -> bytes:
    return (
        f"From: {sender}\r\nTo: coordinators@example.org\r\nSubject: Delivery report\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="r"\r\n\r\n'
        "--r\r\nContent-Type: text/plain\r\n\r\nReport.\r\n"
        "--r\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx\r\n\r\n"
        + blocks.replace("\n", "\r\n")
        + "\r\n--r--\r\n"
    ).encode()


@pytest.mark.parametrize(
    ("blocks", "bounced", "reason"),
    [
        ("Final-Recipient: rfc822; A@Example.com\nAction: failed\nStatus: 5.1.1\n",
         ("a@example.com",), "RFC 3464 DSN"),
        ("Final-Recipient: rfc822; a@example.com\nAction: failed\n", ("a@example.com",), "DSN"),
        ("Final-Recipient: rfc822; a@example.com\nAction: failed (bad mailbox)\nStatus: 5.2.1\n",
         ("a@example.com",), "RFC 3464 DSN"),
        ("Final-Recipient: rfc822; a@example.com\nAction: delayed\nStatus: 4.4.1\n",
         (), "delay notice"),
        ("Final-Recipient: rfc822; a@example.com\nAction: failed\nStatus: 4.4.7\n",
         (), "temporary failure"),
        ("Final-Recipient: rfc822; a@example.com\nAction: delivered\nStatus: 2.0.0\n",
         (), "nothing failed"),
        ("Final-Recipient: rfc822; f@example.net\nOriginal-Recipient: rfc822;o@example.com\n"
         "Action: failed\nStatus: 5.1.1\n", ("o@example.com",), "RFC 3464 DSN"),
        ("Final-Recipient: rfc822; a@example.com\nAction: failed\nStatus: 5.1.1\n\n"
         "Final-Recipient: rfc822; b@example.com\nAction: delayed\nStatus: 4.0.0\n",
         ("a@example.com",), "RFC 3464 DSN"),
    ],
)  # fmt: skip
def test_dsn_permanent_failures_only(blocks: str, bounced: tuple[str, ...], reason: str) -> None:
    """Only Action: failed with a 5.x.x (or no) status fails an address; delays fail nobody."""
    found = classify(_dsn(blocks), MAILBOX)
    assert found.kind == "bounce" and found.bounced == bounced and reason in found.reason


def test_dsn_from_anyone_at_top_level_is_a_bounce() -> None:
    """A top-level delivery report is a bounce whoever sends it (Exchange: postmaster@...)."""
    blocks = "Final-Recipient: rfc822; a@example.com\nAction: failed\nStatus: 5.1.1\n"
    found = classify(
        _dsn(blocks, sender="Microsoft Outlook <postmaster@outlook.example.com>"), MAILBOX
    )
    assert found.kind == "bounce" and found.bounced == ("a@example.com",)


def test_person_forwarding_a_dsn_is_a_person() -> None:
    """A person's message with a DSN attached (message/rfc822) is human, with no bounced."""
    raw = (FIXTURES / "human-forwarded-bounce.eml").read_bytes()
    found = classify(raw, MAILBOX)
    assert found.kind == "human" and found.bounced == ()


def test_bounce_headers_only() -> None:
    """Headers alone: DSN type or mailer-daemon is a bounce; X-Failed-Recipients is read."""
    exim = classify(_head((FIXTURES / "bounce-exim.eml").read_bytes()), MAILBOX, headers_only=True)
    assert exim.kind == "bounce" and exim.bounced == ("piotr.n@example.net",)
    assert "headers only" in exim.reason
    dsn = _head(_dsn("Final-Recipient: rfc822; a@example.com\nAction: failed\n"))
    assert classify(dsn, MAILBOX, headers_only=True).kind == "bounce"


def test_bounce_subject_from_a_person_stays_human() -> None:
    """A bounce-like subject alone, from a person, with nothing a detector finds, is human."""
    raw = _mail("Subject: Undeliverable: my laptop", "The parcel could not be delivered.\n")
    assert classify(raw, MAILBOX).kind == "human"


# --- robustness ----------------------------------------------------------------------------


def _check(found: Inbound) -> None:
    assert isinstance(found, Inbound) and found.kind in KINDS
    assert not found.reason.startswith("unparseable"), found.defects
    assert found.checkin in (None, 1, 2, 3)
    assert all(isinstance(a, str) and a == a.lower() for a in found.bounced)


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=4096), headers_only=st.booleans())
def test_never_raises_on_arbitrary_bytes(raw: bytes, headers_only: bool) -> None:
    """Arbitrary bytes classify without an exception, and without the last-resort fallback."""
    _check(classify(raw, MAILBOX, headers_only=headers_only))


_SNIPPETS = [
    b"\r\n", b"\n\n", b"=?", b"?=", b"--", b"<", b">", b":", b"\x00", b"=?utf-8?b?", b"\n--x\n",
    b"Content-Type: multipart/mixed; boundary=x\n", b"Content-Type: message/rfc822\n",
    b"Content-Transfer-Encoding: base64\n", b"charset=x-bogus",
]  # fmt: skip
_MUTATION = st.tuples(
    st.sampled_from(["flip", "truncate", "insert", "snippet", "delete"]),
    st.floats(min_value=0, max_value=1),
    st.binary(min_size=1, max_size=8),
    st.sampled_from(_SNIPPETS),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(_fixture_names()), mutations=st.lists(_MUTATION, max_size=12))
def test_never_raises_on_mutated_fixtures(
    name: str, mutations: list[tuple[str, float, bytes, bytes]]
) -> None:
    """Fixtures with random byte flips, truncations, insertions and deletions never break it."""
    raw = bytearray((FIXTURES / name).read_bytes())
    for op, where, noise, snippet in mutations:
        at = int(where * len(raw))
        if op == "flip" and raw:
            raw[min(at, len(raw) - 1)] ^= noise[0] or 1
        elif op == "truncate":
            del raw[at:]
        elif op == "insert":
            raw[at:at] = noise
        elif op == "snippet":
            raw[at:at] = snippet
        else:
            del raw[at : at + len(noise) * 16]
    for headers_only in (False, True):
        _check(classify(bytes(raw), MAILBOX, headers_only=headers_only))


_HEAD = b"From: a@example.com\r\nTo: coordinators+" + KEY.encode() + b"@example.org\r\n"


def _nested(depth: int) -> bytes:
    opening = b"".join(
        b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i)
        for i in range(depth)
    )
    closing = b"".join(b"--b%d--\r\n" % i for i in reversed(range(depth)))
    return _HEAD + opening + b"Content-Type: text/plain\r\n\r\n1\r\n" + closing


PATHOLOGICAL = {
    "1 MB header line": b"Subject: " + b"a" * (1 << 20) + b"\r\n" + _HEAD + b"\r\n1\r\n",
    "1 MB without a line break": b"X" * (1 << 20),
    "1 MB address list": _HEAD + b"Cc: " + b"a@b.example, " * 80_000 + b"\r\n\r\nhi",
    "10,000 References folded": _HEAD
    + b"References:"
    + b"".join(b" <id%d@example.com>\r\n" % i for i in range(10_000))
    + b"\r\n1\r\n",
    "10,000 References on one line": _HEAD
    + b"References:"
    + b"".join(b" <id%d@example.com>" % i for i in range(10_000))
    + b"\r\n\r\n1\r\n",
    "1,000-deep multiparts": _nested(1_000),
    "10,000-deep multiparts": _nested(10_000),
    "10,000-deep message/rfc822": _HEAD + b"Content-Type: message/rfc822\r\n\r\n" * 10_000,
    "40,000 sibling parts": _HEAD
    + b"Content-Type: multipart/mixed; boundary=x\r\n\r\n"
    + b"--x\r\n\r\na\r\n" * 40_000,
    "NUL bytes": b"\x00" * 100_000 + _HEAD + b"\x00\r\n\r\n\x00",
    "NUL in headers and body": _HEAD + b"Subject: a\x00b\r\n\r\n1\x00\r\n",
    "invalid UTF-8 everywhere": _HEAD + b"Subject: \xff\xfe\xc3(\r\n\r\n\xc3(\xa0\xa1\xff 2\r\n",
    "invalid encodings": _HEAD
    + b"Subject: =?utf-8?b?####?= =?x-nope?q?=ZZ?= =?utf-8?q?unterminated\r\n"
    + b"Content-Type: text/plain; charset=zlib\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    + b"!!!!" * 1000,
    "unclosed HTML": _HEAD + b"Content-Type: text/html\r\n\r\n" + b"<" * 300_000,
    "unclosed HTML comments": _HEAD + b"Content-Type: text/html\r\n\r\n" + b"<!--" * 70_000,
    "30,000 nested blockquotes": _HEAD
    + b"Content-Type: text/html\r\n\r\n"
    + b"<blockquote>" * 30_000
    + b"1",
    "20,000 attribution-like lines": _HEAD
    + b"\r\n"
    + b"x wrote on 2025 <a@b.example>:\r\n" * 20_000,
    "quoted-printable soft breaks": _HEAD
    + b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
    + b"=\r\n" * 300_000,
    "400 headers of 8 KB": b"".join(b"To: " + b"a" * 8000 + b"@x\r\n" for _ in range(400))
    + b"\r\n",
    "600 encoded-words": b"Subject: " + b"=?utf-8?q?a?= " * 600 + b"\r\n" + _HEAD + b"\r\n1",
    "20,000 DSN recipients": (
        b"From: MAILER-DAEMON@mx.example.net\r\nContent-Type: multipart/report; "
        b"report-type=delivery-status; boundary=r\r\n\r\n--r\r\n"
        b"Content-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx\r\n\r\n"
        + b"".join(
            b"Final-Recipient: rfc822; u%d@example.com\r\nAction: failed\r\n\r\n" % i
            for i in range(20_000)
        )
        + b"--r--\r\n"
    ),
    "large qmail bounce": b"From: MAILER-DAEMON@mx.example.net\r\nSubject: failure notice\r\n\r\n"
    + b"Hi. This is the qmail-send program at mx.\r\n\r\n"
    + b"<a@b.example>: no mailbox\r\n" * 60_000,
}


@pytest.mark.parametrize("name", sorted(PATHOLOGICAL))
def test_pathological_input_is_bounded(name: str) -> None:
    """Hostile shapes classify within the time limit, with the caps applied."""
    raw = PATHOLOGICAL[name]
    for headers_only in (False, True):
        start = time.perf_counter()
        found = classify(raw, MAILBOX, headers_only=headers_only)
        elapsed = time.perf_counter() - start
        assert elapsed < TIME_LIMIT, f"{name}: {elapsed:.2f}s"
        _check(found)
        assert len(found.references) <= MAX_REFERENCES
        assert len(found.bounced) <= 100 and len(found.recipients) <= 100
        assert len(found.text) <= 20_000 and len(found.subject) <= 1000


def test_references_keep_root_and_latest() -> None:
    """More than 100 References: the first (thread root) and the last 99 are kept."""
    found = classify(PATHOLOGICAL["10,000 References on one line"], MAILBOX)
    assert len(found.references) == MAX_REFERENCES
    assert found.references[-1] == "<id9999@example.com>"
    assert "header over" in found.defects[0]


def test_deep_nesting_is_classified_from_headers() -> None:
    """A body nested beyond the cap is not parsed; the message is still classified."""
    found = classify(_nested(1_000), MAILBOX)
    assert found.kind == "human" and found.reply_key == KEY and found.text == ""
    assert any("nested" in d for d in found.defects)


def test_input_types() -> None:
    """bytearray and memoryview are accepted like bytes; empty input is an empty message."""
    raw = (FIXTURES / "human-gmail-checkin-1-en.eml").read_bytes()
    assert classify(bytearray(raw), MAILBOX) == classify(raw, MAILBOX)
    assert classify(memoryview(raw), MAILBOX) == classify(raw, MAILBOX)
    empty = classify(b"", MAILBOX)
    assert empty.kind == "human" and empty.sender is None


# --- the part reader against email.parser -------------------------------------------------


def _parts(msg: Message) -> list[tuple[Any, ...]]:
    """Every part in order: its header fields, whether it holds parts, and the payload of the
    parts body_text reads (text/plain, text/html, multiparts that lost their boundary)."""
    found: list[tuple[Any, ...]] = []
    stack = [msg]
    while stack:
        part = stack.pop()
        payload = part.get_payload()
        ctype = part.get_content_type()
        if isinstance(payload, list):
            found.append((part.raw_items(), "parts"))
            if not ctype.startswith("message/"):  # body_text never enters attached messages
                stack.extend(reversed(payload))
        elif ctype in ("text/plain", "text/html") or ctype.startswith("multipart/"):
            found.append((part.raw_items(), payload))
        else:
            found.append((part.raw_items(), "not read"))
    return [(list(items), *rest) for items, *rest in found]


def _outcome(read: Callable[[], Any]) -> Any:
    try:
        return read()
    except Exception as exc:  # the same failure from both readers is agreement too
        return type(exc).__name__


def _check_part_reader(raw: bytes) -> None:
    head, body = split_head(raw)
    expected = BytesHeaderParser(policy=compat32).parsebytes(head)
    top = parse_head(head)
    assert list(top.raw_items()) == list(expected.raw_items())
    assert [type(d) for d in top.defects] == [type(d) for d in expected.defects]
    assert top.get_payload() == expected.get_payload()
    full_defects: list[str] = []
    fast_defects: list[str] = []
    full = parse_message(head, body, 1 << 20, full_defects)
    fast = parse_text_parts(head, top, body, 1 << 20, fast_defects)
    assert fast_defects == full_defects
    assert (fast is None) == (full is None)
    if fast is not None and full is not None:
        assert _parts(fast) == _parts(full)
        assert _outcome(lambda: body_text(fast)) == _outcome(lambda: body_text(full))


def _multipart(body: str, ctype: str = 'multipart/mixed; boundary="b"') -> bytes:
    return _mail(f"Content-Type: {ctype}", body)


_ATTACHMENT = "\n".join(
    "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2" for _ in range(200)
)
PART_SHAPES = {
    "plain text": _mail("Content-Type: text/plain; charset=utf-8", "1\n\nOn Mon X wrote:\n> hi\n"),
    "alternative": _multipart(
        "--b\nContent-Type: text/plain\n\n2 - wrote\n--b\nContent-Type: text/html\n\n<p>2</p>\n"
        "--b--\n",
        'multipart/alternative; boundary="b"',
    ),
    "attachment": _multipart(
        "--b\nContent-Type: text/plain\n\n1\n--b\nContent-Type: application/pdf\n"
        f"Content-Transfer-Encoding: base64\n\n{_ATTACHMENT}\n--b--\n"
    ),
    "nested with attachment": _multipart(
        "--b\nContent-Type: multipart/alternative; boundary=c\n\n--c\nContent-Type: text/html\n\n"
        "<p>3</p>\n--c--\n--b\nContent-Type: image/png\nContent-Disposition: attachment\n\n"
        f"{_ATTACHMENT}\n--b--\n"
    ),
    "line ends CR only": _multipart("--b\rContent-Type: text/plain\r\r1\r--b--\r").replace(
        b"\r\n", b"\r"
    ),
    "line ends mixed": _multipart("--b\r\nContent-Type: text/plain\n\r1\r\r\n--b--\n"),
    "repeated boundary lines": _multipart("--b\n--b\n--b--\nContent-Type: text/html\n\nx\n--b--\n"),
    "closed before opened": _multipart("preamble\n--b--\nepilogue\n"),
    "first boundary missing": _multipart("just text\n--c\n"),
    "boundary parameter missing": _mail("Content-Type: multipart/mixed", "--b\n\ntext\n"),
    "close boundary missing": _multipart("--b\nContent-Type: text/plain\n\n1\n"),
    "boundary lines with blanks and junk": _multipart("--b \t\n\n1\n--bx\n2\n--b--  \n"),
    "part without headers": _multipart("--b\n\n2\n--b--\n"),
    "boundary inside a line": _multipart("--b\n\nsee x--b\nand x--b--\n--b--\n"),
    "part without blank line": _multipart("--b\nno header here\n--b--\n"),
    "header block ended by the boundary": _multipart("--b\nContent-Type: text/html\n--b--\n"),
    "outer boundary inside an inner part": _multipart(
        "--b\nContent-Type: multipart/alternative; boundary=c\n\n--c\n\ninner\n"
        "--b\n\nouter\n--b--\n"
    ),
    "same boundary nested": _multipart(
        "--b\nContent-Type: multipart/mixed; boundary=b\n\n--b\n\n1\n--b--\n"
    ),
    "attached message": _multipart(
        "--b\nContent-Type: message/rfc822\n\nSubject: x\nContent-Type: multipart/mixed; "
        "boundary=c\n\n--c\n\nquoted\n--b\nContent-Type: text/plain\n\nmine\n--b--\n"
    ),
    "delivery status": _multipart(
        "--b\nContent-Type: message/delivery-status\n\nAction: failed\n\nStatus: 5.1.1\n--b--\n",
        "multipart/report; report-type=delivery-status; boundary=b",
    ),
    "digest": _multipart("--b\n\nSubject: x\n\nhi\n--b--\n", "multipart/digest; boundary=b"),
    "From line in a part": _multipart("--b\nFrom someone\nContent-Type: text/plain\n\n1\n--b--\n"),
    "8-bit bytes": _multipart("--b\nContent-Type: text/plain; charset=latin-1\n\n\xe9\n--b--\n"),
    "quoted boundary with blanks": _multipart(
        "--a b\n\n1\n--a b--\n", 'multipart/mixed; boundary="a b "'
    ),
    "RFC 2231 boundary": _multipart("--b\n\n1\n--b--\n", "multipart/mixed; boundary*=''b"),
    "non-header line in the header block": _mail("X-Note: a\nnot a header", "1\n"),
    "no body": _mail("Content-Type: multipart/mixed; boundary=b", "").rstrip(b"\r\n"),
    "boundary at the very end": _multipart("--b\n\n1\n--b--").rstrip(b"\r\n"),
}


@pytest.mark.parametrize("name", sorted(PART_SHAPES))
def test_part_reader_agrees_with_email_parser(name: str) -> None:
    """parse_head and parse_text_parts read each MIME shape as email.parser does."""
    _check_part_reader(PART_SHAPES[name])


def test_part_reader_skips_attachments() -> None:
    """An attachment's payload is not copied, and the message's text is still found."""
    raw = PART_SHAPES["attachment"]
    head, body = split_head(raw)
    found = parse_text_parts(head, parse_head(head), body, 1 << 20, [])
    assert found is not None and body_text(found) == "1"
    payload = found.get_payload()
    assert isinstance(payload, list) and payload[1].get_payload() == ""
    assert classify(raw, MAILBOX).checkin == 1


_LINES = st.sampled_from([
    "--a", "--a--", "--b", "--b--", "--a \t", "--ax", "--", "", " folded", "From x", ":x",
    "Content-Type: multipart/alternative; boundary=b", "Content-Type: multipart/digest; boundary=b",
    "Content-Type: multipart/mixed", "Content-Type: text/plain", "Content-Type: text/html",
    "Content-Type: message/rfc822", "Content-Type: application/pdf", "Content-Type: text",
    "Content-Disposition: attachment", "Content-Transfer-Encoding: base64", "QUJD", "1",
    "> quoted", "=C3=A9", "\xe9", "no colon", "x--a", "x--b--",
])  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(
    lines=st.lists(st.tuples(_LINES, st.sampled_from(["\n", "\r\n", "\r"])), max_size=40),
    top=st.sampled_from(
        ["multipart/mixed; boundary=a", 'multipart/mixed; boundary="a"', "text/plain"]
    ),
)
def test_part_reader_agrees_on_line_soup(lines: list[tuple[str, str]], top: str) -> None:
    """Random bodies of boundary, header and text lines, with any line ends, read the same."""
    body = "".join(line + end for line, end in lines)
    _check_part_reader(f"Content-Type: {top}\r\n\r\n{body}".encode("utf-8", "surrogateescape"))


# --- classify_file ---------------------------------------------------------------------------


def test_classify_file_contract() -> None:
    """classify_file returns exactly the CLI's JSON fields, ready for json.dumps."""
    path = FIXTURES / "bounce-postfix-multiple.eml"
    found = classify_file(path, MAILBOX)
    assert list(found) == [
        "file", "kind", "sender", "reply_key", "in_reply_to", "checkin", "bounced", "reason"
    ]  # fmt: skip
    assert found["file"] == str(path) and found["kind"] == "bounce"
    assert found["bounced"] == ["amadou.d@example.com", "hans.mueller@example.net"]
    assert json.loads(json.dumps(found)) == found
    human = classify_file(FIXTURES / "human-gmail-checkin-1-en.eml", MAILBOX)
    assert human["checkin"] == 1 and human["reply_key"] == KEY
    assert human["in_reply_to"].startswith("<rapport.")


def test_classify_file_unreadable(tmp_path: Path) -> None:
    """A missing file raises InputError naming the file."""
    missing = tmp_path / "nope.eml"
    with pytest.raises(InputError, match=r"nope\.eml"):
        classify_file(missing, MAILBOX)
