"""Suggested partners for participants left alone in a round (``rapport match suggest``).

When a partnership is dissolved, or everyone else in it withdraws, its remaining members lose
their partner half-way through a round.  A coordinator re-matches them by hand today; this module
proposes the pairs so that a coordinator only has to read and approve them.

Pure: no I/O and no clock.  ``now`` is an argument, used only to read each time zone's UTC offset
(so the distance between zones is the one that holds on that day, daylight saving included).

Who is left alone: an *active* participant with a membership in the round who has no active
partnership there but a dissolved one, or whose active partnership's other members have all
withdrawn.  Someone paused is not offered a partner (they are not writing); someone with no
membership in the round at all was never matched and is not "left" alone.  An ``ended``
partnership ended with its round and leaves no one to re-match.

Who may be paired: two people left alone, from different countries (the program matches across
borders), who have not already shared a partnership in this round.

Score, 0 to 100: 15 per shared interest (at most three, so 45), 20 for the same sector, 15 for the
same career stage, and up to 20 for the time zones, falling linearly from 20 at the same offset to
0 at 12 hours apart (offsets are compared on a 24-hour clock: UTC+13 and UTC-11 keep the same
hours).  ``interests`` is a list of words or phrases separated by commas or semicolons, compared
case-insensitively with runs of spaces collapsed; sector and career stage are compared the same way.
A participant's stated wishes (say an entry "wants: early career") count as ordinary interests:
reading them as preferences would need a vocabulary the program does not have.

Pairs are chosen greedily: every allowed pair is scored, and pairs are taken best score first
(ties broken by the members' email addresses, so the result never depends on input order) as long
as both people are still free.  Greedy is not a maximum-weight matching, but with the handful of
people left alone in a round it rarely differs, and its choices are easy to explain.

The odd one out (or anyone with no allowed partner) is *reported as unmatched*, with why, rather
than added to an existing pair as a triad: turning a working pair into a triad changes two other
people's partnership without their asking, which is a coordinator's call, not a suggestion's.
They are offered again at the next ``match suggest``, when someone else may be left alone.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import combinations
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["Group", "Person", "Proposal", "Suggestion", "interests", "left_alone", "suggest"]

INTEREST_POINTS, MAX_SHARED = 15, 3
SECTOR_POINTS = 20
STAGE_POINTS = 15
ZONE_POINTS = 20
_SEPARATORS = re.compile(r"[,;]")
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True)
class Person:
    """A participant as matching sees them.  ``status`` is active, paused or withdrawn."""

    id: int
    email: str
    name: str
    country: str
    timezone: str  # IANA
    status: str = "active"
    career_stage: str = ""
    sector: str = ""
    interests: str = ""


@dataclass(frozen=True)
class Group:
    """A partnership of the round: its status (active, dissolved, ended) and member ids."""

    id: int
    status: str
    members: tuple[int, ...]


@dataclass(frozen=True)
class Proposal:
    """Two people suggested as partners; ``a`` has the smaller email address."""

    a: Person
    b: Person
    score: int  # 0 to 100
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class Suggestion:
    """Proposals, best first, and the people left alone for whom no partner was found."""

    proposals: tuple[Proposal, ...]
    unmatched: tuple[tuple[Person, str], ...]  # (person, why) in email order


def _norm(text: str) -> str:
    return _SPACES.sub(" ", text).strip().casefold()


def interests(text: str) -> list[str]:
    """The distinct interests in ``text`` (comma or semicolon separated), normalized, in order."""
    found: list[str] = []
    for part in _SEPARATORS.split(text):
        item = _norm(part)
        if item and item not in found:
            found.append(item)
    return found


def left_alone(people: Mapping[int, Person], groups: Iterable[Group]) -> list[int]:
    """Ids of the active participants left alone in a round whose partnerships are ``groups``.

    ``people`` must hold every member of ``groups``.  The ids come in ascending order.
    """
    in_round: set[int] = set()
    dissolved: set[int] = set()
    partnered: set[int] = set()  # in an active partnership with someone who has not withdrawn
    orphaned: set[int] = set()  # in an active partnership whose other members all withdrew
    for group in groups:
        in_round.update(group.members)
        if group.status == "dissolved":
            dissolved.update(group.members)
        elif group.status == "active":
            for pid in group.members:
                others = [people[o] for o in group.members if o != pid]
                if others and all(o.status == "withdrawn" for o in others):
                    orphaned.add(pid)
                else:
                    partnered.add(pid)
    return sorted(
        pid
        for pid in in_round
        if people[pid].status == "active"
        and pid not in partnered
        and (pid in orphaned or pid in dissolved)
    )


def _offset_hours(zone: str, now: datetime) -> float | None:
    try:
        offset = now.astimezone(ZoneInfo(zone)).utcoffset()
    except (ZoneInfoNotFoundError, ValueError):
        return None
    return offset.total_seconds() / 3600 if offset is not None else None


def _hours_apart(a: str, b: str, now: datetime) -> float | None:
    """Hours between two zones' clocks at ``now``, 0 to 12 (a 24-hour clock wraps)."""
    first, second = _offset_hours(a, now), _offset_hours(b, now)
    if first is None or second is None:
        return None
    apart = abs(first - second) % 24
    return min(apart, 24 - apart)


def _hours(value: float) -> str:
    return f"{value:g} h apart"


def score_pair(a: Person, b: Person, now: datetime) -> tuple[int, tuple[str, ...]]:
    """The score of pairing ``a`` with ``b`` and its reasons, in plain language."""
    score = 0
    reasons: list[str] = []
    sector = _norm(a.sector)
    if sector and sector == _norm(b.sector):
        score += SECTOR_POINTS
        reasons.append(f"both work in the {sector} sector")
    stage = _norm(a.career_stage)
    if stage and stage == _norm(b.career_stage):
        score += STAGE_POINTS
        reasons.append(f"both {stage}")
    theirs = set(interests(b.interests))
    shared = [item for item in interests(a.interests) if item in theirs]
    if shared:
        score += INTEREST_POINTS * min(len(shared), MAX_SHARED)
        label = "shared interest" if len(shared) == 1 else "shared interests"
        reasons.append(f"{label}: {', '.join(shared)}")
    apart = _hours_apart(a.timezone, b.timezone, now)
    if apart is not None:
        score += round(ZONE_POINTS * (1 - apart / 12))
        reasons.append("same time of day" if apart == 0 else _hours(apart))
    return score, tuple(reasons)


def _partners(groups: Iterable[Group]) -> set[frozenset[int]]:
    """Every two people who have shared a partnership (of any status) in the round."""
    pairs: set[frozenset[int]] = set()
    for group in groups:
        pairs.update(frozenset(pair) for pair in combinations(group.members, 2))
    return pairs


def suggest(people: Mapping[int, Person], groups: Sequence[Group], *, now: datetime) -> Suggestion:
    """Pair the people left alone in a round (see the module's docstring for the rules)."""
    alone = sorted((people[pid] for pid in left_alone(people, groups)), key=lambda p: p.email)
    before = _partners(groups)
    scored: list[Proposal] = []
    allowed: set[int] = set()
    for a, b in combinations(alone, 2):
        if a.country == b.country or frozenset((a.id, b.id)) in before:
            continue
        allowed.update((a.id, b.id))
        score, reasons = score_pair(a, b, now)
        scored.append(Proposal(a, b, score, reasons))
    scored.sort(key=lambda p: (-p.score, p.a.email, p.b.email))
    taken: set[int] = set()
    chosen: list[Proposal] = []
    for proposal in scored:
        if proposal.a.id not in taken and proposal.b.id not in taken:
            chosen.append(proposal)
            taken.update((proposal.a.id, proposal.b.id))
    unmatched = []
    for person in alone:
        if person.id in taken:
            continue
        if len(alone) == 1:
            why = "no one else is left alone in this round"
        elif person.id not in allowed:
            why = "everyone else left alone is from the same country or was already their partner"
        else:
            why = "the others who could be their partner are already paired"
        unmatched.append((person, why))
    return Suggestion(tuple(chosen), tuple(unmatched))
