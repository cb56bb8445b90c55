"""The field dictionaries (``/api/v2/ticket_fields``) of Zendesk and Freshdesk, on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from connectors.base import ConnectorError
from connectors.freshdesk import FreshdeskSource
from connectors.sandbox import SandboxServer
from connectors.zendesk import ZendeskSource
from tests.connectors.fake_freshdesk import serve_freshdesk
from tests.connectors.fake_zendesk import EPOCH, FakeClock, serve_zendesk, ticket

EMAIL, TOKEN, API_KEY = "ops@acme.com", "zd_fields_T0ken", "fd_fields_key"
START = datetime(2020, 1, 1, tzinfo=UTC)


def zendesk_field(field_id: int, **extra: Any) -> dict[str, Any]:
    """Shaped like Zendesk's Ticket Fields JSON format."""
    return {
        "id": field_id,
        "url": f"https://acme.zendesk.com/api/v2/ticket_fields/{field_id}.json",
        "type": "tagger",
        "title": f"Field {field_id}",
        "raw_title": f"Field {field_id}",
        "active": True,
        "required": False,
        "created_at": "2024-01-01T00:00:00Z",
        "updated_at": "2024-02-01T00:00:00Z",
        **extra,
    }


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def servers() -> Iterator[list[SandboxServer]]:
    started: list[SandboxServer] = []
    yield started
    for server in started:
        server.close()


def _zendesk(clock: FakeClock, url: str, **kwargs: Any) -> ZendeskSource:
    return ZendeskSource(
        "support",
        base_url=url,
        email=EMAIL,
        token=TOKEN,
        start_time=START,
        session=clock.session("support"),
        wall_clock=clock,
        **kwargs,
    )


def test_zendesk_fields_follow_cursor_pages(clock: FakeClock, servers: list[SandboxServer]) -> None:
    fields = [zendesk_field(360_000 + i) for i in range(250)]
    server, url = serve_zendesk(
        [], credentials=(EMAIL, TOKEN), clock=clock, rate_per_minute=None, ticket_fields=fields
    )
    servers.append(server)
    source = _zendesk(clock, url)
    got = source.fetch_field_definitions()
    assert [f["id"] for f in got] == [f["id"] for f in fields]
    assert source.session.requests == 3  # 100 + 100 + 50


def test_zendesk_run_starts_with_the_dictionary_only_when_asked(
    clock: FakeClock, servers: list[SandboxServer]
) -> None:
    tickets = [ticket(i, EPOCH - 86_400 + i) for i in range(1, 4)]
    fields = [zendesk_field(1), zendesk_field(360_001, type="text", title="Plan")]
    server, url = serve_zendesk(
        tickets,
        credentials=(EMAIL, TOKEN),
        clock=clock,
        rate_per_minute=None,
        ticket_fields=fields,
    )
    servers.append(server)
    plain = [p.stream for p in _zendesk(clock, url, comments=False).pages({})]
    assert "ticket_fields" not in plain
    pages = list(_zendesk(clock, url, comments=False, field_definitions=True).pages({}))
    assert pages[0].stream == "ticket_fields"
    assert pages[0].record_ids == ["1", "360001"]
    assert [p.stream for p in pages[1:]] == plain
    # A field created later is in the next run's dictionary.
    server.state.ticket_fields.append(zendesk_field(360_002, title="Device"))
    again = _zendesk(clock, url, comments=False, field_definitions=True).field_definitions_page()
    assert again.record_ids == ["1", "360001", "360002"]


def test_zendesk_fields_answer_without_a_list_names_what_to_check(httpserver: Any) -> None:
    httpserver.expect_request("/api/v2/ticket_fields.json").respond_with_json({"error": "nope"})
    clock = FakeClock()
    source = _zendesk(clock, httpserver.url_for("/").rstrip("/"))
    with pytest.raises(ConnectorError, match="ticket_fields") as caught:
        source.fetch_field_definitions()
    assert TOKEN not in str(caught.value)


def test_freshdesk_fields_and_run_page(clock: FakeClock, servers: list[SandboxServer]) -> None:
    fields = [
        {"id": 1, "name": "requester", "label": "Search a requester", "type": "default_requester"},
        {"id": 13, "name": "cf_plan", "label": "Plan", "type": "custom_dropdown"},
    ]
    server, url = serve_freshdesk([], api_key=API_KEY, clock=clock, ticket_fields=fields)
    servers.append(server)
    source = FreshdeskSource(
        "helpdesk",
        base_url=url,
        api_key=API_KEY,
        start_time=START,
        session=clock.session("helpdesk"),
        field_definitions=True,
    )
    assert source.fetch_field_definitions() == fields
    pages = list(source.pages({}))
    assert [p.stream for p in pages] == ["ticket_fields"]  # no tickets yet
    assert pages[0].records == fields


def test_an_empty_dictionary_adds_no_page(clock: FakeClock, servers: list[SandboxServer]) -> None:
    server, url = serve_zendesk(
        [ticket(1, EPOCH - 86_400)], credentials=(EMAIL, TOKEN), clock=clock, rate_per_minute=None
    )
    servers.append(server)
    pages = list(_zendesk(clock, url, comments=False, field_definitions=True).pages({}))
    assert [p.stream for p in pages] == ["tickets"]
    assert server.state.export_requests == 1
