"""Every config.toml key, declared once with its type, default and help text.

The loader (program/config.py) validates a file against these declarations, ``rapport init`` writes
the commented example from them, and the README's reference is generated from them too, so the
three cannot drift.  A key whose default is ``REQUIRED`` must be set in the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import time, timedelta
from typing import Any

REQUIRED: Any = object()


def setting(default: Any, help: str, *, kind: str, example: Any = None, **extra: Any) -> Any:
    """A dataclass field carrying what the loader and the example writer need to know.

    ``kind`` names the parser in program/config.py (``str``, ``int``, ``bool``, ``time``,
    ``duration``, ``address``, ``choice``, ``zone``, ``list``, ``url``, ``path``).
    ``example`` is what the generated config.toml shows when it differs from the default.
    """
    meta = {"help": help, "kind": kind, "example": example, **extra}
    if default is REQUIRED:
        return field(metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class ProgramSettings:
    """[program]: who the program is and how its mail is addressed."""

    name: str = setting(
        REQUIRED,
        "The program's name, shown as the sender's name and in subjects.",
        kind="str",
        example="International Librarians Network",
    )
    from_address: str = setting(
        REQUIRED,
        "The address topic and nudge emails come from.",
        kind="address",
        example="coordinators@example.org",
    )
    reply_address: str = setting(
        REQUIRED,
        "Where replies go; {key} is replaced by each message's reply key, so the address must be"
        " a sub-address of the coordinators' inbox (plus addressing).",
        kind="address",
        template=True,
        example="coordinators+{key}@example.org",
    )
    timezone: str = setting(
        "UTC", "The program's own time zone (IANA name), the default for coordinators.", kind="zone"
    )
    default_language: str = setting(
        "en",
        "Language for participants whose language has no templates (en, fr or es).",
        kind="str",
    )
    unsubscribe_url: str = setting(
        "",
        "Optional https URL for one-click unsubscribe (RFC 8058); {key} is replaced by the reply"
        " key. Empty: only the mailto unsubscribe is offered.",
        kind="url",
        template=True,
        example="",
    )


@dataclass(frozen=True)
class DatabaseSettings:
    """[database]: where Rapport keeps its state."""

    url: str = setting(
        "sqlite:///rapport.db",
        "SQLAlchemy URL: sqlite:///PATH (a relative path is relative to this file's folder) or"
        " postgresql+psycopg://USER@HOST/DB (the password comes from $RAPPORT_DATABASE_PASSWORD).",
        kind="dburl",
    )


@dataclass(frozen=True)
class SmtpSettings:
    """[smtp]: the server that carries outgoing mail."""

    host: str = setting("localhost", "SMTP server host name.", kind="str")
    port: int = setting(
        587, "SMTP port: 587 for starttls, 465 for tls.", kind="int", minimum=1, maximum=65535
    )
    security: str = setting(
        "starttls",
        "starttls, tls (implicit TLS) or none. none is refused unless the host is a loopback"
        " address or allow_plaintext = true. Certificates are always checked.",
        kind="choice",
        choices=("starttls", "tls", "none"),
    )
    allow_plaintext: bool = setting(
        False, "Allow security = none to a host that is not a loopback address.", kind="bool"
    )
    username: str = setting("", "Login name; empty: no login.", kind="str")
    password_env: str = setting(
        "RAPPORT_SMTP_PASSWORD",
        "Name of the environment variable holding the SMTP password (or the systemd"
        " credential smtp-password). Never put the password itself in this file.",
        kind="envname",
    )
    ca_file: str = setting(
        "",
        "Extra CA certificates (PEM) to trust, for a private CA; empty: the system's.",
        kind="path",
    )
    timeout: timedelta = setting(
        timedelta(seconds=30), "Network timeout for each SMTP command.", kind="duration"
    )
    max_per_minute: int = setting(
        120, "At most this many messages in any 60 seconds; 0: no limit.", kind="int", minimum=0
    )
    max_per_day: int = setting(
        10000, "At most this many messages in any 24 hours; 0: no limit.", kind="int", minimum=0
    )
    redirect_all_to: str = setting(
        "",
        "Rehearsal mode: deliver every message to this one address instead (headers unchanged,"
        " plus X-Rapport-Redirected-From). A rehearsal keeps its own outbox rows, so the real"
        " sends happen once it is switched off, and replies to it count for nobody. Empty: off.",
        kind="address",
        optional=True,
    )


@dataclass(frozen=True)
class ScheduleSettings:
    """[schedule]: when mail goes out."""

    topic_local_time: time = setting(
        time(9, 0),
        "Local time of day (HH:MM, in each participant's own zone) at which topics are sent.",
        kind="time",
    )
    max_lateness: timedelta = setting(
        timedelta(days=2),
        "A message more than this late (the service was down) is reported as late, not sent.",
        kind="duration",
    )
    poll_every: timedelta = setting(
        timedelta(minutes=5),
        "How often `rapport serve` reads the inbox.",
        kind="duration",
    )
    daily_time: time = setting(
        time(6, 0),
        "Time of day (HH:MM, in the program's zone) of the daily health snapshot and nudges;"
        " after downtime the day's run happens as soon as the service is back.",
        kind="time",
    )
    report_weekday: str = setting(
        "monday",
        "Day the weekly at-risk report goes to each coordinator, in the coordinator's own zone.",
        kind="choice",
        choices=("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"),
    )
    report_time: time = setting(
        time(8, 0),
        "Local time of day (HH:MM, in each coordinator's zone) at which the weekly report is sent.",
        kind="time",
    )


@dataclass(frozen=True)
class HealthSettings:
    """[health]: when a partnership changes state, in days (defaults suit a fortnightly cadence)."""

    grace_days: int = setting(
        10,
        "A partnership younger than this with no contact confirmed yet is 'starting', not quiet.",
        kind="int",
        minimum=0,
    )
    quiet_days: int = setting(
        28,
        "No contact confirmed for this long (two topics): 'quiet'.",
        kind="int",
        minimum=1,
    )
    at_risk_days: int = setting(
        42,
        "Quiet or one-sided with no contact confirmed for this long: 'at_risk'. At least"
        " quiet_days.",
        kind="int",
        minimum=1,
    )
    one_sided_days: int = setting(
        14,
        "A member not heard from for this long while their partner wrote since: 'one_sided'.",
        kind="int",
        minimum=1,
    )
    concern_phrases: tuple[str, ...] = setting(
        (),
        "Extra words or phrases that, in a participant's own words to the coordinators, raise a"
        " concern (the partnership goes at risk and coordinators are told the same day). Built in:"
        " 'inappropriate', 'uncomfortable', 'harass' and their French and Spanish equivalents."
        " Matched case-insensitively at the start of a word; only the phrase is stored.",
        kind="list",
        example=(),
    )


@dataclass(frozen=True)
class NudgeSettings:
    """[nudges]: the escalation ladder for quiet and one-sided partnerships."""

    enabled: bool = setting(
        True,
        "Send nudges at all. Off: health and reports still run, no nudge is sent.",
        kind="bool",
    )
    pair_after: timedelta = setting(
        timedelta(days=0),
        "A partnership quiet this long: a friendly note to both members.",
        kind="duration",
    )
    silent_after: timedelta = setting(
        timedelta(days=3),
        "A partnership one-sided this long: a careful note to the silent member.",
        kind="duration",
    )
    coordinators_after: timedelta = setting(
        timedelta(days=7),
        "A partnership at risk this long (after the notes above): its coordinators are told, with"
        " a suggested next action. A bounce, withdrawal or concern tells them at once.",
        kind="duration",
    )
    min_gap: timedelta = setting(
        timedelta(days=7),
        "Never more than one nudge to a participant within this long.",
        kind="duration",
    )
    local_time: time = setting(
        time(10, 0),
        "Local time of day (HH:MM, in each recipient's own zone) at which nudges are sent.",
        kind="time",
    )


@dataclass(frozen=True)
class OutboxSettings:
    """[outbox]: delivery retries."""

    max_attempts: int = setting(
        8,
        "Temporary failures (4xx) are retried up to this many attempts in all.",
        kind="int",
        minimum=1,
    )
    retry_base: timedelta = setting(
        timedelta(minutes=5),
        "Wait before the first retry; doubled each time, with jitter.",
        kind="duration",
    )
    retry_max: timedelta = setting(
        timedelta(hours=6), "Longest wait between two attempts.", kind="duration"
    )
    lease: timedelta = setting(
        timedelta(minutes=15),
        "A row left 'sending' by a process on another machine is declared uncertain after this"
        " long (on this machine a dead process is noticed at once).",
        kind="duration",
    )


@dataclass(frozen=True)
class ImapSettings:
    """[imap]: the coordinators' inbox, where replies, check-ins and bounces arrive."""

    host: str = setting(
        "",
        "IMAP server host name; empty: no IMAP inbox (use [maildir] or none).",
        kind="str",
        example="",
    )
    port: int = setting(
        993, "IMAP port: 993 for tls, 143 for starttls.", kind="int", minimum=1, maximum=65535
    )
    security: str = setting(
        "tls",
        "tls (implicit TLS), starttls or none. none is refused unless the host is a loopback"
        " address or allow_plaintext = true. Certificates are always checked.",
        kind="choice",
        choices=("starttls", "tls", "none"),
    )
    allow_plaintext: bool = setting(
        False, "Allow security = none to a host that is not a loopback address.", kind="bool"
    )
    username: str = setting("", "Login name for the inbox.", kind="str")
    password_env: str = setting(
        "RAPPORT_IMAP_PASSWORD",
        "Name of the environment variable holding the IMAP password (or the systemd credential"
        " imap-password). Never put the password itself in this file.",
        kind="envname",
    )
    ca_file: str = setting(
        "",
        "Extra CA certificates (PEM) to trust, for a private CA; empty: the system's.",
        kind="path",
    )
    folders: tuple[str, ...] = setting(
        ("INBOX",), "Folders to read. Mail is never marked read.", kind="list"
    )
    file_into: str = setting(
        "",
        "When set, mail that needs no person (a reply that is only a check-in, auto-replies,"
        " bounces, loops) is moved to this folder after it is recorded, still unread. Empty: off.",
        kind="str",
    )
    timeout: timedelta = setting(
        timedelta(seconds=30), "Network timeout for each IMAP command.", kind="duration"
    )


@dataclass(frozen=True)
class MaildirSettings:
    """[maildir]: a local Maildir read instead of IMAP (for tests, the demo, or a local MTA)."""

    path: str = setting(
        "", "Path of the Maildir (relative to this file's folder); empty: none.", kind="path"
    )


@dataclass(frozen=True)
class InboxSettings:
    """[inbox]: how inbound mail is read, whichever the source."""

    max_fetch_bytes: int = setting(
        262144,
        "Messages larger than this many bytes are classified from their headers alone.",
        kind="int",
        minimum=1024,
    )


@dataclass(frozen=True)
class PrivacySettings:
    """[privacy]: what Rapport keeps about inbound mail."""

    store_bodies: bool = setting(
        False,
        "Keep the text of inbound human messages. Off: only metadata (addresses, dates, kind,"
        " size, how it was matched) is stored.",
        kind="bool",
    )
    retain_days: int = setting(
        365,
        "Inbound mail's metadata (and any stored text) older than this many days is deleted by the"
        " daily job; the activity it showed is kept, without a link to the message. 0: keep it.",
        kind="int",
        minimum=0,
    )


@dataclass(frozen=True)
class ReportSettings:
    """[report]: the weekly report to coordinators."""

    max_listed: int = setting(
        100,
        "At most this many at-risk and one-sided partnerships get a card in the weekly report,"
        " highest risk first; the rest are counted, with the command that lists them all.",
        kind="int",
        minimum=10,
    )


@dataclass(frozen=True)
class Settings:
    """The whole validated configuration, loaded once by the entry point and passed down."""

    program: ProgramSettings
    database: DatabaseSettings
    smtp: SmtpSettings
    schedule: ScheduleSettings
    outbox: OutboxSettings
    imap: ImapSettings
    maildir: MaildirSettings
    inbox: InboxSettings
    privacy: PrivacySettings
    health: HealthSettings = field(default_factory=HealthSettings)
    nudges: NudgeSettings = field(default_factory=NudgeSettings)
    report: ReportSettings = field(default_factory=ReportSettings)
    source: str = "<defaults>"
    """The file the settings came from (for messages) and its folder (for relative paths)."""


SECTIONS: dict[str, type] = {
    "program": ProgramSettings,
    "database": DatabaseSettings,
    "smtp": SmtpSettings,
    "schedule": ScheduleSettings,
    "outbox": OutboxSettings,
    "imap": ImapSettings,
    "maildir": MaildirSettings,
    "inbox": InboxSettings,
    "privacy": PrivacySettings,
    "health": HealthSettings,
    "nudges": NudgeSettings,
    "report": ReportSettings,
}
