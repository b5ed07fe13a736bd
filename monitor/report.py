"""The weekly report's data for one coordinator: what changed, who needs attention, and why.

The report reads the daily health snapshots rather than judging again, so it says exactly what
``rapport health`` said on those days and costs a few queries whatever the network's size.
The report is the coordinator's: its ``day`` and ISO ``week`` are their local date and week, the
week its idempotency key names (rapport/watch.py), so each local week has one report, labelled
with it.  Snapshots are per UTC day, though: "this week" is each partnership's latest snapshot on
or before ``now``'s UTC date, "last week" its latest on or before the UTC date of the coordinator's
previous report (``last_report``; without one, a week before ``now``), so that a change counted
in one report is not counted again in the next (none: the partnership is new to the report).
See :func:`build` for why those days.

Scope: a program coordinator sees every partnership of the active rounds; a country coordinator
those with at least one member in their countries.  Only the at-risk and one-sided partnerships
get a card (sorted by score, highest first); quiet ones are only counted, so a week with nothing to
act on stays a one-line report (``all_clear``).  A network of tens of thousands can have
thousands at risk: only the top ``[report] max_listed`` get a card and the rest are counted (with
the command that lists them all), so the email stays one a person can read and a mail server
accepts; the week's movements are capped likewise.  The cards carry what a coordinator needs to act
without opening another tool: the members and their time zones, the reasons, the nudges already
sent, the coordinators' notes, a suggested next action and an activity grid by fortnight.

This module decides who is in the report and assembles it.  Everything is read in batched
queries: the scope is a subquery, and the per-partnership details are fetched for the listed
partnerships only by monitor/details.py in chunks of ids, never one query per partnership.  The
activity grid and the suggested action are pure readings of those details (monitor/cards.py).

The result is JSON-safe (it becomes an outbox row's payload and then the template's ``data``);
dates are ISO strings: ``day``, ``previous_day`` and ``week`` in the coordinator's zone, the rest
UTC.  Words are left to the templates: the suggested action is a code with the names it concerns,
so each language phrases it itself.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import Connection, Select, and_, func, select

from monitor import details
from monitor.cards import CELLS, action, aware, grid, parse
from monitor.health import AT_RISK, HEALTHY, ONE_SIDED, QUIET, STATES
from program.errors import UsageError
from program.models import (
    COORDINATORS,
    MEMBERSHIPS,
    PARTICIPANTS,
    PARTNERSHIPS,
    ROUNDS,
    SNAPSHOTS,
)
from program.settings import ReportSettings

__all__ = ["CELLS", "MAX_LISTED", "Recipient", "UnknownCoordinator", "build", "recipients"]

_LISTED = (AT_RISK, ONE_SIDED)
MAX_LISTED: int = ReportSettings.max_listed  # [report] max_listed when the caller gives none
_MOVES = 50  # the most partnerships each of the week's movements names
_TROUBLED = (AT_RISK, ONE_SIDED, QUIET)


class UnknownCoordinator(UsageError):
    """No coordinator has the id the report was asked for."""


@dataclass(frozen=True, slots=True)
class Recipient:
    """A coordinator who gets the weekly report; ``countries`` empty for a program coordinator."""

    id: int
    name: str
    email: str
    role: str
    countries: tuple[str, ...]
    timezone: str


def recipients(connection: Connection) -> list[Recipient]:
    """Every coordinator, in id order: each gets their own report."""
    rows = connection.execute(select(COORDINATORS).order_by(COORDINATORS.c.id))
    return [_recipient(row) for row in rows]


def build(
    connection: Connection,
    *,
    coordinator_id: int,
    now: datetime,
    max_listed: int = MAX_LISTED,
    last_report: datetime | None = None,
) -> dict[str, Any]:
    """The report for one coordinator at ``now`` (aware), as a JSON-safe dict.

    ``day`` and ``week`` are the coordinator's local date and ISO week at ``now``.
    ``last_report`` (aware) is when their previous report was built (the previous local week's,
    if any); the changes are counted since then, else since a week before ``now``, and
    ``previous_day`` is that instant's local date.

    At most ``max_listed`` partnerships (the ``[report] max_listed`` setting) get a card, the
    highest scores first; ``more`` counts the rest and ``more_states`` names their states, so
    the templates can say how to list them all.  The week's movements (``newly_at_risk``,
    ``still_at_risk``, ``recovered``) name at most 50 partnerships each, and their ``*_more``
    keys count the rest.

    Raises :class:`UnknownCoordinator` when ``coordinator_id`` names nobody, ValueError for a
    naive ``now`` or ``last_report``.  See the module docstring for what "this week" and "last
    week" mean.
    """
    for value in (now, last_report):
        if value is not None and (value.tzinfo is None or value.utcoffset() is None):
            raise ValueError(f"now and last_report must be zone-aware datetimes, got {value!r}")
    now = now.astimezone(UTC)
    row = connection.execute(
        select(COORDINATORS).where(COORDINATORS.c.id == coordinator_id)
    ).first()
    if row is None:
        raise UnknownCoordinator(f"coordinator #{coordinator_id} does not exist")
    who = _recipient(row)
    zone = _zone(who.timezone)
    # What the coordinator reads is dated in their zone: a Monday-morning report in Sydney is
    # built on Sunday, UTC, and must say Monday and Monday's ISO week (its outbox key's week).
    today = now.astimezone(zone).date()
    # Which snapshots to compare.  Snapshots are per UTC day, each taken during its day (the
    # daily job, or rapport/watch.py just before a report if the job has not run), so the
    # newest one at ``now`` is that of ``now``'s UTC date, whatever the coordinator's zone:
    # ahead of UTC (Sydney on Monday morning) their local date's snapshot is not taken yet, and
    # behind UTC (Los Angeles on Sunday evening) the next UTC day's may already be, so the
    # latest on or before the UTC date is "this week" in both.  "Last week" must be what the
    # previous report showed as its "this week", or a change is counted twice (e.g. "20 new"
    # in two reports when the first one caught up on a Tuesday) or never: so it is the snapshot
    # of the UTC date at which that report was built.  Without one (the first report, a missed
    # week, a preview) it is the snapshot a report built a week ago would have read.
    before = now - timedelta(days=7)
    if last_report is not None and last_report.astimezone(UTC) < now:
        before = last_report.astimezone(UTC)
    previous_day = before.astimezone(zone).date()
    scope = _scope(who)

    rounds = {r.id: r for r in connection.execute(select(ROUNDS)).all()}
    partnerships = {
        p.id: p
        for p in connection.execute(
            select(
                PARTNERSHIPS.c.id,
                PARTNERSHIPS.c.round_id,
                PARTNERSHIPS.c.status,
                PARTNERSHIPS.c.ended_at,
            ).where(PARTNERSHIPS.c.id.in_(scope))
        ).all()
    }
    current = {s.partnership_id: s for s in _latest(connection, scope, now.date(), full=True)}
    previous = {s.partnership_id: s.state for s in _latest(connection, scope, before.date())}
    states: dict[int, str] = {}
    for pid, snap in current.items():
        p = partnerships.get(pid)
        if p is None:
            continue
        # A partnership dissolved since its last snapshot is no longer anyone's to act on.
        gone = p.status != "active" and (p.ended_at is None or aware(p.ended_at) <= now)
        states[pid] = p.status if gone else snap.state

    troubled = sorted(
        (pid for pid, state in states.items() if state in _LISTED),
        key=lambda pid: (-current[pid].score, aware(current[pid].since), pid),
    )
    listed = troubled[:max_listed]
    unlisted = Counter(states[pid] for pid in troubled[max_listed:])
    newly = [pid for pid in troubled if states[pid] == AT_RISK and previous.get(pid) != AT_RISK]
    still = [pid for pid in troubled if states[pid] == AT_RISK and previous.get(pid) == AT_RISK]
    recovered = sorted(
        pid for pid, state in states.items() if state == HEALTHY and previous.get(pid) in _TROUBLED
    )
    # The movements name up to _MOVES partnerships each: only those and the cards need details.
    moves = _MOVES
    shown = sorted({*listed, *newly[:moves], *still[:moves], *recovered[:moves]})
    members = details.members(connection, shown, now)
    nudges = details.nudges(connection, listed)
    notes = details.notes(connection, listed, now)
    activity = details.activity(connection, listed, now)

    def weeks(pid: int) -> int:
        return max(1, (now - aware(current[pid].since)).days // 7)

    cards = []
    for pid in listed:
        snap, round_ = current[pid], rounds[partnerships[pid].round_id]
        facts = _json(snap.facts, {})
        since = aware(snap.since)
        card_members = members[pid]
        silent = {int(i) for i in facts.get("silent") or [] if isinstance(i, int)}
        for m in card_members:
            m["silent"] = m["id"] in silent
        last_contact = parse(facts.get("last_contact"))
        cards.append(
            {
                "id": pid,
                "round": round_.name,
                "members": card_members,
                "state": states[pid],
                "score": snap.score,
                "since": since.isoformat(),
                "days": max(0, (now - since).days),
                "weeks": weeks(pid),
                "previous_state": previous.get(pid),
                "reasons": [str(r) for r in _json(snap.reasons, [])],
                "nudges": nudges[pid],
                "notes": notes[pid],
                "action": action(
                    facts, card_members, nudges[pid], last_contact, activity[pid], now
                ),
                "grid": grid(round_, activity[pid], card_members, now),
            }
        )

    def brief(pid: int) -> dict[str, Any]:
        people = [{"name": m["name"], "country": m["country"]} for m in members[pid]]
        return {"id": pid, "members": people, "score": current[pid].score}

    now_counts = Counter(states.values())
    before_counts = Counter(previous.values())
    counts = [
        {
            "state": state,
            "count": now_counts[state],
            "previous": before_counts[state],
            "change": now_counts[state] - before_counts[state],
        }
        for state in STATES
    ]
    year, week, _ = today.isocalendar()
    return {
        "coordinator": {
            "id": who.id,
            "name": who.name,
            "email": who.email,
            "role": who.role,
            "countries": list(who.countries),
            "timezone": who.timezone,
        },
        "now": now.isoformat(),
        "day": today.isoformat(),
        "previous_day": previous_day.isoformat(),
        "week": f"{year}-W{week:02d}",
        "total": len(states),
        "new": sum(1 for pid in states if pid not in previous),
        "counts": counts,
        "quiet": now_counts[QUIET],
        "all_clear": not cards,
        "partnerships": cards,
        "more": sum(unlisted.values()),
        "more_states": [state for state in _LISTED if unlisted[state]],
        "newly_at_risk": [brief(pid) for pid in newly[:moves]],
        "newly_at_risk_more": max(0, len(newly) - moves),
        "still_at_risk": [{**brief(pid), "weeks": weeks(pid)} for pid in still[:moves]],
        "still_at_risk_more": max(0, len(still) - moves),
        "recovered": [{**brief(pid), "previous_state": previous[pid]} for pid in recovered[:moves]],
        "recovered_more": max(0, len(recovered) - moves),
        "fortnights": max((len(card["grid"]) for card in cards), default=0),
        "cells": list(CELLS),
    }


def _zone(name: str) -> ZoneInfo:
    """The coordinator's zone; an empty or unknown one (the import checks them) is UTC."""
    try:
        return ZoneInfo(name) if name else ZoneInfo("UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def _recipient(row: Any) -> Recipient:
    countries = tuple(sorted({c.upper() for c in (row.countries or "").split()}))
    return Recipient(row.id, row.name, row.email, row.role, countries, row.timezone)


def _scope(who: Recipient) -> Select[Any]:
    """The ids of the partnerships ``who`` may see, as a subquery."""
    query = (
        select(PARTNERSHIPS.c.id)
        .join(ROUNDS, ROUNDS.c.id == PARTNERSHIPS.c.round_id)
        .where(ROUNDS.c.status == "active")
    )
    if who.role == "program":
        return query
    # Anyone else sees by country: a coordinator with no countries sees nothing.
    local = (
        select(MEMBERSHIPS.c.partnership_id)
        .join(PARTICIPANTS, PARTICIPANTS.c.id == MEMBERSHIPS.c.participant_id)
        .where(PARTICIPANTS.c.country.in_(list(who.countries)))
    )
    return query.where(PARTNERSHIPS.c.id.in_(local))


def _latest(
    connection: Connection, scope: Select[Any], day: date, full: bool = False
) -> Sequence[Any]:
    """Each scoped partnership's latest snapshot on or before ``day``.

    Driven by the partnerships: each one's latest day is one seek in the unique index on
    (partnership_id, day) and its row one more, so the cost does not grow with the days of
    snapshots kept.
    """
    earlier = SNAPSHOTS.alias("earlier")
    latest_day = (
        select(func.max(earlier.c.day))
        .where(earlier.c.partnership_id == PARTNERSHIPS.c.id, earlier.c.day <= day)
        .correlate(PARTNERSHIPS)
        .scalar_subquery()
    )
    columns = [SNAPSHOTS.c.partnership_id, SNAPSHOTS.c.state]
    if full:
        columns += [SNAPSHOTS.c.score, SNAPSHOTS.c.since, SNAPSHOTS.c.reasons, SNAPSHOTS.c.facts]
    query = (
        select(*columns)
        .select_from(PARTNERSHIPS)
        .join(
            SNAPSHOTS,
            and_(SNAPSHOTS.c.partnership_id == PARTNERSHIPS.c.id, SNAPSHOTS.c.day == latest_day),
        )
        .where(PARTNERSHIPS.c.id.in_(scope.correlate(None)))
    )
    return connection.execute(query).all()


def _json(text: str | None, default: Any) -> Any:
    """A snapshot's JSON column; a damaged value reads as empty rather than failing the report."""
    try:
        value = json.loads(text or "")
    except ValueError:
        return default
    return value if isinstance(value, type(default)) else default
