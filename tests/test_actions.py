"""Coordinators' actions through the CLI: partnership show|note|dissolve, participant
pause|resume|withdraw, match suggest|apply.  Each checks the exact output, the database and the
outbox; each refusal exits with its code and message and leaves the database as it was."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import Project, Result

pytestmark = pytest.mark.databases("sqlite", "postgresql")

Cli = Callable[..., Result]
ROUND = "2027-spring"
NOW = "2027-03-10T09:00:00+00:00"
LATER = "2027-03-11T10:30:00+00:00"
PEOPLE = (
    "email,name,country,timezone,language,career_stage,sector,interests\n"
    "ann@example.org,Ann Dupont,FR,Europe/Paris,fr,mid career,academic,cataloguing; open access\n"
    "bob@example.org,Bob Tane,NZ,Pacific/Auckland,en,early career,public,reading clubs\n"
    "chiara@example.org,Chiara Rossi,IT,Europe/Rome,en,mid career,Academic,Open Access\n"
    "dev@example.org,Dev Patel,IN,Asia/Kolkata,en,early career,academic,cataloguing\n"
    "emma@example.org,Emma Martin,FR,Europe/Paris,fr,,,\n"
    "gus@example.org,Gustavo Lima,BR,America/Sao_Paulo,es,,,\n"
)
# Partnerships 1 (Ann, Bob), 2 (Chiara, Dev) and 3 (Emma, Gus).
PAIRS = (
    "round,member_a,member_b\n"
    f"{ROUND},ann@example.org,bob@example.org\n"
    f"{ROUND},chiara@example.org,dev@example.org\n"
    f"{ROUND},emma@example.org,gus@example.org\n"
)


@pytest.fixture
def run(project: Project, cli: Cli) -> Cli:
    """`rapport --config <project> ARGS...` on a project with six people in three pairs."""
    (project.dir / "people.csv").write_text(PEOPLE, encoding="utf-8")
    (project.dir / "pairs.csv").write_text(PAIRS, encoding="utf-8")
    for args in (
        ("import", "participants", project.dir / "people.csv"),
        ("round", "create", ROUND, "--start", "2027-03-01"),
        ("import", "partnerships", project.dir / "pairs.csv"),
    ):
        result = cli(
            "--config", project.config, *args, *(["--now", NOW] if args[0] != "round" else [])
        )
        assert result.code == 0, result.err

    def rapport(*args: Any) -> Result:
        return cli("--config", project.config, *args)

    return rapport


def query(project: Project, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    return [tuple(row.values()) for row in project.rows(sql, *params)]


def queue(project: Project, key: str, kind: str, partnership: int, who: str, status: str) -> None:
    """An outbox row for participant ``who`` (an email) in partnership ``partnership``."""
    sent = "2027-03-08 08:00:00.000000" if status == "sent" else None
    project.execute(
        "INSERT INTO outbox (key, kind, round_id, partnership_id, participant_id, to_address,"
        " reply_key, message_id, status, due_at, attempts, sent_at, created_at, updated_at)"
        " SELECT ?, ?, 1, ?, id, email, ?, ?, ?, '2027-03-08 08:00:00.000000', 0, ?,"
        " '2027-03-08 07:00:00.000000', '2027-03-08 07:00:00.000000'"
        " FROM participant WHERE email = ?",
        *(key, kind, partnership, key, f"<{key}@example.org>", status, sent, who),
    )


def outbox(project: Project) -> list[tuple[Any, ...]]:
    return query(project, "SELECT key, status, last_error FROM outbox ORDER BY id")


def refused(project: Project, run: Cli, args: tuple[Any, ...], code: int, message: str) -> None:
    """``rapport ARGS`` exits ``code`` with ``message`` on stderr and changes nothing."""
    before = project.dump()
    result = run(*args)
    assert (result.code, result.out, result.err) == (code, "", f"rapport: {message}\n")
    assert project.dump() == before


def test_note_is_kept(project: Project, run: Cli) -> None:
    """partnership note stores the stripped text with the time and says so."""
    result = run("partnership", "note", "1", "  Ann asked for a call in April  ", "--now", NOW)
    assert (result.code, result.out) == (0, "note added to partnership 1\n")
    assert query(project, "SELECT partnership_id, text, created_at FROM partnership_note") == [
        (1, "Ann asked for a call in April", "2027-03-10 09:00:00.000000")
    ]


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("1", "line one\nline two"), 2, "note: control characters are not allowed (U+000A);"),
        (("1", "bell\x07"), 2, "note: control characters are not allowed (U+0007);"),
        (("1", "ok \u202egnorw"), 2, "note: control characters are not allowed (U+202E);"),
        (("1", "x" * 1001), 2, "note: 1001 characters; at most 1000"),
        (("1", "   "), 2, "note: empty; say in a few words what it is about"),
        (("99", "hello"), 2, "partnership 99: no such partnership"),
    ],
    ids=["newline", "bell", "rtl-override", "too-long", "empty", "unknown"],
)
def test_bad_notes_are_refused(
    project: Project, run: Cli, args: tuple[str, str], code: int, message: str
) -> None:
    """A note with control characters, too long, empty or on no partnership is refused."""
    before = project.dump()
    result = run("partnership", "note", *args, "--now", NOW)
    assert result.code == code and result.err.startswith(f"rapport: {message}")
    assert result.out == "" and project.dump() == before


def test_dissolve_cancels_waiting_mail(project: Project, run: Cli) -> None:
    """dissolve ends the partnership, cancels its waiting rows only, and names who is alone."""
    queue(project, "topic/2027-spring/1/1", "topic", 1, "ann@example.org", "sent")
    queue(project, "topic/2027-spring/2/1", "topic", 1, "ann@example.org", "pending")
    queue(project, "nudge/1/1", "nudge", 1, "bob@example.org", "retry")
    queue(project, "topic/2027-spring/2/3", "topic", 2, "chiara@example.org", "pending")
    result = run("partnership", "dissolve", "1", "--reason", "never got in touch", "--now", NOW)
    assert result.code == 0, result.err
    assert result.out == (
        "partnership 1 in 2027-spring dissolved: never got in touch\n"
        "cancelled 2 waiting outbox messages\n"
        "now without a partner:\n"
        "  Ann Dupont <ann@example.org> (FR)\n"
        "  Bob Tane <bob@example.org> (NZ)\n"
        "to propose new partners: rapport match suggest --round 2027-spring\n"
    )
    assert query(
        project, "SELECT id, status, ended_at, ended_reason FROM partnership ORDER BY id"
    ) == [
        (1, "dissolved", "2027-03-10 09:00:00.000000", "never got in touch"),
        (2, "active", None, ""),
        (3, "active", None, ""),
    ]
    why = "cancelled: partnership 1 was dissolved on 2027-03-10 (never got in touch)"
    assert outbox(project) == [
        ("topic/2027-spring/1/1", "sent", None),
        ("topic/2027-spring/2/1", "cancelled", why),
        ("nudge/1/1", "cancelled", why),
        ("topic/2027-spring/2/3", "pending", None),
    ]
    # The memberships stay, as history.
    assert query(project, "SELECT count(*) FROM membership WHERE partnership_id = 1") == [(2,)]
    listed = run("outbox", "--status", "cancelled")
    assert listed.code == 0 and listed.out.count("cancelled") == 4  # two rows, status and note

    refused(
        project,
        run,
        ("partnership", "dissolve", "1", "--reason", "again", "--now", LATER),
        1,
        "partnership 1 is already dissolved on 2027-03-10 (never got in touch)",
    )


def test_dissolve_refusals(project: Project, run: Cli) -> None:
    """An unknown, ended or badly explained dissolution is refused and changes nothing."""
    refused(
        project,
        run,
        ("partnership", "dissolve", "7", "--reason", "gone", "--now", NOW),
        2,
        "partnership 7: no such partnership",
    )
    refused(
        project,
        run,
        ("partnership", "dissolve", "2", "--reason", "a\tb", "--now", NOW),
        2,
        "--reason: control characters are not allowed (U+0009); write one line",
    )
    project.execute("UPDATE partnership SET status = 'ended' WHERE id = 3")
    refused(
        project,
        run,
        ("partnership", "dissolve", "3", "--reason", "gone", "--now", NOW),
        1,
        "partnership 3 is already ended",
    )


def test_dissolving_after_everyone_withdrew(project: Project, run: Cli) -> None:
    """Dissolving a partnership whose members all withdrew leaves no one alone, and says so."""
    for who in ("emma@example.org", "gus@example.org"):
        assert run("participant", "withdraw", who, "--now", NOW).code == 0
    result = run("partnership", "dissolve", "3", "--reason", "both left", "--now", NOW)
    assert result.out.splitlines()[-1] == (
        "no one is left without a partner: every member had withdrawn"
    )


def test_show(project: Project, run: Cli) -> None:
    """partnership show prints members, its health now, notes and the partnership's mail."""
    empty = run("partnership", "show", "2", "--now", NOW)
    assert empty.code == 0
    assert empty.out == (
        "partnership 2 in 2027-spring: active, matched 2027-03-10 09:00 UTC\n"
        "\n"
        "member        email               country  zone          status\n"
        "Chiara Rossi  chiara@example.org  IT       Europe/Rome   active\n"
        "Dev Patel     dev@example.org     IN       Asia/Kolkata  active\n"
        "\n"
        "health now: starting, score 0, since 2027-03-10 09:00 UTC\n"
        "  - Started on 10 March; no contact confirmed yet\n"
        "\n"
        "notes: none\n"
        "\n"
        "outbox: nothing planned yet\n"
    )
    queue(project, "topic/2027-spring/1/1", "topic", 1, "ann@example.org", "sent")
    queue(project, "topic/2027-spring/1/2", "topic", 1, "bob@example.org", "pending")
    assert run("partnership", "note", "1", "Ann is travelling", "--now", NOW).code == 0
    assert run("participant", "pause", "ann@example.org", "--now", LATER).code == 0
    shown = run("partnership", "show", "1", "--now", LATER)
    assert shown.code == 0, shown.err
    assert shown.out == (
        "partnership 1 in 2027-spring: active, matched 2027-03-10 09:00 UTC\n"
        "\n"
        "member      email            country  zone              status\n"
        "Ann Dupont  ann@example.org  FR       Europe/Paris      paused\n"
        "Bob Tane    bob@example.org  NZ       Pacific/Auckland  active\n"
        "\n"
        "health now: starting, score 0, since 2027-03-10 09:00 UTC\n"
        "  - Started on 10 March; no contact confirmed yet\n"
        "  - Ann (FR) is paused\n"
        "\n"
        "notes:\n"
        "  2027-03-10 09:00  Ann is travelling\n"
        "  2027-03-11 10:30  Ann Dupont paused\n"
        "\n"
        "outbox  kind   status   due (UTC)         sent (UTC)        to\n"
        "1       topic  sent     2027-03-08 08:00  2027-03-08 08:00  ann@example.org\n"
        "2       topic  pending  2027-03-08 08:00  -                 bob@example.org\n"
    )
    assert run("partnership", "dissolve", "1", "--reason", "Ann is away", "--now", LATER).code == 0
    lines = run("partnership", "show", "1", "--now", LATER).out.splitlines()
    assert lines[:2] == [
        "partnership 1 in 2027-spring: dissolved, matched 2027-03-10 09:00 UTC",
        "dissolved 2027-03-11 10:30 UTC: Ann is away",
    ]
    assert "health now: dissolved, score 0, since 2027-03-11 10:30 UTC" in lines
    refused(project, run, ("partnership", "show", "5"), 2, "partnership 5: no such partnership")


def test_pause_and_resume(project: Project, run: Cli) -> None:
    """pause cancels the person's waiting mail and notes why; resume undoes the status only."""
    queue(project, "topic/2027-spring/1/1", "topic", 1, "ann@example.org", "pending")
    queue(project, "topic/2027-spring/1/2", "topic", 1, "bob@example.org", "pending")
    result = run(
        "participant", "pause", "Ann@Example.org", "--reason", "on leave until May", "--now", NOW
    )
    assert result.code == 0, result.err
    assert result.out == (
        "ann@example.org is now paused (was active)\n"
        "cancelled 1 waiting outbox message\n"
        "noted on partnership 1\n"
    )
    assert query(project, "SELECT status FROM participant WHERE id = 1") == [("paused",)]
    assert outbox(project) == [
        (
            "topic/2027-spring/1/1",
            "cancelled",
            "cancelled: ann@example.org paused on 2027-03-10 (on leave until May)",
        ),
        ("topic/2027-spring/1/2", "pending", None),
    ]
    again = run("participant", "pause", "ann@example.org", "--now", LATER)
    assert again.out == "ann@example.org is already paused; nothing changed\n"
    resumed = run("participant", "resume", "ann@example.org", "--now", LATER)
    assert resumed.out == "ann@example.org is now active (was paused)\nnoted on partnership 1\n"
    assert run("participant", "resume", "ann@example.org", "--now", LATER).out == (
        "ann@example.org is already active; nothing changed\n"
    )
    assert query(project, "SELECT partnership_id, text FROM partnership_note ORDER BY id") == [
        (1, "Ann Dupont paused: on leave until May"),
        (1, "Ann Dupont resumed"),
    ]
    # The cancelled row stays cancelled: a pause means those topics are missed.
    assert outbox(project)[0][1] == "cancelled"
    assert query(project, "SELECT status, updated_at FROM participant WHERE id = 1") == [
        ("active", "2027-03-11 10:30:00.000000")
    ]


@pytest.mark.parametrize(
    ("args", "why"),
    [
        (
            ("participant", "pause", "ann@example.org"),
            "cancelled: ann@example.org paused on 2027-03-10",
        ),
        (
            ("participant", "withdraw", "ann@example.org"),
            "cancelled: ann@example.org withdrew on 2027-03-10",
        ),
        (
            ("partnership", "dissolve", "1", "--reason", "gone"),
            "cancelled: partnership 1 was dissolved on 2027-03-10 (gone)",
        ),
    ],
    ids=["pause", "withdraw", "dissolve"],
)
def test_rows_held_for_a_person_are_cancelled_too(
    project: Project, run: Cli, args: tuple[str, ...], why: str
) -> None:
    """Late, failed and suppressed rows never reached anyone: cancelled, their note kept after
    the reason; sent, sending and uncertain ones may have, and are left alone."""
    states = ("sent", "sending", "uncertain", "late", "failed", "suppressed", "pending", "retry")
    for n, status in enumerate(states, start=1):
        queue(project, f"topic/2027-spring/{n}/1", "topic", 1, "ann@example.org", status)
    project.execute("UPDATE outbox SET last_error = 'was ' || status WHERE status <> 'sent'")
    result = run(*args, "--now", NOW)
    assert result.code == 0, result.err
    assert "cancelled 5 waiting outbox messages\n" in result.out
    assert [(status, note) for _key, status, note in outbox(project)] == [
        ("sent", None),
        ("sending", "was sending"),
        ("uncertain", "was uncertain"),
        ("cancelled", f"{why}; it was late: was late"),
        ("cancelled", f"{why}; it was failed: was failed"),
        ("cancelled", f"{why}; it was suppressed: was suppressed"),
        ("cancelled", why),
        ("cancelled", why),
    ]


def test_withdraw_is_final_and_leaves_the_partner_alone(project: Project, run: Cli) -> None:
    """withdraw cancels mail, names the partner left alone; a withdrawal cannot be undone."""
    queue(project, "nudge/1/1", "nudge", 1, "bob@example.org", "retry")
    result = run("participant", "withdraw", "bob@example.org", "--reason", "new job", "--now", NOW)
    assert result.code == 0, result.err
    assert result.out == (
        "bob@example.org is now withdrawn (was active)\n"
        "cancelled 1 waiting outbox message\n"
        "noted on partnership 1\n"
        "now without a partner in 2027-spring: Ann Dupont <ann@example.org> (FR)\n"
        "to propose new partners: rapport match suggest --round 2027-spring\n"
    )
    assert outbox(project) == [
        ("nudge/1/1", "cancelled", "cancelled: bob@example.org withdrew on 2027-03-10 (new job)")
    ]
    assert query(project, "SELECT text FROM partnership_note") == [("Bob Tane withdrew: new job",)]
    final = "bob@example.org has withdrawn; a withdrawal is final, so they cannot be"
    refused(
        project,
        run,
        ("participant", "pause", "bob@example.org", "--now", LATER),
        1,
        f"{final} paused",
    )
    refused(
        project,
        run,
        ("participant", "resume", "bob@example.org", "--now", LATER),
        1,
        f"{final} resumed",
    )
    again = run("participant", "withdraw", "bob@example.org", "--now", LATER)
    assert again.out == "bob@example.org is already withdrawn; nothing changed\n"
    # A paused participant may withdraw.
    assert run("participant", "pause", "dev@example.org", "--now", NOW).code == 0
    assert run("participant", "withdraw", "dev@example.org", "--now", LATER).out.startswith(
        "dev@example.org is now withdrawn (was paused)\n"
    )


def test_participant_refusals(project: Project, run: Cli) -> None:
    """An unknown participant, or a reason with control characters, is refused (exit 2)."""
    refused(
        project,
        run,
        ("participant", "pause", "nobody@example.org", "--now", NOW),
        2,
        "participant nobody@example.org: not found",
    )
    refused(
        project,
        run,
        ("participant", "withdraw", "ann@example.org", "--reason", "\x1b[31mred", "--now", NOW),
        2,
        "--reason: control characters are not allowed (U+001B); write one line",
    )


def test_suggest_and_apply(project: Project, run: Cli) -> None:
    """suggest proposes cross-border pairs with reasons; apply makes one a partnership."""
    assert run("match", "suggest", "--now", NOW).out == "no one is left alone in 2027-spring\n"
    for pid in ("1", "2"):
        assert run("partnership", "dissolve", pid, "--reason", "silent", "--now", NOW).code == 0
    result = run("match", "suggest", "--now", NOW)
    assert result.code == 0, result.err
    assert result.out == (
        "id  partners                             score  why\n"
        "1   Ann Dupont (FR) + Chiara Rossi (IT)  70     both work in the academic sector;"
        " both mid career; shared interest: open access; same time of day\n"
        "2   Bob Tane (NZ) + Dev Patel (IN)       23     both early career; 7.5 h apart\n"
        "to make them partnerships: rapport match apply ID... (or --all)\n"
    )
    # Suggesting again replaces the open proposals.
    again = run("match", "suggest", "--round", ROUND, "--json", "--now", NOW)
    assert again.code == 0 and again.err == ""
    records = [json.loads(line) for line in again.out.splitlines()]
    assert records[0] == {
        "id": 3,
        "round": ROUND,
        "members": [
            {"email": "ann@example.org", "name": "Ann Dupont", "country": "FR"},
            {"email": "chiara@example.org", "name": "Chiara Rossi", "country": "IT"},
        ],
        "score": 70,
        "reasons": [
            "both work in the academic sector",
            "both mid career",
            "shared interest: open access",
            "same time of day",
        ],
    }
    assert [r["id"] for r in records] == [3, 4]
    assert query(project, "SELECT id, status FROM match_proposal ORDER BY id") == [
        (1, "dropped"),
        (2, "dropped"),
        (3, "proposed"),
        (4, "proposed"),
    ]
    refused(
        project,
        run,
        ("match", "apply", "1", "--now", NOW),
        1,
        "proposal 1 was replaced by a later `rapport match suggest`; apply one of the new"
        " proposals",
    )
    applied = run("match", "apply", "3", "--now", LATER)
    assert applied.code == 0, applied.err
    assert applied.out == (
        "proposal 3: Ann Dupont <ann@example.org> (FR) and Chiara Rossi <chiara@example.org> (IT)"
        " are now partnership 4 in 2027-spring\n"
    )
    assert query(project, "SELECT id, round_id, status FROM partnership WHERE id = 4") == [
        (4, 1, "active")
    ]
    assert query(
        project,
        "SELECT p.email, m.position, m.round_id FROM membership m"
        " JOIN participant p ON p.id = m.participant_id WHERE partnership_id = 4 ORDER BY position",
    ) == [("ann@example.org", 0, 1), ("chiara@example.org", 1, 1)]
    assert query(
        project, "SELECT id, status, partnership_id FROM match_proposal WHERE id > 2 ORDER BY id"
    ) == [
        (3, "applied", 4),
        (4, "proposed", None),
    ]
    refused(
        project,
        run,
        ("match", "apply", "3", "--now", LATER),
        1,
        "proposal 3 is already applied (partnership 4)",
    )
    rest = run("match", "apply", "--all", "--now", LATER)
    assert rest.out.startswith("proposal 4: Bob Tane <bob@example.org> (NZ) and Dev Patel")
    assert run("match", "apply", "--all", "--now", LATER).out == (
        "no open proposals; run `rapport match suggest` first\n"
    )
    assert run("match", "suggest", "--now", LATER).out == "no one is left alone in 2027-spring\n"
    # The re-matched pair gets mail through the new partnership: the planner sees it active.
    assert query(
        project, "SELECT count(*) FROM partnership WHERE status = 'active' AND round_id = 1"
    ) == [(3,)]


def test_apply_is_all_or_nothing(project: Project, run: Cli) -> None:
    """A proposal whose member is no longer alone refuses the whole batch, writing nothing."""
    for pid in ("1", "2"):
        run("partnership", "dissolve", pid, "--reason", "silent", "--now", NOW)
    run("match", "suggest", "--now", NOW)
    run("participant", "pause", "chiara@example.org", "--now", NOW)
    refused(
        project,
        run,
        ("match", "apply", "--all", "--now", LATER),
        1,
        "nothing applied:\nproposal 1: chiara@example.org is paused now;"
        " run `rapport match suggest` again",
    )


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("apply",), 2, "match apply: give the proposal ids to apply, or --all"),
        (("apply", "1", "--all"), 2, "match apply: give proposal ids or --all, not both"),
        (("apply", "9"), 2, "proposal 9: no such proposal"),
        (("suggest", "--round", "nope"), 2, "round nope: no such round (see `rapport round list`)"),
    ],
    ids=["nothing", "both", "unknown", "no-round"],
)
def test_match_refusals(
    project: Project, run: Cli, args: tuple[str, ...], code: int, message: str
) -> None:
    """Bad match commands exit 2 with a clear message and change nothing."""
    refused(project, run, ("match", *args, "--now", NOW), code, message)


def test_partners_who_withdrew_are_replaced(project: Project, run: Cli) -> None:
    """Those whose partners withdrew are re-matched; their old partnership is dissolved."""
    queue(project, "topic/2027-spring/2/1", "topic", 1, "ann@example.org", "pending")
    for who in ("bob@example.org", "dev@example.org"):
        assert run("participant", "withdraw", who, "--now", NOW).code == 0
    suggested = run("match", "suggest", "--json", "--now", NOW)
    assert [r["score"] for r in map(json.loads, suggested.out.splitlines())] == [70]
    applied = run("match", "apply", "1", "--now", LATER)
    assert applied.out == (
        "partnership 1 dissolved: every other member had withdrawn\n"
        "partnership 2 dissolved: every other member had withdrawn\n"
        "proposal 1: Ann Dupont <ann@example.org> (FR) and Chiara Rossi <chiara@example.org> (IT)"
        " are now partnership 4 in 2027-spring\n"
    )
    assert query(project, "SELECT id, status, ended_reason FROM partnership ORDER BY id") == [
        (1, "dissolved", "every other member withdrew; re-matched by proposal 1"),
        (2, "dissolved", "every other member withdrew; re-matched by proposal 1"),
        (3, "active", ""),
        (4, "active", ""),
    ]
    assert outbox(project)[0][:2] == ("topic/2027-spring/2/1", "cancelled")


def test_the_odd_one_out_is_reported(project: Project, run: Cli) -> None:
    """Someone with no possible partner is named with the reason; --json puts it on stderr."""
    run("participant", "withdraw", "gus@example.org", "--now", NOW)
    result = run("match", "suggest", "--now", NOW)
    assert result.out == (
        "no partner found for Emma Martin <emma@example.org> (FR):"
        " no one else is left alone in this round\n"
    )
    as_json = run("match", "suggest", "--json", "--now", NOW)
    assert as_json.out == "" and as_json.err == (
        "no partner found for Emma Martin <emma@example.org> (FR):"
        " no one else is left alone in this round\n"
    )


def test_apply_refuses_people_partnered_meanwhile(project: Project, run: Cli) -> None:
    """Someone given a partner by an import after the suggestion makes apply refuse it all."""
    for pid in ("1", "2"):
        run("partnership", "dissolve", pid, "--reason", "silent", "--now", NOW)
    run("match", "suggest", "--now", NOW)
    (project.dir / "new.csv").write_text(
        f"round,member_a,member_b\n{ROUND},ann@example.org,dev@example.org\n", encoding="utf-8"
    )
    imported = run("import", "partnerships", project.dir / "new.csv", "--now", LATER)
    assert imported.out == "partnerships: 1 created, 0 updated, 0 unchanged\n"
    refused(
        project,
        run,
        ("match", "apply", "1", "2", "--now", LATER),
        1,
        "nothing applied:\n"
        "proposal 1: ann@example.org has a partner now; run `rapport match suggest` again\n"
        "proposal 2: dev@example.org has a partner now; run `rapport match suggest` again",
    )
