"""The program's calendar: when each topic of a round is due, and at what instant it goes out.

Dates (:class:`datetime.date`) are civil days with no time zone; a round's topics fall on days.
An instant is an aware :class:`datetime.datetime` in UTC, which is what the outbox stores.  A send
instant is a participant's own wall-clock time (``schedule.topic_local_time``, ``"HH:MM"``) on the
send date, in the participant's IANA time zone.  Pure: no I/O, and the clock is never read.

Daylight saving time, and other changes of a zone's UTC offset, are handled the way APScheduler's
triggers handle them:

* A wall time that does not exist, because the clocks jump forward over it, moves to the first
  valid minute at or after the jump: with a 02:00-03:00 gap, 02:30 becomes 03:00.  The gap may be
  of any length (Lord Howe Island shifts by 30 minutes) and may swallow a whole day (Samoa skipped
  30 December 2011; anything on that day goes out at 00:00 on the 31st).
* A wall time that happens twice, because the clocks fall back, is taken at its first occurrence
  (PEP 495 ``fold=0``), so a topic is never held back by the repeated hour.
* Any other wall time maps to exactly that wall time, whatever the zone's offset (+05:30, +05:45,
  +12:45 all work alike).
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

__all__ = [
    "local_send_instant",
    "parse_local_time",
    "topic_send_date",
]

_HH_MM = re.compile(r"(?P<hour>[01]?\d|2[0-3]):(?P<minute>[0-5]\d)")
_MINUTE = timedelta(minutes=1)


def topic_send_date(round_start: date, cadence_days: int, order: int, send_on: date | None) -> date:
    """The day topic number ``order`` (1-based) of a round is due.

    ``send_on``, when given, is the topic's own date and wins; otherwise the topic is due
    ``(order - 1) * cadence_days`` days after ``round_start``.  Days are civil dates, the same in
    every time zone; :func:`local_send_instant` turns one into an instant per participant.

    Raises ValueError when ``order`` or ``cadence_days`` is below 1: the config and import layers
    reject such input first, so reaching this is a bug, not a user error.
    """
    if order < 1:
        raise ValueError(f"topic order must be 1 or more, not {order}")
    if cadence_days < 1:
        raise ValueError(f"cadence must be 1 day or more, not {cadence_days}")
    if send_on is not None:
        return send_on
    return round_start + timedelta(days=(order - 1) * cadence_days)


def parse_local_time(text: str) -> time:
    """Parse a wall-clock time of day written ``"HH:MM"`` (24-hour, ``"9:30"`` is accepted too).

    The result is naive: it means the same reading of the clock in every zone.  Raises ValueError
    with a message quoting ``text`` when it is not a time from 00:00 to 23:59.
    """
    match = _HH_MM.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not a time of day written HH:MM (00:00 to 23:59)")
    return time(int(match["hour"]), int(match["minute"]))


def local_send_instant(day: date, local_time: time, zone: str | ZoneInfo) -> datetime:
    """The UTC instant at which the clocks in ``zone`` read ``local_time`` on ``day``.

    ``zone`` is an IANA name (``"Europe/Berlin"``) or a ZoneInfo; an unknown name raises
    :class:`zoneinfo.ZoneInfoNotFoundError`.  ``local_time`` must be naive (a wall time).  The
    result is an aware datetime in UTC.  A wall time skipped by an offset change moves to the
    first valid minute after the change; a repeated one takes its first occurrence (see the module
    docstring).
    """
    if local_time.tzinfo is not None:
        raise ValueError(f"local_time must be a naive wall time, not {local_time.isoformat()}")
    tz = ZoneInfo(zone) if isinstance(zone, str) else zone
    wall = datetime.combine(day, local_time)
    # fold=0 is the first occurrence of a repeated wall time, which is the one we want.
    instant = wall.replace(tzinfo=tz, fold=0).astimezone(UTC)
    # A wall time that survives the round trip exists; one in a gap comes back shifted.  Checking
    # this way, rather than assuming one-hour gaps, covers 30-minute shifts and skipped days.
    if instant.astimezone(tz).replace(tzinfo=None) == wall:
        return instant
    return _end_of_gap(wall, tz)


def _end_of_gap(wall: datetime, tz: ZoneInfo) -> datetime:
    """The first whole-minute UTC instant whose wall time in ``tz`` is at or after ``wall``.

    ``wall`` lies in a gap.  By PEP 495, reading it with the offset from before the jump
    (``fold=0``) gives an instant after the jump, and with the offset from after (``fold=1``) an
    instant before it; the jump lies between the two, and wall time rises steadily across it, so a
    bisection over whole seconds finds it.
    """
    bounds = [wall.replace(tzinfo=tz, fold=f).astimezone(UTC) for f in (0, 1)]
    lo, hi = _to_seconds(min(bounds)), _to_seconds(max(bounds))
    # Rounding down to a second, or a tzinfo that ignores fold, can leave hi short of the jump;
    # stepping forward keeps the promise never to send early.
    while _wall_at(hi, tz) < wall:
        hi += 60
    # Invariant: wall time at lo is before ``wall``, at hi it is at or after.
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _wall_at(mid, tz) < wall:
            lo = mid
        else:
            hi = mid
    instant = datetime.fromtimestamp(hi, UTC)
    # tzdata jumps fall on whole minutes today, but the promise is a whole local minute.
    partial = _wall_at(hi, tz) - _wall_at(hi, tz).replace(second=0, microsecond=0)
    if partial:
        instant += _MINUTE - partial
    return instant


def _to_seconds(instant: datetime) -> int:
    """Seconds since the Unix epoch (UTC), rounded down."""
    return int(instant.timestamp() // 1)


def _wall_at(seconds: int, tz: ZoneInfo) -> datetime:
    """The naive wall time in ``tz`` at ``seconds`` since the Unix epoch (UTC)."""
    return datetime.fromtimestamp(seconds, tz).replace(tzinfo=None)
