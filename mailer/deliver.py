"""Delivery: send the outbox rows that are due, each on its own, over one reused connection.

For each due row: compose it, claim it (``sending``, committed), send it, mark it (``sent``,
``retry``, ``failed``, ``uncertain``), commit.  A failing row is recorded and set aside; the rest
go on.  Only a server that cannot be reached at all stops the pass, leaving what is left pending.
The rate limits count what the database says was sent, so they hold across passes and processes.
"""

from __future__ import annotations

import random
import re
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
from program.models import SUPPRESSED
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


# Permanent refusals in a row after which the pass stops: past this, the server or our settings
# are the problem, not the recipients.
BREAKER = 10
_ENHANCED = re.compile(r"\b5\.(\d{1,3})\.(\d{1,3})\b")


def recipient_gone(exc: SmtpPermanent) -> bool:
    """True for a 5xx that says the mailbox does not exist or is disabled: suppress the address.

    Enhanced status 5.1.x (bad address) and 5.2.1 (mailbox disabled) say so; without an enhanced
    code, 550, 551 and 553 at RCPT do.  A policy refusal (5.7.x: relaying denied, authentication
    required) is about us, not the recipient.
    """
    if exc.stage != "rcpt":
        return False
    enhanced = _ENHANCED.search(exc.text or "")
    if enhanced:
        subject, detail = enhanced.groups()
        return subject == "1" or (subject == "2" and detail == "1")
    return exc.code in (550, 551, 553)


def server_refuses(exc: SmtpPermanent) -> bool:
    """True when a 5xx refuses our sender or our right to send: at MAIL, a 5.7.x policy code,
    or 530/535 (authentication).  Then no recipient is at fault and the pass must stop."""
    if exc.stage == "mail":
        return True
    enhanced = _ENHANCED.search(exc.text or "")
    if enhanced:
        return enhanced.group(1) == "7"
    return exc.code in (530, 535)


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
    should_stop: Callable[[], bool] | None = None,
) -> DeliveryResult:
    """One delivery pass at ``now`` (UTC-aware).  ``limit`` caps the messages sent.

    Each message has its own transactions: its claim (``sending``) commits before its DATA and
    its ``sent`` mark commits with the next message's claim, or before the pass does anything
    slow (loading and composing the next batch) and at its end.  ``should_stop`` is checked
    between messages (a SIGTERM handler sets it), so a stop never cuts a message in half.
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
        worker = not dry_run and outbox.count_due(connection, now) > batch_size
    redirect = settings.smtp.redirect_all_to
    sender = settings.program.from_address
    smtp = SmtpConnection(endpoint)
    renderer = Renderer(engine, settings=settings, composer=composer)
    producer = ComposeAhead(engine, renderer, composer, now, batch_size, worker=worker)
    writer = engine.connect()  # one connection for the pass's writes: no pool round trips
    unflushed: list[int] = []  # sent rows whose "sent" mark rides on the next transaction

    def write() -> Any:
        return _Flushing(writer, unflushed, now)

    handled = 0
    refused_in_a_row = 0
    try:
        for batch in producer.batches():
            for composed in batch:
                if (cap is not None and handled >= cap) or (should_stop and should_stop()):
                    break
                row = composed.item.row
                if row.to_address in suppressed:
                    result.suppressed += 1
                    if not dry_run:
                        with write() as connection:
                            outbox.mark_status(
                                connection,
                                row.id,
                                now,
                                SUPPRESSED,
                                f"{row.to_address} is suppressed",
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
                    if server_refuses(exc):
                        with write() as connection:
                            outbox.release(connection, row.id, now)
                        result.stopped = f"the SMTP server refuses our mail, check [smtp]: {exc}"
                        return result
                    result.failed += 1
                    refused_in_a_row += 1
                    with write() as connection:
                        outbox.mark_failed(connection, row.id, now, str(exc))
                        if recipient_gone(exc) and not redirect:
                            outbox.suppress(connection, row.to_address, "smtp_5xx", str(exc), now)
                            suppressed.add(row.to_address)
                    if refused_in_a_row >= BREAKER:
                        result.stopped = (
                            f"{BREAKER} messages in a row refused permanently; check the SMTP"
                            f" server and [smtp] settings (last: {exc})"
                        )
                        return result
                    continue
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
                except Exception as exc:  # one message's surprise must not stop the batch
                    result.uncertain += 1
                    result.errors.append(f"outbox row {row.id}: {type(exc).__name__}: {exc}")
                    smtp.close()  # its state is unknown: start the next message afresh
                    with write() as connection:
                        outbox.mark_uncertain(
                            connection, row.id, now, f"unexpected {type(exc).__name__}: {exc}"
                        )
                else:
                    result.sent += 1
                    unflushed.append(row.id)
                refused_in_a_row = 0
                if progress:
                    progress(handled, cap or 0)
            else:
                if unflushed:  # before the slow part: loading and composing the next batch
                    with write():
                        pass
                continue
            break
    finally:
        try:
            producer.close()
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
