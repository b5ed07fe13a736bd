"""Delivery: send the outbox rows that are due, each on its own, over one reused connection.

For each due row: compose it, claim it (``sending``, committed), send it, mark it (``sent``,
``retry``, ``failed``, ``uncertain``), commit.  A failing row is recorded and set aside; the rest
go on.  Only a server that cannot be reached at all stops the pass, leaving what is left pending.
The rate limits count what the database says was sent, so they hold across passes and processes.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine

from mailer import outbox
from mailer.ahead import ComposeAhead
from mailer.compose import Composer
from mailer.render import Renderer
from mailer.smtp import (
    SmtpConnection,
    SmtpEndpoint,
    SmtpPermanent,
    SmtpTransient,
    SmtpUnavailable,
    SmtpUncertain,
)
from program.models import LATE, SUPPRESSED
from program.settings import Settings

Progress = Callable[[int, int], None]


@dataclass
class DeliveryResult:
    """Counts of one delivery pass, and why it stopped early (if it did)."""

    sent: int = 0
    retry: int = 0
    failed: int = 0
    uncertain: int = 0
    suppressed: int = 0
    late: int = 0
    recovered: int = 0
    skipped: int = 0
    would_send: int = 0
    stopped: str | None = None
    errors: list[str] = field(default_factory=list)


def rate_budget(engine: Engine, settings: Settings, now: datetime) -> tuple[int | None, str]:
    """How many messages may go out now under [smtp] max_per_minute and max_per_day."""
    budget: int | None = None
    reason = ""
    with engine.connect() as connection:
        for limit, window, name in (
            (settings.smtp.max_per_minute, timedelta(minutes=1), "max_per_minute"),
            (settings.smtp.max_per_day, timedelta(days=1), "max_per_day"),
        ):
            if limit:
                left = max(limit - outbox.sent_since(connection, now - window), 0)
                if budget is None or left < budget:
                    budget, reason = left, name
    return budget, reason


def deliver(
    engine: Engine,
    *,
    settings: Settings,
    endpoint: SmtpEndpoint,
    composer: Composer,
    now: datetime,
    limit: int | None = None,
    dry_run: bool = False,
    progress: Progress | None = None,
    rng: random.Random | None = None,
    batch_size: int = 200,
) -> DeliveryResult:
    """One delivery pass at ``now`` (UTC-aware).  ``limit`` caps the messages sent.

    Each message gets its own transactions: the claim (``sending``) commits before the DATA, and
    the ``sent`` mark commits with the next message's claim (or at the end of the pass), so a
    message costs one commit, and a crash between two messages leaves at most the last one
    ``sending``, to be reported as uncertain.
    """
    result = DeliveryResult()
    rng = rng or random.Random()
    owner = outbox.owner_id()
    if not dry_run:
        with engine.begin() as connection:
            result.recovered = outbox.recover(connection, now, settings.outbox.lease)
    budget, budget_reason = rate_budget(engine, settings, now)
    caps = [x for x in (limit, budget) if x is not None]
    cap = min(caps) if caps else None
    with engine.connect() as connection:
        suppressed = outbox.suppressed_addresses(connection)
    lateness = settings.schedule.max_lateness
    redirect = settings.smtp.redirect_all_to
    sender = settings.program.from_address
    smtp = SmtpConnection(endpoint)
    with engine.connect() as connection:
        worker = not dry_run and outbox.count_due(connection, now) > batch_size
    producer = ComposeAhead(
        engine,
        Renderer(engine, settings=settings, composer=composer),
        composer,
        now,
        batch_size,
        worker=worker,
    )
    unflushed: list[int] = []  # rows sent whose "sent" mark rides on the next transaction
    # One connection for the pass's writes: a transaction per message, no pool round trip.
    writer = engine.connect()

    def write() -> Any:
        """A transaction that first records the messages already sent."""
        return _Flushing(writer, unflushed, now)

    handled = 0
    try:
        for composed in producer:
            if cap is not None and handled >= cap:
                break
            row = composed.item.row
            if row.to_address in suppressed:
                result.suppressed += 1
                if not dry_run:
                    with write() as connection:
                        outbox.mark_status(
                            connection, row.id, now, SUPPRESSED, f"{row.to_address} is suppressed"
                        )
                continue
            if row.attempts == 0 and row.due_at + lateness < now:
                result.late += 1
                if not dry_run:
                    with write() as connection:
                        outbox.mark_status(
                            connection, row.id, now, LATE, f"more than {lateness} late"
                        )
                continue
            if composed.data is None:
                result.failed += 1
                result.errors.append(composed.error or f"outbox row {row.id}: cannot compose")
                if not dry_run:
                    with write() as connection:
                        outbox.mark_failed(
                            connection, row.id, now, composed.error or "cannot compose"
                        )
                continue
            handled += 1
            if dry_run:
                result.would_send += 1
                continue
            with write() as connection:
                claimed = outbox.claim(connection, row.id, owner, now)
            if not claimed:
                result.skipped += 1
                handled -= 1
                continue
            data = composed.data
            if redirect:
                data = f"X-Rapport-Redirected-From: {row.to_address}\r\n".encode() + data
            try:
                smtp.send(sender, redirect or row.to_address, data)
            except SmtpUnavailable as exc:
                with write() as connection:
                    outbox.release(connection, row.id, now)
                result.stopped = f"SMTP server unavailable: {exc}"
                return result
            except SmtpUncertain as exc:
                result.uncertain += 1
                with write() as connection:
                    outbox.mark_uncertain(connection, row.id, now, str(exc))
            except SmtpPermanent as exc:
                result.failed += 1
                with write() as connection:
                    outbox.mark_failed(connection, row.id, now, str(exc))
                    if exc.stage == "rcpt" and not redirect:
                        outbox.suppress(connection, row.to_address, "smtp_5xx", str(exc), now)
                        suppressed.add(row.to_address)
            except SmtpTransient as exc:
                with write() as connection:
                    retried = outbox.mark_retry(
                        connection,
                        row.id,
                        now,
                        str(exc),
                        attempts=row.attempts + 1,
                        max_attempts=settings.outbox.max_attempts,
                        base=settings.outbox.retry_base,
                        cap=settings.outbox.retry_max,
                        rng=rng,
                    )
                if retried:
                    result.retry += 1
                else:
                    result.failed += 1
            else:
                result.sent += 1
                unflushed.append(row.id)
            if progress:
                progress(handled, cap or 0)
    finally:
        producer.close()
        try:
            if unflushed:
                with write():
                    pass
        finally:
            writer.close()
            smtp.close()
    if cap is not None and budget is not None and cap == budget and handled >= cap:
        with engine.connect() as connection:
            left = len(outbox.due_ids(connection, now, 1))
        if left:
            result.stopped = (
                f"rate limit smtp.{budget_reason} reached; the rest waits for the next pass"
            )
    return result


class _Flushing:
    """A transaction on ``connection`` that first marks the rows in ``unflushed`` sent."""

    def __init__(self, connection: Connection, unflushed: list[int], now: datetime) -> None:
        self.connection = connection
        self.unflushed, self.now = unflushed, now

    def __enter__(self) -> Connection:
        self.transaction = self.connection.begin()
        for row_id in self.unflushed:
            outbox.mark_sent(self.connection, row_id, self.now)
        return self.connection

    def __exit__(self, *exc: Any) -> None:
        if exc[0] is None:
            self.transaction.commit()
            self.unflushed.clear()
        else:
            self.transaction.rollback()
