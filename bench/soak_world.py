"""The soak test's simulated world: the network's people, their scripts, the inbox and the sink.

bench/soak.py drives the clock and the faults; this module holds what it drives against, so the
harness reads as a loop and the people's behaviour reads as a table:

- :func:`roster` makes N participants in N/2 pairs over up to 100 countries (each with its first
  IANA zone from the system's zone.tab, so zones on both sides of the equator change to and from
  summer time during the round) and a program coordinator plus ten country coordinators;
- :data:`SCRIPTS` says how each kind of pair behaves and what its final health must be; the pair's
  index picks its script, so the harness knows every pair's expected state without asking Rapport;
- :class:`Inbox` writes replies, auto-replies and bounces into a Maildir the way a delivery agent
  does: the file name carries a real time in the past (so the reader takes it as settled), the
  mtime the simulated arrival time (the message's INTERNALDATE);
- :class:`FaultySink` is the scriptable aiosmtpd handler from the test suite with random faults
  (421 and 451 replies, dropped connections) on a share of commands, keeping only what accounting
  needs (Message-ID, recipients, Reply-To) of every accepted message so memory stays flat.
"""

from __future__ import annotations

import email.utils
import os
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from email.message import EmailMessage
from pathlib import Path

from tests.smtp_server import ScriptedHandler, _Rule

ZONE_TAB = Path("/usr/share/zoneinfo/zone.tab")
LANGUAGES = ("en", "es", "fr")
COORDINATOR_GROUPS = 10  # country coordinators, each for a tenth of the countries
DST_ZONES = {
    "US": "America/New_York",  # summer time from 14 March 2027
    "DE": "Europe/Berlin",  # from 28 March
    "AU": "Australia/Sydney",  # winter time from 4 April
    "CL": "America/Santiago",  # winter time from 4 April
}


@dataclass(frozen=True)
class Script:
    """How a kind of pair answers each topic, and the health states it must end in."""

    name: str
    expected: frozenset[str]


SCRIPTS = (
    Script("thriving", frozenset({"healthy"})),  # both check in '1' to every topic
    Script("silent_partner", frozenset({"one_sided", "at_risk"})),  # A writes, B never does
    Script("bounced", frozenset({"at_risk"})),  # B's mail bounces after topic 1; A writes
    Script("on_leave", frozenset({"one_sided", "at_risk"})),  # A only auto-replies; B writes
    Script("fell_silent", frozenset({"quiet", "at_risk"})),  # both '1' to topics 1-2, then nothing
)


@dataclass(frozen=True)
class Person:
    email: str
    name: str
    country: str
    zone: str
    language: str
    pair: int  # the pair's index; SCRIPTS[pair % len(SCRIPTS)] is its script
    side: str  # "a" or "b"

    @property
    def script(self) -> Script:
        return SCRIPTS[self.pair % len(SCRIPTS)]


def countries(limit: int = 100) -> list[tuple[str, str]]:
    """Up to ``limit`` (country code, zone) pairs from zone.tab, spread over the world.

    Zones that change their clocks during a March-June round on both hemispheres are always in
    (New York, Berlin, Sydney, Santiago); the rest are every k-th code of zone.tab in order, so
    the sample mixes continents rather than taking the first letters of the alphabet."""
    first: dict[str, str] = {}
    for line in ZONE_TAB.read_text(encoding="utf-8").splitlines():
        if line.startswith("#") or not line.strip():
            continue
        code, _, zone = line.split("\t")[:3]
        first.setdefault(code, zone)
    chosen = dict(DST_ZONES)
    others = sorted(code for code in first if code not in chosen)
    step = max(len(others) / max(limit - len(chosen), 1), 1.0)
    for i in range(limit - len(chosen)):
        if int(i * step) < len(others):
            code = others[int(i * step)]
            chosen[code] = first[code]
    return sorted(chosen.items())


def roster(count: int) -> tuple[list[Person], list[tuple[str, str, str, str]]]:
    """``count`` participants in pairs, and the coordinators as (email, name, role, countries)."""
    places = countries()
    people = []
    for i in range(count - count % 2):
        code, zone = places[(i // 2 + i % 2 * 37) % len(places)]
        people.append(
            Person(
                email=f"p{i}@example.org",
                name=f"Person {i}",
                country=code,
                zone=zone,
                language=LANGUAGES[i % len(LANGUAGES)],
                pair=i // 2,
                side="ab"[i % 2],
            )
        )
    codes = [code for code, _ in places]
    coordinators = [("lead@example.org", "Lena Lead", "program", "")]
    for g in range(COORDINATOR_GROUPS):
        group = " ".join(codes[g::COORDINATOR_GROUPS])
        coordinators.append((f"cc{g}@example.org", f"Country Coordinator {g}", "country", group))
    return people, coordinators


_MESSAGE_ID = re.compile(rb"^Message-ID:\s*(<[^>\r\n]+>)", re.I | re.M)
_REPLY_TO = re.compile(rb"^Reply-To:\s*([^\r\n]+)", re.I | re.M)
_HEADER_END = re.compile(rb"\r?\n\r?\n")


@dataclass(frozen=True)
class Accepted:
    """One message the sink accepted: what accounting and the scripted people need of it."""

    message_id: str
    recipient: str
    reply_to: str


@dataclass
class FaultySink(ScriptedHandler):
    """The suite's scripted handler, failing ``rate`` of commands at random.

    A fault is a ``421`` (the server then closes the connection), a ``451`` or, one time in
    five, the connection dropped without a reply.  A drop after the end of DATA leaves the sender
    unsure whether the message arrived: the sink counts it as not accepted (``dropped``)."""

    rate: float = 0.10
    seed: int = 0
    faults: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        super().__init__()
        self.rng = random.Random(self.seed)
        self.enabled = True

    def _take(self, stage: str, recipients: tuple[str, ...] = ()) -> _Rule | None:
        if not self.enabled or self.rng.random() >= self.rate:
            return None
        pick = self.rng.random()
        if pick < 0.4:
            reply: str | None = "421 4.3.2 service shutting down, try later"
        elif pick < 0.8:
            reply = "451 4.3.0 local error in processing, try later"
        else:
            reply = None
        self.faults[f"{stage}:{reply[:3] if reply else 'drop'}"] += 1
        return _Rule(stage, reply, None, 1)

    def drain(self) -> list[Accepted]:
        """What was accepted since the last drain; forgets the message bodies."""
        taken, self.messages = self.messages, []
        out = []
        for message in taken:
            if message.outcome != "accepted":
                self.faults[f"not accepted: {message.outcome}"] += 1
                continue
            head = message.data[: _end_of_header(message.data)]
            mid = _MESSAGE_ID.search(head)
            reply = _REPLY_TO.search(head)
            for recipient in message.recipients:
                out.append(
                    Accepted(
                        mid.group(1).decode() if mid else "",
                        recipient.lower(),
                        reply.group(1).decode().strip() if reply else "",
                    )
                )
        return out


def _end_of_header(data: bytes) -> int:
    end = _HEADER_END.search(data)
    return end.start() if end else len(data)


class Inbox:
    """A Maildir the harness delivers to; counts every message it writes, by Message-ID."""

    def __init__(self, path: Path) -> None:
        self.path = path
        for sub in ("new", "cur", "tmp"):
            (path / sub).mkdir(parents=True, exist_ok=True)
        self.serial = 0
        self.written: Counter[str] = Counter()  # kind -> messages

    def deliver(self, message: EmailMessage | bytes, kind: str, arrival: datetime) -> None:
        """Write ``message`` into new/ (through tmp/, as delivery agents do), arriving then.

        It gets a unique Message-ID and a Date of ``arrival``."""
        self.serial += 1
        n = self.serial
        name = f"{1_700_000_000 + n}.M{n % 1_000_000}P{os.getpid()}Q{n}.soak"
        head = (
            f"Message-ID: <soak-{n}@mail.example.net>\r\n"
            f"Date: {email.utils.format_datetime(arrival)}\r\n"
        ).encode()
        body = message if isinstance(message, bytes) else message.as_bytes()
        tmp = self.path / "tmp" / name
        tmp.write_bytes(head + body)
        stamp = arrival.timestamp()
        os.utime(tmp, (stamp, stamp))
        tmp.rename(self.path / "new" / name)
        self.written[kind] += 1

    def change_uidvalidity(self) -> None:
        """Give new/ a new inode (what Rapport takes as UIDVALIDITY): the folder is rebuilt."""
        new, rebuilt = self.path / "new", self.path / "new.rebuilt"
        rebuilt.mkdir()
        for entry in new.iterdir():
            entry.rename(rebuilt / entry.name)
        new.rmdir()
        rebuilt.rename(new)


def reply(person: Person, topic: Accepted, text: str) -> EmailMessage:
    """A human answer to a topic email, through its Reply-To and in its thread."""
    message = EmailMessage()
    message["From"] = f"{person.name} <{person.email}>"
    message["To"] = topic.reply_to
    message["Subject"] = "Re: this fortnight's topic"
    message["In-Reply-To"] = topic.message_id
    message["References"] = topic.message_id
    message.set_content(text)
    return message


def auto_reply(person: Person, topic: Accepted) -> EmailMessage:
    """An out-of-office answer (RFC 3834), which must never count as contact."""
    message = EmailMessage()
    message["From"] = f"{person.name} <{person.email}>"
    message["To"] = topic.reply_to
    message["Subject"] = "Automatic reply: Out of office"
    message["Auto-Submitted"] = "auto-replied"
    message["In-Reply-To"] = topic.message_id
    message.set_content(f"I am on leave and will read my mail when I am back. {person.name}\n")
    return message


def bounce(address: str) -> bytes:
    """A delivery status notification (RFC 3464): ``address`` does not exist (5.1.1)."""
    return (
        b"From: MAILER-DAEMON@mx.example.net\r\nTo: coordinators@example.org\r\n"
        b"Subject: Undelivered Mail Returned to Sender\r\n"
        b"Auto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        b"--B\r\nContent-Type: text/plain\r\n\r\nThe mail system could not deliver it.\r\n"
        b"--B\r\nContent-Type: message/delivery-status\r\n\r\n"
        b"Reporting-MTA: dns; mx.example.net\r\n\r\n"
        + f"Final-Recipient: rfc822; {address}\r\n".encode()
        + b"Action: failed\r\nStatus: 5.1.1\r\n"
        b"Diagnostic-Code: smtp; 550 5.1.1 user unknown\r\n\r\n--B--\r\n"
    )
