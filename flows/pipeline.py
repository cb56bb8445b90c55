"""The pipeline's steps as plain functions over a warehouse connection.

Prefect tasks in ``flows.tasks`` wrap these; keeping them free of Prefect lets
tests, ``replay`` and benchmarks run the exact same code without a server.
"""

from __future__ import annotations

import gc
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import duckdb
import polars as pl

from connectors.base import Page
from flows.config import Settings
from flows.sources import normalize_page, open_source
from warehouse import load
from warehouse.custom_fields import apply_extras
from warehouse.db import bulk_load, transaction
from warehouse.marts import refresh_marts

log = logging.getLogger("backlash")

# Called after each page with (records in the page, expected total or None).
KNOWN_THREAD_DAYS = timedelta(days=60)

Progress = Callable[[int, int | None], None]

# Pages are merged into one commit up to this many records, or until the first
# of them has waited this long for the next (a slow API is never held back).
BATCH_RECORDS = 50_000
# Sources whose tickets carry custom fields and satisfaction ratings.
CUSTOM_FIELD_KINDS = ("zendesk", "freshdesk")
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


@dataclass
class _Prepared:
    """One batch, ready to commit: everything but the warehouse writes."""

    page: Page
    records: int
    normalized: Any
    checked: Any
    labels: pl.DataFrame
    raw: pl.DataFrame
    extras: Any = None


def _extras(cfg: Any, page: Page) -> Any:
    """A helpdesk page's custom fields, field dictionary and satisfaction ratings."""
    if cfg.kind not in CUSTOM_FIELD_KINDS:
        return None
    from transforms.custom_fields import ticket_extras

    return ticket_extras(cfg.name, page.stream, page.records)


def _prepare(
    con: duckdb.DuckDBPyConnection | None,
    cfg: Any,
    page: Page,
    *,
    topics: Sequence[Any],
    now: datetime,
    lap: Callable[[str, float], float],
    started: float,
) -> _Prepared:
    """Normalise, validate, label and build the raw frame of one batch.

    Reads the warehouse only for email sources (``con`` given), whose replies
    join the threads already stored.
    """
    from flows.validation import validate_tickets

    known = _known_threads(con, cfg, now) if con is not None else None
    normalized = normalize_page(cfg, page, now, known)
    tickets = load.latest_per_key(normalized.tickets, "ticket_key", "updated_at")
    t = lap("normalize", started)
    checked = validate_tickets(tickets, now=now)
    t = lap("validate", t)
    labels = label(checked.valid, topics)
    t = lap("label", t)
    raw = load.raw_frame(cfg.name, page, now)
    extras = _extras(cfg, page)
    lap("raw", t)
    # The commit needs the records' count, not the records: at ~10 KB of
    # Python objects per ticket they were most of a batch's memory, freed here
    # rather than after the commit (the caller's own pages are left untouched).
    light = Page(page.stream, [], [], page.cursor, page.rejects, page.expected_total)
    return _Prepared(light, len(page.records), normalized, checked, labels, raw, extras)


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

    While one batch is written to DuckDB, the next is read, normalised,
    validated and labelled in a second thread (``_prefetched``): DuckDB and
    Polars release the GIL, and writing was half of the time. Batches are still
    committed one at a time, in order, each with its cursor. Email sources are
    prepared in order instead, as a reply joins the threads committed before it.
    ``timings``, if given, receives the seconds spent in each step (steps of
    the two threads overlap, so they may add up to more than the wall time).
    """
    stats = IngestStats(source=cfg.name)
    spent = timings if timings is not None else {}
    clock = time.perf_counter

    def lap(step: str, since: float) -> float:
        now_ = clock()
        spent[step] = spent.get(step, 0.0) + now_ - since
        return now_

    def prepared(reads_warehouse: bool) -> Iterator[_Prepared]:
        t = clock()
        for page in coalesce_pages(pages, max_records=batch_records, max_seconds=batch_seconds):
            t = lap("read", t)
            batch = _prepare(
                con if reads_warehouse else None,
                cfg,
                page,
                topics=topics,
                now=now,
                lap=lap,
                started=t,
            )
            del page  # not held while the batch waits to be committed
            yield batch
            t = clock()

    sequential = cfg.kind in ("imap", "mbox")
    with _cyclic_gc_paused(), bulk_load(con):
        batches = prepared(True) if sequential else _prefetched(prepared(False))
        try:
            t = clock()
            for batch in batches:
                t = lap("wait", t)
                _commit_prepared(con, cfg, batch, now, stats, progress)
                t = lap("commit", t)
                # The batch is gone; free what cycles it left, looking at young objects only.
                del batch
                gc.collect(1)
        finally:
            close = getattr(batches, "close", None)
            if close is not None:
                close()
    return stats


def _commit_prepared(
    con: duckdb.DuckDBPyConnection,
    cfg: Any,
    batch: _Prepared,
    now: datetime,
    stats: IngestStats,
    progress: Progress | None,
) -> None:
    page, checked = batch.page, batch.checked
    result = load.commit_page(
        con,
        source=cfg.name,
        page=page,
        tickets=checked.valid,
        messages=batch.normalized.messages,
        labels=batch.labels,
        rejects=[*batch.normalized.rejects, *checked.rejects],
        now=now,
        raw=batch.raw,
        records=batch.records,
        extras=batch.extras,
    )
    stats.pages += 1
    stats.records += batch.records
    stats.raw_new += result.raw_new
    stats.tickets += result.tickets
    stats.messages += result.messages
    stats.quarantined += result.quarantined
    if not checked.valid.is_empty():
        first = checked.valid["created_at"].min()
        if isinstance(first, datetime) and (stats.since is None or first < stats.since):
            stats.since = first
    if progress:
        progress(batch.records, page.expected_total)
    log.info(
        "source %s: page %d (%s): %d records, %d new raw, %d tickets, %d quarantined",
        cfg.name,
        stats.pages,
        page.stream,
        batch.records,
        result.raw_new,
        result.tickets,
        result.quarantined,
    )


_DONE = object()


class _prefetched(Iterator[_Prepared]):  # noqa: N801 - used like a generator function
    """Run ``batches`` one item ahead in a daemon thread.

    At most two batches are alive: the one the caller is committing and the
    one being prepared (the thread waits for the caller to take a batch before
    it starts the next). An exception in the thread is raised in the caller at
    the point it would have occurred; ``close`` stops the thread after its
    current batch, so a failed commit does not leave it reading the source.
    """

    def __init__(self, batches: Iterator[_Prepared]) -> None:
        self._batches = batches
        self._ready: queue.Queue[Any] = queue.Queue(maxsize=1)
        self._taken = threading.Semaphore(1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ingest-prepare", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while True:
                self._taken.acquire()
                if self._stop.is_set():
                    return
                item = next(self._batches, _DONE)
                self._ready.put(item)
                if item is _DONE:
                    return
                del item  # the caller frees the batch when committed
        except BaseException as exc:  # handed to the caller, who re-raises it
            self._ready.put(exc)

    def __next__(self) -> _Prepared:
        item = self._ready.get()
        if item is _DONE:
            self._thread.join()
            raise StopIteration
        if isinstance(item, BaseException):
            self._thread.join()
            raise item
        self._taken.release()
        return item  # type: ignore[no-any-return]

    def close(self) -> None:
        self._stop.set()
        self._taken.release()
        self._thread.join()
        with suppress(AttributeError):
            self._batches.close()  # type: ignore[attr-defined]


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
            apply_extras(con, _extras(cfg, page))
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
        cusum_h=d.cusum_h,
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
