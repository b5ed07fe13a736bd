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
cached in the :class:`Recorder`.  :meth:`Recorder.record_many` records a batch with a handful of
statements instead of several per message: the lookups for the whole batch are made at once
(``IN`` lists), its inbound rows and then its activity rows are inserted with one executemany
each, and the result is exactly what recording its messages one by one, in order, would give.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, insert, select, update
from sqlmodel import Session

from monitor.concern import Phrases, find_concern
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
MAX_IN = 500  # values in one IN list

_SEEN = select(INBOUND.c.id).where(INBOUND.c.message_id == bindparam("b_mid")).limit(1)
_EMAIL_OF = select(PARTICIPANTS.c.email).where(PARTICIPANTS.c.id == bindparam("b_id"))
_BY_KEY = select(OUTBOX.c.id, OUTBOX.c.key, OUTBOX.c.participant_id, OUTBOX.c.partnership_id).where(
    OUTBOX.c.reply_key == bindparam("b_key")
)
_BY_KEYS = select(
    OUTBOX.c.id, OUTBOX.c.key, OUTBOX.c.participant_id, OUTBOX.c.partnership_id, OUTBOX.c.reply_key
).where(OUTBOX.c.reply_key.in_(bindparam("b_keys", expanding=True)))
_BY_THREADS = select(
    OUTBOX.c.id, OUTBOX.c.participant_id, OUTBOX.c.partnership_id, OUTBOX.c.message_id
).where(
    OUTBOX.c.message_id.in_(bindparam("b_ids", expanding=True)),
    OUTBOX.c.participant_id.is_not(None),
    OUTBOX.c.key.not_like(REHEARSAL + "%"),
)
_SEEN_ANY = select(INBOUND.c.message_id).where(
    INBOUND.c.message_id.in_(bindparam("b_mids", expanding=True))
)
_PEOPLE = select(PARTICIPANTS.c.email, PARTICIPANTS.c.id).where(
    PARTICIPANTS.c.email.in_(bindparam("b_emails", expanding=True))
)
_ALIASED = select(ALIASES.c.email, ALIASES.c.participant_id).where(
    ALIASES.c.email.in_(bindparam("b_emails", expanding=True))
)
_INBOUND_IDS = select(INBOUND.c.uid, INBOUND.c.id).where(
    INBOUND.c.source == bindparam("b_source"),
    INBOUND.c.folder == bindparam("b_folder"),
    INBOUND.c.uidvalidity == bindparam("b_validity"),
    INBOUND.c.uid.in_(bindparam("b_uids", expanding=True)),
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


# One message to record: what classify found, where it was read, and what went wrong reading
# or recording it (then it is recorded as an "error" row, without events).
ToRecord = tuple[Inbound, Received, str | None]


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
    who is in a partnership, which outbox row a verified reply key names)."""

    def __init__(
        self, *, secret: bytes, store_bodies: bool = False, concern_phrases: Sequence[str] = ()
    ) -> None:
        self.secret = secret
        self.store_bodies = store_bodies
        self.concerns = Phrases.of(concern_phrases)
        self._people: dict[str, int | None] = {}
        self._current: dict[int, int | None] = {}
        self._members: dict[int, dict[str, int]] = {}
        self._keys: dict[str, Any] = {}  # reply key -> its outbox row, once verified

    def participant(self, connection: Connection, address: str) -> int | None:
        if address not in self._people:
            self._learn(connection, [address])
        return self._people[address]

    def _learn(self, connection: Connection, addresses: Iterable[str]) -> None:
        """Look up the participants of the addresses not cached yet: by email, else by alias."""
        unknown = list(dict.fromkeys(a for a in addresses if a not in self._people))
        found: dict[str, int] = {}
        for chunk in _chunks(unknown):
            found.update((e, i) for e, i in connection.execute(_PEOPLE, {"b_emails": chunk}))
        rest = [address for address in unknown if address not in found]
        for chunk in _chunks(rest):
            found.update((e, i) for e, i in connection.execute(_ALIASED, {"b_emails": chunk}))
        for address in unknown:
            self._people[address] = found.get(address)

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
        return self.record_many(connection, [(inbound, received, error)], now=now)[0]

    def record_many(
        self, connection: Connection, batch: Sequence[ToRecord], *, now: datetime
    ) -> list[Recorded]:
        """:meth:`record` for each ``(inbound, received, error)`` of ``batch``, in order, with
        the same outcome, in a few statements: lookups for the whole batch first, then one
        executemany for the inbound rows and one for the activity rows."""
        stored = _stored(connection, [received.message_id for _, received, _ in batch])
        self._learn(
            connection,
            [inbound.sender for inbound, _, _ in batch if inbound.sender]
            + [a for inbound, _, _ in batch if inbound.kind == BOUNCE for a in inbound.bounced],
        )
        keyed = self._verified_keys(
            connection, {inbound.reply_key for inbound, _, _ in batch if inbound.reply_key}
        )
        thread_ids = [  # a reply's thread is looked at only when it has no verified key
            [] if inbound.reply_key in keyed else _thread_ids(inbound) for inbound, _, _ in batch
        ]
        threads = _threads(connection, {i for ids in thread_ids for i in ids})

        results: list[Recorded] = []
        rows: list[dict[str, Any]] = []
        owners: list[Recorded] = []  # the Recorded of each row
        events: list[tuple[Recorded, dict[str, Any]]] = []

        def event(
            result: Recorded,
            occurred: datetime,
            kind: str,
            participant: int,
            partnership: int | None,
            value: int | None = None,
            detail: str = "",
        ) -> None:
            values = {
                "partnership_id": partnership,
                "participant_id": participant,
                "kind": kind,
                "value": value,
                "detail": detail,
                "occurred_at": occurred,
                "created_at": now,
            }
            events.append((result, values))
            result.events.append(kind if value is None else f"{kind} {value}")

        for n, (inbound, received, error) in enumerate(batch):
            if received.message_id in stored:
                results.append(Recorded(None, inbound.kind, duplicate=True))
                continue
            stored.add(received.message_id[:300])  # as stored: a longer one never matches
            result = Recorded(None, inbound.kind)
            results.append(result)
            outbox_id = None
            sender_id = self._people[inbound.sender] if inbound.sender else None
            key = keyed.get(inbound.reply_key) if inbound.reply_key else None
            thread = None
            if key is None:
                candidates = [row for i in thread_ids[n] for row in threads.get(i, ())]
                thread = max(candidates, key=lambda row: int(row.id)) if candidates else None
            if key is not None and sender_id in (None, key.participant_id):
                result.participant_id, result.partnership_id = (
                    key.participant_id,
                    key.partnership_id,
                )
                result.matched_by, outbox_id = "reply_key", key.id
            elif thread is not None and sender_id in (None, thread.participant_id):
                result.participant_id = thread.participant_id
                result.partnership_id = thread.partnership_id
                result.matched_by, outbox_id = "in_reply_to", thread.id
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
            rows.append(
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
                }
            )
            owners.append(result)
            if error is not None:
                continue
            # The server's arrival time, not the sender's Date header, which a wrong clock can
            # skew.
            occurred = received.received_at or inbound.date or now

            if inbound.kind == HUMAN and result.participant_id is not None:
                who = (result.participant_id, result.partnership_id)
                event(result, occurred, "message", *who)
                if inbound.checkin is not None:
                    event(result, occurred, "checkin", *who, inbound.checkin)
                if partner_contact:
                    event(result, occurred, "partner_contact", *who)
                elif not inbound.unsubscribe:
                    # Written to the coordinators, not copied to a partner: a concern phrase
                    # in the person's own words puts the partnership at risk today.  Only the
                    # phrase is kept, never the text.
                    phrase = find_concern(inbound.text, self.concerns)
                    if phrase is not None:
                        event(result, occurred, "concern", *who, None, phrase[:200])
            if inbound.unsubscribe and key is not None and result.matched_by == "reply_key":
                email = connection.execute(_EMAIL_OF, {"b_id": key.participant_id}).scalar()
                if email and _suppress(
                    connection, email, "unsubscribe", f"reply {received.message_id}", now
                ):
                    result.suppressed.append(email)
                event(result, occurred, "unsubscribe", key.participant_id, key.partnership_id)
            if inbound.kind == BOUNCE:
                for address in inbound.bounced:
                    participant = self._people[address]
                    if participant is None:
                        continue
                    if _suppress(connection, address, "bounce", inbound.reason[:200], now):
                        result.suppressed.append(address)
                    connection.execute(_MARK_BOUNCING, {"b_id": participant, "b_now": now})
                    partnership = self.current_partnership(connection, participant)
                    event(result, occurred, "bounce", participant, partnership)

        if rows:
            connection.execute(_INSERT_INBOUND, rows)
            for result, inbound_id in zip(owners, _inserted_ids(connection, rows), strict=True):
                result.inbound_id = inbound_id
        if events:
            connection.execute(
                _INSERT_ACTIVITY,
                [{**values, "inbound_id": result.inbound_id} for result, values in events],
            )
        return results

    def _verified_keys(self, connection: Connection, keys: set[str]) -> dict[str, Any]:
        """key -> the outbox row it names, for the keys whose HMAC verifies (see _verified).

        A verified key is remembered (a participant's replies and auto-replies carry the same
        one); a key that did not verify is looked up again next time.
        """
        found = {key: self._keys[key] for key in keys if key in self._keys}
        for chunk in _chunks(sorted(keys - found.keys())):
            for row in connection.execute(_BY_KEYS, {"b_keys": chunk}):
                if not row.key.startswith(REHEARSAL) and replykey.verify(
                    self.secret, row.key, row.reply_key
                ):
                    found[row.reply_key] = self._keys[row.reply_key] = row
        return found


def _chunks(values: Sequence[str]) -> Iterator[list[str]]:
    for start in range(0, len(values), MAX_IN):
        yield list(values[start : start + MAX_IN])


def _stored(connection: Connection, message_ids: list[str]) -> set[str]:
    """Which of these Message-IDs were recorded before (see :func:`seen`)."""
    found: set[str] = set()
    for chunk in _chunks(sorted(set(message_ids))):
        found.update(connection.execute(_SEEN_ANY, {"b_mids": chunk}).scalars())
    return found


def _thread_ids(inbound: Inbound) -> list[str]:
    return [i for i in (inbound.in_reply_to, *inbound.references) if i][:MAX_THREAD_IDS]


def _threads(connection: Connection, message_ids: set[str]) -> dict[str, list[Any]]:
    """Message-ID -> the outbox rows (of a participant, not a rehearsal) sent with it.

    A reply's thread is the newest of the rows its In-Reply-To and References name.
    """
    found: dict[str, list[Any]] = {}
    for chunk in _chunks(sorted(message_ids)):
        for row in connection.execute(_BY_THREADS, {"b_ids": chunk}):
            found.setdefault(row.message_id, []).append(row)
    return found


def _inserted_ids(connection: Connection, rows: list[dict[str, Any]]) -> list[int]:
    """The ids of ``rows`` just inserted, in order, read back by their unique key (source,
    folder, uidvalidity, uid): portable, and cheaper than RETURNING row by row."""
    ids: dict[tuple[str, str, int, int], int] = {}
    places: dict[tuple[str, str, int], list[int]] = {}
    for row in rows:
        places.setdefault((row["source"], row["folder"], row["uidvalidity"]), []).append(row["uid"])
    for (source, folder, validity), uids in places.items():
        for start in range(0, len(uids), MAX_IN):
            params = {
                "b_source": source,
                "b_folder": folder,
                "b_validity": validity,
                "b_uids": uids[start : start + MAX_IN],
            }
            for uid, inbound_id in connection.execute(_INBOUND_IDS, params):
                ids[(source, folder, validity, uid)] = inbound_id
    return [ids[(r["source"], r["folder"], r["uidvalidity"], r["uid"])] for r in rows]


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
