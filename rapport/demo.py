"""`make demo`: the example program, set up from scratch and its topics sent, with no network.

Creates a project in ``--dir`` (config.toml, a SQLite database), imports the participants,
coordinators, partnerships and topics in ``examples/``, opens the round, rehearses with a dry run,
then runs `rapport send` on the day of each topic against an SMTP server embedded in this process
on 127.0.0.1, which files every message it receives as an .eml file in ``--dir``/mail.  A second
pass on the same day shows that nothing goes twice.  Simulated replies, health and the weekly
report join the demo when the inbox reader and monitor exist.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

from rapport.cli import main as rapport

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
ROUND, START = "2027-spring", "2027-03-01"
DAYS = (
    "2027-03-01T23:59:00Z",
    "2027-03-15T23:59:00Z",
    "2027-03-29T23:59:00Z",
    "2027-04-12T23:59:00Z",
)
PREVIEW = "maria.gonzalez@example.org"


def _run(config: Path, *args: str) -> None:
    print(f"\n$ rapport {' '.join(args)}", flush=True)
    code = rapport(["--config", str(config), *args])
    if code != 0:
        raise SystemExit(f"demo: `rapport {' '.join(args)}` failed with exit code {code}")


class _Mailbox:
    """An aiosmtpd handler that files each message as ``NNNN-recipient.eml``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.count = 0

    async def handle_DATA(self, server: object, session: object, envelope: Any) -> str:
        for recipient in envelope.rcpt_tos:
            self.count += 1
            name = f"{self.count:04d}-{recipient.replace('@', '_at_')}.eml"
            (self.folder / name).write_bytes(envelope.original_content or envelope.content)
        return "250 OK"


def run(folder: Path) -> None:
    if not EXAMPLES.is_dir():
        raise SystemExit(f"demo: the example data is missing ({EXAMPLES.name}/ beside the package)")
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    os.environ.setdefault("RAPPORT_SECRET", "demo-only-secret-not-for-real-use")
    mail = folder / "mail"
    mail.mkdir()
    mailbox = _Mailbox(mail)
    server = Controller(mailbox, hostname="127.0.0.1", port=_free_port())
    server.start()
    try:
        _play(folder, server.port, mailbox)
    finally:
        server.stop()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _play(folder: Path, port: int, mailbox: _Mailbox) -> None:
    config = folder / "config.toml"
    _run(config, "init")
    text = config.read_text(encoding="utf-8")
    text = text.replace('# host = "localhost"', 'host = "127.0.0.1"')
    text = text.replace("# port = 587", f"port = {port}").replace(
        '# security = "starttls"', 'security = "none"'
    )
    config.write_text(text, encoding="utf-8")
    _run(config, "import", "participants", str(EXAMPLES / "participants.csv"))
    _run(config, "import", "coordinators", str(EXAMPLES / "coordinators.csv"))
    _run(config, "round", "create", ROUND, "--start", START, "--end", "2027-08-31")
    _run(config, "import", "partnerships", str(EXAMPLES / "partnerships.csv"))
    _run(config, "import", "topics", str(EXAMPLES / "topics"), "--round", ROUND)
    _run(config, "topics", "list")
    _run(config, "send", "--dry-run", "--now", DAYS[0])
    for day in DAYS:
        _run(config, "send", "--now", day)
    _run(config, "send", "--now", DAYS[-1])
    _run(config, "outbox")
    participant = PREVIEW if PREVIEW in (EXAMPLES / "participants.csv").read_text() else None
    if participant is None:
        participant = (EXAMPLES / "participants.csv").read_text().splitlines()[1].split(",")[0]
    html = folder / "topic-1.html"
    _run(
        config,
        "preview",
        "topic",
        "1",
        "--participant",
        participant,
        "--html",
        str(html),
        "--now",
        DAYS[0],
    )
    print(
        f"\nThe demo program is in {folder}/ (config.toml, rapport.db); the embedded server"
        f" received {mailbox.count} messages, filed in {folder / 'mail'}/;"
        f" the email above is also in {html}."
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rapport demo", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--dir", type=Path, default=Path("demo-out"), help="where to put the demo (replaced)"
    )
    args = parser.parse_args(argv)
    run(args.dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
