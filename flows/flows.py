"""The Prefect flows: ingest, monitor, and run (= both).

Thin on purpose: each step is a task around a plain function in
``flows.pipeline`` / ``flows.alerts``, so the UI shows one task per source and
per step, retries are declared where the network is touched, and the logic is
tested without Prefect. Tasks share the flow's one DuckDB connection (DuckDB
allows one writing process), so they run one after another.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE

from flows import fanout, pipeline
from flows.alerts import deliver_alerts
from flows.config import ConfigError, Settings, load_settings
from warehouse.db import connect
from warehouse.load import get_state, table_counts
from warehouse.snapshot import publish_snapshot


def _notify_operators(flow: Any, flow_run: Any, state: Any) -> None:
    """Prefect failure hook: tell the operators (never leadership) what broke."""
    from flows.ops import notify_failure

    try:
        settings = load_settings(flow_run.parameters.get("config", "backlash.toml"))
    except Exception:  # a broken config is itself the failure; nobody to tell
        return
    notify_failure(
        settings,
        flow_name=flow.name,
        run_name=flow_run.name,
        message=str(state.message or state.name),
        now=datetime.now(UTC),
    )


def _anomalies_artifact(con: duckdb.DuckDBPyConnection) -> None:
    """A table of the anomalies in the run's Artifacts tab (shown in the Prefect UI)."""
    from prefect.artifacts import create_table_artifact

    rows = con.sql(
        "SELECT alert_id, topic, started_at::VARCHAR AS started_at, round(observed) AS observed, "
        "round(expected, 1) AS expected, round(ratio, 2) AS ratio, severity, status, "
        "coalesce(change_id, '-') AS change_id FROM marts.anomalies ORDER BY started_at DESC"
    ).pl()
    create_table_artifact(
        table=rows.to_dicts(),
        key="backlash-anomalies",
        description=f"{rows.height} anomalies in marts.anomalies after this run",
    )


@contextmanager
def warehouse(settings: Settings, flow_name: str) -> Iterator[duckdb.DuckDBPyConnection]:
    """The flow's one writing connection; records the run in meta.runs and
    publishes the read snapshot when it ends, failed or not."""
    con = connect(settings.warehouse.path)
    run_id = _run_id()
    con.execute(
        "INSERT OR REPLACE INTO meta.runs VALUES (?, ?, ?, NULL, 'running', NULL)",
        [run_id, flow_name, datetime.now(UTC)],
    )
    if not settings.warehouse.read_path.exists():
        # Readers must never find the main file locked and no snapshot: publish
        # the (possibly empty) warehouse before the first load starts.
        publish_snapshot(con, settings.warehouse.read_path)
    status = "failed"
    try:
        yield con
        status = "completed"
    finally:
        try:
            con.execute(
                "UPDATE meta.runs SET finished_at = ?, status = ? WHERE run_id = ?",
                [datetime.now(UTC), status, run_id],
            )
            publish_snapshot(con, settings.warehouse.read_path)
        finally:
            con.close()


def _run_id() -> str:
    """The Prefect flow run's id, so meta.runs and the UI name the same run."""
    from prefect.runtime import flow_run

    return str(flow_run.id or uuid.uuid4())


def _worth_retrying(task: Any, task_run: Any, state: Any) -> bool:
    """Retry network trouble; not a missing file, bad credentials or a bad config."""
    from connectors.base import PermanentError
    from flows.config import ConfigError

    try:
        state.result()
    except (PermanentError, ConfigError):
        return False
    except Exception:
        return True
    return False


# Tasks that touch the network retry with backoff, unless retrying cannot help.
NETWORK_TASK: dict[str, Any] = {
    "cache_policy": NONE,
    "retries": 2,
    "retry_delay_seconds": [10, 60],
    "retry_condition_fn": _worth_retrying,
}


@task(**NETWORK_TASK)
def ingest_source(
    con: duckdb.DuckDBPyConnection,
    settings: Settings,
    source: str,
    now: datetime,
    since: datetime | None = None,
    show_progress: bool = False,
) -> pipeline.IngestStats:
    """Retrying is safe: pages already committed moved the cursor past them."""
    if not show_progress:
        return pipeline.ingest_source(con, settings, source, now=now, since=since)
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("records, {task.fields[rate]}/s"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, transient=False) as bar:
        job = bar.add_task(f"ingest {source}", total=None, rate="-")

        def advance(n: int, total: int | None) -> None:
            bar.update(job, advance=n, total=total)
            speed = bar.tasks[job].speed
            bar.update(job, rate=f"{speed:,.0f}" if speed else "-")

        return pipeline.ingest_source(con, settings, source, now=now, since=since, progress=advance)


@task(cache_policy=NONE)
def load_changes(con: duckdb.DuckDBPyConnection, settings: Settings) -> int:
    return pipeline.load_changes(con, settings)


@task(cache_policy=NONE)
def mark_duplicates(
    con: duckdb.DuckDBPyConnection, settings: Settings, since: datetime | None
) -> int:
    from flows.dedupe import mark_cross_source_duplicates

    return mark_cross_source_duplicates(con, settings, since)


@task(cache_policy=NONE)
def refresh_marts(con: duckdb.DuckDBPyConnection, since: datetime | None) -> None:
    pipeline.refresh(con, since)


@task(cache_policy=NONE)
def detect(con: duckdb.DuckDBPyConnection, settings: Settings, now: datetime) -> int:
    return pipeline.detect_anomalies(con, settings, now=now).height


@task(cache_policy=NONE)
def detect_emergent(con: duckdb.DuckDBPyConnection, now: datetime) -> list[str]:
    return pipeline.detect_emergent(con, now=now)["topic"].to_list()


@task(cache_policy=NONE, retries=2, retry_delay_seconds=[30, 120])
def send_alerts(con: duckdb.DuckDBPyConnection, settings: Settings, now: datetime) -> list[Any]:
    """Retrying is safe: the delivery ledger skips what was already sent."""
    days = settings.alerts.max_age_days
    return deliver_alerts(con, settings, now=now, max_age=timedelta(days=days) if days else None)


@task(**NETWORK_TASK)
def fetch_source(
    config: str, source: str, state: dict[str, Any], since: datetime | None, spool: str
) -> int:
    """Runs in a worker: pull a source's pages into its spool; never opens the warehouse.

    A retry resumes after the last spooled page (``fanout`` explains why that
    neither duplicates nor skips a page).
    """
    from flows.sources import open_source

    connector = open_source(load_settings(config).source(source))
    directory = Path(spool)
    first = 0
    resumed = fanout.read_spool_state(directory)
    if resumed is not None:
        state, first = resumed
    elif since is not None:
        if not hasattr(connector, "backfill_state"):
            raise ValueError(f"source {source!r} cannot be backfilled by time")
        state = connector.backfill_state(since)
    return fanout.spool_pages(connector.pages(state), directory, state, first)


@task(cache_policy=NONE)
def commit_spooled(
    con: duckdb.DuckDBPyConnection,
    settings: Settings,
    source: str,
    directory: Path,
    fetched: Callable[[], bool],
    now: datetime,
) -> pipeline.IngestStats:
    """Commit a source's spooled pages, in order, while its worker may still be fetching.

    ``fetched`` tells whether the worker is done; it is a callable, not the
    future itself, because Prefect would wait for a future passed to a task.
    """
    pages = fanout.tail_spool(directory, fetched)
    return pipeline.ingest_pages(
        con, settings.source(source), pages, topics=pipeline.topics_of(settings), now=now
    )


def _fan_out(
    con: duckdb.DuckDBPyConnection,
    settings: Settings,
    config: str,
    names: list[str],
    now: datetime,
    since: datetime | None,
) -> tuple[list[pipeline.IngestStats], list[str]]:
    """Fetch every source in the flow's task runner; commit here, one source after another.

    A source whose fetch fails keeps what it spooled before failing (committed
    like any page); the others go on, and the failures are returned.
    """
    root = fanout.spool_root(settings.warehouse.path)
    fanout.clear_spool(root)  # a crashed run's pages: refetched from the committed cursors
    futures = {}
    for name in names:
        state = {} if since is not None else get_state(con, name)
        directory = root / name
        futures[name] = (directory, fetch_source.submit(config, name, state, since, str(directory)))
    stats: list[pipeline.IngestStats] = []
    failures: list[str] = []
    for name, (directory, future) in futures.items():
        done = future.wrapped_future.done
        stats.append(commit_spooled(con, settings, name, directory, done, now))
        try:
            future.result()
        except Exception as exc:
            failures.append(f"{name}: {exc}")
    fanout.clear_spool(root)
    return stats, failures


TASK_RUNNERS = ("sequential", "threads", "dask")


def task_runner(kind: str, workers: int, address: str | None = None) -> Any:
    """The task runner that fetches sources in parallel (``None``: fetch one by one).

    ``threads`` suits sources that wait on the network; ``dask`` gives each
    fetch its own process (CPU-heavy mailboxes) or sends it to a running
    cluster at ``address``.
    """
    if kind == "sequential":
        return None
    if kind == "threads":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=workers)
    if kind == "dask":
        try:
            from prefect_dask import DaskTaskRunner
        except ImportError as exc:
            raise ConfigError(
                "--task-runner dask needs prefect-dask: pip install 'backlash[dask]'"
            ) from exc
        if address:
            return DaskTaskRunner(address=address)
        return DaskTaskRunner(
            cluster_kwargs={
                "n_workers": workers,
                "threads_per_worker": 1,
                "processes": True,
                "dashboard_address": None,
            }
        )
    raise ConfigError(f"task runner must be one of {', '.join(TASK_RUNNERS)}, not {kind!r}")


def ingest_with(runner: Any) -> Callable[..., dict[str, Any]]:
    """``ingest_flow`` fetching through ``runner`` (or as is, for ``None``)."""
    if runner is None:
        return ingest_flow
    parallel = ingest_flow.with_options(task_runner=runner)

    def call(**parameters: Any) -> dict[str, Any]:
        with _api_shared_with_workers():
            return parallel(**parameters)

    return call


@contextmanager
def _api_shared_with_workers() -> Iterator[None]:
    """Point worker processes at this process's Prefect API.

    Without a configured server, Prefect starts a temporary one per process:
    each Dask worker would start its own (10-20 s each, measured) and record
    its task runs where the UI never looks. Workers inherit the environment,
    so the API URL goes there while the flow runs.
    """
    if os.environ.get("PREFECT_API_URL"):
        yield
        return
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    if url is None:
        from prefect.server.api.server import SubprocessASGIServer

        server = SubprocessASGIServer()  # the same one Prefect itself would start
        server.start()
        url = server.api_url
    os.environ["PREFECT_API_URL"] = url
    try:
        yield
    finally:
        del os.environ["PREFECT_API_URL"]


@flow(name="ingest", log_prints=True, on_failure=[_notify_operators])
def ingest_flow(
    config: str = "backlash.toml",
    source: str | None = None,
    now: datetime | None = None,
    since: datetime | None = None,
    show_progress: bool = False,
    fan_out: bool = False,
) -> dict[str, Any]:
    """Pull new records from the sources; with ``since``, refetch from then (backfill).

    ``show_progress`` draws a progress bar on the terminal; the CLI turns it on
    only when stderr is a terminal, so CI logs and served runs stay quiet.
    ``fan_out`` fetches the sources in parallel through the flow's task runner
    (``backlash ingest --task-runner dask``); this process still does every write.
    """
    settings = load_settings(config)
    now = now or datetime.now(UTC)
    logger = get_run_logger()
    names = [source] if source else [s.name for s in settings.sources if s.enabled]
    failures: list[str] = []
    with warehouse(settings, "ingest") as con:
        if fan_out:
            stats, failures = _fan_out(con, settings, config, names, now, since)
        else:
            stats = [
                ingest_source(con, settings, name, now, since, show_progress) for name in names
            ]
        load_changes(con, settings)
        starts = [s.since for s in stats if s.since is not None]
        if starts:
            mark_duplicates(con, settings, min(starts))
            refresh_marts(con, min(starts))
        counts = dict(table_counts(con))
        if failures:
            raise RuntimeError(
                "fetching failed for " + "; ".join(failures) + " (what they fetched is committed)"
            )
    for s in stats:
        logger.info(
            "%s: %d records, %d tickets, %d quarantined",
            s.source,
            s.records,
            s.tickets,
            s.quarantined,
        )
    return {"sources": [s.as_dict() for s in stats], "tables": counts}


@flow(name="monitor", log_prints=True, on_failure=[_notify_operators])
def monitor_flow(config: str = "backlash.toml", now: datetime | None = None) -> dict[str, Any]:
    settings = load_settings(config)
    now = now or datetime.now(UTC)
    with warehouse(settings, "monitor") as con:
        load_changes(con, settings)
        found = detect(con, settings, now)
        emerging = detect_emergent(con, now)
        deliveries = send_alerts(con, settings, now)
        _anomalies_artifact(con)
    get_run_logger().info(
        "%d anomalies, %d deliveries, emerging: %s", found, len(deliveries), emerging or "-"
    )
    return {
        "anomalies": found,
        "emerging": emerging,
        "deliveries": [asdict(d) for d in deliveries],
    }


@flow(name="run", log_prints=True)  # its subflows notify on failure
def run_flow(
    config: str = "backlash.toml",
    now: datetime | None = None,
    show_progress: bool = False,
    runner: str = "sequential",
    workers: int = 4,
) -> dict[str, Any]:
    now = now or datetime.now(UTC)
    fan = task_runner(runner, workers)
    ingested = ingest_with(fan)(
        config=config, now=now, show_progress=show_progress, fan_out=fan is not None
    )
    monitored = monitor_flow(config=config, now=now)
    return {"ingest": ingested, "monitor": monitored}


@flow(name="replay", log_prints=True, on_failure=[_notify_operators])
def replay_flow(config: str = "backlash.toml", now: datetime | None = None) -> dict[str, Any]:
    """Rebuild core and marts from raw, without touching the network."""
    settings = load_settings(config)
    now = now or datetime.now(UTC)
    with warehouse(settings, "replay") as con:
        stats = [pipeline.replay_source(con, settings, s.name, now=now) for s in settings.sources]
        load_changes(con, settings)
        mark_duplicates(con, settings, None)
        refresh_marts(con, None)
        counts = dict(table_counts(con))
    return {"sources": [s.as_dict() for s in stats], "tables": counts}


@flow(name="relabel", log_prints=True, on_failure=[_notify_operators])
def relabel_flow(config: str = "backlash.toml", now: datetime | None = None) -> dict[str, Any]:
    """Relabel history with the current taxonomy and rules, then recount the marts."""
    settings = load_settings(config)
    now = now or datetime.now(UTC)
    with warehouse(settings, "relabel") as con:
        relabelled = pipeline.relabel(con, settings, now=now)
        refresh_marts(con, None)
    return {"relabelled": relabelled}


@task(cache_policy=NONE, retries=2, retry_delay_seconds=[30, 120])
def send_digest(con: duckdb.DuckDBPyConnection, settings: Settings, now: datetime) -> str:
    from flows.ops import send_digest as send

    return str(send(con, settings, now=now))


@flow(name="digest", log_prints=True, on_failure=[_notify_operators])
def digest_flow(config: str = "backlash.toml", now: datetime | None = None) -> dict[str, Any]:
    """The daily digest: every anomaly of the last day and what is still open."""
    settings = load_settings(config)
    now = now or datetime.now(UTC)
    with warehouse(settings, "digest") as con:
        path = send_digest(con, settings, now)
    return {"digest": path}
