"""Mail that must not go after a coordinator's action: `outbox retry` refuses rows for someone
paused or withdrawn, about a dissolved partnership or to a suppressed address; withdrawing,
pausing and dissolving cancel the rows held back for a person; topics that fall due while a
participant is paused are recorded as skipped at resume and never sent; the late note's words."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlmodel import Session

from mailer.outbox import retry_rows
from mailer.plan import duration_in_words, late_note
from program.errors import StateError, UsageError
from tests.conftest import Project, Result
from tests.smtp_server import SmtpTestServer

Cli = Callable[..., Result]

PEOPLE = [
    # email, name, country, zone
    ("zoe@example.net", "Zoë Whitfield", "NZ", "Pacific/Auckland"),
    ("kelsey@example.org", "Kelsey Morgan", "US", "America/New_York"),
    ("emily@example.org", "Emily Chen", "CA", "America/Toronto"),
    ("ana@example.org", "Ana Souza", "BR", "America/Sao_Paulo"),
    ("chinedu@example.org", "Chinedu Okafor", "NG", "Africa/Lagos"),
    ("priya@example.org", "Priya Nair", "IN", "Asia/Kolkata"),
]
# Partnerships 1 (Zoë, Kelsey), 2 (Emily, Ana) and 3 (Chinedu, Priya); participant ids 1 to 6.
PAIRS = [
    ("zoe@example.net", "kelsey@example.org"),
    ("emily@example.org", "ana@example.org"),
    ("chinedu@example.org", "priya@example.org"),
]
# The round starts on 12 April 2027; topic N is due 14 × (N - 1) days later, at 09:00 local:
# for Zoë (NZST, UTC+12) topic 1 at 2027-04-11 21:00Z, 2 at 04-25 21:00Z, 3 at 05-09 21:00Z,
# 4 at 05-23 21:00Z and 5 at 06-06 21:00Z; for Kelsey (EDT) at 13:00Z on the day itself.
START = "2027-04-12"
TOPICS = 5


def _setup(project: Project, cli: Cli, server: SmtpTestServer, extra: str = "") -> Cli:
    """The six people in three pairs, a round of five topics; returns `rapport ARGS...`."""
    project.write_config(extra, smtp_port=server.port)
    folder = project.dir
    (folder / "people.csv").write_text(
        "email,name,country,timezone,language\n"
        + "".join(f"{e},{n},{c},{z},en\n" for e, n, c, z in PEOPLE),
        encoding="utf-8",
    )
    (folder / "pairs.csv").write_text(
        "round,member_a,member_b\n" + "".join(f"spring,{a},{b}\n" for a, b in PAIRS),
        encoding="utf-8",
    )
    topics = folder / "topics"
    topics.mkdir()
    for order in range(1, TOPICS + 1):
        (topics / f"t{order}.md").write_text(
            f'+++\ntitle = "Topic {order}"\norder = {order}\n+++\nTalk about {order}.\n',
            encoding="utf-8",
        )

    def rapport(*args: Any) -> Result:
        return cli("--config", project.config, *args)

    for args in (
        ("import", "participants", folder / "people.csv"),
        ("round", "create", "spring", "--start", START),
        ("import", "partnerships", folder / "pairs.csv"),
        ("import", "topics", topics, "--round", "spring"),
    ):
        result = rapport(*args)
        assert result.code == 0, result.err
    return rapport


def _row(project: Project, key: str) -> dict[str, Any]:
    [row] = project.rows("SELECT * FROM outbox WHERE key = ?", key)
    return row


def _received(server: SmtpTestServer, address: str) -> int:
    return sum(address in m.recipients for m in server.handler.accepted)


def _refused(project: Project, rapport: Cli, row_id: int, code: int, message: str) -> None:
    """`outbox retry ROW` exits ``code`` with ``message`` and changes nothing."""
    before = project.dump()
    result = rapport("outbox", "retry", row_id, "--now", "2027-04-20T12:00:00Z")
    assert (result.code, result.out, result.err) == (code, "", f"rapport: {message}\n")
    assert project.dump() == before


@pytest.mark.databases("sqlite", "postgresql")
def test_withdrawal_cancels_the_late_row_and_retry_refuses_it(
    project: Project, cli: Cli, smtp_server: SmtpTestServer
) -> None:
    """A withdrawal cancels the person's late topic, which retry then refuses (exit 2)."""
    rapport = _setup(project, cli, smtp_server)
    # Three days after topic 1 was due: everyone's row is late (schedule.max_lateness = 2d).
    planned = rapport("send", "--now", "2027-04-15T12:00:00Z")
    assert planned.out.strip() == "planned 0 (6 late); sent 0"
    emily = _row(project, "topic/spring/1/3")
    assert emily["last_error"] == (
        "due 2027-04-12 13:00 UTC, more than 2 days late (schedule.max_lateness)"
    )
    withdraw = ("participant", "withdraw", "emily@example.org", "--reason", "moved")
    result = rapport(*withdraw, "--now", "2027-04-16T09:00:00Z")
    assert result.code == 0, result.err
    assert result.out.splitlines()[:2] == [
        "emily@example.org is now withdrawn (was active)",
        "cancelled 1 waiting outbox message",
    ]
    emily = _row(project, "topic/spring/1/3")
    assert (emily["status"], emily["last_error"]) == (
        "cancelled",
        "cancelled: emily@example.org withdrew on 2027-04-16 (moved); it was late:"
        " due 2027-04-12 13:00 UTC, more than 2 days late (schedule.max_lateness)",
    )
    _refused(
        project,
        rapport,
        emily["id"],
        2,
        f"outbox row {emily['id']}: emily@example.org is withdrawn and is sent nothing any more",
    )
    # A row from before this was cancelled on withdrawal is refused all the same.
    project.execute("UPDATE outbox SET status = 'late' WHERE id = ?", emily["id"])
    _refused(
        project,
        rapport,
        emily["id"],
        2,
        f"outbox row {emily['id']}: emily@example.org is withdrawn and is sent nothing any more",
    )
    # Her partner's late row is still theirs to send.
    ana = _row(project, "topic/spring/1/4")
    retried = rapport("outbox", "retry", ana["id"], "--now", "2027-04-16T10:00:00Z")
    assert retried.code == 0, retried.err
    sent = rapport("send", "--now", "2027-04-16T10:01:00Z")
    assert sent.out.strip() == "planned 0; sent 1"
    assert _received(smtp_server, "ana@example.org") == 1
    assert _received(smtp_server, "emily@example.org") == 0


@pytest.mark.databases("sqlite", "postgresql")
def test_dissolving_cancels_old_topics_and_retry_refuses_them(
    project: Project, cli: Cli, smtp_server: SmtpTestServer
) -> None:
    """After a dissolution and a re-match, the old partnership's topics are never retried."""
    rapport = _setup(project, cli, smtp_server)
    assert rapport("send", "--now", "2027-04-15T12:00:00Z").code == 0
    dissolved = rapport(
        "partnership", "dissolve", "1", "--reason", "no contact", "--now", "2027-04-16T09:00:00Z"
    )
    assert dissolved.out.splitlines()[:2] == [
        "partnership 1 in spring dissolved: no contact",
        "cancelled 2 waiting outbox messages",
    ]
    other = ("partnership", "dissolve", "3", "--reason", "no contact")
    assert rapport(*other, "--now", "2027-04-16T09:00:00Z").code == 0
    assert rapport("match", "suggest", "--now", "2027-04-16T09:00:00Z").code == 0
    applied = rapport("match", "apply", "--all", "--now", "2027-04-16T09:05:00Z")
    assert applied.code == 0 and "Kelsey Morgan" in applied.out, applied.err
    kelsey = _row(project, "topic/spring/1/2")
    assert (kelsey["status"], kelsey["partnership_id"]) == ("cancelled", 1)
    assert kelsey["last_error"].startswith(
        "cancelled: partnership 1 was dissolved on 2027-04-16 (no contact); it was late: due"
    )
    refusal = (
        f"outbox row {kelsey['id']}: partnership 1 was dissolved on 2027-04-16 (no contact);"
        " its mail is not sent any more"
    )
    _refused(project, rapport, kelsey["id"], 2, refusal)
    # A late row of the old partnership left from before dissolving cancelled it: refused too.
    project.execute("UPDATE outbox SET status = 'late' WHERE id = ?", kelsey["id"])
    _refused(project, rapport, kelsey["id"], 2, refusal)
    assert rapport("send", "--now", "2027-04-16T10:00:00Z").out.strip() == "planned 0; sent 0"
    assert smtp_server.handler.accepted == []


@pytest.mark.databases("sqlite", "postgresql")
def test_a_failed_row_is_retried_and_refusals_name_the_reason(
    project: Project, cli: Cli, smtp_server: SmtpTestServer
) -> None:
    """A failed row of an active pair is retried and sent; paused or suppressed ones are not."""
    rapport = _setup(project, cli, smtp_server, extra="[outbox]\nmax_attempts = 1\n")
    smtp_server.handler.reply("rcpt", "451 4.3.0 try later", recipient="ana@example.org", times=1)
    assert rapport("send", "--now", "2027-04-12T23:00:00Z").out.strip() == (
        "planned 6; sent 5, 1 failed"
    )
    ana = _row(project, "topic/spring/1/4")
    assert ana["status"] == "failed"
    retried = rapport("outbox", "retry", ana["id"], "--now", "2027-04-13T09:00:00Z")
    assert retried.code == 0, retried.err
    assert retried.out == (
        f"outbox row {ana['id']}: was failed, now pending; the next `rapport send` sends it\n"
    )
    assert rapport("send", "--now", "2027-04-13T09:01:00Z").out.strip() == "planned 0; sent 1"
    assert _received(smtp_server, "ana@example.org") == 1

    # Rows held back before this version cancelled them, for someone paused or suppressed.
    priya = _row(project, "topic/spring/1/6")
    project.execute("UPDATE outbox SET status = 'failed' WHERE id = ?", priya["id"])
    project.execute("UPDATE participant SET status = 'paused' WHERE id = 6")
    _refused(
        project,
        rapport,
        priya["id"],
        2,
        f"outbox row {priya['id']}: priya@example.org is paused, and a paused participant is"
        " sent nothing; after `rapport participant resume` the next topic goes out, not the"
        " missed ones",
    )
    project.execute("UPDATE participant SET status = 'active' WHERE id = 6")
    project.execute(
        "INSERT INTO suppression (email, reason, detail, created_at)"
        " VALUES ('priya@example.org', 'bounce', '', '2027-04-13 00:00:00.000000')"
    )
    _refused(
        project,
        rapport,
        priya["id"],
        2,
        f"outbox row {priya['id']}: priya@example.org is suppressed (it bounced, was refused or"
        " unsubscribed); if it works now, lift it first with"
        " `rapport participant unsuppress priya@example.org`",
    )
    # A sent row is still refused as before, and says so.
    zoe = _row(project, "topic/spring/1/1")
    result = rapport("outbox", "retry", zoe["id"])
    assert result.code == 1 and f"outbox row {zoe['id']} is sent;" in result.err


@pytest.mark.databases("sqlite", "postgresql")
def test_retrying_several_rows_is_all_or_nothing(
    project: Project, cli: Cli, smtp_server: SmtpTestServer
) -> None:
    """One refused row among several refuses them all, listing every reason; nothing changes."""
    rapport = _setup(project, cli, smtp_server)
    assert rapport("send", "--now", "2027-04-15T12:00:00Z").code == 0
    paused = rapport("participant", "pause", "kelsey@example.org", "--now", "2027-04-16T09:00:00Z")
    assert paused.code == 0, paused.err
    ids = [_row(project, f"topic/spring/1/{p}")["id"] for p in (3, 2, 4)]  # Emily, Kelsey, Ana
    before = project.dump()
    with Session(project.engine) as session:
        with pytest.raises(UsageError) as refused:
            retry_rows(session, [*ids, 99], datetime(2027, 4, 16, 10, tzinfo=UTC))
        # Checked before anything was written, even in this transaction.
        statuses = session.connection().exec_driver_sql("SELECT status FROM outbox").scalars()
        assert set(statuses) == {"late", "cancelled"}
        session.rollback()
    assert str(refused.value) == (
        "nothing retried:\n"
        f"outbox row {ids[1]}: kelsey@example.org is paused, and a paused participant is sent"
        " nothing; after `rapport participant resume` the next topic goes out, not the missed"
        " ones\n"
        "outbox row 99: no such row"
    )
    assert project.dump() == before
    # Active again (set by hand: resuming would not bring her cancelled row back either).
    project.execute("UPDATE participant SET status = 'active' WHERE id = 2")
    with Session(project.engine) as session, pytest.raises(StateError) as cancelled:
        retry_rows(session, [ids[0], ids[1]], datetime(2027, 4, 17, tzinfo=UTC))
    assert str(cancelled.value).startswith(
        f"nothing retried:\noutbox row {ids[1]} is cancelled (cancelled: kelsey@example.org"
        " paused on 2027-04-16; it was late: due 2027-04-12 13:00 UTC,"
    )
    before = project.dump()
    refused_cli = rapport("outbox", "retry", *ids, "--now", "2027-04-17T10:00:00Z")
    assert refused_cli.code == 1 and refused_cli.err.startswith("rapport: nothing retried:\n")
    assert project.dump() == before
    retried = rapport("outbox", "retry", ids[0], ids[2], ids[0], "--now", "2027-04-17T10:00:00Z")
    assert retried.code == 0, retried.err
    assert retried.out.splitlines() == [
        f"outbox row {i}: was late, now pending; the next `rapport send` sends it"
        for i in (ids[0], ids[2])
    ]
    assert [_row(project, f"topic/spring/1/{p}")["status"] for p in (3, 2, 4)] == [
        "pending",
        "cancelled",
        "pending",
    ]


@pytest.mark.databases("sqlite", "postgresql")
def test_topics_due_during_a_pause_are_skipped(
    project: Project, cli: Cli, smtp_server: SmtpTestServer
) -> None:
    """Topics due while paused are recorded cancelled once at resume, never sent; the next is."""
    rapport = _setup(project, cli, smtp_server)
    assert rapport("send", "--now", "2027-04-12T23:00:00Z").out.strip() == "planned 6; sent 6"
    paused = rapport("participant", "pause", "zoe@example.net", "--now", "2027-04-25T12:00:00Z")
    assert paused.out.splitlines()[1] == "cancelled 0 waiting outbox messages"
    # Her topic 2 falls due at 2027-04-25 21:00Z, while she is paused: nothing is planned.
    assert rapport("send", "--now", "2027-04-25T21:30:00Z").out.strip() == "planned 0; sent 0"
    resumed = rapport("participant", "resume", "zoe@example.net", "--now", "2027-04-26T11:00:00Z")
    assert resumed.code == 0, resumed.err
    assert resumed.out == (
        "zoe@example.net is now active (was paused)\n"
        "skipped 1 topic that fell due during the pause (`rapport outbox --status cancelled`"
        " lists them); the next one goes out as usual\n"
        "noted on partnership 1\n"
    )
    skipped = _row(project, "topic/spring/2/1")
    assert {k: skipped[k] for k in ("status", "due_at", "partnership_id", "attempts")} == {
        "status": "cancelled",
        "due_at": "2027-04-25 21:00:00.000000",
        "partnership_id": 1,
        "attempts": 0,
    }
    assert skipped["last_error"] == (
        "skipped: due while paused (paused on 2027-04-25, resumed on 2027-04-26)"
    )
    assert skipped["reply_key"] and skipped["message_id"].endswith("@example.org>")
    # Not a problem to report, not sent, not made late: the others get topic 2 as usual.
    report = rapport("outbox")
    assert report.out.splitlines() == [
        "pending 0  sending 0  sent 6  retry 0  failed 0  uncertain 0  suppressed 0  late 0"
        "  cancelled 1"
    ]
    assert rapport("send", "--now", "2027-04-26T23:00:00Z").out.strip() == "planned 5; sent 5"
    assert _received(smtp_server, "zoe@example.net") == 1
    refused = rapport("outbox", "retry", skipped["id"], "--now", "2027-04-27T00:00:00Z")
    assert refused.code == 1 and refused.err == (
        f"rapport: outbox row {skipped['id']} is cancelled (skipped: due while paused (paused on"
        " 2027-04-25, resumed on 2027-04-26)); only uncertain, failed, late, suppressed, retry"
        " rows can be retried\n"
    )
    # Topic 3 reaches her at its own instant.
    assert rapport("send", "--now", "2027-05-09T21:00:00Z").out.strip() == "planned 1; sent 1"
    topic3 = _row(project, "topic/spring/3/1")
    assert (topic3["status"], topic3["sent_at"]) == ("sent", "2027-05-09 21:00:00.000000")

    # A long pause over topics 4 and 5: both skipped, none late; then a pause and resume with
    # nothing due in between, and a resume of someone active, add no row.
    rapport("participant", "pause", "zoe@example.net", "--now", "2027-05-10T00:00:00Z")
    again = rapport("participant", "resume", "zoe@example.net", "--now", "2027-06-08T00:00:00Z")
    assert again.out.splitlines()[1].startswith("skipped 2 topics that fell due during the pause")
    rows = project.rows("SELECT key, status, last_error FROM outbox WHERE participant_id = 1")
    assert sorted((r["key"], r["status"]) for r in rows) == [
        ("topic/spring/1/1", "sent"),
        ("topic/spring/2/1", "cancelled"),
        ("topic/spring/3/1", "sent"),
        ("topic/spring/4/1", "cancelled"),
        ("topic/spring/5/1", "cancelled"),
    ]
    assert {r["last_error"] for r in rows if r["key"] >= "topic/spring/4"} == {
        "skipped: due while paused (paused on 2027-05-10, resumed on 2027-06-08)"
    }
    rapport("participant", "pause", "zoe@example.net", "--now", "2027-06-08T01:00:00Z")
    quiet = rapport("participant", "resume", "zoe@example.net", "--now", "2027-06-08T02:00:00Z")
    assert "skipped" not in quiet.out
    again = rapport("participant", "resume", "zoe@example.net", "--now", "2027-06-09T00:00:00Z")
    assert again.out == "zoe@example.net is already active; nothing changed\n"
    assert project.scalar("SELECT count(*) FROM outbox WHERE participant_id = 1") == 5
    # The others' topics 3 and 4 are late by now, their topic 5 is not; hers are all settled.
    result = rapport("send", "--now", "2027-06-09T00:00:00Z")
    assert result.out.strip() == "planned 5 (10 late); sent 5"
    assert project.scalar("SELECT count(*) FROM outbox WHERE participant_id = 1") == 5
    assert _received(smtp_server, "zoe@example.net") == 2


@pytest.mark.databases("sqlite", "postgresql")
def test_resuming_before_the_due_instant_skips_nothing(
    project: Project, cli: Cli, smtp_server: SmtpTestServer
) -> None:
    """A pause that ends before a topic's instant skips nothing: the topic goes out on time."""
    rapport = _setup(project, cli, smtp_server)
    assert rapport("send", "--now", "2027-04-12T23:00:00Z").out.strip() == "planned 6; sent 6"
    rapport("participant", "pause", "kelsey@example.org", "--now", "2027-04-26T10:00:00Z")
    resumed = rapport(
        "participant", "resume", "kelsey@example.org", "--now", "2027-04-26T12:59:00Z"
    )
    assert "skipped" not in resumed.out
    assert project.scalar("SELECT count(*) FROM outbox WHERE participant_id = 2") == 1
    rapport("send", "--now", "2027-04-26T13:00:00Z")
    topic2 = _row(project, "topic/spring/2/2")
    assert (topic2["status"], topic2["sent_at"]) == ("sent", "2027-04-26 13:00:00.000000")


def test_a_rehearsal_skips_its_own_rows_too(
    project: Project, cli: Cli, smtp_server: SmtpTestServer
) -> None:
    """During a rehearsal, resume records the real and the rehearsal's rows as skipped."""
    rapport = _setup(project, cli, smtp_server, extra='redirect_all_to = "me@example.org"\n')
    rapport("participant", "pause", "zoe@example.net", "--now", "2027-04-11T00:00:00Z")
    rapport("participant", "resume", "zoe@example.net", "--now", "2027-04-12T00:00:00Z")
    assert [
        (r["key"], r["status"]) for r in project.rows("SELECT key, status FROM outbox ORDER BY key")
    ] == [("rehearsal/topic/spring/1/1", "cancelled"), ("topic/spring/1/1", "cancelled")]
    assert rapport("send", "--now", "2027-04-12T23:00:00Z").out.strip() == "planned 5; sent 5"


@pytest.mark.parametrize(
    ("lateness", "words"),
    [
        (timedelta(days=2), "2 days"),
        (timedelta(days=1), "1 day"),
        (timedelta(hours=36), "1 day and 12 hours"),
        (timedelta(minutes=90), "1 hour and 30 minutes"),
        (timedelta(days=1, minutes=1, seconds=5), "1 day, 1 minute and 5 seconds"),
        (timedelta(seconds=45), "45 seconds"),
        (timedelta(0), "0 seconds"),
    ],
)
def test_durations_in_words(lateness: timedelta, words: str) -> None:
    """Durations are written in days, hours, minutes and seconds, largest first."""
    assert duration_in_words(lateness) == words


def test_the_late_note_reads_as_a_sentence() -> None:
    """A late row's note names when it was due and the setting it is late by."""
    due = datetime(2027, 4, 12, 4, 30, tzinfo=UTC)
    assert late_note(due, timedelta(days=2)) == (
        "due 2027-04-12 04:30 UTC, more than 2 days late (schedule.max_lateness)"
    )
    assert late_note(due, timedelta(hours=36)) == (
        "due 2027-04-12 04:30 UTC, more than 1 day and 12 hours late (schedule.max_lateness)"
    )
