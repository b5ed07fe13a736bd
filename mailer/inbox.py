"""The IMAP message source for the coordinators' inbox.

The only module in Rapport that talks IMAP (through IMAPClient); mailer/imapfetch.py reads the
FETCH replies for it.  :class:`ImapSource` implements :class:`~mailer.source.MessageSource`
(mailer/source.py describes cursors and why reading leaves unread mail unread); the Maildir
source is in mailer/maildir.py.  Folders are opened read-only (EXAMINE) and fetched with
``BODY.PEEK`` (never ``BODY[]`` or ``RFC822``, which set ``\\Seen``); only
:meth:`ImapSource.move` changes anything, and it never adds ``\\Seen`` either.
"""

from __future__ import annotations

import contextlib
import logging
import re
import ssl
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientAbortError, IMAPClientError, LoginError

from mailer.imapfetch import as_bytes, flag_text, groups, parse_fetch, utc
from mailer.source import (
    ClosingSource,
    Cursor,
    Fetched,
    FolderUnavailable,
    InboxUnavailable,
    MoveFailed,
)
from mailer.tls import client_context

log = logging.getLogger(__name__)

SECURITY_MODES = ("starttls", "tls", "none")
# Whole messages per FETCH are capped by bytes too, so a batch of large-ish mail stays in memory
# bounds (500 messages just under a 256 KB body limit would otherwise be 128 MB at once).
FETCH_BYTES = 8_000_000
_DROPPED = (OSError, IMAPClientAbortError)  # the connection is gone: reconnect and resume
T = TypeVar("T")


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


class ImapSource(ClosingSource):
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
            _quiet_imaplib(client)
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
            self._context = client_context(self.endpoint.ca_file, InboxUnavailable)
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
            raw = as_bytes(bodies.get(uid, {}).get(b"BODY[]"))
            complete = raw is not None
            if raw is None:
                raw = as_bytes(headers.get(uid, {}).get(b"BODY[HEADER]"))
            items.append(
                Fetched(
                    folder=folder,
                    uid=uid,
                    uidvalidity=validity,
                    size=sizes.get(uid, 0),
                    internaldate=utc(data.get(b"INTERNALDATE")),
                    raw=raw or b"",
                    complete=complete,
                    flags=tuple(flag_text(flag) for flag in data.get(b"FLAGS", ())),
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
        for group in groups(uids, sizes or {}, FETCH_BYTES):
            try:
                found.update(_uid_fetch(client, group, items))
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


def _uid_fetch(client: IMAPClient, uids: Sequence[int], items: Sequence[str]) -> dict[int, Any]:
    """``client.fetch(uids, items)`` by UID, the same result, read by mailer/imapfetch.py.

    The command goes through IMAPClient's imaplib connection; a refused one raises
    ``IMAPClientError`` as ``IMAPClient.fetch`` does (imaplib's own errors are IMAPClient's)."""
    if not uids:
        return {}
    imap = client._imap
    typ, data = imap.uid("FETCH", ",".join(str(uid) for uid in uids), f"({' '.join(items)})")
    if typ != "OK":
        text = data[0] if data else b""
        detail = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
        raise IMAPClientError(f"fetch failed: {detail}")
    response = parse_fetch(data, client.normalise_times)
    return {uid: response[uid] for uid in uids if uid in response}


def _tls_failure(netloc: str, exc: ssl.SSLError) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"{netloc}: TLS certificate verification failed: {exc.verify_message}"
    return f"{netloc}: TLS handshake failed: {exc.reason or exc}"


def _text(exc: BaseException) -> str:
    """The server's words from an IMAPClient error, without Python's bytes quoting."""
    text = str(exc)
    quoted = re.fullmatch(r"b(['\"])(.*)\1", text, re.DOTALL)
    return quoted.group(2) if quoted else text


def _quiet_imaplib(client: IMAPClient) -> None:
    """Stop imaplib from formatting debug messages that nobody will read.

    IMAPClient sets imaplib's debug level to 5 and sends its messages to the
    ``imapclient.imaplib`` logger, so imaplib builds the repr of every literal it reads (every
    message fetched) and of every whole FETCH response, only for the logger to drop them: three
    quarters of the CPU time of fetching whole messages.  The messages are kept when that
    logger would show them.
    """
    imap = getattr(client, "_imap", None)
    if imap is not None and not logging.getLogger("imapclient.imaplib").isEnabledFor(logging.DEBUG):
        imap.debug = 0


def _shutdown_quietly(client: IMAPClient) -> None:
    with contextlib.suppress(Exception):
        client.shutdown()
