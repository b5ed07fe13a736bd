"""Tests for `rapport doctor`: every check against real servers, and that it changes nothing.

SMTP checks run against the aiosmtpd test server (plaintext on loopback, STARTTLS and implicit TLS
with the test CA), IMAP checks against the test Dovecot, Maildir checks against a folder made here.
Each test also shows that nothing was sent: the SMTP server saw no MAIL FROM.
"""

from __future__ import annotations

import re
import shutil
import socket
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
import trustme
from alembic.script import ScriptDirectory

import program
from mailer.compose import TEMPLATE_DIR
from program.config import load_config
from program.store import head_revision, make_engine, upgrade
from rapport.doctor import check_templates
from tests.conftest import SECRET, Project, Result
from tests.dovecot import DovecotServer, make_message
from tests.smtp_server import SmtpTestServer, write_ca_file

pytestmark = pytest.mark.databases("sqlite", "postgresql")

Cli = Callable[..., Result]
NOW = datetime(2027, 4, 26, 10, 0, tzinfo=UTC)
TEMPLATES_OK = "topic, nudge_pair, nudge_silent, nudge_coordinators, concern, report"


def configure(
    project: Project, server: SmtpTestServer | None, extra: str = "", **smtp: str
) -> None:
    """Project config for ``server`` (else a closed port), ``smtp`` keys (TOML values) and
    ``extra`` sections; SMTP timeouts are short."""
    project.write_config(smtp_port=server.port if server is not None else closed_port())
    body = project.config.read_text(encoding="utf-8")
    keys = {"security": f'"{server.security if server else "none"}"', "timeout": '"5s"', **smtp}
    for key, value in keys.items():
        line = f"{key} = {value}\n"
        body, found = re.subn(rf"^{key} = .*\n", line, body, count=1, flags=re.MULTILINE)
        if not found:
            body = body.replace("[smtp]\n", "[smtp]\n" + line)
    project.config.write_text(body + extra, encoding="utf-8")


def closed_port() -> int:
    """A loopback port that nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def maildir(root: Path, *folders: str) -> Path:
    """A Maildir with Maildir++ subfolders ``folders``, holding one unread message."""
    for directory in (root, *(root / f".{name}" for name in folders)):
        for sub in ("new", "cur", "tmp"):
            (directory / sub).mkdir(parents=True)
    (root / "new" / "1700000000.M1P1Q1.host").write_bytes(make_message(1))
    return root


def lines(result: Result) -> list[str]:
    return result.out.splitlines()


def tail() -> list[str]:
    """The template and info lines a healthy test project ends with."""
    return [
        *(f"ok   templates {lang}: {TEMPLATES_OK}" for lang in ("en", "es", "fr")),
        "info smtp rate limits: no limit a minute, no limit a day",
        "info smtp rehearsal: off: messages go to their recipients",
    ]


def assert_nothing_sent(server: SmtpTestServer) -> None:
    assert server.handler.messages == []
    assert not [c for c in server.handler.commands if not c.startswith("QUIT")]


def test_all_ok_on_loopback_with_a_maildir(
    project: Project, cli: Cli, smtp_server: SmtpTestServer
) -> None:
    """Plaintext SMTP on loopback and a Maildir: every line ok, exit 0, nothing sent or changed."""
    box = maildir(project.dir / "mail", "Done")
    configure(project, smtp_server, '[maildir]\npath = "mail"\n[imap]\nfile_into = "Done"\n')
    before = project.dump()
    result = cli("--config", project.config, "doctor")
    assert result.code == 0, result.out
    assert lines(result) == [
        f"ok   config {project.config}",
        f"ok   database {project.url}: at migration {head_revision()}, the latest",
        f"ok   secret from $RAPPORT_SECRET: {len(SECRET)} bytes",
        f"ok   smtp 127.0.0.1:{smtp_server.port}: plaintext, no login",
        "ok   maildir mail: readable; folders INBOX; file_into Done",
        *tail(),
    ]
    assert result.err == ""
    assert_nothing_sent(smtp_server)
    assert smtp_server.handler.connections == 1
    assert project.dump() == before
    assert [p.name for p in (box / "new").iterdir()] == ["1700000000.M1P1Q1.host"]


@pytest.mark.parametrize("security", ["starttls", "tls"])
def test_all_ok_over_tls_with_a_login_and_a_trusted_ca(
    project: Project,
    cli: Cli,
    smtp_server_factory: Callable[..., SmtpTestServer],
    smtp_ca_file: str,
    monkeypatch: pytest.MonkeyPatch,
    security: str,
) -> None:
    """STARTTLS or TLS verified against ca_file, then AUTH: ok, with no MAIL FROM after it."""
    # aiosmtpd counts only STARTTLS as TLS when it decides whether to offer AUTH.
    server = smtp_server_factory(
        security=security,
        accounts={"rapport": "s3cret-pass"},
        auth_require_tls=security == "starttls",
    )
    monkeypatch.setenv("RAPPORT_SMTP_PASSWORD", "s3cret-pass")
    configure(
        project,
        server,
        redirect_all_to='"rehearsal@example.org"',
        host='"localhost"',
        username='"rapport"',
        ca_file=f'"{smtp_ca_file}"',
    )
    result = cli("--config", project.config, "doctor")
    kind = "STARTTLS" if security == "starttls" else "TLS"
    assert lines(result)[3] == (
        f"ok   smtp localhost:{server.port}: {kind}, certificate verified, logged in as 'rapport'"
    )
    assert lines(result)[-1] == (
        "info smtp rehearsal: on: every message goes to rehearsal@example.org instead of its"
        " recipient"
    )
    assert result.code == 0, result.out
    assert_nothing_sent(server)


def test_closed_smtp_port_fails(project: Project, cli: Cli) -> None:
    """Nothing listening on the SMTP port: a FAIL line naming host and port, exit 1."""
    configure(project, None)
    result = cli("--config", project.config, "doctor")
    assert result.code == 1
    (smtp,) = [line for line in lines(result) if line.startswith("FAIL smtp ")]
    assert smtp.startswith("FAIL smtp 127.0.0.1:")
    assert ": cannot connect: " in smtp and "refused" in smtp
    assert "skip imap: no [imap] host or [maildir] path: replies are not read" in lines(result)
    assert result.err == ""


def test_tls_to_a_server_whose_ca_is_not_trusted_fails(
    project: Project,
    cli: Cli,
    smtp_server_factory: Callable[..., SmtpTestServer],
    tmp_path: Path,
) -> None:
    """A certificate signed by a CA that ca_file does not hold: FAIL, and no login was tried."""
    server = smtp_server_factory(security="tls")
    other_ca = write_ca_file(trustme.CA(), tmp_path / "other-ca.pem")
    configure(project, server, host='"localhost"', ca_file=f'"{other_ca}"')
    result = cli("--config", project.config, "doctor")
    assert result.code == 1
    assert lines(result)[3] == (
        f"FAIL smtp localhost:{server.port}: TLS certificate verification failed:"
        " unable to get local issuer certificate"
    )
    assert_nothing_sent(server)


def test_missing_smtp_password_fails_without_connecting(
    project: Project, cli: Cli, smtp_server: SmtpTestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A username with no password anywhere: FAIL naming the variable; no connection made."""
    monkeypatch.delenv("RAPPORT_SMTP_PASSWORD", raising=False)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    configure(project, smtp_server, username='"rapport"')
    result = cli("--config", project.config, "doctor")
    assert result.code == 1
    assert lines(result)[3] == (
        f"FAIL smtp 127.0.0.1:{smtp_server.port}: {project.config}: smtp.username is set but"
        " $RAPPORT_SMTP_PASSWORD (or the systemd credential smtp-password) is empty"
    )
    assert smtp_server.handler.connections == 0


def imap_config(dovecot: DovecotServer, folders: list[str], file_into: str = "") -> str:
    quoted = ", ".join(f'"{f}"' for f in folders)
    return (
        f'[imap]\nhost = "localhost"\nport = {dovecot.port}\nsecurity = "starttls"\n'
        f'username = "{dovecot.username}"\nca_file = "{dovecot.ca_file}"\n'
        f'folders = [{quoted}]\ntimeout = "5s"\n'
        + (f'file_into = "{file_into}"\n' if file_into else "")
    )


def test_imap_ok_leaves_unread_mail_unread(
    project: Project,
    cli: Cli,
    smtp_server: SmtpTestServer,
    dovecot: DovecotServer,
    imap_folders: Callable[..., str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Login, EXAMINE each folder, file_into exists: ok, and the unread message stays unread."""
    inbox, done = imap_folders(), imap_folders()
    uid = dovecot.append(inbox, make_message(1))
    monkeypatch.setenv("RAPPORT_IMAP_PASSWORD", dovecot.password)
    configure(project, smtp_server, imap_config(dovecot, [inbox], done))
    result = cli("--config", project.config, "doctor")
    assert result.code == 0, result.out
    assert lines(result)[4] == (
        f"ok   imap coordinators@localhost:{dovecot.port}: STARTTLS, certificate verified,"
        f" logged in; folders {inbox}; file_into {done}"
    )
    assert "\\Seen" not in dovecot.flags(inbox, uid)
    assert dovecot.uids(inbox) == [uid]
    assert_nothing_sent(smtp_server)


def test_missing_imap_folders_fail_one_line_each(
    project: Project,
    cli: Cli,
    smtp_server: SmtpTestServer,
    dovecot: DovecotServer,
    imap_folders: Callable[..., str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A configured folder and a file_into that do not exist: a FAIL for each; none is created."""
    inbox, missing, nowhere = imap_folders(), imap_folders(create=False), imap_folders(create=False)
    monkeypatch.setenv("RAPPORT_IMAP_PASSWORD", dovecot.password)
    configure(project, smtp_server, imap_config(dovecot, [inbox, missing], nowhere))
    result = cli("--config", project.config, "doctor")
    assert result.code == 1
    where = f"imap coordinators@localhost:{dovecot.port}"
    failed = [line for line in lines(result) if line.startswith("FAIL")]
    assert [line.partition(": ")[0] for line in failed] == [
        f"FAIL {where} folder {missing!r}",
        f"FAIL {where} file_into {nowhere!r}",
    ]
    assert failed[1].endswith("; create it or fix the name")
    assert not dovecot.exists(missing) and not dovecot.exists(nowhere)


def test_wrong_imap_password_fails(
    project: Project,
    cli: Cli,
    smtp_server: SmtpTestServer,
    dovecot: DovecotServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Dovecot refuses the login: one FAIL line naming the account, exit 1, and no retries."""
    monkeypatch.setenv("RAPPORT_IMAP_PASSWORD", "not-the-password")
    configure(project, smtp_server, imap_config(dovecot, ["INBOX"]))
    started = datetime.now(UTC)
    result = cli("--config", project.config, "doctor")
    assert result.code == 1
    imap = [line for line in lines(result) if " imap " in line]
    assert len(imap) == 1
    assert imap[0].startswith(
        f"FAIL imap coordinators@localhost:{dovecot.port}: login as 'coordinators' refused: "
    )
    assert (datetime.now(UTC) - started).total_seconds() < 10


def test_database_behind_the_head_migration_fails(
    project: Project, cli: Cli, smtp_server: SmtpTestServer, request: pytest.FixtureRequest
) -> None:
    """A database one migration behind: FAIL saying to back up and upgrade; it is not upgraded."""
    head = head_revision()
    script = ScriptDirectory(str(Path(program.__file__).parent / "migrations"))
    previous = script.get_revision(head).down_revision
    assert isinstance(previous, str)
    project.close()
    if project.backend == "sqlite":
        project.db.unlink()
    else:  # a database with no schema yet, in place of the one at head
        project.url = request.getfixturevalue("postgres_database")(empty=True)
    engine = make_engine(project.url)
    try:
        upgrade(engine, previous)
    finally:
        engine.dispose()
    configure(project, smtp_server)  # names project.url
    result = cli("--config", project.config, "doctor")
    assert result.code == 1
    assert lines(result)[1] == (
        f"FAIL database {project.url}: at migration {previous}, this version needs"
        f" {head}: back it up, then run `rapport db upgrade`"
    )
    assert f"'{previous}'" in project.dump()


@pytest.mark.databases("sqlite")  # the database is a file here: absent, or made empty
def test_empty_or_missing_database_fails_and_is_not_created(
    project: Project, cli: Cli, smtp_server: SmtpTestServer
) -> None:
    """No file: FAIL and no file made; an empty file: FAIL saying to run db upgrade."""
    project.db.unlink()
    configure(project, smtp_server)
    result = cli("--config", project.config, "doctor")
    assert result.code == 1
    assert lines(result)[1] == (
        f"FAIL database {project.url}: no database file: run `rapport db upgrade` to create it"
    )
    assert not project.db.exists()
    project.db.touch()
    result = cli("--config", project.config, "doctor")
    assert lines(result)[1].endswith(": the database is empty: run `rapport db upgrade`")
    assert result.code == 1


@pytest.mark.databases("postgresql")  # the test above, for a server's database
def test_an_empty_postgresql_database_fails(
    project: Project, cli: Cli, smtp_server: SmtpTestServer, request: pytest.FixtureRequest
) -> None:
    """A reachable database with no tables: FAIL saying to run db upgrade."""
    project.url = request.getfixturevalue("postgres_database")(empty=True)
    configure(project, smtp_server)
    result = cli("--config", project.config, "doctor")
    assert result.code == 1
    assert lines(result)[1] == (
        f"FAIL database {project.url}: the database is empty: run `rapport db upgrade`"
    )


def test_missing_or_short_secret_fails(
    project: Project, cli: Cli, smtp_server: SmtpTestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No reply-key secret, or one under 16 bytes: FAIL saying which, exit 1; the rest still run."""
    monkeypatch.delenv("RAPPORT_SECRET")
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    configure(project, smtp_server)
    result = cli("--config", project.config, "doctor")
    assert result.code == 1
    assert lines(result)[2].startswith(
        "FAIL secret: no reply-key secret: set RAPPORT_SECRET (or the systemd credential"
        " rapport-secret)"
    )
    assert lines(result)[3].startswith("ok   smtp ")
    monkeypatch.setenv("RAPPORT_SECRET", "short")
    result = cli("--config", project.config, "doctor")
    assert result.code == 1
    assert lines(result)[2] == (
        "FAIL secret: RAPPORT_SECRET is too short: use at least 16 random characters"
    )


def test_secret_from_a_systemd_credential(
    project: Project,
    cli: Cli,
    smtp_server: SmtpTestServer,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """$CREDENTIALS_DIRECTORY/rapport-secret is found and named as the source."""
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "rapport-secret").write_text("f" * 64 + "\n", encoding="utf-8")
    monkeypatch.delenv("RAPPORT_SECRET")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    configure(project, smtp_server)
    result = cli("--config", project.config, "doctor")
    assert lines(result)[2] == "ok   secret from credential rapport-secret: 64 bytes"
    assert result.code == 0, result.out


@pytest.mark.databases("sqlite")  # the config does not load: no database is opened
def test_invalid_config_is_one_fail_line(project: Project, cli: Cli) -> None:
    """A config that does not load: one FAIL line with file, line and key; no traceback."""
    text = project.config.read_text(encoding="utf-8")
    project.config.write_text(text.replace("port = 2525", "port = 'x'"), encoding="utf-8")
    line = text.splitlines().index("port = 2525") + 1
    result = cli("--config", project.config, "doctor")
    assert result.code == 1
    assert lines(result) == [
        f"FAIL config: {project.config}:{line}: smtp.port: expected a whole number; got 'x'"
    ]
    assert result.err == ""
    result = cli("--config", project.dir / "absent.toml", "doctor")
    assert lines(result) == [
        f"FAIL config: {project.dir / 'absent.toml'}: no such config file (run `rapport init`"
        " to write one)"
    ]
    assert result.code == 1


@pytest.mark.databases("sqlite")  # checks templates only: no database is opened
def test_a_broken_or_incomplete_template_is_named(project: Project, tmp_path: Path) -> None:
    """A template that fails to render, or a missing sibling, is a FAIL naming the file."""
    templates = tmp_path / "templates"
    shutil.copytree(TEMPLATE_DIR, templates)
    report = templates / "fr" / "report.txt.j2"
    report.write_text(
        report.read_text(encoding="utf-8") + "{{ data.coordinator.missing.name }}\n",
        encoding="utf-8",
    )
    (templates / "es" / "nudge_pair.html.j2").unlink()
    (templates / "es" / "concern.subject.j2").write_text("{% if %}", encoding="utf-8")
    settings = load_config(project.config)
    got = [str(line) for line in check_templates(settings, now=NOW, template_dir=templates)]
    assert got[0] == f"ok   templates en: {TEMPLATES_OK}"
    assert got[1] == "FAIL templates es/nudge_pair.html.j2: missing, while its siblings exist"
    assert got[2].startswith("FAIL templates es/concern.subject.j2: TemplateSyntaxError: ")
    assert got[3] == (
        "FAIL templates fr/report.txt.j2: UndefinedError: 'dict object' has no attribute 'missing'"
    )
    assert len(got) == 4


def test_a_maildir_that_is_not_one_fails(
    project: Project, cli: Cli, smtp_server: SmtpTestServer
) -> None:
    """[maildir] path naming a plain folder: FAIL saying what a Maildir needs; nothing is made."""
    (project.dir / "mail").mkdir()
    configure(project, smtp_server, '[maildir]\npath = "mail"\n')
    result = cli("--config", project.config, "doctor")
    assert result.code == 1
    assert lines(result)[4] == (
        f"FAIL maildir mail: {project.dir / 'mail'} is not a Maildir (it needs new/, cur/ and tmp/)"
    )
    assert list((project.dir / "mail").iterdir()) == []
