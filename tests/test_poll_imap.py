"""`rapport inbox poll` against a real Dovecot: once, unread, filed, and safe across faults."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from mailer.inbox import ImapSource
from program.config import load_config
from rapport import poll
from tests.conftest import SECRET, Project, Result
from tests.dovecot import DovecotServer
from tests.smtp_server import SmtpTestServer
from tests.test_poll import _activity, _key, _reply
from tests.test_send import _setup

pytestmark = pytest.mark.databases("sqlite", "postgresql")

Cli = Callable[..., Result]
NOW = "2027-03-02T12:00:00Z"


@pytest.fixture
def imap_project(
    project: Project,
    cli: Cli,
    smtp_server: SmtpTestServer,
    dovecot: DovecotServer,
    imap_folders: Callable[..., str],
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[Project, str, str]:
    """Topics sent to everyone, and [imap] pointing at a fresh folder of the test Dovecot."""
    _setup(project, cli, smtp_server)
    inbox, filed = imap_folders(), imap_folders(create=False)
    monkeypatch.setenv("TEST_IMAP_PASSWORD", dovecot.password)
    project.config.write_text(
        project.config.read_text(encoding="utf-8")
        + "[imap]\n"
        + 'host = "localhost"\n'
        + f"port = {dovecot.port}\n"
        + 'security = "starttls"\n'
        + f'username = "{dovecot.username}"\n'
        + 'password_env = "TEST_IMAP_PASSWORD"\n'
        + f'ca_file = "{dovecot.ca_file}"\n'
        + f'folders = ["{inbox}"]\n',
        encoding="utf-8",
    )
    assert cli("--config", project.config, "send", "--now", "2027-03-01T23:00:00Z").code == 0
    return project, inbox, filed


def test_messages_are_ingested_once_and_stay_unread(
    imap_project: tuple[Project, str, str], cli: Cli, dovecot: DovecotServer
) -> None:
    """Mail appended over IMAP is recorded once across polls, and \\Seen is never set."""
    project, inbox, _ = imap_project
    key, _ = _key(project, "ana@example.org")
    uids = [
        dovecot.append(
            inbox, _reply("ana@example.org", f"coordinators+{key}@example.org", "1").as_bytes()
        ),
        dovecot.append(
            inbox, _reply("kelsey@example.org", "coordinators@example.org", "Hello!").as_bytes()
        ),
    ]
    first = cli("--config", project.config, "inbox", "poll", "--now", NOW)
    assert first.code == 0, first.err
    assert first.out.strip() == "read 2 (2 human); recorded 2, 3 activity events"
    second = cli("--config", project.config, "inbox", "poll", "--now", NOW)
    assert second.out.strip() == "read 0; recorded 0, 0 activity events"
    uids.append(
        dovecot.append(
            inbox, _reply("priya@example.org", "coordinators@example.org", "3").as_bytes()
        )
    )
    third = cli("--config", project.config, "inbox", "poll", "--now", NOW)
    assert third.out.strip() == "read 1 (1 human); recorded 1, 2 activity events"
    assert all("\\Seen" not in dovecot.flags(inbox, uid) for uid in uids)
    status = cli("--config", project.config, "inbox", "status").out
    assert inbox in status and "human=3" in status


def test_file_into_moves_what_needs_no_person(
    imap_project: tuple[Project, str, str], cli: Cli, dovecot: DovecotServer
) -> None:
    """With file_into, a bare check-in and an auto-reply are moved, unread; a real reply stays."""
    project, inbox, filed = imap_project
    project.config.write_text(
        project.config.read_text(encoding="utf-8") + f'file_into = "{filed}"\n', encoding="utf-8"
    )
    key, _ = _key(project, "ana@example.org")
    checkin = _reply("ana@example.org", f"coordinators+{key}@example.org", "1")
    away = _reply("wang@example.org", "coordinators@example.org", "Away until Monday.")
    away.replace_header("Subject", "Automatic reply: Topic 1")
    away["Auto-Submitted"] = "auto-replied"
    story = _reply(
        "kelsey@example.org",
        "coordinators@example.org",
        "1\n\nWe met on Tuesday, and I have a question about the next topic:\n"
        "could we swap it for one on digital preservation? Amara and I both work on it.",
    )
    for message in (checkin, away, story):
        dovecot.append(inbox, message.as_bytes())
    dry = cli("--config", project.config, "inbox", "poll", "--dry-run", "--now", NOW)
    assert dry.out.strip() == "dry run: read 3 (1 auto_reply, 2 human); nothing recorded or moved"
    assert len(dovecot.uids(inbox)) == 3
    result = cli("--config", project.config, "inbox", "poll", "--now", NOW)
    assert (
        result.out.strip()
        == "read 3 (1 auto_reply, 2 human); recorded 3, 4 activity events, 2 filed"
    )
    [left] = dovecot.uids(inbox)
    moved = dovecot.uids(filed)
    assert len(moved) == 2
    assert all("\\Seen" not in dovecot.flags(filed, uid) for uid in moved)
    assert "\\Seen" not in dovecot.flags(inbox, left)
    rows = project.rows("SELECT sender, filed FROM inbound")
    filed_flags = {row["sender"]: bool(row["filed"]) for row in rows}  # 1/0 on SQLite
    assert filed_flags == {
        "ana@example.org": True,
        "wang@example.org": True,
        "kelsey@example.org": False,
    }


def test_a_changed_uidvalidity_counts_nothing_twice(
    imap_project: tuple[Project, str, str], cli: Cli, dovecot: DovecotServer
) -> None:
    """A folder recreated with the same mail (new UIDVALIDITY) is re-read; nothing counts twice."""
    project, inbox, _ = imap_project
    key, _ = _key(project, "ana@example.org")
    raw = _reply("ana@example.org", f"coordinators+{key}@example.org", "1").as_bytes()
    dovecot.append(inbox, raw)
    cli("--config", project.config, "inbox", "poll", "--now", NOW)
    dovecot.recreate(inbox)
    dovecot.append(inbox, raw)
    dovecot.append(inbox, _reply("priya@example.org", "coordinators@example.org", "2").as_bytes())
    result = cli("--config", project.config, "inbox", "poll", "--now", NOW)
    assert result.out.strip() == "read 2 (2 human); recorded 1, 2 activity events, 1 seen before"
    checkins = [(email, value) for email, kind, value in _activity(project) if kind == "checkin"]
    assert checkins == [("ana@example.org", 1), ("priya@example.org", 2)]


def test_the_server_killed_mid_poll_resumes_where_it_left_off(
    imap_project: tuple[Project, str, str],
    dovecot: DovecotServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Dovecot killed after three messages are read: the poll reconnects, resumes, records
    each message once."""
    project, inbox, _ = imap_project
    for n in range(8):
        sender = ("ana", "kelsey", "priya", "wang")[n % 4]
        dovecot.append(
            inbox,
            _reply(f"{sender}@example.org", "coordinators@example.org", f"note {n}").as_bytes(),
        )
    settings = load_config(project.config)
    engine = project.engine  # the fixture disposes of it
    restarts: list[float] = []

    def sleep(seconds: float) -> None:  # the backoff: bring the server back instead of waiting
        restarts.append(seconds)
        dovecot.start()

    source = ImapSource(dovecot.endpoint("starttls", folders=(inbox,)), batch=2, sleep=sleep)
    fetch = source.fetch_new

    def fetch_then_kill(folder: str, cursor: Any) -> Iterator[Any]:
        for n, fetched in enumerate(fetch(folder, cursor), start=1):
            yield fetched
            if n == 3:  # three messages read: the server dies under the poll
                dovecot.kill()

    monkeypatch.setattr(source, "fetch_new", fetch_then_kill)
    now = datetime(2027, 3, 2, 12, tzinfo=UTC)
    result = poll.poll(engine, settings=settings, secret=SECRET.encode(), now=now, source=source)
    assert restarts, "the poll never had to reconnect"
    assert (result.read, result.recorded, result.duplicates) == (8, 8, 0)
    assert project.rows("SELECT count(*) AS n, count(DISTINCT uid) AS uids FROM inbound") == [
        {"n": 8, "uids": 8}
    ]
