"""Benchmark: Rapport's first IMAP poll of a full folder, against mbsync copying the same folder.

One private Dovecot (tests/dovecot.py) serves one folder of N messages, written straight into
its Maildir before it starts (untimed): participants' replies (with reply keys, in threads, or
new threads; some opening with a check-in answer), auto-replies, a few DSN bounces and
newsletters, about 4 KB each, 5% carrying a 50 KB base64 attachment.  A roster of 2,000
participants in pairs, with the first topic planned for each, is imported first, so attribution
does real work: reply keys are verified, threads and senders looked up.

- baseline: mbsync (Debian's isync) pulls the whole folder into a local Maildir, with its
  defaults (it fsyncs every message), timed by the wall clock from start to exit; a second run
  with ``FSync No`` is shown for information only;
- rapport: one `rapport inbox poll` pass (``rapport.poll.poll``: fetch every message with
  BODY.PEEK in a thread, classify it in a worker process, attribute and record it, a batch of
  messages and the folder's cursor per transaction) on a fresh SQLite database in WAL mode, in
  its own process so its peak memory is its own.  The run fails unless every message is
  recorded without a problem and classified as generated.

Both read the folder after the same untimed warm-up (Dovecot's first sync and index of it), in
the same run.  Peak memory is each program's own high-water mark (VmHWM; mbsync's sampled every
2 ms while it runs).  Each side's CPU time (its processes and their children) and how busy the
machine was meanwhile (all its CPUs, Dovecot and any other load included) are shown too: on a
shared machine a busy run can move the ratio, and these say how much.  Prints a table, then as
its last line one JSON object:
{"bench": "ingest", ..., "ratio": rapport rate / mbsync rate, "peak_rss_mb": Rapport's}.

    python bench/ingest.py            # 20,000 messages
    python bench/ingest.py --quick    # 2,000 messages, well under two minutes
    python bench/ingest.py --profile  # also print where the poll spends its time (stderr)
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import cProfile
import imaplib
import io
import json
import multiprocessing
import os
import pstats
import queue
import quopri
import random
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from email.header import Header
from email.utils import format_datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SECRET = b"bench-secret-0123456789"
PASSWORD_ENV = "RAPPORT_BENCH_IMAP_PASSWORD"
PLAN_AT = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)  # the first topic goes out
MAIL_FROM = datetime(2027, 3, 1, 13, 0, tzinfo=UTC)  # replies arrive over the next two weeks
POLL_AT = datetime(2027, 3, 15, 12, 0, tzinfo=UTC)
PARTICIPANTS = 2_000
ATTACHMENT_BYTES = 50 * 1024
ZONES = ["Europe/Warsaw", "America/New_York", "Asia/Kolkata", "Australia/Sydney", "Africa/Nairobi"]
COUNTRIES = ["PL", "US", "IN", "AU", "KE"]
LANGUAGES = ["en", "fr", "es"]
DOMAINS = ["example.org", "example.net", "uni.example.edu", "library.example.com"]
FIRST = [
    "Amina", "Bartosz", "Chen", "Dolores", "Emeka", "Fatima", "Gustavo", "Hana", "Ilse",
    "José", "Kwame", "Léa", "Marek", "Nadia", "Olumide", "Priya", "Quentin", "Rania",
    "Søren", "Tomasz", "Ursula", "Valentina", "Wanjiru", "Xavier", "Yusuf", "Zofia",
]  # fmt: skip
LAST = [
    "Abara", "Bianchi", "Castillo", "Dąbrowska", "Eriksen", "Fernández", "Gupta", "Haddad",
    "Ivanova", "Jansen", "Kowalski", "Lefèvre", "Mwangi", "Nguyen", "Okafor", "Patel",
    "Quispe", "Rossi", "Schmidt", "Tanaka", "Umarov", "Vargas", "Wiśniewski", "Zhang",
]  # fmt: skip
TOPIC = """Libraries everywhere are asking what *open* should mean.

1. What does open access look like where you work?
2. Which of your users gains most from it, and who is left out?

Share one example with your partner, and ask for one of theirs.
"""
SENTENCES = {
    "en": [
        "Thanks for this topic, it came at exactly the right moment for our team.",
        "We met on a video call on Thursday and talked for almost an hour.",
        "Our library moved its institutional repository to an open platform last year.",
        "The biggest winners are the students at the satellite campuses, who have no print "
        "collection at all.",
        "Rural users are still left out: the connection is too slow for most of the PDFs.",
        "My partner described a consortium licence that I had never heard of.",
        "I am not sure I understood the second question; could you say more about it?",
        "We plan to write a short note for our staff newsletter about what we learned.",
        "Next week is our exam period, so we agreed to talk again at the end of the month.",
        "I would be happy to present our digitisation project at the next round's call.",
    ],
    "fr": [
        "Merci pour ce thème, il tombe à pic pour notre équipe.",
        "Nous nous sommes parlé jeudi en visioconférence pendant presque une heure.",
        "Notre bibliothèque a migré son dépôt institutionnel vers une plateforme ouverte.",
        "Les étudiants des antennes régionales en profitent le plus : ils n'ont aucun fonds "
        "imprimé.",
        "Les usagers ruraux restent à l'écart : la connexion est trop lente pour les PDF.",
        "Ma partenaire m'a parlé d'une licence de consortium que je ne connaissais pas.",
        "Nous prévoyons d'écrire une courte note pour la lettre interne du personnel.",
        "La semaine prochaine, c'est la période des examens ; nous reparlerons fin du mois.",
    ],
    "es": [
        "Gracias por este tema, llegó en el momento justo para nuestro equipo.",
        "Nos reunimos por videollamada el jueves y hablamos casi una hora.",
        "Nuestra biblioteca trasladó su repositorio institucional a una plataforma abierta.",
        "Los más beneficiados son los estudiantes de las sedes regionales, sin colección impresa.",
        "Los usuarios rurales siguen fuera: la conexión es demasiado lenta para los PDF.",
        "Mi compañera me habló de una licencia de consorcio que yo no conocía.",
        "Pensamos escribir una nota breve para el boletín interno del personal.",
        "La semana que viene hay exámenes; acordamos hablar de nuevo a fin de mes.",
    ],
}
CHECKINS = ["1", "1 - we met on Thursday", "2", "2) I wrote but no answer yet", "3", "3."]
SUBJECTS = {"en": "Open access", "fr": "Accès ouvert", "es": "Acceso abierto"}


def _quiet_sigterm() -> None:
    """Turn SIGTERM into SystemExit so the cleanup in `finally` blocks runs."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


# -- the Rapport project ------------------------------------------------------------------------


def _write_project(folder: Path, port: int) -> Path:
    """config.toml, the roster CSVs and the topic; returns the config's path."""
    config = folder / "config.toml"
    config.write_text(
        '[program]\nname = "Bench Network"\nfrom_address = "coordinators@example.org"\n'
        'reply_address = "coordinators+{key}@example.org"\n'
        f'[database]\nurl = "sqlite:///{folder / "rapport.db"}"\n'
        f'[imap]\nhost = "127.0.0.1"\nport = {port}\nsecurity = "none"\n'
        f'username = "coordinators"\npassword_env = "{PASSWORD_ENV}"\n'
        '[schedule]\nmax_lateness = "3d"\n',
        encoding="utf-8",
    )
    with open(folder / "participants.csv", "w", encoding="utf-8") as f:
        f.write("email,name,country,timezone,language\n")
        for i in range(PARTICIPANTS):
            k = i % len(ZONES)
            f.write(f"{_email(i)},{_name(i)},{COUNTRIES[k]},{ZONES[k]},{_language(i)}\n")
    with open(folder / "partnerships.csv", "w", encoding="utf-8") as f:
        f.write("round,member_a,member_b\n")
        for i in range(0, PARTICIPANTS - 1, 2):
            f.write(f"bench,{_email(i)},{_email(i + 1)}\n")
    topics = folder / "topics"
    topics.mkdir()
    (topics / "open-access.md").write_text(
        f'+++\ntitle = "Open access"\norder = 1\n+++\n{TOPIC}', encoding="utf-8"
    )
    return config


def _setup_database(folder: Path, config: Path) -> dict[str, tuple[str, str]]:
    """Migrate, import the roster, plan topic 1 for everyone and mark it sent.

    Returns email -> (reply key, Message-ID) of the topic email each participant received.
    """
    from sqlalchemy import select, update

    from mailer.plan import plan_topics
    from program.config import database_url, parse_config
    from program.models import OUTBOX, SENT
    from program.store import make_engine, session_scope, upgrade
    from rapport.cli import main

    settings = parse_config(config.read_text(encoding="utf-8"), str(config))
    engine = make_engine(database_url(settings))
    upgrade(engine)
    base = ["--config", str(config)]
    for args in (
        ["import", "participants", str(folder / "participants.csv")],
        ["round", "create", "bench", "--start", date(2027, 2, 28).isoformat()],
        ["import", "partnerships", str(folder / "partnerships.csv")],
        ["import", "topics", str(folder / "topics"), "--round", "bench"],
    ):
        with contextlib.redirect_stdout(io.StringIO()):
            code = main(base + args)
        if code != 0:
            raise SystemExit(f"setup failed: rapport {' '.join(args)}")
    with session_scope(engine) as session:
        planned = plan_topics(session, settings=settings, secret=SECRET, now=PLAN_AT)
        session.connection().execute(update(OUTBOX).values(status=SENT))
    with engine.connect() as connection:
        rows = connection.execute(
            select(OUTBOX.c.to_address, OUTBOX.c.reply_key, OUTBOX.c.message_id)
        ).all()
    engine.dispose()
    if planned.planned != PARTICIPANTS or len(rows) != PARTICIPANTS:
        raise SystemExit(f"setup failed: planned {planned.planned} of {PARTICIPANTS} topic emails")
    return {row.to_address: (row.reply_key, row.message_id) for row in rows}


def _email(i: int) -> str:
    return f"p{i}@{DOMAINS[i % len(DOMAINS)]}"


def _name(i: int) -> str:
    return f"{FIRST[i % len(FIRST)]} {LAST[(i // len(FIRST)) % len(LAST)]}"


def _language(i: int) -> str:
    return LANGUAGES[i % len(LANGUAGES)]


# -- the mail -----------------------------------------------------------------------------------


@dataclass
class Mail:
    data: bytes  # LF line ends, as a Maildir stores it
    kind: str  # what the classifier should say
    seen: bool


def _phrase(text: str) -> str:
    """A display name or subject as a header wants it (RFC 2047 when not ASCII)."""
    return text if text.isascii() else Header(text, "utf-8").encode()


def _qp(text: str) -> str:
    return quopri.encodestring(text.encode("utf-8")).decode("ascii")


def _folded_b64(rng: random.Random, size: int, width: int = 76, indent: str = "") -> str:
    raw = base64.b64encode(rng.randbytes(size)).decode("ascii")
    return "\n".join(indent + raw[i : i + width] for i in range(0, len(raw), width))


class MailMaker:
    """Builds the folder's messages; every choice comes from a seeded Random."""

    def __init__(self, topics: dict[str, tuple[str, str]], seed: int = 2027) -> None:
        self.rng = random.Random(seed)
        self.topics = topics
        self.counter = 0

    # -- pieces ---------------------------------------------------------------------------------

    def _boundary(self) -> str:
        return f"=_{self.rng.getrandbits(64):016x}{self.rng.getrandbits(32):08x}"

    def _message_id(self, domain: str) -> str:
        self.counter += 1
        return f"<{self.rng.getrandbits(64):016x}.{self.counter}@{domain}>"

    def _trace(self, when: datetime, domain: str, envelope: str) -> str:
        """Return-Path, Received, Authentication-Results and DKIM-Signature (~1.1 KB)."""
        rng = self.rng
        stamp = format_datetime(when)
        earlier = format_datetime(when - timedelta(seconds=rng.randint(1, 30)))
        queue_id = "".join(rng.choice("0123456789ABCDEF") for _ in range(10))
        return (
            f"Return-Path: <{envelope}>\n"
            "Delivered-To: coordinators@example.org\n"
            f"Received: from mx.{domain} (mx.{domain} [192.0.2.{rng.randint(1, 254)}])\n"
            f"\tby mail.example.org (Postfix) with ESMTPS id {queue_id}\n"
            f"\tfor <coordinators@example.org>; {stamp}\n"
            f"Received: from [10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}]"
            f" (unknown [198.51.100.{rng.randint(1, 254)}])\n"
            f"\tby mx.{domain} (Postfix) with ESMTPSA id {queue_id[::-1]};\n\t{earlier}\n"
            "Authentication-Results: mail.example.org;\n"
            f"\tdkim=pass header.d={domain} header.s=mail;\n"
            f"\tspf=pass smtp.mailfrom={domain};\n\tdmarc=pass header.from={domain}\n"
            f"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d={domain}; s=mail;\n"
            f"\tt={int(when.timestamp())}; h=from:to:cc:subject:date:message-id:in-reply-to;\n"
            f"\tbh={base64.b64encode(rng.randbytes(32)).decode()};\n"
            f"\tb={_folded_b64(rng, 256, 70, chr(9)).lstrip()}\n"
        )

    def _own_text(self, language: str, sentences: int) -> str:
        pool = SENTENCES[language]
        picked = [self.rng.choice(pool) for _ in range(sentences)]
        half = max(1, sentences // 2)
        return " ".join(picked[:half]) + "\n\n" + " ".join(picked[half:])

    def _alternative(self, text: str, quoted: str) -> tuple[str, str]:
        """A multipart/alternative (plain and HTML) body: (Content-Type value, body)."""
        boundary = self._boundary()
        paragraphs = "".join(f"<p>{p}</p>\n" for p in text.split("\n\n"))
        html = (
            '<html><head><meta http-equiv="Content-Type" content="text/html; charset=utf-8">'
            '</head>\n<body>\n<div dir="ltr">\n'
            f'{paragraphs}</div>\n<div class="gmail_quote">\n'
            '<blockquote class="gmail_quote" style="margin:0px 0px 0px 0.8ex;'
            'border-left:1px solid rgb(204,204,204);padding-left:1ex">\n'
            + quoted.replace("\n", "<br>\n")
            + "</blockquote></div>\n</body></html>\n"
        )
        plain = text + "\n\n" + "\n".join(f"> {line}".rstrip() for line in quoted.splitlines())
        body = (
            f'--{boundary}\nContent-Type: text/plain; charset="UTF-8"\n'
            f"Content-Transfer-Encoding: quoted-printable\n\n{_qp(plain)}\n"
            f'--{boundary}\nContent-Type: text/html; charset="UTF-8"\n'
            f"Content-Transfer-Encoding: quoted-printable\n\n{_qp(html)}\n"
            f"--{boundary}--\n"
        )
        return f'multipart/alternative; boundary="{boundary}"', body

    def _with_attachment(self, content_type: str, body: str) -> tuple[str, str]:
        boundary = self._boundary()
        name = self.rng.choice(["repository-plan.pdf", "survey-results.pdf", "slides.pdf"])
        return f'multipart/mixed; boundary="{boundary}"', (
            f"--{boundary}\nContent-Type: {content_type}\n\n{body}\n"
            f'--{boundary}\nContent-Type: application/pdf; name="{name}"\n'
            f'Content-Disposition: attachment; filename="{name}"\n'
            "Content-Transfer-Encoding: base64\n\n"
            f"{_folded_b64(self.rng, ATTACHMENT_BYTES)}\n--{boundary}--\n"
        )

    def _topic_quote(self, language: str) -> str:
        return (
            f"On {format_datetime(PLAN_AT)}, Bench Network <coordinators@example.org> wrote:\n"
            f"Hello,\n\nHere is topic 1 of the bench round.\n\n"
            f"Topic 1: {SUBJECTS[language]}\n\n{TOPIC}\n"
            "Check-in: reply 1 (we have been in touch), 2 (I wrote but have not heard back)"
            " or 3 (not in touch yet); a few words are fine too.\n"
        )

    # -- kinds ----------------------------------------------------------------------------------

    def make(self, when: datetime, attachment: bool) -> Mail:
        """One message arriving at ``when``; with ``attachment``, a reply carrying a PDF."""
        roll = self.rng.random()
        if attachment or roll < 0.41:
            return self.reply(when, attachment, via="key")
        if roll < 0.51:
            return self.reply(when, attachment, via="thread")
        if roll < 0.65:
            return self.reply(when, attachment, via="sender")
        if roll < 0.70:
            return self.stranger(when)
        if roll < 0.845:
            return self.auto_reply(when)
        if roll < 0.995:
            return self.newsletter(when)
        return self.bounce(when)

    def reply(self, when: datetime, attachment: bool, *, via: str) -> Mail:
        rng = self.rng
        i = rng.randrange(PARTICIPANTS)
        partner = i ^ 1
        email, language = _email(i), _language(i)
        domain = email.split("@")[1]
        key, topic_id = self.topics[email]
        text = self._own_text(language, rng.randint(3, 6))
        if via == "key" and rng.random() < 0.45:
            text = rng.choice(CHECKINS) + "\n\n" + text
        text += f"\n\n{_name(i)}\n{rng.choice(['Librarian', 'Head of Collections', 'Archivist'])}"
        to = "coordinators@example.org"
        if via == "key":
            to = f"coordinators+{key}@example.org"
        cc = f"{_phrase(_name(partner))} <{_email(partner)}>" if rng.random() < 0.5 else ""
        if via == "sender":
            subject = _phrase(rng.choice(["Question about the round", SUBJECTS[language]]))
            threading = ""
            quoted = ""
        else:
            subject = _phrase("Re: " + SUBJECTS[language])
            threading = f"In-Reply-To: {topic_id}\nReferences: {topic_id}\n"
            quoted = self._topic_quote(language)
        content_type, body = self._alternative(text, quoted)
        if attachment:
            content_type, body = self._with_attachment(content_type, body)
        head = (
            self._trace(when, domain, email)
            + f"From: {_phrase(_name(i))} <{email}>\n"
            + f"To: {to}\n"
            + (f"Cc: {cc}\n" if cc else "")
            + f"Subject: {subject}\n"
            + f"Date: {format_datetime(when - timedelta(seconds=rng.randint(5, 90)))}\n"
            + f"Message-ID: {self._message_id(domain)}\n"
            + threading
            + "MIME-Version: 1.0\n"
            + f"Content-Type: {content_type}\n\n"
        )
        return Mail((head + body).encode("utf-8"), "human", rng.random() < 0.3)

    def stranger(self, when: datetime) -> Mail:
        rng = self.rng
        n = rng.randrange(100_000)
        email, domain = f"colleague{n}@mail.example.net", "mail.example.net"
        text = (
            "Hello,\n\nA colleague told me about your mentoring network. "
            + " ".join(rng.choice(SENTENCES["en"]) for _ in range(3))
            + "\n\nCould I join the next round? Our library serves a small town and we are "
            "starting an open access programme.\n\nBest regards,\n"
            + f"{FIRST[n % len(FIRST)]} {LAST[n % len(LAST)]}"
        )
        content_type, body = self._alternative(text, "")
        head = (
            self._trace(when, domain, email)
            + f"From: {_phrase(FIRST[n % len(FIRST)])} <{email}>\n"
            + "To: coordinators@example.org\nSubject: Joining the next round\n"
            + f"Date: {format_datetime(when)}\nMessage-ID: {self._message_id(domain)}\n"
            + f"MIME-Version: 1.0\nContent-Type: {content_type}\n\n"
        )
        return Mail((head + body).encode("utf-8"), "human", rng.random() < 0.5)

    def auto_reply(self, when: datetime) -> Mail:
        rng = self.rng
        i = rng.randrange(PARTICIPANTS)
        email, language = _email(i), _language(i)
        domain = email.split("@")[1]
        key, topic_id = self.topics[email]
        back = (when + timedelta(days=rng.randint(3, 20))).strftime("%d %B %Y")
        style = rng.randrange(3)
        if style == 0:  # RFC 3834 vacation responder
            extra = "Auto-Submitted: auto-replied\nX-Autoreply: yes\n"
            subject = f"Out of office: Re: {SUBJECTS[language]}"
        elif style == 1:  # Exchange's mailbox rules agent
            extra = (
                "Auto-Submitted: auto-generated\nX-Auto-Response-Suppress: All\n"
                f"X-MS-Exchange-Inbox-Rules-Loop: {email}\n"
                "X-MS-Exchange-Generated-Message-Source: Mailbox Rules Agent\n"
            )
            subject = f"Automatic reply: {SUBJECTS[language]}"
        else:
            extra = "Auto-Submitted: auto-replied\nPrecedence: auto_reply\n"
            subject = {"en": "Away", "fr": "Absence", "es": "Ausencia"}[language]
            subject += f": {SUBJECTS[language]}"
        text = (
            f"I am out of the office until {back} with limited access to email. "
            "For urgent matters please contact the library front desk.\n\n"
            + " ".join(rng.choice(SENTENCES[language]) for _ in range(2))
        )
        head = (
            self._trace(when, domain, "")
            + f"From: {_phrase(_name(i))} <{email}>\n"
            + f"To: coordinators+{key}@example.org\n"
            + f"Subject: {_phrase(subject)}\n"
            + f"Date: {format_datetime(when)}\nMessage-ID: {self._message_id(domain)}\n"
            + f"In-Reply-To: {topic_id}\nReferences: {topic_id}\n{extra}"
            + 'MIME-Version: 1.0\nContent-Type: text/plain; charset="UTF-8"\n'
            + "Content-Transfer-Encoding: quoted-printable\n\n"
        )
        return Mail((head + _qp(text) + "\n").encode("utf-8"), "auto_reply", False)

    def newsletter(self, when: datetime) -> Mail:
        rng = self.rng
        sender = rng.choice(
            [
                ("Library Association News", "news@lists.association.example"),
                ("Open Scholarship Weekly", "weekly@newsletter.example.com"),
                ("Repository Platform Updates", "no-reply@platform.example.io"),
            ]
        )
        domain = sender[1].split("@")[1]
        items = "".join(
            f'<tr><td style="padding:12px;font-family:Arial,sans-serif;font-size:14px">'
            f"<h3>{rng.choice(SENTENCES['en'])[:48]}</h3><p>"
            + " ".join(rng.choice(SENTENCES["en"]) for _ in range(3))
            + f'</p><a href="https://{domain}/r/{rng.getrandbits(48):012x}">Read more</a>'
            "</td></tr>\n"
            for _ in range(rng.randint(4, 7))
        )
        html = (
            '<!DOCTYPE html><html><body style="margin:0;background:#f4f4f4">\n'
            '<table width="100%" cellpadding="0" cellspacing="0" role="presentation">\n'
            f"{items}</table>\n"
            f'<p style="font-size:11px">You receive this because you subscribed. '
            f'<a href="https://{domain}/unsubscribe">Unsubscribe</a></p></body></html>\n'
        )
        text = re.sub(r"<[^>]+>", "", html)
        boundary = self._boundary()
        body = (
            f"--{boundary}\nContent-Type: text/plain; charset=utf-8\n"
            f"Content-Transfer-Encoding: quoted-printable\n\n{_qp(text)}\n"
            f"--{boundary}\nContent-Type: text/html; charset=utf-8\n"
            f"Content-Transfer-Encoding: quoted-printable\n\n{_qp(html)}\n--{boundary}--\n"
        )
        token = f"{rng.getrandbits(64):016x}"
        head = (
            self._trace(when, domain, f"bounces+{token}@{domain}")
            + f"From: {_phrase(sender[0])} <{sender[1]}>\nTo: coordinators@example.org\n"
            + f"Subject: {rng.choice(['This week in open scholarship', 'March update'])}\n"
            + f"Date: {format_datetime(when)}\nMessage-ID: {self._message_id(domain)}\n"
            + f"List-Id: {sender[0]} <news.{domain}>\n"
            + f"List-Unsubscribe: <mailto:unsubscribe+{token}@{domain}>,\n"
            + f" <https://{domain}/unsubscribe/{token}>\n"
            + "List-Unsubscribe-Post: List-Unsubscribe=One-Click\nPrecedence: bulk\n"
            + f'MIME-Version: 1.0\nContent-Type: multipart/alternative; boundary="{boundary}"\n\n'
        )
        return Mail((head + body).encode("utf-8"), "bulk", rng.random() < 0.2)

    def bounce(self, when: datetime) -> Mail:
        rng = self.rng
        i = rng.randrange(PARTICIPANTS)
        email = _email(i)
        _, topic_id = self.topics[email]
        boundary = self._boundary()
        queue_id = "".join(rng.choice("0123456789ABCDEF") for _ in range(10))
        stamp = format_datetime(when)
        body = (
            "This is a MIME-encapsulated message.\n\n"
            f"--{boundary}\nContent-Description: Notification\n"
            "Content-Type: text/plain; charset=us-ascii\n\n"
            "This is the mail system at host mail.example.org.\n\n"
            "I'm sorry to have to inform you that your message could not\n"
            "be delivered to one or more recipients.\n\n"
            f"<{email}>: host mx.{email.split('@')[1]} said: 550 5.1.1 <{email}>:\n"
            "    Recipient address rejected: User unknown in virtual mailbox table\n\n"
            f"--{boundary}\nContent-Description: Delivery report\n"
            "Content-Type: message/delivery-status\n\n"
            f"Reporting-MTA: dns; mail.example.org\nX-Postfix-Queue-ID: {queue_id}\n"
            f"Arrival-Date: {format_datetime(PLAN_AT)}\n\n"
            f"Final-Recipient: rfc822; {email}\nOriginal-Recipient: rfc822;{email}\n"
            "Action: failed\nStatus: 5.1.1\n"
            f"Remote-MTA: dns; mx.{email.split('@')[1]}\n"
            f"Diagnostic-Code: smtp; 550 5.1.1 <{email}>: Recipient address rejected\n\n"
            f"--{boundary}\nContent-Description: Undelivered Message Headers\n"
            "Content-Type: text/rfc822-headers\n\n"
            "From: Bench Network <coordinators@example.org>\n"
            f"To: {email}\nSubject: Open access\nMessage-ID: {topic_id}\n"
            f"Date: {format_datetime(PLAN_AT)}\n\n--{boundary}--\n"
        )
        head = (
            "Return-Path: <>\nDelivered-To: coordinators@example.org\n"
            f"Received: by mail.example.org (Postfix) id {queue_id}; {stamp}\n"
            f"Date: {stamp}\nFrom: MAILER-DAEMON@mail.example.org (Mail Delivery System)\n"
            "Subject: Undelivered Mail Returned to Sender\n"
            "To: coordinators@example.org\nAuto-Submitted: auto-replied\n"
            f"Message-ID: <{queue_id}.{int(when.timestamp())}@mail.example.org>\n"
            "MIME-Version: 1.0\nContent-Type: multipart/report; report-type=delivery-status;\n"
            f'\tboundary="{boundary}"\n\n'
        )
        return Mail((head + body).encode("ascii"), "bounce", False)


def _fill_maildir(maildir: Path, topics: dict[str, tuple[str, str]], count: int) -> Counter[str]:
    """Write ``count`` messages into ``maildir``/cur as Dovecot would name them.

    File names carry the size (``S=``) and the size with CRLF line ends (``W=``, what IMAP
    reports), the modification time is the arrival time (Dovecot's INTERNALDATE).  Returns the
    expected kinds, plus "attachments" and "bytes".
    """
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True, exist_ok=True)
    maker = MailMaker(topics)
    stats: Counter[str] = Counter()
    span = timedelta(days=13).total_seconds()
    for n in range(count):
        when = MAIL_FROM + timedelta(seconds=span * n / count)
        attachment = n % 20 == 7  # 5%
        mail = maker.make(when, attachment)
        stats[mail.kind] += 1
        stats["attachments"] += attachment
        stats["bytes"] += len(mail.data)
        seconds = int(when.timestamp())
        size, lines = len(mail.data), mail.data.count(b"\n")
        flags = "S" if mail.seen else ""
        name = f"{seconds}.M{n % 1_000_000:06d}P4242Q{n}.bench,S={size},W={size + lines}:2,{flags}"
        path = maildir / "cur" / name
        path.write_bytes(mail.data)
        os.utime(path, (seconds, seconds))
    return stats


def _chown_tree(top: Path, uid: int, gid: int) -> None:
    os.chown(top, uid, gid)
    for folder, dirs, files in os.walk(top):
        for name in dirs + files:
            os.chown(os.path.join(folder, name), uid, gid)


# -- the two sides ------------------------------------------------------------------------------


def _warm_up(host: str, port: int, user: str, password: str, count: int) -> None:
    """Let Dovecot sync and index the new folder (untimed), and check it sees every message."""
    conn = imaplib.IMAP4(host, port, timeout=300)
    try:
        conn.login(user, password)
        typ, data = conn.select("INBOX", readonly=True)
        exists = int(data[0] or 0) if typ == "OK" else -1
        if exists != count:
            raise SystemExit(f"Dovecot sees {exists} messages in INBOX, not {count}")
        conn.fetch("1:*", "(FLAGS RFC822.SIZE INTERNALDATE)")
    finally:
        with contextlib.suppress(OSError, imaplib.IMAP4.error):
            conn.logout()


def _peak_mb(pid: int | str) -> float:
    """Peak resident memory (VmHWM) of a running process, in MB; 0 when it is gone.

    Not getrusage's ru_maxrss: Linux carries the parent's peak into a child across fork and exec,
    so a child started by this (large) process would report at least this process's peak.
    VmHWM belongs to the program's own address space, made new at exec.
    """
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy since boot, all CPUs (from /proc/stat)."""
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            ticks = [int(n) for n in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return 0.0
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle and iowait
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _busy_percent(busy: float, seconds: float) -> float:
    """How busy the machine's CPUs were, in percent of all of them, over ``seconds``."""
    return 100 * busy / (seconds * (os.cpu_count() or 1)) if seconds > 0 else 0.0


def _mbsync_version() -> str:
    out = subprocess.run(["mbsync", "--version"], capture_output=True, text=True, check=False)
    return out.stdout.strip() or "mbsync"


def _mbsync(folder: Path, port: int, user: str, password: str, count: int, fsync: bool) -> dict:
    """Pull the whole INBOX into a new local Maildir; wall-clock seconds and peak RSS."""
    (folder / "mail").mkdir(parents=True)  # mbsync wants the store's Path to exist
    rc = folder / "mbsyncrc"
    rc.write_text(
        ("" if fsync else "FSync No\n\n")
        + f"IMAPAccount far\nHost 127.0.0.1\nPort {port}\nUser {user}\nPass {password}\n"
        "SSLType None\nAuthMechs LOGIN\n\n"
        "IMAPStore far-store\nAccount far\n\n"
        f"MaildirStore near-store\nPath {folder}/mail/\nInbox {folder}/mail/INBOX\n\n"
        "Channel inbox\nFar :far-store:\nNear :near-store:\n"
        "Create Near\nSync Pull\nSyncState *\n",
        encoding="utf-8",
    )
    rc.chmod(0o600)
    log = open(folder / "mbsync.log", "wb")  # noqa: SIM115 - closed below, after the child
    peak = 0.0
    try:
        busy = _busy_seconds()
        start = time.perf_counter()
        process = subprocess.Popen(
            ["mbsync", "-c", str(rc), "-a"], stdin=subprocess.DEVNULL, stdout=log, stderr=log
        )
        try:
            while True:
                pid, status, usage = os.wait4(process.pid, os.WNOHANG)
                if pid == process.pid:
                    break
                peak = max(peak, _peak_mb(process.pid))
                time.sleep(0.002)
        except BaseException:
            process.kill()
            process.wait()
            raise
        elapsed = time.perf_counter() - start
        busy = _busy_seconds() - busy
        process.returncode = os.waitstatus_to_exitcode(status)
    finally:
        log.close()
    inbox = folder / "mail" / "INBOX"
    copied = sum(len(os.listdir(inbox / sub)) for sub in ("cur", "new") if (inbox / sub).is_dir())
    if process.returncode != 0 or copied != count:
        text = (folder / "mbsync.log").read_text(encoding="utf-8", errors="replace")
        raise SystemExit(
            f"mbsync exited {process.returncode} having copied {copied} of {count}:\n{text[-2000:]}"
        )
    shutil.rmtree(folder / "mail")  # free the space before the next side runs
    return {
        "seconds": elapsed,
        "rate": count / elapsed,
        "rss": peak,
        "cpu": usage.ru_utime + usage.ru_stime,
        "busy": _busy_percent(busy, elapsed),
    }


class _Profiler:
    """pyinstrument (a sampling profiler: little overhead) when installed, else cProfile."""

    def __init__(self) -> None:
        try:
            from pyinstrument import Profiler
        except ImportError:
            self.sampler, self.tracer = None, cProfile.Profile()
        else:
            self.sampler, self.tracer = Profiler(interval=0.001), None

    def start(self) -> None:
        if self.sampler is not None:
            self.sampler.start()
        else:
            self.tracer.enable()

    def stop(self) -> None:
        if self.sampler is not None:
            self.sampler.stop()
        else:
            self.tracer.disable()

    def report(self) -> str:
        if self.sampler is not None:
            return str(self.sampler.output_text(unicode=False, color=False))
        text = io.StringIO()
        stats = pstats.Stats(self.tracer, stream=text).strip_dirs()
        stats.sort_stats("cumulative").print_stats(40)
        stats.sort_stats("tottime").print_stats(30)
        return text.getvalue()


def _rapport(config: str, profile: bool, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    """One poll of the configured inbox, timed around `poll` alone (runs in its own process)."""
    from program.config import database_url, parse_config
    from program.store import make_engine
    from rapport.poll import poll

    settings = parse_config(Path(config).read_text(encoding="utf-8"), config)
    engine = make_engine(database_url(settings))
    profiler = _Profiler() if profile else None
    busy, cpu = _busy_seconds(), _cpu_seconds()
    start = time.perf_counter()
    if profiler is not None:
        profiler.start()
    result = poll(engine, settings=settings, secret=SECRET, now=POLL_AT)
    if profiler is not None:
        profiler.stop()
    elapsed = time.perf_counter() - start
    busy, cpu = _busy_seconds() - busy, _cpu_seconds() - cpu  # the worker has ended: counted
    rss = _peak_mb("self") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    report = profiler.report() if profiler is not None else ""
    engine.dispose()
    out.put(
        {
            "seconds": elapsed,
            "rate": result.recorded / elapsed,
            "read": result.read,
            "recorded": result.recorded,
            "kinds": dict(result.kinds),
            "events": result.events,
            "errors": result.errors[:5],
            "rss": rss,
            "cpu": cpu,
            "busy": _busy_percent(busy, elapsed),
            "problems": len(result.errors),
            "summary": result.summary(),
            "profile": report,
        }
    )


def _cpu_seconds() -> float:
    """CPU time of this process and of its children that have ended (the classify worker)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _run_rapport(config: Path, profile: bool) -> dict:
    results: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
    process = multiprocessing.Process(target=_rapport, args=(str(config), profile, results))
    process.start()
    try:
        while True:
            try:
                found = results.get(timeout=1)
            except queue.Empty:  # check the child is still there
                if not process.is_alive():
                    raise SystemExit(f"the poll process died (exit {process.exitcode})") from None
            else:
                process.join()
                return found
    finally:
        if process.is_alive():  # interrupted: do not wait for the poll to end
            process.kill()
            process.join()


def _matched(config: Path) -> dict[str, int]:
    """How the recorded messages were attributed (after the timed poll)."""
    from sqlalchemy import func, select

    from program.config import database_url, parse_config
    from program.models import INBOUND
    from program.store import make_engine

    settings = parse_config(config.read_text(encoding="utf-8"), str(config))
    engine = make_engine(database_url(settings))
    with engine.connect() as connection:
        rows = connection.execute(
            select(INBOUND.c.matched_by, func.count()).group_by(INBOUND.c.matched_by)
        ).all()
    engine.dispose()
    return {str(by): int(n) for by, n in rows}


# -- main ---------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2,000 messages")
    parser.add_argument("--count", type=int, help="messages (default 20,000; 2,000 with --quick)")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="profile the poll (pyinstrument if installed, else cProfile; it runs slower)",
    )
    parser.add_argument(
        "--no-fsync-line", action="store_true", help="skip the informational FSync No run"
    )
    args = parser.parse_args()
    count = args.count or (2_000 if args.quick else 20_000)
    if shutil.which("mbsync") is None:
        raise SystemExit("mbsync is not installed (Debian package isync)")
    multiprocessing.set_start_method("spawn")
    _quiet_sigterm()

    import trustme

    from tests.dovecot import DovecotServer

    root = Path(tempfile.mkdtemp(prefix="rapport-bench-ingest-"))
    root.chmod(0o755)  # Dovecot's unprivileged processes must reach its files
    server = None
    try:
        server = DovecotServer(root, trustme.CA())
        os.environ[PASSWORD_ENV] = server.password
        project = root / "project"
        project.mkdir()
        config = _write_project(project, server.port)
        topics = _setup_database(project, config)
        mail = root / "mail"
        maildir = mail / server.username
        built = time.perf_counter()
        stats = _fill_maildir(maildir, topics, count)
        owner = os.stat(mail)
        _chown_tree(maildir, owner.st_uid, owner.st_gid)
        built = time.perf_counter() - built
        server.start()
        _warm_up(server.host, server.port, server.username, server.password, count)
        login = (server.port, server.username, server.password, count)
        mbsync = _mbsync(root / "mbsync", *login, fsync=True)
        nofsync = None if args.no_fsync_line else _mbsync(root / "mbsync-nofsync", *login, False)
        rapport = _run_rapport(config, args.profile)
        matched = _matched(config)
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(root, ignore_errors=True)

    if rapport["recorded"] != count or rapport["problems"]:
        raise SystemExit(f"rapport recorded {rapport['recorded']} of {count}: {rapport['summary']}")
    generated = {kind: n for kind, n in stats.items() if kind not in ("attachments", "bytes")}
    if rapport["kinds"] != generated:
        raise SystemExit(f"rapport classified {rapport['kinds']}, not as generated: {generated}")
    if args.profile:
        print(rapport["profile"], file=sys.stderr)
    ratio = rapport["rate"] / mbsync["rate"]
    version = _mbsync_version()
    rows = [(f"{version} (defaults: fsync on)", mbsync)]
    if nofsync is not None:
        rows.append(("mbsync FSync No (information)", nofsync))
    rows.append(("rapport first poll" + (" (profiled)" if args.profile else ""), rapport))
    megabytes = stats["bytes"] / 1e6
    print(
        f"{count} messages, {megabytes:.0f} MB ({stats['attachments']} with 50 KB attachments),"
        f" written in {built:.1f} s; Dovecot warmed up (untimed)"
    )
    print(f"{'side':38} {'msg/s':>9} {'seconds':>9} {'peak MB':>9} {'CPU s':>7} {'busy %':>7}")
    for name, side in rows:
        print(
            f"{name:38} {side['rate']:9.0f} {side['seconds']:9.2f} {side['rss']:9.1f}"
            f" {side['cpu']:7.2f} {side['busy']:7.0f}"
        )
    print(
        f"CPU s: the side's own processes; busy %: all {os.cpu_count()} CPUs of the machine"
        " meanwhile (Dovecot and anything else running included)"
    )
    expected = ", ".join(f"{n} {k}" for k, n in sorted(stats.items()) if k not in ("bytes",))
    print(f"generated: {expected}")
    print(f"rapport: {rapport['summary']}")
    print("attributed by: " + ", ".join(f"{n} {by}" for by, n in sorted(matched.items())))
    print(
        f"ratio {ratio:.2f} (target >= 1.00), rapport peak {rapport['rss']:.0f} MB (target < 200)"
    )
    figures = {
        "bench": "ingest",
        "messages": count,
        "megabytes": round(megabytes, 1),
        "attachments": stats["attachments"],
        "mbsync_rate": round(mbsync["rate"], 1),
        "mbsync_seconds": round(mbsync["seconds"], 3),
        "mbsync_peak_rss_mb": round(mbsync["rss"], 1),
        "mbsync_cpu_seconds": round(mbsync["cpu"], 2),
        "mbsync_machine_busy_pct": round(mbsync["busy"]),
    }
    if nofsync is not None:
        figures["mbsync_nofsync_rate"] = round(nofsync["rate"], 1)
    figures.update(
        {
            "rapport_rate": round(rapport["rate"], 1),
            "rapport_seconds": round(rapport["seconds"], 3),
            "rapport_cpu_seconds": round(rapport["cpu"], 2),
            "rapport_machine_busy_pct": round(rapport["busy"]),
            "ratio": round(ratio, 3),
            "peak_rss_mb": round(rapport["rss"], 1),
        }
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
