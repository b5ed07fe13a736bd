"""`rapport participant address` and `unsuppress`: a bounced participant mailed again."""

from __future__ import annotations

import pytest

from tests.conftest import Project
from tests.smtp_server import SmtpTestServer
from tests.test_poll import Cli, _deliver, _project, _reply

pytestmark = pytest.mark.databases("sqlite", "postgresql")


def test_a_bounced_participant_gets_a_working_address(
    project: Project, cli: Cli, smtp_server: SmtpTestServer
) -> None:
    """participant address: the new address is theirs, the old one an alias that still counts,
    the bounce mark gone, and the next topic goes to the new address; unsuppress lifts a
    suppression by hand; both refuse what would be wrong."""
    maildir = _project(project, cli, smtp_server)
    project.execute(
        "INSERT INTO suppression (email, reason, detail, created_at)"
        " VALUES ('kelsey@example.org', 'bounce', '5.1.1', '2027-03-02 12:00:00')"
    )
    project.execute(
        "UPDATE participant SET bouncing_since = '2027-03-02 12:00:00'"
        " WHERE email = 'kelsey@example.org'"
    )
    run = cli("--config", project.config, "participant", "address", "kelsey@example.org",
              "Kelsey.B@example.net", "--now", "2027-03-03T10:00:00Z")  # fmt: skip
    assert run.code == 0, run.err
    assert "now kelsey.b@example.net" in run.out
    assert project.rows(
        "SELECT bouncing_since FROM participant WHERE email = 'kelsey.b@example.net'"
    ) == [{"bouncing_since": None}]
    assert project.rows("SELECT email FROM alias") == [{"email": "kelsey@example.org"}]
    sent = cli("--config", project.config, "send", "--now", "2027-03-15T23:00:00Z")
    assert sent.code == 0, sent.err
    latest = [r for m in smtp_server.handler.accepted for r in m.recipients]
    assert "kelsey.b@example.net" in latest
    _deliver(maildir, _reply("kelsey@example.org", "coordinators@example.org", "1\n"))
    cli("--config", project.config, "inbox", "poll", "--now", "2027-03-16T12:00:00Z")
    assert (
        project.scalar(
            "SELECT count(*) FROM activity a JOIN participant p ON p.id = a.participant_id"
            " WHERE p.email = 'kelsey.b@example.net' AND a.kind = 'checkin'"
        )
        == 1
    )
    taken = cli("--config", project.config, "participant", "address", "ana@example.org",
                "lukasz@example.org")  # fmt: skip
    assert taken.code == 2 and "another participant's address" in taken.err
    blocked = cli("--config", project.config, "participant", "address", "ana@example.org",
                  "kelsey@example.org")  # fmt: skip
    assert blocked.code == 2 and "alias of another participant" in blocked.err
    nothing = cli("--config", project.config, "participant", "unsuppress", "ana@example.org")
    assert nothing.code == 0 and "was not suppressed" in nothing.out
    project.execute(
        "INSERT INTO suppression (email, reason, detail, created_at)"
        " VALUES ('ana@example.org', 'unsubscribe', '', '2027-03-02 12:00:00')"
    )
    lifted = cli("--config", project.config, "participant", "unsuppress", "ana@example.org")
    assert lifted.code == 0 and "can be mailed again" in lifted.out
    assert project.rows("SELECT email FROM suppression") == [{"email": "kelsey@example.org"}]
