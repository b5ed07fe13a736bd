"""Coordinators' actions on the CLI: notes, dissolutions, pauses, withdrawals and re-matching.

Handlers for ``rapport partnership show|note|dissolve``, ``rapport participant
pause|resume|withdraw`` and ``rapport match suggest|apply`` (the parsers are in rapport/cli.py).
Each handler parses, calls one data function in one transaction and prints what it did; the rules
(what may be dissolved, paused or applied, which mail is cancelled) live in program/coordination.py
and program/proposals.py, whose errors rapport/cli.py turns into messages and exit codes.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from typing import TYPE_CHECKING

from mailer.plan import skip_topics
from monitor import judging
from monitor.health import Health
from program import matching
from program.config import reply_secret
from program.coordination import (
    Summary,
    add_note,
    change_address,
    change_status,
    describe,
    dissolve,
    unsuppress,
)
from program.errors import UsageError
from program.models import Participant
from program.privacy import forget, purge
from program.proposals import Suggested, apply, suggest
from program.store import session_scope

if TYPE_CHECKING:
    from rapport.cli import Context


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


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")


def participant_status(ctx: Context) -> int:
    args = ctx.args
    verb = args.participant_command
    if verb in ("address", "unsuppress"):
        return _participant_address(ctx)
    if verb == "forget":
        return _forget(ctx)
    with session_scope(ctx.engine()) as session:
        reason = getattr(args, "reason", "")

        def skip_missed(participant_id: int, why: str) -> int:
            # The reply-key secret is read only if there is a topic to record.
            missed = skip_topics(
                session,
                participant_id,
                why,
                settings=ctx.settings,
                secret=reply_secret,
                now=ctx.now,
            )
            return len(missed)

        change = change_status(
            args.email, verb, reason, session=session, now=ctx.now, skip_missed=skip_missed
        )
    person = change.person
    if change.before == change.after:
        _say(f"{person.email} is already {change.after}; nothing changed")
        return 0
    _say(f"{person.email} is now {change.after} (was {change.before})")
    if verb != "resume":
        _say(f"cancelled {_plural(change.cancelled, 'waiting outbox message')}")
    elif change.skipped:
        _say(
            f"skipped {_plural(change.skipped, 'topic')} that fell due during the pause"
            " (`rapport outbox --status cancelled` lists them); the next one goes out as usual"
        )
    if change.noted:
        where = ", ".join(str(p) for p in change.noted)
        _say(f"noted on partnership {where}")
    for mate, round_name in change.alone:
        _say(f"now without a partner in {round_name}: {_who(mate)}")
    if change.alone:
        rounds = sorted({name for _, name in change.alone})
        _say(f"to propose new partners: rapport match suggest --round {rounds[0]}")
    return 0


def _forget(ctx: Context) -> int:
    args = ctx.args
    if not args.yes:
        raise UsageError(
            f"participant forget {args.email}: this erases their name, address, the mail they"
            " sent and every mention of them, and cannot be undone; add --yes to go ahead"
        )
    with session_scope(ctx.engine()) as session:
        done = forget(args.email, session=session, now=ctx.now)
    _say(f"{args.email.strip().lower()} is forgotten: now participant #{done.participant_id}")
    _say(
        f"erased {_plural(done.inbound, 'inbound message')},"
        f" {_plural(done.payloads, 'message payload')} ({done.cancelled} waiting, cancelled),"
        f" {done.aliases} aliases; scrubbed {_plural(done.notes, 'note')} and"
        f" {_plural(done.snapshots, 'health snapshot')}"
    )
    return 0


def cmd_purge(ctx: Context) -> int:
    days = ctx.settings.privacy.retain_days
    if days == 0:
        _say("privacy.retain_days = 0: inbound metadata is kept; nothing purged")
        return 0
    with ctx.engine().begin() as connection:
        done = purge(connection, retain_days=days, now=ctx.now)
    _say(
        f"purged {_plural(done.inbound, 'inbound message')} older than {days} days and"
        f" {_plural(done.payloads, 'sent message payload')}"
    )
    return 0


def _participant_address(ctx: Context) -> int:
    args = ctx.args
    with session_scope(ctx.engine()) as session:
        if args.participant_command == "address":
            change = change_address(args.email, args.new, session=session, now=ctx.now)
        else:
            change = unsuppress(args.email, session=session, now=ctx.now)
    person = change.person
    if args.participant_command == "address":
        _say(f"{person.name}: now {person.email}; mail from {change.old} still counts as theirs")
    elif not change.lifted:
        _say(f"{person.email} was not suppressed; nothing changed")
        return 0
    else:
        _say(f"{person.email} can be mailed again")
    if change.noted:
        _say(f"noted on partnership {', '.join(str(p) for p in change.noted)}")
    return 0


def _show(summary: Summary, health: Health | None) -> None:
    p, r = summary.partnership, summary.round
    _say(f"partnership {p.id} in {r.name}: {p.status}, matched {_when(p.created_at)} UTC")
    if p.status != "active":
        said = f": {p.ended_reason}" if p.ended_reason else ""
        _say(f"{p.status} {_when(p.ended_at)} UTC{said}")
    _say()
    rows = [[m.name, m.email, m.country, m.timezone, m.status] for m in summary.members]
    _say(_table(rows, ["member", "email", "country", "zone", "status"]))
    _say()
    if health is None:  # pragma: no cover - a partnership always has a round
        _say("health: not judged")
    else:
        _say(f"health now: {health.state}, score {health.score}, since {_when(health.since)} UTC")
        for reason in health.reasons:
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
        with ctx.engine().connect() as connection:
            judged = judging.judge_all(
                connection, settings=ctx.settings, now=ctx.now, only=[args.id]
            )
        _show(summary, judged[0].health if judged else None)
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
