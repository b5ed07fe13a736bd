"""What every command-line case of the bad-input suite checks: exit 2 with a message and the
database unchanged, or exit 0 with a result that is safe; never a traceback."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from tests.conftest import Project, Result

Cli = Callable[..., Result]

ROUND = "r1"  # the round the seeded template holds
PEOPLE = (
    "email,name,country,timezone,language\n"
    "ann@example.org,Ann Dupont,FR,Europe/Paris,fr\n"
    "bob@example.org,Bob Tane,NZ,Pacific/Auckland,en\n"
    "eve@example.org,Eve Otieno,KE,Africa/Nairobi,en\n"
)


def write(project: Project, name: str, content: str | bytes) -> Path:
    """``content`` written under the project folder (UTF-8 when it is text, as given if bytes)."""
    path = project.dir / "in" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def refused(project: Project, cli: Cli, args: Sequence[object], expected: Sequence[str]) -> str:
    """Run ``rapport ARGS``: exit 2, each expected text on stderr, the database unchanged."""
    before = project.dump()
    result = cli("--config", project.config, *args)
    assert result.code == 2, (result.code, result.out, result.err[:2000])
    assert "Traceback" not in result.err
    for text in expected:
        assert text in result.err, result.err[:2000]
    assert project.dump() == before
    return result.err


def accepted(project: Project, cli: Cli, args: Sequence[object]) -> Result:
    """Run ``rapport ARGS`` and expect success without a warning or a traceback."""
    result = cli("--config", project.config, *args)
    assert result.code == 0, (result.out, result.err[:2000])
    assert "Traceback" not in result.err
    return result
