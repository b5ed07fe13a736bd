"""Planning: which topic emails are due at ``now``, written to the outbox once each.

For every active round, every topic whose send date has come, and every active member of an
active partnership in that round, one outbox row keyed ``topic/<round>/<order>/<participant id>``
is due at ``schedule.topic_local_time`` on the send date in the participant's own zone.  Rows are
planned when they fall due, so a participant's later change of zone or status still counts.  A
row more than ``schedule.max_lateness`` late when first planned (the service was down) is written
as ``late``: reported, not sent.  A suppressed address gets a ``suppressed`` row.

:func:`topics_due` answers the same question for one participant, and :func:`skip_topics` writes
what it finds as ``cancelled`` rows (a participant resumed after a pause: the topics that fell
due meanwhile are never sent, and the planner, finding their keys taken, never plans them).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any

from sqlalchemy import Connection, select
from sqlmodel import Session

from mailer import outbox
from program import calendar
from program.models import (
    CANCELLED,
    LATE,
    MEMBERSHIPS,
    OUTBOX,
    PARTICIPANTS,
    PARTNERSHIPS,
    PENDING,
    REHEARSAL,
    ROUNDS,
    SUPPRESSED,
    TOPICS,
)
from program.replykey import message_id, reply_key
from program.settings import Settings

# The earliest zone on Earth is UTC+14: no send date later than this many days ahead can be due.
_AHEAD = timedelta(hours=14)


@dataclass
class PlanResult:
    """What a planning pass found: rows written per status, and the rows already there."""

    planned: int = 0
    late: int = 0
    suppressed: int = 0
    already: int = 0
    topics: list[str] = field(default_factory=list)

    @property
    def written(self) -> int:
        return self.planned + self.late + self.suppressed


@dataclass(frozen=True)
class DueTopic:
    """One topic due for one participant: what its outbox row is made of."""

    round_id: int
    round_name: str
    topic_id: int
    seq: int
    partnership_id: int
    participant_id: int
    email: str
    due_at: datetime

    def key(self, *, rehearsal: bool = False) -> str:
        return topic_key(self.round_name, self.seq, self.participant_id, rehearsal=rehearsal)


def topic_key(round_name: str, seq: int, participant_id: int, *, rehearsal: bool = False) -> str:
    """``topic/<round>/<order>/<participant id>``; under ``rehearsal/`` in a rehearsal."""
    return f"{REHEARSAL if rehearsal else ''}topic/{round_name}/{seq}/{participant_id}"


_UNITS = (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1))


def duration_in_words(value: timedelta) -> str:
    """``2 days``, ``1 day and 12 hours``, ``1 hour, 30 minutes and 5 seconds``, ``0 seconds``."""
    seconds = int(value.total_seconds())
    parts = []
    for name, size in _UNITS:
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count} {name}{'' if count == 1 else 's'}")
    if not parts:
        return "0 seconds"
    return parts[0] if len(parts) == 1 else f"{', '.join(parts[:-1])} and {parts[-1]}"


def late_note(due_at: datetime, lateness: timedelta) -> str:
    """Why a row is ``late``: ``due 2027-04-12 04:30 UTC, more than 2 days late (...)``."""
    return (
        f"due {due_at:%Y-%m-%d %H:%M} UTC, more than {duration_in_words(lateness)} late"
        " (schedule.max_lateness)"
    )


def _members(connection: Connection, round_id: int, participant_id: int | None) -> list[Any]:
    """(partnership id, participant id, email, zone, status) for active partnerships (of one
    participant, when ``participant_id`` is given)."""
    p, m, ps = PARTICIPANTS, MEMBERSHIPS, PARTNERSHIPS
    query = (
        select(m.c.partnership_id, p.c.id, p.c.email, p.c.timezone, p.c.status)
        .join(p, p.c.id == m.c.participant_id)
        .join(ps, ps.c.id == m.c.partnership_id)
        .where(m.c.round_id == round_id, ps.c.status == "active")
        .order_by(m.c.partnership_id, m.c.position)
    )
    if participant_id is not None:
        query = query.where(m.c.participant_id == participant_id)
    return list(connection.execute(query).all())


def _schedule(
    connection: Connection, now: datetime, participant_id: int | None = None
) -> Iterator[tuple[Any, Any, date, list[Any]]]:
    """(round, topic, send date, members) for every topic of an active round whose send date
    has come somewhere on Earth at ``now``, with the members of the round's active
    partnerships (only ``participant_id``'s, when given)."""
    horizon: date = (now + _AHEAD).date()
    rounds = connection.execute(
        select(ROUNDS).where(ROUNDS.c.status == "active", ROUNDS.c.start <= horizon)
    ).all()
    for round_ in rounds:
        topics = connection.execute(
            select(TOPICS).where(TOPICS.c.round_id == round_.id).order_by(TOPICS.c.seq)
        ).all()
        due_topics = []
        for topic in topics:
            day = calendar.topic_send_date(
                round_.start, round_.cadence_days, topic.seq, topic.send_on
            )
            if day <= horizon:
                due_topics.append((topic, day))
        if not due_topics:
            continue
        members = _members(connection, round_.id, participant_id)
        for topic, day in due_topics:
            yield round_, topic, day, members


class _Instants:
    """The send instant of a day in a zone (``schedule.topic_local_time`` there), each once."""

    def __init__(self, local_time: time) -> None:
        self.local_time = local_time
        self.known: dict[tuple[date, str], datetime] = {}

    def __call__(self, day: date, zone: str) -> datetime:
        instant = self.known.get((day, zone))
        if instant is None:
            instant = self.known[(day, zone)] = calendar.local_send_instant(
                day, self.local_time, zone
            )
        return instant


def _row(
    due: DueTopic,
    key: str,
    *,
    secret: bytes,
    domain: str,
    status: str,
    note: str | None,
    now: datetime,
) -> dict[str, Any]:
    """The outbox row of ``due`` under ``key``, in ``status`` with ``note`` as its last_error."""
    return {
        "key": key,
        "kind": "topic",
        "round_id": due.round_id,
        "topic_id": due.topic_id,
        "partnership_id": due.partnership_id,
        "participant_id": due.participant_id,
        "to_address": due.email,
        "reply_key": reply_key(secret, key),
        "message_id": message_id(secret, key, domain),
        "status": status,
        "due_at": due.due_at,
        "attempts": 0,
        "last_error": note,
        "created_at": now,
        "updated_at": now,
    }


def _domain(settings: Settings) -> str:
    return settings.program.from_address.rsplit("@", 1)[1]


def plan_topics(
    session: Session,
    *,
    settings: Settings,
    secret: bytes,
    now: datetime,
    dry_run: bool = False,
) -> PlanResult:
    """Write the topic rows due at ``now`` (UTC-aware); the caller owns the transaction."""
    result = PlanResult()
    instant = _Instants(settings.schedule.topic_local_time)
    lateness = settings.schedule.max_lateness
    domain = _domain(settings)
    rehearsal = bool(settings.smtp.redirect_all_to)
    suppressed = outbox.suppressed_addresses(session.connection())
    for round_, topic, day, members in _schedule(session.connection(), now):
        # A rehearsal ([smtp] redirect_all_to) plans its own rows, so it never uses up the
        # real sends, and replies to it are never taken for the participants' own.
        prefix = topic_key(round_.name, topic.seq, 0, rehearsal=rehearsal)[:-1]
        known = outbox.existing_keys(session, prefix)
        rows = []
        for partnership_id, participant_id, email, zone, status in members:
            if status != "active":
                continue
            key = prefix + str(participant_id)
            if key in known:
                result.already += 1
                continue
            due_at = instant(day, zone)
            if due_at > now:
                continue
            state = PENDING
            note: str | None = None
            if email in suppressed:
                state, note = SUPPRESSED, f"{email} is on the suppression list"
                result.suppressed += 1
            elif due_at + lateness < now:
                state, note = LATE, late_note(due_at, lateness)
                result.late += 1
            else:
                result.planned += 1
            due = DueTopic(
                round_.id,
                round_.name,
                topic.id,
                topic.seq,
                partnership_id,
                participant_id,
                email,
                due_at,
            )
            rows.append(
                _row(due, key, secret=secret, domain=domain, status=state, note=note, now=now)
            )
        if rows:
            result.topics.append(f"{round_.name} #{topic.seq}")
            if not dry_run:
                outbox.enqueue(session, rows)
    return result


def topics_due(
    session: Session, participant_id: int, *, settings: Settings, now: datetime
) -> list[DueTopic]:
    """Every topic due at ``now`` for participant ``participant_id``, planned or not.

    What :func:`plan_topics` would plan for them at ``now`` if the outbox were empty: one per
    round and topic of their active partnerships in active rounds whose send instant, in their
    zone, is at or before ``now``; nothing while they are not active.  Flush ORM changes first:
    this reads through the session's connection.
    """
    instant = _Instants(settings.schedule.topic_local_time)
    found: dict[tuple[int, int], DueTopic] = {}
    for round_, topic, day, members in _schedule(session.connection(), now, participant_id):
        for partnership_id, pid, email, zone, status in members:
            if status != "active" or (round_.id, topic.seq) in found:
                continue
            due_at = instant(day, zone)
            if due_at <= now:
                found[(round_.id, topic.seq)] = DueTopic(
                    round_.id, round_.name, topic.id, topic.seq, partnership_id, pid, email, due_at
                )
    return list(found.values())


def skip_topics(
    session: Session,
    participant_id: int,
    reason: str,
    *,
    settings: Settings,
    secret: bytes | Callable[[], bytes],
    now: datetime,
) -> list[DueTopic]:
    """Record every topic due for ``participant_id`` at ``now`` that has no outbox row yet as a
    ``cancelled`` row saying ``reason``, so it is never planned, nor sent; returns those topics.

    The rows are the planner's own (same keys, reply keys and Message-IDs), under the real keys
    and, during a rehearsal, under the rehearsal's too.  ``secret`` may be a function: it is
    called only when there is something to write.  The caller owns the transaction.
    """
    due = topics_due(session, participant_id, settings=settings, now=now)
    modes = (False, True) if settings.smtp.redirect_all_to else (False,)
    wanted = {topic.key(rehearsal=mode): topic for topic in due for mode in modes}
    if not wanted:
        return []
    known = set(
        session.connection()
        .execute(select(OUTBOX.c.key).where(OUTBOX.c.key.in_(list(wanted))))
        .scalars()
    )
    missing = {key: topic for key, topic in wanted.items() if key not in known}
    if not missing:
        return []
    key_secret = secret() if callable(secret) else secret
    domain = _domain(settings)
    note = reason[: outbox.ERROR_LIMIT]
    rows = [
        _row(topic, key, secret=key_secret, domain=domain, status=CANCELLED, note=note, now=now)
        for key, topic in missing.items()
    ]
    outbox.enqueue(session, rows)
    return [topic for topic in due if topic.key() in missing]
