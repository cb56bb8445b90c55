from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import polars as pl
import pytest

from connectors.base import Page
from transforms.schema import TICKETS, conform
from warehouse import load
from warehouse.db import connect, migrate, migrations
from warehouse.marts import refresh_marts
from warehouse.read import ReadOnlyError, check_read_only, open_reader, query
from warehouse.snapshot import publish_snapshot

NOW = datetime(2026, 1, 10, 12, tzinfo=UTC)


def tickets(rows: list[dict]) -> pl.DataFrame:
    base = {
        "source": "s",
        "subject": "subject",
        "body": "body",
        "channel": "email",
        "status": "open",
        "tags": [],
        "is_deleted": False,
        "ingested_at": NOW,
    }
    full = []
    for row in rows:
        merged = {**base, **row}
        merged.setdefault("source_id", merged["ticket_key"].split(":", 1)[1])
        merged.setdefault("updated_at", merged["created_at"])
        full.append(merged)
    return conform(pl.DataFrame(full), TICKETS)


@pytest.fixture
def con(tmp_path: Path) -> duckdb.DuckDBPyConnection:
    c = connect(tmp_path / "w.duckdb")
    yield c
    c.close()


def test_migrations_are_recorded_once(tmp_path: Path) -> None:
    c = connect(tmp_path / "w.duckdb")
    assert migrate(c) == []  # connect already applied them
    versions = [r[0] for r in c.execute("SELECT version FROM meta.schema_version").fetchall()]
    assert versions == [m.version for m in migrations()]
    tables = {
        f"{s}.{t}"
        for s, t in c.execute("SELECT schema_name, table_name FROM duckdb_tables()").fetchall()
    }
    for name in (
        "core.tickets",
        "core.messages",
        "core.product_changes",
        "core.ticket_labels",
        "marts.complaints_hourly",
        "marts.complaints_daily",
        "marts.anomalies",
        "meta.sync_state",
        "meta.quarantine",
        "meta.alert_deliveries",
    ):
        assert name in tables


def test_upsert_twice_is_idempotent_and_batch_duplicates_keep_latest(con) -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    batch = tickets(
        [
            {"ticket_key": "s:1", "created_at": t0, "updated_at": t0, "status": "open"},
            {
                "ticket_key": "s:1",
                "created_at": t0,
                "updated_at": t0 + timedelta(hours=1),
                "status": "solved",
            },
            {"ticket_key": "s:2", "created_at": t0},
        ]
    )
    load.upsert_tickets(con, batch)
    first = con.execute("SELECT * FROM core.tickets ORDER BY ticket_key").fetchall()
    load.upsert_tickets(con, batch)
    assert con.execute("SELECT * FROM core.tickets ORDER BY ticket_key").fetchall() == first
    assert con.execute("SELECT status FROM core.tickets WHERE ticket_key='s:1'").fetchone() == (
        "solved",
    )


def test_older_version_never_overwrites_newer(con) -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    load.upsert_tickets(
        con,
        tickets(
            [
                {
                    "ticket_key": "s:1",
                    "created_at": t0,
                    "updated_at": t0 + timedelta(days=1),
                    "status": "solved",
                }
            ]
        ),
    )
    load.upsert_tickets(
        con, tickets([{"ticket_key": "s:1", "created_at": t0, "updated_at": t0, "status": "open"}])
    )
    assert con.execute("SELECT status FROM core.tickets").fetchone() == ("solved",)


def test_later_reply_keeps_the_thread_start(con) -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    load.upsert_tickets(con, tickets([{"ticket_key": "s:1", "created_at": t0, "subject": "first"}]))
    load.upsert_tickets(
        con,
        tickets(
            [{"ticket_key": "s:1", "created_at": t0 + timedelta(days=1), "subject": "Re: first"}]
        ),
    )
    row = con.execute("SELECT created_at, updated_at, subject FROM core.tickets").fetchone()
    assert row[0] == t0
    assert row[1] == t0 + timedelta(days=1)
    assert row[2] == "first"


def test_newer_version_of_the_same_ticket_updates_its_text(con) -> None:
    # A helpdesk ticket keeps its created_at; an agent's edit must land.
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    load.upsert_tickets(con, tickets([{"ticket_key": "s:1", "created_at": t0, "subject": "old"}]))
    load.upsert_tickets(
        con,
        tickets(
            [
                {
                    "ticket_key": "s:1",
                    "created_at": t0,
                    "updated_at": t0 + timedelta(hours=2),
                    "subject": "new",
                    "body": None,
                }
            ]
        ),
    )
    row = con.execute("SELECT subject, body, updated_at FROM core.tickets").fetchone()
    assert row == ("new", "body", t0 + timedelta(hours=2))


def page(ids: list[str], cursor: dict, records: list[dict] | None = None) -> Page:
    return Page("tickets", records or [{"id": i} for i in ids], ids, cursor)


def test_commit_page_lands_raw_and_cursor_together_and_once(con) -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    p = page(["1", "2"], {"created_at": "2026-01-01"})
    batch = tickets(
        [{"ticket_key": "s:1", "created_at": t0}, {"ticket_key": "s:2", "created_at": t0}]
    )
    empty = pl.DataFrame()
    for _ in range(2):
        load.commit_page(
            con,
            source="s",
            page=p,
            tickets=batch,
            messages=empty,
            labels=empty,
            rejects=[("9", "bad", "{}")],
            now=NOW,
        )
    assert con.execute('SELECT count(*) FROM raw."s_records"').fetchone() == (2,)
    assert load.get_state(con, "s") == {"tickets": {"created_at": "2026-01-01"}}
    assert con.execute("SELECT record_id, reason FROM meta.quarantine").fetchall() == [("9", "bad")]
    # A changed record adds a version to raw; an unchanged one does not.
    load.commit_page(
        con,
        source="s",
        page=page(["1"], {"c": 2}, [{"id": "1", "x": 1}]),
        tickets=empty,
        messages=empty,
        labels=empty,
        rejects=[],
        now=NOW,
    )
    assert con.execute('SELECT count(*) FROM raw."s_records"').fetchone() == (3,)


def test_failed_commit_leaves_nothing(con) -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    good = tickets([{"ticket_key": "s:1", "created_at": t0}])
    broken = good.with_columns(pl.lit(None, dtype=pl.String).alias("channel"))  # NOT NULL
    with pytest.raises(duckdb.ConstraintException):
        load.commit_page(
            con,
            source="s",
            page=page(["1"], {"c": 1}),
            tickets=broken,
            messages=pl.DataFrame(),
            labels=pl.DataFrame(),
            rejects=[],
            now=NOW,
        )
    assert load.get_state(con, "s") == {}
    # Even the raw table created for this first page was rolled back.
    raw = con.execute("SELECT count(*) FROM duckdb_tables() WHERE schema_name = 'raw'")
    assert raw.fetchone() == (0,)
    assert con.execute("SELECT count(*) FROM core.tickets").fetchone() == (0,)


def test_marts_count_per_ticket_in_totals(con) -> None:
    day = datetime(2026, 1, 5, 9, tzinfo=UTC)
    load.upsert_tickets(
        con,
        tickets(
            [
                {"ticket_key": "s:1", "created_at": day, "channel": "email"},
                {"ticket_key": "s:2", "created_at": day, "channel": "web"},
                {"ticket_key": "s:3", "created_at": day, "channel": "web", "is_deleted": True},
            ]
        ),
    )
    labels = pl.DataFrame(
        {
            "ticket_key": ["s:1", "s:2", "s:3"],
            "is_complaint": [True, False, True],
            "complaint_score": [0.9, 0.1, 0.9],
            "topics": [["pricing", "dvd"], ["pricing"], ["pricing"]],
            "topic_scores": [[1.0, 1.0], [1.0], [1.0]],
            "cancel_intent": [True, False, False],
            "language": ["en"] * 3,
            "evidence": [[], [], []],
            "labeller_version": ["t"] * 3,
        }
    )
    load.upsert_labels(con, labels, NOW)
    refresh_marts(con)
    rows = {
        (t, c): (n, k, x)
        for t, c, n, k, x in con.execute(
            "SELECT topic, channel, tickets, complaints, cancel_intents FROM marts.complaints_daily"
        ).fetchall()
    }
    assert rows[("*", "*")] == (2, 1, 1)  # the deleted ticket does not count
    assert rows[("pricing", "*")] == (2, 1, 1)
    assert rows[("dvd", "*")] == (1, 1, 1)
    assert rows[("pricing", "web")] == (1, 0, 0)
    hourly = con.execute(
        "SELECT bucket FROM marts.complaints_hourly WHERE topic='*' AND channel='*'"
    )
    assert hourly.fetchall() == [(datetime(2026, 1, 5, 9, tzinfo=UTC),)]
    # An incremental refresh from a later day leaves earlier buckets alone.
    before = con.execute("SELECT * FROM marts.complaints_daily ORDER BY ALL").fetchall()
    refresh_marts(con, since=day + timedelta(days=1))
    assert con.execute("SELECT * FROM marts.complaints_daily ORDER BY ALL").fetchall() == before


def test_snapshot_readable_while_writer_holds_the_file(tmp_path: Path, con) -> None:
    load.set_cursor(con, "s", "tickets", {"a": 1}, 1, NOW)
    target = tmp_path / "w.read.duckdb"
    publish_snapshot(con, target)
    reader = open_reader(target, tmp_path / "w.duckdb")
    try:
        out = query(reader, "SELECT cursor FROM meta.sync_state")
        assert json.loads(out.item()) == {"a": 1}
    finally:
        reader.close()


@pytest.mark.parametrize(
    "sql",
    [
        "DELETE FROM core.tickets",
        "INSERT INTO core.tickets VALUES (1)",
        "SELECT 1; DROP TABLE core.tickets",
        "ATTACH 'x.duckdb'",
        "COPY (SELECT 1) TO 'x.csv'",
        "CREATE TABLE x (a INT)",
    ],
)
def test_read_only_refuses_writes(sql: str) -> None:
    with pytest.raises(ReadOnlyError, match="read-only"):
        check_read_only(sql)


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 1",
        "DESCRIBE core.tickets",
        "SHOW TABLES",
        "WITH a AS (SELECT 1) SELECT * FROM a",
        "EXPLAIN SELECT 1",
    ],
)
def test_read_only_allows_queries(sql: str) -> None:
    check_read_only(sql)
