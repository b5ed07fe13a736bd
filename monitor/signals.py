"""Inbound message -> who it is from, which partnership, and the activity events it proves.

Attribution tries, in order: the reply key (only a key whose HMAC verifies against its outbox row
counts), then In-Reply-To/References against the Message-IDs we sent, then the sender's address
(participants' own addresses, case-insensitive, and aliases a coordinator added).  A message
recorded once is never counted again: a message seen before (same Message-ID, as after a
UIDVALIDITY change) is skipped.

Only ``human`` messages are activity.  A bounce suppresses the failing participant's address and
marks them bouncing; an unsubscribe suppresses only the participant the verified key names.
Nothing of the body is stored unless ``store_bodies`` is set.  The caller owns the transaction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, select, update
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
    ROUNDS,
    SUPPRESSIONS,
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


def _participant_by_address(connection: Connection, address: str) -> int | None:
    found = connection.execute(
        select(PARTICIPANTS.c.id).where(PARTICIPANTS.c.email == address)
    ).scalar()
    if found is None:
        found = connection.execute(
            select(ALIASES.c.participant_id).where(ALIASES.c.email == address)
        ).scalar()
    return found


def _current_partnership(connection: Connection, participant_id: int) -> int | None:
    """The participant's active partnership in the most recent active round."""
    query = (
        select(MEMBERSHIPS.c.partnership_id)
        .join(PARTNERSHIPS, PARTNERSHIPS.c.id == MEMBERSHIPS.c.partnership_id)
        .join(ROUNDS, ROUNDS.c.id == MEMBERSHIPS.c.round_id)
        .where(
            MEMBERSHIPS.c.participant_id == participant_id,
            PARTNERSHIPS.c.status == "active",
            ROUNDS.c.status == "active",
        )
        .order_by(ROUNDS.c.start.desc())
        .limit(1)
    )
    return connection.execute(query).scalar()


def _members(connection: Connection, partnership_id: int) -> dict[str, int]:
    """address -> participant id for every member of the partnership (aliases included)."""
    query = (
        select(PARTICIPANTS.c.email, PARTICIPANTS.c.id)
        .join(MEMBERSHIPS, MEMBERSHIPS.c.participant_id == PARTICIPANTS.c.id)
        .where(MEMBERSHIPS.c.partnership_id == partnership_id)
    )
    members = {email: pid for email, pid in connection.execute(query)}
    aliases = select(ALIASES.c.email, ALIASES.c.participant_id).where(
        ALIASES.c.participant_id.in_(list(members.values()))
    )
    members.update({email: pid for email, pid in connection.execute(aliases)})
    return members


def _by_reply_key(connection: Connection, key: str, secret: bytes) -> Any:
    row = connection.execute(
        select(OUTBOX.c.id, OUTBOX.c.key, OUTBOX.c.participant_id, OUTBOX.c.partnership_id).where(
            OUTBOX.c.reply_key == key
        )
    ).first()
    # A rehearsal's rows (redirect_all_to) went to a coordinator, not to the participant.
    if (
        row is not None
        and not row.key.startswith("rehearsal/")
        and replykey.verify(secret, row.key, key)
    ):
        return row
    return None


def _by_thread(connection: Connection, inbound: Inbound) -> Any:
    ids = [i for i in (inbound.in_reply_to, *inbound.references) if i][:50]
    if not ids:
        return None
    return connection.execute(
        select(OUTBOX.c.id, OUTBOX.c.participant_id, OUTBOX.c.partnership_id)
        .where(
            OUTBOX.c.message_id.in_(ids),
            OUTBOX.c.participant_id.is_not(None),
            OUTBOX.c.key.not_like("rehearsal/%"),
        )
        .order_by(OUTBOX.c.id.desc())
        .limit(1)
    ).first()


def seen(connection: Connection, message_id: str) -> bool:
    """True when a message with this Message-ID was already recorded."""
    return (
        connection.execute(select(INBOUND.c.id).where(INBOUND.c.message_id == message_id)).first()
        is not None
    )


def _suppress(connection: Connection, email: str, reason: str, detail: str, now: datetime) -> bool:
    exists = connection.execute(
        select(SUPPRESSIONS.c.id).where(SUPPRESSIONS.c.email == email)
    ).first()
    if exists is None:
        connection.execute(
            insert(SUPPRESSIONS).values(email=email, reason=reason, detail=detail, created_at=now)
        )
        return True
    return False


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
    """Attribute ``inbound`` and write its metadata and events; skips a message seen before."""
    connection = session.connection()
    if seen(connection, received.message_id):
        return Recorded(None, inbound.kind, duplicate=True)
    result = Recorded(None, inbound.kind)
    outbox_id = None
    sender_id = _participant_by_address(connection, inbound.sender) if inbound.sender else None
    keyed = _by_reply_key(connection, inbound.reply_key, secret) if inbound.reply_key else None
    if keyed is not None and (sender_id is None or sender_id == keyed.participant_id):
        result.participant_id, result.partnership_id = keyed.participant_id, keyed.partnership_id
        result.matched_by, outbox_id = "reply_key", keyed.id
    elif (threaded := _by_thread(connection, inbound)) is not None and (
        sender_id is None or sender_id == threaded.participant_id
    ):
        result.participant_id, result.partnership_id = (
            threaded.participant_id,
            threaded.partnership_id,
        )
        result.matched_by, outbox_id = "in_reply_to", threaded.id
    elif sender_id is not None:
        result.participant_id = sender_id
        result.partnership_id = _current_partnership(connection, sender_id)
        result.matched_by = "sender"

    partner_contact = False
    if inbound.kind == HUMAN and result.partnership_id and result.participant_id:
        members = _members(connection, result.partnership_id)
        partner_contact = any(
            members.get(address) not in (None, result.participant_id)
            for address in inbound.recipients
        )
    # The server's arrival time, not the sender's Date header, which a wrong clock can skew.
    occurred = received.received_at or inbound.date or now
    inserted = connection.execute(
        insert(INBOUND).values(
            source=received.source,
            folder=received.folder,
            uidvalidity=received.uidvalidity,
            uid=received.uid,
            message_id=received.message_id[:300],
            kind=inbound.kind if error is None else "error",
            reason=(error or inbound.reason)[:300],
            sender=inbound.sender,
            size=received.size,
            sent_at=inbound.date,
            received_at=received.received_at,
            participant_id=result.participant_id,
            partnership_id=result.partnership_id,
            outbox_id=outbox_id,
            matched_by=result.matched_by,
            checkin=inbound.checkin if inbound.kind == HUMAN else None,
            partner_contact=partner_contact,
            filed=False,
            error=error[:1000] if error else None,
            body=inbound.text if (store_bodies and inbound.kind == HUMAN) else None,
            created_at=now,
        )
    )
    result.inbound_id = inserted.inserted_primary_key[0] if inserted.inserted_primary_key else None

    def event(
        kind: str, participant: int | None, partnership: int | None, value: int | None = None
    ) -> None:
        connection.execute(
            insert(ACTIVITY).values(
                partnership_id=partnership,
                participant_id=participant,
                kind=kind,
                value=value,
                occurred_at=occurred,
                inbound_id=result.inbound_id,
                created_at=now,
            )
        )
        result.events.append(kind if value is None else f"{kind} {value}")

    if error is None and inbound.kind == HUMAN and result.participant_id is not None:
        event("message", result.participant_id, result.partnership_id)
        if inbound.checkin is not None:
            event("checkin", result.participant_id, result.partnership_id, inbound.checkin)
        if partner_contact:
            event("partner_contact", result.participant_id, result.partnership_id)
    if (
        error is None
        and inbound.unsubscribe
        and keyed is not None
        and result.matched_by == "reply_key"
    ):
        email = connection.execute(
            select(PARTICIPANTS.c.email).where(PARTICIPANTS.c.id == keyed.participant_id)
        ).scalar()
        if email and _suppress(
            connection, email, "unsubscribe", f"reply {received.message_id}", now
        ):
            result.suppressed.append(email)
        event("unsubscribe", keyed.participant_id, keyed.partnership_id)
    if error is None and inbound.kind == BOUNCE:
        for address in inbound.bounced:
            participant = _participant_by_address(connection, address)
            if participant is None:
                continue
            if _suppress(connection, address, "bounce", inbound.reason[:200], now):
                result.suppressed.append(address)
            connection.execute(
                update(PARTICIPANTS)
                .where(PARTICIPANTS.c.id == participant, PARTICIPANTS.c.bouncing_since.is_(None))
                .values(bouncing_since=now)
            )
            event("bounce", participant, _current_partnership(connection, participant))
    return result


def mark_filed(session: Session, inbound_ids: list[int]) -> None:
    """Note that these messages were moved to imap.file_into."""
    if inbound_ids:
        session.connection().execute(
            update(INBOUND).where(INBOUND.c.id.in_(inbound_ids)).values(filed=True)
        )


def unsubscribe(session: Session, key: str, *, secret: bytes, now: datetime) -> str | None:
    """One-click unsubscribe (RFC 8058): suppress the participant a verified reply key names.

    Returns their address, or None when the key does not verify (nothing is changed then).
    """
    connection = session.connection()
    row = _by_reply_key(connection, key.strip().lower(), secret)
    if row is None or row.participant_id is None:
        return None
    email = connection.execute(
        select(PARTICIPANTS.c.email).where(PARTICIPANTS.c.id == row.participant_id)
    ).scalar()
    if email is None:
        return None
    _suppress(connection, email, "unsubscribe", "one-click", now)
    connection.execute(
        insert(ACTIVITY).values(
            partnership_id=row.partnership_id,
            participant_id=row.participant_id,
            kind="unsubscribe",
            occurred_at=now,
            created_at=now,
        )
    )
    return str(email)
