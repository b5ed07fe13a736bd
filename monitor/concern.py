"""Concern phrases: words in a participant's own message that mean a coordinator must step in.

A person who writes to the coordinators that their partner makes them "uncomfortable" needs a
coordinator today, not in next week's report.  Pure: the reply's own text (quoted history and
signature already removed by mailer/checkin.py) in, the phrase that matched out.  Only the phrase
is ever stored, never the message.

Matching is forgiving about how people type and strict about where a phrase starts: case, accents
and typographic apostrophes are ignored ("incomoda" finds "incómod"), and a phrase matches only
at the start of a word, so "harass" finds "harassment" but "uncomfortable" does not fire inside
another word.  A phrase may be several words ("mal à l'aise").  Built-in phrases cover English,
French and Spanish (the languages Rapport writes in); ``[health] concern_phrases`` adds more.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

__all__ = ["BUILT_IN", "Phrases", "find_concern"]

BUILT_IN: tuple[str, ...] = (
    # English
    "inappropriate",
    "uncomfortable",
    "harass",
    "unsafe",
    "threaten",
    "abusive",
    # French
    "inapproprié",
    "mal à l'aise",
    "harcèle",
    "harcèlement",
    "harceler",
    "menace",
    "propos déplacés",
    # Spanish
    "inapropiad",
    "incómod",
    "acoso",
    "acosa",
    "amenaz",
    "me siento insegur",
)

_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'"})


def _fold(text: str) -> str:
    """Lower case, no accents, one kind of apostrophe, runs of white space as one space."""
    decomposed = unicodedata.normalize("NFKD", text.translate(_APOSTROPHES).casefold())
    bare = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(bare.split())


@dataclass(frozen=True)
class Phrases:
    """A compiled set of concern phrases: the built-in ones plus ``extra``."""

    phrases: tuple[str, ...]
    pattern: re.Pattern[str] | None

    @classmethod
    def of(cls, extra: Iterable[str] = ()) -> Phrases:
        return _compiled(tuple(extra))


@lru_cache(maxsize=16)
def _compiled(extra: tuple[str, ...]) -> Phrases:
    phrases = tuple(dict.fromkeys(p.strip() for p in (*BUILT_IN, *extra) if p.strip()))
    folded = sorted({_fold(p) for p in phrases}, key=len, reverse=True)
    if not folded:
        return Phrases((), None)
    alternatives = "|".join(re.escape(f) for f in folded)
    return Phrases(phrases, re.compile(rf"(?<!\w)(?:{alternatives})"))


def find_concern(text: str, phrases: Phrases) -> str | None:
    """The first concern phrase in ``text`` as configured (its original spelling), or None."""
    if not text or phrases.pattern is None:
        return None
    found = phrases.pattern.search(_fold(text))
    if found is None:
        return None
    hit = found.group(0)
    for phrase in phrases.phrases:
        if _fold(phrase) == hit:
            return phrase
    return hit  # pragma: no cover - every alternative comes from a phrase
