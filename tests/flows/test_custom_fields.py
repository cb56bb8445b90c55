"""Custom fields, field dictionaries and satisfaction ratings: frames, loads, a live run.

The frames are checked on records shaped like each API's; the loads on a real
DuckDB file migrated by ``warehouse.db.connect``; the live run drives the
Zendesk connector against the sandbox on loopback through the same commit
calls the ingest loop makes (``land_extras`` then ``commit_page`` per page),
including a crash between the two.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pytest

from connectors.sandbox import SandboxServer
from connectors.zendesk import ZendeskSource
from tests.connectors.fake_zendesk import EPOCH, FakeClock, iso, serve_zendesk, ticket
from transforms.custom_fields import (
    custom_fields_frame,
    field_defs_frame,
    satisfaction_frame,
    ticket_extras,
)
from transforms.normalize_helpdesk import normalize_zendesk
from transforms.schema import TICKET_LABELS, empty
from warehouse import load
from warehouse.custom_fields import (
    land_extras,
    land_page_extras,
    replace_field_defs,
    upsert_custom_fields,
    upsert_satisfaction,
)
from warehouse.db import connect

EMAIL, TOKEN = "ops@acme.com", "zd_cf_T0ken"
START = datetime(2020, 1, 1, tzinfo=UTC)
T0 = EPOCH - 86_400
NOW = datetime.fromtimestamp(EPOCH, UTC)


def zd(ticket_id: int, at: float, fields: list[tuple[int, Any]], **extra: Any) -> dict[str, Any]:
    return ticket(ticket_id, at, custom_fields=[{"id": f, "value": v} for f, v in fields], **extra)


def rows(frame: pl.DataFrame) -> list[tuple[Any, ...]]:
    return sorted(frame.select("ticket_id", "field_id", "value").iter_rows(), key=lambda r: repr(r))


def stored(con: duckdb.DuckDBPyConnection, source: str = "support") -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for ticket_id, field_id, value in con.execute(
        "SELECT ticket_id, field_id, value FROM core.ticket_custom_fields WHERE source = ?",
        [source],
    ).fetchall():
        out.setdefault(ticket_id, {})[field_id] = value
    return out


@pytest.fixture
def con(tmp_path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    connection = connect(tmp_path / "w.duckdb")
    yield connection
    connection.close()


# -- frames ----------------------------------------------------------------------


def test_zendesk_values_become_text_and_unset_fields_no_row() -> None:
    record = zd(
        1,
        T0,
        [
            (360_001, "premium"),
            (360_002, ["tv", "mobile"]),
            (360_003, True),
            (360_004, 12),
            (360_005, 3.5),
            (360_006, None),
            (360_007, ""),
            (360_008, []),
        ],
    )
    frame = custom_fields_frame("support", [record])
    assert rows(frame) == sorted(
        [
            ("1", "360001", "premium"),
            ("1", "360002", '["tv", "mobile"]'),
            ("1", "360003", "true"),
            ("1", "360004", "12"),
            ("1", "360005", "3.5"),
        ],
        key=repr,
    )
    assert json.loads(frame.filter(pl.col("field_id") == "360002")["value"][0]) == ["tv", "mobile"]
    assert frame["updated_at"].unique().to_list() == [datetime.fromtimestamp(int(T0), UTC)]
    assert frame["source"].unique().to_list() == ["support"]


def test_freshdesk_object_of_named_fields() -> None:
    record = {
        "id": 9,
        "updated_at": "2026-01-02T03:04:05Z",
        "custom_fields": {"cf_plan": "basic", "cf_devices": ["tv"], "cf_vip": False, "cf_x": None},
    }
    assert rows(custom_fields_frame("helpdesk", [record])) == sorted(
        [("9", "cf_devices", '["tv"]'), ("9", "cf_plan", "basic"), ("9", "cf_vip", "false")],
        key=repr,
    )


def test_one_version_per_ticket_and_a_marker_when_nothing_is_set() -> None:
    records = [
        zd(1, T0, [(360_001, "basic")]),
        zd(1, T0 + 60, [(360_001, "premium")]),  # newer version of ticket 1
        zd(2, T0, [(360_001, "basic")]),
        zd(2, T0, [(360_002, ["tv"])]),  # same updated_at: the later record wins
        zd(3, T0, [(360_001, None)]),  # nothing set
        {"id": 4, "updated_at": "yesterday", "custom_fields": [{"id": 1, "value": "x"}]},
        {"custom_fields": [{"id": 1, "value": "no id"}]},
    ]
    frame = custom_fields_frame("support", records)
    assert rows(frame) == sorted(
        [("1", "360001", "premium"), ("2", "360002", '["tv"]'), ("3", None, None)], key=repr
    )


def test_field_definitions_of_both_helpdesks_key_like_their_tickets() -> None:
    zendesk = field_defs_frame(
        "support",
        [
            {
                "id": 360_001,
                "title": "Plan",
                "type": "tagger",
                "active": True,
                "updated_at": "2024-02-01T00:00:00Z",
            },
            {"id": 360_002, "title": "Old", "type": "text", "active": False},
        ],
    )
    assert zendesk.select("field_id", "title", "type", "active").rows() == [
        ("360001", "Plan", "tagger", True),
        ("360002", "Old", "text", False),
    ]
    assert zendesk["updated_at"][0] == datetime(2024, 2, 1, tzinfo=UTC)
    freshdesk = field_defs_frame(
        "helpdesk",
        [
            {"id": 13, "name": "cf_plan", "label": "Plan", "type": "custom_dropdown"},
            {"id": 14, "name": "cf_old", "label": "Old", "type": "custom_text", "archived": True},
        ],
    )
    assert freshdesk.select("field_id", "title", "active").rows() == [
        ("cf_plan", "Plan", True),
        ("cf_old", "Old", False),
    ]


def test_satisfaction_of_the_latest_version() -> None:
    records = [
        ticket(1, T0, satisfaction_rating={"score": "offered"}),
        ticket(
            1,
            T0 + 60,
            satisfaction_rating={"id": 77, "score": "bad", "comment": "Too slow", "reason": "Wait"},
        ),
        ticket(2, T0, satisfaction_rating={"score": "unoffered"}),
        ticket(3, T0),  # no rating object: no row
    ]
    frame = satisfaction_frame("support", records)
    assert frame.sort("ticket_id").select(
        "ticket_id", "score", "comment", "reason", "rating_id"
    ).rows() == [("1", "bad", "Too slow", "Wait", "77"), ("2", "unoffered", None, None, None)]


def test_extras_by_stream() -> None:
    assert ticket_extras("support", "comments", [{"id": 1}]) is None
    assert ticket_extras("support", "tickets", []) is None
    extras = ticket_extras("support", "tickets", [zd(1, T0, [(5, "x")])])
    assert extras is not None
    assert extras.custom_fields.height == 1
    assert extras.field_defs.is_empty()


# -- loads -----------------------------------------------------------------------


def test_migration_is_recorded(con: duckdb.DuckDBPyConnection) -> None:
    assert con.execute("SELECT name FROM meta.schema_version WHERE version = 4").fetchone() == (
        "custom_fields",
    )


def land(con: duckdb.DuckDBPyConnection, records: list[dict[str, Any]], source: str) -> int:
    """What a page does: its tickets' fields, then the tickets themselves."""
    inserted = upsert_custom_fields(con, custom_fields_frame(source, records))
    tickets = normalize_zendesk(records, source=source, stream="tickets", ingested_at=NOW).tickets
    load.upsert_tickets(con, tickets)
    return inserted


def test_newer_version_replaces_the_set_older_changes_nothing(
    con: duckdb.DuckDBPyConnection,
) -> None:
    first = [zd(1, T0, [(1, "a"), (2, "b")]), zd(2, T0, [(1, "c")])]
    assert land(con, first, "support") == 3
    # Same batch again: same rows.
    land(con, first, "support")
    assert stored(con) == {"1": {"1": "a", "2": "b"}, "2": {"1": "c"}}
    # Ticket 1: field 2 removed, a brand-new field 9 appears; ticket 2: everything unset.
    newer = [zd(1, T0 + 60, [(1, "a2"), (9, "new")]), zd(2, T0 + 60, [(1, None)])]
    land(con, newer, "support")
    assert stored(con) == {"1": {"1": "a2", "9": "new"}}
    # The old versions arriving late (a backfill overlap) change nothing, ticket 2's
    # included: it has no rows left, and core.tickets knows its newer version.
    land(con, first, "support")
    assert stored(con) == {"1": {"1": "a2", "9": "new"}}
    # A system update: same updated_at, a new value (Zendesk moves generated_timestamp only).
    land(con, [zd(1, T0 + 60, [(1, "a2"), (9, "breached")])], "support")
    assert stored(con) == {"1": {"1": "a2", "9": "breached"}}
    # Another source's ticket with the same id is another ticket.
    land(con, first, "other")
    assert stored(con, "other") == {"1": {"1": "a", "2": "b"}, "2": {"1": "c"}}
    assert stored(con) == {"1": {"1": "a2", "9": "breached"}}


def test_two_pages_concatenated_keep_only_the_newest_version(
    con: duckdb.DuckDBPyConnection,
) -> None:
    both = pl.concat(
        [
            custom_fields_frame("support", [zd(1, T0 + 60, [(1, "new")])]),
            custom_fields_frame("support", [zd(1, T0, [(1, "old"), (2, "gone")])]),
        ]
    )
    upsert_custom_fields(con, both)
    assert stored(con) == {"1": {"1": "new"}}


def test_field_defs_are_replaced_whole_and_an_empty_list_is_ignored(
    con: duckdb.DuckDBPyConnection,
) -> None:
    defs = [{"id": 1, "title": "Plan", "type": "tagger", "active": True}]
    replace_field_defs(con, "support", field_defs_frame("support", defs))
    replace_field_defs(con, "other", field_defs_frame("other", defs))
    newer = [
        {"id": 1, "title": "Plan (renamed)", "type": "tagger", "active": True},
        {"id": 2, "title": "Device", "type": "multiselect", "active": True},
    ]
    assert replace_field_defs(con, "support", field_defs_frame("support", newer)) == 2
    assert replace_field_defs(con, "support", field_defs_frame("support", [])) == 0
    got = con.execute(
        "SELECT source, field_id, title FROM core.custom_field_defs ORDER BY ALL"
    ).fetchall()
    assert got == [
        ("other", "1", "Plan"),
        ("support", "1", "Plan (renamed)"),
        ("support", "2", "Device"),
    ]


def test_satisfaction_upsert_latest_wins(con: duckdb.DuckDBPyConnection) -> None:
    offered = [ticket(1, T0, satisfaction_rating={"score": "offered"})]
    rated = [ticket(1, T0 + 60, satisfaction_rating={"id": 5, "score": "good", "comment": "ok"})]
    upsert_satisfaction(con, satisfaction_frame("support", offered))
    upsert_satisfaction(con, satisfaction_frame("support", rated))
    upsert_satisfaction(con, satisfaction_frame("support", offered))  # late, older
    assert con.execute(
        "SELECT ticket_id, score, comment, rating_id FROM core.ticket_satisfaction"
    ).fetchall() == [("1", "good", "ok", "5")]


# -- a live run through the sandbox --------------------------------------------------


class SimulatedCrashError(RuntimeError):
    pass


def ingest(
    con: duckdb.DuckDBPyConnection,
    source: ZendeskSource,
    now: datetime,
    *,
    crash_before_commit_of: int | None = None,
) -> int:
    """The ingest loop's calls per page: extras landed, then the page and its cursor."""
    pages = 0
    for page in source.pages(load.get_state(con, source.name)):
        land_extras(con, ticket_extras(source.name, page.stream, page.records))
        if crash_before_commit_of is not None and pages == crash_before_commit_of:
            raise SimulatedCrashError
        normalized = normalize_zendesk(
            page.records, source=source.name, stream=page.stream, ingested_at=now
        )
        load.commit_page(
            con,
            source=source.name,
            page=page,
            tickets=normalized.tickets,
            messages=normalized.messages,
            labels=empty(TICKET_LABELS),
            rejects=normalized.rejects,
            now=now,
        )
        pages += 1
    return pages


def dump(con: duckdb.DuckDBPyConnection) -> dict[str, list[tuple[Any, ...]]]:
    return {
        table: sorted(con.execute(f"SELECT * FROM {table}").fetchall(), key=repr)
        for table in (
            "core.ticket_custom_fields",
            "core.custom_field_defs",
            "core.ticket_satisfaction",
            "marts.ticket_custom_fields",
        )
    }


def live_tickets() -> list[dict[str, Any]]:
    return [
        zd(
            i,
            T0 + i * 10,
            [(360_001, ["basic", "premium"][i % 2]), (360_002, ["tv"] if i % 3 else None)],
            satisfaction_rating={"score": "good" if i % 2 else "unoffered"},
        )
        for i in range(1, 13)
    ]


FIELDS = [
    {"id": 360_001, "title": "Plan", "type": "tagger", "active": True},
    {"id": 360_002, "title": "Devices", "type": "multiselect", "active": True},
]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sandbox(clock: FakeClock) -> Iterator[SandboxServer]:
    server, _ = serve_zendesk(
        live_tickets(),
        credentials=(EMAIL, TOKEN),
        clock=clock,
        rate_per_minute=None,
        page_size=5,
        ticket_fields=FIELDS,
    )
    yield server
    server.close()


def source_for(clock: FakeClock, server: SandboxServer) -> ZendeskSource:
    host, port = server.server_address[:2]
    return ZendeskSource(
        "support",
        base_url=f"http://{host}:{port}",
        email=EMAIL,
        token=TOKEN,
        start_time=START,
        session=clock.session("support"),
        wall_clock=clock,
        field_definitions=True,
    )


def test_live_run_new_field_mid_stream_and_removal(
    con: duckdb.DuckDBPyConnection, clock: FakeClock, sandbox: SandboxServer
) -> None:
    now = datetime.fromtimestamp(clock(), UTC)
    ingest(con, source_for(clock, sandbox), now)
    first = dump(con)
    assert len(first["core.ticket_custom_fields"]) == 12 + 8  # plan on all, devices on 8
    assert {r[2] for r in first["core.custom_field_defs"]} == {"Plan", "Devices"}
    named = con.execute(
        "SELECT title, value FROM marts.ticket_custom_fields WHERE ticket_key = 'support:3'"
    ).fetchall()
    assert named == [("Plan", "premium")]
    assert con.execute(
        "SELECT score, count(*) FROM core.ticket_satisfaction GROUP BY ALL ORDER BY ALL"
    ).fetchall() == [("good", 6), ("unoffered", 6)]

    # An admin adds "Region"; ticket 4 gets it, loses Devices, and is rated bad.
    sandbox.state.ticket_fields.append(
        {"id": 360_009, "title": "Region", "type": "text", "active": True}
    )
    updated = zd(
        4,
        clock() - 120,
        [(360_001, "basic"), (360_009, "EU")],
        satisfaction_rating={"id": 1, "score": "bad", "comment": "Price"},
    )
    sandbox.state.put(updated, at=clock() - 120)
    ingest(con, source_for(clock, sandbox), now)
    assert stored(con)["4"] == {"360001": "basic", "360009": "EU"}
    assert con.execute(
        "SELECT title, value FROM marts.ticket_custom_fields "
        "WHERE ticket_key = 'support:4' ORDER BY title"
    ).fetchall() == [("Plan", "basic"), ("Region", "EU")]
    assert con.execute(
        "SELECT score, comment FROM core.ticket_satisfaction WHERE ticket_id = '4'"
    ).fetchone() == ("bad", "Price")
    # The other tickets are untouched, and a run with nothing new changes nothing.
    second = dump(con)
    ingest(con, source_for(clock, sandbox), now)
    assert dump(con) == second
    unchanged = [r for r in second["core.ticket_custom_fields"] if r[1] != "4"]
    assert unchanged == [r for r in first["core.ticket_custom_fields"] if r[1] != "4"]


def test_crash_between_extras_and_commit_resumes_to_the_same_warehouse(
    tmp_path: Path, clock: FakeClock, sandbox: SandboxServer
) -> None:
    now = datetime.fromtimestamp(clock(), UTC)
    crashed = connect(tmp_path / "crashed.duckdb")
    fresh = connect(tmp_path / "fresh.duckdb")
    try:
        with pytest.raises(SimulatedCrashError):
            # Page 0 is the dictionary, then comments/users/orgs/tickets per export page.
            ingest(crashed, source_for(clock, sandbox), now, crash_before_commit_of=6)
        assert crashed.execute("SELECT count(*) FROM core.tickets").fetchone() != (12,)
        ingest(crashed, source_for(clock, sandbox), now)
        ingest(fresh, source_for(clock, sandbox), now)
        assert dump(crashed) == dump(fresh)
        assert len(dump(fresh)["core.ticket_custom_fields"]) == 20
    finally:
        crashed.close()
        fresh.close()


def test_land_page_extras_ignores_streams_without_extras(
    con: duckdb.DuckDBPyConnection, clock: FakeClock, sandbox: SandboxServer
) -> None:
    pages = list(source_for(clock, sandbox).pages({}))
    loaded = {p.stream: land_page_extras(con, "support", p) for p in pages}
    assert loaded["comments"].custom_fields == 0
    assert loaded["ticket_fields"].field_defs == 2
    assert sum(land_page_extras(con, "support", p).custom_fields for p in pages) == 20
    assert iso(T0)  # the fixture's clock and the tickets share one epoch


def test_freshdesk_live_run_names_its_fields(
    con: duckdb.DuckDBPyConnection, clock: FakeClock
) -> None:
    from connectors.freshdesk import FreshdeskSource
    from tests.connectors.fake_freshdesk import serve_freshdesk

    tickets = [
        {
            "id": i,
            "subject": f"Ticket {i}",
            "status": 2,
            "priority": 1,
            "source": 1,
            "tags": [],
            "custom_fields": {"cf_plan": "basic", "cf_vip": i == 2, "cf_region": None},
            "created_at": iso(T0 + i),
            "updated_at": iso(T0 + i),
        }
        for i in (1, 2)
    ]
    fields = [
        {"id": 13, "name": "cf_plan", "label": "Plan", "type": "custom_dropdown"},
        {"id": 14, "name": "cf_vip", "label": "VIP", "type": "custom_checkbox"},
    ]
    server, url = serve_freshdesk(tickets, api_key="fd-key", clock=clock, ticket_fields=fields)
    try:
        source = FreshdeskSource(
            "helpdesk",
            base_url=url,
            api_key="fd-key",
            start_time=START,
            session=clock.session("helpdesk"),
            conversations=False,
            field_definitions=True,
        )
        for page in source.pages({}):
            land_page_extras(con, "helpdesk", page)
    finally:
        server.close()
    assert con.execute(
        "SELECT ticket_key, title, value FROM marts.ticket_custom_fields ORDER BY ALL"
    ).fetchall() == [
        ("helpdesk:1", "Plan", "basic"),
        ("helpdesk:1", "VIP", "false"),
        ("helpdesk:2", "Plan", "basic"),
        ("helpdesk:2", "VIP", "true"),
    ]
    # Freshdesk tickets carry no satisfaction_rating: no rows, no error.
    assert con.execute("SELECT count(*) FROM core.ticket_satisfaction").fetchone() == (0,)
