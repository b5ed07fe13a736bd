"""The reads and writes behind recording inbound mail (monitor/signals.py): statements built
once, and lookups made for a whole batch at a time.

Building a SQLAlchemy statement costs far more than running it, and a poll records thousands of
messages, so every statement here is built at import and bound by name.  Lists of values are
read in ``IN`` lists of at most :data:`MAX_IN`.  The caller owns the transaction.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, insert, select, update

from program import replykey
from program.inbound import Inbound
from program.models import (
    ACTIVITY,
    ALIASES,
    INBOUND,
    MEMBERSHIPS,
    OUTBOX,
    PARTICIPANTS,
    PARTNERSHIPS,
    REHEARSAL,
    ROUNDS,
    SUPPRESSIONS,
)

MAX_THREAD_IDS = 50
MAX_IN = 500  # values in one IN list

SEEN = select(INBOUND.c.id).where(INBOUND.c.message_id == bindparam("b_mid")).limit(1)
EMAIL_OF = select(PARTICIPANTS.c.email).where(PARTICIPANTS.c.id == bindparam("b_id"))
BY_KEY = select(OUTBOX.c.id, OUTBOX.c.key, OUTBOX.c.participant_id, OUTBOX.c.partnership_id).where(
    OUTBOX.c.reply_key == bindparam("b_key")
)
BY_KEYS = select(
    OUTBOX.c.id, OUTBOX.c.key, OUTBOX.c.participant_id, OUTBOX.c.partnership_id, OUTBOX.c.reply_key
).where(OUTBOX.c.reply_key.in_(bindparam("b_keys", expanding=True)))
BY_THREADS = select(
    OUTBOX.c.id, OUTBOX.c.participant_id, OUTBOX.c.partnership_id, OUTBOX.c.message_id
).where(
    OUTBOX.c.message_id.in_(bindparam("b_ids", expanding=True)),
    OUTBOX.c.participant_id.is_not(None),
    OUTBOX.c.key.not_like(REHEARSAL + "%"),
)
SEEN_ANY = select(INBOUND.c.message_id).where(
    INBOUND.c.message_id.in_(bindparam("b_mids", expanding=True))
)
PEOPLE = select(PARTICIPANTS.c.email, PARTICIPANTS.c.id).where(
    PARTICIPANTS.c.email.in_(bindparam("b_emails", expanding=True))
)
ALIASED = select(ALIASES.c.email, ALIASES.c.participant_id).where(
    ALIASES.c.email.in_(bindparam("b_emails", expanding=True))
)
INBOUND_IDS = select(INBOUND.c.uid, INBOUND.c.id).where(
    INBOUND.c.source == bindparam("b_source"),
    INBOUND.c.folder == bindparam("b_folder"),
    INBOUND.c.uidvalidity == bindparam("b_validity"),
    INBOUND.c.uid.in_(bindparam("b_uids", expanding=True)),
)
CURRENT = (
    select(MEMBERSHIPS.c.partnership_id)
    .join(PARTNERSHIPS, PARTNERSHIPS.c.id == MEMBERSHIPS.c.partnership_id)
    .join(ROUNDS, ROUNDS.c.id == MEMBERSHIPS.c.round_id)
    .where(
        MEMBERSHIPS.c.participant_id == bindparam("b_id"),
        PARTNERSHIPS.c.status == "active",
        ROUNDS.c.status == "active",
    )
    .order_by(ROUNDS.c.start.desc())
    .limit(1)
)
MEMBERS = (
    select(PARTICIPANTS.c.email, PARTICIPANTS.c.id)
    .join(MEMBERSHIPS, MEMBERSHIPS.c.participant_id == PARTICIPANTS.c.id)
    .where(MEMBERSHIPS.c.partnership_id == bindparam("b_id"))
)
MEMBER_ALIASES = (
    select(ALIASES.c.email, ALIASES.c.participant_id)
    .join(MEMBERSHIPS, MEMBERSHIPS.c.participant_id == ALIASES.c.participant_id)
    .where(MEMBERSHIPS.c.partnership_id == bindparam("b_id"))
)
SUPPRESSED = select(SUPPRESSIONS.c.id).where(SUPPRESSIONS.c.email == bindparam("b_email"))
INSERT_INBOUND = insert(INBOUND)
INSERT_ACTIVITY = insert(ACTIVITY)
INSERT_SUPPRESSION = insert(SUPPRESSIONS)
MARK_BOUNCING = (
    update(PARTICIPANTS)
    .where(PARTICIPANTS.c.id == bindparam("b_id"), PARTICIPANTS.c.bouncing_since.is_(None))
    .values(bouncing_since=bindparam("b_now"))
)


def seen(connection: Connection, message_id: str) -> bool:
    """True when a message with this Message-ID was already recorded."""
    return connection.execute(SEEN, {"b_mid": message_id}).first() is not None


def suppress(connection: Connection, email: str, reason: str, detail: str, now: datetime) -> bool:
    if connection.execute(SUPPRESSED, {"b_email": email}).first() is not None:
        return False
    connection.execute(
        INSERT_SUPPRESSION,
        {"email": email, "reason": reason, "detail": detail[:1000], "created_at": now},
    )
    return True


def verified(connection: Connection, key: str, secret: bytes) -> Any:
    """The outbox row a reply key names, if its HMAC verifies (never a rehearsal's row)."""
    row = connection.execute(BY_KEY, {"b_key": key}).first()
    if (
        row is not None
        and not row.key.startswith(REHEARSAL)
        and replykey.verify(secret, row.key, key)
    ):
        return row
    return None


def chunks(values: Sequence[str]) -> Iterator[list[str]]:
    for start in range(0, len(values), MAX_IN):
        yield list(values[start : start + MAX_IN])


def stored(connection: Connection, message_ids: list[str]) -> set[str]:
    """Which of these Message-IDs were recorded before (see :func:`seen`)."""
    found: set[str] = set()
    for chunk in chunks(sorted(set(message_ids))):
        found.update(connection.execute(SEEN_ANY, {"b_mids": chunk}).scalars())
    return found


def thread_ids(inbound: Inbound) -> list[str]:
    return [i for i in (inbound.in_reply_to, *inbound.references) if i][:MAX_THREAD_IDS]


def threads(connection: Connection, message_ids: set[str]) -> dict[str, list[Any]]:
    """Message-ID -> the outbox rows (of a participant, not a rehearsal) sent with it.

    A reply's thread is the newest of the rows its In-Reply-To and References name.
    """
    found: dict[str, list[Any]] = {}
    for chunk in chunks(sorted(message_ids)):
        for row in connection.execute(BY_THREADS, {"b_ids": chunk}):
            found.setdefault(row.message_id, []).append(row)
    return found


def inserted_ids(connection: Connection, rows: list[dict[str, Any]]) -> list[int]:
    """The ids of ``rows`` just inserted, in order, read back by their unique key (source,
    folder, uidvalidity, uid): portable, and cheaper than RETURNING row by row."""
    ids: dict[tuple[str, str, int, int], int] = {}
    places: dict[tuple[str, str, int], list[int]] = {}
    for row in rows:
        places.setdefault((row["source"], row["folder"], row["uidvalidity"]), []).append(row["uid"])
    for (source, folder, validity), uids in places.items():
        for start in range(0, len(uids), MAX_IN):
            params = {
                "b_source": source,
                "b_folder": folder,
                "b_validity": validity,
                "b_uids": uids[start : start + MAX_IN],
            }
            for uid, inbound_id in connection.execute(INBOUND_IDS, params):
                ids[(source, folder, validity, uid)] = inbound_id
    return [ids[(r["source"], r["folder"], r["uidvalidity"], r["uid"])] for r in rows]
