"""The escalation ladder: which nudges and alerts go out today, to whom, and when.

Pure: no I/O, and the clock is never read; ``now`` (aware) is an argument.  The caller reads
health snapshots, people and the outbox, calls :func:`plan` or :func:`concern_alerts`, and turns
each :class:`Planned` into an outbox row; what a message says is decided here, once, and stored in
the row's payload (``data``, JSON-safe), so composing it later needs no other table.

The ladder, each step from the partnership's health and ``[nudges]`` (NudgeSettings):

1. ``quiet`` for ``pair_after``: a friendly note to every member (template ``nudge_pair``);
2. ``one_sided`` for ``silent_after``: a careful note to each silent member (``nudge_silent``);
3. ``at_risk`` for ``coordinators_after``, or at once with an urgent condition (a bounce, a
   suppression, an unsubscribe, a withdrawal, a concern): the partnership's coordinators are told,
   with a suggested next action (``nudge_coordinators``).

A step is measured from ``Health.since``, when the state's condition began.  Each message has an
idempotency key ``nudge/<partnership>/<level>/<episode>/<recipient>``: the episode is the UTC date
of the last confirmed contact (``start`` if there was none), so a pair that recovers and goes quiet
again is nudged again, while one spell of silence is nudged at most once per level; for the
coordinators' step with an urgent condition it is the conditions and the date they began
(``bouncing.2027-03-02``), so news of a bounce reaches them once, whatever the partner does.
A key already in the outbox is never planned again.  A participant gets at most one nudge
within ``min_gap``, whatever the partnership; coordinators are not limited, since an urgent case
must reach them.  Nobody unreachable (suppressed, bouncing, paused or withdrawn) is ever nudged.

Messages go out at a civil hour in the recipient's own zone: at ``local_time`` today if it is still
ahead, else at once if it is not yet evening there (20:00), else at ``local_time`` tomorrow.  A
wall time skipped by a DST change moves to the end of the gap (program.calendar).

A concern is not a nudge: :func:`concern_alerts` tells coordinators the same day, even with nudges
switched off.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from monitor.health import AT_RISK, ONE_SIDED, QUIET, Health
from program.calendar import local_send_instant
from program.settings import NudgeSettings

__all__ = [
    "EVENING",
    "Case",
    "Concern",
    "Past",
    "Planned",
    "Recipient",
    "civil_due",
    "concern_alerts",
    "nudge_day",
    "plan",
]

EVENING = time(20, 0)
"""From this local time on, a message waits for the next morning rather than going out at once."""

PAIR, SILENT, COORDINATORS = "pair", "silent", "coordinators"
_TEMPLATES = {PAIR: "nudge_pair", SILENT: "nudge_silent", COORDINATORS: "nudge_coordinators"}
# Suggested next actions for coordinators, most pressing first; the templates word them.
_ACTIONS = (
    ("concern", ("concern",)),
    ("rematch", ("withdrew", "unsubscribed")),
    ("fix_address", ("bouncing", "suppressed")),
)


@dataclass(frozen=True)
class Recipient:
    """A person a nudge or alert may go to: a participant (``participant_id``) or a coordinator
    (``coordinator_id``).  ``country`` is ISO 3166-1 alpha-2, ``timezone`` an IANA name,
    ``language`` a tag such as ``fr``.  ``reachable`` is False when Rapport must not mail them:
    suppressed, bouncing, paused or withdrawn; such a recipient is never nudged."""

    participant_id: int | None
    coordinator_id: int | None
    name: str
    email: str
    country: str
    timezone: str
    language: str
    reachable: bool = True

    @property
    def ref(self) -> str:
        """``p<participant id>`` or ``c<coordinator id>``, as in idempotency keys."""
        if self.participant_id is not None:
            return f"p{self.participant_id}"
        return f"c{self.coordinator_id}"


@dataclass(frozen=True)
class Case:
    """One active partnership to consider: its health now, its members, and its coordinators
    (the program coordinators and the country coordinators of the members' countries)."""

    partnership_id: int
    health: Health
    members: Sequence[Recipient]
    coordinators: Sequence[Recipient]


@dataclass(frozen=True)
class Past:
    """A nudge already in the outbox, whatever its status.  ``planned_at`` (aware) is when it was
    planned or due: ``min_gap`` is measured from it to a new nudge's due instant, and a gap of
    days makes the hours between planning and sending immaterial.

    ``sent_at`` and ``due_at`` (aware, None when not sent yet or not known) date it in the
    coordinators' alert, as the weekly report does (:func:`nudge_day`): a nudge planned in the
    evening goes out the next morning, and the date people saw it is the one to quote."""

    key: str
    participant_id: int | None
    coordinator_id: int | None
    planned_at: datetime
    sent_at: datetime | None = None
    due_at: datetime | None = None

    @property
    def at(self) -> datetime:
        """When it was sent, else when it is due, else (neither known) when it was planned."""
        return self.sent_at or self.due_at or self.planned_at


@dataclass(frozen=True)
class Planned:
    """A message to put in the outbox: its idempotency ``key``, the ``template`` that writes it,
    who gets it, ``due_at`` (aware, UTC) and ``data``, the JSON-safe payload the template reads."""

    key: str
    template: str
    partnership_id: int
    recipient: Recipient
    due_at: datetime
    data: dict[str, Any]


class Concern(NamedTuple):
    """A concern raised in a participant's own words: the activity event's id, who raised it (None
    when the sender is not a known participant), the phrase that matched, and when (aware).  A
    plain ``(activity_id, participant_id, phrase, occurred_at)`` tuple serves as well."""

    activity_id: int
    participant_id: int | None
    phrase: str
    occurred_at: datetime


def plan(
    cases: Iterable[Case],
    past: Iterable[Past],
    *,
    now: datetime,
    settings: NudgeSettings,
    log_address: str,
) -> list[Planned]:
    """The nudges due for ``cases`` at ``now`` (aware), given the nudges already in the outbox.

    Cases are taken highest score first (then by partnership id), so when a participant's
    ``min_gap`` allows one nudge, the partnership needing attention sooner has it.  The result
    is in that order.  ``log_address`` is the address participants copy on mail to a partner.
    Raises ValueError for a naive ``now``.
    """
    _check_aware(now)
    if not settings.enabled:
        return []
    past = list(past)
    keys = {p.key for p in past}
    sent: dict[int, list[datetime]] = {}  # per participant: when their nudges were planned or due
    for p in past:
        if p.participant_id is not None:
            sent.setdefault(p.participant_id, []).append(p.planned_at)

    planned: list[Planned] = []
    for case in sorted(cases, key=lambda c: (-c.health.score, c.partnership_id)):
        level, recipients = _step(case, now, settings)
        if level is None:
            continue
        health = case.health
        episode = "start" if health.last_contact is None else _utc_day(health.last_contact)
        if level == COORDINATORS and health.urgent:
            # An urgent condition is its own episode, dated when it began: a bouncing address
            # is reported once, not again each time the partner checks in.
            episode = f"{'+'.join(health.urgent)}.{_utc_day(health.since)}"
        for person in recipients:
            if person.participant_id is None and person.coordinator_id is None:
                continue  # nobody to key it to: not a person Rapport knows
            key = f"nudge/{case.partnership_id}/{level}/{episode}/{person.ref}"
            if not person.reachable or key in keys:
                continue
            due = civil_due(now, person.timezone, settings.local_time)
            if person.participant_id is not None:
                earlier = sent.get(person.participant_id, [])
                if any(abs(due - at) < settings.min_gap for at in earlier):
                    continue
                sent.setdefault(person.participant_id, []).append(due)
            keys.add(key)
            data = (
                _coordinators_data(case, past, log_address)
                if level == COORDINATORS
                else _member_data(case, person, log_address)
            )
            planned.append(Planned(key, _TEMPLATES[level], case.partnership_id, person, due, data))
    return planned


def concern_alerts(
    partnership_id: int,
    members: Sequence[Recipient],
    coordinators: Sequence[Recipient],
    concerns: Iterable[tuple[int, int | None, str, datetime]],
    *,
    now: datetime,
    past: Iterable[Past] = (),
) -> list[Planned]:
    """A same-day alert (template ``concern``) to each reachable coordinator, per concern.

    Key ``concern/<partnership>/<activity id>/c<coordinator id>``, due ``now`` (aware) whatever
    the hour: a coordinator must know the same day.  Keys in ``past`` are not planned again.
    Not a nudge, so ``[nudges] enabled`` does not apply.
    """
    _check_aware(now)
    keys = {p.key for p in past}
    alerts: list[Planned] = []
    for concern in map(Concern._make, concerns):
        raiser = next((m for m in members if m.participant_id == concern.participant_id), None)
        data = {
            "partnership": partnership_id,
            "phrase": concern.phrase,
            "occurred_at": concern.occurred_at.astimezone(UTC).isoformat(),
            "raised_by": None if raiser is None else _person(raiser),
            "members": [_person(m) for m in members],
        }
        for coordinator in _unique(coordinators):
            key = f"concern/{partnership_id}/{concern.activity_id}/c{coordinator.coordinator_id}"
            if coordinator.coordinator_id is None or not coordinator.reachable or key in keys:
                continue
            keys.add(key)
            alerts.append(
                Planned(key, "concern", partnership_id, coordinator, now.astimezone(UTC), data)
            )
    return alerts


def nudge_day(sent_at: datetime | None, due_at: datetime) -> str:
    """The date a nudge is quoted with, ISO, UTC: the day it was sent, or (not sent yet) the day
    it is due; never the day it was planned.  The weekly report's cards (monitor/details.py) and
    the coordinators' alert both date nudges with this, so they always agree."""
    return _utc_day(sent_at or due_at)


def civil_due(now: datetime, zone: str, local_time: time) -> datetime:
    """When a message planned at ``now`` (aware) should go out to someone in ``zone`` (UTC).

    Today's ``local_time`` in ``zone`` if it is still ahead; else ``now`` if the local time is
    before EVENING; else tomorrow's ``local_time``.  ``local_time`` is a naive wall time.  An
    empty or unknown zone is read as UTC: the roster import checks zones, and one bad entry
    must not hold back everybody else's mail.
    """
    _check_aware(now)
    tz = _zone(zone)
    local = now.astimezone(tz)
    today = local_send_instant(local.date(), local_time, tz)
    if today > now:
        return today
    if local.time() < EVENING:
        return now.astimezone(UTC)
    return local_send_instant(local.date() + timedelta(days=1), local_time, tz)


def _step(case: Case, now: datetime, settings: NudgeSettings) -> tuple[str | None, list[Recipient]]:
    """The ladder's step this case has reached, and whom it addresses (reachable or not)."""
    health = case.health
    held = now - health.since
    if health.state == QUIET and held >= settings.pair_after:
        return PAIR, list(case.members)
    if health.state == ONE_SIDED and held >= settings.silent_after:
        silent = set(health.silent)
        return SILENT, [m for m in case.members if m.participant_id in silent]
    if health.state == AT_RISK and (health.urgent or held >= settings.coordinators_after):
        return COORDINATORS, _unique(case.coordinators)
    return None, []


def _member_data(case: Case, person: Recipient, log_address: str) -> dict[str, Any]:
    """What a participant's nudge shows: their partners, the last contact, the log address."""
    last = case.health.last_contact
    return {
        "partnership": case.partnership_id,
        "partners": [_person(m) for m in case.members if m.participant_id != person.participant_id],
        "last_contact": None if last is None else _utc_day(last),
        "log_address": log_address,
    }


def _coordinators_data(case: Case, past: list[Past], log_address: str) -> dict[str, Any]:
    """What the coordinators' alert shows: the facts, the members, the nudges so far, and the
    suggested next actions (codes the templates word), most pressing first."""
    health = case.health
    silent = set(health.silent)
    names = {m.participant_id: m.name for m in case.members}
    prefix = f"nudge/{case.partnership_id}/"
    nudges = [
        {
            "level": p.key.split("/")[2],
            "name": names[p.participant_id],
            "date": nudge_day(p.sent_at, p.due_at or p.planned_at),
        }
        for p in sorted(past, key=lambda p: (p.at, p.key))
        if p.participant_id in names and p.key.startswith(prefix)
    ]
    actions = [code for code, causes in _ACTIONS if any(c in health.urgent for c in causes)]
    if not actions:
        actions.append("write_silent" if silent else "write_both")
    last = health.last_contact
    return {
        "partnership": case.partnership_id,
        "state": health.state,
        "score": health.score,
        "since": _utc_day(health.since),
        "last_contact": None if last is None else _utc_day(last),
        "reasons": list(health.reasons),
        "urgent": list(health.urgent),
        "members": [
            {
                **_person(m),
                "silent": m.participant_id in silent,
                "reachable": m.reachable,
            }
            for m in case.members
        ],
        "silent": [m.name for m in case.members if m.participant_id in silent],
        "nudges": nudges,
        "actions": actions,
        "log_address": log_address,
    }


def _person(person: Recipient) -> dict[str, Any]:
    return {
        "name": person.name,
        "email": person.email,
        "country": person.country.upper(),
        "timezone": person.timezone,
    }


def _unique(people: Iterable[Recipient]) -> list[Recipient]:
    """Each person once (a program coordinator may also coordinate a member's country)."""
    found: dict[str, Recipient] = {}
    for person in people:
        found.setdefault(person.ref, person)
    return list(found.values())


def _utc_day(at: datetime) -> str:
    return at.astimezone(UTC).date().isoformat()


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name) if name else ZoneInfo("UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def _check_aware(now: datetime) -> None:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"nudges need an aware datetime for now, got {now!r}")
