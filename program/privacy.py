"""Forgetting a person and purging old inbound metadata (GDPR-style erasure and retention).

``rapport participant forget EMAIL`` erases what identifies a participant and keeps only an
anonymous tally: their row stays (so partnerships, memberships and activity counts still add up)
but is renamed "Forgotten participant", with an address at the reserved ``.invalid`` domain and
every free-text field emptied; it is marked withdrawn, so nothing is planned for it again.  What
else named them goes: their aliases, their suppression (the address no longer exists in Rapport,
so nothing can be sent to it; a re-import would bring it back), the inbound rows they sent (the
activity events stay, unlinked), the JSON payloads of outbox rows that mention them (mail still
waiting is cancelled first; mail already sent keeps only its metadata, addressed to the
placeholder when it was theirs), match proposals involving them, and their name in coordinators'
notes and in health snapshots' reasons, replaced by "[forgotten]".  One transaction: all or
nothing.

The daily job calls :func:`purge`: inbound rows older than ``privacy.retain_days`` (by arrival)
are deleted, their activity events kept but unlinked, and payloads of outbox rows sent before the
same horizon are dropped (a sent message never needs its payload again).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Connection, delete, func, or_, select, update
from sqlmodel import Session

from program.errors import NotFound
from program.models import (
    ACTIVITY,
    ALIASES,
    CANCELLED,
    HELD,
    INBOUND,
    MEMBERSHIPS,
    NOTES,
    OUTBOX,
    PARTICIPANTS,
    PROPOSALS,
    SENDABLE,
    SNAPSHOTS,
    SUPPRESSIONS,
)

__all__ = ["Forgotten", "Purged", "forget", "purge"]

FORGOTTEN_NAME = "Forgotten participant"
PLACEHOLDER = "[forgotten]"
_BATCH = 500
_WHY = "cancelled: a participant was forgotten"


@dataclass
class Forgotten:
    """What ``forget`` erased, counted (the tally is all that remains)."""

    participant_id: int
    inbound: int = 0
    payloads: int = 0
    cancelled: int = 0
    aliases: int = 0
    notes: int = 0
    snapshots: int = 0
    proposals: int = 0
    suppressions: int = 0


@dataclass
class Purged:
    """What one retention pass deleted."""

    inbound: int = 0
    payloads: int = 0


def forget(email: str, *, session: Session, now: datetime) -> Forgotten:
    """Erase the participant ``email`` (see the module docstring); NotFound if unknown."""
    connection = session.connection()
    address = email.strip().lower()
    person = connection.execute(select(PARTICIPANTS).where(PARTICIPANTS.c.email == address)).first()
    if person is None:
        raise NotFound(f"participant {address}: not found (already forgotten?)")
    pid = cast(int, person.id)
    result = Forgotten(pid)
    aliases = list(
        connection.execute(select(ALIASES.c.email).where(ALIASES.c.participant_id == pid)).scalars()
    )
    addresses = [address, *aliases]
    placeholder = f"forgotten-{pid}@forgotten.invalid"
    names = sorted({person.name, *_first(person.name)}, key=len, reverse=True)

    # Mail: what waits for them or names them is cancelled; every payload naming them dropped.
    mentions = [OUTBOX.c.payload.contains(a, autoescape=True) for a in addresses]
    mentions.append(OUTBOX.c.payload.contains(json.dumps(person.name)[1:-1], autoescape=True))
    theirs = or_(OUTBOX.c.participant_id == pid, OUTBOX.c.to_address.in_(addresses), *mentions)
    result.cancelled = connection.execute(
        update(OUTBOX)
        .where(theirs, OUTBOX.c.status.in_((*SENDABLE, *HELD)))
        .values(
            status=CANCELLED, last_error="cancelled: a participant was forgotten", updated_at=now
        )
    ).rowcount
    result.payloads = connection.execute(
        update(OUTBOX).where(or_(*mentions)).values(payload=None, updated_at=now)
    ).rowcount
    connection.execute(
        update(OUTBOX)
        .where(or_(OUTBOX.c.participant_id == pid, OUTBOX.c.to_address.in_(addresses)))
        .values(to_address=placeholder, updated_at=now)
    )

    # Inbound mail they sent: gone; the activity it showed stays, unlinked from it.
    inbound_ids = list(
        connection.execute(
            select(INBOUND.c.id).where(
                or_(INBOUND.c.participant_id == pid, INBOUND.c.sender.in_(addresses))
            )
        ).scalars()
    )
    result.inbound = _delete_inbound(connection, inbound_ids)

    result.aliases = connection.execute(
        delete(ALIASES).where(ALIASES.c.participant_id == pid)
    ).rowcount
    result.suppressions = connection.execute(
        delete(SUPPRESSIONS).where(SUPPRESSIONS.c.email.in_(addresses))
    ).rowcount
    result.proposals = connection.execute(
        delete(PROPOSALS).where(
            or_(PROPOSALS.c.participant_id == pid, PROPOSALS.c.partner_id == pid),
            PROPOSALS.c.status != "applied",
        )
    ).rowcount
    # Their names in what coordinators wrote and health said, in their own partnerships only
    # (a first name alone would catch namesakes elsewhere).
    partnerships = list(
        connection.execute(
            select(MEMBERSHIPS.c.partnership_id).where(MEMBERSHIPS.c.participant_id == pid)
        ).scalars()
    )
    result.notes = _scrub(connection, NOTES, "text", names, partnerships, plain=True)
    result.snapshots = _scrub(connection, SNAPSHOTS, "reasons", names, partnerships, plain=False)

    connection.execute(
        update(PARTICIPANTS)
        .where(PARTICIPANTS.c.id == pid)
        .values(
            email=placeholder,
            name=FORGOTTEN_NAME,
            career_stage="",
            sector="",
            interests="",
            status="withdrawn",
            bouncing_since=None,
            updated_at=now,
        )
    )
    return result


def purge(connection: Connection, *, retain_days: int, now: datetime) -> Purged:
    """Delete inbound rows older than ``retain_days`` and old sent payloads (0: keep all)."""
    result = Purged()
    if retain_days <= 0:
        return result
    horizon = now - timedelta(days=retain_days)
    arrived = func.coalesce(INBOUND.c.received_at, INBOUND.c.created_at)
    while True:
        ids = list(
            connection.execute(
                select(INBOUND.c.id).where(arrived < horizon).limit(_BATCH)
            ).scalars()
        )
        if not ids:
            break
        result.inbound += _delete_inbound(connection, ids)
    result.payloads = connection.execute(
        update(OUTBOX)
        .where(OUTBOX.c.payload.is_not(None), OUTBOX.c.sent_at < horizon)
        .values(payload=None)
    ).rowcount
    return result


def _delete_inbound(connection: Connection, ids: list[int]) -> int:
    deleted = 0
    for start in range(0, len(ids), _BATCH):
        chunk = ids[start : start + _BATCH]
        connection.execute(
            update(ACTIVITY).where(ACTIVITY.c.inbound_id.in_(chunk)).values(inbound_id=None)
        )
        deleted += connection.execute(delete(INBOUND).where(INBOUND.c.id.in_(chunk))).rowcount
    return deleted


def _first(name: str) -> list[str]:
    """The first name alone, as health's reasons and nudges use it ("Maria (PL)")."""
    parts = name.split()
    return [parts[0]] if len(parts) > 1 else []


def _scrub(
    connection: Connection,
    table: Any,
    column: str,
    names: list[str],
    partnerships: list[int],
    *,
    plain: bool,
) -> int:
    """Replace ``names`` in ``table.column`` of those partnerships' rows by the placeholder."""
    col = table.c[column]
    wanted = [n for n in names if n.strip()]
    if not wanted or not partnerships:
        return 0
    rows = connection.execute(
        select(table.c.id, col).where(
            table.c.partnership_id.in_(partnerships),
            or_(*(col.contains(n, autoescape=True) for n in wanted)),
        )
    ).all()
    for row_id, text in rows:
        if plain:
            new = _replace(text, wanted)
        else:
            new = json.dumps([_replace(r, wanted) for r in json.loads(text)], ensure_ascii=False)
        connection.execute(update(table).where(table.c.id == row_id).values({column: new}))
    return len(rows)


def _replace(text: str, names: list[str]) -> str:
    for name in names:  # longest first, so "Maria Nowak" goes before "Maria"
        text = text.replace(name, PLACEHOLDER)
    return text
