"""Tests for monitor.health: states, evidence, reasons, since and score, with a fixed clock."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.health import (
    STATES,
    URGENT_CODES,
    Event,
    Health,
    Member,
    Thresholds,
    judge,
    judge_many,
)

START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # a Monday; the first topic goes out
KELSEY = Member(1, "Kelsey Brown", "US")
MARIA = Member(2, "Maria Nowak", "PL")
LI = Member(3, "Li Wei", "CN")
PAIR = (KELSEY, MARIA)
TRIAD = (KELSEY, MARIA, LI)


def day(n: float) -> datetime:
    """The instant n days after the start (2 March 2026, 09:00 UTC)."""
    return START + timedelta(days=n)


def message(pid: int, n: float) -> Event:
    return Event(pid, "message", day(n))


def checkin(pid: int, n: float, value: int) -> list[Event]:
    """A check-in reply: like monitor.signals, a message event and a check-in event."""
    return [Event(pid, "message", day(n)), Event(pid, "checkin", day(n), value)]


def health(
    events: Sequence[Event],
    now: float,
    members: Sequence[Member] = PAIR,
    status: str = "active",
    thresholds: Thresholds | None = None,
) -> Health:
    return judge(
        members=members,
        events=events,
        started=START,
        status=status,
        now=day(now),
        thresholds=thresholds or Thresholds(),
    )


def test_states_are_the_designed_seven() -> None:
    """STATES lists the seven states DESIGN.md names, in order of the design."""
    assert STATES == ("starting", "healthy", "one_sided", "quiet", "at_risk", "dissolved", "ended")


def test_starting_while_young_without_signal() -> None:
    """A partnership younger than grace_days with no events is starting, since its start."""
    got = health([], now=5)
    assert got.state == "starting"
    assert got.since == START
    assert got.reasons == ("Started on 2 March; no contact confirmed yet",)


def test_quiet_once_grace_passes_without_contact() -> None:
    """Past grace_days with no contact ever confirmed, it is quiet since start + grace_days."""
    got = health([], now=12)
    assert got.state == "quiet"
    assert got.since == day(10)
    assert got.reasons == ("No contact confirmed since the start on 2 March",)


def test_member_messages_alone_never_make_it_healthy() -> None:
    """Messages from both members are their own activity, not proof that the pair talks."""
    events = [message(1, 1), message(2, 2), message(1, 8), message(2, 9)]
    assert health(events, now=9.5).state == "starting"
    got = health(events, now=12)
    assert got.state == "quiet"
    assert got.reasons == ("No contact confirmed since the start on 2 March",)


def test_checkin_1_confirms_contact_for_the_pair() -> None:
    """A check-in 1 from either member makes the pair healthy, since that check-in."""
    got = health(checkin(2, 3, 1), now=20)
    assert got.state == "healthy"
    assert got.since == day(3)
    assert got.reasons == ("Last contact confirmed on 5 March (check-in 1 from Maria (PL))",)


def test_partner_contact_confirms_contact() -> None:
    """A message copied to the log address and addressed to a partner confirms contact."""
    events = [message(1, 4), Event(1, "partner_contact", day(4))]
    got = health(events, now=6)
    assert got.state == "healthy"
    assert got.since == day(4)
    assert got.reasons == (
        "Last contact confirmed on 6 March"
        " (Kelsey (US) wrote to a partner, copying the log address)",
    )


def test_checkin_2_makes_it_one_sided_naming_the_silent_member() -> None:
    """A check-in 2 from Kelsey makes Maria the silent one, from the first such check-in."""
    events = [*checkin(2, 1, 1), *checkin(1, 14, 2), *checkin(1, 28, 2)]
    got = health(events, now=30)
    assert got.state == "one_sided"
    assert got.since == day(14)
    assert got.reasons == (
        "Maria (PL) has not answered since 3 March;"
        " Kelsey (US) said twice they wrote without an answer (check-in 2)",
        "No contact confirmed since 3 March (check-in 1 from Maria (PL))",
    )


def test_checkin_2_one_sided_even_while_young() -> None:
    """A check-in 2 during the grace period is already one-sided: no waiting for grace."""
    got = health(checkin(1, 2, 2), now=3)
    assert got.state == "one_sided"
    assert got.since == day(2)
    assert got.reasons[0] == (
        "Maria (PL) has not answered since the start on 2 March;"
        " Kelsey (US) said once they wrote without an answer (check-in 2)"
    )


def test_contact_after_checkin_2_makes_it_healthy_again() -> None:
    """Contact confirmed after a check-in 2 clears it; one before it does not."""
    assert health([*checkin(1, 5, 2), *checkin(2, 6, 1)], now=8).state == "healthy"
    assert health([*checkin(2, 5, 1), *checkin(1, 6, 2)], now=8).state == "one_sided"


def test_checkin_at_the_same_instant_as_contact_does_not_outweigh_it() -> None:
    """A check-in 2 at the very instant contact is confirmed does not make it one-sided."""
    events = [Event(2, "partner_contact", day(5)), Event(1, "checkin", day(5), 2)]
    assert health(events, now=7).state == "healthy"


def test_checkin_3_while_young_stays_starting_with_the_reason() -> None:
    """A check-in 3 (not in touch yet) in the grace period: starting, and the reason says so."""
    got = health(checkin(1, 3, 3), now=5)
    assert got.state == "starting"
    assert got.reasons == (
        "Started on 2 March; no contact confirmed yet",
        "Kelsey (US) said on 5 March they are not in touch yet (check-in 3)",
    )


def test_checkin_3_after_contact_makes_it_quiet_from_that_checkin() -> None:
    """A check-in 3 newer than the last contact makes it quiet, since that check-in."""
    events = [*checkin(1, 2, 1), *checkin(2, 15, 3), message(1, 16)]
    got = health(events, now=17)
    assert got.state == "quiet"
    assert got.since == day(15)
    assert got.reasons == (
        "No contact confirmed since 4 March (check-in 1 from Kelsey (US))",
        "Maria (PL) said on 17 March they are not in touch yet (check-in 3)",
    )


def test_one_member_writing_while_the_other_is_silent_is_one_sided() -> None:
    """Kelsey keeps writing, Maria silent one_sided_days since her last word: one-sided."""
    events = [message(2, 1), message(1, 5), message(1, 9)]
    assert health(events, now=14).state == "quiet"
    got = health(events, now=15)
    assert got.state == "one_sided"
    assert got.since == day(15)
    assert got.reasons == (
        "No word from Maria (PL) since 3 March; Kelsey (US) wrote twice without an answer",
        "No contact confirmed since the start on 2 March",
    )


def test_one_sided_after_contact_counts_from_the_contact() -> None:
    """After confirmed contact, a member's silence counts from that contact."""
    events = [*checkin(1, 1, 1), message(1, 10), message(1, 12), message(1, 13)]
    assert health(events, now=14).state == "healthy"
    got = health(events, now=16)
    assert got.state == "one_sided"
    assert got.since == day(15)
    assert got.reasons[0] == (
        "No word from Maria (PL) since contact was confirmed on 3 March;"
        " Kelsey (US) wrote 3 times without an answer"
    )


def test_quiet_when_contact_is_older_than_quiet_days() -> None:
    """Contact confirmed more than quiet_days ago and nothing since: quiet from then on."""
    events = checkin(1, 4, 1)
    assert health(events, now=31.9).state == "healthy"
    got = health(events, now=32)
    assert got.state == "quiet"
    assert got.since == day(32)
    assert got.reasons == ("No contact confirmed since 6 March (check-in 1 from Kelsey (US))",)


def test_at_risk_after_a_long_quiet() -> None:
    """Quiet with no contact for at_risk_days becomes at_risk, since contact + at_risk_days."""
    events = checkin(1, 4, 1)
    assert health(events, now=45).state == "quiet"
    got = health(events, now=46)
    assert got.state == "at_risk"
    assert got.since == day(46)
    assert got.reasons == ("No contact confirmed since 6 March (check-in 1 from Kelsey (US))",)


def test_at_risk_after_a_long_one_sided_spell_keeps_its_reasons() -> None:
    """One-sided for long enough is at_risk, and still says who is silent."""
    events = [*checkin(1, 1, 2), message(1, 20), message(1, 35)]
    got = health(events, now=43)
    assert got.state == "at_risk"
    assert got.since == day(42)
    assert got.reasons == (
        "Maria (PL) has not answered since the start on 2 March;"
        " Kelsey (US) said once they wrote without an answer (check-in 2)",
        "No contact confirmed since the start on 2 March",
    )


@pytest.mark.parametrize(
    ("members", "events", "since", "reason"),
    [
        (
            (KELSEY, Member(3, "Li Wei", "CN", bouncing_since=day(34), suppressed=True)),
            [],
            day(34),
            "Mail to Li (CN) bounces since 5 April",
        ),
        (
            (KELSEY, Member(4, "Ana García", "ES", status="withdrawn")),
            [],
            day(40),
            "Ana (ES) withdrew",
        ),
        (
            (KELSEY, Member(2, "Maria Nowak", "PL", suppressed=True)),
            [message(2, 20), Event(2, "unsubscribe", day(20))],
            day(20),
            "Maria (PL) unsubscribed on 22 March",
        ),
        (
            (KELSEY, Member(2, "Maria Nowak", "PL", suppressed=True)),
            [],
            day(40),
            "Mail to Maria (PL) is suppressed (unsubscribed or undeliverable)",
        ),
        (PAIR, [Event(99, "concern", day(36))], day(36), "Concern raised on 7 April"),
    ],
    ids=["bounce", "withdrawn", "unsubscribe", "suppressed", "concern"],
)
def test_urgent_conditions_make_it_at_risk_at_once(
    members: tuple[Member, ...], events: list[Event], since: datetime, reason: str
) -> None:
    """A bounce, withdrawal, unsubscribe, suppression or concern is at_risk whatever else holds."""
    contact = checkin(1, 38, 1)  # contact confirmed two days ago: healthy but for the condition
    got = health([*contact, *events], now=40, members=members)
    assert got.state == "at_risk"
    assert got.since == since
    assert got.reasons[0] == reason
    assert got.reasons[-1] == "Last contact confirmed on 9 April (check-in 1 from Kelsey (US))"
    assert got.score >= 75


def test_concern_names_who_raised_it_and_its_note() -> None:
    """A concern from a member names them and carries its note, whitespace tidied."""
    events = [Event(1, "concern", day(71), detail="  Partner   cancelled twice\n")]
    got = health(events, now=75)
    assert got.reasons[0] == "Concern raised by Kelsey (US) on 12 May: Partner cancelled twice"


def test_bounce_events_alone_do_not_count_once_the_address_is_fixed() -> None:
    """bouncing_since is the authority: old bounce events of a fixed address are not urgent."""
    events = [Event(2, "bounce", day(3)), *checkin(2, 6, 1)]
    assert health(events, now=8).state == "healthy"


def test_conditions_after_now_are_not_seen() -> None:
    """Events and a bouncing_since later than now are ignored, so the past can be replayed."""
    bouncing = Member(2, "Maria Nowak", "PL", bouncing_since=day(20), suppressed=True)
    events = [*checkin(1, 3, 1), Event(1, "concern", day(20)), *checkin(1, 21, 2)]
    got = health(events, now=10, members=(KELSEY, bouncing))
    assert got.state == "healthy"
    assert health(events, now=22, members=(KELSEY, bouncing)).state == "at_risk"


def test_several_urgent_conditions_start_at_the_earliest() -> None:
    """With several urgent conditions, since is the earliest and all are listed, oldest first."""
    li = Member(3, "Li Wei", "CN", bouncing_since=day(30))
    events = [Event(1, "concern", day(20)), Event(2, "unsubscribe", day(25))]
    got = health(events, now=40, members=(KELSEY, MARIA, li))
    assert got.since == day(20)
    assert got.reasons[:3] == (
        "Concern raised by Kelsey (US) on 22 March",
        "Maria (PL) unsubscribed on 27 March",
        "Mail to Li (CN) bounces since 1 April",
    )


def test_triad_contact_from_one_member_confirms_it_for_all() -> None:
    """In a triad, one check-in 1 makes the whole partnership healthy."""
    got = health(checkin(3, 5, 1), now=12, members=TRIAD)
    assert got.state == "healthy"
    assert got.reasons == ("Last contact confirmed on 7 March (check-in 1 from Li (CN))",)


def test_triad_checkin_2_names_both_other_members() -> None:
    """In a triad, a check-in 2 makes both other members silent, one sentence each."""
    events = [message(2, 1), *checkin(1, 3, 2)]
    got = health(events, now=4, members=TRIAD)
    assert got.state == "one_sided"
    assert got.reasons[:2] == (
        "Maria (PL) has not answered since 3 March;"
        " Kelsey (US) said once they wrote without an answer (check-in 2)",
        "Li (CN) has not answered since the start on 2 March;"
        " Kelsey (US) said once they wrote without an answer (check-in 2)",
    )


def test_triad_one_silent_member_is_one_sided() -> None:
    """In a triad, two members writing and one silent is one-sided about the silent one."""
    events = [message(1, 2), message(2, 3), message(1, 9), message(2, 10)]
    got = health(events, now=20, members=TRIAD)
    assert got.state == "one_sided"
    assert got.since == day(14)
    assert got.reasons == (
        "No word from Li (CN) since the start on 2 March; Kelsey (US) wrote twice without an"
        " answer; Maria (PL) wrote twice without an answer",
        "No contact confirmed since the start on 2 March",
    )


def test_paused_member_is_not_silent_and_is_mentioned() -> None:
    """A paused member is on a break: never the silent one, but the reasons say they are paused."""
    paused = Member(2, "Maria Nowak", "PL", status="paused")
    got = health([message(1, 5), message(1, 9)], now=20, members=(KELSEY, paused))
    assert got.state == "quiet"
    assert got.reasons == (
        "No contact confirmed since the start on 2 March",
        "Maria (PL) is paused",
    )


@pytest.mark.parametrize(
    ("thresholds", "now", "state"),
    [
        (Thresholds(), 20, "healthy"),
        (Thresholds(quiet_days=14), 20, "quiet"),
        (Thresholds(quiet_days=14, at_risk_days=16), 20, "at_risk"),
        (Thresholds(quiet_days=60, at_risk_days=90), 40, "healthy"),
    ],
)
def test_thresholds_change_quiet_and_at_risk(thresholds: Thresholds, now: int, state: str) -> None:
    """quiet_days and at_risk_days move the point where contact confirmed on day 2 goes stale."""
    assert health(checkin(1, 2, 1), now=now, thresholds=thresholds).state == state


def test_thresholds_change_grace_and_one_sided() -> None:
    """grace_days sets how long a new pair is starting; one_sided_days how long silence may last."""
    assert health([], now=5, thresholds=Thresholds(grace_days=3)).state == "quiet"
    assert health([], now=15, thresholds=Thresholds(grace_days=20)).state == "starting"
    events = [message(2, 1), message(1, 3)]
    assert health(events, now=8).state == "starting"
    assert health(events, now=8, thresholds=Thresholds(one_sided_days=7)).state == "one_sided"


@pytest.mark.parametrize(
    "kwargs",
    [{"grace_days": -1}, {"quiet_days": 0}, {"one_sided_days": 0}, {"quiet_days": 50}],
)
def test_thresholds_reject_impossible_values(kwargs: dict[str, int]) -> None:
    """Negative or zero durations, and at_risk_days below quiet_days, raise ValueError."""
    with pytest.raises(ValueError, match="health threshold"):
        Thresholds(**kwargs)


def test_older_silence_scores_higher() -> None:
    """Of two quiet partnerships, the one silent longer scores higher; healthy scores lowest."""
    healthy = health(checkin(1, 20, 1), now=30)
    recent = health(checkin(1, 2, 1), now=33)
    older = health(checkin(1, 2, 1), now=43)
    long_ago = health(checkin(1, 2, 1), now=90)
    assert (recent.state, older.state, long_ago.state) == ("quiet", "quiet", "at_risk")
    assert healthy.score < recent.score < older.score < long_ago.score


def test_urgent_beats_any_silence() -> None:
    """A fresh urgent condition outranks the longest silence; two conditions outrank one."""
    silent_for_ever = health([], now=3650)
    concern = health([*checkin(1, 30, 1), Event(1, "concern", day(31))], now=31)
    two = health(
        [*checkin(1, 30, 1), Event(1, "concern", day(31)), Event(2, "concern", day(31))], now=31
    )
    assert silent_for_ever.state == concern.state == "at_risk"
    assert silent_for_ever.score < concern.score < two.score
    assert 0 <= silent_for_ever.score <= 100 and two.score <= 100


@pytest.mark.parametrize("status", ["dissolved", "ended"])
def test_dissolved_and_ended_are_the_partnerships_own_status(status: str) -> None:
    """A dissolved or ended partnership takes that state, scores 0, whatever its events."""
    bouncing = Member(2, "Maria Nowak", "PL", bouncing_since=day(3))
    got = health([Event(1, "concern", day(4))], now=40, members=(KELSEY, bouncing), status=status)
    assert got.state == status
    assert got.score == 0
    assert got.since == day(40)
    assert got.reasons == (
        f"The partnership {'was dissolved' if status == 'dissolved' else 'has ended'}",
    )


def test_bad_status_and_naive_datetimes_raise() -> None:
    """An unknown status, or a naive now or start, is a programming error: ValueError."""
    with pytest.raises(ValueError, match="unknown partnership status 'paused'"):
        health([], now=3, status="paused")
    with pytest.raises(ValueError, match="aware"):
        judge(members=PAIR, events=[], started=START, status="active", now=datetime(2026, 4, 1))


def test_dates_carry_the_year_when_it_is_not_now_s() -> None:
    """A date in another year than now's is written with its year; times are read in UTC."""
    paris = timezone(timedelta(hours=1))
    new_year = datetime(2026, 1, 1, 0, 30, tzinfo=paris)  # 31 December 2025, 23:30 UTC
    events = [Event(1, "partner_contact", new_year)]
    got = judge(members=PAIR, events=events, started=new_year, status="active", now=day(0))
    assert got.reasons == (
        "No contact confirmed since 31 December 2025"
        " (Kelsey (US) wrote to a partner, copying the log address)",
    )


def test_members_sharing_a_first_name_are_named_in_full() -> None:
    """Two members with one first name are told apart by their full names."""
    twins = (Member(1, "Maria Silva", "BR"), Member(2, "Maria Nowak", "PL"))
    got = health(checkin(2, 3, 1), now=5, members=twins)
    assert got.reasons == ("Last contact confirmed on 5 March (check-in 1 from Maria Nowak (PL))",)


def test_unknown_language_falls_back_to_english() -> None:
    """Reasons are in English for a language Rapport has no words for yet."""
    english = judge(members=PAIR, events=[], started=START, status="active", now=day(3))
    other = judge(
        members=PAIR, events=[], started=START, status="active", now=day(3), language="xx"
    )
    assert other == english


def test_judge_many_matches_judge() -> None:
    """judge_many gives, per key, what judge gives for that partnership."""
    items = [
        ("a", PAIR, checkin(1, 2, 1), START, "active"),
        ("b", TRIAD, [message(1, 2)], START, "active"),
        ("c", PAIR, [], START, "ended"),
    ]
    got = judge_many(items, now=day(30))
    assert list(got) == ["a", "b", "c"]
    for key, members, events, started, status in items:
        assert got[key] == judge(
            members=members, events=events, started=started, status=status, now=day(30)
        )


# Weighted towards the common kinds, so that every state turns up; "other" is a kind health ignores.
KINDS = ("message", "checkin") * 2 + (
    "partner_contact",
    "bounce",
    "unsubscribe",
    "concern",
    "other",
)
events_strategy = st.lists(
    st.builds(
        Event,
        participant_id=st.integers(1, 4),  # 4 is no member: such events are ignored
        kind=st.sampled_from(KINDS),
        occurred_at=st.integers(-5 * 24, 120 * 24).map(lambda h: START + timedelta(hours=h)),
        value=st.sampled_from((None, 1, 2, 3, 7)),
        detail=st.sampled_from(("", "note")),
    ),
    max_size=40,
)
members_strategy = st.lists(
    st.builds(
        Member,
        participant_id=st.integers(1, 3),
        name=st.sampled_from(("Kelsey Brown", "Maria", "", "Li Wei")),
        country=st.sampled_from(("US", "pl", "")),
        status=st.sampled_from(("active", "active", "paused", "withdrawn")),
        bouncing_since=st.none() | st.just(day(30)),
        suppressed=st.booleans(),
    ),
    min_size=2,
    max_size=3,
    unique_by=lambda m: m.participant_id,
)


@settings(max_examples=300, deadline=None)
@given(
    members=members_strategy,
    events=events_strategy,
    now=st.integers(0, 200 * 24).map(lambda h: START + timedelta(hours=h)),
    order=st.randoms(use_true_random=False),
)
def test_any_events_give_a_valid_deterministic_order_free_judgement(
    members: list[Member], events: list[Event], now: datetime, order: object
) -> None:
    """Random events: no exception, score 0-100, a known state, reasons, and order never matters."""
    got = judge(members=members, events=events, started=START, status="active", now=now)
    assert got.state in STATES
    assert 0 <= got.score <= 100
    assert got.reasons and all(got.reasons)
    assert got.since <= now
    again = judge(members=members, events=list(events), started=START, status="active", now=now)
    assert again == got
    shuffled = list(events)
    order.shuffle(shuffled)  # type: ignore[attr-defined]
    assert judge(members=members, events=shuffled, started=START, status="active", now=now) == got


@settings(max_examples=200, deadline=None)
@given(
    members=members_strategy,
    events=events_strategy,
    later=st.integers(1, 200 * 24).map(lambda h: timedelta(hours=h)),
)
def test_score_never_falls_as_silence_grows(
    members: list[Member], events: list[Event], later: timedelta
) -> None:
    """With no new events, judging later never lowers the score: it is monotonic in silence."""
    now = max((e.occurred_at for e in events), default=START)
    first = judge(members=members, events=events, started=START, status="active", now=now)
    second = judge(members=members, events=events, started=START, status="active", now=now + later)
    assert second.score >= first.score


# The facts nudges and reports act on: last_contact, silent, urgent.


def test_facts_default_so_a_health_can_be_built_from_its_four_fields() -> None:
    """Health's facts have defaults: no contact, nobody silent, nothing urgent."""
    got = Health("healthy", 0, START, ("x",))
    assert (got.last_contact, got.silent, got.urgent) == (None, (), ())


def test_last_contact_is_the_latest_confirmed_contact() -> None:
    """last_contact is None without contact, else the newest check-in 1 or partner_contact."""
    assert health([message(1, 2), *checkin(1, 3, 2)], now=5).last_contact is None
    events = [*checkin(2, 3, 1), Event(1, "partner_contact", day(9)), *checkin(1, 12, 3)]
    assert health(events, now=20).last_contact == day(9)
    assert health(events, now=5).last_contact == day(3)  # the later one is not seen yet
    assert health(events, now=80).last_contact == day(9)  # at_risk keeps it too


def test_silent_after_a_checkin_2_is_the_other_member() -> None:
    """A check-in 2 from Kelsey makes Maria silent; contact after it clears her."""
    assert health(checkin(1, 2, 2), now=3).silent == (2,)
    assert health([*checkin(1, 2, 2), *checkin(2, 4, 1)], now=5).silent == ()


def test_silent_after_checkins_2_from_both_is_both() -> None:
    """Both members saying they wrote without an answer: each is silent to the other."""
    got = health([*checkin(1, 2, 2), *checkin(2, 3, 2)], now=4)
    assert got.state == "one_sided"
    assert got.silent == (1, 2)


def test_silent_in_a_triad_by_checkin_2_and_by_the_one_sided_rule() -> None:
    """Triad: a check-in 2 silences both others; the one-sided rule only the quiet member."""
    assert health([message(2, 1), *checkin(1, 3, 2)], now=4, members=TRIAD).silent == (2, 3)
    events = [message(1, 2), message(2, 3), message(1, 9), message(2, 10)]
    assert health(events, now=20, members=TRIAD).silent == (3,)


def test_silent_stays_when_one_sided_turns_at_risk_and_is_empty_when_quiet() -> None:
    """At risk after a one-sided spell still names the silent member; quiet names nobody."""
    events = [*checkin(1, 1, 2), message(1, 20), message(1, 35)]
    got = health(events, now=43)
    assert (got.state, got.silent) == ("at_risk", (2,))
    quiet = health(checkin(1, 4, 1), now=46)
    assert (quiet.state, quiet.silent) == ("at_risk", ())
    assert health([], now=12).silent == ()


def test_paused_member_is_never_silent_by_the_one_sided_rule() -> None:
    """A paused member is on a break, so silent stays empty."""
    paused = Member(2, "Maria Nowak", "PL", status="paused")
    assert health([message(1, 5), message(1, 9)], now=20, members=(KELSEY, paused)).silent == ()


@pytest.mark.parametrize(
    ("members", "events", "codes"),
    [
        ((KELSEY, Member(3, "Li Wei", "CN", bouncing_since=day(34), suppressed=True)), [],
         ("bouncing",)),
        ((KELSEY, Member(4, "Ana García", "ES", status="withdrawn")), [], ("withdrew",)),
        ((KELSEY, Member(2, "Maria Nowak", "PL", suppressed=True)),
         [Event(2, "unsubscribe", day(20))], ("unsubscribed",)),
        ((KELSEY, Member(2, "Maria Nowak", "PL", suppressed=True)), [], ("suppressed",)),
        (PAIR, [Event(99, "concern", day(36))], ("concern",)),
        (PAIR, [], ()),
    ],
    ids=["bounce", "withdrawn", "unsubscribe", "suppressed", "concern", "none"],
)  # fmt: skip
def test_urgent_codes_name_each_condition(
    members: tuple[Member, ...], events: list[Event], codes: tuple[str, ...]
) -> None:
    """Each urgent condition has its code; a partnership without one has none."""
    got = health([*checkin(1, 38, 1), *events], now=40, members=members)
    assert got.urgent == codes
    assert got.last_contact == day(38)


def test_urgent_codes_come_in_a_stable_order_without_repeats() -> None:
    """Codes follow URGENT_CODES, whatever the conditions' dates; two concerns are one code."""
    li = Member(3, "Li Wei", "CN", bouncing_since=day(30))
    events = [
        Event(1, "concern", day(20)),
        Event(2, "concern", day(22)),
        Event(2, "unsubscribe", day(25)),
    ]
    got = health(events, now=40, members=(KELSEY, MARIA, li))
    assert got.urgent == ("bouncing", "unsubscribed", "concern")
    assert URGENT_CODES == ("bouncing", "suppressed", "unsubscribed", "withdrew", "concern")


def test_dissolved_and_ended_carry_no_facts() -> None:
    """A dissolved partnership is not judged on its events: its facts keep their defaults."""
    got = health([*checkin(1, 2, 1), Event(1, "concern", day(3))], now=5, status="dissolved")
    assert (got.last_contact, got.silent, got.urgent) == (None, (), ())


@settings(max_examples=200, deadline=None)
@given(
    members=members_strategy,
    events=events_strategy,
    now=st.integers(0, 200 * 24).map(lambda h: START + timedelta(hours=h)),
)
def test_facts_agree_with_state_and_score(
    members: list[Member], events: list[Event], now: datetime
) -> None:
    """Random events: urgent iff an urgent score; silent only when one-sided or at risk, and only
    members; last_contact never after now."""
    got = judge(members=members, events=events, started=START, status="active", now=now)
    assert bool(got.urgent) == (got.score >= 75)
    assert list(got.urgent) == [c for c in URGENT_CODES if c in got.urgent]
    if got.silent:
        assert got.state in ("one_sided", "at_risk")
    assert set(got.silent) <= {m.participant_id for m in members}
    if got.state == "one_sided":
        assert got.silent
    assert got.last_contact is None or got.last_contact <= now
    if got.state == "healthy":
        assert got.last_contact is not None
