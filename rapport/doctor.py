"""`rapport doctor`: check that the service has everything it needs, sending and changing nothing.

A mailer fails late and far from its cause: a wrong SMTP password shows up at the first topic day,
a template typo in one language when the first reply in that language needs a nudge.  The doctor
tries each dependency the way the service will use it (the same endpoint builders, the same
composer) and prints one line per check: ``ok``, ``FAIL`` (the service would fail here), ``skip``
(not configured) or ``info`` (worth knowing, not a fault).  It exits 1 if any check failed.

What it never does: send a message (SMTP stops after the login, before MAIL FROM), mark mail read
(IMAP folders are opened read-only and nothing is fetched), move or write anything, or create a
database.  Network timeouts are the config's own.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

import jinja2
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from mailer.compose import TOPIC_TEMPLATES, ComposeError, Composer, Person, to_bytes
from mailer.inbox import ImapSource
from mailer.notice import TEMPLATES, Notice, compose_notice
from mailer.render import address_for, topic_email
from mailer.smtp import SmtpConnection, SmtpUnavailable
from mailer.source import Cursor, FolderUnavailable, InboxError, MessageSource
from program.config import database_url, reply_secret
from program.errors import ConfigError, RapportError, SecretMissing
from program.settings import Settings
from program.store import current_revision, head_revision, make_engine
from rapport import samples
from rapport.jobs import smtp_endpoint
from rapport.poll import open_source

if TYPE_CHECKING:
    from rapport.cli import Context

OK, FAIL, SKIP, INFO = "ok", "FAIL", "skip", "info"
PARTS = ("subject", "txt", "html")
# The highest UID IMAP allows is 2**32 - 1: a cursor just below it makes the poll's own read
# (EXAMINE, then UID SEARCH from the cursor) open the folder and fetch nothing.
_TOP_IMAP_UID = 2**32 - 2
_SECURITY = {
    "starttls": "STARTTLS, certificate verified",
    "tls": "TLS, certificate verified",
    "none": "plaintext",
}


@dataclass(frozen=True)
class Line:
    """One check's outcome: ``ok   smtp host:587: STARTTLS, ...``."""

    status: str
    subject: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.status:<4} {self.subject}" + (f": {self.detail}" if self.detail else "")


def cmd_doctor(ctx: Context) -> int:
    """Print one line per check; 1 if any failed, else 0."""
    try:
        settings = ctx.settings
    except ConfigError as exc:
        # Nothing else can be checked without a valid config.
        print(Line(FAIL, "config", str(exc)))
        return 1
    failed = False
    for line in itertools.chain([Line(OK, f"config {ctx.path}")], diagnose(settings, now=ctx.now)):
        print(line, flush=True)  # a slow server should not hide the lines before it
        failed = failed or line.status == FAIL
    return 1 if failed else 0


def diagnose(
    settings: Settings, *, now: datetime, template_dir: Path | None = None
) -> Iterator[Line]:
    """Every check after the config's, in order; ``template_dir`` replaces the packaged one."""
    yield check_database(settings)
    yield check_secret()
    yield check_smtp(settings)
    yield from check_inbox(settings)
    yield from check_templates(settings, now=now, template_dir=template_dir)
    yield from settings_info(settings)


def check_database(settings: Settings) -> Line:
    """Reachable, and at the newest migration this version knows; an absent file is not made."""
    url = database_url(settings)
    parsed = make_url(url)
    subject = f"database {parsed.render_as_string(hide_password=True)}"
    upgrade = "run `rapport db upgrade` to create it"
    # Opening a missing SQLite file would create it: say so instead.
    file = parsed.database if parsed.get_backend_name() == "sqlite" else None
    if file and file != ":memory:" and not Path(file).is_file():
        return Line(FAIL, subject, f"no database file: {upgrade}")
    try:
        engine = make_engine(url)
        try:
            current = current_revision(engine)
        finally:
            engine.dispose()
    except ImportError as exc:  # the PostgreSQL driver is an optional extra
        return Line(FAIL, subject, f"{exc}: install rapport[postgresql]")
    except (RapportError, SQLAlchemyError) as exc:
        return Line(FAIL, subject, str(getattr(exc, "orig", None) or exc))
    head = head_revision()
    if current is None:
        return Line(FAIL, subject, "the database is empty: run `rapport db upgrade`")
    if current != head:
        return Line(
            FAIL,
            subject,
            f"at migration {current}, this version needs {head}: back it up, then run"
            " `rapport db upgrade`",
        )
    return Line(OK, subject, f"at migration {head}, the latest")


def check_secret() -> Line:
    """The reply-key secret is set and at least 16 bytes (program/config.py decides)."""
    try:
        secret = reply_secret()
    except SecretMissing as exc:
        return Line(FAIL, "secret", str(exc))
    where = "$RAPPORT_SECRET" if os.environ.get("RAPPORT_SECRET") else "credential rapport-secret"
    return Line(OK, f"secret from {where}", f"{len(secret)} bytes")


def check_smtp(settings: Settings) -> Line:
    """Connect, EHLO, STARTTLS or TLS as configured, log in if a user is set; then QUIT."""
    smtp = settings.smtp
    subject = f"smtp {_netloc(smtp.host, smtp.port)}"
    try:
        endpoint = smtp_endpoint(settings)
    except ConfigError as exc:
        return Line(FAIL, subject, str(exc))
    connection = SmtpConnection(endpoint)
    try:
        connection.open()  # no MAIL FROM follows: nothing can be sent
    except SmtpUnavailable as exc:
        return Line(FAIL, subject, _without(endpoint.netloc, exc.reason))
    finally:
        connection.close()
    login = f"logged in as {smtp.username!r}" if smtp.username else "no login"
    return Line(OK, subject, f"{_SECURITY[smtp.security]}, {login}")


def check_inbox(settings: Settings) -> Iterator[Line]:
    """Log in (IMAP) or find the Maildir, and open each folder read-only; ``file_into`` exists."""
    imap = settings.imap
    if imap.host:
        subject = f"imap {imap.username}@{_netloc(imap.host, imap.port)}"
        how = f"{_SECURITY[imap.security]}, logged in"
    elif settings.maildir.path:
        subject, how = f"maildir {settings.maildir.path}", "readable"
    else:
        yield Line(SKIP, "imap", "no [imap] host or [maildir] path: replies are not read")
        return
    try:
        source = open_source(settings)
    except (ConfigError, InboxError) as exc:
        yield Line(FAIL, subject, str(exc))
        return
    if isinstance(source, ImapSource):
        source.retries = 0  # the service retries a lost connection; the doctor reports it
    try:
        problems = list(_check_folders(source, imap.folders, imap.file_into))
    except InboxError as exc:  # no connection or login: no folder can be checked
        yield Line(FAIL, subject, _without(_netloc(imap.host, imap.port), str(exc)))
        return
    finally:
        source.close()
    for what, problem in problems:
        yield Line(FAIL, f"{subject} {what}", problem)
    if not problems:
        listed = ", ".join(imap.folders) + (
            f"; file_into {imap.file_into}" if imap.file_into else ""
        )
        yield Line(OK, subject, f"{how}; folders {listed}")


def _check_folders(
    source: MessageSource, folders: tuple[str, ...], file_into: str
) -> Iterator[tuple[str, str]]:
    """("folder 'X'", problem) for each folder that cannot be read; a missing ``file_into``."""
    for folder in folders:
        try:
            validity, _ = source.folder_state(folder)
            if isinstance(source, ImapSource):
                # The poll opens folders with EXAMINE, which needs more rights than STATUS.
                reading = source.fetch_new(folder, Cursor(validity, _TOP_IMAP_UID))
                try:
                    next(reading, None)
                finally:
                    getattr(reading, "close", lambda: None)()  # a generator: end the read
        except FolderUnavailable as exc:
            yield f"folder {folder!r}", _without_prefix(str(exc))
    if file_into:
        try:
            source.folder_state(file_into)
        except FolderUnavailable as exc:
            yield (
                f"file_into {file_into!r}",
                f"{_without_prefix(str(exc))}; create it or fix the name",
            )


def check_templates(
    settings: Settings, *, now: datetime, template_dir: Path | None = None
) -> Iterator[Line]:
    """Every topic and notice template, in every language it exists in, renders a sample."""
    try:
        composer = Composer(template_dir)
    except ComposeError as exc:
        yield Line(FAIL, "templates", str(exc))
        return
    names = set(composer.env.list_templates(extensions=["j2"]))
    languages = sorted({name.split("/")[0] for name in names if "/" in name})
    if not composer.languages:
        yield Line(FAIL, "templates", f"no language has all of {', '.join(TOPIC_TEMPLATES)}")
    for lang in languages:
        rendered, failed = [], False
        for kind in ("topic", *TEMPLATES):
            files = [f"{lang}/{kind}.{part}.j2" for part in PARTS]
            missing = [f for f in files if f not in names]
            if len(missing) == len(files):
                continue  # not translated: this language's readers get the default language
            if missing:
                yield Line(FAIL, f"templates {missing[0]}", "missing, while its siblings exist")
                failed = True
                continue
            render = _render_topic if kind == "topic" else _render_notice
            try:
                render(composer, settings, kind, lang, now)
            except ComposeError as exc:
                where = _failing_file(exc, composer.template_dir) or f"{lang}/{kind}.*.j2"
                yield Line(FAIL, f"templates {where}", _reason(exc))
                failed = True
            else:
                rendered.append(kind)
        if not failed:
            yield Line(OK, f"templates {lang}", ", ".join(rendered))


def settings_info(settings: Settings) -> Iterator[Line]:
    """The sending limits and rehearsal mode, so nobody is surprised by either."""
    smtp = settings.smtp
    minute = f"{smtp.max_per_minute} a minute" if smtp.max_per_minute else "no limit a minute"
    day = f"{smtp.max_per_day} a day" if smtp.max_per_day else "no limit a day"
    yield Line(INFO, "smtp rate limits", f"{minute}, {day}")
    if smtp.redirect_all_to:
        yield Line(
            INFO,
            "smtp rehearsal",
            f"on: every message goes to {smtp.redirect_all_to} instead of its recipient",
        )
    else:
        yield Line(INFO, "smtp rehearsal", "off: messages go to their recipients")


def _render_topic(
    composer: Composer, settings: Settings, kind: str, lang: str, now: datetime
) -> None:
    recipient, *partners = (
        Person(p["name"], p["email"], p["country"], p["timezone"]) for p in samples.PEOPLE
    )
    # The last partner's mail bounces: both ways of naming a partner are rendered.
    partners[-1] = dataclasses.replace(partners[-1], reachable=False)
    mail = topic_email(
        settings,
        f"topic/doctor/1/{recipient.email}",
        "doctorsample",
        recipient,
        tuple(partners),
        1,
        samples.SampleText(lang),
        "Sample round",
        _message_id(settings),
    )
    to_bytes(composer.topic(mail, now=now))


def _render_notice(
    composer: Composer, settings: Settings, kind: str, lang: str, now: datetime
) -> None:
    program = settings.program
    participant = kind in ("nudge_pair", "nudge_silent")
    notice = Notice(
        template=kind,
        language=lang,
        default_language=program.default_language,
        program_name=program.name,
        from_address=program.from_address,
        recipient_name="Kelsey Brown",
        recipient_email="kelsey@example.org",
        idempotency_key=f"{kind}/doctor",
        message_id=_message_id(settings),
        reply_address=address_for(program.reply_address, "doctorsample"),
        unsubscribe_address=(
            address_for(program.reply_address, "unsubscribe-doctorsample") if participant else None
        ),
        data=samples.DATA[kind],
    )
    to_bytes(compose_notice(composer, notice, now=now))


def _message_id(settings: Settings) -> str:
    return f"<rapport.doctor@{settings.program.from_address.rpartition('@')[2]}>"


def _failing_file(exc: BaseException, template_dir: Path) -> str | None:
    """The template file a rendering error comes from, relative to ``template_dir``.

    Syntax errors name it; for the others, Jinja2 gives each template's frames its file name.
    """
    cause = exc.__cause__
    if isinstance(cause, jinja2.TemplateSyntaxError) and cause.name:
        return cause.name
    if isinstance(cause, jinja2.TemplateNotFound):
        return str(cause.name)
    found = None
    tb: TracebackType | None = cause.__traceback__ if cause is not None else None
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if filename.endswith(".j2"):
            found = filename
        tb = tb.tb_next
    if found is None:
        return None
    path = Path(found)
    return str(path.relative_to(template_dir)) if path.is_relative_to(template_dir) else found


def _reason(exc: ComposeError) -> str:
    """The error without its idempotency-key prefix, which names only the doctor's sample."""
    cause = exc.__cause__
    if isinstance(cause, jinja2.TemplateError):
        return f"{type(cause).__name__}: {cause}"
    return _without_prefix(str(exc))


def _netloc(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _without(netloc: str, message: str) -> str:
    """``message`` without a leading ``host:port: ``, which the line already shows."""
    return message.removeprefix(f"{netloc}: ")


def _without_prefix(message: str) -> str:
    """Drop the first ``something: `` (the server or key the line already names)."""
    head, sep, rest = message.partition(": ")
    return rest if sep and " " not in head else message
