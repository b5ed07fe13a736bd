"""`rapport serve`: every job on its schedule, unattended, until SIGTERM (APScheduler 3.x).

The jobs are the functions the CLI calls, so a pass under the service and a pass by hand behave
the same:

- ``deliver`` every minute: plan the topics due and deliver every due outbox row
  (rapport/jobs.py ``send``); nudges, alerts and reports planned by the other jobs go out here;
- ``poll`` every ``[schedule] poll_every``: read the inbox (rapport/poll.py), then plan the
  same-day alerts for any concern it recorded;
- ``daily`` at ``[schedule] daily_time`` in the program's zone: the health snapshot and the
  nudges (rapport/watch.py ``plan_nudges``); a day missed while the service was down is run as
  soon as it is back (the snapshot of the day is missing);
- ``report`` every quarter of an hour: each coordinator's weekly report once their
  ``report_weekday`` and ``report_time`` have come in their zone (once per ISO week, so a missed
  Monday is caught up, never doubled).

Each job runs one instance at a time, coalesced: a run that was missed is run once, not once per
missed slot.  On SQLite one process serves a database: a second ``rapport serve`` refuses to start
(an exclusive lock beside the database file).  On PostgreSQL several may run: deliveries share the
outbox through their row claims, and the other jobs take a PostgreSQL advisory lock, so only one
instance runs each at a time.

Signals: SIGTERM or SIGINT stop the service: the message in flight is finished, the jobs are
waited for, and the process exits 0 (systemd gives it TimeoutStopSec).  SIGHUP reloads
config.toml; an invalid new file is logged and the old settings stay.  Under systemd (when
$NOTIFY_SOCKET is set) the service reports READY once started, STATUS with the last pass of each
job, and WATCHDOG pings at half of $WATCHDOG_USEC while the scheduler is alive.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, ClassVar
from zoneinfo import ZoneInfo

from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, JobExecutionEvent
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import Engine, text

from monitor import judging
from program import privacy
from program.config import database_url, load_config, reply_secret
from program.errors import ConfigError, RapportError, StateError, UsageError
from program.settings import Settings
from program.store import make_engine, require_current
from rapport import jobs, poll, watch

if TYPE_CHECKING:
    from rapport.cli import Context

log = logging.getLogger("rapport")

JOBS = ("deliver", "poll", "daily", "report")
# Advisory-lock keys on PostgreSQL (deliver shares the outbox through its claims instead).
_LOCK_KEYS = {"poll": 0x52_41_50_01, "daily": 0x52_41_50_02, "report": 0x52_41_50_03}
STOP_WITHIN = 10.0  # seconds: what systemd and the tests expect of a SIGTERM


class Notifier:
    """The systemd notify protocol: one datagram per message to $NOTIFY_SOCKET (if set)."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        self.address: str | None = None
        if address.startswith("@"):
            self.address = "\0" + address[1:]  # an abstract socket
        elif address.startswith("/"):
            self.address = address
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        watched = usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid()))
        self.watchdog_every = int(usec) / 2_000_000 if watched else None
        self._failing = False

    def send(self, message: str) -> None:
        """Send without waiting: a notify socket that is not being read (its queue full) or is
        gone must never stall a job or the stop; the message is dropped and that is logged once
        until a send succeeds again."""
        if self.address is None:
            return
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            try:
                sock.sendto(message.encode("utf-8"), socket.MSG_DONTWAIT, self.address)
            except OSError as exc:
                if not self._failing:
                    reason = "its queue is full" if isinstance(exc, BlockingIOError) else exc
                    log.warning(
                        "systemd notify failed (%s); dropping messages until it works", reason
                    )
                self._failing = True
                return
        if self._failing:
            log.info("systemd notify works again")
            self._failing = False


@dataclass
class _Pass:
    at: datetime | None = None
    summary: str = "not run yet"
    ok: bool = True


@dataclass
class Service:
    """The scheduler, its jobs and their state; one per `rapport serve` process."""

    config_path: Path
    settings: Settings
    engine: Engine
    secret: bytes
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    notifier: Notifier = field(default_factory=Notifier)
    stopping: threading.Event = field(default_factory=threading.Event)
    passes: dict[str, _Pass] = field(default_factory=lambda: {name: _Pass() for name in JOBS})
    _reload: threading.Event = field(default_factory=threading.Event)
    _scheduler: BackgroundScheduler | None = None
    _woken: set[str] = field(default_factory=set)

    # -- the jobs ---------------------------------------------------------------------------

    def deliver(self, now: datetime | None = None) -> str:
        result = jobs.send(
            self.engine,
            settings=self.settings,
            secret=self.secret,
            now=now or self.clock(),
            should_stop=self.stopping.is_set,
        )
        if not result.ok:
            raise _Unhealthy(result.summary())
        return result.summary()

    def poll(self, now: datetime | None = None) -> str:
        if poll.source_name(self.settings) is None:
            return "no inbox configured"
        now = now or self.clock()
        with self._exclusive("poll") as mine:
            if not mine:
                return "another instance is reading the inbox"
            result = poll.poll(
                self.engine,
                settings=self.settings,
                secret=self.secret,
                now=now,
                should_stop=self.stopping.is_set,
            )
            alerts = watch.plan_concern_alerts(
                self.engine, settings=self.settings, secret=self.secret, now=now
            )
        summary = result.summary() + (f"; {alerts} concern alerts planned" if alerts else "")
        if alerts:
            self._wake("deliver")
        if result.errors:
            raise _Unhealthy(summary)
        return summary

    def daily(self, now: datetime | None = None) -> str:
        now = now or self.clock()
        with self._exclusive("daily") as mine:
            if not mine:
                return "another instance is judging"
            result = watch.plan_nudges(
                self.engine, settings=self.settings, secret=self.secret, now=now, send=False
            )
            with self.engine.begin() as connection:
                purged = privacy.purge(
                    connection, retain_days=self.settings.privacy.retain_days, now=now
                )
        if result.planned:
            self._wake("deliver")
        return (
            f"judged {result.judged} partnerships; planned {len(result.planned)} nudges and"
            f" alerts; purged {purged.inbound} old inbound messages"
        )

    def report(self, now: datetime | None = None) -> str:
        now = now or self.clock()
        with self._exclusive("report") as mine:
            if not mine:
                return "another instance is reporting"
            result = watch.plan_reports(
                self.engine, settings=self.settings, secret=self.secret, now=now, send=False
            )
        if result.planned:
            self._wake("deliver")
        return f"planned {len(result.planned)} reports ({result.not_due} not due yet)"

    def _wake(self, name: str) -> None:
        """Run job ``name`` now rather than at its next slot (what was planned goes out now).

        A job already running is run once more as soon as it ends (:meth:`_run`), since the
        scheduler skips a start while an instance runs."""
        self._woken.add(name)
        if self._scheduler is not None and self._scheduler.running:
            self._scheduler.modify_job(name, next_run_time=datetime.now(UTC))

    def daily_missed(self, now: datetime) -> bool:
        """Today's snapshot is missing although today's daily_time has passed."""
        zone = ZoneInfo(self.settings.program.timezone)
        local = now.astimezone(zone)
        if local.time() < self.settings.schedule.daily_time:
            return False
        with self.engine.connect() as connection:
            return not judging.has_snapshot(connection, now.astimezone(UTC).date())

    # -- running ----------------------------------------------------------------------------

    def run_once(self, now: datetime) -> int:
        """Each job once at ``now`` (``rapport serve --once``); exit 1 if any failed."""
        failed = 0
        for name in ("poll", "daily", "report", "deliver"):
            if not self._run(name, now):
                failed += 1
        return 1 if failed else 0

    def _run(self, name: str, now: datetime | None = None) -> bool:
        ok = True
        while not self.stopping.is_set():
            self._woken.discard(name)
            ok = self._pass(name, now)
            if now is not None or name not in self._woken:
                break
        return ok

    def _pass(self, name: str, now: datetime | None) -> bool:
        started = time.monotonic()
        record = self.passes[name]
        try:
            summary = getattr(self, name)(now)
            record.ok = True
        except _Unhealthy as exc:
            summary, record.ok = str(exc), False
        except RapportError as exc:
            summary, record.ok = f"failed: {exc}", False
        except Exception as exc:  # a surprise must not kill the scheduler: log it whole
            log.exception("%s: unexpected error", name)
            summary, record.ok = f"failed: {type(exc).__name__}: {exc}", False
        record.at, record.summary = self.clock(), summary
        level = logging.INFO if record.ok else logging.ERROR
        log.log(level, "%s: %s (%.1fs)", name, summary, time.monotonic() - started)
        self.notifier.send("STATUS=" + self.status())
        return record.ok

    def status(self) -> str:
        parts = []
        for name in JOBS:
            p = self.passes[name]
            when = p.at.astimezone(UTC).strftime("%H:%M") if p.at else "-"
            parts.append(f"{name} {when} {'ok' if p.ok else 'FAILED'}")
        return "; ".join(parts)

    def serve(self) -> int:
        """Run until SIGTERM/SIGINT; exit 0 after a clean stop."""
        scheduler = BackgroundScheduler(
            timezone=UTC,
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 3600},
        )
        schedule = self.settings.schedule
        daily_zone = ZoneInfo(self.settings.program.timezone)
        scheduler.add_job(self._run, IntervalTrigger(minutes=1), args=["deliver"], id="deliver")
        scheduler.add_job(
            self._run,
            IntervalTrigger(seconds=max(int(schedule.poll_every.total_seconds()), 30)),
            args=["poll"],
            id="poll",
        )
        scheduler.add_job(
            self._run,
            CronTrigger(
                hour=schedule.daily_time.hour,
                minute=schedule.daily_time.minute,
                timezone=daily_zone,
            ),
            args=["daily"],
            id="daily",
        )
        scheduler.add_job(self._run, CronTrigger(minute="*/15"), args=["report"], id="report")
        scheduler.add_listener(self._listener, EVENT_JOB_ERROR | EVENT_JOB_EXECUTED)
        self._scheduler = scheduler
        scheduler.start()
        # First passes now, not a minute from now: catch up on what fell due while down.
        for name in ("deliver", "poll", "report"):
            scheduler.modify_job(name, next_run_time=datetime.now(UTC))
        if self.daily_missed(self.clock()):
            scheduler.modify_job("daily", next_run_time=datetime.now(UTC))
        log.info(
            "serving %s: deliver every minute, inbox every %s, daily at %s %s, reports %s %s",
            self.settings.program.name,
            schedule.poll_every,
            schedule.daily_time.strftime("%H:%M"),
            self.settings.program.timezone,
            schedule.report_weekday,
            schedule.report_time.strftime("%H:%M"),
        )
        self.notifier.send("READY=1\nSTATUS=started")
        watchdog = self.notifier.watchdog_every
        next_ping = time.monotonic()
        while not self.stopping.is_set():
            if self._reload.is_set():
                self._reload.clear()
                self._reload_config()
            if watchdog is not None and time.monotonic() >= next_ping:
                if scheduler.running:
                    self.notifier.send("WATCHDOG=1")
                next_ping = time.monotonic() + watchdog
            self.stopping.wait(min(watchdog or 1.0, 1.0))
        log.info("stopping: finishing the jobs in flight")
        self.notifier.send("STOPPING=1")
        scheduler.shutdown(wait=True)
        self.engine.dispose()
        log.info("stopped")
        return 0

    def _listener(self, event: JobExecutionEvent) -> None:
        if event.exception is not None:  # pragma: no cover - _run catches everything
            log.error("%s: %s", event.job_id, event.exception)

    def _reload_config(self) -> None:
        try:
            settings = load_config(self.config_path)
        except (ConfigError, OSError) as exc:
            log.error("reload: keeping the running configuration: %s", exc)
            return
        if database_url(settings) != database_url(self.settings):
            log.error("reload: [database] url changed; restart the service to switch databases")
            return
        self.settings = settings
        log.info("reload: %s loaded", self.config_path)

    @contextlib.contextmanager
    def _exclusive(self, name: str) -> Iterator[bool]:
        """On PostgreSQL, an advisory lock for the job (False if another instance holds it).

        The lock is the session's, so its transaction is committed at once: the connection that
        holds it waits idle, not "idle in transaction" (which would hold back VACUUM for the
        whole job, and end it where ``idle_in_transaction_session_timeout`` is set)."""
        if self.engine.dialect.name != "postgresql":
            yield True
            return
        with self.engine.connect() as connection:
            key = _LOCK_KEYS[name]
            got = bool(
                connection.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar()
            )
            connection.commit()
            try:
                yield got
            finally:
                if got:
                    connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                connection.commit()

    def request_stop(self, *_: object) -> None:
        self.stopping.set()

    def request_reload(self, *_: object) -> None:
        self._reload.set()


class _Unhealthy(RapportError):
    """A pass that ran but needs a person (a fault stopped delivery, a folder failed)."""


def _single_instance(settings: Settings) -> IO[str] | None:
    """On SQLite, an exclusive lock beside the database; StateError if another process has it."""
    url = database_url(settings)
    if not url.startswith("sqlite:///"):
        return None
    path = Path(url.removeprefix("sqlite:///") + ".serve.lock")
    handle = path.open("a+", encoding="utf-8")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise StateError(
            f"{path.name}: `rapport serve` is already running on this database ({holder}); on"
            " SQLite one instance serves a database (use PostgreSQL to run several)"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}\n")
    handle.flush()
    return handle


class _JournalFormatter(logging.Formatter):
    """``<priority>message`` for journald (it adds the time); ``time level message`` elsewhere."""

    _PRIORITY: ClassVar[dict[str, int]] = {
        "DEBUG": 7,
        "INFO": 6,
        "WARNING": 4,
        "ERROR": 3,
        "CRITICAL": 2,
    }

    def __init__(self, journal: bool) -> None:
        super().__init__("%(message)s" if journal else "%(asctime)s %(levelname)s %(message)s")
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record).replace("\n", " | ")
        if self.journal:
            return f"<{self._PRIORITY.get(record.levelname, 6)}>{line}"
        return line


def _configure_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JournalFormatter(bool(os.environ.get("JOURNAL_STREAM"))))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    logging.getLogger("apscheduler.scheduler").addFilter(_skip_busy_notes)


def _skip_busy_notes(record: logging.LogRecord) -> bool:
    """Drop APScheduler's warning that a job's next run was skipped while it still runs: with
    ``max_instances=1`` that is the schedule working (a long poll, say), not a problem."""
    return "maximum number of running instances reached" not in record.getMessage()


def cmd_serve(ctx: Context) -> int:
    args = ctx.args
    if args.now is not None and not args.once:
        raise UsageError("serve: --now is only for --once (a running service follows the clock)")
    settings = ctx.settings
    engine = make_engine(database_url(settings))
    require_current(engine)
    secret = reply_secret()
    _configure_logging()
    # On SQLite a pass by hand (--once) and a running service would poll and judge together.
    lock = _single_instance(settings)
    service = Service(ctx.path, settings, engine, secret)
    if args.once:
        try:
            return service.run_once(args.now or datetime.now(UTC))
        finally:
            if lock is not None:
                lock.close()
    signal.signal(signal.SIGTERM, service.request_stop)
    signal.signal(signal.SIGINT, service.request_stop)
    signal.signal(signal.SIGHUP, service.request_reload)
    try:
        return service.serve()
    finally:
        if lock is not None:
            lock.close()
