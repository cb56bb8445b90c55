"""A local Zendesk that speaks the cursor-based incremental export contract.

For the demo (``backlash sandbox zendesk``), the benchmark and the tests: the
connector is exercised against the same server in all three, so what the tests
prove is what the demo shows. Stdlib only (``http.server`` in a thread).

What it implements, as Zendesk documents it:

- ``GET /api/v2/incremental/tickets/cursor.json`` with ``start_time`` (Unix
  seconds) or ``cursor``, ``per_page`` (max 1000) and ``include=users,organizations``:
  tickets ordered by ``generated_timestamp`` (not ``updated_at``: system updates
  move a ticket too), the last minute excluded, ``after_cursor``/``after_url``,
  ``before_cursor``, ``end_of_stream``; a ``start_time`` within the last minute
  is refused. Deleted tickets are exported with ``status: "deleted"``.
- ``GET /api/v2/tickets/{id}/comments.json`` with cursor pagination
  (``page[size]``, ``page[after]``; ``meta.has_more``, ``meta.after_cursor``,
  ``links.next``). A ticket without comments of its own serves its
  ``description`` as its first comment, as Zendesk does.
- ``GET /api/v2/ticket_fields.json``: the field dictionary (system and custom
  fields: ``id``, ``type``, ``title``, ``active``, ``updated_at``...), cursor-paged.
- Basic auth ``{email}/token:{token}`` or ``Authorization: Bearer`` when
  credentials are configured (401 otherwise).
- The incremental-export rate limit (10 a minute on real accounts): a sliding
  60-second window, answered with 429 and a fractional ``Retry-After``;
  ``X-Rate-Limit`` and ``X-Rate-Limit-Remaining`` on every export answer.

Faults can be queued (``state.faults``): an int is answered as that status, and
``"truncate"`` sends a 200 whose JSON body is cut in half.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import hashlib
import itertools
import json
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

__all__ = [
    "SandboxServer",
    "ZendeskState",
    "serve",
    "serve_zendesk",
    "tickets_from_export_rows",
]

Fault = int | str


class SandboxServer(ThreadingHTTPServer):
    """A threaded HTTP server carrying the state its handler reads."""

    daemon_threads = True
    state: Any

    def close(self) -> None:
        self.shutdown()
        self.server_close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up mid-request (killed, timed out) is routine here."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class JsonHandler(BaseHTTPRequestHandler):
    """Shared plumbing for sandbox handlers: JSON answers, quiet logs, queued faults."""

    server: SandboxServer
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle on, keep-alive clients
    # wait ~40 ms for the delayed ACK on every request.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the connector logs what matters, and headers may carry credentials."""

    def send_json(
        self,
        status: int,
        payload: Any,
        headers: Mapping[str, str] | None = None,
        *,
        truncate: bool = False,
    ) -> None:
        body = json.dumps(payload).encode()
        if truncate:
            body = body[: max(1, len(body) // 2)]
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def take_fault(self) -> Fault | None:
        state = self.server.state
        with state.lock:
            return state.faults.popleft() if state.faults else None

    def answer_fault(self, fault: Fault) -> bool:
        """Answer a queued status fault; True if the request is done."""
        if isinstance(fault, int):
            headers = {"Retry-After": "0.5"} if fault in (429, 503) else {}
            self.send_json(fault, {"error": f"injected {fault}"}, headers)
            return True
        return False


def serve(
    handler: type[BaseHTTPRequestHandler], state: Any, *, host: str = "127.0.0.1", port: int = 0
) -> tuple[SandboxServer, str]:
    server = SandboxServer((host, port), handler)
    server.state = state
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": 0.05},
        name="sandbox-http",
        daemon=True,
    )
    thread.start()
    bound_host, bound_port = server.server_address[:2]
    return server, f"http://{bound_host}:{bound_port}"


# -- Zendesk -------------------------------------------------------------------


@dataclass
class ZendeskState:
    """What the sandbox serves; tests change it between requests to play a live account."""

    tickets: dict[int, dict[str, Any]] = field(default_factory=dict)
    comments: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    users: dict[int, dict[str, Any]] = field(default_factory=dict)
    organizations: dict[int, dict[str, Any]] = field(default_factory=dict)
    rate_per_minute: int | None = 10
    page_size: int = 1000
    credentials: tuple[str, str] | None = None  # (email, token)
    oauth_token: str | None = None
    clock: Callable[[], float] = time.time
    faults: deque[Fault] = field(default_factory=deque)
    lock: threading.Lock = field(default_factory=threading.Lock)
    export_hits: deque[float] = field(default_factory=deque)
    # The field dictionary served at /api/v2/ticket_fields.json (Zendesk's shape).
    ticket_fields: list[dict[str, Any]] = field(default_factory=list)
    # Seconds each export answer takes (real seconds, not ``clock``): a slow
    # account, so a test can interrupt a run between two committed pages.
    export_delay: float = 0.0
    # Counters for tests and the benchmark.
    export_requests: int = 0
    export_times: list[float] = field(default_factory=list)
    comment_requests: int = 0
    rate_limited: int = 0
    retry_afters: list[str] = field(default_factory=list)
    served_ids: list[int] = field(default_factory=list)

    # The export order, (generated_timestamp, id) sorted, rebuilt only after a
    # change: sorting every ticket on every request made a 1M-ticket export
    # quadratic. Change tickets through ``put`` (or bump ``version``).
    version: int = 0
    _order: list[tuple[int, int]] = field(default_factory=list)
    _order_version: int = -1

    def put(self, ticket: Mapping[str, Any], *, at: float | None = None) -> dict[str, Any]:
        """Create or update a ticket as Zendesk would: ``generated_timestamp`` moves to now.

        ``updated_at`` is left as given, so a system update (SLA, metrics) that
        moves only ``generated_timestamp`` can be played.
        """
        record = dict(ticket)
        record["generated_timestamp"] = int(self.clock() if at is None else at)
        with self.lock:
            self.tickets[int(record["id"])] = record
            self.version += 1
        return record

    def export_order(self) -> list[tuple[int, int]]:
        """Every ticket's (generated_timestamp, id), sorted; call with ``lock`` held."""
        if self._order_version != self.version or len(self._order) != len(self.tickets):
            self._order = sorted(
                (int(t["generated_timestamp"]), int(t["id"])) for t in self.tickets.values()
            )
            self._order_version = self.version
        return self._order


def _encode_cursor(generated: int, ticket_id: int) -> str:
    # Zendesk's cursors are opaque base64 of "<ts>.0||<id>|"; this keeps the look.
    return base64.urlsafe_b64encode(f"{generated}.0||{ticket_id}|".encode()).decode("ascii")


def _decode_cursor(cursor: str) -> tuple[int, int]:
    text = base64.urlsafe_b64decode(cursor.encode("ascii")).decode()
    stamp, _, rest = text.partition("||")
    return int(float(stamp)), int(rest.strip("|") or 0)


class ZendeskHandler(JsonHandler):
    def do_GET(self) -> None:
        state: ZendeskState = self.server.state
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        if not self._authorised(state):
            self.send_json(401, {"error": "Couldn't authenticate you"})
            return
        fault = self.take_fault()
        if fault is not None and self.answer_fault(fault):
            return
        truncate = fault == "truncate"
        path = parts.path
        if path == "/api/v2/incremental/tickets/cursor.json":
            self._export(state, query, truncate=truncate)
        elif path.startswith("/api/v2/tickets/") and path.endswith("/comments.json"):
            ticket_id = path.removeprefix("/api/v2/tickets/").removesuffix("/comments.json")
            self._comments(state, ticket_id, query, truncate=truncate)
        elif path in ("/api/v2/ticket_fields.json", "/api/v2/ticket_fields"):
            self._ticket_fields(state, query, truncate=truncate)
        else:
            self.send_json(404, {"error": "InvalidEndpoint", "description": "Not found"})

    def _authorised(self, state: ZendeskState) -> bool:
        if state.credentials is None and state.oauth_token is None:
            return True
        header = self.headers.get("Authorization", "")
        if state.oauth_token is not None and header == f"Bearer {state.oauth_token}":
            return True
        if state.credentials is not None and header.startswith("Basic "):
            try:
                decoded = base64.b64decode(header[6:]).decode()
            except (binascii.Error, UnicodeDecodeError):
                return False
            email, token = state.credentials
            return decoded == f"{email}/token:{token}"
        return False

    def _rate_headers(self, state: ZendeskState) -> tuple[dict[str, str], float | None]:
        """Count this request in the sliding minute; the wait if it is over the limit."""
        if state.rate_per_minute is None:
            return {}, None
        now = state.clock()
        with state.lock:
            while state.export_hits and state.export_hits[0] <= now - 60.0:
                state.export_hits.popleft()
            if len(state.export_hits) >= state.rate_per_minute:
                wait = state.export_hits[0] + 60.0 - now
                state.rate_limited += 1
                state.retry_afters.append(f"{max(wait, 0.01):.2f}")
                return {"Retry-After": state.retry_afters[-1]}, wait
            state.export_hits.append(now)
            remaining = state.rate_per_minute - len(state.export_hits)
        return {
            "X-Rate-Limit": str(state.rate_per_minute),
            "X-Rate-Limit-Remaining": str(remaining),
        }, None

    def _export(self, state: ZendeskState, query: dict[str, str], *, truncate: bool) -> None:
        headers, wait = self._rate_headers(state)
        if wait is not None:
            self.send_json(429, {"error": "APIRateLimitExceeded"}, headers)
            return
        if state.export_delay > 0:
            time.sleep(state.export_delay)
        with state.lock:
            state.export_requests += 1
            state.export_times.append(time.monotonic())
        now = state.clock()
        horizon = int(now) - 60  # the most recent minute is never exported
        try:
            if "cursor" in query:
                after = _decode_cursor(query["cursor"])
            elif "start_time" in query:
                start = int(query["start_time"])
                if start > horizon:
                    self.send_json(
                        400,
                        {
                            "error": "InvalidValue",
                            "description": "Too recent start_time. Use a start_time older "
                            "than 1 minute",
                        },
                    )
                    return
                after = (start, -1)
            else:
                self.send_json(400, {"error": "InvalidValue", "description": "start_time missing"})
                return
            per_page = min(int(query.get("per_page", state.page_size)), 1000, state.page_size)
        except (ValueError, binascii.Error, UnicodeDecodeError):
            self.send_json(400, {"error": "InvalidValue", "description": "Invalid cursor"})
            return
        with state.lock:
            order = state.export_order()
            # Strictly after the cursor position; a start_time includes its own second.
            position = bisect.bisect_right(order, after)
            chosen = list(itertools.islice(order, position, position + per_page + 1))
            chosen = [key for key in chosen if key[0] <= horizon]
            page = [json.loads(json.dumps(state.tickets[tid])) for _, tid in chosen[:per_page]]
        end_of_stream = len(chosen) <= per_page
        last = (page[-1]["generated_timestamp"], page[-1]["id"]) if page else after
        after_cursor = _encode_cursor(*last)
        base = f"http://{self.headers.get('Host', 'localhost')}{urlsplit(self.path).path}"
        body: dict[str, Any] = {
            "tickets": page,
            "after_cursor": after_cursor,
            "after_url": f"{base}?{urlencode({'cursor': after_cursor})}",
            "before_cursor": _encode_cursor(*after) if page else None,
            "before_url": None,
            "end_of_stream": end_of_stream,
        }
        include = {part.strip() for part in query.get("include", "").split(",") if part}
        if "users" in include:
            wanted = {t.get("requester_id") for t in page} | {t.get("submitter_id") for t in page}
            body["users"] = [u for uid, u in state.users.items() if uid in wanted]
        if "organizations" in include:
            wanted = {t.get("organization_id") for t in page}
            body["organizations"] = [o for oid, o in state.organizations.items() if oid in wanted]
        with state.lock:
            state.served_ids.extend(t["id"] for t in page)
        self.send_json(200, body, headers, truncate=truncate)

    def _comments(
        self, state: ZendeskState, ticket_id: str, query: dict[str, str], *, truncate: bool
    ) -> None:
        with state.lock:
            state.comment_requests += 1
            ticket = state.tickets.get(int(ticket_id)) if ticket_id.isdigit() else None
            comments = list(state.comments.get(int(ticket_id), [])) if ticket else []
        if ticket is None:
            self.send_json(404, {"error": "RecordNotFound", "description": "Not found"})
            return
        if not comments and ticket.get("description"):
            comments = [_first_comment(ticket)]
        size = min(int(query.get("page[size]", 100)), 100)
        start = int(query.get("page[after]", 0) or 0)
        chunk = comments[start : start + size]
        has_more = start + size < len(comments)
        after = str(start + size) if has_more else None
        base = f"http://{self.headers.get('Host', 'localhost')}{urlsplit(self.path).path}"
        self.send_json(
            200,
            {
                "comments": chunk,
                "meta": {"has_more": has_more, "after_cursor": after, "before_cursor": None},
                "links": {
                    "next": f"{base}?{urlencode({'page[size]': size, 'page[after]': after})}"
                    if has_more
                    else None,
                    "prev": None,
                },
            },
            truncate=truncate,
        )

    def _ticket_fields(self, state: ZendeskState, query: dict[str, str], *, truncate: bool) -> None:
        """Cursor pagination (``page[size]``, ``page[after]``), as the ticket fields list
        documents it; ``next_page`` is set too, for clients of the offset style."""
        with state.lock:
            fields = [json.loads(json.dumps(f)) for f in state.ticket_fields]
        try:
            size = min(int(query.get("page[size]", 100)), 100)
            start = int(query.get("page[after]", 0) or 0)
        except ValueError:
            self.send_json(400, {"error": "InvalidPaginationParameter"})
            return
        chunk = fields[start : start + size]
        has_more = start + size < len(fields)
        after = str(start + size) if has_more else None
        base = f"http://{self.headers.get('Host', 'localhost')}/api/v2/ticket_fields.json"
        following = f"{base}?{urlencode({'page[size]': size, 'page[after]': after})}"
        self.send_json(
            200,
            {
                "ticket_fields": chunk,
                "meta": {"has_more": has_more, "after_cursor": after, "before_cursor": None},
                "links": {"next": following if has_more else None, "prev": None},
                "next_page": following if has_more else None,
                "count": len(fields),
            },
            truncate=truncate,
        )


def _first_comment(ticket: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": int(ticket["id"]) * 1000 + 1,
        "type": "Comment",
        "author_id": ticket.get("requester_id"),
        "body": ticket.get("description"),
        "html_body": f"<p>{ticket.get('description')}</p>",
        "plain_body": ticket.get("description"),
        "public": True,
        "attachments": [],
        "via": ticket.get("via", {"channel": "web"}),
        "created_at": ticket.get("created_at"),
        "metadata": {"system": {}, "custom": {}},
    }


def serve_zendesk(
    tickets: list[dict[str, Any]],
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    rate_per_minute: int | None = 10,
    page_size: int = 1000,
    comments: Mapping[int, list[dict[str, Any]]] | None = None,
    users: list[dict[str, Any]] | None = None,
    organizations: list[dict[str, Any]] | None = None,
    credentials: tuple[str, str] | None = None,
    oauth_token: str | None = None,
    clock: Callable[[], float] = time.time,
    ticket_fields: list[dict[str, Any]] | None = None,
    export_delay: float = 0.0,
) -> tuple[SandboxServer, str]:
    """Serve ``tickets`` (Zendesk ticket dicts) on a thread; returns the server and its URL.

    Tickets without ``generated_timestamp`` get one from ``updated_at``.
    ``server.state`` is the :class:`ZendeskState`; ``server.close()`` stops it.
    """
    state = ZendeskState(
        rate_per_minute=rate_per_minute,
        page_size=page_size,
        credentials=credentials,
        oauth_token=oauth_token,
        clock=clock,
        ticket_fields=[dict(f) for f in ticket_fields or []],
        export_delay=export_delay,
    )
    for ticket in tickets:
        record = dict(ticket)
        if "generated_timestamp" not in record:
            record["generated_timestamp"] = _epoch(record.get("updated_at")) or _epoch(
                record.get("created_at")
            )
        state.tickets[int(record["id"])] = record
    state.comments = {int(k): list(v) for k, v in (comments or {}).items()}
    state.users = {int(u["id"]): u for u in users or []}
    state.organizations = {int(o["id"]): o for o in organizations or []}
    return serve(ZendeskHandler, state, host=host, port=port)


def _epoch(value: Any) -> int:
    if not value:
        return 0
    text = str(value).replace("Z", "+00:00")
    when = datetime.fromisoformat(text)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp())


_CHANNELS_TO_VIA: dict[str, str] = {
    "email": "email",
    "web": "web",
    "chat": "chat",
    "phone": "voice",
    "social": "twitter",
    "api": "api",
}


def tickets_from_export_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The demo's file-export rows (``id, created_at, subject, body, channel,
    requester, tags, status``) as Zendesk ticket dicts, so the demo can run
    through the Zendesk connector. Non-numeric ids are numbered in order.
    """
    tickets: list[dict[str, Any]] = []
    for number, row in enumerate(rows, start=1):
        raw_id = str(row.get("id") or "")
        ticket_id = int(raw_id) if raw_id.isdigit() else number
        created = _iso_z(row.get("created_at"))
        updated = _iso_z(row.get("updated_at")) or created
        channel = str(row.get("channel") or "web").strip().lower()
        requester = str(row.get("requester") or "") or None
        requester_id = _user_id(requester) if requester else None
        tags = row.get("tags") or []
        if isinstance(tags, str):
            tags = [t for t in tags.replace(",", " ").replace(";", " ").split() if t]
        via: dict[str, Any] = {"channel": _CHANNELS_TO_VIA.get(channel, channel), "source": {}}
        if requester and channel == "email":
            via["source"] = {"from": {"address": requester, "name": None}, "to": {}, "rel": None}
        status = str(row.get("status") or "open").strip().lower()
        tickets.append(
            {
                "id": ticket_id,
                "external_id": raw_id or None,
                "url": f"https://sandbox.zendesk.com/api/v2/tickets/{ticket_id}.json",
                "created_at": created,
                "updated_at": updated,
                "subject": row.get("subject"),
                "raw_subject": row.get("subject"),
                "description": row.get("body"),
                "status": status,
                "priority": row.get("priority") or None,
                "type": None,
                "requester_id": requester_id,
                "submitter_id": requester_id,
                "organization_id": None,
                "tags": list(tags),
                "via": via,
                "custom_fields": [],
                "generated_timestamp": _epoch(updated),
            }
        )
    return tickets


def _user_id(address: str) -> int:
    """A stable numeric user id per requester (``hash()`` changes between processes)."""
    digest = hashlib.sha256(address.strip().lower().encode()).hexdigest()
    return 10_000_000 + int(digest[:12], 16) % 10_000_000


def _iso_z(value: Any) -> str | None:
    if not value:
        return None
    text = str(value).strip().replace("Z", "+00:00")
    when = datetime.fromisoformat(text)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
