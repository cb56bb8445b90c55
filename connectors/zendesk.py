"""Zendesk tickets through the cursor-based incremental export, with their comments.

Why the cursor export and not ``updated_at``: the export filters and orders on
``generated_timestamp``, which also moves on system updates (SLA, metrics,
merges) that leave ``updated_at`` alone; a cursor built on ``updated_at``
misses those. So the stream's cursor is Zendesk's own ``after_cursor``, which
points exactly after the last ticket returned. The first request uses
``start_time``, clamped to more than a minute ago: the export leaves out the
most recent minute and refuses a ``start_time`` inside it, and asking for it
would advance past tickets not yet exported.

Pages come out in this order for each export page: the comments of its
tickets, the sideloaded users and organizations, then the tickets with the
cursor after them. The warehouse commits each page with its cursor, so a crash
after the comments but before the tickets refetches both on the next run
(raw landing skips identical payloads; upserts are idempotent), and a crash
never skips a ticket.

A ticket updated between two pages appears twice (once per version): both are
yielded as sent, with the same id; downstream the latest ``updated_at`` wins.

Comments do not carry their ticket id in Zendesk's payload, so the connector
adds ``_ticket_id`` and ``_requester_id`` (underscore: ours, not Zendesk's).

Custom field values come on each ticket (``custom_fields``: ids and values);
what the ids mean is the field dictionary, ``/api/v2/ticket_fields``. With
``field_definitions=True`` a run starts with one ``ticket_fields`` page of it,
so a field created since the last run is named by the time its values land.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from typing import Any

from connectors.base import ConnectorError, Cursor, Page, field_definitions_page
from connectors.http import HttpSession, HttpStatusError

__all__ = ["EXPORT_PATH", "FIELDS_PATH", "ZendeskSource"]

log = logging.getLogger("backlash.zendesk")

EXPORT_PATH = "/api/v2/incremental/tickets/cursor.json"
FIELDS_PATH = "/api/v2/ticket_fields.json"
# The export leaves out the most recent minute; keep clear of it by a second.
RECENT_SECONDS = 61


class ZendeskSource:
    def __init__(
        self,
        name: str,
        *,
        base_url: str,
        email: str | None,
        token: str | None,
        oauth_token: str | None = None,
        start_time: datetime,
        session: HttpSession | None = None,
        comments: bool = True,
        rate_per_minute: int = 10,
        api_rate_per_minute: int = 200,
        page_size: int = 1000,
        wall_clock: Callable[[], float] = time.time,
        field_definitions: bool = False,
    ) -> None:
        """``rate_per_minute`` limits the export endpoint (10 on every plan);
        ``api_rate_per_minute`` the comment requests (200 is the lowest plan's limit);
        ``field_definitions`` starts each run with a ``ticket_fields`` page."""
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.start_time = start_time
        self.comments = comments
        self.field_definitions = field_definitions
        self.page_size = page_size
        self.wall_clock = wall_clock
        self.session = session or HttpSession(name)
        self.session.set_rate("export", rate_per_minute)
        self.session.set_rate("default", api_rate_per_minute)
        if oauth_token:
            self.session.bearer(oauth_token)
        elif email and token:
            self.session.basic_auth(f"{email}/token", token, secret=token)
        else:
            raise ConnectorError(
                f"source {name!r}: Zendesk needs email and token_env (API token), "
                "or oauth_token_env"
            )

    def backfill_state(self, since: datetime) -> dict[str, Cursor]:
        """Read again from ``since``: the export restarts at that ``start_time``."""
        return {"tickets": {"start_time": int(since.timestamp())}}

    def fetch_field_definitions(self) -> list[dict[str, Any]]:
        """Every ticket field (system and custom) as Zendesk lists it, all pages."""
        url = self.base_url + FIELDS_PATH
        params: dict[str, Any] = {"page[size]": 100}
        found: list[dict[str, Any]] = []
        while True:
            data = self.session.get_json(url, params=params).data
            if not isinstance(data, dict) or not isinstance(data.get("ticket_fields"), list):
                raise ConnectorError(
                    f"source {self.name!r}: {FIELDS_PATH} answered no 'ticket_fields' list; "
                    "check that the token may read ticket fields (admin or agent)"
                )
            found.extend(f for f in data["ticket_fields"] if isinstance(f, dict))
            meta = data.get("meta") or {}
            if not meta.get("has_more") or not meta.get("after_cursor"):
                return found
            params = {"page[size]": 100, "page[after]": meta["after_cursor"]}

    def field_definitions_page(self) -> Page:
        return field_definitions_page(self.fetch_field_definitions())

    def pages(self, state: Mapping[str, Cursor]) -> Iterator[Page]:
        if self.field_definitions:
            fields = self.field_definitions_page()
            if fields.records:
                yield fields
        cursor: Cursor = dict(state.get("tickets") or {})
        url = self.base_url + EXPORT_PATH
        params: dict[str, Any] = {"per_page": self.page_size, "include": "users,organizations"}
        if cursor.get("after_cursor"):
            params["cursor"] = cursor["after_cursor"]
        else:
            start = int(cursor.get("start_time") or self.start_time.timestamp())
            params["start_time"] = max(0, min(start, int(self.wall_clock()) - RECENT_SECONDS))
        while True:
            data = self.session.get_json(url, params=params, rate_key="export").data
            tickets, end_of_stream, after = self._read_export(data)
            stuck = after is None or after == cursor.get("after_cursor")
            if stuck and not end_of_stream:
                # Following the same cursor again would loop forever on the same page.
                raise ConnectorError(
                    f"source {self.name!r}: the export did not move its cursor but says "
                    "end_of_stream is false; try again later"
                )
            if not tickets and stuck:
                return
            next_cursor: Cursor = {"after_cursor": after} if after else dict(cursor)
            stamps = [t.get("generated_timestamp") for t in tickets]
            known = [s for s in stamps if isinstance(s, int | float)]
            if known:
                next_cursor["generated_timestamp"] = int(max(known))
            if tickets and self.comments:
                yield from self._comment_pages(tickets, next_cursor)
            for stream in ("users", "organizations"):
                side = [r for r in data.get(stream) or [] if isinstance(r, dict)]
                if side:
                    yield Page(stream, side, [str(r.get("id")) for r in side], dict(next_cursor))
            log.info(
                "source %s: %d tickets (end_of_stream=%s)", self.name, len(tickets), end_of_stream
            )
            yield Page("tickets", tickets, [str(t["id"]) for t in tickets], dict(next_cursor))
            cursor = next_cursor
            if end_of_stream:
                return
            params = {
                "per_page": self.page_size,
                "include": "users,organizations",
                "cursor": after,
            }

    def _read_export(self, data: Any) -> tuple[list[dict[str, Any]], bool, str | None]:
        if not isinstance(data, dict) or not isinstance(data.get("tickets"), list):
            raise ConnectorError(
                f"source {self.name!r}: the export answer has no 'tickets' list; "
                "check that base_url points at a Zendesk Support account"
            )
        tickets = [t for t in data["tickets"] if isinstance(t, dict)]
        missing = [t for t in tickets if t.get("id") is None]
        if missing:
            raise ConnectorError(f"source {self.name!r}: the export sent tickets without an id")
        after = data.get("after_cursor")
        return tickets, bool(data.get("end_of_stream")), str(after) if after else None

    def _comment_pages(self, tickets: list[dict[str, Any]], cursor: Cursor) -> Iterator[Page]:
        records: list[dict[str, Any]] = []
        for ticket in tickets:
            if ticket.get("status") == "deleted":
                continue  # a deleted ticket's comments are gone (404)
            records.extend(self._comments_of(ticket))
        if records:
            yield Page(
                "comments",
                records,
                [str(r.get("id")) for r in records],
                {"after_ticket_cursor": cursor.get("after_cursor")},
            )

    def _comments_of(self, ticket: Mapping[str, Any]) -> list[dict[str, Any]]:
        ticket_id = ticket["id"]
        url = f"{self.base_url}/api/v2/tickets/{ticket_id}/comments.json"
        params: dict[str, Any] = {"page[size]": 100}
        found: list[dict[str, Any]] = []
        while True:
            try:
                data = self.session.get_json(url, params=params).data
            except HttpStatusError as exc:
                if exc.status == 404:  # deleted or merged away since the export page
                    log.info("source %s: ticket %s has no comments (404)", self.name, ticket_id)
                    return found
                raise
            for comment in (data or {}).get("comments") or []:
                if isinstance(comment, dict):
                    found.append(
                        {
                            **comment,
                            "_ticket_id": ticket_id,
                            "_requester_id": ticket.get("requester_id"),
                        }
                    )
            meta = (data or {}).get("meta") or {}
            if not meta.get("has_more") or not meta.get("after_cursor"):
                return found
            params = {"page[size]": 100, "page[after]": meta["after_cursor"]}
