"""SMTP delivery against a real aiosmtpd server on loopback.

The server is scripted per test: which replies it gives to RCPT and DATA, in
order, before it starts accepting. Every connection is counted, so "retried"
and "not retried" are measured, not assumed.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import socket
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

from connectors.smtp import SendResult, send
from tests.flows.test_alert_email import build, make_view

PASSWORD = "s3cr3t-Pa55-w0rd!"
USER = "alerts@acme.test"


@dataclass
class Script:
    """What the fake mail server answers, and what it received."""

    rcpt: dict[str, list[str]] = field(default_factory=dict)  # address -> replies, in order
    data: list[str] = field(default_factory=list)  # replies to DATA before accepting
    received: list[tuple[str, list[str], bytes]] = field(default_factory=list)
    logins: list[tuple[bytes, bool]] = field(default_factory=list)
    drop_after_data: int = 0  # sessions to cut after taking the message, before the reply

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        replies = self.rcpt.get(address)
        if replies:
            return replies.pop(0)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.data:
            return self.data.pop(0)
        self.received.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        if self.drop_after_data:
            # Accepted (stored), but the client never hears so: the one
            # ambiguous moment of SMTP.
            self.drop_after_data -= 1
            server.transport.abort()
        return "250 Message accepted for delivery"

    def authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        ok = isinstance(auth_data, LoginPassword) and auth_data.password == PASSWORD.encode()
        self.logins.append((auth_data.login, ok))
        return AuthResult(success=ok, handled=False)


class CountingController(Controller):
    """A controller that counts the SMTP sessions it serves."""

    def __init__(self, handler: Any, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.connections = 0

    def factory(self) -> SMTP:
        self.connections += 1
        return super().factory()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    script: Script
    controller: CountingController
    port: int

    @property
    def connections(self) -> int:
        return self.controller.connections


def start_server(script: Script, **kwargs: Any) -> Server:
    port = free_port()
    controller = CountingController(
        script,
        hostname="127.0.0.1",
        port=port,
        authenticator=script.authenticate,
        **kwargs,
    )
    controller.start()
    controller.connections = 0  # start() makes one connection of its own to check readiness
    return Server(script, controller, port)


@pytest.fixture
def script() -> Script:
    return Script()


@pytest.fixture
def server(script: Script) -> Iterator[Server]:
    srv = start_server(script, auth_require_tls=False)
    yield srv
    srv.controller.stop()


def alert_message(to: list[str] | None = None, bcc: str | None = None) -> EmailMessage:
    msg = build(make_view(), to=to or ["ceo@acme.test"], cc=[])
    if bcc:
        msg["Bcc"] = bcc
    return msg


def deliver(srv: Server, msg: EmailMessage, **kwargs: Any) -> SendResult:
    args: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": srv.port,
        "security": "none",
        "user": None,
        "password": None,
        "timeout": 5,
        "retries": 3,
        "backoff": 0.01,
    }
    args.update(kwargs)
    return send(msg, **args)


# --------------------------------------------------------------------------- delivery


def test_alert_arrives_whole(server: Server) -> None:
    msg = alert_message(to=["ceo@acme.test", "cfo@acme.test"], bcc="audit@acme.test")
    result = deliver(server, msg)
    assert result.status == "sent"
    assert result.accepted == ("ceo@acme.test", "cfo@acme.test", "audit@acme.test")
    assert result.refused == {}
    assert result.attempts == 1
    ((mail_from, rcpts, content),) = server.script.received
    assert mail_from == "alerts@acme.test"
    assert rcpts == ["ceo@acme.test", "cfo@acme.test", "audit@acme.test"]
    got = BytesParser(policy=policy.default).parsebytes(content)
    assert got["Bcc"] is None  # Bcc is envelope only
    assert got["Message-ID"] == "<pricing.new@backlash.invalid>"
    assert got["Subject"] == msg["Subject"]
    assert got["Date"].datetime == dt.datetime(2026, 3, 11, 12, 0, tzinfo=dt.UTC)
    assert got.get_content_type() == "multipart/related"
    text = got.get_body(preferencelist=("plain",))
    html = got.get_body(preferencelist=("html",))
    assert text is not None
    assert html is not None
    assert "Plan price rise" in text.get_content()
    (image,) = [p for p in got.walk() if p.get_content_type() == "image/png"]
    assert image.get_content().startswith(b"\x89PNG\r\n\x1a\n")
    cid = image["Content-ID"].strip("<>")
    assert f'src="cid:{cid}"' in html.get_content()


def test_login_then_send(server: Server) -> None:
    result = deliver(server, alert_message(), user=USER, password=PASSWORD)
    assert result.status == "sent"
    assert server.script.logins == [(USER.encode(), True)]
    assert len(server.script.received) == 1


# --------------------------------------------------------------------------- retries


def test_451_once_is_retried_and_delivered_once(server: Server) -> None:
    server.script.data = ["451 4.3.0 Try again later"]
    result = deliver(server, alert_message())
    assert result.status == "sent"
    assert result.attempts == 2
    assert server.connections == 2
    assert len(server.script.received) == 1


def test_drop_after_the_message_is_not_retried(server: Server) -> None:
    """A blind retry here is how duplicates happen: the server already has it."""
    server.script.drop_after_data = 1
    accepted: list[tuple[str, ...]] = []
    result = deliver(server, alert_message(), on_accepted=accepted.append)
    assert len(server.script.received) == 1
    assert server.connections == 1
    assert result.status == "failed"
    assert not result.permanent
    assert result.unconfirmed == ("ceo@acme.test",)
    assert result.deferred == ()
    assert accepted == []
    assert result.detail is not None
    assert "dropped" in result.detail


def test_drop_before_the_message_is_retried(server: Server) -> None:
    """Cut at RCPT: the server cannot have taken it, so a retry is safe."""
    server.script.rcpt = {"ceo@acme.test": ["421 4.3.2 Shutting down"]}
    accepted: list[tuple[str, ...]] = []
    result = deliver(server, alert_message(), on_accepted=accepted.append)
    assert result.status == "sent"
    assert result.unconfirmed == ()
    assert accepted == [("ceo@acme.test",)]
    assert len(server.script.received) == 1


def test_on_accepted_hears_each_acceptance_before_the_retries(server: Server) -> None:
    server.script.rcpt = {"cfo@acme.test": ["451 4.2.1 Busy"]}
    calls: list[tuple[tuple[str, ...], int]] = []
    result = deliver(
        server,
        alert_message(to=["ceo@acme.test", "cfo@acme.test"]),
        on_accepted=lambda rcpts: calls.append((rcpts, len(server.script.received))),
    )
    assert result.status == "sent"
    assert calls == [(("ceo@acme.test",), 1), (("cfo@acme.test",), 2)]


def test_envelope_overrides_the_headers(server: Server) -> None:
    msg = alert_message(to=["ceo@acme.test", "cfo@acme.test"])
    result = deliver(server, msg, envelope_to=["cfo@acme.test"])
    assert result.accepted == ("cfo@acme.test",)
    ((_, rcpts, content),) = server.script.received
    assert rcpts == ["cfo@acme.test"]
    got = BytesParser(policy=policy.default).parsebytes(content)
    assert got["To"] == "ceo@acme.test, cfo@acme.test"


def test_550_is_permanent_and_not_retried(server: Server) -> None:
    server.script.rcpt = {"ceo@acme.test": ["550 5.1.1 No such user"] * 5}
    result = deliver(server, alert_message())
    assert result.status == "failed"
    assert result.permanent
    assert result.detail is not None
    assert "550" in result.detail
    assert result.refused["ceo@acme.test"][0] == 550
    assert server.connections == 1
    assert server.script.received == []


def test_554_at_data_is_permanent(server: Server) -> None:
    server.script.data = ["554 5.7.1 Message rejected as spam"] * 5
    result = deliver(server, alert_message())
    assert (result.status, result.permanent) == ("failed", True)
    assert "554" in (result.detail or "")
    assert server.connections == 1


def test_persistent_4xx_fails_temporarily_after_all_retries(server: Server) -> None:
    server.script.data = ["452 4.3.1 Insufficient system storage"] * 10
    msg = alert_message()
    start = time.perf_counter()
    result = deliver(server, msg, retries=3, backoff=0.1)
    elapsed = time.perf_counter() - start
    assert (result.status, result.permanent) == ("failed", False)
    assert server.connections == 4
    assert result.attempts == 4
    assert elapsed >= 0.1 + 0.2 + 0.4  # exponential, not 3 x 0.1 s
    assert "452" in (result.detail or "")


def test_one_recipient_refused_the_other_delivered(server: Server) -> None:
    server.script.rcpt = {"gone@acme.test": ["550 5.1.1 No such user"] * 5}
    result = deliver(server, alert_message(to=["ceo@acme.test", "gone@acme.test"]))
    assert result.status == "sent"
    assert result.accepted == ("ceo@acme.test",)
    assert set(result.refused) == {"gone@acme.test"}
    assert result.refused["gone@acme.test"][0] == 550
    assert server.connections == 1
    assert [r for _, r, _ in server.script.received] == [["ceo@acme.test"]]


def test_deferred_recipient_is_retried_alone(server: Server) -> None:
    """A 4xx for one recipient must not send the message twice to the others."""
    server.script.rcpt = {"busy@acme.test": ["450 4.2.1 Mailbox busy"]}
    result = deliver(server, alert_message(to=["ceo@acme.test", "busy@acme.test"]))
    assert result.status == "sent"
    assert set(result.accepted) == {"ceo@acme.test", "busy@acme.test"}
    assert result.refused == {}
    assert [r for _, r, _ in server.script.received] == [["ceo@acme.test"], ["busy@acme.test"]]


def test_still_deferred_recipient_is_reported(server: Server) -> None:
    server.script.rcpt = {"busy@acme.test": ["450 4.2.1 Mailbox busy"] * 10}
    result = deliver(server, alert_message(to=["ceo@acme.test", "busy@acme.test"]), retries=1)
    assert result.status == "sent"
    assert result.accepted == ("ceo@acme.test",)
    assert result.deferred == ("busy@acme.test",)
    assert "busy@acme.test" in result.refused  # never recorded as delivered
    assert server.connections == 2


def test_connection_refused_is_retried_with_backoff() -> None:
    port = free_port()  # nothing listens there any more
    msg = alert_message()
    start = time.perf_counter()
    result = send(
        msg,
        host="127.0.0.1",
        port=port,
        security="none",
        user=None,
        password=None,
        timeout=2,
        retries=3,
        backoff=0.1,
    )
    elapsed = time.perf_counter() - start
    assert (result.status, result.permanent) == ("failed", False)
    assert result.attempts == 4
    assert result.deferred == ("ceo@acme.test",)
    assert result.refused == {}
    assert "ConnectionRefusedError" in (result.detail or "")
    assert elapsed >= 0.1 + 0.2 + 0.4  # exponential, not 3 x 0.1 s


def test_silent_server_times_out() -> None:
    """A server that accepts the connection and never greets must not hang the flow."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        msg = alert_message()
        start = time.perf_counter()
        result = send(
            msg,
            host="127.0.0.1",
            port=silent.getsockname()[1],
            security="none",
            user=None,
            password=None,
            timeout=0.3,
            retries=1,
            backoff=0.01,
        )
        elapsed = time.perf_counter() - start
    assert (result.status, result.permanent) == ("failed", False)
    assert result.attempts == 2
    assert "timed out" in (result.detail or "")
    assert elapsed < 3


# --------------------------------------------------------------------------- security


def test_wrong_password_is_permanent_and_never_leaks(
    server: Server, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    bad = PASSWORD + "-wrong"
    result = deliver(server, alert_message(), user=USER, password=bad)
    assert (result.status, result.permanent) == ("failed", True)
    assert "535" in (result.detail or "")
    assert server.connections == 1
    # smtplib tries each offered mechanism (PLAIN, then LOGIN) on one connection.
    assert server.script.logins
    assert all(login == (USER.encode(), False) for login in server.script.logins)
    ours = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("mail.log"))
    out, err = capfd.readouterr()
    for where in (ours, out, err, repr(result)):
        assert bad not in where
        assert PASSWORD not in where


def test_password_never_in_logs_on_success(
    server: Server, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    import base64

    caplog.set_level(logging.DEBUG)
    server.script.data = ["451 4.3.0 Try again later"]  # exercise the retry log line too
    result = deliver(server, alert_message(), user=USER, password=PASSWORD)
    assert result.status == "sent"
    ours = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("mail.log"))
    assert "retrying" in ours  # the logs were captured, and say something
    out, err = capfd.readouterr()
    plain_b64 = base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode()
    for where in (ours, out, err, repr(result)):
        assert PASSWORD not in where
        assert plain_b64 not in where


def test_no_credentials_in_clear_to_a_remote_host() -> None:
    msg = alert_message()
    start = time.perf_counter()
    result = send(
        msg,
        host="192.0.2.10",  # TEST-NET-1: must not even be contacted
        port=25,
        security="none",
        user=USER,
        password=PASSWORD,
        timeout=5,
    )
    assert (result.status, result.permanent) == ("failed", True)
    assert "unencrypted" in (result.detail or "")
    assert time.perf_counter() - start < 0.5


def test_starttls_not_offered_is_permanent(server: Server) -> None:
    result = deliver(server, alert_message(), security="starttls")
    assert (result.status, result.permanent) == ("failed", True)
    assert server.connections == 1
    assert server.script.received == []


def test_unknown_security_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="security"):
        send(alert_message(), host="x", port=1, security="tls", user=None, password=None)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- TLS


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    return ctx


def test_starttls_with_login(self_signed: tuple[Path, Path]) -> None:
    cert, key = self_signed
    script = Script()
    # auth_require_tls (the default): AUTH is refused unless STARTTLS came first.
    srv = start_server(script, tls_context=server_context(cert, key), require_starttls=True)
    try:
        trusted = ssl.create_default_context(cafile=str(cert))
        result = deliver(
            srv,
            alert_message(),
            security="starttls",
            user=USER,
            password=PASSWORD,
            ssl_context=trusted,
        )
        assert result.status == "sent", result.detail
        assert script.logins == [(USER.encode(), True)]
        assert len(script.received) == 1

        untrusted = deliver(srv, alert_message(), security="starttls", user=USER, password=PASSWORD)
        assert (untrusted.status, untrusted.permanent) == ("failed", True)
        assert "not trusted" in (untrusted.detail or "")
        assert len(script.logins) == 1  # the password never went to the unverified server
    finally:
        srv.controller.stop()


def test_implicit_tls(self_signed: tuple[Path, Path]) -> None:
    cert, key = self_signed
    script = Script()
    srv = start_server(script, ssl_context=server_context(cert, key))
    try:
        result = deliver(
            srv,
            alert_message(),
            security="ssl",
            ssl_context=ssl.create_default_context(cafile=str(cert)),
        )
        assert result.status == "sent", result.detail
        assert len(script.received) == 1
    finally:
        srv.controller.stop()
