"""Bad config.toml: every case is refused with a ConfigError naming the file, the line and the
key (exit 2 from the command line, no traceback), and a secret pasted into the file is never
echoed back in the message."""

from __future__ import annotations

import re

import pytest

from program.config import example_config, parse_config
from program.errors import ConfigError
from tests.bad_input.common import Cli
from tests.conftest import Project

GOOD = example_config()
SECRET = "hunter2-Sup3r-S3cret-Passw0rd"


def _in(section: str, line: str, text: str = GOOD) -> str:
    """``text`` with ``line`` added as the first key of ``[section]``."""
    marker = f"[{section}]\n"
    assert marker in text
    return text.replace(marker, marker + line + "\n", 1)


# (id, config text, expected texts in the message, a text the message must not contain)
CASES: list[tuple[str, str, tuple[str, ...], str | None]] = [
    ("toml-syntax", GOOD + "\nport = = 3\n", ("not valid TOML", "line"), None),
    ("toml-unclosed-table", GOOD + "\n[smtp\n", ("not valid TOML",), None),
    ("toml-duplicate-section", GOOD + "\n[smtp]\nport = 25\n", ("not valid TOML",), None),
    ("toml-unclosed-string", _in("program", 'name = "Net'), ("not valid TOML",), None),
    ("port-as-text", _in("smtp", 'port = "587"'), ("smtp.port: expected a whole number",), None),
    ("port-as-float", _in("smtp", "port = 587.0"), ("smtp.port: expected a whole number",), None),
    ("bool-as-text", _in("privacy", 'store_bodies = "yes"'), ("expected true or false",), None),
    ("bool-as-int", _in("privacy", "store_bodies = 1"), ("expected true or false",), None),
    (
        "name-as-number",
        _in("program", "name = 5").replace('name = "International Librarians Network"\n', ""),
        ("program.name: expected a string in quotes",),
        None,
    ),
    (
        "folders-as-string",
        _in("imap", 'folders = "INBOX"'),
        ("imap.folders: expected a list",),
        None,
    ),
    (
        "section-as-value",
        "program = 3\n" + GOOD.replace("[program]", "[program_x]", 1),
        ("unknown section",),
        None,
    ),
    ("unknown-key", _in("smtp", "colour = 3"), ("smtp.colour: unknown key",), None),
    ("unknown-section", GOOD + "\n[mail]\nhost = 'x'\n", ("mail: unknown section",), None),
    (
        "password-in-smtp",
        _in("smtp", f'password = "{SECRET}"'),
        ("smtp.password: unknown key",),
        SECRET,
    ),
    (
        "password-in-imap",
        _in("imap", f"password = '{SECRET}'"),
        ("imap.password: unknown key",),
        SECRET,
    ),
    (
        "secret-in-program",
        _in("program", f'secret = "{SECRET}"'),
        ("program.secret: unknown key",),
        SECRET,
    ),
    (
        "secret-section",
        GOOD + f'\n[secrets]\nrapport = "{SECRET}"\n',
        ("secrets: unknown section",),
        SECRET,
    ),
    (
        "password-pasted-as-env-name",
        _in("smtp", f'password_env = "{SECRET}!"'),
        ("smtp.password_env: must be the NAME of an environment variable",),
        SECRET,
    ),
    (
        "from-address-crlf",
        _in("program", 'from_address = "c@example.org\\r\\nBcc: x@evil.example"').replace(
            'from_address = "coordinators@example.org"\n', ""
        ),
        ("program.from_address:",),
        None,
    ),
    (
        "from-address-display-name",
        _in("program", 'from_address = "Net <c@example.org>"').replace(
            'from_address = "coordinators@example.org"\n', ""
        ),
        ("program.from_address: not a valid email address",),
        None,
    ),
    (
        "program-name-line-feed",
        _in("program", 'name = "Net\\nBcc: x@evil.example"').replace(
            'name = "International Librarians Network"\n', ""
        ),
        ("program.name: must not contain line breaks or NUL",),
        None,
    ),
    (
        "program-name-carriage-return",
        _in("program", 'name = "Net\\rX"').replace(
            'name = "International Librarians Network"\n', ""
        ),
        ("program.name: must not contain line breaks or NUL",),
        None,
    ),
    (
        "program-name-nul",
        _in("program", 'name = "Net\\u0000X"').replace(
            'name = "International Librarians Network"\n', ""
        ),
        ("program.name: must not contain line breaks or NUL",),
        None,
    ),
    (
        "reply-address-without-key",
        GOOD.replace("coordinators+{key}@example.org", "coordinators@example.org"),
        ("program.reply_address: must contain {key} once",),
        None,
    ),
    (
        "reply-address-key-twice",
        GOOD.replace("coordinators+{key}@example.org", "c+{key}{key}@example.org"),
        ("program.reply_address: must contain {key} once",),
        None,
    ),
    (
        "reply-address-key-in-domain",
        GOOD.replace("coordinators+{key}@example.org", "coordinators@{key}.example.org"),
        ("program.reply_address: must contain {key} once, before the @",),
        None,
    ),
    (
        "reply-address-crlf",
        GOOD.replace("coordinators+{key}@example.org", "c+{key}@example.org\\r\\nBcc: x@y.org"),
        ("program.reply_address:",),
        None,
    ),
]


@pytest.mark.parametrize(
    ("text", "expected", "secret"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_config_is_refused(text: str, expected: tuple[str, ...], secret: str | None) -> None:
    """Each bad config.toml raises ConfigError naming the file and key; secrets stay unsaid."""
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "conf/config.toml")
    message = str(caught.value)
    assert message.startswith("conf/config.toml"), message
    for part in expected:
        assert part in message, message
    if secret is not None:
        assert secret not in message
        # The line of the pasted secret (its key's, or its section's for a section).
        assert re.match(r"conf/config\.toml:\d+: ", message), message


@pytest.mark.parametrize(
    ("text", "expected", "secret"),
    [c[1:] for c in CASES if c[0] in ("toml-syntax", "password-in-smtp", "from-address-crlf")],
    ids=["toml-syntax", "password-in-smtp", "from-address-crlf"],
)
def test_bad_config_exits_2_from_the_command_line(
    blank: Project, cli: Cli, text: str, expected: tuple[str, ...], secret: str | None
) -> None:
    """The command line reports a bad config with exit 2 and no traceback or secret."""
    blank.config.write_text(text, encoding="utf-8")
    result = cli("--config", blank.config, "round", "list")
    assert result.code == 2, (result.out, result.err)
    assert "Traceback" not in result.err and result.out == ""
    assert all(part in result.err for part in expected), result.err
    assert secret is None or secret not in result.err


def test_config_that_is_not_utf8_is_refused(blank: Project, cli: Cli) -> None:
    """A config file in Latin-1 is refused by name, not with a decoding traceback."""
    blank.config.write_bytes(GOOD.replace("Librarians", "Bibliothécaires").encode("latin-1"))
    result = cli("--config", blank.config, "round", "list")
    assert result.code == 2 and "cannot read" in result.err and "Traceback" not in result.err
