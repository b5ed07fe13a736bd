"""A reply's own text and the check-in answer it starts with: pure, no I/O.

:func:`own_text` removes what the sender did not write from a message's text (as
:func:`mailer.mimetext.body_text` finds it): quoted lines, everything after an attribution ("On
... wrote:", "Le ... a écrit :", "Am ... schrieb ...:"), an Outlook header block or "Original
Message" separator, and the signature ("-- ", "Sent from my iPhone").  :func:`checkin_answer`
reads only the start of that text.

Every step is linear in its input, which callers cap (see ``MAX_SCAN`` in mailer/mimetext.py),
so a huge reply costs no more than a long ordinary one.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from functools import lru_cache

from mailer.mimetext import MAX_SCAN, QUOTE_END, QUOTE_START

__all__ = [
    "asks_unsubscribe",
    "checkin_answer",
    "own_text",
]


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# --- own text -------------------------------------------------------------------------------

# An attribution line ends with a verb of writing, or with the quoted sender's <address>, then a
# colon (see _attribution_end).  The verbs are at most 10 characters long.
_ATTRIBUTION_VERB = re.compile(
    r"(?:\bwrote|\bschrieb|\bschreef|\ba écrit|\bescribió|\bescreveu|\bha scritto|\bkirjoitti|"
    r"\bskrev|\bnapisał(?:\(a\)|\w{0,3})|\bpisze|写道|寫道|のメッセージ|書きました)$",
    re.IGNORECASE,
)
_ATTRIBUTION_ADDRESS = re.compile(r"<[^<>\s]{1,200}@[^<>\s]{1,200}>$")
# German, Dutch and Scandinavian clients put the sender after the verb: "Am ... schrieb X <x>:".
_ATTRIBUTION_INNER = re.compile(r"^(?:am|op|den)\b.*\b(?:schrieb|schreef|skrev)\b", re.IGNORECASE)
# How a client's attribution starts; a bare "X wrote:" without one, a date or an address only
# counts when quoted lines follow it.
_ATTRIBUTION_START = re.compile(
    r"^(?:on|le|el|em|no dia|il|am|op|den|w dniu|dnia|på|在|於)\b|@|\d", re.IGNORECASE
)
_SEPARATOR = re.compile(
    r"""^(?:
        -{2,}\s*(?:original\ message|ursprüngliche\ nachricht|message\ d'origine|mensaje\ original|
            mensagem\ original|messaggio\ originale|oorspronkelijk\ bericht|oryginalna\ wiadomość|
            alkuperäinen\ viesti|ursprungligt\ meddelande|originalmeddelelse|opprinnelig\ melding|
            原始邮件|原始郵件|元のメッセージ|forwarded\ message|message\ transféré|
            mensaje\ reenviado|
            weitergeleitete\ nachricht|mensagem\ encaminhada|messaggio\ inoltrato|
            doorgestuurd\ bericht)\s*-{2,}
        | _{10,}
        | (?:begin\ forwarded\ message|début\ du\ message\ (?:réexpédié|transféré)|
            inicio\ del\ mensaje\ reenviado|anfang\ der\ weitergeleiteten\ nachricht|
            início\ da\ mensagem\ encaminhada)\s*:
        | (?:sent\ (?:from|via|with)\ (?:my|mail|outlook|yahoo|samsung|aol|proton)
            | get\ outlook\ for | envoyé\ (?:de|depuis|à\ partir\ de)\ (?:mon|ma|l'application|
            outlook) | obtenir\ outlook\ pour | enviado\ (?:desde|de|do)\ (?:mi|meu|o\ meu|outlook|
            correo|yahoo) | obtener\ outlook\ para | von\ meinem\ .{1,40}\ gesendet |
            gesendet\ (?:von|mit)\ (?:meinem|mail|outlook|gmx|web\.de) | inviato\ da |
            verzonden\ (?:vanaf|met)\ (?:mijn|outlook) | verstuurd\ vanaf | wysłane\ z |
            lähetetty\ (?:iphonesta|androidista|outlookista) | skickat\ från)\b.{0,80}
    )$""",
    re.IGNORECASE | re.VERBOSE,
)
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_COLONS = (":", "：")
_HEADER_FROM = re.compile(
    r"^\*?(?:from|de|von|da|van|od|lähettäjä|från|fra|от|від|发件人|寄件者|差出人)\s*\*?\s*[:：]",
    re.IGNORECASE,
)
_HEADER_NEXT = re.compile(
    r"^\*?(?:sent|date|envoyé|gesendet|datum|enviado(?:\ el)?|enviada|fecha|inviato|data|"
    r"verzonden|wysłano|lähetetty|skickat|sendt|отправлено|发送时间|日期|送信日時|subject|objet|"
    r"betreff|asunto|assunto|oggetto|onderwerp|temat|aihe|ämne|emne|主题|主旨|件名)\s*\*?\s*[:：]",
    re.IGNORECASE,
)


def own_text(text: str, limit: int = 20_000) -> str:
    """What the sender wrote: ``text`` without quoted history and signature, at most ``limit``.

    Lines starting with ">" and HTML blockquotes are dropped wherever they are, so interleaved
    and bottom-posted answers keep their own lines.  History starts at an attribution line not
    followed by a quote, an Outlook header block, a separator, or the signature.
    """
    lines = text[:MAX_SCAN].replace("\r\n", "\n").replace("\r", "\n").split("\n")
    out: list[str] = []
    depth, i, n = 0, 0, len(lines)
    while i < n:
        line = lines[i]
        stripped = line.strip()
        if stripped == QUOTE_START:
            depth += 1
        elif stripped == QUOTE_END:
            depth = max(0, depth - 1)
        elif depth or stripped.startswith(">"):
            pass
        elif stripped == "--" or _SEPARATOR.match(stripped) or _outlook_header(lines, i):
            break
        else:
            span, sure = _attribution(lines, i)
            if span:
                j = i + span
                while j < n and not lines[j].strip():
                    j += 1
                if j < n and lines[j].lstrip().startswith((">", QUOTE_START)):
                    i = j
                    continue
                if sure or j >= n:
                    break
            out.append(line.rstrip())
        i += 1
    return _CONTROLS.sub("", "\n".join(out)).strip()[:limit]


def _attribution(lines: list[str], i: int) -> tuple[int, bool]:
    """(lines it spans, whether it is certainly one) for an attribution at line ``i``.

    Gmail wraps a long attribution onto a second line, so two lines joined count too.  Either
    way the candidate ends with a colon, which rules most lines out before any regex runs.
    """
    first = lines[i].strip()
    if len(first) > 300:
        return 0, False
    if first.endswith(_COLONS):
        line, span = first, 1
    else:
        second = lines[i + 1].strip() if i + 1 < len(lines) else ""
        if len(second) > 200 or not second.endswith(_COLONS):
            return 0, False
        line, span = f"{first} {second}", 2
    if _attribution_end(line) or _ATTRIBUTION_INNER.search(line):
        return span, bool(_ATTRIBUTION_START.search(line))
    return 0, False


def _attribution_end(line: str) -> bool:
    """True when ``line``, which ends with a colon, ends with a verb of writing or an <address>
    and then spaces and the colon.

    The verb is looked for in the last 12 characters only (the longest is 10, and \\b needs the
    one before): one regular expression searching the whole line for "verb, spaces, colon, end"
    took 20 to 40 microseconds, trying every alternative at every position.
    """
    core = line[:-1].rstrip()
    if _ATTRIBUTION_VERB.search(core[-12:]):
        return True
    return core.endswith(">") and _ATTRIBUTION_ADDRESS.search(core) is not None


def _outlook_header(lines: list[str], i: int) -> bool:
    """True when line ``i`` opens a quoted header block: From: then Sent:/Date:/Subject:."""
    first = lines[i]
    if (":" not in first and "：" not in first) or not _HEADER_FROM.match(first.lstrip()):
        return False
    return any(_HEADER_NEXT.match(line.lstrip()) for line in lines[i + 1 : i + 5])


# --- check-in --------------------------------------------------------------------------------

# Phrases per language: an answer starting with one of them means 1, 2 or 3 (DESIGN.md).
# Longer phrases win over their prefixes ("pas encore de réponse" is 2, "pas encore" is 3).
CHECKIN_WORDS: dict[str, dict[int, tuple[str, ...]]] = {
    "en": {
        1: ("we have been in touch", "we've been in touch", "we are in touch", "we're in touch",
            "in touch", "yes", "we have met", "we've met", "we met", "we have talked",
            "we've talked", "we talked", "we have spoken", "we spoke"),
        2: ("no reply", "no answer", "no response", "not heard back", "haven't heard back",
            "have not heard back", "i wrote but", "i have written but", "still waiting",
            "waiting for a reply", "waiting to hear back"),
        3: ("not in touch", "not yet", "no contact", "we haven't been in touch",
            "we have not been in touch", "not been in touch"),
    },
    "fr": {
        1: ("nous sommes en contact", "on est en contact", "en contact", "oui",
            "nous nous sommes parlé", "nous avons échangé", "on s'est parlé"),
        2: ("pas de réponse", "sans réponse", "aucune réponse", "j'ai écrit",
            "toujours pas de réponse", "pas encore de réponse", "j'attends sa réponse"),
        3: ("pas encore", "pas de contact", "pas en contact", "aucun contact",
            "nous ne sommes pas en contact"),
    },
    "es": {
        1: ("ya estamos en contacto", "estamos en contacto", "en contacto", "sí", "ya hablamos",
            "nos hemos reunido", "ya nos reunimos"),
        2: ("sin respuesta", "no he recibido respuesta", "no hay respuesta", "escribí pero",
            "le escribí pero", "no me ha respondido", "no me ha contestado",
            "todavía no tengo respuesta", "aún no tengo respuesta"),
        3: ("todavía no", "aún no", "no estamos en contacto", "sin contacto",
            "todavía no estamos en contacto"),
    },
    "de": {
        1: ("wir sind in kontakt", "in kontakt", "ja", "wir hatten kontakt"),
        2: ("keine antwort", "noch keine antwort", "ich habe geschrieben"),
        3: ("noch nicht", "kein kontakt", "noch kein kontakt"),
    },
    "pt": {
        1: ("estamos em contato", "estamos em contacto", "em contato", "em contacto", "sim"),
        2: ("sem resposta", "nenhuma resposta"),
        3: ("ainda não", "sem contato", "sem contacto"),
    },
    "it": {
        1: ("siamo in contatto", "in contatto", "sì"),
        2: ("nessuna risposta", "senza risposta"),
        3: ("non ancora", "nessun contatto"),
    },
}  # fmt: skip
# Written with an accent on purpose: without it "si" is French for "if".
_ACCENT_REQUIRED = frozenset({"sí", "sì"})
UNSUBSCRIBE_WORDS = (
    "unsubscribe", "please unsubscribe", "désinscription", "désinscrire", "me désinscrire",
    "désinscrivez-moi", "désabonner", "me désabonner", "désabonnement", "désabonnez-moi",
    "baja", "darme de baja", "dar de baja", "dadme de baja", "denme de baja",
)  # fmt: skip
_GREETING = re.compile(
    r"^(?:hi|hello|hey|dear|good\ (?:morning|afternoon|evening)|bonjour|bonsoir|salut|cher|chère|"
    r"coucou|hola|buenos\ días|buenas(?:\ tardes)?|estimad[oa]s?|querid[oa]s?|hallo|liebe[rs]?|"
    r"guten\ tag|olá|oi|caro|cara|ciao|buongiorno)\b",
    re.IGNORECASE | re.VERBOSE,
)
_QUANTITY = _words(
    "minute minutes min mins hour hours hr hrs h day days week weeks month months year years "
    "time times people persons person of pm am x heure heures jour jours semaine semaines mois "
    "an ans fois personnes minuto minutos hora horas día días dia dias semana semanas mes meses "
    "año años vez veces personas"
)
_CJK_AFTER_ANSWER = ("です", "でした", "番", "号")  # "3です": "it is 3"
_LEADING = " \t*_#([\"'«“‘¿¡"


def _fold(text: str) -> str:
    return " ".join(text.casefold().replace("’", "'").replace("‘", "'").split())


def _strip_accents(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))


@lru_cache(maxsize=32)
def _phrases(languages: tuple[str, ...]) -> tuple[tuple[str, bool, int], ...]:
    """(phrase, match accent-free too, answer) for ``languages``, longest first."""
    found: dict[tuple[str, bool], int] = {}
    for lang in languages:
        for answer, words in CHECKIN_WORDS.get(lang.lower().split("-")[0], {}).items():
            for word in words:
                folded = _fold(word)
                found.setdefault((folded, False), answer)
                if folded not in _ACCENT_REQUIRED:
                    found.setdefault((_strip_accents(folded), True), answer)
    ordered = sorted(found.items(), key=lambda item: -len(item[0][0]))
    return tuple((phrase, plain, answer) for (phrase, plain), answer in ordered)


@lru_cache(maxsize=32)
def _phrases_by_start(
    languages: tuple[str, ...],
) -> dict[str, tuple[tuple[int, str, bool, int], ...]]:
    """:func:`_phrases` by first character, each with its rank: a phrase can only match a text
    that starts with its first character, so only those few are tried, in the same order."""
    found: dict[str, list[tuple[int, str, bool, int]]] = {}
    for rank, (phrase, accent_free, answer) in enumerate(_phrases(languages)):
        found.setdefault(phrase[:1], []).append((rank, phrase, accent_free, answer))
    return {first: tuple(entries) for first, entries in found.items()}


def _opening(own: str) -> str:
    """The first 200 characters of ``own`` after a greeting line ("Hi Anna,") if any."""
    lines = [line.strip() for line in own.split("\n") if line.strip()]
    if len(lines) > 1 and len(lines[0]) <= 60 and _GREETING.match(lines[0]):
        lines = lines[1:]
    return "\n".join(lines)[:200].lstrip(_LEADING)


def _starts_with(text: str, phrase: str) -> bool:
    if not text.startswith(phrase):
        return False
    rest = text[len(phrase) : len(phrase) + 1]
    return not rest or not (rest.isalnum() or rest == "'")


def checkin_answer(own: str, languages: Iterable[str]) -> int | None:
    """1, 2 or 3 when ``own`` (a reply's own text) starts with a check-in answer, else None.

    A digit counts when it stands alone ("1", "1.", "2)", "3 - not yet", "1 we met"), not when
    it starts a number, an ordinal, a time or a quantity ("12", "1st", "2:30", "2 weeks ago").
    """
    start = _opening(own)
    if not start:
        return None
    if start[0] in "123":
        return int(start[0]) if _lone_digit(start[1:]) else None
    folded = _fold(start[:120])
    plain = folded if folded.isascii() else _strip_accents(folded)
    by_start = _phrases_by_start(tuple(languages))
    candidates = by_start.get(folded[:1], ())
    if plain[:1] != folded[:1]:
        candidates = tuple(sorted(candidates + by_start.get(plain[:1], ())))
    for _, phrase, accent_free, answer in candidates:
        if _starts_with(plain if accent_free else folded, phrase):
            return answer
    return None


def _lone_digit(rest: str) -> bool:
    if not rest or rest[0] == "\n":
        return True
    head = rest[0]
    if rest.startswith(_CJK_AFTER_ANSWER):
        return True
    if head.isdigit() or head.isalpha() or head in "%°€$£'":
        return False
    if head in ".,:" and rest[1:2].isdigit():
        return False
    if head.isspace():
        words = rest.split(None, 1)
        if not words:
            return True
        word = words[0].strip(".,;:!?").casefold()
        return not (word[:1].isdigit() or word in _QUANTITY)
    return True


_REPLY_PREFIX = re.compile(r"^(?:\s*(?:re|aw|sv|tr|rv|r|fw|fwd|wg)\s*:)+", re.IGNORECASE)


def asks_unsubscribe(own: str, subject: str) -> bool:
    """True when the own text starts with, or the subject is, a request to unsubscribe."""
    subject_words = _fold(_REPLY_PREFIX.sub("", subject[:200]))
    if subject_words.strip(" .!") in _UNSUBSCRIBE_FOLDED:
        return True
    start = _fold(_opening(own)[:60])
    return any(_starts_with(start, w) for w in _UNSUBSCRIBE_FOLDED)


_UNSUBSCRIBE_FOLDED = tuple(_fold(w) for w in UNSUBSCRIBE_WORDS)
