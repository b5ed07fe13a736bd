"""The weekly report's data for one coordinator: what changed, who needs attention, and why.

The report reads the daily health snapshots rather than judging again, so it says exactly what
``rapport health`` said on those days and costs a few queries whatever the network's size.
"This week" is each partnership's latest snapshot on or before ``now``'s UTC date; "last week" its
latest on or before that date minus seven days (none: the partnership is new to the report).

Scope: a program coordinator sees every partnership of the active rounds; a country coordinator
those with at least one member in their countries.  Only the at-risk and one-sided partnerships
get a card (sorted by score, highest first); quiet ones are only counted, so a week with nothing to
act on stays a one-line report (``all_clear``).  The cards carry what a coordinator needs to act
without opening another tool: the members and their time zones, the reasons, the nudges already
sent, the coordinators' notes, a suggested next action and an activity grid by fortnight.

Everything is read in batched queries: the scope is a subquery, and the per-partnership details
are fetched for the listed partnerships in chunks of ids, never one query per partnership.

The result is JSON-safe (it becomes an outbox row's payload and then the template's ``data``);
dates are ISO strings, UTC.  Words are left to the templates: the suggested action is a code with
the names it concerns, so each language phrases it itself.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import Connection, Select, and_, func, select

from monitor.health import AT_RISK, HEALTHY, ONE_SIDED, QUIET, STATES
from program.errors import UsageError
from program.models import (
    ACTIVITY,
    COORDINATORS,
    MEMBERSHIPS,
    NOTES,
    OUTBOX,
    PARTICIPANTS,
    PARTNERSHIPS,
    ROUNDS,
    SENT,
    SNAPSHOTS,
    SUPPRESSIONS,
)

__all__ = ["CELLS", "Recipient", "UnknownCoordinator", "build", "recipients"]

# Activity grid cells, in the order the legend lists them.
CONTACT, ONE, NONE, ALERT = CELLS = ("contact", "one", "none", "alert")
# Suggested actions, most urgent first; the templates phrase them.
FIX_ADDRESS, REMATCH, CONTACT_PRIVATELY, WRITE_SILENT, WRITE_ALL, WAIT = (
    "fix_address",
    "rematch",
    "contact_privately",
    "write_silent",
    "write_all",
    "wait",
)
_LISTED = (AT_RISK, ONE_SIDED)
_TROUBLED = (AT_RISK, ONE_SIDED, QUIET)
_ALERTS = frozenset({"bounce", "unsubscribe", "concern"})
_ACTIVE = frozenset({"message", "checkin", "partner_contact"})
_CHUNK = 500  # ids per IN (...) list: well under SQLite's and PostgreSQL's parameter limits


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


def build(connection: Connection, *, coordinator_id: int, now: datetime) -> dict[str, Any]:
    """The report for one coordinator at ``now`` (aware), as a JSON-safe dict.

    Raises :class:`UnknownCoordinator` when ``coordinator_id`` names nobody, ValueError for a
    naive ``now``.  See the module docstring for what "this week" and "last week" mean.
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"now must be a zone-aware datetime, got {now!r}")
    now = now.astimezone(UTC)
    row = connection.execute(
        select(COORDINATORS).where(COORDINATORS.c.id == coordinator_id)
    ).first()
    if row is None:
        raise UnknownCoordinator(f"coordinator #{coordinator_id} does not exist")
    who = _recipient(row)
    today = now.date()
    previous_day = today - timedelta(days=7)
    scope = _scope(who)

    partnerships = {
        p.id: p
        for p in connection.execute(
            select(
                PARTNERSHIPS.c.id,
                PARTNERSHIPS.c.status,
                PARTNERSHIPS.c.ended_at,
                ROUNDS.c.name.label("round_name"),
                ROUNDS.c.start,
                ROUNDS.c.end,
                ROUNDS.c.cadence_days,
            )
            .join(ROUNDS, ROUNDS.c.id == PARTNERSHIPS.c.round_id)
            .where(PARTNERSHIPS.c.id.in_(scope))
        )
    }
    current = {s.partnership_id: s for s in _latest(connection, scope, today, full=True)}
    previous = {s.partnership_id: s.state for s in _latest(connection, scope, previous_day)}
    states: dict[int, str] = {}
    for pid, snap in current.items():
        p = partnerships.get(pid)
        if p is None:
            continue
        # A partnership dissolved since its last snapshot is no longer anyone's to act on.
        gone = p.status != "active" and (p.ended_at is None or _aware(p.ended_at) <= now)
        states[pid] = p.status if gone else snap.state

    listed = sorted(
        (pid for pid, state in states.items() if state in _LISTED),
        key=lambda pid: (-current[pid].score, _aware(current[pid].since), pid),
    )
    recovered = sorted(
        pid for pid, state in states.items() if state == HEALTHY and previous.get(pid) in _TROUBLED
    )
    shown = sorted({*listed, *recovered})
    members = _members(connection, shown, now)
    nudges = _nudges(connection, listed)
    notes = _notes(connection, listed, now)
    activity = _activity(connection, listed, now)

    cards = []
    for pid in listed:
        snap, p = current[pid], partnerships[pid]
        facts = _json(snap.facts, {})
        since = _aware(snap.since)
        card_members = members[pid]
        silent = {int(i) for i in facts.get("silent") or [] if isinstance(i, int)}
        for m in card_members:
            m["silent"] = m["id"] in silent
        last_contact = _parse(facts.get("last_contact"))
        cards.append(
            {
                "id": pid,
                "round": p.round_name,
                "members": card_members,
                "state": states[pid],
                "score": snap.score,
                "since": since.isoformat(),
                "days": max(0, (now - since).days),
                "weeks": max(1, (now - since).days // 7),
                "previous_state": previous.get(pid),
                "reasons": [str(r) for r in _json(snap.reasons, [])],
                "nudges": nudges[pid],
                "notes": notes[pid],
                "action": _action(
                    facts, card_members, nudges[pid], last_contact, activity[pid], now
                ),
                "grid": _grid(p, activity[pid], card_members, now),
            }
        )

    def brief(pid: int) -> dict[str, Any]:
        people = [{"name": m["name"], "country": m["country"]} for m in members[pid]]
        return {"id": pid, "members": people, "score": current[pid].score}

    by_id = {card["id"]: card for card in cards}
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
        "newly_at_risk": [
            brief(pid) for pid in listed if states[pid] == AT_RISK and previous.get(pid) != AT_RISK
        ],
        "still_at_risk": [
            {**brief(pid), "weeks": by_id[pid]["weeks"]}
            for pid in listed
            if states[pid] == AT_RISK and previous.get(pid) == AT_RISK
        ],
        "recovered": [{**brief(pid), "previous_state": previous[pid]} for pid in recovered],
        "fortnights": max((len(card["grid"]) for card in cards), default=0),
        "cells": list(CELLS),
    }


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


def _latest(connection: Connection, scope: Select[Any], day: date, full: bool = False) -> list[Any]:
    """Each scoped partnership's latest snapshot on or before ``day``."""
    last = (
        select(SNAPSHOTS.c.partnership_id, func.max(SNAPSHOTS.c.day).label("day"))
        .where(SNAPSHOTS.c.day <= day, SNAPSHOTS.c.partnership_id.in_(scope))
        .group_by(SNAPSHOTS.c.partnership_id)
        .subquery()
    )
    columns = [SNAPSHOTS.c.partnership_id, SNAPSHOTS.c.state]
    if full:
        columns += [SNAPSHOTS.c.score, SNAPSHOTS.c.since, SNAPSHOTS.c.reasons, SNAPSHOTS.c.facts]
    query = select(*columns).join(
        last,
        and_(SNAPSHOTS.c.partnership_id == last.c.partnership_id, SNAPSHOTS.c.day == last.c.day),
    )
    return list(connection.execute(query))


def _members(
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
            bouncing = m.bouncing_since is not None and _aware(m.bouncing_since) <= now
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


def _nudges(connection: Connection, ids: Sequence[int]) -> defaultdict[int, list[dict[str, Any]]]:
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
            sent = _aware(n.sent_at) if n.sent_at is not None else None
            found[n.partnership_id].append(
                {
                    "template": level if level.startswith("nudge_") else f"nudge_{level}",
                    "to": {"name": n.name or "", "email": n.to_address},
                    "sent": sent.date().isoformat() if sent else None,
                    "sent_at": sent.isoformat() if sent else None,
                }
            )
    return found


def _notes(
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
                {"text": n.text, "date": _aware(n.created_at).date().isoformat()}
            )
    return found


def _activity(
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


def _grid(
    partnership: Any, events: Iterable[Any], members: Sequence[dict[str, Any]], now: datetime
) -> list[dict[str, Any]]:
    """One cell per fortnight of the partnership's round, from the round's start up to ``now``.

    A cell is ``alert`` when a bounce, an unsubscribe or a concern came that fortnight; else
    ``contact`` when contact was confirmed (a check-in 1 or partner contact); else ``one`` when
    someone was active but contact was not confirmed (usually one member only: a message is its
    sender's own activity, never proof that the members talk); else ``none``.
    """
    cadence = max(1, int(partnership.cadence_days or 14))
    start = datetime.combine(partnership.start, time(0), UTC)
    last_day = now.date() if partnership.end is None else min(now.date(), partnership.end)
    if last_day < partnership.start:
        return []
    count = (last_day - partnership.start).days // cadence + 1
    alerts, contact = [False] * count, [False] * count
    active: list[set[int]] = [set() for _ in range(count)]
    member_ids = {m["id"] for m in members}
    for event in events:
        at = _aware(event.occurred_at)
        if at < start:
            continue
        slot = (at - start).days // cadence
        if slot >= count:
            continue
        if event.kind in _ALERTS:
            alerts[slot] = True
        elif event.kind == "partner_contact" or (event.kind == "checkin" and event.value == 1):
            contact[slot] = True
        if event.kind in _ACTIVE and event.participant_id in member_ids:
            active[slot].add(event.participant_id)
    cells = []
    for slot in range(count):
        if alerts[slot]:
            cell = ALERT
        elif contact[slot]:
            cell = CONTACT
        elif active[slot]:
            cell = ONE
        else:
            cell = NONE
        begins = partnership.start + timedelta(days=slot * cadence)
        cells.append({"fortnight": slot + 1, "start": begins.isoformat(), "cell": cell})
    return cells


def _action(
    facts: dict[str, Any],
    members: Sequence[dict[str, Any]],
    nudges: Sequence[dict[str, Any]],
    last_contact: datetime | None,
    events: Iterable[Any],
    now: datetime,
) -> dict[str, Any]:
    """The next thing a coordinator should do, most urgent first, with the names it concerns."""
    urgent = set(facts.get("urgent") or [])

    def names(chosen: Iterable[dict[str, Any]]) -> list[str]:
        return [m["name"] for m in chosen]

    if urgent & {"bouncing", "suppressed"}:
        broken = [m for m in members if m["bouncing"] or m["suppressed"] in ("bounce", "smtp_5xx")]
        return {"code": FIX_ADDRESS, "names": names(broken or members)}
    if urgent & {"withdrew", "unsubscribed"}:
        leaving = {m["id"] for m in members if m["status"] == "withdrawn" or m["suppressed"]}
        leaving |= {e.participant_id for e in events if e.kind == "unsubscribe"}
        staying = [m for m in members if m["id"] not in leaving]
        return {"code": REMATCH, "names": names(staying or members)}
    if "concern" in urgent:
        concerns = sorted(
            (e for e in events if e.kind == "concern"), key=lambda e: _aware(e.occurred_at)
        )
        raised = {concerns[-1].participant_id} if concerns else set()
        chosen = [m for m in members if m["id"] in raised]
        return {"code": CONTACT_PRIVATELY, "names": names(chosen or members)}
    silent = [m for m in members if m["silent"]]
    if silent:
        return {"code": WRITE_SILENT, "names": names(silent)}
    sent = [at for at in (_parse(n["sent_at"]) for n in nudges) if at is not None]
    if any(last_contact is None or at > last_contact for at in sent):
        return {"code": WRITE_ALL, "names": names(members)}
    return {"code": WAIT, "names": []}


def _chunks(ids: Sequence[int]) -> Iterable[list[int]]:
    for start in range(0, len(ids), _CHUNK):
        yield list(ids[start : start + _CHUNK])


def _json(text: str | None, default: Any) -> Any:
    """A snapshot's JSON column; a damaged value reads as empty rather than failing the report."""
    try:
        value = json.loads(text or "")
    except ValueError:
        return default
    return value if isinstance(value, type(default)) else default


def _parse(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return _aware(datetime.fromisoformat(value))
    except ValueError:
        return None


def _aware(value: datetime) -> datetime:
    """SQLite hands back naive datetimes for what Rapport stored as UTC."""
    return value.astimezone(UTC) if value.tzinfo is not None else value.replace(tzinfo=UTC)
