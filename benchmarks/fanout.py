"""Several rate-limited helpdesk brands: sequential fetch vs ``--task-runner threads|dask``.

What it measures: the wall time of one real ``backlash ingest`` (CLI, Prefect,
warehouse writes included) over ``--brands`` Zendesk sources, each served by
its own local sandbox with an export limit of ``--rate`` requests a minute, as
Zendesk enforces per account. A sequential run waits on each brand's limit in
turn; a parallel one waits on them at once. Every run must land every ticket
exactly once (checked), into a fresh warehouse.

    .venv/bin/python benchmarks/fanout.py [--brands 3] [--tickets 1500] [--rate 60]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import duckdb

sys.path.insert(0, str(Path(__file__).resolve().parent))
from zendesk_sandbox import EMAIL, TOKEN, make_tickets

from connectors.sandbox import serve_zendesk

BACKLASH = Path(sys.executable).with_name("backlash")


def config_text(urls: list[str], rate: int) -> str:
    text = '[warehouse]\npath = "warehouse.duckdb"\n'
    for i, url in enumerate(urls):
        text += (
            f'\n[[sources]]\nname = "brand{i}"\nkind = "zendesk"\nbase_url = "{url}"\n'
            f'email = "{EMAIL}"\ntoken_env = "BENCH_ZENDESK_TOKEN"\ncomments = false\n'
            f'start_time = "2000-01-01T00:00:00Z"\nrate_per_minute = {rate}\n'
        )
    return text


def run(runner: str, *, brands: int, tickets: int, page_size: int, rate: int) -> dict[str, Any]:
    servers = [
        serve_zendesk(
            make_tickets(tickets, time.time()),
            rate_per_minute=rate,
            page_size=page_size,
            credentials=(EMAIL, TOKEN),
        )
        for _ in range(brands)
    ]
    try:
        with tempfile.TemporaryDirectory(prefix="backlash-fanout-") as work:
            config = Path(work) / "backlash.toml"
            config.write_text(config_text([url for _, url in servers], rate), encoding="utf-8")
            env = {**os.environ, "BENCH_ZENDESK_TOKEN": TOKEN, "CI": "1"}
            cmd = [str(BACKLASH), "--config", str(config), "ingest", "--task-runner", runner]
            started = time.perf_counter()
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
            elapsed = time.perf_counter() - started
            if done.returncode != 0:
                raise SystemExit(f"{runner}: exit {done.returncode}\n{done.stderr[-3000:]}")
            con = duckdb.connect(str(Path(work) / "warehouse.duckdb"), read_only=True)
            try:
                rows, distinct = con.sql(
                    "SELECT count(*), count(DISTINCT (source, source_id)) FROM core.tickets"
                ).fetchall()[0]
            finally:
                con.close()
    finally:
        for server, _ in servers:
            server.close()
    return {
        "runner": runner,
        "brands": brands,
        "tickets_per_brand": tickets,
        "export_limit_per_minute": rate,
        "wall_s": round(elapsed, 1),
        "tickets": rows,
        "complete": rows == distinct == brands * tickets,
        "server_429s": sum(server.state.rate_limited for server, _ in servers),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--brands", type=int, default=3)
    parser.add_argument("--tickets", type=int, default=1500)
    parser.add_argument("--page-size", type=int, default=100)
    parser.add_argument("--rate", type=int, default=60, help="export requests a minute per brand")
    parser.add_argument("--runners", default="sequential,threads,dask")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    results = [
        run(r, brands=args.brands, tickets=args.tickets, page_size=args.page_size, rate=args.rate)
        for r in args.runners.split(",")
    ]
    print(json.dumps({"load_average_1m_before": round(load, 1), "runs": results}, indent=2))


if __name__ == "__main__":
    main()
