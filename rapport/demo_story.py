"""The words of `rapport demo`: each week of the round told in a few lines, from the database.

The demo's reader is a coordinator, not a developer, so the story says what they would want to
know on a Sunday evening: which topic went out and to how many, what came back (replies, check-ins,
copies of partners' mail, and what was set aside: out-of-office replies, bounces), who was nudged
and why, which partnerships changed state, how many are in each state, the ones at risk with the
reasons `rapport health --json` gives, and the weekly reports emailed.  Everything is read back
from what Rapport recorded, so the story cannot claim more than the program did.  Functions here
return text; rapport/demo.py prints it.
"""

from __future__ import annotations

import json
import textwrap
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, select

from program.models import (
    COORDINATORS,
    INBOUND,
    OUTBOX,
    PARTICIPANTS,
    SNAPSHOTS,
    SUPPRESSIONS,
    TOPIC_TEXTS,
    TOPICS,
)
from rapport.demo_people import Person

WIDTH = 100
LABEL = 11  # the width of "  at risk  ", where each line's text starts
STATES = ("healthy", "starting", "one_sided", "quiet", "at_risk")
WHY = {
    "nudge_pair": "a friendly note: the pair has gone quiet",
    "nudge_silent": "a careful note: their partner wrote and heard nothing back",
}


def intro(program: str, round_name: str, start: date, end: date) -> str:
    return f"Rapport demo: {program}, round {round_name}, {start:%-d %B} to {end:%-d %B %Y}"


def roster(
    people: dict[str, Person], partners: dict[str, list[str]], topics: int, languages: list[str]
) -> str:
    countries = {p.country for p in people.values()}
    zones = {p.zone for p in people.values()}
    teams = {frozenset([e, *others]) for e, others in partners.items()}
    triads = sum(1 for t in teams if len(t) == 3)
    return textwrap.fill(
        f"{len(people)} participants in {len(countries)} countries and {len(zones)} time zones,"
        f" {len(teams)} partnerships ({triads} of them a triad), {topics} topics in"
        f" {', '.join(languages)}, one a fortnight.",
        width=WIDTH,
    )


def _line(label: str, text: str) -> str:
    return textwrap.fill(
        text,
        width=WIDTH,
        initial_indent=f"  {label}".ljust(LABEL),
        subsequent_indent=" " * LABEL,
        break_on_hyphens=False,
    )


def week(
    connection: Connection,
    *,
    number: int,
    after: datetime,
    until: datetime,
    topic: int | None,
    health: Sequence[dict[str, Any]],
) -> list[str]:
    """Week ``number``: what happened after ``after`` up to ``until`` (aware, UTC).

    ``topic`` is the number of the topic whose send date falls in the week, if any (its emails
    to the far east of the date line went out the evening before, in the previous week);
    ``health`` is `rapport health --json` at ``until``.
    """
    first, last = (after + timedelta(days=1)).date(), until.date()
    lines = [f"Week {number}: {first:%a %-d %b} to {last:%a %-d %b}"]
    names = _names(connection)
    if topic is not None:
        lines.append(_line("sent", _topic(connection, topic)))
    inbound = connection.execute(
        select(INBOUND).where(INBOUND.c.created_at > after, INBOUND.c.created_at <= until)
    ).all()
    suppressed = connection.execute(
        select(SUPPRESSIONS.c.email).where(
            SUPPRESSIONS.c.created_at > after, SUPPRESSIONS.c.created_at <= until
        )
    ).scalars()
    lines.append(_line("inbox", _inbox(inbound, suppressed, names)))
    sent = connection.execute(
        select(OUTBOX).where(
            OUTBOX.c.status == "sent", OUTBOX.c.sent_at > after, OUTBOX.c.sent_at <= until
        )
    ).all()
    nudges = [_nudge(r, names) for r in sent if r.kind in ("nudge", "alert")]
    lines += [_line(label, text) for label, text in nudges] or [_line("nudged", "nobody")]
    teams = {
        h["partnership"]: " & ".join(f"{m['name']} ({m['country']})" for m in h["members"])
        for h in health
    }
    changes = _changes(connection, first, last)
    paths = Counter(tuple(states) for _, states in changes)
    for path, n in paths.items():
        if n >= 3:
            lines.append(_line("changed", f"{n} partnerships: {' → '.join(path)}"))
    for pid, states in changes:
        if paths[tuple(states)] < 3:
            lines.append(_line("changed", f"#{pid} {teams.get(pid, '')}: {' → '.join(states)}"))
    counts = Counter(h["state"] for h in health)
    lines.append(
        _line(
            "states", ", ".join(f"{s.replace('_', ' ')} {counts[s]}" for s in STATES if counts[s])
        )
    )
    for h in health:
        if h["state"] == "at_risk":
            reasons = "; ".join(r.rstrip(".") for r in h["reasons"])
            lines.append(
                _line("at risk", f"#{h['partnership']} {teams[h['partnership']]}: {reasons}")
            )
    zones = dict(connection.execute(select(COORDINATORS.c.email, COORDINATORS.c.timezone)).all())
    reports = [_report(r, names, zones) for r in sent if r.kind == "report"]
    if reports:
        lines.append(_line("reported", "emailed to " + "; ".join(reports)))
    return lines


def _names(connection: Connection) -> dict[str, str]:
    out = {
        p.email: f"{p.name} ({p.country})"
        for p in connection.execute(
            select(PARTICIPANTS.c.email, PARTICIPANTS.c.name, PARTICIPANTS.c.country)
        )
    }
    for c in connection.execute(select(COORDINATORS.c.email, COORDINATORS.c.name)):
        out[c.email] = c.name
    return out


def _topic(connection: Connection, number: int) -> str:
    rows = connection.execute(
        select(OUTBOX.c.status, PARTICIPANTS.c.language, TOPICS.c.id)
        .join(TOPICS, TOPICS.c.id == OUTBOX.c.topic_id)
        .join(PARTICIPANTS, PARTICIPANTS.c.id == OUTBOX.c.participant_id)
        .where(OUTBOX.c.kind == "topic", TOPICS.c.seq == number)
    ).all()
    if not rows:
        return f"topic {number}: nothing yet"
    texts = dict(
        connection.execute(
            select(TOPIC_TEXTS.c.language, TOPIC_TEXTS.c.title).where(
                TOPIC_TEXTS.c.topic_id == rows[0].id
            )
        ).all()
    )
    sent = [r for r in rows if r.status == "sent"]
    spoken = Counter(r.language if r.language in texts else "en" for r in sent)
    languages = ", ".join(f"{n} in {lang}" for lang, n in spoken.most_common())
    text = (
        f"topic {number} “{texts.get('en', '?')}” to {len(sent)} participants ({languages}),"
        " each due at 09:00 in their own time zone (the demo sends a day's mail in one pass)"
    )
    held = len(rows) - len(sent)
    if held:
        text += f"; {held} held back: the address bounced"
    return text


def _inbox(inbound: Sequence[Any], suppressed: Iterable[str], names: dict[str, str]) -> str:
    human = [r for r in inbound if r.kind == "human"]
    checkins = Counter(r.checkin for r in human if r.checkin is not None)
    parts = [f"{len(human)} messages from participants"]
    if checkins:
        parts.append("check-ins " + ", ".join(f"{k} ×{checkins[k]}" for k in sorted(checkins)))
    copies = sum(1 for r in human if r.partner_contact)
    if copies:
        parts.append(f"{copies} copies of mail between partners")
    for r in inbound:
        if r.kind == "auto_reply":
            parts.append(f"an out-of-office reply from {names.get(r.sender, r.sender)}, set aside")
    bounces = sum(1 for r in inbound if r.kind == "bounce")
    if bounces:
        parts.append(f"{bounces} bounce{'s' if bounces > 1 else ''}, set aside")
    for email in suppressed:
        parts.append(f"mail to {names.get(email, email)} failed for good: address suppressed")
    return "; ".join(parts)


def _nudge(row: Any, names: dict[str, str]) -> tuple[str, str]:
    """("nudged", who and why) for a participant's note, ("alerted", ...) for a coordinator's."""
    payload = json.loads(row.payload or "{}")
    template = payload.get("template", "")
    who = names.get(row.to_address, row.to_address)
    data = payload.get("data", {})
    if template in WHY:
        return "nudged", f"{who}, {WHY[template]}"
    reasons = "; ".join(str(r).rstrip(".") for r in data.get("reasons") or [])
    what = "a concern" if template == "concern" else "at risk"
    team = data.get("partnership", "?")
    return "alerted", f"{who} (coordinator) about #{team}, {what}: {reasons}"


def _changes(connection: Connection, first: date, last: date) -> list[tuple[int, list[str]]]:
    """Partnerships whose daily snapshot changed state this week, with the states in order."""
    seen: dict[int, list[str]] = {}
    for pid, state in connection.execute(
        select(SNAPSHOTS.c.partnership_id, SNAPSHOTS.c.state)
        .where(SNAPSHOTS.c.day >= first - timedelta(days=1), SNAPSHOTS.c.day <= last)
        .order_by(SNAPSHOTS.c.day, SNAPSHOTS.c.id)
    ):
        states = seen.setdefault(pid, [])
        if not states or states[-1] != state:
            states.append(state)
    return [
        (pid, [s.replace("_", " ") for s in states])
        for pid, states in sorted(seen.items())
        if len(states) > 1
    ]


def _report(row: Any, names: dict[str, str], zones: dict[str, str]) -> str:
    data = json.loads(row.payload or "{}").get("data", {})
    listed = len(data.get("partnerships") or [])
    needs = f"{listed} partnership{'s' if listed != 1 else ''} listed" if listed else "all clear"
    local = _aware(row.sent_at).astimezone(ZoneInfo(zones.get(row.to_address, "UTC")))
    return f"{names.get(row.to_address, row.to_address)}, {local:%a %-d %b} ({needs})"


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def program_coordinator(connection: Connection) -> str:
    """The first program coordinator's address."""
    found = connection.execute(
        select(COORDINATORS.c.email)
        .where(COORDINATORS.c.role == "program")
        .order_by(COORDINATORS.c.id)
    ).scalar()
    return str(found)


def ending(connection: Connection, received: int) -> str:
    """What the round left behind: the outbox by kind and the inbox by kind."""
    out = Counter(
        (kind, status)
        for kind, status in connection.execute(select(OUTBOX.c.kind, OUTBOX.c.status))
    )
    sent = Counter(kind for (kind, status), n in out.items() for _ in range(n) if status == "sent")
    held = sum(n for (_, status), n in out.items() if status != "sent")
    inbox = Counter(connection.execute(select(INBOUND.c.kind)).scalars())
    return textwrap.fill(
        f"The round is over. Rapport sent {sum(sent.values())} messages ("
        + ", ".join(f"{n} {kind}s" for kind, n in sent.most_common())
        + f"; {held} held back) and the embedded server received {received}. The inbox read"
        f" {sum(inbox.values())} ("
        + ", ".join(f"{n} {kind.replace('_', ' ')}" for kind, n in inbox.most_common())
        + ").",
        width=WIDTH,
    )
