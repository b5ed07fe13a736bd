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
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Any

from sqlalchemy import (
    Connection,
    DateTime,
    String,
    bindparam,
    delete,
    insert,
    select,
    type_coerce,
)

from monitor import history
from monitor.health import Health, Thresholds, judge_many
from monitor.history import MemberInfo, relevant
from program.models import (
    PARTNERSHIPS,
    ROUNDS,
    SNAPSHOTS,
    SUPPRESSIONS,
)
from program.settings import Settings
from program.store import serialize

__all__ = ["Judged", "MemberInfo", "judge_all", "relevant", "snapshot", "thresholds"]

# Partnerships judged together, and ids per IN (...) list: well under SQLite's and PostgreSQL's
# parameter limits, and small enough that a block's events take a few MB.
_CHUNK = 500
# Writers of a day's snapshot take turns (the daily job and a report catching up may meet).
SNAPSHOT_LOCK = 0x52_41_50_10
# JSON as the snapshots keep it (a tuple is written as a list), with one encoder for every row.
_encode = json.JSONEncoder(ensure_ascii=False).encode


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
    always = history.always(
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
            members = history.members(connection, ids, suppressed)
            events = history.events_since_contact(connection, ids, now)
            work = []
            for pid, round_id, status, raw in block:
                begin = begins[round_id]
                started = begin
                if raw is not None and status == "active":
                    at = created.get(raw)
                    if at is None:
                        at = created[raw] = history.instant(raw)
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
    """Write (or rewrite) ``now``'s UTC day's snapshot of each judged partnership; its day.

    Two writers of one day (the daily job, and a report that found the day's snapshot missing,
    or two service instances on PostgreSQL) take turns; the second replaces the first's rows."""
    day = now.astimezone(UTC).date()
    serialize(connection, SNAPSHOT_LOCK)
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
