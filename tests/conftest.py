"""Shared fixtures: a project folder with config.toml and a migrated database, and a CLI runner.

``project`` runs on SQLite unless the test (or its module) is marked
``@pytest.mark.databases("sqlite", "postgresql")``: then it runs once per backend, the
PostgreSQL one on a fresh database of the session's private server (tests/postgres.py).  Tests
look into the database through ``project.rows``, ``project.scalar`` and ``project.dump``, which
read both backends the same way.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, MetaData, select, text

from program.store import make_engine
from rapport.cli import main

pytest_plugins = ["tests.smtp_server", "tests.dovecot", "tests.postgres"]

SECRET = "test-secret-0123456789abcdef"
BACKENDS = ("sqlite", "postgresql")
_QMARK = re.compile(r"\?")


@dataclass
class Result:
    code: int
    out: str
    err: str


def plain(value: Any) -> Any:
    """A column value as SQLite hands it back, whichever backend read it.

    Datetimes become UTC text (``2027-03-01 14:00:00.000000``) and dates ISO text, so a test
    compares the same strings on SQLite and PostgreSQL.
    """
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")
    if isinstance(value, date):
        return value.isoformat()
    return value


@dataclass
class Project:
    """A folder holding config.toml and its database, as `rapport init` leaves it.

    ``db`` is the SQLite file (unused on PostgreSQL); ``url`` is what config.toml names.
    """

    dir: Path
    config: Path
    db: Path
    backend: str = "sqlite"
    url: str = ""
    _engine: Engine | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.url = self.url or f"sqlite:///{self.db}"

    def write_config(self, extra: str = "", smtp_port: int = 2525) -> None:
        self.config.write_text(
            "[program]\n"
            'name = "Test Network"\n'
            'from_address = "coordinators@example.org"\n'
            'reply_address = "coordinators+{key}@example.org"\n'
            "[database]\n"
            f'url = "{self.url}"\n'
            "[smtp]\n"
            'host = "127.0.0.1"\n'
            f"port = {smtp_port}\n"
            'security = "none"\n'
            "max_per_minute = 0\n"
            "max_per_day = 0\n" + extra,
            encoding="utf-8",
        )

    @property
    def engine(self) -> Engine:
        """An engine on the project's database (the password comes from the environment)."""
        if self._engine is None:
            self._engine = make_engine(self.url)
        return self._engine

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def rows(self, sql: str, *params: Any) -> list[dict[str, Any]]:
        """The rows of ``sql`` (``?`` placeholders) as dicts of :func:`plain` values."""
        names = iter(range(len(params)))
        statement = text(_QMARK.sub(lambda _m: f":p{next(names)}", sql))
        with self.engine.connect() as connection:
            result = connection.execute(statement, {f"p{i}": v for i, v in enumerate(params)})
            return [{k: plain(v) for k, v in row.items()} for row in result.mappings()]

    def scalar(self, sql: str, *params: Any) -> Any:
        """The first column of the first row of ``sql`` (None when there is none)."""
        found = self.rows(sql, *params)
        return next(iter(found[0].values())) if found else None

    def execute(self, sql: str, *params: Any) -> None:
        """Run one changing statement (``?`` placeholders) and commit it."""
        names = iter(range(len(params)))
        statement = text(_QMARK.sub(lambda _m: f":p{next(names)}", sql))
        with self.engine.begin() as connection:
            connection.execute(statement, {f"p{i}": v for i, v in enumerate(params)})

    def dump(self) -> str:
        """Every table's rows as text, to show that a failed command changed nothing."""
        metadata = MetaData()
        lines = []
        with self.engine.connect() as connection:
            metadata.reflect(connection)
            for table in sorted(metadata.tables.values(), key=lambda t: t.name):
                query = select(table).order_by(*table.columns)
                for row in connection.execute(query):
                    values = ", ".join(repr(plain(value)) for value in row)
                    lines.append(f"{table.name}: {values}")
        return "\n".join(lines)


@pytest.fixture(autouse=True)
def _secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAPPORT_SECRET", SECRET)
    monkeypatch.delenv("RAPPORT_CONFIG", raising=False)


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., Result]:
    """Run `rapport ARGS...` in-process; returns exit code, stdout and stderr."""

    def run(*args: str) -> Result:
        # `serve` points the root logger at this call's (captured) stderr: put it back after,
        # so no later log line (aiosmtpd's threads, say) writes to a stream pytest has closed.
        root = logging.getLogger()
        handlers, level = root.handlers[:], root.level
        try:
            code = main([str(a) for a in args])
        finally:
            root.handlers[:], root.level = handlers, level
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run a test marked ``databases(...)`` once per backend named, if it uses ``db``."""
    marker = metafunc.definition.get_closest_marker("databases")
    if marker is None or "db" not in metafunc.fixturenames:
        return
    unknown = set(marker.args) - set(BACKENDS)
    if unknown or not marker.args:
        raise pytest.UsageError(f"databases(...) takes some of {BACKENDS}, got {marker.args}")
    metafunc.parametrize(
        "db",
        [
            pytest.param(name, marks=[pytest.mark.postgresql] if name == "postgresql" else [])
            for name in marker.args
        ],
        indirect=True,
    )


@pytest.fixture
def db(request: pytest.FixtureRequest) -> str:
    """The backend this test's project uses: "sqlite" unless parametrized by ``databases``."""
    return str(getattr(request, "param", "sqlite"))


@pytest.fixture
def project(
    tmp_path: Path, cli: Callable[..., Result], db: str, request: pytest.FixtureRequest
) -> Iterator[Project]:
    """A fresh project: config.toml for a loopback SMTP server and a migrated database."""
    proj = Project(tmp_path, tmp_path / "config.toml", tmp_path / "rapport.db", backend=db)
    if db == "postgresql":
        proj.url = request.getfixturevalue("postgres_database")()  # migrated already
        proj.write_config()
    else:
        proj.write_config()
        result = cli("--config", proj.config, "db", "upgrade")
        assert result.code == 0, result.err
    yield proj
    proj.close()
