"""mailer/readahead.py: classifying in a worker process gives what classifying in line gives, in
order, and a worker that dies costs only speed; errors in the fetch thread reach the caller."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailer.classify import Mailbox, classify
from mailer.readahead import ClassifyAhead, fetch_ahead
from mailer.source import Fetched, InboxUnavailable

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "mail"
MAILBOX = Mailbox("coordinators@example.org", "coordinators+{key}@example.org")


def _fetched(count: int) -> list[Fetched]:
    """``count`` messages from the fixture corpus, every fifth as a header block only."""
    corpus = sorted(FIXTURES.glob("*.eml"))
    items = []
    for uid in range(1, count + 1):
        raw = corpus[uid % len(corpus)].read_bytes()
        complete = uid % 5 != 0
        if not complete:
            raw = raw.split(b"\n\n", 1)[0] + b"\n\n"
        items.append(Fetched("INBOX", uid, 7, len(raw), None, raw, complete, ()))
    return items


def _in_line(items: list[Fetched]) -> list[tuple[int, object]]:
    return [(f.uid, classify(f.raw, MAILBOX, headers_only=not f.complete)) for f in items]


def test_the_worker_classifies_as_in_line_in_order() -> None:
    items = _fetched(230)
    with ClassifyAhead(MAILBOX, batch=40, depth=2) as ahead:
        found = [(f.uid, inbound) for f, inbound in ahead.classify(iter(items))]
        assert ahead.pool is not None, "no worker was started"
    assert found == _in_line(items)
    with ClassifyAhead(MAILBOX, batch=40, worker=False) as ahead:
        assert [(f.uid, i) for f, i in ahead.classify(iter(items))] == found
        assert ahead.pool is None


def test_a_short_pass_starts_no_worker() -> None:
    items = _fetched(5)
    with ClassifyAhead(MAILBOX, batch=40) as ahead:
        assert [(f.uid, i) for f, i in ahead.classify(iter(items))] == _in_line(items)
        assert ahead.pool is None


def test_a_dead_worker_is_replaced_by_classifying_in_line() -> None:
    items = _fetched(200)
    found = []
    with ClassifyAhead(MAILBOX, batch=20, depth=3) as ahead:
        for fetched, inbound in ahead.classify(iter(items)):
            found.append((fetched.uid, inbound))
            if len(found) == 1:  # the worker has answered once: now it dies
                assert ahead.pool is not None
                for pid in list(ahead.pool._processes):  # the worker process
                    os.kill(pid, signal.SIGKILL)
        assert not ahead.worker and ahead.pool is None
    assert found == _in_line(items)


def test_an_error_in_the_fetch_thread_comes_after_what_was_fetched() -> None:
    items = _fetched(3)

    def fetch() -> Iterator[Fetched]:
        yield from items
        raise InboxUnavailable("imap.example.org:993: connection failed 6 times in a row")

    got = []
    with pytest.raises(InboxUnavailable, match="6 times"):
        for item in fetch_ahead(fetch(), depth=2):
            got.append(item.uid)
    assert got == [1, 2, 3]


def test_an_error_from_the_fetch_comes_after_every_message_before_it() -> None:
    items = _fetched(130)

    def fetch() -> Iterator[Fetched]:
        yield from items
        raise InboxUnavailable("imap.example.org:993: connection failed 6 times in a row")

    got = []
    with ClassifyAhead(MAILBOX, batch=40) as ahead, pytest.raises(InboxUnavailable):
        for fetched, inbound in ahead.classify(fetch()):
            got.append((fetched.uid, inbound))
    assert got == _in_line(items)
