"""Tests for deploy/rapport.service: systemd accepts it, with the hardening an admin expects.

``systemd-analyze verify`` checks every key and value, but also that ExecStart= exists, so the unit
is verified as a copy whose ExecStart= names an executable of this machine; everything else is the
file as shipped.  Without systemd-analyze those tests skip; the option checks always run.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections import defaultdict
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parent.parent / "deploy" / "rapport.service"
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")

# Option -> the value it must have (each on its own line in [Service]).
HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectKernelLogs": "yes",
    "ProtectControlGroups": "yes",
    "ProtectClock": "yes",
    "ProtectHostname": "yes",
    "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
    "RestrictNamespaces": "yes",
    "RestrictRealtime": "yes",
    "RestrictSUIDSGID": "yes",
    "LockPersonality": "yes",
    "MemoryDenyWriteExecute": "yes",
    "SystemCallArchitectures": "native",
    "UMask": "0077",
    "CapabilityBoundingSet": "",
}
LIFECYCLE = {
    "Type": "notify",
    "NotifyAccess": "main",
    "ExecStart": "/opt/rapport/bin/rapport serve",
    "ExecReload": "/bin/kill -HUP $MAINPID",
    "Restart": "on-failure",
    "WatchdogSec": "60",
    "TimeoutStopSec": "15",
    "KillSignal": "SIGTERM",
    "User": "rapport",
    "StateDirectory": "rapport",
}
# The credentials Rapport reads (program/config.py, rapport/jobs.py, rapport/poll.py), and the
# pgpass file libpq reads for PostgreSQL.
CREDENTIALS = {"rapport-secret", "smtp-password", "imap-password", "pgpass"}


def parse(text: str, *, commented: bool = False) -> dict[str, dict[str, list[str]]]:
    """section -> key -> values in order; ``commented`` also reads ``#Key=value`` lines."""
    sections: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if commented and re.match(r"#[A-Z][A-Za-z]+=", line):
            line = line[1:]
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, sep, value = line.partition("=")
        assert sep, f"not a Key=value line: {raw!r}"
        sections[section][key.strip()].append(value.strip())
    return sections


SERVICE = parse(UNIT.read_text(encoding="utf-8"))["Service"]


@pytest.mark.parametrize(("key", "value"), sorted({**HARDENING, **LIFECYCLE}.items()))
def test_option_is_set_once(key: str, value: str) -> None:
    """Each lifecycle and hardening option is present, once, with the expected value."""
    assert SERVICE[key] == [value]


def test_system_calls_are_filtered() -> None:
    """@system-service is allowed; privileged and resource-changing calls are not."""
    assert SERVICE["SystemCallFilter"][0] == "@system-service"
    assert all(f.startswith("~") for f in SERVICE["SystemCallFilter"][1:])


def test_secrets_come_from_credentials_rapport_reads() -> None:
    """Credentials loaded (or offered in comments) are the ones Rapport or libpq read; the
    reply-key secret is always loaded; no secret is set in the unit itself."""
    active = parse(UNIT.read_text(encoding="utf-8"))["Service"]
    offered = parse(UNIT.read_text(encoding="utf-8"), commented=True)["Service"]
    names = {v.split(":", 1)[0] for v in offered["LoadCredentialEncrypted"]}
    assert names == CREDENTIALS
    assert "rapport-secret" in {v.split(":", 1)[0] for v in active["LoadCredentialEncrypted"]}
    assert not [v for v in active["Environment"] if re.search("SECRET|PASSWORD", v)]
    assert offered["EnvironmentFile"] == ["/etc/rapport/rapport.env"]
    assert "RAPPORT_CONFIG=/etc/rapport/config.toml" in active["Environment"]


def test_nothing_but_the_state_directory_is_writable() -> None:
    """No ReadWritePaths= beyond what StateDirectory= already grants."""
    assert SERVICE.get("ReadWritePaths", []) == []
    assert SERVICE["ProtectSystem"] == ["strict"]


def runnable_copy(directory: Path) -> Path:
    """The unit as shipped, but for an ExecStart= that exists on this machine."""
    true = shutil.which("true")
    assert true is not None
    text = UNIT.read_text(encoding="utf-8")
    copy, count = re.subn(
        r"^ExecStart=/opt/rapport/bin/rapport ", f"ExecStart={true} ", text, flags=re.M
    )
    assert count == 1
    path = directory / "rapport.service"
    path.write_text(copy, encoding="utf-8")
    return path


@needs_analyze
def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    """systemd-analyze verify: no unknown key, bad value or missing file in the unit."""
    unit = runnable_copy(tmp_path)
    done = subprocess.run(
        [str(ANALYZE), "verify", "--man=no", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    # Warnings ("Unknown key name", "Failed to parse") do not change the exit status, so the
    # output about our file must be empty too; lines about other units on the host are theirs.
    about_ours = [line for line in done.stderr.splitlines() if "rapport.service" in line]
    assert done.returncode == 0, done.stderr
    assert about_ours == []


@needs_analyze
def test_systemd_analyze_security_rates_the_unit_ok(tmp_path: Path) -> None:
    """systemd-analyze security (offline) rates the unit's exposure at 2.0 or less ("OK")."""
    help_text = subprocess.run(
        [str(ANALYZE), "security", "--help"], capture_output=True, text=True, timeout=30
    ).stdout
    if "--offline" not in help_text:
        pytest.skip("this systemd-analyze cannot rate a unit file offline")
    unit = runnable_copy(tmp_path)
    done = subprocess.run(
        [str(ANALYZE), "security", "--offline=true", "--threshold=20", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
