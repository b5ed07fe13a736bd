"""Compose the fortnightly topic email: pure, from templates and a context to a MIME message.

No I/O after :class:`Composer` is built (it loads the packaged templates and the country-name
catalogs once) and no clock: the caller passes ``now``, a zone-aware datetime, which becomes the
Date header and picks each partner's current UTC offset.  The result is a compat32
``email.message.Message`` (multipart/alternative, text then HTML, UTF-8 quoted-printable): the
compat32 API composes about three times faster than ``policy=default`` (see LIMITS.md), and 20,000
participants share one topic, so its Markdown is rendered once and cached (mailer/topicmd.py).

Every value that reaches a header is checked first: a control character (CR, LF, NUL and the rest
of Unicode category Cc) or an address that is not one plain ``local@domain`` raises
:class:`ComposeError` naming the field and the idempotency key.  Display names and subjects that
are not plain ASCII become RFC 2047 encoded-words of at most 75 characters.  Header encoding, the
text parts and serialization (:func:`to_bytes`, re-exported here) are in mailer/wire.py.
"""

from __future__ import annotations

import gettext
import re
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from email.message import Message
from email.mime.multipart import MIMEMultipart
from email.utils import format_datetime
from functools import lru_cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import jinja2
import pycountry
from markupsafe import Markup

from mailer.topicmd import markdown_to_html, markdown_to_text
from mailer.wire import address_header, mime_boundary, text_header, text_part, to_bytes
from program.errors import RapportError

__all__ = [
    "ComposeError",
    "Composer",
    "Person",
    "RenderedTopic",
    "TopicEmail",
    "to_bytes",  # serializes what Composer.topic returns; lives in mailer/wire.py
]

TEMPLATE_DIR = Path(__file__).parent / "templates"
FALLBACK_LANGUAGE = "en"
TOPIC_TEMPLATES = ("topic.subject.j2", "topic.txt.j2", "topic.html.j2")
MAX_TEXT = 200  # characters in a name or title: keeps every header line under 998 bytes

# Control characters (Cc) and lone surrogates never go into a header.
_FORBIDDEN = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
# Line and paragraph separators are whitespace to a reader but line breaks to str.splitlines().
_SPACES = re.compile("[ \u2028\u2029]{2,}|[\u2028\u2029]")
_LINE_BREAKS = re.compile(r"\s*[\r\n]\s*")  # a template's own line breaks; keeps no-break spaces
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_ADDR_SPEC = re.compile(rf"{_ATEXT}+(?:\.{_ATEXT}+)*@{_LABEL}(?:\.{_LABEL})*")
_MESSAGE_ID = re.compile(r"<[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,200}@[A-Za-z0-9.-]{1,253}>")
# Printable ASCII but for the characters that would end List-Unsubscribe's <...> early.
_URL = re.compile(r'https://(?:(?![<>"\\])[\x21-\x7e])+', re.IGNORECASE)

_COUNTRY_OVERRIDES: dict[str, dict[str, str]] = {
    # ISO short names that read oddly in a greeting; pycountry's common_name covers most others.
    "en": {"RU": "Russia", "CD": "DR Congo", "PS": "Palestine", "FM": "Micronesia",
           "VA": "Vatican City", "XK": "Kosovo"},
    "fr": {"RU": "Russie", "PS": "Palestine", "FM": "Micronésie", "VA": "Vatican",
           "XK": "Kosovo", "RE": "La Réunion"},
    "es": {"RU": "Rusia", "CD": "República Democrática del Congo", "PS": "Palestina",
           "FM": "Micronesia", "VA": "Ciudad del Vaticano", "XK": "Kosovo",
           "CI": "Costa de Marfil", "KM": "Comoras"},
}  # fmt: skip


class ComposeError(RapportError):
    """A message cannot be composed safely; the message names the field and the idempotency key."""


@dataclass(frozen=True)
class Person:
    """A participant: ``country`` is ISO 3166 alpha-2 (``"PL"``), ``timezone`` an IANA name.

    ``reachable`` is False for a partner whose mail bounces or whose address is suppressed: the
    topic email then does not send the recipient to that address, and says so."""

    name: str
    email: str
    country: str
    timezone: str
    reachable: bool = True


@dataclass(frozen=True)
class TopicEmail:
    """Everything one topic email says, already resolved by the caller (see module docstring)."""

    program_name: str
    from_address: str
    recipient: Person
    partners: tuple[Person, ...]
    language: str
    default_language: str
    round_name: str
    topic_order: int
    topic_title: str
    topic_markdown: str
    idempotency_key: str
    message_id: str  # "<...@domain>", stored on the outbox row (program.replykey.message_id)
    reply_address: str
    unsubscribe_address: str
    unsubscribe_url: str | None
    log_address: str


@dataclass(frozen=True)
class RenderedTopic:
    """The three rendered templates and the language they were written in."""

    language: str
    subject: str
    text: str
    html: str


class Composer:
    """Renders topic emails from one Jinja2 environment over ``template_dir``.

    ``languages`` holds every language with a complete set of topic templates; a participant
    whose language is missing gets the program's default language, then English.
    """

    def __init__(self, template_dir: Path | None = None) -> None:
        directory = TEMPLATE_DIR if template_dir is None else Path(template_dir)
        self.template_dir = directory
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(directory)),
            autoescape=_autoescape,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            auto_reload=False,  # templates are code: never stat them per message
        )
        names = set(self.env.list_templates(extensions=["j2"]))
        self.languages: frozenset[str] = frozenset(
            lang
            for lang in {name.split("/")[0] for name in names if "/" in name}
            if all(f"{lang}/{t}" in names for t in TOPIC_TEMPLATES)
        )
        try:
            self._templates = {
                lang: tuple(self.env.get_template(f"{lang}/{t}") for t in TOPIC_TEMPLATES)
                for lang in self.languages
            }
        except jinja2.TemplateError as exc:
            raise ComposeError(f"topic templates in {directory.name}/ do not load: {exc}") from exc
        self._countries = {lang: _country_names(lang) for lang in self.languages}

    def language_for(self, language: str, default_language: str) -> str:
        """The language a participant's mail is written in: theirs, the default, or English.

        A regional tag falls back to its language first: "fr-CA" is written in "fr".
        """
        for wanted in (language, default_language, FALLBACK_LANGUAGE):
            for candidate in (wanted, wanted.lower().replace("_", "-").partition("-")[0]):
                if candidate in self.languages:
                    return candidate
        raise ComposeError(f"no topic templates for {language!r}, {default_language!r} or 'en'")

    def render(self, mail: TopicEmail, *, now: datetime) -> RenderedTopic:
        """Check ``mail`` and render subject, text and HTML (``now`` must be zone-aware)."""
        key = mail.idempotency_key
        if now.tzinfo is None or now.utcoffset() is None:
            raise ComposeError(f"{key}: now must be a zone-aware datetime, got {now!r}")
        _check_mail(mail)
        lang = self.language_for(mail.language, mail.default_language)
        subject_t, text_t, html_t = self._templates[lang]
        countries = self._countries[lang]
        partners = [
            _partner_view(p, f"partners[{i}]", countries, now, key)
            for i, p in enumerate(mail.partners)
        ]
        url = mail.unsubscribe_url
        context = {
            "language": lang,
            "program_name": _clean_name(mail.program_name),
            "recipient": {"name": _clean_name(mail.recipient.name), "email": mail.recipient.email},
            "partners": partners,
            "round_name": _clean(mail.round_name),
            "topic_order": mail.topic_order,
            "topic_title": _clean(mail.topic_title),
            "log_address": mail.log_address,
            "reply_address": mail.reply_address,
            "unsubscribe_address": mail.unsubscribe_address,
            "unsubscribe_url": url if url and _is_https(url) else None,
            "log_mailto": _mailto([mail.log_address]),
            "unsubscribe_mailto": _mailto([mail.unsubscribe_address], subject="unsubscribe"),
            "reachable": [p for p in partners if p["reachable"]],
            "unreachable": [p for p in partners if not p["reachable"]],
            "write_url": _mailto(
                [p["email"] for p in partners if p["reachable"]],
                cc=mail.log_address,
                subject=mail.topic_title,
            ),
            "topic_text": markdown_to_text(mail.topic_markdown),
            "topic_html": Markup(markdown_to_html(mail.topic_markdown)),
        }
        try:
            subject = _LINE_BREAKS.sub(" ", subject_t.render(context)).strip()
            context["subject"] = subject
            text = text_t.render(context)
            html = html_t.render(context)
        except jinja2.TemplateError as exc:
            raise ComposeError(f"{key}: topic templates for {lang!r} failed: {exc}") from exc
        if not subject:
            raise ComposeError(f"{key}: template {lang}/topic.subject.j2 rendered an empty subject")
        return RenderedTopic(language=lang, subject=subject, text=text, html=html)

    def topic(self, mail: TopicEmail, *, now: datetime) -> Message:
        """The topic email for ``mail.recipient``, dated ``now``; :func:`to_bytes` serializes it."""
        rendered = self.render(mail, now=now)
        key = mail.idempotency_key
        msg = MIMEMultipart("alternative", boundary=mime_boundary(key))
        msg["From"] = address_header(_clean_name(mail.program_name), mail.from_address)
        msg["To"] = address_header(_clean_name(mail.recipient.name), mail.recipient.email)
        msg["Subject"] = text_header(rendered.subject)
        msg["Date"] = format_datetime(now)
        msg["Message-ID"] = mail.message_id
        msg["Reply-To"] = mail.reply_address
        unsubscribe = f"<{_mailto([mail.unsubscribe_address], subject='unsubscribe')}>"
        url = mail.unsubscribe_url
        if url and _is_https(url):
            msg["List-Unsubscribe"] = f"{unsubscribe}, <{url}>"
            msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        else:
            msg["List-Unsubscribe"] = unsubscribe
        msg["Auto-Submitted"] = "auto-generated"
        msg["Content-Language"] = rendered.language
        msg.attach(text_part("plain", rendered.text))
        msg.attach(text_part("html", rendered.html))
        return msg


def _autoescape(template_name: str | None) -> bool:
    return template_name is not None and template_name.endswith(".html.j2")


def _check_mail(mail: TopicEmail) -> None:
    """Raise ComposeError for the first field that could break a header or an address."""
    key = mail.idempotency_key
    if not 1 <= len(mail.partners) <= 2:
        raise ComposeError(f"{key}: partners must hold 1 or 2 people, not {len(mail.partners)}")
    texts = [
        ("program_name", mail.program_name),
        ("recipient.name", mail.recipient.name),
        ("topic_title", mail.topic_title),
        ("round_name", mail.round_name),
    ]
    texts += [(f"partners[{i}].name", p.name) for i, p in enumerate(mail.partners)]
    for field, value in texts:
        _check_header_text(value, field, key)
        if not value.strip():
            raise ComposeError(f"{key}: {field} is empty")
        if len(value) > MAX_TEXT:
            raise ComposeError(f"{key}: {field} is longer than {MAX_TEXT} characters")
    addresses = [
        ("from_address", mail.from_address),
        ("recipient.email", mail.recipient.email),
        ("reply_address", mail.reply_address),
        ("log_address", mail.log_address),
        ("unsubscribe_address", mail.unsubscribe_address),
    ]
    addresses += [(f"partners[{i}].email", p.email) for i, p in enumerate(mail.partners)]
    for field, value in addresses:
        _check_header_text(value, field, key)
        if len(value) > 254 or not _ADDR_SPEC.fullmatch(value):
            raise ComposeError(f"{key}: {field} {value!r} is not a single plain address")
    _check_header_text(mail.message_id, "message_id", key)
    if not _MESSAGE_ID.fullmatch(mail.message_id):
        raise ComposeError(f"{key}: message_id {mail.message_id!r} is not <local@domain>")
    url = mail.unsubscribe_url
    if url is not None:
        _check_header_text(url, "unsubscribe_url", key)
        if _is_https(url) and not _URL.fullmatch(url):
            raise ComposeError(f"{key}: unsubscribe_url {url!r} is not a plain https URL")


def _check_header_text(value: str, field: str, key: str) -> None:
    found = _FORBIDDEN.search(value)
    if found:
        what = {"\r": "a carriage return", "\n": "a line feed", "\x00": "a NUL"}.get(
            found.group(), "a control character"
        )
        code = f"U+{ord(found.group()):04X}"
        raise ComposeError(f"{key}: {field} contains {what} ({code}); refusing to compose")


def _clean(text: str) -> str:
    """Header-bound text as shown: trimmed, U+2028/U+2029 and runs of spaces read as one space.

    Parsers collapse runs of spaces in a display name anyway; doing it here keeps the header
    and the body the same.
    """
    return _SPACES.sub(" ", text).strip()


def _clean_name(text: str) -> str:
    """A display name as shown: every run of Unicode white space reads as one space.

    Parsers of the phrase in From/To collapse white space (no-break spaces included) inside
    encoded-words, so the name is normalised once and header and body agree.
    """
    return " ".join(text.split())


def _is_https(url: str) -> bool:
    return url[:8].lower() == "https://"


def _mailto(to: Iterable[str], *, cc: str | None = None, subject: str | None = None) -> str:
    """A mailto: URL (RFC 6068): addresses and fields percent-encoded as UTF-8."""
    url = "mailto:" + ",".join(urllib.parse.quote(a, safe="@+") for a in to)
    fields = {"cc": cc, "subject": _clean(subject) if subject else None}
    query = {k: v for k, v in fields.items() if v}
    return url + (
        "?" + urllib.parse.urlencode(query, quote_via=urllib.parse.quote) if query else ""
    )


def _partner_view(
    person: Person, field: str, countries: dict[str, str], now: datetime, key: str
) -> dict[str, Any]:
    try:
        time_zone = zone_label(person.timezone, now)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ComposeError(f"{key}: {field}.timezone {person.timezone!r} is unknown") from exc
    code = person.country.strip().upper()
    return {
        "name": _clean_name(person.name),
        "email": person.email,
        "mailto": _mailto([person.email]),
        "country_code": code,
        "country": countries.get(code, code),
        "timezone": person.timezone,
        "time_zone": time_zone,
        "reachable": person.reachable,
    }


def zone_label(timezone: str, now: datetime) -> str:
    """An IANA zone as emails show it at ``now``: ``Europe/Warsaw (CEST, UTC+2)``,
    ``America/Argentina/Buenos Aires (UTC-3)``.  Raises ZoneInfoNotFoundError or ValueError for
    an unknown zone."""
    local = now.astimezone(_zone(timezone))
    offset = local.utcoffset()
    minutes = int(offset.total_seconds() // 60) if offset is not None else 0
    sign, minutes = ("+" if minutes >= 0 else "-"), abs(minutes)
    utc = f"UTC{sign}{minutes // 60}" + (f":{minutes % 60:02d}" if minutes % 60 else "")
    abbrev = local.tzname() or ""
    label = f"{abbrev}, {utc}" if abbrev[:1].isalpha() and abbrev != "UTC" else utc
    return f"{timezone.replace('_', ' ')} ({label})"


@lru_cache(maxsize=512)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def _country_names(language: str) -> dict[str, str]:
    """ISO alpha-2 code -> short country name in ``language`` (English when no catalog)."""
    try:
        catalog: gettext.NullTranslations = gettext.translation(
            "iso3166-1", pycountry.LOCALES_DIR, languages=[language]
        )
    except OSError:
        catalog, language = gettext.NullTranslations(), "en"
    names = {
        c.alpha_2: catalog.gettext(getattr(c, "common_name", None) or c.name)
        for c in pycountry.countries
    }
    names.update(_COUNTRY_OVERRIDES.get(language, {}))
    return names
