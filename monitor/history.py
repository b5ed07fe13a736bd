"""What judging a partnership needs from the database: its members and the events that count.

monitor/judging.py reads a block of partnerships at a time through these statements.  Only the
events a judgement depends on are fetched (:func:`relevant`: nothing before a partnership's last
confirmed contact but its unsubscribes and concerns, which count whenever they came); the last
contact itself is found in SQL.  Times are read without the column type's conversion and parsed
here (:func:`instant`), once per distinct value, which is several times cheaper at millions of
rows.  The statements take a block's ids as one expanding parameter, so each is compiled once.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BindParameter,
    Connection,
    String,
    and_,
    bindparam,
    func,
    literal,
    or_,
    select,
    type_coerce,
)

from monitor.health import Event, Member
from program.models import ACTIVITY, MEMBERSHIPS, PARTICIPANTS, PARTNERSHIPS

__all__ = [
    "MemberInfo",
    "always",
    "aware",
    "events_since_contact",
    "instant",
    "members",
    "relevant",
]

# Event kinds that count whenever they came, so are read even before the last contact.
ALWAYS_KINDS = ("unsubscribe", "concern")
_IDS: BindParameter[list[int]] = bindparam("ids", expanding=True)


@dataclass(frozen=True, slots=True)
class MemberInfo:
    """A member as nudges and the CLI need them (health's Member holds less)."""

    participant_id: int
    email: str
    name: str
    country: str
    timezone: str
    language: str
    status: str
    suppressed: bool
    bouncing: bool


_NOW = bindparam("now", type_=ACTIVITY.c.occurred_at.type)
_MEMBERS = (
    select(
        MEMBERSHIPS.c.partnership_id,
        PARTICIPANTS.c.id,
        PARTICIPANTS.c.email,
        PARTICIPANTS.c.name,
        PARTICIPANTS.c.country,
        PARTICIPANTS.c.timezone,
        PARTICIPANTS.c.language,
        PARTICIPANTS.c.status,
        type_coerce(PARTICIPANTS.c.bouncing_since, String),  # mostly NULL: parsed when set
    )
    .join(PARTICIPANTS, PARTICIPANTS.c.id == MEMBERSHIPS.c.participant_id)
    .where(MEMBERSHIPS.c.partnership_id.in_(_IDS))
    .order_by(MEMBERSHIPS.c.partnership_id, MEMBERSHIPS.c.position)
)
# occurred_at as the database hands it over, without the column type's conversions (see
# _instant); participant_id is never NULL in these rows.
_COLUMNS = (
    ACTIVITY.c.partnership_id,
    ACTIVITY.c.participant_id,
    ACTIVITY.c.kind,
    type_coerce(ACTIVITY.c.occurred_at, String),
    ACTIVITY.c.value,
    ACTIVITY.c.detail,
)
_SEEN = (ACTIVITY.c.occurred_at <= _NOW, ACTIVITY.c.participant_id.is_not(None))
# Each partnership's last confirmed contact (a member's check-in 1 or partner contact), else the
# dawn of time: the index on (partnership_id, occurred_at) is read backwards from ``now`` to the
# first such event, so a partnership in touch costs a few rows, not its whole history.
_DAWN = literal(datetime.min.replace(tzinfo=UTC), ACTIVITY.c.occurred_at.type)
_LAST_CONTACT = (
    select(ACTIVITY.c.occurred_at)
    .join(
        MEMBERSHIPS,
        and_(
            MEMBERSHIPS.c.partnership_id == ACTIVITY.c.partnership_id,
            MEMBERSHIPS.c.participant_id == ACTIVITY.c.participant_id,
        ),
    )
    .where(
        ACTIVITY.c.partnership_id == PARTNERSHIPS.c.id,
        ACTIVITY.c.occurred_at <= _NOW,
        or_(
            ACTIVITY.c.kind == "partner_contact",
            and_(ACTIVITY.c.kind == "checkin", ACTIVITY.c.value == 1),
        ),
    )
    .order_by(ACTIVITY.c.occurred_at.desc())
    .limit(1)
    .correlate(PARTNERSHIPS)
    .scalar_subquery()
)
_CONTACT = (
    select(PARTNERSHIPS.c.id, func.coalesce(_LAST_CONTACT, _DAWN).label("at"))
    .where(PARTNERSHIPS.c.id.in_(_IDS))
    .cte("contact")
)
# Other than unsubscribes and concerns (read apart): the events from the last contact on, found
# by the same index.
_EVENTS = (
    select(*_COLUMNS)
    .join_from(
        _CONTACT,
        ACTIVITY,
        and_(
            ACTIVITY.c.partnership_id == _CONTACT.c.id,
            ACTIVITY.c.occurred_at >= _CONTACT.c.at,
        ),
    )
    .where(*_SEEN, ACTIVITY.c.kind.not_in(ALWAYS_KINDS))
)
_ALWAYS_ALL = select(*_COLUMNS).where(*_SEEN, ACTIVITY.c.kind.in_(ALWAYS_KINDS))
_ALWAYS_SOME = _ALWAYS_ALL.where(ACTIVITY.c.partnership_id.in_(_IDS))


def members(
    connection: Connection, ids: list[int], suppressed: set[str]
) -> defaultdict[int, list[tuple[MemberInfo, Member]]]:
    """Each partnership's members in their order, as the CLI and nudges see them and as health
    does."""
    found: defaultdict[int, list[tuple[MemberInfo, Member]]] = defaultdict(list)
    rows = connection.execute(_MEMBERS, {"ids": ids}).all()
    for pid, person, email, name, country, zone, language, status, raw in rows:
        bouncing = None if raw is None else instant(raw)
        is_suppressed = email in suppressed
        info = MemberInfo(
            person,
            email,
            name,
            country,
            zone,
            language,
            status,
            is_suppressed,
            bouncing is not None,
        )
        member = Member(person, name, country, status, bouncing, is_suppressed)
        found[pid].append((info, member))
    return found


def events_since_contact(
    connection: Connection, ids: list[int], now: datetime
) -> dict[int, list[Event]]:
    """The events each partnership's judgement at ``now`` depends on (see :func:`relevant`),
    but for unsubscribes and concerns (:func:`always`).

    The last confirmed contact is found in the database, so that the events before it (most of
    a healthy partnership's history) are never fetched.
    """
    return _rows(connection.execute(_EVENTS, {"ids": ids, "now": now}).all())


def always(connection: Connection, ids: list[int] | None, now: datetime) -> dict[int, list[Event]]:
    """The unsubscribes and concerns up to ``now`` of the partnerships ``ids`` (None: all)."""
    if ids is None:
        return _rows(connection.execute(_ALWAYS_ALL, {"now": now}).all())
    return _rows(connection.execute(_ALWAYS_SOME, {"ids": ids, "now": now}).all())


def _rows(rows: Sequence[Any]) -> dict[int, list[Event]]:
    """Event rows (as :data:`_COLUMNS`) by partnership, each distinct instant parsed once."""
    found: dict[int, list[Event]] = {}
    instants: dict[Any, datetime] = {}
    for partnership_id, participant_id, kind, raw, value, detail in rows:
        at = instants.get(raw)
        if at is None:
            at = instants[raw] = instant(raw)
        event = Event(participant_id, kind, at, value, detail)
        try:
            found[partnership_id].append(event)
        except KeyError:
            found[partnership_id] = [event]
    return found


def relevant(members: Sequence[Member], events: Iterable[Event], now: datetime) -> list[Event]:
    """The events that :func:`monitor.health.judge` at ``now`` depends on: those of the last
    confirmed contact's instant and later, and every unsubscribe and concern; all of them when
    contact was never confirmed.  Events after ``now`` are left out: the judge ignores them.

    Why this is enough: before the last contact, activity only ever counts by being after it
    (a member's own last word, the writes "without an answer", check-ins 2 and 3 all start
    from it), so what happened before changes nothing; an unsubscribe and a concern count
    whenever they came.  :func:`events_since_contact` selects the same in SQL; the tests hold the
    judge to give identical results on both.
    """
    ids = {m.participant_id for m in members}
    seen = [e for e in events if e.occurred_at <= now]
    contacts = [
        e.occurred_at
        for e in seen
        if e.participant_id in ids
        and (e.kind == "partner_contact" or (e.kind == "checkin" and e.value == 1))
    ]
    if not contacts:
        return seen
    last = max(contacts)
    return [e for e in seen if e.occurred_at >= last or e.kind in ALWAYS_KINDS]


def instant(raw: object) -> datetime:
    """A stored instant, read without its column type's conversion, as an aware UTC datetime.

    SQLite keeps UTC as text without an offset ("2027-03-03 12:00:00.000000"): appending one
    lets :meth:`datetime.fromisoformat` build the aware value in one step, several times faster
    than parsing and then replacing the zone.  PostgreSQL hands over aware datetimes.
    """
    if isinstance(raw, datetime):
        return raw.astimezone(UTC) if raw.tzinfo is not None else raw.replace(tzinfo=UTC)
    text = str(raw)
    try:
        return datetime.fromisoformat(text + "+00:00")
    except ValueError:  # it carries an offset already
        return datetime.fromisoformat(text).astimezone(UTC)


def aware(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes for what Rapport stored as UTC."""
    if value is None:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
