"""The Maildir message source: a local Maildir read like an IMAP account, without state files.

:class:`MaildirSource` implements :class:`~mailer.source.MessageSource` (mailer/source.py, which
describes cursors and the read-only guarantee) without importing imapclient.  Files are only
opened, never renamed, so a message in ``new/`` stays there and unread mail stays unread; only
:meth:`MaildirSource.move` renames files, keeping their flags.  UIDs come from file names
(:func:`maildir_uid`).
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import re
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from mailer.source import (
    ClosingSource,
    Cursor,
    Fetched,
    FolderUnavailable,
    InboxUnavailable,
    MoveFailed,
)

__all__ = ["MaildirSource", "maildir_uid"]

log = logging.getLogger(__name__)

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


class MaildirSource(ClosingSource):
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
