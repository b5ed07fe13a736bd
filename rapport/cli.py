"""The `rapport` command: parse, call one core function, print.

Only this module turns Rapport's errors into exit codes: 0 ok, 1 failure, 2 bad usage, config or
input (the message names the file, line and field).  Users never see a traceback for an expected
failure.  Every command that depends on the time takes ``--now`` (ISO 8601; without an offset it
is read as UTC).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import NoReturn

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from program.config import config_path, database_url, example_config, load_config
from program.errors import RapportError, UsageError
from program.settings import Settings
from program.store import make_engine, require_current, upgrade

STATUSES = (
    "pending",
    "sending",
    "sent",
    "retry",
    "failed",
    "uncertain",
    "suppressed",
    "late",
    "cancelled",
)
# monitor/health.py's STATES; spelled out so `--help` needs no import of the application.
HEALTH_STATES = ("starting", "healthy", "one_sided", "quiet", "at_risk", "dissolved", "ended")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        raise UsageError(f"{self.prog}: {message}")


def _now(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--now: not an ISO 8601 date and time: {text!r} (like 2027-03-01T09:00:00+01:00)"
        ) from None
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC)


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="rapport", description="Run a peer-mentoring network by email.")
    parser.add_argument(
        "--config", help="config file (default: $RAPPORT_CONFIG, else ./config.toml)"
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def now_option(p: argparse.ArgumentParser) -> None:
        p.add_argument("--now", type=_now, help="act as if it were this time (ISO 8601)")

    init = commands.add_parser("init", help="write a commented config.toml and create the database")
    init.add_argument("--force", action="store_true", help="overwrite an existing config file")

    db = commands.add_parser("db", help="database maintenance").add_subparsers(
        dest="db_command", required=True, parser_class=_Parser
    )
    db.add_parser("upgrade", help="apply the migrations this version needs")

    imp = commands.add_parser(
        "import", help="load participants, coordinators, partnerships, topics"
    )
    kinds = imp.add_subparsers(dest="kind", required=True, parser_class=_Parser)
    for kind in ("participants", "coordinators", "partnerships"):
        k = kinds.add_parser(kind, help=f"import {kind} from a CSV file (all or nothing)")
        k.add_argument("file", type=Path)
        k.add_argument("--dry-run", action="store_true", help="validate only; write nothing")
        now_option(k)
    topics_imp = kinds.add_parser("topics", help="import a folder of topic Markdown files")
    topics_imp.add_argument("directory", type=Path)
    topics_imp.add_argument("--round", required=True, dest="round_name")
    topics_imp.add_argument("--dry-run", action="store_true", help="validate only; write nothing")
    now_option(topics_imp)

    rounds = commands.add_parser("round", help="matching rounds").add_subparsers(
        dest="round_command", required=True, parser_class=_Parser
    )
    create = rounds.add_parser("create", help="open a round")
    create.add_argument("name")
    create.add_argument("--start", type=_date, required=True)
    create.add_argument("--end", type=_date)
    create.add_argument("--cadence-days", type=_positive, default=14)
    now_option(create)
    listing = rounds.add_parser(
        "list", help="list the rounds (an active round is upcoming before its start, ended after)"
    )
    now_option(listing)

    topics = commands.add_parser("topics", help="topics").add_subparsers(
        dest="topics_command", required=True, parser_class=_Parser
    )
    tl = topics.add_parser("list", help="list the topics and their send dates")
    tl.add_argument("--round", dest="round_name")

    preview = commands.add_parser("preview", help="show an email as a participant would get it")
    what = preview.add_subparsers(dest="what", required=True, parser_class=_Parser)
    pt = what.add_parser("topic", help="the topic email number N")
    pt.add_argument("order", type=_positive, metavar="N")
    pt.add_argument("--participant", required=True, metavar="EMAIL")
    pt.add_argument("--round", dest="round_name")
    pt.add_argument("--html", type=Path, metavar="FILE", help="also write the HTML part to FILE")
    now_option(pt)

    send = commands.add_parser("send", help="plan what is due and deliver it (one pass)")
    send.add_argument("--dry-run", action="store_true", help="change nothing, send nothing")
    send.add_argument("--limit", type=_positive, help="send at most N messages")
    now_option(send)

    participant = commands.add_parser("participant", help="one participant").add_subparsers(
        dest="participant_command", required=True, parser_class=_Parser
    )
    alias = participant.add_parser("alias", help="count mail from another address as theirs")
    alias.add_argument("email", metavar="EMAIL")
    alias.add_argument("address", metavar="ADDRESS")
    now_option(alias)

    for verb, meaning in (
        ("pause", "stop their mail for now (health no longer expects them to write)"),
        ("resume", "undo pause: mail them again"),
        ("withdraw", "they have left the program: no more mail, their partnership is at risk"),
    ):
        state = participant.add_parser(verb, help=meaning)
        state.add_argument("email", metavar="EMAIL")
        if verb != "resume":
            state.add_argument("--reason", default="", help="why, kept with the partnership")
        now_option(state)

    address = participant.add_parser(
        "address", help="give them a working address (the old one becomes an alias)"
    )
    address.add_argument("email", metavar="EMAIL")
    address.add_argument("new", metavar="NEW_EMAIL")
    now_option(address)
    unsuppress = participant.add_parser(
        "unsuppress", help="mail them again: lift their address's bounce or unsubscribe"
    )
    unsuppress.add_argument("email", metavar="EMAIL")
    now_option(unsuppress)

    forget = participant.add_parser(
        "forget", help="erase what identifies them, keeping only an anonymous tally"
    )
    forget.add_argument("email", metavar="EMAIL")
    forget.add_argument("--yes", action="store_true", help="yes, erase it (cannot be undone)")
    now_option(forget)

    purge = commands.add_parser(
        "purge", help="delete inbound metadata older than privacy.retain_days (the daily job does)"
    )
    now_option(purge)

    ps = commands.add_parser("partnership", help="one partnership").add_subparsers(
        dest="partnership_command", required=True, parser_class=_Parser
    )
    show = ps.add_parser("show", help="members, health, notes and the mail sent")
    show.add_argument("id", type=_positive, metavar="ID")
    now_option(show)
    note = ps.add_parser("note", help="add a note (shown in the weekly report)")
    note.add_argument("id", type=_positive, metavar="ID")
    note.add_argument("text", metavar="TEXT")
    now_option(note)
    dissolve = ps.add_parser("dissolve", help="end a partnership before the round does")
    dissolve.add_argument("id", type=_positive, metavar="ID")
    dissolve.add_argument("--reason", required=True, help="why (kept; shown to coordinators)")
    now_option(dissolve)

    match = commands.add_parser(
        "match", help="new partners for participants left alone"
    ).add_subparsers(dest="match_command", required=True, parser_class=_Parser)
    suggest = match.add_parser("suggest", help="propose partners (changes no partnership)")
    suggest.add_argument(
        "--round", metavar="NAME", help="the round (default: the active round that started last)"
    )
    suggest.add_argument("--json", action="store_true", help="one JSON object per proposal")
    now_option(suggest)
    apply = match.add_parser("apply", help="make proposed pairs into partnerships")
    apply.add_argument("ids", nargs="*", type=_positive, metavar="ID", help="proposal ids")
    apply.add_argument("--all", action="store_true", help="every open proposal")
    now_option(apply)

    health = commands.add_parser("health", help="each partnership's state, score and reasons")
    health.add_argument("--json", action="store_true", help="one JSON object per partnership")
    health.add_argument("--state", choices=HEALTH_STATES, help="only partnerships in this state")
    health.add_argument("--round", metavar="NAME", help="only this round (default: active ones)")
    now_option(health)

    nudge = commands.add_parser("nudge", help="plan today's nudges and send what is due")
    nudge.add_argument("--dry-run", action="store_true", help="show what would go; send nothing")
    now_option(nudge)

    report = commands.add_parser("report", help="the weekly at-risk report")
    report.add_argument("--coordinator", metavar="EMAIL", help="only this coordinator")
    report.add_argument("--html", type=Path, metavar="FILE", help="write the report's HTML here")
    report.add_argument(
        "--send", action="store_true", help="send this ISO week's report now (once per week)"
    )
    report.add_argument("--dry-run", action="store_true", help="plan and send nothing")
    now_option(report)

    serve = commands.add_parser(
        "serve", help="run every job on schedule until SIGTERM (the systemd service)"
    )
    serve.add_argument(
        "--once",
        action="store_true",
        help="run each job once, as if its time had come, then exit (for cron and checks)",
    )
    now_option(serve)

    commands.add_parser(
        "doctor", help="check config, database, SMTP, IMAP, templates and secrets; send nothing"
    )

    demo = commands.add_parser(
        "demo", help="play a whole round on an embedded mail server; no network needed"
    )
    demo.add_argument(
        "--dir", type=Path, default=Path("demo-out"), help="where to write (default: demo-out)"
    )

    unsub = commands.add_parser(
        "unsubscribe", help="one-click unsubscribe: suppress the participant a reply key names"
    )
    unsub.add_argument("key", metavar="KEY", help="the {key} from program.unsubscribe_url")
    now_option(unsub)

    inbox = commands.add_parser("inbox", help="read the coordinators' inbox").add_subparsers(
        dest="inbox_command", required=True, parser_class=_Parser
    )
    ip = inbox.add_parser("poll", help="read new mail once and record what it shows")
    ip.add_argument("--dry-run", action="store_true", help="classify only; record and move nothing")
    now_option(ip)
    inbox.add_parser("status", help="each folder's cursor, counts by kind and last error")
    ic = inbox.add_parser("classify", help="classify .eml files; one JSON object per file")
    ic.add_argument("files", nargs="+", type=Path, metavar="FILE")

    ob = commands.add_parser("outbox", help="what was sent, and what needs attention")
    ob.add_argument("--status", choices=STATUSES)
    ob_sub = ob.add_subparsers(dest="outbox_command", parser_class=_Parser)
    retry = ob_sub.add_parser("retry", help="send a row again (uncertain, failed, late, ...)")
    retry.add_argument("id", type=_positive, nargs="+", help="one or more outbox row ids")
    now_option(retry)
    _name_the_choices(parser)
    return parser


def _name_the_choices(parser: argparse.ArgumentParser) -> None:
    """Show each group of subcommands as ``{a,b,c}`` in usage and errors ("the following
    arguments are required: {pause,resume,...}"), never its internal ``dest`` name."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            action.metavar = action.metavar or "{" + ",".join(action.choices) + "}"
            for sub in action.choices.values():
                _name_the_choices(sub)


class Context:
    """What a command needs, loaded lazily so `init` and `--help` need no config."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.path = config_path(args.config)
        self._settings: Settings | None = None
        self._engine: Engine | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_config(self.path)
        return self._settings

    def engine(self, *, current: bool = True) -> Engine:
        if self._engine is None:
            self._engine = make_engine(database_url(self.settings))
            if current:
                require_current(self._engine)
        return self._engine

    @property
    def now(self) -> datetime:
        return getattr(self.args, "now", None) or datetime.now(UTC)


def _cmd_init(ctx: Context) -> int:
    path = ctx.path
    if path.exists() and not ctx.args.force:
        raise UsageError(f"{path}: already exists (use --force to overwrite it)")
    if not path.parent.is_dir():
        raise UsageError(f"{path.parent}: no such folder")
    path.write_text(example_config(), encoding="utf-8")
    _, after = upgrade(ctx.engine(current=False))
    print(f"wrote {path}; database {database_url(ctx.settings)} at migration {after}")
    print(
        "next: edit the [program] and [smtp] sections, set RAPPORT_SECRET,"
        " then `rapport import ...`"
    )
    return 0


def _cmd_db(ctx: Context) -> int:
    before, after = upgrade(ctx.engine(current=False))
    if before == after:
        print(f"database already at migration {after}")
    else:
        print(f"database upgraded from {before or 'empty'} to {after}")
    return 0


def dispatch(ctx: Context) -> int:
    args = ctx.args
    if args.command == "init":
        return _cmd_init(ctx)
    if args.command == "db":
        return _cmd_db(ctx)
    # The rest need the whole application; each command's handler is cmd_<command> in the
    # module named here (commands.py by default).
    module = importlib.import_module(f"rapport.{_HANDLERS.get(args.command, 'commands')}")
    handler: Callable[[Context], int] = getattr(module, f"cmd_{args.command}")
    return handler(ctx)


_HANDLERS = {
    "partnership": "actions",
    "match": "actions",
    "purge": "actions",
    "serve": "service",
    "doctor": "doctor",
    "demo": "demo",
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        return dispatch(Context(args))
    except SystemExit as exc:  # --help, or argparse's own exit
        return int(exc.code or 0) if isinstance(exc.code, int) else 2
    except RapportError as exc:
        print(f"rapport: {exc}", file=sys.stderr)
        return exc.exit_code
    except SQLAlchemyError as exc:
        # The database went away or stayed locked past the busy timeout: say so, no traceback.
        reason = getattr(exc, "orig", None) or exc
        print(f"rapport: database error: {reason}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("rapport: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`rapport health | head`): stop quietly, as other tools do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except OSError as exc:  # a file or folder the command could not use: no traceback
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"rapport: {where}{exc.strerror or exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
