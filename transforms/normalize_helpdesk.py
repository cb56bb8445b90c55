"""Zendesk and Freshdesk records to the ``core.tickets`` / ``core.messages`` shapes.

Pure: records in, frames out. Helpdesk payloads drift (a new custom field, a
channel added by the vendor, a field that is a string on one ticket and a list
on the next), and Polars refuses a frame whose column changes type between
rows. So each record is first projected to the few flat fields we read, as
text, and everything else stays in the raw payload; the typing, mapping and
key building is then one vectorised Polars pass.

A record that cannot become a row (no id, an unreadable timestamp) is returned
as a reject with the reason, never dropped. An unknown channel becomes
``"other"``. Zendesk's ``status: "deleted"`` and Freshdesk's ``deleted: true``
keep the ticket with ``is_deleted``. Streams that are not tickets or messages
(sideloaded users, organizations) normalise to nothing: they stay in ``raw``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import polars as pl
import pyarrow as pa

from transforms.normalize_file import CHANNEL_ALIASES, requester_key_expr
from transforms.schema import MESSAGES, TICKETS, UTC_TS, Normalized, conform, empty
from transforms.timestamps import parse_utc

__all__ = [
    "FRESHDESK_PRIORITY",
    "FRESHDESK_SOURCE",
    "FRESHDESK_STATUS",
    "ZENDESK_CHANNELS",
    "normalize_freshdesk",
    "normalize_zendesk",
]

# Zendesk ``via.channel`` values (Ticket "via" object reference) to our channels.
ZENDESK_CHANNELS: dict[str, str] = {
    **CHANNEL_ALIASES,
    "email": "email",
    "web": "web",
    "web_form": "web",
    "web_widget": "web",
    "help_center": "web",
    "mobile": "web",
    "mobile_sdk": "chat",
    "chat": "chat",
    "native_messaging": "chat",
    "sunshine_conversations_api": "chat",
    "whatsapp": "chat",
    "sms": "chat",
    "line": "chat",
    "wechat": "chat",
    "voice": "phone",
    "phone_call_inbound": "phone",
    "phone_call_outbound": "phone",
    "twitter": "social",
    "twitter_dm": "social",
    "facebook": "social",
    "facebook_messenger": "social",
    "instagram_dm": "social",
    "api": "api",
}

# Freshdesk's documented codes (Tickets API: "Source", "Status", "Priority").
FRESHDESK_STATUS: dict[int, str] = {2: "open", 3: "pending", 4: "resolved", 5: "closed"}
FRESHDESK_PRIORITY: dict[int, str] = {1: "low", 2: "medium", 3: "high", 4: "urgent"}
FRESHDESK_SOURCE: dict[int, str] = {
    1: "email",
    2: "web",  # portal
    3: "phone",
    4: "web",  # forum
    5: "social",  # twitter
    6: "social",  # facebook
    7: "chat",
    8: "chat",  # mobihelp (in-app)
    9: "web",  # feedback widget
    10: "email",  # outbound email
}


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return str(value).lower() if isinstance(value, bool) else str(value)
    return json.dumps(value, sort_keys=True, default=str)


def _dig(record: Mapping[str, Any], *path: str) -> Any:
    value: Any = record
    for key in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def _tags(value: Any) -> list[str]:
    if isinstance(value, list):
        return [str(t) for t in value if t is not None and str(t) != ""]
    if isinstance(value, str) and value.strip():
        return value.split()
    return []


def _project(
    records: Sequence[Any],
    fields: Callable[[Mapping[str, Any]], dict[str, Any]],
    schema: dict[str, pl.DataType],
) -> tuple[pl.DataFrame, list[tuple[str, str, str]], list[Any]]:
    """Flat text rows of the fields we read; non-objects and id-less records are rejects."""
    rows: list[dict[str, Any]] = []
    payloads: list[Any] = []
    rejects: list[tuple[str, str, str]] = []
    for record in records:
        if not isinstance(record, Mapping):
            rejects.append((_anonymous_id(record), "not a JSON object", _dump(record)))
            continue
        if record.get("id") is None:
            rejects.append((_anonymous_id(record), "missing id", _dump(record)))
            continue
        rows.append(fields(record))
        payloads.append(record)
    # Column by column: Polars builds a typed column from a list in one call,
    # several times faster than from row dicts at 50k rows a batch.
    frame = pl.DataFrame(
        [_column(name, [row[name] for row in rows], dtype) for name, dtype in schema.items()]
    )
    return frame.with_row_index("__row"), rejects, payloads


def _column(name: str, values: list[Any], dtype: pl.DataType) -> pl.Series:
    """A typed column; lists of strings through Arrow offsets.

    Polars builds a list column from Python lists one row at a time (a Series
    per row): at 50k tickets the tags alone were half of the normaliser's time.
    """
    if dtype == pl.List(pl.String) and all(type(v) is list for v in values):
        flat: list[Any] = []
        offsets = [0]
        for value in values:
            flat.extend(value)
            offsets.append(len(flat))
        try:
            strings = pa.array(flat, pa.large_string())
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            return pl.Series(name, values, dtype)
        lists = pa.LargeListArray.from_arrays(pa.array(offsets, pa.int64()), strings)
        return pl.Series(name, lists).cast(dtype)
    return pl.Series(name, values, dtype)


def _anonymous_id(record: Any) -> str:
    """A quarantine key for a record without an id: stable for the same payload, so
    re-quarantining it is idempotent and two such records never overwrite each other."""
    return "(no id) " + hashlib.sha256(_dump(record).encode()).hexdigest()[:16]


def _dump(record: Any) -> str:
    return json.dumps(record, sort_keys=True, ensure_ascii=False, default=str)


def _split_bad_times(
    frame: pl.DataFrame,
    payloads: list[Any],
    columns: Sequence[str],
) -> tuple[pl.DataFrame, list[tuple[str, str, str]]]:
    """Parse ``columns`` as UTC; rows where a present value does not parse are rejects."""
    parsed = frame.with_columns(parse_utc(pl.col(c)).alias(f"__{c}") for c in columns)
    bad_mask = pl.lit(False)
    for c in columns:
        bad_mask = bad_mask | (pl.col(f"__{c}").is_null() & pl.col(c).is_not_null())
    required = columns[0]
    bad_mask = bad_mask | pl.col(f"__{required}").is_null()
    bad = parsed.filter(bad_mask)
    rejects = []
    for row in bad.iter_rows(named=True):
        shown = ", ".join(f"{c}={row[c]!r}" for c in columns if row[f"__{c}"] is None)
        rejects.append(
            (str(row["source_id"]), f"unreadable timestamp: {shown}", _dump(payloads[row["__row"]]))
        )
    return parsed.filter(~bad_mask), rejects


_TICKET_FIELDS: dict[str, pl.DataType] = {
    "source_id": pl.String(),
    "created_at": pl.String(),
    "updated_at": pl.String(),
    "subject": pl.String(),
    "body": pl.String(),
    "channel": pl.String(),
    "status": pl.String(),
    "priority": pl.String(),
    "requester_email": pl.String(),
    "requester_id": pl.String(),
    "organization": pl.String(),
    "tags": pl.List(pl.String()),
    "deleted": pl.Boolean(),
}

_MESSAGE_FIELDS: dict[str, pl.DataType] = {
    "source_id": pl.String(),
    "ticket_id": pl.String(),
    "created_at": pl.String(),
    "body": pl.String(),
    "author_email": pl.String(),
    "author_id": pl.String(),
    "is_customer": pl.Boolean(),
    "is_auto": pl.Boolean(),
}


def _tickets_frame(
    records: Sequence[Any],
    fields: Callable[[Mapping[str, Any]], dict[str, Any]],
    *,
    source: str,
    ingested_at: datetime,
    channel: pl.Expr,
) -> Normalized:
    frame, rejects, payloads = _project(records, fields, _TICKET_FIELDS)
    good, bad = _split_bad_times(frame, payloads, ["created_at", "updated_at"])
    rejects = [*rejects, *bad]
    tickets = good.select(
        (pl.lit(source + ":") + pl.col("source_id")).alias("ticket_key"),
        pl.lit(source).alias("source"),
        pl.col("source_id"),
        pl.col("__created_at").alias("created_at"),
        pl.coalesce(pl.col("__updated_at"), pl.col("__created_at")).alias("updated_at"),
        pl.col("subject").str.strip_chars(),
        pl.col("body").str.strip_chars(),
        channel.fill_null("other").alias("channel"),
        pl.col("status").str.strip_chars().str.to_lowercase(),
        pl.col("priority").str.strip_chars().str.to_lowercase(),
        _requester_key(source, pl.col("requester_email"), pl.col("requester_id")),
        pl.col("organization"),
        pl.col("tags").fill_null(pl.lit([], dtype=pl.List(pl.String))),
        pl.col("deleted").fill_null(False).alias("is_deleted"),
        pl.lit(ingested_at).cast(UTC_TS).alias("ingested_at"),
        pl.lit(False).alias("is_auto"),
    )
    return Normalized(tickets=conform(tickets, TICKETS), rejects=rejects)


def _messages_frame(
    records: Sequence[Any],
    fields: Callable[[Mapping[str, Any]], dict[str, Any]],
    *,
    kind: str,
    source: str,
    ingested_at: datetime,
) -> Normalized:
    frame, rejects, payloads = _project(records, fields, _MESSAGE_FIELDS)
    orphan = frame.filter(pl.col("ticket_id").is_null())
    rejects = [
        *rejects,
        *(
            (str(r["source_id"]), "no ticket id", _dump(payloads[r["__row"]]))
            for r in orphan.iter_rows(named=True)
        ),
    ]
    good, bad = _split_bad_times(
        frame.filter(pl.col("ticket_id").is_not_null()), payloads, ["created_at"]
    )
    messages = good.select(
        (pl.lit(source + ":") + pl.col("source_id")).alias("message_key"),
        (pl.lit(source + ":") + pl.col("ticket_id")).alias("ticket_key"),
        pl.lit(source).alias("source"),
        pl.col("source_id").alias("message_id"),
        pl.lit(None, dtype=pl.String).alias("in_reply_to"),
        _requester_key(source, pl.col("author_email"), pl.col("author_id")).alias("author_key"),
        pl.col("__created_at").alias("created_at"),
        pl.lit(None, dtype=pl.String).alias("subject"),
        pl.col("body").str.strip_chars(),
        pl.col("is_customer"),
        pl.col("is_auto").fill_null(False),
        pl.lit(ingested_at).cast(UTC_TS).alias("ingested_at"),
    )
    # meta.quarantine is keyed by (source, record_id): keep message ids apart from ticket ids.
    prefixed = [(f"{kind}:{rid}", reason, text) for rid, reason, text in [*rejects, *bad]]
    return Normalized(
        tickets=empty(TICKETS), messages=conform(messages, MESSAGES), rejects=prefixed
    )


def _requester_key(source: str, email: pl.Expr, user_id: pl.Expr) -> pl.Expr:
    """The address when we have it (same key as other sources for the same person),
    else the helpdesk's user id, namespaced by source; both pseudonymised."""
    by_id = pl.lit(f"{source}:user:") + user_id
    return requester_key_expr(source, pl.coalesce(email, by_id)).alias("requester_key")


def _empty() -> Normalized:
    return Normalized(tickets=empty(TICKETS))


# -- Zendesk -----------------------------------------------------------------------


def _zendesk_ticket(t: Mapping[str, Any]) -> dict[str, Any]:
    org = t.get("organization_id")
    return {
        "source_id": _text(t.get("id")),
        "created_at": _text(t.get("created_at")),
        "updated_at": _text(t.get("updated_at")),
        "subject": _text(t.get("subject") or t.get("raw_subject")),
        "body": _text(t.get("description")),
        "channel": _text(_dig(t, "via", "channel")),
        "status": _text(t.get("status")),
        "priority": _text(t.get("priority")),
        "requester_email": _text(_dig(t, "via", "source", "from", "address")),
        "requester_id": _text(t.get("requester_id")),
        "organization": _text(org),
        "tags": _tags(t.get("tags")),
        "deleted": t.get("status") == "deleted",
    }


def _zendesk_comment(c: Mapping[str, Any]) -> dict[str, Any]:
    author, requester = c.get("author_id"), c.get("_requester_id")
    via = _text(_dig(c, "via", "channel"))
    return {
        "source_id": _text(c.get("id")),
        "ticket_id": _text(c.get("_ticket_id") or c.get("ticket_id")),
        "created_at": _text(c.get("created_at")),
        "body": _text(c.get("plain_body") or c.get("body")),
        "author_email": _text(_dig(c, "via", "source", "from", "address")),
        "author_id": _text(author),
        "is_customer": (author == requester)
        if author is not None and requester is not None
        else None,
        # Trigger and automation notes are written by rules, not people.
        "is_auto": via in ("rule", "system") if via else False,
    }


def _channel(raw: pl.Expr, mapping: Mapping[str, str]) -> pl.Expr:
    key = raw.str.strip_chars().str.to_lowercase().str.replace_all(" ", "_")
    return key.replace_strict(dict(mapping), default="other", return_dtype=pl.String)


def normalize_zendesk(
    records: Sequence[Any], *, source: str, stream: str, ingested_at: datetime
) -> Normalized:
    """Stream ``tickets`` → TICKETS; ``comments`` → MESSAGES; other streams → nothing."""
    if not records:
        return _empty()
    if stream == "tickets":
        return _tickets_frame(
            records,
            _zendesk_ticket,
            source=source,
            ingested_at=ingested_at,
            channel=_channel(pl.col("channel"), ZENDESK_CHANNELS),
        )
    if stream == "comments":
        return _messages_frame(
            records, _zendesk_comment, kind="comment", source=source, ingested_at=ingested_at
        )
    return _empty()


# -- Freshdesk ---------------------------------------------------------------------


def _code(value: Any, names: Mapping[int, str]) -> str | None:
    if value is None:
        return None
    try:
        code = int(value)
    except (TypeError, ValueError):
        return str(value).lower()
    return names.get(code, str(code))


def _freshdesk_ticket(t: Mapping[str, Any]) -> dict[str, Any]:
    source_code = t.get("source")
    try:
        channel = FRESHDESK_SOURCE.get(int(source_code)) if source_code is not None else None
    except (TypeError, ValueError):
        channel = None
    return {
        "source_id": _text(t.get("id")),
        "created_at": _text(t.get("created_at")),
        "updated_at": _text(t.get("updated_at")),
        "subject": _text(t.get("subject")),
        "body": _text(t.get("description_text") or t.get("description")),
        "channel": channel or ("other" if source_code is not None else None),
        "status": _code(t.get("status"), FRESHDESK_STATUS),
        "priority": _code(t.get("priority"), FRESHDESK_PRIORITY),
        "requester_email": _text(_dig(t, "requester", "email")),
        "requester_id": _text(t.get("requester_id")),
        "organization": _text(t.get("company_id")),
        "tags": _tags(t.get("tags")),
        "deleted": bool(t.get("deleted")),
    }


def _freshdesk_conversation(c: Mapping[str, Any]) -> dict[str, Any]:
    incoming = c.get("incoming")
    return {
        "source_id": _text(c.get("id")),
        "ticket_id": _text(c.get("ticket_id")),
        "created_at": _text(c.get("created_at")),
        "body": _text(c.get("body_text") or c.get("body")),
        "author_email": _text(c.get("from_email")) if incoming else None,
        "author_id": _text(c.get("user_id")),
        "is_customer": bool(incoming) if incoming is not None else None,
        "is_auto": False,
    }


def normalize_freshdesk(
    records: Sequence[Any], *, source: str, stream: str, ingested_at: datetime
) -> Normalized:
    """Stream ``tickets`` → TICKETS (codes mapped to names); ``conversations`` → MESSAGES."""
    if not records:
        return _empty()
    if stream == "tickets":
        return _tickets_frame(
            records,
            _freshdesk_ticket,
            source=source,
            ingested_at=ingested_at,
            channel=pl.col("channel"),
        )
    if stream == "conversations":
        return _messages_frame(
            records,
            _freshdesk_conversation,
            kind="conversation",
            source=source,
            ingested_at=ingested_at,
        )
    return _empty()
