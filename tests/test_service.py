"""`rapport serve` as a subprocess: it sends, reads and reports on its own, stops cleanly on
SIGTERM (the message in flight finished, nothing twice, nothing lost), talks to systemd's notify
socket, reloads on SIGHUP, and refuses a second instance on one SQLite database.

The service follows the real clock, so the round here starts yesterday and every time of day in
the schedule is midnight: whatever the day the tests run, the first topic, the daily snapshot and
the week's report are due the moment the service starts.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

import pytest

from rapport.service import Notifier, _skip_busy_notes
from tests.conftest import Project, Result
from tests.dovecot import DovecotServer
from tests.smtp_server import SmtpTestServer
from tests.test_send import PAIRS, PEOPLE

Cli = Callable[..., Result]
pytestmark = pytest.mark.databases("sqlite", "postgresql")
COORDINATORS = "email,name,role,countries,timezone\nlead@example.org,Lena Lead,program,,UTC\n"
SCHEDULE = (
    "[schedule]\n"
    'topic_local_time = "00:00"\n'
    'daily_time = "00:00"\n'
    'report_weekday = "monday"\n'
    'report_time = "00:00"\n'
    'poll_every = "30s"\n'
    # The round starts yesterday at midnight in every zone: up to 56 hours ago at UTC+8 late in
    # the UTC day, so the default two days of lateness would make some topics "late".
    'max_lateness = "4d"\n'
)


@dataclass
class Imap:
    """The test Dovecot and a folder of its own, for the service to read as its inbox."""

    server: DovecotServer
    folder: str

    def config(self) -> str:
        return (
            "[imap]\n"
            'host = "localhost"\n'
            f"port = {self.server.port}\n"
            'security = "starttls"\n'
            f'username = "{self.server.username}"\n'
            'password_env = "TEST_IMAP_PASSWORD"\n'
            f'ca_file = "{self.server.ca_file}"\n'
            f'folders = ["{self.folder}"]\n'
        )


@pytest.fixture
def imap(
    dovecot: DovecotServer, imap_folders: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> Imap:
    monkeypatch.setenv("TEST_IMAP_PASSWORD", dovecot.password)  # the service inherits it
    return Imap(dovecot, imap_folders())


def _setup(project: Project, cli: Cli, smtp: SmtpTestServer, imap: Imap | None = None) -> None:
    """The program, its round and topics; the inbox is a Maildir, or ``imap``'s folder."""
    maildir = project.dir / "Maildir"
    for sub in ("new", "cur", "tmp"):
        (maildir / sub).mkdir(parents=True)
    inbox = imap.config() if imap else f'[maildir]\npath = "{maildir}"\n'
    project.write_config(SCHEDULE + inbox, smtp_port=smtp.port)
    folder = project.dir
    (folder / "participants.csv").write_text(
        "email,name,country,timezone,language\n" + "".join(",".join(p) + "\n" for p in PEOPLE),
        encoding="utf-8",
    )
    (folder / "partnerships.csv").write_text(
        "round,member_a,member_b\n" + "".join(f"now,{a},{b}\n" for a, b in PAIRS),
        encoding="utf-8",
    )
    (folder / "coordinators.csv").write_text(COORDINATORS, encoding="utf-8")
    topics = folder / "topics"
    topics.mkdir()
    (topics / "one.md").write_text('+++\ntitle = "One"\norder = 1\n+++\nHello.\n', "utf-8")
    (topics / "two.md").write_text('+++\ntitle = "Two"\norder = 2\n+++\nAgain.\n', "utf-8")
    yesterday = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
    for args in (
        ("import", "participants", folder / "participants.csv"),
        ("import", "coordinators", folder / "coordinators.csv"),
        ("round", "create", "now", "--start", yesterday),
        ("import", "partnerships", folder / "partnerships.csv"),
        ("import", "topics", topics, "--round", "now"),
    ):
        result = cli("--config", project.config, *args)
        assert result.code == 0, result.err
    # A reply already waiting in the inbox: a check-in from Ana, known by her address.
    message = EmailMessage()
    message["From"] = "Ana Souza <ana@example.org>"
    message["To"] = "coordinators@example.org"
    message["Subject"] = "Re: One"
    message["Message-ID"] = "<waiting-1@example.net>"
    message.set_content("1\n")
    if imap is not None:
        imap.server.append(imap.folder, message.as_bytes())
    else:
        (maildir / "new" / "1700000001.M1P1Q1.test").write_bytes(message.as_bytes())


class Notify:
    """A systemd notify socket: collects what the service sends, reading all the time as
    systemd does (a reader that stops would fill the socket's queue)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[str] = []
        self._closed = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while not self._closed.is_set():
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except TimeoutError:
                continue

    def seen(self, line: str) -> bool:
        return any(line in m.splitlines() for m in list(self.messages))

    def close(self) -> None:
        self._closed.set()
        self._reader.join()
        self.sock.close()


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[Notify]:
    n = Notify(tmp_path / "notify.sock")
    yield n
    n.close()


def _serve(project: Project, notify: Notify | None = None) -> subprocess.Popen[bytes]:
    """Start the service; its log goes to serve.log in the project (read by :func:`_log`)."""
    env = dict(os.environ)
    if notify is not None:
        env["NOTIFY_SOCKET"] = str(notify.path)
        env["WATCHDOG_USEC"] = "1000000"
    return subprocess.Popen(
        [sys.executable, "-m", "rapport.cli", "--config", str(project.config), "serve"],
        stdout=subprocess.DEVNULL,
        stderr=(project.dir / "serve.log").open("ab"),
        env=env,
    )


def _log(project: Project) -> str:
    return (project.dir / "serve.log").read_text(encoding="utf-8")


def _until(condition: Callable[[], bool], what: str, process: subprocess.Popen[bytes]) -> None:
    """Wait for the service to do something (not for time to pass): poll, with a deadline."""
    deadline = time.monotonic() + 60
    while not condition():
        if process.poll() is not None:
            raise AssertionError(f"serve exited {process.returncode} before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"serve never {what}")
        time.sleep(0.1)


def _count(project: Project, sql: str) -> int:
    return int(project.scalar(sql))


def _stop(process: subprocess.Popen[bytes]) -> float:
    """SIGTERM, then wait for the exit; the seconds it took."""
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=30)
    return time.monotonic() - started


def test_serve_sends_reads_reports_and_notifies_systemd(
    project: Project, cli: Cli, smtp_server: SmtpTestServer, notify: Notify, imap: Imap
) -> None:
    """It sends the topics (aiosmtpd), reads the check-in waiting in Dovecot (leaving it unread),
    judges, sends the week's report, and talks to systemd all along."""
    _setup(project, cli, smtp_server, imap)
    process = _serve(project, notify)
    try:
        _until(lambda: notify.seen("READY=1"), "said READY", process)
        topics = "SELECT count(*) FROM outbox WHERE kind = 'topic' AND status = 'sent'"
        _until(lambda: _count(project, topics) == len(PEOPLE), "sent the topics", process)
        _until(lambda: _count(project, "SELECT count(*) FROM inbound") == 1, "read", process)
        report = "SELECT count(*) FROM outbox WHERE kind = 'report' AND status = 'sent'"
        _until(lambda: _count(project, report) == 1, "sent the report", process)
        snapshots = "SELECT count(*) FROM health_snapshot"
        _until(lambda: _count(project, snapshots) == len(PAIRS), "took the snapshot", process)
        _until(lambda: notify.seen("WATCHDOG=1"), "pinged the watchdog", process)
        assert any(m.startswith("STATUS=") and "deliver" in m for m in notify.messages)
    finally:
        seconds = _stop(process)
    err = _log(project)
    assert process.returncode == 0, err
    assert seconds < 10
    assert "stopped" in err
    assert "RAPPORT_SECRET" not in err and "test-secret" not in err
    recipients = [r for m in smtp_server.handler.accepted for r in m.recipients]
    assert sorted(recipients) == sorted([p[0] for p in PEOPLE] + ["lead@example.org"])
    checkin = "SELECT count(*) FROM activity WHERE kind = 'checkin'"
    assert _count(project, checkin) == 1
    (uid,) = imap.server.uids(imap.folder)
    assert "\\Seen" not in imap.server.flags(imap.folder, uid)


def test_sigterm_mid_batch_then_restart_sends_everything_once(
    project: Project, cli: Cli, smtp_server: SmtpTestServer
) -> None:
    _setup(project, cli, smtp_server)
    hold = smtp_server.handler.hold("kelsey@example.org", then="250 OK")
    process = _serve(project)
    try:
        assert hold.arrived.wait(60), "the held message never arrived"
        process.send_signal(signal.SIGTERM)
        started = time.monotonic()
    finally:
        hold.release()
    process.wait(timeout=30)
    assert process.returncode == 0, _log(project)
    assert time.monotonic() - started < 10
    statuses = {
        row["to_address"]: row["status"]
        for row in project.rows("SELECT to_address, status FROM outbox WHERE kind = 'topic'")
    }
    assert statuses["kelsey@example.org"] == "sent"
    assert "sending" not in statuses.values() and "uncertain" not in statuses.values()
    again = _serve(project)
    try:
        topics = "SELECT count(*) FROM outbox WHERE kind = 'topic' AND status = 'sent'"
        _until(lambda: _count(project, topics) == len(PEOPLE), "sent the rest", again)
    finally:
        _stop(again)
    assert again.returncode == 0
    topic_recipients = [
        r for m in smtp_server.handler.accepted for r in m.recipients if r != "lead@example.org"
    ]
    assert sorted(topic_recipients) == sorted(p[0] for p in PEOPLE)


@pytest.mark.databases("sqlite")  # on PostgreSQL several instances share the work
def test_a_second_instance_on_sqlite_refuses_to_start(
    project: Project, cli: Cli, smtp_server: SmtpTestServer, notify: Notify
) -> None:
    """A second `serve`, or a pass by hand with --once, is refused while one serves."""
    _setup(project, cli, smtp_server)
    process = _serve(project, notify)
    try:
        _until(lambda: notify.seen("READY=1"), "said READY", process)
        second = cli("--config", project.config, "serve")
        assert second.code == 1
        assert "already running on this database" in second.err
        once = cli("--config", project.config, "serve", "--once")
        assert once.code == 1 and "already running on this database" in once.err
    finally:
        _stop(process)
    assert process.returncode == 0


def test_sighup_with_a_broken_config_keeps_the_old_one(
    project: Project, cli: Cli, smtp_server: SmtpTestServer, notify: Notify
) -> None:
    _setup(project, cli, smtp_server)
    process = _serve(project, notify)
    try:
        _until(lambda: notify.seen("READY=1"), "said READY", process)
        good = project.config.read_text(encoding="utf-8")
        project.config.write_text(good + "[smtp]\nport = 1\n", encoding="utf-8")  # duplicate
        process.send_signal(signal.SIGHUP)
        _until(lambda: "reload:" in _log(project), "reloaded", process)
        project.config.write_text(good, encoding="utf-8")
        process.send_signal(signal.SIGHUP)
        _until(lambda: "reload: " in _log(project).split("keeping")[-1], "reloaded", process)
    finally:
        _stop(process)
    err = _log(project)
    assert process.returncode == 0, err
    assert "reload: keeping the running configuration" in err
    assert "config.toml loaded" in err


def test_serve_once_runs_every_job_at_now(
    project: Project, cli: Cli, smtp_server: SmtpTestServer
) -> None:
    _setup(project, cli, smtp_server)
    now = datetime.now(UTC).isoformat()
    result = cli("--config", project.config, "serve", "--once", "--now", now)
    assert result.code == 0, result.err
    assert _count(project, "SELECT count(*) FROM outbox WHERE status = 'sent'") == len(PEOPLE) + 1
    refused = cli("--config", project.config, "serve", "--now", now)
    assert refused.code == 2 and "--now is only for --once" in refused.err


def test_a_notify_socket_nobody_reads_never_stalls_the_service(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """systemd reads its socket at once, but a stalled reader fills the queue (ten datagrams by
    default): sends then drop, with one warning, instead of blocking a job or the stop."""
    path = tmp_path / "stalled.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as stalled:
        stalled.bind(str(path))
        notifier = Notifier({"NOTIFY_SOCKET": str(path)})
        sender = threading.Thread(target=lambda: [notifier.send("WATCHDOG=1") for _ in range(500)])
        with caplog.at_level(logging.INFO, logger="rapport"):
            sender.start()
            sender.join(30)
            assert not sender.is_alive(), "a send blocked on the full socket"
            warnings = [r for r in caplog.records if "systemd notify failed" in r.getMessage()]
            assert len(warnings) == 1 and "queue is full" in warnings[0].getMessage()
            while True:  # systemd catches up: the next send goes through, and that is said
                try:
                    stalled.recv(4096, socket.MSG_DONTWAIT)
                except BlockingIOError:
                    break
            notifier.send("WATCHDOG=1")
        assert stalled.recv(4096) == b"WATCHDOG=1"
        assert any("works again" in r.getMessage() for r in caplog.records)


def test_the_schedulers_busy_note_is_dropped_but_not_its_other_warnings() -> None:
    """A skipped run while the job still runs is not a warning for journald; a missed run is."""

    def record(message: str) -> logging.LogRecord:
        return logging.LogRecord("apscheduler.scheduler", logging.WARNING, "", 0, message, (), None)

    busy = (
        'Execution of job "Service._run" skipped: maximum number of running instances reached (1)'
    )
    missed = 'Run time of job "Service._run" was missed by 0:05:00'
    assert _skip_busy_notes(record(busy)) is False
    assert _skip_busy_notes(record(missed)) is True
