"""Bad topic folders (Markdown with TOML front matter): refused with exit 2 naming file, line and
key, nothing written; or imported as given and, once composed, inert: raw HTML, scripts,
``javascript:`` links and Jinja syntax in a topic reach the email as text, never as code."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from mailer.compose import Composer, Person, TopicEmail, to_bytes
from program.topics import MAX_BODY
from tests.bad_input.common import ROUND, Cli, accepted, refused, write
from tests.bad_input.safety import assert_inert_html, assert_safe_message, bodies, parse
from tests.conftest import Project

NOW = datetime(2027, 3, 1, 9, 0, tzinfo=UTC)


def topic(front: str = 'title = "Hello"\norder = 1\n', body: str = "Text.\n") -> str:
    return f"+++\n{front}+++\n{body}"


# (id, {file name: content}, expected texts on stderr)
Case = tuple[str, dict[str, str | bytes], tuple[str, ...]]
ORDER_CASES: list[Case] = [
    (
        f"order-{label}",
        {"01.md": topic(f'title = "Hello"\norder = {value}\n')},
        (f"01.md:3: order: must be a whole number from 1 to 500; got {shown}",),
    )
    for label, value, shown in (
        ("zero", "0", "0"),
        ("negative", "-1", "-1"),
        ("text", '"x"', "'x'"),
        ("fraction", "1.5", "1.5"),
        ("boolean", "true", "True"),
        ("list", "[1]", "[1]"),
    )
]
REFUSED: list[Case] = [
    (
        "toml-unclosed-string",
        {"01.md": topic('title = "Hello\norder = 1\n')},
        ("01.md:2:", "front matter:"),
    ),
    ("toml-bare-word", {"01.md": topic("title = Hello\norder = 1\n")}, ("01.md:2:",)),
    ("toml-duplicate-key", {"01.md": topic('title = "a"\ntitle = "b"\norder = 1\n')}, ("01.md:3",)),
    (
        "front-matter-never-closed",
        {"01.md": '+++\ntitle = "Hello"\norder = 1\n\nText.\n'},
        ("01.md:1: the front matter is never closed",),
    ),
    (
        "front-matter-closed-by-a-different-fence",
        {"01.md": '+++\ntitle = "Hello"\norder = 1\n---\nText.\n'},
        ("01.md:1: the front matter is never closed",),
    ),
    (
        "title-line-feed",
        {"01.md": topic('title = "Hello\\nBcc: x@evil.example"\norder = 1\n')},
        ("01.md:2: title: must be one line of text; it contains a line break",),
    ),
    (
        "title-carriage-return",
        {"01.md": topic('title = "Hello\\r\\nBcc: x@evil.example"\norder = 1\n')},
        ("01.md:2: title: must be one line of text; it contains a line break",),
    ),
    (
        "title-multi-line-string",
        {"01.md": topic('title = """Hello\nBcc: x@evil.example"""\norder = 1\n')},
        ("01.md:2: title: must be one line of text; it contains a line break",),
    ),
    (
        "title-line-separator",
        {"01.md": topic('title = "Hello\\u2028there"\norder = 1\n')},
        ("01.md:2: title: must be one line of text; it contains a control character (U+2028)",),
    ),
    (
        "title-nul",
        {"01.md": topic('title = "Hello\\u0000there"\norder = 1\n')},
        ("01.md:2: title: must be one line of text; it contains a NUL character",),
    ),
    (
        "title-not-a-string",
        {"01.md": topic("title = 42\norder = 1\n")},
        ("01.md:2: title: must be a non-empty string in quotes",),
    ),
    *ORDER_CASES,
    (
        "five-megabyte-body",
        {"01.md": topic(body="\n" + ("Lorem ipsum dolor sit amet. " * 36 + "\n\n") * 5000)},
        (f"01.md:6: the text is longer than {MAX_BODY:,} characters",),
    ),
    (
        "nul-in-body",
        {"01.md": topic(body="Line one.\nLine\0two.\n")},
        ("01.md:6: contains a NUL character",),
    ),
    (
        "latin-1-body",
        {"01.md": topic(body="Caf\u00e9.\n").encode("latin-1")},
        ("01.md:5: not UTF-8",),
    ),
    (
        "translation-unknown-language",
        {"01.md": topic(), "01.qq.md": topic('title = "Bonjour"\n')},
        ("01.qq.md: the file name's language: unknown language 'qq'",),
    ),
    (
        "translation-unknown-region",
        {"01.md": topic(), "01.fr-QQ.md": topic('title = "Bonjour"\n')},
        ("01.fr-QQ.md: the file name's language: unknown region 'QQ'",),
    ),
    (
        "translation-without-original",
        {"01.md": topic(), "02.fr.md": topic('title = "Bonjour"\n')},
        ("02.fr.md: a translation of 02.md, which is not in this folder",),
    ),
    (
        "translation-title-line-feed",
        {"01.md": topic(), "01.fr.md": topic('title = "Bonjour\\nBcc: x@evil.example"\n')},
        ("01.fr.md:2: title: must be one line of text; it contains a line break",),
    ),
]


@pytest.mark.parametrize(
    ("files", "expected"), [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED]
)
def test_bad_topic_folder_is_refused_and_changes_nothing(
    seeded: Project, cli: Cli, files: dict[str, str | bytes], expected: tuple[str, ...]
) -> None:
    """A bad topic file exits 2 naming file, line and key; no topic is written."""
    for name, content in files.items():
        folder = write(seeded, f"topics/{name}", content).parent
    refused(seeded, cli, ["import", "topics", folder, "--round", ROUND], expected)


HOSTILE_TITLE = "{{ 7*7 }} <script>alert(1)</script> {% raw %}"
HOSTILE_BODY = """\
Hello {{ 7*7 }} and {{ config }} and {% include 'topic.html.j2' %}.

<script>alert("body")</script>

<img src=x onerror="alert(1)"> <a href="javascript:alert(1)" onclick="x()">raw link</a>

<iframe src="https://evil.example/"></iframe>

[a link](javascript:alert(1)) [another](JaVaScRiPt:alert(1)) [spaced]( javascript:alert(1))
[encoded](java&#x09;script:alert(1)) [vb](vbscript:msgbox(1))
[data](data:text/html;base64,PHNjcmlwdD4=)

<javascript:alert(1)> ![img](javascript:alert(1)) ![pixel](https://evil.example/p.gif)

[ok](https://example.org/?q="><script>alert(1)</script>)
"""


def test_hostile_topic_is_stored_as_given_and_composed_inert(seeded: Project, cli: Cli) -> None:
    """Markup, scripts, script URLs and Jinja syntax in a topic are stored as written and reach
    the email as text: no script, handler or script URL in the HTML, nothing evaluated."""
    base = topic(f"title = '{HOSTILE_TITLE}'\norder = 1\n", HOSTILE_BODY)
    folder = write(seeded, "topics/01.md", base).parent
    write(seeded, "topics/01.fr.md", topic(f"title = '{HOSTILE_TITLE}'\n", HOSTILE_BODY))
    accepted(seeded, cli, ["import", "topics", folder, "--round", ROUND])
    rows = seeded.rows("SELECT language, title, body FROM topic_text ORDER BY language")
    assert [(r["language"], r["title"], r["body"]) for r in rows] == [
        ("en", HOSTILE_TITLE, HOSTILE_BODY.rstrip()),
        ("fr", HOSTILE_TITLE, HOSTILE_BODY.rstrip()),
    ]
    composer = Composer()
    for language in ("en", "fr"):
        data = to_bytes(composer.topic(_mail(HOSTILE_TITLE, rows[0]["body"], language), now=NOW))
        assert_safe_message(data)
        text, html = bodies(data)
        assert_inert_html(html)
        assert "49" not in text and "49" not in html
        assert "{{ 7*7 }}" in text and "{{ 7*7 }}" in html
        assert "{% include 'topic.html.j2' %}" in text
        assert '<script>alert("body")</script>' in text
        assert "&lt;script&gt;" in html
        assert HOSTILE_TITLE in str(parse(data)["Subject"])


def _mail(title: str, markdown: str, language: str) -> TopicEmail:
    ann = Person("Ann Dupont", "ann@example.org", "FR", "Europe/Paris")
    bob = Person("Bob Tane", "bob@example.org", "NZ", "Pacific/Auckland")
    return TopicEmail(
        program_name="Test Network",
        from_address="coordinators@example.org",
        recipient=ann,
        partners=(bob,),
        language=language,
        default_language="en",
        round_name=ROUND,
        topic_order=1,
        topic_title=title,
        topic_markdown=markdown,
        idempotency_key="topic/r1/1/1",
        message_id="<rapport.0123456789abcdef0123456789abcdef@example.org>",
        reply_address="coordinators+abcdefghij2345672345@example.org",
        unsubscribe_address="coordinators+unsubscribe-abcdefghij2345672345@example.org",
        unsubscribe_url=None,
        log_address="coordinators+log@example.org",
    )


def test_bom_and_crlf_topic_files_import_cleanly(seeded: Project, cli: Cli) -> None:
    """A topic saved with a BOM and CRLF line ends imports with no CR left in title or body."""
    data = b"\xef\xbb\xbf" + topic(body="Line one.\n\nLine two.\n").replace("\n", "\r\n").encode()
    folder = write(seeded, "topics/01.md", data).parent
    accepted(seeded, cli, ["import", "topics", folder, "--round", ROUND])
    assert seeded.rows("SELECT title, body FROM topic_text") == [
        {"title": "Hello", "body": "Line one.\n\nLine two."}
    ]


def test_a_body_just_under_the_limit_imports(seeded: Project, cli: Cli) -> None:
    """The size limit refuses only what is past it: a body of MAX_BODY characters imports."""
    body = ("word " * (MAX_BODY // 5))[: MAX_BODY - 1] + "."
    folder = write(seeded, "topics/01.md", topic(body=body + "\n")).parent
    accepted(seeded, cli, ["import", "topics", folder, "--round", ROUND])
    assert seeded.scalar("SELECT length(body) FROM topic_text") == MAX_BODY
