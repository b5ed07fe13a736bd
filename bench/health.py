"""Benchmark: judge the health of N partnerships, against merely reading their events once.

Synthetic partnerships (pairs, one in ten a triad), all started 16 weeks before the judging
instant, each with 40 events spread over those 16 weeks: messages, check-ins 1/2/3 and partner
contact, in a mix of behaviours (both members lively, one member writing alone, contact fading
after six weeks, trouble: a concern or an unsubscribe), with a few members bouncing or withdrawn.
The events are built before any clock starts, in memory (no database).

- baseline: one pure-Python loop over the same events that reads each event's time and compares
  it with ``now``; any judge has to look at every event at least once, so this is a lower bound;
- rapport: ``monitor.health.judge`` called once per partnership, keywords and all, as the daily
  job calls it.

Each size runs in a fresh spawned process, so the figures of one do not leak into the next; both
sides are timed there, best of ``--repeat`` runs.  Peak memory is that process's high-water mark
(VmHWM from /proc/self/status, the synthetic events included; ru_maxrss would mix in the parent's
for a forked child).

Prints a table, then as its last line one JSON object: {"bench": "health", ..., "ratio":
baseline seconds / judge seconds at the largest size (judge's rate over the baseline's, at most
about 1), "peak_rss_mb": the largest size's peak}.

    python bench/health.py            # 1,000, 10,000 and 50,000 partnerships
    python bench/health.py --quick    # 1,000 and 10,000, well under two minutes
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing
import random
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

NOW = datetime(2027, 6, 21, 8, 0, tzinfo=UTC)
WEEKS = 16
EVENTS = 40
COUNTRIES = ["PL", "US", "IN", "AU", "KE", "BR", "DE", "JP"]
NAMES = ["Maria", "Kelsey", "Li", "Ana", "Amit", "Zainab", "Jonas", "Yuki", "Chloe", "Tomasz"]
PROFILES = ["lively"] * 5 + ["alone"] * 2 + ["fading"] * 2 + ["trouble"]
TARGET_SECONDS, TARGET_MB = 5.0, 500.0


def _status_mb() -> dict[str, float]:
    """VmRSS and VmHWM of this process, in MB (Linux)."""
    found = {}
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                found[key] = int(value.split()[0]) / 1024
    return found


def _partnerships(count: int, seed: int = 20270621) -> list[tuple[Any, ...]]:
    """``count`` (members, events, started, status) tuples; instants are shared hourly objects."""
    from monitor.health import Event, Member

    rng = random.Random(seed)
    started = NOW - timedelta(weeks=WEEKS)
    hours = [started + timedelta(hours=h) for h in range(WEEKS * 7 * 24)]
    early = len(hours) * 6 // WEEKS
    result = []
    pid = 0
    for number in range(count):
        size = 3 if number % 10 == 9 else 2
        members = []
        for _ in range(size):
            pid += 1
            roll = rng.random()
            members.append(
                Member(
                    pid,
                    f"{rng.choice(NAMES)} Example{pid}",
                    rng.choice(COUNTRIES),
                    status="withdrawn" if roll < 0.01 else "paused" if roll < 0.02 else "active",
                    bouncing_since=rng.choice(hours) if 0.02 <= roll < 0.04 else None,
                    suppressed=0.02 <= roll < 0.04,
                )
            )
        ids = [m.participant_id for m in members]
        profile = rng.choice(PROFILES)
        span = hours[:early] if profile == "fading" else hours
        events = []
        for k in range(EVENTS):
            who = ids[0] if profile == "alone" and rng.random() < 0.9 else rng.choice(ids)
            at = rng.choice(span)
            roll = rng.random()
            if profile == "trouble" and k == 0:
                kind = rng.choice(("concern", "unsubscribe", "bounce"))
                events.append(Event(who, kind, at, detail="note" if kind == "concern" else ""))
            elif roll < 0.55:
                events.append(Event(who, "message", at))
            elif roll < 0.85:
                value = rng.choices((1, 2, 3), weights=(3, 2, 1))[0]
                events.append(Event(who, "checkin", at, value))
            elif profile == "alone":
                events.append(Event(who, "message", at))
            else:
                events.append(Event(who, "partner_contact", at))
        result.append((members, events, started, "active"))
    return result


def _baseline(data: list[tuple[Any, ...]], now: datetime) -> float:
    """Read every event's time once: the least any judge does.  Returns seconds."""
    start = time.perf_counter()
    later = 0
    for _members, events, _started, _status in data:
        for event in events:
            if event.occurred_at > now:
                later += 1
    elapsed = time.perf_counter() - start
    if later:
        raise SystemExit("synthetic events after now")
    return elapsed


def _judge(data: list[tuple[Any, ...]], now: datetime) -> tuple[float, Counter[str]]:
    """monitor.health.judge once per partnership.  Returns seconds and the states found."""
    from monitor.health import judge

    start = time.perf_counter()
    results = [
        judge(members=members, events=events, started=started, status=status, now=now)
        for members, events, started, status in data
    ]
    elapsed = time.perf_counter() - start
    return elapsed, Counter(h.state for h in results)


def _size(count: int, repeat: int, out: multiprocessing.Queue[dict[str, Any]]) -> None:
    """One size in this fresh process: build the input, time both sides, report peak memory."""
    gc.disable()  # building millions of objects is no faster for collecting them meanwhile
    data = _partnerships(count)
    gc.enable()
    data_mb = _status_mb()["VmRSS"]
    baseline = min(_baseline(data, NOW) for _ in range(repeat))
    runs = [_judge(data, NOW) for _ in range(repeat)]
    seconds = min(s for s, _ in runs)
    out.put(
        {
            "partnerships": count,
            "events": sum(len(events) for _, events, _, _ in data),
            "baseline_seconds": baseline,
            "judge_seconds": seconds,
            "data_mb": data_mb,
            "peak_mb": _status_mb()["VmHWM"],
            "states": dict(sorted(runs[0][1].items())),
        }
    )


def _run(count: int, repeat: int) -> dict[str, Any]:
    queue: multiprocessing.Queue[dict[str, Any]] = multiprocessing.Queue()
    process = multiprocessing.Process(target=_size, args=(count, repeat, queue))
    process.start()
    result: dict[str, Any] = queue.get()
    process.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1,000 and 10,000 partnerships only")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per side (best kept)")
    args = parser.parse_args()
    sizes = [1_000, 10_000] if args.quick else [1_000, 10_000, 50_000]
    multiprocessing.set_start_method("spawn")
    rows = [_run(size, max(1, args.repeat)) for size in sizes]

    print(
        f"{'partnerships':>12} {'events':>9} {'baseline s':>11} {'judge s':>9} "
        f"{'µs/partnership':>15} {'ratio':>6} {'data MB':>8} {'peak MB':>8}"
    )
    for row in rows:
        per = row["judge_seconds"] / row["partnerships"] * 1e6
        ratio = row["baseline_seconds"] / row["judge_seconds"]
        print(
            f"{row['partnerships']:>12,} {row['events']:>9,} {row['baseline_seconds']:>11.3f} "
            f"{row['judge_seconds']:>9.3f} {per:>15.1f} {ratio:>6.3f} {row['data_mb']:>8.1f} "
            f"{row['peak_mb']:>8.1f}"
        )
    last = rows[-1]
    ratio = last["baseline_seconds"] / last["judge_seconds"]
    states = ", ".join(f"{state} {n}" for state, n in last["states"].items())
    print(f"states at {last['partnerships']:,}: {states}")
    if not args.quick:
        print(
            f"judge at {last['partnerships']:,}: {last['judge_seconds']:.2f} s"
            f" (target < {TARGET_SECONDS:.0f}), peak {last['peak_mb']:.0f} MB"
            f" (target < {TARGET_MB:.0f})"
        )
    print(
        json.dumps(
            {
                "bench": "health",
                "partnerships": last["partnerships"],
                "events": last["events"],
                "baseline_seconds": round(last["baseline_seconds"], 3),
                "judge_seconds": round(last["judge_seconds"], 3),
                "us_per_partnership": round(last["judge_seconds"] / last["partnerships"] * 1e6, 1),
                "sizes": {str(row["partnerships"]): round(row["judge_seconds"], 3) for row in rows},
                "ratio": round(ratio, 3),
                "peak_rss_mb": round(last["peak_mb"], 1),
            }
        )
    )


if __name__ == "__main__":
    main()
