"""The SMTP adapter against a real aiosmtpd server on loopback, with scripted faults."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from typing import Any

import pytest
import trustme

from mailer.smtp import (
    Accepted,
    SmtpConnection,
    SmtpEndpoint,
    SmtpPermanent,
    SmtpTransient,
    SmtpUnavailable,
    SmtpUncertain,
    default_factory,
)
from tests.smtp_server import SmtpTestServer, start_server

# Harmless once tests/conftest.py registers the same plugin.

SENDER = "rapport@example.org"
ALICE = "alice@example.org"
BOB = "bob@example.org"
SECRET = "s3cret-Pa55word"


def message(subject: str = "Topic 1", body: str = "Hello.\r\n") -> bytes:
    return (
        f"From: {SENDER}\r\nTo: {ALICE}\r\nSubject: {subject}\r\nMIME-Version: 1.0\r\n\r\n{body}"
    ).encode()


def send_one(endpoint: SmtpEndpoint, recipient: str = ALICE, **kwargs: Any) -> Accepted:
    with SmtpConnection(endpoint, **kwargs) as connection:
        return connection.send(SENDER, recipient, message())


def test_plaintext_send_to_loopback(smtp_server: SmtpTestServer) -> None:
    """A message over plaintext to loopback arrives with its envelope and bytes intact."""
    accepted = send_one(smtp_server.endpoint())
    assert accepted.code == 250
    [received] = smtp_server.handler.accepted
    assert (received.sender, received.recipients) == (SENDER, (ALICE,))
    assert received.data == message()
    assert smtp_server.handler.commands[-1] == "QUIT"


def test_connection_reused_for_several_messages(smtp_server: SmtpTestServer) -> None:
    """Several sends share one connection; the counters say so."""
    with SmtpConnection(smtp_server.endpoint()) as connection:
        for n in range(5):
            connection.send(SENDER, f"user{n}@example.org", message(f"n{n}"))
        assert (connection.sent_count, connection.reconnect_count) == (5, 0)
    assert smtp_server.handler.connections == 1
    assert len(smtp_server.handler.accepted) == 5


def test_close_is_idempotent_and_reopens_lazily(smtp_server: SmtpTestServer) -> None:
    """close() twice is harmless, and a later send opens a new connection."""
    connection = SmtpConnection(smtp_server.endpoint())
    assert not connection.is_open
    connection.send(SENDER, ALICE, message())
    connection.close()
    connection.close()
    connection.send(SENDER, BOB, message())
    connection.close()
    assert smtp_server.handler.connections == 2
    assert connection.reconnect_count == 1


def test_starttls_with_trusted_ca(smtp_starttls_server: SmtpTestServer) -> None:
    """STARTTLS succeeds when the certificate chains to the trusted CA."""
    assert send_one(smtp_starttls_server.endpoint()).code == 250
    assert len(smtp_starttls_server.handler.accepted) == 1
    assert smtp_starttls_server.handler.connections == 1


def test_implicit_tls(smtp_tls_server: SmtpTestServer) -> None:
    """Implicit TLS (SMTP_SSL) delivers with certificate checks on."""
    assert send_one(smtp_tls_server.endpoint()).code == 250
    assert len(smtp_tls_server.handler.accepted) == 1


@pytest.mark.parametrize("security", ["starttls", "tls"])
def test_untrusted_certificate_refused(
    smtp_server_factory: Callable[..., SmtpTestServer], security: str
) -> None:
    """A certificate from a CA the client does not trust stops the pass before any MAIL."""
    server = smtp_server_factory(security=security, ca=trustme.CA())
    with pytest.raises(SmtpUnavailable, match="certificate verification failed"):
        send_one(server.endpoint())
    assert server.handler.messages == []
    assert not any(c.startswith("MAIL") for c in server.handler.commands)


def test_certificate_for_another_host_refused(
    smtp_server_factory: Callable[..., SmtpTestServer],
) -> None:
    """A trusted certificate issued for another name is refused (hostname check)."""
    server = smtp_server_factory(security="starttls", cert_hostnames=("mail.example.net",))
    with pytest.raises(SmtpUnavailable, match="certificate verification failed"):
        send_one(server.endpoint())


def test_starttls_not_offered(smtp_server: SmtpTestServer) -> None:
    """security=starttls against a server without STARTTLS refuses to go on in plaintext."""
    with pytest.raises(SmtpUnavailable, match="does not offer STARTTLS"):
        send_one(smtp_server.endpoint(security="starttls"))
    assert not any(c.startswith("MAIL") for c in smtp_server.handler.commands)


def test_auth_success(smtp_server_factory: Callable[..., SmtpTestServer]) -> None:
    """Login over STARTTLS with the right password, on a server that requires it."""
    server = smtp_server_factory(
        security="starttls", accounts={"rapport": SECRET}, auth_required=True
    )
    assert send_one(server.endpoint(username="rapport", password=SECRET)).code == 250
    assert len(server.handler.accepted) == 1


def test_auth_wrong_password(smtp_server_factory: Callable[..., SmtpTestServer]) -> None:
    """A refused login is SmtpUnavailable naming the user, never the password."""
    server = smtp_server_factory(
        security="starttls", accounts={"rapport": "other"}, auth_required=True
    )
    with pytest.raises(SmtpUnavailable, match="refused the login of 'rapport'") as caught:
        send_one(server.endpoint(username="rapport", password=SECRET))
    assert SECRET not in str(caught.value) and SECRET not in repr(caught.value)
    assert server.handler.messages == []


def test_plaintext_auth_allowed_on_loopback(
    smtp_server_factory: Callable[..., SmtpTestServer],
) -> None:
    """AUTH over plaintext is allowed when the server is on loopback."""
    server = smtp_server_factory(accounts={"rapport": SECRET}, auth_require_tls=False)
    assert send_one(server.endpoint(username="rapport", password=SECRET)).code == 250


def test_plaintext_auth_refused_for_remote_host() -> None:
    """AUTH over plaintext to a non-loopback host is refused before connecting."""
    calls: list[str] = []

    def factory(endpoint: SmtpEndpoint, context: Any) -> Any:
        calls.append(endpoint.host)
        raise AssertionError("must not connect")

    endpoint = SmtpEndpoint("192.0.2.1", 25, "none", username="rapport", password=SECRET)
    with pytest.raises(SmtpUnavailable, match="without TLS"):
        send_one(endpoint, factory=factory)
    assert calls == []


def test_cannot_connect() -> None:
    """A port nobody listens on is SmtpUnavailable."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(SmtpUnavailable, match="cannot connect"):
        send_one(SmtpEndpoint("127.0.0.1", port, "none", timeout=5))


def test_rcpt_550_is_permanent_and_connection_stays_usable(smtp_server: SmtpTestServer) -> None:
    """550 at RCPT is SmtpPermanent(stage="rcpt"); RSET keeps the connection for the next one."""
    smtp_server.handler.reject_rcpt(BOB, "550 5.1.1 no such user")
    with SmtpConnection(smtp_server.endpoint()) as connection:
        with pytest.raises(SmtpPermanent) as caught:
            connection.send(SENDER, BOB, message())
        assert (caught.value.code, caught.value.stage) == (550, "rcpt")
        assert "no such user" in caught.value.text and BOB in str(caught.value)
        assert connection.send(SENDER, ALICE, message()).code == 250
        assert connection.sent_count == 1
    assert smtp_server.handler.connections == 1
    assert "RSET" in smtp_server.handler.commands
    assert [m.recipients for m in smtp_server.handler.accepted] == [(ALICE,)]


@pytest.mark.parametrize(
    ("stage", "reply", "error", "code"),
    [
        ("rcpt", "451 4.3.0 try later", SmtpTransient, 451),
        ("mail", "452 4.3.1 out of space", SmtpTransient, 452),
        ("mail", "553 5.7.1 sender refused", SmtpPermanent, 553),
        ("data", "554 5.3.0 no DATA today", SmtpPermanent, 554),
        ("data_end", "451 4.7.1 greylisted", SmtpTransient, 451),
        ("data_end", "552 5.3.4 message too big", SmtpPermanent, 552),
    ],
)
def test_refusals_by_stage(
    smtp_server: SmtpTestServer, stage: str, reply: str, error: type[Exception], code: int
) -> None:
    """4xx is SmtpTransient and 5xx SmtpPermanent, with the stage; the next message still goes."""
    smtp_server.handler.reply(stage, reply)
    with SmtpConnection(smtp_server.endpoint()) as connection:
        with pytest.raises(error) as caught:
            connection.send(SENDER, BOB, message())
        assert caught.value.code == code  # type: ignore[attr-defined]
        assert caught.value.stage == ("data" if stage == "data_end" else stage)  # type: ignore[attr-defined]
        assert connection.send(SENDER, ALICE, message()).code == 250
    assert smtp_server.handler.connections == 1
    assert [m.recipients for m in smtp_server.handler.accepted] == [(ALICE,)]


def test_421_on_mail_reconnects_once(smtp_server: SmtpTestServer) -> None:
    """421 at MAIL (server closes): one reconnect, the message delivered once."""
    smtp_server.handler.reply("mail", "421 4.3.2 shutting down")
    with SmtpConnection(smtp_server.endpoint()) as connection:
        assert connection.send(SENDER, ALICE, message()).code == 250
        assert (connection.sent_count, connection.reconnect_count) == (1, 1)
    assert smtp_server.handler.connections == 2
    assert len(smtp_server.handler.accepted) == 1


def test_421_twice_is_transient(smtp_server: SmtpTestServer) -> None:
    """421 again after the reconnect gives up with SmtpTransient(421)."""
    smtp_server.handler.reply("mail", "421 4.3.2 shutting down", times=2)
    with SmtpConnection(smtp_server.endpoint()) as connection:
        with pytest.raises(SmtpTransient) as caught:
            connection.send(SENDER, ALICE, message())
        assert (caught.value.code, caught.value.stage) == (421, "mail")
        assert connection.reconnect_count == 1
        assert connection.send(SENDER, ALICE, message()).code == 250
    assert len(smtp_server.handler.accepted) == 1


def test_drop_before_354_reconnects_and_delivers_once(smtp_server: SmtpTestServer) -> None:
    """A connection dropped at DATA (before 354) is retried once on a new connection."""
    smtp_server.handler.drop("data")
    with SmtpConnection(smtp_server.endpoint()) as connection:
        assert connection.send(SENDER, ALICE, message()).code == 250
        assert connection.reconnect_count == 1
    assert smtp_server.handler.connections == 2
    assert len(smtp_server.handler.messages) == 1
    assert len(smtp_server.handler.accepted) == 1


def test_drop_twice_is_transient(smtp_server: SmtpTestServer) -> None:
    """Dropped again after the reconnect: SmtpTransient with no code, nothing received."""
    smtp_server.handler.drop("rcpt", times=2)
    with pytest.raises(SmtpTransient) as caught:
        send_one(smtp_server.endpoint())
    assert (caught.value.code, caught.value.stage) == (None, "rcpt")
    assert smtp_server.handler.messages == []


def test_failed_reconnect_is_unavailable(smtp_server: SmtpTestServer) -> None:
    """When the reconnect itself cannot connect, the pass stops with SmtpUnavailable."""
    smtp_server.handler.drop("mail")
    calls: list[int] = []

    def factory(endpoint: SmtpEndpoint, context: Any) -> Any:
        calls.append(1)
        if len(calls) > 1:
            raise ConnectionRefusedError("refused")
        return default_factory(endpoint, context)

    with pytest.raises(SmtpUnavailable, match="cannot connect"):
        send_one(smtp_server.endpoint(), factory=factory)
    assert smtp_server.handler.messages == []


def test_write_failure_before_message_end_is_retried(smtp_server: SmtpTestServer) -> None:
    """A failure while writing the message (end marker not sent) reconnects and resends once."""
    clients: list[Any] = []

    def factory(endpoint: SmtpEndpoint, context: Any) -> Any:
        client = default_factory(endpoint, context)
        if not clients:
            real_send = client.send

            def send(data: bytes | str) -> None:
                if isinstance(data, bytes) and data.endswith(b"\r\n.\r\n"):
                    real_send(data[: len(data) // 2])
                    if client.sock is not None:
                        client.sock.close()
                    raise ConnectionResetError("reset while writing")
                real_send(data)

            client.send = send  # type: ignore[method-assign,assignment]
        clients.append(client)
        return client

    with SmtpConnection(smtp_server.endpoint(), factory=factory) as connection:
        assert connection.send(SENDER, ALICE, message()).code == 250
        assert connection.reconnect_count == 1
    assert len(clients) == 2
    assert [m.data for m in smtp_server.handler.messages] == [message()]


def test_drop_after_message_end_is_uncertain(smtp_server: SmtpTestServer) -> None:
    """No reply after the end marker: SmtpUncertain, not retried, though the server has it."""
    smtp_server.handler.drop("data_end")
    with SmtpConnection(smtp_server.endpoint()) as connection:
        with pytest.raises(SmtpUncertain) as caught:
            connection.send(SENDER, ALICE, message())
        assert ALICE in str(caught.value)
        assert (connection.sent_count, connection.reconnect_count) == (0, 0)
        assert not connection.is_open
        assert connection.send(SENDER, BOB, message()).code == 250
    [dropped, accepted] = smtp_server.handler.messages
    assert (dropped.outcome, dropped.recipients, dropped.data) == ("dropped", (ALICE,), message())
    assert accepted.recipients == (BOB,)


def test_timeout_after_message_end_is_uncertain(smtp_server: SmtpTestServer) -> None:
    """A reply that never comes within the timeout after the end marker is SmtpUncertain."""
    hold = smtp_server.handler.hold(ALICE)
    try:
        with pytest.raises(SmtpUncertain, match="timed out"):
            send_one(smtp_server.endpoint(timeout=0.3))
        assert hold.arrived.is_set()
    finally:
        hold.release()
    assert len(smtp_server.handler.messages) == 1


def test_hold_keeps_a_message_in_flight_until_released(smtp_server: SmtpTestServer) -> None:
    """hold() stalls the reply to one message until release(); then it is accepted."""
    hold = smtp_server.handler.hold(ALICE)
    results: list[Accepted] = []
    sender = threading.Thread(target=lambda: results.append(send_one(smtp_server.endpoint())))
    sender.start()
    try:
        assert hold.arrived.wait(5)
        assert results == [] and hold.message is not None
        assert hold.message.outcome == "held"
    finally:
        hold.release()
        sender.join(5)
    assert not sender.is_alive()
    assert [r.code for r in results] == [250]
    assert len(smtp_server.handler.accepted) == 1


def test_dot_stuffing(smtp_server: SmtpTestServer) -> None:
    """Lines starting with "." (and a lone ".") arrive intact."""
    body = ".hidden\r\n..two dots\r\n.\r\nmiddle . dot\r\n. \r\n.last"
    with SmtpConnection(smtp_server.endpoint()) as connection:
        connection.send(SENDER, ALICE, message(body=body))
        connection.send(SENDER, ALICE, b".first line")
    first, second = (m.data for m in smtp_server.handler.accepted)
    assert first == message(body=body + "\r\n")
    assert second == b".first line\r\n"


def test_bare_line_feeds_become_crlf(smtp_server: SmtpTestServer) -> None:
    """Bare LF and CR are sent as CRLF, so "\\n.\\n" cannot end the data early."""
    send_data = b"Subject: x\n\nline one\n.\nline three\rend\r\n"
    with SmtpConnection(smtp_server.endpoint()) as connection:
        connection.send(SENDER, ALICE, send_data)
    [received] = smtp_server.handler.accepted
    assert received.data == b"Subject: x\r\n\r\nline one\r\n.\r\nline three\r\nend\r\n"


def test_address_with_line_break_refused_locally(smtp_server: SmtpTestServer) -> None:
    """A recipient with a line break is SmtpPermanent(stage="rcpt") and never reaches the server."""
    with pytest.raises(SmtpPermanent) as caught:
        send_one(smtp_server.endpoint(), recipient="bob@example.org\r\nRCPT TO:<x@y>")
    assert (caught.value.code, caught.value.stage) == (None, "rcpt")
    assert smtp_server.handler.commands == []


def test_password_never_shown() -> None:
    """The password appears in no repr or str of the endpoint, connection or errors."""
    endpoint = SmtpEndpoint(
        "smtp.example.org", 587, "starttls", username="rapport", password=SECRET
    )
    connection = SmtpConnection(endpoint)
    errors = [
        SmtpTransient(451, "later", "rcpt", server=endpoint.netloc, recipient=ALICE),
        SmtpPermanent(550, "no", "rcpt", server=endpoint.netloc, recipient=ALICE),
        SmtpUncertain("timed out", server=endpoint.netloc, recipient=ALICE),
        SmtpUnavailable("x"),
    ]
    for thing in [endpoint, connection, *errors]:
        assert SECRET not in repr(thing) and SECRET not in str(thing)


def test_endpoint_rejects_bad_values() -> None:
    """Unknown security, a user without password and a bad port are refused at once."""
    with pytest.raises(ValueError, match="security"):
        SmtpEndpoint("localhost", 25, "ssl")
    with pytest.raises(ValueError, match="password"):
        SmtpEndpoint("localhost", 25, "none", username="rapport")
    with pytest.raises(ValueError, match="port"):
        SmtpEndpoint("localhost", 0, "none")


def test_server_threads_stop() -> None:
    """start_server() followed by stop() leaves no thread behind."""
    before = set(threading.enumerate())
    host, port, handler, controller = start_server()
    assert send_one(SmtpEndpoint(host, port, "none", local_hostname="localhost")).code == 250
    controller.stop()
    controller.stop()
    assert set(threading.enumerate()) <= before
    assert len(handler.accepted) == 1
