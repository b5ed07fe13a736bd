"""The program's tables (SQLModel).  Every datetime is UTC-aware; dates are calendar dates.

Schema changes go through an Alembic migration in program/migrations/versions; the test
``test_migrations`` fails when these classes and the migrations disagree.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import cast

from sqlalchemy import BigInteger, Column, Index, Table, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

# Outbox states.  "pending" and "retry" are waiting to be sent; "sending" is a row whose DATA may
# be on the wire; "uncertain" is a "sending" row whose process died: it may or may not have been
# delivered, so only a person re-sends it.  "late" missed schedule.max_lateness; "suppressed" was
# addressed to a suppressed address.  "sent", "failed", "late", "suppressed" and "uncertain" are
# final until someone runs `rapport outbox retry`.  "cancelled" is final: a coordinator dissolved
# the partnership or paused or withdrew the participant before the row went out (last_error
# says which).
PENDING, SENDING, SENT, RETRY, FAILED, UNCERTAIN, SUPPRESSED, LATE, CANCELLED = (
    "pending",
    "sending",
    "sent",
    "retry",
    "failed",
    "uncertain",
    "suppressed",
    "late",
    "cancelled",
)
# Outbox keys of a rehearsal ([smtp] redirect_all_to): planned apart so they never use up the
# real sends, and never taken for a participant's own mail when replies come back.
REHEARSAL = "rehearsal/"
OUTBOX_STATES = (
    PENDING,
    SENDING,
    SENT,
    RETRY,
    FAILED,
    UNCERTAIN,
    SUPPRESSED,
    LATE,
    CANCELLED,
)
SENDABLE = (PENDING, RETRY)
# Rows held back for a person to retry, never accepted by a server (unlike ``uncertain`` ones).
HELD = (LATE, FAILED, SUPPRESSED)


class Round(SQLModel, table=True):
    """A matching round: topics go out every ``cadence_days`` from ``start``."""

    __tablename__ = "round"
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(unique=True, max_length=100)
    start: date
    end: date | None = None
    cadence_days: int = 14
    status: str = Field(default="active", max_length=20)  # active | closed
    created_at: datetime


class Participant(SQLModel, table=True):
    """A person in the network.  ``email`` is stored lower-cased and is the natural key."""

    __tablename__ = "participant"
    id: int | None = Field(default=None, primary_key=True)
    email: str = Field(unique=True, max_length=320)
    name: str = Field(max_length=200)
    country: str = Field(max_length=2)  # ISO 3166-1 alpha-2
    timezone: str = Field(max_length=64)  # IANA
    language: str = Field(max_length=16)
    career_stage: str = Field(default="", max_length=100)
    sector: str = Field(default="", max_length=100)
    interests: str = Field(default="", sa_column=Column(Text, nullable=False, server_default=""))
    status: str = Field(default="active", max_length=20)  # active | paused | withdrawn
    bouncing_since: datetime | None = None  # set when mail to them bounces permanently
    created_at: datetime
    updated_at: datetime


class Coordinator(SQLModel, table=True):
    """A program coordinator (all partnerships) or country coordinator (their ``countries``)."""

    __tablename__ = "coordinator"
    id: int | None = Field(default=None, primary_key=True)
    email: str = Field(unique=True, max_length=320)
    name: str = Field(max_length=200)
    role: str = Field(max_length=20)  # program | country
    countries: str = Field(default="", max_length=1000)  # space-separated alpha-2 codes
    timezone: str = Field(max_length=64)
    created_at: datetime
    updated_at: datetime


class Partnership(SQLModel, table=True):
    """A pair (or triad) of participants matched for one round."""

    __tablename__ = "partnership"
    id: int | None = Field(default=None, primary_key=True)
    round_id: int = Field(foreign_key="round.id", index=True)
    status: str = Field(default="active", max_length=20)  # active | dissolved | ended
    ended_at: datetime | None = None  # when it was dissolved (or ended)
    ended_reason: str = Field(default="", max_length=1000)  # the coordinator's --reason
    created_at: datetime


class Membership(SQLModel, table=True):
    """A participant's place in a partnership.

    A participant has at most one *active* partnership per round (the importer and
    ``rapport match apply`` check it); a dissolved partnership keeps its memberships as history,
    so someone re-matched in the same round has two.
    """

    __tablename__ = "membership"
    __table_args__ = (UniqueConstraint("partnership_id", "participant_id"),)
    id: int | None = Field(default=None, primary_key=True)
    partnership_id: int = Field(foreign_key="partnership.id", index=True)
    participant_id: int = Field(foreign_key="participant.id", index=True)
    round_id: int = Field(foreign_key="round.id")
    position: int  # 0, 1 (and 2 in a triad): the order of member_a, member_b, member_c


class Topic(SQLModel, table=True):
    """A discussion topic of a round; its text per language lives in TopicText."""

    __tablename__ = "topic"
    __table_args__ = (UniqueConstraint("round_id", "seq"),)
    id: int | None = Field(default=None, primary_key=True)
    round_id: int = Field(foreign_key="round.id", index=True)
    seq: int  # the front matter's `order`: topic 1, 2, ...
    send_on: date | None = None
    source: str = Field(max_length=255)  # file name it was imported from
    created_at: datetime
    updated_at: datetime


class TopicText(SQLModel, table=True):
    """A topic's title and Markdown body in one language."""

    __tablename__ = "topic_text"
    __table_args__ = (UniqueConstraint("topic_id", "language"),)
    id: int | None = Field(default=None, primary_key=True)
    topic_id: int = Field(foreign_key="topic.id", index=True)
    language: str = Field(max_length=16)
    title: str = Field(max_length=300)
    body: str = Field(sa_column=Column(Text, nullable=False))


class OutboxMessage(SQLModel, table=True):
    """One message to one address, identified by its idempotency ``key`` (see DESIGN.md)."""

    __tablename__ = "outbox"
    __table_args__ = (
        Index("ix_outbox_sendable", "status", "due_at"),
        Index("ix_outbox_sent_at", "sent_at"),
    )
    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(unique=True, max_length=400)
    kind: str = Field(max_length=20)  # topic | nudge | report
    round_id: int | None = Field(default=None, foreign_key="round.id")
    topic_id: int | None = Field(default=None, foreign_key="topic.id")
    partnership_id: int | None = Field(default=None, foreign_key="partnership.id", index=True)
    participant_id: int | None = Field(default=None, foreign_key="participant.id", index=True)
    coordinator_id: int | None = Field(default=None, foreign_key="coordinator.id")
    to_address: str = Field(max_length=320, index=True)
    reply_key: str = Field(unique=True, max_length=40)
    message_id: str = Field(max_length=300, index=True)
    status: str = Field(default=PENDING, max_length=20)
    due_at: datetime
    attempts: int = 0
    next_attempt_at: datetime | None = None
    claimed_by: str | None = Field(default=None, max_length=200)
    sending_at: datetime | None = None
    sent_at: datetime | None = None
    last_error: str | None = Field(default=None, max_length=1000)
    # What composing a nudge, alert or report needs, decided when it was planned (JSON); topic
    # emails are composed from the topic and roster tables instead and leave it empty.
    payload: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    created_at: datetime
    updated_at: datetime


class Suppression(SQLModel, table=True):
    """An address Rapport must not mail: a hard bounce, an unsubscribe, a 5xx, a withdrawal."""

    __tablename__ = "suppression"
    id: int | None = Field(default=None, primary_key=True)
    email: str = Field(unique=True, max_length=320)
    reason: str = Field(max_length=40)  # smtp_5xx | bounce | unsubscribe | manual
    detail: str = Field(default="", max_length=1000)
    created_at: datetime


class Alias(SQLModel, table=True):
    """Another address a participant writes from (a coordinator adds it), for attribution."""

    __tablename__ = "alias"
    id: int | None = Field(default=None, primary_key=True)
    email: str = Field(unique=True, max_length=320)
    participant_id: int = Field(foreign_key="participant.id", index=True)
    created_at: datetime


class InboxCursor(SQLModel, table=True):
    """How far one folder of one inbox has been read: UIDVALIDITY and the last UID recorded."""

    __tablename__ = "inbox_cursor"
    __table_args__ = (UniqueConstraint("source", "folder"),)
    id: int | None = Field(default=None, primary_key=True)
    source: str = Field(max_length=300)  # "imap:user@host:port" or "maildir:/path"
    folder: str = Field(max_length=300)
    # IMAP UIDs and UIDVALIDITY are 32-bit unsigned: too big for a signed 32-bit INTEGER.
    uidvalidity: int = Field(sa_column=Column(BigInteger, nullable=False))
    last_uid: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    last_poll_at: datetime | None = None
    last_error: str | None = Field(default=None, max_length=1000)
    last_error_at: datetime | None = None
    updated_at: datetime


class InboundMessage(SQLModel, table=True):
    """One message read from the inbox: metadata only, the body only if privacy.store_bodies."""

    __tablename__ = "inbound"
    __table_args__ = (
        UniqueConstraint("source", "folder", "uidvalidity", "uid"),
        Index("ix_inbound_received", "received_at"),
    )
    id: int | None = Field(default=None, primary_key=True)
    source: str = Field(max_length=300)
    folder: str = Field(max_length=300)
    uidvalidity: int = Field(sa_column=Column(BigInteger, nullable=False))
    uid: int = Field(sa_column=Column(BigInteger, nullable=False))
    message_id: str | None = Field(default=None, max_length=300, index=True)
    kind: str = Field(max_length=20)  # human | auto_reply | bounce | bulk | loop | error
    reason: str = Field(default="", max_length=300)
    sender: str | None = Field(default=None, max_length=320)
    size: int = 0
    sent_at: datetime | None = None  # the Date header
    received_at: datetime | None = None  # the server's INTERNALDATE
    participant_id: int | None = Field(default=None, foreign_key="participant.id", index=True)
    partnership_id: int | None = Field(default=None, foreign_key="partnership.id", index=True)
    outbox_id: int | None = Field(default=None, foreign_key="outbox.id")
    matched_by: str = Field(
        default="none", max_length=20
    )  # reply_key | in_reply_to | sender | none
    checkin: int | None = None
    partner_contact: bool = False
    filed: bool = False  # moved to imap.file_into
    error: str | None = Field(default=None, max_length=1000)
    body: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    created_at: datetime


class ActivityEvent(SQLModel, table=True):
    """A signal about a partnership: a message, a check-in, partner contact, a bounce, ..."""

    __tablename__ = "activity"
    __table_args__ = (Index("ix_activity_partnership_time", "partnership_id", "occurred_at"),)
    id: int | None = Field(default=None, primary_key=True)
    partnership_id: int | None = Field(default=None, foreign_key="partnership.id")
    participant_id: int | None = Field(default=None, foreign_key="participant.id", index=True)
    # message | checkin | partner_contact | bounce | unsubscribe | concern
    kind: str = Field(max_length=30)
    value: int | None = None  # the check-in answer, 1, 2 or 3
    detail: str = Field(default="", max_length=200)  # a concern's matched phrase, never the text
    occurred_at: datetime
    inbound_id: int | None = Field(default=None, foreign_key="inbound.id", index=True)
    created_at: datetime


class HealthSnapshot(SQLModel, table=True):
    """A partnership's health as judged on one day (UTC), so reports can say what changed."""

    __tablename__ = "health_snapshot"
    __table_args__ = (
        UniqueConstraint("partnership_id", "day"),
        Index("ix_health_snapshot_day", "day"),
    )
    id: int | None = Field(default=None, primary_key=True)
    partnership_id: int = Field(foreign_key="partnership.id")
    day: date
    state: str = Field(max_length=20)
    score: int
    since: datetime
    reasons: str = Field(sa_column=Column(Text, nullable=False))  # JSON list of sentences
    # JSON object of what nudges and reports act on: {"last_contact": ISO instant or null,
    # "silent": [participant ids], "urgent": ["bouncing", "withdrew", "concern", ...]}
    facts: str = Field(default="{}", sa_column=Column(Text, nullable=False, server_default="{}"))
    created_at: datetime


class PartnershipNote(SQLModel, table=True):
    """A coordinator's note on a partnership (``rapport partnership note``), shown in reports."""

    __tablename__ = "partnership_note"
    id: int | None = Field(default=None, primary_key=True)
    partnership_id: int = Field(foreign_key="partnership.id", index=True)
    text: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime


class MatchProposal(SQLModel, table=True):
    """A new partner suggested for a participant left alone (``rapport match suggest``)."""

    __tablename__ = "match_proposal"
    id: int | None = Field(default=None, primary_key=True)
    round_id: int = Field(foreign_key="round.id", index=True)
    participant_id: int = Field(foreign_key="participant.id", index=True)
    partner_id: int = Field(foreign_key="participant.id")
    score: int
    reasons: str = Field(sa_column=Column(Text, nullable=False))  # JSON list of sentences
    status: str = Field(default="proposed", max_length=20)  # proposed | applied | dropped
    partnership_id: int | None = Field(default=None, foreign_key="partnership.id")
    created_at: datetime
    updated_at: datetime


def table(model: type[SQLModel]) -> Table:
    """The Core table behind a model, for the fast paths that use SQLAlchemy Core."""
    return cast(Table, model.__table__)  # type: ignore[attr-defined]


ROUNDS = table(Round)
PARTICIPANTS = table(Participant)
COORDINATORS = table(Coordinator)
PARTNERSHIPS = table(Partnership)
MEMBERSHIPS = table(Membership)
TOPICS = table(Topic)
TOPIC_TEXTS = table(TopicText)
OUTBOX = table(OutboxMessage)
SUPPRESSIONS = table(Suppression)
ALIASES = table(Alias)
INBOX_CURSORS = table(InboxCursor)
INBOUND = table(InboundMessage)
ACTIVITY = table(ActivityEvent)
SNAPSHOTS = table(HealthSnapshot)
NOTES = table(PartnershipNote)
PROPOSALS = table(MatchProposal)
