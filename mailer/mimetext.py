"""Reading raw mail forgivingly and within bounds: header fields, charsets, the text part.

Pure, no I/O; shared by mailer/classify.py, mailer/checkin.py, mailer/autoreply.py and
mailer/mimeparts.py (which reads the MIME structure of bodies).  Nothing here raises on bad
input: broken charsets, transfer encodings and MIME give what could be read.

The header block: :func:`split_head` cuts raw bytes at the blank line, :func:`cap_headers`
bounds it (a field at most ``MAX_HEADER`` bytes, ``MAX_HEADERS`` fields, ``MAX_HEADER_BLOCK``
bytes in all), :func:`parse_head` reads it as compat32 does and :func:`header_fields` maps
lower-case names to their values as text; :func:`read_fields` reads the header block of a
MIME part the same way.  Field values: :func:`header_params` (Content-Type and its
parameters), :func:`header_text` (raw 8-bit bytes), :func:`decode_words` (RFC 2047
encoded-words), :func:`header_date` (aware UTC).

The text part: given the tree of parts (mailer/mimeparts.py), :func:`body_text` picks the
message's own text part (text/plain first, else HTML turned into text by
:func:`html_to_text`), never looking inside attached messages, and decodes it whatever its
transfer encoding (:func:`part_bytes`) and charset (:func:`decode_bytes`) claim.

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
from email.parser import BytesHeaderParser
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
    "part_bytes",
    "read_fields",
    "split_head",
]

MAX_SCAN = 256 * 1024  # characters of a text part looked at; a reply's own text comes first
MAX_PARTS = 500  # MIME parts visited when looking for the text part
MAX_HEADER = 8 * 1024  # bytes of one header field, unfolded
MAX_HEADERS = 400  # header fields kept
MAX_HEADER_BLOCK = 1024 * 1024  # bytes of header fields kept in all
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


def read_fields(data: bytes, start: int, stop: int) -> tuple[Message, int] | None:
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


# --- the text part ----------------------------------------------------------------------------


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
