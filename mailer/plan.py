"""Planning: which topic emails are due at ``now``, written to the outbox once each.

For every active round, every topic whose send date has come, and every active member of an
active partnership in that round, one outbox row keyed ``topic/<round>/<order>/<participant id>``
is due at ``schedule.topic_local_time`` on the send date in the participant's own zone.  Rows are
planned when they fall due, so a participant's later change of zone or status still counts.  A
row more than ``schedule.max_lateness`` late when first planned (the service was down) is written
as ``late``: reported, not sent.  A suppressed address gets a ``suppressed`` row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, select
from sqlmodel import Session

from mailer import outbox
from program import calendar
from program.models import (
    LATE,
    MEMBERSHIPS,
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


def topic_key(round_name: str, seq: int, participant_id: int, *, rehearsal: bool = False) -> str:
    """``topic/<round>/<order>/<participant id>``; under ``rehearsal/`` in a rehearsal."""
    return f"{REHEARSAL if rehearsal else ''}topic/{round_name}/{seq}/{participant_id}"


def _members(connection: Connection, round_id: int) -> list[Any]:
    """(partnership id, participant id, email, zone, status) for active partnerships."""
    p, m, ps = PARTICIPANTS, MEMBERSHIPS, PARTNERSHIPS
    query = (
        select(m.c.partnership_id, p.c.id, p.c.email, p.c.timezone, p.c.status)
        .join(p, p.c.id == m.c.participant_id)
        .join(ps, ps.c.id == m.c.partnership_id)
        .where(m.c.round_id == round_id, ps.c.status == "active")
        .order_by(m.c.partnership_id, m.c.position)
    )
    return list(connection.execute(query).all())


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
    local_time = settings.schedule.topic_local_time
    lateness = settings.schedule.max_lateness
    domain = settings.program.from_address.rsplit("@", 1)[1]
    horizon: date = (now + _AHEAD).date()
    rehearsal = bool(settings.smtp.redirect_all_to)
    suppressed = outbox.suppressed_addresses(session.connection())
    connection = session.connection()
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
        members = _members(connection, round_.id)
        instants: dict[tuple[date, str], datetime] = {}
        for topic, day in due_topics:
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
                due_at = instants.get((day, zone))
                if due_at is None:
                    due_at = instants[(day, zone)] = calendar.local_send_instant(
                        day, local_time, zone
                    )
                if due_at > now:
                    continue
                state = PENDING
                if email in suppressed:
                    state, note = SUPPRESSED, f"{email} is on the suppression list"
                    result.suppressed += 1
                elif due_at + lateness < now:
                    state, note = LATE, f"due {due_at:%Y-%m-%d %H:%M} UTC, more than {lateness} ago"
                    result.late += 1
                else:
                    note = None
                    result.planned += 1
                rows.append(
                    {
                        "key": key,
                        "kind": "topic",
                        "round_id": round_.id,
                        "topic_id": topic.id,
                        "partnership_id": partnership_id,
                        "participant_id": participant_id,
                        "to_address": email,
                        "reply_key": reply_key(secret, key),
                        "message_id": message_id(secret, key, domain),
                        "status": state,
                        "due_at": due_at,
                        "attempts": 0,
                        "last_error": note,
                        "created_at": now,
                        "updated_at": now,
                    }
                )
            if rows:
                result.topics.append(f"{round_.name} #{topic.seq}")
                if not dry_run:
                    outbox.enqueue(session, rows)
    return result
