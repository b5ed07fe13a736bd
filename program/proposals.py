"""Re-matching within a round: store suggested partners as proposals, then apply the chosen ones.

The data behind ``rapport match suggest|apply`` (rapport/actions.py parses and prints).
program/matching.py judges who is left alone and who would suit them; this module reads the round
for it, keeps its suggestions as ``proposed`` rows (each new suggestion drops the round's open
ones) and makes applied proposals into partnerships, all or none.  Functions take the session as a
keyword and leave the transaction to their caller; a refused apply raises before it writes.
``now`` is an aware datetime.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import cast

from sqlalchemy import update
from sqlmodel import Session, col, select

from program import matching
from program.coordination import close_partnership, round_data
from program.errors import NotFound, StateError, UsageError
from program.models import MatchProposal, Membership, Participant, Partnership, Round


def _round(session: Session, name: str | None, now: datetime) -> Round:
    """The round called ``name``, else the active round that started last by ``now`` (else,
    when none has started, the next to start): a round opened for next term is not the one
    whose pairs need re-matching today."""
    if name is not None:
        found = session.exec(select(Round).where(Round.name == name)).first()
        if found is None:
            raise NotFound(f"round {name}: no such round (see `rapport round list`)")
        return found
    today = now.astimezone(UTC).date()
    active = select(Round).where(Round.status == "active")
    chosen = (
        session.exec(
            active.where(col(Round.start) <= today).order_by(
                col(Round.start).desc(), col(Round.id).desc()
            )
        ).first()
        or session.exec(active.order_by(col(Round.start), col(Round.id))).first()
    )
    if chosen is None:
        raise NotFound("no active round; name one with --round")
    return chosen


@dataclass
class Suggested:
    """What ``match suggest`` stored: proposals with their ids, and who is still unmatched."""

    round: Round
    proposals: list[tuple[int, matching.Proposal]]
    unmatched: list[tuple[matching.Person, str]]
    replaced: int


def suggest(round_name: str | None, *, session: Session, now: datetime) -> Suggested:
    """Propose partners for the people left alone, replacing the round's open proposals."""
    round_ = _round(session, round_name, now)
    round_id = cast(int, round_.id)
    people, groups = round_data(round_id, session=session)
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
            people, groups = round_data(proposal.round_id, session=session)
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
                close_partnership(
                    old,
                    f"every other member withdrew; re-matched by proposal {proposal.id}",
                    session=session,
                    now=now,
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
