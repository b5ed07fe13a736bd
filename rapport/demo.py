"""`rapport demo`: a whole 16-week round of the example program, played in under a minute.

A coordinator deciding whether to trust Rapport with their network wants to see it at work on a
round like theirs, without a mail server, a network or four months.  So the demo sets up the
example program in ``examples/`` in ``--dir`` with the commands a coordinator would use (config,
database, participants, coordinators, partnerships, topics), runs an SMTP server inside this
process (aiosmtpd on 127.0.0.1) that files every message it receives as an .eml file in
``--dir``/mail, and plays the round on an accelerated clock.  Each simulated day at 23:00 UTC it
runs the jobs `rapport serve` schedules, with that day as ``now``: read the inbox (a Maildir in
``--dir``/Maildir), send what is due, the daily health snapshot and nudges, the weekly reports,
and deliver what they planned.  It calls the job functions themselves rather than the commands
that wrap them, as the service does, so one database engine and one set of compiled templates
serve the whole round.  Between cycles the simulated participants of rapport/demo_people.py read
what was delivered to them and answer; their mail lands in the Maildir, stamped with its
simulated arrival time.

It prints the story week by week (rapport/demo_story.py words it): what went out, what came back,
who was nudged and why, the partnerships at risk as `rapport health --json` gives them, the
reports emailed.  Finally `rapport report --html` writes the program coordinator's last weekly
report to ``--dir``/report.html.  Randomness is seeded, so two runs tell the same story.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import socket
import textwrap
import threading
from datetime import UTC, date, datetime, time, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiosmtpd.controller import Controller
from sqlalchemy import Connection, select

from mailer.compose import Composer
from program.config import database_url, example_config, load_config
from program.errors import RapportError, UsageError
from program.models import MEMBERSHIPS, OUTBOX, PARTICIPANTS, TOPIC_TEXTS, TOPICS
from program.store import make_engine
from rapport import demo_story, jobs, poll, watch
from rapport.demo_people import Delivered, People, Person

if TYPE_CHECKING:
    from rapport.cli import Context

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
ROUND = "2027-spring"
START = date(2027, 3, 1)  # a Monday
WEEKS = 16
CYCLE = time(23)  # each simulated day's cycle, UTC: every participant's topic hour has passed
# The demo's own reply-key secret, whatever $RAPPORT_SECRET holds: its mail never leaves this
# process, and a fixed secret gives the same reply keys and Message-IDs in every run.
DEMO_SECRET = b"demo-only-secret-not-for-real-use"
# What the demo writes in --dir; a folder holding anything else is left alone.
OWN = frozenset(
    (
        "config.toml",
        "rapport.db",
        "rapport.db-wal",
        "rapport.db-shm",
        "mail",
        "Maildir",
        "report.html",
    )
)


class DemoError(RapportError):
    """A step of the demo failed; the message names the step."""


def cmd_demo(ctx: Context) -> int:
    """Play the round into ``--dir`` and print its story."""
    folder: Path = ctx.args.dir
    if not EXAMPLES.is_dir():
        raise UsageError(f"{EXAMPLES}: the example program is missing (it ships with the source)")
    _prepare(folder)
    mailbox = _Mailbox(folder / "mail")
    server = Controller(mailbox, hostname="127.0.0.1", port=_free_port())
    server.start()
    try:
        Demo(folder, server.port, mailbox).play()
    finally:
        server.stop()
    return 0


def _prepare(folder: Path) -> None:
    """An empty ``folder``, replacing a previous demo's files but never anything else."""
    if folder.exists():
        if not folder.is_dir():
            raise UsageError(f"{folder}: not a folder")
        strangers = sorted(p.name for p in folder.iterdir() if p.name not in OWN)
        if strangers:
            raise UsageError(
                f"{folder}: holds files the demo did not write ({', '.join(strangers[:3])});"
                " choose another --dir"
            )
        for path in folder.iterdir():
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
    for sub in ("mail", "Maildir/new", "Maildir/cur", "Maildir/tmp"):
        (folder / sub).mkdir(parents=True, exist_ok=True)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class _Mailbox:
    """aiosmtpd handler: files each message as ``NNNN-recipient.eml`` and keeps it for reading.

    Runs in the server's thread; the demo takes the messages once a job has returned, by which
    time every message has had its 250.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.count = 0
        self.lock = threading.Lock()
        self.fresh: list[tuple[str, bytes]] = []

    async def handle_DATA(self, server: object, session: object, envelope: Any) -> str:
        data: bytes = envelope.original_content or envelope.content
        with self.lock:
            for recipient in envelope.rcpt_tos:
                self.count += 1
                name = f"{self.count:04d}-{recipient.replace('@', '_at_')}.eml"
                (self.folder / name).write_bytes(data)
                self.fresh.append((recipient.lower(), data))
        return "250 OK"

    def take(self) -> list[tuple[str, bytes]]:
        with self.lock:
            fresh, self.fresh = self.fresh, []
        return fresh


def at(day: int, hour: time = CYCLE) -> datetime:
    """The instant (UTC) of ``hour`` on the round's day ``day`` (0: its first Monday)."""
    return datetime.combine(START + timedelta(days=day), hour, UTC)


class Demo:
    """One play of the round: the project in ``folder``, the SMTP sink and the people."""

    def __init__(self, folder: Path, port: int, mailbox: _Mailbox) -> None:
        self.folder, self.port, self.mailbox = folder, port, mailbox
        self.config = folder / "config.toml"
        self.maildir = folder / "Maildir"
        self.serial = 0
        self.settings = load_config(self._write_config())
        self.engine = make_engine(database_url(self.settings))
        self.secret = DEMO_SECRET
        self.composer = Composer()

    def _write_config(self) -> Path:
        overrides: dict[str, dict[str, Any]] = {
            "smtp": {"host": "127.0.0.1", "port": self.port, "security": "none"},
            "maildir": {"path": "Maildir"},
        }
        self.config.write_text(example_config(overrides), encoding="utf-8")
        return self.config

    def rapport(self, *args: str) -> str:
        """Run `rapport ARGS` in this process; its output, or DemoError if it failed."""
        from rapport.cli import main

        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = main(["--config", str(self.config), *args])
        if code != 0:
            raise DemoError(f"demo: `rapport {' '.join(args)}` failed (exit {code})")
        return out.getvalue()

    def play(self) -> None:
        people = self.set_up()
        for day in range(WEEKS * 7):
            for when, data in people.arrivals(day):
                self.arrive(when, data)
            self.cycle(at(day))
            people.read(day, self.delivered(people))
            if day % 7 == 6:
                self.tell(day // 7 + 1)
        self.finish()

    def set_up(self) -> People:
        """The example program, loaded as a coordinator would, and its simulated people."""
        self.rapport("db", "upgrade")
        for kind in ("participants", "coordinators"):
            self.rapport("import", kind, str(EXAMPLES / f"{kind}.csv"))
        end = str(START + timedelta(days=WEEKS * 7 - 1))
        self.rapport("round", "create", ROUND, "--start", str(START), "--end", end)
        self.rapport("import", "partnerships", str(EXAMPLES / "partnerships.csv"))
        self.rapport("import", "topics", str(EXAMPLES / "topics"), "--round", ROUND)
        with self.engine.connect() as connection:
            people, partners = _roster(connection)
            languages = sorted(set(connection.execute(select(TOPIC_TEXTS.c.language)).scalars()))
            topics = len(connection.execute(select(TOPICS.c.id)).all())
        program = self.settings.program
        print(demo_story.intro(program.name, ROUND, START, at(WEEKS * 7 - 1).date()))
        print(demo_story.roster(people, partners, topics, languages))
        print(
            textwrap.fill(
                f"Mail goes to an SMTP server inside this process (127.0.0.1:{self.port}) and"
                f" replies arrive in {self.maildir}/. Each simulated day at 23:00 UTC: read the"
                " inbox, send what is due, judge health and nudge, weekly reports.",
                width=demo_story.WIDTH,
            )
        )
        return People(
            people=people,
            partners=partners,
            start=START,
            log_address=program.reply_address.replace("{key}", "log"),
            inbox=program.from_address,
        )

    def cycle(self, now: datetime) -> None:
        """One simulated day of `rapport serve`: its jobs in order, at ``now``."""
        settings, secret = self.settings, self.secret
        polled = poll.poll(self.engine, settings=settings, secret=secret, now=now)
        if polled.errors:
            raise DemoError(f"demo: reading the inbox failed: {polled.summary()}")
        watch.plan_concern_alerts(self.engine, settings=settings, secret=secret, now=now)
        self.deliver(now)
        watch.plan_nudges(self.engine, settings=settings, secret=secret, now=now, send=False)
        watch.plan_reports(self.engine, settings=settings, secret=secret, now=now, send=False)
        self.deliver(now)

    def deliver(self, now: datetime) -> None:
        sent = jobs.send(
            self.engine, settings=self.settings, secret=self.secret, now=now, composer=self.composer
        )
        if not sent.ok or sent.delivery.failed:
            raise DemoError(f"demo: sending failed on {now:%Y-%m-%d}: {sent.summary()}")

    # --- the world --------------------------------------------------------------------------

    def arrive(self, when: datetime, data: bytes) -> None:
        """File one message in the Maildir as arriving at ``when`` (its mtime).

        Maildir names start with the delivery time; the demo's are in the real past and grow
        with each arrival, so the reader takes them as settled and in order.
        """
        self.serial += 1
        path = self.maildir / "new" / f"{1_700_000_000 + self.serial}.M{self.serial}P1Q1.demo"
        path.write_bytes(data)
        os.utime(path, (when.timestamp(), when.timestamp()))

    def delivered(self, people: People) -> list[Delivered]:
        """What the SMTP server received for participants since the last call, and what it was."""
        parsed = []
        for recipient, data in self.mailbox.take():
            person = people.people.get(recipient)
            message = message_from_bytes(data, policy=policy.default)
            if person is not None and isinstance(message, EmailMessage):
                parsed.append((person, message))
        if not parsed:
            return []
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(OUTBOX.c.message_id, OUTBOX.c.kind, TOPICS.c.seq)
                .outerjoin(TOPICS, TOPICS.c.id == OUTBOX.c.topic_id)
                .where(OUTBOX.c.message_id.in_([str(m["Message-ID"]) for _, m in parsed]))
            ).all()
        what = {r.message_id: (r.kind, r.seq) for r in rows}
        return [
            Delivered(person, *what.get(str(message["Message-ID"]), ("other", None)), message)
            for person, message in sorted(parsed, key=lambda pm: pm[0].email)
        ]

    # --- the story --------------------------------------------------------------------------

    def tell(self, week: int) -> None:
        """Print week ``week``'s story (1-based), as of that Sunday's cycle."""
        first, last = 7 * (week - 1), 7 * week - 1
        health = [
            json.loads(line)
            for line in self.rapport("health", "--json", "--now", at(last).isoformat()).split("\n")
            if line
        ]
        with self.engine.connect() as connection:
            lines = demo_story.week(
                connection,
                number=week,
                after=at(first - 1),
                until=at(last),
                topic=(week + 1) // 2 if week % 2 else None,
                health=health,
            )
        print("\n" + "\n".join(lines))

    def finish(self) -> None:
        report = self.folder / "report.html"
        with self.engine.connect() as connection:
            lead = demo_story.program_coordinator(connection)
        now = at(WEEKS * 7 - 1).isoformat()
        self.rapport("report", "--html", str(report), "--coordinator", lead, "--now", now)
        with self.engine.connect() as connection:
            ending = demo_story.ending(connection, self.mailbox.count)
        print(f"\n{ending}")
        print(f"Every message the server received is an .eml file in {self.folder / 'mail'}/.")
        print(f"The program coordinator's last weekly report is in {report}.")


def _roster(connection: Connection) -> tuple[dict[str, Person], dict[str, list[str]]]:
    """The participants by address, and each one's partners, as imported."""
    people = {
        r.email: Person(r.email, r.name, r.country, r.timezone, r.language)
        for r in connection.execute(select(PARTICIPANTS))
    }
    teams: dict[int, list[str]] = {}
    for team, email in connection.execute(
        select(MEMBERSHIPS.c.partnership_id, PARTICIPANTS.c.email).join(
            PARTICIPANTS, PARTICIPANTS.c.id == MEMBERSHIPS.c.participant_id
        )
    ):
        teams.setdefault(team, []).append(email)
    partners = {e: [o for o in team if o != e] for team in teams.values() for e in team}
    return people, partners
