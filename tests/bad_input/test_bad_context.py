"""Hostile text in what composing reads (names, titles, the program's name, a nudge's data):
composing either refuses with a ComposeError naming the field, or the message it makes carries
the text inert: no line break or NUL in any header, no script in the HTML, no template syntax
evaluated.  The last test runs it end to end: hostile CSV names and topic, imported and sent."""

from __future__ import annotations

import csv
import dataclasses
import io
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from markupsafe import escape

from mailer.compose import ComposeError, Composer, Person, TopicEmail, to_bytes
from mailer.notice import Notice, compose_notice
from tests.bad_input.common import Cli, accepted, write
from tests.bad_input.safety import assert_inert_html, assert_safe_message, bodies, parse
from tests.conftest import Project
from tests.smtp_server import SmtpTestServer

NOW = datetime(2027, 3, 1, 9, 0, tzinfo=UTC)
KEY = "topic/r1/1/1"
ANN = Person("Ann Dupont", "ann@example.org", "FR", "Europe/Paris")
BOB = Person("Bob Tane", "bob@example.org", "NZ", "Pacific/Auckland")
COMPOSER = Composer()
MAIL = TopicEmail(
    program_name="Test Network",
    from_address="coordinators@example.org",
    recipient=ANN,
    partners=(BOB,),
    language="en",
    default_language="en",
    round_name="r1",
    topic_order=1,
    topic_title="Introductions",
    topic_markdown="Say hello.",
    idempotency_key=KEY,
    message_id="<rapport.0123456789abcdef0123456789abcdef@example.org>",
    reply_address="coordinators+abcdefghij2345672345@example.org",
    unsubscribe_address="coordinators+unsubscribe-abcdefghij2345672345@example.org",
    unsubscribe_url="https://example.org/u/abcdefghij2345672345",
    log_address="coordinators+log@example.org",
)

# Where hostile text can enter a topic email, and how to put it there.
FIELDS: dict[str, Callable[[str], dict[str, Any]]] = {
    "recipient.name": lambda v: {"recipient": dataclasses.replace(ANN, name=v)},
    "partners[0].name": lambda v: {"partners": (dataclasses.replace(BOB, name=v),)},
    "topic_title": lambda v: {"topic_title": v},
    "program_name": lambda v: {"program_name": v},
    "round_name": lambda v: {"round_name": v},
}
# Text that is odd but harmless once escaped: composing must keep it as text.
ESCAPED = {
    "jinja-expression": "{{ 7*7 }}",
    "jinja-statement": "{% raw %}{{ config }}{% endraw %}",
    "script": "<script>alert(1)</script>",
    "attribute-breakout": '"><img src=x onerror=alert(1)>',
    "formula": "=cmd|' /C calc'!A0",
    "rtl-override": "Ann \u202etxt.exe\u202c Dupont",
    "rtl-marks": "\u200fAnn\u200e \u2067Dupont\u2069",
    "encoded-word-lookalike": "=?utf-8?q?Bcc:_x@evil.example?=",
}
# Text that would break a header: composing must refuse it, naming the field.
REFUSED = {
    "line-feed": "Ann\nBcc: x@evil.example",
    "carriage-return": "Ann\rBcc: x@evil.example",
    "crlf": "Ann\r\nBcc: x@evil.example",
    "nul": "Ann\0Dupont",
    "escape": "Ann\x1b[2JDupont",
    "next-line-c1": "Ann\x85Dupont",
}


def _compose(**changes: Any) -> bytes:
    return to_bytes(COMPOSER.topic(dataclasses.replace(MAIL, **changes), now=NOW))


@pytest.mark.parametrize("value", ESCAPED.values(), ids=ESCAPED.keys())
@pytest.mark.parametrize("field", FIELDS)
def test_hostile_text_is_composed_inert(field: str, value: str) -> None:
    """Template syntax, markup and bidirectional controls become text in a safe message."""
    data = _compose(**FIELDS[field](value))
    assert_safe_message(data, extra_headers=frozenset())
    text, html = bodies(data)
    assert_inert_html(html)
    assert "49" not in text and "49" not in html
    if field != "round_name":  # the round's name is not shown in the English templates
        assert value in text
        assert str(escape(value)) in html
    message = parse(data)
    if field == "recipient.name":
        assert message["To"].addresses[0].display_name == value
    if field == "topic_title":
        assert value in str(message["Subject"])


@pytest.mark.parametrize("value", REFUSED.values(), ids=REFUSED.keys())
@pytest.mark.parametrize("field", FIELDS)
def test_header_breaking_text_is_refused_by_name(field: str, value: str) -> None:
    """A line break, NUL or other control character makes composing refuse, naming the field."""
    with pytest.raises(ComposeError) as caught:
        _compose(**FIELDS[field](value))
    assert f"{KEY}: {field} contains" in str(caught.value)


@pytest.mark.parametrize("field", FIELDS)
def test_line_separator_is_a_space_not_a_line_break(field: str) -> None:
    """U+2028 and U+2029 read as a space: no header gains a line, the text stays on one line."""
    data = _compose(**FIELDS[field]("Ann\u2028Bcc: x@evil.example\u2029Dupont"))
    assert_safe_message(data)
    message = parse(data)
    for name, value in message.items():
        assert "\u2028" not in str(value) and "\u2029" not in str(value), name
    assert_inert_html(bodies(data)[1])


def _notice(**changes: Any) -> bytes:
    notice = Notice(
        template="nudge_pair",
        language="en",
        default_language="en",
        program_name="Test Network",
        from_address="coordinators@example.org",
        recipient_name="Ann Dupont",
        recipient_email="ann@example.org",
        idempotency_key="nudge/1/1",
        message_id="<rapport.0123456789abcdef0123456789abcdef@example.org>",
        reply_address="coordinators+abcdefghij2345672345@example.org",
        unsubscribe_address="coordinators+unsubscribe-abcdefghij2345672345@example.org",
        data={
            "partners": [
                {
                    "name": "Bob Tane",
                    "email": "bob@example.org",
                    "country": "NZ",
                    "timezone": "Pacific/Auckland",
                }
            ],
            "last_contact": None,
            "log_address": "coordinators+log@example.org",
        },
    )
    return to_bytes(compose_notice(COMPOSER, dataclasses.replace(notice, **changes), now=NOW))


@pytest.mark.parametrize("value", ESCAPED.values(), ids=ESCAPED.keys())
@pytest.mark.parametrize("field", ["recipient_name", "program_name", "data.partners[0].name"])
def test_hostile_text_in_a_nudge_is_inert(field: str, value: str) -> None:
    """A nudge carries hostile names and data as text: safe headers, inert HTML."""
    if field.startswith("data."):
        partner = {"name": value, "email": "bob@example.org", "country": "NZ", "timezone": "UTC"}
        changes: dict[str, Any] = {
            "data": {"partners": [partner], "last_contact": None, "log_address": "c@example.org"}
        }
    else:
        changes = {field: value}
    data = _notice(**changes)
    assert_safe_message(data, extra_headers=frozenset())
    text, html = bodies(data)
    assert_inert_html(html)
    assert value in text and "49" not in text and "49" not in html


@pytest.mark.parametrize("value", ["Bob\r\nBcc: x@evil.example", "Bob\nX", "Bob\u2028X"])
def test_line_breaks_in_a_nudges_data_never_reach_a_header(value: str) -> None:
    """Data is not checked like header fields, but the subject it feeds is made one line."""
    partner = {"name": value, "email": "bob@example.org", "country": "NZ", "timezone": "UTC"}
    data = _notice(data={"partners": [partner], "last_contact": None, "log_address": "c@x.org"})
    assert_safe_message(data)
    assert "Bcc" not in {name for name, _ in parse(data).items()}
    assert_inert_html(bodies(data)[1])


@pytest.mark.parametrize("value", REFUSED.values(), ids=REFUSED.keys())
@pytest.mark.parametrize("field", ["recipient_name", "program_name"])
def test_header_breaking_text_in_a_nudge_is_refused(field: str, value: str) -> None:
    """A nudge's header-bound fields refuse line breaks and control characters by name."""
    with pytest.raises(ComposeError, match=f"nudge/1/1: {field} contains"):
        _notice(**{field: value})


HOSTILE_PEOPLE = [
    ("p1@example.org", "=cmd|' /C calc'!A0", "FR", "Europe/Paris", "en"),
    ("p2@example.org", "{{ 7*7 }} {% raw %}", "NZ", "Pacific/Auckland", "fr"),
    ("p3@example.org", "<script>alert(1)</script>", "KE", "Africa/Nairobi", "es"),
    (
        "p4@example.org",
        '"><img src=x onerror=alert(1)> \u0644\u064a\u0644\u0649',
        "BR",
        "UTC",
        "en",
    ),
]
HOSTILE_TOPIC = (
    "+++\ntitle = '{{ 7*7 }} <script>x</script> =1+1'\norder = 1\n+++\n"
    "Hi {{ 7*7 }} <script>alert(1)</script> [x](javascript:alert(1))\n"
)


def test_hostile_csv_names_and_topic_are_sent_inert(
    blank: Project, cli: Cli, smtp_server: SmtpTestServer
) -> None:
    """End to end: hostile names imported from CSV and a hostile topic are sent as text; every
    message's headers are single lines and its HTML holds no active content."""
    blank.write_config(smtp_port=smtp_server.port)
    table = io.StringIO()
    csv.writer(table, lineterminator="\n").writerows(
        [("email", "name", "country", "timezone", "language"), *HOSTILE_PEOPLE]
    )
    people = write(blank, "people.csv", table.getvalue())
    pairs = write(
        blank,
        "pairs.csv",
        "round,member_a,member_b\nr1,p1@example.org,p2@example.org\n"
        "r1,p3@example.org,p4@example.org\n",
    )
    topics = write(blank, "topics/01.md", HOSTILE_TOPIC).parent
    for args in (
        ["import", "participants", people],
        ["round", "create", "r1", "--start", "2027-03-01"],
        ["import", "partnerships", pairs],
        ["import", "topics", topics, "--round", "r1"],
        ["send", "--now", "2027-03-01T23:00:00Z"],
    ):
        accepted(blank, cli, args)
    sent = smtp_server.handler.accepted
    assert sorted(r for m in sent for r in m.recipients) == [p[0] for p in HOSTILE_PEOPLE]
    names = {p[0]: p[1] for p in HOSTILE_PEOPLE}
    for message in sent:
        assert_safe_message(message.data)
        text, html = bodies(message.data)
        assert_inert_html(html)
        assert "49" not in text and "49" not in html
        assert "{{ 7*7 }}" in text and "<script>alert(1)</script>" in text
        (recipient,) = message.recipients
        assert parse(message.data)["To"].addresses[0].display_name == names[recipient]
        assert str(escape(names[recipient])) in html
