"""Benchmark: plan and deliver one topic to N participants, against a raw-SMTP baseline.

Both sides send to the same local SMTP sink (aiosmtpd, in its own process, accepting everything):

- baseline: one reused smtplib connection sending pre-built messages (built before the clock
  starts), the fastest a Python sender can go against this sink;
- rapport: `rapport send`'s job (plan the outbox rows, then compose, claim, send and mark each
  one, one commit per state change) on a SQLite database in WAL mode.

Each side runs in its own process so its peak memory is its own.  Prints a table, then as its last
line one JSON object: {"bench": "send", ..., "ratio": rapport rate / baseline rate, "peak_rss_mb"}.

    python bench/send.py            # 20,000 participants
    python bench/send.py --quick    # 2,000 participants, well under two minutes
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import multiprocessing
import os
import resource
import smtplib
import socket
import sys
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

NOW = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)
ZONES = ["Europe/Warsaw", "America/New_York", "Asia/Kolkata", "Australia/Sydney", "Africa/Nairobi"]
COUNTRIES = ["PL", "US", "IN", "AU", "KE"]
TOPIC = """Libraries everywhere are asking what *open* should mean.

1. What does open access look like where you work?
2. Which of your users gains most from it, and who is left out?

Share one example with your partner, and ask for one of theirs. See the
[Budapest Open Access Initiative](https://www.budapestopenaccessinitiative.org/) for background.
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _sink(port: int, ready: multiprocessing.synchronize.Event) -> None:  # type: ignore[name-defined]
    """An SMTP server that accepts and counts every message (runs in its own process)."""
    from aiosmtpd.controller import Controller

    class Handler:
        async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
            return "250 OK"

    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    ready.set()
    try:
        while True:
            time.sleep(3600)
    finally:  # pragma: no cover
        controller.stop()


def _peak_rss_mb() -> float:
    """Peak resident memory of this process plus its largest finished child (the compose worker)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return (own + children) / 1024


def _baseline(port: int, count: int, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    """The same messages, pre-built, over one reused smtplib connection: the rate to beat.

    The messages are Rapport's own topic emails for the same participants, composed before the
    clock starts, so both sides put the same bytes on the wire and the ratio is Rapport's own cost.
    """
    from mailer.compose import Composer, Person, TopicEmail, to_bytes

    composer = Composer()
    messages = []
    for i in range(count):
        k, j = i % len(ZONES), (i + 1) % len(ZONES)
        key = f"topic/bench/1/{i}"
        mail = TopicEmail(
            program_name="Test Network",
            from_address="coordinators@example.org",
            recipient=Person(f"Participant {i}", f"p{i}@example.org", COUNTRIES[k], ZONES[k]),
            partners=(
                Person(f"Participant {i ^ 1}", f"p{i ^ 1}@example.org", COUNTRIES[j], ZONES[j]),
            ),
            language=("en", "fr", "es")[i % 3],
            default_language="en",
            round_name="bench",
            topic_order=1,
            topic_title="Open access",
            topic_markdown=TOPIC,
            idempotency_key=key,
            message_id=f"<rapport.{i:032x}@example.org>",
            reply_address=f"coordinators+k{i:019d}@example.org",
            unsubscribe_address=f"coordinators+unsubscribe-k{i:019d}@example.org",
            unsubscribe_url=None,
            log_address="coordinators+log@example.org",
        )
        messages.append((f"p{i}@example.org", to_bytes(composer.topic(mail, now=NOW))))
    client = smtplib.SMTP("127.0.0.1", port)
    start = time.perf_counter()
    for rcpt, data in messages:
        client.sendmail("coordinators@example.org", [rcpt], data)
    elapsed = time.perf_counter() - start
    client.quit()
    size = sum(len(d) for _, d in messages) / len(messages)
    out.put({"seconds": elapsed, "rate": count / elapsed, "bytes": size, "rss": _peak_rss_mb()})


def _setup(folder: Path, port: int, count: int) -> Path:
    """A project with `count` participants in pairs across zones, one round and one topic."""
    from rapport.cli import main

    config = folder / "config.toml"
    config.write_text(
        '[program]\nname = "Test Network"\nfrom_address = "coordinators@example.org"\n'
        'reply_address = "coordinators+{key}@example.org"\n'
        f'[database]\nurl = "sqlite:///{folder / "rapport.db"}"\n'
        f'[smtp]\nhost = "127.0.0.1"\nport = {port}\nsecurity = "none"\n'
        "max_per_minute = 0\nmax_per_day = 0\n"
        '[schedule]\nmax_lateness = "3d"\n',
        encoding="utf-8",
    )
    with open(folder / "participants.csv", "w", encoding="utf-8") as f:
        f.write("email,name,country,timezone,language\n")
        for i in range(count):
            k = i % len(ZONES)
            lang = ("en", "fr", "es")[i % 3]
            f.write(f"p{i}@example.org,Participant {i},{COUNTRIES[k]},{ZONES[k]},{lang}\n")
    with open(folder / "partnerships.csv", "w", encoding="utf-8") as f:
        f.write("round,member_a,member_b\n")
        for i in range(0, count - 1, 2):
            f.write(f"bench,p{i}@example.org,p{i + 1}@example.org\n")
    topics = folder / "topics"
    topics.mkdir()
    (topics / "open-access.md").write_text(
        f'+++\ntitle = "Open access"\norder = 1\n+++\n{TOPIC}', encoding="utf-8"
    )
    base = ["--config", str(config)]
    quiet = contextlib.redirect_stdout(io.StringIO())
    start = date(2027, 2, 28).isoformat()
    for args in (
        ["db", "upgrade"],
        ["import", "participants", str(folder / "participants.csv")],
        ["round", "create", "bench", "--start", start],
        ["import", "partnerships", str(folder / "partnerships.csv")],
        ["import", "topics", str(topics), "--round", "bench"],
    ):
        with quiet:
            code = main(base + args)
        if code != 0:
            raise SystemExit(f"setup failed: rapport {' '.join(args)}")
    return config


def _rapport(config: str, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    """Plan and deliver with Rapport's own job, timed from planning to the last mark."""
    from program.config import database_url, load_config
    from program.store import make_engine
    from rapport import jobs

    settings = load_config(Path(config))
    engine = make_engine(database_url(settings))
    start = time.perf_counter()
    result = jobs.send(engine, settings=settings, secret=b"bench-secret-0123456789", now=NOW)
    elapsed = time.perf_counter() - start
    sent = result.delivery.sent
    out.put(
        {
            "seconds": elapsed,
            "rate": sent / elapsed,
            "sent": sent,
            "rss": _peak_rss_mb(),
            "summary": result.summary(),
        }
    )


def _run(target, *args):  # type: ignore[no-untyped-def]
    queue: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
    process = multiprocessing.Process(target=target, args=(*args, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2,000 participants")
    parser.add_argument(
        "--count", type=int, help="participants (default 20,000; 2,000 with --quick)"
    )
    args = parser.parse_args()
    count = args.count or (2_000 if args.quick else 20_000)
    multiprocessing.set_start_method("spawn")
    os.environ.setdefault("RAPPORT_SECRET", "bench-secret-0123456789")
    port = _free_port()
    ready = multiprocessing.Event()
    sink = multiprocessing.Process(target=_sink, args=(port, ready), daemon=True)
    sink.start()
    ready.wait(30)
    try:
        with tempfile.TemporaryDirectory(prefix="rapport-bench-") as tmp:
            config = _setup(Path(tmp), port, count)
            baseline = _run(_baseline, port, count)
            rapport = _run(_rapport, str(config))
    finally:
        sink.terminate()
    if rapport["sent"] != count:
        raise SystemExit(f"rapport sent {rapport['sent']} of {count}: {rapport['summary']}")
    ratio = rapport["rate"] / baseline["rate"]
    rows = [
        ("baseline (smtplib, pre-built)", baseline["rate"], baseline["seconds"], baseline["rss"]),
        ("rapport send (plan + deliver)", rapport["rate"], rapport["seconds"], rapport["rss"]),
    ]
    print(f"{'side':32} {'msg/s':>9} {'seconds':>9} {'peak MB':>9}")
    for name, rate, seconds, rss in rows:
        print(f"{name:32} {rate:9.0f} {seconds:9.2f} {rss:9.1f}")
    print(
        f"participants {count}, ratio {ratio:.2f} (target >= 0.70),"
        f" rapport peak {rapport['rss']:.0f} MB (target < 300)"
    )
    print(
        json.dumps(
            {
                "bench": "send",
                "participants": count,
                "baseline_rate": round(baseline["rate"], 1),
                "rapport_rate": round(rapport["rate"], 1),
                "baseline_seconds": round(baseline["seconds"], 3),
                "rapport_seconds": round(rapport["seconds"], 3),
                "ratio": round(ratio, 3),
                "peak_rss_mb": round(rapport["rss"], 1),
            }
        )
    )


if __name__ == "__main__":
    main()
