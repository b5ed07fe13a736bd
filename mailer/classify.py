"""Classify one inbound message: pure, raw bytes in, :class:`program.inbound.Inbound` out.

The rules, in the order they are tried (the first that matches decides ``kind``; ``reason``
names it):

1. ``loop``: the message's own Message-ID is one of ours (``<rapport.<32 hex>@our domain>``),
   its List-Unsubscribe is ours, or it is From our address and is not a person's reply (one
   with In-Reply-To or References and no Auto-Submitted).
2. ``bounce``: an RFC 3464 report (``multipart/report; report-type=delivery-status``) at the
   top level: only recipients with ``Action: failed`` and a 5.x.x (or no) status are
   ``bounced``; a report of delays only is a bounce that fails nobody ("delay notice").  Mail
   from a mailer daemon, with X-Failed-Recipients, or with a null Return-Path or a bounce
   subject goes to flufl.bounce's detectors for the vendor formats (mailer/autoreply.py reads
   both).  A person forwarding a bounce is none of these: the report is inside, not at the top,
   and the sender is a person.
3. ``auto_reply``: see mailer/autoreply.py (read receipts too).
4. ``bulk``: list and newsletter headers.
5. ``auto_reply`` by the general rules (other Auto-Submitted values, Precedence bulk/junk).
6. ``human``: everything else; only these get ``text`` and ``checkin`` (mailer/checkin.py).

Speed and safety: headers are parsed once, as compat32 reads them (about 25 times faster than
``policy=default``, see LIMITS.md), and the few fields used are decoded by mailer/mimetext.py.
Bodies are parsed only for bounce candidates (their first 128 KiB, by email.parser, for
flufl.bounce) and human mail (the first 1 MiB, where only the text parts are read: an
attachment is stepped over, not parsed line by line; see ``parse_text_parts``).  A header
longer than 8 KiB is cut (References keeps its end: the parent is last), at most 400 headers
and 100 References are kept, a body with more than 100 multipart or message containers is not
parsed at all and only the first 2,000 MIME boundaries are (those limits but References' are in
mailer/mimetext.py and mailer/mimeparts.py), so no input costs more than a large ordinary
message.
Nothing raises: a message that defeats the parser is classified from whatever could be read,
and what was wrong is listed in ``defects``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from mailer.autoreply import (
    auto_reply_reason,
    bounce_subject,
    bulk_reason,
    clean_addresses,
    is_daemon,
    keyword,
    late_auto_reply_reason,
    read_bounce,
)
from mailer.checkin import asks_unsubscribe, checkin_answer, own_text
from mailer.mimeparts import parse_message, parse_text_parts
from mailer.mimetext import (
    Headers,
    body_text,
    cap_headers,
    decode_words,
    header_date,
    header_fields,
    header_params,
    parse_head,
    split_head,
)
from program.errors import InputError, Problem
from program.inbound import AUTO_REPLY, BOUNCE, BULK, HUMAN, LOOP, Inbound

__all__ = ["Mailbox", "classify", "classify_file"]

MAX_REFERENCES = 100  # the first (thread root) and the last 99
MAX_ADDRESSES = 100  # recipients kept
MAX_BODY = 1024 * 1024  # bytes of a human message's body parsed
MAX_BOUNCE_BODY = 128 * 1024  # bytes of a bounce's body parsed: the report comes first
MAX_TEXT = 20_000  # characters of own text kept
MAX_DEFECTS = 20
MAX_REPEATS = 5  # occurrences of one address header read (To: may appear more than once)

_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"?|\((?:[^()\\]|\\.)*\)?')
_ADDRESS = re.compile(  # bounded runs: a long token without "@" costs linear time, not quadratic
    r"<\s*([^<>\s]{0,254}@[^<>\s]{0,254}?)\s*>"
    r"|([^\s<>,;:\"()\[\]]{1,64}@[^\s<>,;:\"()\[\]]{1,254})"
)
_MSG_ID = re.compile(r"<[^<>\s]{1,250}>")
_KEY = re.compile(r"[a-z0-9][a-z0-9._=-]{0,99}")
_KEY_HEADERS = (
    "to", "cc", "bcc", "delivered-to", "x-original-to", "envelope-to", "x-envelope-to",
    "x-delivered-to", "x-rcpt-to", "resent-to", "resent-cc",
)  # fmt: skip


@dataclass(frozen=True)
class Mailbox:
    """What the program's addresses look like (``[program]`` in config.toml).

    ``reply_address`` holds ``{key}``; ``languages`` are those whose check-in words count.
    """

    from_address: str
    reply_address: str
    languages: tuple[str, ...] = ("en", "fr", "es")


@dataclass(frozen=True)
class _Program:
    from_address: str
    own_id: re.Pattern[str]
    key_prefix: str | None
    key_suffix: str


@lru_cache(maxsize=16)
def _program(mailbox: Mailbox) -> _Program:
    from_address = mailbox.from_address.strip().lower()
    domain = from_address.rpartition("@")[2]
    own_id = re.compile(rf"<rapport\.[0-9a-f]{{32}}@{re.escape(domain)}>", re.IGNORECASE)
    template = mailbox.reply_address.strip().lower()
    prefix, found, suffix = template.partition("{key}")
    return _Program(from_address, own_id, prefix if found else None, suffix)


def classify(
    raw: bytes | bytearray | memoryview, mailbox: Mailbox, *, headers_only: bool = False
) -> Inbound:
    """Classify one message (see the module docstring); never raises.

    ``headers_only``: ``raw`` is only the header block (the message was too large to fetch), so
    the kind comes from headers alone and there is no text or check-in.
    """
    try:
        return _classify(bytes(raw), mailbox, headers_only)
    except Exception as exc:  # a parser bug must not stop the inbox: record and move on
        size = len(raw) if isinstance(raw, bytes | bytearray | memoryview) else 0
        return Inbound(
            kind=HUMAN,
            reason=f"unparseable message ({type(exc).__name__})",
            sender=None,
            size=size,
            defects=(f"classify failed: {type(exc).__name__}",),
        )


def classify_file(path: str | Path, mailbox: Mailbox) -> dict[str, Any]:
    """Read and classify one file: the JSON-ready object ``rapport inbox classify`` prints.

    Raises :class:`InputError` naming the file when it cannot be read.
    """
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise InputError([Problem(str(path), None, None, None, f"cannot read: {reason}")]) from exc
    found = classify(raw, mailbox)
    return {
        "file": str(path),
        "kind": found.kind,
        "sender": found.sender,
        "reply_key": found.reply_key,
        "in_reply_to": found.in_reply_to,
        "checkin": found.checkin,
        "bounced": list(found.bounced),
        "reason": found.reason,
    }


def _classify(raw: bytes, mailbox: Mailbox, headers_only: bool) -> Inbound:
    program = _program(mailbox)
    defects: list[str] = []
    head, body = split_head(raw)
    head = cap_headers(head, defects)
    top = parse_head(head)
    headers = header_fields(top)
    defects.extend(type(d).__name__ for d in top.defects)

    sender = _sender(headers)
    subject = decode_words(_first(headers, "subject"))[:1000]
    message_id = _message_id(_first(headers, "message-id"))
    in_reply_to = _message_id(_first(headers, "in-reply-to"))
    references = _references(headers.get("references", []))
    reply_key, unsubscribe, log = _keys(headers, program)
    found: dict[str, Any] = {
        "sender": sender,
        "recipients": tuple(_addresses(headers, ("to", "cc", "bcc"))[:MAX_ADDRESSES]),
        "subject": subject,
        "message_id": message_id,
        "in_reply_to": in_reply_to,
        "references": references,
        "reply_key": reply_key,
        "log": log,
        "date": header_date(_first(headers, "date")),
        "size": len(raw),
    }

    def result(kind: str, reason: str, **more: Any) -> Inbound:
        more.setdefault("unsubscribe", unsubscribe)
        more.update(found)
        return Inbound(kind=kind, reason=reason, defects=tuple(defects[:MAX_DEFECTS]), **more)

    loop = _loop_reason(headers, program, sender, message_id, in_reply_to, references)
    if loop:
        return result(LOOP, loop)

    ctype, params = header_params(_first(headers, "content-type"))
    report = params.get("report-type", "").lower() if ctype == "multipart/report" else ""
    auto = auto_reply_reason(headers, subject)
    strong = is_daemon(sender) or "x-failed-recipients" in headers
    weak = bounce_subject(subject) or (_null_return_path(headers) and auto is None)
    if report in ("delivery-status", "global-delivery-status") or strong or weak:
        bounce = _bounce(head, body, headers, report, strong, headers_only, defects)
        if bounce is not None:
            return result(BOUNCE, bounce[0], bounced=bounce[1])
    if report == "disposition-notification":
        return result(AUTO_REPLY, "read receipt (message disposition notification)")
    if report == "feedback-report":
        return result(AUTO_REPLY, "abuse feedback report (ARF)")
    if auto:
        return result(AUTO_REPLY, auto)
    bulk = bulk_reason(headers, sender)
    if bulk:
        return result(BULK, bulk)
    late = late_auto_reply_reason(headers)
    if late:
        return result(AUTO_REPLY, late)

    reason = "no automatic-mail signs"
    if keyword(_first(headers, "auto-submitted")) == "no":
        reason = "Auto-Submitted: no"
    text = ""
    if not headers_only:
        msg = parse_text_parts(head, top, body, MAX_BODY, defects)
        if msg is not None:
            try:
                text = own_text(body_text(msg), MAX_TEXT)
            except Exception as exc:  # decoding trouble: keep the classification
                defects.append(f"text unreadable: {type(exc).__name__}")
    return result(
        HUMAN,
        reason,
        checkin=checkin_answer(text, mailbox.languages) if text else None,
        unsubscribe=unsubscribe or asks_unsubscribe(text, subject),
        text=text,
    )


# --- headers -------------------------------------------------------------------------------


def _first(headers: Headers, name: str) -> str:
    values = headers.get(name)
    return values[0] if values else ""


def _address_list(value: str) -> list[str]:
    """The addr-specs in one address-list header, in order, as written.

    A regular expression instead of email.utils.getaddresses, which took a third of the time
    of classifying: quoted display names and comments are removed first, then every <addr>
    and every bare local@domain is taken.  Source routes (<@relay:user@host>) keep the user.
    """
    if "@" not in value:
        return []
    value = _QUOTED.sub(" ", value) if ('"' in value or "(" in value) else value
    found: list[str] = []
    for match in _ADDRESS.finditer(value):
        address = match.group(1) if match.group(1) is not None else match.group(2)
        found.append(address.rpartition(":")[2] if address.startswith("@") else address)
    return found


def _addresses(headers: Headers, names: tuple[str, ...]) -> list[str]:
    found: dict[str, None] = {}
    for name in names:
        for value in headers.get(name, [])[:MAX_REPEATS]:
            for address in _address_list(value):
                address = address.lower()
                if "@" in address and len(address) <= 254:
                    found.setdefault(address, None)
    return list(found)


def _sender(headers: Headers) -> str | None:
    """From's (else Sender's) address; a bare "MAILER-DAEMON" without a domain counts."""
    for name in ("from", "sender"):
        value = _first(headers, name)
        addresses = _address_list(value)
        if addresses:
            return addresses[0].lower()[:254]
        bare = _QUOTED.sub(" ", value).replace("<", " ").replace(">", " ").split()
        if len(bare) == 1:
            return bare[0].lower()[:254]
    return None


def _message_id(value: str) -> str | None:
    match = _MSG_ID.search(value)
    if match:
        return match.group()
    value = value.strip()
    return value[:250] if "@" in value and " " not in value else None


def _references(values: list[str]) -> tuple[str, ...]:
    ids = _MSG_ID.findall(" ".join(values))
    if len(ids) > MAX_REFERENCES:
        ids = ids[:1] + ids[-(MAX_REFERENCES - 1) :]
    return tuple(ids)


def _keys(headers: Headers, program: _Program) -> tuple[str | None, bool, bool]:
    """(reply key, unsubscribe, log) from recipient addresses shaped like the reply address."""
    prefix, suffix = program.key_prefix, program.key_suffix
    if prefix is None:
        return None, False, False
    key: str | None = None
    unsubscribe = log = False
    for address in _addresses(headers, _KEY_HEADERS):
        if not (address.startswith(prefix) and address.endswith(suffix)):
            continue
        found = address[len(prefix) : len(address) - len(suffix)]
        if not _KEY.fullmatch(found):
            continue
        if found == "log":
            log = True
        elif found.startswith("unsubscribe"):
            unsubscribe = True
            rest = found[len("unsubscribe") :].lstrip("-")
            key = key or rest or None
        elif key is None:
            key = found
    return key, unsubscribe, log


def _null_return_path(headers: Headers) -> bool:
    values = headers.get("return-path", [])
    return bool(values) and values[0].strip() in ("<>", "")


def _loop_reason(
    headers: Headers,
    program: _Program,
    sender: str | None,
    message_id: str | None,
    in_reply_to: str | None,
    references: tuple[str, ...],
) -> str | None:
    if message_id and program.own_id.fullmatch(message_id):
        return "our Message-ID came back"
    unsubscribe = _first(headers, "list-unsubscribe").lower()
    if program.key_prefix and f"{program.key_prefix}unsubscribe" in unsubscribe:
        return "our List-Unsubscribe came back"
    if sender and sender == program.from_address:
        submitted = keyword(_first(headers, "auto-submitted"))
        replying = bool(in_reply_to or references)
        if not replying or submitted not in ("", "no"):
            return "From is our own address"
    return None


# --- bodies and bounces ----------------------------------------------------------------------


def _bounce(
    head: bytes,
    body: bytes,
    headers: Headers,
    report: str,
    strong: bool,
    headers_only: bool,
    defects: list[str],
) -> tuple[str, tuple[str, ...]] | None:
    """(reason, permanently failing addresses) when this is a bounce, else None."""
    is_dsn = report in ("delivery-status", "global-delivery-status")
    msg = None if headers_only else parse_message(head, body, MAX_BOUNCE_BODY, defects)
    if msg is None:
        if not (is_dsn or strong):
            return None
        listed = headers.get("x-failed-recipients", [])
        failed = clean_addresses(a for value in listed for a in _address_list(value))
        what = "RFC 3464 DSN" if is_dsn else "bounce from a mailer daemon"
        return f"{what} (headers only)", failed
    return read_bounce(msg, is_dsn=is_dsn, strong=strong, defects=defects)
