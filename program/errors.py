"""One family of exceptions for the whole of Rapport.

Every expected failure raises a subclass of :class:`RapportError` whose message names the thing
involved (the file and line, the key, the address, the outbox row).  Only ``rapport/cli.py`` turns
them into exit codes: :class:`UsageError` and its children exit 2, everything else exits 1.
"""

from __future__ import annotations

from dataclasses import dataclass


class RapportError(Exception):
    """Base class of every error Rapport raises on purpose."""

    exit_code = 1


class UsageError(RapportError):
    """Bad usage, bad configuration or bad input: the user has something to fix (exit 2)."""

    exit_code = 2


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an input file, located as precisely as we can.

    ``line`` and ``column`` are 1-based; ``column`` is the CSV column number or the character
    position, whichever the format has; either may be None when it is unknown.
    """

    file: str
    line: int | None
    column: int | None
    field: str | None
    message: str

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        field = f" {self.field}:" if self.field else ""
        return f"{where}:{field} {self.message}"


class InputError(UsageError):
    """An input file (CSV, topic Markdown) has one or more problems; nothing was written."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = list(problems)
        lines = [str(p) for p in self.problems]
        super().__init__("\n".join(lines))


class ConfigError(UsageError):
    """config.toml is missing, unreadable, or has a wrong key or value (message names file:line)."""


class NotFound(UsageError):
    """A name or id given on the command line does not exist (a round, a participant, a row)."""


class StateError(RapportError):
    """An operation does not fit the current state (retrying a row that was sent, say)."""


class DatabaseError(RapportError):
    """The database cannot be reached or is not at the schema this version needs."""


class SecretMissing(RapportError):
    """The reply-key secret is absent from the environment and the systemd credentials."""


class DeliveryError(RapportError):
    """Base of the SMTP adapter's errors (see mailer/smtp.py)."""
