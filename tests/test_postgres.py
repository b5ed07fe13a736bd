"""What PostgreSQL adds over SQLite: several processes sharing one outbox, and migrations that
keep a database's data as it is upgraded (on both backends, since both are upgraded in the field).

The private server comes from tests/postgres.py; these tests are skipped with the reason when
PostgreSQL is not installed and cannot be.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, MetaData, insert, select

from mailer import outbox
from mailer.plan import plan_topics
from program.config import load_config
from program.store import current_revision, head_revision, make_engine, session_scope, upgrade
from rapport.service import Service
from tests.conftest import SECRET, Project, Result, plain
from tests.smtp_server import SmtpTestServer

Cli = Callable[..., Result]
NOW = "2027-03-01T23:00:00Z"
MESSAGES = 5_000


def _send(project: Project) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "rapport.cli", "--config", str(project.config)]
    return subprocess.Popen(
        [*command, "send", "--now", NOW],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
    )


@pytest.mark.slow
@pytest.mark.databases("postgresql")
def test_two_senders_share_the_outbox_and_send_each_message_once(
    project: Project, cli: Cli, smtp_server: SmtpTestServer
) -> None:
    """Two `rapport send` processes drain 5,000 due messages together: each goes out once."""
    project.write_config(smtp_port=smtp_server.port)
    folder = project.dir
    people = [f"p{n}@example.org" for n in range(MESSAGES)]
    (folder / "participants.csv").write_text(
        "email,name,country,timezone,language\n"
        + "".join(f"{a},Person {n},FR,Europe/Paris,en\n" for n, a in enumerate(people)),
        encoding="utf-8",
    )
    (folder / "partnerships.csv").write_text(
        "round,member_a,member_b\n"
        + "".join(f"spring,{a},{b}\n" for a, b in zip(people[::2], people[1::2], strict=True)),
        encoding="utf-8",
    )
    (folder / "topics").mkdir()
    (folder / "topics" / "intro.md").write_text(
        '+++\ntitle = "Introductions"\norder = 1\n+++\nTell your partner about your work.\n',
        encoding="utf-8",
    )
    for args in (
        ("import", "participants", folder / "participants.csv"),
        ("round", "create", "spring", "--start", "2027-03-01"),
        ("import", "partnerships", folder / "partnerships.csv"),
        ("import", "topics", folder / "topics", "--round", "spring"),
    ):
        result = cli("--config", project.config, *args)
        assert result.code == 0, result.err
    # Planned beforehand, so both processes find the whole outbox due from their first query.
    with session_scope(project.engine) as session:
        plan = plan_topics(
            session,
            settings=load_config(project.config),
            secret=SECRET.encode(),
            now=datetime(2027, 3, 1, 23, tzinfo=UTC),
        )
    assert plan.planned == MESSAGES

    started = time.monotonic()
    senders = [_send(project), _send(project)]
    outputs = [process.communicate(timeout=600) for process in senders]
    seconds = time.monotonic() - started
    sent = []
    for process, (out, err) in zip(senders, outputs, strict=True):
        assert process.returncode == 0, err
        found = re.fullmatch(r"planned 0; sent (\d+)", out.strip())
        assert found, out
        sent.append(int(found.group(1)))
    print(f"\ntwo senders, {MESSAGES:,} messages: {seconds:.1f} s, split {sent}")

    recipients = Counter(r for m in smtp_server.handler.accepted for r in m.recipients)
    assert len(recipients) == MESSAGES and set(recipients.values()) == {1}
    assert sum(sent) == MESSAGES and min(sent) > 0, sent
    statuses = project.rows("SELECT status, count(*) AS n FROM outbox GROUP BY status")
    assert statuses == [{"status": "sent", "n": MESSAGES}]


# Rows as a database at the first migration held them, each table's in order.
FIRST_RELEASE: list[tuple[str, dict[str, Any]]] = [
    ("round", {"name": "spring", "start": date(2027, 3, 1), "cadence_days": 14}),
    ("participant", {"email": "ana@example.org", "name": "Ana Souza", "country": "BR"}),
    ("participant", {"email": "bo@example.org", "name": "Bo Mwangi", "country": "KE"}),
    ("partnership", {"round_id": 1}),
    ("membership", {"partnership_id": 1, "participant_id": 1, "round_id": 1, "position": 0}),
    ("membership", {"partnership_id": 1, "participant_id": 2, "round_id": 1, "position": 1}),
    ("topic", {"round_id": 1, "seq": 1, "source": "intro.md"}),
    ("topic_text", {"topic_id": 1, "language": "en", "title": "Intro", "body": "Hello."}),
    ("suppression", {"email": "gone@example.org", "reason": "smtp_5xx", "detail": "550"}),
    (
        "outbox",
        {
            "key": "topic/spring/1/1",
            "kind": "topic",
            "round_id": 1,
            "topic_id": 1,
            "partnership_id": 1,
            "participant_id": 1,
            "to_address": "ana@example.org",
            "reply_key": "k1",
            "message_id": "<m1@example.org>",
            "status": "sent",
            "due_at": datetime(2027, 3, 1, 8, tzinfo=UTC),
            "attempts": 1,
            "sent_at": datetime(2027, 3, 1, 8, 0, 5, tzinfo=UTC),
        },
    ),
]
DEFAULTS = {
    "participant": {
        "timezone": "UTC",
        "language": "en",
        "career_stage": "",
        "sector": "",
        "status": "active",
    },
    "round": {"status": "active"},
    "partnership": {"status": "active"},
}


def _fill(engine: Engine) -> dict[str, list[dict[str, Any]]]:
    """Insert FIRST_RELEASE through the schema the database has; returns the rows as read."""
    stamp = datetime(2027, 2, 1, 9, tzinfo=UTC)
    metadata = MetaData()
    with engine.begin() as connection:
        metadata.reflect(connection)
        for name, row in FIRST_RELEASE:
            table = metadata.tables[name]
            values = {**DEFAULTS.get(name, {}), **row}
            for column in ("created_at", "updated_at"):
                if column in table.columns:
                    values[column] = stamp
            connection.execute(insert(table).values(values))  # ids from the sequences
    return _read(engine, {name for name, _ in FIRST_RELEASE})


def _read(engine: Engine, names: set[str]) -> dict[str, list[dict[str, Any]]]:
    """Each table's rows in id order, their values as SQLite shows them."""
    metadata = MetaData()
    out: dict[str, list[dict[str, Any]]] = {}
    with engine.connect() as connection:
        metadata.reflect(connection, only=sorted(names))
        for name in sorted(names):
            table = metadata.tables[name]
            rows = connection.execute(select(table).order_by(table.c.id)).mappings()
            out[name] = [{k: plain(v) for k, v in row.items()} for row in rows]
    return out


@pytest.fixture
def empty_url(db: str, tmp_path: Path, postgres_database: Callable[..., str]) -> str:
    """The URL of a database without any schema, on the backend ``db``."""
    if db == "postgresql":
        return postgres_database(empty=True)
    return f"sqlite:///{tmp_path / 'old.db'}"


@pytest.mark.databases("sqlite", "postgresql")
def test_a_first_release_database_keeps_its_data_when_upgraded(
    empty_url: str, tmp_path: Path, cli: Cli
) -> None:
    """A database made at migration 0001 and holding data is upgraded to head, data intact."""
    engine = make_engine(empty_url)
    try:
        upgrade(engine, "0001")
        before = _fill(engine)
        assert current_revision(engine) == "0001"
        upgrade(engine)
        assert current_revision(engine) == head_revision()
        after = _read(engine, set(before))
    finally:
        engine.dispose()
    for name, rows in before.items():
        kept = [{k: new[k] for k in old} for new, old in zip(after[name], rows, strict=True)]
        assert kept == rows, name
    project = Project(tmp_path, tmp_path / "config.toml", tmp_path / "old.db", url=empty_url)
    project.write_config()
    # The upgraded database works: new rows take the next ids, old rows are read.
    (tmp_path / "more.csv").write_text(
        "email,name,country,timezone,language\ncy@example.org,Cy Ng,SG,Asia/Singapore,en\n",
        encoding="utf-8",
    )
    result = cli("--config", project.config, "import", "participants", tmp_path / "more.csv")
    assert result.code == 0, result.err
    assert project.rows("SELECT id, email FROM participant ORDER BY id") == [
        {"id": 1, "email": "ana@example.org"},
        {"id": 2, "email": "bo@example.org"},
        {"id": 3, "email": "cy@example.org"},
    ]
    assert project.scalar("SELECT payload FROM outbox") is None
    listing = cli("--config", project.config, "outbox")
    assert listing.code == 0, listing.err
    assert "sent 1" in listing.out
    project.close()


@pytest.mark.databases("postgresql")
def test_a_plain_postgresql_url_uses_psycopg_and_utc(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``postgresql://`` works like ``postgresql+psycopg://``; sessions read times in UTC."""
    monkeypatch.setenv("PGTZ", "Asia/Kolkata")  # a client zone that would otherwise apply
    engine = make_engine(project.url.replace("postgresql+psycopg://", "postgresql://"))
    try:
        assert engine.dialect.driver == "psycopg"
        with engine.connect() as connection:
            zone = connection.exec_driver_sql("SHOW TimeZone").scalar()
            value = connection.exec_driver_sql("SELECT TIMESTAMPTZ '2027-03-01 09:00+01'").scalar()
    finally:
        engine.dispose()
    assert zone == "UTC"
    assert value == datetime(2027, 3, 1, 8, tzinfo=UTC) and value.utcoffset() == timedelta(0)


@pytest.mark.databases("postgresql")
def test_a_claim_skips_a_row_another_process_is_claiming(project: Project) -> None:
    """A row locked by another transaction is passed over at once, not waited for; once that
    transaction ends the row is claimed, and only once."""
    now = datetime(2027, 3, 1, 23, tzinfo=UTC)
    with session_scope(project.engine) as session:
        assert outbox.enqueue(session, [_outbox_row(1, now)]) == 1
    [row_id] = [r["id"] for r in project.rows("SELECT id FROM outbox")]
    with project.engine.connect() as holder, project.engine.connect() as other:
        holder.execute(select(outbox.OUTBOX.c.id).with_for_update())  # mid-claim elsewhere
        other.exec_driver_sql("SET lock_timeout = '5s'")
        started = time.monotonic()
        assert outbox.claim(other, row_id, "other", now) is False
        assert time.monotonic() - started < 1
        other.rollback()
        holder.rollback()
        assert outbox.claim(other, row_id, "other", now) is True
        other.commit()
        assert outbox.claim(holder, row_id, "holder", now) is False
    [claimed] = project.rows("SELECT status, claimed_by, attempts FROM outbox")
    assert claimed == {"status": "sending", "claimed_by": "other", "attempts": 1}


def _outbox_row(n: int, now: datetime) -> dict[str, Any]:
    return {
        "key": f"topic/spring/1/{n}",
        "kind": "topic",
        "to_address": f"p{n}@example.org",
        "reply_key": f"k{n}",
        "message_id": f"<m{n}@example.org>",
        "status": "pending",
        "due_at": now,
        "attempts": 0,
        "created_at": now,
        "updated_at": now,
    }


@pytest.mark.databases("sqlite", "postgresql")
def test_enqueue_counts_only_the_new_keys(project: Project) -> None:
    """Queueing keys already there inserts nothing for them, and the count says so."""
    now = datetime(2027, 3, 1, 23, tzinfo=UTC)
    with session_scope(project.engine) as session:
        assert outbox.enqueue(session, [_outbox_row(n, now) for n in (1, 2)]) == 2
    with session_scope(project.engine) as session:
        assert outbox.enqueue(session, [_outbox_row(n, now) for n in (2, 3, 1, 4)]) == 2
    assert project.scalar("SELECT count(*) FROM outbox") == 4


@pytest.mark.databases("postgresql")
def test_a_job_lock_is_held_by_an_idle_session_and_excludes_another(project: Project) -> None:
    """The service's job lock (a session advisory lock) excludes a second holder of the same job
    and leaves its connection idle, not "idle in transaction", while the job runs; it is free
    again afterwards."""
    settings = load_config(project.config)
    one = Service(project.config, settings, project.engine, SECRET.encode())
    two = Service(project.config, settings, make_engine(project.url), SECRET.encode())
    states = (
        "SELECT state FROM pg_stat_activity a JOIN pg_locks l ON l.pid = a.pid"
        " WHERE l.locktype = 'advisory' AND l.granted"
    )
    try:
        with one._exclusive("daily") as mine:
            assert mine
            assert [r["state"] for r in project.rows(states)] == ["idle"]
            with two._exclusive("daily") as theirs, two._exclusive("report") as other_job:
                assert theirs is False and other_job is True
        assert project.rows(states) == []
        with two._exclusive("daily") as theirs:
            assert theirs
    finally:
        two.engine.dispose()
