"""Reply keys: the unguessable token in ``Reply-To: coordinators+<key>@example.org``.

A key is an HMAC-SHA256 of the outbox row's idempotency key under the program's secret, written
in lowercase base32 (mail systems may fold the case of a local part, so the alphabet is caseless)
and cut to 20 characters, 100 bits.  The outbox row stores the key; a reply is attributed by
looking the key up and checking it again against the row, so a forged or mistyped key counts for
nothing.  Pure: no I/O, no clock.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

KEY_LENGTH = 20


def reply_key(secret: bytes, idempotency_key: str) -> str:
    """The reply key for the outbox row whose idempotency key is ``idempotency_key``."""
    digest = hmac.new(secret, idempotency_key.encode("utf-8"), hashlib.sha256).digest()
    return base64.b32encode(digest).decode("ascii").lower()[:KEY_LENGTH]


def message_id(secret: bytes, idempotency_key: str, domain: str) -> str:
    """``<rapport.<32 hex>@domain>`` for an outbox row: stable for the row, so a re-send after
    ``rapport outbox retry`` carries the same id, and keyed with the secret, so nobody can work
    out another participant's Message-ID to forge a reply to it.  No personal data."""
    digest = hmac.new(secret, b"message-id:" + idempotency_key.encode("utf-8"), hashlib.sha256)
    return f"<rapport.{digest.hexdigest()[:32]}@{domain.strip().lower()}>"


def verify(secret: bytes, idempotency_key: str, candidate: str) -> bool:
    """True when ``candidate`` is the reply key of that row (compared in constant time)."""
    expected = reply_key(secret, idempotency_key)
    return hmac.compare_digest(expected, candidate.strip().lower())
