"""config.toml -> validated, frozen :class:`Settings`; and the commented example back out.

Loaded once by the entry point and passed down; nothing here runs at import time.  Every error
names the file, the line and the key's path (``config.toml:12: smtp.port: expected a whole
number``).  Secrets never live in the file: they come from the environment or from systemd
credentials (``$CREDENTIALS_DIRECTORY``).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from datetime import time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from email_validator import EmailNotValidError, validate_email
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from program import calendar
from program.errors import ConfigError, SecretMissing
from program.settings import REQUIRED, SECTIONS, Settings

_DURATION = re.compile(r"^\s*(\d+)\s*([smhd])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
_HEADER = re.compile(r"^\s*\[\s*([A-Za-z0-9_.-]+)\s*\]")
_KEY = re.compile(r"^\s*([A-Za-z0-9_-]+)\s*=")
_HTTPS_URL = re.compile(r"https://[A-Za-z0-9.-]+(?::\d+)?(?:/[A-Za-z0-9._~!$&'()*+,;=:@%/?-]*)?")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")


class _Bad(ValueError):
    """A value that does not fit its key; the loader adds the file, line and key path."""


def parse_duration(text: str) -> timedelta:
    """``"90s"``, ``"30m"``, ``"36h"``, ``"3d"`` -> timedelta."""
    match = _DURATION.match(text) if isinstance(text, str) else None
    if not match:
        raise _Bad(
            f'expected a duration with a unit, like "90s", "30m", "36h" or "3d"; got {text!r}'
        )
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


def format_duration(value: timedelta) -> str:
    """The shortest exact ``"<n><unit>"`` spelling of ``value``."""
    seconds = int(value.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def parse_time(text: str) -> time:
    """``"HH:MM"`` (24-hour clock) -> time."""
    if not isinstance(text, str):
        raise _Bad(f'expected a time of day as "HH:MM" in quotes; got {text!r}')
    try:
        return calendar.parse_local_time(text)
    except ValueError as exc:
        raise _Bad(f"expected a time of day as HH:MM: {exc}") from None


def check_address(text: str, *, template: bool = False) -> str:
    """A single plain address (``user@example.org``), with ``{key}`` allowed in a template."""
    if not isinstance(text, str):
        raise _Bad(f"expected an email address in quotes; got {text!r}")
    if template:
        if text.count("{key}") != 1 or text.index("{key}") > text.find("@"):
            raise _Bad(
                "must contain {key} once, before the @ (like coordinators+{key}@example.org);"
                f" got {text!r}"
            )
        text_to_check = text.replace("{key}", "k")
    else:
        text_to_check = text
    try:
        validate_email(text_to_check, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as exc:
        raise _Bad(f"not a valid email address: {text!r} ({exc})") from None
    return text


def _parse(value: Any, meta: Mapping[str, Any]) -> Any:
    kind = meta["kind"]
    if kind in (
        "str",
        "path",
        "url",
        "zone",
        "choice",
        "address",
        "envname",
        "dburl",
    ) and not isinstance(value, str):
        raise _Bad(f"expected a string in quotes; got {value!r}")
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Bad(f"expected a whole number; got {value!r}")
        if value < meta.get("minimum", value):
            raise _Bad(f"must be at least {meta['minimum']}; got {value}")
        if value > meta.get("maximum", value):
            raise _Bad(f"must be at most {meta['maximum']}; got {value}")
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise _Bad(f"expected true or false; got {value!r}")
        return value
    if kind == "list":
        if (
            not isinstance(value, list)
            or not value
            or not all(isinstance(v, str) and v.strip() for v in value)
        ):
            raise _Bad(f'expected a list of names in quotes, like ["INBOX"]; got {value!r}')
        if any(c in v for v in value for c in "\r\n\0"):
            raise _Bad("must not contain line breaks or NUL")
        return tuple(value)
    if kind == "duration":
        duration = parse_duration(value)
        if not duration:
            raise _Bad(f"must be longer than zero; got {value!r}")
        return duration
    if kind == "time":
        return parse_time(value)
    if kind == "choice" and value not in meta["choices"]:
        raise _Bad(f"expected one of {', '.join(meta['choices'])}; got {value!r}")
    if kind == "zone":
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise _Bad(
                f"unknown time zone {value!r} (use an IANA name like Europe/Paris)"
            ) from None
    if kind == "address" and not (meta.get("optional") and value == ""):
        check_address(value, template=meta.get("template", False))
    if kind == "url" and value:
        if not _HTTPS_URL.fullmatch(value.replace("{key}", "k")):
            raise _Bad(
                "must be an https:// URL (no spaces, quotes or angle brackets) or empty;"
                f" got {value!r}"
            )
        if meta.get("template") and value.count("{key}") != 1:
            raise _Bad("must contain {key} once, so each unsubscribe names its participant")
    if kind == "envname" and not _ENV_NAME.fullmatch(value):
        # Never echo the value: someone may have pasted the password itself here.
        raise _Bad("must be the NAME of an environment variable (letters, digits, _), not a secret")
    if kind == "dburl":
        try:
            backend = make_url(value).get_backend_name()
        except ArgumentError:
            backend = ""
        if backend not in ("sqlite", "postgresql"):
            raise _Bad(
                f"expected sqlite:///PATH or postgresql+psycopg://USER@HOST/DB; got {value!r}"
            )
    if "\n" in value or "\r" in value or "\0" in value:
        raise _Bad("must not contain line breaks or NUL")
    return value


def _key_lines(text: str) -> dict[tuple[str, str], int]:
    """Map (section, key) and (section, "") to the 1-based line they stand on."""
    lines: dict[tuple[str, str], int] = {}
    section = ""
    for number, line in enumerate(text.splitlines(), start=1):
        if header := _HEADER.match(line):
            section = header.group(1)
            lines.setdefault((section, ""), number)
        elif key := _KEY.match(line):
            lines.setdefault((section, key.group(1)), number)
    return lines


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (127.0.0.0/8, ::1), where plaintext is allowed."""
    name = host.strip("[]").rstrip(".").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def parse_config(text: str, source: str) -> Settings:
    """Validate the text of a config file; ``source`` is the path used in messages."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    lines = _key_lines(text)

    def fail(section: str, key: str, message: str) -> ConfigError:
        line = lines.get((section, key)) or lines.get((section, ""))
        where = f"{source}:{line}" if line else source
        path = f"{section}.{key}" if key else section
        return ConfigError(f"{where}: {path}: {message}")

    sections: dict[str, Any] = {}
    for name in data:
        if name not in SECTIONS:
            known = ", ".join(f"[{s}]" for s in SECTIONS)
            raise fail(name, "", f"unknown section (known: {known})")
    for name, cls in SECTIONS.items():
        table = data.get(name, {})
        if not isinstance(table, dict):
            raise fail(name, "", "must be a table like [" + name + "]")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for key in table:
            if key not in fields:
                raise fail(name, key, f"unknown key (known: {', '.join(fields)})")
        values: dict[str, Any] = {}
        for key, spec in fields.items():
            if key in table:
                try:
                    values[key] = _parse(table[key], spec.metadata)
                except _Bad as exc:
                    raise fail(name, key, str(exc)) from None
            elif spec.default is dataclasses.MISSING:
                raise fail(name, key, "is required")
        sections[name] = cls(**values)

    for name, protocol in (("smtp", "SMTP"), ("imap", "IMAP")):
        server = sections[name]
        if (
            server.host
            and server.security == "none"
            and not (is_loopback(server.host) or server.allow_plaintext)
        ):
            raise fail(
                name,
                "security",
                f"plaintext {protocol} to {server.host!r} is refused; use starttls or tls, or set"
                " allow_plaintext = true if you really mean it",
            )
    if sections["schedule"].poll_every.total_seconds() < 30:
        raise fail("schedule", "poll_every", "must be at least 30s")
    health = sections["health"]
    if health.at_risk_days < health.quiet_days:
        raise fail(
            "health",
            "at_risk_days",
            f"must be at least quiet_days ({health.quiet_days}), not {health.at_risk_days}",
        )
    if sections["imap"].host and sections["maildir"].path:
        raise fail("maildir", "path", "set either [imap] host or [maildir] path, not both")
    return Settings(**sections, source=source)


def config_path(explicit: str | None, environ: Mapping[str, str] = os.environ) -> Path:
    """--config, else $RAPPORT_CONFIG, else ./config.toml."""
    return Path(explicit or environ.get("RAPPORT_CONFIG") or "config.toml")


def load_config(path: Path) -> Settings:
    """Read and validate ``path``; raises ConfigError naming the file on any problem."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: no such config file (run `rapport init` to write one)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    return parse_config(text, str(path))


def database_url(settings: Settings) -> str:
    """The database URL with a relative SQLite path made relative to the config file's folder."""
    url = settings.database.url
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and url != "sqlite://":
        rest = url[len(prefix) :]
        if rest and rest != ":memory:":
            base = (
                Path(settings.source).resolve().parent
                if settings.source != "<defaults>"
                else Path.cwd()
            )
            return prefix + str(base / rest)
    return url


def read_secret(
    env_name: str, credential: str, environ: Mapping[str, str] = os.environ
) -> str | None:
    """A secret from ``$env_name`` or the systemd credential file ``credential``; None if absent."""
    value = environ.get(env_name)
    if value:
        return value
    directory = environ.get("CREDENTIALS_DIRECTORY")
    if directory:
        try:
            return (Path(directory) / credential).read_text(encoding="utf-8").strip() or None
        except OSError:
            return None
    return None


def reply_secret(environ: Mapping[str, str] = os.environ) -> bytes:
    """The reply-key secret: $RAPPORT_SECRET or the credential ``rapport-secret``, >= 16 bytes."""
    value = read_secret("RAPPORT_SECRET", "rapport-secret", environ)
    if not value:
        raise SecretMissing(
            "no reply-key secret: set RAPPORT_SECRET (or the systemd credential rapport-secret)"
            " to a long random string, e.g. the output of `openssl rand -hex 32`"
        )
    if len(value.encode()) < 16:
        raise SecretMissing("RAPPORT_SECRET is too short: use at least 16 random characters")
    return value.encode("utf-8")


def _format_value(value: Any) -> str:
    if isinstance(value, tuple):
        return "[" + ", ".join(_format_value(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, timedelta):
        return f'"{format_duration(value)}"'
    if isinstance(value, time):
        return f'"{value:%H:%M}"'
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _wrap(text: str, width: int = 96) -> list[str]:
    words, lines, line = text.split(), [], "#"
    for word in words:
        if len(line) + 1 + len(word) > width:
            lines.append(line)
            line = "#"
        line += " " + word
    lines.append(line)
    return lines


def example_config(overrides: Mapping[str, Mapping[str, Any]] | None = None) -> str:
    """The fully commented config.toml, every key with its help text, default and example.

    ``overrides`` (section -> key -> value) sets values, as ``rapport init`` does for the
    database path.
    """
    overrides = overrides or {}
    out = [
        "# Rapport configuration. Every key is listed with its default; uncomment to change it.",
        '# Times of day are "HH:MM"; durations take a unit: "90s", "30m", "36h", "3d".',
        "# Secrets are never written here: the reply-key secret comes from $RAPPORT_SECRET (or",
        "# the systemd credential rapport-secret), the SMTP password from the variable named by",
        "# smtp.password_env.",
    ]
    for name, cls in SECTIONS.items():
        out += ["", f"[{name}]"]
        doc = (cls.__doc__ or "").split(":", 1)[-1].strip()
        out += [f"# {doc[:1].upper()}{doc[1:]}"] if doc else []
        for spec in dataclasses.fields(cls):
            meta = spec.metadata
            out.append("")
            out += _wrap(meta["help"])
            required = spec.default is dataclasses.MISSING
            if spec.name in overrides.get(name, {}):
                out.append(f"{spec.name} = {_format_value(overrides[name][spec.name])}")
            elif required:
                out.append(f"{spec.name} = {_format_value(meta['example'])}")
            elif meta.get("example") not in (None, "") and meta["example"] != spec.default:
                out.append(f"# {spec.name} = {_format_value(spec.default)}")
                out.append(f"{spec.name} = {_format_value(meta['example'])}")
            else:
                out.append(f"# {spec.name} = {_format_value(spec.default)}")
    return "\n".join(out) + "\n"


def reference_markdown() -> str:
    """The configuration reference for README.md, from the same declarations."""
    rows = ["| key | default | meaning |", "| --- | --- | --- |"]
    for name, cls in SECTIONS.items():
        for spec in dataclasses.fields(cls):
            default = (
                "(required)" if spec.default is dataclasses.MISSING else _format_value(spec.default)
            )
            rows.append(f"| `{name}.{spec.name}` | `{default}` | {spec.metadata['help']} |")
    return "\n".join(rows) + "\n"


__all__ = [
    "REQUIRED",
    "check_address",
    "config_path",
    "database_url",
    "example_config",
    "format_duration",
    "load_config",
    "parse_config",
    "parse_duration",
    "parse_time",
    "read_secret",
    "reference_markdown",
    "reply_secret",
]
