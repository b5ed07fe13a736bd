"""Compose the mail that is not a topic: nudges, coordinators' alerts and weekly reports.

Pure, like mailer/compose.py, and sharing its Jinja2 environment, checks and wire format.  What a
notice says was decided when it was planned (monitor/ decides, rapport/ writes the outbox row with a
JSON ``payload``), so composing it later needs no other table: :class:`Notice` carries the
template's name, the recipient and the payload's ``data``.

Templates: ``<lang>/<template>.subject.j2``, ``.txt.j2`` and ``.html.j2`` (HTML autoescaped).  A
notice is written in the recipient's language when all three exist for it, else the program's
default, else English.  Templates get the payload's ``data`` as ``data`` and these functions:

- ``country(code)``: an ISO 3166 alpha-2 code as a short country name in the message's language;
- ``day(iso)``: an ISO date or datetime (``"2026-03-03"``) as a date in words ("3 March 2026");
- ``local_time(zone)``: the local time in an IANA zone at ``now`` ("14:05, Tue");
- ``mailto(to, cc=None, subject=None)``: a mailto: URL for one address or a list, built as topic
  emails build theirs (``mailto:coordinators+log@example.org``: '@' and '+' stay literal, so a
  client that copies the address into To gets it right; never ``|urlencode`` an address);
- ``time_zone(zone)``: an IANA zone labelled as topic emails label it at ``now``
  ("America/Argentina/Buenos Aires (UTC-3)"), or the name as given when the zone is unknown.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from email.message import Message
from email.mime.multipart import MIMEMultipart
from email.utils import format_datetime
from typing import Any
from zoneinfo import ZoneInfoNotFoundError

import jinja2

from mailer.compose import (
    FALLBACK_LANGUAGE,
    ComposeError,
    Composer,
    _check_header_text,
    _clean,
    _clean_name,
    _is_https,
    _mailto,
    _zone,
    zone_label,
)
from mailer.wire import address_header, mime_boundary, text_header, text_part
from program import wording

__all__ = ["TEMPLATES", "Notice", "compose_notice", "notice_language"]

# Every kind of notice Rapport sends, by template name.
TEMPLATES = ("nudge_pair", "nudge_silent", "nudge_coordinators", "concern", "report")
_PARTS = ("subject", "txt", "html")
_SPACES = re.compile(r"[^\S\u00a0\u202f]+")


@dataclass(frozen=True)
class Notice:
    """One nudge, alert or report to one person, as planned into the outbox.

    ``unsubscribe_address`` is set for participants (their nudges offer the same unsubscribe as
    topics) and None for coordinators.  ``data`` is the payload the template reads.
    """

    template: str
    language: str
    default_language: str
    program_name: str
    from_address: str
    recipient_name: str
    recipient_email: str
    idempotency_key: str
    message_id: str
    reply_address: str
    unsubscribe_address: str | None = None
    unsubscribe_url: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)


def notice_language(composer: Composer, template: str, language: str, default: str) -> str:
    """The language ``template`` is written in for someone who reads ``language``."""
    names = _names(composer)
    for wanted in (language, default, FALLBACK_LANGUAGE):
        for candidate in (wanted, wanted.lower().replace("_", "-").partition("-")[0]):
            if all(f"{candidate}/{template}.{part}.j2" in names for part in _PARTS):
                return candidate
    raise ComposeError(f"no {template} templates for {language!r}, {default!r} or 'en'")


def compose_notice(composer: Composer, notice: Notice, *, now: datetime) -> Message:
    """The notice as a multipart/alternative message dated ``now`` (zone-aware)."""
    key = notice.idempotency_key
    if now.tzinfo is None or now.utcoffset() is None:
        raise ComposeError(f"{key}: now must be a zone-aware datetime, got {now!r}")
    if notice.template not in TEMPLATES:
        raise ComposeError(f"{key}: unknown notice template {notice.template!r}")
    for name, value in (
        ("program_name", notice.program_name),
        ("recipient_name", notice.recipient_name),
        ("recipient_email", notice.recipient_email),
        ("from_address", notice.from_address),
        ("reply_address", notice.reply_address),
        ("message_id", notice.message_id),
        ("unsubscribe_address", notice.unsubscribe_address or ""),
        ("unsubscribe_url", notice.unsubscribe_url or ""),
    ):
        _check_header_text(value, name, key)
    lang = notice_language(composer, notice.template, notice.language, notice.default_language)
    env = composer.env
    countries = composer._countries.get(lang) or composer._countries.get(FALLBACK_LANGUAGE, {})
    helpers = {
        "country": lambda code: countries.get(str(code).upper(), str(code).upper()),
        "day": lambda value: _day(value, lang),
        "local_time": lambda zone: _local_time(zone, now, lang),
        "mailto": _mailto_url,
        "time_zone": lambda zone: _time_zone(zone, now),
    }
    context = {
        "language": lang,
        "program_name": _clean_name(notice.program_name),
        "recipient": {"name": _clean_name(notice.recipient_name), "email": notice.recipient_email},
        "reply_address": notice.reply_address,
        "unsubscribe_address": notice.unsubscribe_address,
        "unsubscribe_mailto": (
            _mailto([notice.unsubscribe_address], subject="unsubscribe")
            if notice.unsubscribe_address
            else None
        ),
        "data": notice.data,
        **helpers,
    }
    try:
        subject_t, text_t, html_t = (
            env.get_template(f"{lang}/{notice.template}.{part}.j2") for part in _PARTS
        )
        # One line: runs of white space become one space, but not the no-break spaces French
        # puts before ":" and "?".
        subject = _SPACES.sub(" ", subject_t.render(context)).strip()
        context["subject"] = subject
        text = text_t.render(context)
        html = html_t.render(context)
    except jinja2.TemplateError as exc:
        problem = f"{key}: {notice.template} templates for {lang!r} failed: {exc}"
        raise ComposeError(problem) from exc
    if not subject:
        raise ComposeError(f"{key}: {lang}/{notice.template}.subject.j2 rendered an empty subject")
    msg = MIMEMultipart("alternative", boundary=mime_boundary(key))
    msg["From"] = address_header(_clean_name(notice.program_name), notice.from_address)
    msg["To"] = address_header(_clean_name(notice.recipient_name), notice.recipient_email)
    msg["Subject"] = text_header(_clean(subject))
    msg["Date"] = format_datetime(now)
    msg["Message-ID"] = notice.message_id
    msg["Reply-To"] = notice.reply_address
    if notice.unsubscribe_address:
        unsubscribe = f"<{_mailto([notice.unsubscribe_address], subject='unsubscribe')}>"
        url = notice.unsubscribe_url
        if url and _is_https(url):
            msg["List-Unsubscribe"] = f"{unsubscribe}, <{url}>"
            msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        else:
            msg["List-Unsubscribe"] = unsubscribe
    msg["Auto-Submitted"] = "auto-generated"
    msg["Content-Language"] = lang
    msg.attach(text_part("plain", text))
    msg.attach(text_part("html", html))
    return msg


def _names(composer: Composer) -> frozenset[str]:
    cached = getattr(composer, "_notice_names", None)
    if cached is None:
        cached = frozenset(composer.env.list_templates(extensions=["j2"]))
        composer._notice_names = cached  # type: ignore[attr-defined]
    return cached


def _day(value: Any, lang: str) -> str:
    """A date in words: ``3 March 2026``, ``3 mars 2026`` (``1er avril 2026``), ``3 de marzo de
    2026``; see :func:`program.wording.date_in_words`."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value) if "T" in value else date.fromisoformat(value)
        except ValueError:
            return value
    if isinstance(value, datetime):
        value = value.date()
    if not isinstance(value, date):
        return str(value)
    return wording.date_in_words(value, lang)


def _local_time(zone: Any, now: datetime, lang: str) -> str:
    """The time of day now in ``zone``, with the weekday: ``14:05, Tue``."""
    try:
        local = now.astimezone(_zone(str(zone)))
    except (ZoneInfoNotFoundError, ValueError):
        return ""
    weekday = wording.weekday_name(local.weekday(), lang)
    return f"{local:%H:%M}, {weekday}"


def _mailto_url(to: str | Iterable[str], cc: str | None = None, subject: str | None = None) -> str:
    """A mailto: URL for ``to`` (one address or several), as :func:`mailer.compose._mailto`
    builds it for topic emails: '@' and '+' in addresses stay literal, fields are encoded."""
    addresses = [to] if isinstance(to, str) else [str(a) for a in to]
    return _mailto(addresses, cc=cc, subject=subject)


def _time_zone(zone: Any, now: datetime) -> str:
    """``zone`` labelled as topic emails label a partner's zone at ``now``
    (:func:`mailer.compose.zone_label`); an empty or unknown zone is shown as given."""
    name = "" if zone is None else str(zone)
    try:
        return zone_label(name, now)
    except (ZoneInfoNotFoundError, ValueError):
        return name
