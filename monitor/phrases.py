"""Every word health's reasons use, per language: the one place to translate them.

monitor/health.py writes its reasons ("No word from Maria (PL) since 3 March") through a
:class:`Phrasebook`; a language is added here, as one more phrasebook, without touching the rules.
Only English so far: other languages fall back to it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

__all__ = ["ENGLISH", "Phrasebook", "book"]


@dataclass(frozen=True, slots=True)
class Phrasebook:
    """Every word the reasons use, in one language: the one place to translate them."""

    months: str  # space-separated, January first
    counts: tuple[str, ...]  # 1, 2, ... times, as far as the language has words for them
    sentences: Mapping[str, str]

    def date(self, at: datetime, now: datetime) -> str:
        day, this_year = at.astimezone(UTC), now.astimezone(UTC).year
        key = "date" if day.year == this_year else "date_year"
        return self.sentences[key].format(
            day=day.day, month=self.months.split()[day.month - 1], year=day.year
        )

    def count(self, n: int) -> str:
        return self.counts[n - 1] if 0 < n <= len(self.counts) else self.say("times", n=n)

    def say(self, key: str, **values: object) -> str:
        return self.sentences[key].format(**values)


ENGLISH = Phrasebook(
    months="January February March April May June July August September October November December",
    counts=("once", "twice"),
    sentences={
        "date": "{day} {month}",
        "date_year": "{day} {month} {year}",
        "times": "{n} times",
        "member": "{name} ({country})",
        "nameless": "participant #{id}",
        "dissolved": "The partnership was dissolved",
        "ended": "The partnership has ended",
        "bouncing": "Mail to {who} bounces since {date}",
        "unsubscribed": "{who} unsubscribed on {date}",
        "suppressed": "Mail to {who} is suppressed (unsubscribed or undeliverable)",
        "withdrew": "{who} withdrew",
        "concern": "Concern raised on {date}",
        "concern_by": "Concern raised by {who} on {date}",
        "detail": "{sentence}: {detail}",
        "paused": "{who} is paused",
        "by_checkin": "check-in 1 from {who}",
        "by_partner_contact": "{who} wrote to a partner, copying the log address",
        "contact": "Last contact confirmed on {date} ({how})",
        "no_contact": "No contact confirmed since {date} ({how})",
        "no_contact_start": "No contact confirmed since the start on {date}",
        "starting": "Started on {date}; no contact confirmed yet",
        "since_own": "since {date}",
        "since_contact": "since contact was confirmed on {date}",
        "since_start": "since the start on {date}",
        "no_word": "No word from {who} {since}",
        "unanswered": "{who} has not answered {since}",
        "wrote": "{who} wrote {times} without an answer",
        "said_2": "{who} checked in '2' {times}",
        "said_3": "{who} checked in '3' (not in touch yet) on {date}",
    },
)
PHRASEBOOKS = {"en": ENGLISH}


def book(language: str) -> Phrasebook:
    return PHRASEBOOKS.get(language, ENGLISH)
