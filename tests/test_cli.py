"""The `rapport` command's plumbing: init, db upgrade, config errors, usage errors, listings."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlmodel import SQLModel

import program.models  # noqa: F401  (registers the tables)
from program.config import example_config
from program.store import head_revision, make_engine
from rapport import commands
from tests.conftest import Project, Result

Cli = Callable[..., Result]
pytestmark = pytest.mark.databases("sqlite", "postgresql")
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_init_writes_config_and_database(tmp_path: Path, cli: Cli) -> None:
    """init writes the commented example config and a migrated database beside it."""
    config = tmp_path / "config.toml"
    result = cli("--config", config, "init")
    assert result.code == 0, result.err
    assert config.read_text() == example_config()
    assert (tmp_path / "rapport.db").exists()
    assert f"at migration {head_revision()}" in result.out
    again = cli("--config", config, "init")
    assert again.code == 2 and "already exists (use --force" in again.err


def test_db_upgrade_is_idempotent(project: Project, cli: Cli) -> None:
    """db upgrade on a database at head is a no-op that says so."""
    result = cli("--config", project.config, "db", "upgrade")
    assert result.code == 0, result.err
    assert result.out.strip() == f"database already at migration {head_revision()}"


@pytest.mark.databases("sqlite")  # SQLite's own settings
def test_sqlite_runs_in_wal_with_foreign_keys(project: Project) -> None:
    """A SQLite database runs in WAL mode with foreign keys enforced."""
    engine = make_engine(project.url)
    with engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_migrations_match_the_models(project: Project) -> None:
    """The schema the migrations build is the schema the models declare."""
    with project.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, SQLModel.metadata) == []


def test_commands_refuse_an_unmigrated_database(tmp_path: Path, cli: Cli) -> None:
    """A command on an empty database says to run db upgrade (exit 1, no traceback); with no
    database file at all it says so, and creates none."""
    proj = Project(tmp_path, tmp_path / "config.toml", tmp_path / "rapport.db")
    proj.write_config()
    missing = cli("--config", proj.config, "health")
    assert missing.code == 1 and not proj.db.exists()
    assert missing.err.strip() == (
        f"rapport: {proj.db}: no database yet: run `rapport db upgrade` to create it"
    )
    proj.db.touch()
    result = cli("--config", proj.config, "round", "list")
    assert result.code == 1
    assert result.err.strip() == "rapport: the database is empty: run `rapport db upgrade`"


BAD_CONFIGS = [
    ("smtp", 'timeout = "30"', "smtp.timeout: expected a duration with a unit"),
    ("smtp", 'allow_plaintext = "yes"', "smtp.allow_plaintext: expected true or false"),
    ("smtp", "ca_file = 5", "smtp.ca_file: expected a string in quotes"),
    ("smtp", 'redirect_all_to = "me"', "smtp.redirect_all_to: not a valid email address"),
    ("program", "default_language = 3", "program.default_language: expected a string"),
    ("program", 'timezone = "Europe/Atlantis"', "program.timezone: unknown time zone"),
    ("schedule", 'topic_local_time = "25:00"', "schedule.topic_local_time: expected a time of day"),
    ("schedule", 'max_lateness = "2 days"', "schedule.max_lateness: expected a duration"),
    ("outbox", "max_attempts = 0", "outbox.max_attempts: must be at least 1"),
    ("outbox", 'retry_bsae = "5m"', "outbox.retry_bsae: unknown key"),
    ("mail", 'host = "x"', "mail: unknown section"),
]


def _insert(config: Path, section: str, line: str) -> int:
    """Put ``line`` first in ``[section]`` (adding the section at the end); returns its line."""
    lines = config.read_text(encoding="utf-8").splitlines()
    if f"[{section}]" in lines:
        at = lines.index(f"[{section}]") + 1
    else:
        lines.append(f"[{section}]")
        at = len(lines)
    lines.insert(at, line)
    config.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return at + 1


@pytest.mark.parametrize(("section", "line", "message"), BAD_CONFIGS)
def test_bad_config_exits_2_and_changes_nothing(
    project: Project, cli: Cli, section: str, line: str, message: str
) -> None:
    """A wrong config.toml stops every command with exit 2, naming file, line and key."""
    before = project.dump()
    number = _insert(project.config, section, line)
    if section == "mail":
        number -= 1  # an unknown section is reported at its header
    result = cli("--config", project.config, "round", "create", "r1", "--start", "2027-03-01")
    assert result.code == 2
    assert f"{project.config}:{number}: {message}" in result.err
    assert "Traceback" not in result.err
    assert project.dump() == before


def test_duplicate_smtp_section_is_a_toml_error(project: Project, cli: Cli) -> None:
    """A second [smtp] table is refused by the TOML parser with its line."""
    text = project.config.read_text(encoding="utf-8") + "[smtp]\nport = 25\n"
    project.config.write_text(text, encoding="utf-8")
    result = cli("--config", project.config, "round", "list")
    assert result.code == 2 and "not valid TOML" in result.err and "line" in result.err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("send", "--now", "yesterday"), "--now: not an ISO 8601 date and time"),
        (("send", "--limit", "0"), "expected a whole number of at least 1"),
        (("round", "create", "x", "--start", "March"), "not a date (YYYY-MM-DD)"),
        (("outbox", "--status", "lost"), "invalid choice: 'lost'"),
        (("frobnicate",), "invalid choice: 'frobnicate'"),
    ],
)
def test_usage_errors_exit_2(
    project: Project, cli: Cli, args: tuple[str, ...], message: str
) -> None:
    """Bad arguments exit 2 with a one-line reason and the usage, never a traceback."""
    result = cli("--config", project.config, *args)
    assert result.code == 2
    assert message in result.err
    assert "Traceback" not in result.err


def test_round_and_topic_listings(project: Project, cli: Cli) -> None:
    """round list and topics list show what was imported, with each topic's send date."""
    assert cli("--config", project.config, "round", "list").out.strip() == "no rounds yet"
    created = cli(
        "--config",
        project.config,
        "round",
        "create",
        "2027-spring",
        "--start",
        "2027-03-01",
        "--end",
        "2027-08-31",
    )
    assert (
        created.out.strip()
        == "round 2027-spring: starts 2027-03-01 to 2027-08-31, a topic every 14 days"
    )
    listing = cli("--config", project.config, "round", "list", "--now", "2027-03-01T00:00Z")
    assert listing.out.splitlines()[0].split() == ["round", "start", "end", "cadence", "status"]
    row = ["2027-spring", "2027-03-01", "2027-08-31", "14"]
    assert listing.out.splitlines()[1].split() == [*row, "active"]
    for now, state in (("2027-02-28T23:59Z", "upcoming"), ("2027-09-01T00:00Z", "ended")):
        listing = cli("--config", project.config, "round", "list", "--now", now)
        assert listing.out.splitlines()[1].split() == [*row, state]
    imported = cli(
        "--config",
        project.config,
        "import",
        "topics",
        EXAMPLES / "topics",
        "--round",
        "2027-spring",
    )
    assert imported.code == 0, imported.err
    topics = cli("--config", project.config, "topics", "list").out.splitlines()
    assert topics[0].split()[:4] == ["round", "#", "send", "on"]
    assert [line.split()[2] for line in topics[1:]] == [
        "2027-03-01",
        "2027-03-15",
        "2027-03-29",
        "2027-04-12",
        "2027-04-26",
        "2027-05-10",
        "2027-05-24",
        "2027-06-07",
    ]
    assert all("en es fr" in line for line in topics[1:])
    missing = cli("--config", project.config, "topics", "list", "--round", "nope")
    assert missing.code == 2 and "round nope: no such round" in missing.err


def test_outbox_on_an_empty_database(project: Project, cli: Cli) -> None:
    """outbox with nothing queued prints the zero counts; --status S says there is none."""
    result = cli("--config", project.config, "outbox")
    assert (
        result.out.strip()
        == "pending 0  sending 0  sent 0  retry 0  failed 0  uncertain 0  suppressed 0  late 0"
        "  cancelled 0"
    )
    assert (
        cli("--config", project.config, "outbox", "--status", "failed").out.strip()
        == "no failed messages"
    )


def test_progress_only_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Progress is drawn on a terminal, and not in a pipe or under systemd."""

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("INVOCATION_ID", raising=False)
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    monkeypatch.setattr("sys.stderr", io.StringIO())
    assert commands._progress() is None
    terminal = Tty()
    monkeypatch.setattr("sys.stderr", terminal)
    show = commands._progress()
    assert show is not None
    show(50, 100)
    assert terminal.getvalue() == "\rsending 50/100"
    monkeypatch.setenv("INVOCATION_ID", "abc")
    assert commands._progress() is None


def test_example_data_dry_run(project: Project, cli: Cli) -> None:
    """The example program imports cleanly and a dry run on its first day plans every member."""
    for kind in ("participants", "coordinators"):
        assert cli("--config", project.config, "import", kind, EXAMPLES / f"{kind}.csv").code == 0
    cli("--config", project.config, "round", "create", "2027-spring", "--start", "2027-03-01")
    assert (
        cli(
            "--config", project.config, "import", "partnerships", EXAMPLES / "partnerships.csv"
        ).code
        == 0
    )
    cli(
        "--config",
        project.config,
        "import",
        "topics",
        EXAMPLES / "topics",
        "--round",
        "2027-spring",
    )
    members = project.scalar("SELECT count(*) FROM membership")
    result = cli("--config", project.config, "send", "--dry-run", "--now", "2027-03-02T00:00:00Z")
    assert result.out.startswith(f"dry run: would plan {members} topic emails")


def test_smtp_password_comes_from_the_named_variable(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a username, the password is read from smtp.password_env, never from the file."""
    from program.config import load_config
    from program.errors import ConfigError
    from rapport.jobs import smtp_endpoint

    text = project.config.read_text(encoding="utf-8").replace(
        "[smtp]\n", '[smtp]\nusername = "mailer"\npassword_env = "TEST_SMTP_PW"\n'
    )
    project.config.write_text(text, encoding="utf-8")
    settings = load_config(project.config)
    monkeypatch.delenv("TEST_SMTP_PW", raising=False)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    with pytest.raises(ConfigError, match=r"\$TEST_SMTP_PW .* is empty"):
        smtp_endpoint(settings)
    monkeypatch.setenv("TEST_SMTP_PW", "s3cret-value")
    endpoint = smtp_endpoint(settings)
    assert (endpoint.username, endpoint.password) == ("mailer", "s3cret-value")
    assert "s3cret-value" not in repr(endpoint)


def test_a_folder_that_cannot_be_made_is_an_error_not_a_traceback(tmp_path: Path, cli: Cli) -> None:
    """An OS error on a path a command was given names the path and exits 1, no traceback."""
    (tmp_path / "a-file").write_text("", encoding="utf-8")
    result = cli("demo", "--dir", tmp_path / "a-file" / "demo")
    assert result.code == 1
    assert result.err.strip().startswith(f"rapport: {tmp_path / 'a-file' / 'demo'}")
    assert result.err.strip().endswith(": Not a directory")
    assert "Traceback" not in result.err


@pytest.mark.parametrize(
    ("args", "choices"),
    [
        (["participant"], "{alias,pause,resume,withdraw,address,unsuppress,forget}"),
        (["import"], "{participants,coordinators,partnerships,topics}"),
        (["db"], "{upgrade}"),
    ],
)
def test_a_missing_subcommand_names_the_choices(cli: Cli, args: list[str], choices: str) -> None:
    """A command given without its subcommand lists the choices, not an internal name."""
    result = cli(*args)
    assert result.code == 2
    assert result.err.strip().endswith(f"the following arguments are required: {choices}")
