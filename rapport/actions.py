"""Coordinators' actions on the CLI: notes, dissolutions, pauses, withdrawals and re-matching.

Handlers for ``rapport partnership show|note|dissolve``, ``rapport participant
pause|resume|withdraw`` and ``rapport match suggest|apply`` (the parsers are in rapport/cli.py).
Each handler runs one transaction: the data functions below take the session as a keyword, check
everything before they write, and raise (UsageError, NotFound, StateError) so that a refused
action leaves the database as it was.

Mail already queued for someone who should no longer get it is not deleted but *cancelled*: a
``pending`` or ``retry`` outbox row of a dissolved partnership, or of a paused or withdrawn
participant, becomes ``cancelled`` with ``last_error`` saying why, so the outbox still shows what
was planned and why it never went.  A row already ``sending`` is left alone: it may be on the wire.

A change of a participant's status, with its reason when one is given ("Maria Kowalska paused: on
leave until May"), is kept as a note on their active partnership(s), where coordinators look
(``partnership show``, the weekly report).  Resuming does not bring back the mail cancelled by a
pause: the topics sent meanwhile were missed, and the planner sends the next one.

Notes and reasons are one line of at most :data:`TEXT_LIMIT` characters: control characters (a
newline, an escape sequence) are refused because these texts are printed on terminals and in
email reports.
"""

from __future__ import annotations

import json
import sys
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import update
from sqlmodel import Session, col, select

from program import matching
from program.errors import NotFound, StateError, UsageError
from program.models import (
    CANCELLED,
    SENDABLE,
    HealthSnapshot,
    MatchProposal,
    Membership,
    OutboxMessage,
    Participant,
    Partnership,
    PartnershipNote,
    Round,
)
from program.store import session_scope

if TYPE_CHECKING:
    from rapport.cli import Context

TEXT_LIMIT = 1000  # characters in a note or a reason (Partnership.ended_reason's size)


def _say(text: str = "") -> None:
    print(text)


def _table(rows: list[list[str]], headers: list[str]) -> str:
    widths = [max(len(c) for c in column) for column in zip(headers, *rows, strict=False)]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
        for line in [headers, *rows]
    )


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value else "-"


def _who(person: Participant | matching.Person, *, status: bool = False) -> str:
    """``Ann Dupont <ann@example.org> (FR)``; with ``status``, a non-active one is named."""
    extra = f", {person.status}" if status and person.status != "active" else ""
    return f"{person.name} <{person.email}> ({person.country}{extra})"


def clean_text(text: str, what: str) -> str:
    """``text`` stripped, or UsageError: empty, a control character, or over TEXT_LIMIT."""
    value = text.strip()
    if not value:
        raise UsageError(f"{what}: empty; say in a few words what it is about")
    bad = sorted({f"U+{ord(c):04X}" for c in value if unicodedata.category(c) == "Cc"})
    if bad:
        raise UsageError(
            f"{what}: control characters are not allowed ({', '.join(bad)}); write one line"
        )
    if len(value) > TEXT_LIMIT:
        raise UsageError(f"{what}: {len(value)} characters; at most {TEXT_LIMIT}")
    return value


# -- data functions ------------------------------------------------------------------------------


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
    """Cancel the waiting (pending, retry) outbox rows matching ``where``; returns how many."""
    result = session.connection().execute(
        update(OutboxMessage)
        .where(where, col(OutboxMessage.status).in_(SENDABLE))
        .values(status=CANCELLED, last_error=reason[:1000], updated_at=now)
    )
    return int(result.rowcount or 0)


def _close(session: Session, partnership: Partnership, reason: str, now: datetime) -> int:
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
    cancelled = _close(session, partnership, why, now)
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


def change_status(
    email: str, verb: str, reason: str, *, session: Session, now: datetime
) -> StatusChange:
    """Pause, resume or withdraw the participant with ``email`` (idempotent).

    A withdrawal is final: a withdrawn participant is neither paused nor resumed.
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
            people, groups = _round_data(session, cast(int, round_.id))
            mates = {m for g in groups if g.id == partnership_id for m in g.members}
            for pid in matching.left_alone(people, groups):
                if pid in mates:
                    change.alone.append((session.get_one(Participant, pid), round_.name))
    session.flush()
    return change


@dataclass
class Summary:
    """Everything ``partnership show`` prints about one partnership."""

    partnership: Partnership
    round: Round
    members: list[Participant]
    health: HealthSnapshot | None
    notes: list[PartnershipNote]
    outbox: list[OutboxMessage]


def describe(partnership_id: int, *, session: Session) -> Summary:
    """One partnership's members, latest health snapshot, notes and outbox rows."""
    partnership, round_ = _partnership(session, partnership_id)
    health = session.exec(
        select(HealthSnapshot)
        .where(HealthSnapshot.partnership_id == partnership_id)
        .order_by(col(HealthSnapshot.day).desc())
    ).first()
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
    return Summary(partnership, round_, members, health, list(notes), list(rows))


def _round(session: Session, name: str | None) -> Round:
    """The round called ``name``, else the active round that started last."""
    if name is not None:
        found = session.exec(select(Round).where(Round.name == name)).first()
        if found is None:
            raise NotFound(f"round {name}: no such round (see `rapport round list`)")
        return found
    latest = session.exec(
        select(Round)
        .where(Round.status == "active")
        .order_by(col(Round.start).desc(), col(Round.id).desc())
    ).first()
    if latest is None:
        raise NotFound("no active round; name one with --round")
    return latest


def _round_data(
    session: Session, round_id: int
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
class Suggested:
    """What ``match suggest`` stored: proposals with their ids, and who is still unmatched."""

    round: Round
    proposals: list[tuple[int, matching.Proposal]]
    unmatched: list[tuple[matching.Person, str]]
    replaced: int


def suggest(round_name: str | None, *, session: Session, now: datetime) -> Suggested:
    """Propose partners for the people left alone, replacing the round's open proposals."""
    round_ = _round(session, round_name)
    round_id = cast(int, round_.id)
    people, groups = _round_data(session, round_id)
    found = matching.suggest(people, groups, now=now)
    replaced = session.connection().execute(
        update(MatchProposal)
        .where(col(MatchProposal.round_id) == round_id, col(MatchProposal.status) == "proposed")
        .values(status="dropped", updated_at=now)
    )
    stored: list[tuple[int, matching.Proposal]] = []
    for proposal in found.proposals:
        row = MatchProposal(
            round_id=round_id,
            participant_id=proposal.a.id,
            partner_id=proposal.b.id,
            score=proposal.score,
            reasons=json.dumps(list(proposal.reasons), ensure_ascii=False),
            status="proposed",
            created_at=now,
            updated_at=now,
        )
        session.add(row)
        session.flush()
        stored.append((cast(int, row.id), proposal))
    return Suggested(round_, stored, list(found.unmatched), int(replaced.rowcount or 0))


@dataclass
class Applied:
    """One proposal made into a partnership, and the partnerships it closed on the way."""

    proposal_id: int
    partnership_id: int
    round: Round
    members: list[Participant]
    closed: list[int]


def _open_proposals(session: Session, ids: Sequence[int], every: bool) -> list[MatchProposal]:
    if every:
        query = select(MatchProposal).where(MatchProposal.status == "proposed")
        return list(session.exec(query.order_by(col(MatchProposal.id))))
    chosen: list[MatchProposal] = []
    for proposal_id in dict.fromkeys(ids):
        proposal = session.get(MatchProposal, proposal_id)
        if proposal is None:
            raise NotFound(f"proposal {proposal_id}: no such proposal")
        if proposal.status == "applied":
            raise StateError(
                f"proposal {proposal_id} is already applied (partnership {proposal.partnership_id})"
            )
        if proposal.status != "proposed":
            raise StateError(
                f"proposal {proposal_id} was replaced by a later `rapport match suggest`;"
                " apply one of the new proposals"
            )
        chosen.append(proposal)
    return chosen


def apply(ids: Sequence[int], *, every: bool, session: Session, now: datetime) -> list[Applied]:
    """Make proposals into partnerships, all or none (``rapport match apply``).

    Each member must still be left alone in the proposal's round (program/matching.py's rule);
    otherwise nothing is written.  A member whose active partnership is left with only withdrawn
    members has it dissolved first, so nobody holds two active partnerships in one round.
    """
    if every and ids:
        raise UsageError("match apply: give proposal ids or --all, not both")
    if not every and not ids:
        raise UsageError("match apply: give the proposal ids to apply, or --all")
    proposals = _open_proposals(session, ids, every)
    problems: list[str] = []
    seen: dict[int, int] = {}
    rounds: dict[int, tuple[set[int], set[frozenset[int]], list[matching.Group]]] = {}
    for proposal in proposals:
        if proposal.round_id not in rounds:
            people, groups = _round_data(session, proposal.round_id)
            before = {frozenset((a, b)) for g in groups for a in g.members for b in g.members}
            rounds[proposal.round_id] = (set(matching.left_alone(people, groups)), before, groups)
        alone, before, _ = rounds[proposal.round_id]
        pair = (proposal.participant_id, proposal.partner_id)
        for pid in pair:
            person = session.get_one(Participant, pid)
            earlier = seen.setdefault(pid, cast(int, proposal.id))
            if earlier != proposal.id:
                problems.append(
                    f"proposal {proposal.id}: {person.email} is also in proposal {earlier}"
                )
            elif pid not in alone:
                now_is = f"is {person.status}" if person.status != "active" else "has a partner"
                problems.append(
                    f"proposal {proposal.id}: {person.email} {now_is} now;"
                    " run `rapport match suggest` again"
                )
        if frozenset(pair) in before:
            problems.append(f"proposal {proposal.id}: these two were already partners this round")
    if problems:
        raise StateError("nothing applied:\n" + "\n".join(problems))

    done: list[Applied] = []
    for proposal in proposals:
        _, _, groups = rounds[proposal.round_id]
        pair = (proposal.participant_id, proposal.partner_id)
        members = [session.get_one(Participant, pid) for pid in pair]
        closed: list[int] = []
        for group in groups:
            if group.status == "active" and set(pair) & set(group.members):
                # Everyone else in it has withdrawn (else its member would not be alone).
                old = session.get_one(Partnership, group.id)
                _close(
                    session,
                    old,
                    f"every other member withdrew; re-matched by proposal {proposal.id}",
                    now,
                )
                closed.append(group.id)
        created = Partnership(round_id=proposal.round_id, status="active", created_at=now)
        session.add(created)
        session.flush()
        new_id = cast(int, created.id)
        for position, pid in enumerate(pair):
            session.add(
                Membership(
                    partnership_id=new_id,
                    participant_id=pid,
                    round_id=proposal.round_id,
                    position=position,
                )
            )
        proposal.status, proposal.partnership_id, proposal.updated_at = "applied", new_id, now
        session.add(proposal)
        session.flush()
        round_ = session.get_one(Round, proposal.round_id)
        done.append(Applied(cast(int, proposal.id), new_id, round_, members, closed))
    return done


# -- handlers ------------------------------------------------------------------------------------


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")


def participant_status(ctx: Context) -> int:
    args = ctx.args
    verb = args.participant_command
    with session_scope(ctx.engine()) as session:
        reason = getattr(args, "reason", "")
        change = change_status(args.email, verb, reason, session=session, now=ctx.now)
    person = change.person
    if change.before == change.after:
        _say(f"{person.email} is already {change.after}; nothing changed")
        return 0
    _say(f"{person.email} is now {change.after} (was {change.before})")
    if verb != "resume":
        _say(f"cancelled {_plural(change.cancelled, 'waiting outbox message')}")
    if change.noted:
        where = ", ".join(str(p) for p in change.noted)
        _say(f"noted on partnership {where}")
    for mate, round_name in change.alone:
        _say(f"now without a partner in {round_name}: {_who(mate)}")
    if change.alone:
        rounds = sorted({name for _, name in change.alone})
        _say(f"to propose new partners: rapport match suggest --round {rounds[0]}")
    return 0


def _show(summary: Summary) -> None:
    p, r = summary.partnership, summary.round
    _say(f"partnership {p.id} in {r.name}: {p.status}, matched {_when(p.created_at)} UTC")
    if p.status != "active":
        said = f": {p.ended_reason}" if p.ended_reason else ""
        _say(f"{p.status} {_when(p.ended_at)} UTC{said}")
    _say()
    rows = [[m.name, m.email, m.country, m.timezone, m.status] for m in summary.members]
    _say(_table(rows, ["member", "email", "country", "zone", "status"]))
    _say()
    health = summary.health
    if health is None:
        _say("health: not judged yet")
    else:
        _say(
            f"health on {health.day}: {health.state}, score {health.score},"
            f" since {_when(health.since)} UTC"
        )
        for reason in json.loads(health.reasons or "[]"):
            _say(f"  - {reason}")
    _say()
    if summary.notes:
        _say("notes:")
        for note in summary.notes:
            _say(f"  {_when(note.created_at)}  {note.text}")
    else:
        _say("notes: none")
    _say()
    if summary.outbox:
        rows = [
            [str(o.id), o.kind, o.status, _when(o.due_at), _when(o.sent_at), o.to_address]
            for o in summary.outbox
        ]
        _say(_table(rows, ["outbox", "kind", "status", "due (UTC)", "sent (UTC)", "to"]))
    else:
        _say("outbox: nothing planned yet")


def cmd_partnership(ctx: Context) -> int:
    args = ctx.args
    command = args.partnership_command
    with session_scope(ctx.engine()) as session:
        if command == "show":
            summary = describe(args.id, session=session)
        elif command == "note":
            add_note(args.id, args.text, session=session, now=ctx.now)
        else:
            dissolved = dissolve(args.id, args.reason, session=session, now=ctx.now)
    if command == "show":
        _show(summary)
    elif command == "note":
        _say(f"note added to partnership {args.id}")
    else:
        p = dissolved.partnership
        _say(f"partnership {p.id} in {dissolved.round.name} dissolved: {p.ended_reason}")
        _say(f"cancelled {_plural(dissolved.cancelled, 'waiting outbox message')}")
        if dissolved.alone:
            _say("now without a partner:")
            for person in dissolved.alone:
                _say(f"  {_who(person, status=True)}")
            _say(f"to propose new partners: rapport match suggest --round {dissolved.round.name}")
        else:
            _say("no one is left without a partner: every member had withdrawn")
    return 0


def _members_json(proposal: matching.Proposal) -> list[dict[str, str]]:
    return [
        {"email": p.email, "name": p.name, "country": p.country} for p in (proposal.a, proposal.b)
    ]


def _print_suggested(found: Suggested, as_json: bool) -> None:
    name = found.round.name
    if as_json:
        for proposal_id, proposal in found.proposals:
            record = {
                "id": proposal_id,
                "round": name,
                "members": _members_json(proposal),
                "score": proposal.score,
                "reasons": list(proposal.reasons),
            }
            _say(json.dumps(record, ensure_ascii=False))
        for person, why in found.unmatched:
            sys.stderr.write(f"no partner found for {_who(person)}: {why}\n")
        return
    if not found.proposals and not found.unmatched:
        _say(f"no one is left alone in {name}")
        return
    if found.proposals:
        rows = [
            [
                str(proposal_id),
                f"{p.a.name} ({p.a.country}) + {p.b.name} ({p.b.country})",
                str(p.score),
                "; ".join(p.reasons),
            ]
            for proposal_id, p in found.proposals
        ]
        _say(_table(rows, ["id", "partners", "score", "why"]))
    for person, why in found.unmatched:
        _say(f"no partner found for {_who(person)}: {why}")
    if found.proposals:
        _say("to make them partnerships: rapport match apply ID... (or --all)")


def cmd_match(ctx: Context) -> int:
    args = ctx.args
    if args.match_command == "suggest":
        with session_scope(ctx.engine()) as session:
            found = suggest(args.round, session=session, now=ctx.now)
        _print_suggested(found, args.json)
        return 0
    with session_scope(ctx.engine()) as session:
        done = apply(args.ids, every=args.all, session=session, now=ctx.now)
    if not done:
        _say("no open proposals; run `rapport match suggest` first")
    for item in done:
        for old in item.closed:
            _say(f"partnership {old} dissolved: every other member had withdrawn")
        people = " and ".join(_who(m) for m in item.members)
        _say(
            f"proposal {item.proposal_id}: {people} are now partnership {item.partnership_id}"
            f" in {item.round.name}"
        )
    return 0
