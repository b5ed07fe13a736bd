"""Every word health's reasons use, per language: the one place to translate them.

monitor/health.py writes its reasons ("No word from Maria (PL) since 3 March") through a
:class:`Phrasebook`; a language is added here, as one more phrasebook, without touching the rules.
English, French and Spanish; any other language falls back to English.  Dates in words (month
names, French "1er") come from program/wording.py, shared with the notices' templates.

The sentences fit together as monitor/health.py assembles them: ``{who}`` is a ``member`` (or
``nameless``) phrase, ``{date}`` a bare date ("3 March", "3 mars", "3 de marzo"; so the article or
preposition before it belongs to the sentence: "depuis le {date}", "desde el {date}"), ``{since}``
one of the ``since_*`` phrases, ``{how}`` ``by_checkin`` or ``by_partner_contact``, ``{times}`` a
count (``counts``, else ``times``) and ``{sentence}`` a ``concern`` or ``concern_by`` sentence.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from program import wording

__all__ = ["ENGLISH", "FRENCH", "PHRASEBOOKS", "SPANISH", "Phrasebook", "book"]


@dataclass(frozen=True, slots=True)
class Phrasebook:
    """Every word the reasons use, in one language: the one place to translate them."""

    language: str  # a language program/wording.py has calendar words for
    counts: tuple[str, ...]  # 1, 2, ... times, as far as the language has words for them
    sentences: Mapping[str, str]

    def date(self, at: datetime, now: datetime) -> str:
        """``at``'s UTC calendar day in words, with the year only when it is not ``now``'s."""
        day, this_year = at.astimezone(UTC), now.astimezone(UTC).year
        return wording.date_in_words(day.date(), self.language, year=day.year != this_year)

    def count(self, n: int) -> str:
        return self.counts[n - 1] if 0 < n <= len(self.counts) else self.say("times", n=n)

    def say(self, key: str, **values: object) -> str:
        return self.sentences[key].format(**values)


ENGLISH = Phrasebook(
    language="en",
    counts=("once", "twice"),
    sentences={
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
        "and": "; ",
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
        "said_2": "{who} said {times} they wrote without an answer (check-in 2)",
        "said_3": "{who} said on {date} they are not in touch yet (check-in 3)",
    },
)
# French: "{who}" is a name, so no sentence elides before it ("de Anna" would need "d’Anna") and
# none agrees with its gender.  A no-break space comes before ":" and ";" and inside « », as in
# the French templates.
FRENCH = Phrasebook(
    language="fr",
    counts=("une fois", "deux fois"),
    sentences={
        "times": "{n} fois",
        "member": "{name} ({country})",
        "nameless": "membre n° {id}",
        "dissolved": "Le partenariat a été dissous",
        "ended": "Le partenariat est terminé",
        "bouncing": "Les messages à {who} reviennent en erreur depuis le {date}",
        "unsubscribed": "{who} a demandé sa désinscription le {date}",
        "suppressed": "Les messages à {who} sont bloqués (désinscription ou adresse invalide)",
        "withdrew": "{who} a quitté le programme",
        "concern": "Inquiétude signalée le {date}",
        "concern_by": "Inquiétude signalée par {who} le {date}",
        "detail": "{sentence}\u00a0: {detail}",
        "and": "\u00a0; ",
        "paused": "{who} est en pause",
        "by_checkin": "{who} a répondu «\u00a01\u00a0» au point d’étape",
        "by_partner_contact": "{who} a écrit à un autre membre avec l’adresse de suivi en copie",
        "contact": "Dernier contact confirmé le {date} ({how})",
        "no_contact": "Aucun contact confirmé depuis le {date} ({how})",
        "no_contact_start": "Aucun contact confirmé depuis le début, le {date}",
        "starting": "Partenariat commencé le {date}\u00a0; pas encore de contact confirmé",
        "since_own": "depuis le {date}",
        "since_contact": "depuis le contact confirmé le {date}",
        "since_start": "depuis le début, le {date}",
        "no_word": "{who} n’a pas donné de nouvelles {since}",
        "unanswered": "{who} n’a pas répondu {since}",
        "wrote": "{who} a écrit {times} sans réponse",
        "said_2": (
            "{who} a indiqué {times} avoir écrit sans réponse (point d’étape «\u00a02\u00a0»)"
        ),
        "said_3": (
            "{who} a indiqué le {date} ne pas encore être en contact"
            " (point d’étape «\u00a03\u00a0»)"
        ),
    },
)
SPANISH = Phrasebook(
    language="es",
    counts=("una vez", "dos veces"),
    sentences={
        "times": "{n} veces",
        "member": "{name} ({country})",
        "nameless": "participante n.º {id}",
        "dissolved": "El emparejamiento se disolvió",
        "ended": "El emparejamiento ha terminado",
        "bouncing": "El correo a {who} rebota desde el {date}",
        "unsubscribed": "{who} se dio de baja el {date}",
        "suppressed": "El correo a {who} está bloqueado (baja o dirección no válida)",
        "withdrew": "{who} se retiró",
        "concern": "Preocupación señalada el {date}",
        "concern_by": "Preocupación señalada por {who} el {date}",
        "detail": "{sentence}: {detail}",
        "and": "; ",
        "paused": "{who} está en pausa",
        "by_checkin": "{who} respondió «1» al seguimiento",
        "by_partner_contact": (
            "{who} escribió a otro miembro con copia a la dirección de seguimiento"
        ),
        "contact": "Último contacto confirmado el {date} ({how})",
        "no_contact": "Sin contacto confirmado desde el {date} ({how})",
        "no_contact_start": "Sin contacto confirmado desde el inicio, el {date}",
        "starting": "Empezó el {date}; todavía no hay contacto confirmado",
        "since_own": "desde el {date}",
        "since_contact": "desde el contacto confirmado el {date}",
        "since_start": "desde el inicio, el {date}",
        "no_word": "Sin noticias de {who} {since}",
        "unanswered": "{who} no ha respondido {since}",
        "wrote": "{who} escribió {times} sin respuesta",
        "said_2": "{who} indicó {times} que escribió sin respuesta (seguimiento «2»)",
        "said_3": "{who} indicó el {date} que todavía no hay contacto (seguimiento «3»)",
    },
)
PHRASEBOOKS = {"en": ENGLISH, "fr": FRENCH, "es": SPANISH}


def book(language: str) -> Phrasebook:
    """The phrasebook for ``language`` (``"fr"``, ``"fr-CA"``, ``"fr_CA"``), else English."""
    return PHRASEBOOKS.get(wording.language_of(language), ENGLISH)
