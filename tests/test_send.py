"""`rapport send` end to end against a real SMTP server on loopback: exactly once, on time, in
each participant's zone, through faults and a crash."""

from __future__ import annotations

import email
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from email import policy
from pathlib import Path
from typing import Any

import pytest
from freezegun import freeze_time

from tests.conftest import Project, Result
from tests.smtp_server import SmtpTestServer

PEOPLE = [
    # email, name, country, zone, language
    ("ana@example.org", "Ana Souza", "BR", "America/Sao_Paulo", "es"),
    ("lukasz@example.org", "Łukasz Nowak", "PL", "Europe/Warsaw", "en"),
    ("kelsey@example.org", "Kelsey Brown", "US", "America/New_York", "en"),
    ("amara@example.org", "Amara Okafor", "NG", "Africa/Lagos", "fr"),
    ("wang@example.org", "王芳", "CN", "Asia/Shanghai", "de"),
    ("priya@example.org", "Priya Nair", "IN", "Asia/Kolkata", "en"),
]
PAIRS = [
    ("ana@example.org", "lukasz@example.org"),
    ("kelsey@example.org", "amara@example.org"),
    ("wang@example.org", "priya@example.org"),
]
TOPIC_EN = '+++\ntitle = "Introductions"\norder = 1\n+++\nTell your partner about your library.\n'
TOPIC_FR = '+++\ntitle = "Présentations"\n+++\nParlez de votre bibliothèque.\n'
TOPIC2_EN = '+++\ntitle = "A day at work"\norder = 2\n+++\nDescribe a typical day.\n'

Cli = Callable[..., Result]
pytestmark = pytest.mark.databases("sqlite", "postgresql")


def _setup(
    project: Project, cli: Cli, server: SmtpTestServer, extra: str = "", start: str = "2027-03-01"
) -> None:
    project.write_config(extra, smtp_port=server.port)
    folder = project.dir
    (folder / "participants.csv").write_text(
        "email,name,country,timezone,language\n" + "".join(",".join(p) + "\n" for p in PEOPLE),
        encoding="utf-8",
    )
    (folder / "partnerships.csv").write_text(
        "round,member_a,member_b\n" + "".join(f"spring,{a},{b}\n" for a, b in PAIRS),
        encoding="utf-8",
    )
    topics = folder / "topics"
    topics.mkdir()
    (topics / "intro.md").write_text(TOPIC_EN, encoding="utf-8")
    (topics / "intro.fr.md").write_text(TOPIC_FR, encoding="utf-8")
    (topics / "day.md").write_text(TOPIC2_EN, encoding="utf-8")
    for args in (
        ("import", "participants", folder / "participants.csv"),
        ("round", "create", "spring", "--start", start),
        ("import", "partnerships", folder / "partnerships.csv"),
        ("import", "topics", topics, "--round", "spring"),
    ):
        result = cli("--config", project.config, *args)
        assert result.code == 0, result.err


def _rows(project: Project, where: str = "1=1") -> list[dict[str, Any]]:
    return project.rows(f"SELECT * FROM outbox WHERE {where} ORDER BY id")


def _recipients(server: SmtpTestServer) -> list[str]:
    return [r for message in server.handler.accepted for r in message.recipients]


def _parsed(server: SmtpTestServer, address: str) -> email.message.EmailMessage:
    [data] = [m.data for m in server.handler.accepted if address in m.recipients]
    return email.message_from_bytes(data, policy=policy.default)  # type: ignore[return-value]


def test_everyone_gets_the_topic_once_at_nine_local(
    project: Project, cli: Cli, smtp_server: SmtpTestServer
) -> None:
    """Each participant's topic is due at 09:00 in their own zone; a second pass sends nothing."""
    _setup(project, cli, smtp_server)
    send = ("--config", project.config, "send")
    # 09:00 in Shanghai is 01:00Z, in Kolkata 03:30Z, Warsaw 08:00Z, Lagos 08:00Z,
    # Sao Paulo 12:00Z, New York 14:00Z (all on 1 March 2027).
    result = cli(*send, "--now", "2027-03-01T03:45:00Z")
    assert result.code == 0, result.err
    assert result.out.strip() == "planned 2; sent 2"
    assert sorted(_recipients(smtp_server)) == ["priya@example.org", "wang@example.org"]
    result = cli(*send, "--now", "2027-03-01T13:00:00Z")
    assert result.out.strip() == "planned 3; sent 3"
    result = cli(*send, "--now", "2027-03-01T14:00:00Z")
    assert result.out.strip() == "planned 1; sent 1"
    result = cli(*send, "--now", "2027-03-01T20:00:00Z")
    assert result.out.strip() == "planned 0; sent 0"
    assert sorted(_recipients(smtp_server)) == sorted(p[0] for p in PEOPLE)
    due = {row["to_address"]: row["due_at"] for row in _rows(project)}
    assert due["kelsey@example.org"].startswith("2027-03-01 14:00:00")
    assert due["priya@example.org"].startswith("2027-03-01 03:30:00")


def test_topic_email_headers_language_and_partner(
    project: Project, cli: Cli, smtp_server: SmtpTestServer
) -> None:
    """Headers are complete, French readers get French, a German reader falls back to English."""
    _setup(project, cli, smtp_server)
    cli("--config", project.config, "send", "--now", "2027-03-01T23:00:00Z")
    amara = _parsed(smtp_server, "amara@example.org")
    assert amara["Subject"] == "Test Network\u00a0: Thème 1 — Présentations"
    assert amara["From"].addresses[0].addr_spec == "coordinators@example.org"
    assert amara["To"].addresses[0].addr_spec == "amara@example.org"
    assert amara["Auto-Submitted"] == "auto-generated"
    [row] = _rows(project, "to_address = 'amara@example.org'")
    assert (
        amara["Reply-To"].addresses[0].addr_spec == f"coordinators+{row['reply_key']}@example.org"
    )
    assert amara["Message-ID"] == row["message_id"]
    assert f"coordinators+unsubscribe-{row['reply_key']}@example.org" in amara["List-Unsubscribe"]
    assert amara["List-Unsubscribe-Post"] is None
    assert amara.get_content_type() == "multipart/alternative"
    text = amara.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    html = amara.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert "Kelsey Brown" in text and "Kelsey Brown" in html
    assert "Parlez de votre bibliothèque" in text
    wang = _parsed(smtp_server, "wang@example.org")
    assert "Introductions" in wang["Subject"]
    assert wang["To"].addresses[0].display_name == "王芳"
    assert "Priya Nair" in wang.get_body(("plain",)).get_content()  # type: ignore[union-attr]


def test_dst_gap_moves_to_the_next_valid_minute(
    project: Project, cli: Cli, smtp_server: SmtpTestServer
) -> None:
    """A 02:30 send on Warsaw's spring-forward day goes out at 03:00 CEST (01:00Z)."""
    _setup(
        project,
        cli,
        smtp_server,
        extra='[schedule]\ntopic_local_time = "02:30"\n',
        start="2027-03-28",
    )
    with freeze_time("2027-03-28T00:59:00Z"):
        cli("--config", project.config, "send")
        assert "lukasz@example.org" not in _recipients(smtp_server)
    with freeze_time("2027-03-28T01:00:00Z"):
        cli("--config", project.config, "send")
        assert "lukasz@example.org" in _recipients(smtp_server)
    [row] = _rows(project, "to_address = 'lukasz@example.org'")
    assert row["due_at"].startswith("2027-03-28 01:00:00")


def test_late_topics_are_reported_not_sent(
    project: Project, cli: Cli, smtp_server: SmtpTestServer
) -> None:
    """After downtime past schedule.max_lateness, topics are marked late and listed."""
    _setup(project, cli, smtp_server)
    result = cli("--config", project.config, "send", "--now", "2027-03-05T12:00:00Z")
    assert result.out.strip() == "planned 0 (6 late); sent 0"
    assert smtp_server.handler.accepted == []
    result = cli("--config", project.config, "outbox", "--status", "late")
    lines = result.out.splitlines()[1:]
    assert len(lines) == 6 and all(line.split()[1] == "late" for line in lines)


def test_dry_run_changes_nothing(project: Project, cli: Cli, smtp_server: SmtpTestServer) -> None:
    """send --dry-run neither writes the database nor sends mail."""
    _setup(project, cli, smtp_server)
    before = project.dump()
    result = cli("--config", project.config, "send", "--dry-run", "--now", "2027-03-01T23:00:00Z")
    assert result.code == 0
    assert result.out.startswith("dry run: would plan 6 topic emails")
    assert project.dump() == before
    assert smtp_server.handler.messages == []


def test_rejected_recipient_fails_and_is_suppressed(
    project: Project, cli: Cli, smtp_server: SmtpTestServer
) -> None:
    """A 550 at RCPT fails that row and suppresses the address; the batch goes on."""
    _setup(project, cli, smtp_server)
    smtp_server.handler.reject_rcpt("kelsey@example.org", "550 5.1.1 no such user")
    result = cli("--config", project.config, "send", "--now", "2027-03-01T23:00:00Z")
    assert result.out.strip() == "planned 6; sent 5, 1 failed"
    [row] = _rows(project, "to_address = 'kelsey@example.org'")
    assert row["status"] == "failed" and "550" in row["last_error"]
    result = cli("--config", project.config, "send", "--now", "2027-03-15T23:00:00Z")
    assert result.out.strip() == "planned 5 (1 suppressed); sent 5"


def test_temporary_failure_is_retried_with_backoff(
    project: Project, cli: Cli, smtp_server: SmtpTestServer
) -> None:
    """A 451 puts the row in retry with a later attempt time; the next pass after it sends."""
    _setup(project, cli, smtp_server)
    smtp_server.handler.reply("rcpt", "451 4.3.0 try later", recipient="ana@example.org", times=1)
    result = cli("--config", project.config, "send", "--now", "2027-03-01T23:00:00Z")
    assert result.out.strip() == "planned 6; sent 5, 1 to retry"
    [row] = _rows(project, "to_address = 'ana@example.org'")
    assert row["status"] == "retry" and row["attempts"] == 1
    # retry_base is 5 minutes with +-25% jitter: not yet at 23:03, certainly by 23:07.
    assert (
        cli("--config", project.config, "send", "--now", "2027-03-01T23:03:00Z").out.strip()
        == "planned 0; sent 0"
    )
    assert (
        cli("--config", project.config, "send", "--now", "2027-03-01T23:07:00Z").out.strip()
        == "planned 0; sent 1"
    )
    assert _recipients(smtp_server).count("ana@example.org") == 1


def test_retries_are_capped(project: Project, cli: Cli, smtp_server: SmtpTestServer) -> None:
    """After outbox.max_attempts temporary failures the row fails for good."""
    _setup(project, cli, smtp_server, extra='[outbox]\nmax_attempts = 2\nretry_base = "1m"\n')
    smtp_server.handler.reply(
        "rcpt", "451 4.3.0 try later", recipient="ana@example.org", times=None
    )
    cli("--config", project.config, "send", "--now", "2027-03-01T23:00:00Z")
    result = cli("--config", project.config, "send", "--now", "2027-03-01T23:10:00Z")
    assert result.out.strip() == "planned 0; sent 0, 1 failed"
    [row] = _rows(project, "to_address = 'ana@example.org'")
    assert row["status"] == "failed" and row["last_error"].startswith("gave up after 2 attempts")


def test_421_and_dropped_connections_reconnect(
    project: Project, cli: Cli, smtp_server: SmtpTestServer
) -> None:
    """A 421 and a dropped connection cost a reconnect, not a message, and send nothing twice."""
    _setup(project, cli, smtp_server)
    smtp_server.handler.reply("mail", "421 4.3.2 shutting down", times=1)
    result = cli("--config", project.config, "send", "--now", "2027-03-01T23:00:00Z")
    assert result.out.strip() == "planned 6; sent 6"
    smtp_server.handler.drop("data", times=1)
    result = cli("--config", project.config, "send", "--now", "2027-03-15T23:00:00Z")
    assert result.out.strip() == "planned 6; sent 6"
    assert sorted(_recipients(smtp_server)) == sorted([p[0] for p in PEOPLE] * 2)
    assert smtp_server.handler.connections == 4


def test_rate_limit_per_minute(project: Project, cli: Cli, smtp_server: SmtpTestServer) -> None:
    """max_per_minute caps a pass; the rest goes in a later minute."""
    project_extra = ""
    _setup(project, cli, smtp_server, extra=project_extra)
    project.write_config(smtp_port=smtp_server.port)
    text = project.config.read_text().replace("max_per_minute = 0", "max_per_minute = 4")
    project.config.write_text(text)
    result = cli("--config", project.config, "send", "--now", "2027-03-01T23:00:00Z")
    assert result.out.strip() == (
        "planned 6; sent 4; stopped: rate limit smtp.max_per_minute reached;"
        " the rest waits for the next pass"
    )
    result = cli("--config", project.config, "send", "--now", "2027-03-01T23:01:30Z")
    assert result.out.strip() == "planned 0; sent 2"


def test_redirect_all_to_for_rehearsals(
    project: Project, cli: Cli, smtp_server: SmtpTestServer
) -> None:
    """With redirect_all_to, every message goes to that one address, marked with its real one."""
    _setup(project, cli, smtp_server)
    text = project.config.read_text() + 'redirect_all_to = "rehearsal@example.org"\n'
    project.config.write_text(text)
    cli("--config", project.config, "send", "--now", "2027-03-01T23:00:00Z")
    assert set(_recipients(smtp_server)) == {"rehearsal@example.org"}
    assert len(smtp_server.handler.accepted) == 6
    froms = {
        email.message_from_bytes(m.data)["X-Rapport-Redirected-From"]
        for m in smtp_server.handler.accepted
    }
    assert froms == {p[0] for p in PEOPLE}
    assert all(row["key"].startswith("rehearsal/topic/spring/1/") for row in _rows(project))
    # Rehearsal over: the real topic still goes to every participant, once.
    project.config.write_text(text.replace('redirect_all_to = "rehearsal@example.org"\n', ""))
    result = cli("--config", project.config, "send", "--now", "2027-03-01T23:30:00Z")
    assert result.out.strip() == "planned 6; sent 6"
    assert sorted(_recipients(smtp_server)[6:]) == sorted(p[0] for p in PEOPLE)


def test_smtp_down_stops_the_pass_and_loses_nothing(
    project: Project, cli: Cli, smtp_server: SmtpTestServer
) -> None:
    """An unreachable server exits 1 and leaves every row pending for the next pass."""
    _setup(project, cli, smtp_server)
    smtp_server.controller.stop()
    result = cli("--config", project.config, "send", "--now", "2027-03-01T23:00:00Z")
    assert result.code == 1
    assert "stopped: SMTP server unavailable" in result.out
    assert {row["status"] for row in _rows(project)} == {"pending"}
    assert {row["attempts"] for row in _rows(project)} == {0}


def test_a_partner_whose_mail_bounces_is_not_offered_to_the_other(
    project: Project, cli: Cli, smtp_server: SmtpTestServer
) -> None:
    """Kelsey's mail bounces and Łukasz unsubscribed: Amara's and Ana's topic emails name them
    but neither gives nor links their address; preview shows the same; others are unchanged."""
    _setup(project, cli, smtp_server)
    project.execute(
        "UPDATE participant SET bouncing_since = ? WHERE email = ?",
        "2027-02-20 10:00:00",
        "kelsey@example.org",
    )
    project.execute(
        "INSERT INTO suppression (email, reason, detail, created_at) VALUES (?, ?, ?, ?)",
        "lukasz@example.org",
        "unsubscribe",
        "reply",
        "2027-02-20 10:00:00",
    )
    cli("--config", project.config, "send", "--now", "2027-03-01T23:00:00Z")
    for reader, gone, name in (
        ("amara@example.org", "kelsey@example.org", "Kelsey Brown"),
        ("ana@example.org", "lukasz@example.org", "Łukasz Nowak"),
    ):
        message = _parsed(smtp_server, reader)
        for part in ("plain", "html"):
            body = message.get_body((part,)).get_content()  # type: ignore[union-attr]
            assert name in body and gone not in body, (reader, part)
    priya = _parsed(smtp_server, "wang@example.org").get_body(("plain",))
    assert "priya@example.org" in priya.get_content()  # type: ignore[union-attr]
    preview = cli(
        "--config", project.config, "preview", "topic", "1", "--participant", "amara@example.org"
    )
    assert preview.code == 0 and "Kelsey Brown" in preview.out
    assert "kelsey@example.org" not in preview.out


def test_preview_shows_the_email_without_sending(
    project: Project, cli: Cli, smtp_server: SmtpTestServer, tmp_path: Path
) -> None:
    """preview topic prints headers and the text part and writes the HTML part."""
    _setup(project, cli, smtp_server)
    html = tmp_path / "topic.html"
    result = cli(
        "--config",
        project.config,
        "preview",
        "topic",
        "1",
        "--participant",
        "AMARA@example.org",
        "--html",
        html,
        "--now",
        "2027-03-01T00:00:00Z",
    )
    assert result.code == 0, result.err
    assert "Subject:" in result.out and "Présentations" in result.out
    assert "Kelsey Brown" in result.out
    assert "<html" in html.read_text().lower()
    assert smtp_server.handler.messages == []
    missing = cli(
        "--config", project.config, "preview", "topic", "9", "--participant", "amara@example.org"
    )
    assert missing.code == 2 and "no topic 9" in missing.err
    nowhere = tmp_path / "no such folder" / "topic.html"
    unwritable = cli(
        "--config", project.config, "preview", "topic", "1", "--participant", "amara@example.org",
        "--html", nowhere,
    )  # fmt: skip
    assert unwritable.code == 2
    assert unwritable.err.strip() == f"rapport: {nowhere}: cannot write: No such file or directory"


def test_killed_mid_batch_sends_nothing_twice(
    project: Project, cli: Cli, smtp_server: SmtpTestServer
) -> None:
    """SIGKILL while a message is on the wire: rerun sends the rest once; that one is uncertain."""
    _setup(project, cli, smtp_server)
    hold = smtp_server.handler.hold("kelsey@example.org", then="250 OK")
    command = [
        sys.executable,
        "-m",
        "rapport.cli",
        "--config",
        str(project.config),
        "send",
        "--now",
        "2027-03-01T23:00:00Z",
    ]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ)
    )
    try:
        assert hold.arrived.wait(30), "the held message never arrived"
        process.send_signal(signal.SIGKILL)
        process.wait(10)
    finally:
        hold.release()
    before = set(_recipients(smtp_server))
    assert "kelsey@example.org" not in before
    [row] = _rows(project, "to_address = 'kelsey@example.org'")
    assert row["status"] == "sending"
    result = cli("--config", project.config, "send", "--now", "2027-03-01T23:05:00Z")
    assert result.code == 1, "a pass that leaves a message uncertain must say so in its exit code"
    assert result.out.strip() == "planned 0; sent 3, 1 found in flight after a crash, now uncertain"
    recipients = _recipients(smtp_server)
    assert sorted(recipients) == sorted(p[0] for p in PEOPLE if p[0] != "kelsey@example.org")
    assert len(recipients) == len(set(recipients))
    report = cli("--config", project.config, "outbox")
    assert "uncertain 1" in report.out and "kelsey@example.org" in report.out
    [row] = _rows(project, "to_address = 'kelsey@example.org'")
    assert row["status"] == "uncertain"
    assert (
        cli("--config", project.config, "send", "--now", "2027-03-01T23:10:00Z").out.strip()
        == "planned 0; sent 0"
    )
    retry = cli(
        "--config",
        project.config,
        "outbox",
        "retry",
        str(row["id"]),
        "--now",
        "2027-03-01T23:11:00Z",
    )
    assert retry.code == 0 and "was uncertain, now pending" in retry.out
    assert (
        cli("--config", project.config, "send", "--now", "2027-03-01T23:12:00Z").out.strip()
        == "planned 0; sent 1"
    )
    assert _recipients(smtp_server).count("kelsey@example.org") == 1


def test_outbox_retry_refuses_sent_rows(
    project: Project, cli: Cli, smtp_server: SmtpTestServer
) -> None:
    """Retrying a sent row is refused (exit 1) and an unknown id is a usage error (exit 2)."""
    _setup(project, cli, smtp_server)
    cli("--config", project.config, "send", "--now", "2027-03-01T23:00:00Z")
    row = _rows(project)[0]
    result = cli("--config", project.config, "outbox", "retry", str(row["id"]))
    assert result.code == 1 and f"outbox row {row['id']} is sent" in result.err
    assert cli("--config", project.config, "outbox", "retry", "999").code == 2


def test_send_without_now_uses_the_clock(
    project: Project, cli: Cli, smtp_server: SmtpTestServer
) -> None:
    """Without --now, send reads the (frozen) clock."""
    _setup(project, cli, smtp_server)
    with freeze_time(datetime(2027, 3, 1, 23, 0, tzinfo=UTC)):
        assert cli("--config", project.config, "send").out.strip() == "planned 6; sent 6"


def test_large_passes_compose_ahead_in_a_worker(
    project: Project, cli: Cli, smtp_server: SmtpTestServer
) -> None:
    """With more rows due than one batch, a worker process composes ahead; each is sent once."""
    from program.config import database_url, load_config
    from program.store import make_engine
    from rapport import jobs
    from tests.conftest import SECRET

    _setup(project, cli, smtp_server)
    settings = load_config(project.config)
    engine = make_engine(database_url(settings))
    now = datetime(2027, 3, 1, 23, 0, tzinfo=UTC)
    result = jobs.send(engine, settings=settings, secret=SECRET.encode(), now=now, batch_size=2)
    assert result.summary() == "planned 6; sent 6"
    assert sorted(_recipients(smtp_server)) == sorted(p[0] for p in PEOPLE)
    kelsey = _parsed(smtp_server, "kelsey@example.org")
    assert "Amara Okafor" in kelsey.get_body(("plain",)).get_content()  # type: ignore[union-attr]


def _held_send(project: Project, now: str) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        "-m",
        "rapport.cli",
        "--config",
        str(project.config),
        "send",
        "--now",
        now,
    ]
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ)
    )


def test_sigterm_finishes_the_message_in_flight(
    project: Project, cli: Cli, smtp_server: SmtpTestServer
) -> None:
    """SIGTERM mid-batch: the message on the wire is completed and marked sent, the rest waits."""
    _setup(project, cli, smtp_server)
    hold = smtp_server.handler.hold("kelsey@example.org", then="250 OK")
    process = _held_send(project, "2027-03-01T23:00:00Z")
    try:
        assert hold.arrived.wait(30), "the held message never arrived"
        process.send_signal(signal.SIGTERM)
    finally:
        hold.release()
    out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert out.decode().strip().endswith("; interrupted by a signal")
    [row] = _rows(project, "to_address = 'kelsey@example.org'")
    assert row["status"] == "sent"
    statuses = sorted(row["status"] for row in _rows(project))
    assert "sending" not in statuses and "uncertain" not in statuses and "pending" in statuses
    result = cli("--config", project.config, "send", "--now", "2027-03-01T23:01:00Z")
    assert result.code == 0
    recipients = _recipients(smtp_server)
    assert sorted(recipients) == sorted(p[0] for p in PEOPLE)


def test_a_concurrent_pass_waits_for_the_lock_and_sends_nothing_twice(
    project: Project, cli: Cli, smtp_server: SmtpTestServer
) -> None:
    """A second send while the first is mid-batch waits its turn at the database, no error."""
    _setup(project, cli, smtp_server)
    hold = smtp_server.handler.hold("kelsey@example.org", then="250 OK")
    process = _held_send(project, "2027-03-01T23:00:00Z")
    try:
        assert hold.arrived.wait(30), "the held message never arrived"
        second = cli("--config", project.config, "send", "--now", "2027-03-15T23:00:00Z")
        assert second.code == 0, second.err
        assert second.out.startswith("planned 6; sent ")
    finally:
        hold.release()
    process.communicate(timeout=30)
    assert process.returncode == 0
    recipients = _recipients(smtp_server)
    assert sorted(recipients) == sorted([p[0] for p in PEOPLE] * 2)


@pytest.mark.parametrize(
    ("stage", "reply"),
    [
        ("rcpt", "550 5.7.1 Relaying denied"),
        ("rcpt", "530 Authentication required"),
        ("mail", "553 sender rejected"),
    ],
)
def test_a_server_refusing_us_stops_the_pass_and_suppresses_nobody(
    project: Project, cli: Cli, smtp_server: SmtpTestServer, stage: str, reply: str
) -> None:
    """A 5xx about us (relaying, login, our sender) stops the pass; no address is suppressed."""
    _setup(project, cli, smtp_server)
    smtp_server.handler.reply(stage, reply, times=None)
    result = cli("--config", project.config, "send", "--now", "2027-03-01T23:00:00Z")
    assert result.code == 1
    assert "stopped: the SMTP server refuses our mail" in result.out
    assert {row["status"] for row in _rows(project)} == {"pending"}
    assert project.scalar("SELECT count(*) FROM suppression") == 0


def test_many_refusals_in_a_row_trip_the_breaker(
    project: Project, cli: Cli, smtp_server: SmtpTestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After BREAKER permanent refusals in a row the pass stops instead of failing everyone."""
    monkeypatch.setattr("mailer.deliver.BREAKER", 3)
    _setup(project, cli, smtp_server)
    smtp_server.handler.reply("rcpt", "550 5.1.1 no such user", times=None)
    result = cli("--config", project.config, "send", "--now", "2027-03-01T23:00:00Z")
    assert result.code == 1
    assert "3 messages in a row refused permanently" in result.out
    statuses = [row["status"] for row in _rows(project)]
    assert statuses.count("failed") == 3 and statuses.count("pending") == 3


def test_daily_rate_limit_holds_rows_without_making_them_late(
    project: Project, cli: Cli, smtp_server: SmtpTestServer
) -> None:
    """max_per_day defers the rest to the next day, and a deferred row is never declared late."""
    _setup(project, cli, smtp_server)
    project.config.write_text(
        project.config.read_text().replace("max_per_day = 0", "max_per_day = 4")
    )
    result = cli("--config", project.config, "send", "--now", "2027-03-01T23:00:00Z")
    assert result.out.strip().startswith("planned 6; sent 4; stopped: rate limit smtp.max_per_day")
    assert cli("--config", project.config, "send", "--now", "2027-03-02T12:00:00Z").out.startswith(
        "planned 0; sent 0"
    )
    # Three days later, past schedule.max_lateness: the two held rows still go.
    result = cli("--config", project.config, "send", "--now", "2027-03-04T23:30:00Z")
    assert result.out.strip() == "planned 0; sent 2"


def test_dst_repeat_takes_the_first_occurrence(
    project: Project, cli: Cli, smtp_server: SmtpTestServer
) -> None:
    """A 02:30 send on Warsaw's fall-back day goes out at the first 02:30 (CEST, 00:30Z)."""
    _setup(
        project,
        cli,
        smtp_server,
        extra='[schedule]\ntopic_local_time = "02:30"\n',
        start="2027-10-31",
    )
    assert "lukasz@example.org" not in _recipients(smtp_server)
    cli("--config", project.config, "send", "--now", "2027-10-31T00:29:00Z")
    assert "lukasz@example.org" not in _recipients(smtp_server)
    cli("--config", project.config, "send", "--now", "2027-10-31T00:30:00Z")
    assert "lukasz@example.org" in _recipients(smtp_server)
    cli("--config", project.config, "send", "--now", "2027-10-31T01:30:00Z")
    assert _recipients(smtp_server).count("lukasz@example.org") == 1


def test_send_times_follow_each_zone_across_a_dst_change(
    project: Project, cli: Cli, smtp_server: SmtpTestServer
) -> None:
    """Topics on each side of New York's DST change both go at 09:00 local (14:00Z, 13:00Z)."""
    _setup(project, cli, smtp_server, start="2027-03-01")
    cli("--config", project.config, "send", "--now", "2027-03-01T23:00:00Z")
    cli("--config", project.config, "send", "--now", "2027-03-15T23:00:00Z")
    due = [row["due_at"] for row in _rows(project, "to_address = 'kelsey@example.org'")]
    assert [d[:19] for d in due] == ["2027-03-01 14:00:00", "2027-03-15 13:00:00"]
