"""Message sources for the coordinators' inbox: an IMAP server or a local Maildir.

This is the only module in Rapport that imports imapclient.  :class:`ImapSource` and
:class:`MaildirSource` share one interface (:class:`MessageSource`) that takes and returns plain
values, so the poll job does not care where mail comes from.

Reading never changes a message, so coordinators' unread mail stays unread: IMAP folders are
opened read-only (EXAMINE) and fetched with ``BODY.PEEK`` (never ``BODY[]`` or ``RFC822``, which
set ``\\Seen``); Maildir files are only opened, never renamed (a message in ``new/`` stays there).
Only :meth:`~MessageSource.move` changes anything, and it never adds ``\\Seen`` either.

Cursors.  :meth:`~MessageSource.fetch_new` yields the messages of a folder after a
:class:`Cursor`, in ascending UID order; store ``fetched.cursor`` once a message is handled and
pass it back next time.  When the folder's UIDVALIDITY is not the cursor's, the folder is read
again from the start: the caller deduplicates by Message-ID.  A message that cannot be read is
still yielded, with what could be read (``complete`` False and ``problem`` set), so the caller
records it and moves on: one bad message never stops the pass.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import logging
import os
import re
import socket
import ssl
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Protocol, Self, TypeVar

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientAbortError, IMAPClientError, LoginError

from program.errors import RapportError

log = logging.getLogger(__name__)

SECURITY_MODES = ("starttls", "tls", "none")
# Whole messages per FETCH are capped by bytes too, so a batch of large-ish mail stays in memory
# bounds (500 messages just under a 256 KB body limit would otherwise be 128 MB at once).
FETCH_BYTES = 8_000_000
_DROPPED = (OSError, IMAPClientAbortError)  # the connection is gone: reconnect and resume
T = TypeVar("T")


class InboxError(RapportError):
    """Base of the inbox adapters' errors."""


class InboxUnavailable(InboxError):
    """No usable connection or mailbox (connect, TLS, login, or every reconnect failed).

    The message names ``host:port`` (or the Maildir path); nothing more can be read this pass.
    """


class FolderUnavailable(InboxError):
    """One folder cannot be opened (missing, or refused); the other folders may still work."""


class MoveFailed(InboxError):
    """Messages could not be moved; they stay in their folder (the message says why)."""


@dataclass(frozen=True)
class ImapEndpoint:
    """Where and how to reach the IMAP server.  ``timeout`` is in seconds, per socket operation.

    ``security``: ``"tls"`` is implicit TLS (usually port 993), ``"starttls"`` upgrades a plain
    connection and refuses to log in if the server does not offer it, ``"none"`` is plaintext
    (the config layer allows it only for loopback hosts).  Certificates and host names are
    always checked; ``ca_file`` adds a CA bundle to the system store.  ``folders`` are the
    folders the poll job reads.  The password never appears in reprs, logs or errors.
    """

    host: str
    port: int
    security: str
    username: str
    password: str = field(repr=False)
    folders: tuple[str, ...] = ("INBOX",)
    timeout: float = 30.0
    ca_file: str | None = None

    def __post_init__(self) -> None:
        if self.security not in SECURITY_MODES:
            raise ValueError(
                f"IMAP security must be one of {SECURITY_MODES}, not {self.security!r}"
            )
        if not 0 < self.port < 65536:
            raise ValueError(f"IMAP port {self.port} is out of range")
        if self.timeout <= 0:
            raise ValueError(f"IMAP timeout must be positive, not {self.timeout}")
        if not self.folders or not all(isinstance(f, str) and f for f in self.folders):
            raise ValueError(
                f"IMAP folders must be a non-empty list of names, not {self.folders!r}"
            )

    @property
    def netloc(self) -> str:
        """``host:port`` (IPv6 hosts in brackets), for messages."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True)
class Cursor:
    """How far a folder has been read: every message with a UID up to ``last_uid`` was yielded.

    Only meaningful with the same ``uidvalidity``; ``last_uid`` 0 means nothing yet.
    """

    uidvalidity: int
    last_uid: int


@dataclass(frozen=True)
class Fetched:
    """One message as read from a folder.

    ``size`` is in bytes (RFC822.SIZE; for Maildir the file size).  ``internaldate`` is when the
    server received it, aware UTC (for Maildir the file's modification time), or None when
    unknown.  ``raw`` is the whole message when ``size`` is at most the source's body limit and
    ``complete`` is True; otherwise only the header block (ending with its blank line).  When
    something went wrong ``problem`` says what, and ``raw`` holds whatever could be read (the
    header block, or nothing).  ``flags`` are IMAP flag names such as ``\\Seen``.
    """

    folder: str
    uid: int
    uidvalidity: int
    size: int
    internaldate: datetime | None
    raw: bytes
    complete: bool
    flags: tuple[str, ...]
    problem: str | None = None

    @property
    def cursor(self) -> Cursor:
        """The cursor to store once this message has been handled."""
        return Cursor(self.uidvalidity, self.uid)


class MessageSource(Protocol):
    """What the poll job needs from a mailbox (see the module doc for the guarantees)."""

    @property
    def folders(self) -> tuple[str, ...]: ...

    def fetch_new(self, folder: str, cursor: Cursor | None) -> Iterator[Fetched]: ...

    def folder_state(self, folder: str) -> tuple[int, int]: ...

    def move(self, folder: str, uids: Sequence[int], target: str) -> None: ...

    def close(self) -> None: ...


class _Closing:
    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        raise NotImplementedError


# -- IMAP ---------------------------------------------------------------------------------------

Connect = Callable[[ImapEndpoint, "ssl.SSLContext | None"], IMAPClient]


def default_connect(endpoint: ImapEndpoint, context: ssl.SSLContext | None) -> IMAPClient:
    """Open the connection (TLS first for ``"tls"``) and read the greeting; nothing more.

    Tests pass their own function to :class:`ImapSource` that wraps this one to inject faults.
    """
    return IMAPClient(
        endpoint.host,
        endpoint.port,
        ssl=endpoint.security == "tls",
        ssl_context=context,
        timeout=endpoint.timeout,
    )


class ImapSource(_Closing):
    """Reads folders of one IMAP account over one connection, opened on first use.

    A lost connection is re-opened after ``backoff``, ``2 * backoff``, ``4 * backoff``...
    seconds (through ``sleep``) and the work goes on where it stopped; after ``retries``
    failures in a row :class:`InboxUnavailable` is raised.  TLS, STARTTLS and login failures
    are not retried.  ``batch`` UIDs share one FETCH of sizes and flags; then whole messages of
    at most ``body_limit`` bytes are fetched (``FETCH_BYTES`` per command at most), and only
    the header block of larger ones.
    """

    def __init__(
        self,
        endpoint: ImapEndpoint,
        *,
        body_limit: int = 256_000,
        batch: int = 500,
        connect: Connect | None = None,
        sleep: Callable[[float], None] = time.sleep,
        retries: int = 5,
        backoff: float = 1.0,
    ) -> None:
        if body_limit < 0 or batch < 1 or retries < 0 or backoff < 0:
            raise ValueError("body_limit, retries and backoff must be >= 0 and batch >= 1")
        self.endpoint = endpoint
        self.body_limit = body_limit
        self.batch = batch
        self.retries = retries
        self.backoff = backoff
        self.reconnects = 0
        self._connect = connect or default_connect
        self._sleep = sleep
        self._client: IMAPClient | None = None
        self._context: ssl.SSLContext | None = None
        self._selected: str | None = None  # the folder the connection has open

    def __repr__(self) -> str:
        state = "open" if self._client is not None else "closed"
        return f"<ImapSource {self.endpoint.username}@{self.endpoint.netloc} {state}>"

    @property
    def folders(self) -> tuple[str, ...]:
        return self.endpoint.folders

    def fetch_new(self, folder: str, cursor: Cursor | None) -> Iterator[Fetched]:
        """Yield the messages of ``folder`` with UIDs above ``cursor.last_uid``, ascending.

        Raises :class:`InboxUnavailable` or :class:`FolderUnavailable`.
        """
        validity = cursor.uidvalidity if cursor is not None else None
        last = cursor.last_uid if cursor is not None else 0
        failures = 0
        while True:
            try:
                client = self._session()
                current, _ = self._examine(client, folder)
                if current != validity:
                    if validity is not None:
                        log.info(
                            "IMAP %s: UIDVALIDITY of %r changed (%s -> %s); reading it again",
                            self.endpoint.netloc,
                            folder,
                            validity,
                            current,
                        )
                    validity, last = current, 0
                found = client.search(["UID", f"{last + 1}:*"])
                uids = sorted(uid for uid in found if uid > last)  # n:* also matches the top
                for start in range(0, len(uids), self.batch):
                    # While suspended at a yield, the caller may have used this connection for
                    # another folder (move, fetch_new): select ours again before fetching.
                    if self._selected != folder and self._examine(client, folder)[0] != current:
                        break  # UIDVALIDITY changed meanwhile: start over
                    items = self._fetch_batch(
                        client, folder, current, uids[start : start + self.batch]
                    )
                    failures = 0
                    for item in items:
                        yield item
                        last = item.uid
                else:
                    return
            except _DROPPED as exc:
                failures += 1
                self._recover(failures, exc)

    def folder_state(self, folder: str) -> tuple[int, int]:
        """``(uidvalidity, uidnext)`` of ``folder`` (STATUS; the folder is not opened)."""

        def status(client: IMAPClient) -> tuple[int, int]:
            try:
                found = client.folder_status(folder, ["UIDVALIDITY", "UIDNEXT"])
            except IMAPClientAbortError:
                raise
            except IMAPClientError as exc:
                raise FolderUnavailable(
                    f"{self.endpoint.netloc}: no status for folder {folder!r}: {_text(exc)}"
                ) from exc
            return int(found[b"UIDVALIDITY"]), int(found[b"UIDNEXT"])

        return self._retrying(status)

    def move(self, folder: str, uids: Sequence[int], target: str) -> None:
        """Move messages to ``target`` (created if missing), keeping their flags (unread stays).

        Uses MOVE when the server has it, else COPY, ``\\Deleted`` and UID EXPUNGE (UIDPLUS);
        with neither it raises :class:`MoveFailed` rather than expunge other messages.  UIDs no
        longer in the folder are ignored.  After a lost connection the move is tried again, so
        with the COPY fallback a second copy can land in ``target``; nothing is lost.
        """
        wanted = sorted({int(uid) for uid in uids})
        if not wanted:
            return
        if folder == target:
            raise ValueError(f"cannot move messages from {folder!r} into itself")
        where = f"{self.endpoint.netloc}: moving {len(wanted)} message(s) from {folder!r}"

        def run(client: IMAPClient) -> None:
            try:
                if not client.folder_exists(target):
                    try:
                        client.create_folder(target)
                    except IMAPClientAbortError:
                        raise
                    except IMAPClientError:
                        if not client.folder_exists(target):  # else: created meanwhile
                            raise
                self._selected = None
                client.select_folder(folder)
                self._selected = folder
                if client.has_capability("MOVE"):
                    client.move(wanted, target)
                elif client.has_capability("UIDPLUS"):
                    client.copy(wanted, target)
                    client.add_flags(wanted, [b"\\Deleted"], silent=True)
                    client.uid_expunge(wanted)
                else:
                    raise MoveFailed(f"{where}: the server has neither MOVE nor UIDPLUS")
            except IMAPClientAbortError:
                raise
            except IMAPClientError as exc:
                raise MoveFailed(f"{where} to {target!r} failed: {_text(exc)}") from exc

        self._retrying(run)

    def close(self) -> None:
        """Log out and close, ignoring errors; the source may be used again later."""
        client, self._client, self._selected = self._client, None, None
        if client is None:
            return
        try:
            client.logout()
        except (OSError, IMAPClientError):
            _shutdown_quietly(client)

    # -- connection -----------------------------------------------------------------------------

    def _session(self) -> IMAPClient:
        if self._client is None:
            self._client = self._open()
        return self._client

    def _open(self) -> IMAPClient:
        ep = self.endpoint
        context = self._tls_context()
        try:
            client = self._connect(ep, context)
        except ssl.SSLError as exc:
            raise InboxUnavailable(_tls_failure(ep.netloc, exc)) from exc
        except IMAPClientAbortError:
            raise
        except IMAPClientError as exc:
            raise InboxUnavailable(f"{ep.netloc}: bad greeting: {_text(exc)}") from exc
        step = "STARTTLS"
        try:
            client.normalise_times = False  # keep INTERNALDATE's zone; we convert to UTC
            if ep.security == "starttls":
                if not client.has_capability("STARTTLS"):
                    raise InboxUnavailable(
                        f"{ep.netloc} does not offer STARTTLS; refusing to log in without TLS"
                    )
                client.starttls(context)
            step = "LOGIN"
            client.login(ep.username, ep.password)
        except BaseException as exc:
            _shutdown_quietly(client)
            if isinstance(exc, ssl.SSLError):
                raise InboxUnavailable(_tls_failure(ep.netloc, exc)) from exc
            if isinstance(exc, LoginError):
                raise InboxUnavailable(
                    f"{ep.netloc}: login as {ep.username!r} refused: {_text(exc)}"
                ) from None  # LOGIN's frames hold the password: keep them out of tracebacks
            if isinstance(exc, IMAPClientError) and not isinstance(exc, IMAPClientAbortError):
                raise InboxUnavailable(f"{ep.netloc}: {step} failed: {_text(exc)}") from exc
            raise
        log.debug("IMAP %s: logged in as %r (%s)", ep.netloc, ep.username, ep.security)
        return client

    def _tls_context(self) -> ssl.SSLContext | None:
        if self.endpoint.security == "none":
            return None
        if self._context is None:
            context = ssl.create_default_context()
            if self.endpoint.ca_file:
                try:
                    context.load_verify_locations(cafile=self.endpoint.ca_file)
                except (OSError, ssl.SSLError) as exc:
                    raise InboxUnavailable(
                        f"cannot load the CA file {self.endpoint.ca_file}: {exc}"
                    ) from exc
            self._context = context
        return self._context

    def _recover(self, failures: int, exc: BaseException) -> None:
        """After a lost connection: wait and let the caller reconnect, or give up."""
        client, self._client, self._selected = self._client, None, None
        if client is not None:
            _shutdown_quietly(client)
        reason = str(exc) or type(exc).__name__
        if failures > self.retries:
            raise InboxUnavailable(
                f"{self.endpoint.netloc}: connection failed {failures} times in a row: {reason}"
            ) from exc
        delay = self.backoff * 2 ** (failures - 1)
        log.warning(
            "IMAP %s: %s; reconnecting in %g s (%d of %d)",
            self.endpoint.netloc,
            reason,
            delay,
            failures,
            self.retries,
        )
        self._sleep(delay)
        self.reconnects += 1

    def _retrying(self, operation: Callable[[IMAPClient], T]) -> T:
        failures = 0
        while True:
            try:
                return operation(self._session())
            except _DROPPED as exc:
                failures += 1
                self._recover(failures, exc)

    # -- fetching -------------------------------------------------------------------------------

    def _examine(self, client: IMAPClient, folder: str) -> tuple[int, int]:
        self._selected = None
        try:
            info = client.select_folder(folder, readonly=True)
        except IMAPClientAbortError:
            raise
        except IMAPClientError as exc:
            raise FolderUnavailable(
                f"{self.endpoint.netloc}: cannot open folder {folder!r}: {_text(exc)}"
            ) from exc
        self._selected = folder
        return int(info[b"UIDVALIDITY"]), int(info.get(b"UIDNEXT", 0))

    def _fetch_batch(
        self, client: IMAPClient, folder: str, validity: int, uids: list[int]
    ) -> list[Fetched]:
        meta, problems = self._fetch(client, uids, ["RFC822.SIZE", "INTERNALDATE", "FLAGS"])
        sizes = {uid: int(meta[uid].get(b"RFC822.SIZE") or 0) for uid in meta}
        small = [uid for uid in uids if uid in meta and sizes[uid] <= self.body_limit]
        bodies, body_problems = self._fetch(client, small, ["BODY.PEEK[]"], sizes)
        problems.update(body_problems)
        wanted = [uid for uid in uids if uid in meta and uid not in bodies]
        headers, header_problems = self._fetch(client, wanted, ["BODY.PEEK[HEADER]"], sizes)
        problems.update(header_problems)
        items = []
        for uid in uids:
            data = meta.get(uid, {})
            if not data and uid not in problems:
                continue  # expunged since the SEARCH
            raw = _bytes(bodies.get(uid, {}).get(b"BODY[]"))
            complete = raw is not None
            if raw is None:
                raw = _bytes(headers.get(uid, {}).get(b"BODY[HEADER]"))
            items.append(
                Fetched(
                    folder=folder,
                    uid=uid,
                    uidvalidity=validity,
                    size=sizes.get(uid, 0),
                    internaldate=_utc(data.get(b"INTERNALDATE")),
                    raw=raw or b"",
                    complete=complete,
                    flags=tuple(_str(flag) for flag in data.get(b"FLAGS", ())),
                    problem=problems.get(uid),
                )
            )
        return items

    def _fetch(
        self,
        client: IMAPClient,
        uids: list[int],
        items: list[str],
        sizes: dict[int, int] | None = None,
    ) -> tuple[dict[int, dict[bytes, Any]], dict[int, str]]:
        """FETCH ``items`` in groups of at most ``FETCH_BYTES``; returns (data, problems).

        A group the server refuses is fetched again message by message, so one broken message
        only costs itself.
        """
        found: dict[int, dict[bytes, Any]] = {}
        problems: dict[int, str] = {}
        for group in _groups(uids, sizes or {}):
            try:
                found.update(client.fetch(group, items))
            except IMAPClientAbortError:
                raise
            except IMAPClientError as exc:
                if len(group) > 1:
                    for uid in group:
                        more, trouble = self._fetch(client, [uid], items)
                        found.update(more)
                        problems.update(trouble)
                else:
                    problems[group[0]] = f"FETCH {' '.join(items)} failed: {_text(exc)}"
                    log.warning("IMAP %s: UID %s: %s", self.endpoint.netloc, group[0], exc)
        return found, problems


def _groups(uids: list[int], sizes: dict[int, int]) -> Iterator[list[int]]:
    group: list[int] = []
    total = 0
    for uid in uids:
        size = sizes.get(uid, 0)
        if group and total + size > FETCH_BYTES:
            yield group
            group, total = [], 0
        group.append(uid)
        total += size
    if group:
        yield group


def _tls_failure(netloc: str, exc: ssl.SSLError) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"{netloc}: TLS certificate verification failed: {exc.verify_message}"
    return f"{netloc}: TLS handshake failed: {exc.reason or exc}"


def _text(exc: BaseException) -> str:
    """The server's words from an IMAPClient error, without Python's bytes quoting."""
    text = str(exc)
    quoted = re.fullmatch(r"b(['\"])(.*)\1", text, re.DOTALL)
    return quoted.group(2) if quoted else text


def _shutdown_quietly(client: IMAPClient) -> None:
    with contextlib.suppress(Exception):
        client.shutdown()


def _bytes(value: object) -> bytes | None:
    return bytes(value) if isinstance(value, bytes | bytearray) else None


def _str(flag: object) -> str:
    return flag.decode("ascii", "replace") if isinstance(flag, bytes) else str(flag)


def _utc(value: object) -> datetime | None:
    # A naive INTERNALDATE (a client with normalise_times on) is local time.
    return value.astimezone(UTC) if isinstance(value, datetime) else None


# -- Maildir ------------------------------------------------------------------------------------

_FLAG_NAMES = {
    "D": "\\Draft",
    "F": "\\Flagged",
    "P": "$Forwarded",
    "R": "\\Answered",
    "S": "\\Seen",
    "T": "\\Deleted",
}
_MICROSECONDS = re.compile(r"M(\d{1,6})(?!\d)")
_HEADER_END = re.compile(rb"(?:\A|\n)\r?\n")
_HEADER_CAP = 1_000_000  # a header block longer than this is cut there
_names = itertools.count()


def maildir_uid(unique: str, fallback_seconds: int = 0) -> int:
    """The UID of a Maildir message from the unique part of its file name (before ``:``).

    Maildir names start with the delivery time in seconds; most deliverers add microseconds
    as ``M<usec>`` (Dovecot, Postfix, getmail, Python's mailbox).  The UID is that time in its
    top 32 bits and, in the low 31 bits, the microseconds (20 bits) followed by 11 bits of a
    hash of the name, or 31 bits of the hash when the name has no microseconds.  So UIDs grow
    with delivery time, never change when the file moves from new/ to cur/ or its flags change,
    and stay below 2**63.  ``fallback_seconds`` (the file's mtime) stands in for a name that
    does not start with a time.
    """
    named = _name_seconds(unique)
    seconds = min(max(named if named is not None else fallback_seconds, 0), 2**32 - 1)
    rest = unique.partition(".")[2]
    digest = int.from_bytes(
        hashlib.blake2b(unique.encode("utf-8", "surrogateescape"), digest_size=4).digest()
    )
    usec = _MICROSECONDS.search(rest.partition(".")[0]) if rest else None
    low = (int(usec.group(1)) << 11) | (digest & 0x7FF) if usec else digest & 0x7FFFFFFF
    return (seconds << 31) | low


def _name_seconds(unique: str) -> int | None:
    head = unique.partition(".")[0]
    return int(head) if head.isdigit() and len(head) <= 10 else None


@dataclass(frozen=True)
class _File:
    uid: int
    subdir: str  # "new" or "cur"
    name: str

    @property
    def unique(self) -> str:
        return self.name.split(":", 1)[0]


class MaildirSource(_Closing):
    """Reads a local Maildir the way :class:`ImapSource` reads an account, without state files.

    Folders: ``"INBOX"`` is the Maildir itself, any other name is its Maildir++ subfolder
    (``"Done"`` is ``.Done``, ``"A/B"`` is ``.A.B``).  UIDs come from file names (see
    :func:`maildir_uid`): they grow with delivery time and survive renames by mail clients.
    UIDVALIDITY is the inode number of the folder's ``new/``, so a folder that is removed and
    made again, or another Maildir put in its place, is read again from the start.

    Deliverers name a file when they start writing it and rename it into ``new/`` when done,
    so a name can show up a little after later ones.  A message is therefore yielded only once
    its name's time is ``settle`` seconds (plus the rest of that second) in the past by
    ``clock``: no message is skipped as long as deliveries take less than ``settle``.
    ``settle=0`` yields everything present, which is safe only when nothing delivers into the
    folder between two reads and the names carry microseconds (rapport demo).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        folders: tuple[str, ...] = ("INBOX",),
        body_limit: int = 256_000,
        settle: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if body_limit < 0 or settle < 0:
            raise ValueError("body_limit and settle must be >= 0")
        self.path = Path(path)
        self.body_limit = body_limit
        self.settle = settle
        self._folders = tuple(folders)
        self._clock = clock
        if not all((self.path / sub).is_dir() for sub in ("new", "cur", "tmp")):
            raise InboxUnavailable(f"{self.path} is not a Maildir (it needs new/, cur/ and tmp/)")

    def __repr__(self) -> str:
        return f"<MaildirSource {self.path}>"

    @property
    def folders(self) -> tuple[str, ...]:
        return self._folders

    def fetch_new(self, folder: str, cursor: Cursor | None) -> Iterator[Fetched]:
        """Yield the settled messages of ``folder`` with UIDs above the cursor's, ascending.

        A file that vanishes before it is read (moved or deleted) is skipped; one that cannot
        be read is yielded with ``problem`` set.  Raises :class:`FolderUnavailable`.
        """
        directory = self._directory(folder)
        validity = self._validity(directory)
        last = cursor.last_uid if cursor is not None and cursor.uidvalidity == validity else 0
        for entry in self._scan(directory, settled=True):
            if entry.uid > last:
                item = self._read(directory, folder, validity, entry)
                if item is not None:
                    yield item

    def folder_state(self, folder: str) -> tuple[int, int]:
        """``(uidvalidity, uidnext)``: uidnext is one above the highest settled UID, or 1."""
        directory = self._directory(folder)
        validity = self._validity(directory)
        files = self._scan(directory, settled=True)
        return validity, (files[-1].uid + 1 if files else 1)

    def move(self, folder: str, uids: Sequence[int], target: str) -> None:
        """Rename messages into ``target`` (created if missing), keeping new/ or cur/ and flags.

        Each file gets a fresh unique name there, so it counts as a new arrival in ``target``
        (as IMAP gives it a new UID).  Each rename is atomic; UIDs not found are ignored.
        """
        wanted = {int(uid) for uid in uids}
        if not wanted:
            return
        if self._directory(folder, check=False) == self._directory(target, check=False):
            raise ValueError(f"cannot move messages from {folder!r} into itself")
        source = self._directory(folder)
        destination = self._directory(target, create=True)
        for entry in self._scan(source, settled=False):
            if entry.uid not in wanted:
                continue
            info = entry.name[len(entry.unique) :]
            new_path = destination / entry.subdir / (_unique_name(self._clock()) + info)
            try:
                if new_path.exists():
                    raise FileExistsError(new_path)
                os.rename(source / entry.subdir / entry.name, new_path)
            except FileNotFoundError:
                log.info("Maildir %s: %s vanished before it was moved", source, entry.name)
            except OSError as exc:
                raise MoveFailed(
                    f"{self.path}: moving {entry.name} from {folder!r} to {target!r} failed:"
                    f" {exc.strerror or exc}"
                ) from exc

    def close(self) -> None:
        """Nothing to release; here for the shared interface."""

    def _directory(self, folder: str, *, create: bool = False, check: bool = True) -> Path:
        if folder == "INBOX":
            directory = self.path
        else:
            name = folder.replace("/", ".")
            if not all(name.split(".")) or "\0" in name:  # no empty part, so no ".."
                raise FolderUnavailable(f"{self.path}: bad folder name {folder!r}")
            directory = self.path / ("." + name)
        if create:
            for sub in ("tmp", "new", "cur"):
                (directory / sub).mkdir(parents=True, exist_ok=True)
            (directory / "maildirfolder").touch()  # marks a Maildir++ subfolder
        elif check and not (directory / "new").is_dir():
            raise FolderUnavailable(f"{self.path}: no folder {folder!r} ({directory} is missing)")
        return directory

    def _validity(self, directory: Path) -> int:
        try:
            inode = (directory / "new").stat().st_ino
        except OSError as exc:
            raise FolderUnavailable(f"{directory}: {exc.strerror or exc}") from exc
        return (inode & 0x7FFFFFFF) or 1

    def _scan(self, directory: Path, *, settled: bool) -> list[_File]:
        """The folder's messages sorted by UID; ``settled`` leaves out names too young."""
        now = self._clock()
        found: dict[str, _File] = {}
        for subdir in ("new", "cur"):  # new/ first: a file renamed meanwhile is then in cur/
            try:
                names = os.listdir(directory / subdir)
            except OSError as exc:
                raise FolderUnavailable(f"{directory / subdir}: {exc.strerror or exc}") from exc
            for name in names:
                if name.startswith("."):
                    continue
                unique = name.split(":", 1)[0]
                if unique in found:
                    continue
                seconds = _name_seconds(unique)
                if seconds is None:
                    try:
                        seconds = int((directory / subdir / name).stat().st_mtime)
                    except OSError:
                        continue
                if settled and self.settle > 0 and seconds + 1 + self.settle > now:
                    continue
                found[unique] = _File(maildir_uid(unique, seconds), subdir, name)
        files: list[_File] = []
        used: set[int] = set()
        # Equal UIDs need two names with the same microsecond and hash: shift the later one.
        for entry in sorted(found.values(), key=lambda f: (f.uid, f.name)):
            uid = entry.uid
            while uid in used:
                uid += 1
            used.add(uid)
            files.append(replace(entry, uid=uid))
        return files

    def _read(self, directory: Path, folder: str, validity: int, entry: _File) -> Fetched | None:
        try:
            opened = _open_message(directory, entry)
            if opened is None:
                log.info("Maildir %s: %s vanished before it was read", directory, entry.name)
                return None
            handle, name = opened
            with handle:
                status = os.fstat(handle.fileno())
                complete = status.st_size <= self.body_limit
                raw = handle.read() if complete else _header_block(handle)
        except OSError as exc:
            log.warning("Maildir %s: cannot read %s: %s", directory, entry.name, exc)
            return Fetched(
                folder=folder,
                uid=entry.uid,
                uidvalidity=validity,
                size=0,
                internaldate=None,
                raw=b"",
                complete=False,
                flags=_maildir_flags(entry.name),
                problem=f"cannot read {entry.subdir}/{entry.name}: {exc.strerror or exc}",
            )
        return Fetched(
            folder=folder,
            uid=entry.uid,
            uidvalidity=validity,
            size=status.st_size,
            internaldate=datetime.fromtimestamp(status.st_mtime, UTC),
            raw=raw,
            complete=complete,
            flags=_maildir_flags(name),
        )


def _open_message(directory: Path, entry: _File) -> tuple[IO[bytes], str] | None:
    """Open a message file, following it to cur/ if a mail client renamed it meanwhile."""
    try:
        return open(directory / entry.subdir / entry.name, "rb"), entry.name
    except FileNotFoundError:
        pass
    prefix = entry.unique + ":"
    for name in os.listdir(directory / "cur"):
        if name == entry.unique or name.startswith(prefix):
            try:
                return open(directory / "cur" / name, "rb"), name
            except FileNotFoundError:
                return None
    return None


def _maildir_flags(name: str) -> tuple[str, ...]:
    _, _, info = name.partition(":")
    if not info.startswith("2,"):
        return ()
    return tuple(_FLAG_NAMES[c] for c in sorted(set(info[2:])) if c in _FLAG_NAMES)


def _header_block(handle: IO[bytes]) -> bytes:
    """Read up to and including the blank line that ends the header block."""
    data = b""
    while len(data) < _HEADER_CAP:
        chunk = handle.read(65536)
        if not chunk:
            return data
        start = max(0, len(data) - 3)
        data += chunk
        end = _HEADER_END.search(data, start)
        if end is not None:
            return data[: end.end()]
    return data[:_HEADER_CAP]


def _unique_name(now: float) -> str:
    """A new Maildir unique name: ``<seconds>.M<usec>P<pid>Q<n>.<host>``."""
    seconds, fraction = divmod(now, 1)
    host = socket.gethostname().replace("/", "\\057").replace(":", "\\072")
    return f"{int(seconds)}.M{int(fraction * 1e6):06d}P{os.getpid()}Q{next(_names)}.{host}"
