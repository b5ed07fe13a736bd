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

from sqlalchemy import Engine

from mailer import outbox
from mailer.compose import ComposeError, Composer, to_bytes
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
    batch_size: int = 500,
) -> DeliveryResult:
    """One delivery pass at ``now`` (UTC-aware).  ``limit`` caps the messages sent."""
    result = DeliveryResult()
    rng = rng or random.Random()
    owner = outbox.owner_id()
    renderer = Renderer(engine, settings=settings, composer=composer)
    if not dry_run:
        with engine.begin() as connection:
            result.recovered = outbox.recover(connection, now, settings.outbox.lease)
    budget, budget_reason = rate_budget(engine, settings, now)
    cap = (
        min(x for x in (limit, budget) if x is not None)
        if (limit, budget) != (None, None)
        else None
    )
    with engine.connect() as connection:
        suppressed = outbox.suppressed_addresses(connection)
    lateness = settings.schedule.max_lateness
    redirect = settings.smtp.redirect_all_to
    sender = settings.program.from_address
    connection_ = SmtpConnection(endpoint)
    after = 0
    handled = 0
    try:
        while cap is None or handled < cap:
            with engine.begin() as connection:
                ids = outbox.due_ids(connection, now, batch_size, after)
            if not ids:
                break
            after = ids[-1]
            for item in renderer.load(ids):
                if cap is not None and handled >= cap:
                    break
                row = item.row
                if row.to_address in suppressed:
                    result.suppressed += 1
                    if not dry_run:
                        with engine.begin() as connection:
                            outbox.mark_status(
                                connection,
                                row.id,
                                now,
                                SUPPRESSED,
                                f"{row.to_address} is suppressed",
                            )
                    continue
                if row.attempts == 0 and row.due_at + lateness < now:
                    result.late += 1
                    if not dry_run:
                        with engine.begin() as connection:
                            outbox.mark_status(
                                connection, row.id, now, LATE, f"more than {lateness} late"
                            )
                    continue
                try:
                    data = to_bytes(renderer.compose(item, now=now))
                except ComposeError as exc:
                    result.failed += 1
                    result.errors.append(f"row {row.id}: {exc}")
                    if not dry_run:
                        with engine.begin() as connection:
                            outbox.mark_failed(connection, row.id, now, str(exc))
                    continue
                handled += 1
                if dry_run:
                    result.would_send += 1
                    continue
                with engine.begin() as connection:
                    if not outbox.claim(connection, row.id, owner, now):
                        result.skipped += 1
                        handled -= 1
                        continue
                if redirect:
                    data = f"X-Rapport-Redirected-From: {row.to_address}\r\n".encode() + data
                recipient = redirect or row.to_address
                try:
                    connection_.send(sender, recipient, data)
                except SmtpUnavailable as exc:
                    with engine.begin() as connection:
                        outbox.release(connection, row.id, now)
                    result.stopped = f"SMTP server unavailable: {exc}"
                    return result
                except SmtpUncertain as exc:
                    result.uncertain += 1
                    with engine.begin() as connection:
                        outbox.mark_uncertain(connection, row.id, now, str(exc))
                except SmtpPermanent as exc:
                    result.failed += 1
                    with engine.begin() as connection:
                        outbox.mark_failed(connection, row.id, now, str(exc))
                        if exc.stage == "rcpt" and not redirect:
                            outbox.suppress(connection, row.to_address, "smtp_5xx", str(exc), now)
                            suppressed.add(row.to_address)
                except SmtpTransient as exc:
                    with engine.begin() as connection:
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
                    with engine.begin() as connection:
                        outbox.mark_sent(connection, row.id, now)
                if progress:
                    progress(handled, cap or 0)
    finally:
        connection_.close()
    if cap is not None and budget is not None and cap == budget and handled >= cap:
        with engine.connect() as connection:
            left = len(outbox.due_ids(connection, now, 1))
        if left:
            result.stopped = (
                f"rate limit smtp.{budget_reason} reached; the rest waits for the next pass"
            )
    return result
