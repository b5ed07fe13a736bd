"""The inbox sources: IMAP against a private Dovecot on loopback, Maildir in a temp folder."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest
import trustme

from mailer import inbox
from mailer.inbox import ImapSource
from mailer.maildir import MaildirSource, maildir_uid
from mailer.source import Cursor, FolderUnavailable, InboxUnavailable
from program.errors import RapportError
from tests.dovecot import DovecotServer, make_message


def imap(dovecot: DovecotServer, security: str = "none", **options: Any) -> ImapSource:
    """A source for the test account; never sleeps unless the test passes ``sleep``."""
    options.setdefault("sleep", lambda seconds: None)
    overrides = options.pop("endpoint", {})
    return ImapSource(dovecot.endpoint(security, **overrides), **options)


def faulty(*, hide: str = "", broken_uid: int = 0) -> Callable[..., Any]:
    """A connect function whose client lacks capability ``hide`` and fails to FETCH the whole
    message ``broken_uid``, as a server does with a damaged message."""

    def connect(endpoint: inbox.ImapEndpoint, context: Any) -> Any:
        client = inbox.default_connect(endpoint, context)
        has, uid_command = client.has_capability, client._imap.uid

        def has_capability(name: str) -> bool:
            return name.upper() != hide and has(name)

        def broken_uid_command(command: str, *args: str) -> Any:
            """UID FETCH of the whole message ``broken_uid``: the server answers NO."""
            whole = command.upper() == "FETCH" and "BODY.PEEK[]" in args[-1]
            if whole and str(broken_uid) in args[0].split(","):
                return "NO", [b"simulated damaged message"]
            return uid_command(command, *args)

        client.has_capability = has_capability
        client._imap.uid = broken_uid_command  # the connection the FETCH goes through
        return client

    return connect


def header_block(raw: bytes) -> bytes:
    return raw[: raw.index(b"\r\n\r\n") + 4]


# -- IMAP ----------------------------------------------------------------------------------------


def test_new_messages_come_back_once(dovecot: DovecotServer, imap_folder: str) -> None:
    """Appended messages are returned once each, whole and in UID order, as the cursor advances."""
    first = [dovecot.append(imap_folder, make_message(n)) for n in (1, 2, 3)]
    with imap(dovecot) as source:
        got = list(source.fetch_new(imap_folder, None))
        assert [f.uid for f in got] == first
        assert [f.raw for f in got] == [make_message(n) for n in (1, 2, 3)]
        assert all(f.complete and f.problem is None and f.folder == imap_folder for f in got)
        assert got[0].size == len(make_message(1))
        assert got[0].internaldate is not None and got[0].internaldate.tzinfo is UTC
        cursor = got[-1].cursor
        assert cursor == Cursor(dovecot.uidvalidity(imap_folder), first[-1])

        later = [dovecot.append(imap_folder, make_message(n)) for n in (4, 5)]
        again = list(source.fetch_new(imap_folder, cursor))
        assert [f.uid for f in again] == later
        assert list(source.fetch_new(imap_folder, again[-1].cursor)) == []
        assert source.folder_state(imap_folder) == (cursor.uidvalidity, later[-1] + 1)


def test_fetching_never_sets_seen(dovecot: DovecotServer, imap_folder: str) -> None:
    """Whole and headers-only fetches leave \\Seen unset; flags already set are reported."""
    small = dovecot.append(imap_folder, make_message(1))
    large = dovecot.append(imap_folder, make_message(2, body=b"y" * 4000))
    flagged = dovecot.append(imap_folder, make_message(3), flags=("\\Flagged",))
    with imap(dovecot, body_limit=1000) as source:
        got = {f.uid: f for f in source.fetch_new(imap_folder, None)}
    assert "\\Flagged" in got[flagged].flags
    for uid in (small, large, flagged):
        assert "\\Seen" not in got[uid].flags
        assert "\\Seen" not in dovecot.flags(imap_folder, uid)


def test_large_message_comes_headers_only(dovecot: DovecotServer, imap_folder: str) -> None:
    """A message over body_limit comes as its header block, complete False, with its real size."""
    big = make_message(1, body=b"z" * 5000 + b"\r\n")
    dovecot.append(imap_folder, big)
    dovecot.append(imap_folder, make_message(2))
    with imap(dovecot, body_limit=1000) as source:
        large, small = source.fetch_new(imap_folder, None)
    assert (large.complete, large.size, large.raw, large.problem) == (
        False,
        len(big),
        header_block(big),
        None,
    )
    assert small.complete and small.raw == make_message(2)


def test_changed_uidvalidity_reads_again_from_uid_one(
    dovecot: DovecotServer, imap_folder: str
) -> None:
    """After the folder is deleted and made again, a stale cursor reads it from UID 1."""
    for n in (1, 2, 3):
        dovecot.append(imap_folder, make_message(n))
    with imap(dovecot) as source:
        cursor = list(source.fetch_new(imap_folder, None))[-1].cursor
        validity = dovecot.recreate(imap_folder)
        uid = dovecot.append(imap_folder, make_message(4))
        got = list(source.fetch_new(imap_folder, cursor))
    assert uid == 1 < cursor.last_uid
    assert [(f.uid, f.uidvalidity, f.raw) for f in got] == [(1, validity, make_message(4))]
    assert validity != cursor.uidvalidity


def test_server_killed_mid_fetch_resumes_after_last_yielded(
    dovecot: DovecotServer, imap_folder: str
) -> None:
    """Kill -9 and restart mid-iteration: it reconnects and yields each message exactly once."""
    uids = [dovecot.append(imap_folder, make_message(n)) for n in range(1, 8)]
    sleeps: list[float] = []
    with imap(dovecot, batch=2, sleep=sleeps.append) as source:
        messages = source.fetch_new(imap_folder, None)
        first = [next(messages) for _ in range(3)]
        dovecot.kill()
        dovecot.start()
        rest = list(messages)
    assert [f.uid for f in first + rest] == uids
    assert [f.raw for f in first + rest] == [make_message(n) for n in range(1, 8)]
    assert (source.reconnects, sleeps) == (1, [1.0])


def test_reconnects_give_up_naming_the_server(dovecot: DovecotServer, imap_folder: str) -> None:
    """With the server gone, reconnects back off exponentially, then InboxUnavailable names it."""
    for n in (1, 2, 3):
        dovecot.append(imap_folder, make_message(n))
    sleeps: list[float] = []
    with imap(dovecot, batch=1, retries=3, backoff=0.5, sleep=sleeps.append) as source:
        messages = source.fetch_new(imap_folder, None)
        next(messages)
        dovecot.kill()
        with pytest.raises(InboxUnavailable, match=f"^127.0.0.1:{dovecot.port}: ") as caught:
            next(messages)
    assert sleeps == [0.5, 1.0, 2.0]
    assert "4 times" in str(caught.value)


@pytest.mark.parametrize("security", ["starttls", "tls"])
def test_tls_with_the_test_ca(dovecot: DovecotServer, imap_folder: str, security: str) -> None:
    """STARTTLS and implicit TLS verify the server against the CA file and then read mail."""
    uid = dovecot.append(imap_folder, make_message(1))
    with imap(dovecot, security) as source:
        assert [f.uid for f in source.fetch_new(imap_folder, None)] == [uid]
    logins = dovecot.wait_for_log(r"imap-login: Info: Login: user=<coordinators>.*, TLS")
    assert logins, dovecot.log_text()


@pytest.mark.parametrize("security", ["starttls", "tls"])
def test_untrusted_certificate_is_refused(
    dovecot: DovecotServer, imap_folder: str, security: str, tmp_path: Path
) -> None:
    """A server certificate from a CA we do not trust stops the connection, without retries."""
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    sleeps: list[float] = []
    source = imap(dovecot, security, endpoint={"ca_file": str(other)}, sleep=sleeps.append)
    with pytest.raises(InboxUnavailable, match="certificate verification failed"):
        list(source.fetch_new(imap_folder, None))
    assert sleeps == []


def test_starttls_not_offered_is_refused(dovecot: DovecotServer, imap_folder: str) -> None:
    """A server that does not offer STARTTLS is refused before the password is sent."""
    source = imap(dovecot, "starttls", connect=faulty(hide="STARTTLS"))
    with pytest.raises(InboxUnavailable, match="does not offer STARTTLS"):
        list(source.fetch_new(imap_folder, None))


def test_wrong_password_is_unavailable_and_never_shown(
    dovecot: DovecotServer, imap_folder: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A refused login raises InboxUnavailable naming host:port, never the password."""
    caplog.set_level(logging.DEBUG)
    secret = "not-the-password-4711"
    sleeps: list[float] = []
    source = imap(dovecot, endpoint={"password": secret}, sleep=sleeps.append)
    with pytest.raises(InboxUnavailable) as caught:
        list(source.fetch_new(imap_folder, None))
    message = str(caught.value)
    assert message.startswith(f"127.0.0.1:{dovecot.port}: login as 'coordinators' refused")
    assert isinstance(caught.value, RapportError)
    assert sleeps == []
    for text in (message, repr(source), repr(source.endpoint), caplog.text):
        assert secret not in text


def test_move_keeps_messages_unread(
    dovecot: DovecotServer, imap_folders: Callable[..., str]
) -> None:
    """move() with MOVE puts messages in a new target folder, unread and with their flags."""
    folder, target = imap_folders(), imap_folders(create=False)
    uids = [dovecot.append(folder, make_message(n)) for n in (1, 2, 3)]
    dovecot.append(folder, make_message(4), flags=("\\Flagged",))
    with imap(dovecot) as source:
        source.move(folder, [uids[0], uids[2], 4], target)
        moved = list(source.fetch_new(target, None))
    assert dovecot.uids(folder) == [uids[1]]
    assert [f.raw for f in moved] == [make_message(n) for n in (1, 3, 4)]
    for f in moved:
        assert "\\Seen" not in dovecot.flags(target, f.uid)
    assert "\\Flagged" in dovecot.flags(target, moved[-1].uid)


def test_move_without_move_capability_copies_and_expunges(
    dovecot: DovecotServer, imap_folders: Callable[..., str]
) -> None:
    """Without MOVE, move() copies, flags \\Deleted and UID-expunges only those messages."""
    folder, target = imap_folders(), imap_folders(create=False)
    uids = [dovecot.append(folder, make_message(n)) for n in (1, 2, 3)]
    with imap(dovecot, connect=faulty(hide="MOVE")) as source:
        source.move(folder, uids[:2], target)
        moved = list(source.fetch_new(target, None))
    assert dovecot.uids(folder) == [uids[2]]
    assert "\\Deleted" not in dovecot.flags(folder, uids[2])
    assert [f.raw for f in moved] == [make_message(1), make_message(2)]
    for f in moved:
        assert not {"\\Seen", "\\Deleted"} & dovecot.flags(target, f.uid)


def test_unfetchable_message_is_yielded_and_the_rest_follow(
    dovecot: DovecotServer, imap_folder: str
) -> None:
    """A message whose body FETCH fails comes with its header and a problem; others are whole."""
    uids = [dovecot.append(imap_folder, make_message(n)) for n in (1, 2, 3)]
    with imap(dovecot, connect=faulty(broken_uid=uids[1])) as source:
        got = list(source.fetch_new(imap_folder, None))
    assert [f.uid for f in got] == uids
    assert [f.complete for f in got] == [True, False, True]
    assert got[1].raw == header_block(make_message(2))
    assert got[1].problem is not None and "simulated damaged message" in got[1].problem


def test_interleaved_reads_and_moves_keep_to_their_folder(
    dovecot: DovecotServer, imap_folders: Callable[..., str]
) -> None:
    """Using the source for another folder while a fetch is suspended does not mix folders up."""
    one, two, done = imap_folders(), imap_folders(), imap_folders(create=False)
    for n in (1, 2, 3):
        dovecot.append(one, make_message(n))
        dovecot.append(two, make_message(10 + n))
    with imap(dovecot, batch=1) as source:
        first, second = source.fetch_new(one, None), source.fetch_new(two, None)
        got = [next(first), next(second)]
        source.move(two, [got[1].uid], done)
        got += [next(first), next(second), next(first), next(second)]
    assert [f.raw for f in got] == [make_message(n) for n in (1, 11, 2, 12, 3, 13)]
    assert [f.folder for f in got] == [one, two] * 3


def test_missing_folder_is_unavailable(dovecot: DovecotServer) -> None:
    """Reading a folder that does not exist raises FolderUnavailable naming it."""
    with imap(dovecot) as source, pytest.raises(FolderUnavailable, match="'NoSuchFolder'"):
        list(source.fetch_new("NoSuchFolder", None))


# -- Maildir -------------------------------------------------------------------------------------

NOW = 1_772_445_600.0  # 2026-03-02 10:00 UTC; names below are stamped from here


def make_maildir(path: Path) -> Path:
    for sub in ("tmp", "new", "cur"):
        (path / sub).mkdir(parents=True, exist_ok=True)
    return path


def deliver(
    folder: Path, n: int, raw: bytes, *, at: float, info: str = "", sub: str = "new"
) -> str:
    """Write a message the way deliverers do (tmp/, then rename); returns its file name."""
    seconds, fraction = divmod(at, 1)
    unique = f"{int(seconds)}.M{round(fraction * 1e6)}P4242Q{n}.testhost"
    (folder / "tmp" / unique).write_bytes(raw)
    name = unique + (f":2,{info}" if sub == "cur" else "")
    os.rename(folder / "tmp" / unique, folder / sub / name)
    return name


def maildir(path: Path, now: float = NOW + 3600, **options: Any) -> MaildirSource:
    return MaildirSource(path, clock=lambda: now, **options)


def test_maildir_new_messages_come_back_once(tmp_path: Path) -> None:
    """Delivered messages are returned once each, in delivery order, as the cursor advances."""
    root = make_maildir(tmp_path / "Maildir")
    for n in (1, 2, 3):
        deliver(root, n, make_message(n), at=NOW + n / 10)
    source = maildir(root)
    got = list(source.fetch_new("INBOX", None))
    assert [f.raw for f in got] == [make_message(n) for n in (1, 2, 3)]
    assert [f.uid for f in got] == sorted(f.uid for f in got)
    assert all(f.complete and f.flags == () and f.size == len(f.raw) for f in got)

    deliver(root, 4, make_message(4), at=NOW + 5)
    deliver(root, 5, make_message(5), at=NOW + 5.5)
    again = list(source.fetch_new("INBOX", got[-1].cursor))
    assert [f.raw for f in again] == [make_message(4), make_message(5)]
    assert list(source.fetch_new("INBOX", again[-1].cursor)) == []
    assert source.folder_state("INBOX") == (got[0].uidvalidity, again[-1].uid + 1)


def test_maildir_reading_leaves_mail_unread(tmp_path: Path) -> None:
    """Reading renames nothing: new/ stays new/, cur/ keeps its flags, which are reported."""
    root = make_maildir(tmp_path / "Maildir")
    deliver(root, 1, make_message(1), at=NOW)
    deliver(root, 2, make_message(2), at=NOW + 1, sub="cur", info="FS")
    deliver(root, 3, make_message(3), at=NOW + 2, sub="cur")
    before = {sub: sorted(os.listdir(root / sub)) for sub in ("new", "cur", "tmp")}
    got = list(maildir(root).fetch_new("INBOX", None))
    assert [f.flags for f in got] == [(), ("\\Flagged", "\\Seen"), ()]
    assert {sub: sorted(os.listdir(root / sub)) for sub in ("new", "cur", "tmp")} == before


def test_maildir_uids_survive_a_mail_client(tmp_path: Path) -> None:
    """A client moving a read message to cur/ with flags changes neither its UID nor the cursor."""
    root = make_maildir(tmp_path / "Maildir")
    name = deliver(root, 1, make_message(1), at=NOW)
    source = maildir(root)
    (first,) = source.fetch_new("INBOX", None)
    os.rename(root / "new" / name, root / "cur" / f"{name}:2,RS")
    assert list(source.fetch_new("INBOX", first.cursor)) == []
    (again,) = source.fetch_new("INBOX", None)
    assert (again.uid, again.flags) == (first.uid, ("\\Answered", "\\Seen"))


def test_maildir_waits_for_late_deliveries(tmp_path: Path) -> None:
    """Names younger than `settle` wait, so one delivered late is not skipped by the cursor."""
    root = make_maildir(tmp_path / "Maildir")
    deliver(root, 2, make_message(2), at=NOW + 10)
    assert list(maildir(root, now=NOW + 30, settle=60).fetch_new("INBOX", None)) == []
    deliver(root, 1, make_message(1), at=NOW + 5)  # named earlier, renamed into new/ later
    got = list(maildir(root, now=NOW + 72, settle=60).fetch_new("INBOX", None))
    assert [f.raw for f in got] == [make_message(1), make_message(2)]


def test_maildir_large_message_comes_headers_only(tmp_path: Path) -> None:
    """A file over body_limit comes as its header block, complete False, with its real size."""
    root = make_maildir(tmp_path / "Maildir")
    big = make_message(1, body=b"q" * 300_000)
    deliver(root, 1, big, at=NOW)
    (got,) = maildir(root, body_limit=1000).fetch_new("INBOX", None)
    assert (got.complete, got.size, got.raw) == (False, len(big), header_block(big))


def test_maildir_move_renames_into_the_target(tmp_path: Path) -> None:
    """move() creates the Maildir++ folder and renames files in, new/ to new/, cur/ with flags."""
    root = make_maildir(tmp_path / "Maildir")
    deliver(root, 1, make_message(1), at=NOW)
    deliver(root, 2, make_message(2), at=NOW + 1, sub="cur", info="F")
    deliver(root, 3, make_message(3), at=NOW + 2)
    source = maildir(root)
    one, two, _ = source.fetch_new("INBOX", None)
    source.move("INBOX", [one.uid, two.uid], "Done")
    assert (root / ".Done" / "maildirfolder").exists()
    assert [f.raw for f in source.fetch_new("INBOX", None)] == [make_message(3)]
    assert len(os.listdir(root / ".Done" / "new")) == 1
    assert os.listdir(root / ".Done" / "cur")[0].endswith(":2,F")
    moved = list(maildir(root, now=NOW + 7200).fetch_new("Done", None))
    assert sorted(f.raw for f in moved) == [make_message(1), make_message(2)]
    assert sorted(f.flags for f in moved) == [(), ("\\Flagged",)]


def test_maildir_recreated_folder_reads_again_from_the_start(tmp_path: Path) -> None:
    """A folder removed and made again gets a new UIDVALIDITY, so a stale cursor starts over."""
    root = make_maildir(tmp_path / "Maildir")
    folder = make_maildir(root / ".Archive")
    deliver(folder, 1, make_message(1), at=NOW + 50)
    source = maildir(root)
    cursor = list(source.fetch_new("Archive", None))[-1].cursor
    (root / ".Archive").rename(root / ".Old")  # the new folder exists before the old one goes
    folder = make_maildir(root / ".Archive")
    shutil.rmtree(root / ".Old")
    deliver(folder, 2, make_message(2), at=NOW)  # older name than the cursor's message
    got = list(source.fetch_new("Archive", cursor))
    assert [f.raw for f in got] == [make_message(2)]
    assert got[0].uidvalidity != cursor.uidvalidity


def test_maildir_missing_folder_and_bad_path(tmp_path: Path) -> None:
    """A missing subfolder raises FolderUnavailable; a path that is no Maildir, InboxUnavailable."""
    root = make_maildir(tmp_path / "Maildir")
    with pytest.raises(FolderUnavailable, match="'Nope'"):
        list(maildir(root).fetch_new("Nope", None))
    with pytest.raises(InboxUnavailable, match="is not a Maildir"):
        MaildirSource(tmp_path)


def test_maildir_uids_follow_delivery_time() -> None:
    """UIDs grow with the name's time and microseconds, ignore flags, and fit in 63 bits."""
    names = [
        "1772445600.M5P1Q1.host",
        "1772445600.M999999P1Q2.host",
        "1772445601.M0P1Q3.host",
        "1772445602.12345_1.host",  # no microseconds (procmail, mbsync)
        "4294967295.M999999P1.host",
    ]
    uids = [maildir_uid(name) for name in names]
    assert uids == sorted(uids) and len(set(uids)) == len(uids)
    assert uids[-1] < 2**63
    assert maildir_uid("garbage-name", fallback_seconds=1772445600) < uids[2]
