"""The ``backlash`` command.

Commands that only read (``sql``, ``alerts``, ``status``, ``backtest``) open the
published snapshot and never import Prefect, which costs seconds to start and
a temporary API server when no ``PREFECT_API_URL`` is set (PITFALLS.md).
"""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from flows.config import ConfigError, Settings, load_settings

app = typer.Typer(
    name="backlash",
    help="Hear customers before the stock price does: support tickets and emails into DuckDB, "
    "alerts when complaints spike after a product change.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

ConfigOption = Annotated[
    Path,
    typer.Option("--config", "-c", help="Config file (relative paths resolve against its folder)."),
]


class State:
    config: Path = Path("backlash.toml")


def _settings() -> Settings:
    try:
        return load_settings(State.config)
    except ConfigError as exc:
        _fail(str(exc))


def _fail(message: str, code: int = 2) -> Any:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _prefect_env() -> None:
    """Defaults that make Prefect quiet and patient offline; the user's env wins."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")


@app.callback()
def main_options(
    config: ConfigOption = Path("backlash.toml"),
) -> None:
    State.config = config


def _tty() -> bool:
    """Progress bars only for a person at a terminal: CI logs and served runs stay quiet."""
    return sys.stderr.isatty() and os.environ.get("CI") is None


def _print_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, default=_json_default, ensure_ascii=False))


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    return str(value)


class Runner(StrEnum):
    sequential = "sequential"
    threads = "threads"
    dask = "dask"


RunnerOption = Annotated[
    Runner,
    typer.Option(
        "--task-runner",
        help="Fetch the sources one by one, or in parallel in threads or Dask worker "
        "processes (this process still does every write).",
    ),
]
WorkersOption = Annotated[int, typer.Option(min=1, help="Parallel fetches (threads/dask).")]
AddressOption = Annotated[
    str | None, typer.Option(help="A running Dask scheduler (tcp://host:8786) instead.")
]


def _ingest(
    source: str | None, runner: Runner, workers: int, address: str | None, **window: Any
) -> None:
    """``ingest`` and ``backfill``: the ingest flow, fetching through ``runner``."""
    settings = _settings()
    _prefect_env()
    try:
        if source:
            settings.source(source)
        from flows.flows import ingest_with, task_runner

        ingest_flow = ingest_with(task_runner(runner.value, workers, address))
    except ConfigError as exc:
        _fail(str(exc))
    _print_json(
        ingest_flow(
            config=str(State.config),
            source=source,
            show_progress=_tty(),
            fan_out=runner is not Runner.sequential,
            **window,
        )
    )


@app.command()
def run(
    now: Annotated[datetime | None, typer.Option(help="Pretend it is this time (UTC).")] = None,
    task_runner: RunnerOption = Runner.sequential,
    workers: WorkersOption = 4,
) -> None:
    """Ingest all sources, then monitor, once."""
    _settings()
    _prefect_env()
    from flows.flows import run_flow

    try:
        result = run_flow(
            config=str(State.config),
            now=_utc(now),
            show_progress=_tty(),
            runner=task_runner.value,
            workers=workers,
        )
    except ConfigError as exc:
        _fail(str(exc))
    _print_summary(result)


@app.command()
def ingest(
    source: Annotated[str | None, typer.Option(help="Only this source.")] = None,
    now: Annotated[datetime | None, typer.Option(help="Pretend it is this time (UTC).")] = None,
    task_runner: RunnerOption = Runner.sequential,
    workers: WorkersOption = 4,
    dask_address: AddressOption = None,
) -> None:
    """Pull new records from every source (or one) into the warehouse."""
    _ingest(source, task_runner, workers, dask_address, now=_utc(now))


@app.command()
def backfill(
    since: Annotated[datetime, typer.Option(help="Refetch records from this time (UTC) on.")],
    source: Annotated[str | None, typer.Option(help="Only this source.")] = None,
    task_runner: RunnerOption = Runner.sequential,
    workers: WorkersOption = 4,
    dask_address: AddressOption = None,
) -> None:
    """Refetch a window from the sources; overlapping records are upserted, not duplicated."""
    _ingest(source, task_runner, workers, dask_address, since=_utc(since))


@app.command()
def monitor(
    now: Annotated[datetime | None, typer.Option(help="Pretend it is this time (UTC).")] = None,
) -> None:
    """Detect anomalies, attribute them, and send the alerts that are due."""
    _settings()
    _prefect_env()
    from flows.flows import monitor_flow

    _print_json(monitor_flow(config=str(State.config), now=_utc(now)))


@app.command()
def digest(
    now: Annotated[datetime | None, typer.Option(help="Pretend it is this time (UTC).")] = None,
) -> None:
    """Send the daily digest (every anomaly of the last day, what is still open) now."""
    _settings()
    _prefect_env()
    from flows.flows import digest_flow

    _print_json(digest_flow(config=str(State.config), now=_utc(now)))


@app.command()
def replay(
    now: Annotated[datetime | None, typer.Option(help="Pretend it is this time (UTC).")] = None,
) -> None:
    """Rebuild core and marts from raw (after a normaliser change); no network."""
    _settings()
    _prefect_env()
    from flows.flows import replay_flow

    _print_json(replay_flow(config=str(State.config), now=_utc(now)))


@app.command()
def relabel(
    now: Annotated[datetime | None, typer.Option(help="Pretend it is this time (UTC).")] = None,
) -> None:
    """Relabel every ticket with the current taxonomy and rules; recount the marts."""
    _settings()
    _prefect_env()
    from flows.flows import relabel_flow

    _print_json(relabel_flow(config=str(State.config), now=_utc(now)))


@app.command()
def serve() -> None:
    """Serve the flows as Prefect deployments on their schedules (Ctrl-C stops)."""
    settings = _settings()
    _prefect_env()
    from flows.serve import serve as serve_deployments

    serve_deployments(settings, State.config)


class Format(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"
    parquet = "parquet"


@app.command()
def sql(
    query: Annotated[str, typer.Argument(help="SQL, or @name for queries/<name>.sql.")],
    format: Annotated[Format, typer.Option("--format", "-f")] = Format.table,
    output: Annotated[Path | None, typer.Option("--output", "-o")] = None,
) -> None:
    """Run a read-only query against the warehouse snapshot (safe while flows write)."""
    import duckdb
    import polars as pl

    from warehouse.read import NoWarehouseError, ReadOnlyError, open_reader
    from warehouse.read import query as run_query

    settings = _settings()
    if query.startswith("@"):
        saved = settings.config_path.parent / "queries" / f"{query[1:]}.sql"
        if not saved.is_file():
            _fail(f"no saved query {saved}")
        query = saved.read_text(encoding="utf-8")
    try:
        con = open_reader(settings.warehouse.read_path, settings.warehouse.path)
    except NoWarehouseError as exc:
        _fail(str(exc))
    try:
        frame = run_query(con, query)
    except ReadOnlyError as exc:
        _fail(str(exc))
    except duckdb.Error as exc:
        _fail(str(exc).strip())
    finally:
        con.close()
    if format is Format.parquet:
        if output is None:
            _fail("--format parquet needs --output FILE")
        frame.write_parquet(output)
        return
    if format is Format.csv:
        text = frame.write_csv()
    elif format is Format.json:
        text = json.dumps(frame.to_dicts(), indent=2, default=_json_default, ensure_ascii=False)
    else:
        with pl.Config(tbl_rows=200, tbl_cols=-1, fmt_str_lengths=60, tbl_width_chars=160):
            text = str(frame)
    if output:
        output.write_text(text, encoding="utf-8")
    else:
        typer.echo(text)


@app.command()
def alerts(
    as_json: Annotated[bool, typer.Option("--json", help="Print the anomalies as JSON.")] = False,
    preview: Annotated[
        str | None, typer.Option(help="Write this alert's email HTML to --output.")
    ] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o")] = None,
) -> None:
    """List anomalies (newest first), as a table or JSON; or preview one alert's email."""
    from warehouse.read import NoWarehouseError, open_reader

    settings = _settings()
    try:
        con = open_reader(settings.warehouse.read_path, settings.warehouse.path)
    except NoWarehouseError as exc:
        _fail(str(exc))
    try:
        if preview:
            _preview(con, settings, preview, output)
            return
        frame = con.sql("SELECT * FROM marts.anomalies ORDER BY started_at DESC, alert_id").pl()
    finally:
        con.close()
    if as_json:
        _print_json(frame.to_dicts())
        return
    if frame.is_empty():
        typer.echo("no anomalies")
        return
    for row in frame.iter_rows(named=True):
        cause = f"follows {row['change_title']!r}" if row["change_id"] else "no product change"
        typer.echo(
            f"{row['alert_id']}  {row['started_at']:%Y-%m-%d}  {row['topic']:<10} "
            f"{row['ratio']:.1f}x  sev {row['severity']}  {row['status']:<9} {cause}"
        )


def _preview(con: Any, settings: Settings, alert_id: str, output: Path | None) -> None:
    from flows.alert_email import render_html
    from flows.alerts import build_view

    rows = con.sql("SELECT * FROM marts.anomalies WHERE alert_id = ?", params=[alert_id]).pl()
    if rows.is_empty():
        _fail(f"no anomaly {alert_id!r} (see `backlash alerts`)")
    view = build_view(con, settings, rows.row(0, named=True), "new")
    target = output or Path(f"alert-{alert_id}.html")
    target.write_text(render_html(view, chart_cid=None), encoding="utf-8")
    typer.echo(f"wrote {target}")


@app.command()
def backtest(
    start: Annotated[datetime, typer.Option(help="First step (UTC).")],
    end: Annotated[datetime, typer.Option(help="Last step (UTC).")],
    step: Annotated[str, typer.Option(help="Time between steps, e.g. 1h, 1d.")] = "1d",
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Replay monitoring over history as if scheduled; print anomalies as they would have fired."""
    from flows.pipeline import monitor_inputs, monitor_settings
    from transforms.monitor import backtest as run_backtest
    from warehouse.read import NoWarehouseError, open_reader

    settings = _settings()
    try:
        con = open_reader(settings.warehouse.read_path, settings.warehouse.path)
    except NoWarehouseError as exc:
        _fail(str(exc))
    try:
        inputs = monitor_inputs(con)
    finally:
        con.close()
    found = run_backtest(
        inputs.counts,
        inputs.tickets,
        inputs.changes,
        start=_utc(start),
        end=_utc(end),
        step=_parse_step(step),
        settings=monitor_settings(settings),
    )
    if as_json:
        _print_json(found.to_dicts())
    else:
        for row in found.iter_rows(named=True):
            typer.echo(
                f"{row['detected_at']:%Y-%m-%d %H:%M}  {row['topic']:<10} {row['ratio']:.1f}x  "
                f"{row['change_id'] or '-'}"
            )


@app.command()
def status() -> None:
    """Per source: cursor, last load, lag, records, quarantined; last runs; open anomalies."""
    import polars as pl

    from warehouse.read import NoWarehouseError, open_reader

    settings = _settings()
    try:
        con = open_reader(settings.warehouse.read_path, settings.warehouse.path)
    except NoWarehouseError as exc:
        _fail(str(exc))
    try:
        sources = con.sql(
            "SELECT s.source, s.stream, s.updated_at AS last_load, "
            "date_trunc('second', now() - s.updated_at)::VARCHAR AS since_last_load, "
            "(SELECT date_trunc('second', now() - max(t.created_at))::VARCHAR FROM core.tickets t "
            " WHERE t.source = s.source) AS newest_ticket_age, "
            "s.records_total AS records, "
            "(SELECT count(*) FROM meta.quarantine q WHERE q.source = s.source) AS quarantined, "
            "s.cursor::VARCHAR AS cursor "
            "FROM meta.sync_state s ORDER BY 1, 2"
        ).pl()
        runs = con.sql(
            "SELECT flow, max(finished_at) FILTER (status = 'completed') AS last_success, "
            "max(started_at) FILTER (status = 'failed') AS last_failure, "
            "count(*) FILTER (status = 'running') AS running "
            "FROM meta.runs GROUP BY flow ORDER BY flow"
        ).pl()
        open_ = con.sql(
            "SELECT alert_id, topic, started_at, round(ratio, 1) AS ratio, severity, status, "
            "change_id FROM marts.anomalies WHERE status <> 'resolved' ORDER BY started_at"
        ).pl()
    finally:
        con.close()
    with pl.Config(tbl_rows=100, tbl_cols=-1, fmt_str_lengths=60, tbl_width_chars=160):
        typer.echo("sources (lag: since the last load, and age of the newest ticket)")
        typer.echo(str(sources) if not sources.is_empty() else "  nothing loaded yet")
        typer.echo("runs")
        typer.echo(str(runs) if not runs.is_empty() else "  no runs recorded yet")
        typer.echo(f"open anomalies: {open_.height}")
        if not open_.is_empty():
            typer.echo(str(open_))


@app.command()
def topics() -> None:
    """Print the topic taxonomy in use as TOML, to paste under [labels] and edit."""
    import json as _json

    from flows.pipeline import topics_of

    settings = _settings()
    for topic in topics_of(settings):
        typer.echo("[[labels.topics]]")
        typer.echo(f"name = {_json.dumps(topic.name)}")
        typer.echo(f"description = {_json.dumps(topic.description, ensure_ascii=False)}")
        phrases = ", ".join(_json.dumps(p, ensure_ascii=False) for p in topic.phrases)
        typer.echo(f"phrases = [{phrases}]")
        typer.echo("")


sandbox_app = typer.Typer(help="Local stand-ins for helpdesk APIs (demos, tests).")
app.add_typer(sandbox_app, name="sandbox")


@sandbox_app.command("zendesk")
def sandbox_zendesk(
    csv_path: Annotated[
        Path, typer.Option("--from-csv", help="A ticket export, e.g. demo/data/tickets.csv.")
    ],
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    rate_per_minute: Annotated[
        int, typer.Option(help="Export requests a minute before it answers 429.")
    ] = 10,
    page_size: Annotated[int, typer.Option(help="Tickets per export page.")] = 1000,
) -> None:
    """Serve a file export through Zendesk's incremental-export API on loopback."""
    import csv
    import threading

    from connectors.sandbox import serve_zendesk, tickets_from_export_rows

    if not csv_path.is_file():
        _fail(f"{csv_path} not found")
    with csv_path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    server, url = serve_zendesk(
        tickets_from_export_rows(rows),
        host=host,
        port=port,
        rate_per_minute=rate_per_minute,
        page_size=page_size,
    )
    typer.echo(f"Zendesk sandbox: {len(rows)} tickets at {url} (Ctrl-C stops)")
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.close()


@app.command()
def demo(
    directory: Annotated[Path, typer.Option("--dir", help="Where to build the demo.")] = Path(
        "demo"
    ),
    volume: Annotated[float, typer.Option(help="Ticket volume multiplier.")] = 1.0,
    seed: Annotated[int, typer.Option(help="Random seed of the generator.")] = 7,
) -> None:
    """Generate the demo company, run the whole pipeline offline, print a summary."""
    import time

    from flows.demo import prepare_demo, zendesk_sandbox

    started = time.perf_counter()
    config = prepare_demo(directory, volume=volume, seed=seed)
    State.config = config
    _prefect_env()
    from flows.demo_smtp import environment, loopback_smtp
    from flows.flows import run_flow

    # The alerts go through a real SMTP server on loopback, as they would to
    # a company's relay, and stay in outbox/ too.
    # Reelbox's helpdesk is a Zendesk sandbox on loopback, read through the real connector.
    with (
        zendesk_sandbox(directory) as zendesk_url,
        loopback_smtp(directory / "smtp-received") as smtp,
        environment(smtp.env()),
    ):
        result = run_flow(config=str(config), show_progress=_tty())
        received = len(smtp.received)
    _print_summary(result, elapsed=time.perf_counter() - started, config=config)
    typer.echo(f"  Zendesk sandbox on loopback: {zendesk_url} (Zendesk connector, rate-limited)")
    typer.echo(f"  SMTP on loopback: {received} messages accepted -> {directory / 'smtp-received'}")


def _print_summary(
    result: dict[str, Any], *, elapsed: float | None = None, config: Path | None = None
) -> None:
    from warehouse.read import open_reader

    settings = load_settings(config or State.config)
    tables = result["ingest"]["tables"]
    typer.echo("")
    typer.echo("backlash run summary")
    for source in result["ingest"]["sources"]:
        typer.echo(
            f"  source {source['source']}: {source['records']} records read, "
            f"{source['tickets']} tickets loaded, {source['quarantined']} quarantined"
        )
    typer.echo(
        f"  warehouse: {tables['core.tickets']} tickets, {tables['core.ticket_labels']} labelled, "
        f"{tables['core.product_changes']} product changes"
    )
    con = open_reader(settings.warehouse.read_path, settings.warehouse.path)
    try:
        rows = con.sql(
            "SELECT started_at, topic, ratio, severity, status, change_id, change_title "
            "FROM marts.anomalies ORDER BY started_at"
        ).fetchall()
    finally:
        con.close()
    typer.echo(f"  anomalies: {len(rows)}")
    for started_at, topic, ratio, severity, status_, change_id, title in rows:
        cause = f"follows {change_id} ({title})" if change_id else "no product change found"
        typer.echo(
            f"    {started_at:%Y-%m-%d}  {topic:<9} {ratio:4.1f}x  severity {severity}  "
            f"{status_:<9} {cause}"
        )
    sent = result["monitor"]["deliveries"]
    copies = sum(d["channel"] == "outbox" and d["status"] == "sent" for d in sent)
    typer.echo(f"  alert emails written this run: {copies} -> {settings.alerts.outbox}")
    typer.echo(f'  query it: backlash --config {settings.config_path} sql "SELECT ..."')
    if elapsed is not None:
        typer.echo(f"  wall time: {elapsed:.1f} s")


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _parse_step(text: str) -> timedelta:
    units = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
    try:
        return timedelta(**{units[text[-1]]: float(text[:-1])})
    except (KeyError, ValueError):
        _fail(f"--step {text!r}: use a number and m, h, d or w (e.g. 1h)")
        raise


def main() -> None:
    try:
        app()
    except ConfigError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(2)
