"""The judging jobs: the daily health snapshot and nudges, concern alerts, the weekly reports.

Wires monitor/ (judging, nudges, report) to mailer/ (the outbox): what monitor decides becomes
outbox rows whose JSON ``payload`` holds everything composing them needs (mailer/notice.py), so
a row planned today is sent as planned even if the roster changes before it goes.  Every job is
idempotent through the rows' keys: ``nudge/...``, ``concern/...`` and
``report/<coordinator id>/<ISO week>``; running a job twice plans nothing new.  In a rehearsal
(``[smtp] redirect_all_to``) the keys get the ``rehearsal/`` prefix, as topics' do.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Engine, select

from mailer import outbox
from mailer.compose import Composer
from mailer.deliver import DeliveryResult, deliver
from mailer.notice import Notice, compose_notice
from mailer.render import address_for
from monitor import history, judging, nudges, report
from monitor.health import AT_RISK, ONE_SIDED, QUIET
from program.errors import NotFound
from program.models import ACTIVITY, COORDINATORS, OUTBOX, PENDING, REHEARSAL, SUPPRESSED
from program.replykey import message_id, reply_key
from program.settings import Settings
from program.store import session_scope
from rapport.jobs import smtp_endpoint

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_WATCHED = (QUIET, ONE_SIDED, AT_RISK)


@dataclass
class WatchResult:
    """What a nudge or report pass planned, and the delivery pass after it."""

    planned: list[str] = field(default_factory=list)
    already: int = 0
    not_due: int = 0
    judged: int = 0
    delivery: DeliveryResult | None = None


def _prefix(settings: Settings) -> str:
    return REHEARSAL if settings.smtp.redirect_all_to else ""


def _coordinators(connection: Connection) -> list[Any]:
    return list(connection.execute(select(COORDINATORS).order_by(COORDINATORS.c.id)))


def _coordinator_recipient(row: Any) -> nudges.Recipient:
    return nudges.Recipient(
        participant_id=None,
        coordinator_id=row.id,
        name=row.name,
        email=row.email,
        country="",
        timezone=row.timezone,
        language="",
        reachable=True,
    )


def _member_recipient(m: judging.MemberInfo) -> nudges.Recipient:
    return nudges.Recipient(
        participant_id=m.participant_id,
        coordinator_id=None,
        name=m.name,
        email=m.email,
        country=m.country,
        timezone=m.timezone,
        language=m.language,
        reachable=m.status == "active" and not m.suppressed and not m.bouncing,
    )


def coordinators_of(coordinators: Sequence[Any], countries: set[str]) -> list[Any]:
    """The program coordinators, and the country coordinators of any of ``countries``."""
    return [
        c
        for c in coordinators
        if c.role == "program" or countries & set(c.countries.upper().split())
    ]


def _row(
    settings: Settings,
    secret: bytes,
    *,
    key: str,
    kind: str,
    template: str,
    language: str,
    name: str,
    email: str,
    due_at: datetime,
    data: dict[str, Any],
    now: datetime,
    partnership_id: int | None = None,
    participant_id: int | None = None,
    coordinator_id: int | None = None,
    suppressed: set[str] = frozenset(),  # type: ignore[assignment]
) -> dict[str, Any]:
    domain = settings.program.from_address.rpartition("@")[2]
    payload = {"template": template, "language": language, "recipient": {"name": name}}
    payload["data"] = data
    blocked = email.lower() in suppressed
    return {
        "key": key,
        "kind": kind,
        "partnership_id": partnership_id,
        "participant_id": participant_id,
        "coordinator_id": coordinator_id,
        "to_address": email,
        "reply_key": reply_key(secret, key),
        "message_id": message_id(secret, key, domain),
        "status": SUPPRESSED if blocked else PENDING,
        "due_at": due_at,
        "payload": json.dumps(payload, ensure_ascii=False, default=str),
        "last_error": "the address is suppressed" if blocked else None,
        "created_at": now,
        "updated_at": now,
    }


def _deliver(engine: Engine, settings: Settings, now: datetime) -> DeliveryResult:
    return deliver(
        engine, settings=settings, endpoint=smtp_endpoint(settings), composer=Composer(), now=now
    )


def plan_nudges(
    engine: Engine,
    *,
    settings: Settings,
    secret: bytes,
    now: datetime,
    dry_run: bool = False,
    send: bool = True,
) -> WatchResult:
    """The daily job: snapshot every partnership's health, plan the nudges and concern alerts
    due, then (``send``) deliver what is due.  ``dry_run`` writes and sends nothing."""
    result = WatchResult()
    prefix = _prefix(settings)
    with session_scope(engine) as session:
        connection = session.connection()
        judged = judging.judge_all(connection, settings=settings, now=now)
        result.judged = len(judged)
        if not dry_run:
            judging.snapshot(connection, judged, now=now)
        rows = _nudge_rows(connection, judged, settings, secret, now, prefix)
        rows += _concern_rows(connection, judged, settings, secret, now, prefix)
        fresh = _new(connection, rows)
        result.already = len(rows) - len(fresh)
        result.planned = [r["key"] for r in fresh]
        if dry_run:
            session.rollback()
        else:
            outbox.enqueue(session, fresh)
    if send and not dry_run:
        result.delivery = _deliver(engine, settings, now)
    return result


def _new(connection: Connection, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    keys = [r["key"] for r in rows]
    known: set[str] = set()
    for start in range(0, len(keys), 500):
        chunk = keys[start : start + 500]
        known |= set(
            connection.execute(select(OUTBOX.c.key).where(OUTBOX.c.key.in_(chunk))).scalars()
        )
    return [r for r in rows if r["key"] not in known]


def _nudge_rows(
    connection: Connection,
    judged: Sequence[judging.Judged],
    settings: Settings,
    secret: bytes,
    now: datetime,
    prefix: str,
) -> list[dict[str, Any]]:
    coordinators = _coordinators(connection)
    cases = [
        nudges.Case(
            partnership_id=j.partnership_id,
            health=j.health,
            members=tuple(_member_recipient(m) for m in j.members),
            coordinators=tuple(
                _coordinator_recipient(c)
                for c in coordinators_of(coordinators, {m.country.upper() for m in j.members})
            ),
        )
        for j in judged
        if j.health.state in _WATCHED
    ]
    past = [
        nudges.Past(
            key=r.key.removeprefix(prefix),
            participant_id=r.participant_id,
            coordinator_id=r.coordinator_id,
            planned_at=history.aware(r.created_at) or now,
            sent_at=history.aware(r.sent_at),
            due_at=history.aware(r.due_at),
        )
        for r in connection.execute(
            select(
                OUTBOX.c.key,
                OUTBOX.c.participant_id,
                OUTBOX.c.coordinator_id,
                OUTBOX.c.created_at,
                OUTBOX.c.sent_at,
                OUTBOX.c.due_at,
            ).where(OUTBOX.c.key.startswith(f"{prefix}nudge/", autoescape=True))
        )
    ]
    log_address = address_for(settings.program.reply_address, "log")
    planned = nudges.plan(cases, past, now=now, settings=settings.nudges, log_address=log_address)
    suppressed = outbox.suppressed_addresses(connection)
    return [_planned_row(p, "nudge", settings, secret, now, prefix, suppressed) for p in planned]


def _planned_row(
    p: nudges.Planned,
    kind: str,
    settings: Settings,
    secret: bytes,
    now: datetime,
    prefix: str,
    suppressed: set[str],
) -> dict[str, Any]:
    r = p.recipient
    return _row(
        settings,
        secret,
        key=prefix + p.key,
        kind=kind,
        template=p.template,
        language=r.language or settings.program.default_language,
        name=r.name,
        email=r.email,
        due_at=p.due_at,
        data=p.data,
        now=now,
        partnership_id=p.partnership_id,
        participant_id=r.participant_id,
        coordinator_id=r.coordinator_id,
        suppressed=suppressed,
    )


def _concern_rows(
    connection: Connection,
    judged: Sequence[judging.Judged],
    settings: Settings,
    secret: bytes,
    now: datetime,
    prefix: str,
) -> list[dict[str, Any]]:
    """Alerts for concerns raised in the last week that have none yet (the poll plans them the
    moment one is recorded; this catches any the poll could not)."""
    concerns: dict[int, list[tuple[int, int, str, datetime]]] = {}
    for e in connection.execute(
        select(
            ACTIVITY.c.id,
            ACTIVITY.c.partnership_id,
            ACTIVITY.c.participant_id,
            ACTIVITY.c.detail,
            ACTIVITY.c.occurred_at,
        ).where(ACTIVITY.c.kind == "concern", ACTIVITY.c.created_at >= now - timedelta(days=7))
    ):
        if e.partnership_id is not None:
            concerns.setdefault(e.partnership_id, []).append(
                (e.id, e.participant_id, e.detail, history.aware(e.occurred_at) or now)
            )
    if not concerns:
        return []
    coordinators = _coordinators(connection)
    suppressed = outbox.suppressed_addresses(connection)
    rows = []
    for j in judged:
        found = concerns.get(j.partnership_id)
        if not found:
            continue
        members = tuple(_member_recipient(m) for m in j.members)
        chosen = coordinators_of(coordinators, {m.country.upper() for m in j.members})
        for p in nudges.concern_alerts(
            j.partnership_id,
            members,
            tuple(_coordinator_recipient(c) for c in chosen),
            found,
            now=now,
        ):
            rows.append(_planned_row(p, "alert", settings, secret, now, prefix, suppressed))
    return rows


def plan_concern_alerts(engine: Engine, *, settings: Settings, secret: bytes, now: datetime) -> int:
    """Plan the same-day alerts for concerns just recorded (called after each inbox poll)."""
    prefix = _prefix(settings)
    with session_scope(engine) as session:
        connection = session.connection()
        judged = judging.judge_all(connection, settings=settings, now=now)
        fresh = _new(connection, _concern_rows(connection, judged, settings, secret, now, prefix))
        outbox.enqueue(session, fresh)
    return len(fresh)


def iso_week(now: datetime, zone: str) -> str:
    """``2026-W48``: the ISO week of ``now`` in ``zone``."""
    return _week(now.astimezone(ZoneInfo(zone)).date())


def _week(day: date) -> str:
    year, week, _ = day.isocalendar()
    return f"{year}-W{week:02d}"


def _last_report(connection: Connection, prefix: str, c: Any, now: datetime) -> datetime | None:
    """When coordinator ``c``'s report of the local ISO week before ``now``'s was built, if one
    was: this week's report counts its changes from there (monitor/report.py)."""
    # A week before by the local calendar: seven days of 24 hours may cross a DST change and
    # land two weeks back at a week's edge.
    day = now.astimezone(ZoneInfo(c.timezone)).date() - timedelta(days=7)
    key = f"{prefix}report/{c.id}/{_week(day)}"
    built = connection.execute(select(OUTBOX.c.created_at).where(OUTBOX.c.key == key)).scalar()
    return history.aware(built)


def report_due(now: datetime, zone: str, settings: Settings) -> bool:
    """Whether this ISO week's report time has come in ``zone`` (a missed day catches up)."""
    local = now.astimezone(ZoneInfo(zone))
    day = WEEKDAYS.index(settings.schedule.report_weekday)
    if local.weekday() != day:
        return local.weekday() > day
    return local.time() >= settings.schedule.report_time


def plan_reports(
    engine: Engine,
    *,
    settings: Settings,
    secret: bytes,
    now: datetime,
    coordinator: str | None = None,
    force: bool = False,
    dry_run: bool = False,
    send: bool = True,
) -> WatchResult:
    """The weekly job: each coordinator's report once per ISO week (in their zone), when their
    ``report_weekday`` and ``report_time`` have come, or at once with ``force``."""
    result = WatchResult()
    prefix = _prefix(settings)
    with session_scope(engine) as session:
        connection = session.connection()
        chosen = _chosen(connection, coordinator)
        suppressed = outbox.suppressed_addresses(connection)
        rows = []
        for c in chosen:
            if not force and not report_due(now, c.timezone, settings):
                result.not_due += 1
                continue
            key = f"{prefix}report/{c.id}/{iso_week(now, c.timezone)}"
            if not _new(connection, [{"key": key}]):  # this week's report is already planned
                result.already += 1
                continue
            _ensure_snapshot(connection, settings, now, write=not dry_run)
            data = report.build(
                connection,
                coordinator_id=c.id,
                now=now,
                max_listed=settings.report.max_listed,
                last_report=_last_report(connection, prefix, c, now),
            )
            rows.append(
                _row(
                    settings,
                    secret,
                    key=key,
                    kind="report",
                    template="report",
                    language=settings.program.default_language,
                    name=c.name,
                    email=c.email,
                    due_at=now,
                    data=data,
                    now=now,
                    coordinator_id=c.id,
                    suppressed=suppressed,
                )
            )
        result.planned = [r["key"] for r in rows]
        if dry_run:
            session.rollback()
        else:
            outbox.enqueue(session, rows)
    if send and not dry_run and rows:
        result.delivery = _deliver(engine, settings, now)
    return result


def _chosen(connection: Connection, coordinator: str | None) -> list[Any]:
    coordinators = _coordinators(connection)
    if coordinator is None:
        return coordinators
    wanted = coordinator.strip().lower()
    found = [c for c in coordinators if c.email == wanted]
    if not found:
        raise NotFound(f"coordinator {coordinator}: not found")
    return found


def _ensure_snapshot(
    connection: Connection, settings: Settings, now: datetime, *, write: bool
) -> None:
    """Take the snapshot of ``now``'s UTC day if the daily job has not: it is the report's "this
    week" (monitor/report.py), whatever the coordinator's zone."""
    if write and not judging.has_snapshot(connection, now.astimezone(UTC).date()):
        judged = judging.judge_all(connection, settings=settings, now=now)
        judging.snapshot(connection, judged, now=now)


def report_html(
    engine: Engine, *, settings: Settings, now: datetime, coordinator: str | None
) -> tuple[str, str]:
    """(coordinator's email, the report's HTML) as it would be sent now (``--html FILE``)."""
    with session_scope(engine) as session:
        connection = session.connection()
        chosen = _chosen(connection, coordinator)
        if not chosen:
            raise NotFound("no coordinators: import them first (`rapport import coordinators`)")
        if coordinator is None and len(chosen) > 1:
            programs = [c for c in chosen if c.role == "program"] or chosen
            chosen = programs[:1]
        c = chosen[0]
        _ensure_snapshot(connection, settings, now, write=True)
        data = report.build(
            connection,
            coordinator_id=c.id,
            now=now,
            max_listed=settings.report.max_listed,
            last_report=_last_report(connection, _prefix(settings), c, now),
        )
    program = settings.program
    notice = Notice(
        template="report",
        language=program.default_language,
        default_language=program.default_language,
        program_name=program.name,
        from_address=program.from_address,
        recipient_name=c.name,
        recipient_email=c.email,
        idempotency_key=f"report/{c.id}/{iso_week(now, c.timezone)}",
        message_id=f"<report.preview@{program.from_address.rpartition('@')[2]}>",
        reply_address=program.from_address,
        data=json.loads(json.dumps(data, default=str)),
    )
    message = compose_notice(Composer(), notice, now=now)
    for part in message.walk():
        if part.get_content_type() == "text/html":
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            return c.email, payload.decode("utf-8")
    raise NotFound("the report has no HTML part")  # pragma: no cover - compose always adds one
