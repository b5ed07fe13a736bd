"""Rules that tell automatic mail from a person's: pure, headers (and a parsed bounce) in.

``headers`` maps lower-case header names to their values in order (see mailer/classify.py).
Each rule returns the reason naming what matched, or None.

Auto-replies (:func:`auto_reply_reason`): RFC 3834 ``Auto-Submitted: auto-replied``;
``X-Autoreply``/``X-Autorespond``; ``Precedence: auto_reply``; Exchange's out-of-office pair;
a localized "Out of office"/"Automatic reply" subject prefix.  ``X-Auto-Response-Suppress``
alone proves nothing: Outlook puts it on ordinary mail too.

Exchange's pair: Exchange's out-of-office and other mailbox-rule replies are sent by the
"Mailbox Rules Agent" and carry ``X-MS-Exchange-Inbox-Rules-Loop: <mailbox>`` (the loop
counter of inbox rules) together with ``X-Auto-Response-Suppress: All`` and
``X-MS-Exchange-Generated-Message-Source: Mailbox Rules Agent``.  A person's mail never
carries the Inbox-Rules-Loop header, so that header with either of the other two is the pair.
Their ``Auto-Submitted`` is ``auto-generated``, not ``auto-replied``.

Bulk (:func:`bulk_reason`): mailing-list and newsletter headers, ``Precedence: list``,
no-reply senders.  ``Precedence: bulk``/``junk`` without list headers is how vacation programs
mark their replies, so :func:`late_auto_reply_reason` calls that an auto-reply, as it does
``Auto-Submitted: auto-generated`` and ``auto-notified`` once nothing more specific matched.

Bounces (:func:`read_bounce`), the automatic replies of mail systems: a top-level RFC 3464
report is read here, counting only ``Action: failed`` with a 5.x.x (or no) status; other
formats go to flufl.bounce's detectors, run one by one so the reason can name the one that
recognised the message.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from email.message import Message
from typing import Any

import flufl.bounce

from mailer.mimetext import header_params, header_text

try:  # flufl.bounce runs these in order; iterating them ourselves tells which one matched
    from flufl.bounce import _scan as _flufl_scan

    _DETECTORS: tuple[Any, ...] = tuple(getattr(_flufl_scan, "_DETECTORS", ()))
except ImportError:  # pragma: no cover - a later flufl.bounce may move it: use its public API
    _DETECTORS = ()

__all__ = [
    "auto_reply_reason",
    "bounce_subject",
    "bulk_reason",
    "clean_addresses",
    "is_daemon",
    "keyword",
    "late_auto_reply_reason",
    "read_bounce",
    "subject_prefix",
]

Headers = Mapping[str, Sequence[str]]

# Subject prefixes that mean "automatic reply", as mail systems write them.  STRONG ones count
# when followed by anything but a letter; WEAK ones (ordinary words) only when followed by a
# colon, a dash, a closing bracket or nothing: "Absence: ..." is an auto-reply, "Absence of
# data" is not.
STRONG_PREFIXES = (
    # English
    "Out of Office AutoReply", "Out of Office", "Out of the Office", "Automatic reply",
    "Auto reply", "Auto-reply", "Autoreply", "Auto response", "Auto-response", "Autoresponse",
    "Automated response", "Automatic response", "Vacation reply", "Away from the office",
    "I am out of the office", "I'm out of the office",
    # French
    "Réponse automatique", "Réponse auto", "Message d'absence", "Absent du bureau",
    # Spanish
    "Respuesta automática", "Fuera de la oficina", "Respuesta de ausencia", "Fuera de oficina",
    # German
    "Abwesenheitsnotiz", "Automatische Antwort", "Abwesenheitsmeldung", "Automatische Rückantwort",
    "Außer Haus", "Nicht im Büro",
    # Portuguese
    "Resposta automática", "Ausência temporária", "Fora do escritório",
    # Italian
    "Risposta automatica", "Fuori sede", "Fuori ufficio", "Risposta Non al computer",
    # Dutch
    "Automatisch antwoord", "Afwezigheidsmelding", "Niet aanwezig", "Automatisch bericht",
    # Polish
    "Odpowiedź automatyczna", "Automatyczna odpowiedź", "Poza biurem",
    # Finnish
    "Automaattinen vastaus", "Poissaoloilmoitus", "Lomavastaaja",
    # Swedish, Danish, Norwegian
    "Automatiskt svar", "Automatisk svar", "Autosvar", "Frånvaromeddelande", "Fraværsmelding",
    # Russian, Czech, Turkish
    "Автоматический ответ", "Автоответ", "Automatická odpověď", "Otomatik yanıt",
    # Chinese (simplified and traditional), Japanese, Korean
    "自动回复", "自動回覆", "自動回复", "自动答复", "自動返信", "自動応答", "不在通知",
    "自動送信", "자동 회신", "자동 응답",
)  # fmt: skip
WEAK_PREFIXES = (
    "Auto", "AutoReply", "Absence", "Absent", "Away", "Ausente", "Ausência", "Abwesend",
    "Afwezig", "Poissa", "Frånvaro", "Nieobecność", "不在", "休暇",
)  # fmt: skip
_SEPARATORS = (":", "：", "-", "–", "—", "]", "】", ")", "|", "!")


def _fold(text: str) -> str:
    return unicodedata.normalize("NFKC", text).casefold()


def _is_cjk(char: str) -> bool:
    return ord(char) >= 0x2E80


def _index() -> dict[str, list[tuple[str, str, bool]]]:
    """Prefixes by first character, longest first: a subject is compared with a handful."""
    found: dict[str, list[tuple[str, str, bool]]] = {}
    listed = [(_fold(p), p, True) for p in STRONG_PREFIXES]
    listed += [(_fold(p), p, False) for p in WEAK_PREFIXES]
    for folded, name, strong in sorted(listed, key=lambda item: -len(item[0])):
        found.setdefault(folded[0], []).append((folded, name, strong))
    return found


_PREFIXES = _index()


def subject_prefix(subject: str) -> str | None:
    """The auto-reply prefix ``subject`` starts with (as listed above), or None."""
    folded = _fold(subject[:200]).lstrip(" \t[(【「«*")
    for prefix, name, strong in _PREFIXES.get(folded[:1], ()):
        if not folded.startswith(prefix):
            continue
        rest = folded[len(prefix) :]
        if strong and (
            not rest or _is_cjk(prefix[-1]) or not (rest[0].isalnum() or rest[0] == "'")
        ):
            return name
        if not rest.strip() or rest.lstrip().startswith(_SEPARATORS):
            return name
    return None


def _first(headers: Headers, name: str) -> str:
    values = headers.get(name)
    return " ".join(values[0].split()) if values else ""


_COMMENT = re.compile(r"\([^()]*\)")


def keyword(value: str) -> str:
    """The first word of a structured header, lower-cased, comments and parameters dropped:
    ``"No (human); x=y"`` -> ``"no"``."""
    words = _COMMENT.sub(" ", value[:200]).split(";")[0].split()
    return words[0].strip('"').lower() if words else ""


def auto_reply_reason(headers: Headers, subject: str) -> str | None:
    """Why this is an automatic reply by a rule that names replies specifically, or None."""
    submitted = keyword(_first(headers, "auto-submitted"))
    if submitted.startswith("auto-replied"):
        return "Auto-Submitted: auto-replied"
    for name, label in (("x-autoreply", "X-Autoreply"), ("x-autorespond", "X-Autorespond")):
        value = keyword(_first(headers, name))
        if name in headers and value not in ("no", "false", "0"):
            return f"{label} header"
    for name in ("precedence", "x-precedence"):
        if keyword(_first(headers, name)) in ("auto_reply", "auto-reply"):
            return "Precedence: auto_reply"
    if "x-ms-exchange-inbox-rules-loop" in headers:
        source = _first(headers, "x-ms-exchange-generated-message-source").lower()
        if "x-auto-response-suppress" in headers or "mailbox rules agent" in source:
            return "Exchange out-of-office headers (X-MS-Exchange-Inbox-Rules-Loop)"
    prefix = subject_prefix(subject)
    if prefix is not None:
        return f"subject prefix {prefix!r}"
    return None


_NEWSLETTER_HEADERS = (
    ("x-mc-user", "Mailchimp headers"),
    ("x-campaign", "X-Campaign header"),
    ("x-campaignid", "X-CampaignID header"),
    ("x-newsletter", "X-Newsletter header"),
    ("x-csa-complaints", "X-CSA-Complaints header"),
    ("x-sfmc-stack", "Salesforce Marketing Cloud headers"),
)
_NO_REPLY = frozenset(
    {"noreply", "no-reply", "no_reply", "donotreply", "do-not-reply", "do_not_reply", "bounces"}
)


def bulk_reason(headers: Headers, sender: str | None) -> str | None:
    """Why this is list or newsletter mail, or None (our own List-Unsubscribe is a loop and
    must be checked before this)."""
    if "list-id" in headers:
        return "List-Id header"
    if "list-unsubscribe" in headers:
        reason = "List-Unsubscribe header"
        return reason + " with Feedback-ID" if "feedback-id" in headers else reason
    if keyword(_first(headers, "precedence")) == "list":
        return "Precedence: list"
    if any(name.startswith("x-mailchimp-") for name in headers):
        return "Mailchimp headers"
    for name, reason in _NEWSLETTER_HEADERS:
        if name in headers:
            return reason
    if sender and sender.partition("@")[0] in _NO_REPLY:
        return "no-reply sender"
    return None


def late_auto_reply_reason(headers: Headers) -> str | None:
    """Automatic mail by a general rule, checked after bulk: other Auto-Submitted values and
    Precedence bulk/junk."""
    submitted = keyword(_first(headers, "auto-submitted"))
    if submitted and submitted != "no":
        return f"Auto-Submitted: {submitted[:40]}"
    for name in ("precedence", "x-precedence"):
        value = keyword(_first(headers, name))
        if value in ("bulk", "junk"):
            return f"Precedence: {value}"
    return None


# --- bounces ---------------------------------------------------------------------------------

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_STATUS = re.compile(r"\b([245])\.\d{1,3}\.\d{1,3}\b")
_DAEMON = re.compile(
    r"(?:mailer[-_]?daemon|postmaster|mail[-_]?daemon|mdaemon|microsoftexchange[0-9a-f]{32}|"
    r"mail[-_]?delivery[-_]?(?:system|subsystem))",
    re.IGNORECASE,
)
_BOUNCE_SUBJECT = re.compile(
    r"\s*(?:undeliver|delivery status notification|delivery (?:failure|has failed|failed)|"
    r"mail delivery (?:failed|failure|system)|returned mail|failure notice|non[- ]?delivery|"
    r"message not delivered|delivery notification|mail system error|warning: message delayed|"
    r"delayed mail|unzustellbar|nicht zustellbar|non remis|non distribuable|"
    r"échec de (?:la )?remise|"
    r"no se puede entregar|no entregado|mensaje no entregado|não entregue|"
    r"impossibile recapitare|onbestelbaar|niedostarczon)",
    re.IGNORECASE,
)
_DSN_TYPES = ("message/delivery-status", "message/global-delivery-status")

MAX_BOUNCED = 100  # failing addresses kept
MAX_STATUS_TEXT = 128 * 1024  # characters of a delivery-status part read


def is_daemon(sender: str | None) -> bool:
    """True for a mail system's own sender (MAILER-DAEMON, postmaster, Exchange's NDR sender)."""
    return bool(sender and _DAEMON.fullmatch(sender.partition("@")[0]))


def bounce_subject(subject: str) -> bool:
    """True when ``subject`` starts like a bounce's ("Undelivered Mail", "failure notice")."""
    return bool(_BOUNCE_SUBJECT.match(subject))


def read_bounce(
    msg: Message, *, is_dsn: bool, strong: bool, defects: list[str]
) -> tuple[str, tuple[str, ...]] | None:
    """(reason, permanently failing addresses) when ``msg`` is a bounce, else None.

    ``is_dsn``: the message is a top-level RFC 3464 report, read here; ``strong``: it comes
    from a mail system, so it is a bounce even when nobody can be named.  Otherwise
    flufl.bounce's detectors decide.
    """
    if is_dsn:
        reason, failed = _dsn(msg)
        if reason:
            return reason, failed
    try:
        detector, failed, temporary = _run_detectors(msg)
    except Exception as exc:  # heuristics on broken MIME: fall back to what else we know
        defects.append(f"bounce detectors failed: {type(exc).__name__}")
        detector, failed, temporary = "", (), False
    if failed:
        return f"flufl.bounce: {detector}", failed
    if temporary:
        return f"delay notice (flufl.bounce: {detector})", ()
    if is_dsn:
        return "RFC 3464 DSN without recipients", ()
    if strong:
        return "bounce from a mailer daemon, no failed recipient found", ()
    return None


def _dsn(msg: Message) -> tuple[str, tuple[str, ...]]:
    """Read the delivery-status part of a top-level report: (reason, failed) or ("", ())."""
    payload = msg.get_payload()
    failed: list[str] = []
    seen: set[str] = set()
    for part in payload[:50] if isinstance(payload, list) else ():
        if not isinstance(part, Message):
            continue
        if header_params(str(part.get("content-type", "")))[0] not in _DSN_TYPES:
            continue
        for block in _status_blocks(part):
            action = block.get("action", "").strip().lower()
            if not action:
                continue
            status = _STATUS.search(block.get("status", ""))
            code = status.group(1) if status else ""
            state = action.split()[0].rstrip(";")
            if state in ("failed", "failure", "error"):
                state = "expired" if code == "4" else "failed"
                if state == "failed":
                    failed.append(_recipient(block))
            seen.add(state)
    bounced = clean_addresses(failed)
    if bounced:
        return "RFC 3464 DSN", bounced
    if "delayed" in seen:
        return "delay notice (RFC 3464 DSN, Action: delayed)", ()
    if "failed" in seen:  # failures without a usable address: let the detectors read the text
        return "", ()
    if "expired" in seen:
        return "RFC 3464 DSN, temporary failure (4.x.x): nobody failed permanently", ()
    if seen:
        return "RFC 3464 DSN, delivery report: nothing failed", ()
    return "", ()


def _status_blocks(part: Message) -> list[dict[str, str]]:
    payload = part.get_payload()
    if isinstance(payload, list):
        return [
            {str(k).strip().lower(): header_text(str(v)) for k, v in block.raw_items()}
            for block in payload[: MAX_BOUNCED + 1]
            if isinstance(block, Message)
        ]
    blocks: list[dict[str, str]] = []
    current: dict[str, str] = {}
    last = ""
    for line in str(payload)[:MAX_STATUS_TEXT].splitlines():
        if not line.strip():
            if current:
                blocks.append(current)
            current, last = {}, ""
        elif line[:1] in (" ", "\t") and last:
            current[last] += " " + line.strip()
        elif ":" in line:
            name, _, value = line.partition(":")
            last = name.strip().lower()
            current[last] = header_text(value.strip())
    if current:
        blocks.append(current)
    return blocks


def _recipient(block: dict[str, str]) -> str:
    """The address we sent to: Original-Recipient when given, else Final-Recipient."""
    for name in ("original-recipient", "final-recipient", "x-actual-recipient"):
        value = block.get(name, "")
        address = value.partition(";")[2] if ";" in value else value
        address = address.strip().strip("<>").strip()
        if "@" in address:
            return address
    return ""


def _run_detectors(msg: Message) -> tuple[str, tuple[str, ...], bool]:
    """(detector name, permanent failures, whether any temporary) from flufl.bounce."""
    if not _DETECTORS:
        temporary, permanent = flufl.bounce.all_failures(msg)
        return "flufl.bounce", _clean_bytes(permanent), bool(temporary)
    for detector in _DETECTORS:
        try:
            temporary, permanent = detector().process(msg)
        except Exception:  # one detector tripping over odd MIME should not stop the others
            continue
        if temporary or permanent:
            return detector.__name__, _clean_bytes(permanent), bool(temporary)
    return "", (), False


def _clean_bytes(addresses: Any) -> tuple[str, ...]:
    return clean_addresses(a.decode("ascii", "replace") for a in addresses)


def clean_addresses(addresses: Any) -> tuple[str, ...]:
    found: dict[str, None] = {}
    for address in addresses:
        address = str(address).strip().strip("<>").strip().lower()
        if "@" in address and len(address) <= 254 and not _CONTROL.search(address):
            found.setdefault(address, None)
    return tuple(sorted(found))[:MAX_BOUNCED]
