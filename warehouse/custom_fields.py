"""Loading custom fields, field dictionaries and satisfaction ratings.

The same promise as ``warehouse.load``: idempotent (the same page twice leaves
the same rows), newest version wins, and the caller's transaction holds the
page's rows and its cursor together. Frames come from
``transforms.custom_fields`` and are scanned through Arrow, never looped over.

A ticket's custom fields are replaced as a set, by ticket version: when the
incoming version is at least as new as the stored one (same ``updated_at``
too: Zendesk's system updates change fields without moving ``updated_at``, and
the export sends versions in order), the ticket's stored fields are deleted
and the incoming ones inserted; so a field removed from a ticket disappears,
and an older version arriving late (a backfill overlap) changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import polars as pl

from connectors.base import Page
from transforms.custom_fields import (
    CUSTOM_FIELDS,
    FIELD_DEFS,
    SATISFACTION,
    TicketExtras,
    ticket_extras,
)
from warehouse.db import transaction
from warehouse.load import registered

__all__ = [
    "ExtrasLoad",
    "apply_extras",
    "land_extras",
    "land_page_extras",
    "replace_field_defs",
    "upsert_custom_fields",
    "upsert_satisfaction",
]


# The newest version of each batch ticket whose rows are stored in ``table``.
_STORED_VERSIONS = (
    "SELECT t.source, t.ticket_id, max(epoch_us(t.updated_at)) AS stored_us FROM {table} t "
    "SEMI JOIN {batch} k ON t.source = k.source AND t.ticket_id = k.ticket_id GROUP BY ALL"
)
# ... and in ``core.tickets``, where a ticket whose fields were all unset still
# leaves its version (its rows vanish). One lookup serves fields and ratings:
# on 10M tickets each lookup scans the key column of ``core.tickets``.
_TICKET_VERSIONS = (
    "SELECT k.source, k.ticket_id, epoch_us(c.updated_at) AS stored_us "
    "FROM (SELECT DISTINCT source, ticket_id FROM ticket_keys) k "
    "JOIN core.tickets c ON c.ticket_key = k.source || ':' || k.ticket_id"
)
_VERSION_SCHEMA = {"source": pl.String, "ticket_id": pl.String, "stored_us": pl.Int64}


def _ticket_versions(con: duckdb.DuckDBPyConnection, *frames: pl.DataFrame) -> pl.DataFrame:
    keys = pl.concat([f.select("source", "ticket_id").cast(pl.String) for f in frames])
    if keys.is_empty():
        return pl.DataFrame(schema=_VERSION_SCHEMA)
    with registered(con, "ticket_keys", keys):
        return con.sql(_TICKET_VERSIONS).pl().cast(_VERSION_SCHEMA)  # type: ignore[arg-type]


def _newer_or_same(
    con: duckdb.DuckDBPyConnection,
    batch: pl.DataFrame,
    table: str,
    name: str,
    tickets: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """The batch rows whose ticket version is at least as new as any seen before.

    ``tickets``: ``_ticket_versions`` of the batch, if already looked up.
    """
    with registered(con, name, batch):
        stored = con.sql(_STORED_VERSIONS.format(table=table, batch=name)).pl()
    if tickets is None:
        tickets = _ticket_versions(con, batch)
    stored = (
        pl.concat([stored.cast(_VERSION_SCHEMA), tickets])  # type: ignore[arg-type]
        .group_by("source", "ticket_id")
        .agg(pl.col("stored_us").max())
    )
    return (
        batch.join(stored, on=["source", "ticket_id"], how="left")
        .filter(
            pl.col("stored_us").is_null()
            | (pl.col("updated_at").dt.epoch("us") >= pl.col("stored_us"))
        )
        .drop("stored_us")
    )


def _conform(frame: pl.DataFrame, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    return frame.select(pl.col(name).cast(dtype) for name, dtype in schema.items())


def upsert_custom_fields(
    con: duckdb.DuckDBPyConnection, frame: pl.DataFrame, tickets: pl.DataFrame | None = None
) -> int:
    """Replace each ticket's field set with the frame's, unless a newer version is stored.

    ``frame`` has the CUSTOM_FIELDS columns; a row with a null ``field_id``
    stands for a ticket version with no field set. Returns the rows inserted.
    """
    if frame.is_empty():
        return 0
    batch = _conform(frame, CUSTOM_FIELDS)
    # One version per ticket even if frames of several pages were concatenated.
    newest = pl.col("updated_at") == pl.col("updated_at").max().over("source", "ticket_id")
    batch = batch.filter(newest).unique(
        subset=["source", "ticket_id", "field_id"], keep="last", maintain_order=True
    )
    winners = _newer_or_same(con, batch, "core.ticket_custom_fields", "cf_batch", tickets)
    if winners.is_empty():
        return 0
    with registered(con, "cf_winners", winners):
        con.execute(
            "DELETE FROM core.ticket_custom_fields t USING cf_winners w "
            "WHERE t.source = w.source AND t.ticket_id = w.ticket_id"
        )
        row = con.execute(
            "INSERT INTO core.ticket_custom_fields (source, ticket_id, field_id, value, "
            "updated_at) SELECT source, ticket_id, field_id, value, updated_at FROM cf_winners "
            "WHERE field_id IS NOT NULL AND value IS NOT NULL"
        ).fetchone()
    return int(row[0]) if row else 0


def replace_field_defs(con: duckdb.DuckDBPyConnection, source: str, frame: pl.DataFrame) -> int:
    """The helpdesk's list is the truth: the source's dictionary becomes ``frame``.

    An empty frame is ignored rather than wiping the dictionary: a helpdesk
    always has system fields, so an empty list is a failed fetch, not news.
    """
    batch = _conform(frame, FIELD_DEFS).filter(pl.col("source") == source)
    if batch.is_empty():
        return 0
    batch = batch.unique(subset=["field_id"], keep="last", maintain_order=True)
    cols = ", ".join(FIELD_DEFS)
    with registered(con, "defs_batch", batch):
        con.execute("DELETE FROM core.custom_field_defs WHERE source = ?", [source])
        con.execute(f"INSERT INTO core.custom_field_defs ({cols}) SELECT {cols} FROM defs_batch")
    return batch.height


def upsert_satisfaction(
    con: duckdb.DuckDBPyConnection, frame: pl.DataFrame, tickets: pl.DataFrame | None = None
) -> int:
    """Latest ticket version's rating wins (ties: the incoming one, as for fields)."""
    if frame.is_empty():
        return 0
    batch = (
        _conform(frame, SATISFACTION)
        .sort("updated_at", maintain_order=True)
        .unique(subset=["source", "ticket_id"], keep="last", maintain_order=True)
    )
    batch = _newer_or_same(con, batch, "core.ticket_satisfaction", "csat_batch", tickets)
    if batch.is_empty():
        return 0
    cols = ", ".join(SATISFACTION)
    updates = ", ".join(
        f"{c} = excluded.{c}" for c in SATISFACTION if c not in ("source", "ticket_id")
    )
    with registered(con, "csat_batch", batch):
        con.execute(
            f"INSERT INTO core.ticket_satisfaction ({cols}) SELECT {cols} FROM csat_batch "
            f"ON CONFLICT (source, ticket_id) DO UPDATE SET {updates} "
            "WHERE excluded.updated_at >= core.ticket_satisfaction.updated_at"
        )
    return batch.height


@dataclass(frozen=True, slots=True)
class ExtrasLoad:
    """What one page added: field rows inserted, definitions, ratings."""

    custom_fields: int = 0
    field_defs: int = 0
    satisfaction: int = 0


def apply_extras(con: duckdb.DuckDBPyConnection, extras: TicketExtras | None) -> ExtrasLoad:
    """Load what ``transforms.custom_fields.ticket_extras`` built for one page.

    Runs no transaction of its own: inside the page's transaction, the page,
    these rows and the cursor commit together.
    """
    if extras is None:
        return ExtrasLoad()
    defs = (
        replace_field_defs(con, extras.source, extras.field_defs)
        if not extras.field_defs.is_empty()
        else 0
    )
    tickets = _ticket_versions(con, extras.custom_fields, extras.satisfaction)
    return ExtrasLoad(
        custom_fields=upsert_custom_fields(con, extras.custom_fields, tickets),
        field_defs=defs,
        satisfaction=upsert_satisfaction(con, extras.satisfaction, tickets),
    )


def land_extras(con: duckdb.DuckDBPyConnection, extras: TicketExtras | None) -> ExtrasLoad:
    """``apply_extras`` in a transaction of its own.

    Call it *before* the page's ``commit_page``: a crash between the two then
    re-applies the same rows on the next run (idempotent) instead of moving the
    cursor past rows never stored.
    """
    if extras is None:
        return ExtrasLoad()
    with transaction(con):
        return apply_extras(con, extras)


def land_page_extras(con: duckdb.DuckDBPyConnection, source: str, page: Page) -> ExtrasLoad:
    """Build and land one connector page's extras (a loop without a prepare thread)."""
    return land_extras(con, ticket_extras(source, page.stream, page.records))
