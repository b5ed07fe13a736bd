"""Reading the MIME structure of a message body, forgivingly and within bounds.

Pure, no I/O; used by mailer/classify.py, with mailer/mimetext.py reading the header blocks and
the text part.  :func:`parse_message` parses a whole message with compat32 (for bounces, which
flufl.bounce reads as a tree) unless its MIME structure is too large to do so safely.
:func:`parse_text_parts` builds the same tree for human mail by searching for boundary lines,
with payloads only where :func:`mailer.mimetext.body_text` reads them, so an attachment costs a
memory search and not a trip through email.parser per line; the shapes that search does not
mimic exactly are left to email.parser.

Every step is linear in its input, which callers cap (the ``limit`` of bytes of body read),
and the structure is bounded before anything is parsed: a body that nests more than
``MAX_CONTAINERS`` multipart or message parts is not parsed at all, and only its first
``MAX_BOUNDARIES`` boundary lines are.  Nothing here raises on bad input.
"""

from __future__ import annotations

import re
from email.message import Message
from email.parser import BytesParser
from email.policy import compat32

from mailer.mimetext import read_fields

__all__ = [
    "MAX_BOUNDARIES",
    "MAX_CONTAINERS",
    "parse_message",
    "parse_text_parts",
]

MAX_CONTAINERS = 100  # multipart/message parts beyond which a body is not parsed
MAX_BOUNDARIES = 2000  # boundary lines read: each one is a part for the parser to build
MAX_SMALL_BODY = 8 * 1024  # bytes of body below which MIME marks are counted byte by byte
MAX_DASH_RUNS = 4000  # runs of "-" looked at one by one in a larger body before that
MAX_MISSES = 10_000  # places a boundary string occurs off a boundary line, before email.parser
MAX_BUILT = 5000  # parts built by the boundary search, before email.parser takes over
_CONTAINER_TAIL = re.compile(rb"type:[ \t\r\n]*(?:multipart|message)/", re.IGNORECASE)
_NOT_DASH = re.compile(rb"[^-]")
_NOT_BLANK = re.compile(rb"[^ \t]")
_NOT_PLAIN = re.compile(r"[\\*<>]")


def parse_message(head: bytes, body: bytes, limit: int, defects: list[str]) -> Message | None:
    """The whole message as far as ``limit`` bytes of body, or None when it is not safe to."""
    body_start = _bounded_body(body, limit, defects)
    return None if body_start is None else _parse(head + body_start, defects)


def parse_text_parts(
    head: bytes, top: Message, body: bytes, limit: int, defects: list[str]
) -> Message | None:
    """:func:`parse_message` for :func:`~mailer.mimetext.body_text`: the same tree of parts
    with the same headers, but only text parts (and multiparts that lost their boundary) get
    their payload.

    ``top`` is ``head`` as :func:`~mailer.mimetext.parse_head` read it; it becomes the root.
    Parts are found by searching for their boundary lines (:class:`_Parts`), so an attachment
    costs a memory search instead of a trip through email.parser per line; the shapes that
    search does not mimic exactly (see ``_Unsafe``) are parsed by email.parser as before.
    """
    body_start = _bounded_body(body, limit, defects)
    if body_start is None:
        return None
    if head and top.get_payload() == "":  # email.parser would end top's header block there too
        try:
            parts = _Parts(body_start)
            top.set_payload(parts.payload(top, 0, len(body_start), 0, in_multipart=False))
            return top
        except Exception:  # _Unsafe, or a shape not foreseen: email.parser decides
            pass
    return _parse(head + body_start, defects)


def _parse(raw: bytes, defects: list[str]) -> Message | None:
    try:
        return BytesParser(policy=compat32).parsebytes(raw)
    except Exception as exc:
        defects.append(f"body unreadable: {type(exc).__name__}")
        return None


def _bounded_body(body: bytes, limit: int, defects: list[str]) -> bytes | None:
    """The part of ``body`` safe to parse, or None when it nests too many MIME containers."""
    body_start = body[:limit]
    containers, cut = _mime_marks(body_start)
    if containers > MAX_CONTAINERS:
        defects.append(f"more than {MAX_CONTAINERS} nested MIME parts: body not read")
        return None
    if len(body) > limit:
        defects.append(f"body over {limit} bytes: only its start was read")
    if cut is not None:  # tens of thousands of tiny parts
        body_start = body_start[:cut]
        defects.append(f"more than {MAX_BOUNDARIES} MIME boundaries: only the first were read")
    return body_start


def _mime_marks(data: bytes) -> tuple[int, int | None]:
    """(containers, cut): how many ``Content-Type: multipart/`` or ``message/`` fields ``data``
    holds (counting stops past MAX_CONTAINERS), and where to cut it when more than
    MAX_BOUNDARIES lines start with "--" (just after the last "--" kept), else None."""
    if len(data) > MAX_SMALL_BODY:
        return _mime_marks_sparse(data)
    return _containers(data.lower()), _boundary_cut(data)


def _containers(low: bytes) -> int:
    """Container fields in ``low`` (lower-cased), counted up to MAX_CONTAINERS + 1."""
    containers = 0
    at = low.find(b"content-type:")
    while at >= 0 and containers <= MAX_CONTAINERS:
        if _CONTAINER_TAIL.match(low, at + 8):
            containers += 1
        at = low.find(b"content-type:", at + 13)
    return containers


def _boundary_cut(data: bytes) -> int | None:
    if len(data) < 3 * (MAX_BOUNDARIES + 1) or data.count(b"\n--") <= MAX_BOUNDARIES:
        return None
    at = 0
    for _ in range(MAX_BOUNDARIES):
        at = data.find(b"\n--", at) + 3
    return at


def _mime_marks_sparse(data: bytes) -> tuple[int, int | None]:
    """:func:`_mime_marks` for a large body, from its dashes: both marks contain one, and
    bytes.find reaches the next at memory speed.  Base64 has none, so an attachment is crossed
    in one call where lower-casing, counting or a regular expression walked every byte."""
    containers = boundaries = runs = kept = 0
    cut: int | None = None
    at = data.find(b"-")
    while at >= 0:
        runs += 1
        if runs > MAX_DASH_RUNS:  # dashes everywhere: walking every byte is quicker
            return _containers(data.lower()), _boundary_cut(data)
        if at and data[at - 1] == 0x0A and data.startswith(b"-", at + 1):  # "\n--"
            boundaries += 1
            if boundaries == MAX_BOUNDARIES:
                kept = at + 2
            elif boundaries == MAX_BOUNDARIES + 1:
                cut = kept
        if (
            at >= 7
            and data[at - 7 : at].lower() == b"content"
            and _CONTAINER_TAIL.match(data, at + 1)
        ):
            containers += 1
            if containers > MAX_CONTAINERS:
                break
        after = _NOT_DASH.search(data, at)  # past this run of dashes
        at = -1 if after is None else data.find(b"-", after.start())
    return containers, cut


def _boundary(msg: Message) -> str | None:
    """``msg.get_boundary()``, worked out here when the Content-Type is plain: ASCII, no
    backslash, "*" (RFC 2231) or angle bracket, quotes only around a whole value.  There
    email's parameter parser, a twentieth of classifying a message, comes down to: the first
    parameter named "boundary" (a bare "boundary" counts, with ""), unquoted, right-stripped.
    """
    value = msg.get("content-type")
    if not isinstance(value, str) or not value.isascii() or _NOT_PLAIN.search(value):
        return msg.get_boundary()
    found: str | None = None
    for segment in value.split(";"):
        name, _, param = segment.partition("=")
        param = param.strip()
        quotes = param.count('"')
        if '"' in name or (quotes and (quotes != 2 or param[0] != '"' or param[-1] != '"')):
            return msg.get_boundary()
        if found is None and name.strip().lower() == "boundary":
            found = (param[1:-1] if quotes else param).rstrip()
    return found


# get_content_type() of the leaves body_text reads: its header_params() type is text/plain,
# text/html or "" (none or invalid), and get_content_type() says text/plain for those last two.
_READ = ("text/plain", "text/html")


class _Unsafe(Exception):
    """A shape :class:`_Parts` does not mimic: a digest, whose parts default to
    message/rfc822; a "From " or nameless header line; a boundary that is not plain ASCII;
    nesting deeper than MAX_CONTAINERS, more than MAX_BUILT parts or MAX_MISSES false boundary
    hits."""


class _Parts:
    """The tree email.feedparser (compat32) builds from a body, found by searching for
    boundary lines, with a payload only where :func:`~mailer.mimetext.body_text` may read one.

    What it mimics: lines end at CR LF, CR or LF; a part ends at the first line that is a
    boundary line (``--boundary``, optionally ``--``, then spaces or tabs) of its own multipart
    or of any multipart around it, or at the end; a part's header block ends at a blank line
    (dropped) or at the first line that is not a header line (kept for the body); repeated
    boundary lines make no parts; a multipart without its first boundary, or closed before it,
    keeps its text as the payload; a leaf loses the line break before the next boundary.
    message/* parts, which body_text never enters, get an empty list as their payload, and
    leaves that are not text get "".
    """

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.built = 0
        self.misses = 0

    def payload(
        self, msg: Message, start: int, stop: int, depth: int, *, in_multipart: bool
    ) -> str | list[Message | str]:
        """The payload of ``msg``, whose headers are set and whose body is data[start:stop]."""
        ctype = msg.get_content_type()
        maintype = ctype.split("/")[0]
        if maintype == "message":
            return []
        if maintype != "multipart":  # a leaf: body_text reads text/plain and text/html only
            return self.text(start, stop, strip=in_multipart) if ctype in _READ else ""
        if ctype == "multipart/digest" or depth >= MAX_CONTAINERS:
            raise _Unsafe(ctype)
        boundary = _boundary(msg)
        if boundary is None:
            return self.data[start:stop].decode("ascii", "surrogateescape")
        if not boundary.isascii() or "\r" in boundary or "\n" in boundary:
            raise _Unsafe("boundary")
        return self.multipart(b"--" + boundary.encode("ascii"), start, stop, depth)

    def multipart(self, sep: bytes, start: int, stop: int, depth: int) -> str | list[Message | str]:
        found = self.next_boundary(sep, start, stop)
        if found is None:  # no first boundary: the text is the payload
            return self.data[start:stop].decode("ascii", "surrogateescape")
        at, after, closing = found
        if closing:  # closed before it opened: the preamble is the payload
            return self.data[start:at].decode("ascii", "surrogateescape")
        parts: list[Message | str] = []
        while True:
            while after < stop:  # repeated boundary lines make no parts
                again = self.boundary_line(sep, after)
                if again is None:
                    break
                after = again[0]
            found = self.next_boundary(sep, after, stop)
            parts.append(self.part(after, stop if found is None else found[0], depth + 1))
            if found is None or found[2]:
                return parts
            after = found[1]

    def part(self, start: int, stop: int, depth: int) -> Message:
        self.built += 1
        if self.built > MAX_BUILT:
            raise _Unsafe("parts")
        found = read_fields(self.data, start, stop)
        if found is None:
            raise _Unsafe("header line")
        msg, body = found
        msg.set_payload(self.payload(msg, body, stop, depth, in_multipart=True))
        return msg

    def text(self, start: int, stop: int, *, strip: bool) -> str:
        data = self.data
        if strip and data.endswith(b"\r\n", start, stop):
            stop -= 2
        elif strip and data.endswith((b"\r", b"\n"), start, stop):
            stop -= 1
        return data[start:stop].decode("ascii", "surrogateescape")

    def next_boundary(self, sep: bytes, start: int, stop: int) -> tuple[int, int, bool] | None:
        """(where, end, closing) of the first boundary line in data[start:stop]."""
        data = self.data
        at = data.find(sep, start, stop)
        while at >= 0:
            if at == 0 or data[at - 1] in b"\r\n":
                found = self.boundary_line(sep, at)
                if found is not None:
                    return at, found[0], found[1]
            self.misses += 1
            if self.misses > MAX_MISSES:
                raise _Unsafe("misses")
            at = data.find(sep, at + 1, stop)
        return None

    def boundary_line(self, sep: bytes, at: int) -> tuple[int, bool] | None:
        """(end, closing) when the line at ``at`` is a boundary line, else None."""
        data = self.data
        if not data.startswith(sep, at):
            return None
        end = at + len(sep)
        closing = data.startswith(b"--", end)
        blank = _NOT_BLANK.search(data, end + 2 if closing else end)  # past spaces and tabs
        end = len(data) if blank is None else blank.start()
        if end == len(data):
            return end, closing
        if data[end] == 0x0A:
            return end + 1, closing
        if data[end] == 0x0D:
            return end + (2 if data.startswith(b"\n", end + 1) else 1), closing
        return None
