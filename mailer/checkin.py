"""A reply's own text and the check-in answer it starts with: pure, no I/O.

:func:`body_text` picks the message's own text part (text/plain first, else HTML turned into
text), never looking inside attached messages, and decodes it whatever its transfer encoding
and charset claim.  :func:`own_text` removes what the sender did not write: quoted lines,
everything after an attribution ("On ... wrote:", "Le ... a écrit :", "Am ... schrieb ...:"),
an Outlook header block or "Original Message" separator, and the signature ("-- ", "Sent from
my iPhone").  :func:`checkin_answer` reads only the start of that text.

Every step is linear in its input, which callers cap (see ``MAX_SCAN``), so hostile HTML or a
huge part costs no more than a long ordinary one.
"""

from __future__ import annotations

import binascii
import html
import re
import unicodedata
from collections.abc import Iterable, Iterator
from email.message import Message
from functools import lru_cache

__all__ = [
    "MAX_SCAN",
    "asks_unsubscribe",
    "body_text",
    "checkin_answer",
    "decode_bytes",
    "header_params",
    "header_text",
    "html_to_text",
    "own_text",
]

MAX_SCAN = 256 * 1024  # characters of a text part looked at; a reply's own text comes first
MAX_PARTS = 500  # MIME parts visited when looking for the text part
_QUOTE_START, _QUOTE_END = "\ue000", "\ue001"  # private-use marks around HTML blockquotes

# Mislabelled charsets seen in the wild, mapped to the superset that decodes what was meant.
_CHARSET_ALIASES = {
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "ks_c_5601-1987": "cp949",
    "iso-8859-8-i": "iso-8859-8",
    "windows-874": "cp874",
    "x-sjis": "shift_jis",
    "shift-jis": "shift_jis",
    "x-mac-roman": "mac_roman",
    "ascii": "us-ascii",
    "unknown-8bit": "",
    "x-unknown": "",
    "unknown": "",
}
# Charsets whose encoded bytes can all be ASCII while the text is not.
_SEVEN_BIT = ("iso-2022", "utf-7", "utf-16", "utf-32", "hz", "utf_7", "utf_16", "utf_32")
_PARAM = re.compile(r';\s*([A-Za-z0-9_.*-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;\s]*)')
_B64_JUNK = re.compile(rb"[^A-Za-z0-9+/]")


def header_params(value: str) -> tuple[str, dict[str, str]]:
    """``"text/plain; charset=utf-8"`` -> ``("text/plain", {"charset": "utf-8"})``, lower-cased.

    Forgiving where email.message is strict: a Content-Type with raw 8-bit bytes or no slash
    gives an empty type, never an exception.
    """
    main = value.split(";", 1)[0].strip().lower()
    params: dict[str, str] = {}
    for name, raw in _PARAM.findall(value[:2048]):
        if raw.startswith('"'):
            raw = raw[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        params.setdefault(name.lower(), raw.strip())
    return (main if main.count("/") == 1 else ""), params


def decode_bytes(data: bytes, charset: str | None) -> str:
    """Text from ``data`` in ``charset``, trying UTF-8 then Latin-1 when the label is no use."""
    name = (charset or "").strip().strip('"').lower()
    name = _CHARSET_ALIASES.get(name, name)
    if data.isascii() and b"\x1b" not in data and not name.startswith(_SEVEN_BIT):
        return data.decode("ascii")
    if name and name != "us-ascii":
        try:
            return data.decode(name, errors="replace")
        except Exception:  # unknown, non-text (zlib, rot13) or broken codec: fall back below
            pass
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")


def header_text(value: str) -> str:
    """A compat32 header value as text: raw 8-bit bytes read as UTF-8 (else Windows-1252),
    folding removed."""
    value = value.replace("\r\n", "").replace("\n", "").replace("\r", "")
    if value.isascii():
        return value
    try:
        data = value.encode("ascii", "surrogateescape")
    except UnicodeEncodeError:
        return value
    return decode_bytes(data, None)


def part_bytes(part: Message, limit: int = MAX_SCAN * 4) -> bytes:
    """The decoded payload of a leaf part, tolerant of bad base64 and quoted-printable.

    Decodes with binascii (C) on the first ``limit`` characters: email's own decoder is pure
    Python for quoted-printable and reads the whole part.
    """
    payload = part.get_payload()
    if not isinstance(payload, str):
        return b""
    cte = str(part.get("content-transfer-encoding", "")).strip().lower()
    if cte not in ("base64", "quoted-printable") or not payload.isascii():
        # 8-bit bodies: email gives the original bytes back only through decode=True.
        data = part.get_payload(decode=True)
        return data[:limit] if isinstance(data, bytes) else b""
    data = payload[:limit].encode("ascii")
    if cte == "base64":
        data = _B64_JUNK.sub(b"", data)
        data = data[: len(data) - len(data) % 4]
        try:
            return binascii.a2b_base64(data)
        except (binascii.Error, ValueError):
            return b""
    return binascii.a2b_qp(data)


def _leaf_parts(msg: Message) -> Iterator[Message]:
    """Leaf parts in order, not entering attached messages (message/*), at most MAX_PARTS."""
    stack = [msg]
    seen = 0
    while stack and seen < MAX_PARTS:
        part = stack.pop()
        seen += 1
        payload = part.get_payload()
        if isinstance(payload, list):
            ctype, _ = header_params(str(part.get("content-type", "")))
            if not ctype.startswith("message/"):
                stack.extend(p for p in reversed(payload) if isinstance(p, Message))
            continue
        yield part


def body_text(msg: Message) -> str:
    """The message's own text: its first inline text/plain part, else its first text/html part
    turned into text, else the salvaged text of a multipart whose boundary was lost.

    At most MAX_SCAN characters.  A part without a usable Content-Type is text/plain (RFC 2045).
    """
    html_part: Message | None = None
    broken: Message | None = None
    for part in _leaf_parts(msg):
        ctype, params = header_params(str(part.get("content-type", "")))
        disposition = str(part.get("content-disposition", "")).strip().lower()
        if disposition.startswith("attachment"):
            continue
        if ctype in ("text/plain", ""):
            return decode_bytes(part_bytes(part), params.get("charset"))[:MAX_SCAN]
        if ctype == "text/html" and html_part is None:
            html_part = part
        elif ctype.startswith("multipart/") and broken is None:
            broken = part
    if html_part is not None:
        _, params = header_params(str(html_part.get("content-type", "")))
        text = decode_bytes(part_bytes(html_part), params.get("charset"))[:MAX_SCAN]
        return html_to_text(text)
    if broken is not None:
        return _salvage(decode_bytes(part_bytes(broken), None)[:MAX_SCAN])
    return ""


def _salvage(text: str) -> str:
    """The first part's body of a multipart the parser could not split (no boundary)."""
    lines = text.replace("\r\n", "\n").split("\n")
    start = next((i for i, line in enumerate(lines) if line.strip()), 0)
    marker = lines[start].strip() if start < len(lines) else ""
    if not marker.startswith("--"):
        return text
    body_at = next((i for i in range(start, len(lines)) if not lines[i].strip()), len(lines))
    end = next(
        (i for i in range(body_at, len(lines)) if lines[i].strip().startswith(marker)), len(lines)
    )
    return "\n".join(lines[body_at + 1 : end])


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_TAG_NAME = re.compile(r"/?\s*([A-Za-z][A-Za-z0-9]*)")
_BLOCK_TAGS = _words(
    "br p div tr li ul ol h1 h2 h3 h4 h5 h6 table hr pre address section article header "
    "footer center dd dt dl"
)
_SKIP_TAGS = frozenset({"style", "script", "head", "title", "template"})
_BLANK_LINES = re.compile(r"\n{3,}")
_WHITESPACE = re.compile(r"[ \t\r\n\f\v]+")


def html_to_text(source: str) -> str:
    """Readable text of an HTML body: block elements become line breaks, blockquotes are
    marked as quotes for :func:`own_text`, scripts and styles vanish.

    A hand-written scanner rather than html.parser: it only ever moves forward, so unclosed
    tags and comments cost linear time.
    """
    out: list[str] = []
    lower = source.lower()
    pos, size = 0, len(source)
    while pos < size:
        lt = source.find("<", pos)
        if lt < 0:
            lt = size
        if lt > pos:
            out.append(_WHITESPACE.sub(" ", html.unescape(source[pos:lt])))
        if lt >= size:
            break
        if source.startswith("<!--", lt):
            end = source.find("-->", lt + 4)
            pos = size if end < 0 else end + 3
            continue
        gt = source.find(">", lt + 1)
        if gt < 0:
            break
        match = _TAG_NAME.match(source, lt + 1, gt)
        pos = gt + 1
        if not match:
            continue
        name = match.group(1).lower()
        closing = source[lt + 1 : gt].lstrip().startswith("/")
        if name in _SKIP_TAGS and not closing:
            end = lower.find("</" + name, pos)
            if end < 0:
                break
            close = source.find(">", end)
            pos = size if close < 0 else close + 1
        elif name == "blockquote":
            out.append(f"\n{_QUOTE_END if closing else _QUOTE_START}\n")
        elif name in _BLOCK_TAGS:
            out.append("\n")
    text = "".join(out).replace("\xa0", " ")
    text = "\n".join(line.strip() for line in text.split("\n"))
    return _BLANK_LINES.sub("\n\n", text)


# --- own text -------------------------------------------------------------------------------

# An attribution line ends with a verb of writing, or with the quoted sender's <address>:.
_ATTRIBUTION_END = re.compile(
    r"(?:\bwrote|\bschrieb|\bschreef|\ba écrit|\bescribió|\bescreveu|\bha scritto|\bkirjoitti|"
    r"\bskrev|\bnapisał(?:\(a\)|\w{0,3})|\bpisze|写道|寫道|のメッセージ|書きました"
    r"|<[^<>\s]{1,200}@[^<>\s]{1,200}>)\s*[:：]$",
    re.IGNORECASE,
)
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
        if stripped == _QUOTE_START:
            depth += 1
        elif stripped == _QUOTE_END:
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
                if j < n and lines[j].lstrip().startswith((">", _QUOTE_START)):
                    i = j
                    continue
                if sure or j >= n:
                    break
            out.append(line.rstrip())
        i += 1
    return _CONTROLS.sub("", "\n".join(out)).strip()[:limit]


def _attribution(lines: list[str], i: int) -> tuple[int, bool]:
    """(lines it spans, whether it is certainly one) for an attribution at line ``i``.

    Gmail wraps a long attribution onto a second line, so two lines joined count too.
    """
    first = lines[i].strip()
    if len(first) > 300:
        return 0, False
    candidates = [(first, 1)]
    if i + 1 < len(lines) and not first.endswith((":", "：")):
        second = lines[i + 1].strip()
        if len(second) <= 200:
            candidates.append((f"{first} {second}", 2))
    for line, span in candidates:
        if not line.endswith((":", "：")):
            continue
        if _ATTRIBUTION_END.search(line) or _ATTRIBUTION_INNER.search(line):
            return span, bool(_ATTRIBUTION_START.search(line))
    return 0, False


def _outlook_header(lines: list[str], i: int) -> bool:
    """True when line ``i`` opens a quoted header block: From: then Sent:/Date:/Subject:."""
    if not _HEADER_FROM.match(lines[i].lstrip()):
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
    plain = _strip_accents(folded)
    for phrase, accent_free, answer in _phrases(tuple(languages)):
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
