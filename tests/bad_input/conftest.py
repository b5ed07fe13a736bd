"""Fixtures for the bad-input suite: projects copied from databases migrated once per session.

Most cases run one refused command against a small database; migrating a fresh database for each
would be most of the suite's time, so each test gets a copy of a template made once.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from rapport.cli import main
from tests.bad_input.common import PEOPLE, ROUND
from tests.conftest import Project


def _template(folder: Path, seed: bool) -> Path:
    """A migrated database in ``folder`` (with three participants and round r1 if ``seed``)."""
    project = Project(folder, folder / "config.toml", folder / "rapport.db")
    project.write_config()
    people = folder / "seed.csv"
    people.write_text(PEOPLE, encoding="utf-8")
    commands = [["db", "upgrade"]]
    if seed:
        commands += [
            ["import", "participants", str(people)],
            ["round", "create", ROUND, "--start", "2027-03-01"],
        ]
    for args in commands:
        assert main(["--config", str(project.config), *args]) == 0, args
    project.close()
    return project.db


@pytest.fixture(scope="session")
def _templates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return {
        "blank": _template(tmp_path_factory.mktemp("blank"), seed=False),
        "seeded": _template(tmp_path_factory.mktemp("seeded"), seed=True),
    }


def _copy(source: Path, target: Path) -> None:
    """A consistent copy of a SQLite database (its write-ahead log included)."""
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)
    src.close()
    dst.close()


@pytest.fixture
def make_project(tmp_path: Path, _templates: dict[str, Path]) -> Iterator[Callable[[str], Project]]:
    """``make_project("blank" | "seeded")``: a project whose database is a template's copy."""
    made: list[Project] = []

    def make(kind: str) -> Project:
        project = Project(tmp_path, tmp_path / "config.toml", tmp_path / "rapport.db")
        project.write_config()
        _copy(_templates[kind], project.db)
        made.append(project)
        return project

    yield make
    for project in made:
        project.close()


@pytest.fixture
def seeded(make_project: Callable[[str], Project]) -> Project:
    """A project holding three participants (ann, bob, eve) and the round r1."""
    return make_project("seeded")


@pytest.fixture
def blank(make_project: Callable[[str], Project]) -> Project:
    """A project with a migrated, empty database."""
    return make_project("blank")
