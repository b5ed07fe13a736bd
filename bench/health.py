"""Benchmark: partnership health at 1,000, 10,000 and 50,000 partnerships, as the service runs it.

Synthetic partnerships (pairs, one in ten a triad), all started 16 weeks before the judging
instant, each with 40 events spread over those 16 weeks: messages, check-ins 1/2/3 and partner
contact, in a mix of behaviours (both members lively, one member writing alone, contact fading
after six weeks, trouble: a concern, an unsubscribe or a bounce), with a few members bouncing
(their addresses suppressed), paused or withdrawn.  Members live in 16 countries and 24 time
zones.  Four things are measured at each size:

- judge: ``monitor.health.judge`` once per partnership over the events held in memory (no
  database), against a baseline: one pure-Python loop that reads each event's time and compares
  it with ``now``; any judge has to look at every event at least once, so this is a lower bound;
- daily job: the same partnerships in a SQLite database (WAL, the service's pragmas and schema),
  filled untimed with Core executemany inserts (one round, the participants, partnerships,
  memberships, activity events, suppressions, one program coordinator and four country
  coordinators), then ``monitor.judging.judge_all`` and ``monitor.judging.snapshot`` in one
  transaction, commit included, as the daily job runs them;
- report build: ``monitor.report.build`` for the program coordinator (every partnership), with
  the snapshots of 7 days earlier present (taken untimed by the same job at that instant), so
  "changes since last week" does real work;
- report render: the report's data round-tripped through JSON (as the outbox payload is), composed
  with ``mailer.notice.compose_notice`` and serialized with ``mailer.compose.to_bytes``.

Each size runs in a fresh spawned process, so the figures of one do not leak into the next; each
step is timed there, best of ``--repeat`` runs (3, or 2 with ``--quick``; a repeated daily job
rewrites the day's snapshots, as a re-run of the service's does), by the wall clock and by the
process's own CPU time (on a busy machine the wall clock also counts waiting for a core).  Peak
memory is that process's high-water mark (VmHWM from /proc/self/status; ru_maxrss would mix in
the parent's for a forked child), reset before each step where the kernel allows it, so each
step's peak is its own (the interpreter and the modules loaded included) and the process's peak
is the largest of them.  The targets are judged by the wall clock.

Prints a table, the targets (daily job under 5 s and 500 MB, report under 10 s, at 50,000) met or
not, then as its last line one JSON object: {"bench": "health", ..., "ratio": baseline seconds /
judge seconds at the largest size (judge's rate over the baseline's, at most about 1),
"peak_rss_mb": the largest size's process peak}.

    python bench/health.py            # 1,000, 10,000 and 50,000 partnerships
    python bench/health.py --quick    # 1,000 and 10,000, under two minutes
    python bench/health.py --profile  # also print where the daily job and report spend their time
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import multiprocessing
import pstats
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from queue import Empty
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

NOW = datetime(2027, 6, 21, 8, 0, tzinfo=UTC)
WEEKS = 16
EVENTS = 40
# Country -> (time zones, language): members are spread over all of them.
PLACES = {
    "PL": (("Europe/Warsaw",), "en"),
    "US": (("America/New_York", "America/Chicago", "America/Denver", "America/Los_Angeles"), "en"),
    "IN": (("Asia/Kolkata",), "en"),
    "AU": (("Australia/Sydney", "Australia/Perth", "Australia/Brisbane"), "en"),
    "KE": (("Africa/Nairobi",), "en"),
    "BR": (("America/Sao_Paulo", "America/Manaus"), "es"),
    "DE": (("Europe/Berlin",), "en"),
    "JP": (("Asia/Tokyo",), "en"),
    "FR": (("Europe/Paris",), "fr"),
    "ES": (("Europe/Madrid", "Atlantic/Canary"), "es"),
    "MX": (("America/Mexico_City",), "es"),
    "CA": (("America/Toronto", "America/Vancouver"), "en"),
    "NG": (("Africa/Lagos",), "en"),
    "GB": (("Europe/London",), "en"),
    "SN": (("Africa/Dakar",), "fr"),
    "NZ": (("Pacific/Auckland",), "en"),
}
COUNTRIES = list(PLACES)
NAMES = ["Maria", "Kelsey", "Li", "Ana", "Amit", "Zainab", "Jonas", "Yuki", "Chloe", "Tomasz"]
PROFILES = ["lively"] * 5 + ["alone"] * 2 + ["fading"] * 2 + ["trouble"]
COUNTRY_COORDINATORS = (("PL", "DE"), ("US", "CA", "MX"), ("IN", "JP", "AU", "NZ"), ("KE", "NG"))
TARGET_JOB_SECONDS, TARGET_MB, TARGET_REPORT_SECONDS = 5.0, 500.0, 10.0
TARGET_SIZE = 50_000
CONFIG = """\
[program]
name = "Rapport bench"
from_address = "coordinators@example.org"
reply_address = "coordinators+{key}@example.org"

[database]
url = "%s"
"""


def _status_mb() -> dict[str, float]:
    """VmRSS and VmHWM of this process, in MB (Linux)."""
    found = {}
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                found[key] = int(value.split()[0]) / 1024
    return found


def _reset_peak() -> bool:
    """Reset this process's VmHWM to its current RSS (Linux 4.0+); False where not allowed."""
    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
    except OSError:
        return False
    return True


def _generate(count: int, seed: int = 20270621) -> Iterator[tuple[Any, ...]]:
    """``count`` (members, events, started, status) tuples; instants are shared hourly objects."""
    from monitor.health import Event, Member

    rng = random.Random(seed)
    started = NOW - timedelta(weeks=WEEKS)
    hours = [started + timedelta(hours=h) for h in range(WEEKS * 7 * 24)]
    early = len(hours) * 6 // WEEKS
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
        yield members, events, started, "active"


def _partnerships(count: int) -> list[tuple[Any, ...]]:
    """The synthetic partnerships, held in memory."""
    return list(_generate(count))


# --- the pure judge -------------------------------------------------------------------------


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


def _judge(data: list[tuple[Any, ...]], now: datetime) -> Counter[str]:
    """monitor.health.judge once per partnership; the states found."""
    from monitor.health import judge

    results = [
        judge(members=members, events=events, started=started, status=status, now=now)
        for members, events, started, status in data
    ]
    return Counter(h.state for h in results)


# --- the database ---------------------------------------------------------------------------


def _fill(engine: Any, count: int) -> int:
    """Write the synthetic network into the database (untimed); returns the activity rows."""
    from sqlalchemy import insert

    from program.models import (
        ACTIVITY,
        COORDINATORS,
        MEMBERSHIPS,
        PARTICIPANTS,
        PARTNERSHIPS,
        ROUNDS,
        SUPPRESSIONS,
    )

    start = (NOW - timedelta(weeks=WEEKS)).date()
    opened = datetime.combine(start, datetime.min.time(), UTC)
    coordinators = [
        {
            "id": 1,
            "email": "program@example.org",
            "name": "Pat Program",
            "role": "program",
            "countries": "",
            "timezone": "Europe/London",
            "created_at": opened,
            "updated_at": opened,
        }
    ] + [
        {
            "id": n,
            "email": f"country{n}@example.org",
            "name": f"Country Coordinator {n}",
            "role": "country",
            "countries": " ".join(countries),
            "timezone": PLACES[countries[0]][0][0],
            "created_at": opened,
            "updated_at": opened,
        }
        for n, countries in enumerate(COUNTRY_COORDINATORS, start=2)
    ]
    with engine.begin() as connection:
        connection.execute(
            insert(ROUNDS),
            [
                {
                    "id": 1,
                    "name": "2027 spring",
                    "start": start,
                    "end": None,
                    "cadence_days": 14,
                    "status": "active",
                    "created_at": opened,
                }
            ],
        )
        connection.execute(insert(COORDINATORS), coordinators)

    tables = (PARTICIPANTS, SUPPRESSIONS, PARTNERSHIPS, MEMBERSHIPS, ACTIVITY)
    rows: dict[Any, list[dict[str, Any]]] = {t: [] for t in tables}

    def flush() -> None:
        with engine.begin() as connection:
            for t in tables:
                if rows[t]:
                    connection.execute(insert(t), rows[t])
                    rows[t].clear()

    activity = 0
    for number, (members, events, _started, status) in enumerate(_generate(count), start=1):
        rows[PARTNERSHIPS].append(
            {"id": number, "round_id": 1, "status": status, "created_at": opened}
        )
        for position, m in enumerate(members):
            zones, language = PLACES[m.country]
            email = f"p{m.participant_id}@example.org"
            rows[PARTICIPANTS].append(
                {
                    "id": m.participant_id,
                    "email": email,
                    "name": m.name,
                    "country": m.country,
                    "timezone": zones[m.participant_id % len(zones)],
                    "language": language,
                    "status": m.status,
                    "bouncing_since": m.bouncing_since,
                    "created_at": opened,
                    "updated_at": opened,
                }
            )
            if m.suppressed:
                rows[SUPPRESSIONS].append(
                    {"email": email, "reason": "bounce", "detail": "", "created_at": opened}
                )
            rows[MEMBERSHIPS].append(
                {
                    "partnership_id": number,
                    "participant_id": m.participant_id,
                    "round_id": 1,
                    "position": position,
                }
            )
        for e in events:
            rows[ACTIVITY].append(
                {
                    "partnership_id": number,
                    "participant_id": e.participant_id,
                    "kind": e.kind,
                    "value": e.value,
                    "detail": e.detail,
                    "occurred_at": e.occurred_at,
                    "created_at": e.occurred_at,
                }
            )
        activity += len(events)
        if number % 2_000 == 0:
            flush()
    flush()
    raw = engine.raw_connection()  # outside a transaction: the checkpoint cannot run in one
    try:
        raw.cursor().execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        raw.close()
    return activity


def _best(repeat: int, call: Callable[[], Any]) -> tuple[float, float, Any]:
    """Run ``call`` ``repeat`` times: the least wall-clock and CPU seconds, and the last result.

    CPU seconds are this process's own (time.process_time): on a busy machine the wall clock
    also counts the time spent waiting for a core.
    """
    walls, cpus, result = [], [], None
    for _ in range(repeat):
        result = None  # let the previous result go before the next run
        wall, cpu = time.perf_counter(), time.process_time()
        result = call()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return min(walls), min(cpus), result


def _daily_job(engine: Any, settings: Any, now: datetime) -> Counter[str]:
    """judge_all + snapshot in one transaction, commit included; the states found."""
    from monitor.judging import judge_all, snapshot

    with engine.begin() as connection:
        judged = judge_all(connection, settings=settings, now=now)
        snapshot(connection, judged, now=now)
    return Counter(j.health.state for j in judged)


def _build_report(engine: Any, now: datetime) -> dict[str, Any]:
    """monitor.report.build for the program coordinator: the report's data."""
    from monitor.report import build

    with engine.connect() as connection:
        return build(connection, coordinator_id=1, now=now)


def _render_report(composer: Any, settings: Any, data: dict[str, Any], now: datetime) -> int:
    """The report through its JSON payload, composed and serialized; its size in bytes."""
    from mailer.compose import to_bytes
    from mailer.notice import Notice, compose_notice

    program = settings.program
    payload = json.dumps(data, default=str)
    notice = Notice(
        template="report",
        language=program.default_language,
        default_language=program.default_language,
        program_name=program.name,
        from_address=program.from_address,
        recipient_name="Pat Program",
        recipient_email="program@example.org",
        idempotency_key=f"report/1/{data['week']}",
        message_id="<report.1.bench@example.org>",
        reply_address=program.from_address,
        data=json.loads(payload),
    )
    return len(to_bytes(compose_notice(composer, notice, now=now)))


def _profile(label: str, call: Callable[[], Any]) -> str:
    """cProfile one call: the top functions by cumulative and by own time."""
    profiler = cProfile.Profile()
    profiler.enable()
    call()
    profiler.disable()
    out = io.StringIO()
    out.write(f"--- profile: {label} ---\n")
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("cumulative").print_stats(25)
    stats.sort_stats("tottime").print_stats(15)
    return out.getvalue()


def _service(count: int, repeat: int, profile: bool) -> dict[str, Any]:
    """Fill a fresh database, then time the daily job, the report's build and its render."""
    from mailer.compose import Composer
    from monitor.judging import judge_all, snapshot
    from program.config import parse_config
    from program.store import make_engine, upgrade

    found: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="rapport-health-") as folder:
        url = f"sqlite:///{folder}/rapport.db"
        settings = parse_config(CONFIG % url, "bench.toml")
        engine = make_engine(url)
        upgrade(engine)
        started = time.perf_counter()
        found["activity_rows"] = _fill(engine, count)
        # Last week's snapshots, by the same job at that instant (untimed).
        week_ago = NOW - timedelta(days=7)
        with engine.begin() as connection:
            snapshot(
                connection, judge_all(connection, settings=settings, now=week_ago), now=week_ago
            )
        found["setup_seconds"] = time.perf_counter() - started
        found["setup_mb"] = _status_mb()["VmHWM"]
        found["db_mb"] = sum(p.stat().st_size for p in Path(folder).iterdir()) / 2**20

        found["peak_reset"] = _reset_peak()
        wall, cpu, states = _best(repeat, lambda: _daily_job(engine, settings, NOW))
        found.update(job_seconds=wall, job_cpu=cpu, job_states=dict(sorted(states.items())))
        found["job_mb"] = _status_mb()["VmHWM"]
        del states

        _reset_peak()
        wall, cpu, data = _best(repeat, lambda: _build_report(engine, NOW))
        found.update(build_seconds=wall, build_cpu=cpu)
        composer = Composer()  # built once per process, as the service's sender does
        wall, cpu, size = _best(repeat, lambda: _render_report(composer, settings, data, NOW))
        found.update(render_seconds=wall, render_cpu=cpu, report_bytes=size)
        found["report_mb"] = _status_mb()["VmHWM"]
        found["cards"] = len(data["partnerships"])
        found["newly_at_risk"] = len(data["newly_at_risk"])
        found["recovered"] = len(data["recovered"])

        if profile:
            found["profile"] = _profile(
                f"daily job, {count:,} partnerships", lambda: _daily_job(engine, settings, NOW)
            ) + _profile(
                f"weekly report build + render, {count:,} partnerships",
                lambda: _render_report(composer, settings, _build_report(engine, NOW), NOW),
            )
        engine.dispose()
    return found


def _size(
    count: int, repeat: int, profile: bool, out: multiprocessing.Queue[dict[str, Any]]
) -> None:
    """One size in this fresh process: the service's steps first, then the pure judge."""
    result: dict[str, Any] = {"partnerships": count}
    result.update(_service(count, repeat, profile))

    _reset_peak()
    gc.disable()  # building millions of objects is no faster for collecting them meanwhile
    data = _partnerships(count)
    gc.enable()
    data_mb = _status_mb()["VmRSS"]
    baseline = min(_baseline(data, NOW) for _ in range(repeat))
    wall, cpu, states = _best(repeat, lambda: _judge(data, NOW))
    result.update(
        {
            "events": sum(len(events) for _, events, _, _ in data),
            "baseline_seconds": baseline,
            "judge_seconds": wall,
            "judge_cpu": cpu,
            "data_mb": data_mb,
            "judge_mb": _status_mb()["VmHWM"],
            "states": dict(sorted(states.items())),
        }
    )
    result["peak_mb"] = max(result[k] for k in ("setup_mb", "job_mb", "report_mb", "judge_mb"))
    out.put(result)


def _run(count: int, repeat: int, profile: bool) -> dict[str, Any]:
    queue: multiprocessing.Queue[dict[str, Any]] = multiprocessing.Queue()
    process = multiprocessing.Process(target=_size, args=(count, repeat, profile, queue))
    process.start()
    while True:
        try:
            result: dict[str, Any] = queue.get(timeout=1)
            break
        except Empty:
            if not process.is_alive():
                raise SystemExit(
                    f"the run for {count:,} partnerships died (exit code {process.exitcode})"
                ) from None
    process.join()
    return result


def _met(ok: bool) -> str:
    return "met" if ok else "NOT MET"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1,000 and 10,000 partnerships only")
    parser.add_argument(
        "--repeat", type=int, help="timed runs per step, best kept (default 3; 2 with --quick)"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also cProfile the daily job and the report at each size (stderr)",
    )
    args = parser.parse_args()
    sizes = [1_000, 10_000] if args.quick else [1_000, 10_000, TARGET_SIZE]
    multiprocessing.set_start_method("spawn")
    rows = []
    for size in sizes:
        row = _run(size, max(1, args.repeat or (2 if args.quick else 3)), args.profile)
        if args.profile:
            print(row.pop("profile"), file=sys.stderr)
        rows.append(row)

    print(
        f"{'partnerships':>12} {'events':>9} {'baseline s':>11} {'judge s':>8} {'ratio':>6} "
        f"{'daily job s':>11} {'job MB':>7} {'report build s':>14} {'render s':>8} "
        f"{'report KB':>9} {'cards':>6} {'peak MB':>8}"
    )
    for row in rows:
        ratio = row["baseline_seconds"] / row["judge_seconds"]
        print(
            f"{row['partnerships']:>12,} {row['events']:>9,} {row['baseline_seconds']:>11.3f} "
            f"{row['judge_seconds']:>8.3f} {ratio:>6.3f} {row['job_seconds']:>11.3f} "
            f"{row['job_mb']:>7.1f} {row['build_seconds']:>14.3f} {row['render_seconds']:>8.3f} "
            f"{row['report_bytes'] / 1024:>9.0f} {row['cards']:>6,} {row['peak_mb']:>8.1f}"
        )
    print()
    print("CPU seconds (this process's own), and µs per partnership: flat = cost grows linearly")
    print(
        f"{'partnerships':>12} {'judge':>8} {'µs':>6} {'daily job':>10} {'µs':>6}"
        f" {'report build':>13} {'µs':>6} {'render':>8} {'µs':>6}"
    )
    for row in rows:
        n = row["partnerships"]
        print(
            f"{n:>12,}"
            + "".join(
                f" {row[key]:>{width}.3f} {row[key] / n * 1e6:>6.0f}"
                for key, width in (
                    ("judge_cpu", 8),
                    ("job_cpu", 10),
                    ("build_cpu", 13),
                    ("render_cpu", 8),
                )
            )
        )
    print()
    last = rows[-1]
    states = ", ".join(f"{state} {n}" for state, n in last["job_states"].items())
    print(f"daily job states at {last['partnerships']:,}: {states}")
    print(
        f"report at {last['partnerships']:,}: {last['cards']:,} cards, "
        f"{last['newly_at_risk']:,} newly at risk, {last['recovered']:,} recovered; "
        f"database {last['db_mb']:.0f} MB, filled in {last['setup_seconds']:.1f} s (untimed)"
    )
    print(
        f"peak MB by step at {last['partnerships']:,}:"
        f" setup (fill, last week's job) {last['setup_mb']:.0f},"
        f" daily job {last['job_mb']:.0f}, report build + render {last['report_mb']:.0f},"
        f" judge in memory {last['judge_mb']:.0f} (its synthetic events {last['data_mb']:.0f})"
    )
    if not last["peak_reset"]:
        print("note: the kernel refused to reset VmHWM; step peaks include the database fill")
    report_seconds = last["build_seconds"] + last["render_seconds"]
    targets: dict[str, bool] = {}
    if last["partnerships"] == TARGET_SIZE:
        targets = {
            "daily_job_seconds": last["job_seconds"] < TARGET_JOB_SECONDS,
            "daily_job_mb": last["job_mb"] < TARGET_MB,
            "report_seconds": report_seconds < TARGET_REPORT_SECONDS,
        }
        print(
            f"target: daily job at {TARGET_SIZE:,} < {TARGET_JOB_SECONDS:.0f} s:"
            f" {last['job_seconds']:.2f} s ({last['job_cpu']:.2f} s CPU),"
            f" {_met(targets['daily_job_seconds'])}"
        )
        print(
            f"target: daily job at {TARGET_SIZE:,} < {TARGET_MB:.0f} MB:"
            f" {last['job_mb']:.0f} MB, {_met(targets['daily_job_mb'])}"
        )
        print(
            f"target: weekly report at {TARGET_SIZE:,} < {TARGET_REPORT_SECONDS:.0f} s:"
            f" {report_seconds:.2f} s (build {last['build_seconds']:.2f} + render"
            f" {last['render_seconds']:.2f}; {last['build_cpu'] + last['render_cpu']:.2f} s CPU),"
            f" {_met(targets['report_seconds'])}"
        )
    else:
        print(
            f"targets (at {TARGET_SIZE:,}: daily job < {TARGET_JOB_SECONDS:.0f} s and"
            f" < {TARGET_MB:.0f} MB, report < {TARGET_REPORT_SECONDS:.0f} s): not measured"
            " (--quick stops at 10,000)"
        )
    ratio = last["baseline_seconds"] / last["judge_seconds"]
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
                "daily_job_seconds": round(last["job_seconds"], 3),
                "daily_job_cpu_seconds": round(last["job_cpu"], 3),
                "daily_job_mb": round(last["job_mb"], 1),
                "report_mb": round(last["report_mb"], 1),
                "report_build_seconds": round(last["build_seconds"], 3),
                "report_render_seconds": round(last["render_seconds"], 3),
                "report_cpu_seconds": round(last["build_cpu"] + last["render_cpu"], 3),
                "report_bytes": last["report_bytes"],
                "report_cards": last["cards"],
                "sizes_daily_job": {
                    str(row["partnerships"]): round(row["job_seconds"], 3) for row in rows
                },
                "sizes_report": {
                    str(row["partnerships"]): round(row["build_seconds"] + row["render_seconds"], 3)
                    for row in rows
                },
                "sizes_peak_mb": {
                    str(row["partnerships"]): round(row["peak_mb"], 1) for row in rows
                },
                "targets_met": targets,
                "ratio": round(ratio, 3),
                "peak_rss_mb": round(last["peak_mb"], 1),
            }
        )
    )


if __name__ == "__main__":
    main()
