"""The Zendesk connector against the sandbox (a real local HTTP server), on a fake clock.

Each test is one of the traps known Zendesk connectors fell into; the
assertions are on the sequence of pages and cursors: nothing lost, nothing
duplicated by (id, updated_at), and a resumed run starts after the last page.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from connectors.base import ConnectorError, Page
from connectors.sandbox import tickets_from_export_rows
from connectors.zendesk import ZendeskSource
from tests.connectors.fake_zendesk import (
    EPOCH,
    FakeClock,
    SandboxServer,
    commit_each,
    serve_zendesk,
    ticket,
)
from transforms.normalize_helpdesk import normalize_zendesk

EMAIL = "ops@acme.com"
TOKEN = "zd_T0ken_never_print_me"
START = datetime(2020, 1, 1, tzinfo=UTC)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def _serve(
    clock: FakeClock, tickets: list[dict[str, Any]], **kwargs: Any
) -> tuple[SandboxServer, str]:
    kwargs.setdefault("rate_per_minute", None)
    return serve_zendesk(tickets, credentials=(EMAIL, TOKEN), clock=clock, **kwargs)


@pytest.fixture
def servers() -> Iterator[list[SandboxServer]]:
    started: list[SandboxServer] = []
    yield started
    for server in started:
        server.close()


def _source(clock: FakeClock, url: str, **kwargs: Any) -> ZendeskSource:
    session = kwargs.pop("session", None) or clock.session("support")
    return ZendeskSource(
        "support",
        base_url=url,
        email=EMAIL,
        token=TOKEN,
        start_time=kwargs.pop("start_time", START),
        session=session,
        wall_clock=clock,
        **kwargs,
    )


def _tickets(pages: list[Page]) -> list[dict[str, Any]]:
    return [r for p in pages if p.stream == "tickets" for r in p.records]  # type: ignore[misc]


def _old_tickets(n: int, *, first: int = 1) -> list[dict[str, Any]]:
    return [ticket(i, EPOCH - 86_400 + i * 10) for i in range(first, first + n)]


def test_full_export_pages_every_ticket_once(
    clock: FakeClock, servers: list[SandboxServer]
) -> None:
    server, url = _serve(clock, _old_tickets(10), page_size=3)
    servers.append(server)
    pages = list(_source(clock, url).pages({}))
    ticket_pages = [p for p in pages if p.stream == "tickets"]
    assert [len(p.records) for p in ticket_pages] == [3, 3, 3, 1]
    assert [t["id"] for t in _tickets(pages)] == list(range(1, 11))
    # Each page's cursor is new, and comments come before the tickets page they belong to.
    cursors = [p.cursor["after_cursor"] for p in ticket_pages]
    assert len(set(cursors)) == len(cursors)
    streams = [p.stream for p in pages]
    assert streams[:2] == ["comments", "tickets"]
    comments = [c for p in pages if p.stream == "comments" for c in p.records]
    assert {c["_ticket_id"] for c in comments} == set(range(1, 11))  # type: ignore[index]
    # A second run from the last cursor finds nothing new.
    again = list(_source(clock, url).pages({"tickets": ticket_pages[-1].cursor}))
    assert _tickets(again) == []


def test_system_update_moves_generated_timestamp_not_updated_at(
    clock: FakeClock, servers: list[SandboxServer]
) -> None:
    """A cursor on updated_at misses this update; the export cursor does not."""
    server, url = _serve(clock, _old_tickets(5))
    servers.append(server)
    first = list(_source(clock, url).pages({}))
    last_cursor = [p for p in first if p.stream == "tickets"][-1].cursor
    high_water_updated_at = max(t["updated_at"] for t in _tickets(first))
    # An SLA/metrics change: same updated_at, new generated_timestamp, new field value.
    changed = dict(server.state.tickets[2], custom_fields=[{"id": 360001, "value": "breached"}])
    server.state.put(changed, at=clock() - 120)
    second = _tickets(list(_source(clock, url).pages({"tickets": last_cursor})))
    assert [t["id"] for t in second] == [2]
    assert second[0]["custom_fields"][0]["value"] == "breached"
    # What an updated_at cursor would have done: filter it out.
    assert not second[0]["updated_at"] > high_water_updated_at


def test_most_recent_minute_is_never_asked_for_nor_skipped(
    clock: FakeClock, servers: list[SandboxServer]
) -> None:
    recent = [ticket(100, clock() - 30), ticket(101, clock() - 5)]
    server, url = _serve(clock, [*_old_tickets(3), *recent])
    servers.append(server)
    # A start_time in the future is clamped to more than a minute ago: no 400.
    future = datetime.fromtimestamp(clock() + 3600, UTC)
    assert _tickets(list(_source(clock, url, start_time=future).pages({}))) == []
    first = list(_source(clock, url).pages({}))
    assert [t["id"] for t in _tickets(first)] == [1, 2, 3]  # the last minute is not exported
    cursor = [p for p in first if p.stream == "tickets"][-1].cursor
    stamp = base64.urlsafe_b64decode(cursor["after_cursor"]).decode()
    assert stamp.startswith(str(int(EPOCH - 86_400 + 30)))  # not past what was returned
    clock.advance(120)
    second = list(_source(clock, url).pages({"tickets": cursor}))
    assert [t["id"] for t in _tickets(second)] == [100, 101]


def test_client_rate_limit_keeps_the_server_from_ever_answering_429(
    clock: FakeClock, servers: list[SandboxServer]
) -> None:
    server, url = _serve(clock, _old_tickets(25), page_size=1, rate_per_minute=10)
    servers.append(server)
    got = _tickets(list(_source(clock, url, comments=False, rate_per_minute=10).pages({})))
    assert [t["id"] for t in got] == list(range(1, 26))
    assert server.state.rate_limited == 0
    assert server.state.export_requests == 25
    # 25 requests at 10 a minute: at least 24 spacings of 6 s.
    assert sum(clock.slept) >= 24 * 6.0


def test_server_429_with_fractional_retry_after_is_honoured(
    clock: FakeClock, servers: list[SandboxServer]
) -> None:
    server, url = _serve(clock, _old_tickets(15), page_size=1, rate_per_minute=10)
    servers.append(server)
    # Misconfigured client: believes it may send 600 a minute.
    source = _source(clock, url, comments=False, rate_per_minute=600)
    got = _tickets(list(source.pages({})))
    assert [t["id"] for t in got] == list(range(1, 16))
    assert server.state.rate_limited >= 1
    assert source.session.throttled == server.state.rate_limited
    # The server's answers were fractional, and the client waited them out: a client
    # retrying at once would have collected max_throttled 429s and failed.
    assert any(not float(v).is_integer() for v in server.state.retry_afters)
    assert server.state.rate_limited <= 6
    assert sum(clock.slept) >= max(float(v) for v in server.state.retry_afters)


def test_ticket_updated_between_pages_appears_twice_as_sent(
    clock: FakeClock, servers: list[SandboxServer]
) -> None:
    server, url = _serve(clock, _old_tickets(6), page_size=2)
    servers.append(server)
    pages: list[Page] = []
    for page in _source(clock, url).pages({}):
        pages.append(page)
        if page.stream == "tickets" and len([p for p in pages if p.stream == "tickets"]) == 1:
            # Ticket 1 (already exported) is updated by an agent mid-run.
            server.state.put(
                {
                    **server.state.tickets[1],
                    "status": "solved",
                    "updated_at": "2026-09-21T00:00:00Z",
                },
                at=clock() - 100,
            )
    got = _tickets(pages)
    ids = [t["id"] for t in got]
    assert ids.count(1) == 2
    assert sorted(set(ids)) == list(range(1, 7))
    versions = [(t["id"], t["updated_at"]) for t in got]
    assert len(versions) == len(set(versions))  # the same ticket, two different versions
    assert [t["status"] for t in got if t["id"] == 1] == ["open", "solved"]
    # Downstream, the later version wins.
    frame = normalize_zendesk(got, source="support", stream="tickets", ingested_at=START).tickets
    latest = frame.sort("updated_at").unique("ticket_key", keep="last")
    assert latest.filter(latest["source_id"] == "1")["status"].to_list() == ["solved"]


def test_deleted_ticket_is_exported_and_its_comments_not_fetched(
    clock: FakeClock, servers: list[SandboxServer]
) -> None:
    tickets = _old_tickets(3)
    tickets[1]["status"] = "deleted"
    server, url = _serve(clock, tickets)
    servers.append(server)
    pages = list(_source(clock, url).pages({}))
    assert [t["status"] for t in _tickets(pages)] == ["open", "deleted", "open"]
    commented = {c["_ticket_id"] for p in pages if p.stream == "comments" for c in p.records}  # type: ignore[index]
    assert commented == {1, 3}
    assert server.state.comment_requests == 2


def test_truncated_page_and_500s_are_retried_without_loss(
    clock: FakeClock, servers: list[SandboxServer]
) -> None:
    server, url = _serve(clock, _old_tickets(9), page_size=3)
    servers.append(server)
    server.state.faults.extend(["truncate", 500, 502])
    source = _source(clock, url, comments=False)
    got = _tickets(list(source.pages({})))
    assert [t["id"] for t in got] == list(range(1, 10))
    assert source.session.retried == 3
    assert not server.state.faults


def test_crash_mid_run_resumes_from_the_last_page_returned(
    clock: FakeClock, servers: list[SandboxServer]
) -> None:
    server, url = _serve(clock, _old_tickets(10), page_size=3)
    servers.append(server)
    committed: list[Page] = []
    state: dict[str, Any] = {}
    source = _source(clock, url, session=clock.session("support", json_retries=1))

    def break_third_page(done: list[Page]) -> None:
        if len([p for p in done if p.stream == "tickets"]) == 2:
            server.state.faults.extend(["truncate", "truncate"])

    with pytest.raises(ConnectorError, match="malformed JSON"):
        commit_each(source.pages(state), state, committed, break_third_page)
    assert [t["id"] for t in _tickets(committed)] == [1, 2, 3, 4, 5, 6]
    resumed = list(_source(clock, url).pages(state))
    ids = [t["id"] for t in _tickets(committed) + _tickets(resumed)]
    assert ids == list(range(1, 11))  # none lost, none twice


def test_comments_follow_cursor_pagination(clock: FakeClock, servers: list[SandboxServer]) -> None:
    comments = {
        1: [
            {
                "id": 9000 + n,
                "author_id": 501 if n % 2 else 9,
                "body": f"c{n}",
                "public": True,
                "created_at": "2026-09-20T10:00:00Z",
                "via": {"channel": "web"},
            }
            for n in range(230)
        ]
    }
    server, url = _serve(clock, _old_tickets(1), comments=comments)
    servers.append(server)
    pages = list(_source(clock, url).pages({}))
    got = [c for p in pages if p.stream == "comments" for c in p.records]
    assert [c["id"] for c in got] == [9000 + n for n in range(230)]  # type: ignore[index]
    assert server.state.comment_requests == 3  # 100 + 100 + 30
    assert all(c["_requester_id"] == 501 for c in got)  # type: ignore[index]


def test_sideloaded_users_are_their_own_stream(
    clock: FakeClock, servers: list[SandboxServer]
) -> None:
    users = [{"id": 501, "email": "c1@ex.com", "name": "C One"}, {"id": 999, "email": "x@y.z"}]
    server, url = _serve(clock, _old_tickets(2), users=users)
    servers.append(server)
    pages = list(_source(clock, url, comments=False).pages({}))
    assert [p.stream for p in pages] == ["users", "tickets"]
    assert pages[0].record_ids == ["501"]


def test_bad_token_stops_at_once_and_never_shows_the_token(
    clock: FakeClock, servers: list[SandboxServer], caplog: pytest.LogCaptureFixture
) -> None:
    server, url = _serve(clock, _old_tickets(2))
    servers.append(server)
    wrong = "zd_wrong_token_also_secret"
    source = ZendeskSource(
        "support",
        base_url=url,
        email=EMAIL,
        token=wrong,
        start_time=START,
        session=clock.session("support"),
        wall_clock=clock,
    )
    with caplog.at_level(logging.DEBUG), pytest.raises(ConnectorError) as caught:
        list(source.pages({}))
    message = str(caught.value)
    assert "401" in message
    assert "'support'" in message
    assert "credentials" in message
    assert server.state.export_requests == 0
    for text in (message, caplog.text):
        assert wrong not in text
        assert base64.b64encode(f"{EMAIL}/token:{wrong}".encode()).decode() not in text


def test_oauth_bearer_token(clock: FakeClock, servers: list[SandboxServer]) -> None:
    server, url = serve_zendesk(
        _old_tickets(2), oauth_token="oauth-abc-123", clock=clock, rate_per_minute=None
    )
    servers.append(server)
    source = ZendeskSource(
        "support",
        base_url=url,
        email=None,
        token=None,
        oauth_token="oauth-abc-123",
        start_time=START,
        session=clock.session("support"),
        wall_clock=clock,
        comments=False,
    )
    assert [t["id"] for t in _tickets(list(source.pages({})))] == [1, 2]


def test_no_credentials_is_a_config_error() -> None:
    with pytest.raises(ConnectorError, match="email and token_env"):
        ZendeskSource("support", base_url="http://x", email=None, token=None, start_time=START)


def test_backfill_state_restarts_at_since(clock: FakeClock, servers: list[SandboxServer]) -> None:
    server, url = _serve(clock, _old_tickets(6))
    servers.append(server)
    source = _source(clock, url, comments=False)
    since = datetime.fromtimestamp(EPOCH - 86_400 + 40, UTC)
    got = _tickets(list(source.pages(source.backfill_state(since))))
    assert [t["id"] for t in got] == [4, 5, 6]


def test_demo_rows_round_trip_through_the_sandbox(
    clock: FakeClock, servers: list[SandboxServer]
) -> None:
    rows = [
        {
            "id": "17",
            "created_at": "2026-01-02T03:04:05Z",
            "subject": "Price up",
            "body": "Why?",
            "channel": "email",
            "requester": "ann@ex.com",
            "tags": "pricing billing",
            "status": "open",
        },
        {
            "id": "18",
            "created_at": "2026-01-03 10:00:00",
            "subject": "App",
            "body": "Broken",
            "channel": "chat",
            "requester": "bob@ex.com",
            "tags": "",
            "status": "solved",
        },
        {
            "id": "T-9",
            "created_at": "2026-01-04T00:00:00+02:00",
            "subject": "Hi",
            "body": "x",
            "channel": "carrier pigeon",
            "requester": "",
            "tags": "a;b",
            "status": "new",
        },
    ]
    tickets = tickets_from_export_rows(rows)
    assert len({t["id"] for t in tickets}) == 3
    assert len({t["requester_id"] for t in tickets_from_export_rows(rows * 1)}) == 3
    server, url = _serve(clock, tickets)
    servers.append(server)
    pages = list(_source(clock, url).pages({}))
    frame = normalize_zendesk(
        _tickets(pages), source="support", stream="tickets", ingested_at=START
    ).tickets
    by_id = {r["source_id"]: r for r in frame.to_dicts()}
    assert by_id["17"]["channel"] == "email"
    assert by_id["17"]["tags"] == ["pricing", "billing"]
    assert by_id["18"]["channel"] == "chat"
    assert by_id["18"]["status"] == "solved"
    assert by_id["3"]["channel"] == "other"
    assert by_id["3"]["created_at"] == datetime(2026, 1, 3, 22, tzinfo=UTC)


def _ingest(con: Any, source: ZendeskSource, now: datetime) -> int:
    """The lead's ingest loop, minus validation and labelling: pages into the warehouse."""
    from transforms.schema import TICKET_LABELS, empty
    from warehouse import load

    pages = 0
    for page in source.pages(load.get_state(con, "support")):
        normalized = normalize_zendesk(
            page.records, source="support", stream=page.stream, ingested_at=now
        )
        load.commit_page(
            con,
            source="support",
            page=page,
            tickets=load.latest_per_key(normalized.tickets, "ticket_key", "updated_at"),
            messages=normalized.messages,
            labels=empty(TICKET_LABELS),
            rejects=normalized.rejects,
            now=now,
        )
        pages += 1
    return pages


@pytest.mark.slow
def test_pages_land_in_a_real_warehouse_idempotently(
    clock: FakeClock, servers: list[SandboxServer], tmp_path: Any
) -> None:
    from warehouse.db import connect

    tickets = _old_tickets(8)
    tickets[3]["status"] = "deleted"
    tickets[5]["created_at"] = "not a date"
    server, url = _serve(clock, tickets, page_size=3)
    servers.append(server)
    con = connect(tmp_path / "warehouse.duckdb")
    now = datetime.fromtimestamp(clock(), UTC)
    assert _ingest(con, _source(clock, url), now) > 0
    count = con.execute(
        "SELECT count(*), count(*) FILTER (is_deleted) FROM core.tickets"
    ).fetchone()
    assert count == (7, 1)
    # Deleted ticket 4 has no comments; ticket 6's first comment shares its bad date.
    assert con.execute("SELECT count(*) FROM core.messages").fetchone() == (6,)
    quarantined = con.execute(
        "SELECT record_id, reason FROM meta.quarantine ORDER BY record_id"
    ).fetchall()
    assert [q[0] for q in quarantined] == ["6", "comment:6001"]
    assert all("created_at" in q[1] for q in quarantined)
    stored = con.execute(
        "SELECT cursor FROM meta.sync_state WHERE source = 'support' AND stream = 'tickets'"
    ).fetchone()
    assert stored is not None
    # A ticket changes; the next run fetches only it, from the stored cursor.
    server.state.put({**server.state.tickets[2], "status": "solved"}, at=clock() - 90)
    raw_before = con.execute('SELECT count(*) FROM raw."support_records"').fetchone()
    _ingest(con, _source(clock, url), now)
    assert con.execute("SELECT status FROM core.tickets WHERE source_id = '2'").fetchone() == (
        "solved",
    )
    assert con.execute("SELECT count(*) FROM core.tickets").fetchone() == (7,)
    raw_after = con.execute('SELECT count(*) FROM raw."support_records"').fetchone()
    assert raw_before is not None
    assert raw_after is not None
    assert raw_after[0] == raw_before[0] + 1  # the new ticket version; same comment skipped
    # A third run with nothing new adds nothing at all.
    assert _ingest(con, _source(clock, url), now) == 0
    con.close()


def test_a_cursor_that_does_not_move_stops_the_run_instead_of_looping(
    clock: FakeClock, httpserver: Any
) -> None:
    page = {"tickets": [ticket(1, EPOCH - 500)], "after_cursor": "SAME", "end_of_stream": False}
    httpserver.expect_request("/api/v2/incremental/tickets/cursor.json").respond_with_json(page)
    source = _source(clock, httpserver.url_for("/").rstrip("/"), comments=False)
    pages = source.pages({"tickets": {"after_cursor": "SAME"}})
    with pytest.raises(ConnectorError, match="did not move its cursor"):
        next(pages)
