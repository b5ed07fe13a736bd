"""Sample contexts for `rapport doctor`: every template rendered with data shaped like the real.

Shaped like what monitor/nudges.py and monitor/report.py plan into the outbox (after the same JSON
round trip), with non-ASCII names so that header encoding is exercised too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SampleText:
    """A topic's text in one language, as mailer/render.py's ``topic_email`` reads it."""

    language: str
    title: str = "Getting to know each other's libraries"
    body: str = (
        "Tell your partner about **your library**: who comes in, and what they ask for.\n\n"
        "- What surprised you this week?\n- What would you change first?\n"
    )


PEOPLE: tuple[dict[str, str], ...] = (
    {"name": "Kelsey Brown", "email": "kelsey@example.org", "country": "US",
     "timezone": "America/Chicago"},
    {"name": "Maria Kowalska", "email": "maria@example.pl", "country": "PL",
     "timezone": "Europe/Warsaw"},
    {"name": "Ana López", "email": "ana@example.es", "country": "ES", "timezone": "Europe/Madrid"},
)  # fmt: skip
_KELSEY, _MARIA, _ANA = PEOPLE
_LOG = "coordinators+log@example.org"
_COORDINATOR = {"id": 1, "name": "Piotr Zieliński", "email": "piotr@example.org",
                "role": "country", "countries": ["PL"], "timezone": "Europe/Warsaw"}  # fmt: skip


def _member(person: Mapping[str, str], member_id: int, **extra: Any) -> dict[str, Any]:
    return {"id": member_id, **person, "status": "active", "bouncing": False,
            "suppressed": None, "silent": False, "reachable": True, **extra}  # fmt: skip


def _card(pid: int, state: str, score: int, members: list[dict[str, Any]]) -> dict[str, Any]:
    cells = ["contact", "one", "none", "alert"]
    return {
        "id": pid, "round": "Spring", "members": members, "state": state, "score": score,
        "since": "2027-04-12T12:00:00+00:00", "days": 14, "weeks": 2, "previous_state": "quiet",
        "reasons": ["No word from Maria Kowalska (PL) since 3 March"],
        "nudges": [{"template": "nudge_pair", "to": {"name": "Maria Kowalska",
                    "email": "maria@example.pl"}, "sent": "2027-04-05",
                    "sent_at": "2027-04-05T08:00:00+00:00"}],
        "notes": [{"text": "Called Maria: travelling until May.", "date": "2027-04-20"}],
        "action": {"code": "write_silent", "names": ["Maria Kowalska"]},
        "grid": [{"fortnight": i + 1, "start": f"2027-03-{1 + 14 * i:02d}", "cell": cell}
                 for i, cell in enumerate(cells[:2])]
        + [{"fortnight": 3 + i, "start": day, "cell": cell}
           for i, (day, cell) in enumerate((("2027-03-29", "none"), ("2027-04-12", "alert")))],
    }  # fmt: skip


def _brief(pid: int, score: int, **extra: Any) -> dict[str, Any]:
    people = [{"name": p["name"], "country": p["country"]} for p in (_KELSEY, _MARIA)]
    return {"id": pid, "members": people, "score": score, **extra}


_STATES = ("starting", "healthy", "one_sided", "quiet", "at_risk", "dissolved", "ended")
_COUNTS = {"one_sided": (1, 0), "at_risk": (1, 1), "healthy": (3, 3)}
DATA: dict[str, dict[str, Any]] = {
    "nudge_pair": {"partnership": 7, "partners": [_MARIA], "last_contact": "2027-03-05",
                   "log_address": _LOG},
    "nudge_silent": {"partnership": 7, "partners": [_MARIA, _ANA], "last_contact": "2027-03-05",
                     "log_address": _LOG},
    "nudge_coordinators": {
        "partnership": 7, "state": "at_risk", "score": 60, "since": "2027-04-12",
        "last_contact": "2027-03-05", "reasons": ["No word from Maria Kowalska (PL) since 3 March"],
        "urgent": ["bouncing"],
        "members": [{**_KELSEY, "silent": False, "reachable": True},
                    {**_MARIA, "silent": True, "reachable": True}],
        "silent": ["Maria Kowalska"],
        "nudges": [{"level": "pair", "name": "Kelsey Brown", "date": "2027-03-28"}],
        "actions": ["fix_address"], "log_address": _LOG,
    },
    "concern": {"partnership": 7, "phrase": "uncomfortable",
                "occurred_at": "2027-04-20T05:00:00+00:00", "raised_by": _MARIA,
                "members": [_KELSEY, _MARIA]},
    "report": {
        "coordinator": _COORDINATOR, "now": "2027-04-26T10:00:00+00:00", "day": "2027-04-26",
        "previous_day": "2027-04-19", "week": "2027-W17", "total": 5, "new": 1,
        "counts": [{"state": s, "count": _COUNTS.get(s, (0, 0))[0],
                    "previous": _COUNTS.get(s, (0, 0))[1],
                    "change": _COUNTS.get(s, (0, 0))[0] - _COUNTS.get(s, (0, 0))[1]}
                   for s in _STATES],
        "quiet": 0, "all_clear": False,
        "partnerships": [
            _card(7, "at_risk", 60, [_member(_KELSEY, 1), _member(_MARIA, 2, silent=True)]),
            _card(9, "one_sided", 40, [_member(_ANA, 3), _member(_MARIA, 2, bouncing=True)]),
        ],
        "newly_at_risk": [_brief(7, 60)], "still_at_risk": [_brief(8, 55, weeks=3)],
        "recovered": [_brief(4, 10, previous_state="quiet")],
        "fortnights": 4, "cells": ["contact", "one", "none", "alert"],
        "more": 3, "more_states": ["at_risk"], "newly_at_risk_more": 1,
        "still_at_risk_more": 0, "recovered_more": 2,
    },
}  # fmt: skip
