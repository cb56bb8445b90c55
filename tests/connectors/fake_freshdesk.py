"""A local Freshdesk following the documented ``/api/v2`` list contract.

- ``GET /api/v2/tickets``: ``updated_since`` (ISO 8601; without it only the
  last 30 days), ``order_by`` (created_at | updated_at), ``order_type``
  (asc | desc, default desc), ``per_page`` (max 100, default 30), ``page``
  (page > ``max_page``, 300 on real accounts, answers 400), ``include``
  (``description`` and ``requester`` embed fields, as documented for accounts
  created after 2018). A ``Link: <...>; rel="next"`` header when a next page exists.
- ``GET /api/v2/tickets/{id}/conversations`` with ``per_page``/``page`` and ``Link``.
- ``GET /api/v2/ticket_fields``: the field dictionary, one unpaged JSON list.
- Basic auth with the API key as user; 401 otherwise.
- ``X-RateLimit-Total``/``X-RateLimit-Remaining`` per minute; 429 + ``Retry-After``.

Tickets and conversations are stored in full; list answers leave out
``description``/``requester`` unless included, like the real list endpoint.
"""

from __future__ import annotations

import base64
import binascii
import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from connectors.sandbox import JsonHandler, SandboxServer, serve


@dataclass
class FreshdeskState:
    tickets: dict[int, dict[str, Any]] = field(default_factory=dict)
    conversations: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    contacts: dict[int, dict[str, Any]] = field(default_factory=dict)
    ticket_fields: list[dict[str, Any]] = field(default_factory=list)
    api_key: str | None = None
    rate_per_minute: int | None = None
    max_page: int = 300
    clock: Callable[[], float] = time.time
    faults: deque[int | str] = field(default_factory=deque)
    lock: threading.Lock = field(default_factory=threading.Lock)
    hits: deque[float] = field(default_factory=deque)
    list_requests: list[dict[str, str]] = field(default_factory=list)
    bad_page_requests: int = 0
    rate_limited: int = 0

    def put(self, ticket: dict[str, Any]) -> None:
        with self.lock:
            self.tickets[int(ticket["id"])] = dict(ticket)


def _parse(value: str) -> datetime:
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class FreshdeskHandler(JsonHandler):
    def do_GET(self) -> None:
        state: FreshdeskState = self.server.state
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        if not self._authorised(state):
            self.send_json(
                401,
                {
                    "code": "invalid_credentials",
                    "message": "You have to be logged in to perform this action.",
                },
            )
            return
        headers, wait = self._rate(state)
        if wait is not None:
            self.send_json(429, {"message": "too many requests"}, headers)
            return
        fault = self.take_fault()
        if fault is not None and self.answer_fault(fault):
            return
        truncate = fault == "truncate"
        if parts.path == "/api/v2/tickets":
            self._tickets(state, query, headers, truncate=truncate)
        elif parts.path == "/api/v2/ticket_fields":
            self.send_json(200, json.loads(json.dumps(state.ticket_fields)), headers)
        elif parts.path.startswith("/api/v2/tickets/") and parts.path.endswith("/conversations"):
            ticket_id = parts.path.split("/")[4]
            self._conversations(state, ticket_id, query, headers, truncate=truncate)
        else:
            self.send_json(404, {"code": "not_found"})

    def _authorised(self, state: FreshdeskState) -> bool:
        if state.api_key is None:
            return True
        header = self.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return False
        try:
            user = base64.b64decode(header[6:]).decode().split(":", 1)[0]
        except (binascii.Error, UnicodeDecodeError):
            return False
        return user == state.api_key

    def _rate(self, state: FreshdeskState) -> tuple[dict[str, str], float | None]:
        if state.rate_per_minute is None:
            return {}, None
        now = state.clock()
        with state.lock:
            while state.hits and state.hits[0] <= now - 60.0:
                state.hits.popleft()
            if len(state.hits) >= state.rate_per_minute:
                state.rate_limited += 1
                wait = state.hits[0] + 60.0 - now
                return {"Retry-After": str(max(1, round(wait)))}, wait
            state.hits.append(now)
            remaining = state.rate_per_minute - len(state.hits)
        return {
            "X-RateLimit-Total": str(state.rate_per_minute),
            "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Used-CurrentRequest": "1",
        }, None

    def _tickets(
        self,
        state: FreshdeskState,
        query: dict[str, str],
        headers: dict[str, str],
        *,
        truncate: bool,
    ) -> None:
        with state.lock:
            state.list_requests.append(dict(query))
        try:
            page = int(query.get("page", 1))
            per_page = int(query.get("per_page", 30))
        except ValueError:
            self.send_json(400, {"description": "Validation failed", "errors": []})
            return
        if per_page > 100:
            self.send_json(
                400,
                {
                    "description": "Validation failed",
                    "errors": [
                        {
                            "field": "per_page",
                            "message": "It should be a Positive Number less than or equal to 100",
                            "code": "invalid_value",
                        }
                    ],
                },
            )
            return
        if page > state.max_page:
            with state.lock:
                state.bad_page_requests += 1
            self.send_json(
                400,
                {
                    "description": "Validation failed",
                    "errors": [
                        {
                            "field": "page",
                            "message": f"You cannot access tickets beyond the {state.max_page}th "
                            "page. Please provide a smaller page number.",
                            "code": "invalid_value",
                        }
                    ],
                },
            )
            return
        if "updated_since" in query:
            since = _parse(query["updated_since"])
        else:
            since = datetime.fromtimestamp(state.clock(), UTC) - timedelta(days=30)
        order_by = query.get("order_by", "created_at")
        descending = query.get("order_type", "desc") == "desc"
        includes = set(query.get("include", "").split(","))
        with state.lock:
            rows = [dict(t) for t in state.tickets.values() if _parse(t["updated_at"]) >= since]
        rows.sort(key=lambda t: (t[order_by], t["id"]), reverse=descending)
        chunk = rows[(page - 1) * per_page : page * per_page]
        out = []
        for ticket in chunk:
            item = {
                k: v
                for k, v in ticket.items()
                if k not in ("description", "description_text", "requester")
            }
            if "description" in includes:
                item["description"] = ticket.get("description")
                item["description_text"] = ticket.get("description_text")
            if "requester" in includes and ticket.get("requester_id") in state.contacts:
                item["requester"] = state.contacts[ticket["requester_id"]]
            out.append(item)
        extra = dict(headers)
        if page * per_page < len(rows):
            nxt = dict(query, page=str(page + 1))
            extra["Link"] = (
                f'<http://{self.headers.get("Host")}/api/v2/tickets?{urlencode(nxt)}>; rel="next"'
            )
        self.send_json(200, out, extra, truncate=truncate)

    def _conversations(
        self,
        state: FreshdeskState,
        ticket_id: str,
        query: dict[str, str],
        headers: dict[str, str],
        *,
        truncate: bool,
    ) -> None:
        if not ticket_id.isdigit() or int(ticket_id) not in state.tickets:
            self.send_json(404, {"code": "not_found"})
            return
        items = state.conversations.get(int(ticket_id), [])
        page = int(query.get("page", 1))
        per_page = min(int(query.get("per_page", 30)), 100)
        chunk = items[(page - 1) * per_page : page * per_page]
        extra = dict(headers)
        if page * per_page < len(items):
            nxt = dict(query, page=str(page + 1), per_page=str(per_page))
            extra["Link"] = (
                f"<http://{self.headers.get('Host')}/api/v2/tickets/{ticket_id}/conversations"
                f'?{urlencode(nxt)}>; rel="next"'
            )
        self.send_json(200, json.loads(json.dumps(chunk)), extra, truncate=truncate)


def serve_freshdesk(
    tickets: list[dict[str, Any]],
    *,
    conversations: dict[int, list[dict[str, Any]]] | None = None,
    contacts: list[dict[str, Any]] | None = None,
    api_key: str | None = None,
    rate_per_minute: int | None = None,
    max_page: int = 300,
    clock: Callable[[], float] = time.time,
    ticket_fields: list[dict[str, Any]] | None = None,
) -> tuple[SandboxServer, str]:
    state = FreshdeskState(
        api_key=api_key,
        rate_per_minute=rate_per_minute,
        max_page=max_page,
        clock=clock,
        ticket_fields=list(ticket_fields or []),
    )
    for ticket in tickets:
        state.tickets[int(ticket["id"])] = dict(ticket)
    state.conversations = {int(k): list(v) for k, v in (conversations or {}).items()}
    state.contacts = {int(c["id"]): c for c in contacts or []}
    return serve(FreshdeskHandler, state)
