"""Reading raw mail forgivingly and within bounds: header fields, charsets, the text part.

Pure, no I/O; shared by mailer/classify.py, mailer/checkin.py and mailer/autoreply.py.  Nothing
here raises on bad input: broken charsets, transfer encodings and MIME give what could be read.

The header block: :func:`split_head` cuts raw bytes at the blank line, :func:`cap_headers`
bounds it (a field at most ``MAX_HEADER`` bytes, ``MAX_HEADERS`` fields, ``MAX_HEADER_BLOCK``
bytes in all), :func:`parse_head` reads it as compat32 does and :func:`header_fields` maps
lower-case names to their values as text.  Field values: :func:`header_params` (Content-Type
and its parameters), :func:`header_text` (raw 8-bit bytes), :func:`decode_words` (RFC 2047
encoded-words), :func:`header_date` (aware UTC).

Bodies: :func:`parse_message` parses with compat32 unless the MIME structure is too large to do
so safely; :func:`parse_text_parts` builds the same tree by searching for boundary lines, with
payloads only where :func:`body_text` reads them, so an attachment costs a memory search and
not a trip through email.parser per line.  :func:`body_text` picks the message's own text part
(text/plain first, else HTML turned into text by :func:`html_to_text`), never looking inside
attached messages, and decodes it whatever its transfer encoding (:func:`part_bytes`) and
charset (:func:`decode_bytes`) claim.

Every step is linear in its input, which callers cap (see ``MAX_SCAN``), so hostile HTML or a
huge part costs no more than a long ordinary one.
"""

from __future__ import annotations

import binascii
import html
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from email.header import decode_header
from email.message import Message
from email.parser import BytesHeaderParser, BytesParser
from email.policy import compat32
from email.utils import parsedate_to_datetime

__all__ = [
    "MAX_HEADER",
    "MAX_HEADERS",
    "MAX_HEADER_BLOCK",
    "MAX_SCAN",
    "QUOTE_END",
    "QUOTE_START",
    "Headers",
    "body_text",
    "cap_headers",
    "decode_bytes",
    "decode_words",
    "header_date",
    "header_fields",
    "header_params",
    "header_text",
    "html_to_text",
    "parse_head",
    "parse_message",
    "parse_text_parts",
    "part_bytes",
    "split_head",
]

MAX_SCAN = 256 * 1024  # characters of a text part looked at; a reply's own text comes first
MAX_PARTS = 500  # MIME parts visited when looking for the text part
MAX_HEADER = 8 * 1024  # bytes of one header field, unfolded
MAX_HEADERS = 400  # header fields kept
MAX_HEADER_BLOCK = 1024 * 1024  # bytes of header fields kept in all
MAX_CONTAINERS = 100  # multipart/message parts beyond which a body is not parsed
MAX_BOUNDARIES = 2000  # boundary lines read: each one is a part for the parser to build
MAX_SMALL_BODY = 8 * 1024  # bytes of body below which MIME marks are counted byte by byte
MAX_DASH_RUNS = 4000  # runs of "-" looked at one by one in a larger body before that
MAX_MISSES = 10_000  # places a boundary string occurs off a boundary line, before email.parser
MAX_BUILT = 5000  # parts built by the boundary search, before email.parser takes over
QUOTE_START, QUOTE_END = "\ue000", "\ue001"  # private-use marks around HTML blockquotes

# Mislabelled charsets seen in the wild, mapped to the superset that decodes what was meant.
_CHARSET_ALIASES = {
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "ks_c_5601-1987": "cp949",
    "iso-8859-8-i": "iso-8859-8",
    "windows-874": "cp874",
    "x-sjis": "shift_jis",
    "shift-jis": "shift_jis",
    "x-mac-roman": "mac_roman",
    "ascii": "us-ascii",
    "unknown-8bit": "",
    "x-unknown": "",
    "unknown": "",
}
# Charsets whose encoded bytes can all be ASCII while the text is not.
_SEVEN_BIT = ("iso-2022", "utf-7", "utf-16", "utf-32", "hz", "utf_7", "utf_16", "utf_32")
_PARAM = re.compile(r';\s*([A-Za-z0-9_.*-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;\s]*)')
_B64_JUNK = re.compile(rb"[^A-Za-z0-9+/]")
_CONTAINER_TAIL = re.compile(rb"type:[ \t\r\n]*(?:multipart|message)/", re.IGNORECASE)
_NOT_DASH = re.compile(rb"[^-]")
_NOT_BLANK = re.compile(rb"[^ \t]")
_NOT_PLAIN = re.compile(r"[\\*<>]")
_HEADER_LINE = re.compile(rb"From |[\x21-\x39\x3b-\x7e]*:|[\t ]")  # email.feedparser.headerRE
# One header field and its continuation lines; the name as headerRE allows it, minus "From ".
_FIELD_TEXT = (
    rb"([\x21-\x39\x3b-\x7e]+):[ \t]*"
    rb"([^\r\n]*(?:\r\n|\r|\n)?(?:[ \t][^\r\n]*(?:\r\n|\r|\n)?)*)"
)
_FIELD = re.compile(_FIELD_TEXT)
# The same where every CR starts a CR LF: "." stops at the same LF and is twice as fast.
_FIELDS = re.compile(_FIELD_TEXT.replace(rb"[^\r\n]", b"."))
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
Headers = dict[str, list[str]]  # lower-case field name -> its values, in order


# --- charsets ---------------------------------------------------------------------------------


def decode_bytes(data: bytes, charset: str | None) -> str:
    """Text from ``data`` in ``charset``, trying UTF-8 then Latin-1 when the label is no use."""
    name = (charset or "").strip().strip('"').lower()
    name = _CHARSET_ALIASES.get(name, name)
    if data.isascii() and b"\x1b" not in data and not name.startswith(_SEVEN_BIT):
        return data.decode("ascii")
    if name and name != "us-ascii":
        try:
            return data.decode(name, errors="replace")
        except Exception:  # unknown, non-text (zlib, rot13) or broken codec: fall back below
            pass
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")


def header_text(value: str) -> str:
    """A compat32 header value as text: raw 8-bit bytes read as UTF-8 (else Windows-1252),
    folding removed."""
    if "\n" in value or "\r" in value:  # most fields are one line
        value = value.replace("\r\n", "").replace("\n", "").replace("\r", "")
    if value.isascii():
        return value
    try:
        data = value.encode("ascii", "surrogateescape")
    except UnicodeEncodeError:
        return value
    return decode_bytes(data, None)


# --- header block -----------------------------------------------------------------------------


def split_head(raw: bytes) -> tuple[bytes, bytes]:
    """(header block with its blank line, body)."""
    if raw[:1] in (b"\n", b"\r"):
        return b"", raw
    end = _head_end(raw)
    if end is None:
        return raw, b""
    return raw[:end], raw[end:]


def _head_end(raw: bytes) -> int | None:
    r"""Where the first blank line ends: after the first two line breaks in a row, a line
    break being CR LF, a CR not followed by LF, or LF.

    Found with bytes.find in the header block, instead of a regular expression stepping
    through it: each such pair of line breaks holds "\n\n", "\n\r" or "\r\r" at its start,
    or one further ("\r\n\r\n"), so the first of those, q, places it: at q - 1 after a CR
    LF, else at q.
    """
    first_lf = raw.find(b"\n")
    likely = b"\n\r" if first_lf > 0 and raw[first_lf - 1] == 0x0D else b"\n\n"
    q = raw.find(likely)
    end = len(raw) if q < 0 else q + 1
    for pair in (b"\n\n", b"\n\r", b"\r\r"):
        if pair != likely:
            other = raw.find(pair, 0, end)
            if other >= 0:
                q, end = other, other + 1
    if q < 0:
        return None
    at = q - 1 if q and raw[q - 1] == 0x0D and raw[q] == 0x0A else q
    at += 2 if raw.startswith(b"\r\n", at) else 1
    return at + (2 if raw.startswith(b"\r\n", at) else 1)


def cap_headers(head: bytes, defects: list[str]) -> bytes:
    """The header block with every field at most MAX_HEADER bytes, and at most MAX_HEADERS
    fields and MAX_HEADER_BLOCK bytes; anything cut is noted in ``defects``."""
    if len(head) <= MAX_HEADER:
        return head
    fields: list[list[bytes]] = []
    for line in head.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1].append(line)
        else:
            fields.append([line])
    out: list[bytes] = []
    total = 0
    for lines in fields:
        field = b"".join(lines)
        if not field.strip():
            continue
        if len(field) > MAX_HEADER:
            name = field.split(b":", 1)[0].strip()
            defects.append(f"header over {MAX_HEADER} bytes cut: {name[:40]!r}")
            flat = b" ".join(line.strip(b"\r\n") for line in lines)
            if name.lower() in (b"references", b"in-reply-to"):
                tail = flat[-(MAX_HEADER - len(name) - 2) :]
                flat = name + b": " + tail.partition(b" ")[2]
            field = flat[:MAX_HEADER] + b"\n"
        if len(out) >= MAX_HEADERS or total + len(field) > MAX_HEADER_BLOCK:
            defects.append("too many headers: the rest were dropped")
            break
        out.append(field if field.endswith((b"\n", b"\r")) else field + b"\n")
        total += len(field)
    return b"".join(out) + b"\n"


def parse_head(head: bytes) -> Message:
    """The header block as ``BytesHeaderParser(policy=compat32)`` reads it, with payload "".

    The usual block (fields and their continuation lines, then the blank line) is read by one
    regular expression, three times faster than email.parser's line-by-line generator; any
    other block, with the defects email.parser notes for it, is left to email.parser.
    """
    msg = Message()
    at = 0
    match = (_FIELDS if head.count(b"\r") == head.count(b"\r\n") else _FIELD).match
    while field := match(head, at):  # anchored: a search would retry every offset of a line
        name, value = field.groups()  # compat32's header_source_parse, byte for byte
        msg.set_raw(
            name.decode("ascii", "surrogateescape"),
            value.rstrip(b"\r\n").decode("ascii", "surrogateescape"),
        )
        at = field.end()
    if head[at:] not in (b"", b"\n", b"\r\n", b"\r"):
        return BytesHeaderParser(policy=compat32).parsebytes(head)
    msg.set_payload("")
    return msg


def _read_fields(data: bytes, start: int, stop: int) -> tuple[Message, int] | None:
    """(a message with the header fields at data[start:stop] stored as email.feedparser stores
    them, where the body starts), or None at a line feedparser treats specially: a continuation
    with nothing to continue, a "From " line, a field without a name.

    As in feedparser, the block ends at a blank line (dropped) or at the first line that is not
    a header line (left to the body).  ``start`` and ``stop`` are at line starts.
    """
    msg = Message()
    at = start
    while at < stop:
        field = _FIELD.match(data, at, stop)
        if field is None:
            break
        name, value = field.groups()  # compat32's header_source_parse, byte for byte
        msg.set_raw(
            name.decode("ascii", "surrogateescape"),
            value.rstrip(b"\r\n").decode("ascii", "surrogateescape"),
        )
        at = field.end()
    if at == stop:
        return msg, at
    if _HEADER_LINE.match(data, at, stop):
        return None
    if data.startswith(b"\r\n", at):
        return msg, at + 2
    return msg, at + 1 if data[at] in b"\r\n" else at


def header_fields(msg: Message) -> Headers:
    """Every field of ``msg`` by lower-case name, values as text (see :func:`header_text`)."""
    found: Headers = {}
    for name, value in msg.raw_items():
        found.setdefault(str(name).strip().lower(), []).append(header_text(str(value)))
    return found


# --- header fields ----------------------------------------------------------------------------


def header_params(value: str) -> tuple[str, dict[str, str]]:
    """``"text/plain; charset=utf-8"`` -> ``("text/plain", {"charset": "utf-8"})``, lower-cased.

    Forgiving where email.message is strict: a Content-Type with raw 8-bit bytes or no slash
    gives an empty type, never an exception.
    """
    main = value.split(";", 1)[0].strip().lower()
    params: dict[str, str] = {}
    for name, raw in _PARAM.findall(value[:2048]):
        if raw.startswith('"'):
            raw = raw[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        params.setdefault(name.lower(), raw.strip())
    return (main if main.count("/") == 1 else ""), params


def decode_words(value: str) -> str:
    """An unstructured header (Subject) with RFC 2047 encoded-words decoded, on one line.

    Encoded-words in unknown or broken charsets decode as UTF-8, else Windows-1252.
    """
    text = value
    if "=?" in value:
        try:
            chunks = decode_header(value)
        except Exception:
            chunks = [(value, None)]
        parts: list[str] = []
        for chunk, charset in chunks:
            if isinstance(chunk, str):
                parts.append(chunk)
            elif charset is None:
                parts.append(chunk.decode("raw-unicode-escape", errors="replace"))
            else:
                parts.append(decode_bytes(chunk, charset.split("*")[0]))
        text = "".join(parts)
    return " ".join(_CONTROL.sub(" ", text).split())


def header_date(value: str) -> datetime | None:
    """A Date header as aware UTC (a date without a zone is taken as UTC), or None."""
    if not value:
        return None
    try:
        date = parsedate_to_datetime(value)
    except Exception:
        return None
    if date.tzinfo is None:
        date = date.replace(tzinfo=UTC)
    try:
        return date.astimezone(UTC)
    except (OverflowError, ValueError):
        return None


# --- bodies -----------------------------------------------------------------------------------


def parse_message(head: bytes, body: bytes, limit: int, defects: list[str]) -> Message | None:
    """The whole message as far as ``limit`` bytes of body, or None when it is not safe to."""
    body_start = _bounded_body(body, limit, defects)
    return None if body_start is None else _parse(head + body_start, defects)


def parse_text_parts(
    head: bytes, top: Message, body: bytes, limit: int, defects: list[str]
) -> Message | None:
    """:func:`parse_message` for :func:`body_text`: the same tree of parts with the same
    headers, but only text parts (and multiparts that lost their boundary) get their payload.

    ``top`` is ``head`` as :func:`parse_head` read it; it becomes the root.  Parts are found by
    searching for their boundary lines (:class:`_Parts`), so an attachment costs a memory
    search instead of a trip through email.parser per line; the shapes that search does not
    mimic exactly (see ``_Unsafe``) are parsed by email.parser as before.
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
    boundary lines, with a payload only where :func:`body_text` may read one.

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
        found = _read_fields(self.data, start, stop)
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


def part_bytes(part: Message, limit: int = MAX_SCAN * 4) -> bytes:
    """The decoded payload of a leaf part, tolerant of bad base64 and quoted-printable.

    Decodes with binascii (C) on the first ``limit`` characters: email's own decoder is pure
    Python for quoted-printable and reads the whole part.
    """
    payload = part.get_payload()
    if not isinstance(payload, str):
        return b""
    cte = str(part.get("content-transfer-encoding", "")).strip().lower()
    if cte not in ("base64", "quoted-printable") or not payload.isascii():
        # 8-bit bodies: email gives the original bytes back only through decode=True.
        data = part.get_payload(decode=True)
        return data[:limit] if isinstance(data, bytes) else b""
    data = payload[:limit].encode("ascii")
    if cte == "base64":
        data = _B64_JUNK.sub(b"", data)
        data = data[: len(data) - len(data) % 4]
        try:
            return binascii.a2b_base64(data)
        except (binascii.Error, ValueError):
            return b""
    return binascii.a2b_qp(data)


def _leaf_parts(msg: Message) -> Iterator[Message]:
    """Leaf parts in order, not entering attached messages (message/*), at most MAX_PARTS."""
    stack = [msg]
    seen = 0
    while stack and seen < MAX_PARTS:
        part = stack.pop()
        seen += 1
        payload = part.get_payload()
        if isinstance(payload, list):
            ctype, _ = header_params(str(part.get("content-type", "")))
            if not ctype.startswith("message/"):
                stack.extend(p for p in reversed(payload) if isinstance(p, Message))
            continue
        yield part


def body_text(msg: Message) -> str:
    """The message's own text: its first inline text/plain part, else its first text/html part
    turned into text, else the salvaged text of a multipart whose boundary was lost.

    At most MAX_SCAN characters.  A part without a usable Content-Type is text/plain (RFC 2045).
    """
    html_part: Message | None = None
    broken: Message | None = None
    for part in _leaf_parts(msg):
        ctype, params = header_params(str(part.get("content-type", "")))
        disposition = str(part.get("content-disposition", "")).strip().lower()
        if disposition.startswith("attachment"):
            continue
        if ctype in ("text/plain", ""):
            return decode_bytes(part_bytes(part), params.get("charset"))[:MAX_SCAN]
        if ctype == "text/html" and html_part is None:
            html_part = part
        elif ctype.startswith("multipart/") and broken is None:
            broken = part
    if html_part is not None:
        _, params = header_params(str(html_part.get("content-type", "")))
        text = decode_bytes(part_bytes(html_part), params.get("charset"))[:MAX_SCAN]
        return html_to_text(text)
    if broken is not None:
        return _salvage(decode_bytes(part_bytes(broken), None)[:MAX_SCAN])
    return ""


def _salvage(text: str) -> str:
    """The first part's body of a multipart the parser could not split (no boundary)."""
    lines = text.replace("\r\n", "\n").split("\n")
    start = next((i for i, line in enumerate(lines) if line.strip()), 0)
    marker = lines[start].strip() if start < len(lines) else ""
    if not marker.startswith("--"):
        return text
    body_at = next((i for i in range(start, len(lines)) if not lines[i].strip()), len(lines))
    end = next(
        (i for i in range(body_at, len(lines)) if lines[i].strip().startswith(marker)), len(lines)
    )
    return "\n".join(lines[body_at + 1 : end])


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_TAG_NAME = re.compile(r"/?\s*([A-Za-z][A-Za-z0-9]*)")
_BLOCK_TAGS = _words(
    "br p div tr li ul ol h1 h2 h3 h4 h5 h6 table hr pre address section article header "
    "footer center dd dt dl"
)
_SKIP_TAGS = frozenset({"style", "script", "head", "title", "template"})
_BLANK_LINES = re.compile(r"\n{3,}")
_WHITESPACE = re.compile(r"[ \t\r\n\f\v]+")


def html_to_text(source: str) -> str:
    """Readable text of an HTML body: block elements become line breaks, blockquotes are
    marked as quotes for :func:`mailer.checkin.own_text`, scripts and styles vanish.

    A hand-written scanner rather than html.parser: it only ever moves forward, so unclosed
    tags and comments cost linear time.
    """
    out: list[str] = []
    lower = source.lower()
    pos, size = 0, len(source)
    while pos < size:
        lt = source.find("<", pos)
        if lt < 0:
            lt = size
        if lt > pos:
            out.append(_WHITESPACE.sub(" ", html.unescape(source[pos:lt])))
        if lt >= size:
            break
        if source.startswith("<!--", lt):
            end = source.find("-->", lt + 4)
            pos = size if end < 0 else end + 3
            continue
        gt = source.find(">", lt + 1)
        if gt < 0:
            break
        match = _TAG_NAME.match(source, lt + 1, gt)
        pos = gt + 1
        if not match:
            continue
        name = match.group(1).lower()
        closing = source[lt + 1 : gt].lstrip().startswith("/")
        if name in _SKIP_TAGS and not closing:
            end = lower.find("</" + name, pos)
            if end < 0:
                break
            close = source.find(">", end)
            pos = size if close < 0 else close + 1
        elif name == "blockquote":
            out.append(f"\n{QUOTE_END if closing else QUOTE_START}\n")
        elif name in _BLOCK_TAGS:
            out.append("\n")
    text = "".join(out).replace("\xa0", " ")
    text = "\n".join(line.strip() for line in text.split("\n"))
    return _BLANK_LINES.sub("\n\n", text)
