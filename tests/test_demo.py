"""`rapport demo`: the whole round plays into a folder, and what it leaves agrees with itself.

The demo is run once for the module (it plays 112 simulated days), in-process through the CLI.
The checks read what a user would look at afterwards: the printed story, report.html, the .eml
files the embedded server filed, and the project's database.
"""

from __future__ import annotations

import contextlib
import io
import json
import sqlite3
from collections import Counter
from dataclasses import dataclass
from email import message_from_bytes, policy
from html.parser import HTMLParser
from pathlib import Path

import pytest

from rapport.cli import main
from rapport.demo_people import AWAY, BOUNCING, QUIET, SILENT, WRITER

pytestmark = pytest.mark.slow
LAST = "2027-06-20T23:00:00+00:00"  # the round's last simulated cycle


@dataclass
class Played:
    code: int
    out: str
    err: str
    dir: Path

    def rows(self, sql: str, *params: object) -> list[sqlite3.Row]:
        with sqlite3.connect(self.dir / "rapport.db") as connection:
            connection.row_factory = sqlite3.Row
            return list(connection.execute(sql, params))


def _run(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def played(tmp_path_factory: pytest.TempPathFactory) -> Played:
    folder = tmp_path_factory.mktemp("demo") / "out"
    code, out, err = _run("demo", "--dir", str(folder))
    return Played(code, out, err, folder)


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: object) -> None:
        self.tags.append(tag)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_it_exits_0_and_tells_every_week(played: Played) -> None:
    """The demo succeeds, prints a story for each of the 16 weeks, and says where things are."""
    assert played.code == 0, played.err
    for week in range(1, 17):
        assert f"\nWeek {week}: " in played.out, week
    assert str(played.dir / "mail") in played.out
    assert str(played.dir / "report.html") in played.out


def test_report_html_lists_the_partnerships_at_risk(played: Played) -> None:
    """report.html is an HTML document naming every member of every partnership at risk."""
    parser = _Text()
    parser.feed((played.dir / "report.html").read_text(encoding="utf-8"))
    parser.close()
    assert {"html", "body"} <= set(parser.tags)
    text = " ".join(parser.text)
    code, out, err = _run(
        "--config",
        str(played.dir / "config.toml"),
        *("health", "--json", "--state", "at_risk", "--now", LAST),
    )
    assert code == 0, err
    at_risk = [json.loads(line) for line in out.splitlines()]
    assert len(at_risk) >= 2
    for partnership in at_risk:
        assert f"#{partnership['partnership']}" in text
        for member in partnership["members"]:
            assert member["name"] in text, member


def test_every_eml_file_is_an_outbox_row_sent(played: Played) -> None:
    """The server filed one .eml per message sent, and each is a sent row of the outbox."""
    sent = {
        r["message_id"]: r["to_address"]
        for r in played.rows("SELECT message_id, to_address FROM outbox WHERE status = 'sent'")
    }
    files = sorted((played.dir / "mail").glob("*.eml"))
    assert len(files) == len(sent)
    for path in files:
        message = message_from_bytes(path.read_bytes(), policy=policy.default)
        assert sent[str(message["Message-ID"])] in path.name.replace("_at_", "@")


def test_each_topic_reached_each_reachable_participant_once(played: Played) -> None:
    """Eight topics, each sent once to every participant; the bounced address only got the first."""
    people = [r["email"] for r in played.rows("SELECT email FROM participant")]
    rows = played.rows(
        "SELECT p.email, t.seq, o.status FROM outbox o JOIN participant p"
        " ON p.id = o.participant_id JOIN topic t ON t.id = o.topic_id WHERE o.kind = 'topic'"
    )
    sent = Counter((r["email"], r["seq"]) for r in rows if r["status"] == "sent")
    assert {seq for _, seq in sent} == set(range(1, 9))
    for email in people:
        for seq in range(1, 9):
            expected = 0 if email == BOUNCING and seq > 1 else 1
            assert sent[(email, seq)] == expected, (email, seq)
    held = {(r["email"], r["status"]) for r in rows if r["status"] != "sent"}
    assert held == {(BOUNCING, "suppressed")}


def test_the_out_of_office_and_the_bounce_are_set_aside(played: Played) -> None:
    """The out-of-office is classified auto_reply, the DSN bounce; neither counts as activity."""
    kinds = Counter((r["kind"], r["sender"]) for r in played.rows("SELECT * FROM inbound"))
    assert kinds[("auto_reply", AWAY)] >= 1
    assert sum(n for (kind, _), n in kinds.items() if kind == "bounce") == 1
    [suppressed] = played.rows("SELECT * FROM suppression")
    assert (suppressed["email"], suppressed["reason"]) == (BOUNCING, "bounce")
    events = played.rows(
        "SELECT a.kind FROM activity a JOIN inbound i ON i.id = a.inbound_id"
        " WHERE i.kind IN ('auto_reply', 'bounce') AND a.kind IN ('message', 'checkin')"
    )
    assert events == []


def test_the_story_shows_the_scripted_partnerships(played: Played) -> None:
    """The quiet pair recovers after its nudge; the one-sided pair ends at risk, told by name."""
    out = played.out
    names = {r["email"]: r["name"] for r in played.rows("SELECT email, name FROM participant")}
    assert "quiet → healthy" in out
    for email in QUIET:
        assert f"nudged   {names[email]} " in out
    assert f"{names[SILENT]} " in out and "a careful note" in out
    last_week = out.split("\nWeek 16: ")[1]
    assert "at risk  " in last_week and names[WRITER] in last_week
    assert names[BOUNCING] in last_week


def test_it_refuses_a_folder_holding_other_files(tmp_path: Path) -> None:
    """A --dir with files the demo did not write is left alone (exit 2)."""
    keep = tmp_path / "notes.txt"
    keep.write_text("mine", encoding="utf-8")
    code, _, err = _run("demo", "--dir", str(tmp_path))
    assert code == 2
    assert "notes.txt" in err
    assert keep.read_text(encoding="utf-8") == "mine"
