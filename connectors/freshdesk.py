"""Freshdesk tickets (``/api/v2/tickets``) and their conversations.

Three documented traps shape this module:

- Without ``updated_since`` the list returns only the last 30 days, so the
  first run always sends one (``start_time``).
- Page numbers stop at 300 (page 301 answers 400). And offset pages shift
  under a live account: a ticket updated while we page moves to the end, and
  the first ticket of the next page slides onto the page already read.
  So pagination is by key, not by offset: every request asks
  ``updated_since`` = the newest ``updated_at`` already yielded (minus one
  second, in case the filter is exclusive), ``order_by=updated_at``,
  ``order_type=asc``, page 1; the overlap is dropped by (updated_at, id). Only
  when a whole page holds nothing new (more than ``per_page`` tickets in one
  second) does the page number grow, so the 300-page wall is out of reach.
- The cursor is ``{"updated_since", "ids_at"}``: the newest ``updated_at``
  yielded and the ids already yielded at exactly that second.

A ticket's conversations are fetched after its ticket page is read and
yielded before it, so a crash never commits a ticket cursor past tickets whose
conversations were not stored.

Custom field values come on each ticket (``custom_fields``: ``{"cf_name":
value}``); ``/api/v2/ticket_fields`` names them. With ``field_definitions=True``
a run starts with one ``ticket_fields`` page of that list.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from connectors.base import ConnectorError, Cursor, Page, field_definitions_page
from connectors.http import HttpSession, HttpStatusError

__all__ = ["FreshdeskSource", "parse_link_next"]

log = logging.getLogger("backlash.freshdesk")

PER_PAGE = 100
MAX_PAGE = 300


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def parse_link_next(header: str | None) -> str | None:
    """The ``rel="next"`` URL of a ``Link`` header (RFC 8288), if any."""
    if not header:
        return None
    for part in header.split(","):
        section = part.split(";")
        url = section[0].strip()
        if any(p.strip().replace(" ", "") in ('rel="next"', "rel=next") for p in section[1:]):
            return url.strip("<>")
    return None


class FreshdeskSource:
    def __init__(
        self,
        name: str,
        *,
        base_url: str,
        api_key: str | None,
        start_time: datetime,
        session: HttpSession | None = None,
        conversations: bool = True,
        rate_per_minute: int = 100,
        per_page: int = PER_PAGE,
        field_definitions: bool = False,
    ) -> None:
        """``rate_per_minute``: Freshdesk plans allow 50 to 700 a minute per account;
        ``X-RateLimit-Total`` lowers it when the account's limit is lower."""
        if not api_key:
            raise ConnectorError(f"source {name!r}: Freshdesk needs api_key_env (an API key)")
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.start_time = start_time
        self.conversations = conversations
        self.field_definitions = field_definitions
        self.per_page = per_page
        self.session = session or HttpSession(name)
        self.session.set_rate("default", rate_per_minute)
        # Freshdesk Basic auth: the API key as user, any password ("X" by convention).
        self.session.basic_auth(api_key, "X", secret=api_key)

    def backfill_state(self, since: datetime) -> dict[str, Cursor]:
        return {"tickets": {"updated_since": _iso(since), "ids_at": []}}

    def fetch_field_definitions(self) -> list[dict[str, Any]]:
        """Every ticket field (default and custom) as Freshdesk lists it (one unpaged list)."""
        data = self.session.get_json(f"{self.base_url}/api/v2/ticket_fields").data
        if not isinstance(data, list):
            raise ConnectorError(
                f"source {self.name!r}: /api/v2/ticket_fields did not answer a JSON list; "
                "check base_url points at a Freshdesk account"
            )
        return [f for f in data if isinstance(f, dict)]

    def field_definitions_page(self) -> Page:
        return field_definitions_page(self.fetch_field_definitions())

    def pages(self, state: Mapping[str, Cursor]) -> Iterator[Page]:
        if self.field_definitions:
            fields = self.field_definitions_page()
            if fields.records:
                yield fields
        cursor = dict(state.get("tickets") or {})
        since = _parse(cursor.get("updated_since")) or self.start_time.astimezone(UTC)
        since = since.replace(microsecond=0)
        ids_at: set[str] = {str(i) for i in cursor.get("ids_at") or []}
        page = 1
        url = f"{self.base_url}/api/v2/tickets"
        while True:
            params = {
                "updated_since": _iso(since - timedelta(seconds=1)),
                "order_by": "updated_at",
                "order_type": "asc",
                "per_page": self.per_page,
                "page": page,
                "include": "description,requester",
            }
            try:
                response = self.session.get_json(url, params=params)
            except HttpStatusError as exc:
                if exc.status == 400 and page > 1 and "page" in exc.body:
                    raise ConnectorError(
                        f"source {self.name!r}: more than {MAX_PAGE * self.per_page} tickets "
                        f"share the updated_at {_iso(since)}; Freshdesk cannot page past them"
                    ) from None
                raise
            batch = response.data
            if not isinstance(batch, list):
                raise ConnectorError(
                    f"source {self.name!r}: /api/v2/tickets did not answer a JSON list; "
                    "check base_url points at a Freshdesk account"
                )
            fresh: list[dict[str, Any]] = []
            before = since
            for ticket in batch:
                if not isinstance(ticket, dict) or ticket.get("id") is None:
                    continue
                updated = _parse(ticket.get("updated_at"))
                ticket_id = str(ticket["id"])
                if updated is None:
                    fresh.append(ticket)  # the normaliser quarantines it with the reason
                    continue
                updated = updated.replace(microsecond=0)
                if updated < since or (updated == since and ticket_id in ids_at):
                    continue  # the overlap of key pagination: already yielded
                if updated > since:
                    since, ids_at = updated, set()
                ids_at.add(ticket_id)
                fresh.append(ticket)
            if fresh:
                next_cursor: Cursor = {"updated_since": _iso(since), "ids_at": sorted(ids_at)}
                if self.conversations:
                    yield from self._conversation_pages(fresh, next_cursor)
                log.info("source %s: %d tickets up to %s", self.name, len(fresh), _iso(since))
                yield Page("tickets", fresh, [str(t["id"]) for t in fresh], next_cursor)
            more = len(batch) >= self.per_page or parse_link_next(
                response.headers.get("Link") or response.headers.get("link")
            )
            if not more:
                return
            if since > before:
                page = 1
            else:
                page += 1
                if page > MAX_PAGE:
                    raise ConnectorError(
                        f"source {self.name!r}: more than {MAX_PAGE * self.per_page} tickets "
                        f"share the updated_at {_iso(since)}; Freshdesk cannot page past them"
                    )

    def _conversation_pages(self, tickets: list[dict[str, Any]], cursor: Cursor) -> Iterator[Page]:
        records: list[dict[str, Any]] = []
        for ticket in tickets:
            records.extend(self._conversations_of(ticket["id"]))
        if records:
            yield Page(
                "conversations",
                records,
                [str(r.get("id")) for r in records],
                {"updated_since": cursor["updated_since"]},
            )

    def _conversations_of(self, ticket_id: Any) -> list[dict[str, Any]]:
        url: str | None = f"{self.base_url}/api/v2/tickets/{ticket_id}/conversations"
        params: dict[str, Any] | None = {"per_page": PER_PAGE, "page": 1}
        found: list[dict[str, Any]] = []
        while url:
            try:
                response = self.session.get_json(url, params=params)
            except HttpStatusError as exc:
                if exc.status == 404:
                    return found
                raise
            batch = response.data if isinstance(response.data, list) else []
            for item in batch:
                if isinstance(item, dict):
                    found.append(item if "ticket_id" in item else {**item, "ticket_id": ticket_id})
            url = parse_link_next(response.headers.get("Link") or response.headers.get("link"))
            params = None  # the next link carries its own query
        return found
