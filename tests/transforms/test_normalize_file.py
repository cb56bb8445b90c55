from __future__ import annotations

from datetime import UTC, datetime

import polars as pl
from hypothesis import given
from hypothesis import strategies as st

from transforms.normalize_file import normalize_file
from transforms.schema import CHANNELS, TICKETS
from transforms.timestamps import parse_utc

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_shape_channels_tags_and_pseudonymous_requester() -> None:
    out = normalize_file(
        [
            {
                "id": "7",
                "created_at": "2025-04-07T14:03:11+02:00",
                "subject": " Bill ",
                "body": "x",
                "channel": "E-mail",
                "requester": "Ann@Example.com",
                "tags": "billing, urgent;vip",
                "status": "Open",
            },
            {
                "id": "8",
                "created_at": "2025-04-07",
                "channel": "carrier pigeon",
                "requester": "ann@example.com",
                "tags": '["a","b"]',
            },
        ],
        source="support",
        ingested_at=NOW,
    )
    t = out.tickets
    assert t.schema == pl.Schema(TICKETS)
    assert t["ticket_key"].to_list() == ["support:7", "support:8"]
    assert t["created_at"][0] == datetime(2025, 4, 7, 12, 3, 11, tzinfo=UTC)
    assert t["channel"].to_list() == ["email", "other"]
    assert t["tags"].to_list() == [["billing", "urgent", "vip"], ["a", "b"]]
    assert t["subject"][0] == "Bill"
    # Same person, same key; the address itself is not in core.
    assert t["requester_key"][0] == t["requester_key"][1]
    assert "example.com" not in t["requester_key"][0]
    assert out.rejects == []


def test_unparsable_created_at_is_rejected_with_reason() -> None:
    out = normalize_file(
        [{"id": "1", "created_at": "last tuesday", "subject": "x"}], source="s", ingested_at=NOW
    )
    assert out.tickets.is_empty()
    assert out.rejects[0][0] == "1"
    assert "not an ISO 8601" in out.rejects[0][1]
    assert "last tuesday" in out.rejects[0][2]


@given(
    st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2090, 1, 1)),
    st.sampled_from(["Z", "+00:00", "", "+05:30", "-08:00"]),
    st.booleans(),
)
def test_parse_utc_round_trips(value: datetime, suffix: str, space: bool) -> None:
    value = value.replace(microsecond=0)
    text = value.isoformat(sep=" " if space else "T") + suffix
    parsed = pl.select(parse_utc(pl.lit(text))).item()
    offset = {"Z": 0, "+00:00": 0, "": 0, "+05:30": 330, "-08:00": -480}[suffix]
    from datetime import timedelta

    assert parsed == value.replace(tzinfo=UTC) - timedelta(minutes=offset)


def test_every_channel_is_allowed_by_validation() -> None:
    out = normalize_file(
        [
            {"id": str(i), "created_at": "2025-01-01", "channel": c, "subject": "x"}
            for i, c in enumerate(CHANNELS)
        ],
        source="s",
        ingested_at=NOW,
    )
    assert out.tickets["channel"].to_list() == list(CHANNELS)
