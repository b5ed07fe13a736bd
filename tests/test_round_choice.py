"""Which round a command works on when none is named: the active round that started last."""

from __future__ import annotations

import pytest

from tests.conftest import Project
from tests.test_actions import NOW, ROUND, Cli, run

__all__ = ["run"]  # the fixture, shared with tests/test_actions.py

pytestmark = pytest.mark.databases("sqlite", "postgresql")


def test_a_round_opened_for_next_term_is_not_the_default_before_it_starts(
    project: Project, run: Cli
) -> None:
    """With next term's round already created, `match suggest` still works on the running round
    until the new one starts, then on the new one."""
    assert run("round", "create", "2027-fall", "--start", "2027-09-01").code == 0
    assert run("partnership", "dissolve", "1", "--reason", "silent", "--now", NOW).code == 0
    now = run("match", "suggest", "--now", NOW)
    assert now.code == 0, now.err
    assert (
        "no partner found for Ann Dupont" in now.out + now.err
    )  # Ann and Bob, left alone in 2027-spring
    later = run("match", "suggest", "--now", "2027-09-02T09:00:00Z")
    assert later.out == "no one is left alone in 2027-fall\n"
    named = run("match", "suggest", "--round", ROUND, "--now", "2027-09-02T09:00:00Z")
    assert named.code == 0 and "no partner found for Ann Dupont" in named.out + named.err
