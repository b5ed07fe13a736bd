"""Tests for mailer/compose.py and topicmd.py: templates, headers, MIME, escaping, header safety."""

from __future__ import annotations

import dataclasses
import re
import string
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import format_datetime
from html import unescape
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailer.compose import (
    TEMPLATE_DIR,
    TOPIC_TEMPLATES,
    ComposeError,
    Composer,
    Person,
    TopicEmail,
    to_bytes,
)
from mailer.topicmd import markdown_to_html, markdown_to_text
from program.errors import RapportError
from program.replykey import message_id

NOW = datetime(2026, 3, 2, 8, 0, tzinfo=ZoneInfo("Europe/Warsaw"))
SUMMER = datetime(2026, 7, 6, 9, 30, tzinfo=UTC)

TOPIC_MD = """Libraries publish more open data than ever.

## Questions

1. Which datasets are public?
2. What would you open next?

- Read the [Open Definition](https://opendefinition.org/)
- Bring **one** example

![Chart of datasets](https://example.org/chart.png)
"""

CHECKIN = {
    "en": "reply 1 (we have been in touch), 2 (I wrote but have not heard back) or 3 (not in "
    "touch yet)",
    "fr": "répondez 1 (nous sommes en contact), 2 (j’ai écrit, mais sans réponse pour "
    "l’instant) ou 3 (pas encore de contact)",
    "es": "Responde 1 (ya estamos en contacto), 2 (escribí, pero aún no tengo respuesta) o 3 "
    "(todavía no estamos en contacto)",
}

MARIA = Person("Maria Kowalska", "maria@example.org", "PL", "Europe/Warsaw")
ANA = Person("Ana López", "ana@example.org", "ES", "Europe/Madrid")
LI = Person("Li Wei", "li@example.cn", "CN", "Asia/Shanghai")
GONE = Person("Li Wei", "li@example.cn", "CN", "Asia/Shanghai", reachable=False)  # bounces


def make_mail(**changes: object) -> TopicEmail:
    mail = TopicEmail(
        program_name="ILN",
        from_address="coordinators@example.org",
        recipient=MARIA,
        partners=(ANA,),
        language="en",
        default_language="en",
        round_name="2026-spring",
        topic_order=3,
        topic_title="Libraries and open data",
        topic_markdown=TOPIC_MD,
        idempotency_key="topic/2026-spring/3/maria@example.org",
        message_id="<rapport.0123456789abcdef0123456789abcdef@example.org>",
        reply_address="coordinators+k3xq7abcdefghijklmno@example.org",
        unsubscribe_address="coordinators+unsubscribe-k3xq7abcdefghijklmno@example.org",
        unsubscribe_url="https://example.org/unsubscribe/k3xq7abcdefghijklmno",
        log_address="coordinators+log@example.org",
    )
    return dataclasses.replace(mail, **changes)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def composer() -> Composer:
    return Composer()


def wire(composer: Composer, mail: TopicEmail, now: datetime = NOW) -> bytes:
    return to_bytes(composer.topic(mail, now=now))


def parse(data: bytes) -> EmailMessage:
    msg = BytesParser(policy=policy.default).parsebytes(data)
    assert isinstance(msg, EmailMessage)
    return msg


def parts(msg: EmailMessage) -> tuple[str, str]:
    plain, html = list(msg.iter_parts())
    text, markup = plain.get_content(), html.get_content()
    return text.replace("\r\n", "\n"), markup.replace("\r\n", "\n")


def test_every_template_renders_in_every_language(composer: Composer) -> None:
    """Every topic template in every language renders a pair and a triad under StrictUndefined."""
    assert {"en", "fr", "es"} <= composer.languages
    for path in TEMPLATE_DIR.glob("*/topic*"):
        assert path.name in TOPIC_TEMPLATES, f"{path.parent.name}/{path.name} is not tested"
    for lang in sorted(composer.languages):
        for partners in ((ANA,), (ANA, LI), (GONE,), (ANA, GONE)):
            rendered = composer.render(make_mail(language=lang, partners=partners), now=NOW)
            assert rendered.language == lang
            assert "Libraries and open data" in rendered.subject
            assert "\n" not in rendered.subject
            for body in (rendered.text, rendered.html):
                assert "Maria Kowalska" in body
                assert all(p.name in body for p in partners)
                if any(p.reachable for p in partners):  # else there is no one to write to
                    assert "coordinators+log@example.org" in body
            assert rendered.html.startswith("<!DOCTYPE html>")
            assert f'<html lang="{lang}">' in rendered.html


UNREACHABLE = {
    "en": "We cannot reach Li Wei by email at the moment",
    "fr": "Nous ne parvenons pas à joindre Li Wei par e-mail pour le moment",
    "es": "Por ahora no podemos escribir a Li Wei por correo electrónico",
}


@pytest.mark.parametrize("lang", ["en", "fr", "es"])
@pytest.mark.parametrize("partners", [(GONE,), (ANA, GONE)], ids=["pair", "triad"])
def test_a_partner_whose_mail_bounces_is_named_but_not_offered(
    composer: Composer, lang: str, partners: tuple[Person, ...]
) -> None:
    """A partner whose mail bounces is still named, but their address is not given, linked or put
    in the Write button; the email says the coordinators are on it; a reachable partner is."""
    text, html = parts(parse(wire(composer, make_mail(language=lang, partners=partners))))
    for body in (text, html):
        assert "Li Wei" in body and UNREACHABLE[lang] in body
        assert "li@example.cn" not in body
    hrefs = [unescape(h) for h in re.findall(r'href="([^"]+)"', html)]
    assert not any("li@example.cn" in h for h in hrefs)
    writes = [h for h in hrefs if h.startswith("mailto:") and "cc=" in h]
    if partners == (GONE,):
        assert writes == []  # no one to write to: no button
    else:
        assert writes == [
            "mailto:ana@example.org?cc=coordinators%2Blog%40example.org"
            "&subject=Libraries%20and%20open%20data"
        ]
        assert "ana@example.org" in text and "\n\n" + UNREACHABLE[lang] in text


def test_headers_are_present_and_correct(composer: Composer) -> None:
    """From, To, Subject, Date, Message-ID, Reply-To, List-Unsubscribe and friends parse back."""
    msg = parse(wire(composer, make_mail()))
    assert msg["From"] == "ILN <coordinators@example.org>"
    assert msg["To"] == "Maria Kowalska <maria@example.org>"
    assert msg["Subject"] == "ILN: Topic 3 — Libraries and open data"
    assert msg["Date"] == format_datetime(NOW)
    assert msg["Date"].datetime == NOW
    assert msg["Message-ID"] == "<rapport.0123456789abcdef0123456789abcdef@example.org>"
    assert msg["Reply-To"] == "coordinators+k3xq7abcdefghijklmno@example.org"
    assert msg["List-Unsubscribe"] == (
        "<mailto:coordinators+unsubscribe-k3xq7abcdefghijklmno@example.org?subject=unsubscribe>, "
        "<https://example.org/unsubscribe/k3xq7abcdefghijklmno>"
    )
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg["MIME-Version"] == "1.0"
    assert msg["Content-Language"] == "en"
    assert msg.get_content_type() == "multipart/alternative"
    assert not msg.defects


def test_wire_format_is_crlf_seven_bit_and_folded(composer: Composer) -> None:
    """to_bytes gives ASCII with CRLF only, header lines within 78 and body lines within 76."""
    data = wire(composer, make_mail(recipient=dataclasses.replace(MARIA, name="Łukasz Wójcik")))
    data.decode("ascii")
    assert b"\n" not in data.replace(b"\r\n", b"") and b"\r" not in data.replace(b"\r\n", b"")
    head, _, body = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        # Only a single word longer than the limit (a long mailto: URL) may overflow it.
        assert len(line) <= 78 or b" " not in line.split(b": ", 1)[-1].strip(), line
        assert line.strip() and len(line) <= 998
    assert all(len(line) <= 76 for line in body.split(b"\r\n"))


def test_both_parts_are_present_and_decodable(composer: Composer) -> None:
    """text/plain then text/html, UTF-8 quoted-printable; the text has partner and check-in."""
    msg = parse(wire(composer, make_mail()))
    plain, html = list(msg.iter_parts())
    for part, kind in ((plain, "text/plain"), (html, "text/html")):
        assert part.get_content_type() == kind
        assert part.get_content_charset() == "utf-8"
        assert part["Content-Transfer-Encoding"] == "quoted-printable"
    text, markup = parts(msg)
    assert "Ana López (Spain)" in text
    assert "ana@example.org" in text
    assert "Europe/Madrid (CET, UTC+1)" in text
    assert CHECKIN["en"] in text
    body = text.split("\n-- \n")[0].rstrip()
    assert body.splitlines()[-1].startswith("Check-in: " + CHECKIN["en"])
    assert "ana@example.org" in markup and CHECKIN["en"] in markup


@pytest.mark.parametrize("lang", ["en", "fr", "es"])
def test_check_in_line_ends_the_message_in_each_language(composer: Composer, lang: str) -> None:
    """In every language the last line before the footer is the 1/2/3 check-in."""
    text, _ = parts(parse(wire(composer, make_mail(language=lang))))
    body, footer = text.split("\n-- \n")
    assert CHECKIN[lang] in body.rstrip().splitlines()[-1]
    assert "coordinators+unsubscribe-k3xq7abcdefghijklmno@example.org" in footer


@pytest.mark.parametrize(
    ("language", "default", "expected"),
    [
        ("de", "en", "en"),
        ("de", "fr", "fr"),
        ("es", "fr", "es"),
        ("de", "xx", "en"),
        ("fr-CA", "en", "fr"),
    ],
)
def test_language_falls_back_to_default_then_english(
    composer: Composer, language: str, default: str, expected: str
) -> None:
    """A language without templates gets the program default, and English when that is missing."""
    mail = make_mail(language=language, default_language=default)
    msg = parse(wire(composer, mail))
    assert msg["Content-Language"] == expected
    text, _ = parts(msg)
    assert CHECKIN[expected] in text


def test_no_language_at_all_raises(tmp_path: Path) -> None:
    """With neither the language, the default nor English available, composing raises."""
    (tmp_path / "fr").mkdir()
    for name in TOPIC_TEMPLATES:
        (tmp_path / "fr" / name).write_text("{{ topic_title }}\n", encoding="utf-8")
    composer = Composer(tmp_path)
    assert composer.languages == frozenset({"fr"})
    with pytest.raises(ComposeError, match="'de'"):
        composer.topic(make_mail(language="de", default_language="es"), now=NOW)


def test_country_and_time_zone_in_the_recipients_language(composer: Composer) -> None:
    """Partners' countries are named in the recipient's language, with their current offset."""
    mail = make_mail(language="fr", partners=(ANA, LI))
    text, _ = parts(parse(wire(composer, mail, now=SUMMER)))
    assert "Vous formez un trio avec Ana López (Espagne) et Li Wei (Chine)" in text
    assert "Europe/Madrid (CEST, UTC+2)" in text
    assert "Asia/Shanghai (CST, UTC+8)" in text
    kolkata = dataclasses.replace(LI, timezone="Asia/Kolkata", country="IN")
    text, _ = parts(parse(wire(composer, make_mail(partners=(kolkata,)))))
    assert "Li Wei (India)" in text and "UTC+5:30" in text


def test_spanish_triad_uses_e_before_an_i_sound(composer: Composer) -> None:
    """Triads name both partners naturally: "Ana López (España) e Isabel Ruiz (Chile)"."""
    isabel = Person("Isabel Ruiz", "isabel@example.cl", "CL", "America/Santiago")
    text, _ = parts(parse(wire(composer, make_mail(language="es", partners=(ANA, isabel)))))
    assert "Formas un trío con Ana López (España) e Isabel Ruiz (Chile)" in text
    assert "escribe a Ana López e Isabel Ruiz" in text
    text, _ = parts(parse(wire(composer, make_mail(language="es", partners=(ANA, LI)))))
    assert "Ana López (España) y Li Wei (China)" in text


@pytest.mark.parametrize("name", ["Łukasz Wójcik", "王芳", "José Álvarez-Núñez"])
def test_non_ascii_names_round_trip(composer: Composer, name: str) -> None:
    """Non-ASCII names come back intact from the RFC 2047 To header and from both bodies."""
    recipient = dataclasses.replace(MARIA, name=name)
    partner = dataclasses.replace(ANA, name=name[::-1])
    msg = parse(wire(composer, make_mail(recipient=recipient, partners=(partner,))))
    assert msg["To"].addresses[0].display_name == name
    assert msg["To"].addresses[0].addr_spec == "maria@example.org"
    text, markup = parts(msg)
    assert name in text and name[::-1] in text
    assert name in markup


def test_non_ascii_program_name_and_title_round_trip(composer: Composer) -> None:
    """A non-ASCII program name and a long non-ASCII title survive From and Subject."""
    title = "Bibliothèques, données ouvertes et cœurs de métier : " + "é" * 80
    mail = make_mail(program_name="Réseau ILN", topic_title=title, language="fr")
    msg = parse(wire(composer, mail))
    assert msg["From"].addresses[0].display_name == "Réseau ILN"
    assert msg["Subject"] == f"Réseau ILN\u00a0: Thème 3 — {title}"


def test_list_unsubscribe_without_url(composer: Composer) -> None:
    """Without an unsubscribe URL there is only the mailto and no one-click header."""
    msg = parse(wire(composer, make_mail(unsubscribe_url=None)))
    assert msg["List-Unsubscribe"] == (
        "<mailto:coordinators+unsubscribe-k3xq7abcdefghijklmno@example.org?subject=unsubscribe>"
    )
    assert msg["List-Unsubscribe-Post"] is None


def test_list_unsubscribe_http_url_is_not_one_click(composer: Composer) -> None:
    """A plain http URL yields neither the one-click URL nor List-Unsubscribe-Post."""
    msg = parse(wire(composer, make_mail(unsubscribe_url="http://example.org/u/k3x")))
    assert "http://" not in msg["List-Unsubscribe"]
    assert msg["List-Unsubscribe"].startswith("<mailto:")
    assert msg["List-Unsubscribe-Post"] is None
    text, markup = parts(msg)
    assert "http://example.org" not in text and "http://example.org" not in markup


@pytest.mark.parametrize("bad", ["\r", "\n", "\r\n", "\x00", "\x85", "\x0b"])
@pytest.mark.parametrize(
    ("field", "change"),
    [
        ("recipient.name", lambda v: {"recipient": dataclasses.replace(MARIA, name=f"Ma{v}ria")}),
        ("partners[0].name", lambda v: {"partners": (dataclasses.replace(ANA, name=f"A{v}na"),)}),
        ("topic_title", lambda v: {"topic_title": f"Libraries{v}Bcc: x@evil.example"}),
        ("program_name", lambda v: {"program_name": f"ILN{v}"}),
        (
            "recipient.email",
            lambda v: {"recipient": dataclasses.replace(MARIA, email=f"m{v}@x.org")},
        ),
        ("reply_address", lambda v: {"reply_address": f"c+k{v}@example.org"}),
        ("log_address", lambda v: {"log_address": f"c+log@example.org{v}"}),
        ("unsubscribe_url", lambda v: {"unsubscribe_url": f"https://example.org/u{v}x"}),
    ],
)
def test_line_breaks_and_nul_in_header_fields_raise(
    composer: Composer, field: str, change: object, bad: str
) -> None:
    """CR, LF, NUL (and other control characters) in a header-bound field raise ComposeError."""
    mail = make_mail(**change(bad))  # type: ignore[operator]
    with pytest.raises(ComposeError) as caught:
        composer.topic(mail, now=NOW)
    assert field in str(caught.value)
    assert "topic/2026-spring/3/maria@example.org" in str(caught.value)
    assert isinstance(caught.value, RapportError)


@pytest.mark.parametrize(
    "address",
    [
        "Maria <maria@example.org>",
        "maria@example.org, eve@example.org",
        "maria@example.org eve@example.org",
        "maria",
        "maria@@example.org",
        '"maria"@example.org',
        "maria@exa mple.org",
        "maria@-example.org",
        "mária@example.org",
        "maria@example.org>",
    ],
)
def test_addresses_must_be_one_plain_addr_spec(composer: Composer, address: str) -> None:
    """Display names, lists, quoting, spaces and non-ASCII in an address field are refused."""
    mail = make_mail(recipient=dataclasses.replace(MARIA, email=address))
    with pytest.raises(ComposeError, match=r"recipient\.email .* is not a single plain address"):
        composer.topic(mail, now=NOW)


def test_other_bad_input_raises(composer: Composer) -> None:
    """Naive now, unknown time zone, empty name, four partners and a '>' in the URL all raise."""
    with pytest.raises(ComposeError, match="zone-aware"):
        composer.topic(make_mail(), now=datetime(2026, 3, 2, 8, 0))
    with pytest.raises(ComposeError, match=r"partners\[0\]\.timezone"):
        composer.topic(
            make_mail(partners=(dataclasses.replace(ANA, timezone="Mars/Base"),)), now=NOW
        )
    with pytest.raises(ComposeError, match=r"recipient\.name is empty"):
        composer.topic(make_mail(recipient=dataclasses.replace(MARIA, name="  ")), now=NOW)
    with pytest.raises(ComposeError, match="1 or 2"):
        composer.topic(make_mail(partners=(ANA, LI, MARIA, ANA)), now=NOW)
    with pytest.raises(ComposeError, match="unsubscribe_url"):
        composer.topic(make_mail(unsubscribe_url="https://example.org/u>, <https://evil"), now=NOW)


@pytest.mark.parametrize("hostile", ["<script>alert(1)</script>", "{{ 7*7 }}", "{% raw %}&amp;"])
def test_hostile_names_and_titles_are_escaped_in_html_and_verbatim_in_text(
    composer: Composer, hostile: str
) -> None:
    """Markup and template syntax in names and titles is escaped in HTML, verbatim in text."""
    mail = make_mail(
        recipient=dataclasses.replace(MARIA, name=hostile),
        partners=(dataclasses.replace(ANA, name="Ana " + hostile),),
        topic_title=hostile,
        program_name=hostile,
    )
    msg = parse(wire(composer, mail))
    text, markup = parts(msg)
    assert "<script" not in markup
    assert "49" not in text and "49" not in markup
    assert hostile in text
    escaped = hostile.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    assert escaped in markup
    assert msg["To"].addresses[0].display_name == hostile
    assert hostile in msg["Subject"]


def test_markdown_image_becomes_a_link(composer: Composer) -> None:
    """A Markdown image is a link labelled with its alt text: no <img src="http..."."""
    _, markup = parts(parse(wire(composer, make_mail())))
    assert "<img" not in markup
    assert re.search(
        r'<a href="https://example.org/chart.png" style="[^"]+">Chart of datasets</a>', markup
    )
    assert "Chart of datasets (https://example.org/chart.png)" in markdown_to_text(TOPIC_MD)
    assert "<img" not in markdown_to_html("[![badge](https://x.example/b.png)](https://x.example/)")


def test_raw_html_in_topic_is_escaped(composer: Composer) -> None:
    """Raw HTML in a topic's Markdown is shown as text, never passed through."""
    md = '<script>alert(1)</script>\n\nHello <b onclick="x()">bold</b> <img src="http://t.example/p.gif">'
    _, markup = parts(parse(wire(composer, make_mail(topic_markdown=md))))
    assert "<script" not in markup and "<b " not in markup and "<img" not in markup
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in markup
    assert "href" not in markdown_to_html("[x](javascript:alert(1))")


def test_html_is_email_safe(composer: Composer) -> None:
    """Layout tables are presentational, every link is styled inline, no style blocks or scripts."""
    _, markup = parts(parse(wire(composer, make_mail(partners=(ANA, LI)))))
    assert "<style" not in markup and "<script" not in markup and "<link" not in markup
    assert all('role="presentation"' in tag for tag in re.findall(r"<table[^>]*>", markup))
    assert all("style=" in tag for tag in re.findall(r"<a [^>]*>", markup))
    assert "mailto:ana@example.org,li@example.cn?cc=coordinators%2Blog%40example.org" in markup


def test_markdown_to_text_is_readable() -> None:
    """Plain text of a topic: underlined headings, "- " bullets, numbered items, text (url)."""
    source = (
        "# Title\n\n## Sub\n\n- a [link](https://x.example)\n  - nested\n\n"
        "3. three\n4. four\n\n> quoted\n\n    code\n\n<https://auto.example>\n"
    )
    text = markdown_to_text(source)
    assert text.splitlines()[:5] == ["Title", "=====", "", "Sub", "---"]
    assert "- a link (https://x.example)" in text
    assert "  - nested" in text
    assert "3. three\n4. four" in text
    assert "> quoted" in text
    assert "    code" in text
    assert "https://auto.example\n" in text and "(https://auto.example)" not in text


def test_message_id_is_keyed_per_row() -> None:
    """Message-IDs are stable per outbox row, differ across rows and secrets, carry no address."""
    key = "topic/2026-spring/3/42"
    first = message_id(b"secret-one-0123456789", key, "Example.ORG")
    assert first == message_id(b"secret-one-0123456789", key, "example.org")
    assert re.fullmatch(r"<rapport\.[0-9a-f]{32}@example\.org>", first)
    assert first != message_id(b"secret-one-0123456789", "topic/2026-spring/4/42", "example.org")
    assert first != message_id(b"secret-two-0123456789", key, "example.org")


def test_a_malformed_message_id_is_refused(composer: Composer) -> None:
    """A Message-ID that is not <local@domain>, or carries CR/LF, never reaches a header."""
    for bad in ("rapport.1@example.org", "<a@b>\r\nBcc: x@example.org", "<no-at-sign>"):
        with pytest.raises(ComposeError, match="message_id"):
            composer.topic(make_mail(message_id=bad), now=NOW)


def test_same_input_gives_same_bytes(composer: Composer) -> None:
    """Composing twice is byte-identical (deterministic boundary, no clock, no randomness)."""
    assert wire(composer, make_mail()) == wire(composer, make_mail())
    later = wire(composer, make_mail(), now=NOW + timedelta(days=1))
    assert later != wire(composer, make_mail())


def _shown(text: str) -> str:
    """How the composer shows header-bound text: separators and runs of spaces as one space."""
    return re.sub("[ \u2028\u2029]+", " ", text).strip()


header_text = st.one_of(
    st.text(alphabet=st.characters(exclude_categories=("Cc", "Cs")), max_size=90),
    # Mostly ASCII with the characters that need quoting or look like encoded-words.
    st.lists(st.sampled_from([*string.printable[:95], "=?", "?=", "é", "王", "\u00a0"])).map(
        "".join
    ),
).filter(lambda s: bool(s.strip()) and len(s) <= 200)


@settings(
    max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(name=header_text, partner=header_text, title=header_text)
def test_arbitrary_names_and_titles_give_safe_parseable_mail(
    composer: Composer, name: str, partner: str, title: str
) -> None:
    """Any printable names and titles give parseable CRLF bytes whose headers hold no line break."""
    mail = make_mail(
        recipient=dataclasses.replace(MARIA, name=name),
        partners=(dataclasses.replace(ANA, name=partner),),
        topic_title=title,
    )
    data = wire(composer, mail)
    data.decode("ascii")
    assert b"\n" not in data.replace(b"\r\n", b"") and b"\r" not in data.replace(b"\r\n", b"")
    msg = parse(data)
    for field, value in msg.items():
        assert "\r" not in str(value) and "\n" not in str(value), field
    assert msg["To"].addresses[0].display_name == " ".join(name.split())
    assert msg["To"].addresses[0].addr_spec == "maria@example.org"
    assert msg["Subject"] == f"ILN: Topic 3 — {_shown(title)}"
    text, _ = parts(msg)
    assert " ".join(partner.split()) in text
    assert CHECKIN["en"] in text
