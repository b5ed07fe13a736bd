"""Shared fixtures: a project folder with config.toml and a migrated database, and a CLI runner."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from rapport.cli import main

pytest_plugins = ["tests.smtp_server", "tests.dovecot"]

SECRET = "test-secret-0123456789abcdef"


@dataclass
class Result:
    code: int
    out: str
    err: str


@dataclass
class Project:
    """A folder holding config.toml and rapport.db, as `rapport init` leaves it."""

    dir: Path
    config: Path
    db: Path

    def write_config(self, extra: str = "", smtp_port: int = 2525) -> None:
        self.config.write_text(
            "[program]\n"
            'name = "Test Network"\n'
            'from_address = "coordinators@example.org"\n'
            'reply_address = "coordinators+{key}@example.org"\n'
            "[database]\n"
            f'url = "sqlite:///{self.db}"\n'
            "[smtp]\n"
            'host = "127.0.0.1"\n'
            f"port = {smtp_port}\n"
            'security = "none"\n'
            "max_per_minute = 0\n"
            "max_per_day = 0\n" + extra,
            encoding="utf-8",
        )

    def dump(self) -> str:
        """The whole database as SQL text, to show that a failed command changed nothing."""
        with sqlite3.connect(self.db) as connection:
            return "\n".join(connection.iterdump())


@pytest.fixture(autouse=True)
def _secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAPPORT_SECRET", SECRET)
    monkeypatch.delenv("RAPPORT_CONFIG", raising=False)


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., Result]:
    """Run `rapport ARGS...` in-process; returns exit code, stdout and stderr."""

    def run(*args: str) -> Result:
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


@pytest.fixture
def project(tmp_path: Path, cli: Callable[..., Result]) -> Project:
    """A fresh project: config.toml for a loopback SMTP server and a migrated database."""
    proj = Project(tmp_path, tmp_path / "config.toml", tmp_path / "rapport.db")
    proj.write_config()
    result = cli("--config", proj.config, "db", "upgrade")
    assert result.code == 0, result.err
    return proj
