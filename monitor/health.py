"""Partnership health: a partnership's state, risk score and reasons, judged from its events.

Pure: no I/O, and the clock is never read; ``now`` is an argument.  Every datetime is aware and
is compared as an instant (Rapport stores UTC); dates in reasons are UTC calendar days.  Durations
are days of 24 hours.  Events after ``now`` are ignored, so judging at an earlier ``now`` replays
the past.

Evidence (DESIGN.md, "Signals and health"):

* contact is confirmed for the whole partnership by a check-in ``1`` or a ``partner_contact``
  event (a member's mail that copied the log address and was addressed to a partner);
* a check-in ``2`` ("I wrote but have not heard back") makes the partnership one-sided, the other
  members the silent ones, until contact is confirmed again;
* a check-in ``3`` ("not in touch yet") means it is not healthy until contact is confirmed again;
* a ``message`` is its sender's own activity, never proof that the members talk.  An active (not
  paused) member not heard from for ``one_sided_days`` (by their own activity, else the last
  confirmed contact, else the start) while another member wrote since makes it one-sided;
* urgent whatever else holds: a member's mail bouncing (``Member.bouncing_since``: a coordinator
  clears it when the address is fixed, so ``bounce`` events are not read), a member suppressed,
  unsubscribed (an ``unsubscribe`` event) or withdrawn, and any ``concern`` event.

States: ``dissolved`` and ``ended`` are the partnership's own status.  Otherwise ``healthy`` when
contact was confirmed within ``quiet_days`` and nothing newer says otherwise; else ``one_sided``
when either one-sided rule holds; else ``starting`` when no contact was ever confirmed and the
partnership is younger than ``grace_days``; else ``quiet``.  A one-sided or quiet partnership with
no contact confirmed for ``at_risk_days`` (since the last confirmed contact, else the start) is
``at_risk``, and so is any partnership with an urgent condition.

``Health.since`` is the instant the condition defining the state first held: the last confirmed
contact (healthy); the start (starting); the first check-in ``2`` since the last contact, or a
silent member's last word plus ``one_sided_days`` (one_sided); the last contact plus
``quiet_days``, or the first check-in ``3`` since it, or the start plus ``grace_days`` if contact
was never confirmed (quiet); the last contact (else the start) plus ``at_risk_days``, or the
earliest urgent condition such as ``bouncing_since`` (at_risk).  A withdrawal or a suppression
has no recorded date: its instant is taken to be ``now``; so is dissolved's and ended's ``since``.

Beside the sentences, ``Health`` carries the facts that nudges and reports act on: the last
confirmed contact, the silent members and the codes of the urgent conditions.

Score, 0 to 100, for sorting (higher needs attention sooner): ``floor + silence`` where ``silence``
is ``floor(24 * s / (s + A))``, ``s`` the time since the last confirmed contact (else the start)
and ``A`` the ``at_risk_days``, both in seconds, so it grows with the silence and stays below 24;
``floor`` is 0 for starting and healthy, 25 for one_sided and quiet, 50 for at_risk by silence,
and ``75 + 5 * (urgent conditions - 1)`` for at_risk by an urgent condition, capped at 100.  So any
urgent partnership outranks any other, and a longer silence never scores lower.  Dissolved and
ended score 0.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import NamedTuple, TypeVar

from monitor import phrases
from monitor.phrases import Phrasebook

__all__ = [
    "DEFAULT_THRESHOLDS",
    "STATES",
    "URGENT_CODES",
    "Event",
    "Health",
    "Member",
    "Thresholds",
    "judge",
    "judge_many",
]

STARTING, HEALTHY, ONE_SIDED, QUIET, AT_RISK, DISSOLVED, ENDED = STATES = (
    "starting",
    "healthy",
    "one_sided",
    "quiet",
    "at_risk",
    "dissolved",
    "ended",
)
URGENT_CODES = ("bouncing", "suppressed", "unsubscribed", "withdrew", "concern")
_FLOOR = {STARTING: 0, HEALTHY: 0, ONE_SIDED: 25, QUIET: 25, AT_RISK: 50}
_URGENT_FLOOR, _URGENT_STEP, _SILENCE_POINTS = 75, 5, 24
_ACTIVITY = frozenset({"message", "checkin", "partner_contact"})
_NEVER = datetime.min.replace(tzinfo=UTC)

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True, slots=True)
class Member:
    """A member of the partnership as health needs them; ``country`` is ISO 3166-1 alpha-2.

    ``status`` is ``active``, ``paused`` or ``withdrawn``; ``bouncing_since`` (aware, UTC) is when
    their mail began to bounce; ``suppressed`` is true when Rapport no longer mails them.
    """

    participant_id: int
    name: str
    country: str
    status: str = "active"
    bouncing_since: datetime | None = None
    suppressed: bool = False


class Event(NamedTuple):
    """One activity event (kinds as in ActivityEvent, plus ``concern``); ``occurred_at`` aware.

    ``value`` is a check-in's answer, 1, 2 or 3; ``detail`` a concern's note for coordinators.
    A named tuple rather than a dataclass: the daily job builds one per activity row read, and a
    tuple is built in half the time, with the same fields, defaults and immutability.
    """

    participant_id: int
    kind: str
    occurred_at: datetime
    value: int | None = None
    detail: str = ""


@dataclass(frozen=True, slots=True)
class _Limits:
    """Thresholds as timedeltas, worked out once per Thresholds."""

    grace: timedelta
    quiet: timedelta
    at_risk: timedelta
    one_sided: timedelta


@dataclass(frozen=True, slots=True)
class Thresholds:
    """When a partnership changes state, in days of 24 hours (the ``[health]`` config section).

    The defaults suit a fortnightly topic cadence: ``quiet_days`` is two topics without news.
    """

    grace_days: int = 10
    """Younger than this (from the start) with no contact confirmed yet: starting.  0 or more."""
    quiet_days: int = 28
    """No contact confirmed for this long: quiet.  1 or more."""
    at_risk_days: int = 42
    """One-sided or quiet with no contact confirmed for this long: at_risk.  quiet_days or more."""
    one_sided_days: int = 14
    """A member not heard from for this long while another wrote since: one_sided.  1 or more."""
    _limits: _Limits = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("grace_days", "quiet_days", "at_risk_days", "one_sided_days"):
            value = getattr(self, name)
            least = 0 if name == "grace_days" else 1
            if not isinstance(value, int) or value < least:
                raise ValueError(f"health threshold {name} must be a whole {least} or more")
        if self.at_risk_days < self.quiet_days:
            raise ValueError("health threshold at_risk_days must not be below quiet_days")
        days = (self.grace_days, self.quiet_days, self.at_risk_days, self.one_sided_days)
        object.__setattr__(self, "_limits", _Limits(*(timedelta(days=d) for d in days)))


DEFAULT_THRESHOLDS = Thresholds()


@dataclass(frozen=True, slots=True)
class Health:
    """A partnership's health at one instant: ``state`` in STATES, ``score`` 0-100 (higher needs
    attention sooner), ``since`` (aware) when the state's condition began, ``reasons`` sentences.

    The other fields are the facts that nudges and reports act on, so that they need not parse
    reasons: ``last_contact`` (aware, as given) is the last confirmed contact, None if there was
    none; ``silent`` the participant ids the one-sided rules judge silent, in the members' order
    (empty unless the partnership is one-sided, or at risk while one-sided); ``urgent`` the codes
    of the urgent conditions present, in the order of URGENT_CODES.  A dissolved or ended
    partnership is not judged on its events, so these keep their defaults.
    """

    state: str
    score: int
    since: datetime
    reasons: tuple[str, ...]
    last_contact: datetime | None = None
    silent: tuple[int, ...] = ()
    urgent: tuple[str, ...] = ()


def judge(
    *,
    members: Sequence[Member],
    events: Sequence[Event],
    started: datetime,
    status: str,
    now: datetime,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
    language: str = "en",
) -> Health:
    """Judge one partnership at ``now`` (aware) from its members and events (in any order).

    ``started`` (aware) is when the partnership began; ``status`` is the partnership's own,
    ``active``, ``dissolved`` or ``ended``.  Reasons are in ``language`` when monitor/phrases.py
    has its words (English, French, Spanish), else in English.  Raises ValueError for a naive
    ``now`` or ``started`` or an unknown status.
    """
    return _judge(members, events, started, status, now, thresholds._limits, phrases.book(language))


def judge_many(
    partnerships: Iterable[tuple[K, Sequence[Member], Sequence[Event], datetime, str]],
    *,
    now: datetime,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
    language: str = "en",
) -> dict[K, Health]:
    """Judge every ``(key, members, events, started, status)`` at ``now``, as :func:`judge` does."""
    limits, book = thresholds._limits, phrases.book(language)
    return {
        key: _judge(members, events, started, status, now, limits, book)
        for key, members, events, started, status in partnerships
    }


def _names(members: Sequence[Member], book: Phrasebook) -> list[str]:
    """First name and country code; full names when two members share a first name."""
    firsts = [(m.name.split() or [""])[0] for m in members]
    unique = all(firsts) and len(set(firsts)) == len(firsts)
    names, template = [], book.sentences["member"]
    for member, first in zip(members, firsts, strict=True):
        name = first if unique else " ".join(member.name.split())
        name = name or book.say("nameless", id=member.participant_id)
        country = member.country.upper()
        names.append(template.format(name=name, country=country) if country else name)
    return names


def _points(silence: timedelta, limits: _Limits) -> int:
    seconds = silence.total_seconds()
    if seconds <= 0:
        return 0
    return int(_SILENCE_POINTS * seconds / (seconds + limits.at_risk.total_seconds()))


def _judge(
    members: Sequence[Member],
    events: Sequence[Event],
    started: datetime,
    status: str,
    now: datetime,
    limits: _Limits,
    book: Phrasebook,
) -> Health:
    if now.tzinfo is None or started.tzinfo is None:
        raise ValueError("health needs aware datetimes for now and started")
    if status != "active":
        if status in (DISSOLVED, ENDED):
            return Health(status, 0, now, (book.say(status),))
        raise ValueError(f"unknown partnership status {status!r}")

    # One pass: per member, their last activity and first unsubscribe; the last confirmed
    # contact, ties between events at one instant broken by kind then member; check-ins 2 and 3
    # and concerns set aside.  _NEVER stands for "no such event", so that the hot loop needs one
    # comparison per update.
    n = len(members)
    slots = {m.participant_id: i for i, m in enumerate(members)}
    acted = [_NEVER] * n
    answers: list[Event] = []  # check-ins 2 and 3, few: read again once contact is known
    unsubscribed: list[datetime | None] = [None] * n
    last_contact, contact_rank = _NEVER, (0, 0)
    concerns: list[Event] = []
    for event in events:
        at = event.occurred_at
        if at > now:
            continue
        i = slots.get(event.participant_id)
        kind = event.kind
        if kind == "message":
            if i is not None and at > acted[i]:
                acted[i] = at
            continue
        if kind == "concern":
            concerns.append(event)
            continue
        if i is None:
            continue
        if kind == "checkin":
            if at > acted[i]:
                acted[i] = at
            value = event.value
            if value != 1:
                if value == 2 or value == 3:
                    answers.append(event)
                continue
            rank = 2
        elif kind == "partner_contact":
            if at > acted[i]:
                acted[i] = at
            rank = 1
        else:
            if kind == "unsubscribe":
                first = unsubscribed[i]
                if first is None or at < first:
                    unsubscribed[i] = at
            continue
        if at > last_contact or (at == last_contact and (rank, -i) > contact_rank):
            last_contact, contact_rank = at, (rank, -i)

    contact = None if last_contact is _NEVER else last_contact
    ref = started if contact is None else contact
    silence = now - ref
    heard = [a if a > ref else ref for a in acted]
    times2 = [0] * n  # check-ins 2 since the last contact, per member
    said3 = [_NEVER] * n  # the last check-in 3 since the last contact, per member
    first2: datetime | None = None
    first3: datetime | None = None
    for event in answers:
        at, j = event.occurred_at, slots[event.participant_id]
        if at <= last_contact:
            continue
        if event.value == 2:
            times2[j] += 1
            first2 = at if first2 is None or at < first2 else first2
        else:
            said3[j] = at if at > said3[j] else said3[j]
            first3 = at if first3 is None or at < first3 else first3
    reporters = [i for i in range(n) if times2[i]]
    deniers = [i for i in range(n) if said3[i] is not _NEVER]
    silent = [
        i
        for i, m in enumerate(members)
        if m.status == "active"
        and now - heard[i] >= limits.one_sided
        and any(a > heard[i] for j, a in enumerate(acted) if j != i)
    ]

    # A second pass only when a member is silent: who wrote to them since, and how often.
    writes: dict[tuple[int, int], set[datetime]] = {}
    if silent:
        for event in events:
            at = event.occurred_at
            writer = slots.get(event.participant_id)
            if at > now or writer is None or event.kind not in _ACTIVITY:
                continue
            for i in silent:
                if i != writer and at > heard[i]:
                    writes.setdefault((writer, i), set()).add(at)

    if contact is not None and silence < limits.quiet and not (reporters or silent or deniers):
        state, since = HEALTHY, contact
    elif reporters or silent:
        starts = [heard[i] + limits.one_sided for i in silent]
        state, since = ONE_SIDED, min(starts if first2 is None else [*starts, first2])
    elif contact is None:
        young = now - started < limits.grace
        state, since = (STARTING, started) if young else (QUIET, started + limits.grace)
    else:
        starts = [] if first3 is None else [first3]
        if silence >= limits.quiet:
            starts.append(contact + limits.quiet)
        state, since = QUIET, min(starts)
    if state in (ONE_SIDED, QUIET) and silence >= limits.at_risk:
        state, since = AT_RISK, ref + limits.at_risk

    names = _names(members, book)
    lines: list[str] = []
    for i in range(n):
        answered = [
            book.say("said_2", who=names[j], times=book.count(times2[j]))
            for j in reporters
            if j != i
        ]
        wrote = [
            book.say("wrote", who=names[j], times=book.count(len(writes[j, i])))
            for j in range(n)
            if (j, i) in writes and j not in reporters  # a check-in 2 already says they wrote
        ]
        if not (answered or wrote):
            continue
        own = acted[i]
        if own >= ref:
            heard_since = book.say("since_own", date=book.date(own, now))
        else:
            which = "since_start" if contact is None else "since_contact"
            heard_since = book.say(which, date=book.date(ref, now))
        subject = book.say("unanswered" if answered else "no_word", who=names[i], since=heard_since)
        lines.append(book.say("and").join([subject, *answered, *wrote]))
    if contact is None:
        key = "starting" if state == STARTING else "no_contact_start"
        lines.append(book.say(key, date=book.date(started, now)))
    else:
        how = "by_checkin" if contact_rank[0] == 2 else "by_partner_contact"
        how = book.say(how, who=names[-contact_rank[1]])
        key = "contact" if state == HEALTHY else "no_contact"
        lines.append(book.say(key, date=book.date(contact, now), how=how))
    if deniers:
        last3, by3 = max((said3[i], -i) for i in deniers)
        lines.append(book.say("said_3", who=names[-by3], date=book.date(last3, now)))
    for i, member in enumerate(members):
        if member.status == "paused":
            lines.append(book.say("paused", who=names[i]))

    # Silent: whoever a check-in 2 from another member points at, and whoever the one-sided
    # rule found; exactly the members the reasons above say have not answered.
    silent_ids = tuple(
        m.participant_id
        for i, m in enumerate(members)
        if i in silent or any(j != i for j in reporters)
    )
    urgent = _urgent(members, names, unsubscribed, concerns, slots, now, book)
    if urgent:
        earliest = min(at for at, _, _ in urgent)
        since = min(since, earliest) if state == AT_RISK else earliest
        score = _URGENT_FLOOR + _URGENT_STEP * (len(urgent) - 1) + _points(silence, limits)
        codes = {code for _, code, _ in urgent}
        return Health(
            AT_RISK,
            min(100, score),
            since,
            (*(line for _, _, line in urgent), *lines),
            contact,
            silent_ids,
            tuple(code for code in URGENT_CODES if code in codes),
        )
    score = _FLOOR[state] + _points(silence, limits)
    return Health(state, score, since, tuple(lines), contact, silent_ids)


def _urgent(
    members: Sequence[Member],
    names: list[str],
    unsubscribed: list[datetime | None],
    concerns: list[Event],
    slots: dict[int, int],
    now: datetime,
    book: Phrasebook,
) -> list[tuple[datetime, str, str]]:
    """Urgent conditions as (when it began, code, sentence), earliest first; members' in their
    order.  Codes are those of URGENT_CODES."""
    found: list[tuple[datetime, str, str]] = []
    for i, member in enumerate(members):
        who, bouncing, left = names[i], member.bouncing_since, unsubscribed[i]
        if bouncing is not None and bouncing <= now:
            found.append(
                (bouncing, "bouncing", book.say("bouncing", who=who, date=book.date(bouncing, now)))
            )
        if left is not None:
            found.append(
                (left, "unsubscribed", book.say("unsubscribed", who=who, date=book.date(left, now)))
            )
        elif member.suppressed and bouncing is None:
            found.append((now, "suppressed", book.say("suppressed", who=who)))
        if member.status == "withdrawn":
            found.append((now, "withdrew", book.say("withdrew", who=who)))
    for concern in sorted(concerns, key=lambda e: (e.occurred_at, e.participant_id, e.detail)):
        at, by = concern.occurred_at, slots.get(concern.participant_id)
        date = book.date(at, now)
        sentence = (
            book.say("concern", date=date)
            if by is None
            else book.say("concern_by", who=names[by], date=date)
        )
        detail = " ".join(concern.detail.split())
        line = book.say("detail", sentence=sentence, detail=detail) if detail else sentence
        found.append((at, "concern", line))
    found.sort(key=lambda item: item[0])
    return found
