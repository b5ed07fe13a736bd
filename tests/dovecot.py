"""A private Dovecot IMAP server on loopback for tests, with helpers to script it.

Register it as a pytest plugin (``pytest_plugins = ["tests.dovecot"]``) to get the fixtures:

- ``dovecot``: a running :class:`DovecotServer`, shared by the whole session and restarted if a
  test left it down.  ``.endpoint(security)`` gives an ``ImapEndpoint`` for its test account
  (``"none"`` and ``"starttls"`` use one port, ``"tls"`` another) that trusts ``.ca_file``.
- ``imap_folder``: the name of a new, empty folder for this test only; ``imap_folders()``
  makes more (``imap_folders(create=False)``: a name not yet taken).
- ``dovecot_ca``: the trustme CA that signs the server's certificate.

Helpers talk to the server with the standard library's imaplib, not with the code under test::

    uid = dovecot.append(imap_folder, make_message(1))   # APPEND, returns the new UID
    dovecot.flags(imap_folder, uid)                      # {"\\Recent"}, {"\\Seen"}...
    dovecot.uids(imap_folder)                            # [1, 2, ...]
    dovecot.recreate(imap_folder)                        # DELETE + CREATE: new UIDVALIDITY
    dovecot.kill()                                       # SIGKILL, like a crashed server
    dovecot.start()                                      # again, same ports and mail

The server runs from a temporary directory holding its configuration, base_dir, log
(``.log_text()``), certificate, passwd-file and Maildirs.  Dovecot must be installed (Debian's
``dovecot-imapd``; ``make test`` installs it): without it the tests fail, they do not skip.
"""

from __future__ import annotations

import contextlib
import grp
import imaplib
import itertools
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import trustme

from mailer.inbox import ImapEndpoint

USERNAME = "coordinators"
PASSWORD = "imap-test-password"
HOST = "127.0.0.1"
START_TIMEOUT = 10.0
_CANDIDATES = ("/usr/sbin/dovecot", "/usr/local/sbin/dovecot")
_folder_numbers = itertools.count(1)
_APPENDUID = re.compile(rb"\[APPENDUID \d+ (\d+)\]")
_FLAGS = re.compile(rb"FLAGS \(([^)]*)\)")


def find_dovecot() -> str:
    """Path of the dovecot binary, or fail the test with what to install."""
    found = shutil.which("dovecot") or next((p for p in _CANDIDATES if os.access(p, os.X_OK)), None)
    if found is None:
        pytest.fail(
            "Dovecot is not installed, and the IMAP tests need a real server: `make test`"
            " installs it (Debian package dovecot-imapd: apt-get install dovecot-imapd)",
            pytrace=False,
        )
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def make_message(n: int, *, body: bytes | None = None, subject: str | None = None) -> bytes:
    """A small RFC 5322 message with CRLF line ends, told apart by ``n``."""
    text = body if body is not None else f"Message number {n}.\r\n".encode()
    head = (
        f"From: Participant {n} <p{n}@example.org>\r\n"
        "To: coordinators@example.org\r\n"
        f"Subject: {subject or f'message {n}'}\r\n"
        f"Message-ID: <msg-{n}@example.org>\r\n"
        "Date: Mon, 02 Mar 2026 10:00:00 +0000\r\n"
        "\r\n"
    )
    return head.encode() + text


def _users() -> tuple[str, str, str]:
    """(internal user, login user, mail user) that this Dovecot can run as."""
    if os.geteuid() != 0:
        me = pwd.getpwuid(os.geteuid()).pw_name
        return me, me, me

    def first(*names: str) -> str:
        for name in names:
            with contextlib.suppress(KeyError):
                return pwd.getpwnam(name).pw_name
        raise RuntimeError(f"none of the users {names} exists; Dovecot needs one")

    # Login processes refuse to run as root, and Dovecot refuses uid 0 for mail.
    return "root", first("dovenull", "nobody"), first("dovecot", "mail", "nobody")


def _config(root: Path, imap_port: int, imaps_port: int) -> str:
    internal, login, mail = _users()
    account = pwd.getpwnam(mail)
    as_root = os.geteuid() == 0
    return f"""\
# A private Dovecot for one test session; nothing here is read from /etc/dovecot.
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
protocols = imap
listen = {HOST}
ssl = yes
ssl_cert = <{root}/cert.pem
ssl_key = <{root}/key.pem
disable_plaintext_auth = no
auth_mechanisms = plain login
# No delay after a wrong password (tests try one on purpose)...
auth_failure_delay = 0
default_internal_user = {internal}
default_internal_group = {grp.getgrgid(pwd.getpwnam(internal).pw_gid).gr_name}
default_login_user = {login}
first_valid_uid = 1
first_valid_gid = 1
mail_location = maildir:{root}/mail/%u
passdb {{
  driver = passwd-file
  args = {root}/passwd
}}
userdb {{
  driver = static
  args = uid={account.pw_uid} gid={account.pw_gid} home={root}/mail/%u
}}
# ... and no penalty that would slow down every later login from 127.0.0.1 by seconds.
service anvil {{
  {"" if as_root else "chroot ="}
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service imap-login {{
  {"" if as_root else "chroot ="}
  inet_listener imap {{
    address = {HOST}
    port = {imap_port}
  }}
  inet_listener imaps {{
    address = {HOST}
    port = {imaps_port}
    ssl = yes
  }}
}}
"""


class DovecotServer:
    """One Dovecot master process (and its children) serving ``USERNAME`` on loopback."""

    def __init__(self, root: Path, ca: trustme.CA) -> None:
        self.root = root
        self.binary = find_dovecot()
        self.host = HOST
        self.port = free_port()  # plaintext, offers STARTTLS
        self.tls_port = free_port()  # implicit TLS
        self.username = USERNAME
        self.password = PASSWORD
        self.process: subprocess.Popen[bytes] | None = None
        cert = ca.issue_cert("localhost", HOST)
        cert.cert_chain_pems[0].write_to_path(str(root / "cert.pem"))
        for pem in cert.cert_chain_pems[1:]:
            pem.write_to_path(str(root / "cert.pem"), append=True)
        cert.private_key_pem.write_to_path(str(root / "key.pem"))
        ca.cert_pem.write_to_path(str(root / "ca.pem"))
        self.ca_file = str(root / "ca.pem")
        (root / "passwd").write_text(f"{USERNAME}:{{PLAIN}}{PASSWORD}\n", encoding="utf-8")
        mail = root / "mail"
        mail.mkdir()
        account = pwd.getpwnam(_users()[2])
        os.chown(mail, account.pw_uid, account.pw_gid)
        self.config = root / "dovecot.conf"
        self.config.write_text(_config(root, self.port, self.tls_port), encoding="utf-8")

    def __repr__(self) -> str:
        return f"<DovecotServer {self.host}:{self.port}/{self.tls_port} {self.root}>"

    # -- process ---------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        """Start the server and wait until both ports accept connections."""
        if self.running:
            return
        with open(self.root / "stderr.log", "ab") as stderr:  # the child has its own copy
            self.process = subprocess.Popen(
                [self.binary, "-F", "-c", str(self.config)],
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                start_new_session=True,  # its own process group: kill() takes the children too
            )
        deadline = time.monotonic() + START_TIMEOUT
        while not all(_accepts(self.host, port) for port in (self.port, self.tls_port)):
            code = self.process.poll()
            if code is not None:
                raise RuntimeError(f"dovecot exited with status {code}:\n{self.log_text()}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(
                    f"dovecot did not listen within {START_TIMEOUT} s:\n{self.log_text()}"
                )
            time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL the master and every child, as a crash would; open connections break."""
        process, self.process = self.process, None
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    def stop(self) -> None:
        """Shut down cleanly (SIGTERM), killing whatever is left after five seconds."""
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(5)
        self.kill()

    def log_text(self) -> str:
        """Dovecot's log and anything it wrote to stderr (configuration errors go there)."""
        parts = []
        for name in ("stderr.log", "dovecot.log"):
            path = self.root / name
            if path.exists():
                parts.append(path.read_text(encoding="utf-8", errors="replace"))
        return "".join(parts)

    def wait_for_log(self, pattern: str, *, timeout: float = 3.0) -> list[str]:
        """The log lines matching ``pattern`` (a regex), waiting until there is one.

        Dovecot's log process writes a moment after the event, hence the wait.
        """
        deadline = time.monotonic() + timeout
        while True:
            lines = [ln for ln in self.log_text().splitlines() if re.search(pattern, ln)]
            if lines or time.monotonic() > deadline:
                return lines
            time.sleep(0.02)

    # -- what tests use ---------------------------------------------------------------------------

    def endpoint(self, security: str = "starttls", **overrides: Any) -> ImapEndpoint:
        """An endpoint for the test account that trusts the test CA; fields can be overridden."""
        values: dict[str, Any] = {
            "host": "localhost" if security != "none" else self.host,
            "port": self.tls_port if security == "tls" else self.port,
            "security": security,
            "username": self.username,
            "password": self.password,
            "timeout": 5.0,
            "ca_file": self.ca_file,
        }
        values.update(overrides)
        return ImapEndpoint(**values)

    @contextlib.contextmanager
    def session(self) -> Iterator[imaplib.IMAP4]:
        """A logged-in imaplib connection (plaintext on loopback)."""
        conn = imaplib.IMAP4(self.host, self.port, timeout=5)
        try:
            conn.login(self.username, self.password)
            yield conn
        finally:
            with contextlib.suppress(OSError, imaplib.IMAP4.error):
                conn.logout()

    def append(
        self,
        folder: str,
        raw: bytes,
        *,
        flags: tuple[str, ...] = (),
        date: datetime | None = None,
    ) -> int:
        """APPEND ``raw`` to ``folder`` and return its UID."""
        when = imaplib.Time2Internaldate(date) if date is not None else None
        with self.session() as conn:
            typ, data = conn.append(folder, f"({' '.join(flags)})" if flags else None, when, raw)
        found = _APPENDUID.search(data[0] or b"") if typ == "OK" else None
        if found is None:
            raise RuntimeError(f"APPEND to {folder!r} failed: {typ} {data!r}")
        return int(found.group(1))

    def flags(self, folder: str, uid: int) -> set[str]:
        """The flags of one message, read without changing anything (EXAMINE)."""
        with self.session() as conn:
            _check(conn.select(folder, readonly=True), "EXAMINE", folder)
            typ, data = conn.uid("FETCH", str(uid), "(FLAGS)")
        for item in data:
            line = item[0] if isinstance(item, tuple) else item
            found = _FLAGS.search(line or b"")
            if typ == "OK" and found is not None:
                return set(found.group(1).decode().split())
        raise LookupError(f"no message with UID {uid} in {folder!r}")

    def uids(self, folder: str) -> list[int]:
        with self.session() as conn:
            _check(conn.select(folder, readonly=True), "EXAMINE", folder)
            typ, data = conn.uid("SEARCH", "ALL")
        _check((typ, data), "SEARCH", folder)
        return [int(uid) for uid in (data[0] or b"").split()]

    def exists(self, folder: str) -> bool:
        with self.session() as conn:
            typ, data = conn.list('""', folder)
        return typ == "OK" and any(item is not None for item in data)

    def create(self, folder: str) -> None:
        with self.session() as conn:
            _check(conn.create(folder), "CREATE", folder)

    def delete(self, folder: str) -> None:
        with self.session() as conn:
            _check(conn.delete(folder), "DELETE", folder)

    def uidvalidity(self, folder: str) -> int:
        with self.session() as conn:
            typ, data = conn.status(folder, "(UIDVALIDITY)")
        _check((typ, data), "STATUS", folder)
        found = re.search(rb"UIDVALIDITY (\d+)", data[0] or b"")
        if found is None:
            raise RuntimeError(f"no UIDVALIDITY for {folder!r}: {data!r}")
        return int(found.group(1))

    def recreate(self, folder: str) -> int:
        """Delete and create ``folder`` again (empty, new UIDVALIDITY); returns the new one."""
        before = self.uidvalidity(folder)
        self.delete(folder)
        self.create(folder)
        after = self.uidvalidity(folder)
        if after == before:
            raise RuntimeError(f"Dovecot kept UIDVALIDITY {before} for recreated {folder!r}")
        return after


def _check(result: tuple[str, list[Any]], command: str, folder: str) -> None:
    typ, data = result
    if typ != "OK":
        raise RuntimeError(f"{command} {folder!r} failed: {typ} {data!r}")


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def dovecot_ca() -> trustme.CA:
    """The CA that signs the Dovecot test server's certificate."""
    return trustme.CA()


@pytest.fixture(scope="session")
def _dovecot_session(dovecot_ca: trustme.CA) -> Iterator[DovecotServer]:
    # Dovecot's unprivileged processes must reach the directory: not pytest's 0700 tmp_path.
    root = Path(tempfile.mkdtemp(prefix="rapport-dovecot-"))
    root.chmod(0o755)
    server = DovecotServer(root, dovecot_ca)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def dovecot(_dovecot_session: DovecotServer) -> Iterator[DovecotServer]:
    """The session's Dovecot, running; started again afterwards if the test stopped it."""
    _dovecot_session.start()
    yield _dovecot_session
    _dovecot_session.start()


@pytest.fixture
def imap_folders(dovecot: DovecotServer) -> Iterator[Callable[..., str]]:
    """``new(create=True)``: the name of a folder only this test uses, all deleted afterwards.

    With ``create=False`` the folder does not exist yet (for code that should create it).
    """
    names: list[str] = []

    def new(*, create: bool = True) -> str:
        name = f"Test{next(_folder_numbers)}"
        names.append(name)
        if create:
            dovecot.create(name)
        return name

    yield new
    dovecot.start()
    for name in names:
        with contextlib.suppress(OSError, RuntimeError, imaplib.IMAP4.error):
            if dovecot.exists(name):
                dovecot.delete(name)


@pytest.fixture
def imap_folder(imap_folders: Callable[..., str]) -> str:
    """A new, empty folder that only this test uses; deleted afterwards."""
    return imap_folders()
