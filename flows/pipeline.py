"""The pipeline's steps as plain functions over a warehouse connection.

Prefect tasks in ``flows.tasks`` wrap these; keeping them free of Prefect lets
tests, ``replay`` and benchmarks run the exact same code without a server.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import duckdb
import polars as pl

from connectors.base import Page
from flows.config import Settings
from flows.sources import normalize_page, open_source
from warehouse import load
from warehouse.db import transaction
from warehouse.marts import refresh_marts

log = logging.getLogger("backlash")

# Called after each page with (records in the page, expected total or None).
KNOWN_THREAD_DAYS = timedelta(days=60)

Progress = Callable[[int, int | None], None]

# Pages are merged into one commit up to this many records, or until the first
# of them has waited this long for the next (a slow API is never held back).
BATCH_RECORDS = 50_000
BATCH_SECONDS = 5.0


@dataclass
class IngestStats:
    source: str
    pages: int = 0
    records: int = 0
    raw_new: int = 0
    tickets: int = 0
    messages: int = 0
    quarantined: int = 0
    # Earliest created_at this run touched: marts are recounted from there on.
    since: datetime | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in vars(self).items()}


def topics_of(settings: Settings) -> Sequence[Any]:
    from transforms.taxonomy import DEFAULT_TOPICS, Topic

    if not settings.labels.topics:
        return DEFAULT_TOPICS
    return tuple(
        Topic(name=t.name, description=t.description, phrases=tuple(t.phrases))
        for t in settings.labels.topics
    )


def label(tickets: pl.DataFrame, topics: Sequence[Any]) -> pl.DataFrame:
    from transforms.labels import label_tickets

    if tickets.is_empty():
        from transforms.schema import TICKET_LABELS, empty

        return empty(TICKET_LABELS)
    return label_tickets(tickets, topics)


def _known_threads(con: duckdb.DuckDBPyConnection, cfg: Any, now: datetime) -> pl.DataFrame | None:
    """Stored messages a new reply may belong to (email sources only).

    A reply whose References were cut by a mail client still joins its ticket
    through the subject and sender of what is already stored.
    """
    if cfg.kind not in ("imap", "mbox"):
        return None
    # The window ends at the newest stored message, not at ``now``: a replay of
    # old mail must see the conversations stored just before it.
    return con.sql(
        "SELECT message_id, ticket_key, subject, author_key, created_at, body, is_auto "
        "FROM core.messages WHERE source = ? AND created_at >= "
        "coalesce((SELECT max(created_at) FROM core.messages WHERE source = ?), ?) - ?",
        params=[cfg.name, cfg.name, now, KNOWN_THREAD_DAYS],
    ).pl()


def ingest_source(
    con: duckdb.DuckDBPyConnection,
    settings: Settings,
    source_name: str,
    *,
    now: datetime,
    since: datetime | None = None,
    progress: Progress | None = None,
) -> IngestStats:
    """Pull every new page of one source and commit each page atomically.

    With ``since`` (a backfill), the source is read again from that time on;
    upserts make the overlap harmless and the cursor ends at the head again.
    """
    cfg = settings.source(source_name)
    topics = topics_of(settings)
    connector = open_source(cfg)
    if since is None:
        state = load.get_state(con, cfg.name)
    elif hasattr(connector, "backfill_state"):
        state = connector.backfill_state(since)
    else:
        raise ValueError(f"source {cfg.name!r} ({cfg.kind}) cannot be backfilled by time")
    return ingest_pages(con, cfg, connector.pages(state), topics=topics, now=now, progress=progress)


def coalesce_pages(
    pages: Iterable[Page],
    *,
    max_records: int = BATCH_RECORDS,
    max_seconds: float = BATCH_SECONDS,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[Page]:
    """Merge consecutive pages of one stream into one, cursor of the last.

    Still one transaction per yielded page with its cursor: the cursor of the
    last merged page never points past a record of the merged ones, so a crash
    loses nothing and duplicates nothing. A ticket in two merged pages is
    resolved by ``latest_per_key`` exactly as two upserts would have.
    """
    pending: list[Page] = []
    count = 0
    started = 0.0
    for page in pages:
        if pending and (
            page.stream != pending[0].stream
            or count + len(page.records) > max_records
            or clock() - started > max_seconds
        ):
            yield _merge_out(pending)
            count = 0
        if not pending:
            started = clock()
        pending.append(page)
        count += len(page.records)
    if pending:
        yield _merge_out(pending)


def _merge_out(pages: list[Page]) -> Page:
    """One page of ``pages``, which is emptied: the generator keeps no reference to
    the records while the batch is processed (its memory is freed right after)."""
    merged = _merge(pages)
    pages.clear()
    return merged


def _merge(pages: list[Page]) -> Page:
    if len(pages) == 1:
        return pages[0]
    last = pages[-1]
    return Page(
        last.stream,
        [record for page in pages for record in page.records],  # type: ignore[misc]
        [record_id for page in pages for record_id in page.record_ids],
        last.cursor,
        [reject for page in pages for reject in page.rejects],
        last.expected_total,
    )


def ingest_pages(
    con: duckdb.DuckDBPyConnection,
    cfg: Any,
    pages: Iterable[Page],
    *,
    topics: Sequence[Any],
    now: datetime,
    progress: Progress | None = None,
    batch_records: int = BATCH_RECORDS,
    batch_seconds: float = BATCH_SECONDS,
    timings: dict[str, float] | None = None,
) -> IngestStats:
    """The per-page loop of ``ingest_source``, for any iterable of pages.

    Separate so that benchmarks and replays can feed pages from elsewhere (files
    on disk) through exactly the code a scheduled run uses. Consecutive pages
    are committed together (``coalesce_pages``): every step below has a fixed
    cost per call that, at Zendesk's 1,000 records a page, outweighed the work.
    ``timings``, if given, receives the seconds spent in each step.
    """
    from flows.validation import validate_tickets

    stats = IngestStats(source=cfg.name)
    spent = timings if timings is not None else {}
    clock = time.perf_counter

    def lap(step: str, since: float) -> float:
        now_ = clock()
        spent[step] = spent.get(step, 0.0) + now_ - since
        return now_

    t = clock()
    with _cyclic_gc_paused():
        for page in coalesce_pages(pages, max_records=batch_records, max_seconds=batch_seconds):
            t = lap("read", t)
            normalized = normalize_page(cfg, page, now, _known_threads(con, cfg, now))
            tickets = load.latest_per_key(normalized.tickets, "ticket_key", "updated_at")
            t = lap("normalize", t)
            checked = validate_tickets(tickets, now=now)
            t = lap("validate", t)
            labels = label(checked.valid, topics)
            t = lap("label", t)
            result = load.commit_page(
                con,
                source=cfg.name,
                page=page,
                tickets=checked.valid,
                messages=normalized.messages,
                labels=labels,
                rejects=[*normalized.rejects, *checked.rejects],
                now=now,
            )
            t = lap("commit", t)
            stats.pages += 1
            stats.records += len(page.records)
            stats.raw_new += result.raw_new
            stats.tickets += result.tickets
            stats.messages += result.messages
            stats.quarantined += result.quarantined
            if not checked.valid.is_empty():
                first = checked.valid["created_at"].min()
                if isinstance(first, datetime) and (stats.since is None or first < stats.since):
                    stats.since = first
            if progress:
                progress(len(page.records), page.expected_total)
            log.info(
                "source %s: page %d (%s): %d records, %d new raw, %d tickets, %d quarantined",
                cfg.name,
                stats.pages,
                page.stream,
                len(page.records),
                result.raw_new,
                result.tickets,
                result.quarantined,
            )
            # The batch is gone; free what cycles it left, looking at young objects only.
            del page, normalized, tickets, checked, labels
            gc.collect(1)
    return stats


@contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while batches are processed.

    A 50k-record batch is ~3M live dicts and lists parsed from JSON; every
    automatic full collection walks all of them, and measured at 50k tickets
    that was 3.5 s of a 4.6 s read (75%). JSON records hold no reference
    cycles, so reference counting frees them; the loop collects the young
    generations itself after each batch, and the collector's state is restored.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def replay_source(
    con: duckdb.DuckDBPyConnection, settings: Settings, source_name: str, *, now: datetime
) -> IngestStats:
    """Rebuild a source's core rows from ``raw`` alone: no network, cursors untouched.

    For after a normaliser or labeller change. Raw versions are applied oldest
    first, and upserts keep the latest ``updated_at``, so the result equals
    what the original loads produced with today's code.
    """
    from flows.validation import validate_tickets

    cfg = settings.source(source_name)
    stats = IngestStats(source=cfg.name)
    topics = topics_of(settings)
    for page in load.raw_pages(con, cfg.name):
        normalized = normalize_page(cfg, page, now, _known_threads(con, cfg, now))
        tickets = load.latest_per_key(normalized.tickets, "ticket_key", "updated_at")
        checked = validate_tickets(tickets, now=now)
        with transaction(con):
            result = load.apply_page(
                con,
                source=cfg.name,
                stream=page.stream,
                tickets=checked.valid,
                messages=normalized.messages,
                labels=label(checked.valid, topics),
                rejects=[*normalized.rejects, *checked.rejects],
                now=now,
            )
        stats.pages += 1
        stats.records += len(page.records)
        stats.tickets += result.tickets
        stats.quarantined += result.quarantined
    return stats


def relabel(con: duckdb.DuckDBPyConnection, settings: Settings, *, now: datetime) -> int:
    """Label every ticket again with the configured taxonomy and rules, so the
    series stay comparable after a change; returns the tickets relabelled."""
    tickets = con.sql("SELECT ticket_key, subject, body FROM core.tickets").pl()
    labels = label(tickets, topics_of(settings))
    with transaction(con):
        load.upsert_labels(con, labels, now)
    return labels.height


def load_changes(con: duckdb.DuckDBPyConnection, settings: Settings) -> int:
    """Mirror the change calendar into core.product_changes (none configured: empty)."""
    from connectors.calendar import read_changes
    from transforms.schema import PRODUCT_CHANGES, conform

    if settings.changes is None:
        rows: list[dict[str, Any]] = []
    else:
        rows = read_changes(settings.changes.path)
    frame = conform(pl.DataFrame(rows, infer_schema_length=None), PRODUCT_CHANGES)
    return load.replace_changes(con, frame)


def refresh(con: duckdb.DuckDBPyConnection, since: datetime | None) -> None:
    refresh_marts(con, since)


@dataclass
class MonitorInputs:
    counts: pl.DataFrame
    tickets: pl.DataFrame
    changes: pl.DataFrame
    hourly: pl.DataFrame = field(default_factory=pl.DataFrame)


def monitor_inputs(con: duckdb.DuckDBPyConnection) -> MonitorInputs:
    counts = con.sql(
        "SELECT bucket, topic, channel, tickets, complaints, cancel_intents "
        "FROM marts.complaints_daily ORDER BY bucket"
    ).pl()
    tickets = con.sql(
        "SELECT t.ticket_key, t.created_at, t.subject, t.body, l.topics, l.is_complaint "
        "FROM core.tickets t JOIN core.ticket_labels l USING (ticket_key) "
        "WHERE NOT t.is_deleted AND NOT t.is_auto AND t.duplicate_of IS NULL"
    ).pl()
    changes = con.sql("SELECT * FROM core.product_changes").pl()
    return MonitorInputs(counts=counts, tickets=tickets, changes=changes)


def monitor_settings(settings: Settings) -> Any:
    from transforms.monitor import MonitorSettings

    d = settings.detection
    return MonitorSettings(
        alpha=d.alpha,
        min_excess=d.min_excess,
        min_ratio=d.min_ratio,
        window_days=d.window_days,
        per_channel=d.per_channel,
    )


def detect_anomalies(
    con: duckdb.DuckDBPyConnection, settings: Settings, *, now: datetime
) -> pl.DataFrame:
    """Score every series up to ``now`` and store the episodes in marts.anomalies."""
    from transforms.monitor import monitor
    from transforms.schema import ANOMALIES, conform

    inputs = monitor_inputs(con)
    anomalies = conform(
        monitor(
            inputs.counts,
            inputs.tickets,
            inputs.changes,
            now=now,
            settings=monitor_settings(settings),
        ),
        ANOMALIES,
    )
    with transaction(con), load.registered(con, "found", anomalies):
        # Episodes are derived from the whole history by a causal detector, so
        # the table is rebuilt, with the same alert_ids, on every run.
        con.execute("DELETE FROM marts.anomalies")
        con.execute(f"INSERT INTO marts.anomalies ({', '.join(ANOMALIES)}) SELECT * FROM found")
    return anomalies


EMERGENT_DAYS = 3
EMERGENT_BASELINE_DAYS = 56


def detect_emergent(con: duckdb.DuckDBPyConnection, *, now: datetime) -> pl.DataFrame:
    """Store in marts.emergent_topics what is rising among complaints as of ``now``."""
    from transforms.emergent import EMERGENT_TOPICS, emergent_topics

    since = now - timedelta(days=EMERGENT_DAYS + EMERGENT_BASELINE_DAYS)
    recent = con.sql(
        "SELECT t.ticket_key, t.created_at, t.subject, t.body, t.requester_key, "
        "l.is_complaint, l.topics "
        "FROM core.tickets t JOIN core.ticket_labels l USING (ticket_key) "
        "WHERE NOT t.is_deleted AND NOT t.is_auto AND t.duplicate_of IS NULL "
        "AND t.created_at >= ? AND t.created_at < ?",
        params=[since, now],
    ).pl()
    found = emergent_topics(
        recent,
        now=now,
        window=timedelta(days=EMERGENT_DAYS),
        baseline=timedelta(days=EMERGENT_BASELINE_DAYS),
    ).select(*EMERGENT_TOPICS)
    found = found.with_columns(pl.lit(now).cast(pl.Datetime("us", "UTC")).alias("as_of"))
    with transaction(con), load.registered(con, "emergent", found):
        con.execute("DELETE FROM marts.emergent_topics")
        con.execute("INSERT INTO marts.emergent_topics SELECT * FROM emergent")
    return found
