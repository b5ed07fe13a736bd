"""Calendar words per language: month names, short weekday names and dates in words.

The one place that holds them, shared by mailer/ (notices) and monitor/ (health reasons), which
never import each other.  Languages: English (``en``), French (``fr``) and Spanish (``es``).  A
language tag is read by its primary subtag (``fr-CA`` and ``fr_CA`` are French); any other
language falls back to English.  Pure: no I/O, no locale, no clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from types import MappingProxyType

__all__ = [
    "FALLBACK_LANGUAGE",
    "LANGUAGES",
    "MONTHS",
    "WEEKDAYS",
    "date_in_words",
    "language_of",
    "month_name",
    "weekday_name",
]

FALLBACK_LANGUAGE = "en"


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


MONTHS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "en": _words(
            "January February March April May June July August September October November December"
        ),
        "fr": _words(
            "janvier février mars avril mai juin juillet août septembre octobre novembre décembre"
        ),
        "es": _words(
            "enero febrero marzo abril mayo junio julio agosto septiembre octubre noviembre"
            " diciembre"
        ),
    }
)
"""Month names per language, January first."""

WEEKDAYS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "en": _words("Mon Tue Wed Thu Fri Sat Sun"),
        "fr": _words("lun. mar. mer. jeu. ven. sam. dim."),
        "es": _words("lun. mar. mié. jue. vie. sáb. dom."),
    }
)
"""Short weekday names per language, Monday first (as :meth:`datetime.date.weekday` counts)."""

LANGUAGES = tuple(MONTHS)

# A date in words, without and with the year: {d} the day, {m} the month's name, {y} the year.
_FORMATS: Mapping[str, tuple[str, str]] = MappingProxyType(
    {
        "en": ("{d} {m}", "{d} {m} {y}"),
        "fr": ("{d} {m}", "{d} {m} {y}"),
        "es": ("{d} de {m}", "{d} de {m} de {y}"),
    }
)
# The first of the month where a language does not write it as a plain number.
_FIRST: Mapping[str, str] = MappingProxyType({"fr": "1er"})


def language_of(tag: str) -> str:
    """The language of ``tag`` that has words here: ``"fr-CA"`` is ``"fr"``; unknown is ``"en"``."""
    primary = tag.strip().lower().replace("_", "-").partition("-")[0]
    return primary if primary in MONTHS else FALLBACK_LANGUAGE


def month_name(month: int, language: str) -> str:
    """The name of ``month`` (1 to 12) in ``language``: ``month_name(3, "fr") == "mars"``."""
    return MONTHS[language_of(language)][month - 1]


def weekday_name(weekday: int, language: str) -> str:
    """The short name of ``weekday`` (0 is Monday) in ``language``: ``"Tue"``, ``"mar."``."""
    return WEEKDAYS[language_of(language)][weekday]


def date_in_words(day: date, language: str, *, year: bool = True) -> str:
    """``day`` in words in ``language``, with its year unless ``year`` is false.

    ``3 March 2026`` / ``3 March``; ``3 mars 2026`` / ``3 mars``, and ``1er avril 2026`` for the
    first of the month; ``3 de marzo de 2026`` / ``3 de marzo``.  A datetime is read as the
    calendar day it shows: convert it to the wanted zone first.
    """
    lang = language_of(language)
    number = _FIRST.get(lang, "1") if day.day == 1 else str(day.day)
    form = _FORMATS[lang][1 if year else 0]
    return form.format(d=number, m=MONTHS[lang][day.month - 1], y=day.year)
