"""A 16-week round played day by day over the real pipeline, with the clock given by ``--now``.

Ten participants in five partnerships, two coordinators, eight fortnightly topics; outgoing mail
goes to a real SMTP server (aiosmtpd on 127.0.0.1), replies arrive in a Maildir inbox, stamped
with the simulated day.  Every simulated day at 23:00 UTC runs what `rapport serve` runs: read the
inbox, send what is due, the daily health snapshot and nudges, and the weekly reports.

The pairs:
- P1 Anna (SE) & Bo (KE) thrive: both answer every topic with a check-in 1;
- P2 Carla (ES) writes to every topic, Dev (IN) never answers; Carla checks in 2 in week 4;
- P3 Emma (FR) & Femi (NG) check in once, fall quiet, are nudged, and Emma answers the nudge;
  from then on they answer every topic;
- P4 Gus (AU) & Hana (JP): mail to Hana bounces the day after the first topic;
- P5 Ines (MX) & Jack (US) answer every topic until Ines writes to the coordinators that she is
  uncomfortable (in Spanish).

Week by week the test asserts each pair's state and reasons, the nudges sent (never twice, never
more than one a week to anyone, never to a bouncing address) and the weekly reports' content for
the program coordinator and for the country coordinator of Spain and Mexico.
"""

from __future__ import annotations

import email
import json
import os
from collections import Counter, defaultdict
from collections.abc import Callable
from datetime import date, datetime, timedelta
from email import policy
from email.message import EmailMessage
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Project, Result
from tests.smtp_server import SmtpTestServer

Cli = Callable[..., Result]
pytestmark = pytest.mark.databases("sqlite", "postgresql")
START = date(2027, 3, 1)  # a Monday
DAYS = 16 * 7

PEOPLE = [
    # email, name, country, zone, language
    ("anna@example.org", "Anna Berg", "SE", "Europe/Stockholm", "en"),
    ("bo@example.org", "Bo Mwangi", "KE", "Africa/Nairobi", "en"),
    ("carla@example.org", "Carla Ruiz", "ES", "Europe/Madrid", "es"),
    ("dev@example.org", "Dev Rao", "IN", "Asia/Kolkata", "en"),
    ("emma@example.org", "Emma Martin", "FR", "Europe/Paris", "fr"),
    ("femi@example.org", "Femi Ade", "NG", "Africa/Lagos", "en"),
    ("gus@example.org", "Gus Lee", "AU", "Australia/Sydney", "en"),
    ("hana@example.org", "Hana Sato", "JP", "Asia/Tokyo", "en"),
    ("ines@example.org", "Ines Vega", "MX", "America/Mexico_City", "es"),
    ("jack@example.org", "Jack Hill", "US", "America/Chicago", "en"),
]
PAIRS = {
    "P1": ("anna@example.org", "bo@example.org"),
    "P2": ("carla@example.org", "dev@example.org"),
    "P3": ("emma@example.org", "femi@example.org"),
    "P4": ("gus@example.org", "hana@example.org"),
    "P5": ("ines@example.org", "jack@example.org"),
}
COORDINATORS = (
    "email,name,role,countries,timezone\n"
    "lead@example.org,Lena Lead,program,,Europe/London\n"
    "hispano@example.org,Hugo Sol,country,ES MX,Europe/Madrid\n"
)
CONCERN_DAY = 44  # Wednesday 14 April


class Round:
    """The simulated world: the project, its inbox, the SMTP sink and the scripted people."""

    def __init__(self, project: Project, cli: Cli, smtp: SmtpTestServer) -> None:
        self.project, self.cli, self.smtp = project, cli, smtp
        self.maildir = project.dir / "Maildir"
        for sub in ("new", "cur", "tmp"):
            (self.maildir / sub).mkdir(parents=True)
        self.serial = 0
        self.emma_answered_nudge = False
        self.day = 0

    def run(self, *args: str) -> str:
        result = self.cli("--config", self.project.config, *args)
        assert result.code == 0, (args, result.err)
        return result.out

    def now(self, hour: int = 23) -> str:
        return f"{START + timedelta(days=self.day)}T{hour:02d}:00:00+00:00"

    def rows(self, sql: str, *params: object) -> list[dict[str, Any]]:
        return self.project.rows(sql, *params)

    def arrive(self, data: bytes) -> None:
        """A message lands in the inbox at noon UTC of the current day."""
        self.serial += 1
        path = self.maildir / "new" / f"{1_700_000_000 + self.serial}.M{self.serial}P1Q1.test"
        path.write_bytes(data)
        when = datetime.fromisoformat(self.now(12)).timestamp()
        os.utime(path, (when, when))

    def reply(self, sender: str, row: dict[str, Any], text: str) -> None:
        """``sender`` answers the outbox message ``row`` through its Reply-To."""
        message = EmailMessage()
        message["From"] = sender
        message["To"] = f"coordinators+{row['reply_key']}@example.org"
        message["Subject"] = "Re: your message"
        message["Message-ID"] = f"<r{self.serial}.{self.day}@mail.example.net>"
        message["In-Reply-To"] = row["message_id"]
        message["Date"] = email.utils.format_datetime(datetime.fromisoformat(self.now(12)))
        message.set_content(text)
        self.arrive(message.as_bytes())

    def topic_row(self, address: str, seq: int) -> dict[str, Any]:
        [row] = self.rows(
            "SELECT o.* FROM outbox o JOIN participant p ON p.id = o.participant_id"
            " WHERE p.email = ? AND o.key LIKE ?",
            address,
            f"topic/spring/{seq}/%",
        )
        assert row["status"] == "sent", row
        return row

    def script(self) -> None:
        """Today's inbound mail."""
        day = self.day
        topic = day // 14 + 1  # the topic of this fortnight (sent on its first day)
        offset = day % 14
        if offset == 1:
            self.reply("anna@example.org", self.topic_row("anna@example.org", topic), "1\n")
            self.reply(
                "carla@example.org",
                self.topic_row("carla@example.org", topic),
                "Hola Dev, te escribí sobre este tema. ¿Qué opinas?\n",
            )
            if day < CONCERN_DAY:
                self.reply("ines@example.org", self.topic_row("ines@example.org", topic), "1\n")
            if topic == 1 or (topic >= 4 and self.emma_answered_nudge):
                self.reply("emma@example.org", self.topic_row("emma@example.org", topic), "1\n")
        if offset == 2:
            self.reply("bo@example.org", self.topic_row("bo@example.org", topic), "1\n")
            if topic == 1:
                self.reply("femi@example.org", self.topic_row("femi@example.org", topic), "1\n")
        if day == 1:
            self.arrive(_dsn("hana@example.org", self.serial))
        if day == 22:
            self.reply("carla@example.org", self.topic_row("carla@example.org", 2), "2\n")
        if day == CONCERN_DAY:
            message = EmailMessage()
            message["From"] = "Ines Vega <ines@example.org>"
            message["To"] = "coordinators@example.org"
            message["Subject"] = "Mi compañero"
            message["Message-ID"] = "<concern-1@mail.example.net>"
            message["Date"] = email.utils.format_datetime(datetime.fromisoformat(self.now(12)))
            message.set_content(
                "Hola,\n\nMe siento incómoda con los mensajes de mi compañero.\n\nInes\n"
            )
            self.arrive(message.as_bytes())
        if not self.emma_answered_nudge:
            sent = self.rows(
                "SELECT * FROM outbox WHERE kind = 'nudge' AND to_address = 'emma@example.org'"
                " AND status = 'sent'"
            )
            if sent:
                self.reply("emma@example.org", sent[0], "1\n\nPerdón, we were busy. Back on it!\n")
                self.emma_answered_nudge = True

    def cycle(self) -> None:
        """What the service does each day, at 23:00 UTC."""
        now = self.now()
        self.run("inbox", "poll", "--now", now)
        self.run("send", "--now", now)
        self.run("nudge", "--now", now)
        self.run("report", "--now", now)

    def health(self) -> dict[str, dict[str, Any]]:
        out = self.run("health", "--json", "--now", self.now())
        rows = [json.loads(line) for line in out.splitlines()]
        by_first = {r["members"][0]["email"]: r for r in rows}
        return {name: by_first[a] for name, (a, _) in PAIRS.items()}

    def received(self, address: str) -> list[email.message.EmailMessage]:
        return [
            email.message_from_bytes(m.data, policy=policy.default)  # type: ignore[misc]
            for m in self.smtp.handler.accepted
            if address in m.recipients
        ]


def _dsn(address: str, serial: int) -> bytes:
    return (
        b"From: MAILER-DAEMON@mx.example.net\r\nTo: coordinators@example.org\r\n"
        b"Subject: Undelivered Mail Returned to Sender\r\n"
        + f"Message-ID: <dsn-{serial}@mx.example.net>\r\n".encode()
        + b"Auto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        b"--B\r\nContent-Type: text/plain\r\n\r\nThe mail system could not deliver it.\r\n"
        b"--B\r\nContent-Type: message/delivery-status\r\n\r\n"
        b"Reporting-MTA: dns; mx.example.net\r\n\r\n"
        + f"Final-Recipient: rfc822; {address}\r\n".encode()
        + b"Action: failed\r\nStatus: 5.1.1\r\n"
        b"Diagnostic-Code: smtp; 550 5.1.1 user unknown\r\n\r\n--B--\r\n"
    )


def _setup(project: Project, cli: Cli, smtp: SmtpTestServer) -> Round:
    world = Round(project, cli, smtp)
    project.write_config(f'[maildir]\npath = "{world.maildir}"\n', smtp_port=smtp.port)
    folder = project.dir
    (folder / "participants.csv").write_text(
        "email,name,country,timezone,language\n" + "".join(",".join(p) + "\n" for p in PEOPLE),
        encoding="utf-8",
    )
    (folder / "partnerships.csv").write_text(
        "round,member_a,member_b\n" + "".join(f"spring,{a},{b}\n" for a, b in PAIRS.values()),
        encoding="utf-8",
    )
    (folder / "coordinators.csv").write_text(COORDINATORS, encoding="utf-8")
    topics = folder / "topics"
    topics.mkdir()
    for n in range(1, 9):
        (topics / f"t{n}.md").write_text(
            f'+++\ntitle = "Topic number {n}"\norder = {n}\n+++\nLet us talk about idea {n}.\n',
            encoding="utf-8",
        )
    world.run("import", "participants", str(folder / "participants.csv"))
    world.run("import", "coordinators", str(folder / "coordinators.csv"))
    world.run("round", "create", "spring", "--start", str(START), "--end", "2027-06-20")
    world.run("import", "partnerships", str(folder / "partnerships.csv"))
    world.run("import", "topics", str(topics), "--round", "spring")
    return world


# The expected state of each pair at the end of some weeks (week n ends on day 7n - 1).
EXPECTED: dict[int, dict[str, str]] = {
    1: {"P1": "healthy", "P2": "starting", "P3": "healthy", "P4": "at_risk", "P5": "healthy"},
    3: {"P1": "healthy", "P2": "one_sided", "P3": "healthy", "P4": "at_risk", "P5": "healthy"},
    5: {"P1": "healthy", "P2": "one_sided", "P3": "healthy", "P4": "at_risk", "P5": "healthy"},
    8: {"P1": "healthy", "P2": "at_risk", "P3": "healthy", "P4": "at_risk", "P5": "at_risk"},
    12: {"P1": "healthy", "P2": "at_risk", "P3": "healthy", "P4": "at_risk", "P5": "at_risk"},
    16: {"P1": "healthy", "P2": "at_risk", "P3": "healthy", "P4": "at_risk", "P5": "at_risk"},
}


def test_a_sixteen_week_round(
    project: Project, cli: Cli, smtp_server: SmtpTestServer, tmp_path: Path
) -> None:
    world = _setup(project, cli, smtp_server)
    seen_states: dict[str, list[str]] = defaultdict(list)
    for day in range(DAYS):
        world.day = day
        world.script()
        world.cycle()
        health = world.health()
        for name, row in health.items():
            seen_states[name].append(row["state"])
        week, last_day = divmod(day + 1, 7)
        if last_day == 0 and week in EXPECTED:
            states = {name: row["state"] for name, row in health.items()}
            assert states == EXPECTED[week], f"week {week}: {states}"
            _check_reasons(week, health)
        if day == 31:
            # P3 went quiet on day 30: both members got one friendly note, in their language.
            assert health["P3"]["state"] == "quiet"
            [note] = world.received("emma@example.org")[-1:]
            assert note["Content-Language"] == "fr"
            assert "Femi" in note.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        if day == CONCERN_DAY:
            # The concern is reported the same day, to both coordinators of Mexico's member.
            alerts = world.rows("SELECT * FROM outbox WHERE kind = 'alert'")
            assert sorted(a["to_address"] for a in alerts) == [
                "hispano@example.org",
                "lead@example.org",
            ]
            assert {a["status"] for a in alerts} == {"sent"}
            assert "concern" in " ".join(health["P5"]["reasons"]).lower()

    # P3 recovered after the nudge: quiet for a while, then healthy again.
    p3 = seen_states["P3"]
    assert "quiet" in p3 and p3[-1] == "healthy"

    _check_nudges(world)
    _check_topics(world)
    _check_reports(world)
    html = tmp_path / "lead.html"
    world.run(
        "report", "--html", str(html), "--coordinator", "lead@example.org", "--now", world.now()
    )
    assert "Carla" in html.read_text(encoding="utf-8")


def _check_reasons(week: int, health: dict[str, dict[str, Any]]) -> None:
    reasons = {name: " ".join(row["reasons"]) for name, row in health.items()}
    if week >= 1:
        assert "Hana (JP)" in reasons["P4"] and "bounces" in reasons["P4"], reasons["P4"]
    if week >= 3:
        assert "Dev (IN)" in reasons["P2"], reasons["P2"]
    if week >= 5:
        assert "Carla (ES) said once they wrote without an answer (check-in 2)" in reasons["P2"], (
            reasons["P2"]
        )
    if week >= 8:
        assert "oncern" in reasons["P5"], reasons["P5"]


def _check_nudges(world: Round) -> None:
    nudges = world.rows("SELECT * FROM outbox WHERE kind IN ('nudge', 'alert') ORDER BY id")
    keys = [n["key"] for n in nudges]
    assert len(keys) == len(set(keys))
    by_person: dict[str, list[datetime]] = defaultdict(list)
    templates: Counter[tuple[str, str]] = Counter()
    for n in nudges:
        payload = json.loads(n["payload"])
        templates[(n["to_address"], payload["template"])] += 1
        if n["participant_id"] is not None and n["status"] == "sent":
            by_person[n["to_address"]].append(datetime.fromisoformat(n["sent_at"]))
    for address, times in by_person.items():
        gaps = [b - a for a, b in pairwise(times)]
        assert all(gap >= timedelta(days=7) for gap in gaps), (address, times)
    # Never a nudge to the bouncing address; the silent member got a careful note once; the
    # quiet pair got one friendly note each; the thriving pair got nothing.
    assert not [n for n in nudges if n["to_address"] == "hana@example.org"]
    assert templates[("dev@example.org", "nudge_silent")] == 1
    assert templates[("emma@example.org", "nudge_pair")] == 1
    assert templates[("femi@example.org", "nudge_pair")] == 1
    for quiet in ("anna@example.org", "bo@example.org"):
        assert not [n for n in nudges if n["to_address"] == quiet]
    # The coordinators heard about the bounce, the one-sided pair and the concern.
    told = {
        n["partnership_id"]
        for n in nudges
        if n["to_address"] == "lead@example.org" and n["status"] == "sent"
    }
    ids = _partnership_ids(world)
    assert {ids["P2"], ids["P4"], ids["P5"]} <= told
    assert ids["P1"] not in told


def _partnership_ids(world: Round) -> dict[str, int]:
    out = {}
    for name, (a, _) in PAIRS.items():
        [row] = world.rows(
            "SELECT m.partnership_id FROM membership m JOIN participant p"
            " ON p.id = m.participant_id WHERE p.email = ?",
            a,
        )
        out[name] = row["partnership_id"]
    return out


def _check_topics(world: Round) -> None:
    """Every topic reached every reachable participant exactly once."""
    topics = world.rows("SELECT * FROM outbox WHERE kind = 'topic'")
    keys = Counter(t["key"] for t in topics)
    assert max(keys.values()) == 1
    sent = Counter(t["to_address"] for t in topics if t["status"] == "sent")
    for address, *_ in PEOPLE:
        expected = 1 if address == "hana@example.org" else 8
        assert sent[address] == expected, (address, sent[address])
    accepted = Counter(r for m in world.smtp.handler.accepted for r in m.recipients)
    assert accepted["hana@example.org"] == 1


def _check_reports(world: Round) -> None:
    reports = world.rows("SELECT * FROM outbox WHERE kind = 'report' ORDER BY id")
    weeks: dict[str, list[str]] = defaultdict(list)
    for r in reports:
        assert r["status"] == "sent"
        weeks[r["to_address"]].append(r["key"].rsplit("/", 1)[1])
    for address in ("lead@example.org", "hispano@example.org"):
        assert len(weeks[address]) == len(set(weeks[address])) == 16, weeks[address]
    # The report of the ninth Monday (26 April): the program coordinator sees every pair that
    # needs them; the country coordinator only those with a member in Spain or Mexico.
    lead = _text_of(world, "lead@example.org", "2027-W17")
    hispano = _text_of(world, "hispano@example.org", "2027-W17")
    for name in ("Carla", "Dev", "Gus", "Hana", "Ines"):
        assert name in lead, name
    assert "Carla" in hispano and "Ines" in hispano
    assert "Hana" not in hispano and "Anna" not in hispano and "Anna" not in lead


def _text_of(world: Round, address: str, week: str) -> str:
    [row] = world.rows(
        "SELECT * FROM outbox WHERE kind = 'report' AND to_address = ? AND key LIKE ?",
        address,
        f"%/{week}",
    )
    for message in world.received(address):
        if message["Message-ID"] == row["message_id"]:
            body = message.get_body(("plain",))
            assert body is not None
            return str(body.get_content())
    raise AssertionError(f"no report for {address} in {week}")
