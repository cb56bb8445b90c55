"""A real SMTP server on loopback for ``backlash demo``: the alerts travel the real path.

The demo runs offline, yet should show what a deployment does: compose, hand
over to an SMTP server, record the server's answer in the ledger. aiosmtpd is a
real SMTP implementation (the same one the tests use); bound to 127.0.0.1 it
reaches nobody, and it keeps each message it accepts as an ``.eml`` file, so a
person can open what "leadership" received next to the outbox copy.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import policy
from email.parser import BytesParser
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"


@dataclass
class _SaveToFolder:
    """aiosmtpd handler: every accepted message becomes one ``.eml`` file."""

    folder: Path
    saved: list[Path] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        from connectors.outbox import safe_name

        content: bytes = envelope.original_content or envelope.content
        headers = BytesParser(policy=policy.default).parsebytes(content, headersonly=True)
        local = str(headers.get("Message-ID", "")).strip("<>").split("@", 1)[0]
        stem = safe_name(local or "message")
        # The envelope is what the server delivered to; keep it, like an MTA's
        # Delivered-To, without touching the message bytes that follow.
        envelope_lines = "".join(f"X-Envelope-To: {rcpt}\r\n" for rcpt in envelope.rcpt_tos)
        target = self.folder / f"{len(self.saved) + 1:04d}-{stem}.eml"
        tmp = target.with_suffix(".tmp")
        tmp.write_bytes(envelope_lines.encode("ascii", "replace") + content)
        os.replace(tmp, target)
        self.saved.append(target)
        return "250 Message accepted for delivery"


@dataclass
class LoopbackSMTP:
    """Where the demo's server listens and what it has received so far."""

    host: str
    port: int
    folder: Path
    handler: _SaveToFolder

    @property
    def received(self) -> list[Path]:
        return list(self.handler.saved)

    def env(self) -> dict[str, str]:
        """Settings overrides pointing ``[alerts]`` at this server (BACKLASH_ALERTS__*)."""
        return {
            "BACKLASH_ALERTS__SMTP_HOST": self.host,
            "BACKLASH_ALERTS__SMTP_PORT": str(self.port),
            "BACKLASH_ALERTS__SECURITY": "none",
        }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@contextmanager
def loopback_smtp(folder: Path, *, attempts: int = 5) -> Iterator[LoopbackSMTP]:
    """Run an SMTP server on 127.0.0.1 (a free port) saving messages under ``folder``.

    The port is picked free and then bound by aiosmtpd; another process could
    take it in between, so a failed bind is retried on a new port.
    """
    from aiosmtpd.controller import Controller

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    handler = _SaveToFolder(folder)
    controller: Controller | None = None
    error: Exception | None = None
    for _ in range(attempts):
        port = _free_port()
        candidate = Controller(handler, hostname=HOST, port=port, ready_timeout=10)
        try:
            candidate.start()
        except (OSError, RuntimeError) as exc:  # port taken meanwhile
            error = exc
            continue
        controller = candidate
        break
    if controller is None:
        raise RuntimeError(f"could not start the demo SMTP server on {HOST}: {error}")
    try:
        yield LoopbackSMTP(HOST, controller.port, folder, handler)
    finally:
        controller.stop()


@contextmanager
def environment(overrides: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the duration of the block, then restore them."""
    saved = {name: os.environ.get(name) for name in overrides}
    os.environ.update(overrides)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
