"""The loader's upsert against DuckDB's own ``ON CONFLICT DO UPDATE``.

``warehouse.load.upsert`` replaced ``INSERT … ON CONFLICT DO UPDATE`` because
the latter read whole column segments of wide rows on a large warehouse. The
statement it replaced stays here as the specification: any sequence of
batches must leave the same table through both.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import duckdb
import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from transforms.schema import TICKET_LABELS, TICKETS, conform
from warehouse import load
from warehouse.db import migrate

T0 = datetime(2026, 1, 1, tzinfo=UTC)

# The statement ``upsert_tickets`` ran before, verbatim in meaning.
_NEWER = (
    "(excluded.created_at < core.tickets.created_at"
    " OR (excluded.created_at = core.tickets.created_at"
    "     AND excluded.updated_at >= core.tickets.updated_at))"
)
REFERENCE_TICKETS = (
    "INSERT INTO core.tickets ({cols}) SELECT {cols} FROM batch "
    "ON CONFLICT (ticket_key) DO UPDATE SET "
    " created_at = least(core.tickets.created_at, excluded.created_at),"
    f" subject = CASE WHEN {_NEWER} THEN coalesce(excluded.subject, core.tickets.subject)"
    "   ELSE coalesce(core.tickets.subject, excluded.subject) END,"
    f" body = CASE WHEN {_NEWER} THEN coalesce(excluded.body, core.tickets.body)"
    "   ELSE coalesce(core.tickets.body, excluded.body) END,"
    " updated_at = greatest(core.tickets.updated_at, excluded.updated_at),"
    " channel = excluded.channel, status = excluded.status, priority = excluded.priority,"
    " requester_key = coalesce(excluded.requester_key, core.tickets.requester_key),"
    " organization = coalesce(excluded.organization, core.tickets.organization),"
    " tags = excluded.tags, is_deleted = excluded.is_deleted,"
    " is_auto = core.tickets.is_auto AND excluded.is_auto,"
    " duplicate_of = coalesce(excluded.duplicate_of, core.tickets.duplicate_of),"
    " ingested_at = excluded.ingested_at "
    "WHERE excluded.updated_at > core.tickets.updated_at"
    " OR excluded.created_at < core.tickets.created_at"
    " OR (excluded.updated_at = core.tickets.updated_at AND ("
    "   excluded.subject IS DISTINCT FROM core.tickets.subject"
    "   OR excluded.body IS DISTINCT FROM core.tickets.body"
    "   OR excluded.status IS DISTINCT FROM core.tickets.status"
    "   OR excluded.tags IS DISTINCT FROM core.tickets.tags"
    "   OR excluded.is_deleted IS DISTINCT FROM core.tickets.is_deleted))"
)

maybe_text = st.one_of(st.none(), st.sampled_from(["", "a", "b", "Price up"]))
version = st.fixed_dictionaries(
    {
        "ticket_key": st.sampled_from([f"s:{i}" for i in range(6)]),
        "created_h": st.integers(0, 3),
        "updated_h": st.integers(0, 3),
        "subject": maybe_text,
        "body": maybe_text,
        "status": st.sampled_from(["open", "solved"]),
        "priority": st.one_of(st.none(), st.just("high")),
        "requester_key": st.one_of(st.none(), st.sampled_from(["r1", "r2"])),
        "organization": st.one_of(st.none(), st.just("acme")),
        "tags": st.lists(st.sampled_from(["x", "y"]), max_size=2),
        "is_deleted": st.booleans(),
        "is_auto": st.one_of(st.none(), st.booleans()),
        "duplicate_of": st.one_of(st.none(), st.just("s:9")),
        "channel": st.sampled_from(["email", "web"]),
    }
)


def _frame(rows: list[dict], batch_no: int) -> pl.DataFrame:
    full = [
        {
            **{k: v for k, v in row.items() if not k.endswith("_h")},
            "source": "s",
            "source_id": row["ticket_key"].split(":")[1],
            "created_at": T0 + timedelta(hours=row["created_h"]),
            "updated_at": T0 + timedelta(hours=row["created_h"] + row["updated_h"]),
            "ingested_at": T0 + timedelta(days=batch_no),
        }
        for row in rows
    ]
    return conform(pl.DataFrame(full), TICKETS)


def _reference_upsert(con: duckdb.DuckDBPyConnection, tickets: pl.DataFrame) -> None:
    batch = load.latest_per_key(tickets, "ticket_key", "updated_at").with_columns(
        pl.col("is_deleted").fill_null(False), pl.col("is_auto").fill_null(False)
    )
    con.register("batch", batch.to_arrow())
    con.execute(REFERENCE_TICKETS.format(cols=", ".join(TICKETS)))
    con.unregister("batch")


def _table(con: duckdb.DuckDBPyConnection, name: str) -> list[tuple]:
    return con.execute(f"SELECT * FROM {name} ORDER BY ALL").fetchall()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches=st.lists(st.lists(version, min_size=1, max_size=5), min_size=1, max_size=4))
def test_ticket_upsert_leaves_what_on_conflict_left(batches: list[list[dict]]) -> None:
    ours, spec = duckdb.connect(), duckdb.connect()
    migrate(ours)
    migrate(spec)
    for n, rows in enumerate(batches):
        frame = _frame(rows, n)
        with ours.cursor() as cur:
            cur.execute("BEGIN")
            load.upsert_tickets(cur, frame)
            cur.execute("COMMIT")
        _reference_upsert(spec, frame)
        assert _table(ours, "core.tickets") == _table(spec, "core.tickets")
    # Nothing left behind in the caller's session.
    assert not ours.execute(
        "SELECT table_name FROM duckdb_tables() WHERE temporary AND table_name LIKE '_upsert%'"
    ).fetchall()


def test_label_upsert_replaces_only_changed_rows() -> None:
    con = duckdb.connect()
    migrate(con)
    first = conform(
        pl.DataFrame(
            {
                "ticket_key": ["s:1", "s:2"],
                "is_complaint": [True, False],
                "complaint_score": [0.9, 0.1],
                "topics": [["pricing"], []],
                "topic_scores": [[0.8], []],
                "cancel_intent": [False, False],
                "language": ["en", "en"],
                "evidence": [["price"], []],
                "labeller_version": ["v1", "v1"],
            }
        ),
        TICKET_LABELS,
    )
    load.upsert_labels(con, first, T0)
    # s:1 unchanged (keeps its labelled_at), s:2 relabelled, s:3 new.
    second = pl.concat(
        [
            first.head(1),
            first.tail(1).with_columns(pl.lit(True).alias("is_complaint")),
            first.tail(1).with_columns(pl.lit("s:3").alias("ticket_key")),
        ]
    )
    later = T0 + timedelta(days=1)
    load.upsert_labels(con, second, later)
    rows = con.execute(
        "SELECT ticket_key, is_complaint, labelled_at FROM core.ticket_labels ORDER BY 1"
    ).fetchall()
    assert [(k, c, at.astimezone(UTC)) for k, c, at in rows] == [
        ("s:1", True, T0),
        ("s:2", True, later),
        ("s:3", False, later),
    ]
