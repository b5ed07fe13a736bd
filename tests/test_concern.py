"""Concern phrases: found at a word's start, whatever the case, accents or apostrophes."""

from __future__ import annotations

import json

import pytest

from monitor.concern import BUILT_IN, Phrases, find_concern
from tests.conftest import Project
from tests.smtp_server import SmtpTestServer
from tests.test_poll import Cli, _deliver, _project, _reply

pytestmark = pytest.mark.databases("sqlite", "postgresql")

BUILT = Phrases.of()


@pytest.mark.parametrize(
    ("text", "phrase"),
    [
        ("I feel uncomfortable with his messages.", "uncomfortable"),
        ("This is HARASSMENT, plain and simple", "harass"),
        ("Je me sens mal à l\u2019aise avec lui.", "mal à l'aise"),
        ("je me sens mal a l'aise", "mal à l'aise"),
        ("Me siento incómoda con los mensajes de mi compañero.", "incómod"),
        ("me siento INCOMODA", "incómod"),
        ("Sus comentarios son inapropiados", "inapropiad"),
        ("Il me harcèle depuis une semaine", "harcèle"),
        ("He threatened   to report me", "threaten"),
    ],
)
def test_built_in_phrases_are_found(text: str, phrase: str) -> None:
    assert find_concern(text, BUILT) == phrase


@pytest.mark.parametrize(
    "text",
    [
        "",
        "1",
        "We had a lovely talk about cataloguing; very comfortable.",
        "The chair was comfortable",
        "Thank you for the topic!",
        "unharassed",  # only at the start of a word
    ],
)
def test_ordinary_mail_raises_no_concern(text: str) -> None:
    assert find_concern(text, BUILT) is None


def test_extra_phrases_from_the_config_are_added() -> None:
    phrases = Phrases.of(("desconfortável", "  ", "Bedrängt"))
    assert find_concern("Fiquei desconfortavel com isso", phrases) == "desconfortável"
    assert find_concern("ich fühle mich bedrängt", phrases) == "Bedrängt"
    assert find_concern("uncomfortable", phrases) == "uncomfortable"
    assert set(BUILT_IN) <= set(phrases.phrases)


def test_the_longest_phrase_wins() -> None:
    phrases = Phrases.of(("mal",))
    assert find_concern("je suis mal à l'aise", phrases) == "mal à l'aise"


def test_a_concern_in_the_inbox_is_recorded_and_alerted_the_same_day(
    project: Project, cli: Cli, smtp_server: SmtpTestServer
) -> None:
    """A participant's message to the coordinators with a concern phrase: a "concern" event
    holding the phrase (not the text), the partnership at risk with the reason, and an alert
    planned for the coordinators at once; the message stays in the inbox for a person."""
    maildir = _project(project, cli, smtp_server)
    coordinators = project.dir / "coordinators.csv"
    coordinators.write_text(
        "email,name,role,countries,timezone\nlead@example.org,Lena Lead,program,,UTC\n",
        encoding="utf-8",
    )
    assert cli("--config", project.config, "import", "coordinators", coordinators).code == 0
    message = _reply(
        "Kelsey Brown <kelsey@example.org>",
        "coordinators@example.org",
        "Hello,\n\nI feel uncomfortable with some of the messages I get.\n\nKelsey\n",
    )
    _deliver(maildir, message)
    result = cli("--config", project.config, "inbox", "poll", "--now", "2027-03-02T12:00:00Z")
    assert result.code == 0, result.err
    assert "1 concern raised" in result.out
    assert "planned 1 concern alerts" in result.out
    assert project.rows("SELECT kind, detail FROM activity WHERE kind = 'concern'") == [
        {"kind": "concern", "detail": "uncomfortable"}
    ]
    [planned] = project.rows("SELECT to_address, status, key FROM outbox WHERE kind = 'alert'")
    assert (planned["to_address"], planned["status"]) == ("lead@example.org", "pending")
    assert planned["key"].startswith("concern/")
    assert project.scalar("SELECT count(*) FROM inbound WHERE body IS NOT NULL") == 0
    assert list((maildir / "new").iterdir()), "a concern is left in the inbox for a person"
    health = cli("--config", project.config, "health", "--json", "--now", "2027-03-02T13:00:00Z")
    rows = [json.loads(line) for line in health.out.splitlines()]
    [kelsey] = [r for r in rows if r["members"][0]["email"] == "kelsey@example.org"]
    assert kelsey["state"] == "at_risk"
    assert any("Concern raised by Kelsey (US)" in reason for reason in kelsey["reasons"])
    sent = cli("--config", project.config, "send", "--now", "2027-03-02T13:00:00Z")
    assert sent.code == 0, sent.err
    alert = [m for m in smtp_server.handler.accepted if "lead@example.org" in m.recipients]
    assert len(alert) == 1 and b"uncomfortable" in alert[0].data
    assert b"some of the messages I get" not in alert[0].data
