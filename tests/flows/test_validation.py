from __future__ import annotations

from datetime import UTC, datetime

import polars as pl
import pytest

from flows.validation import validate_tickets
from transforms.normalize_file import normalize_file

NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.slow
def test_failing_rows_are_split_off_with_reasons_and_the_rest_loads() -> None:
    batch = normalize_file(
        [
            {"id": "ok", "created_at": "2025-01-01T00:00:00Z", "subject": "fine", "channel": "web"},
            {"id": "future", "created_at": "2027-01-01T00:00:00Z", "subject": "x"},
            {"id": "empty", "created_at": "2025-01-01T00:00:00Z", "subject": "  ", "body": ""},
        ],
        source="s",
        ingested_at=NOW,
    ).tickets
    result = validate_tickets(batch, now=NOW)
    assert result.valid["source_id"].to_list() == ["ok"]
    reasons = {r[0]: r[1] for r in result.rejects}
    assert reasons == {
        "future": "created_at is in the future",
        "empty": "no text: subject and body are empty",
    }
    assert '"future"' in next(r[2] for r in result.rejects if r[0] == "future")


@pytest.mark.slow
def test_bad_channel_is_caught_if_a_normaliser_lets_one_through() -> None:
    batch = normalize_file(
        [{"id": "1", "created_at": "2025-01-01", "subject": "x"}], source="s", ingested_at=NOW
    ).tickets.with_columns(pl.lit("fax").alias("channel"))
    result = validate_tickets(batch, now=NOW)
    assert result.valid.is_empty()
    assert "channel is not one of" in result.rejects[0][1]
