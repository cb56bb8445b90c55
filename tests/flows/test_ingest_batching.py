"""Pages merged into one commit, and validation of large batches on a GE sample."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from connectors.base import Page
from flows.pipeline import coalesce_pages
from flows.validation import validate_tickets
from transforms.schema import TICKETS, conform

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _page(stream: str, first: int, n: int) -> Page:
    ids = [str(i) for i in range(first, first + n)]
    return Page(stream, [{"id": i} for i in ids], ids, {"after": ids[-1]}, [(ids[0], "r", "p")])


def test_consecutive_pages_of_a_stream_merge_up_to_the_limit_with_the_last_cursor() -> None:
    pages = [_page("comments", 0, 3), _page("tickets", 10, 4), _page("tickets", 20, 4)]
    pages += [_page("tickets", 30, 4), _page("users", 40, 2)]
    merged = list(coalesce_pages(pages, max_records=8, max_seconds=60))
    assert [(p.stream, len(p.records)) for p in merged] == [
        ("comments", 3),
        ("tickets", 8),
        ("tickets", 4),
        ("users", 2),
    ]
    assert merged[1].record_ids == [*pages[1].record_ids, *pages[2].record_ids]
    assert merged[1].cursor == {"after": "23"}
    assert merged[1].rejects == [("10", "r", "p"), ("20", "r", "p")]


def test_a_slow_source_is_not_held_back() -> None:
    ticks = itertools.count(0.0, 10.0)  # every page takes 10 s to come
    pages = [_page("tickets", i * 10, 2) for i in range(3)]
    merged = list(coalesce_pages(pages, max_records=100, max_seconds=5, clock=lambda: next(ticks)))
    assert [len(p.records) for p in merged] == [2, 2, 2]


def _tickets(n: int) -> pl.DataFrame:
    base = NOW - timedelta(days=1)
    frame = pl.DataFrame(
        {
            "ticket_key": [f"s:{i}" for i in range(n)],
            "source": "s",
            "source_id": [str(i) for i in range(n)],
            "created_at": [base] * n,
            "updated_at": [base] * n,
            "subject": ["x"] * n,
            "body": ["y"] * n,
            "channel": ["web"] * n,
        }
    )
    return conform(frame, TICKETS)


@pytest.mark.slow
def test_every_row_of_a_large_batch_is_checked_though_ge_sees_a_sample() -> None:
    batch = _tickets(6000).with_columns(
        pl.when(pl.col("source_id") == "4321")
        .then(pl.lit("fax"))
        .otherwise("channel")
        .alias("channel"),
        pl.when(pl.col("source_id") == "5555")
        .then(pl.lit(NOW + timedelta(days=3)))
        .otherwise("created_at")
        .alias("created_at"),
        pl.when(pl.col("source_id") == "17")
        .then(pl.lit(" "))
        .otherwise("subject")
        .alias("subject"),
        pl.when(pl.col("source_id") == "17").then(None).otherwise("body").alias("body"),
    )
    result = validate_tickets(batch, now=NOW, sample_rows=100, seed=1)
    assert result.checked == 6000
    assert result.sampled == 103  # the three failing rows and 100 others
    assert result.valid.height == 5997
    reasons = {r[0]: r[1] for r in result.rejects}
    assert reasons == {
        "17": "no text: subject and body are empty",
        "4321": "channel is not one of email, web, chat, phone, social, api, other",
        "5555": "created_at is in the future",
    }
