"""What a weekly report card shows beyond the health snapshot: an activity grid and a next action.

Both are pure readings of one partnership's activity events, its members and the nudges already
sent, with ``now`` passed in, so they are tested without a database or a clock and monitor/report.py
only has to fetch their inputs.  The grid shows a coordinator, fortnight by fortnight, whether the
members were in touch; the action says what to do next, most urgent cause first.

Words are left to the templates: a grid cell is one of :data:`CELLS` and the action a code with the
names it concerns, so each language phrases them itself.  Datetimes are aware, UTC; naive ones read
back from SQLite are taken as UTC (:func:`aware`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, time, timedelta
from typing import Any

__all__ = ["CELLS", "action", "aware", "grid", "parse"]

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
_ALERTS = frozenset({"bounce", "unsubscribe", "concern"})
_ACTIVE = frozenset({"message", "checkin", "partner_contact"})


def grid(
    round_: Any, events: Iterable[Any], members: Sequence[dict[str, Any]], now: datetime
) -> list[dict[str, Any]]:
    """One cell per fortnight of the partnership's round, from the round's start up to ``now``.

    ``round_`` is the round as read (its ``start``, ``end`` and ``cadence_days``).

    A cell is ``alert`` when a bounce, an unsubscribe or a concern came that fortnight; else
    ``contact`` when contact was confirmed (a check-in 1 or partner contact); else ``one`` when
    someone was active but contact was not confirmed (usually one member only: a message is its
    sender's own activity, never proof that the members talk); else ``none``.
    """
    cadence = max(1, int(round_.cadence_days or 14))
    start = datetime.combine(round_.start, time(0), UTC)
    last_day = now.date() if round_.end is None else min(now.date(), round_.end)
    if last_day < round_.start:
        return []
    count = (last_day - round_.start).days // cadence + 1
    alerts, contact = [False] * count, [False] * count
    active: list[set[int]] = [set() for _ in range(count)]
    member_ids = {m["id"] for m in members}
    for event in events:
        at = aware(event.occurred_at)
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
        begins = round_.start + timedelta(days=slot * cadence)
        cells.append({"fortnight": slot + 1, "start": begins.isoformat(), "cell": cell})
    return cells


def action(
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
            (e for e in events if e.kind == "concern"), key=lambda e: aware(e.occurred_at)
        )
        raised = {concerns[-1].participant_id} if concerns else set()
        chosen = [m for m in members if m["id"] in raised]
        return {"code": CONTACT_PRIVATELY, "names": names(chosen or members)}
    silent = [m for m in members if m["silent"]]
    if silent:
        return {"code": WRITE_SILENT, "names": names(silent)}
    sent = [at for at in (parse(n["sent_at"]) for n in nudges) if at is not None]
    if any(last_contact is None or at > last_contact for at in sent):
        return {"code": WRITE_ALL, "names": names(members)}
    return {"code": WAIT, "names": []}


def parse(value: Any) -> datetime | None:
    """An ISO datetime string as an aware datetime; anything else (or a malformed one) is None."""
    if not isinstance(value, str):
        return None
    try:
        return aware(datetime.fromisoformat(value))
    except ValueError:
        return None


def aware(value: datetime) -> datetime:
    """SQLite hands back naive datetimes for what Rapport stored as UTC."""
    return value.astimezone(UTC) if value.tzinfo is not None else value.replace(tzinfo=UTC)
