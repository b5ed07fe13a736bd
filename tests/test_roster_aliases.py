"""Re-importing rosters after `rapport participant address`: an old address, now an alias, still
names its participant, in participants and partnerships files alike."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Project, Result

Cli = Callable[..., Result]
pytestmark = pytest.mark.databases("sqlite", "postgresql")

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
OLD = "priya.raghunathan@example.org"  # line 6 of examples/participants.csv
NEW = "priya.new@example.org"
PRIYA = f"{OLD},Priya Raghunathan,IN,Asia/Kolkata,en,senior,academic,"
WARNING = (
    f"email: {OLD} is now an alias of {NEW} (set by `rapport participant address` or `alias`);"
    " this row updates that participant"
)


def moved(project: Project, cli: Cli) -> None:
    """The example program imported, then Priya's address changed to NEW (OLD is an alias)."""
    for args in (
        ("import", "participants", EXAMPLES / "participants.csv"),
        ("round", "create", "2027-spring", "--start", "2027-03-01"),
        ("import", "partnerships", EXAMPLES / "partnerships.csv"),
        ("participant", "address", OLD, NEW, "--now", "2027-03-03T10:00:00Z"),
    ):
        result = cli("--config", project.config, *args)
        assert result.code == 0, result.err
    assert project.rows("SELECT email FROM alias") == [{"email": OLD}]


def write(project: Project, name: str, text: str) -> Path:
    path = project.dir / name
    path.write_text(text, encoding="utf-8")
    return path


def test_participants_reimport_matches_by_alias(project: Project, cli: Cli) -> None:
    """The original participants file creates nobody after an address change: Priya's row is
    found by her old address, updates her and keeps her new one, with a warning (dry run too)."""
    moved(project, cli)
    before = project.dump()
    source = EXAMPLES / "participants.csv"
    for dry in (["--dry-run"], []):
        result = cli("--config", project.config, "import", "participants", source, *dry)
        prefix = "dry run, nothing written: " if dry else ""
        assert (result.code, result.out) == (
            0,
            prefix + "participants: 0 created, 0 updated, 41 unchanged; 1 warning\n",
        )
        assert result.err == f"warning: {source}:6:1: {WARNING}\n"
        assert project.dump() == before
    changed = source.read_text(encoding="utf-8").replace(
        f"{PRIYA}open access", f"{PRIYA}research software"
    )
    result = cli(
        "--config", project.config, "import", "participants", write(project, "p.csv", changed)
    )
    assert (result.code, result.out) == (
        0,
        "participants: 0 created, 1 updated, 40 unchanged; 1 warning\n",
    )
    assert project.rows(
        "SELECT email, interests FROM participant WHERE name = 'Priya Raghunathan'"
    ) == [{"email": NEW, "interests": "research software; institutional repositories"}]
    assert project.scalar("SELECT count(*) FROM participant") == 41


def test_partnerships_reimport_resolves_aliases(project: Project, cli: Cli) -> None:
    """The original partnerships file re-imports unchanged, its alias member resolved to Priya
    (a warning); a new round's pair given by her old address is hers."""
    moved(project, cli)
    before = project.dump()
    source = EXAMPLES / "partnerships.csv"
    for dry in (["--dry-run"], []):
        result = cli("--config", project.config, "import", "partnerships", source, *dry)
        prefix = "dry run, nothing written: " if dry else ""
        assert (result.code, result.out) == (
            0,
            prefix + "partnerships: 0 created, 0 updated, 20 unchanged; 1 warning\n",
        )
        assert result.err == (
            f"warning: {source}:2:3: member_b: {OLD} is now an alias of {NEW} (set by"
            " `rapport participant address` or `alias`); that participant is the member\n"
        )
        assert project.dump() == before
    cli("--config", project.config, "round", "create", "2027-autumn", "--start", "2027-09-01")
    pairs = f"round,member_a,member_b\n2027-autumn,{OLD},zoe.whitfield@example.net\n"
    result = cli(
        "--config", project.config, "import", "partnerships", write(project, "a.csv", pairs)
    )
    assert (result.code, result.out) == (
        0,
        "partnerships: 1 created, 0 updated, 0 unchanged; 1 warning\n",
    )
    assert project.rows(
        "SELECT p.email FROM membership m JOIN participant p ON p.id = m.participant_id"
        " JOIN round r ON r.id = m.round_id WHERE r.name = '2027-autumn' ORDER BY m.position"
    ) == [{"email": NEW}, {"email": "zoe.whitfield@example.net"}]


def test_alias_and_new_address_in_one_file(project: Project, cli: Cli) -> None:
    """A file naming Priya by her old address and her new one is refused, whichever comes first,
    with the line and field, and nothing is written (a newcomer in it is not created either)."""
    moved(project, cli)
    before = project.dump()
    header = "email,name,country,timezone,language\n"
    newcomer = "vlora@example.org,Vlora Berisha,XK,Europe/Belgrade,en\n"
    alias_row = f"{OLD},Priya Raghunathan,IN,Asia/Kolkata,en\n"
    own_row = f"{NEW},Priya R.,IN,Asia/Kolkata,en\n"
    given_old = f"{OLD} (an alias of {NEW})"
    for rows, message in (
        (
            newcomer + alias_row + own_row,
            f"p.csv:4:1: email: the same participant twice: line 3 gives {given_old},"
            f" this row {NEW}; keep one of the rows",
        ),
        (
            own_row + newcomer + alias_row,
            f"p.csv:4:1: email: the same participant twice: line 2 gives {NEW},"
            f" this row {given_old}; keep one of the rows",
        ),
    ):
        path = write(project, "p.csv", header + rows)
        for dry in (["--dry-run"], []):
            result = cli("--config", project.config, "import", "participants", path, *dry)
            assert result.code == 2 and message in result.err, result.err
            assert project.dump() == before
    pairs = (
        "round,member_a,member_b\n"
        f"2027-spring,{OLD},{NEW}\n"
        f"2027-spring,lukasz.wisniewski@example.org,{OLD}\n"
        f"2027-spring,{NEW},wang.fang@example.org\n"
    )
    result = cli(
        "--config", project.config, "import", "partnerships", write(project, "x.csv", pairs)
    )
    assert result.code == 2
    assert (
        f"x.csv:2:3: member_b: {NEW} is already a member of this partnership, as {given_old}\n"
        in result.err
    )
    assert (
        f"x.csv:4:2: member_a: {NEW} is already in the partnership on line 3, as {given_old}"
        " (2027-spring)\n" in result.err
    )
    assert project.dump() == before
