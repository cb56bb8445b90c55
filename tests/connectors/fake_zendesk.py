"""Test doubles for the helpdesk connectors: the sandbox *is* the fake Zendesk.

``FakeClock`` is one clock shared by the client (its sleeps advance it) and the
local server (its rate window and "most recent minute" read it), so tests of
minute-long rate limits run in milliseconds against a real HTTP server.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from connectors.base import Page
from connectors.http import HttpSession
from connectors.sandbox import SandboxServer, ZendeskState, serve_zendesk

__all__ = [
    "EPOCH",
    "FakeClock",
    "SandboxServer",
    "ZendeskState",
    "commit_each",
    "serve_zendesk",
    "ticket",
]

EPOCH = 1_790_000_000.0  # 2026-09-21, a fixed "now" for the fake clock


class FakeClock:
    def __init__(self, start: float = EPOCH) -> None:
        self.now = start
        self.slept: list[float] = []
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.slept.append(seconds)
            self.now += max(0.0, seconds)

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds

    def session(self, source: str = "zd", **kwargs: Any) -> HttpSession:
        return HttpSession(source, sleep=self.sleep, clock=self, wall_clock=self, **kwargs)


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def ticket(ticket_id: int, generated: float, **extra: Any) -> dict[str, Any]:
    """A Zendesk ticket shaped like the export's (fields from the Tickets API reference)."""
    record: dict[str, Any] = {
        "id": ticket_id,
        "url": f"https://acme.zendesk.com/api/v2/tickets/{ticket_id}.json",
        "created_at": iso(generated - 3600),
        "updated_at": iso(generated),
        "generated_timestamp": int(generated),
        "subject": f"Ticket {ticket_id}",
        "raw_subject": f"Ticket {ticket_id}",
        "description": f"Body of ticket {ticket_id}",
        "status": "open",
        "priority": "normal",
        "type": "question",
        "requester_id": 500 + ticket_id,
        "submitter_id": 500 + ticket_id,
        "organization_id": 77,
        "tags": ["pricing"],
        "via": {"channel": "email", "source": {"from": {"address": f"c{ticket_id}@ex.com"}}},
        "custom_fields": [{"id": 360001, "value": None}],
    }
    record.update(extra)
    return record


def commit_each(
    pages: Iterator[Page],
    state: dict[str, Any],
    committed: list[Page],
    after: Callable[[list[Page]], None],
) -> None:
    """What the warehouse does: keep each page and its cursor as soon as it arrives."""
    for page in pages:
        committed.append(page)
        state[page.stream] = page.cursor
        after(committed)
