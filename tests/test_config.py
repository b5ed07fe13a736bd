"""config.toml: validation messages name file, line and key; the example documents every key."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from program.config import (
    database_url,
    example_config,
    format_duration,
    load_config,
    parse_config,
    parse_duration,
    reference_markdown,
    reply_secret,
)
from program.errors import ConfigError, SecretMissing
from program.settings import SECTIONS

ROOT = Path(__file__).resolve().parent.parent
GOOD = example_config()


def _with(line: str, section: str = "smtp") -> str:
    """The example config with ``line`` added at the end of ``section``."""
    out, inserted, current = [], False, ""
    for text in GOOD.splitlines():
        if text.startswith("[") and current == section and not inserted:
            out.append(line)
            inserted = True
        if text.startswith("["):
            current = text.strip("[]")
        out.append(text)
    if not inserted:
        out.append(line)
    return "\n".join(out) + "\n"


def _line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), start=1) if line.startswith(needle))


def test_example_config_is_valid_and_complete() -> None:
    """The generated example parses, and every declared key appears in it with its help."""
    settings = parse_config(GOOD, "config.toml")
    assert settings.program.name == "International Librarians Network"
    for name, cls in SECTIONS.items():
        assert f"[{name}]" in GOOD
        for spec in dataclasses.fields(cls):
            assert f"{spec.name} = " in GOOD, f"{name}.{spec.name} missing from the example"
            assert spec.metadata["help"].split()[0] in GOOD


def test_repository_config_toml_is_the_generated_example() -> None:
    """The committed config.toml is exactly what `rapport init` writes, so it cannot drift."""
    assert (ROOT / "config.toml").read_text(encoding="utf-8") == GOOD


def test_readme_reference_is_generated() -> None:
    """README.md's configuration reference is the one generated from the declarations."""
    assert reference_markdown() in (ROOT / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("line", "section", "message"),
    [
        ("colour = 3", "smtp", "smtp.colour: unknown key"),
        ('port = "587"', "smtp", "smtp.port: expected a whole number"),
        ("port = 0", "smtp", "smtp.port: must be at least 1"),
        ('security = "ssl"', "smtp", "smtp.security: expected one of starttls, tls, none"),
        ('timeout = "30"', "smtp", "smtp.timeout: expected a duration with a unit"),
        (
            'topic_local_time = "9am"',
            "schedule",
            "schedule.topic_local_time: expected a time of day",
        ),
        ('topic_local_time = "24:00"', "schedule", "schedule.topic_local_time"),
        ('timezone = "Mars/Olympus"', "program", "program.timezone: unknown time zone"),
        ("allow_plaintext = 1", "smtp", "smtp.allow_plaintext: expected true or false"),
        (
            'unsubscribe_url = "http://x.org/{key}"',
            "program",
            "program.unsubscribe_url: must be an https",
        ),
        ('redirect_all_to = "not an address"', "smtp", "smtp.redirect_all_to: not a valid email"),
        ("port = 70000", "smtp", "smtp.port: must be at most 65535"),
        ('timeout = "0s"', "smtp", "smtp.timeout: must be longer than zero"),
        ('password_env = "hunter2 secret!"', "smtp", "smtp.password_env: must be the NAME"),
        ('url = "nonsense-url"', "database", "database.url: expected sqlite:///PATH"),
        (
            'unsubscribe_url = "https://example.org/u/{key} x"',
            "program",
            "program.unsubscribe_url: must be an https:// URL",
        ),
        (
            'unsubscribe_url = "https://example.org/u"',
            "program",
            "program.unsubscribe_url: must contain {key}",
        ),
        ("folders = []", "imap", "imap.folders: expected a list of names"),
        ('host = "mail.example.org"\nsecurity = "none"', "imap", "imap.security: plaintext IMAP"),
    ],
)
def test_bad_values_name_file_line_and_key(line: str, section: str, message: str) -> None:
    """Each wrong key or value is refused with the file, its line and the key's path."""
    text = _with(line, section)
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "conf/config.toml")
    expected_line = _line_of(text, line.splitlines()[-1])
    assert f"conf/config.toml:{expected_line}: {message}" in str(caught.value)


def test_unknown_section_and_bad_toml() -> None:
    """An unknown section and a TOML syntax error are both reported with their place."""
    with pytest.raises(ConfigError, match=r"config.toml:\d+: mail: unknown section"):
        parse_config(GOOD + "\n[mail]\nx = 1\n", "config.toml")
    with pytest.raises(ConfigError, match=r"config.toml: not valid TOML: .*line"):
        parse_config(GOOD + "\nport = = 3\n", "config.toml")


def test_required_keys_and_reply_address_template() -> None:
    """A missing required key, and a reply_address without {key}, are refused."""
    text = GOOD.replace('from_address = "coordinators@example.org"\n', "")
    with pytest.raises(ConfigError, match=r"config.toml:\d+: program.from_address: is required"):
        parse_config(text, "config.toml")
    text = GOOD.replace("coordinators+{key}@example.org", "coordinators@example.org")
    with pytest.raises(ConfigError, match=r"program.reply_address: must contain \{key\} once"):
        parse_config(text, "config.toml")


def test_plaintext_smtp_only_to_loopback() -> None:
    """security = none is refused for a remote host unless allow_plaintext is set."""
    remote = GOOD.replace('# host = "localhost"', 'host = "mail.example.org"').replace(
        '# security = "starttls"', 'security = "none"'
    )
    with pytest.raises(ConfigError, match=r"plaintext SMTP to 'mail\.example\.org' is refused"):
        parse_config(remote, "config.toml")
    allowed = remote.replace("# allow_plaintext = false", "allow_plaintext = true")
    assert parse_config(allowed, "config.toml").smtp.security == "none"
    loopback = GOOD.replace('# host = "localhost"', 'host = "127.0.0.1"').replace(
        '# security = "starttls"', 'security = "none"'
    )
    assert parse_config(loopback, "config.toml").smtp.host == "127.0.0.1"


def test_durations_round_trip() -> None:
    """Durations parse with their unit and print back in the shortest exact form."""
    for text in ("90s", "30m", "36h", "3d"):
        assert format_duration(parse_duration(text)) == text
    assert format_duration(parse_duration("120m")) == "2h"


def test_relative_sqlite_path_is_relative_to_the_config_file(tmp_path: Path) -> None:
    """sqlite:///rapport.db in /x/config.toml means /x/rapport.db, wherever rapport runs."""
    path = tmp_path / "config.toml"
    path.write_text(GOOD, encoding="utf-8")
    assert database_url(load_config(path)) == f"sqlite:///{tmp_path / 'rapport.db'}"


def test_missing_config_file_says_how_to_make_one(tmp_path: Path) -> None:
    """A missing file names itself and suggests `rapport init`."""
    with pytest.raises(ConfigError, match=r"no such config file.*rapport init"):
        load_config(tmp_path / "nope.toml")


def test_secret_from_environment_or_credential(tmp_path: Path) -> None:
    """The reply secret comes from RAPPORT_SECRET or the systemd credential, and must be long."""
    assert reply_secret({"RAPPORT_SECRET": "x" * 32}) == b"x" * 32
    (tmp_path / "rapport-secret").write_text("y" * 40 + "\n")
    assert reply_secret({"CREDENTIALS_DIRECTORY": str(tmp_path)}) == b"y" * 40
    with pytest.raises(SecretMissing, match="RAPPORT_SECRET"):
        reply_secret({})
    with pytest.raises(SecretMissing, match="too short"):
        reply_secret({"RAPPORT_SECRET": "short"})
