"""Checks shared by the bad-input suite: a composed message's headers and HTML are inert.

:func:`assert_safe_message` parses the wire bytes back as a mail client would and checks every
header of every MIME part: no CR, LF or NUL once decoded, no header that the composer never
writes (an injected ``Bcc:``), and every raw header line either ``Name: value`` or a folded
continuation.  :func:`assert_inert_html` parses an HTML part and refuses anything a client could
run: a ``<script>`` (or other active) element, an ``on*`` attribute, a ``javascript:`` URL.
"""

from __future__ import annotations

import re
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from html.parser import HTMLParser

__all__ = ["assert_inert_html", "assert_safe_message", "bodies"]

# Every header Rapport's composers write, on the message or on its parts.
COMPOSED_HEADERS = frozenset(
    {
        "from",
        "to",
        "subject",
        "date",
        "message-id",
        "reply-to",
        "list-unsubscribe",
        "list-unsubscribe-post",
        "auto-submitted",
        "content-language",
        "content-type",
        "content-transfer-encoding",
        "mime-version",
    }
)
_HEADER_LINE = re.compile(rb"[!-9;-~]+:[ \t]?[\x20-\x7e\t]*|[ \t][\x20-\x7e\t]*")
_ACTIVE_ELEMENTS = frozenset({"script", "iframe", "object", "embed", "frame", "form", "base"})
_URL_ATTRIBUTES = frozenset({"href", "src", "action", "formaction", "background", "xlink:href"})
_BAD_SCHEMES = ("javascript:", "vbscript:", "data:")
# Browsers drop ASCII whitespace and control characters inside a URL's scheme.
_URL_NOISE = re.compile(r"[\x00-\x20\x7f]+")


def assert_safe_message(data: bytes, *, extra_headers: frozenset[str] = frozenset()) -> None:
    """The composed bytes carry only known headers, none of them holding a line break or NUL."""
    assert b"\n" not in data.replace(b"\r\n", b""), "a bare LF in the message"
    assert b"\r" not in data.replace(b"\r\n", b""), "a bare CR in the message"
    message = parse(data)
    allowed = COMPOSED_HEADERS | extra_headers
    for part in message.walk():
        for name, value in part.items():
            assert name.lower() in allowed, f"unexpected header {name!r}"
            for char in ("\r", "\n", "\0"):
                assert char not in str(value), f"{name} holds {char!r}: {str(value)!r}"
        assert not [d for d in part.defects if "Header" in type(d).__name__], part.defects
    for head in _heads(data):
        for line in head.split(b"\r\n"):
            assert _HEADER_LINE.fullmatch(line), f"malformed header line {line[:80]!r}"


def _heads(data: bytes) -> list[bytes]:
    """The raw header blocks of the message and of each part of a (one-level) multipart."""
    head, _, body = data.partition(b"\r\n\r\n")
    heads = [head]
    boundary = re.search(rb'boundary="([^"]+)"', head.replace(b"\r\n", b""))
    if boundary:
        for chunk in body.split(b"--" + boundary.group(1))[1:-1]:
            heads.append(chunk.strip(b"\r\n").partition(b"\r\n\r\n")[0])
    return heads


def parse(data: bytes) -> EmailMessage:
    """The message as a mail client reads it (policy.default: headers decoded)."""
    message = BytesParser(policy=policy.default).parsebytes(data)
    assert isinstance(message, EmailMessage)
    return message


def bodies(data: bytes) -> tuple[str, str]:
    """The decoded text and HTML parts, with LF line endings."""
    message = parse(data)
    text_part, html_part = message.get_body(("plain",)), message.get_body(("html",))
    assert text_part is not None and html_part is not None
    text = text_part.get_content()
    html = html_part.get_content()
    return text.replace("\r\n", "\n"), html.replace("\r\n", "\n")


class _Collector(HTMLParser):
    """Every start tag with its attributes, as a browser's tokenizer would see them."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))


def assert_inert_html(html: str) -> None:
    """No script or other active element, no event handler, no script URL in ``html``."""
    collector = _Collector()
    collector.feed(html)
    collector.close()
    assert collector.tags, "no HTML elements at all"
    for tag, attrs in collector.tags:
        assert tag not in _ACTIVE_ELEMENTS, f"<{tag}> in the HTML"
        for name, value in attrs:
            assert not name.startswith("on"), f"<{tag} {name}=...> in the HTML"
            if name in _URL_ATTRIBUTES and value is not None:
                url = _URL_NOISE.sub("", value).lower()
                assert not url.startswith(_BAD_SCHEMES), f"<{tag} {name}={value!r}> in the HTML"
            if name == "style" and value is not None:
                assert "expression(" not in value.lower() and "url(" not in value.lower(), value
