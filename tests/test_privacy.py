"""`rapport participant forget` erases a person and keeps an anonymous tally; `rapport purge`
(and the daily job) drops inbound metadata older than privacy.retain_days."""

from __future__ import annotations

import pytest

from tests.conftest import Project
from tests.smtp_server import SmtpTestServer
from tests.test_poll import Cli, _deliver, _key, _project, _reply

pytestmark = pytest.mark.databases("sqlite", "postgresql")

NOW = "2027-04-06T08:00:00Z"


def _poll(project: Project, cli: Cli, now: str) -> bool:
    return cli("--config", project.config, "inbox", "poll", "--now", now).code == 0


def _count(project: Project, sql: str) -> int:
    return int(project.scalar(sql))


def test_forget_erases_every_trace_and_keeps_the_tally(
    project: Project, cli: Cli, smtp_server: SmtpTestServer
) -> None:
    maildir = _project(project, cli, smtp_server)
    key, _ = _key(project, "ana@example.org")
    _deliver(
        maildir, _reply("Ana Souza <ana@example.org>", f"coordinators+{key}@example.org", "1\n")
    )
    _deliver(maildir, _reply("ana.home@example.net", "coordinators@example.org", "hello\n"))
    assert cli("--config", project.config, "participant", "alias", "ana@example.org",
               "ana.home@example.net").code == 0  # fmt: skip
    assert (
        cli("--config", project.config, "inbox", "poll", "--now", "2027-03-02T12:00:00Z").code == 0
    )
    assert cli("--config", project.config, "partnership", "note", "1",
               "Ana Souza asked for a new partner", "--now", NOW).code == 0  # fmt: skip
    assert cli("--config", project.config, "nudge", "--now", NOW).code == 0  # snapshots, nudges
    activity = _count(project, "SELECT count(*) FROM activity")
    assert "ana@example.org" in project.dump() and "Souza" in project.dump()
    # A topic of hers held back as late: cancelled too, so nobody can retry it.
    project.execute("UPDATE outbox SET status = 'late' WHERE to_address = 'ana@example.org'")

    refused = cli("--config", project.config, "participant", "forget", "ana@example.org")
    assert refused.code == 2 and "--yes" in refused.err
    result = cli("--config", project.config, "participant", "forget", "ANA@example.org", "--yes",
                 "--now", NOW)  # fmt: skip
    assert result.code == 0, result.err
    assert "is forgotten" in result.out

    dump = project.dump()
    for trace in ("ana@example.org", "ana.home@example.net", "Souza", "Ana Souza", "Ana (BR)"):
        assert trace not in dump, trace
    assert _count(project, "SELECT count(*) FROM activity") == activity  # the tally stays
    assert _count(project, "SELECT count(*) FROM participant WHERE status = 'withdrawn'") == 1
    assert _count(project, "SELECT count(*) FROM outbox WHERE status = 'late'") == 0
    assert _count(project, "SELECT count(*) FROM partnership_note WHERE text LIKE '%[forgotten]%'")
    # Their partner is told nothing more about them, and their partnership is at risk now.
    health = cli("--config", project.config, "health", "--json", "--now", NOW)
    assert "Forgotten participant" in health.out
    again = cli("--config", project.config, "participant", "forget", "ana@example.org", "--yes")
    assert again.code == 2 and "not found" in again.err


def test_purge_drops_old_inbound_and_keeps_activity(
    project: Project, cli: Cli, smtp_server: SmtpTestServer
) -> None:
    maildir = _project(project, cli, smtp_server)
    _deliver(maildir, _reply("ana@example.org", "coordinators@example.org", "1\n"))
    assert (
        cli("--config", project.config, "inbox", "poll", "--now", "2027-03-02T12:00:00Z").code == 0
    )
    project.execute("UPDATE inbound SET received_at = '2026-01-01 00:00:00.000000'")
    _deliver(maildir, _reply("kelsey@example.org", "coordinators@example.org", "1\n"))
    assert (
        cli("--config", project.config, "inbox", "poll", "--now", "2027-03-02T13:00:00Z").code == 0
    )
    events = _count(project, "SELECT count(*) FROM activity")
    result = cli("--config", project.config, "purge", "--now", "2027-03-03T00:00:00Z")
    assert result.code == 0, result.err
    assert result.out.startswith("purged 1 inbound message older than 365 days")
    assert _count(project, "SELECT count(*) FROM inbound") == 1
    assert _count(project, "SELECT count(*) FROM activity") == events
    assert _count(project, "SELECT count(*) FROM activity WHERE inbound_id IS NULL") >= 1
