"""Hostile inbound mail, through `rapport inbox classify FILE` and `rapport inbox poll` on a
Maildir: classifying never fails (one JSON object per file, one of the five kinds), a poll with
hostile messages records every one of them and goes on with the rest, and a reply key counts only
when its HMAC verifies and the sender is unknown or the key's own participant."""

from __future__ import annotations

import json
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path

import pytest

from tests.bad_input.common import Cli
from tests.conftest import Project
from tests.smtp_server import SmtpTestServer
from tests.test_poll import _activity, _deliver, _key, _project, _reply

KINDS = {"human", "auto_reply", "bounce", "bulk", "loop"}
CONTRACT = {"file", "kind", "sender", "reply_key", "in_reply_to", "checkin", "bounced", "reason"}
HEAD = (
    b"From: Priya Nair <priya@example.org>\r\nTo: coordinators@example.org\r\n"
    b"Date: Tue, 02 Mar 2027 10:00:00 +0000\r\n"
)


def _message(n: int, extra: bytes = b"", body: bytes = b"1\r\n", head: bytes = HEAD) -> bytes:
    """A message from Priya with its own Message-ID, ``extra`` headers and ``body``."""
    return head + f"Message-ID: <hostile-{n}@example.net>\r\n".encode() + extra + b"\r\n" + body


def _nested(depth: int) -> bytes:
    """``depth`` multipart/mixed containers, each holding the next, around one text part."""
    heads = [
        f'Content-Type: multipart/mixed; boundary="b{i}"\r\n\r\n--b{i}\r\n'.encode()
        for i in range(depth)
    ]
    tails = [f"\r\n--b{i}--\r\n".encode() for i in reversed(range(depth))]
    return b"".join(heads) + b"Content-Type: text/plain\r\n\r\n1\r\n" + b"".join(tails)


def _hostile() -> dict[str, bytes]:
    """Each hostile message by name (all from Priya, a participant, each a distinct message)."""
    megabyte = b"x" * (1024 * 1024)
    nested = _nested(1000)
    references = b" ".join(f"<ref-{n}@example.net>".encode() for n in range(10_000))
    return {
        "nested-mime-1000-levels": _message(1, b"MIME-Version: 1.0\r\n", b"")[:-2] + nested,
        "header-line-1-megabyte": _message(2, b"Subject: " + megabyte + b"\r\n"),
        "header-name-1-megabyte": _message(3, megabyte + b": x\r\n"),
        "nul-bytes": _message(4, b"Subject: a\0b\r\nX-Nul: \0\0\0\r\n", b"1\0\0\r\n\0"),
        "unknown-charset": _message(
            5, b'Content-Type: text/plain; charset="x-no-such-charset"\r\n', b"1 caf\xe9\r\n"
        ),
        "charset-with-quotes-and-nul": _message(
            6, b'Content-Type: text/plain; charset="utf-8\0\\""\r\n', b"1\r\n"
        ),
        "invalid-utf8-declared-utf8": _message(
            7, b"Content-Type: text/plain; charset=utf-8\r\n", b"1 \xff\xfe\xc3\x28\r\n"
        ),
        "utf-7-body": _message(
            8, b"Content-Type: text/plain; charset=utf-7\r\n", b"1 +AGEAYgBj-\r\n"
        ),
        "broken-base64": _message(
            9,
            b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n",
            b"!!!not base64===\r\n",
        ),
        "broken-quoted-printable": _message(
            10,
            b"Content-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n",
            b"1 =ZZ =\r\n=\r\n",
        ),
        "bogus-encoded-words": _message(
            11, b"Subject: =?x-bogus?q?abc?= =?utf-8?b?!!!?= =?utf-8?q?=FF=FE?=\r\n"
        ),
        "raw-8bit-headers": _message(12, b"Subject: caf\xe9 \xff\r\nX-Name: \xc3\x28\r\n"),
        "references-10000-ids": _message(13, b"References: " + references + b"\r\n"),
        "in-reply-to-garbage": _message(14, b"In-Reply-To: <" + b"<" * 5000 + b">\r\n"),
        "from-with-1000-addresses": _message(
            15,
            b"Cc: " + b", ".join(f"u{n}@example.net".encode() for n in range(1000)) + b"\r\n",
        ),
        "no-blank-line-no-body": HEAD + b"Message-ID: <hostile-16@example.net>\r\nX: y",
        "only-garbage": b"\x00\xff\xfe" * 1000,
        "empty": b"",
        "lf-only-line-ends": _message(17).replace(b"\r\n", b"\n"),
        "bare-cr-line-ends": _message(18).replace(b"\r\n", b"\r"),
    }


HOSTILE = _hostile()


@pytest.fixture(scope="module")
def hostile_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Each hostile message written once as NAME.eml."""
    folder = tmp_path_factory.mktemp("hostile")
    paths = []
    for name, data in HOSTILE.items():
        path = folder / f"{name}.eml"
        path.write_bytes(data)
        paths.append(path)
    return paths


@pytest.mark.parametrize("name", HOSTILE)
def test_inbox_classify_never_fails(blank: Project, cli: Cli, name: str, tmp_path: Path) -> None:
    """`inbox classify` on a hostile file prints one JSON object of the contract, exit 0."""
    path = tmp_path / f"{name}.eml"
    path.write_bytes(HOSTILE[name])
    result = cli("--config", blank.config, "inbox", "classify", path)
    assert (result.code, result.err) == (0, ""), result.err[:2000]
    [line] = result.out.splitlines()
    found = json.loads(line)
    assert set(found) == CONTRACT
    assert found["kind"] in KINDS and found["file"] == str(path)
    assert found["checkin"] in (None, 1, 2, 3)
    assert len(line) < 100_000, "an output line as large as the input"


def test_inbox_classify_reads_every_hostile_file_in_one_run(
    blank: Project, cli: Cli, hostile_files: list[Path]
) -> None:
    """Many hostile files in one call give one line each, in order; none stops the others."""
    result = cli("--config", blank.config, "inbox", "classify", *hostile_files)
    assert result.code == 0, result.err[:2000]
    assert [json.loads(line)["file"] for line in result.out.splitlines()] == [
        str(p) for p in hostile_files
    ]


def test_inbox_classify_reports_a_forged_key_without_trusting_it(
    blank: Project, cli: Cli, tmp_path: Path
) -> None:
    """classify only reads the key's shape: verifying it is the poll's work (see below)."""
    path = tmp_path / "forged.eml"
    path.write_bytes(
        _reply("x@example.net", "coordinators+aaaaaaaaaaaaaaaaaaaa@example.org", "1").as_bytes()
    )
    found = json.loads(cli("--config", blank.config, "inbox", "classify", path).out)
    assert (found["kind"], found["reply_key"], found["checkin"]) == ("human", "a" * 20, 1)


def _poll(project: Project, cli: Cli) -> str:
    result = cli("--config", project.config, "inbox", "poll", "--now", "2027-03-02T12:00:00Z")
    assert result.code == 0, (result.out, result.err[:2000])
    assert "Traceback" not in result.err
    return result.out.strip()


def test_a_poll_full_of_hostile_mail_records_everything(
    project: Project, cli: Cli, smtp_server: SmtpTestServer
) -> None:
    """Hostile messages between ordinary replies: the poll records every message, counts the
    ordinary ones, and an oversized one is judged from its headers alone."""
    maildir = _project(project, cli, smtp_server)
    text = project.config.read_text(encoding="utf-8")
    project.config.write_text(text + "[inbox]\nmax_fetch_bytes = 65536\n", encoding="utf-8")
    ana_key, _ = _key(project, "ana@example.org")
    _deliver(maildir, _reply("ana@example.org", f"coordinators+{ana_key}@example.org", "1"))
    for data in HOSTILE.values():
        _deliver(maildir, data)
    oversized = _reply("wang@example.org", "coordinators@example.org", "1\n" + "x" * 100_000)
    _deliver(maildir, oversized)
    _deliver(maildir, _reply("kelsey@example.org", "coordinators@example.org", "3"))
    summary = _poll(project, cli)
    delivered = len(HOSTILE) + 3
    assert project.scalar("SELECT count(*) FROM inbound") == delivered, summary
    assert project.scalar("SELECT count(*) FROM inbound WHERE kind = 'error'") == 0
    events = _activity(project)
    assert ("ana@example.org", "checkin", 1) in events
    assert ("kelsey@example.org", "checkin", 3) in events
    # Too large to fetch whole: a message from Wang, but no check-in read from its body.
    assert ("wang@example.org", "message", None) in events
    assert not [e for e in events if e[0] == "wang@example.org" and e[1] == "checkin"]
    assert _poll(project, cli) == "read 0; recorded 0, 0 activity events"


def _attributed(project: Project) -> list[tuple[str | None, str | None, str]]:
    rows = project.rows(
        "SELECT i.sender, p.email, i.matched_by FROM inbound i"
        " LEFT JOIN participant p ON p.id = i.participant_id ORDER BY i.id"
    )
    return [(r["sender"], r["email"], r["matched_by"]) for r in rows]


def test_forged_and_borrowed_keys_count_for_nobody_else(
    project: Project, cli: Cli, smtp_server: SmtpTestServer
) -> None:
    """A forged key names no one; Ana's real key from Kelsey's address is Kelsey's mail; a
    forged unsubscribe and Ana's unsubscribe sent by Kelsey suppress no one."""
    maildir = _project(project, cli, smtp_server)
    ana_key, ana_topic = _key(project, "ana@example.org")
    forged = "a" * len(ana_key)
    flipped = ana_key[:-1] + ("b" if ana_key[-1] != "b" else "c")
    mail: list[Callable[[], EmailMessage]] = [
        lambda: _reply("stranger@example.net", f"coordinators+{forged}@example.org", "1"),
        lambda: _reply("stranger@example.net", f"coordinators+{flipped}@example.org", "1"),
        lambda: _reply("kelsey@example.org", f"coordinators+{ana_key}@example.org", "2"),
        lambda: _reply(
            "kelsey@example.org", "coordinators@example.org", "3", in_reply_to=ana_topic
        ),
        lambda: _reply(
            "stranger@example.net", f"coordinators+unsubscribe-{forged}@example.org", "stop"
        ),
        lambda: _reply(
            "kelsey@example.org", f"coordinators+unsubscribe-{ana_key}@example.org", "stop"
        ),
    ]
    for make in mail:
        _deliver(maildir, make())
    _poll(project, cli)
    assert _attributed(project) == [
        ("stranger@example.net", None, "none"),
        ("stranger@example.net", None, "none"),
        ("kelsey@example.org", "kelsey@example.org", "sender"),
        ("kelsey@example.org", "kelsey@example.org", "sender"),
        ("stranger@example.net", None, "none"),
        ("kelsey@example.org", "kelsey@example.org", "sender"),
    ]
    assert not [e for e in _activity(project) if e[0] == "ana@example.org"]
    assert project.rows("SELECT email FROM suppression") == []
