"""Inbound message -> who it is from, which partnership, and the activity events it proves.

Attribution tries, in order: the reply key (only a key whose HMAC verifies against its outbox row
counts), then In-Reply-To/References against the Message-IDs we sent, then the sender's address
(participants' own addresses, case-insensitive, and aliases a coordinator added).  A message
recorded once is never counted again: a message seen before (same Message-ID, as after a
UIDVALIDITY change) is skipped.

Only ``human`` messages are activity.  A bounce suppresses the failing participant's address and
marks them bouncing; an unsubscribe suppresses only the participant the verified key names.
Nothing of the body is stored unless ``store_bodies`` is set.  The caller owns the transaction.

The statements and batched reads are in monitor/lookups.py, built once; lookups that cannot change
during a poll are cached in the :class:`Recorder`. :meth:`Recorder.record_many` records a batch with
a handful of statements instead of several per message: the lookups for the whole batch are made at
once (``IN`` lists), its inbound rows and then its activity rows are inserted with one executemany
each, and the result is exactly what recording its messages one by one, in order, would give.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, update
from sqlmodel import Session

from monitor import lookups
from monitor.concern import Phrases, find_concern
from program import replykey
from program.inbound import BOUNCE, HUMAN, Inbound
from program.models import INBOUND, REHEARSAL


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
        for chunk in lookups.chunks(unknown):
            found.update((e, i) for e, i in connection.execute(lookups.PEOPLE, {"b_emails": chunk}))
        rest = [address for address in unknown if address not in found]
        for chunk in lookups.chunks(rest):
            found.update(
                (e, i) for e, i in connection.execute(lookups.ALIASED, {"b_emails": chunk})
            )
        for address in unknown:
            self._people[address] = found.get(address)

    def current_partnership(self, connection: Connection, participant_id: int) -> int | None:
        """The participant's active partnership in the most recent active round."""
        if participant_id not in self._current:
            self._current[participant_id] = connection.execute(
                lookups.CURRENT, {"b_id": participant_id}
            ).scalar()
        return self._current[participant_id]

    def members(self, connection: Connection, partnership_id: int) -> dict[str, int]:
        """address -> participant id for every member of the partnership, aliases included."""
        if partnership_id not in self._members:
            params = {"b_id": partnership_id}
            found = {email: pid for email, pid in connection.execute(lookups.MEMBERS, params)}
            found.update(
                {email: pid for email, pid in connection.execute(lookups.MEMBER_ALIASES, params)}
            )
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
        stored = lookups.stored(connection, [received.message_id for _, received, _ in batch])
        self._learn(
            connection,
            [inbound.sender for inbound, _, _ in batch if inbound.sender]
            + [a for inbound, _, _ in batch if inbound.kind == BOUNCE for a in inbound.bounced],
        )
        keyed = self._verified_keys(
            connection, {inbound.reply_key for inbound, _, _ in batch if inbound.reply_key}
        )
        thread_ids = [  # a reply's thread is looked at only when it has no verified key
            [] if inbound.reply_key in keyed else lookups.thread_ids(inbound)
            for inbound, _, _ in batch
        ]
        threads = lookups.threads(connection, {i for ids in thread_ids for i in ids})

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
                email = connection.execute(lookups.EMAIL_OF, {"b_id": key.participant_id}).scalar()
                if email and lookups.suppress(
                    connection, email, "unsubscribe", f"reply {received.message_id}", now
                ):
                    result.suppressed.append(email)
                event(result, occurred, "unsubscribe", key.participant_id, key.partnership_id)
            if inbound.kind == BOUNCE:
                for address in inbound.bounced:
                    participant = self._people[address]
                    if participant is None:
                        continue
                    if lookups.suppress(connection, address, "bounce", inbound.reason[:200], now):
                        result.suppressed.append(address)
                    connection.execute(lookups.MARK_BOUNCING, {"b_id": participant, "b_now": now})
                    partnership = self.current_partnership(connection, participant)
                    event(result, occurred, "bounce", participant, partnership)

        if rows:
            connection.execute(lookups.INSERT_INBOUND, rows)
            for result, inbound_id in zip(
                owners, lookups.inserted_ids(connection, rows), strict=True
            ):
                result.inbound_id = inbound_id
        if events:
            connection.execute(
                lookups.INSERT_ACTIVITY,
                [{**values, "inbound_id": result.inbound_id} for result, values in events],
            )
        return results

    def _verified_keys(self, connection: Connection, keys: set[str]) -> dict[str, Any]:
        """key -> the outbox row it names, for the keys whose HMAC verifies (see verified).

        A verified key is remembered (a participant's replies and auto-replies carry the same
        one); a key that did not verify is looked up again next time.
        """
        found = {key: self._keys[key] for key in keys if key in self._keys}
        for chunk in lookups.chunks(sorted(keys - found.keys())):
            for row in connection.execute(lookups.BY_KEYS, {"b_keys": chunk}):
                if not row.key.startswith(REHEARSAL) and replykey.verify(
                    self.secret, row.key, row.reply_key
                ):
                    found[row.reply_key] = self._keys[row.reply_key] = row
        return found


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
    row = lookups.verified(connection, key.strip().lower(), secret)
    if row is None or row.participant_id is None:
        return None
    email = connection.execute(lookups.EMAIL_OF, {"b_id": row.participant_id}).scalar()
    if email is None:
        return None
    lookups.suppress(connection, email, "unsubscribe", "one-click", now)
    connection.execute(
        lookups.INSERT_ACTIVITY,
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
