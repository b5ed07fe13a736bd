"""The inbox job: read new mail, classify it, attribute it, record it (``rapport inbox poll``).

Wires mailer/inbox.py (IMAP) or mailer/maildir.py, mailer/classify.py and monitor/signals.py.
Messages are recorded a batch at a time, each batch in one transaction together with its
folder's cursor, so a poll cut off at any point resumes after the last message it recorded and
counts nothing twice.  With ``[imap] file_into`` set, mail that needs no person is moved there
once recorded, still unread.

A first poll of a full folder is a pipeline (mailer/readahead.py): the fetch runs in a thread,
classifying in a worker process, and this process attributes and records; the three overlap,
and nothing is recorded before it is classified, so the pipeline changes no guarantee.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, func, insert, select, update
from sqlalchemy.exc import SQLAlchemyError

from mailer.classify import Mailbox
from mailer.inbox import ImapEndpoint, ImapSource
from mailer.maildir import MaildirSource
from mailer.readahead import ClassifyAhead, fetch_ahead
from mailer.source import Cursor, Fetched, InboxError, MessageSource
from monitor import signals
from program.config import read_secret
from program.errors import ConfigError
from program.inbound import Inbound, needs_a_person
from program.models import INBOUND, INBOX_CURSORS
from program.settings import Settings


def source_name(settings: Settings) -> str | None:
    """How the inbox is named in cursors: ``imap:user@host:port`` or ``maildir:/path``."""
    if settings.imap.host:
        return f"imap:{settings.imap.username}@{settings.imap.host}:{settings.imap.port}"
    if settings.maildir.path:
        return f"maildir:{_maildir_path(settings)}"
    return None


def _maildir_path(settings: Settings) -> Path:
    path = Path(settings.maildir.path)
    if not path.is_absolute() and settings.source != "<defaults>":
        path = Path(settings.source).resolve().parent / path
    return path


def open_source(settings: Settings) -> MessageSource:
    """The configured inbox; ConfigError when there is none or its password is missing."""
    imap = settings.imap
    limit = settings.inbox.max_fetch_bytes
    if imap.host:
        password = read_secret(imap.password_env, "imap-password")
        if not password:
            raise ConfigError(
                f"{settings.source}: [imap] is set but ${imap.password_env} (or the systemd"
                " credential imap-password) is empty"
            )
        endpoint = ImapEndpoint(
            host=imap.host,
            port=imap.port,
            security=imap.security,
            username=imap.username,
            password=password,
            folders=imap.folders,
            timeout=imap.timeout.total_seconds(),
            ca_file=imap.ca_file or None,
        )
        return ImapSource(endpoint, body_limit=limit)
    if settings.maildir.path:
        return MaildirSource(_maildir_path(settings), folders=imap.folders, body_limit=limit)
    raise ConfigError(f"{settings.source}: no inbox: set [imap] host or [maildir] path")


def mailbox_for(settings: Settings) -> Mailbox:
    """The program's addresses and the languages whose check-in words count."""
    languages = tuple(dict.fromkeys(("en", "fr", "es", settings.program.default_language)))
    return Mailbox(settings.program.from_address, settings.program.reply_address, languages)


def _dedup_id(inbound_id: str | None, raw: bytes) -> str:
    """The Message-ID, or for a message without one a stand-in from its header block."""
    if inbound_id:
        return inbound_id
    head = raw.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    return f"<no-id.{hashlib.sha256(head).hexdigest()[:32]}@rapport.invalid>"


@dataclass
class PollResult:
    read: int = 0
    recorded: int = 0
    duplicates: int = 0
    filed: int = 0
    events: int = 0
    concerns: int = 0
    stopped: bool = False
    kinds: Counter[str] = field(default_factory=Counter)
    suppressed: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    dry_run: bool = False

    def summary(self) -> str:
        kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(self.kinds.items()))
        text = f"read {self.read}" + (f" ({kinds})" if kinds else "")
        if self.dry_run:
            return f"dry run: {text}; nothing recorded or moved"
        text += f"; recorded {self.recorded}, {self.events} activity events"
        for n, label in ((self.duplicates, "seen before"), (self.filed, "filed")):
            if n:
                text += f", {n} {label}"
        if self.suppressed:
            text += f", suppressed {len(self.suppressed)}"
        if self.concerns:
            text += f", {self.concerns} concern{'s' if self.concerns > 1 else ''} raised"
        if self.errors:
            text += f"; {len(self.errors)} problems: " + "; ".join(self.errors[:3])
        if self.stopped:
            text += "; stopped early by a signal (the next poll goes on)"
        return text


def _cursor(engine: Engine, source: str, folder: str) -> Cursor | None:
    with engine.connect() as connection:
        row = connection.execute(
            select(INBOX_CURSORS.c.uidvalidity, INBOX_CURSORS.c.last_uid).where(
                INBOX_CURSORS.c.source == source, INBOX_CURSORS.c.folder == folder
            )
        ).first()
    return Cursor(row.uidvalidity, row.last_uid) if row else None


def _save_cursor(connection: Any, source: str, folder: str, now: datetime, **values: Any) -> None:
    where = (INBOX_CURSORS.c.source == source) & (INBOX_CURSORS.c.folder == folder)
    changed = connection.execute(
        update(INBOX_CURSORS).where(where).values(updated_at=now, **values)
    )
    if changed.rowcount == 0:
        values.setdefault("uidvalidity", 0)
        values.setdefault("last_uid", 0)  # an empty folder's first poll: nothing read yet
        connection.execute(
            insert(INBOX_CURSORS).values(source=source, folder=folder, updated_at=now, **values)
        )


# Messages recorded per commit.  Each message is recorded together with its folder's cursor, so a
# poll cut off anywhere resumes right after the last commit and counts nothing twice; committing
# a batch at a time instead of each message is what lets a first poll keep up with the server,
# and the batch is recorded with a few statements, not a few per message (Recorder.record_many).
COMMIT_EVERY = 500


def poll(
    engine: Engine,
    *,
    settings: Settings,
    secret: bytes,
    now: datetime,
    dry_run: bool = False,
    source: MessageSource | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> PollResult:
    """Read every configured folder once; one bad message or folder never stops the rest.

    ``should_stop`` (the service's SIGTERM) is checked between messages: the poll records what
    it has read so far, cursor included, and ends; the next poll goes on from there."""
    name = source_name(settings)
    src = source or open_source(settings)
    name = name or repr(src)
    mailbox = mailbox_for(settings)
    result = PollResult(dry_run=dry_run)
    file_into = settings.imap.file_into
    recorder = signals.Recorder(
        secret=secret,
        store_bodies=settings.privacy.store_bodies,
        concern_phrases=settings.health.concern_phrases,
    )
    classifier = ClassifyAhead(mailbox, worker=not dry_run)
    try:
        for folder in src.folders:
            if result.stopped:
                break
            writer = _Writer(engine, recorder, name, now, result)
            try:
                fetching = src.fetch_new(folder, _cursor(engine, name, folder))
                fetched_ahead = fetch_ahead(fetching) if not dry_run else fetching
                for fetched, inbound in classifier.classify(fetched_ahead):
                    result.read += 1
                    result.kinds[inbound.kind] += 1
                    if not dry_run:
                        writer.add(fetched, inbound)
                    if should_stop is not None and should_stop():
                        result.stopped = True
                        break
                writer.flush()
                to_file = writer.to_file if file_into and folder != file_into else []
                if to_file and not dry_run:
                    src.move(folder, [uid for uid, _ in to_file], file_into)
                    with engine.begin() as connection:
                        signals.mark_filed(connection, [inbound_id for _, inbound_id in to_file])
                    result.filed += len(to_file)
                if not dry_run:
                    with engine.begin() as connection:
                        _save_cursor(
                            connection, name, folder, now, last_poll_at=now, last_error=None
                        )
            except InboxError as exc:
                writer.flush()
                result.errors.append(f"{folder}: {exc}")
                if not dry_run:
                    with engine.begin() as connection:
                        _save_cursor(
                            connection,
                            name,
                            folder,
                            now,
                            last_error=str(exc)[:1000],
                            last_error_at=now,
                        )
            finally:
                writer.close()
    finally:
        classifier.close()
        src.close()
    return result


class _Writer:
    """Records messages of one folder, COMMIT_EVERY to a transaction, cursor included.

    A message waits for its batch's commit without its bytes (only what recording needs is
    kept), so a batch of large messages costs little memory.  If a batch fails to commit, it is
    rolled back and replayed a message at a time, so one message the database refuses is
    recorded as an error and the others as usual.
    """

    def __init__(
        self,
        engine: Engine,
        recorder: signals.Recorder,
        name: str,
        now: datetime,
        result: PollResult,
    ) -> None:
        self.engine, self.recorder, self.name, self.now, self.result = (
            engine,
            recorder,
            name,
            now,
            result,
        )
        self.pending: list[tuple[Fetched, Inbound, signals.Received]] = []
        self.to_file: list[tuple[int, int]] = []
        self.connection: Connection | None = None

    def add(self, fetched: Fetched, inbound: Inbound) -> None:
        received = signals.Received(
            source=self.name,
            folder=fetched.folder,
            uidvalidity=fetched.uidvalidity,
            uid=fetched.uid,
            size=fetched.size,
            received_at=fetched.internaldate,
            message_id=_dedup_id(inbound.message_id, fetched.raw),
        )
        self.pending.append((replace(fetched, raw=b""), inbound, received))
        if len(self.pending) >= COMMIT_EVERY:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        batch, self.pending = self.pending, []
        if self.connection is None:
            self.connection = self.engine.connect()
        connection = self.connection
        try:
            with connection.begin():
                outcomes = self.recorder.record_many(
                    connection,
                    [(inbound, received, fetched.problem) for fetched, inbound, received in batch],
                    now=self.now,
                )
                self._advance(connection, batch[-1][0])
        except SQLAlchemyError:
            outcomes = []
            for fetched, inbound, received in batch:
                try:
                    with connection.begin():
                        outcomes.append(
                            self._record(connection, inbound, received, fetched.problem)
                        )
                        self._advance(connection, fetched)
                except SQLAlchemyError as exc:
                    problem = f"could not be recorded: {type(exc).__name__}"
                    self.result.errors.append(f"{fetched.folder} uid {fetched.uid}: {problem}")
                    with connection.begin():
                        outcomes.append(self._record(connection, inbound, received, problem))
                        self._advance(connection, fetched)
        for (fetched, inbound, _), recorded in zip(batch, outcomes, strict=True):
            self._count(fetched, inbound, recorded)

    def _record(
        self,
        connection: Connection,
        inbound: Inbound,
        received: signals.Received,
        error: str | None,
    ) -> signals.Recorded:
        return self.recorder.record(connection, inbound, received, now=self.now, error=error)

    def _advance(self, connection: Connection, fetched: Fetched) -> None:
        """Move the folder's cursor past ``fetched``, in the transaction that recorded it."""
        _save_cursor(
            connection,
            self.name,
            fetched.folder,
            self.now,
            uidvalidity=fetched.uidvalidity,
            last_uid=fetched.uid,
        )

    def _count(self, fetched: Fetched, inbound: Inbound, recorded: signals.Recorded) -> None:
        result = self.result
        if recorded.duplicate:
            result.duplicates += 1
            return
        result.recorded += 1
        result.events += len(recorded.events)
        result.concerns += recorded.events.count("concern")
        result.suppressed += recorded.suppressed
        if fetched.problem:
            result.errors.append(f"{fetched.folder} uid {fetched.uid}: {fetched.problem}")
        elif (
            recorded.inbound_id is not None
            and not needs_a_person(inbound)
            and "concern" not in recorded.events
        ):
            self.to_file.append((fetched.uid, recorded.inbound_id))

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()


@dataclass(frozen=True)
class FolderStatus:
    source: str
    folder: str
    uidvalidity: int
    last_uid: int
    last_poll_at: datetime | None
    last_error: str | None
    kinds: dict[str, int]


def status(engine: Engine) -> list[FolderStatus]:
    """Per folder: its cursor, the messages recorded by kind, and the last error."""
    with engine.connect() as connection:
        cursors = connection.execute(
            select(INBOX_CURSORS).order_by(INBOX_CURSORS.c.source, INBOX_CURSORS.c.folder)
        ).all()
        counts = connection.execute(
            select(INBOUND.c.source, INBOUND.c.folder, INBOUND.c.kind, func.count()).group_by(
                INBOUND.c.source, INBOUND.c.folder, INBOUND.c.kind
            )
        ).all()
    kinds: dict[tuple[str, str], dict[str, int]] = {}
    for source, folder, kind, n in counts:
        kinds.setdefault((source, folder), {})[kind] = int(n)
    return [
        FolderStatus(
            c.source,
            c.folder,
            c.uidvalidity,
            c.last_uid,
            c.last_poll_at,
            c.last_error,
            kinds.get((c.source, c.folder), {}),
        )
        for c in cursors
    ]
