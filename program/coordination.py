"""Coordinators' changes to partnerships and participants: notes, dissolutions, pauses, withdrawals.

The data behind ``rapport partnership show|note|dissolve`` and ``rapport participant
pause|resume|withdraw`` (rapport/actions.py parses and prints).  Each function takes the session as
a keyword and leaves the transaction to its caller; it checks everything before it writes and
raises (UsageError, NotFound, StateError), so a refused action leaves the database as it was.

Mail queued for someone who should no longer get it is not deleted but *cancelled*: an outbox row
of a dissolved partnership, or of a paused or withdrawn participant, that never reached anyone
becomes ``cancelled`` with ``last_error`` saying why, so the outbox still shows what was planned
and why it never went.  That is a row waiting to go (``pending``, ``retry``) or one held back for
a person to retry (``late``, ``failed``, ``suppressed``: none of them was accepted by the server),
whose old note is kept after the reason.  A row ``sending`` or ``uncertain`` is left alone (it
may be on the wire, or may have arrived), and so is a ``sent`` one.

A change of a participant's status, with its reason when one is given ("Maria Kowalska paused: on
leave until May"), is kept as a note on their active partnership(s), where coordinators look
(``partnership show``, the weekly report).  Resuming does not bring back the mail cancelled by a
pause, nor send the topics that fell due during it: those are missed, and the planner sends the
next one.  The planner never plans a paused participant's topics, so at resume the topics due by
then that have no outbox row are recorded as ``cancelled`` rows ("skipped: due while paused"),
under the keys the planner would use, so it never plans them later.  That is mailer/plan.py's
work (program/ does not import mailer/): the caller passes it in as ``skip_missed``.  A withdrawal
names whoever it leaves without a partner, as program/matching.py judges it; re-matching them is
program/proposals.py's work.

Notes and reasons are one line of at most :data:`TEXT_LIMIT` characters: control characters (a
newline, an escape sequence) are refused because these texts are printed on terminals and in
email reports.  ``now`` is an aware datetime.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from sqlalchemy import or_, update
from sqlmodel import Session, col, select

from program import matching
from program.csvinput import BIDI_CONTROLS, Invalid, check_email
from program.errors import NotFound, StateError, UsageError
from program.models import (
    CANCELLED,
    HELD,
    SENDABLE,
    Alias,
    Membership,
    OutboxMessage,
    Participant,
    Partnership,
    PartnershipNote,
    Round,
    Suppression,
)

TEXT_LIMIT = 1000  # characters in a note or a reason (Partnership.ended_reason's size)


def clean_text(text: str, what: str) -> str:
    """``text`` stripped, or UsageError: empty, a control character, or over TEXT_LIMIT."""
    value = text.strip()
    if not value:
        raise UsageError(f"{what}: empty; say in a few words what it is about")
    bad = sorted(
        {f"U+{ord(c):04X}" for c in value if unicodedata.category(c) == "Cc" or c in BIDI_CONTROLS}
    )
    if bad:
        raise UsageError(
            f"{what}: control characters are not allowed ({', '.join(bad)}); write one line"
        )
    if len(value) > TEXT_LIMIT:
        raise UsageError(f"{what}: {len(value)} characters; at most {TEXT_LIMIT}")
    return value


def _partnership(session: Session, partnership_id: int) -> tuple[Partnership, Round]:
    found = session.exec(
        select(Partnership, Round)
        .join(Round, col(Round.id) == col(Partnership.round_id))
        .where(Partnership.id == partnership_id)
    ).first()
    if found is None:
        raise NotFound(f"partnership {partnership_id}: no such partnership")
    return found[0], found[1]


def _participant(session: Session, email: str) -> Participant:
    address = email.strip().lower()
    person = session.exec(select(Participant).where(Participant.email == address)).first()
    if person is None:
        raise NotFound(f"participant {address}: not found")
    return person


def _members(session: Session, partnership_id: int) -> list[Participant]:
    query = (
        select(Participant)
        .join(Membership, col(Membership.participant_id) == col(Participant.id))
        .where(Membership.partnership_id == partnership_id)
        .order_by(col(Membership.position))
    )
    return list(session.exec(query))


def _cancel(session: Session, where: Any, reason: str, now: datetime) -> int:
    """Cancel the outbox rows matching ``where`` that never reached anyone: those waiting
    (pending, retry), which get ``reason`` as their note, and those held back for a person
    (late, failed, suppressed), whose old note follows it.  Returns how many."""
    connection = session.connection()
    result = connection.execute(
        update(OutboxMessage)
        .where(where, col(OutboxMessage.status).in_(SENDABLE))
        .values(status=CANCELLED, last_error=reason[:1000], updated_at=now)
    )
    count = int(result.rowcount or 0)
    held = connection.execute(
        select(OutboxMessage.id, OutboxMessage.status, OutboxMessage.last_error).where(
            where, col(OutboxMessage.status).in_(HELD)
        )
    ).all()
    for row_id, status, note in held:
        said = f"{reason}; it was {status}" + (f": {note}" if note else "")
        changed = connection.execute(
            update(OutboxMessage)
            .where(col(OutboxMessage.id) == row_id, col(OutboxMessage.status) == status)
            .values(status=CANCELLED, last_error=said[:1000], updated_at=now)
        )
        count += int(changed.rowcount or 0)
    return count


def close_partnership(
    partnership: Partnership, reason: str, *, session: Session, now: datetime
) -> int:
    """Dissolve ``partnership`` and cancel its waiting mail; returns how many rows."""
    partnership.status = "dissolved"
    partnership.ended_at = now
    partnership.ended_reason = reason
    session.add(partnership)
    why = f"cancelled: partnership {partnership.id} was dissolved on {now:%Y-%m-%d} ({reason})"
    return _cancel(session, col(OutboxMessage.partnership_id) == partnership.id, why, now)


def add_note(partnership_id: int, text: str, *, session: Session, now: datetime) -> PartnershipNote:
    """Keep a coordinator's note on a partnership (any status: notes are history too)."""
    value = clean_text(text, "note")
    _partnership(session, partnership_id)
    note = PartnershipNote(partnership_id=partnership_id, text=value, created_at=now)
    session.add(note)
    session.flush()
    return note


@dataclass
class Dissolved:
    """What dissolving a partnership did: mail cancelled, and who is now without a partner."""

    partnership: Partnership
    round: Round
    cancelled: int
    alone: list[Participant]


def dissolve(partnership_id: int, reason: str, *, session: Session, now: datetime) -> Dissolved:
    """End an active partnership before its round does (``rapport partnership dissolve``)."""
    why = clean_text(reason, "--reason")
    partnership, round_ = _partnership(session, partnership_id)
    if partnership.status != "active":
        when = f" on {partnership.ended_at:%Y-%m-%d}" if partnership.ended_at else ""
        said = f" ({partnership.ended_reason})" if partnership.ended_reason else ""
        raise StateError(
            f"partnership {partnership_id} is already {partnership.status}{when}{said}"
        )
    cancelled = close_partnership(partnership, why, session=session, now=now)
    members = _members(session, partnership_id)
    alone = [p for p in members if p.status != "withdrawn"]
    return Dissolved(partnership, round_, cancelled, alone)


_VERBS = {"pause": "paused", "resume": "active", "withdraw": "withdrawn"}
_NOTE_VERBS = {"pause": "paused", "resume": "resumed", "withdraw": "withdrew"}


@dataclass
class StatusChange:
    """What ``participant pause|resume|withdraw`` did (``before == after``: nothing)."""

    person: Participant
    before: str
    after: str
    cancelled: int = 0
    skipped: int = 0  # topics due while paused, recorded as cancelled at resume
    noted: list[int] = field(default_factory=list)  # partnerships the note went on
    alone: list[tuple[Participant, str]] = field(default_factory=list)  # (person, round name)


def _active_partnerships(session: Session, participant_id: int) -> list[tuple[int, Round]]:
    query = (
        select(Partnership.id, Round)
        .join(Membership, col(Membership.partnership_id) == col(Partnership.id))
        .join(Round, col(Round.id) == col(Partnership.round_id))
        .where(Membership.participant_id == participant_id, Partnership.status == "active")
        .order_by(col(Partnership.id))
    )
    return [(cast(int, pid), round_) for pid, round_ in session.exec(query)]


# (participant id, reason) -> how many topics due by now were recorded as skipped.
SkipMissed = Callable[[int, str], int]


def _paused_on(session: Session, person: Participant) -> datetime | None:
    """When ``person`` was last paused: the note pausing left on their partnerships."""
    said = f"{person.name} {_NOTE_VERBS['pause']}"
    query = (
        select(PartnershipNote.created_at)
        .join(Membership, col(Membership.partnership_id) == col(PartnershipNote.partnership_id))
        .where(
            Membership.participant_id == person.id,
            or_(
                col(PartnershipNote.text) == said,
                col(PartnershipNote.text).startswith(f"{said}: ", autoescape=True),
            ),
        )
        .order_by(col(PartnershipNote.created_at).desc())
        .limit(1)
    )
    return session.exec(query).first()


def change_status(
    email: str,
    verb: str,
    reason: str,
    *,
    session: Session,
    now: datetime,
    skip_missed: SkipMissed | None = None,
) -> StatusChange:
    """Pause, resume or withdraw the participant with ``email`` (idempotent).

    A withdrawal is final: a withdrawn participant is neither paused nor resumed.  Resuming
    calls ``skip_missed`` (mailer/plan.py's ``skip_topics``, which rapport/actions.py passes) to
    record the topics that fell due during the pause, so they are never sent.
    """
    why = clean_text(reason, "--reason") if reason.strip() else ""
    person = _participant(session, email)
    before, after = person.status, _VERBS[verb]
    if before == "withdrawn" and after != "withdrawn":
        raise StateError(
            f"{person.email} has withdrawn; a withdrawal is final, so they cannot be {verb}d"
        )
    change = StatusChange(person, before, after)
    if before == after:
        return change
    paused_on = _paused_on(session, person) if verb == "resume" else None
    person.status, person.updated_at = after, now
    session.add(person)
    if verb != "resume":
        said = f" ({why})" if why else ""
        note = f"cancelled: {person.email} {_NOTE_VERBS[verb]} on {now:%Y-%m-%d}{said}"
        change.cancelled = _cancel(
            session, col(OutboxMessage.participant_id) == person.id, note, now
        )
    text = f"{person.name} {_NOTE_VERBS[verb]}" + (f": {why}" if why else "")
    for partnership_id, round_ in _active_partnerships(session, cast(int, person.id)):
        session.add(PartnershipNote(partnership_id=partnership_id, text=text, created_at=now))
        change.noted.append(partnership_id)
        if verb == "withdraw":
            session.flush()
            people, groups = round_data(cast(int, round_.id), session=session)
            mates = {m for g in groups if g.id == partnership_id for m in g.members}
            for pid in matching.left_alone(people, groups):
                if pid in mates:
                    change.alone.append((session.get_one(Participant, pid), round_.name))
    session.flush()
    if verb == "resume" and skip_missed is not None:
        since = f"paused on {paused_on:%Y-%m-%d}, " if paused_on else ""
        why = f"skipped: due while paused ({since}resumed on {now:%Y-%m-%d})"
        change.skipped = skip_missed(cast(int, person.id), why)
    return change


@dataclass
class Summary:
    """Everything ``partnership show`` prints about one partnership."""

    partnership: Partnership
    round: Round
    members: list[Participant]
    notes: list[PartnershipNote]
    outbox: list[OutboxMessage]


def describe(partnership_id: int, *, session: Session) -> Summary:
    """One partnership's members, notes and outbox rows (its health is judged live by the
    caller, so a dissolution or a reply shows at once, not at the next daily snapshot)."""
    partnership, round_ = _partnership(session, partnership_id)
    notes = session.exec(
        select(PartnershipNote)
        .where(PartnershipNote.partnership_id == partnership_id)
        .order_by(col(PartnershipNote.created_at), col(PartnershipNote.id))
    ).all()
    rows = session.exec(
        select(OutboxMessage)
        .where(OutboxMessage.partnership_id == partnership_id)
        .order_by(col(OutboxMessage.due_at), col(OutboxMessage.id))
    ).all()
    members = _members(session, partnership_id)
    return Summary(partnership, round_, members, list(notes), list(rows))


def round_data(
    round_id: int, *, session: Session
) -> tuple[dict[int, matching.Person], list[matching.Group]]:
    """A round's partnerships and their members, as program/matching.py takes them."""
    query = (
        select(Membership.partnership_id, Partnership.status, Membership.participant_id)
        .join(Partnership, col(Partnership.id) == col(Membership.partnership_id))
        .where(Membership.round_id == round_id)
        .order_by(col(Membership.partnership_id), col(Membership.position))
    )
    members: dict[int, list[int]] = {}
    statuses: dict[int, str] = {}
    for partnership_id, status, participant_id in session.exec(query):
        members.setdefault(partnership_id, []).append(participant_id)
        statuses[partnership_id] = status
    ids = {pid for group in members.values() for pid in group}
    people = {
        cast(int, p.id): matching.Person(
            id=cast(int, p.id),
            email=p.email,
            name=p.name,
            country=p.country,
            timezone=p.timezone,
            status=p.status,
            career_stage=p.career_stage,
            sector=p.sector,
            interests=p.interests,
        )
        for p in session.exec(select(Participant).where(col(Participant.id).in_(ids)))
    }
    groups = [matching.Group(g, statuses[g], tuple(m)) for g, m in members.items()]
    return people, groups


@dataclass
class AddressChange:
    """What ``participant address`` or ``participant unsuppress`` did."""

    person: Participant
    old: str
    lifted: bool = False  # a suppression or a bounce mark was removed
    noted: list[int] = field(default_factory=list)


def change_address(email: str, new: str, *, session: Session, now: datetime) -> AddressChange:
    """Give the participant ``email`` a working address ``new`` (their mail bounced, or they
    moved): the old one stays suppressed and becomes an alias, so their mail from it still
    counts; the bounce mark is cleared, so they are mailed and judged normally again."""
    try:
        address = check_email(new.strip())
    except Invalid as exc:
        raise UsageError(f"participant address: {exc}") from None
    person = _participant(session, email)
    old = person.email
    if address == old:
        raise UsageError(f"{old} is already their address")
    if session.exec(select(Participant).where(Participant.email == address)).first():
        raise UsageError(f"{address} is another participant's address")
    alias = session.exec(select(Alias).where(Alias.email == address)).first()
    if alias is not None and alias.participant_id != person.id:
        raise UsageError(f"{address} is an alias of another participant")
    if session.exec(select(Suppression).where(Suppression.email == address)).first():
        raise StateError(
            f"{address} is suppressed (it bounced or unsubscribed): run"
            f" `rapport participant unsuppress` for it first if it works now"
        )
    if alias is not None:
        session.delete(alias)  # it becomes their own address
    person_id = cast(int, person.id)
    person.email, person.bouncing_since, person.updated_at = address, None, now
    session.add(person)
    session.flush()
    session.add(Alias(email=old, participant_id=person_id, created_at=now))
    change = AddressChange(person, old)
    text = f"{person.name}'s address changed from {old} to {address}"
    for partnership_id, _round in _active_partnerships(session, person_id):
        session.add(PartnershipNote(partnership_id=partnership_id, text=text, created_at=now))
        change.noted.append(partnership_id)
    session.flush()
    return change


def unsuppress(email: str, *, session: Session, now: datetime) -> AddressChange:
    """Mail the participant ``email`` again: remove their address's suppression (a bounce that
    was temporary after all, an unsubscribe by mistake) and clear their bounce mark."""
    person = _participant(session, email)
    row = session.exec(select(Suppression).where(Suppression.email == person.email)).first()
    change = AddressChange(person, person.email)
    if row is None and person.bouncing_since is None:
        return change
    if row is not None:
        session.delete(row)
    change.lifted = True
    person.bouncing_since, person.updated_at = None, now
    session.add(person)
    text = f"{person.name} can be mailed again at {person.email}"
    for partnership_id, _round in _active_partnerships(session, cast(int, person.id)):
        session.add(PartnershipNote(partnership_id=partnership_id, text=text, created_at=now))
        change.noted.append(partnership_id)
    session.flush()
    return change
