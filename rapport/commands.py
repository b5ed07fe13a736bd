"""The command handlers behind rapport/cli.py: each calls one core function and prints.

Errors are raised, never printed here: cli.main turns them into messages and exit codes.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections import Counter
from collections.abc import Callable
from datetime import UTC, date, datetime
from email.header import decode_header, make_header
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlmodel import Session

from mailer import outbox
from mailer.classify import classify_file
from mailer.compose import Composer
from mailer.deliver import DeliveryResult
from mailer.render import preview
from monitor import judging, signals
from monitor.health import STATES
from program import roster, topics
from program.config import reply_secret
from program.errors import NotFound, UsageError
from program.store import session_scope
from rapport import jobs, poll, watch

if TYPE_CHECKING:
    from rapport.cli import Context


def _progress() -> Callable[[int, int], None] | None:
    """A progress line on a terminal; nothing in a pipe or under systemd."""
    if (
        not sys.stderr.isatty()
        or os.environ.get("INVOCATION_ID")
        or os.environ.get("JOURNAL_STREAM")
    ):
        return None

    def show(done: int, total: int) -> None:
        if done % 50 == 0 or done == total:
            of = f"/{total}" if total else ""
            sys.stderr.write(f"\rsending {done}{of}")
            sys.stderr.flush()

    return show


def _table(rows: list[list[str]], headers: list[str]) -> str:
    widths = [max(len(str(x)) for x in column) for column in zip(headers, *rows, strict=False)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += [
        "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    return "\n".join(lines)


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value else "-"


def cmd_import(ctx: Context) -> int:
    args = ctx.args
    engine = ctx.engine()
    settings = ctx.settings
    importers: dict[str, Callable[..., roster.ImportReport]] = {
        "participants": roster.import_participants,
        "coordinators": roster.import_coordinators,
        "partnerships": roster.import_partnerships,
        "topics": roster.import_topics,
    }
    extra: dict[str, Any] = {}
    if args.kind == "coordinators":
        extra["default_timezone"] = settings.program.timezone
    if args.kind == "topics":
        extra.update(round_name=args.round_name, default_language=settings.program.default_language)
    source: Path = args.directory if args.kind == "topics" else args.file
    with Session(engine, expire_on_commit=False) as session:
        report = importers[args.kind](source, session=session, now=ctx.now, **extra)
        if args.dry_run:
            session.rollback()
        else:
            session.commit()
    for warning in report.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    prefix = "dry run, nothing written: " if args.dry_run else ""
    print(prefix + report.summary())
    return 0


def cmd_round(ctx: Context) -> int:
    args = ctx.args
    with session_scope(ctx.engine()) as session:
        if args.round_command == "create":
            created = roster.create_round(
                args.name,
                session=session,
                now=ctx.now,
                start=args.start,
                end=args.end,
                cadence_days=args.cadence_days,
            )
            end = f" to {created.end}" if created.end else ""
            print(
                f"round {created.name}: starts {created.start}{end},"
                f" a topic every {created.cadence_days} days"
            )
            return 0
        today = ctx.now.astimezone(UTC).date()
        rows = [
            [r.name, str(r.start), str(r.end or "-"), str(r.cadence_days), _round_state(r, today)]
            for r in roster.list_rounds(session=session)
        ]
    print(_table(rows, ["round", "start", "end", "cadence", "status"]) if rows else "no rounds yet")
    return 0


def _round_state(round_: Any, today: date) -> str:
    """A round's status as of ``today`` (UTC): an active round is ``upcoming`` before its start
    and ``ended`` after its end date, as health judges it."""
    if round_.status != "active":
        return str(round_.status)
    if today < round_.start:
        return "upcoming"
    if round_.end is not None and today > round_.end:
        return "ended"
    return "active"


def cmd_topics(ctx: Context) -> int:
    args = ctx.args
    with session_scope(ctx.engine()) as session:
        scheduled = topics.schedule(
            session=session,
            round_name=args.round_name,
            default_language=ctx.settings.program.default_language,
        )
    lines = [
        [t.round_name, str(t.order), str(t.send_date), " ".join(t.languages), t.title]
        for t in scheduled
    ]
    print(
        _table(lines, ["round", "#", "send on", "languages", "title"]) if lines else "no topics yet"
    )
    return 0


def cmd_preview(ctx: Context) -> int:
    args = ctx.args
    composer = Composer()
    message = preview(
        ctx.engine(),
        settings=ctx.settings,
        composer=composer,
        secret=reply_secret(),
        email=args.participant,
        order=args.order,
        round_name=args.round_name,
        now=ctx.now,
    )
    for name in ("From", "To", "Reply-To", "Subject", "Date", "Message-ID"):
        print(f"{name}: {make_header(decode_header(str(message[name])))}")
    print()
    html = None
    for part in message.walk():
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):
            continue
        text = payload.decode(part.get_content_charset() or "utf-8")
        if part.get_content_type() == "text/plain":
            print(text)
        elif part.get_content_type() == "text/html":
            html = text
    if args.html:
        if html is None:  # pragma: no cover - every topic email has an HTML part
            raise NotFound("this message has no HTML part")
        try:
            args.html.write_text(html, encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"{args.html}: cannot write: {exc.strerror}") from None
        print(f"(HTML part written to {args.html})", file=sys.stderr)
    return 0


def cmd_send(ctx: Context) -> int:
    args = ctx.args
    progress = _progress()
    stop = _StopOnSignal()
    result = jobs.send(
        ctx.engine(),
        settings=ctx.settings,
        secret=reply_secret(),
        now=ctx.now,
        limit=args.limit,
        dry_run=args.dry_run,
        progress=progress,
        should_stop=stop,
    )
    stop.restore()
    if progress:
        sys.stderr.write("\n")
    for error in result.delivery.errors[:20]:
        print(f"error: {error}", file=sys.stderr)
    print(result.summary() + ("; interrupted by a signal" if stop.signalled else ""))
    return 0 if result.ok else 1


class _StopOnSignal:
    """SIGTERM and SIGINT ask the pass to stop after the message in flight, not in the middle."""

    def __init__(self) -> None:
        self.signalled = False
        self.previous = {
            sig: signal.signal(sig, self._handle) for sig in (signal.SIGTERM, signal.SIGINT)
        }

    def _handle(self, signum: int, _frame: object) -> None:
        self.signalled = True

    def __call__(self) -> bool:
        return self.signalled

    def restore(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def cmd_participant(ctx: Context) -> int:
    args = ctx.args
    if args.participant_command != "alias":
        from rapport.actions import participant_status

        return participant_status(ctx)
    with session_scope(ctx.engine()) as session:
        added = roster.add_alias(args.email, args.address, session=session, now=ctx.now)
    email, address = args.email.strip().lower(), args.address.strip().lower()
    print(f"{address} now counts as {email}" if added else f"{address} already counts as {email}")
    return 0


def cmd_unsubscribe(ctx: Context) -> int:
    with session_scope(ctx.engine()) as session:
        email = signals.unsubscribe(session, ctx.args.key, secret=reply_secret(), now=ctx.now)
    if email is None:
        raise NotFound("unsubscribe: that key names no participant (mistyped or forged)")
    print(f"{email} is unsubscribed: Rapport will send them nothing more")
    return 0


def cmd_inbox(ctx: Context) -> int:
    args = ctx.args
    if args.inbox_command == "classify":
        mailbox = poll.mailbox_for(ctx.settings)
        for path in args.files:
            print(json.dumps(classify_file(path, mailbox), ensure_ascii=False))
        return 0
    if args.inbox_command == "status":
        rows = [
            [
                f.source,
                f.folder,
                str(f.uidvalidity),
                str(f.last_uid),
                _when(f.last_poll_at),
                " ".join(f"{k}={n}" for k, n in sorted(f.kinds.items())) or "-",
                f.last_error or "",
            ]
            for f in poll.status(ctx.engine())
        ]
        headers = [
            "source",
            "folder",
            "uidvalidity",
            "last uid",
            "last poll",
            "messages",
            "last error",
        ]
        print(_table(rows, headers) if rows else "the inbox has not been read yet")
        return 0
    result = poll.poll(
        ctx.engine(),
        settings=ctx.settings,
        secret=reply_secret(),
        now=ctx.now,
        dry_run=args.dry_run,
    )
    print(result.summary())
    if result.concerns and not args.dry_run:
        alerts = watch.plan_concern_alerts(
            ctx.engine(), settings=ctx.settings, secret=reply_secret(), now=ctx.now
        )
        print(f"planned {alerts} concern alerts to coordinators; `rapport send` delivers them now")
    return 1 if result.errors else 0


def cmd_outbox(ctx: Context) -> int:
    args = ctx.args
    with session_scope(ctx.engine()) as session:
        if args.outbox_command == "retry":
            ids = list(dict.fromkeys(args.id))
            for row_id, before in zip(ids, outbox.retry_rows(session, ids, ctx.now), strict=True):
                print(
                    f"outbox row {row_id}: was {before}, now pending;"
                    " the next `rapport send` sends it"
                )
            return 0
        # A row left "sending" by a process that has died is uncertain: say so now, not at the
        # next send.
        outbox.recover(session.connection(), ctx.now, ctx.settings.outbox.lease)
        counts = outbox.counts(session)
        statuses = (
            [args.status] if args.status else ["uncertain", "failed", "late", "retry", "suppressed"]
        )
        rows = outbox.listing(session, statuses)
    if not args.status:
        print("  ".join(f"{state} {n}" for state, n in counts.items()))
        if counts["uncertain"]:
            print(
                f"{counts['uncertain']} uncertain: the process sending them stopped before the"
                " server answered; they may have arrived. Check, then `rapport outbox retry ID`"
                " to send again."
            )
    table = [
        [
            str(r.id),
            r.status,
            _when(r.due_at),
            _when(r.sent_at),
            str(r.attempts),
            r.to_address,
            r.key,
            r.last_error or "",
        ]
        for r in rows
    ]
    if table:
        print(
            _table(table, ["id", "status", "due (UTC)", "sent (UTC)", "tries", "to", "key", "note"])
        )
    elif args.status:
        print(f"no {args.status} messages")
    return 0


def cmd_health(ctx: Context) -> int:
    args = ctx.args
    with ctx.engine().connect() as connection:
        judged = judging.judge_all(
            connection, settings=ctx.settings, now=ctx.now, round_name=args.round
        )
    if args.round and not judged:
        raise NotFound(f"round {args.round}: no partnerships (or no such round)")
    if args.state:
        judged = [j for j in judged if j.health.state == args.state]
    judged.sort(key=lambda j: (-j.health.score, j.partnership_id))
    if args.json:
        for j in judged:
            print(json.dumps(health_json(j), ensure_ascii=False))
        return 0
    if not judged:
        print(f"no partnership is {args.state}" if args.state else "no partnerships to judge")
        return 0
    rows = [
        [
            str(j.partnership_id),
            j.health.state,
            str(j.health.score),
            j.health.since.astimezone(UTC).strftime("%Y-%m-%d"),
            " & ".join(f"{m.name} ({m.country})" for m in j.members),
            "; ".join(j.health.reasons),
        ]
        for j in judged
    ]
    print(_table(rows, ["id", "state", "score", "since", "members", "reasons"]))
    counts = Counter(j.health.state for j in judged)
    print("  ".join(f"{state} {counts[state]}" for state in STATES if counts[state]))
    return 0


def health_json(judged: judging.Judged) -> dict[str, Any]:
    """One partnership as `rapport health --json` prints it (the contract in DESIGN.md)."""
    return {
        "partnership": judged.partnership_id,
        "members": [
            {"email": m.email, "name": m.name, "country": m.country} for m in judged.members
        ],
        "state": judged.health.state,
        "score": judged.health.score,
        "since": judged.health.since.astimezone(UTC).isoformat(),
        "reasons": list(judged.health.reasons),
    }


def _delivered(delivery: DeliveryResult | None) -> str:
    if delivery is None:
        return ""
    text = f"; sent {delivery.sent}"
    for n, label in ((delivery.retry, "to retry"), (delivery.failed, "failed")):
        if n:
            text += f", {n} {label}"
    if delivery.stopped:
        text += f"; stopped: {delivery.stopped}"
    return text


def cmd_nudge(ctx: Context) -> int:
    args = ctx.args
    result = watch.plan_nudges(
        ctx.engine(),
        settings=ctx.settings,
        secret=reply_secret(),
        now=ctx.now,
        dry_run=args.dry_run,
    )
    if args.dry_run:
        for key in result.planned:
            print(f"would plan {key}")
        print(
            f"dry run: judged {result.judged} partnerships; would plan {len(result.planned)}"
            " nudges and alerts; nothing was changed"
        )
        return 0
    print(
        f"judged {result.judged} partnerships; planned {len(result.planned)} nudges and alerts"
        f" ({result.already} already planned){_delivered(result.delivery)}"
    )
    return 0


def cmd_report(ctx: Context) -> int:
    args = ctx.args
    if args.html:
        email, html = watch.report_html(
            ctx.engine(), settings=ctx.settings, now=ctx.now, coordinator=args.coordinator
        )
        try:
            args.html.write_text(html, encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"{args.html}: cannot write: {exc.strerror}") from None
        print(f"wrote {email}'s report to {args.html}")
        if not args.send:
            return 0
    result = watch.plan_reports(
        ctx.engine(),
        settings=ctx.settings,
        secret=reply_secret(),
        now=ctx.now,
        coordinator=args.coordinator,
        force=args.send,
        dry_run=args.dry_run,
    )
    verb = "would plan" if args.dry_run else "planned"
    text = f"{verb} {len(result.planned)} reports"
    if result.already:
        text += f", {result.already} already planned this week"
    if result.not_due:
        text += f", {result.not_due} not due yet (report_weekday/report_time in their zone)"
    print(text + _delivered(result.delivery))
    return 0
