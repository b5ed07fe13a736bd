"""Soak test: a 16-week round on an accelerated clock, with faults injected, then an audit.

Why: the unit and scenario tests show each fault handled once; this shows that a whole round
under all of them at once, at network scale, delivers every topic exactly once (or says which it
cannot be sure of), loses no reply and sends every weekly report, with memory that stays flat.

The clock: the harness plays the round day by day and runs ``rapport serve --once --now T``
as a subprocess at a few instants T of each simulated day (each run is what `rapport serve`
does when its jobs come due: poll the inbox, judge, report, deliver).  A long-running
``rapport serve`` follows the machine's clock and has no way to be told another time, so it is
not used here; every run is a fresh process, which also makes every kill a real crash and every
start a real recovery.  The inbox is a Maildir (the reader Rapport uses for local mailboxes),
not Dovecot: a private Dovecot would add its own start-up and indexing to every one of the
several hundred runs without exercising anything the Maildir reader does not.

The people (bench/soak_world.py): pairs follow five scripts, thriving, silent partner, bounced,
on leave (auto-replies only) and fell silent, and answer each topic email they receive through
its Reply-To, arriving twenty minutes after the run that sent it.

The faults:
- the SMTP sink (aiosmtpd, the test suite's scriptable server) answers 421 or 451 to, or drops
  the connection at, 10% of MAIL, RCPT, DATA and end-of-DATA commands, at random;
- runs are killed with SIGKILL at a random moment (the next run must turn any row left
  ``sending`` into ``uncertain``, never re-send it);
- the database is locked: the harness holds a write transaction (BEGIN IMMEDIATE) for a few
  seconds as a run starts;
- the inbox's UIDVALIDITY changes mid-round (the folder is rebuilt: everything is read again and
  must be recorded once);
- the clock jumps across the summer-time changes of New York, Berlin, Sydney and Santiago:
  extra runs an hour after the change, then one back before it.

The audit: topics due, sent once, sent twice (must be 0), not accepted but reported as
uncertain, late, suppressed or failed, missing (must be 0); every message the sink accepted
twice; replies written vs inbound rows recorded; one weekly report per coordinator and ISO
week; each pair's final health against its script; the service's peak memory.  Prints a table,
then as its last line one JSON object: {"bench": "soak", ..., "ratio": 1.0, "peak_rss_mb": M}
(``ratio`` is there for the benchmark format; a soak has no baseline).  Exit 1 if the audit
fails.

    python bench/soak.py            # 5,000 participants, 2,500 pairs, 100 countries
    python bench/soak.py --quick    # 500 participants, fewer kills: a few minutes
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.soak_world import (  # noqa: E402
    Accepted,
    FaultySink,
    Inbox,
    Person,
    auto_reply,
    bounce,
    reply,
    roster,
)
from tests.smtp_server import ScriptedController  # noqa: E402

START = date(2027, 3, 1)  # a Monday; the round ends on Sunday 20 June
WEEKS = 16
TOPICS = 8  # fortnightly
SECRET = "soak-secret-0123456789abcdef"
RAPPORT = [sys.executable, "-m", "rapport.cli"]
# Summer-time changes in the round (UTC instants): New York, Europe, Sydney and Santiago.
DST_CHANGES = (
    datetime(2027, 3, 14, 7, 0, tzinfo=UTC),
    datetime(2027, 3, 28, 1, 0, tzinfo=UTC),
    datetime(2027, 4, 3, 16, 0, tzinfo=UTC),
    datetime(2027, 4, 4, 3, 0, tzinfo=UTC),
)
UIDVALIDITY_DAY = 52  # the inbox folder is rebuilt on this simulated day
REPORTED = ("uncertain", "late", "suppressed", "failed")


@dataclass(frozen=True)
class Form:
    """How big and how rough a soak is."""

    participants: int
    runs_per_day: int
    kill_rate: float  # share of runs killed at a random moment
    lock_every: int  # every n-th run starts with the database locked
    lock_seconds: float


FORMS = {
    "quick": Form(participants=500, runs_per_day=1, kill_rate=0.08, lock_every=20, lock_seconds=3),
    "long": Form(participants=5000, runs_per_day=1, kill_rate=0.12, lock_every=15, lock_seconds=5),
}


@dataclass
class Tally:
    """What the harness did and saw, for the audit."""

    runs: int = 0
    killed: int = 0
    locked: int = 0
    exit_codes: Counter[int] = field(default_factory=Counter)
    unexpected: list[str] = field(default_factory=list)
    peak_kb: int = 0
    accepted: list[Accepted] = field(default_factory=list)
    backward_jumps: int = 0
    run_seconds: list[float] = field(default_factory=list)


class Soak:
    """One soak: the project folder, the sink, the inbox, the people and the tally."""

    def __init__(self, folder: Path, form: Form, seed: int) -> None:
        self.folder, self.form = folder, form
        self.rng = random.Random(seed)
        self.sink = FaultySink(rate=0.10, seed=seed)
        self.sink.enabled = False
        self.controller = ScriptedController(self.sink)
        self.controller.start()
        self.inbox = Inbox(folder / "Maildir")
        self.people, self.coordinators = roster(form.participants)
        self.by_email = {p.email: p for p in self.people}
        self.config = folder / "config.toml"
        self.db = folder / "rapport.db"
        self.log = (folder / "serve.log").open("a+b")
        self.tally = Tally()
        self.env = dict(os.environ, RAPPORT_SECRET=SECRET, PYTHONPATH=str(ROOT))

    # -- set-up -----------------------------------------------------------------------------

    def setup(self) -> None:
        """config.toml, the database, the roster, one round and eight topics (no faults yet)."""
        self.config.write_text(
            '[program]\nname = "Soak Network"\nfrom_address = "coordinators@example.org"\n'
            'reply_address = "coordinators+{key}@example.org"\n'
            f'[database]\nurl = "sqlite:///{self.db}"\n'
            f'[smtp]\nhost = "127.0.0.1"\nport = {self.controller.port}\nsecurity = "none"\n'
            'max_per_minute = 0\nmax_per_day = 0\ntimeout = "10s"\n'
            f'[maildir]\npath = "{self.inbox.path}"\n',
            encoding="utf-8",
        )
        f = self.folder
        (f / "participants.csv").write_text(
            "email,name,country,timezone,language\n"
            + "".join(
                f"{p.email},{p.name},{p.country},{p.zone},{p.language}\n" for p in self.people
            ),
            encoding="utf-8",
        )
        members: dict[int, list[str]] = defaultdict(list)
        for p in self.people:
            members[p.pair].append(p.email)
        (f / "partnerships.csv").write_text(
            "round,member_a,member_b\n" + "".join(f"soak,{a},{b}\n" for a, b in members.values()),
            encoding="utf-8",
        )
        (f / "coordinators.csv").write_text(
            "email,name,role,countries\n" + "".join(",".join(c) + "\n" for c in self.coordinators),
            encoding="utf-8",
        )
        topics = f / "topics"
        topics.mkdir()
        for n in range(1, TOPICS + 1):
            (topics / f"t{n}.md").write_text(
                f'+++\ntitle = "Topic {n}"\norder = {n}\n+++\nWhat does idea {n} mean to you?\n',
                encoding="utf-8",
            )
        end = START + timedelta(weeks=WEEKS) - timedelta(days=1)
        for args in (
            ["db", "upgrade"],
            ["import", "participants", str(f / "participants.csv")],
            ["import", "coordinators", str(f / "coordinators.csv")],
            ["round", "create", "soak", "--start", str(START), "--end", str(end)],
            ["import", "partnerships", str(f / "partnerships.csv")],
            ["import", "topics", str(topics), "--round", "soak"],
        ):
            self.rapport(*args)
        self.sink.enabled = True

    def rapport(self, *args: str) -> str:
        done = subprocess.run(
            [*RAPPORT, "--config", str(self.config), *args],
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise SystemExit(f"rapport {' '.join(args)} failed: {done.stderr.strip()}")
        return done.stdout

    # -- the clock --------------------------------------------------------------------------

    def instants(self) -> list[datetime]:
        """Every run's --now: a few a day, plus the jumps around each summer-time change."""
        step = 24 // self.form.runs_per_day
        out = []
        for day in range(WEEKS * 7):
            midnight = _midnight(day)
            out += [midnight + timedelta(hours=3 + step * k) for k in range(self.form.runs_per_day)]
        for change in DST_CHANGES:
            before = max(t for t in out if t < change)
            i = out.index(before) + 1
            # Forward an hour past the change, then back to a minute before it.
            out[i:i] = [change + timedelta(hours=1), change - timedelta(minutes=1)]
        return out

    def play(self) -> None:
        instants = self.instants()
        previous: datetime | None = None
        rebuilt = False
        for n, now in enumerate(instants):
            if previous is not None and now < previous:
                self.tally.backward_jumps += 1
            if not rebuilt and now >= _midnight(UIDVALIDITY_DAY):
                self.inbox.change_uidvalidity()
                rebuilt = True
            kill = self.rng.random() < self.form.kill_rate
            lock = self.form.lock_every > 0 and n % self.form.lock_every == self.form.lock_every - 1
            self.run_once(now, kill=kill, lock=lock)
            self.answer(self.sink.drain(), now)
            previous = now
        # A last clean run after the round, so nothing is left in flight by a kill.
        last = instants[-1] + timedelta(hours=1)
        self.sink.enabled = False
        self.run_once(last, kill=False, lock=False)
        self.answer(self.sink.drain(), last)
        self.final_now = last

    def run_once(self, now: datetime, *, kill: bool, lock: bool) -> None:
        """One ``rapport serve --once --now`` process, maybe locked out at first, maybe killed."""
        holder = self._lock(self.form.lock_seconds) if lock else None
        started = time.monotonic()
        self.log.write(f"--- run at {now.isoformat()}{' (killed)' if kill else ''}\n".encode())
        self.log.flush()
        mark = self.log.tell()
        process = subprocess.Popen(
            [*RAPPORT, "--config", str(self.config), "serve", "--once", "--now", now.isoformat()],
            env=self.env,
            stdout=self.log,
            stderr=self.log,
        )
        reaped = None
        if kill:
            typical = sorted(self.tally.run_seconds)[len(self.tally.run_seconds) // 2 :] or [2.0]
            delay = self.rng.uniform(0.2, typical[0] + (self.form.lock_seconds if lock else 0))
            reaped = _wait(process.pid, time.monotonic() + delay)
            if reaped is None:
                os.kill(process.pid, signal.SIGKILL)
                self.tally.killed += 1
        _, status, usage = reaped or os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        if holder is not None:
            holder.join()
            self.tally.locked += 1
        elapsed = time.monotonic() - started
        if not kill:
            self.tally.run_seconds.append(elapsed)
        self.tally.runs += 1
        self.tally.exit_codes[process.returncode] += 1
        self.tally.peak_kb = max(self.tally.peak_kb, usage.ru_maxrss)
        self.log.seek(mark)
        output = self.log.read().decode("utf-8", "replace")
        self.log.seek(0, os.SEEK_END)
        for line in output.splitlines():
            if "unexpected error" in line or "Traceback" in line:
                self.tally.unexpected.append(f"{now.isoformat()}: {line.strip()}")
        if process.returncode not in (0, 1, -signal.SIGKILL):
            self.tally.unexpected.append(f"{now.isoformat()}: exit {process.returncode}")

    def _lock(self, seconds: float) -> threading.Thread:
        """Hold the database's write lock for ``seconds`` from now, in a thread."""
        connection = sqlite3.connect(
            self.db, timeout=60, isolation_level=None, check_same_thread=False
        )
        connection.execute("BEGIN IMMEDIATE")

        def hold() -> None:
            time.sleep(seconds)
            connection.execute("COMMIT")
            connection.close()

        thread = threading.Thread(target=hold)
        thread.start()
        return thread

    # -- the people -------------------------------------------------------------------------

    def answer(self, accepted: list[Accepted], now: datetime) -> None:
        """Each person's answer, by their pair's script, to what they received in this run."""
        self.tally.accepted += accepted
        keys = self._keys([a.message_id for a in accepted])
        arrival = now + timedelta(minutes=20)
        for mail in accepted:
            person = self.by_email.get(mail.recipient)
            if person is None:
                continue
            key = keys.get(mail.message_id, "")
            seq = int(key.split("/")[2]) if key.startswith("topic/") else 0
            self._respond(person, mail, seq, arrival)

    def _respond(self, person: Person, mail: Accepted, seq: int, arrival: datetime) -> None:
        script, a = person.script.name, person.side == "a"
        if script == "bounced" and not a:
            self.inbox.deliver(bounce(person.email), "bounce", arrival)
        elif script == "on_leave" and a:
            self.inbox.deliver(auto_reply(person, mail), "auto_reply", arrival)
        elif not seq:
            return  # nudges and alerts get no answer from the others
        elif script == "thriving" or (script == "fell_silent" and seq <= 2):
            self.inbox.deliver(reply(person, mail, "1\n"), "human", arrival)
        elif script in ("silent_partner", "bounced", "on_leave") and (a or script == "on_leave"):
            text = "Hello! I wrote to my partner about this one; here is what I think.\n"
            self.inbox.deliver(reply(person, mail, text), "human", arrival)

    def _keys(self, message_ids: list[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        with sqlite3.connect(self.db, timeout=60) as db:
            for i in range(0, len(message_ids), 500):
                chunk = message_ids[i : i + 500]
                marks = ",".join("?" * len(chunk))
                query = f"SELECT message_id, key FROM outbox WHERE message_id IN ({marks})"
                out.update(db.execute(query, chunk).fetchall())
        return out

    def close(self) -> None:
        self.controller.stop()
        self.log.close()


def _midnight(day: int) -> datetime:
    """00:00 UTC of the round's ``day`` (0: its first)."""
    return datetime.combine(START + timedelta(days=day), datetime.min.time(), UTC)


def _wait(pid: int, deadline: float) -> tuple[int, int, resource.struct_rusage] | None:
    """Reap child ``pid`` if it ends before ``deadline`` (monotonic); None if still running."""
    while time.monotonic() < deadline:
        reaped = os.wait4(pid, os.WNOHANG)
        if reaped[0]:
            return reaped
        time.sleep(0.02)
    return None


# -- the audit ------------------------------------------------------------------------------


def audit(soak: Soak) -> dict[str, Any]:
    """Every figure the soak reports, from the database, the sink's log and the inbox."""
    db = sqlite3.connect(soak.db)
    db.row_factory = sqlite3.Row
    rows = db.execute("SELECT key, kind, status, message_id, to_address FROM outbox").fetchall()
    by_mid = {r["message_id"]: r for r in rows}
    times = Counter(a.message_id for a in soak.tally.accepted)
    unknown = sum(n for mid, n in times.items() if mid not in by_mid)
    twice = Counter(by_mid[m]["kind"] for m, n in times.items() if n > 1 and m in by_mid)

    topics = [r for r in rows if r["kind"] == "topic"]
    due = len(soak.people) * TOPICS
    status_of_unaccepted: Counter[str] = Counter(
        r["status"] for r in topics if times[r["message_id"]] == 0
    )
    missing = (due - len(topics)) + sum(
        n for status, n in status_of_unaccepted.items() if status not in REPORTED
    )
    accepted_not_sent = sum(
        1 for r in rows if times[r["message_id"]] and r["status"] not in ("sent", "uncertain")
    )
    figures: dict[str, Any] = {
        "topics_due": due,
        "topics_planned": len(topics),
        "sent_once": sum(1 for r in topics if times[r["message_id"]] == 1),
        "sent_twice": sum(1 for r in topics if times[r["message_id"]] > 1),
        "not_accepted": dict(sorted(status_of_unaccepted.items())),
        "uncertain": sum(1 for r in topics if r["status"] == "uncertain"),
        "missing": missing,
        "any_message_twice": dict(twice),
        "accepted_unknown": unknown,
        "accepted_not_marked_sent": accepted_not_sent,
    }

    inbound = db.execute("SELECT kind, COUNT(*) n FROM inbound GROUP BY kind").fetchall()
    recorded = {r["kind"]: r["n"] for r in inbound}
    distinct = db.execute("SELECT COUNT(DISTINCT message_id) FROM inbound").fetchone()[0]
    written = sum(soak.inbox.written.values())
    figures.update(
        {
            "replies_written": dict(soak.inbox.written),
            "inbound_recorded": recorded,
            "inbound_lost": written - distinct,
            "inbound_recorded_twice": sum(recorded.values()) - distinct,
        }
    )

    expected_weeks = _report_weeks(soak.final_now)
    reports: dict[str, Counter[str]] = defaultdict(Counter)
    for r in rows:
        if r["kind"] == "report" and (times[r["message_id"]] or r["status"] == "uncertain"):
            reports[r["to_address"]][r["key"].rsplit("/", 1)[1]] += max(times[r["message_id"]], 1)
    missing_reports = [
        f"{email} {week}"
        for email, *_ in soak.coordinators
        for week in expected_weeks
        if not reports[email][week]
    ]
    figures.update(
        {
            "reports_expected": len(expected_weeks) * len(soak.coordinators),
            "reports_sent": sum(sum(c.values()) for c in reports.values()),
            "reports_missing": missing_reports,
            "reports_uncertain": sum(
                1 for r in rows if r["kind"] == "report" and r["status"] == "uncertain"
            ),
        }
    )
    figures["pairs"], figures["pairs_wrong"] = _final_states(soak)
    db.close()
    return figures


def _report_weeks(until: datetime) -> list[str]:
    """ISO weeks whose Monday 08:00 (UTC: the coordinators' zone) came by ``until``."""
    weeks = []
    for week in range(WEEKS):
        monday = datetime.combine(START + timedelta(weeks=week), datetime.min.time(), UTC)
        if monday + timedelta(hours=8) <= until:
            year, number, _ = monday.isocalendar()
            weeks.append(f"{year}-W{number:02d}")
    return weeks


def _final_states(soak: Soak) -> tuple[dict[str, dict[str, int]], list[str]]:
    """Each script's final health states, and every pair whose state its script rules out."""
    out = soak.rapport("health", "--json", "--now", soak.final_now.isoformat())
    states: dict[str, Counter[str]] = defaultdict(Counter)
    wrong = []
    for line in out.splitlines():
        row = json.loads(line)
        first = soak.by_email[row["members"][0]["email"]]
        script = first.script
        states[script.name][row["state"]] += 1
        if row["state"] not in script.expected:
            wrong.append(f"{script.name} pair {first.pair}: {row['state']} ({row['reasons']})")
    return {name: dict(c) for name, c in states.items()}, wrong


def failures(figures: dict[str, Any], tally: Tally) -> list[str]:
    """What makes the soak fail: any duplicate, loss, missing report or wrong final state."""
    checks = [
        (figures["sent_twice"], "topics accepted twice"),
        (sum(figures["any_message_twice"].values()), "messages accepted twice"),
        (figures["missing"], "topics missing (never accepted, not reported)"),
        (figures["accepted_not_marked_sent"], "accepted messages not marked sent or uncertain"),
        (figures["accepted_unknown"], "accepted messages not in the outbox"),
        (figures["inbound_lost"], "inbox messages not recorded"),
        (figures["inbound_recorded_twice"], "inbox messages recorded twice"),
        (len(figures["reports_missing"]), "weekly reports missing"),
        (len(figures["pairs_wrong"]), "pairs in a state their script rules out"),
        (len(tally.unexpected), "unexpected errors in the service's log"),
    ]
    return [f"{n} {what}" for n, what in checks if n]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="500 participants, fewer kills")
    parser.add_argument("--participants", type=int, help="override the form's participant count")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--keep", type=Path, help="keep the project folder here (for a post mortem)"
    )
    args = parser.parse_args()
    form = FORMS["quick" if args.quick else "long"]
    if args.participants:
        form = Form(args.participants, *list(vars(form).values())[1:])
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="rapport-soak-") as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        soak = Soak(folder, form, args.seed)
        try:
            soak.setup()
            soak.play()
            figures = audit(soak)
        finally:
            soak.close()
    duration = time.monotonic() - started
    tally = soak.tally
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    figures.update(
        {
            "participants": form.participants,
            "pairs_total": form.participants // 2,
            "countries": len({p.country for p in soak.people}),
            "runs": tally.runs,
            "killed": tally.killed,
            "locked_runs": tally.locked,
            "backward_clock_jumps": tally.backward_jumps,
            "exit_codes": {str(k): v for k, v in sorted(tally.exit_codes.items())},
            "smtp_faults": sum(n for k, n in soak.sink.faults.items() if ":" in k[:9]),
            "unexpected_errors": tally.unexpected[:20],
            "seconds": round(duration, 1),
            "service_peak_rss_mb": round(tally.peak_kb / 1024, 1),
        }
    )
    _print_table(figures, soak.sink.faults)
    failed = failures(figures, tally)
    print("FAILED: " + "; ".join(failed) if failed else "OK: no duplicate, no loss")
    summary = {"bench": "soak", "ok": not failed, "failures": failed, **figures}
    summary.update({"ratio": 1.0, "peak_rss_mb": round(max(tally.peak_kb, children) / 1024, 1)})
    print(json.dumps(summary))
    if failed:
        sys.exit(1)


def _print_table(f: dict[str, Any], faults: Counter[str]) -> None:
    lines = [
        ("participants / pairs / countries", f"{f['participants']} / {f['pairs_total']} / "
         f"{f['countries']}"),
        ("runs (killed, locked, clock back)", f"{f['runs']} ({f['killed']}, {f['locked_runs']}, "
         f"{f['backward_clock_jumps']})"),
        ("run exit codes", f["exit_codes"]),
        ("SMTP faults injected", f"{f['smtp_faults']} " + str(dict(sorted(faults.items())))),
        ("topics due / planned", f"{f['topics_due']} / {f['topics_planned']}"),
        ("sent once / twice", f"{f['sent_once']} / {f['sent_twice']}"),
        ("not accepted, by status", f["not_accepted"]),
        ("missing (not reported)", f["missing"]),
        ("any message accepted twice", f["any_message_twice"]),
        ("inbox written", f["replies_written"]),
        ("inbound recorded", f["inbound_recorded"]),
        ("inbound lost / twice", f"{f['inbound_lost']} / {f['inbound_recorded_twice']}"),
        ("weekly reports expected / sent", f"{f['reports_expected']} / {f['reports_sent']}"),
        ("final states by script", f["pairs"]),
        ("pairs in a wrong state", len(f["pairs_wrong"])),
        ("unexpected errors", len(f["unexpected_errors"])),
        ("service peak memory (MB)", f["service_peak_rss_mb"]),
        ("duration (s)", f["seconds"]),
    ]  # fmt: skip
    for name, value in lines:
        print(f"{name:34} {value}")
    for line in f["pairs_wrong"][:10] + f["reports_missing"][:10] + f["unexpected_errors"][:10]:
        print(f"  {line}")


if __name__ == "__main__":
    main()
