"""`rapport inbox poll` over a Maildir: replies become activity, bounces suppress, nothing twice."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from tests.conftest import Project, Result
from tests.smtp_server import SmtpTestServer
from tests.test_send import _rows, _setup

pytestmark = pytest.mark.databases("sqlite", "postgresql")

Cli = Callable[..., Result]
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "mail"
_sequence = iter(range(1, 1_000_000))


def _maildir(project: Project) -> Path:
    root = project.dir / "Maildir"
    for sub in ("new", "cur", "tmp"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    return root


def _deliver(maildir: Path, message: EmailMessage | bytes) -> None:
    """Drop a message into new/ under a Maildir name from well before now (so it is settled)."""
    n = next(_sequence)
    data = message if isinstance(message, bytes) else message.as_bytes()
    (maildir / "new" / f"{1_700_000_000 + n}.M{n}P1Q1.test").write_bytes(data)


def _reply(sender: str, to: str, text: str, *, cc: str = "", in_reply_to: str = "") -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    if cc:
        message["Cc"] = cc
    message["Subject"] = "Re: Test Network: Topic 1"
    message["Message-ID"] = f"<reply-{next(_sequence)}@example.net>"
    message["Date"] = "Tue, 02 Mar 2027 10:00:00 +0000"
    if in_reply_to:
        message["In-Reply-To"] = in_reply_to
    message.set_content(text)
    return message


def _project(project: Project, cli: Cli, smtp_server: SmtpTestServer) -> Path:
    """Topics sent to everyone, and a Maildir inbox configured."""
    _setup(project, cli, smtp_server)
    maildir = _maildir(project)
    text = project.config.read_text(encoding="utf-8")
    project.config.write_text(text + f'[maildir]\npath = "{maildir}"\n', encoding="utf-8")
    assert cli("--config", project.config, "send", "--now", "2027-03-01T23:00:00Z").code == 0
    return maildir


def _activity(project: Project) -> list[tuple[str, str, int | None]]:
    return [
        (row["email"], row["kind"], row["value"])
        for row in project.rows(
            "SELECT p.email, a.kind, a.value FROM activity a"
            " JOIN participant p ON p.id = a.participant_id ORDER BY a.id"
        )
    ]


def _suppressed(project: Project) -> list[tuple[str, str]]:
    return [
        (row["email"], row["reason"])
        for row in project.rows("SELECT email, reason FROM suppression ORDER BY id")
    ]


def _key(project: Project, address: str) -> tuple[str, str]:
    [row] = _rows(project, f"to_address = '{address}'")
    return row["reply_key"], row["message_id"]


def test_a_checkin_reply_is_attributed_by_its_reply_key(
    project: Project, cli: Cli, smtp_server: SmtpTestServer
) -> None:
    """A reply to the topic's Reply-To carrying '1' records a message and a check-in 1."""
    maildir = _project(project, cli, smtp_server)
    key, _ = _key(project, "ana@example.org")
    _deliver(
        maildir, _reply("Ana Souza <ana@example.org>", f"coordinators+{key}@example.org", "1\n")
    )
    result = cli("--config", project.config, "inbox", "poll", "--now", "2027-03-02T12:00:00Z")
    assert result.code == 0, result.err
    assert result.out.strip() == "read 1 (1 human); recorded 1, 2 activity events"
    assert _activity(project) == [
        ("ana@example.org", "message", None),
        ("ana@example.org", "checkin", 1),
    ]
    assert project.rows("SELECT matched_by, body FROM inbound") == [
        {"matched_by": "reply_key", "body": None}
    ]
    again = cli("--config", project.config, "inbox", "poll", "--now", "2027-03-02T12:05:00Z")
    assert again.out.strip() == "read 0; recorded 0, 0 activity events"
    assert list((maildir / "new").iterdir()), "reading must leave the message unread in new/"


def test_thread_and_sender_attribution_and_partner_contact(
    project: Project, cli: Cli, smtp_server: SmtpTestServer
) -> None:
    """In-Reply-To finds the participant; mail to the partner copying +log is partner contact."""
    maildir = _project(project, cli, smtp_server)
    _, message_id = _key(project, "kelsey@example.org")
    _deliver(
        maildir,
        _reply(
            "kelsey@example.org",
            "coordinators@example.org",
            "2 - no answer yet",
            in_reply_to=message_id,
        ),
    )
    _deliver(
        maildir,
        _reply(
            "AMARA@example.org",
            "kelsey@example.org",
            "Bonjour Kelsey !",
            cc="coordinators+log@example.org",
        ),
    )
    result = cli("--config", project.config, "inbox", "poll", "--now", "2027-03-02T12:00:00Z")
    assert result.out.strip() == "read 2 (2 human); recorded 2, 4 activity events"
    assert _activity(project) == [
        ("kelsey@example.org", "message", None),
        ("kelsey@example.org", "checkin", 2),
        ("amara@example.org", "message", None),
        ("amara@example.org", "partner_contact", None),
    ]
    matched = [r["matched_by"] for r in project.rows("SELECT matched_by FROM inbound ORDER BY id")]
    assert matched == ["in_reply_to", "sender"]


def test_a_forged_reply_key_counts_for_nothing(
    project: Project, cli: Cli, smtp_server: SmtpTestServer
) -> None:
    """A key whose HMAC does not verify attributes nothing; a real key from another member's
    address is not taken for the key's owner."""
    maildir = _project(project, cli, smtp_server)
    _deliver(
        maildir,
        _reply("stranger@example.net", "coordinators+aaaaaaaaaaaaaaaaaaaa@example.org", "1"),
    )
    ana_key, _ = _key(project, "ana@example.org")
    _deliver(maildir, _reply("kelsey@example.org", f"coordinators+{ana_key}@example.org", "1"))
    cli("--config", project.config, "inbox", "poll", "--now", "2027-03-02T12:00:00Z")
    assert ("ana@example.org", "checkin", 1) not in _activity(project)
    assert _activity(project) == [
        ("kelsey@example.org", "message", None),
        ("kelsey@example.org", "checkin", 1),
    ]


def test_bounce_suppresses_and_marks_bouncing(
    project: Project, cli: Cli, smtp_server: SmtpTestServer
) -> None:
    """A DSN failing a participant suppresses the address; the next topic is not sent to it."""
    maildir = _project(project, cli, smtp_server)
    dsn = (
        b"From: MAILER-DAEMON@mx.example.net\r\nTo: coordinators@example.org\r\n"
        b"Subject: Undelivered Mail Returned to Sender\r\nMessage-ID: <dsn-1@mx.example.net>\r\n"
        b"Auto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        b"--B\r\nContent-Type: text/plain\r\n\r\nThe mail system could not deliver it.\r\n"
        b"--B\r\nContent-Type: message/delivery-status\r\n\r\n"
        b"Reporting-MTA: dns; mx.example.net\r\n\r\n"
        b"Final-Recipient: rfc822; priya@example.org\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        b"Diagnostic-Code: smtp; 550 5.1.1 user unknown\r\n\r\n--B--\r\n"
    )
    _deliver(maildir, dsn)
    result = cli("--config", project.config, "inbox", "poll", "--now", "2027-03-02T12:00:00Z")
    assert result.out.strip().startswith(
        "read 1 (1 bounce); recorded 1, 1 activity events, suppressed 1"
    )
    assert _suppressed(project) == [("priya@example.org", "bounce")]
    assert (
        project.scalar(
            "SELECT bouncing_since FROM participant WHERE email = ?", "priya@example.org"
        )
        is not None
    )
    sent = cli("--config", project.config, "send", "--now", "2027-03-15T23:00:00Z")
    assert sent.out.strip() == "planned 5 (1 suppressed); sent 5"


def test_unsubscribe_suppresses_only_the_key_owner(
    project: Project, cli: Cli, smtp_server: SmtpTestServer
) -> None:
    """A reply to the List-Unsubscribe mailto suppresses the key's participant and no one else."""
    maildir = _project(project, cli, smtp_server)
    key, _ = _key(project, "lukasz@example.org")
    message = _reply(
        "lukasz@example.org", f"coordinators+unsubscribe-{key}@example.org", "unsubscribe"
    )
    _deliver(maildir, message)
    cli("--config", project.config, "inbox", "poll", "--now", "2027-03-02T12:00:00Z")
    assert _suppressed(project) == [("lukasz@example.org", "unsubscribe")]


def test_auto_replies_are_not_activity_and_dry_run_records_nothing(
    project: Project, cli: Cli, smtp_server: SmtpTestServer
) -> None:
    """An out-of-office is recorded but is not activity; --dry-run records and moves nothing."""
    maildir = _project(project, cli, smtp_server)
    key, _ = _key(project, "wang@example.org")
    away = _reply("wang@example.org", f"coordinators+{key}@example.org", "I am away until Monday.")
    away.replace_header("Subject", "Automatic reply: Test Network: Topic 1")
    away["Auto-Submitted"] = "auto-replied"
    _deliver(maildir, away)
    before = project.dump()
    dry = cli(
        "--config", project.config, "inbox", "poll", "--dry-run", "--now", "2027-03-02T12:00:00Z"
    )
    assert dry.out.strip() == "dry run: read 1 (1 auto_reply); nothing recorded or moved"
    assert project.dump() == before
    result = cli("--config", project.config, "inbox", "poll", "--now", "2027-03-02T12:00:00Z")
    assert result.out.strip() == "read 1 (1 auto_reply); recorded 1, 0 activity events"
    assert _activity(project) == []
    status = cli("--config", project.config, "inbox", "status").out.splitlines()
    assert status[0].split()[:3] == ["source", "folder", "uidvalidity"]
    assert "auto_reply=1" in status[1] and "INBOX" in status[1]


@pytest.mark.databases("sqlite")  # reads no database: once is enough
def test_inbox_classify_prints_the_json_contract(
    project: Project, cli: Cli, tmp_path: Path
) -> None:
    """inbox classify prints one JSON object per file with exactly the contract's keys."""
    path = tmp_path / "reply.eml"
    path.write_bytes(
        _reply("ana@example.org", "coordinators+abcdefghij2345672345@example.org", "3").as_bytes()
    )
    result = cli("--config", project.config, "inbox", "classify", path, path)
    lines = result.out.splitlines()
    assert len(lines) == 2
    found = json.loads(lines[0])
    assert set(found) == {
        "file",
        "kind",
        "sender",
        "reply_key",
        "in_reply_to",
        "checkin",
        "bounced",
        "reason",
    }
    assert (found["kind"], found["sender"], found["reply_key"], found["checkin"]) == (
        "human",
        "ana@example.org",
        "abcdefghij2345672345",
        3,
    )
    missing = cli("--config", project.config, "inbox", "classify", tmp_path / "nope.eml")
    assert missing.code == 2 and "nope.eml: cannot read" in missing.err


@pytest.mark.databases("sqlite")  # reads no database: once is enough
def test_no_inbox_configured_is_a_config_error(project: Project, cli: Cli) -> None:
    """poll without [imap] or [maildir] says what to set (exit 2)."""
    result = cli("--config", project.config, "inbox", "poll")
    assert result.code == 2 and "no inbox: set [imap] host or [maildir] path" in result.err


def test_an_alias_counts_as_its_participant(
    project: Project, cli: Cli, smtp_server: SmtpTestServer
) -> None:
    """Mail from an alias a coordinator added is attributed to the participant."""
    maildir = _project(project, cli, smtp_server)
    added = cli(
        "--config",
        project.config,
        "participant",
        "alias",
        "ana@example.org",
        "Ana.Home@Example.net",
    )
    assert added.out.strip() == "ana.home@example.net now counts as ana@example.org"
    again = cli(
        "--config",
        project.config,
        "participant",
        "alias",
        "ana@example.org",
        "ana.home@example.net",
    )
    assert again.out.strip() == "ana.home@example.net already counts as ana@example.org"
    taken = cli(
        "--config", project.config, "participant", "alias", "kelsey@example.org", "ana@example.org"
    )
    assert taken.code == 2 and "is a participant's own address" in taken.err
    _deliver(maildir, _reply("ana.home@example.net", "coordinators@example.org", "3 not yet"))
    cli("--config", project.config, "inbox", "poll", "--now", "2027-03-02T12:00:00Z")
    assert _activity(project) == [
        ("ana@example.org", "message", None),
        ("ana@example.org", "checkin", 3),
    ]


def test_a_recreated_maildir_counts_nothing_twice(
    project: Project, cli: Cli, smtp_server: SmtpTestServer
) -> None:
    """A folder replaced by a copy (a new UIDVALIDITY) is read again, and nothing counts twice."""
    maildir = _project(project, cli, smtp_server)
    key, _ = _key(project, "ana@example.org")
    _deliver(maildir, _reply("ana@example.org", f"coordinators+{key}@example.org", "1"))
    cli("--config", project.config, "inbox", "poll", "--now", "2027-03-02T12:00:00Z")
    copy = maildir.with_name("Maildir.copy")
    maildir.rename(copy)
    _maildir(project)
    for path in (copy / "new").iterdir():
        (maildir / "new" / path.name).write_bytes(path.read_bytes())
    _deliver(maildir, _reply("priya@example.org", "coordinators@example.org", "1"))
    result = cli("--config", project.config, "inbox", "poll", "--now", "2027-03-02T13:00:00Z")
    assert result.out.strip() == "read 2 (2 human); recorded 1, 2 activity events, 1 seen before"
    kinds = [(email, kind) for email, kind, _ in _activity(project)]
    assert kinds.count(("ana@example.org", "checkin")) == 1


def test_one_click_unsubscribe_by_key(
    project: Project, cli: Cli, smtp_server: SmtpTestServer
) -> None:
    """`rapport unsubscribe KEY` (for a one-click handler) suppresses that participant only;
    a forged key changes nothing and exits 2."""
    _project(project, cli, smtp_server)
    key, _ = _key(project, "wang@example.org")
    result = cli("--config", project.config, "unsubscribe", key.upper())
    assert result.code == 0, result.err
    assert (
        result.out.strip()
        == "wang@example.org is unsubscribed: Rapport will send them nothing more"
    )
    before = project.dump()
    forged = cli("--config", project.config, "unsubscribe", "a" * 20)
    assert forged.code == 2 and "names no participant" in forged.err
    assert project.dump() == before
    assert _suppressed(project) == [("wang@example.org", "unsubscribe")]


def test_a_message_the_database_refuses_does_not_stop_the_poll(
    project: Project, cli: Cli, smtp_server: SmtpTestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When a batch fails to commit it is replayed one by one: the refused message is recorded
    as an error, the others as usual, and the cursor moves past all of them."""
    from sqlalchemy.exc import OperationalError

    from monitor import signals

    maildir = _project(project, cli, smtp_server)
    for sender in ("ana", "kelsey", "priya"):
        _deliver(maildir, _reply(f"{sender}@example.org", "coordinators@example.org", "1"))
    record_many = signals.Recorder.record_many

    def refuse_kelsey(self: signals.Recorder, connection: Any, batch: Any, **kw: Any) -> Any:
        """Any batch holding Kelsey's message fails, unless it is recorded as an error."""
        if any(inbound.sender == "kelsey@example.org" and not error for inbound, _, error in batch):
            raise OperationalError("INSERT", {}, Exception("disk I/O error"))
        return record_many(self, connection, batch, **kw)

    monkeypatch.setattr(signals.Recorder, "record_many", refuse_kelsey)
    result = cli("--config", project.config, "inbox", "poll", "--now", "2027-03-02T12:00:00Z")
    assert result.code == 1
    assert "could not be recorded: OperationalError" in result.out
    kinds = {r["sender"]: r["kind"] for r in project.rows("SELECT sender, kind FROM inbound")}
    assert kinds == {
        "ana@example.org": "human",
        "kelsey@example.org": "error",
        "priya@example.org": "human",
    }
    again = cli("--config", project.config, "inbox", "poll", "--now", "2027-03-02T12:05:00Z")
    assert again.out.strip() == "read 0; recorded 0, 0 activity events"


def _tables(project: Project) -> dict[str, list[dict[str, Any]]]:
    return {
        table: project.rows(f"SELECT * FROM {table} ORDER BY id")
        for table in ("inbound", "activity", "suppression", "participant", "inbox_cursor")
    }


@contextmanager
def _restorable(project: Project, request: pytest.FixtureRequest) -> Iterator[Callable[[], None]]:
    """Snapshot the project's database now; the function yielded puts the project back on a
    fresh copy of that snapshot (a file copy on SQLite, a database copy on PostgreSQL)."""
    if project.backend == "sqlite":
        snapshot = project.dir / "before.db"
        with sqlite3.connect(project.db) as source, sqlite3.connect(snapshot) as copy:
            source.backup(copy)

        def restore_file() -> None:
            with sqlite3.connect(snapshot) as source, sqlite3.connect(project.db) as target:
                source.backup(target)

        yield restore_file
        return
    server = request.getfixturevalue("postgres")
    original = make_url(project.url)
    project.close()  # a template database must have no other connections
    server.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        f" WHERE datname = '{original.database}' AND pid <> pg_backend_pid()"
    )
    snapshot = server.new_database(template=str(original.database))
    made = [snapshot]

    def restore_database() -> None:
        project.close()
        copy = server.new_database(template=snapshot)
        made.append(copy)
        url = original.set(database=copy).render_as_string(hide_password=False)
        config = project.config.read_text(encoding="utf-8")
        project.config.write_text(config.replace(project.url, url), encoding="utf-8")
        project.url = url

    try:
        yield restore_database
    finally:
        project.close()
        for name in made:
            server.drop_database(name)


def test_a_batch_is_recorded_exactly_as_one_message_at_a_time(
    project: Project,
    cli: Cli,
    smtp_server: SmtpTestServer,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    """Recording many messages per transaction (with lookups and inserts per batch) leaves the
    same rows as recording each on its own: duplicates within a batch, repeated bounces of one
    address, unsubscribes, thread and sender attribution, messages without a Message-ID."""
    from rapport import poll

    maildir = _project(project, cli, smtp_server)
    ana_key, _ = _key(project, "ana@example.org")
    lukasz_key, _ = _key(project, "lukasz@example.org")
    _, kelsey_topic = _key(project, "kelsey@example.org")
    twice = _reply("ana@example.org", f"coordinators+{ana_key}@example.org", "1").as_bytes()
    away = _reply("wang@example.org", "coordinators@example.org", "Away until Monday.")
    away["Auto-Submitted"] = "auto-replied"
    no_id = _reply("stranger@example.com", "coordinators@example.org", "Hello?")
    del no_id["Message-ID"]
    mail: list[EmailMessage | bytes] = [
        twice,
        _reply("kelsey@example.org", "coordinators@example.org", "2", in_reply_to=kelsey_topic),
        _reply("amara@example.org", "kelsey@example.org", "Hi!", cc="coordinators+log@example.org"),
        twice,  # the same message again: seen before, within the batch
        _dsn("priya@example.org", 1),
        _dsn("priya@example.org", 2),  # the address is suppressed once, bounces twice
        _reply("lukasz@example.org", f"coordinators+unsubscribe-{lukasz_key}@example.org", "x"),
        away,
        no_id,
        _reply("wang@example.org", f"coordinators+{ana_key}@example.org", "1"),  # not ana's key
    ]
    for message in mail:
        _deliver(maildir, message)
    outputs, tables = [], []
    with _restorable(project, request) as restore:
        for per_commit in (1, 1000):
            monkeypatch.setattr(poll, "COMMIT_EVERY", per_commit)
            restore()
            result = cli(
                "--config", project.config, "inbox", "poll", "--now", "2027-03-02T12:00:00Z"
            )
            outputs.append(result.out)
            tables.append(_tables(project))
    assert outputs[0] == outputs[1]
    assert "recorded 9" in outputs[0] and "1 seen before" in outputs[0]
    assert tables[0] == tables[1]
    assert len(tables[0]["inbound"]) == 9 and len(tables[0]["suppression"]) == 2


def _dsn(address: str, n: int) -> bytes:
    return (
        b"From: MAILER-DAEMON@mx.example.net\r\nTo: coordinators@example.org\r\n"
        b"Subject: Undelivered Mail Returned to Sender\r\n"
        + f"Message-ID: <dsn-{n}@mx.example.net>\r\n".encode()
        + b"Auto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        b"--B\r\nContent-Type: message/delivery-status\r\n\r\n"
        b"Reporting-MTA: dns; mx.example.net\r\n\r\n"
        + f"Final-Recipient: rfc822; {address}\r\n".encode()
        + b"Action: failed\r\nStatus: 5.1.1\r\n\r\n--B--\r\n"
    )


_KILL_AFTER_TWO_COMMITS = """
import os, signal, sys
from rapport import poll
from rapport.cli import main

flush, commits = poll._Writer.flush, []

def flush_then_die(self):
    had = bool(self.pending)
    flush(self)
    if had:
        commits.append(1)
        if len(commits) == 2:  # two batches committed: the process dies as in a power cut
            os.kill(os.getpid(), signal.SIGKILL)

poll._Writer.flush = flush_then_die
poll.COMMIT_EVERY = 2
sys.exit(main(["--config", sys.argv[1], "inbox", "poll", "--now", "2027-03-02T12:00:00Z"]))
"""


def test_a_poll_killed_mid_way_resumes_after_its_last_commit(
    project: Project, cli: Cli, smtp_server: SmtpTestServer
) -> None:
    """SIGKILL after two commits of two messages: those four stay recorded with the cursor
    after them, and the next poll records the other three, each message once."""
    import os
    import signal
    import subprocess
    import sys

    maildir = _project(project, cli, smtp_server)
    senders = ("ana", "kelsey", "priya", "wang", "lukasz", "ana", "kelsey")
    for n, sender in enumerate(senders):
        _deliver(maildir, _reply(f"{sender}@example.org", "coordinators@example.org", f"1 ({n})"))
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root)}
    killed = subprocess.run(
        [sys.executable, "-c", _KILL_AFTER_TWO_COMMITS, str(project.config)],
        cwd=root,
        env=env,
        capture_output=True,
        check=False,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()
    uids = [r["uid"] for r in project.rows("SELECT uid FROM inbound ORDER BY uid")]
    last = project.scalar("SELECT last_uid FROM inbox_cursor")
    assert len(uids) == 4 and last == uids[-1]
    result = cli("--config", project.config, "inbox", "poll", "--now", "2027-03-02T12:05:00Z")
    assert result.out.strip() == "read 3 (3 human); recorded 3, 6 activity events"
    assert project.rows(
        "SELECT count(*) AS n, count(DISTINCT uid) AS uids, count(DISTINCT message_id) AS ids"
        " FROM inbound"
    ) == [{"n": 7, "uids": 7, "ids": 7}]
    events = [(email, kind) for email, kind, _ in _activity(project)]
    assert len(events) == 14
    assert events.count(("ana@example.org", "checkin")) == 2
