"""The wire format of composed mail: header values, text parts, and the bytes for SMTP DATA.

Pure, no I/O.  mailer/compose.py builds its messages from these pieces, and :func:`to_bytes`
serializes one the way SMTP DATA wants it: CRLF line endings, headers folded, 7-bit clean.
Everything is compat32 (about three times faster than ``policy=default``, see LIMITS.md), made
faster still where it is slow: printable ASCII header values fold at spaces without
email.header.Header, a body's line endings are rewritten in one pass, and text parts are
quoted-printable by binascii's C encoder.

Header values that are not plain ASCII become RFC 2047 B encoded-words (UTF-8): at most 75
characters each in unstructured headers (:func:`text_header`), one word for a display name
(:func:`address_header`).  Callers check values for control characters first.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from email.generator import BytesGenerator
from email.message import Message
from email.mime.nonmultipart import MIMENonMultipart
from email.policy import Compat32
from email.utils import formataddr
from io import BytesIO

__all__ = ["address_header", "mime_boundary", "text_header", "text_part", "to_bytes"]

# Plain ASCII that compat32 could fold losslessly and no reader would decode as an encoded-word.
_NEEDS_ENCODING = re.compile(r"[^\x20-\x7e]|=\?|\S{60}")
_PRINTABLE = re.compile(r"[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?")  # no edge spaces
_NEWLINES = re.compile(r"\r\n|\r|\n")  # as email.generator.NLCRE
_ENCODED_WORD_BYTES = 39  # 52 base64 chars + 12 of chrome: "Subject: " plus one word fits 78


class _WirePolicy(Compat32):
    """compat32 with CRLF, folding printable ASCII values at spaces only.

    Every value Composer sets is printable ASCII (encoded-words included), and folding through
    email.header.Header is most of serialization time; it may also start a long value on an
    empty line, which a parser reads back with a leading space.  Folding at existing spaces is
    lossless: unfolding removes only the CRLF.  Anything else goes to compat32 unchanged.
    """

    def fold_binary(self, name: str, value: object) -> bytes:
        if not isinstance(value, str) or not _PRINTABLE.fullmatch(value):
            return super().fold_binary(name, value)  # type: ignore[arg-type]
        limit = self.max_line_length or 998
        words = value.split(" ")
        lines = [f"{name}: {words[0]}"]
        for word in words[1:]:
            if word and len(lines[-1]) + 1 + len(word) > limit:
                lines.append(" " + word)
            else:
                lines[-1] += " " + word
        return (self.linesep.join(lines) + self.linesep).encode("ascii")


class _WireGenerator(BytesGenerator):
    """BytesGenerator that rewrites a body's line endings in one pass instead of line by line."""

    def _write_lines(self, lines: str) -> None:
        if lines:
            self.write(_NEWLINES.sub(self._NL, lines))  # type: ignore[attr-defined]


_WIRE_POLICY = _WirePolicy(linesep="\r\n")  # SMTP DATA wants CRLF; folds at 78 characters


def to_bytes(msg: Message) -> bytes:
    """The message as SMTP DATA wants it: CRLF line endings, headers folded, 7-bit clean."""
    buffer = BytesIO()
    _WireGenerator(buffer, mangle_from_=False, policy=_WIRE_POLICY).flatten(msg)
    return buffer.getvalue()


def text_header(text: str) -> str:
    """An unstructured header value: plain words stay readable, runs of the rest are encoded.

    Space between two encoded-words is dropped by decoders, so the spaces inside a run are
    encoded with it; spaces after a run stay plain.
    """
    if not _NEEDS_ENCODING.search(text):
        return text
    out: list[str] = []
    run: list[str] = []
    for word in [*text.split(" "), "."]:  # a plain sentinel flushes the last run
        if _NEEDS_ENCODING.search(word) or (run and not word):
            run.append(word)
            continue
        if run:
            spaces = len(run) - len(" ".join(run).rstrip(" ").split(" "))
            out.append(_encoded_words(" ".join(run[: len(run) - spaces])))
            out.extend([""] * spaces)
            run = []
        out.append(word)
    return " ".join(out[:-1])


def _encoded_words(text: str) -> str:
    """RFC 2047 B encoded-words of whole characters, each at most 64 characters long.

    For unstructured headers (Subject): decoders drop the space between encoded-words.
    """
    words: list[str] = []
    chunk: list[str] = []
    size = 0
    for char in text:
        n = len(char.encode("utf-8"))
        if size + n > _ENCODED_WORD_BYTES:
            words.append("".join(chunk))
            chunk, size = [], 0
        chunk.append(char)
        size += n
    words.append("".join(chunk))
    return " ".join(_encoded_word(w) for w in words)


def _encoded_word(text: str) -> str:
    return "=?utf-8?b?" + base64.b64encode(text.encode("utf-8")).decode("ascii") + "?="


def address_header(name: str, address: str) -> str:
    """``name <address>`` for From and To; a name that is not plain ASCII is one encoded-word."""
    # One encoded-word, even past RFC 2047's 75 characters, as CPython's own generator does:
    # its parser keeps the space between adjacent encoded-words of a display name.
    if _NEEDS_ENCODING.search(name):
        return f"{_encoded_word(name)} <{address}>"
    return formataddr((name, address))


def mime_boundary(idempotency_key: str) -> str:
    """The multipart boundary of one message, the same for the same idempotency key."""
    # "==" never occurs in quoted-printable output, so this cannot collide with a body line.
    return "==rapport-" + hashlib.sha256(idempotency_key.encode("utf-8")).hexdigest()[:24] + "=="


def text_part(subtype: str, body: str) -> MIMENonMultipart:
    """A UTF-8 quoted-printable text part (binascii's C encoder: email.quoprimime is slow)."""
    part = MIMENonMultipart("text", subtype, charset="utf-8")
    del part["MIME-Version"]  # said once, on the message itself
    part["Content-Transfer-Encoding"] = "quoted-printable"
    data = body.replace("\r\n", "\n").replace("\r", "\n").encode("utf-8")
    part.set_payload(binascii.b2a_qp(data, istext=True).decode("ascii"))
    return part
