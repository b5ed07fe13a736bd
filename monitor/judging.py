"""Judge every partnership from the database, and keep one health snapshot per partnership a day.

monitor/health.py is pure; this module feeds it.  The partnerships of the active rounds, their
members and their activity are read in blocks of a few hundred partnerships (never one query per
partnership), judged at ``now`` with the ``[health]`` thresholds, and, for the daily job, written
as :class:`~program.models.HealthSnapshot` rows for ``now``'s UTC date: judging twice on one day
replaces that day's rows, so the job can run again after a crash or a config change.

The daily job judges every partnership of a network of 100,000 participants, whose activity table
grows by millions of rows a round, so it is built not to hold or convert more than it must: a
block's members and events are read, judged and dropped, keeping only the results; only the
events the judgement depends on are fetched (:func:`relevant`: nothing before a partnership's
last confirmed contact but its unsubscribes and concerns); and their times are parsed here, once
per distinct value, rather than by the column type row by row.

A partnership starts on its round's start date (midnight UTC), or when it was created if that is
later (a pair matched mid-round).  A round whose ``end`` date has passed is judged ``ended``.
"""

from __future__ import annotations

import gc
import json
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Any

from sqlalchemy import (
    BindParameter,
    Connection,
    DateTime,
    String,
    and_,
    bindparam,
    delete,
    func,
    insert,
    literal,
    or_,
    select,
    type_coerce,
)

from monitor.health import Event, Health, Member, Thresholds, judge_many
from program.models import (
    ACTIVITY,
    MEMBERSHIPS,
    PARTICIPANTS,
    PARTNERSHIPS,
    ROUNDS,
    SNAPSHOTS,
    SUPPRESSIONS,
)
from program.settings import Settings

__all__ = ["Judged", "MemberInfo", "judge_all", "relevant", "snapshot", "thresholds"]

# Partnerships judged together, and ids per IN (...) list: well under SQLite's and PostgreSQL's
# parameter limits, and small enough that a block's events take a few MB.
_CHUNK = 500
# JSON as the snapshots keep it (a tuple is written as a list), with one encoder for every row.
_encode = json.JSONEncoder(ensure_ascii=False).encode
# Event kinds that count whenever they came, so are read even before the last contact.
_ALWAYS = ("unsubscribe", "concern")


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


@dataclass(frozen=True, slots=True)
class Judged:
    """One partnership judged at one instant."""

    partnership_id: int
    round_id: int
    round_name: str
    members: tuple[MemberInfo, ...]
    health: Health


def thresholds(settings: Settings) -> Thresholds:
    """The ``[health]`` section as the judge's thresholds."""
    h = settings.health
    return Thresholds(
        grace_days=h.grace_days,
        quiet_days=h.quiet_days,
        at_risk_days=h.at_risk_days,
        one_sided_days=h.one_sided_days,
    )


def _chunks(ids: Sequence[int]) -> Iterable[list[int]]:
    for start in range(0, len(ids), _CHUNK):
        yield list(ids[start : start + _CHUNK])


def judge_all(
    connection: Connection,
    *,
    settings: Settings,
    now: datetime,
    round_name: str | None = None,
    only: Sequence[int] | None = None,
) -> list[Judged]:
    """Every partnership of the active rounds (or of ``round_name``), judged at ``now``;
    ``only`` narrows it to those partnership ids, whatever their round's status.

    Partnerships are read and judged a block of ``_CHUNK`` at a time, and only the results are
    kept, so memory does not grow with the activity table.
    """
    rounds_q = select(ROUNDS)
    if round_name:
        rounds_q = rounds_q.where(ROUNDS.c.name == round_name)
    elif only is None:
        rounds_q = rounds_q.where(ROUNDS.c.status == "active")
    rounds = {r.id: r for r in connection.execute(rounds_q)}
    if not rounds:
        return []
    chosen = select(
        PARTNERSHIPS.c.id,
        PARTNERSHIPS.c.round_id,
        PARTNERSHIPS.c.status,
        type_coerce(PARTNERSHIPS.c.created_at, String),  # parsed below, once per instant
    ).where(PARTNERSHIPS.c.round_id.in_(list(rounds)))
    if only is not None:
        chosen = chosen.where(PARTNERSHIPS.c.id.in_(list(only)))
    partnerships = connection.execute(chosen.order_by(PARTNERSHIPS.c.id)).all()
    suppressed = set(connection.execute(select(SUPPRESSIONS.c.email)).scalars())
    # Unsubscribes and concerns count whenever they came, and are rare: read them all at once
    # (one pass over the table) rather than block by block (a pass over each block's events).
    always = _always(
        connection, None if len(partnerships) > _CHUNK else [p.id for p in partnerships], now
    )
    limits = thresholds(settings)
    language = settings.program.default_language
    today = now.astimezone(UTC).date()
    begins = {r.id: datetime.combine(r.start, time(0), UTC) for r in rounds.values()}
    ended = {r.id for r in rounds.values() if r.end is not None and today > r.end}
    created: dict[Any, datetime] = {}  # partnerships imported together share their instant
    judged: list[Judged] = []
    with _collector_paused():
        for start in range(0, len(partnerships), _CHUNK):
            block = partnerships[start : start + _CHUNK]
            ids = [p.id for p in block]
            members = _members(connection, ids, suppressed)
            events = _events(connection, ids, now)
            work = []
            for pid, round_id, status, raw in block:
                begin = begins[round_id]
                started = begin
                if raw is not None and status == "active":
                    at = created.get(raw)
                    if at is None:
                        at = created[raw] = _instant(raw)
                    started = max(begin, at)
                if status == "active" and round_id in ended:
                    status = "ended"
                found = events.get(pid, [])
                found += always.get(pid, ())
                work.append((pid, [m for _, m in members[pid]], found, started, status))
            results = judge_many(work, now=now, thresholds=limits, language=language)
            judged.extend(
                Judged(
                    partnership_id=p.id,
                    round_id=p.round_id,
                    round_name=rounds[p.round_id].name,
                    members=tuple(info for info, _ in members[p.id]),
                    health=results[p.id],
                )
                for p in block
            )
    return judged


# The statements below take the block's ids as one expanding parameter, so each is compiled once
# and reused from the cache, whatever the ids.
_IDS: BindParameter[list[int]] = bindparam("ids", expanding=True)
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
    .where(*_SEEN, ACTIVITY.c.kind.not_in(_ALWAYS))
)
_ALWAYS_ALL = select(*_COLUMNS).where(*_SEEN, ACTIVITY.c.kind.in_(_ALWAYS))
_ALWAYS_SOME = _ALWAYS_ALL.where(ACTIVITY.c.partnership_id.in_(_IDS))


def _members(
    connection: Connection, ids: list[int], suppressed: set[str]
) -> defaultdict[int, list[tuple[MemberInfo, Member]]]:
    """Each partnership's members in their order, as the CLI and nudges see them and as health
    does."""
    found: defaultdict[int, list[tuple[MemberInfo, Member]]] = defaultdict(list)
    rows = connection.execute(_MEMBERS, {"ids": ids}).all()
    for pid, person, email, name, country, zone, language, status, raw in rows:
        bouncing = None if raw is None else _instant(raw)
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


def _events(connection: Connection, ids: list[int], now: datetime) -> dict[int, list[Event]]:
    """The events each partnership's judgement at ``now`` depends on (see :func:`relevant`),
    but for unsubscribes and concerns (:func:`_always`).

    The last confirmed contact is found in the database, so that the events before it (most of
    a healthy partnership's history) are never fetched.
    """
    return _rows(connection.execute(_EVENTS, {"ids": ids, "now": now}).all())


def _always(connection: Connection, ids: list[int] | None, now: datetime) -> dict[int, list[Event]]:
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
            at = instants[raw] = _instant(raw)
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
    whenever they came.  :func:`_events` selects the same in SQL; the tests hold the judge to
    give identical results on both.
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
    return [e for e in seen if e.occurred_at >= last or e.kind in _ALWAYS]


def facts(health: Health) -> dict[str, Any]:
    """What a snapshot keeps beside state, score and reasons (see HealthSnapshot.facts)."""
    last = health.last_contact
    return {
        "last_contact": last.astimezone(UTC).isoformat() if last else None,
        "silent": list(health.silent),
        "urgent": list(health.urgent),
    }


# The snapshots' instants are bound as plain DateTime, converted to UTC by snapshot() as the
# columns' own type would: that type's per-value call was a fifth of writing 50,000 rows.
_INSERT_SNAPSHOT = insert(SNAPSHOTS).values(
    {name: bindparam(name) for name in ("partnership_id", "day", "state", "score", "reasons")}
    | {"facts": bindparam("facts")}
    | {name: bindparam(name, type_=DateTime()) for name in ("since", "created_at")}
)


def snapshot(connection: Connection, judged: Sequence[Judged], *, now: datetime) -> date:
    """Write (or rewrite) ``now``'s UTC day's snapshot of each judged partnership; its day."""
    day = now.astimezone(UTC).date()
    if has_snapshot(connection, day):  # a run again on the same day: replace its rows
        for chunk in _chunks([j.partnership_id for j in judged]):
            connection.execute(
                delete(SNAPSHOTS).where(
                    SNAPSHOTS.c.day == day, SNAPSHOTS.c.partnership_id.in_(chunk)
                )
            )
    created = now.astimezone(UTC)
    with _collector_paused():
        rows = [
            {
                "partnership_id": j.partnership_id,
                "day": day,
                "state": j.health.state,
                "score": j.health.score,
                "since": j.health.since.astimezone(UTC),
                "reasons": _encode(j.health.reasons),
                "facts": _encode(facts(j.health)),
                "created_at": created,
            }
            for j in judged
        ]
    for start in range(0, len(rows), 2000):
        connection.execute(_INSERT_SNAPSHOT, rows[start : start + 2000])
    return day


def has_snapshot(connection: Connection, day: date) -> bool:
    """Whether the daily snapshot of ``day`` was taken."""
    query = select(SNAPSHOTS.c.id).where(SNAPSHOTS.c.day == day).limit(1)
    return connection.execute(query).first() is not None


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector, if it runs, for the duration.

    Judging a network builds hundreds of thousands of objects that live on (the results) and
    makes no reference cycles; the collector, triggered by the number of objects allocated,
    would walk the growing results again and again for nothing: a fifth of the daily job's time
    at 50,000 partnerships.  Plain reference counting still frees every block's rows.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _instant(raw: object) -> datetime:
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


def _aware(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes for what Rapport stored as UTC."""
    if value is None:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
