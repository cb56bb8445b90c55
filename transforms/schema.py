"""Column contracts of the frames that flow into ``core.*`` and ``marts.*``.

Normalisers return frames with exactly these columns and dtypes (use
:func:`conform`), so the warehouse can load them by Arrow without per-source
code, and a new source is a new normaliser, not a schema change.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

UTC_TS = pl.Datetime("us", "UTC")

CHANNELS: tuple[str, ...] = (
    "email",
    "web",
    "chat",
    "phone",
    "social",
    "api",
    "other",
)

TICKETS: dict[str, pl.DataType] = {
    "ticket_key": pl.String(),  # f"{source}:{source_id}"
    "source": pl.String(),
    "source_id": pl.String(),
    "created_at": UTC_TS,
    "updated_at": UTC_TS,
    "subject": pl.String(),
    "body": pl.String(),
    "channel": pl.String(),  # one of CHANNELS
    "status": pl.String(),
    "priority": pl.String(),
    "requester_key": pl.String(),
    "organization": pl.String(),
    "tags": pl.List(pl.String()),
    "is_deleted": pl.Boolean(),
    "ingested_at": UTC_TS,
    "is_auto": pl.Boolean(),  # every message is an auto-reply/bounce: never counted
    "duplicate_of": pl.String(),  # cross-source duplicate: the ticket_key already counted
}

MESSAGES: dict[str, pl.DataType] = {
    "message_key": pl.String(),  # f"{source}:{message id}"
    "ticket_key": pl.String(),
    "source": pl.String(),
    "message_id": pl.String(),  # RFC 822 Message-ID or the helpdesk's comment id
    "in_reply_to": pl.String(),
    "author_key": pl.String(),
    "created_at": UTC_TS,
    "subject": pl.String(),
    "body": pl.String(),
    "is_customer": pl.Boolean(),
    "is_auto": pl.Boolean(),  # auto-reply, bounce, out-of-office
    "ingested_at": UTC_TS,
}

TICKET_LABELS: dict[str, pl.DataType] = {
    "ticket_key": pl.String(),
    "is_complaint": pl.Boolean(),
    "complaint_score": pl.Float64(),  # 0..1
    "topics": pl.List(pl.String()),
    "topic_scores": pl.List(pl.Float64()),  # parallel to topics
    "cancel_intent": pl.Boolean(),
    "language": pl.String(),
    "evidence": pl.List(pl.String()),  # the phrases that decided the labels
    "labeller_version": pl.String(),
}

PRODUCT_CHANGES: dict[str, pl.DataType] = {
    "change_id": pl.String(),
    "title": pl.String(),
    "kind": pl.String(),
    "description": pl.String(),
    "announced_at": UTC_TS,
    "effective_at": UTC_TS,
    "areas": pl.List(pl.String()),
    "keywords": pl.List(pl.String()),
    "reverts": pl.String(),
}

QUARANTINE: dict[str, pl.DataType] = {
    "record_id": pl.String(),
    "reason": pl.String(),
    "payload": pl.String(),
}


def empty(schema: dict[str, pl.DataType]) -> pl.DataFrame:
    return pl.DataFrame(schema=schema)


def conform(frame: pl.DataFrame, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """Select ``schema``'s columns in order, cast, and add missing ones as nulls.

    Extra columns are dropped on purpose: they stay in the raw payload.
    """
    if frame.height == 0:  # all-literal selects would broadcast to one null row
        return empty(schema)
    exprs = [
        (pl.col(name) if name in frame.columns else pl.lit(None)).cast(dtype).alias(name)
        for name, dtype in schema.items()
    ]
    return frame.select(exprs)


# One row per (bucket, topic, channel); topic '*' / channel '*' are per-ticket totals.
COMPLAINT_COUNTS: dict[str, pl.DataType] = {
    "bucket": UTC_TS,
    "topic": pl.String(),
    "channel": pl.String(),
    "tickets": pl.Int64(),
    "complaints": pl.Int64(),
    "cancel_intents": pl.Int64(),
}

# marts.anomalies: one row per episode (one spike = one anomaly, updated as it grows).
ANOMALIES: dict[str, pl.DataType] = {
    "alert_id": pl.String(),  # stable across runs: hash of series + onset bucket
    "series": pl.String(),  # e.g. "day/topic=pricing/channel=*"
    "grain": pl.String(),  # "day" | "hour"
    "topic": pl.String(),
    "channel": pl.String(),
    "started_at": UTC_TS,  # onset: first anomalous bucket
    "detected_at": UTC_TS,  # when a scheduled monitor would first have raised it
    "peak_at": UTC_TS,
    "last_anomalous_at": UTC_TS,
    "resolved_at": UTC_TS,  # null while open
    "observed": pl.Float64(),
    "expected": pl.Float64(),
    "excess": pl.Float64(),
    "lower": pl.Float64(),
    "upper": pl.Float64(),
    "ratio": pl.Float64(),
    "p_value": pl.Float64(),
    "score": pl.Float64(),
    "severity": pl.Int32(),
    "initial_severity": pl.Int32(),
    "status": pl.String(),  # new | ongoing | escalated | resolved
    "change_id": pl.String(),
    "change_title": pl.String(),
    "attribution_score": pl.Float64(),
    "runner_up_change_id": pl.String(),
    "runner_up_score": pl.Float64(),
    "reverted_by": pl.String(),
    "recovery_hours": pl.Float64(),
    "rising_terms": pl.List(pl.String()),
    "example_ticket_keys": pl.List(pl.String()),
    "updated_at": UTC_TS,
}


@dataclass(frozen=True, slots=True)
class Normalized:
    """What every ``normalize_*`` function returns for one page of raw records.

    ``tickets`` conforms to TICKETS and ``messages`` to MESSAGES; ``rejects``
    lists records that cannot be normalised at all as (record_id, reason,
    payload text): they go to meta.quarantine and the rest of the page loads.
    """

    tickets: pl.DataFrame
    messages: pl.DataFrame = field(default_factory=lambda: empty(MESSAGES))
    rejects: list[tuple[str, str, str]] = field(default_factory=list)
