"""Helpdesk custom fields, field dictionaries and satisfaction ratings as long frames.

Pure: ticket records in, frames out. Custom fields are the part of a helpdesk
that changes most (an admin adds "Plan" on Tuesday, retires "Legacy SKU" on
Friday) and whose values change type from one field to the next (text, number,
checkbox, multi-select list). As columns they would be a schema change a week
and a type conflict a day; as rows ``(ticket, field, value)`` a new field is
just new rows, and every value is text (lists and objects as JSON text) so one
column holds them all.

Both helpdesks are read by shape, per record: Zendesk sends ``custom_fields``
as a list of ``{"id", "value"}``, Freshdesk as an object ``{name: value}``.
A field whose value is ``None``, ``""`` or ``[]`` is unset and gives no row.

A frame holds one version per ticket: the latest ``updated_at`` among the
records (on a tie, the later record, as the export sends versions in order).
A ticket version with no field set still gives one row, with a null
``field_id``: it tells the loader to clear what that ticket had, so a field
removed from a ticket is removed downstream, not left behind.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import polars as pl

from transforms.timestamps import parse_utc

__all__ = [
    "CUSTOM_FIELDS",
    "FIELD_DEFS",
    "SATISFACTION",
    "TicketExtras",
    "custom_fields_frame",
    "field_defs_frame",
    "satisfaction_frame",
    "ticket_extras",
]

UTC_TS = pl.Datetime("us", "UTC")

CUSTOM_FIELDS: dict[str, pl.DataType] = {
    "source": pl.String(),
    "ticket_id": pl.String(),
    "field_id": pl.String(),  # null: this ticket version has no field set
    "value": pl.String(),
    "updated_at": UTC_TS,
}

FIELD_DEFS: dict[str, pl.DataType] = {
    "source": pl.String(),
    "field_id": pl.String(),
    "title": pl.String(),
    "type": pl.String(),
    "active": pl.Boolean(),
    "updated_at": UTC_TS,
}

SATISFACTION: dict[str, pl.DataType] = {
    "source": pl.String(),
    "ticket_id": pl.String(),
    "score": pl.String(),
    "comment": pl.String(),
    "reason": pl.String(),
    "rating_id": pl.String(),
    "updated_at": UTC_TS,
}


def _value_text(value: Any) -> str | None:
    """One text form per value; ``None`` for an unset field."""
    if value is None or value == "" or value == []:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


def _id_text(value: Any) -> str | None:
    return None if value is None else str(value)


def _fields_of(record: Mapping[str, Any]) -> dict[str, str]:
    """Field id → value text of one ticket's set fields (a field named twice: its last)."""
    raw = record.get("custom_fields")
    pairs: dict[str, str] = {}
    if isinstance(raw, list):  # Zendesk
        for item in raw:
            if not isinstance(item, Mapping):
                continue
            field_id, value = item.get("id"), item.get("value")
            if field_id is None or value is None:
                continue
            text = value if type(value) is str else _value_text(value)
            if text:
                pairs[str(field_id)] = text
    elif isinstance(raw, Mapping):  # Freshdesk
        for name, value in raw.items():
            text = value if type(value) is str else _value_text(value)
            if text:
                pairs[str(name)] = text
    return pairs


@dataclass(frozen=True, slots=True)
class _Versions:
    """The latest version of each ticket among some records.

    ``frame`` has ``ticket_id`` and ``updated_at``, one row per ticket, and
    ``records`` the matching payloads, in the same order. Records without an
    id or a readable ``updated_at``/``created_at`` are left out: the ticket
    normaliser quarantines them with the reason.
    """

    frame: pl.DataFrame
    records: list[Mapping[str, Any]]


def _latest_versions(records: Sequence[Any]) -> _Versions:
    kept = [r for r in records if isinstance(r, Mapping) and r.get("id") is not None]
    meta = pl.DataFrame(
        {
            "ticket_id": [str(r["id"]) for r in kept],
            "stamp": [_id_text(r.get("updated_at") or r.get("created_at")) for r in kept],
        },
        schema={"ticket_id": pl.String, "stamp": pl.String},
    ).with_row_index("row")
    latest = (
        meta.with_columns(parse_utc(pl.col("stamp")).alias("updated_at"))
        .filter(pl.col("updated_at").is_not_null())
        .sort(["updated_at", "row"])
        .unique(subset=["ticket_id"], keep="last", maintain_order=True)
    )
    return _Versions(latest.select("ticket_id", "updated_at"), [kept[row] for row in latest["row"]])


def _custom_fields(source: str, versions: _Versions) -> pl.DataFrame:
    # Built column by column, with each row's ticket taken from the versions
    # frame by position: Python builds only the field ids and values.
    positions: list[int] = []
    field_ids: list[str | None] = []
    values: list[str | None] = []
    for position, record in enumerate(versions.records):
        pairs = _fields_of(record)
        if not pairs:
            positions.append(position)
            field_ids.append(None)
            values.append(None)
            continue
        positions.extend([position] * len(pairs))
        field_ids.extend(pairs.keys())
        values.extend(pairs.values())
    tickets = versions.frame[pl.Series(positions, dtype=pl.UInt32)] if positions else None
    return pl.DataFrame(
        [
            pl.Series("source", [source] * len(positions), pl.String),
            tickets["ticket_id"] if tickets is not None else pl.Series("ticket_id", [], pl.String),
            pl.Series("field_id", field_ids, pl.String),
            pl.Series("value", values, pl.String),
            tickets["updated_at"] if tickets is not None else pl.Series("updated_at", [], UTC_TS),
        ]
    )


def _satisfaction(source: str, versions: _Versions) -> pl.DataFrame:
    positions: list[int] = []
    columns: dict[str, list[str | None]] = {
        "score": [],
        "comment": [],
        "reason": [],
        "rating_id": [],
    }
    for position, record in enumerate(versions.records):
        rating = record.get("satisfaction_rating")
        if not isinstance(rating, Mapping) or not rating.get("score"):
            continue
        positions.append(position)
        columns["score"].append(str(rating["score"]).strip().lower())
        columns["comment"].append(_value_text(rating.get("comment")))
        columns["reason"].append(_value_text(rating.get("reason")))
        columns["rating_id"].append(_id_text(rating.get("id")))
    tickets = versions.frame[pl.Series(positions, dtype=pl.UInt32)]
    return pl.DataFrame(
        [
            pl.Series("source", [source] * len(positions), pl.String),
            tickets["ticket_id"],
            *(pl.Series(name, values, pl.String) for name, values in columns.items()),
            tickets["updated_at"],
        ]
    )


def custom_fields_frame(source: str, records: Sequence[Any]) -> pl.DataFrame:
    """Ticket records (Zendesk or Freshdesk) → CUSTOM_FIELDS rows, one version per ticket."""
    return _custom_fields(source, _latest_versions(records))


def satisfaction_frame(source: str, records: Sequence[Any]) -> pl.DataFrame:
    """Zendesk ``satisfaction_rating`` of each ticket's latest version → SATISFACTION rows.

    Tickets without a rating object (Freshdesk tickets, accounts without CSAT)
    give no row; ``unoffered`` and ``offered`` are kept: "asked but no answer"
    is itself worth counting next to good and bad.
    """
    return _satisfaction(source, _latest_versions(records))


def field_defs_frame(
    source: str,
    records: Sequence[Any],
    *,
    kind: Literal["zendesk", "freshdesk"] | None = None,
) -> pl.DataFrame:
    """Ticket field definitions → FIELD_DEFS rows.

    ``field_id`` is what a ticket's ``custom_fields`` is keyed by: the numeric
    id on Zendesk, the field ``name`` (``cf_...``) on Freshdesk, so the two
    tables join. Without ``kind`` the shape decides (Zendesk's have ``title``,
    Freshdesk's ``label``). Freshdesk has no ``active`` flag: a field is active
    unless ``archived``.
    """
    rows: list[dict[str, Any]] = []
    for record in records:
        if not isinstance(record, Mapping) or record.get("id") is None:
            continue
        zendesk = kind == "zendesk" or (kind is None and "title" in record)
        if zendesk:
            field_id, title = str(record["id"]), record.get("title")
            active = record.get("active")
        else:
            field_id = str(record.get("name") or record["id"])
            title = record.get("label") or record.get("label_for_customers")
            active = not record.get("archived", False)
        rows.append(
            {
                "source": source,
                "field_id": field_id,
                "title": _value_text(title),
                "type": _value_text(record.get("type")),
                "active": bool(active) if active is not None else None,
                "updated_at": _id_text(record.get("updated_at")),
            }
        )
    frame = pl.DataFrame(rows, schema={**FIELD_DEFS, "updated_at": pl.String()})
    return frame.with_columns(parse_utc(pl.col("updated_at")).alias("updated_at")).unique(
        subset=["field_id"], keep="last", maintain_order=True
    )


@dataclass(frozen=True, slots=True)
class TicketExtras:
    """What one page adds besides tickets and messages; empty frames add nothing."""

    source: str
    custom_fields: pl.DataFrame
    satisfaction: pl.DataFrame
    field_defs: pl.DataFrame


def ticket_extras(source: str, stream: str, records: Sequence[Any]) -> TicketExtras | None:
    """The frames of a helpdesk page: a ``tickets`` page gives custom fields and
    ratings, a ``ticket_fields`` page the dictionary, other streams ``None``.

    Pure, so the ingest loop can build it where it normalises (its prepare
    thread) and only load it where it commits.
    """
    if not records or isinstance(records[0], bytes):
        return None
    if stream == "tickets":
        versions = _latest_versions(records)
        return TicketExtras(
            source=source,
            custom_fields=_custom_fields(source, versions),
            satisfaction=_satisfaction(source, versions),
            field_defs=pl.DataFrame(schema=FIELD_DEFS),
        )
    if stream == "ticket_fields":
        return TicketExtras(
            source=source,
            custom_fields=pl.DataFrame(schema=CUSTOM_FIELDS),
            satisfaction=pl.DataFrame(schema=SATISFACTION),
            field_defs=field_defs_frame(source, records),
        )
    return None
