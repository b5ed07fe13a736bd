"""Tests for monitor/judging.py: the events it reads change no judgement, on SQLite and PostgreSQL.

The daily job fetches only the events a judgement depends on (``relevant``), block by block.  The
property test holds the judge to identical results on those and on every event; the database
test holds ``judge_all`` to the judge's results over every event stored, across block edges.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Connection, insert, select, update

from monitor import judging
from monitor.health import Event, Health, Member, judge
from program.config import load_config
from program.models import (
    ACTIVITY,
    MEMBERSHIPS,
    PARTICIPANTS,
    PARTNERSHIPS,
    SNAPSHOTS,
    SUPPRESSIONS,
)
from tests.conftest import Project, Result

pytestmark = pytest.mark.databases("sqlite", "postgresql")

START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
KINDS = ("message", "checkin") * 2 + (
    "partner_contact",
    "unsubscribe",
    "concern",
    "bounce",
    "other",
)


def _instant(days: int, hours: int) -> datetime:
    return START + timedelta(days=days, hours=hours)


# Times on a coarse grid (whole days, a few hours apart), so that events often share an instant
# with the last contact: the tie-breaking between them is part of what must not change.
instants = st.builds(_instant, st.integers(-3, 90), st.sampled_from((0, 0, 6)))
events_strategy = st.lists(
    st.builds(
        Event,
        participant_id=st.integers(1, 4),  # 4 is no member
        kind=st.sampled_from(KINDS),
        occurred_at=instants,
        value=st.sampled_from((None, 1, 1, 2, 2, 3)),
        detail=st.sampled_from(("", "note")),
    ),
    max_size=60,
)
members_strategy = st.lists(
    st.builds(
        Member,
        participant_id=st.integers(1, 3),
        name=st.sampled_from(("Kelsey Brown", "Maria", "Li Wei")),
        country=st.sampled_from(("US", "PL")),
        status=st.sampled_from(("active", "active", "active", "paused", "withdrawn")),
        bouncing_since=st.none() | st.just(_instant(30, 0)),
        suppressed=st.booleans(),
    ),
    min_size=2,
    max_size=3,
    unique_by=lambda m: m.participant_id,
)


@settings(max_examples=1500, deadline=None)
@given(
    members=members_strategy,
    events=events_strategy,
    now=st.builds(_instant, st.integers(0, 120), st.integers(0, 23)),
)
def test_judging_the_relevant_events_gives_the_same_health(
    members: list[Member], events: list[Event], now: datetime
) -> None:
    """Random histories: the judge gives identical health (state, score, since, reasons, last
    contact, silent, urgent) on the events the daily job reads and on every event."""
    everything = judge(members=members, events=events, started=START, status="active", now=now)
    reduced = judging.relevant(members, events, now)
    assert judge(members=members, events=reduced, started=START, status="active", now=now) == (
        everything
    )
    assert all(e in events and e.occurred_at <= now for e in reduced)


def test_relevant_drops_what_came_before_the_last_contact() -> None:
    """Before the last contact only unsubscribes and concerns are kept; with no contact, all."""
    pair = [Member(1, "Kelsey", "US"), Member(2, "Maria", "PL")]
    before = [Event(1, "message", _instant(1, 0)), Event(2, "checkin", _instant(2, 0), 2)]
    kept = [Event(2, "unsubscribe", _instant(3, 0)), Event(9, "concern", _instant(3, 0))]
    contact = [Event(1, "checkin", _instant(5, 0), 1), Event(2, "message", _instant(5, 0))]
    after = [Event(2, "message", _instant(6, 0))]
    later = [Event(1, "partner_contact", _instant(50, 0))]
    events = [*before, *kept, *contact, *after, *later]
    assert judging.relevant(pair, events, _instant(10, 0)) == [*kept, *contact, *after]
    assert judging.relevant(pair, before, _instant(10, 0)) == before
    outsider = [*before, Event(9, "partner_contact", _instant(4, 0))]  # not a member: no contact
    assert judging.relevant(pair, outsider, _instant(10, 0)) == outsider


def _network(project: Project, cli: Callable[..., Result], pairs: int) -> None:
    people = "email,name,country,timezone,language\n" + "".join(
        f"p{i}@example.org,Person{i} Example,PL,Europe/Warsaw,en\n" for i in range(2 * pairs + 1)
    )
    partnerships = "round,member_a,member_b,member_c\n" + "".join(
        f"spring,p{2 * i}@example.org,p{2 * i + 1}@example.org,"
        + (f"p{2 * pairs}@example.org" if i == 0 else "")
        + "\n"
        for i in range(pairs)
    )
    (project.dir / "people.csv").write_text(people, encoding="utf-8")
    (project.dir / "pairs.csv").write_text(partnerships, encoding="utf-8")
    for args in (
        ("import", "participants", project.dir / "people.csv"),
        ("round", "create", "spring", "--start", START.date().isoformat()),
        ("import", "partnerships", project.dir / "pairs.csv"),
    ):
        result = cli("--config", project.config, *args, "--now", "2026-02-20T09:00:00Z")
        assert result.code == 0, result.err


def test_judge_all_equals_the_judge_over_every_stored_event(
    project: Project, cli: Callable[..., Result], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Forty partnerships with random histories (and members bouncing, paused, withdrawn or
    suppressed, and pairs matched mid-round), judged in blocks of seven: judge_all gives exactly
    what the judge gives on all their events as stored, at several instants."""
    _network(project, cli, 40)
    rng = random.Random(20260302)
    with project.engine.begin() as connection:
        membership = connection.execute(
            select(MEMBERSHIPS.c.partnership_id, MEMBERSHIPS.c.participant_id)
        ).all()
        by_pair: dict[int, list[int]] = {}
        for pid, person in membership:
            by_pair.setdefault(pid, []).append(person)
        outsider = max(person for _, person in membership)
        by_pair_ids = sorted(by_pair)
        rows = []
        for pid, people in by_pair.items():
            for _ in range(rng.randrange(0, 50)):
                kind = rng.choice(KINDS)
                at = _instant(rng.randrange(-3, 90), rng.choice((0, 0, 6, 13)))
                rows.append(
                    {
                        "partnership_id": pid,
                        "participant_id": rng.choice([*people, outsider]),
                        "kind": kind,
                        "value": rng.choice((1, 2, 3)) if kind == "checkin" else None,
                        "detail": "note" if kind == "concern" else "",
                        "occurred_at": at + timedelta(microseconds=rng.choice((0, 0, 1500))),
                        "created_at": at,
                    }
                )
        connection.execute(insert(ACTIVITY), rows)
        # Members bouncing, paused or suppressed, and pairs matched mid-round: read as stored.
        for person, values in (
            (3, {"bouncing_since": _instant(12, 6) + timedelta(microseconds=250)}),
            (8, {"status": "paused"}),
            (11, {"status": "withdrawn"}),
        ):
            connection.execute(
                update(PARTICIPANTS).where(PARTICIPANTS.c.id == person).values(**values)
            )
        email = connection.execute(select(PARTICIPANTS.c.email).where(PARTICIPANTS.c.id == 5))
        connection.execute(
            insert(SUPPRESSIONS).values(
                email=email.scalar_one(), reason="bounce", detail="", created_at=START
            )
        )
        for pid, days in ((by_pair_ids[2], 9), (by_pair_ids[5], 30)):
            connection.execute(
                update(PARTNERSHIPS)
                .where(PARTNERSHIPS.c.id == pid)
                .values(created_at=_instant(days, 13))
            )
    settings_ = load_config(project.config)
    monkeypatch.setattr(judging, "_CHUNK", 7)
    for now in (_instant(20, 9), _instant(45, 0), _instant(100, 0)):
        with project.engine.connect() as connection:
            got = {
                j.partnership_id: j.health
                for j in judging.judge_all(connection, settings=settings_, now=now)
            }
            expected = _judge_everything(connection, now)
        assert got.keys() == expected.keys() and len(got) == 40
        assert got == expected


def test_snapshot_keeps_each_health_as_judged(project: Project, cli: Callable[..., Result]) -> None:
    """The day's snapshot rows read back with the judged state, score, since (as an instant, in
    UTC) and reasons; writing the day again replaces them."""
    _network(project, cli, 3)
    now = datetime(2026, 3, 20, 1, 30, tzinfo=timezone(timedelta(hours=2)))  # 19 March, UTC
    with project.engine.begin() as connection:
        connection.execute(
            update(PARTICIPANTS).where(PARTICIPANTS.c.id == 1).values(status="withdrawn")
        )
        judged = judging.judge_all(connection, settings=load_config(project.config), now=now)
        judging.snapshot(connection, judged, now=now)
        assert judging.snapshot(connection, judged, now=now) == date(2026, 3, 19)
    with project.engine.connect() as connection:
        rows = {r.partnership_id: r for r in connection.execute(select(SNAPSHOTS))}
    assert len(rows) == len(judged) == 3
    for j in judged:
        row = rows[j.partnership_id]
        assert (row.day, row.state, row.score) == (
            date(2026, 3, 19),
            j.health.state,
            j.health.score,
        )
        assert row.since == j.health.since and row.since.utcoffset() == timedelta(0)
        assert json.loads(row.reasons) == list(j.health.reasons)
        assert row.created_at == now
    assert any(j.health.since == now for j in judged)  # a withdrawal's instant is now's


def test_two_writers_of_one_days_snapshot_take_turns(
    project: Project, cli: Callable[..., Result]
) -> None:
    """The daily job and a report catching up (or two service instances on PostgreSQL) may write
    the same day's snapshot at once: the second waits for the first, then replaces its rows."""
    _network(project, cli, 3)
    now = datetime(2026, 3, 20, 9, 0, tzinfo=UTC)
    settings = load_config(project.config)
    errors: list[BaseException] = []

    def second() -> None:
        try:
            with project.engine.begin() as connection:
                judged = judging.judge_all(connection, settings=settings, now=now)
                judging.snapshot(connection, judged, now=now)
        except BaseException as exc:
            errors.append(exc)

    with project.engine.begin() as connection:
        judging.snapshot(
            connection, judging.judge_all(connection, settings=settings, now=now), now=now
        )
        other = threading.Thread(target=second)
        other.start()
        if project.backend == "postgresql":  # the second writer is queued on the lock
            waiting = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            deadline = time.monotonic() + 30
            while project.scalar(waiting) != 1:
                assert time.monotonic() < deadline, "the second writer never waited"
                time.sleep(0.05)
    other.join(60)
    assert not other.is_alive() and not errors, errors
    assert project.scalar("SELECT count(*) FROM health_snapshot WHERE day = '2026-03-20'") == 3


def _judge_everything(connection: Connection, now: datetime) -> dict[int, Health]:
    """The judge over every stored event of each partnership, read the plain way."""
    members: dict[int, list[Member]] = {}
    suppressed = set(connection.execute(select(SUPPRESSIONS.c.email)).scalars())
    query = (
        select(MEMBERSHIPS.c.partnership_id, PARTICIPANTS)
        .join(PARTICIPANTS, PARTICIPANTS.c.id == MEMBERSHIPS.c.participant_id)
        .order_by(MEMBERSHIPS.c.partnership_id, MEMBERSHIPS.c.position)
    )
    for m in connection.execute(query):
        members.setdefault(m.partnership_id, []).append(
            Member(m.id, m.name, m.country, m.status, m.bouncing_since, m.email in suppressed)
        )
    events: dict[int, list[Event]] = {pid: [] for pid in members}
    for e in connection.execute(select(ACTIVITY)):
        events[e.partnership_id].append(
            Event(e.participant_id, e.kind, e.occurred_at, e.value, e.detail)
        )
    created = dict(connection.execute(select(PARTNERSHIPS.c.id, PARTNERSHIPS.c.created_at)).all())
    begin = datetime.combine(date(2026, 3, 2), datetime.min.time(), UTC)
    return {
        pid: judge(
            members=people,
            events=events[pid],
            started=max(begin, created[pid]),
            status="active",
            now=now,
        )
        for pid, people in members.items()
    }
