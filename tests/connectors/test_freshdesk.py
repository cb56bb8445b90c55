"""The Freshdesk connector against a local server following the documented list contract."""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from connectors.base import ConnectorError, Page
from connectors.freshdesk import FreshdeskSource, parse_link_next
from connectors.sandbox import SandboxServer
from tests.connectors.fake_freshdesk import serve_freshdesk
from tests.connectors.fake_zendesk import EPOCH, FakeClock, commit_each, iso

API_KEY = "fd_ApiKey_do_not_print"
START = datetime(2020, 1, 1, tzinfo=UTC)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def servers() -> Iterator[list[SandboxServer]]:
    started: list[SandboxServer] = []
    yield started
    for server in started:
        server.close()


def fd_ticket(ticket_id: int, updated: float, **extra: Any) -> dict[str, Any]:
    """Shaped like Freshdesk's "View a Ticket" answer."""
    record: dict[str, Any] = {
        "id": ticket_id,
        "subject": f"Ticket {ticket_id}",
        "description": f"<div>Body {ticket_id}</div>",
        "description_text": f"Body {ticket_id}",
        "status": 2,
        "priority": 1,
        "source": 1,
        "type": None,
        "requester_id": 7000 + ticket_id,
        "company_id": None,
        "tags": [],
        "custom_fields": {"cf_plan": "basic"},
        "created_at": iso(updated - 3600),
        "updated_at": iso(updated),
        "due_by": iso(updated + 86_400),
    }
    record.update(extra)
    return record


def _serve(clock: FakeClock, tickets: list[dict[str, Any]], **kwargs: Any) -> tuple[Any, str]:
    return serve_freshdesk(tickets, api_key=API_KEY, clock=clock, **kwargs)


def _source(clock: FakeClock, url: str, **kwargs: Any) -> FreshdeskSource:
    return FreshdeskSource(
        "helpdesk",
        base_url=url,
        api_key=kwargs.pop("api_key", API_KEY),
        start_time=kwargs.pop("start_time", START),
        session=kwargs.pop("session", None) or clock.session("helpdesk"),
        **kwargs,
    )


def _tickets(pages: list[Page]) -> list[dict[str, Any]]:
    return [r for p in pages if p.stream == "tickets" for r in p.records]  # type: ignore[misc]


def _versions(tickets: list[dict[str, Any]]) -> list[tuple[int, str]]:
    return [(t["id"], t["updated_at"]) for t in tickets]


def test_link_header_parsing() -> None:
    header = '<https://a.freshdesk.com/api/v2/tickets?page=2&per_page=100>; rel="next"'
    assert parse_link_next(header) == "https://a.freshdesk.com/api/v2/tickets?page=2&per_page=100"
    assert parse_link_next('<https://x/prev>; rel="prev"') is None
    assert parse_link_next(None) is None


def test_first_run_sets_updated_since_or_it_would_get_30_days(
    clock: FakeClock, servers: list[SandboxServer]
) -> None:
    old = [fd_ticket(i, EPOCH - 400 * 86_400 + i) for i in range(1, 4)]
    new = [fd_ticket(i, EPOCH - 86_400 + i) for i in range(4, 6)]
    server, url = _serve(clock, old + new)
    servers.append(server)
    got = _tickets(list(_source(clock, url, conversations=False).pages({})))
    assert [t["id"] for t in got] == [1, 2, 3, 4, 5]
    first = server.state.list_requests[0]
    assert first["updated_since"] == "2019-12-31T23:59:59Z"
    assert (first["order_by"], first["order_type"]) == ("updated_at", "asc")
    assert got[0]["description_text"] == "Body 1"  # include=description asked for


def test_pages_by_key_so_the_300_page_wall_is_never_hit(
    clock: FakeClock, servers: list[SandboxServer]
) -> None:
    tickets = [fd_ticket(i, EPOCH - 86_400 + i * 7) for i in range(1, 61)]
    # A wall at page 3 of 5 tickets: offset paging would stop at ticket 15.
    server, url = _serve(clock, tickets, max_page=3)
    servers.append(server)
    pages = list(_source(clock, url, conversations=False, per_page=5).pages({}))
    got = _tickets(pages)
    assert [t["id"] for t in got] == list(range(1, 61))
    assert server.state.bad_page_requests == 0
    cursors = [p.cursor["updated_since"] for p in pages]
    assert cursors == sorted(cursors)
    assert cursors[-1] == iso(EPOCH - 86_400 + 60 * 7)


def test_page_301_answers_400_and_the_run_says_why(
    clock: FakeClock, servers: list[SandboxServer]
) -> None:
    """The documented wall, reached only when one second holds more than 300 pages."""
    same = EPOCH - 86_400
    server, url = _serve(clock, [fd_ticket(i, same) for i in range(1, 21)], max_page=3)
    servers.append(server)
    pages: list[Page] = []
    with pytest.raises(ConnectorError, match="share the updated_at"):
        pages.extend(_source(clock, url, conversations=False, per_page=5).pages({}))
    assert server.state.bad_page_requests == 1


def test_many_tickets_in_one_second_page_by_number_without_loss(
    clock: FakeClock, servers: list[SandboxServer]
) -> None:
    same = EPOCH - 86_400
    tickets = [fd_ticket(i, same) for i in range(1, 13)] + [fd_ticket(13, same + 5)]
    server, url = _serve(clock, tickets)
    servers.append(server)
    got = _tickets(list(_source(clock, url, conversations=False, per_page=5).pages({})))
    assert sorted(t["id"] for t in got) == list(range(1, 14))
    assert len(_versions(got)) == len(set(_versions(got)))


def test_ticket_updated_while_paging_loses_no_neighbour(
    clock: FakeClock, servers: list[SandboxServer]
) -> None:
    """Offset pages shift when a read ticket moves to the end; key pages do not."""
    tickets = [fd_ticket(i, EPOCH - 86_400 + i * 10) for i in range(1, 16)]
    server, url = _serve(clock, tickets)
    servers.append(server)
    pages: list[Page] = []
    for page in _source(clock, url, conversations=False, per_page=5).pages({}):
        pages.append(page)
        if len(pages) == 1:
            server.state.put(fd_ticket(2, EPOCH - 60, status=4))  # resolved just now
    got = _tickets(pages)
    assert sorted({t["id"] for t in got}) == list(range(1, 16))
    assert [t["status"] for t in got if t["id"] == 2] == [2, 4]
    assert len(_versions(got)) == len(set(_versions(got)))


def test_next_run_from_the_cursor_dedupes_the_overlap(
    clock: FakeClock, servers: list[SandboxServer]
) -> None:
    same = EPOCH - 3600
    server, url = _serve(clock, [fd_ticket(i, same) for i in range(1, 4)])
    servers.append(server)
    first = list(_source(clock, url, conversations=False).pages({}))
    cursor = first[-1].cursor
    assert cursor == {"updated_since": iso(same), "ids_at": ["1", "2", "3"]}
    server.state.put(fd_ticket(4, same))  # same second, arrived later
    server.state.put(fd_ticket(5, same + 1))
    second = _tickets(list(_source(clock, url, conversations=False).pages({"tickets": cursor})))
    assert [t["id"] for t in second] == [4, 5]


def test_crash_mid_run_then_resume_loses_and_repeats_nothing(
    clock: FakeClock, servers: list[SandboxServer]
) -> None:
    tickets = [fd_ticket(i, EPOCH - 86_400 + i * 3) for i in range(1, 21)]
    server, url = _serve(clock, tickets)
    servers.append(server)
    state: dict[str, Any] = {}
    committed: list[Page] = []
    source = _source(
        clock,
        url,
        conversations=False,
        per_page=4,
        session=clock.session("helpdesk", max_retries=1),
    )

    def fail_after_two(done: list[Page]) -> None:
        if len(done) == 2:
            server.state.faults.extend([503, 503])

    with pytest.raises(ConnectorError, match="503"):
        commit_each(source.pages(state), state, committed, fail_after_two)
    resumed = list(_source(clock, url, conversations=False, per_page=4).pages(state))
    ids = [t["id"] for t in _tickets(committed) + _tickets(resumed)]
    assert ids == list(range(1, 21))


def test_conversations_follow_link_headers_and_come_first(
    clock: FakeClock, servers: list[SandboxServer]
) -> None:
    conversations = {
        1: [
            {
                "id": 50_000 + n,
                "ticket_id": 1,
                "body": f"<p>m{n}</p>",
                "body_text": f"m{n}",
                "incoming": n % 2 == 0,
                "private": False,
                "user_id": 7001,
                "created_at": "2026-09-20T10:00:00Z",
                "updated_at": "2026-09-20T10:00:00Z",
            }
            for n in range(130)
        ]
    }
    server, url = _serve(
        clock, [fd_ticket(1, EPOCH - 500), fd_ticket(2, EPOCH - 400)], conversations=conversations
    )
    servers.append(server)
    pages = list(_source(clock, url).pages({}))
    assert [p.stream for p in pages] == ["conversations", "tickets"]
    assert [c["id"] for c in pages[0].records] == [50_000 + n for n in range(130)]  # type: ignore[index]


def test_429_retry_after_is_honoured(clock: FakeClock, servers: list[SandboxServer]) -> None:
    tickets = [fd_ticket(i, EPOCH - 86_400 + i) for i in range(1, 13)]
    server, url = _serve(clock, tickets, rate_per_minute=3)
    servers.append(server)
    source = _source(clock, url, conversations=False, per_page=2, rate_per_minute=600)
    got = _tickets(list(source.pages({})))
    assert [t["id"] for t in got] == list(range(1, 13))
    assert server.state.rate_limited >= 1
    assert source.session.throttled == server.state.rate_limited


def test_wrong_api_key_is_401_and_the_key_is_never_shown(
    clock: FakeClock, servers: list[SandboxServer], caplog: pytest.LogCaptureFixture
) -> None:
    server, url = _serve(clock, [fd_ticket(1, EPOCH - 500)])
    servers.append(server)
    wrong = "fd_wrong_key_secret"
    with caplog.at_level(logging.DEBUG), pytest.raises(ConnectorError) as caught:
        list(_source(clock, url, api_key=wrong).pages({}))
    assert "401" in str(caught.value)
    assert "'helpdesk'" in str(caught.value)
    basic = base64.b64encode(f"{wrong}:X".encode()).decode()
    for text in (str(caught.value), caplog.text):
        assert wrong not in text
        assert basic not in text


def test_backfill_state(clock: FakeClock, servers: list[SandboxServer]) -> None:
    tickets = [fd_ticket(i, EPOCH - 86_400 + i * 60) for i in range(1, 6)]
    server, url = _serve(clock, tickets)
    servers.append(server)
    source = _source(clock, url, conversations=False)
    since = datetime.fromtimestamp(EPOCH - 86_400 + 180, UTC) + timedelta(seconds=0)
    got = _tickets(list(source.pages(source.backfill_state(since))))
    assert [t["id"] for t in got] == [3, 4, 5]
