"""The weekly report's per-partnership details, read in batches: members, nudges, notes, events.

monitor/report.py picks the partnerships a coordinator must see; this module fetches what their
cards show.  Each function takes the listed partnership ids and returns a mapping from id to that
partnership's rows, reading them in chunks of 500 ids (one query per chunk, never one per
partnership), so a report costs a few queries whatever the network's size.

Rows are plain, JSON-safe dicts (they end up in the report's outbox payload), except the activity
events, which monitor/cards.py reads as they come.  Dates are ISO strings, UTC; ``now`` is aware.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, select

from monitor.cards import aware
from monitor.nudges import nudge_day
from program.models import (
    ACTIVITY,
    COORDINATORS,
    MEMBERSHIPS,
    NOTES,
    OUTBOX,
    PARTICIPANTS,
    SENT,
    SUPPRESSIONS,
)

__all__ = ["activity", "members", "notes", "nudges"]

_CHUNK = 500  # ids per IN (...) list: well under SQLite's and PostgreSQL's parameter limits


def members(
    connection: Connection, ids: Sequence[int], now: datetime
) -> defaultdict[int, list[dict[str, Any]]]:
    """Each partnership's members in their order (member_a, member_b, ...)."""
    found: defaultdict[int, list[dict[str, Any]]] = defaultdict(list)
    for chunk in _chunks(ids):
        query = (
            select(
                MEMBERSHIPS.c.partnership_id,
                PARTICIPANTS.c.id,
                PARTICIPANTS.c.name,
                PARTICIPANTS.c.email,
                PARTICIPANTS.c.country,
                PARTICIPANTS.c.timezone,
                PARTICIPANTS.c.status,
                PARTICIPANTS.c.bouncing_since,
                SUPPRESSIONS.c.reason.label("suppressed"),
            )
            .join(PARTICIPANTS, PARTICIPANTS.c.id == MEMBERSHIPS.c.participant_id)
            .outerjoin(SUPPRESSIONS, SUPPRESSIONS.c.email == PARTICIPANTS.c.email)
            .where(MEMBERSHIPS.c.partnership_id.in_(chunk))
            .order_by(MEMBERSHIPS.c.partnership_id, MEMBERSHIPS.c.position)
        )
        for m in connection.execute(query):
            bouncing = m.bouncing_since is not None and aware(m.bouncing_since) <= now
            found[m.partnership_id].append(
                {
                    "id": m.id,
                    "name": m.name,
                    "email": m.email,
                    "country": m.country,
                    "timezone": m.timezone,
                    "status": m.status,
                    "bouncing": bouncing,
                    "suppressed": m.suppressed,
                    "silent": False,
                }
            )
    return found


def nudges(connection: Connection, ids: Sequence[int]) -> defaultdict[int, list[dict[str, Any]]]:
    """The nudges sent about each partnership, oldest first (rehearsals left out).

    Their key is ``nudge/<partnership>/<level>/...``; level ``pair`` is template ``nudge_pair``.
    """
    found: defaultdict[int, list[dict[str, Any]]] = defaultdict(list)
    for chunk in _chunks(ids):
        query = (
            select(
                OUTBOX.c.partnership_id,
                OUTBOX.c.key,
                OUTBOX.c.to_address,
                OUTBOX.c.sent_at,
                OUTBOX.c.due_at,
                func.coalesce(PARTICIPANTS.c.name, COORDINATORS.c.name).label("name"),
            )
            .outerjoin(PARTICIPANTS, PARTICIPANTS.c.id == OUTBOX.c.participant_id)
            .outerjoin(COORDINATORS, COORDINATORS.c.id == OUTBOX.c.coordinator_id)
            .where(
                OUTBOX.c.kind == "nudge",
                OUTBOX.c.status == SENT,
                OUTBOX.c.partnership_id.in_(chunk),
                OUTBOX.c.key.startswith("nudge/", autoescape=True),
            )
            .order_by(OUTBOX.c.partnership_id, OUTBOX.c.sent_at, OUTBOX.c.id)
        )
        for n in connection.execute(query):
            level = n.key.split("/")[2] if n.key.count("/") >= 2 else ""
            sent = aware(n.sent_at) if n.sent_at is not None else None
            found[n.partnership_id].append(
                {
                    "template": level if level.startswith("nudge_") else f"nudge_{level}",
                    "to": {"name": n.name or "", "email": n.to_address},
                    # The coordinators' alert dates nudges with the same function.
                    "sent": nudge_day(sent, aware(n.due_at)),
                    "sent_at": sent.isoformat() if sent else None,
                }
            )
    return found


def notes(
    connection: Connection, ids: Sequence[int], now: datetime
) -> defaultdict[int, list[dict[str, Any]]]:
    """The coordinators' notes on each partnership up to ``now``, oldest first."""
    found: defaultdict[int, list[dict[str, Any]]] = defaultdict(list)
    for chunk in _chunks(ids):
        query = (
            select(NOTES.c.partnership_id, NOTES.c.text, NOTES.c.created_at)
            .where(NOTES.c.partnership_id.in_(chunk), NOTES.c.created_at <= now)
            .order_by(NOTES.c.partnership_id, NOTES.c.created_at, NOTES.c.id)
        )
        for n in connection.execute(query):
            found[n.partnership_id].append(
                {"text": n.text, "date": aware(n.created_at).date().isoformat()}
            )
    return found


def activity(
    connection: Connection, ids: Sequence[int], now: datetime
) -> defaultdict[int, list[Any]]:
    """Each partnership's activity events up to ``now``."""
    found: defaultdict[int, list[Any]] = defaultdict(list)
    for chunk in _chunks(ids):
        query = select(
            ACTIVITY.c.partnership_id,
            ACTIVITY.c.participant_id,
            ACTIVITY.c.kind,
            ACTIVITY.c.value,
            ACTIVITY.c.occurred_at,
        ).where(ACTIVITY.c.partnership_id.in_(chunk), ACTIVITY.c.occurred_at <= now)
        for event in connection.execute(query):
            found[event.partnership_id].append(event)
    return found


def _chunks(ids: Sequence[int]) -> Iterable[list[int]]:
    for start in range(0, len(ids), _CHUNK):
        yield list(ids[start : start + _CHUNK])
