"""`rapport health`, `rapport nudge` and `rapport report` through the CLI on a real database.

The pure rules are tested in test_health.py, test_nudges.py and test_report.py; these tests check
the wiring: what is read from the database, what is written (snapshots, outbox rows with their
payloads), the JSON contract, idempotency and the weekly schedule per coordinator zone.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, date, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from program.config import load_config, parse_config, reply_secret
from rapport import watch
from rapport.watch import iso_week, report_due
from tests.conftest import Project
from tests.smtp_server import SmtpTestServer
from tests.test_poll import Cli, _deliver, _key, _project, _reply
from tests.test_send import _setup

pytestmark = pytest.mark.databases("sqlite", "postgresql")

COORDINATORS = (
    "email,name,role,countries,timezone\n"
    "lead@example.org,Lena Lead,program,,Australia/Sydney\n"
    "br@example.org,Bruno Coord,country,BR,America/Sao_Paulo\n"
)


def _coordinators(project: Project, cli: Cli) -> None:
    path = project.dir / "coordinators.csv"
    path.write_text(COORDINATORS, encoding="utf-8")
    result = cli("--config", project.config, "import", "coordinators", path)
    assert result.code == 0, result.err


def _arrives(maildir: Path, message: EmailMessage, *, at: str) -> None:
    """Deliver ``message`` as if it arrived at ``at`` (a Maildir's arrival time is its mtime)."""
    _deliver(maildir, message)
    newest = max((maildir / "new").iterdir(), key=lambda p: p.name)
    when = datetime.fromisoformat(at).timestamp()
    os.utime(newest, (when, when))


def _health(project: Project, cli: Cli, now: str, *extra: str) -> list[dict[str, object]]:
    result = cli("--config", project.config, "health", "--json", "--now", now, *extra)
    assert result.code == 0, result.err
    return [json.loads(line) for line in result.out.splitlines()]


def _query(project: Project, sql: str) -> list[dict[str, Any]]:
    return project.rows(sql)


def test_health_json_follows_the_contract(
    project: Project, cli: Cli, smtp_server: SmtpTestServer
) -> None:
    """One object per partnership with exactly the contract's fields; a check-in 1 is healthy."""
    maildir = _project(project, cli, smtp_server)
    key, _ = _key(project, "ana@example.org")
    _arrives(
        maildir,
        _reply("ana@example.org", f"coordinators+{key}@example.org", "1\n"),
        at="2027-03-02T10:00:00Z",
    )
    assert (
        cli("--config", project.config, "inbox", "poll", "--now", "2027-03-02T12:00:00Z").code == 0
    )
    rows = _health(project, cli, "2027-03-03T12:00:00Z")
    assert len(rows) == 3
    for row in rows:
        assert set(row) == {"partnership", "members", "state", "score", "since", "reasons"}
        assert isinstance(row["reasons"], list) and row["reasons"]
        for member in row["members"]:  # type: ignore[attr-defined]
            assert set(member) == {"email", "name", "country"}
    by_member = {row["members"][0]["email"]: row for row in rows}  # type: ignore[index]
    assert by_member["ana@example.org"]["state"] == "healthy"
    assert by_member["kelsey@example.org"]["state"] == "starting"
    assert datetime.fromisoformat(str(by_member["ana@example.org"]["since"])).tzinfo is not None
    only = _health(project, cli, "2027-03-03T12:00:00Z", "--state", "healthy")
    assert [r["partnership"] for r in only] == [by_member["ana@example.org"]["partnership"]]


def test_health_table_and_unknown_round(
    project: Project, cli: Cli, smtp_server: SmtpTestServer
) -> None:
    _project(project, cli, smtp_server)
    table = cli("--config", project.config, "health", "--now", "2027-04-20T12:00:00Z")
    assert table.code == 0, table.err
    assert table.out.splitlines()[0].split() == [
        "id",
        "state",
        "score",
        "since",
        "members",
        "reasons",
    ]
    assert "quiet 3" in table.out.splitlines()[-1] or "at_risk" in table.out
    missing = cli("--config", project.config, "health", "--round", "autumn", "--now", "2027-04-20")
    assert missing.code == 2 and "round autumn" in missing.err


def test_nudge_takes_one_snapshot_a_day_and_plans_once(
    project: Project, cli: Cli, smtp_server: SmtpTestServer
) -> None:
    """Quiet pairs get a nudge each (once); a second pass the same day rewrites the snapshot."""
    _project(project, cli, smtp_server)
    _coordinators(project, cli)
    now = "2027-04-05T08:00:00Z"  # five weeks in, nobody has written: every pair is quiet
    dry = cli("--config", project.config, "nudge", "--dry-run", "--now", now)
    assert dry.code == 0, dry.err
    assert "nothing was changed" in dry.out
    assert _query(project, "SELECT * FROM health_snapshot") == []
    first = cli("--config", project.config, "nudge", "--now", now)
    assert first.code == 0, first.err
    snapshots = _query(project, "SELECT * FROM health_snapshot")
    assert len(snapshots) == 3 and {s["day"] for s in snapshots} == {"2027-04-05"}
    assert {s["state"] for s in snapshots} == {"quiet"}
    nudges = _query(project, "SELECT * FROM outbox WHERE kind = 'nudge' ORDER BY key")
    assert len(nudges) == 6  # both members of three quiet pairs
    assert all(n["key"].startswith("nudge/") and "/pair/" in n["key"] for n in nudges)
    payload = json.loads(nudges[0]["payload"])
    assert payload["template"] == "nudge_pair" and payload["recipient"]["name"]
    again = cli("--config", project.config, "nudge", "--now", "2027-04-05T09:00:00Z")
    assert again.code == 0, again.err
    assert "planned 0" in again.out
    assert len(_query(project, "SELECT * FROM health_snapshot")) == 3
    assert len(_query(project, "SELECT * FROM outbox WHERE kind = 'nudge'")) == 6


def test_nudges_are_sent_at_a_civil_hour_in_each_zone(
    project: Project, cli: Cli, smtp_server: SmtpTestServer
) -> None:
    _project(project, cli, smtp_server)
    cli("--config", project.config, "nudge", "--now", "2027-04-05T08:00:00Z")
    for row in _query(project, "SELECT * FROM outbox WHERE kind = 'nudge'"):
        zone = {
            "ana@example.org": "America/Sao_Paulo",
            "lukasz@example.org": "Europe/Warsaw",
            "kelsey@example.org": "America/New_York",
            "amara@example.org": "Africa/Lagos",
            "wang@example.org": "Asia/Shanghai",
            "priya@example.org": "Asia/Kolkata",
        }[row["to_address"]]
        from zoneinfo import ZoneInfo

        due = datetime.fromisoformat(row["due_at"]).replace(tzinfo=UTC)
        local = due.astimezone(ZoneInfo(zone))
        assert 8 <= local.hour < 20, (row["to_address"], local)


def test_report_send_goes_once_per_coordinator_and_week(
    project: Project, cli: Cli, smtp_server: SmtpTestServer
) -> None:
    _project(project, cli, smtp_server)
    _coordinators(project, cli)
    before = len(smtp_server.handler.accepted)
    now = "2027-04-05T08:00:00Z"
    first = cli("--config", project.config, "report", "--send", "--now", now)
    assert first.code == 0, first.err
    assert first.out.startswith("planned 2 reports")
    rows = _query(project, "SELECT * FROM outbox WHERE kind = 'report' ORDER BY key")
    assert [r["status"] for r in rows] == ["sent", "sent"]
    assert sorted(r["to_address"] for r in rows) == ["br@example.org", "lead@example.org"]
    assert {r["key"].rsplit("/", 1)[1] for r in rows} == {"2027-W14"}
    assert len(smtp_server.handler.accepted) == before + 2
    again = cli("--config", project.config, "report", "--send", "--now", "2027-04-06T08:00:00Z")
    assert again.code == 0, again.err
    assert "2 already planned this week" in again.out
    assert len(smtp_server.handler.accepted) == before + 2


def test_report_waits_for_the_coordinators_weekday_and_time(
    project: Project, cli: Cli, smtp_server: SmtpTestServer
) -> None:
    """Without --send a pass sends only the reports whose local Monday 08:00 has come."""
    _project(project, cli, smtp_server)
    _coordinators(project, cli)
    # Monday 2027-04-05 10:00 UTC is Monday 20:00 in Sydney (AEST, UTC+10) and Monday 07:00 in
    # São Paulo: only the program coordinator's report is due.
    result = cli("--config", project.config, "report", "--now", "2027-04-05T10:00:00Z")
    assert result.code == 0, result.err
    assert "planned 1 reports" in result.out and "1 not due yet" in result.out
    [row] = _query(project, "SELECT * FROM outbox WHERE kind = 'report'")
    assert row["to_address"] == "lead@example.org"


def test_report_html_is_written_for_one_coordinator(
    project: Project, cli: Cli, smtp_server: SmtpTestServer, tmp_path: Path
) -> None:
    _project(project, cli, smtp_server)
    _coordinators(project, cli)
    out = tmp_path / "report.html"
    result = cli(
        "--config", project.config, "report", "--html", out, "--coordinator", "BR@example.org",
        "--now", "2027-04-05T08:00:00Z",
    )  # fmt: skip
    assert result.code == 0, result.err
    assert "br@example.org's report" in result.out
    assert out.read_text(encoding="utf-8").lstrip().lower().startswith("<!doctype html")
    assert _query(project, "SELECT * FROM outbox WHERE kind = 'report'") == []
    missing = cli(
        "--config", project.config, "report", "--html", out, "--coordinator", "who@example.org"
    )
    assert missing.code == 2 and "who@example.org" in missing.err


@pytest.mark.parametrize(
    ("now", "zone", "due"),
    [
        ("2027-04-05T07:59:00+00:00", "UTC", False),  # Monday, a minute early
        ("2027-04-05T08:00:00+00:00", "UTC", True),
        ("2027-04-07T03:00:00+00:00", "UTC", True),  # missed Monday: Wednesday catches up
        ("2027-04-04T21:59:00+00:00", "Australia/Sydney", False),
        ("2027-04-04T22:00:00+00:00", "Australia/Sydney", True),
        ("2027-04-05T10:00:00+00:00", "America/Los_Angeles", False),  # 03:00 Monday there
    ],
)
def test_report_due(now: str, zone: str, due: bool) -> None:
    settings = parse_config(
        '[program]\nname = "N"\nfrom_address = "a@example.org"\n'
        'reply_address = "a+{key}@example.org"\n',
        "config.toml",
    )
    assert report_due(datetime.fromisoformat(now), zone, settings) is due


def test_iso_week_is_the_coordinators() -> None:
    sunday_night = datetime(2027, 4, 4, 22, 0, tzinfo=UTC)
    assert iso_week(sunday_night, "UTC") == "2027-W13"
    assert iso_week(sunday_night, "Australia/Sydney") == "2027-W14"


def test_alert_dates_earlier_nudges_as_sent_like_the_report(
    project: Project, cli: Cli, smtp_server: SmtpTestServer
) -> None:
    """The coordinators' alert dates a nudge planned one evening and sent the next morning by
    the morning, as the weekly report does, not by the evening it was planned."""
    _project(project, cli, smtp_server)
    _coordinators(project, cli)
    # Wednesday 31 March, 21:00 UTC: every pair is quiet.  Ana (São Paulo, 18:00) is nudged at
    # once; Łukasz (Warsaw, 23:00) the next morning at 08:00 there, 06:00 UTC.
    assert cli("--config", project.config, "nudge", "--now", "2027-03-31T21:00:00Z").code == 0
    assert cli("--config", project.config, "send", "--now", "2027-04-01T09:00:00Z").code == 0
    sent = {
        r["to_address"]: (r["created_at"][:10], r["sent_at"][:10])
        for r in _query(project, "SELECT * FROM outbox WHERE kind = 'nudge'")
    }
    assert sent["ana@example.org"] == ("2027-03-31", "2027-03-31")
    assert sent["lukasz@example.org"] == ("2027-03-31", "2027-04-01")
    # Mail to Ana bounces: the coordinators are told at once, with the nudges so far.
    project.execute(
        "UPDATE participant SET bouncing_since = ? WHERE email = ?",
        datetime(2027, 4, 2, 10, 0, tzinfo=UTC),
        "ana@example.org",
    )
    assert cli("--config", project.config, "nudge", "--now", "2027-04-02T12:00:00Z").code == 0
    [alert] = [
        json.loads(r["payload"])["data"]
        for r in _query(project, "SELECT * FROM outbox WHERE to_address = 'lead@example.org'")
        if json.loads(r["payload"])["template"] == "nudge_coordinators"
    ]
    told = {(n["name"], n["date"]) for n in alert["nudges"]}
    assert told == {("Ana Souza", "2027-03-31"), ("Łukasz Nowak", "2027-04-01")}
    # The weekly report's card says the same.
    reported = cli("--config", project.config, "report", "--send", "--now", "2027-04-02T13:00:00Z")
    assert reported.code == 0, reported.err
    [report] = [
        json.loads(r["payload"])["data"]
        for r in _query(project, "SELECT * FROM outbox WHERE kind = 'report'")
        if r["to_address"] == "lead@example.org"
    ]
    [card] = [c for c in report["partnerships"] if c["id"] == alert["partnership"]]
    shown = {(n["to"]["name"], n["sent"]) for n in card["nudges"] if n["template"] == "nudge_pair"}
    assert shown == told


def test_one_report_per_local_week_in_sydney_and_los_angeles(
    project: Project, cli: Cli, smtp_server: SmtpTestServer
) -> None:
    """Hour by hour over five weeks (across both DST changes), a coordinator in Sydney and one
    in Los Angeles get one report per local ISO week, labelled with that week and their local
    date, and a partnership is "new this week" in one report only."""
    _setup(project, cli, smtp_server, '[schedule]\nreport_time = "09:00"\n')
    zones = {"syd@example.org": "Australia/Sydney", "la@example.org": "America/Los_Angeles"}
    path = project.dir / "coordinators.csv"
    path.write_text(
        "email,name,role,countries,timezone\n"
        + "".join(f"{email},{email[:2]},program,,{zone}\n" for email, zone in zones.items()),
        encoding="utf-8",
    )
    assert cli("--config", project.config, "import", "coordinators", path).code == 0
    settings, secret = load_config(project.config), reply_secret()
    start = datetime(2027, 3, 1, tzinfo=UTC)  # Monday: 11:00 in Sydney, Sunday 16:00 in LA
    for hour in range(36 * 24):
        now = start + timedelta(hours=hour)
        if now == datetime(2027, 3, 17, 12, tzinfo=UTC):  # a fourth pair joins the round
            (project.dir / "late.csv").write_text(
                "email,name,country,timezone,language\n"
                "uma@example.org,Uma Rai,NP,Asia/Kathmandu,en\n"
                "vic@example.org,Vic Diaz,CL,America/Santiago,es\n",
                encoding="utf-8",
            )
            (project.dir / "late-pair.csv").write_text(
                "round,member_a,member_b\nspring,uma@example.org,vic@example.org\n",
                encoding="utf-8",
            )
            for kind, csv in (("participants", "late.csv"), ("partnerships", "late-pair.csv")):
                imported = cli("--config", project.config, "import", kind, project.dir / csv)
                assert imported.code == 0, imported.err
        if now.hour == 5:  # the daily snapshot
            watch.plan_nudges(project.engine, settings=settings, secret=secret, now=now, send=False)
        watch.plan_reports(project.engine, settings=settings, secret=secret, now=now, send=False)

    reports: dict[str, list[tuple[datetime, str, dict[str, Any]]]] = {e: [] for e in zones}
    for row in _query(project, "SELECT * FROM outbox WHERE kind = 'report' ORDER BY id"):
        built = datetime.fromisoformat(str(row["created_at"])).replace(tzinfo=UTC)
        data = json.loads(row["payload"])["data"]
        reports[row["to_address"]].append((built, row["key"].rsplit("/", 1)[1], data))
    # Los Angeles' first pass is on Sunday 28 February there: last week's report, caught up.
    expected_weeks = {
        "syd@example.org": [f"2027-W{w:02d}" for w in range(9, 15)],
        "la@example.org": [f"2027-W{w:02d}" for w in range(8, 15)],
    }
    # Each partnership is new once: the three at the first report, the fourth in week 12.
    expected_new = {"syd@example.org": [3, 0, 0, 1, 0, 0], "la@example.org": [3, 0, 0, 0, 1, 0, 0]}
    for email, zone in zones.items():
        got = reports[email]
        assert [week for _, week, _ in got] == expected_weeks[email]
        assert [data["new"] for _, _, data in got] == expected_new[email]
        for built, week, data in got:
            local = built.astimezone(ZoneInfo(zone))
            assert data["week"] == week == iso_week(built, zone)
            assert data["day"] == local.date().isoformat()
            if week != expected_weeks[email][0]:  # on time: Monday 09:00 there
                assert (local.weekday(), local.hour) == (0, 9), (email, local)
                assert date.fromisoformat(data["day"]) == date.fromisocalendar(
                    local.year, int(week[-2:]), 1
                )
        # "Since" is the previous report's day.
        assert [d["previous_day"] for _, _, d in got[1:]] == [d["day"] for _, _, d in got[:-1]]
    # Monday 09:00 in Sydney is Sunday, UTC: 22:00 in summer time, 23:00 after 4 April.
    sydney = [built for built, _, _ in reports["syd@example.org"][1:]]
    assert {(b.weekday(), b.hour) for b in sydney} == {(6, 22), (6, 23)}
    assert reports["syd@example.org"][1][2]["day"] == "2027-03-08"
