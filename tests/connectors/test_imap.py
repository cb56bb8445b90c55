"""ImapSource against a real Dovecot (tests/conftest_dovecot.py): read-only, incremental, resumable.

Skipped, with the reason, when Dovecot is not installed (.ci/install-imap.sh).
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from email.message import EmailMessage

import pytest

from connectors.base import ConnectorError, Page, PermanentError
from connectors.imap import ImapSource, encode_folder
from tests.conftest_dovecot import Dovecot, running_dovecot
from transforms.mime import TRUNCATION_HEADER, parse_message
from transforms.normalize_email import normalize_email

NOW = datetime(2025, 3, 1, tzinfo=UTC)


@pytest.fixture
def imap() -> Iterator[Dovecot]:
    """A real Dovecot of our own; skipped with the reason when it is not installed."""
    with running_dovecot() as server:
        yield server


def make(i: int, *, attachment: int = 0) -> bytes:
    msg = EmailMessage()
    msg["From"] = f"c{i}@example.com"
    msg["To"] = "support@example.test"
    msg["Subject"] = f"Complaint {i}"
    msg["Message-ID"] = f"<m{i}@example.com>"
    msg["Date"] = "Mon, 10 Feb 2025 09:00:00 +0000"
    msg.set_content(f"Complaint number {i}.")
    if attachment:
        msg.add_attachment(
            b"\x01" * attachment, maintype="application", subtype="zip", filename="logs.zip"
        )
    return msg.as_bytes().replace(b"\n", b"\r\n")


def source(server: Dovecot, **kwargs: object) -> ImapSource:
    options: dict[str, object] = {
        "host": server.host,
        "port": server.port,
        "security": "none",
        "user": server.user,
        "password": server.password,
        "timeout": 10,
    }
    options.update(kwargs)
    return ImapSource("inbox", **options)  # type: ignore[arg-type]


def drain(pages: Iterator[Page], state: dict[str, dict]) -> list[Page]:
    """Commit each page's cursor as the ingest flow would."""
    out = []
    for page in pages:
        json.dumps(page.cursor)
        state[page.stream] = page.cursor
        out.append(page)
    return out


def subjects(pages: list[Page]) -> list[str]:
    return [parse_message(raw).subject for page in pages for raw in page.records]  # type: ignore[arg-type]


@pytest.mark.slow
@pytest.mark.parametrize("security", ["ssl", "starttls", "none"])
def test_ingest_all_over_each_transport(imap: Dovecot, security: str) -> None:
    for i in range(5):
        imap.append(make(i))
    port = imap.ssl_port if security == "ssl" else imap.port
    context = imap.ssl_context() if security != "none" else None
    src = source(imap, security=security, port=port, ssl_context=context, batch_size=2)
    state: dict[str, dict] = {}
    pages = drain(src.pages(state), state)
    assert [len(p.records) for p in pages] == [2, 2, 1]
    assert {p.expected_total for p in pages} == {5}
    assert subjects(pages) == [f"Complaint {i}" for i in range(5)]
    assert pages[0].records[0] == make(0)
    validity = state["INBOX"]["uidvalidity"]
    assert pages[-1].record_ids[-1] == f"INBOX:{validity}:5"
    assert state["INBOX"]["last_uid"] == 5


@pytest.mark.slow
def test_tls_with_an_untrusted_certificate_is_refused(imap: Dovecot) -> None:
    src = source(imap, security="ssl", port=imap.ssl_port, ssl_context=None)
    with pytest.raises(PermanentError, match="TLS"):
        list(src.pages({}))


@pytest.mark.slow
def test_only_new_messages_are_fetched(imap: Dovecot) -> None:
    for i in range(3):
        imap.append(make(i))
    src = source(imap)
    state: dict[str, dict] = {}
    drain(src.pages(state), state)
    assert drain(src.pages(state), state) == []  # nothing new: no page at all
    imap.append(make(3))
    imap.append(make(4))
    assert subjects(drain(src.pages(state), state)) == ["Complaint 3", "Complaint 4"]


@pytest.mark.slow
def test_seen_and_other_flags_are_unchanged(imap: Dovecot) -> None:
    imap.append(make(0))
    imap.append(make(1), flags="\\Seen")
    imap.append(make(2), flags="\\Flagged")
    before = imap.flags()
    assert before == {1: set(), 2: {"\\Seen"}, 3: {"\\Flagged"}}
    drain(source(imap).pages({}), {})
    assert imap.flags() == before


@pytest.mark.slow
def test_uidvalidity_change_resyncs_without_duplicates_downstream(imap: Dovecot) -> None:
    for i in range(3):
        imap.append(make(i), folder="Billing")
    src = source(imap, folders=("INBOX", "Billing"))
    state: dict[str, dict] = {}
    first = drain(src.pages(state), state)
    old_validity = state["Billing"]["uidvalidity"]
    assert {p.stream for p in first} == {"INBOX", "Billing"}

    imap.recreate("Billing")  # restored from backup: same mail, new UIDs
    for i in range(4):
        imap.append(make(i), folder="Billing")
    second = drain(src.pages(state), state)
    assert state["Billing"]["uidvalidity"] != old_validity
    assert subjects(second) == [f"Complaint {i}" for i in range(4)]

    raws = [raw for p in first + second for raw in p.records]
    rids = [rid for p in first + second for rid in p.record_ids]
    assert len(set(rids)) == len(rids) == 7  # record ids differ: the UIDs are new
    out = normalize_email(raws, rids, source="inbox", ingested_at=NOW)  # type: ignore[arg-type]
    assert out.messages["message_key"].n_unique() == out.messages.height == 4
    assert out.tickets.height == 4


@pytest.mark.slow
def test_big_message_is_cut_at_the_cap_and_attachment_kept_as_metadata(imap: Dovecot) -> None:
    imap.append(make(0, attachment=400_000))
    imap.append(make(1))
    (page,) = drain(source(imap, max_message_bytes=20_000).pages({}), {})
    big, small = page.records
    assert big.startswith(TRUNCATION_HEADER.encode())  # type: ignore[union-attr]
    assert len(big) < 20_200
    assert small == make(1)
    parsed = parse_message(big)  # type: ignore[arg-type]
    assert parsed.truncated
    assert parsed.body == "Complaint number 0."
    assert [(a.filename, a.content_type) for a in parsed.attachments] == [
        ("logs.zip", "application/zip")
    ]


class CuttableProxy:
    """A TCP relay to the server whose connections can be cut, like a dropped network."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = self.listener.accept()
                upstream = socket.create_connection(("127.0.0.1", self.target))
                self.sockets += [client, upstream]
                for a, b in ((client, upstream), (upstream, client)):
                    threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)

    def cut(self) -> None:
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        self.cut()
        self.listener.close()


@pytest.mark.slow
def test_connection_dropped_mid_fetch_keeps_yielded_pages_and_resumes(imap: Dovecot) -> None:
    for i in range(7):
        imap.append(make(i))
    proxy = CuttableProxy(imap.port)
    try:
        src = source(imap, port=proxy.port, batch_size=3, timeout=5)
        state: dict[str, dict] = {}
        pages = src.pages(state)
        first = next(pages)
        state[first.stream] = first.cursor
        proxy.cut()
        with pytest.raises(ConnectorError, match="connection lost") as info:
            next(pages)
        assert not isinstance(info.value, PermanentError)  # worth a retry
    finally:
        proxy.close()
    assert state["INBOX"]["last_uid"] == 3
    rest = drain(source(imap).pages(state), state)
    got = subjects([first, *rest])
    assert got == [f"Complaint {i}" for i in range(7)]


@pytest.mark.slow
def test_wrong_password_is_a_clear_error_without_the_password(imap: Dovecot) -> None:
    secret = "not-the-password-" + imap.password
    src = source(imap, password=secret, connect_attempts=1)
    with pytest.raises(PermanentError, match="login refused") as info:
        list(src.pages({}))
    assert secret not in str(info.value)
    assert secret not in repr(src)


@pytest.mark.slow
def test_missing_folder_is_a_connector_error(imap: Dovecot) -> None:
    with pytest.raises(PermanentError, match="Nope"):
        list(source(imap, folders=("Nope",)).pages({}))


def test_cleartext_is_refused_off_loopback() -> None:
    with pytest.raises(ValueError, match="loopback"):
        ImapSource("x", host="imap.example.com", port=143, security="none", user="u", password="p")
    ImapSource("x", host="::1", port=143, security="none", user="u", password="p")


def test_unreachable_server_is_a_connector_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    src = ImapSource(
        "x",
        host="127.0.0.1",
        port=port,
        security="none",
        user="u",
        password="p",
        connect_attempts=1,
        timeout=2,
    )
    with pytest.raises(ConnectorError, match="cannot connect"):
        list(src.pages({}))


@pytest.mark.parametrize(
    ("name", "encoded"),
    [
        ("INBOX", '"INBOX"'),
        ("Réclamations", '"R&AOk-clamations"'),
        ("A&B", '"A&-B"'),
        ('Say "hi"', '"Say \\"hi\\""'),
    ],
)
def test_encode_folder(name: str, encoded: str) -> None:
    assert encode_folder(name) == encoded


def test_ssl_context_type_is_accepted() -> None:
    ImapSource(
        "x",
        host="127.0.0.1",
        port=993,
        security="ssl",
        user="u",
        password="p",
        ssl_context=ssl.create_default_context(),
    )
