"""Judge every partnership from the database, and keep one health snapshot per partnership a day.

monitor/health.py is pure; this module feeds it.  The partnerships of the active rounds, their
members and their activity are read in a handful of batched queries (never one query per
partnership), judged at ``now`` with the ``[health]`` thresholds, and, for the daily job, written
as :class:`~program.models.HealthSnapshot` rows for ``now``'s UTC date: judging twice on one day
replaces that day's rows, so the job can run again after a crash or a config change.

A partnership starts on its round's start date (midnight UTC), or when it was created if that is
later (a pair matched mid-round).  A round whose ``end`` date has passed is judged ``ended``.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Any

from sqlalchemy import Connection, delete, insert, select

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

__all__ = ["Judged", "MemberInfo", "judge_all", "snapshot", "thresholds"]

_CHUNK = 500  # ids per IN (...) list: well under SQLite's and PostgreSQL's parameter limits


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
    ``only`` narrows it to those partnership ids, whatever their round's status."""
    rounds_q = select(ROUNDS)
    if round_name:
        rounds_q = rounds_q.where(ROUNDS.c.name == round_name)
    elif only is None:
        rounds_q = rounds_q.where(ROUNDS.c.status == "active")
    rounds = {r.id: r for r in connection.execute(rounds_q)}
    if not rounds:
        return []
    chosen = select(PARTNERSHIPS).where(PARTNERSHIPS.c.round_id.in_(list(rounds)))
    if only is not None:
        chosen = chosen.where(PARTNERSHIPS.c.id.in_(list(only)))
    partnerships = connection.execute(chosen.order_by(PARTNERSHIPS.c.id)).all()
    ids = [p.id for p in partnerships]
    suppressed = set(connection.execute(select(SUPPRESSIONS.c.email)).scalars())
    members: dict[int, list[MemberInfo]] = defaultdict(list)
    events: dict[int, list[Event]] = defaultdict(list)
    bouncing_since: dict[int, datetime | None] = {}
    for chunk in _chunks(ids):
        for m in connection.execute(
            select(
                MEMBERSHIPS.c.partnership_id,
                PARTICIPANTS.c.id,
                PARTICIPANTS.c.email,
                PARTICIPANTS.c.name,
                PARTICIPANTS.c.country,
                PARTICIPANTS.c.timezone,
                PARTICIPANTS.c.language,
                PARTICIPANTS.c.status,
                PARTICIPANTS.c.bouncing_since,
            )
            .join(PARTICIPANTS, PARTICIPANTS.c.id == MEMBERSHIPS.c.participant_id)
            .where(MEMBERSHIPS.c.partnership_id.in_(chunk))
            .order_by(MEMBERSHIPS.c.partnership_id, MEMBERSHIPS.c.position)
        ):
            bouncing_since[m.id] = _aware(m.bouncing_since)
            members[m.partnership_id].append(
                MemberInfo(
                    participant_id=m.id,
                    email=m.email,
                    name=m.name,
                    country=m.country,
                    timezone=m.timezone,
                    language=m.language,
                    status=m.status,
                    suppressed=m.email in suppressed,
                    bouncing=m.bouncing_since is not None,
                )
            )
        for e in connection.execute(
            select(
                ACTIVITY.c.partnership_id,
                ACTIVITY.c.participant_id,
                ACTIVITY.c.kind,
                ACTIVITY.c.occurred_at,
                ACTIVITY.c.value,
                ACTIVITY.c.detail,
            ).where(ACTIVITY.c.partnership_id.in_(chunk), ACTIVITY.c.participant_id.is_not(None))
        ):
            events[e.partnership_id].append(
                Event(e.participant_id, e.kind, _aware(e.occurred_at) or now, e.value, e.detail)
            )

    today = now.astimezone(UTC).date()
    work = []
    for p in partnerships:
        round_ = rounds[p.round_id]
        start = datetime.combine(round_.start, time(0), UTC)
        created = _aware(p.created_at)
        started = max(start, created) if created and p.status == "active" else start
        status = p.status
        if status == "active" and round_.end is not None and today > round_.end:
            status = "ended"
        health_members = [
            Member(
                participant_id=m.participant_id,
                name=m.name,
                country=m.country,
                status=m.status,
                bouncing_since=bouncing_since.get(m.participant_id),
                suppressed=m.suppressed,
            )
            for m in members[p.id]
        ]
        work.append((p.id, health_members, events[p.id], started, status))
    judged = judge_many(
        work,
        now=now,
        thresholds=thresholds(settings),
        language=settings.program.default_language,
    )
    return [
        Judged(
            partnership_id=p.id,
            round_id=p.round_id,
            round_name=rounds[p.round_id].name,
            members=tuple(members[p.id]),
            health=judged[p.id],
        )
        for p in partnerships
    ]


def facts(health: Health) -> dict[str, Any]:
    """What a snapshot keeps beside state, score and reasons (see HealthSnapshot.facts)."""
    last = health.last_contact
    return {
        "last_contact": last.astimezone(UTC).isoformat() if last else None,
        "silent": list(health.silent),
        "urgent": list(health.urgent),
    }


def snapshot(connection: Connection, judged: Sequence[Judged], *, now: datetime) -> date:
    """Write (or rewrite) ``now``'s UTC day's snapshot of each judged partnership; its day."""
    day = now.astimezone(UTC).date()
    ids = [j.partnership_id for j in judged]
    for chunk in _chunks(ids):
        connection.execute(
            delete(SNAPSHOTS).where(SNAPSHOTS.c.day == day, SNAPSHOTS.c.partnership_id.in_(chunk))
        )
    rows = [
        {
            "partnership_id": j.partnership_id,
            "day": day,
            "state": j.health.state,
            "score": j.health.score,
            "since": j.health.since,
            "reasons": json.dumps(list(j.health.reasons), ensure_ascii=False),
            "facts": json.dumps(facts(j.health)),
            "created_at": now,
        }
        for j in judged
    ]
    for start in range(0, len(rows), 2000):
        connection.execute(insert(SNAPSHOTS), rows[start : start + 2000])
    return day


def has_snapshot(connection: Connection, day: date) -> bool:
    """Whether the daily snapshot of ``day`` was taken."""
    query = select(SNAPSHOTS.c.id).where(SNAPSHOTS.c.day == day).limit(1)
    return connection.execute(query).first() is not None


def _aware(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes for what Rapport stored as UTC."""
    if value is None:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
