"""An SMTP server on loopback for tests: real aiosmtpd, with faults scripted on demand.

Real servers do not refuse, drop or stall on cue; this one can be told to.  Register it as a
pytest plugin (``pytest_plugins = ["tests.smtp_server"]``) to get the fixtures:

- ``smtp_server``: plaintext; ``smtp_starttls_server``: offers STARTTLS; ``smtp_tls_server``:
  implicit TLS.  Each yields a :class:`SmtpTestServer`; ``.endpoint()`` gives a matching
  ``SmtpEndpoint`` and ``.handler`` is the :class:`ScriptedHandler` to script and inspect.
- ``smtp_server_factory(**options)``: more servers with other options (see :func:`start_server`),
  all stopped at teardown.
- ``smtp_ca`` / ``smtp_ca_file``: the trustme CA that signs the servers' certificates, and its
  PEM file for ``SmtpEndpoint.ca_file``.

Scripting, before or while the client talks (thread-safe)::

    handler.reject_rcpt("bob@example.org", "550 5.1.1 no such user")     # every time
    handler.reply("mail", "421 4.3.2 going down", times=2)             # replies, then closes
    handler.drop("data", times=1)            # close at DATA, before 354
    handler.drop("data_end")                 # message fully received, connection closed, no reply
    hold = handler.hold("carol@example.org") # stall the reply to the end of her next message
    hold.arrived.wait(5)                     # ... the message is in flight ...
    hold.release()                           # ... now answer 250 (or drop: then=None)

Stages are ``"mail"``, ``"rcpt"``, ``"data"`` (the DATA command) and ``"data_end"`` (after the
end of the message).  ``handler.messages`` lists every message received in full, with its
outcome; ``handler.accepted`` those answered 2xx; ``handler.connections`` counts connections;
``handler.commands`` logs MAIL, RCPT, DATA, RSET and QUIT in order.

From a test that runs the client in another process, keep the server in the test process::

    host, port, handler, controller = start_server()
    try:
        ...
    finally:
        controller.stop()
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword, TLSSetupException, syntax

from mailer.smtp import SmtpEndpoint

STAGES = ("mail", "rcpt", "data", "data_end")
_REPLY = re.compile(r"^[2-5]\d\d( |$)")


@dataclass
class Received:
    """A message whose end arrived.  ``outcome``: accepted, refused, dropped or held."""

    sender: str
    recipients: tuple[str, ...]
    data: bytes
    outcome: str = "held"
    reply: str | None = None


class Hold:
    """Stalls the reply to the end of one message for ``recipient`` until :meth:`release`.

    ``arrived`` (a threading.Event) is set once the whole message is on the server and the
    client is waiting for the reply.  ``then`` is the reply sent on release; None drops the
    connection instead.
    """

    def __init__(self, recipient: str, then: str | None) -> None:
        self.recipient = recipient
        self.then = then
        self.arrived = threading.Event()
        self.message: Received | None = None
        self._released = False
        self._lock = threading.Lock()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

    @property
    def released(self) -> bool:
        return self._released

    def release(self) -> None:
        """Let the server answer; safe to call from any thread, and more than once."""
        with self._lock:
            self._released = True
            waiters, self._waiters = self._waiters, []
        for loop, event in waiters:
            if not loop.is_closed():
                loop.call_soon_threadsafe(event.set)

    async def _wait(self) -> None:
        event = asyncio.Event()
        with self._lock:
            if self._released:
                return
            self._waiters.append((asyncio.get_running_loop(), event))
        await event.wait()


@dataclass
class _Rule:
    stage: str
    reply: str | None  # None: close the connection without replying
    recipient: str | None
    remaining: int | None  # None: forever

    def matches(self, stage: str, recipients: tuple[str, ...]) -> bool:
        if self.stage != stage or self.remaining == 0:
            return False
        return self.recipient is None or self.recipient in recipients


class ScriptedHandler:
    """aiosmtpd handler that accepts everything unless scripted otherwise (see module doc)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: list[_Rule] = []
        self._holds: list[Hold] = []
        self.connections = 0
        self.messages: list[Received] = []
        self.commands: list[str] = []

    # -- scripting ---------------------------------------------------------------------------

    def reply(
        self, stage: str, reply: str, *, recipient: str | None = None, times: int | None = 1
    ) -> None:
        """Answer ``reply`` (e.g. ``"451 4.3.0 try later"``) at ``stage``, ``times`` times.

        ``times=None`` means every time; ``recipient`` limits the rule to messages for that
        address (not for stage ``"mail"``, which comes before any recipient).  A 421 reply is
        followed by closing the connection, as servers do.
        """
        if not _REPLY.match(reply):
            raise ValueError(f"not an SMTP reply: {reply!r}")
        self._add(stage, reply, recipient, times)

    def drop(self, stage: str, *, recipient: str | None = None, times: int | None = 1) -> None:
        """Close the connection at ``stage`` without replying, ``times`` times."""
        self._add(stage, None, recipient, times)

    def reject_rcpt(self, address: str, reply: str, *, times: int | None = None) -> None:
        """Answer ``reply`` to RCPT TO for ``address`` (every time unless ``times``)."""
        self.reply("rcpt", reply, recipient=address, times=times)

    def hold(self, recipient: str, *, then: str | None = "250 OK") -> Hold:
        """Stall the reply to the end of the next message for ``recipient``; see :class:`Hold`."""
        hold = Hold(recipient.lower(), then)
        with self._lock:
            self._holds.append(hold)
        return hold

    def clear(self) -> None:
        """Forget every scripted rule and release every hold."""
        with self._lock:
            self._rules.clear()
            holds, self._holds = self._holds, []
        for hold in holds:
            hold.release()

    @property
    def accepted(self) -> list[Received]:
        return [m for m in self.messages if m.outcome == "accepted"]

    def _add(self, stage: str, reply: str | None, recipient: str | None, times: int | None) -> None:
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, not {stage!r}")
        if recipient is not None and stage == "mail":
            raise ValueError("the mail stage comes before any recipient")
        if times is not None and times < 1:
            raise ValueError(f"times must be at least 1, not {times}")
        rule = _Rule(stage, reply, recipient.lower() if recipient else None, times)
        with self._lock:
            self._rules.append(rule)

    def _take(self, stage: str, recipients: tuple[str, ...] = ()) -> _Rule | None:
        lowered = tuple(r.lower() for r in recipients)
        with self._lock:
            for rule in self._rules:
                if rule.matches(stage, lowered):
                    if rule.remaining is not None:
                        rule.remaining -= 1
                    return replace(rule)
        return None

    def _take_hold(self, recipients: tuple[str, ...]) -> Hold | None:
        lowered = {r.lower() for r in recipients}
        with self._lock:
            for hold in self._holds:
                if hold.recipient in lowered:
                    self._holds.remove(hold)
                    return hold
        return None

    # -- aiosmtpd hooks ----------------------------------------------------------------------

    def _connection_made(self) -> None:
        with self._lock:
            self.connections += 1

    async def handle_MAIL(
        self, server: ScriptedSMTP, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        self.commands.append(f"MAIL {address}")
        rule = self._take("mail")
        if rule is not None:
            return await server.answer(rule.reply)
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: ScriptedSMTP, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        self.commands.append(f"RCPT {address}")
        rule = self._take("rcpt", (address,))
        if rule is not None:
            return await server.answer(rule.reply)
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 OK"

    async def handle_RSET(self, server: ScriptedSMTP, session: Any, envelope: Any) -> str:
        self.commands.append("RSET")
        return "250 OK"

    async def handle_QUIT(self, server: ScriptedSMTP, session: Any, envelope: Any) -> str:
        self.commands.append("QUIT")
        return "221 Bye"

    async def handle_exception(self, error: Exception) -> str:
        # A client that rejects our certificate is a normal test outcome, not worth a traceback.
        if not isinstance(error, TLSSetupException):
            logging.getLogger("mail.log").error("SMTP session exception", exc_info=error)
        return f"500 Error: ({type(error).__name__}) {error}"

    async def handle_DATA(self, server: ScriptedSMTP, session: Any, envelope: Any) -> str:
        recipients = tuple(envelope.rcpt_tos)
        message = Received(envelope.mail_from, recipients, bytes(envelope.original_content))
        self.messages.append(message)
        hold = self._take_hold(recipients)
        if hold is not None:
            hold.message = message
            hold.arrived.set()
            await hold._wait()
            reply = hold.then
        else:
            rule = self._take("data_end", recipients)
            reply = rule.reply if rule is not None else "250 OK"
        if reply is None:
            message.outcome = "dropped"
        else:
            message.outcome = "accepted" if reply.startswith("2") else "refused"
            message.reply = reply
        return await server.answer(reply)


class ScriptedSMTP(SMTP):
    """aiosmtpd's SMTP with the hooks the script needs: DATA before 354, drops, 421 closes."""

    event_handler: ScriptedHandler

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        upgrading = self._original_transport is not None  # STARTTLS: same connection
        super().connection_made(transport)
        if not upgrading:
            self.event_handler._connection_made()

    async def push(self, status: Any) -> None:
        await super().push(status)
        head = status[:3] if isinstance(status, bytes) else status[:3].encode()
        if head == b"421" and self.transport is not None:
            self.transport.close()

    async def answer(self, reply: str | None) -> str:
        """``reply`` for the caller to push, or drop the connection when it is None."""
        if reply is None:
            if isinstance(self.transport, asyncio.Transport):
                self.transport.abort()
            # connection_lost() cancels this task; wait for that rather than push to nobody.
            await self.loop.create_future()
        return reply or ""

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        envelope = self.envelope
        if not arg and envelope is not None and envelope.rcpt_tos:
            self.event_handler.commands.append("DATA")
            rule = self.event_handler._take("data", tuple(envelope.rcpt_tos))
            if rule is not None:
                await self.push(await self.answer(rule.reply))
                return
        await super().smtp_DATA(arg)


class ScriptedController(Controller):
    """aiosmtpd Controller on a free loopback port, serving :class:`ScriptedSMTP`."""

    handler: ScriptedHandler

    def __init__(self, handler: ScriptedHandler, *, security: str = "none", **kwargs: Any) -> None:
        super().__init__(
            handler, hostname="127.0.0.1", port=0, server_hostname="localhost", **kwargs
        )
        self.security = security

    def factory(self) -> ScriptedSMTP:
        return ScriptedSMTP(self.handler, **self.SMTP_kwargs)

    def _trigger_server(self) -> None:
        # Port 0 picks a free port; aiosmtpd's readiness probe needs the real one.
        if isinstance(self.server, asyncio.Server) and self.server.sockets:
            self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()

    def start(self) -> None:
        super().start()
        self.handler.connections = 0  # the readiness probe is not a client

    def stop(self, no_assert: bool = False) -> None:
        """Stop the server thread; closes client connections.  Safe to call twice."""
        if self._thread is not None:
            super().stop(no_assert)


def server_tls_context(ca: trustme.CA, *hostnames: str) -> ssl.SSLContext:
    """Server-side context with a certificate from ``ca`` for ``hostnames``."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*(hostnames or ("localhost", "127.0.0.1"))).configure_cert(context)
    return context


def _authenticator(accounts: dict[str, str]) -> Callable[..., AuthResult]:
    def authenticate(
        server: Any, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        if isinstance(data, LoginPassword):
            login = data.login.decode("utf-8", "replace")
            password = data.password.decode("utf-8", "replace")
            if accounts.get(login) == password:
                return AuthResult(success=True, auth_data=login)
        return AuthResult(success=False, handled=False)

    return authenticate


def start_server(
    *,
    security: str = "none",
    ca: trustme.CA | None = None,
    cert_hostnames: tuple[str, ...] = ("localhost", "127.0.0.1"),
    accounts: dict[str, str] | None = None,
    auth_require_tls: bool = True,
    auth_required: bool = False,
    handler: ScriptedHandler | None = None,
) -> tuple[str, int, ScriptedHandler, ScriptedController]:
    """Start a server on 127.0.0.1 and a free port; returns (host, port, handler, controller).

    ``security``: ``"none"``, ``"starttls"`` (offered, not required) or ``"tls"`` (implicit);
    both TLS modes need ``ca`` to sign a certificate for ``cert_hostnames``.  ``accounts`` maps
    user names to passwords and enables AUTH (over TLS only, unless ``auth_require_tls`` is
    false).  Call ``controller.stop()`` when done.
    """
    handler = handler or ScriptedHandler()
    kwargs: dict[str, Any] = {
        "auth_require_tls": auth_require_tls,
        "auth_required": auth_required,
    }
    if accounts is not None:
        kwargs["authenticator"] = _authenticator(accounts)
    if security in ("starttls", "tls"):
        if ca is None:
            raise ValueError(f"security={security!r} needs a CA to sign the certificate")
        context = server_tls_context(ca, *cert_hostnames)
        kwargs["tls_context" if security == "starttls" else "ssl_context"] = context
    elif security != "none":
        raise ValueError(f"security must be none, starttls or tls, not {security!r}")
    controller = ScriptedController(handler, security=security, **kwargs)
    controller.start()
    return controller.hostname, controller.port, handler, controller


@dataclass
class SmtpTestServer:
    """A running test server and what a client needs to reach it."""

    host: str
    port: int
    handler: ScriptedHandler
    controller: ScriptedController
    security: str
    ca_file: str | None = None
    stopped: bool = field(default=False, repr=False)

    def endpoint(self, **overrides: Any) -> SmtpEndpoint:
        """An endpoint for this server that trusts the test CA; fields can be overridden."""
        values: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "security": self.security,
            "timeout": 5.0,
            "ca_file": self.ca_file,
            "local_hostname": "localhost",
        }
        values.update(overrides)
        return SmtpEndpoint(**values)

    def stop(self) -> None:
        self.controller.stop()
        self.stopped = True


def launch(*, ca_file: str | None = None, **options: Any) -> SmtpTestServer:
    """:func:`start_server` wrapped in a :class:`SmtpTestServer`."""
    host, port, handler, controller = start_server(**options)
    return SmtpTestServer(host, port, handler, controller, controller.security, ca_file)


def write_ca_file(ca: trustme.CA, path: Path) -> str:
    """Write the CA certificate as PEM to ``path``; returns it as a string for ``ca_file``."""
    ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture(scope="session")
def smtp_ca() -> trustme.CA:
    """The CA that signs the test servers' certificates."""
    return trustme.CA()


@pytest.fixture(scope="session")
def smtp_ca_file(smtp_ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> str:
    """PEM file of ``smtp_ca``, for ``SmtpEndpoint.ca_file``."""
    return write_ca_file(smtp_ca, tmp_path_factory.mktemp("smtp-ca") / "ca.pem")


@pytest.fixture
def smtp_server_factory(
    smtp_ca: trustme.CA, smtp_ca_file: str
) -> Iterator[Callable[..., SmtpTestServer]]:
    """Start servers with :func:`start_server` options; all are stopped at teardown.

    TLS servers get a certificate from ``smtp_ca`` unless ``ca=`` says otherwise; their
    endpoints trust ``smtp_ca_file`` unless ``ca_file=`` says otherwise.
    """
    started: list[SmtpTestServer] = []

    def start(**options: Any) -> SmtpTestServer:
        options.setdefault("ca", smtp_ca)
        options.setdefault("ca_file", smtp_ca_file)
        server = launch(**options)
        started.append(server)
        return server

    yield start
    for server in reversed(started):
        server.handler.clear()
        server.stop()


@pytest.fixture
def smtp_server(smtp_server_factory: Callable[..., SmtpTestServer]) -> SmtpTestServer:
    """Plaintext server on loopback."""
    return smtp_server_factory()


@pytest.fixture
def smtp_starttls_server(smtp_server_factory: Callable[..., SmtpTestServer]) -> SmtpTestServer:
    """Server that offers STARTTLS with a certificate from ``smtp_ca``."""
    return smtp_server_factory(security="starttls")


@pytest.fixture
def smtp_tls_server(smtp_server_factory: Callable[..., SmtpTestServer]) -> SmtpTestServer:
    """Implicit-TLS server with a certificate from ``smtp_ca``."""
    return smtp_server_factory(security="tls")
