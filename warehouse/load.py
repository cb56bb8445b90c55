"""Transactional, idempotent loads.

One page = one transaction: its raw records, its quarantined records, the
normalised rows and labels, and the cursor that comes after it commit together
or not at all. A crash between pages loses nothing (the cursor did not move)
and duplicates nothing (the page's rows and cursor were both rolled back).

Frames are scanned by DuckDB through Arrow (zero-copy), never looped over in
Python, and every batch is de-duplicated before it is upserted: DuckDB's
``ON CONFLICT`` silently keeps the *first* of two rows with the same key
(PITFALLS.md).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import duckdb
import orjson
import polars as pl

from connectors.base import Cursor, Page
from transforms.schema import (
    MESSAGES,
    PRODUCT_CHANGES,
    TICKET_LABELS,
    TICKETS,
    conform,
)
from warehouse.db import transaction

TICKET_COLUMNS = list(TICKETS)


@contextmanager
def registered(con: duckdb.DuckDBPyConnection, name: str, frame: pl.DataFrame) -> Iterator[None]:
    """Expose ``frame`` to SQL as ``name`` (zero-copy through Arrow) for one statement group."""
    con.register(name, frame.to_arrow())
    try:
        yield
    finally:
        # Inside an aborted transaction DuckDB refuses even this; the name is
        # re-registered (replaced) next time, so the original error must win.
        with suppress(duckdb.Error):
            con.unregister(name)


@contextmanager
def _stored_rows(
    con: duckdb.DuckDBPyConnection, table: str, key: str, batch: str, name: str
) -> Iterator[str]:
    """A temp table ``name`` (``_rid``, ``_key``) of ``table``'s rows whose
    ``key`` is one of the registered ``batch``'s, dropped afterwards.

    Why: on a 10M-row table, a join that reads other columns than the key
    decompresses them for every row (2.2 s cold for a 1,000-record raw page,
    11.5 s for 1,000 tickets through ``ON CONFLICT DO UPDATE``); scanning the
    key column alone and then reading the few matches by ``rowid`` does not.
    """
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE {name} AS SELECT t.rowid AS _rid, t.{key} AS _key "
        f"FROM {table} t SEMI JOIN {batch} b ON t.{key} = b.{key}"
    )
    try:
        yield name
    finally:
        with suppress(duckdb.Error):
            con.execute(f"DROP TABLE IF EXISTS {name}")


def raw_table(source: str) -> str:
    """``raw."<source>_records"``; source names are validated by the config."""
    if not source.replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"invalid source name {source!r}")
    return f'raw."{source}_records"'


def ensure_raw_table(con: duckdb.DuckDBPyConnection, source: str) -> str:
    """Create ``raw.<source>_records`` on first use.

    Rows are identified by (source, record_id, fetched_at) as in DESIGN.md, but
    no index enforces it: the same record may come twice in one page (updated
    between two requests), and ``land_raw`` already skips exact repeats by
    (record_id, payload_hash). No index also keeps bulk landing fast.
    """
    table = raw_table(source)
    con.execute(
        f"CREATE TABLE IF NOT EXISTS {table} ("
        " source VARCHAR NOT NULL, stream VARCHAR NOT NULL, record_id VARCHAR NOT NULL,"
        " fetched_at TIMESTAMPTZ NOT NULL, payload_hash VARCHAR NOT NULL,"
        " payload VARCHAR, payload_bytes BLOB)"
    )
    return table


def _payload_text(record: Any) -> bytes:
    """Canonical JSON of a record (sorted keys, UTF-8): equal records, equal hashes.

    orjson, ~5x faster than ``json.dumps`` at 2 KB a record, which at a million
    records was the largest cost of raw landing; ``json`` only for what orjson
    refuses (integers beyond 64 bits).
    """
    try:
        return orjson.dumps(
            record, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS, default=str
        )
    except orjson.JSONEncodeError:
        return json.dumps(record, sort_keys=True, ensure_ascii=False, default=str).encode()


def raw_frame(source: str, page: Page, fetched_at: datetime) -> pl.DataFrame:
    """The rows ``land_raw`` stores for ``page``: canonical payload and its hash.

    Public so the ingest loop can build it before the transaction, while the
    previous batch is still being written, and let go of the parsed records.
    """
    texts: list[bytes | None] = []
    blobs: list[bytes | None] = []
    hashes: list[str] = []
    sha256 = hashlib.sha256
    for record in page.records:
        if isinstance(record, bytes):
            texts.append(None)
            blobs.append(record)
            hashes.append(sha256(record).hexdigest())
        else:
            text = _payload_text(record)
            texts.append(text)
            blobs.append(None)
            hashes.append(sha256(text).hexdigest())
    frame = pl.DataFrame(
        [
            pl.Series("record_id", [str(r) for r in page.record_ids], pl.String),
            pl.Series("payload_hash", hashes, pl.String),
            # orjson writes valid UTF-8: one vectorised cast, no per-record decode.
            pl.Series("payload", texts, pl.Binary).cast(pl.String),
            pl.Series("payload_bytes", blobs, pl.Binary),
        ]
    )
    return frame.select(
        pl.lit(source, pl.String).alias("source"),
        pl.lit(page.stream, pl.String).alias("stream"),
        "record_id",
        pl.lit(fetched_at).cast(pl.Datetime("us", "UTC")).alias("fetched_at"),
        "payload_hash",
        "payload",
        "payload_bytes",
    ).unique(subset=["record_id", "payload_hash"], keep="first", maintain_order=True)


def land_raw(
    con: duckdb.DuckDBPyConnection,
    source: str,
    page: Page,
    fetched_at: datetime,
    frame: pl.DataFrame | None = None,
) -> int:
    """Insert the page's records that are not already stored byte for byte.

    A re-fetched, unchanged record adds nothing; a changed one adds a version,
    so ``raw`` keeps the history that ``replay`` rebuilds ``core`` from.
    ``frame``: the page's ``raw_frame``, if already built.
    """
    table = ensure_raw_table(con, source)
    if frame is None:
        frame = raw_frame(source, page, fetched_at)
    # Only the stored versions of the page's records have their hashes read
    # (comparing hashes across 10M records: 2.2 s cold; the ids alone 0.5 s).
    with (
        registered(con, "raw_page", frame),
        _stored_rows(con, table, "record_id", "raw_page", "_raw_seen") as seen,
    ):
        row = con.execute(
            f"INSERT INTO {table} SELECT f.* FROM raw_page f ANTI JOIN ("
            f"  SELECT record_id, payload_hash FROM {table}"
            f"   WHERE rowid IN (SELECT _rid FROM {seen})) r"
            " ON r.record_id = f.record_id AND r.payload_hash = f.payload_hash"
        ).fetchone()
    return int(row[0]) if row else 0


def quarantine(
    con: duckdb.DuckDBPyConnection,
    source: str,
    stream: str,
    rejects: Sequence[tuple[str, str, str]],
    now: datetime,
) -> int:
    if not rejects:
        return 0
    frame = (
        pl.DataFrame(
            {
                "record_id": [str(r[0]) for r in rejects],
                "reason": [r[1] for r in rejects],
                "payload": [r[2] for r in rejects],
            },
            schema={"record_id": pl.String, "reason": pl.String, "payload": pl.String},
        )
        .group_by("record_id", maintain_order=True)
        .agg(pl.col("reason").str.join("; "), pl.col("payload").first())
    )
    with registered(con, "rejects", frame):
        con.execute(
            "INSERT INTO meta.quarantine "
            "SELECT ?, record_id, ?, reason, payload, ? FROM rejects "
            "ON CONFLICT (source, record_id) DO UPDATE SET "
            "stream = excluded.stream, reason = excluded.reason, payload = excluded.payload, "
            "quarantined_at = excluded.quarantined_at",
            [source, stream, now],
        )
    return len(rejects)


def release_from_quarantine(
    con: duckdb.DuckDBPyConnection, source: str, record_ids: Sequence[str]
) -> None:
    """A record that now loads (fixed upstream) leaves quarantine."""
    if record_ids:
        con.execute(
            "DELETE FROM meta.quarantine WHERE source = ? AND record_id IN (SELECT unnest(?))",
            [source, list(record_ids)],
        )


def latest_per_key(frame: pl.DataFrame, key: str, order: str) -> pl.DataFrame:
    """Keep one row per key: the one with the greatest ``order`` (last wins on ties)."""
    return frame.sort(order, nulls_last=False, maintain_order=True).unique(
        subset=[key], keep="last", maintain_order=True
    )


def upsert_tickets(con: duckdb.DuckDBPyConnection, tickets: pl.DataFrame) -> int:
    """Insert new tickets; update an existing one only if this version is newer
    or differs, so loading the same batch twice leaves the same rows.

    The earliest ``created_at`` and its text win (an email thread's first
    message stays its subject when a reply lands in a later run), and for the
    same start the latest version's text; status, tags and deletion follow the
    latest ``updated_at``.
    """
    if tickets.is_empty():
        return 0
    batch = latest_per_key(conform(tickets, TICKETS), "ticket_key", "updated_at")
    batch = batch.with_columns(
        pl.col("is_deleted").fill_null(False), pl.col("is_auto").fill_null(False)
    )
    with registered(con, "batch", batch):
        upsert(con, "core.tickets", "ticket_key", TICKET_COLUMNS, _TICKET_MERGE, _TICKET_CHANGED)
    return batch.height


# Whose subject and body win. An earlier start wins (an email thread's first
# message stays its subject when a reply lands in a later run); for the same
# ticket start, the newer version wins (an agent edited a helpdesk subject).
_NEWER_TEXT = (
    "(excluded.created_at < cur.created_at"
    " OR (excluded.created_at = cur.created_at AND excluded.updated_at >= cur.updated_at))"
)

# How a stored ticket and a newer version of it merge (columns not named keep
# the stored value), and when the stored row is replaced at all.
_TICKET_MERGE = {
    "created_at": "least(cur.created_at, excluded.created_at)",
    "subject": f"CASE WHEN {_NEWER_TEXT} THEN coalesce(excluded.subject, cur.subject)"
    " ELSE coalesce(cur.subject, excluded.subject) END",
    "body": f"CASE WHEN {_NEWER_TEXT} THEN coalesce(excluded.body, cur.body)"
    " ELSE coalesce(cur.body, excluded.body) END",
    "updated_at": "greatest(cur.updated_at, excluded.updated_at)",
    "channel": "excluded.channel",
    "status": "excluded.status",
    "priority": "excluded.priority",
    "requester_key": "coalesce(excluded.requester_key, cur.requester_key)",
    "organization": "coalesce(excluded.organization, cur.organization)",
    "tags": "excluded.tags",
    "is_deleted": "excluded.is_deleted",
    "is_auto": "cur.is_auto AND excluded.is_auto",
    "duplicate_of": "coalesce(excluded.duplicate_of, cur.duplicate_of)",
    "ingested_at": "excluded.ingested_at",
}
_TICKET_CHANGED = (
    "excluded.updated_at > cur.updated_at"
    " OR excluded.created_at < cur.created_at"
    " OR (excluded.updated_at = cur.updated_at AND ("
    "   excluded.subject IS DISTINCT FROM cur.subject"
    "   OR excluded.body IS DISTINCT FROM cur.body"
    "   OR excluded.status IS DISTINCT FROM cur.status"
    "   OR excluded.tags IS DISTINCT FROM cur.tags"
    "   OR excluded.is_deleted IS DISTINCT FROM cur.is_deleted))"
)


def upsert(
    con: duckdb.DuckDBPyConnection,
    table: str,
    key: str,
    columns: Sequence[str],
    merge: Mapping[str, str],
    changed: str,
) -> None:
    """``INSERT … ON CONFLICT (key) DO UPDATE SET merge WHERE changed`` from the
    registered, de-duplicated ``batch``, without DuckDB's ``ON CONFLICT``.

    Why: on a 10M-ticket warehouse, ``ON CONFLICT DO UPDATE`` read whole column
    segments of the text and list columns to update a handful of rows (11.5 s
    for 1,000 tickets of which 10 existed, cold cache; 1.7 s when its SET named
    narrow columns only). Here the stored keys are found by scanning the key
    column alone, new keys are appended, and only the clashing rows are read
    (by ``rowid``) and, where ``changed`` holds, deleted and re-inserted merged.

    ``merge``: column -> SQL over ``cur`` (the stored row) and ``excluded`` (the
    batch's row); a column not in it keeps the stored value, as with ``DO UPDATE
    SET``. Runs inside the caller's transaction.
    """
    cols = ", ".join(columns)
    with _stored_rows(con, table, key, "batch", "_upsert_clash") as clash:
        con.execute(
            f"INSERT INTO {table} ({cols}) SELECT {cols} FROM batch b "
            f"ANTI JOIN {clash} c ON b.{key} = c._key"
        )
        row = con.execute(f"SELECT count(*) FROM {clash}").fetchone()
        if not row or not row[0]:
            return
        merged = ", ".join(f"{merge.get(c, f'cur.{c}')} AS {c}" for c in columns)
        try:
            con.execute(
                f"CREATE OR REPLACE TEMP TABLE _upsert_merged AS SELECT c._rid, {merged} "
                f"FROM {clash} c JOIN batch excluded ON excluded.{key} = c._key "
                f"JOIN (SELECT rowid AS _rid, * FROM {table} "
                f"      WHERE rowid IN (SELECT _rid FROM {clash})) cur ON cur._rid = c._rid "
                f"WHERE {changed}"
            )
            con.execute(f"DELETE FROM {table} WHERE rowid IN (SELECT _rid FROM _upsert_merged)")
            con.execute(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM _upsert_merged")
        finally:
            with suppress(duckdb.Error):
                con.execute("DROP TABLE IF EXISTS _upsert_merged")


def _replace_when_changed(
    columns: Sequence[str], key: str, compared: Sequence[str]
) -> tuple[dict[str, str], str]:
    """``upsert``'s ``merge`` and ``changed`` for a row the batch replaces
    whole, when any of ``compared`` differs."""
    merge = {c: f"excluded.{c}" for c in columns if c != key}
    changed = " OR ".join(f"excluded.{c} IS DISTINCT FROM cur.{c}" for c in compared)
    return merge, changed


def upsert_messages(con: duckdb.DuckDBPyConnection, messages: pl.DataFrame) -> int:
    if messages.is_empty():
        return 0
    batch = latest_per_key(conform(messages, MESSAGES), "message_key", "created_at")
    batch = batch.with_columns(pl.col("is_auto").fill_null(False))
    merge, changed = _replace_when_changed(
        list(MESSAGES),
        "message_key",
        [c for c in MESSAGES if c not in ("message_key", "ingested_at")],
    )
    with registered(con, "batch", batch):
        upsert(con, "core.messages", "message_key", list(MESSAGES), merge, changed)
    return batch.height


def upsert_labels(con: duckdb.DuckDBPyConnection, labels: pl.DataFrame, now: datetime) -> int:
    if labels.is_empty():
        return 0
    batch = (
        conform(labels, TICKET_LABELS)
        .unique(subset=["ticket_key"], keep="last", maintain_order=True)
        .with_columns(pl.lit(now).cast(pl.Datetime("us", "UTC")).alias("labelled_at"))
    )
    cols = [*TICKET_LABELS, "labelled_at"]
    merge, changed = _replace_when_changed(cols, "ticket_key", list(TICKET_LABELS))
    with registered(con, "batch", batch):
        upsert(con, "core.ticket_labels", "ticket_key", cols, merge, changed)
    return labels.height


def replace_changes(con: duckdb.DuckDBPyConnection, changes: pl.DataFrame) -> int:
    """The calendar file is the truth: the table mirrors it after each load."""
    batch = conform(changes, PRODUCT_CHANGES)
    with transaction(con), registered(con, "batch", batch):
        con.execute("DELETE FROM core.product_changes")
        con.execute(
            f"INSERT INTO core.product_changes ({', '.join(PRODUCT_CHANGES)}) "
            f"SELECT {', '.join(PRODUCT_CHANGES)} FROM batch"
        )
    return changes.height


def get_state(con: duckdb.DuckDBPyConnection, source: str) -> dict[str, Cursor]:
    rows = con.execute(
        "SELECT stream, cursor FROM meta.sync_state WHERE source = ?", [source]
    ).fetchall()
    return {stream: json.loads(cursor) for stream, cursor in rows}


def set_cursor(
    con: duckdb.DuckDBPyConnection,
    source: str,
    stream: str,
    cursor: Cursor,
    records: int,
    now: datetime,
) -> None:
    con.execute(
        "INSERT INTO meta.sync_state VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (source, stream) DO UPDATE SET cursor = excluded.cursor, "
        "updated_at = excluded.updated_at, "
        "records_total = meta.sync_state.records_total + excluded.records_total",
        [source, stream, json.dumps(cursor, sort_keys=True, default=str), now, records],
    )


@dataclass(frozen=True, slots=True)
class PageLoad:
    """What one committed page did, for logs and the run summary."""

    raw_new: int
    tickets: int
    messages: int
    labels: int
    quarantined: int


def apply_page(
    con: duckdb.DuckDBPyConnection,
    *,
    source: str,
    stream: str,
    tickets: pl.DataFrame,
    messages: pl.DataFrame,
    labels: pl.DataFrame,
    rejects: Sequence[tuple[str, str, str]],
    now: datetime,
) -> PageLoad:
    """Quarantine, tickets, messages and labels of one page (caller owns the transaction)."""
    quarantined = quarantine(con, source, stream, rejects, now)
    if not tickets.is_empty():
        release_from_quarantine(con, source, tickets["source_id"].to_list())
    return PageLoad(
        raw_new=0,
        tickets=upsert_tickets(con, tickets),
        messages=upsert_messages(con, messages),
        labels=upsert_labels(con, labels, now),
        quarantined=quarantined,
    )


def commit_page(
    con: duckdb.DuckDBPyConnection,
    *,
    source: str,
    page: Page,
    tickets: pl.DataFrame,
    messages: pl.DataFrame,
    labels: pl.DataFrame,
    rejects: Sequence[tuple[str, str, str]],
    now: datetime,
    raw: pl.DataFrame | None = None,
    records: int | None = None,
    extras: Any = None,
) -> PageLoad:
    """Everything a page produced, and its cursor, in one transaction.

    ``raw`` and ``records``: the page's ``raw_frame`` and record count when the
    caller built the frame already and passes a page without its records.
    ``extras``: a helpdesk page's custom fields, field dictionary and ratings
    (``transforms.custom_fields.ticket_extras``), committed with the page.
    """
    from warehouse.custom_fields import apply_extras

    with transaction(con):
        raw_new = land_raw(con, source, page, now, raw)
        applied = apply_page(
            con,
            source=source,
            stream=page.stream,
            tickets=tickets,
            messages=messages,
            labels=labels,
            rejects=[*page.rejects, *rejects],
            now=now,
        )
        apply_extras(con, extras)
        count = len(page.records) if records is None else records
        set_cursor(con, source, page.stream, page.cursor, count, now)
    return replace(applied, raw_new=raw_new)


def raw_pages(
    con: duckdb.DuckDBPyConnection, source: str, batch_size: int = 50_000
) -> Iterator[Page]:
    """The stored raw records of a source, oldest fetch first, as pages to replay."""
    exists = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE schema_name = 'raw' AND table_name = ?",
        [f"{source}_records"],
    ).fetchone()
    if not exists or not exists[0]:
        return
    result = con.execute(
        f"SELECT stream, record_id, payload, payload_bytes FROM {raw_table(source)} "
        "ORDER BY fetched_at, stream"
    )
    while rows := result.fetchmany(batch_size):
        by_stream: dict[str, tuple[list[Any], list[str]]] = {}
        for stream, record_id, payload, blob in rows:
            records, ids = by_stream.setdefault(stream, ([], []))
            records.append(bytes(blob) if blob is not None else json.loads(payload))
            ids.append(record_id)
        for stream, (records, ids) in by_stream.items():
            yield Page(stream, records, ids, {})


def table_counts(con: duckdb.DuckDBPyConnection) -> Mapping[str, int]:
    """Row counts of the stable tables: the run summary and idempotency checks."""
    out: dict[str, int] = {}
    for table in (
        "core.tickets",
        "core.messages",
        "core.ticket_labels",
        "core.product_changes",
        "marts.complaints_daily",
        "marts.complaints_hourly",
        "marts.anomalies",
        "meta.quarantine",
        "meta.alert_deliveries",
    ):
        row = con.execute(f"SELECT count(*) FROM {table}").fetchone()
        out[table] = int(row[0]) if row else 0
    return out
