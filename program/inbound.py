"""Plain values that describe one inbound message, shared by the mailer (which reads and
classifies mail) and the monitor (which turns it into activity), so neither imports the other.

Everything here is data: no I/O, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

# The five kinds (DESIGN.md): only HUMAN counts as activity.
HUMAN, AUTO_REPLY, BOUNCE, BULK, LOOP = "human", "auto_reply", "bounce", "bulk", "loop"
KINDS = (HUMAN, AUTO_REPLY, BOUNCE, BULK, LOOP)


@dataclass(frozen=True)
class Inbound:
    """What classify found in one message.

    Addresses are lower-cased plain addr-specs.  ``reply_key`` is the key found in a recipient
    address shaped like ``program.reply_address`` (``coordinators+<key>@example.org``), not yet
    verified; ``unsubscribe`` is True when that key was ``unsubscribe-<key>`` or the reply's own
    text asks to unsubscribe.  ``log`` is True when the log address (``+log``) is among the
    recipients.  ``checkin`` is 1, 2 or 3 when the reply's own text (quotes and signature
    removed) starts with a check-in answer.  ``bounced`` lists permanently failing addresses of a
    bounce.  ``reason`` names the rule that decided ``kind``.  ``text`` is the reply's own text
    (for concern phrases and, only if privacy.store_bodies is set, for storage); it is empty for
    anything but ``human``.  ``date`` is the Date header (aware UTC) or None.
    """

    kind: str
    reason: str
    sender: str | None
    recipients: tuple[str, ...] = ()
    subject: str = ""
    message_id: str | None = None
    in_reply_to: str | None = None
    references: tuple[str, ...] = ()
    reply_key: str | None = None
    unsubscribe: bool = False
    log: bool = False
    checkin: int | None = None
    bounced: tuple[str, ...] = ()
    date: datetime | None = None
    size: int = 0
    text: str = ""
    defects: tuple[str, ...] = field(default_factory=tuple)


def needs_a_person(inbound: Inbound) -> bool:
    """False for mail a coordinator need not read: auto-replies, bounces, loops, and a reply that
    is only a check-in (the number or a few words, nothing more); True for everything else,
    newsletters included (someone may want them)."""
    if inbound.kind in (AUTO_REPLY, BOUNCE, LOOP):
        return False
    if inbound.kind == HUMAN and inbound.checkin is not None and not inbound.unsubscribe:
        words = inbound.text.split()
        return len(words) > 8 or "\n" in inbound.text.strip()
    return True
