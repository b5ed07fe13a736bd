"""What every source of the coordinators' inbox shares: the interface, cursors, errors.

:class:`~mailer.inbox.ImapSource` (mailer/inbox.py) and :class:`~mailer.maildir.MaildirSource`
(mailer/maildir.py) share one interface (:class:`MessageSource`) that takes and returns plain
values, so the poll job does not care where mail comes from.  This module holds only plain types
and imports no protocol library, so the Maildir source and the poll job can use it without
pulling in imapclient.

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

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Protocol, Self

from program.errors import RapportError

__all__ = [
    "ClosingSource",
    "Cursor",
    "Fetched",
    "FolderUnavailable",
    "InboxError",
    "InboxUnavailable",
    "MessageSource",
    "MoveFailed",
]


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


class ClosingSource:
    """Base of the sources: ``with source:`` closes it on the way out."""

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
