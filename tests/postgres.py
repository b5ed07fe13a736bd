"""A private PostgreSQL server on loopback for tests, started once per session.

Rapport must run on PostgreSQL when a network outgrows SQLite, with several processes sharing one
database, so the suite runs its database tests on a real server too, not on a fake.  Register it
as a pytest plugin (``pytest_plugins = ["tests.postgres"]``) to get:

- ``postgres``: the running :class:`PostgresServer` (session-wide), with a template database
  migrated to head once.
- ``postgres_database``: ``new()`` gives the URL of a database at head with no rows, for this
  test only; ``new(empty=True)`` one without any schema.  The URL has no password: it comes
  from ``$RAPPORT_DATABASE_PASSWORD``, as in a deployment.  Copying the template takes about
  half a second, so a test's database is emptied afterwards (rows deleted, sequences restarted)
  and handed to the next test; one whose schema the test changed is dropped instead.

The server runs from a temporary directory (data, socket, log) with ``fsync`` off, listens on
127.0.0.1 only, on a free port, and asks for a password over TCP (SCRAM), so the tests use the
same password path as a deployment.  Its binaries come from Debian's ``postgresql`` package
(``make test`` installs it); when they are missing and cannot be installed the tests that need
them are skipped, with the reason.  As root, the server runs as the ``postgres`` user (else
``nobody``): initdb and postgres refuse to run as root.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Connection, create_engine, text
from sqlalchemy.pool import NullPool

from program.store import make_engine, upgrade

HOST = "127.0.0.1"
USER = "rapport"
PASSWORD = "pg-test-password"
PASSWORD_ENV = "RAPPORT_DATABASE_PASSWORD"
TEMPLATE = "rapport_template"
START_TIMEOUT = 30.0
_SEARCH = ("/usr/lib/postgresql", "/usr/local/pgsql/bin")
_numbers = itertools.count(1)


def _find_bindir() -> Path | None:
    """The folder holding initdb and postgres (newest Debian version first), or None."""
    candidates: list[Path] = []
    root = Path(_SEARCH[0])
    if root.is_dir():
        versions = sorted(
            (p for p in root.iterdir() if p.name.replace(".", "").isdigit()),
            key=lambda p: float(p.name),
            reverse=True,
        )
        candidates += [v / "bin" for v in versions]
    candidates.append(Path(_SEARCH[1]))
    found = shutil.which("initdb")
    if found:
        candidates.append(Path(found).parent)
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "postgres").is_file():
            return folder
    return None


def _install() -> str | None:
    """Install Debian's PostgreSQL server as root; None on success, else why not."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return "not root on a Debian-like system, so it cannot be installed here"
    environ = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for args in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "postgresql"]):
        done = subprocess.run(args, env=environ, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            return f"`{' '.join(args)}` failed: {done.stderr.strip()[-300:]}"
    return None


def find_bindir() -> Path:
    """PostgreSQL's server binaries, installing them if we can; else skip with the reason."""
    found = _find_bindir()
    if found is None:
        problem = _install()
        found = _find_bindir()
        if found is None:
            pytest.skip(
                "PostgreSQL server binaries (initdb, postgres) are not installed and"
                f" {problem or 'installing the postgresql package did not provide them'};"
                " `make test` installs them (Debian package postgresql)"
            )
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _server_user() -> pwd.struct_passwd | None:
    """The unprivileged user to run the server as when we are root; None when we are not."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise RuntimeError("running as root and neither `postgres` nor `nobody` exists to run as")


class PostgresServer:
    """One postmaster serving databases on ``HOST:port`` from the folder ``root``."""

    def __init__(self, root: Path, bindir: Path) -> None:
        self.root, self.bindir = root, bindir
        self.data = root / "data"
        self.log = root / "postgres.log"
        self.host, self.port = HOST, free_port()
        self.user, self.password = USER, PASSWORD
        self.account = _server_user()
        self.process: subprocess.Popen[bytes] | None = None
        self._free: list[str] = []  # emptied databases waiting for their next test
        self._schema: tuple[tuple[str, ...], tuple[str, ...], str] = ((), (), "")
        self.admin = create_engine(
            self.url("postgres", password=True), isolation_level="AUTOCOMMIT"
        )

    def __repr__(self) -> str:
        return f"<PostgresServer {self.host}:{self.port} {self.root}>"

    def url(self, database: str, *, password: bool = False) -> str:
        """``postgresql+psycopg://USER@HOST:PORT/DATABASE`` (with the password if asked)."""
        secret = f":{self.password}" if password else ""
        return f"postgresql+psycopg://{self.user}{secret}@{self.host}:{self.port}/{database}"

    def _run_as(self) -> list[str]:
        if self.account is None:
            return []
        return [
            "setpriv",
            f"--reuid={self.account.pw_uid}",
            f"--regid={self.account.pw_gid}",
            "--init-groups",
            "--",
        ]

    def _as_server_user(self, path: Path) -> None:
        if self.account is not None:
            os.chown(path, self.account.pw_uid, self.account.pw_gid)

    def initdb(self) -> None:
        """Create the cluster: superuser ``USER``, password over TCP, trust on the socket."""
        self._as_server_user(self.root)
        self.root.chmod(0o700)
        password_file = self.root / "password"
        password_file.write_text(self.password + "\n", encoding="utf-8")
        self._as_server_user(password_file)
        done = subprocess.run(
            [
                *self._run_as(),
                str(self.bindir / "initdb"),
                "--pgdata",
                str(self.data),
                "--username",
                self.user,
                "--pwfile",
                str(password_file),
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ],
            capture_output=True,
            text=True,
            check=False,
            cwd=self.root,
        )
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed ({done.returncode}):\n{done.stdout}{done.stderr}")

    def start(self) -> None:
        """Start the server and wait until it accepts a logged-in connection."""
        with open(self.log, "ab") as log:  # the child keeps its own copy of the descriptor
            self.process = subprocess.Popen(
                [
                    *self._run_as(),
                    str(self.bindir / "postgres"),
                    "-D",
                    str(self.data),
                    "-p",
                    str(self.port),
                    "-c",
                    f"listen_addresses={self.host}",
                    "-c",
                    f"unix_socket_directories={self.root}",
                    # Throwaway data: durability only costs time here.
                    "-c",
                    "fsync=off",
                    "-c",
                    "synchronous_commit=off",
                    "-c",
                    "full_page_writes=off",
                    "-c",
                    "max_connections=200",
                    "-c",
                    "wal_level=minimal",
                    "-c",
                    "max_wal_senders=0",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd=self.root,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            code = self.process.poll()
            if code is not None:
                raise RuntimeError(f"postgres exited with status {code}:\n{self.log_text()}")
            try:
                with self.admin.connect() as connection:
                    connection.execute(text("SELECT 1"))
                return
            except Exception:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(
                        f"postgres did not accept connections within {START_TIMEOUT} s:\n"
                        + self.log_text()
                    ) from None
                time.sleep(0.05)

    def stop(self) -> None:
        """Fast shutdown (SIGINT: abort sessions, then exit), SIGKILL after ten seconds."""
        self.admin.dispose()
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGINT)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace") if self.log.exists() else ""

    def execute(self, sql: str) -> None:
        """Run one statement as the superuser, outside a transaction (CREATE/DROP DATABASE)."""
        with self.admin.connect() as connection:
            connection.execute(text(sql))

    def make_template(self) -> None:
        """Create ``TEMPLATE`` and migrate it to head, once; test databases are its copies."""
        self.execute(f"CREATE DATABASE {TEMPLATE} TEMPLATE template0")
        engine = make_engine(self.url(TEMPLATE, password=True))
        try:
            upgrade(engine)
            with engine.connect() as connection:
                self._schema = _schema(connection)
        finally:
            engine.dispose()  # CREATE DATABASE ... TEMPLATE needs the template to be idle

    def new_database(self, template: str = TEMPLATE) -> str:
        """A new database copied from ``template`` (default: migrated to head); its name."""
        name = f"rapport_test_{next(_numbers)}"
        self.execute(f"CREATE DATABASE {name} TEMPLATE {template}")
        return name

    def drop_database(self, name: str) -> None:
        """Drop ``name``, ending any connection a test left open to it."""
        self.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def checkout(self) -> str:
        """A database at head holding no rows, for one test: a used one emptied, else a new one.

        Copying the template takes half a second; emptying a used database a few milliseconds.
        """
        return self._free.pop() if self._free else self.new_database()

    def checkin(self, name: str) -> None:
        """Take back a test's database: emptied for the next test, or dropped if it cannot be."""
        if self._empty(name):
            self._free.append(name)
        else:
            self.drop_database(name)

    def _empty(self, name: str) -> bool:
        """Delete every row and restart every sequence; False if the schema is not the template's.

        Connections the test left open (its engines, a killed process's session) are ended
        first: an idle transaction would hold locks, and leftovers would pile up.
        """
        self.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            f" WHERE datname = '{name}' AND pid <> pg_backend_pid()"
        )
        engine = create_engine(self.url(name, password=True), poolclass=NullPool)
        try:
            with engine.begin() as connection:
                if _schema(connection) != self._schema:
                    return False
                connection.execute(text("SET LOCAL lock_timeout = '5s'"))
                # Foreign keys are not checked while emptying: no order between tables needed.
                connection.execute(text("SET LOCAL session_replication_role = replica"))
                tables, sequences, _version = self._schema
                for table in tables:
                    if table != "alembic_version":
                        connection.execute(text(f'DELETE FROM "{table}"'))
                for sequence in sequences:
                    connection.execute(text(f'ALTER SEQUENCE "{sequence}" RESTART'))
        except Exception:
            return False
        finally:
            engine.dispose()
        return True


def _schema(connection: Connection) -> tuple[tuple[str, ...], tuple[str, ...], str]:
    """(tables, sequences, migration) of a database, to tell whether a test changed its schema."""
    tables = connection.execute(
        text("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")
    ).scalars()
    sequences = connection.execute(
        text("SELECT sequencename FROM pg_sequences WHERE schemaname = 'public' ORDER BY 1")
    ).scalars()
    version = connection.execute(text("SELECT string_agg(version_num, ',') FROM alembic_version"))
    return tuple(tables), tuple(sequences), str(version.scalar())


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """The session's PostgreSQL server, with a migrated template database."""
    bindir = find_bindir()
    # Not pytest's tmp_path: the server's user must own the folder, and its path stays short
    # (a Unix socket path is limited to about a hundred bytes).
    root = Path(tempfile.mkdtemp(prefix="rapport-pg-"))
    server = PostgresServer(root, bindir)
    try:
        server.initdb()
        server.start()
        server.make_template()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgres_database(
    postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., str]]:
    """``new(empty=False)``: the URL (without password) of a database for this test only.

    The database is at the head migration with no rows, or with ``empty=True`` has no schema
    at all (for migration tests).  Sets ``$RAPPORT_DATABASE_PASSWORD`` for this process and the
    commands it starts.
    """
    monkeypatch.setenv(PASSWORD_ENV, postgres.password)
    taken: list[tuple[str, bool]] = []

    def new(*, empty: bool = False) -> str:
        name = postgres.new_database("template0") if empty else postgres.checkout()
        taken.append((name, empty))
        return postgres.url(name)

    yield new
    for name, empty in taken:
        if empty:
            postgres.drop_database(name)
        else:
            postgres.checkin(name)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "databases(*names): run the test's `project` on each backend named"
        ' ("sqlite", "postgresql"); without it, SQLite only',
    )
    config.addinivalue_line("markers", "postgresql: runs against the private PostgreSQL server")
