"""The quick soak (bench/soak.py --quick) as a test: a round under faults loses and doubles nothing.

The soak plays a 16-week round for 500 participants through `rapport serve --once` processes
that it kills, locks out of the database and sends across clock jumps, against an SMTP server
failing 10% of commands; see bench/soak.py.  It runs as a subprocess, as a user would run it,
and the test reads the JSON object on its last line, so a failure shows the figures that broke.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def test_a_round_under_faults_sends_each_topic_once_and_loses_nothing() -> None:
    """Checks that no topic goes out twice or silently missing, no reply is lost, every weekly
    report is sent and every scripted pair ends in its expected state."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "soak.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    lines = done.stdout.strip().splitlines()
    assert lines, done.stderr[-3000:]
    figures = json.loads(lines[-1])
    table = "\n".join(lines[:-1])
    assert figures["bench"] == "soak"
    assert figures["sent_twice"] == 0, table
    assert figures["any_message_twice"] == {}, table
    assert figures["missing"] == 0, table
    assert figures["accepted_not_marked_sent"] == 0, table
    assert figures["inbound_lost"] == 0 and figures["inbound_recorded_twice"] == 0, table
    assert figures["reports_missing"] == [], table
    assert figures["pairs_wrong"] == [], table
    assert figures["unexpected_errors"] == [], table
    # The faults were really there: kills, SMTP errors, a locked database, clock jumps.
    assert figures["killed"] > 0 and figures["smtp_faults"] > 0, table
    assert figures["locked_runs"] > 0 and figures["backward_clock_jumps"] > 0, table
    assert figures["ok"] and done.returncode == 0, table
