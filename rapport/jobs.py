"""The jobs, wired from the subsystems: the CLI runs one pass, `rapport serve` schedules them.

Each job takes the loaded settings and ``now`` and returns a result whose ``summary()`` is the
one-line report the CLI prints.  Jobs own their transactions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine

from mailer.compose import Composer
from mailer.deliver import DeliveryResult, deliver
from mailer.plan import PlanResult, plan_topics
from mailer.smtp import SmtpEndpoint
from program.config import read_secret
from program.errors import ConfigError
from program.settings import Settings
from program.store import session_scope


def smtp_endpoint(settings: Settings) -> SmtpEndpoint:
    """The SMTP endpoint, with the password from the environment or a systemd credential."""
    smtp = settings.smtp
    password = read_secret(smtp.password_env, "smtp-password") if smtp.username else None
    if smtp.username and not password:
        raise ConfigError(
            f"{settings.source}: smtp.username is set but ${smtp.password_env} (or the systemd"
            " credential smtp-password) is empty"
        )
    return SmtpEndpoint(
        host=smtp.host,
        port=smtp.port,
        security=smtp.security,
        username=smtp.username or None,
        password=password,
        timeout=smtp.timeout.total_seconds(),
        ca_file=smtp.ca_file or None,
    )


@dataclass
class SendResult:
    """A planning pass followed by a delivery pass."""

    plan: PlanResult
    delivery: DeliveryResult
    dry_run: bool

    def summary(self) -> str:
        p, d = self.plan, self.delivery
        if self.dry_run:
            text = (
                f"dry run: would plan {p.planned} topic emails ({p.late} late, {p.suppressed}"
                f" suppressed) and send {d.would_send + p.planned} messages; nothing was changed"
            )
        else:
            text = f"planned {p.planned}"
            extras = [
                f"{n} {label}" for n, label in ((p.late, "late"), (p.suppressed, "suppressed")) if n
            ]
            if extras:
                text += f" ({', '.join(extras)})"
            text += f"; sent {d.sent}"
            for n, label in (
                (d.retry, "to retry"),
                (d.failed, "failed"),
                (d.uncertain, "uncertain"),
                (d.suppressed, "suppressed"),
                (d.recovered, "found in flight after a crash, now uncertain"),
            ):
                if n:
                    text += f", {n} {label}"
        if d.stopped:
            text += f"; stopped: {d.stopped}"
        return text

    @property
    def ok(self) -> bool:
        """False when the pass needs a person: stopped by a fault (not the rate limit) or left
        messages uncertain."""
        stopped = self.delivery.stopped and not self.delivery.stopped.startswith("rate limit")
        return not stopped and not self.delivery.uncertain and not self.delivery.recovered


def send(
    engine: Engine,
    *,
    settings: Settings,
    secret: bytes,
    now: datetime,
    composer: Composer | None = None,
    limit: int | None = None,
    dry_run: bool = False,
    progress: Callable[[int, int], None] | None = None,
    batch_size: int = 200,
    should_stop: Callable[[], bool] | None = None,
) -> SendResult:
    """Plan what is due at ``now`` and deliver it (``rapport send``)."""
    endpoint = smtp_endpoint(settings)
    with session_scope(engine) as session:
        plan = plan_topics(session, settings=settings, secret=secret, now=now, dry_run=dry_run)
        if dry_run:
            session.rollback()
    delivery = deliver(
        engine,
        settings=settings,
        endpoint=endpoint,
        composer=composer or Composer(),
        now=now,
        limit=limit,
        dry_run=dry_run,
        progress=progress,
        batch_size=batch_size,
        should_stop=should_stop,
    )
    return SendResult(plan, delivery, dry_run)
