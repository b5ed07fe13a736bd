"""Tests for program.calendar: topic dates and local send instants across time zones."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from functools import cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from program.calendar import (
    local_send_instant,
    parse_local_time,
    topic_send_date,
)

START = date(2026, 3, 2)


@pytest.mark.parametrize(
    ("order", "expected"),
    [(1, date(2026, 3, 2)), (2, date(2026, 3, 16)), (3, date(2026, 3, 30)), (7, date(2026, 5, 25))],
)
def test_topic_dates_default_cadence(order: int, expected: date) -> None:
    """With the default 14-day cadence, topic N is due 14*(N-1) days after the round starts."""
    assert topic_send_date(START, 14, order, None) == expected


def test_topic_dates_custom_cadence() -> None:
    """A custom cadence spaces topics that many days apart, across month and year ends."""
    assert topic_send_date(date(2026, 12, 20), 7, 3, None) == date(2027, 1, 3)
    assert topic_send_date(START, 1, 30, None) == date(2026, 3, 31)


def test_topic_send_on_overrides_cadence() -> None:
    """A topic's own send_on date wins over the cadence, earlier or later."""
    assert topic_send_date(START, 14, 2, date(2026, 3, 10)) == date(2026, 3, 10)
    assert topic_send_date(START, 14, 1, date(2026, 2, 1)) == date(2026, 2, 1)


@pytest.mark.parametrize(("cadence", "order"), [(14, 0), (14, -1), (0, 1), (-14, 2)])
def test_topic_date_rejects_bad_order_or_cadence(cadence: int, order: int) -> None:
    """An order or cadence below 1 is a programming error and raises ValueError."""
    with pytest.raises(ValueError, match="must be 1"):
        topic_send_date(START, cadence, order, None)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("09:00", time(9, 0)), ("9:05", time(9, 5)), ("00:00", time(0, 0)), ("23:59", time(23, 59))],
)
def test_parse_local_time_accepts_hh_mm(text: str, expected: time) -> None:
    """parse_local_time reads 24-hour HH:MM (a one-digit hour too) into a naive time."""
    assert parse_local_time(text) == expected


@pytest.mark.parametrize("text", ["24:00", "12:60", "9", "09:5", "09:00:00", " 09:00", "9h30", ""])
def test_parse_local_time_rejects_malformed(text: str) -> None:
    """A malformed time raises ValueError whose message quotes the input and the form expected."""
    with pytest.raises(ValueError, match="HH:MM") as info:
        parse_local_time(text)
    assert repr(text) in str(info.value)


@pytest.mark.parametrize(
    ("day", "zone", "expected"),
    [
        (date(2026, 6, 15), "UTC", datetime(2026, 6, 15, 9, 0, tzinfo=UTC)),
        (date(2026, 6, 15), "Australia/Sydney", datetime(2026, 6, 14, 23, 0, tzinfo=UTC)),
        (date(2026, 1, 15), "Australia/Sydney", datetime(2026, 1, 14, 22, 0, tzinfo=UTC)),
        (date(2026, 6, 15), "America/Los_Angeles", datetime(2026, 6, 15, 16, 0, tzinfo=UTC)),
        (date(2026, 1, 15), "America/Los_Angeles", datetime(2026, 1, 15, 17, 0, tzinfo=UTC)),
        (date(2026, 6, 15), "Asia/Kolkata", datetime(2026, 6, 15, 3, 30, tzinfo=UTC)),
        (date(2026, 6, 15), "Asia/Kathmandu", datetime(2026, 6, 15, 3, 15, tzinfo=UTC)),
        (date(2026, 6, 15), "Pacific/Auckland", datetime(2026, 6, 14, 21, 0, tzinfo=UTC)),
        (date(2026, 1, 15), "Pacific/Auckland", datetime(2026, 1, 14, 20, 0, tzinfo=UTC)),
    ],
)
def test_local_instant_in_various_zones(day: date, zone: str, expected: datetime) -> None:
    """09:00 local maps to the right UTC instant, in summer and winter, for odd offsets too."""
    got = local_send_instant(day, time(9, 0), zone)
    assert got == expected
    assert got.tzinfo is UTC


def test_local_instant_accepts_zoneinfo() -> None:
    """A ZoneInfo works the same as its IANA name."""
    day = date(2026, 6, 15)
    assert local_send_instant(day, time(9), ZoneInfo("Europe/Berlin")) == local_send_instant(
        day, time(9), "Europe/Berlin"
    )


@pytest.mark.parametrize(
    ("day", "wall", "zone", "expected"),
    [
        (date(2026, 3, 29), time(2, 30), "Europe/Berlin", datetime(2026, 3, 29, 1, 0, tzinfo=UTC)),
        (date(2026, 3, 29), time(2, 0), "Europe/Berlin", datetime(2026, 3, 29, 1, 0, tzinfo=UTC)),
        (date(2026, 3, 29), time(2, 59), "Europe/Berlin", datetime(2026, 3, 29, 1, 0, tzinfo=UTC)),
        (date(2026, 3, 8), time(2, 15), "America/New_York", datetime(2026, 3, 8, 7, 0, tzinfo=UTC)),
    ],
)
def test_dst_gap_moves_to_end_of_gap(day: date, wall: time, zone: str, expected: datetime) -> None:
    """A wall time skipped by spring-forward goes out at 03:00 local, the first valid minute."""
    got = local_send_instant(day, wall, zone)
    assert got == expected
    assert got.astimezone(ZoneInfo(zone)).time() == time(3, 0)


def test_just_before_and_after_gap_are_exact() -> None:
    """The minutes either side of the Berlin gap keep their wall time."""
    berlin = ZoneInfo("Europe/Berlin")
    before = local_send_instant(date(2026, 3, 29), time(1, 59), berlin)
    after = local_send_instant(date(2026, 3, 29), time(3, 0), berlin)
    assert before == datetime(2026, 3, 29, 0, 59, tzinfo=UTC)
    assert after == datetime(2026, 3, 29, 1, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("day", "wall", "zone", "expected"),
    [
        (
            date(2026, 10, 25),
            time(2, 30),
            "Europe/Berlin",
            datetime(2026, 10, 25, 0, 30, tzinfo=UTC),
        ),
        (
            date(2026, 11, 1),
            time(1, 30),
            "America/New_York",
            datetime(2026, 11, 1, 5, 30, tzinfo=UTC),
        ),
    ],
)
def test_ambiguous_time_takes_first_occurrence(
    day: date, wall: time, zone: str, expected: datetime
) -> None:
    """A wall time repeated by fall-back maps to its first occurrence (summer time)."""
    got = local_send_instant(day, wall, zone)
    assert got == expected
    assert got.astimezone(ZoneInfo(zone)).fold == 0


def test_lord_howe_half_hour_gap() -> None:
    """Lord Howe's 30-minute spring-forward (02:00 -> 02:30) moves 02:10 to 02:30 local."""
    lord_howe = ZoneInfo("Australia/Lord_Howe")
    got = local_send_instant(date(2025, 10, 5), time(2, 10), lord_howe)
    # Before the jump Lord Howe is at +10:30, after it at +11:00.
    assert got == datetime(2025, 10, 4, 15, 30, tzinfo=UTC)
    assert got.astimezone(lord_howe).replace(tzinfo=None) == datetime(2025, 10, 5, 2, 30)
    # 02:30 itself exists and is not moved.
    assert local_send_instant(date(2025, 10, 5), time(2, 30), lord_howe) == got


@pytest.mark.parametrize("wall", [time(0, 0), time(9, 0), time(23, 59)])
def test_apia_skipped_day_goes_to_next_valid_minute(wall: time) -> None:
    """Samoa skipped 2011-12-30: any time that day goes out at 00:00 on 2011-12-31 local."""
    apia = ZoneInfo("Pacific/Apia")
    got = local_send_instant(date(2011, 12, 30), wall, apia)
    assert got == datetime(2011, 12, 30, 10, 0, tzinfo=UTC)
    assert got.astimezone(apia).replace(tzinfo=None) == datetime(2011, 12, 31, 0, 0)


def test_unknown_zone_raises() -> None:
    """An unknown IANA name raises ZoneInfoNotFoundError."""
    with pytest.raises(ZoneInfoNotFoundError):
        local_send_instant(date(2026, 1, 1), time(9), "Mars/Olympus_Mons")


def test_aware_local_time_is_refused() -> None:
    """A local time that carries its own tzinfo is refused: it must be a wall time."""
    with pytest.raises(ValueError, match="naive"):
        local_send_instant(date(2026, 1, 1), time(9, tzinfo=UTC), "UTC")


# Zones chosen for their quirks: 30- and 45-minute offsets, 30-minute and 2-hour shifts, negative
# DST (Dublin, Casablanca), southern-hemisphere DST, a skipped day (Apia), and no DST at all.
ZONES = [
    "UTC",
    "Europe/Berlin",
    "Europe/Dublin",
    "America/New_York",
    "America/St_Johns",
    "America/Sao_Paulo",
    "Africa/Casablanca",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "Australia/Lord_Howe",
    "Australia/Sydney",
    "Pacific/Auckland",
    "Pacific/Chatham",
    "Pacific/Apia",
    "Antarctica/Troll",
]
FIRST_DAY, LAST_DAY = date(2000, 1, 1), date(2040, 12, 31)


@cache
def _transitions(zone: str) -> list[datetime]:
    """Every UTC instant from 2000 to 2040 at which ``zone`` changes its offset (to the second)."""
    tz = ZoneInfo(zone)
    found = []
    day = datetime.combine(FIRST_DAY, time(12), tzinfo=UTC)
    end = datetime.combine(LAST_DAY, time(12), tzinfo=UTC)
    while day < end:
        nxt = day + timedelta(days=1)
        if day.astimezone(tz).utcoffset() != nxt.astimezone(tz).utcoffset():
            lo, hi = day, nxt
            while hi - lo > timedelta(seconds=1):
                mid = lo + (hi - lo) / 2
                if mid.astimezone(tz).utcoffset() == lo.astimezone(tz).utcoffset():
                    lo = mid
                else:
                    hi = mid
            found.append(hi)
        day = nxt
    return found


@st.composite
def _requests(draw: st.DrawFn) -> tuple[str, datetime]:
    """A zone and a whole-minute naive wall time, half of them near an offset change."""
    zone = draw(st.sampled_from(ZONES))
    transitions = _transitions(zone)
    if transitions and draw(st.booleans()):
        change = draw(st.sampled_from(transitions))
        before = (change - timedelta(seconds=1)).astimezone(ZoneInfo(zone)).replace(tzinfo=None)
        wall = before.replace(second=0) + timedelta(minutes=draw(st.integers(-30, 90)))
    else:
        day = draw(st.dates(FIRST_DAY, LAST_DAY))
        wall = datetime.combine(day, time(draw(st.integers(0, 23)), draw(st.integers(0, 59))))
    return zone, wall


def _exists(wall: datetime, tz: ZoneInfo) -> bool:
    """True when the clocks in ``tz`` read ``wall`` at some instant."""
    back = wall.replace(tzinfo=tz).astimezone(UTC).astimezone(tz)
    return back.replace(tzinfo=None) == wall


@settings(max_examples=400, deadline=None)
@given(_requests())
def test_property_send_instant_is_never_early_and_exact_when_possible(
    request: tuple[str, datetime],
) -> None:
    """The instant is aware UTC, at the wall time asked for or else the first valid minute after."""
    zone, wall = request
    tz = ZoneInfo(zone)
    got = local_send_instant(wall.date(), wall.time(), zone)
    assert got.tzinfo is UTC
    back = got.astimezone(tz)
    if _exists(wall, tz):
        assert back.replace(tzinfo=None) == wall
        assert back.fold == 0
    else:
        event("wall time in a gap")
        assert back.replace(tzinfo=None) > wall
        assert back.second == 0 and back.microsecond == 0
        minute_earlier = (got - timedelta(minutes=1)).astimezone(tz).replace(tzinfo=None)
        assert minute_earlier < wall
