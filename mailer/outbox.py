"""The outbox: an idempotent queue of messages, each row on its own.

"Sending" a message means inserting a row here, keyed by its idempotency key; inserting the same
key twice is a no-op.  A delivery pass claims one row at a time with a conditional UPDATE (the
row must still be pending or retry), which marks it ``sending`` and commits before a byte of DATA
goes out; the 250 reply marks it ``sent``.  A row found ``sending`` whose process is gone becomes
``uncertain``: it may have been delivered, so it is reported and re-sent only by a person.

Claiming one row at a time, each in its own short transaction, keeps a crash's doubt to the one
message in flight: a batch claimed at once would leave rows claimed but never attempted, which
recovery could not tell from rows whose DATA went out.  Several processes may drain one
PostgreSQL outbox together: there the claim locks its row with ``FOR UPDATE SKIP LOCKED``, so a
process never waits for a row another process is claiming this instant, it moves on to its next
one.  (SQLite has one writer at a time, so the plain conditional UPDATE is already enough.)

Statements are SQLAlchemy Core on the ``outbox`` table for speed (one commit per state change).
Every datetime is UTC-aware.
"""

from __future__ import annotations

import os
import random
import socket
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, bindparam, func, insert, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session

from program.errors import NotFound, RapportError, StateError, UsageError
from program.models import (
    CANCELLED,
    FAILED,
    LATE,
    OUTBOX,
    OUTBOX_STATES,
    PARTICIPANTS,
    PARTNERSHIPS,
    PENDING,
    RETRY,
    SENDABLE,
    SENDING,
    SENT,
    SUPPRESSED,
    SUPPRESSIONS,
    UNCERTAIN,
)

ERROR_LIMIT = 1000


def _proc_start(pid: int) -> str:
    """The process's start time in clock ticks since boot (Linux), to tell a reused pid apart."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return "0"


def owner_id() -> str:
    """Who is claiming rows: ``host:pid:start``; a dead owner's claims are uncertain."""
    pid = os.getpid()
    return f"{socket.gethostname()}:{pid}:{_proc_start(pid)}"


def owner_alive(owner: str) -> bool | None:
    """True/False for an owner on this host; None when it ran elsewhere (we cannot tell)."""
    try:
        host, pid_text, start = owner.rsplit(":", 2)
        pid = int(pid_text)
    except ValueError:
        return False
    if host != socket.gethostname():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return _proc_start(pid) == start


def enqueue(session: Session, rows: Sequence[Mapping[str, Any]]) -> int:
    """Insert rows whose ``key`` is new; returns how many were inserted.

    Each row maps OutboxMessage column names to values (``created_at``/``updated_at`` included).
    """
    if not rows:
        return 0
    dialect = session.get_bind().dialect.name
    if dialect == "sqlite":
        statement: Any = sqlite_insert(OUTBOX).on_conflict_do_nothing(index_elements=["key"])
    elif dialect == "postgresql":
        # psycopg reports no row count for a many-row insert: count the ids it returns instead.
        statement = (
            pg_insert(OUTBOX).on_conflict_do_nothing(index_elements=["key"]).returning(OUTBOX.c.id)
        )
    else:  # pragma: no cover - only SQLite and PostgreSQL are supported
        statement = insert(OUTBOX)
    inserted = 0
    for start in range(0, len(rows), 2000):
        result = session.connection().execute(statement, list(rows[start : start + 2000]))
        inserted += len(result.all()) if result.returns_rows else max(result.rowcount, 0)
    return inserted


def existing_keys(session: Session, prefix: str) -> set[str]:
    """The keys already queued that start with ``prefix`` (so planning skips known rows cheaply)."""
    query = select(OUTBOX.c.key).where(OUTBOX.c.key.startswith(prefix, autoescape=True))
    return set(session.connection().execute(query).scalars())


def _ready(now: datetime) -> Any:
    return and_(
        OUTBOX.c.status.in_(SENDABLE),
        OUTBOX.c.due_at <= now,
        or_(OUTBOX.c.next_attempt_at.is_(None), OUTBOX.c.next_attempt_at <= now),
    )


def count_due(connection: Connection, now: datetime) -> int:
    """How many rows are ready to send at ``now``."""
    return int(
        connection.execute(select(func.count()).select_from(OUTBOX).where(_ready(now))).scalar_one()
    )


def due_ids(connection: Connection, now: datetime, limit: int, after: int = 0) -> list[int]:
    """Ids of rows ready to send at ``now`` (in id order), skipping rows up to ``after``.

    Only a look: nothing is locked or reserved.  The claim decides who sends a row.
    """
    query = (
        select(OUTBOX.c.id)
        .where(_ready(now), OUTBOX.c.id > after)
        .order_by(OUTBOX.c.id)
        .limit(limit)
    )
    return list(connection.execute(query).scalars())


# Built once: these run once or twice per message, and a prepared statement skips SQLAlchemy's
# per-call construction and compile-cache lookup work.
_CLAIMED = {
    "status": SENDING,
    "claimed_by": bindparam("b_owner"),
    "sending_at": bindparam("b_now"),
    "attempts": OUTBOX.c.attempts + 1,
    "updated_at": bindparam("b_now"),
}
_CLAIM = (
    update(OUTBOX)
    .where(OUTBOX.c.id == bindparam("b_id"), OUTBOX.c.status.in_(SENDABLE))
    .values(_CLAIMED)
)
# PostgreSQL: the row is taken only if no other transaction holds it (that one is claiming it,
# so this process skips it instead of waiting), and its status is checked again once locked.
_CLAIM_SKIP_LOCKED = (
    update(OUTBOX)
    .where(
        OUTBOX.c.id
        == select(OUTBOX.c.id)
        .where(OUTBOX.c.id == bindparam("b_id"), OUTBOX.c.status.in_(SENDABLE))
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    .values(_CLAIMED)
)
_CLAIMS = {"postgresql": _CLAIM_SKIP_LOCKED}
_SENT = (
    update(OUTBOX)
    .where(OUTBOX.c.id == bindparam("b_id"))
    .values(status=SENT, sent_at=bindparam("b_now"), last_error=None, updated_at=bindparam("b_now"))
)


def claim(connection: Connection, row_id: int, owner: str, now: datetime) -> bool:
    """Mark one sendable row ``sending`` for ``owner``; False if someone else got it first.

    The caller commits before sending: the claim is the promise that no one else will.
    """
    statement = _CLAIMS.get(connection.dialect.name, _CLAIM)
    result = connection.execute(statement, {"b_id": row_id, "b_owner": owner, "b_now": now})
    return result.rowcount == 1


def _set(connection: Connection, row_id: int, now: datetime, **values: Any) -> None:
    if values.get("last_error"):
        values["last_error"] = str(values["last_error"])[:ERROR_LIMIT]
    connection.execute(update(OUTBOX).where(OUTBOX.c.id == row_id).values(updated_at=now, **values))


def mark_sent(connection: Connection, row_id: int, now: datetime) -> None:
    connection.execute(_SENT, {"b_id": row_id, "b_now": now})


def mark_uncertain(connection: Connection, row_id: int, now: datetime, reason: str) -> None:
    _set(connection, row_id, now, status=UNCERTAIN, last_error=reason)


def mark_failed(connection: Connection, row_id: int, now: datetime, reason: str) -> None:
    _set(connection, row_id, now, status=FAILED, last_error=reason)


def mark_status(
    connection: Connection, row_id: int, now: datetime, status: str, reason: str
) -> None:
    """Set a final status without sending (``suppressed``, ``late``)."""
    _set(connection, row_id, now, status=status, last_error=reason)


def release(connection: Connection, row_id: int, now: datetime) -> None:
    """Undo a claim that sent nothing (the server was unreachable): the row is sendable again."""
    _set(connection, row_id, now, status=PENDING, attempts=OUTBOX.c.attempts - 1, claimed_by=None)


def backoff(attempts: int, base: timedelta, cap: timedelta, rng: random.Random) -> timedelta:
    """Wait before attempt ``attempts + 1``: base × 2^(attempts-1), capped, ±25% jitter."""
    exponent = min(max(attempts - 1, 0), 30)
    delay = min(base * (2**exponent), cap)
    return delay * rng.uniform(0.75, 1.25)


def mark_retry(
    connection: Connection,
    row_id: int,
    now: datetime,
    reason: str,
    *,
    attempts: int,
    max_attempts: int,
    base: timedelta,
    cap: timedelta,
    rng: random.Random,
) -> bool:
    """Schedule another attempt, or fail the row when ``attempts`` reached the cap.

    Returns True when a retry was scheduled.
    """
    if attempts >= max_attempts:
        mark_failed(connection, row_id, now, f"gave up after {attempts} attempts: {reason}")
        return False
    when = now + backoff(attempts, base, cap, rng)
    _set(connection, row_id, now, status=RETRY, next_attempt_at=when, last_error=reason)
    return True


def recover(
    connection: Connection,
    now: datetime,
    lease: timedelta,
    alive: Callable[[str], bool | None] = owner_alive,
) -> int:
    """Turn ``sending`` rows whose process is gone into ``uncertain``; returns how many.

    On this host a dead pid is noticed at once; a row claimed on another host is given up on
    after ``lease``.
    """
    rows = connection.execute(
        select(OUTBOX.c.id, OUTBOX.c.claimed_by, OUTBOX.c.sending_at).where(
            OUTBOX.c.status == SENDING
        )
    ).all()
    count = 0
    for row_id, owner, sending_at in rows:
        state = alive(owner or "")
        stale = sending_at is None or sending_at <= now - lease
        if state is False or (state is None and stale):
            mark_uncertain(
                connection,
                row_id,
                now,
                f"the process sending it ({owner}) stopped before the server answered",
            )
            count += 1
    return count


def sent_since(connection: Connection, since: datetime) -> int:
    """How many messages were sent after ``since`` (for the rate limits)."""
    query = (
        select(func.count())
        .select_from(OUTBOX)
        .where(OUTBOX.c.status == SENT, OUTBOX.c.sent_at > since)
    )
    return int(connection.execute(query).scalar_one())


def suppressed_addresses(connection: Connection) -> set[str]:
    return set(connection.execute(select(SUPPRESSIONS.c.email)).scalars())


def suppress(connection: Connection, email: str, reason: str, detail: str, now: datetime) -> None:
    """Add ``email`` to the suppression list (kept if already there)."""
    email = email.strip().lower()
    exists = connection.execute(
        select(SUPPRESSIONS.c.id).where(SUPPRESSIONS.c.email == email)
    ).first()
    if exists is None:
        connection.execute(
            insert(SUPPRESSIONS).values(
                email=email, reason=reason, detail=detail[:ERROR_LIMIT], created_at=now
            )
        )


def counts(session: Session) -> dict[str, int]:
    """Rows per status, every status present (zeros included)."""
    query = select(OUTBOX.c.status, func.count()).group_by(OUTBOX.c.status)
    found: dict[str, int] = dict(session.connection().execute(query).all())
    return {state: int(found.get(state, 0)) for state in OUTBOX_STATES}


def listing(session: Session, statuses: Iterable[str], limit: int = 1000) -> list[Any]:
    """Rows in ``statuses``, most recently changed first."""
    query = (
        select(OUTBOX)
        .where(OUTBOX.c.status.in_(list(statuses)))
        .order_by(OUTBOX.c.updated_at.desc(), OUTBOX.c.id.desc())
        .limit(limit)
    )
    return list(session.connection().execute(query).all())


RETRYABLE_BY_HAND = (UNCERTAIN, FAILED, LATE, SUPPRESSED, RETRY)
# Rows never retried, whoever they are for: a second copy could go out, or one is on its way.
_NEVER_AGAIN = (SENT, SENDING)
_ENDED = {"dissolved": "was dissolved", "ended": "has ended"}


def _recipient_refusal(row: Any, suppressed: bool) -> RapportError | None:
    """Why ``row`` must not go to its recipient now, or None.

    A participant's mail stops while they are paused or once they withdrew, and mail about a
    partnership stops when it is dissolved or ended (their waiting rows were cancelled then); a
    suppressed address gets nothing.  Each is a person's decision, to undo first: exit 2.
    """
    where = f"outbox row {row.id}"
    if row.participant_id is not None and row.person_status == "paused":
        return UsageError(
            f"{where}: {row.person_email} is paused, and a paused participant is sent nothing;"
            " after `rapport participant resume` the next topic goes out, not the missed ones"
        )
    if row.participant_id is not None and row.person_status not in (None, "active"):
        return UsageError(
            f"{where}: {row.person_email} is {row.person_status} and is sent nothing any more"
        )
    if row.partnership_id is not None and row.pair_status not in (None, "active"):
        when = f" on {row.pair_ended_at:%Y-%m-%d}" if row.pair_ended_at else ""
        said = f" ({row.pair_reason})" if row.pair_reason else ""
        state = _ENDED.get(row.pair_status, f"is {row.pair_status}")
        return UsageError(
            f"{where}: partnership {row.partnership_id} {state}{when}{said};"
            " its mail is not sent any more"
        )
    if suppressed:
        undo = (
            f"lift it first with `rapport participant unsuppress {row.person_email}`"
            if row.participant_id is not None and row.person_email == row.to_address
            else "remove the suppression first"
        )
        return UsageError(
            f"{where}: {row.to_address} is suppressed (it bounced, was refused or unsubscribed);"
            f" if it works now, {undo}"
        )
    return None


def _status_refusal(row: Any) -> RapportError | None:
    if row.status in RETRYABLE_BY_HAND:
        return None
    said = f" ({row.last_error})" if row.status == CANCELLED and row.last_error else ""
    return StateError(
        f"outbox row {row.id} is {row.status}{said};"
        f" only {', '.join(RETRYABLE_BY_HAND)} rows can be retried"
    )


def retry_rows(session: Session, row_ids: Sequence[int], now: datetime) -> list[str]:
    """``rapport outbox retry ID...``: make rows sendable now; returns their previous statuses.

    All or nothing: every row is checked before any changes.  Refused: an unknown id (exit 2); a
    row ``sent`` or still ``sending`` (a second copy), or one neither failed nor held back
    (``pending``, ``cancelled``: exit 1); a row for a participant who is paused or withdrawn,
    about a partnership no longer active, or to a suppressed address (exit 2).  One refusal is
    raised as it is; several as one error listing them all, exit 2 if any of them exits 2.
    """
    ids = list(dict.fromkeys(row_ids))
    connection = session.connection()
    p, ps = PARTICIPANTS, PARTNERSHIPS
    query = (
        select(
            OUTBOX.c.id,
            OUTBOX.c.status,
            OUTBOX.c.to_address,
            OUTBOX.c.last_error,
            OUTBOX.c.participant_id,
            OUTBOX.c.partnership_id,
            p.c.email.label("person_email"),
            p.c.status.label("person_status"),
            ps.c.status.label("pair_status"),
            ps.c.ended_at.label("pair_ended_at"),
            ps.c.ended_reason.label("pair_reason"),
        )
        .outerjoin(p, p.c.id == OUTBOX.c.participant_id)
        .outerjoin(ps, ps.c.id == OUTBOX.c.partnership_id)
        .where(OUTBOX.c.id.in_(ids))
    )
    rows = {row.id: row for row in connection.execute(query)}
    blocked = set(
        connection.execute(
            select(SUPPRESSIONS.c.email).where(
                SUPPRESSIONS.c.email.in_({row.to_address for row in rows.values()})
            )
        ).scalars()
    )
    problems: list[RapportError] = []
    for row_id in ids:
        row = rows.get(row_id)
        problem: RapportError | None
        if row is None:
            problem = NotFound(f"outbox row {row_id}: no such row")
        elif row.status in _NEVER_AGAIN:
            problem = _status_refusal(row)
        else:
            problem = _recipient_refusal(row, row.to_address in blocked) or _status_refusal(row)
        if problem is not None:
            problems.append(problem)
    if len(problems) == 1 and len(ids) == 1:
        raise problems[0]
    if problems:
        kind = UsageError if any(e.exit_code == 2 for e in problems) else StateError
        raise kind("nothing retried:\n" + "\n".join(str(e) for e in problems))
    for row_id in ids:
        status = rows[row_id].status
        changed = connection.execute(
            update(OUTBOX)
            .where(OUTBOX.c.id == row_id, OUTBOX.c.status == status)
            .values(
                status=PENDING, next_attempt_at=None, attempts=0, claimed_by=None, updated_at=now
            )
        )
        if changed.rowcount != 1:
            raise StateError(f"outbox row {row_id} changed while we looked at it; try again")
    return [str(rows[row_id].status) for row_id in ids]


def retry_by_hand(session: Session, row_id: int, now: datetime) -> str:
    """``rapport outbox retry ID``: make one row sendable now; returns its previous status.

    See :func:`retry_rows` for what is refused and why.
    """
    return retry_rows(session, [row_id], now)[0]


__all__ = [
    "FAILED",
    "LATE",
    "OUTBOX",
    "PENDING",
    "RETRY",
    "SENT",
    "SUPPRESSED",
    "UNCERTAIN",
    "backoff",
    "claim",
    "counts",
    "due_ids",
    "enqueue",
    "listing",
    "mark_failed",
    "mark_retry",
    "mark_sent",
    "mark_status",
    "mark_uncertain",
    "owner_alive",
    "owner_id",
    "recover",
    "release",
    "retry_by_hand",
    "retry_rows",
    "sent_since",
    "suppress",
    "suppressed_addresses",
]
