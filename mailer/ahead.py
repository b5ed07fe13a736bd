"""Composing ahead of the sender: the next batch of messages is built while this one is sent.

Composing is CPU work and sending is mostly waiting for the server, so for a pass with more than
one batch due the composing runs in one worker process (a thread would fight the sender for the
GIL on every server reply).  A small pass composes in line and starts no process.  A worker that
dies is replaced by composing in line; nothing is lost, only speed.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import Engine

from mailer import outbox
from mailer.compose import ComposeError, Composer, TopicEmail, to_bytes
from mailer.notice import Notice, compose_notice
from mailer.render import Item, Renderer

_worker_composer: Composer | None = None


@dataclass(slots=True)
class Composed:
    """An outbox row with its message bytes, or the reason it has none."""

    item: Item
    data: bytes | None
    error: str | None


def compose_one(
    composer: Composer, context: TopicEmail | Notice, now: datetime
) -> tuple[bytes | None, str | None]:
    try:
        if isinstance(context, Notice):
            return to_bytes(compose_notice(composer, context, now=now)), None
        return to_bytes(composer.topic(context, now=now)), None
    except ComposeError as exc:
        return None, str(exc)


def _init_worker(template_dir: str) -> None:
    global _worker_composer
    _worker_composer = Composer(Path(template_dir))


def _compose_batch(
    contexts: Sequence[TopicEmail | Notice], now: datetime
) -> list[tuple[bytes | None, str | None]]:
    composer = _worker_composer
    if composer is None:  # pragma: no cover - the initializer always runs first
        raise RuntimeError("compose worker was not initialised")
    return [compose_one(composer, context, now) for context in contexts]


class ComposeAhead:
    """Yields the rows due at ``now`` in id order, composed, batch after batch."""

    def __init__(
        self,
        engine: Engine,
        renderer: Renderer,
        composer: Composer,
        now: datetime,
        batch_size: int,
        *,
        worker: bool,
    ) -> None:
        self.engine, self.renderer, self.composer = engine, renderer, composer
        self.now, self.batch_size = now, batch_size
        self.pool: ProcessPoolExecutor | None = None
        if worker:
            self.pool = ProcessPoolExecutor(
                max_workers=1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker,
                initargs=(str(composer.template_dir),),
            )

    def _load(self, after: int) -> tuple[list[Item], int]:
        """The next batch of due rows after id ``after``, and the last id looked at."""
        with self.engine.connect() as connection:
            ids = outbox.due_ids(connection, self.now, self.batch_size, after)
        return (list(self.renderer.load(ids)), ids[-1]) if ids else ([], after)

    def _submit(self, items: list[Item]) -> Future[list[tuple[bytes | None, str | None]]] | None:
        if self.pool is None:
            return None
        contexts = [item.context for item in items if item.context is not None]
        try:
            return self.pool.submit(_compose_batch, contexts, self.now)
        except (BrokenProcessPool, RuntimeError):
            self.close()
            return None

    def _resolve(
        self, items: list[Item], future: Future[list[tuple[bytes | None, str | None]]] | None
    ) -> list[Composed]:
        results: list[tuple[bytes | None, str | None]] | None = None
        if future is not None:
            try:
                results = future.result()
            except Exception:  # the worker died or failed as a whole: compose in line instead
                self.close()
        out = []
        composed = iter(results) if results is not None else None
        for item in items:
            if item.context is None:
                out.append(
                    Composed(
                        item, None, f"outbox row {item.row.id} ({item.row.key}): {item.problem}"
                    )
                )
            elif composed is not None:
                data, error = next(composed)
                out.append(Composed(item, data, error))
            else:
                out.append(Composed(item, *compose_one(self.composer, item.context, self.now)))
        return out

    def batches(self) -> Iterator[list[Composed]]:
        """Batch after batch of composed rows; the next one is being composed meanwhile."""
        items, last = self._load(0)
        future = self._submit(items)
        while items:
            following, last = self._load(last)
            next_future = self._submit(following)
            yield self._resolve(items, future)
            items, future = following, next_future

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None
