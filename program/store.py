"""Engines, sessions and migrations, for SQLite (default) and PostgreSQL.

SQLite runs in WAL mode with foreign keys on, ``synchronous=NORMAL`` (durable across a process
crash, which is what the outbox needs; a power cut may lose the last commits, never corrupt) and
a busy timeout so a second reader waits instead of failing.  PostgreSQL takes its password from
``$RAPPORT_DATABASE_PASSWORD`` when the URL has none, and its sessions run in UTC.  The schema is
owned by Alembic: ``upgrade`` brings a database to the latest revision, and commands refuse to run
on one that is behind.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlmodel import Session

from program.errors import DatabaseError

BUSY_TIMEOUT_MS = 30_000


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cursor.close()


def make_engine(url: str) -> Engine:
    """An engine for ``url``; for SQLite the file's folder must exist."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:" and not Path(database).parent.is_dir():
            raise DatabaseError(f"{database}: the folder for the database does not exist")
        engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000})
        event.listen(engine, "connect", _sqlite_pragmas)
        # pysqlite's own transaction handling defers BEGIN; emit it ourselves, IMMEDIATE, so a
        # transaction takes the write lock at its start and waits (busy_timeout) for another
        # process's short transaction to end.  A deferred BEGIN that reads and then writes fails
        # at once with "database is locked" when another writer committed in between.
        event.listen(engine, "connect", lambda conn, _rec: setattr(conn, "isolation_level", None))
        event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))
        return engine
    if parsed.drivername == "postgresql":  # SQLAlchemy's default driver is not installed
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() == "postgresql" and parsed.password is None:
        password = os.environ.get("RAPPORT_DATABASE_PASSWORD")
        if password:
            parsed = parsed.set(password=password)
    engine = create_engine(parsed, pool_pre_ping=True)
    event.listen(engine, "connect", _postgresql_utc)
    return engine


def _postgresql_utc(dbapi_connection: Any, _record: Any) -> None:
    """Sessions in UTC, so timestamps come back in UTC whatever the server's TimeZone or the
    client's $PGTZ say (a SET after connecting overrides both)."""
    with dbapi_connection.cursor() as cursor:
        cursor.execute("SET TIME ZONE 'UTC'")
    dbapi_connection.commit()


def serialize(connection: Connection, key: int) -> None:
    """Hold ``key`` until ``connection``'s transaction ends: writers of one thing take turns.

    On PostgreSQL a transaction-level advisory lock (another transaction taking the same key
    waits, then sees what this one committed).  SQLite needs nothing: its write transactions
    begin IMMEDIATE, so they already run one at a time."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session whose transaction commits on success and rolls back on any error."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def _alembic_config(engine: Engine) -> AlembicConfig:
    config = AlembicConfig()
    config.set_main_option("script_location", str(resources.files("program") / "migrations"))
    config.attributes["engine"] = engine
    return config


def head_revision() -> str:
    """The newest migration this version of Rapport knows."""
    script = ScriptDirectory.from_config(_alembic_config(None))  # type: ignore[arg-type]
    head = script.get_current_head()
    if head is None:  # pragma: no cover - packaging error
        raise DatabaseError("no migrations are installed")
    return head


def current_revision(engine: Engine) -> str | None:
    """The database's migration, or None for an empty database."""
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    except OperationalError as exc:
        raise DatabaseError(f"cannot open the database: {exc.orig}") from None


def upgrade(engine: Engine, revision: str = "head") -> tuple[str | None, str]:
    """Migrate to ``revision``; returns (before, after)."""
    before = current_revision(engine)
    command.upgrade(_alembic_config(engine), revision)
    return before, current_revision(engine) or ""


def require_current(engine: Engine) -> None:
    """Refuse to work on a database that is missing or behind this version's schema.

    A missing SQLite file is refused before connecting, which would create an empty one."""
    file = engine.url.database if engine.url.get_backend_name() == "sqlite" else None
    if file and file != ":memory:" and not Path(file).exists():
        raise DatabaseError(f"{file}: no database yet: run `rapport db upgrade` to create it")
    current, head = current_revision(engine), head_revision()
    if current is None:
        raise DatabaseError("the database is empty: run `rapport db upgrade`")
    if current != head:
        raise DatabaseError(
            f"the database is at migration {current}, this version needs {head}:"
            " back it up, then run `rapport db upgrade`"
        )
