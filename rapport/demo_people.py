"""The simulated participants of `rapport demo`: who behaves how, and the mail they write back.

The demo needs a round in which things happen for a reason a coordinator would recognise, so the
people here follow a script, with seeded randomness only for the day and wording of ordinary
replies: the same run gives the same story.  Most partnerships thrive; a handful are there to show
what Rapport notices:

- one address bounces: a delivery status notification (RFC 3464) arrives the day after the
  first topic, and the address is suppressed;
- one member of the triad is away around the third topic: her out-of-office answers it;
- one partnership is one-sided: one member writes to every topic and checks in ``2`` in
  Spanish, the other never answers;
- one pair answers the first topic, falls quiet, and recovers after the friendly nudge;
- one member checks in ``3`` (not in touch yet) to the first topic, in French.

Everyone else answers each topic within a few days, in their language: a check-in through the
topic's Reply-To (with the reply key) quoting the topic, or mail to their partner that copies the
log address.  This module only writes messages; rapport/demo.py files them into the Maildir.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, formataddr
from zoneinfo import ZoneInfo

BOUNCING = "litia.vakaloloma@example.org"
AWAY = "isabelle.tremblay@example.org"
WRITER, SILENT = "sofia.benitez@example.org", "carmen.delgado@example.org"
QUIET = ("amelie.rousseau@example.org", "nadege.mbarga@example.org")
NOT_YET = "camille.lefevre@example.net"
AWAY_DAYS = (27, 42)  # her out-of-office is on from day 27 to day 41 (11 April)

# Check-in answers people actually type, by language: the bare digit or a phrase.
_CHECKINS: dict[str, dict[int, tuple[str, ...]]] = {
    "en": {
        1: ("1", "Yes, we are in touch.", "1 - we talked on a call last week.", "We met!"),
        2: ("2 - I wrote but have not heard back yet.",),
        3: ("3", "Not yet, I will write this week."),
    },
    "fr": {
        1: ("1", "Oui, nous sommes en contact.", "Nous avons échangé cette semaine."),
        2: ("2 - j'ai écrit, pas encore de réponse.",),
        3: ("3", "Pas encore, je lui écris cette semaine."),
    },
    "es": {
        1: ("1", "Sí, ya estamos en contacto.", "Ya hablamos por videollamada."),
        2: ("2 - le escribí pero no me ha respondido.",),
        3: ("3", "Todavía no, le escribo esta semana."),
    },
}
_NOTES = {
    "en": (
        "Lovely topic. My partner and I compared notes over a call.",
        "We are writing back and forth; this one made us laugh.",
        "Our time zones are far apart, but email works well for us.",
    ),
    "fr": (
        "Très beau thème, nous en avons discuté longuement.",
        "Nous nous écrivons régulièrement, merci pour ces sujets.",
    ),
    "es": (
        "Muy buen tema, lo comentamos por videollamada.",
        "Nos escribimos a menudo; gracias por los temas.",
    ),
}
_TO_PARTNER = {
    "en": "Hi {partner},\n\nHere are my thoughts on this fortnight's topic. {note}\n\n{me}\n",
    "fr": "Bonjour {partner},\n\nVoici mes idées sur le thème de la quinzaine. {note}\n\n{me}\n",
    "es": "Hola {partner}:\n\nTe cuento qué pienso del tema de esta quincena. {note}\n\n{me}\n",
}
_ABOUT = {"en": "About topic {n}", "fr": "À propos du thème {n}", "es": "Sobre el tema {n}"}
_ATTRIBUTION = {
    "en": "On {date}, {sender} wrote:",
    "fr": "Le {date}, {sender} a écrit :",
    "es": "El {date}, {sender} escribió:",
}
_AWAY = {
    "subject": "Réponse automatique : Absente jusqu'au 12 avril",
    "body": (
        "Bonjour,\n\nJe suis absente du bureau jusqu'au 12 avril, avec un accès limité à mes"
        " courriels.\nPour toute urgence, écrivez à la bibliothèque.\n\nIsabelle Tremblay\n"
    ),
}
_SORRY = (
    "Oui, nous sommes en contact !\n\nPardon pour ce long silence : la rentrée a été chargée."
    " Nous nous sommes écrit hier et reprenons les thèmes."
)
_WRITER_NOTE = "Le escribí a Carmen sobre este tema; espero con interés lo que opine."


@dataclass(frozen=True)
class Person:
    """A participant as the example roster has them."""

    email: str
    name: str
    country: str
    zone: str
    language: str

    @property
    def first(self) -> str:
        return self.name.split()[0]

    @property
    def lang(self) -> str:
        """The language they write in: their own if the demo speaks it, else English."""
        base = self.language.split("-")[0]
        return base if base in _CHECKINS else "en"


@dataclass(frozen=True)
class Delivered:
    """A message the embedded server delivered to a participant, and what Rapport sent it as."""

    person: Person
    kind: str  # topic | nudge
    topic: int | None  # the topic's number, for a topic email
    message: EmailMessage


@dataclass
class People:
    """The simulated participants: they read what was delivered and answer on later days.

    ``start`` is the round's first day; ``log_address`` the address to copy on mail to a partner;
    ``inbox`` the coordinators' address the bounce is sent to.
    """

    people: dict[str, Person]
    partners: dict[str, list[str]]
    start: date
    log_address: str
    inbox: str
    rng: random.Random = field(default_factory=lambda: random.Random(2027))
    _due: dict[int, list[tuple[datetime, EmailMessage | bytes]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    _serial: int = 0
    recovered: set[str] = field(default_factory=set)

    def read(self, day: int, delivered: list[Delivered]) -> None:
        """Everything delivered on ``day`` (at the evening's cycle): decide the answers."""
        for d in delivered:
            who = d.person.email
            away = AWAY_DAYS[0] <= day < AWAY_DAYS[1]
            if who == AWAY and away:
                self._later(day, 1, 0, self._out_of_office(d))
            elif who == BOUNCING:
                if d.topic == 1:
                    self._later(day, 1, 2, self._dsn(who, day))
            elif who == SILENT:
                continue
            elif who in QUIET:
                self._quiet(day, d)
            elif d.kind == "topic" and d.topic is not None:
                self._answer_topic(day, d)

    def arrivals(self, day: int) -> list[tuple[datetime, bytes]]:
        """The mail that reaches the coordinators' inbox on ``day``, with its arrival time."""
        out = []
        for when, message in sorted(self._due.pop(day, []), key=lambda item: item[0]):
            out.append((when, message if isinstance(message, bytes) else message.as_bytes()))
        return out

    # --- behaviour --------------------------------------------------------------------------

    def _answer_topic(self, day: int, d: Delivered) -> None:
        person, topic = d.person, d.topic or 0
        delay = self.rng.randint(1, 9)
        if person.email == WRITER:
            text = f"{_CHECKINS['es'][2][0]}\n\n{_WRITER_NOTE}" if topic == 2 else _WRITER_NOTE
            self._later(day, 1, 9, self._reply(d, text))
            return
        if person.email == NOT_YET and topic == 1:
            self._later(day, 1, 15, self._reply(d, _CHECKINS["fr"][3][1]))
            return
        if self.rng.random() < 0.35:
            self._later(day, delay, self.rng.randint(6, 20), self._to_partner(d))
            return
        answer = self.rng.choice(_CHECKINS[person.lang][1])
        note = self.rng.choice(_NOTES[person.lang])
        self._later(day, delay, self.rng.randint(6, 20), self._reply(d, f"{answer}\n\n{note}"))

    def _quiet(self, day: int, d: Delivered) -> None:
        """The pair that answers the first topic, falls silent, and recovers after a nudge."""
        who = d.person.email
        if d.kind == "nudge" and who not in self.recovered:
            self.recovered.update(QUIET)
            self._later(day, 1, 10, self._reply(d, _SORRY))
        elif d.topic == 1 or (d.kind == "topic" and who in self.recovered):
            self._answer_topic(day, d)

    # --- messages ---------------------------------------------------------------------------

    def _later(self, day: int, delay: int, hour: int, message: EmailMessage | bytes) -> None:
        on = day + delay
        when = datetime.combine(self.start + timedelta(days=on), time(hour), ZoneInfo("UTC"))
        if isinstance(message, EmailMessage):
            message.replace_header("Date", format_datetime(when))
        self._due[on].append((when, message))

    def _message(self, person: Person, subject: str) -> EmailMessage:
        self._serial += 1
        message = EmailMessage()
        message["From"] = formataddr((person.name, person.email))
        message["Subject"] = subject
        message["Date"] = format_datetime(datetime(2027, 1, 1, tzinfo=ZoneInfo("UTC")))
        message["Message-ID"] = f"<demo.{self._serial}@{person.email.split('@')[1]}>"
        return message

    def _reply(self, d: Delivered, text: str) -> EmailMessage:
        """An answer through the message's Reply-To (its reply key), quoting the message."""
        original = d.message
        message = self._message(d.person, "Re: " + str(original["Subject"]))
        message["To"] = str(original["Reply-To"])
        message["In-Reply-To"] = str(original["Message-ID"])
        message["References"] = str(original["Message-ID"])
        body = original.get_body(("plain",))
        quoted = body.get_content() if isinstance(body, EmailMessage) else ""
        attribution = _ATTRIBUTION[d.person.lang].format(
            date=str(original["Date"]), sender=str(original["From"])
        )
        history = "\n".join(f"> {line}".rstrip() for line in quoted.splitlines()[:40])
        message.set_content(f"{text}\n\n{d.person.first}\n\n{attribution}\n{history}\n")
        return message

    def _to_partner(self, d: Delivered) -> EmailMessage:
        """Mail to the partner(s) that copies the log address: contact, seen by Rapport."""
        person = d.person
        others = [self.people[e] for e in self.partners[person.email] if e != BOUNCING]
        message = self._message(person, _ABOUT[person.lang].format(n=d.topic))
        message["To"] = ", ".join(formataddr((o.name, o.email)) for o in others)
        message["Cc"] = self.log_address
        text = _TO_PARTNER[person.lang].format(
            partner=" & ".join(o.first for o in others) or "",
            note=self.rng.choice(_NOTES[person.lang]),
            me=person.first,
        )
        message.set_content(text)
        return message

    def _out_of_office(self, d: Delivered) -> EmailMessage:
        message = self._message(d.person, _AWAY["subject"])
        message["To"] = str(d.message["Reply-To"])
        message["In-Reply-To"] = str(d.message["Message-ID"])
        message["Auto-Submitted"] = "auto-replied"
        message.set_content(_AWAY["body"])
        return message

    def _dsn(self, address: str, day: int) -> bytes:
        """A receiving server's delivery status notification: the address does not exist."""
        when = datetime.combine(self.start + timedelta(days=day + 1), time(2), ZoneInfo("UTC"))
        return (
            f"From: Mail Delivery System <MAILER-DAEMON@mx.example.org>\r\n"
            f"To: {self.inbox}\r\nSubject: Undelivered Mail Returned to Sender\r\n"
            f"Date: {format_datetime(when)}\r\n"
            f"Message-ID: <dsn.{day}.{address.replace('@', '.')}@mx.example.org>\r\n"
            "Auto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n"
            'Content-Type: multipart/report; report-type=delivery-status; boundary="R"\r\n\r\n'
            "--R\r\nContent-Type: text/plain\r\n\r\n"
            f"Your message to <{address}> could not be delivered: no such mailbox.\r\n"
            "--R\r\nContent-Type: message/delivery-status\r\n\r\n"
            "Reporting-MTA: dns; mx.example.org\r\n\r\n"
            f"Final-Recipient: rfc822; {address}\r\nAction: failed\r\nStatus: 5.1.1\r\n"
            "Diagnostic-Code: smtp; 550 5.1.1 user unknown\r\n\r\n--R--\r\n"
        ).encode()
