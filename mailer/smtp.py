"""Thin adapter over smtplib: one reused connection, one recipient per message.

This is the only module in Rapport that imports smtplib.  It takes and returns plain values and
reports every failure as one of four errors, chosen by what the caller has to do next:

- :class:`SmtpTransient`: not delivered; try again later (a 4xx reply, or the connection was lost
  before the end of the message was written).
- :class:`SmtpPermanent`: refused with a 5xx reply at MAIL, RCPT or DATA; only a refusal at RCPT
  says that the address itself is bad.
- :class:`SmtpUncertain`: the whole message, end marker included, was written but no reply came
  back; the server may have it, so it is never retried automatically.
- :class:`SmtpUnavailable`: no usable connection (connect, TLS, STARTTLS, login); nothing was sent
  and the pass should stop.

DATA is driven by hand rather than through ``smtplib.SMTP.sendmail()``: only then do we know
whether the end-of-data marker left us before the connection failed, which is the line between
"safe to retry" and "may have been delivered".
"""

from __future__ import annotations

import contextlib
import logging
import re
import smtplib
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType

from mailer.tls import client_context
from program.config import is_loopback
from program.errors import DeliveryError

log = logging.getLogger(__name__)

SECURITY_MODES = ("starttls", "tls", "none")
_STAGE_NAMES = {"mail": "MAIL FROM", "rcpt": "RCPT TO", "data": "DATA"}
_LINE_END = re.compile(rb"\r\n|\r|\n")
_LEADING_DOT = re.compile(rb"^\.", re.MULTILINE)


@dataclass(frozen=True)
class SmtpEndpoint:
    """Where and how to connect.  ``timeout`` is in seconds, per socket operation.

    ``security``: ``"tls"`` is implicit TLS (usually port 465), ``"starttls"`` upgrades a plain
    connection and refuses to go on if the server does not offer it, ``"none"`` is plaintext.
    ``ca_file`` adds a CA bundle to the system store (private CAs, tests).  The password is read
    from the environment by the caller and never appears in reprs, logs or errors.
    """

    host: str
    port: int
    security: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout: float = 30.0
    ca_file: str | None = None
    local_hostname: str | None = None

    def __post_init__(self) -> None:
        if self.security not in SECURITY_MODES:
            raise ValueError(
                f"SMTP security must be one of {SECURITY_MODES}, not {self.security!r}"
            )
        if self.username is not None and self.password is None:
            raise ValueError(f"SMTP username {self.username!r} is set but the password is not")
        if not 0 < self.port < 65536:
            raise ValueError(f"SMTP port {self.port} is out of range")
        if self.timeout <= 0:
            raise ValueError(f"SMTP timeout must be positive, not {self.timeout}")

    @property
    def netloc(self) -> str:
        """``host:port`` (IPv6 hosts in brackets), for messages."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True)
class Accepted:
    """The server's 2xx reply to the end of the message (``text`` often holds a queue id)."""

    code: int
    text: str


class SmtpTransient(DeliveryError):
    """Not delivered this time (4xx, or connection lost before the message end): retry later.

    ``code`` is None when the connection was lost rather than refused.  ``stage`` is ``"mail"``,
    ``"rcpt"`` or ``"data"``.
    """

    def __init__(
        self, code: int | None, text: str, stage: str, *, server: str = "", recipient: str = ""
    ) -> None:
        self.code, self.text, self.stage = code, text, stage
        self.server, self.recipient = server, recipient
        super().__init__(_describe("temporary failure", code, text, stage, server, recipient))


class SmtpPermanent(DeliveryError):
    """Refused with 5xx.  Only ``stage == "rcpt"`` means the recipient address itself is bad.

    ``code`` is None when the address was refused before it reached the server (a line break in
    it, or non-ASCII characters that would need SMTPUTF8).
    """

    def __init__(
        self, code: int | None, text: str, stage: str, *, server: str = "", recipient: str = ""
    ) -> None:
        self.code, self.text, self.stage = code, text, stage
        self.server, self.recipient = server, recipient
        super().__init__(_describe("refused", code, text, stage, server, recipient))


class SmtpUncertain(DeliveryError):
    """The message end was written but no reply was read: it may have been delivered.

    Never retried automatically; a person decides.
    """

    def __init__(self, reason: str, *, server: str = "", recipient: str = "") -> None:
        self.reason, self.server, self.recipient = reason, server, recipient
        super().__init__(
            f"{server}: no reply after the end of the message to <{recipient}>, which may have"
            f" been delivered: {reason}"
        )


class SmtpUnavailable(DeliveryError):
    """No usable connection (connect, TLS, STARTTLS, login): nothing was sent; stop the pass."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def _describe(
    what: str, code: int | None, text: str, stage: str, server: str, recipient: str
) -> str:
    reply = f"{code} {text}" if code is not None else text
    return f"{server}: {_STAGE_NAMES.get(stage, stage)} for <{recipient}> {what}: {reply}"


class _Retry(Exception):
    """Internal: the connection broke, or said 421, before the server could have the message."""

    def __init__(self, code: int | None, text: str, stage: str) -> None:
        super().__init__(text)
        self.code, self.text, self.stage = code, text, stage


ClientFactory = Callable[[SmtpEndpoint, "ssl.SSLContext | None"], smtplib.SMTP]


def default_factory(endpoint: SmtpEndpoint, context: ssl.SSLContext | None) -> smtplib.SMTP:
    """Connect and read the greeting; raises OSError or smtplib errors.

    Tests pass their own factory to :class:`SmtpConnection` to wrap this one and inject faults.
    """
    if endpoint.security == "tls":
        return smtplib.SMTP_SSL(
            endpoint.host,
            endpoint.port,
            local_hostname=endpoint.local_hostname,
            timeout=endpoint.timeout,
            context=context,
        )
    return smtplib.SMTP(
        endpoint.host,
        endpoint.port,
        local_hostname=endpoint.local_hostname,
        timeout=endpoint.timeout,
    )


class SmtpConnection:
    """One SMTP connection reused for a batch of messages, one recipient per message.

    Opens lazily on the first :meth:`send` (or call :meth:`open` to fail fast).  A connection
    lost before the end of a message, or a 421 reply, is re-opened once and that message tried
    once more.  ``sent_count`` counts accepted messages; ``reconnect_count`` counts every
    connection attempt after the first successful one.
    """

    def __init__(self, endpoint: SmtpEndpoint, *, factory: ClientFactory | None = None) -> None:
        self.endpoint = endpoint
        self._factory = factory or default_factory
        self._client: smtplib.SMTP | None = None
        self._context: ssl.SSLContext | None = None
        self._ever_opened = False
        self.sent_count = 0
        self.reconnect_count = 0

    def __repr__(self) -> str:
        state = "open" if self._client is not None else "closed"
        return f"<SmtpConnection {self.endpoint.netloc} {state} sent={self.sent_count}>"

    def __enter__(self) -> SmtpConnection:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def is_open(self) -> bool:
        return self._client is not None

    def open(self) -> None:
        """Connect, secure and log in, unless already open.  Raises :class:`SmtpUnavailable`."""
        if self._client is not None:
            return
        ep = self.endpoint
        if ep.username is not None and ep.security == "none" and not is_loopback(ep.host):
            raise SmtpUnavailable(
                f"{ep.netloc}: refusing to send the password of {ep.username!r} without TLS"
                " to a host that is not loopback"
            )
        context = self._tls_context()
        if self._ever_opened:
            self.reconnect_count += 1
        client = self._connect(context)
        self._client = client
        self._ever_opened = True
        log.debug("connected to %s (%s)", ep.netloc, ep.security)

    def send(self, sender: str, recipient: str, data: bytes) -> Accepted:
        """Send ``data`` (the whole message, CRLF line endings) from ``sender`` to ``recipient``.

        Returns the server's 2xx reply; raises :class:`SmtpTransient`, :class:`SmtpPermanent`,
        :class:`SmtpUncertain` or :class:`SmtpUnavailable`.
        """
        _check_address(sender, "mail", self.endpoint.netloc, recipient)
        _check_address(recipient, "rcpt", self.endpoint.netloc, recipient)
        payload = _encode_payload(data)
        self.open()
        try:
            accepted = self._transaction(sender, recipient, payload)
        except _Retry as first:
            log.info(
                "SMTP %s: %s at %s; reconnecting once",
                self.endpoint.netloc,
                first.text,
                _STAGE_NAMES[first.stage],
            )
            self._discard()
            self.open()
            try:
                accepted = self._transaction(sender, recipient, payload)
            except _Retry as second:
                self._discard()
                raise SmtpTransient(
                    second.code,
                    second.text,
                    second.stage,
                    server=self.endpoint.netloc,
                    recipient=recipient,
                ) from second.__cause__
        self.sent_count += 1
        return accepted

    def close(self) -> None:
        """Say QUIT and close, ignoring errors.  The connection may be opened again later."""
        client, self._client = self._client, None
        if client is None:
            return
        try:
            client.quit()
        except OSError:
            pass
        finally:
            _close_quietly(client)

    def _tls_context(self) -> ssl.SSLContext | None:
        if self.endpoint.security == "none":
            return None
        if self._context is None:
            self._context = client_context(self.endpoint.ca_file, SmtpUnavailable)
        return self._context

    def _connect(self, context: ssl.SSLContext | None) -> smtplib.SMTP:
        ep = self.endpoint
        step, client = "connect", None
        try:
            client = self._factory(ep, context)
            step = "EHLO"
            client.ehlo_or_helo_if_needed()
            if ep.security == "starttls":
                if not client.has_extn("starttls"):
                    raise SmtpUnavailable(
                        f"{ep.netloc} does not offer STARTTLS; refusing to continue without TLS"
                    )
                step = "STARTTLS"
                client.starttls(context=context)
                step = "EHLO"
                client.ehlo_or_helo_if_needed()
            if ep.username is not None:
                step = "AUTH"
                client.login(ep.username, ep.password or "")
            return client
        except BaseException as exc:
            if client is not None:
                _close_quietly(client)
            if not isinstance(exc, OSError):
                raise
            raise SmtpUnavailable(_setup_failure(ep, step, exc)) from exc

    def _transaction(self, sender: str, recipient: str, payload: bytes) -> Accepted:
        client = self._client
        if client is None:  # open() has just succeeded, so this is a bug, not a state
            raise RuntimeError("SMTP connection is not open")
        stage = "mail"
        try:
            code, reply = client.mail(sender)
            self._check(code, reply, stage, recipient, ok=range(200, 300))
            stage = "rcpt"
            code, reply = client.rcpt(recipient)
            self._check(code, reply, stage, recipient, ok=range(200, 300))
            stage = "data"
            code, reply = client.docmd("DATA")
            self._check(code, reply, stage, recipient, ok=range(354, 355))
            # One write for body and end marker: if it raises, the marker's last bytes were not
            # sent, so the server cannot hold a complete message and a retry is safe.
            client.send(payload)
        except OSError as exc:
            raise _Retry(None, f"connection lost ({exc})", stage) from exc
        # The end marker has left us: from here on the server may have the message.
        try:
            code, reply = client.getreply()
        except OSError as exc:
            self._discard()
            raise SmtpUncertain(
                str(exc) or type(exc).__name__, server=self.endpoint.netloc, recipient=recipient
            ) from exc
        text = _text(reply)
        if 200 <= code < 300:
            return Accepted(code, text)
        if code == 421:
            raise _Retry(code, text, "data")
        if 400 <= code < 600:
            cls = SmtpTransient if code < 500 else SmtpPermanent
            raise cls(code, text, "data", server=self.endpoint.netloc, recipient=recipient)
        self._discard()
        raise SmtpUncertain(
            f"unexpected reply {code} {text}", server=self.endpoint.netloc, recipient=recipient
        )

    def _check(self, code: int, reply: bytes, stage: str, recipient: str, *, ok: range) -> None:
        """Accept ``ok`` codes; otherwise reset the transaction and raise what fits."""
        if code in ok:
            return
        text = _text(reply)
        if code == 421 or not 400 <= code < 600:
            # 421: the server is closing the connection.  Anything else out of place leaves the
            # dialogue in an unknown state.  Either way nothing of the message was sent.
            raise _Retry(code, text, stage)
        self._reset()
        cls = SmtpTransient if code < 500 else SmtpPermanent
        raise cls(code, text, stage, server=self.endpoint.netloc, recipient=recipient)

    def _reset(self) -> None:
        """RSET after a refusal so that the connection can carry the next message."""
        client = self._client
        if client is None:
            return
        try:
            code, _ = client.rset()
        except OSError:
            code = 0
        if code != 250:
            self._discard()

    def _discard(self) -> None:
        """Drop the connection without QUIT; the next send opens a new one."""
        client, self._client = self._client, None
        if client is not None:
            _close_quietly(client)


def _setup_failure(ep: SmtpEndpoint, step: str, exc: OSError) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"{ep.netloc}: TLS certificate verification failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return f"{ep.netloc}: TLS handshake failed: {exc}"
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        reply = f"{exc.smtp_code} {_text(exc.smtp_error)}"
        return f"{ep.netloc} refused the login of {ep.username!r}: {reply}"
    if isinstance(exc, smtplib.SMTPResponseException):
        what = "the connection" if step == "connect" else step
        return f"{ep.netloc} refused {what}: {exc.smtp_code} {_text(exc.smtp_error)}"
    if step == "connect":
        return f"{ep.netloc}: cannot connect: {exc}"
    return f"{ep.netloc}: {step} failed: {exc}"


def _encode_payload(data: bytes) -> bytes:
    """CRLF line endings, leading dots doubled (RFC 5321 4.5.2), then the end marker.

    Bare CR and LF are turned into CRLF as smtplib does, so that no lone line end can make a
    server see an end of data that we did not mean.
    """
    body = _LEADING_DOT.sub(b"..", _LINE_END.sub(b"\r\n", data))
    if not body.endswith(b"\r\n"):
        body += b"\r\n"
    return body + b".\r\n"


def _check_address(address: str, stage: str, server: str, recipient: str) -> None:
    problem = None
    if "\r" in address or "\n" in address:
        problem = "the address contains a line break"
    elif not address.isascii():
        problem = "the address is not ASCII, which would need SMTPUTF8 (not used)"
    if problem:
        raise SmtpPermanent(None, problem, stage, server=server, recipient=recipient)


def _text(reply: bytes | str) -> str:
    if isinstance(reply, bytes):
        return reply.decode("utf-8", "replace")
    return reply


def _close_quietly(client: smtplib.SMTP) -> None:
    with contextlib.suppress(OSError):
        client.close()
