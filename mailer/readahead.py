"""Reading the inbox ahead of the recorder: fetch in a thread, classify in a worker process.

A first poll of a full folder is three kinds of work: waiting for the server (and parsing its
replies), classifying each message (pure CPU work, mailer/classify.py), and recording it (CPU
and disk, in the poll job).  Done one after the other they add up; overlapped, a poll takes
about as long as the largest of them.  :func:`fetch_ahead` runs the fetch in a thread, which
mostly waits on the socket.  Classifying in a thread would fight the recorder for the GIL, so
:class:`ClassifyAhead` sends batches of raw messages to one worker process (as mailer/ahead.py
does for composing outgoing mail) and hands the results back in order, a few batches behind.

Nothing here writes anything, so it changes no guarantee of the poll job: a message is recorded
(with its folder's cursor) only after it is classified, and one cut off in the pipeline is
simply read again next time.  A poll of fewer than one batch starts no process, and a worker
that dies is replaced by classifying in line: nothing is lost, only speed.
"""

from __future__ import annotations

import multiprocessing
import queue
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from mailer.classify import Mailbox, classify
from mailer.source import Fetched
from program.inbound import Inbound

__all__ = ["ClassifyAhead", "fetch_ahead"]

_DONE = object()


def fetch_ahead(items: Iterator[Fetched], depth: int = 256) -> Iterator[Fetched]:
    """Run ``items`` (the IMAP fetch) in a thread, ``depth`` messages ahead of the caller.

    Only this thread touches the connection until the iteration ends; an error in it is raised
    here, in order, after the messages fetched before it.
    """
    buffer: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def pump() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        buffer.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            buffer.put(_DONE)
        except BaseException as exc:  # handed to the caller below
            buffer.put(exc)

    thread = threading.Thread(target=pump, name="rapport-fetch", daemon=True)
    thread.start()
    try:
        while (item := buffer.get()) is not _DONE:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()
        close = getattr(items, "close", None)
        if close is not None:
            close()


_worker_mailbox: Mailbox | None = None


def _init_worker(mailbox: Mailbox) -> None:
    global _worker_mailbox
    _worker_mailbox = mailbox


def _classify_batch(messages: list[tuple[bytes, bool]]) -> list[Inbound]:
    """In the worker: classify ``(raw, headers_only)`` pairs."""
    mailbox = _worker_mailbox
    if mailbox is None:  # pragma: no cover - the initializer always runs first
        raise RuntimeError("classify worker was not initialised")
    return [classify(raw, mailbox, headers_only=headers_only) for raw, headers_only in messages]


# A batch of fetched messages and the worker's classification of it (None: classify in line).
Pending = tuple[list[Fetched], "Future[list[Inbound]] | None"]


class ClassifyAhead:
    """Classifies fetched messages in batches of ``batch`` messages (fewer when they hold more
    than ``batch_bytes``), in a worker process, and yields ``(fetched, inbound)`` in the order
    they came, at most ``depth`` batches behind, so at most about ``depth * batch_bytes`` of
    messages wait for the worker.

    The worker starts with the first full batch and serves every folder of the poll; ``close``
    stops it.  With ``worker`` False, or after the worker failed, messages are classified in
    line; the results are the same either way.
    """

    def __init__(
        self,
        mailbox: Mailbox,
        *,
        batch: int = 250,
        batch_bytes: int = 2_000_000,
        depth: int = 4,
        worker: bool = True,
    ) -> None:
        if batch < 1 or batch_bytes < 1 or depth < 1:
            raise ValueError("batch, batch_bytes and depth must be at least 1")
        self.mailbox, self.batch, self.batch_bytes, self.depth = mailbox, batch, batch_bytes, depth
        self.worker = worker
        self.pool: ProcessPoolExecutor | None = None

    def classify(self, items: Iterable[Fetched]) -> Iterator[tuple[Fetched, Inbound]]:
        """``(fetched, inbound)`` for each of ``items``, in order; an error from ``items`` is
        raised after the messages that came before it."""
        pending: deque[Pending] = deque()
        gathered: list[Fetched] = []
        size = 0
        iterator = iter(items)
        while True:
            try:
                item = next(iterator)
            except StopIteration:
                break
            except Exception:  # what was fetched before the error still comes first, in order
                pending.append((gathered, None))
                while pending:
                    yield from self._resolve(*pending.popleft())
                raise
            gathered.append(item)
            size += len(item.raw)
            if len(gathered) >= self.batch or size >= self.batch_bytes:
                pending.append((gathered, self._submit(gathered)))
                gathered, size = [], 0
            # Hand over what is ready without waiting, and wait only when too far behind.
            while pending and (len(pending) > self.depth or _ready(pending[0][1])):
                yield from self._resolve(*pending.popleft())
        if gathered:
            pending.append((gathered, self._submit(gathered) if self.pool else None))
        while pending:
            yield from self._resolve(*pending.popleft())

    def _inline(self, fetched: list[Fetched]) -> list[Inbound]:
        return [
            classify(item.raw, self.mailbox, headers_only=not item.complete) for item in fetched
        ]

    def _submit(self, fetched: list[Fetched]) -> Future[list[Inbound]] | None:
        if not self.worker:
            return None
        if self.pool is None:
            self.pool = ProcessPoolExecutor(
                max_workers=1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker,
                initargs=(self.mailbox,),
            )
        try:
            return self.pool.submit(
                _classify_batch, [(item.raw, not item.complete) for item in fetched]
            )
        except (BrokenProcessPool, RuntimeError):
            self._give_up()
            return None

    def _resolve(
        self, fetched: list[Fetched], future: Future[list[Inbound]] | None
    ) -> Iterator[tuple[Fetched, Inbound]]:
        found: list[Inbound] | None = None
        if future is not None:
            try:
                found = future.result()
            except Exception:  # the worker died or failed as a whole: classify in line instead
                self._give_up()
        if found is None or len(found) != len(fetched):
            found = self._inline(fetched)
        yield from zip(fetched, found, strict=True)

    def _give_up(self) -> None:
        self.worker = False
        self.close()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None

    def __enter__(self) -> ClassifyAhead:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def _ready(future: Future[list[Inbound]] | None) -> bool:
    return future is None or future.done()
