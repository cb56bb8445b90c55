"""File-export rows to the ``core.tickets`` shape.

Pure: rows in, frames out. Rows that cannot become a ticket (no parsable
``created_at``) are returned as rejects with the reason, never dropped.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import polars as pl

from transforms.schema import CHANNELS, TICKETS, Normalized, conform
from transforms.timestamps import parse_utc

# What exports call their channels, mapped to ours; anything else is "other"
# (the value itself stays in the raw payload).
CHANNEL_ALIASES: dict[str, str] = {
    "e-mail": "email",
    "mail": "email",
    "inbound_email": "email",
    "webform": "web",
    "web_form": "web",
    "portal": "web",
    "form": "web",
    "help_center": "web",
    "chat": "chat",
    "live_chat": "chat",
    "messaging": "chat",
    "whatsapp": "chat",
    "sms": "chat",
    "voice": "phone",
    "call": "phone",
    "twitter": "social",
    "facebook": "social",
    "x": "social",
    "instagram": "social",
    **{c: c for c in CHANNELS},
}


def channel_expr(raw: pl.Expr) -> pl.Expr:
    key = raw.cast(pl.String).str.strip_chars().str.to_lowercase().str.replace_all(" ", "_")
    return key.replace_strict(CHANNEL_ALIASES, default="other", return_dtype=pl.String)


def requester_key_expr(source: str, raw: pl.Expr) -> pl.Expr:
    """A stable pseudonymous key: the same address gives the same key in every source,
    so cross-source de-duplication works without spreading addresses through ``core``."""
    return (
        raw.cast(pl.String)
        .str.strip_chars()
        .str.to_lowercase()
        .map_elements(_pseudonym, return_dtype=pl.String, skip_nulls=True)
    )


def _pseudonym(value: str) -> str:
    return "req_" + hashlib.sha256(value.encode()).hexdigest()[:16]


def tags_expr(raw: pl.Expr) -> pl.Expr:
    text = raw.cast(pl.String).str.strip_chars()
    # Exports write tags space-, comma- or semicolon-separated, or as a JSON list.
    words = text.str.replace_all(r"[\[\]\"]", " ").str.replace_all(r"[,;\s]+", " ")
    return (
        words.str.strip_chars()
        .str.split(" ")
        .list.eval(pl.element().filter(pl.element() != ""))
        .fill_null(pl.lit([], dtype=pl.List(pl.String)))
    )


def normalize_file(
    records: Sequence[dict[str, Any]], *, source: str, ingested_at: datetime
) -> Normalized:
    if not records:
        return Normalized(tickets=conform(pl.DataFrame(), TICKETS))
    raw = pl.DataFrame(list(records), infer_schema_length=None).with_columns(
        pl.all().cast(pl.String)
    )
    for column in (
        "subject",
        "body",
        "channel",
        "requester",
        "tags",
        "status",
        "updated_at",
        "priority",
        "organization",
    ):
        if column not in raw.columns:
            raw = raw.with_columns(pl.lit(None, dtype=pl.String).alias(column))
    frame = raw.with_columns(
        parse_utc(pl.col("created_at")).alias("__created"),
        parse_utc(pl.col("updated_at")).alias("__updated"),
    )
    bad = frame.filter(pl.col("__created").is_null())
    rejects = [
        (
            str(row["id"]),
            f"created_at {row['created_at']!r} is not an ISO 8601 timestamp",
            json.dumps({k: v for k, v in row.items() if not k.startswith("__")}, default=str),
        )
        for row in bad.to_dicts()
    ]
    good = frame.filter(pl.col("__created").is_not_null())
    tickets = good.select(
        (pl.lit(source + ":") + pl.col("id")).alias("ticket_key"),
        pl.lit(source).alias("source"),
        pl.col("id").alias("source_id"),
        pl.col("__created").alias("created_at"),
        pl.coalesce(pl.col("__updated"), pl.col("__created")).alias("updated_at"),
        pl.col("subject").str.strip_chars(),
        pl.col("body").str.strip_chars(),
        channel_expr(pl.col("channel")).fill_null("other").alias("channel"),
        pl.col("status").str.strip_chars().str.to_lowercase(),
        pl.col("priority").str.strip_chars().str.to_lowercase(),
        requester_key_expr(source, pl.col("requester")).alias("requester_key"),
        pl.col("organization"),
        tags_expr(pl.col("tags")).alias("tags"),
        (pl.col("status").str.to_lowercase() == "deleted").fill_null(False).alias("is_deleted"),
        pl.lit(ingested_at).cast(pl.Datetime("us", "UTC")).alias("ingested_at"),
    )
    return Normalized(tickets=conform(tickets, TICKETS), rejects=rejects)
