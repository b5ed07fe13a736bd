"""Tests for monitor/nudges.py (the escalation ladder) and the nudge and concern templates."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from datetime import UTC, datetime, time, timedelta
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from zoneinfo import ZoneInfo

import pytest

from mailer.compose import Composer, to_bytes
from mailer.notice import Notice, compose_notice
from monitor.health import Health
from monitor.nudges import (
    Case,
    Concern,
    Past,
    Planned,
    Recipient,
    civil_due,
    concern_alerts,
    nudge_day,
    plan,
)
from program.settings import NudgeSettings

# Monday 6 April 2026, 07:00 UTC: 09:00 in Warsaw, 02:00 in Chicago, 15:00 in Shanghai.
NOW = datetime(2026, 4, 6, 7, 0, tzinfo=UTC)
LOG = "coordinators+log@example.org"
CHICAGO = ZoneInfo("America/Chicago")
SETTINGS = NudgeSettings()  # pair_after 0, silent_after 3d, coordinators_after 7d, min_gap 7d

KELSEY = Recipient(1, None, "Kelsey Brown", "kelsey@example.org", "US", "America/Chicago", "en")
MARIA = Recipient(2, None, "Maria Nowak", "maria@example.pl", "PL", "Europe/Warsaw", "pl")
LI = Recipient(3, None, "Li Wei", "li@example.cn", "CN", "Asia/Shanghai", "zh")
ANN = Recipient(None, 1, "Ann Lee", "ann@example.org", "GB", "Europe/London", "en")
PAWEL = Recipient(None, 2, "Paweł Zając", "pawel@example.pl", "PL", "Europe/Warsaw", "fr")

CHECKIN = {
    "en": "reply 1 (we have been in touch), 2 (I wrote but have not heard back) or 3 (not in "
    "touch yet)",
    "fr": "répondez 1 (nous sommes en contact), 2 (j’ai écrit, mais sans réponse pour "
    "l’instant) ou 3 (pas encore de contact)",
    "es": "Responde 1 (ya estamos en contacto), 2 (escribí, pero aún no tengo respuesta) o 3 "
    "(todavía no estamos en contacto)",
}


def days(n: float) -> timedelta:
    return timedelta(days=n)


def health(
    state: str,
    held: float,
    *,
    contact: datetime | None = datetime(2026, 3, 5, 14, 0, tzinfo=UTC),
    silent: tuple[int, ...] = (),
    urgent: tuple[str, ...] = (),
    score: int = 30,
) -> Health:
    """A health snapshot in ``state`` for ``held`` days before NOW."""
    reasons = ("No contact confirmed since 5 March (check-in 1 from Kelsey (US))",)
    return Health(state, score, NOW - days(held), reasons, contact, silent, urgent)


def case(
    h: Health,
    members: Sequence[Recipient] = (KELSEY, MARIA),
    coordinators: Sequence[Recipient] = (ANN, PAWEL),
    pid: int = 7,
) -> Case:
    return Case(pid, h, members, coordinators)


def run(
    *cases: Case,
    past: Sequence[Past] = (),
    now: datetime = NOW,
    **settings: object,
) -> list[Planned]:
    chosen = dataclasses.replace(SETTINGS, **settings)  # type: ignore[arg-type]
    return plan(cases, past, now=now, settings=chosen, log_address=LOG)


def keys(planned: Sequence[Planned]) -> list[str]:
    return [p.key for p in planned]


# The ladder.


def test_quiet_pair_gets_a_friendly_note_each() -> None:
    """Quiet for pair_after: nudge_pair to every member, keyed by the last contact's date."""
    got = run(case(health("quiet", 0)))
    assert keys(got) == ["nudge/7/pair/2026-03-05/p1", "nudge/7/pair/2026-03-05/p2"]
    assert {p.template for p in got} == {"nudge_pair"}
    assert got[0].data["partners"] == [
        {
            "name": "Maria Nowak",
            "email": "maria@example.pl",
            "country": "PL",
            "timezone": "Europe/Warsaw",
        }
    ]
    assert got[0].data["last_contact"] == "2026-03-05"
    assert got[0].data["log_address"] == LOG


def test_quiet_waits_for_pair_after() -> None:
    """With pair_after 2 days, a partnership quiet for 1 day is not nudged yet; at 2 days it is."""
    assert run(case(health("quiet", 1)), pair_after=days(2)) == []
    assert len(run(case(health("quiet", 2)), pair_after=days(2))) == 2


def test_an_urgent_condition_reaches_coordinators_once_whatever_the_partner_does() -> None:
    """A bounce is one episode, dated when it began: a new check-in from the partner (a new
    last contact) does not tell the coordinators again; a new urgent condition does."""
    bounced = health("at_risk", 10, urgent=("bouncing",), score=80)
    first = run(case(bounced))
    assert keys(first) == [
        "nudge/7/coordinators/bouncing.2026-03-27/c1",
        "nudge/7/coordinators/bouncing.2026-03-27/c2",
    ]
    past = [Past(p.key, None, p.recipient.coordinator_id, NOW) for p in first]
    later_contact = dataclasses.replace(bounced, last_contact=NOW - days(1))
    assert run(case(later_contact), past=past) == []
    both = dataclasses.replace(bounced, urgent=("bouncing", "concern"))
    assert keys(run(case(both), past=past))[0] == (
        "nudge/7/coordinators/bouncing+concern.2026-03-27/c1"
    )


def test_one_sided_nudges_only_the_silent_member_after_silent_after() -> None:
    """One-sided: nothing before silent_after; then nudge_silent to the silent member alone."""
    assert run(case(health("one_sided", 2.9, silent=(2,)))) == []
    got = run(case(health("one_sided", 3, silent=(2,))))
    assert keys(got) == ["nudge/7/silent/2026-03-05/p2"]
    assert got[0].template == "nudge_silent"
    assert [p["name"] for p in got[0].data["partners"]] == ["Kelsey Brown"]


def test_at_risk_tells_coordinators_after_coordinators_after() -> None:
    """At risk by silence: coordinators only, once each, after coordinators_after."""
    assert run(case(health("at_risk", 6, score=60))) == []
    got = run(case(health("at_risk", 7, score=60), coordinators=(ANN, PAWEL, ANN)))
    assert keys(got) == ["nudge/7/coordinators/2026-03-05/c1", "nudge/7/coordinators/2026-03-05/c2"]
    assert {p.template for p in got} == {"nudge_coordinators"}
    data = got[0].data
    assert data["state"] == "at_risk"
    assert data["score"] == 60
    assert data["since"] == "2026-03-30"
    assert data["reasons"] == ["No contact confirmed since 5 March (check-in 1 from Kelsey (US))"]
    assert data["actions"] == ["write_both"]
    assert [m["name"] for m in data["members"]] == ["Kelsey Brown", "Maria Nowak"]


def test_urgent_tells_coordinators_at_once_with_actions_most_pressing_first() -> None:
    """An urgent condition skips the wait; actions list concern, rematch, address in that order."""
    h = health("at_risk", 0, urgent=("bouncing", "withdrew", "concern"), score=85)
    got = run(case(h))
    assert len(got) == 2
    assert got[0].data["actions"] == ["concern", "rematch", "fix_address"]
    assert got[0].data["urgent"] == ["bouncing", "withdrew", "concern"]


@pytest.mark.parametrize(
    ("urgent", "silent", "action"),
    [
        (("bouncing",), (), "fix_address"),
        (("suppressed",), (), "fix_address"),
        (("unsubscribed",), (), "rematch"),
        (("withdrew",), (), "rematch"),
        (("concern",), (), "concern"),
        ((), (2,), "write_silent"),
        ((), (), "write_both"),
    ],
)
def test_suggested_action_follows_the_facts(
    urgent: tuple[str, ...], silent: tuple[int, ...], action: str
) -> None:
    """Each fact gives its plain next step; a silent member is named for the coordinator."""
    got = run(case(health("at_risk", 10, urgent=urgent, silent=silent)))
    assert got[0].data["actions"] == [action]
    assert got[0].data["silent"] == (["Maria Nowak"] if silent else [])
    assert [m["silent"] for m in got[0].data["members"]] == [False, bool(silent)]


def test_coordinators_see_the_nudges_already_sent_to_members() -> None:
    """The coordinators' data lists this partnership's member nudges from the outbox, in order."""
    past = [
        Past("nudge/7/silent/2026-03-05/p2", 2, None, NOW - days(5)),
        Past("nudge/7/pair/2026-03-05/p1", 1, None, NOW - days(20)),
        Past("nudge/8/pair/start/p1", 1, None, NOW - days(30)),  # another partnership
        Past("nudge/7/coordinators/start/c1", None, 1, NOW - days(40)),
    ]
    got = run(case(health("at_risk", 8, silent=(2,))), past=past)
    assert got[0].data["nudges"] == [
        {"level": "pair", "name": "Kelsey Brown", "date": "2026-03-17"},
        {"level": "silent", "name": "Maria Nowak", "date": "2026-04-01"},
    ]


def test_coordinators_see_each_nudge_dated_when_it_went_not_when_it_was_planned() -> None:
    """An earlier nudge is dated by its sending, else its due date, never by its planning."""
    evening = datetime(2026, 3, 11, 21, 0, tzinfo=UTC)  # planned: 22:00 in Warsaw, too late
    morning = datetime(2026, 3, 12, 7, 0, tzinfo=UTC)  # due: 08:00 the next day in Warsaw
    past = [
        # Sent a little after it was due.
        Past(
            "nudge/7/pair/2026-03-05/p2",
            2,
            None,
            evening,
            sent_at=morning + timedelta(minutes=3),
            due_at=morning,
        ),
        # Planned the same evening, not sent yet: its due date.
        Past("nudge/7/silent/2026-03-05/p1", 1, None, evening, due_at=morning),
        # Due at once, sent after midnight UTC (the SMTP server was down for a while).
        Past(
            "nudge/7/pair/start/p1",
            1,
            None,
            evening,
            sent_at=evening + timedelta(hours=4),
            due_at=evening,
        ),
    ]
    got = run(case(health("at_risk", 8, silent=(2,))), past=past)
    # In the order they went (or will go).
    assert got[0].data["nudges"] == [
        {"level": "pair", "name": "Kelsey Brown", "date": "2026-03-12"},
        {"level": "silent", "name": "Kelsey Brown", "date": "2026-03-12"},
        {"level": "pair", "name": "Maria Nowak", "date": "2026-03-12"},
    ]


def test_nudge_day_is_the_sending_day_else_the_due_day_in_utc() -> None:
    """nudge_day, shared by the alert and the report: sent_at's UTC date, else due_at's."""
    due = datetime(2026, 3, 12, 7, 0, tzinfo=UTC)
    sydney = ZoneInfo("Australia/Sydney")
    assert nudge_day(None, due) == "2026-03-12"
    assert nudge_day(datetime(2026, 3, 13, 1, 0, tzinfo=UTC), due) == "2026-03-13"
    assert nudge_day(datetime(2026, 3, 13, 9, 0, tzinfo=sydney), due) == "2026-03-12"


@pytest.mark.parametrize("state", ["starting", "healthy", "dissolved", "ended"])
def test_no_nudge_for_other_states(state: str) -> None:
    """Starting, healthy, dissolved and ended partnerships are left alone."""
    assert run(case(health(state, 100))) == []


def test_a_silent_member_the_judge_never_named_is_not_nudged() -> None:
    """One-sided with no silent member named (e.g. only a paused one): nobody to nudge."""
    assert run(case(health("one_sided", 10))) == []


# Episodes and repeats.


def test_never_contacted_is_the_start_episode() -> None:
    """Without any confirmed contact, the episode is 'start'."""
    got = run(case(health("quiet", 0, contact=None)))
    assert keys(got) == ["nudge/7/pair/start/p1", "nudge/7/pair/start/p2"]
    assert got[0].data["last_contact"] is None


def test_episode_date_is_the_utc_day_of_the_last_contact() -> None:
    """A contact late on 5 March in Chicago is 6 March UTC, and the key says so."""
    late = datetime(2026, 3, 5, 22, 0, tzinfo=UTC).astimezone(CHICAGO)
    assert late.day == 5
    assert keys(run(case(health("quiet", 0, contact=late))))[0] == "nudge/7/pair/2026-03-05/p1"
    later = datetime(2026, 3, 6, 1, 0, tzinfo=UTC).astimezone(CHICAGO)
    assert later.day == 5
    assert keys(run(case(health("quiet", 0, contact=later))))[0] == "nudge/7/pair/2026-03-06/p1"


def test_same_episode_is_never_nudged_twice_at_a_level() -> None:
    """A key already in the outbox, whatever its age, is not planned again."""
    past = [
        Past("nudge/7/pair/2026-03-05/p1", 1, None, NOW - days(30)),
        Past("nudge/7/pair/2026-03-05/p2", 2, None, NOW - days(30)),
    ]
    assert run(case(health("quiet", 40)), past=past) == []


def test_a_new_quiet_spell_after_recovery_is_a_new_episode() -> None:
    """After contact on 20 March the pair went quiet again: a fresh pair nudge is due."""
    past = [
        Past("nudge/7/pair/2026-03-05/p1", 1, None, NOW - days(30)),
        Past("nudge/7/pair/2026-03-05/p2", 2, None, NOW - days(30)),
    ]
    contact = datetime(2026, 3, 20, 9, 0, tzinfo=UTC)
    got = run(case(health("quiet", 0, contact=contact)), past=past)
    assert keys(got) == ["nudge/7/pair/2026-03-20/p1", "nudge/7/pair/2026-03-20/p2"]


def test_same_episode_escalates_level_by_level() -> None:
    """One spell may be nudged once per level: pair, then silent, then coordinators."""
    past = [Past("nudge/7/pair/2026-03-05/p2", 2, None, NOW - days(10))]
    got = run(case(health("one_sided", 5, silent=(2,))), past=past)
    assert keys(got) == ["nudge/7/silent/2026-03-05/p2"]
    past.append(Past(got[0].key, 2, None, got[0].due_at))
    got = run(case(health("at_risk", 7, silent=(2,))), past=past, now=NOW)
    assert keys(got)[0] == "nudge/7/coordinators/2026-03-05/c1"


# min_gap and reachability.


def test_min_gap_holds_back_a_participant_nudged_recently() -> None:
    """A nudge to Kelsey 3 days ago (elsewhere) holds hers back; Maria's goes."""
    past = [Past("nudge/9/pair/start/p1", 1, None, NOW - days(3))]
    assert keys(run(case(health("quiet", 0)), past=past)) == ["nudge/7/pair/2026-03-05/p2"]
    assert len(run(case(health("quiet", 0)), past=past, min_gap=days(2))) == 2


def test_min_gap_counts_what_the_same_call_planned() -> None:
    """Kelsey in two quiet partnerships gets one nudge: the higher-scored partnership's."""
    low = case(health("quiet", 0, score=30), members=(KELSEY, MARIA), pid=7)
    high = case(health("quiet", 0, score=40), members=(KELSEY, LI), pid=8)
    got = run(low, high)
    assert keys(got) == [
        "nudge/8/pair/2026-03-05/p1",
        "nudge/8/pair/2026-03-05/p3",
        "nudge/7/pair/2026-03-05/p2",
    ]


def test_min_gap_does_not_limit_coordinators() -> None:
    """Coordinators hear about every case, even several the same day."""
    past = [Past("nudge/5/coordinators/start/c1", None, 1, NOW - days(1))]
    got = run(case(health("at_risk", 10), pid=7), case(health("at_risk", 10), pid=8), past=past)
    assert [p.recipient.coordinator_id for p in got] == [1, 2, 1, 2]


def test_unreachable_people_are_never_nudged() -> None:
    """A suppressed, bouncing, paused or withdrawn member, or an unreachable coordinator: none."""
    gone = dataclasses.replace(MARIA, reachable=False)
    assert keys(run(case(health("quiet", 0), members=(KELSEY, gone)))) == [
        "nudge/7/pair/2026-03-05/p1"
    ]
    assert run(case(health("one_sided", 5, silent=(2,)), members=(KELSEY, gone))) == []
    away = dataclasses.replace(ANN, reachable=False)
    got = run(case(health("at_risk", 0, urgent=("withdrew",)), coordinators=(away, PAWEL)))
    assert keys(got) == ["nudge/7/coordinators/withdrew.2026-04-06/c2"]
    assert got[0].data["members"][1]["reachable"] is True


def test_disabled_nudges_plan_nothing_but_concern_alerts_still_go() -> None:
    """enabled = false: no nudge at all; a concern still reaches coordinators."""
    assert run(case(health("at_risk", 0, urgent=("concern",))), enabled=False) == []
    concern = Concern(41, 2, "harass", NOW - timedelta(hours=1))
    assert len(concern_alerts(7, (KELSEY, MARIA), (ANN,), [concern], now=NOW)) == 1


def test_every_planned_payload_is_json_safe() -> None:
    """Data survives a JSON round trip unchanged, for every level."""
    got = run(
        case(health("quiet", 0), pid=1),
        case(health("one_sided", 5, silent=(2,)), members=(LI, MARIA), pid=2),
        case(health("at_risk", 0, urgent=("concern",)), members=(KELSEY, LI), pid=3),
        min_gap=days(0),
    )
    assert {p.template for p in got} == {"nudge_pair", "nudge_silent", "nudge_coordinators"}
    for planned in got:
        assert json.loads(json.dumps(planned.data)) == planned.data


def test_naive_now_is_refused() -> None:
    """A naive now is a bug: ValueError."""
    with pytest.raises(ValueError, match="aware"):
        run(case(health("quiet", 0)), now=NOW.replace(tzinfo=None))


# Civil hours.


@pytest.mark.parametrize(
    ("zone", "due"),
    [
        ("Europe/Warsaw", datetime(2026, 4, 6, 8, 0, tzinfo=UTC)),  # 09:00 local: 10:00 today
        ("America/Chicago", datetime(2026, 4, 6, 15, 0, tzinfo=UTC)),  # 02:00 local: 10:00 today
        ("Asia/Shanghai", NOW),  # 15:00 local: 10:00 passed, not yet evening: now
        ("Pacific/Kiritimati", datetime(2026, 4, 6, 20, 0, tzinfo=UTC)),  # 21:00: tomorrow 10:00
        ("Nowhere/Atlantis", datetime(2026, 4, 6, 10, 0, tzinfo=UTC)),  # unknown: read as UTC
        ("", datetime(2026, 4, 6, 10, 0, tzinfo=UTC)),
    ],
)
def test_civil_due_picks_a_civil_hour_in_the_recipients_zone(zone: str, due: datetime) -> None:
    """Today's local_time if ahead; else now before 20:00 local; else tomorrow's local_time."""
    got = civil_due(NOW, zone, time(10, 0))
    assert got == due
    assert got.tzinfo == UTC


def test_civil_due_at_exactly_local_time_and_at_exactly_evening() -> None:
    """At 10:00 sharp it goes now; at 20:00 sharp it waits for the morning."""
    warsaw_ten = datetime(2026, 4, 6, 8, 0, tzinfo=UTC)
    assert civil_due(warsaw_ten, "Europe/Warsaw", time(10, 0)) == warsaw_ten
    warsaw_eight_pm = datetime(2026, 4, 6, 18, 0, tzinfo=UTC)
    assert civil_due(warsaw_eight_pm, "Europe/Warsaw", time(10, 0)) == datetime(
        2026, 4, 7, 8, 0, tzinfo=UTC
    )


def test_civil_due_in_a_dst_gap_moves_to_the_end_of_the_gap() -> None:
    """Berlin skips 02:00-03:00 on 29 March 2026: a 02:30 local_time goes out at 03:00 CEST."""
    now = datetime(2026, 3, 29, 0, 0, tzinfo=UTC)  # 01:00 CET
    assert civil_due(now, "Europe/Berlin", time(2, 30)) == datetime(2026, 3, 29, 1, 0, tzinfo=UTC)


def test_civil_due_tomorrow_across_a_dst_change_keeps_the_wall_time() -> None:
    """Planned at 21:30 CET on 28 March, it goes at 10:00 CEST the next day (08:00 UTC)."""
    now = datetime(2026, 3, 28, 20, 30, tzinfo=UTC)
    assert civil_due(now, "Europe/Berlin", time(10, 0)) == datetime(2026, 3, 29, 8, 0, tzinfo=UTC)


def test_nudges_are_due_at_each_recipients_civil_hour() -> None:
    """Both members of one pair: each at 10:00 in their own zone."""
    got = run(case(health("quiet", 0)))
    assert [p.due_at for p in got] == [
        datetime(2026, 4, 6, 15, 0, tzinfo=UTC),
        datetime(2026, 4, 6, 8, 0, tzinfo=UTC),
    ]


# Concern alerts.


def test_concern_alerts_go_to_each_reachable_coordinator_now() -> None:
    """One alert per concern and coordinator, due now, keyed by activity and coordinator."""
    away = dataclasses.replace(PAWEL, coordinator_id=3, reachable=False)
    concerns = [
        Concern(41, 2, "harass", NOW - timedelta(hours=3)),
        Concern(42, 99, "uncomfortable", NOW - timedelta(hours=1)),
    ]
    got = concern_alerts(7, (KELSEY, MARIA), (ANN, PAWEL, ANN, away), concerns, now=NOW)
    assert keys(got) == [
        "concern/7/41/c1",
        "concern/7/41/c2",
        "concern/7/42/c1",
        "concern/7/42/c2",
    ]
    assert {p.template for p in got} == {"concern"}
    assert {p.due_at for p in got} == {NOW}
    assert got[0].data["raised_by"]["name"] == "Maria Nowak"
    assert got[0].data["phrase"] == "harass"
    assert got[0].data["occurred_at"] == "2026-04-06T04:00:00+00:00"
    assert got[2].data["raised_by"] is None  # not a member of this partnership
    assert json.loads(json.dumps(got[0].data)) == got[0].data


def test_concern_alerts_take_plain_tuples() -> None:
    """(activity id, participant id, phrase, occurred_at) tuples work like Concern."""
    row = (41, 2, "harass", NOW)
    got = concern_alerts(7, (KELSEY, MARIA), (ANN,), [row], now=NOW)
    assert got == concern_alerts(7, (KELSEY, MARIA), (ANN,), [Concern(*row)], now=NOW)


def test_concern_alerts_already_in_the_outbox_are_not_planned_again() -> None:
    """Keys given as past are skipped."""
    concern = Concern(41, 2, "harass", NOW)
    past = [Past("concern/7/41/c1", None, 1, NOW)]
    got = concern_alerts(7, (KELSEY, MARIA), (ANN, PAWEL), [concern], now=NOW, past=past)
    assert keys(got) == ["concern/7/41/c2"]


# Composing every nudge and concern template.

EVIL = "Maria <script>alert(1)</script> Nowak"


def planned_examples() -> dict[str, Planned]:
    """One realistic Planned per template, with a hostile partner name and a CRLF attempt."""
    evil = dataclasses.replace(MARIA, name=EVIL)
    crlf = dataclasses.replace(LI, name="Li\r\nBcc: evil@example.com")
    found: dict[str, Planned] = {}
    cases = [
        case(health("quiet", 0), members=(KELSEY, evil, crlf), pid=1),
        case(health("one_sided", 5, silent=(1,)), members=(KELSEY, evil), pid=2),
        case(
            health("at_risk", 0, urgent=("bouncing",), silent=(2,)), members=(KELSEY, evil), pid=3
        ),
    ]
    past = [Past("nudge/3/pair/2026-03-05/p1", 1, None, NOW - days(9))]
    for planned in run(*cases, past=past, min_gap=days(0)):
        found.setdefault(planned.template, planned)
    concern = Concern(41, 2, "harass", NOW - timedelta(hours=2))
    found["concern"] = concern_alerts(3, (KELSEY, evil), (ANN,), [concern], now=NOW)[0]
    return found


EXAMPLES = planned_examples()
PARTICIPANT_TEMPLATES = ("nudge_pair", "nudge_silent")


def compose(planned: Planned, language: str) -> EmailMessage:
    participant = planned.recipient.participant_id is not None
    notice = Notice(
        template=planned.template,
        language=language,
        default_language="en",
        program_name="ILN",
        from_address="coordinators@example.org",
        recipient_name=planned.recipient.name,
        recipient_email=planned.recipient.email,
        idempotency_key=planned.key,
        message_id="<rapport.0123456789abcdef@example.org>",
        reply_address="coordinators+k3xq7@example.org",
        unsubscribe_address="coordinators+unsubscribe-k3xq7@example.org" if participant else None,
        data=planned.data,
    )
    raw = to_bytes(compose_notice(COMPOSER, notice, now=NOW))
    msg = BytesParser(policy=policy.default).parsebytes(raw)
    assert isinstance(msg, EmailMessage)
    return msg


COMPOSER = Composer()


def test_examples_cover_every_template() -> None:
    """The composing tests below see every nudge template and the concern alert."""
    assert set(EXAMPLES) == {"nudge_pair", "nudge_silent", "nudge_coordinators", "concern"}


@pytest.mark.parametrize("language", ["en", "fr", "es"])
@pytest.mark.parametrize("template", sorted(EXAMPLES))
def test_every_template_composes_in_every_language(template: str, language: str) -> None:
    """Headers, both parts, autoescaped HTML, plain text unescaped, and the check-in line for
    participants."""
    planned = EXAMPLES[template]
    msg = compose(planned, language)
    assert msg["From"] == "ILN <coordinators@example.org>"
    assert msg["To"].addresses[0].addr_spec == planned.recipient.email
    assert msg["Content-Language"] == language
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg["Reply-To"] == "coordinators+k3xq7@example.org"
    subject = str(msg["Subject"])
    assert subject.startswith("ILN") and "\r" not in subject and "\n" not in subject
    for name, value in msg.items():
        assert "\r" not in str(value) and "\n" not in str(value), name
    assert "Bcc" not in msg
    plain = msg.get_body(("plain",))
    html = msg.get_body(("html",))
    assert plain is not None and html is not None
    text, markup = plain.get_content(), html.get_content()
    assert "<script>" not in markup
    assert "&lt;script&gt;" in markup
    assert "<script>" in text  # the text part shows the name as written
    assert "{{" not in text and "{{" not in markup
    if template in PARTICIPANT_TEMPLATES:
        assert CHECKIN[language] in text
        assert CHECKIN[language] in markup.replace("&#39;", "'")
        assert LOG in text
        assert "List-Unsubscribe" in msg
    else:
        assert "List-Unsubscribe" not in msg


def test_coordinators_alert_text_reads_on_its_own() -> None:
    """The English text part states the facts, members, nudges so far and the next step."""
    text = compose(EXAMPLES["nudge_coordinators"], "en").get_body(("plain",))
    assert text is not None
    body = text.get_content()
    assert "Partnership #3 has been at risk since 6 April 2026 (risk score 30 of 100)." in body
    assert "Kelsey Brown, United States <kelsey@example.org>" in body
    assert "; not heard from" in body
    assert "reminder to get in touch (Kelsey Brown)" in body
    assert "find a working address" in body


def test_participant_nudge_speaks_the_recipients_language_with_local_details() -> None:
    """A French nudge_silent names the partner with their country in French and local time."""
    text = compose(EXAMPLES["nudge_silent"], "fr").get_body(("plain",))
    assert text is not None
    body = text.get_content()
    assert body.startswith("Bonjour Kelsey Brown,")
    assert "Pologne" in body
    assert "Fuseau horaire\u00a0: Europe/Warsaw (CEST, UTC+2), actuellement 09:00, lun." in body
    assert "Répondez 3" in body
