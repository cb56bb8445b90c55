"""Pages merged into one commit, and validation of large batches on a GE sample."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
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


# -- the ingest loop: batches prepared in a second thread, committed in order --


def _zendesk(first: int, n: int, *, channel: str = "web") -> Page:
    base = NOW - timedelta(days=2)
    records = [
        {
            "id": i,
            "created_at": (base + timedelta(minutes=i)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "updated_at": (base + timedelta(minutes=i)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "subject": "My bill went up",
            "description": f"You raised the price again ({i}).",
            "via": {"channel": channel},
            "tags": ["billing", i],  # a non-string tag becomes text
            "status": "open",
        }
        for i in range(first, first + n)
    ]
    return Page("tickets", records, [str(i) for i in range(first, first + n)], {"after": first})


def _source() -> Any:
    from flows.config import ZendeskSourceConfig

    return ZendeskSourceConfig(name="zd", kind="zendesk", base_url="http://zendesk.invalid")


def _ingest(con: duckdb.DuckDBPyConnection, pages: Iterable[Page], batch: int = 30) -> Any:
    from flows.pipeline import ingest_pages
    from transforms.taxonomy import DEFAULT_TOPICS

    return ingest_pages(con, _source(), pages, topics=DEFAULT_TOPICS, now=NOW, batch_records=batch)


@pytest.mark.slow
def test_batches_prepared_ahead_commit_in_order_with_their_cursor(tmp_path: Path) -> None:
    from warehouse.db import connect

    con = connect(tmp_path / "w.duckdb")
    pages = [_zendesk(i * 20 + 1, 20) for i in range(5)]
    stats = _ingest(con, pages, batch=40)
    assert (stats.pages, stats.records, stats.tickets) == (3, 100, 100)
    assert con.execute("SELECT count(*) FROM core.tickets").fetchone() == (100,)
    assert con.execute("SELECT count(*) FROM core.ticket_labels").fetchone() == (100,)
    assert con.execute('SELECT count(*) FROM raw."zd_records"').fetchone() == (100,)
    assert con.execute(
        "SELECT cursor->>'after', records_total FROM meta.sync_state"
    ).fetchone() == (
        "81",
        100,
    )
    tags = con.execute("SELECT tags FROM core.tickets WHERE source_id = '7'").fetchone()
    assert tags == (["billing", "7"],)
    # The caller's pages keep their records (the loop frees only its own copies).
    assert all(len(p.records) == 20 for p in pages)


@pytest.mark.slow
def test_a_failing_source_keeps_the_batches_before_it_and_raises(tmp_path: Path) -> None:
    from warehouse.db import connect

    def pages() -> Iterator[Page]:
        yield _zendesk(1, 30)
        yield _zendesk(31, 30)
        raise ConnectionError("the helpdesk went away")

    con = connect(tmp_path / "w.duckdb")
    with pytest.raises(ConnectionError, match="went away"):
        _ingest(con, pages())
    # The first batch is committed; the second was still being merged when the
    # source failed (as without the second thread): it is fetched again next run.
    assert con.execute("SELECT count(*) FROM core.tickets").fetchone() == (30,)
    assert con.execute("SELECT cursor->>'after' FROM meta.sync_state").fetchone() == ("1",)
    # The bulk setting was restored even though the loop failed.
    assert con.execute("SELECT current_setting('checkpoint_threshold')").fetchone() == ("16.0 MiB",)


@pytest.mark.slow
def test_a_failing_commit_stops_the_reader(tmp_path: Path) -> None:
    from warehouse.db import connect

    read: list[int] = []

    def pages() -> Iterator[Page]:
        for i in range(50):
            read.append(i)
            yield _zendesk(i * 30 + 1, 30)

    con = connect(tmp_path / "w.duckdb")
    con.execute("CREATE TABLE raw.zd_records (only_column INTEGER)")  # landing must fail
    with pytest.raises(duckdb.Error):
        _ingest(con, pages())
    # The reader was at most a batch or two ahead when the first commit failed.
    assert len(read) <= 4
    assert con.execute("SELECT count(*) FROM core.tickets").fetchone() == (0,)
    assert con.execute("SELECT count(*) FROM meta.sync_state").fetchone() == (0,)
