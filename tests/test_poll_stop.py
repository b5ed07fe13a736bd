"""A poll asked to stop (the service's SIGTERM) records what it read, cursor included, and ends;
the next poll goes on from there, counting nothing twice."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from program.config import load_config
from rapport import poll
from tests.conftest import SECRET, Project
from tests.smtp_server import SmtpTestServer
from tests.test_poll import Cli, _deliver, _project, _reply

pytestmark = pytest.mark.databases("sqlite", "postgresql")


def test_a_stopped_poll_resumes_where_it_ended(
    project: Project, cli: Cli, smtp_server: SmtpTestServer
) -> None:
    maildir = _project(project, cli, smtp_server)
    for n in range(7):
        _deliver(maildir, _reply("ana@example.org", "coordinators@example.org", f"note {n}\n"))
    settings = load_config(project.config)
    engine = project.engine  # the fixture disposes of it
    seen = iter(range(100))
    now = datetime(2027, 3, 2, 12, tzinfo=UTC)
    first = poll.poll(
        engine, settings=settings, secret=SECRET.encode(), now=now,
        should_stop=lambda: next(seen) >= 2,
    )  # fmt: skip
    assert first.stopped and first.recorded == 3
    assert "stopped early by a signal" in first.summary()
    second = poll.poll(engine, settings=settings, secret=SECRET.encode(), now=now)
    assert not second.stopped and second.recorded == 4
    assert project.scalar("SELECT count(*) FROM inbound") == 7
