"""The Prefect flows: ingest, monitor, and run (= both).

Thin on purpose: each step is a task around a plain function in
``flows.pipeline`` / ``flows.alerts``, so the UI shows one task per source and
per step, retries are declared where the network is touched, and the logic is
tested without Prefect. Tasks share the flow's one DuckDB connection (DuckDB
allows one writing process), so they run one after another.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE

from flows import pipeline
from flows.alerts import deliver_alerts
from flows.config import Settings, load_settings
from warehouse.db import connect
from warehouse.load import table_counts
from warehouse.snapshot import publish_snapshot


@contextmanager
def warehouse(settings: Settings) -> Iterator[duckdb.DuckDBPyConnection]:
    con = connect(settings.warehouse.path)
    try:
        yield con
        publish_snapshot(con, settings.warehouse.read_path)
    finally:
        con.close()


@task(cache_policy=NONE, retries=2, retry_delay_seconds=[10, 60])
def ingest_source(
    con: duckdb.DuckDBPyConnection,
    settings: Settings,
    source: str,
    now: datetime,
    since: datetime | None = None,
) -> pipeline.IngestStats:
    """Retrying is safe: pages already committed moved the cursor past them."""
    return pipeline.ingest_source(con, settings, source, now=now, since=since)


@task(cache_policy=NONE)
def load_changes(con: duckdb.DuckDBPyConnection, settings: Settings) -> int:
    return pipeline.load_changes(con, settings)


@task(cache_policy=NONE)
def refresh_marts(con: duckdb.DuckDBPyConnection, since: datetime | None) -> None:
    pipeline.refresh(con, since)


@task(cache_policy=NONE)
def detect(con: duckdb.DuckDBPyConnection, settings: Settings, now: datetime) -> int:
    return pipeline.detect_anomalies(con, settings, now=now).height


@task(cache_policy=NONE, retries=2, retry_delay_seconds=[30, 120])
def send_alerts(con: duckdb.DuckDBPyConnection, settings: Settings, now: datetime) -> list[Any]:
    """Retrying is safe: the delivery ledger skips what was already sent."""
    days = settings.alerts.max_age_days
    return deliver_alerts(con, settings, now=now, max_age=timedelta(days=days) if days else None)


@flow(name="ingest", log_prints=True)
def ingest_flow(
    config: str = "backlash.toml",
    source: str | None = None,
    now: datetime | None = None,
    since: datetime | None = None,
) -> dict[str, Any]:
    """Pull new records from the sources; with ``since``, refetch from then (backfill)."""
    settings = load_settings(config)
    now = now or datetime.now(UTC)
    logger = get_run_logger()
    names = [source] if source else [s.name for s in settings.sources if s.enabled]
    with warehouse(settings) as con:
        stats = [ingest_source(con, settings, name, now, since) for name in names]
        load_changes(con, settings)
        starts = [s.since for s in stats if s.since is not None]
        if starts:
            refresh_marts(con, min(starts))
        counts = dict(table_counts(con))
    for s in stats:
        logger.info(
            "%s: %d records, %d tickets, %d quarantined",
            s.source,
            s.records,
            s.tickets,
            s.quarantined,
        )
    return {"sources": [s.as_dict() for s in stats], "tables": counts}


@flow(name="monitor", log_prints=True)
def monitor_flow(config: str = "backlash.toml", now: datetime | None = None) -> dict[str, Any]:
    settings = load_settings(config)
    now = now or datetime.now(UTC)
    with warehouse(settings) as con:
        load_changes(con, settings)
        found = detect(con, settings, now)
        deliveries = send_alerts(con, settings, now)
    get_run_logger().info("%d anomalies, %d deliveries", found, len(deliveries))
    return {"anomalies": found, "deliveries": [asdict(d) for d in deliveries]}


@flow(name="run", log_prints=True)
def run_flow(config: str = "backlash.toml", now: datetime | None = None) -> dict[str, Any]:
    now = now or datetime.now(UTC)
    ingested = ingest_flow(config=config, now=now)
    monitored = monitor_flow(config=config, now=now)
    return {"ingest": ingested, "monitor": monitored}


@flow(name="replay", log_prints=True)
def replay_flow(config: str = "backlash.toml", now: datetime | None = None) -> dict[str, Any]:
    """Rebuild core and marts from raw, without touching the network."""
    settings = load_settings(config)
    now = now or datetime.now(UTC)
    with warehouse(settings) as con:
        stats = [pipeline.replay_source(con, settings, s.name, now=now) for s in settings.sources]
        load_changes(con, settings)
        refresh_marts(con, None)
        counts = dict(table_counts(con))
    return {"sources": [s.as_dict() for s in stats], "tables": counts}


@flow(name="relabel", log_prints=True)
def relabel_flow(config: str = "backlash.toml", now: datetime | None = None) -> dict[str, Any]:
    """Relabel history with the current taxonomy and rules, then recount the marts."""
    settings = load_settings(config)
    now = now or datetime.now(UTC)
    with warehouse(settings) as con:
        relabelled = pipeline.relabel(con, settings, now=now)
        refresh_marts(con, None)
    return {"relabelled": relabelled}
