"""Inbound message -> who it is from, which partnership, and the activity events it proves.

Attribution tries, in order: the reply key (only a key whose HMAC verifies against its outbox row
counts), then In-Reply-To/References against the Message-IDs we sent, then the sender's address
(participants' own addresses, case-insensitive, and aliases a coordinator added).  A message
recorded once is never counted again: a message seen before (same Message-ID, as after a
UIDVALIDITY change) is skipped.

Only ``human`` messages are activity.  A bounce suppresses the failing participant's address and
marks them bouncing; an unsubscribe suppresses only the participant the verified key names.
Nothing of the body is stored unless ``store_bodies`` is set.  The caller owns the transaction.

The statements are built once (a poll records thousands of messages, and building SQLAlchemy
statements costs far more than running them); lookups that cannot change during a poll are
cached in the :class:`Recorder`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, insert, select, update
from sqlmodel import Session

from program import replykey
from program.inbound import BOUNCE, HUMAN, Inbound
from program.models import (
    ACTIVITY,
    ALIASES,
    INBOUND,
    MEMBERSHIPS,
    OUTBOX,
    PARTICIPANTS,
    PARTNERSHIPS,
    REHEARSAL,
    ROUNDS,
    SUPPRESSIONS,
)

MAX_THREAD_IDS = 50

_SEEN = select(INBOUND.c.id).where(INBOUND.c.message_id == bindparam("b_mid")).limit(1)
_BY_EMAIL = select(PARTICIPANTS.c.id).where(PARTICIPANTS.c.email == bindparam("b_email"))
_BY_ALIAS = select(ALIASES.c.participant_id).where(ALIASES.c.email == bindparam("b_email"))
_EMAIL_OF = select(PARTICIPANTS.c.email).where(PARTICIPANTS.c.id == bindparam("b_id"))
_BY_KEY = select(OUTBOX.c.id, OUTBOX.c.key, OUTBOX.c.participant_id, OUTBOX.c.partnership_id).where(
    OUTBOX.c.reply_key == bindparam("b_key")
)
_BY_THREAD = (
    select(OUTBOX.c.id, OUTBOX.c.participant_id, OUTBOX.c.partnership_id)
    .where(
        OUTBOX.c.message_id.in_(bindparam("b_ids", expanding=True)),
        OUTBOX.c.participant_id.is_not(None),
        OUTBOX.c.key.not_like(REHEARSAL + "%"),
    )
    .order_by(OUTBOX.c.id.desc())
    .limit(1)
)
_CURRENT = (
    select(MEMBERSHIPS.c.partnership_id)
    .join(PARTNERSHIPS, PARTNERSHIPS.c.id == MEMBERSHIPS.c.partnership_id)
    .join(ROUNDS, ROUNDS.c.id == MEMBERSHIPS.c.round_id)
    .where(
        MEMBERSHIPS.c.participant_id == bindparam("b_id"),
        PARTNERSHIPS.c.status == "active",
        ROUNDS.c.status == "active",
    )
    .order_by(ROUNDS.c.start.desc())
    .limit(1)
)
_MEMBERS = (
    select(PARTICIPANTS.c.email, PARTICIPANTS.c.id)
    .join(MEMBERSHIPS, MEMBERSHIPS.c.participant_id == PARTICIPANTS.c.id)
    .where(MEMBERSHIPS.c.partnership_id == bindparam("b_id"))
)
_MEMBER_ALIASES = (
    select(ALIASES.c.email, ALIASES.c.participant_id)
    .join(MEMBERSHIPS, MEMBERSHIPS.c.participant_id == ALIASES.c.participant_id)
    .where(MEMBERSHIPS.c.partnership_id == bindparam("b_id"))
)
_SUPPRESSED = select(SUPPRESSIONS.c.id).where(SUPPRESSIONS.c.email == bindparam("b_email"))
_INSERT_INBOUND = insert(INBOUND)
_INSERT_ACTIVITY = insert(ACTIVITY)
_INSERT_SUPPRESSION = insert(SUPPRESSIONS)
_MARK_BOUNCING = (
    update(PARTICIPANTS)
    .where(PARTICIPANTS.c.id == bindparam("b_id"), PARTICIPANTS.c.bouncing_since.is_(None))
    .values(bouncing_since=bindparam("b_now"))
)


@dataclass(frozen=True)
class Received:
    """Where a message was read: plain values from the inbox source."""

    source: str
    folder: str
    uidvalidity: int
    uid: int
    size: int
    received_at: datetime | None
    message_id: str  # the Message-ID, or a stand-in derived from the headers when it has none


@dataclass
class Recorded:
    """What recording one message did."""

    inbound_id: int | None
    kind: str
    participant_id: int | None = None
    partnership_id: int | None = None
    matched_by: str = "none"
    events: list[str] = field(default_factory=list)
    duplicate: bool = False
    suppressed: list[str] = field(default_factory=list)


def seen(connection: Connection, message_id: str) -> bool:
    """True when a message with this Message-ID was already recorded."""
    return connection.execute(_SEEN, {"b_mid": message_id}).first() is not None


def _suppress(connection: Connection, email: str, reason: str, detail: str, now: datetime) -> bool:
    if connection.execute(_SUPPRESSED, {"b_email": email}).first() is not None:
        return False
    connection.execute(
        _INSERT_SUPPRESSION,
        {"email": email, "reason": reason, "detail": detail[:1000], "created_at": now},
    )
    return True


def _verified(connection: Connection, key: str, secret: bytes) -> Any:
    """The outbox row a reply key names, if its HMAC verifies (never a rehearsal's row)."""
    row = connection.execute(_BY_KEY, {"b_key": key}).first()
    if (
        row is not None
        and not row.key.startswith(REHEARSAL)
        and replykey.verify(secret, row.key, key)
    ):
        return row
    return None


class Recorder:
    """Records messages for one poll, caching what cannot change meanwhile (who an address is,
    who is in a partnership)."""

    def __init__(self, *, secret: bytes, store_bodies: bool = False) -> None:
        self.secret = secret
        self.store_bodies = store_bodies
        self._people: dict[str, int | None] = {}
        self._current: dict[int, int | None] = {}
        self._members: dict[int, dict[str, int]] = {}

    def participant(self, connection: Connection, address: str) -> int | None:
        if address not in self._people:
            found = connection.execute(_BY_EMAIL, {"b_email": address}).scalar()
            if found is None:
                found = connection.execute(_BY_ALIAS, {"b_email": address}).scalar()
            self._people[address] = found
        return self._people[address]

    def current_partnership(self, connection: Connection, participant_id: int) -> int | None:
        """The participant's active partnership in the most recent active round."""
        if participant_id not in self._current:
            self._current[participant_id] = connection.execute(
                _CURRENT, {"b_id": participant_id}
            ).scalar()
        return self._current[participant_id]

    def members(self, connection: Connection, partnership_id: int) -> dict[str, int]:
        """address -> participant id for every member of the partnership, aliases included."""
        if partnership_id not in self._members:
            params = {"b_id": partnership_id}
            found = {email: pid for email, pid in connection.execute(_MEMBERS, params)}
            found.update({email: pid for email, pid in connection.execute(_MEMBER_ALIASES, params)})
            self._members[partnership_id] = found
        return self._members[partnership_id]

    def record(
        self,
        connection: Connection,
        inbound: Inbound,
        received: Received,
        *,
        now: datetime,
        error: str | None = None,
    ) -> Recorded:
        """Attribute ``inbound`` and write its metadata and events; skips a message seen before."""
        if seen(connection, received.message_id):
            return Recorded(None, inbound.kind, duplicate=True)
        result = Recorded(None, inbound.kind)
        outbox_id = None
        sender_id = self.participant(connection, inbound.sender) if inbound.sender else None
        keyed = _verified(connection, inbound.reply_key, self.secret) if inbound.reply_key else None
        threaded = None
        if keyed is None:
            ids = [i for i in (inbound.in_reply_to, *inbound.references) if i][:MAX_THREAD_IDS]
            threaded = connection.execute(_BY_THREAD, {"b_ids": ids}).first() if ids else None
        if keyed is not None and sender_id in (None, keyed.participant_id):
            result.participant_id, result.partnership_id = (
                keyed.participant_id,
                keyed.partnership_id,
            )
            result.matched_by, outbox_id = "reply_key", keyed.id
        elif threaded is not None and sender_id in (None, threaded.participant_id):
            result.participant_id = threaded.participant_id
            result.partnership_id = threaded.partnership_id
            result.matched_by, outbox_id = "in_reply_to", threaded.id
        elif sender_id is not None:
            result.participant_id = sender_id
            result.partnership_id = self.current_partnership(connection, sender_id)
            result.matched_by = "sender"

        partner_contact = False
        if inbound.kind == HUMAN and result.partnership_id and result.participant_id:
            members = self.members(connection, result.partnership_id)
            partner_contact = any(
                members.get(address) not in (None, result.participant_id)
                for address in inbound.recipients
            )
        # The server's arrival time, not the sender's Date header, which a wrong clock can skew.
        occurred = received.received_at or inbound.date or now
        inserted = connection.execute(
            _INSERT_INBOUND,
            {
                "source": received.source,
                "folder": received.folder,
                "uidvalidity": received.uidvalidity,
                "uid": received.uid,
                "message_id": received.message_id[:300],
                "kind": inbound.kind if error is None else "error",
                "reason": (error or inbound.reason)[:300],
                "sender": inbound.sender,
                "size": received.size,
                "sent_at": inbound.date,
                "received_at": received.received_at,
                "participant_id": result.participant_id,
                "partnership_id": result.partnership_id,
                "outbox_id": outbox_id,
                "matched_by": result.matched_by,
                "checkin": inbound.checkin if inbound.kind == HUMAN else None,
                "partner_contact": partner_contact,
                "filed": False,
                "error": error[:1000] if error else None,
                "body": inbound.text if (self.store_bodies and inbound.kind == HUMAN) else None,
                "created_at": now,
            },
        )
        result.inbound_id = (
            inserted.inserted_primary_key[0] if inserted.inserted_primary_key else None
        )
        if error is not None:
            return result

        def event(
            kind: str, participant: int, partnership: int | None, value: int | None = None
        ) -> None:
            connection.execute(
                _INSERT_ACTIVITY,
                {
                    "partnership_id": partnership,
                    "participant_id": participant,
                    "kind": kind,
                    "value": value,
                    "occurred_at": occurred,
                    "inbound_id": result.inbound_id,
                    "created_at": now,
                },
            )
            result.events.append(kind if value is None else f"{kind} {value}")

        if inbound.kind == HUMAN and result.participant_id is not None:
            event("message", result.participant_id, result.partnership_id)
            if inbound.checkin is not None:
                event("checkin", result.participant_id, result.partnership_id, inbound.checkin)
            if partner_contact:
                event("partner_contact", result.participant_id, result.partnership_id)
        if inbound.unsubscribe and keyed is not None and result.matched_by == "reply_key":
            email = connection.execute(_EMAIL_OF, {"b_id": keyed.participant_id}).scalar()
            if email and _suppress(
                connection, email, "unsubscribe", f"reply {received.message_id}", now
            ):
                result.suppressed.append(email)
            event("unsubscribe", keyed.participant_id, keyed.partnership_id)
        if inbound.kind == BOUNCE:
            for address in inbound.bounced:
                participant = self.participant(connection, address)
                if participant is None:
                    continue
                if _suppress(connection, address, "bounce", inbound.reason[:200], now):
                    result.suppressed.append(address)
                connection.execute(_MARK_BOUNCING, {"b_id": participant, "b_now": now})
                event("bounce", participant, self.current_partnership(connection, participant))
        return result


def record(
    session: Session,
    inbound: Inbound,
    received: Received,
    *,
    secret: bytes,
    now: datetime,
    store_bodies: bool = False,
    error: str | None = None,
) -> Recorded:
    """Record one message on its own (tests, one-off tools); a poll uses one Recorder."""
    recorder = Recorder(secret=secret, store_bodies=store_bodies)
    return recorder.record(session.connection(), inbound, received, now=now, error=error)


def mark_filed(connection: Connection, inbound_ids: list[int]) -> None:
    """Note that these messages were moved to imap.file_into."""
    if inbound_ids:
        connection.execute(update(INBOUND).where(INBOUND.c.id.in_(inbound_ids)).values(filed=True))


def unsubscribe(session: Session, key: str, *, secret: bytes, now: datetime) -> str | None:
    """One-click unsubscribe (RFC 8058): suppress the participant a verified reply key names.

    Returns their address, or None when the key does not verify (nothing is changed then).
    """
    connection = session.connection()
    row = _verified(connection, key.strip().lower(), secret)
    if row is None or row.participant_id is None:
        return None
    email = connection.execute(_EMAIL_OF, {"b_id": row.participant_id}).scalar()
    if email is None:
        return None
    _suppress(connection, email, "unsubscribe", "one-click", now)
    connection.execute(
        _INSERT_ACTIVITY,
        {
            "partnership_id": row.partnership_id,
            "participant_id": row.participant_id,
            "kind": "unsubscribe",
            "value": None,
            "occurred_at": now,
            "inbound_id": None,
            "created_at": now,
        },
    )
    return str(email)
