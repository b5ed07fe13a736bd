"""Reading IMAP FETCH replies quickly, and the plain values a fetch hands on (pure: no I/O).

IMAPClient reads a FETCH reply by walking it byte by byte in Python, which cost a first poll
more than the rest of fetching together: for each message, its size, arrival time and flags
went through the tokenizer one character at a time.  :func:`parse_fetch` reads imaplib's data
for the replies of the shape a poll asks for (numbers, one quoted INTERNALDATE, a list of
flags, literals) with regular expressions, giving exactly what IMAPClient's own parser gives.  A
reply of any other shape (an escaped quote, nested lists, an item it does not know) is handed
whole to that parser, so nothing is misread, only read more slowly.

mailer/inbox.py, the one module that talks IMAP (through IMAPClient), sends the command and
calls this; only imapclient's parsing helpers are used here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

from imapclient.datetime_util import parse_to_datetime
from imapclient.response_parser import parse_fetch_response

__all__ = ["as_bytes", "flag_text", "groups", "parse_fetch", "utc"]

# "SEQ (" opening one message's reply.
_START = re.compile(rb"(\d+) \(")
# One item: a name (BODY[...] included) and a number, a quoted string without escapes, NIL,
# a list of atoms (flags), or a literal, which ends the line imaplib hands over.  A value other
# than a literal must be followed by a space or the closing parenthesis.
_ATOM = rb'[^\s()"{}\[\]%*]+'
_ITEM = re.compile(
    rb" ?([A-Za-z][A-Za-z0-9.]*(?:\[[A-Za-z0-9.]*\])?) (?:"
    rb'(?:(\d+)|"([^"\\\r\n]*)"|(NIL)|\(((?:' + _ATOM + rb"(?: " + _ATOM + rb")*)?)\))(?=[ )])"
    rb"|\{(\d+)\}\Z)"
)
_COMPLEX = (b"BODY", b"BODYSTRUCTURE", b"ENVELOPE")  # imapclient builds objects for these


class _Unusual(Exception):
    """A reply this reader leaves to IMAPClient's parser."""


def parse_fetch(data: list[Any], normalise_times: bool) -> dict[int, dict[bytes, Any]]:
    """What imapclient's ``parse_fetch_response`` makes of imaplib's FETCH ``data``."""
    try:
        return _parse(data, normalise_times)
    except _Unusual:
        return dict(parse_fetch_response(data, normalise_times, True))


def _parse(data: list[Any], normalise_times: bool) -> dict[int, dict[bytes, Any]]:
    if data == [None]:
        return {}
    found: dict[int, dict[bytes, Any]] = {}
    lines = _lines(data)
    for text, literal in lines:
        start = _START.match(text)
        if start is None:
            raise _Unusual
        seq = int(start.group(1))
        values: dict[bytes, Any] = {b"SEQ": seq}
        key, at = seq, start.end()
        while not (text.startswith(b")", at) and at + 1 == len(text) and literal is None):
            item = _ITEM.match(text, at)
            if item is None:
                raise _Unusual
            name = item.group(1).upper()
            number, quoted, nil, atoms, size = item.group(2, 3, 4, 5, 6)
            at = item.end()
            if name in _COMPLEX or (name == b"INTERNALDATE" and quoted is None and nil is None):
                raise _Unusual  # imapclient makes objects of these, or fails on them
            value: Any
            if size is not None:  # the literal ends this line; the reply goes on in the next
                if literal is None or int(size) != len(literal):
                    raise _Unusual
                value = literal
                text, literal = next(lines, (b"", None))
                at = 0
            elif number is not None:
                value = _number(number)
            elif quoted is not None:
                value = _date(quoted, normalise_times) if name == b"INTERNALDATE" else quoted
            elif nil is not None:
                value = None
            else:
                value = tuple(_number(atom) for atom in atoms.split()) if atoms else ()
            if name == b"UID":
                if not isinstance(value, int):
                    raise _Unusual
                key = value
            else:
                values[name] = value
        found.setdefault(key, {}).update(values)
    return found


def _lines(data: Iterable[Any]) -> Iterator[tuple[bytes, bytes | None]]:
    """imaplib's FETCH data as (line, the literal that ends it or None)."""
    for element in data:
        if isinstance(element, tuple) and len(element) == 2:
            text, literal = element
            if not isinstance(text, bytes) or not isinstance(literal, bytes):
                raise _Unusual
            yield text, literal
        elif isinstance(element, bytes):
            yield element, None
        else:
            raise _Unusual


def _number(token: bytes) -> Any:
    """An atom as imapclient reads it: digits without a leading zero are an int, NIL None."""
    if token.isdigit() and (token[:1] != b"0" or len(token) == 1):
        return int(token)
    return None if token == b"NIL" else token


def _date(value: bytes, normalise_times: bool) -> datetime | None:
    try:
        return parse_to_datetime(value, normalise=normalise_times)
    except ValueError:  # some servers send junk; imapclient gives None too
        return None


def groups(uids: list[int], sizes: dict[int, int], limit: int) -> Iterator[list[int]]:
    """``uids`` in order, in groups of at most ``limit`` bytes by ``sizes`` (a message larger
    than ``limit`` is a group of its own)."""
    group: list[int] = []
    total = 0
    for uid in uids:
        size = sizes.get(uid, 0)
        if group and total + size > limit:
            yield group
            group, total = [], 0
        group.append(uid)
        total += size
    if group:
        yield group


def as_bytes(value: object) -> bytes | None:
    return bytes(value) if isinstance(value, bytes | bytearray) else None


def flag_text(flag: object) -> str:
    return flag.decode("ascii", "replace") if isinstance(flag, bytes) else str(flag)


def utc(value: object) -> datetime | None:
    # A naive INTERNALDATE (a client with normalise_times on) is local time.
    return value.astimezone(UTC) if isinstance(value, datetime) else None
