"""Support mailboxes over IMAP, read-only and incremental.

Built on stdlib ``imaplib``: the protocol surface we need (EXAMINE, UID FETCH
with a partial body) is small, and imaplib takes an SSL context and a timeout.

The mailbox belongs to people who work in it, so nothing here may change it:
folders are opened with ``EXAMINE`` (read-only) and bodies are fetched with
``BODY.PEEK[]``, so ``\\Seen`` flags stay as they were and no mail moves.

Each folder is a stream; its cursor is ``{"uidvalidity", "last_uid"}``. A run
fetches UIDs above ``last_uid`` in pages; a page's cursor never points past the
last message it holds, so a connection lost mid-run keeps the pages already
yielded and the next run resumes after them. If the server's UIDVALIDITY
changed (mailbox recreated or restored), UIDs mean nothing any more: the folder
is read again from UID 1, and the duplicates are dropped downstream by
Message-ID (``core.messages.message_key = source:Message-ID``).
"""

from __future__ import annotations

import base64
import contextlib
import imaplib
import re
import ssl
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from connectors.base import ConnectorError, Cursor, Page, PermanentError, is_loopback
from connectors.mailbox import TRUNCATION_HEADER

__all__ = ["ImapSource", "encode_folder"]

Security = Literal["ssl", "starttls", "none"]

_SIZE_RE = re.compile(rb"RFC822\.SIZE (\d+)")
_UID_RE = re.compile(rb"UID (\d+)")
_NETWORK_ERRORS = (OSError, imaplib.IMAP4.abort, EOFError)


def encode_folder(name: str) -> str:
    """A folder name as an IMAP quoted string, non-ASCII in modified UTF-7 (RFC 3501 5.1.3)."""
    out: list[str] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            b64 = base64.b64encode("".join(pending).encode("utf-16-be")).decode("ascii")
            out.append("&" + b64.rstrip("=").replace("/", ",") + "-")
            pending.clear()

    for ch in name:
        if 0x20 <= ord(ch) <= 0x7E:
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            pending.append(ch)
    flush()
    encoded = "".join(out).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{encoded}"'


@dataclass(frozen=True, slots=True)
class _Fetched:
    uid: int
    size: int
    raw: bytes


class ImapSource:
    """Read-only, incremental reader of one IMAP account's folders."""

    def __init__(
        self,
        name: str,
        *,
        host: str,
        port: int,
        security: Security,
        user: str,
        password: str,
        folders: Sequence[str] = ("INBOX",),
        batch_size: int = 200,
        max_message_bytes: int = 5_000_000,
        timeout: float = 30,
        ssl_context: ssl.SSLContext | None = None,
        max_batch_bytes: int = 50_000_000,
        connect_attempts: int = 3,
    ) -> None:
        if security not in ("ssl", "starttls", "none"):
            raise ValueError(f"security must be ssl, starttls or none, not {security!r}")
        if security == "none" and not is_loopback(host):
            # A password in clear text over a network is never what anyone meant.
            raise ValueError(f"IMAP source {name!r}: security 'none' is only for loopback hosts")
        if batch_size < 1 or max_message_bytes < 1:
            raise ValueError("batch_size and max_message_bytes must be positive")
        self.name = name
        self.host = host
        self.port = port
        self.security = security
        self.user = user
        self._password = password
        self.folders = tuple(folders)
        self.batch_size = batch_size
        self.max_message_bytes = max_message_bytes
        self.max_batch_bytes = max_batch_bytes
        self.timeout = timeout
        self.ssl_context = ssl_context
        self.connect_attempts = max(1, connect_attempts)

    def __repr__(self) -> str:  # never show the password
        return f"ImapSource({self.name!r}, {self.user}@{self.host}:{self.port}, {self.security})"

    # ------------------------------------------------------------------ connection

    def _where(self) -> str:
        return f"IMAP source {self.name!r} ({self.user}@{self.host}:{self.port})"

    def _open(self) -> imaplib.IMAP4:
        context = self.ssl_context or ssl.create_default_context()
        if self.security == "ssl":
            return imaplib.IMAP4_SSL(
                self.host, self.port, ssl_context=context, timeout=self.timeout
            )
        conn = imaplib.IMAP4(self.host, self.port, timeout=self.timeout)
        if self.security == "starttls":
            try:
                conn.starttls(ssl_context=context)
            except BaseException:
                with contextlib.suppress(Exception):
                    conn.shutdown()
                raise
        return conn

    def connect(self) -> imaplib.IMAP4:
        """Open and log in, retrying network failures with backoff (never auth failures)."""
        last: Exception | None = None
        for attempt in range(self.connect_attempts):
            if attempt:
                time.sleep(min(2**attempt, 30))
            try:
                conn = self._open()
            except (ssl.SSLError, ssl.CertificateError) as exc:
                # A certificate that does not verify will not verify on retry.
                raise PermanentError(f"{self._where()}: TLS failed: {exc}") from exc
            except (TimeoutError, *_NETWORK_ERRORS, imaplib.IMAP4.error) as exc:
                last = exc
                continue
            try:
                conn.login(self.user, self._password)
            except imaplib.IMAP4.error as exc:
                with contextlib.suppress(Exception):
                    conn.shutdown()
                # The server's text, never our arguments: they hold the password.
                raise PermanentError(f"{self._where()}: login refused: {exc}") from None
            except _NETWORK_ERRORS as exc:
                last = exc
                continue
            return conn
        raise ConnectorError(f"{self._where()}: cannot connect: {last}") from last

    # ------------------------------------------------------------------ pages

    def pages(self, state: Mapping[str, Cursor]) -> Iterator[Page]:
        """Yield pages of raw messages per folder, from the cursors in ``state``."""
        conn = self.connect()
        try:
            for folder in self.folders:
                yield from self._folder_pages(conn, folder, state.get(folder) or {})
        finally:
            with contextlib.suppress(Exception):
                conn.logout()

    def _folder_pages(self, conn: imaplib.IMAP4, folder: str, cursor: Cursor) -> Iterator[Page]:
        try:
            typ, data = conn.select(encode_folder(folder), readonly=True)  # EXAMINE
            if typ != "OK":
                raise PermanentError(f"{self._where()}: cannot open folder {folder!r}: {data}")
            _, validity = conn.response("UIDVALIDITY")
            uidvalidity = int(validity[0]) if validity and validity[0] else 0
            last_uid = int(cursor.get("last_uid", 0))
            resync = cursor.get("uidvalidity") not in (None, uidvalidity)
            if resync:
                last_uid = 0
            sizes = self._new_uids(conn, last_uid)
        except _NETWORK_ERRORS as exc:
            raise ConnectorError(f"{self._where()}: connection lost opening {folder!r}") from exc
        except imaplib.IMAP4.error as exc:
            raise PermanentError(f"{self._where()}: folder {folder!r}: {exc}") from exc

        if not sizes:
            if resync or "uidvalidity" not in cursor:
                yield Page(folder, [], [], {"uidvalidity": uidvalidity, "last_uid": last_uid})
            return
        for batch in self._plan(sizes):
            try:
                fetched = self._fetch(conn, batch)
            except _NETWORK_ERRORS as exc:
                raise ConnectorError(
                    f"{self._where()}: connection lost fetching {folder!r} after UID "
                    f"{last_uid}; the pages already yielded are complete, a new run resumes"
                ) from exc
            except imaplib.IMAP4.error as exc:
                raise ConnectorError(f"{self._where()}: fetch in {folder!r}: {exc}") from exc
            records: list[bytes] = []
            ids: list[str] = []
            for item in fetched:
                raw = item.raw
                if item.size > len(raw):
                    note = f"{TRUNCATION_HEADER}: original-size={item.size}; kept={len(raw)}\r\n"
                    raw = note.encode("ascii") + raw
                records.append(raw)
                ids.append(f"{folder}:{uidvalidity}:{item.uid}")
            # The cursor covers the whole batch even if the server silently
            # skipped a UID (expunged meanwhile): it cannot come back.
            last_uid = max(batch)
            cursor_after = {"uidvalidity": uidvalidity, "last_uid": last_uid}
            yield Page(folder, records, ids, cursor_after, expected_total=len(sizes))

    def _new_uids(self, conn: imaplib.IMAP4, last_uid: int) -> dict[int, int]:
        """UID -> RFC822.SIZE of the messages above ``last_uid``."""
        typ, data = conn.uid("FETCH", f"{last_uid + 1}:*", "(UID RFC822.SIZE)")
        if typ != "OK":
            raise imaplib.IMAP4.error(f"UID FETCH sizes: {data}")
        sizes: dict[int, int] = {}
        for item in data:
            line = item[0] if isinstance(item, tuple) else item
            if not isinstance(line, bytes):
                continue
            uid, size = _UID_RE.search(line), _SIZE_RE.search(line)
            # "n:*" always names the last message, even below n: filter it out.
            if uid and size and int(uid.group(1)) > last_uid:
                sizes[int(uid.group(1))] = int(size.group(1))
        return dict(sorted(sizes.items()))

    def _plan(self, sizes: dict[int, int]) -> Iterator[list[int]]:
        """Batches of at most batch_size messages and about max_batch_bytes."""
        batch: list[int] = []
        total = 0
        for uid, size in sizes.items():
            cost = min(size, self.max_message_bytes)
            if batch and (len(batch) >= self.batch_size or total + cost > self.max_batch_bytes):
                yield batch
                batch, total = [], 0
            batch.append(uid)
            total += cost
        if batch:
            yield batch

    def _fetch(self, conn: imaplib.IMAP4, uids: list[int]) -> list[_Fetched]:
        what = f"(UID RFC822.SIZE BODY.PEEK[]<0.{self.max_message_bytes}>)"
        typ, data = conn.uid("FETCH", ",".join(map(str, uids)), what)
        if typ != "OK":
            raise imaplib.IMAP4.error(f"UID FETCH: {data}")
        found: dict[int, _Fetched] = {}
        pending: tuple[bytes, bytes] | None = None

        def settle(meta: bytes, body: bytes) -> None:
            uid, size = _UID_RE.search(meta), _SIZE_RE.search(meta)
            if uid:
                n = int(uid.group(1))
                found[n] = _Fetched(n, int(size.group(1)) if size else len(body), body)

        for item in data:
            if isinstance(item, tuple):
                if pending:
                    settle(*pending)
                pending = (item[0], item[1])
            elif isinstance(item, bytes) and pending:
                # Items after the literal (" UID 7)") belong to the same response.
                settle(pending[0] + b" " + item, pending[1])
                pending = None
        if pending:
            settle(*pending)
        return [found[uid] for uid in uids if uid in found]
