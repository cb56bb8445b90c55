"""Analysts query while the loader writes, at scale: 1M tickets, queries in a loop.

One process ingests ``--tickets`` tickets in ``--rounds`` file exports through
the real pipeline (land raw, normalise, validate, label, upsert, marts, publish
the read snapshot after each round); this process meanwhile runs
``backlash sql`` (the Typer command, in-process) in a loop against the same
config. Reports queries run, failed queries, failed loads, and latencies.

    .venv/bin/python benchmarks/concurrent_sql.py --tickets 1000000 --rounds 10
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from typer.testing import CliRunner

from flows.cli import app

WRITER = textwrap.dedent(
    """
    import csv, sys, time
    from datetime import UTC, datetime, timedelta
    from pathlib import Path
    from flows.config import load_settings
    from flows import pipeline
    from warehouse.db import connect
    from warehouse.snapshot import publish_snapshot

    config, rounds, per_round = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    settings = load_settings(config)
    export = settings.sources[0].path
    start = datetime(2024, 1, 1, tzinfo=UTC)
    subjects = ["My bill went up again", "How do I add a profile?", "Video keeps buffering",
                "Where is my DVD?", "Love the new app", "Cannot log in since yesterday"]
    bodies = ["You raised the price again and I am thinking of cancelling. " * 3,
              "Could you tell me where the setting is? Thanks a lot. " * 3,
              "Every evening the stream stops and spins for minutes. " * 3,
              "The disc never arrived and the queue shows it shipped. " * 3,
              "Just wanted to say the new version is great, keep it up. " * 3,
              "The password reset mail never comes, I tried five times. " * 3]
    con = connect(settings.warehouse.path)
    publish_snapshot(con, settings.warehouse.read_path)
    print("ready", flush=True)
    for r in range(rounds):
        with export.open("a", newline="") as handle:
            w = csv.writer(handle)
            for i in range(per_round):
                n = r * per_round + i
                ts = (start + timedelta(seconds=30 * n)).strftime("%Y-%m-%dT%H:%M:%SZ")
                k = n % 6
                w.writerow([n, ts, subjects[k], bodies[k], "email",
                            f"user{n % 99991}@example.com", "support", "open"])
        t0 = time.perf_counter()
        now = start + timedelta(days=3650)
        stats = pipeline.ingest_source(con, settings, "support", now=now)
        pipeline.refresh(con, stats.since)
        t1 = time.perf_counter()
        publish_snapshot(con, settings.warehouse.read_path)
        t2 = time.perf_counter()
        print(json.dumps({"round": r, "tickets": stats.tickets, "load_s": t1 - t0,
                          "publish_s": t2 - t1}), flush=True)
    con.close()
    """
).replace("import csv, sys, time", "import csv, json, sys, time")

QUERIES = [
    "SELECT count(*) AS n FROM core.tickets",
    "SELECT topic, sum(complaints) AS c FROM marts.complaints_daily WHERE channel = '*' "
    "GROUP BY topic ORDER BY c DESC",
    "SELECT * FROM marts.tickets_labelled WHERE cancel_intent LIMIT 20",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tickets", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    per_round = args.tickets // args.rounds
    work = Path(tempfile.mkdtemp(prefix="backlash-concurrency-"))
    export = work / "tickets.csv"
    with export.open("w", newline="") as handle:
        csv.writer(handle).writerow(
            ["id", "created_at", "subject", "body", "channel", "requester", "tags", "status"]
        )
    config = work / "backlash.toml"
    config.write_text(
        '[warehouse]\npath = "w.duckdb"\n[[sources]]\nname = "support"\nkind = "file"\n'
        'path = "tickets.csv"\nbatch_size = 50000\n',
        encoding="utf-8",
    )
    script = work / "writer.py"
    script.write_text(WRITER, encoding="utf-8")
    env = {**os.environ, "GX_ANALYTICS_ENABLED": "false"}
    writer = subprocess.Popen(
        [sys.executable, str(script), str(config), str(args.rounds), str(per_round)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert writer.stdout is not None
    assert writer.stdout.readline().strip() == "ready"
    runner = CliRunner()
    latencies: list[float] = []
    failures: list[str] = []
    started = time.perf_counter()
    i = 0
    while writer.poll() is None:
        t0 = time.perf_counter()
        result = runner.invoke(
            app, ["--config", str(config), "sql", "--format", "json", QUERIES[i % len(QUERIES)]]
        )
        latencies.append(time.perf_counter() - t0)
        if result.exit_code != 0:
            failures.append(result.output[-300:])
        i += 1
    elapsed = time.perf_counter() - started
    rounds = [json.loads(line) for line in writer.stdout if line.startswith("{")]
    loaded = sum(r["tickets"] for r in rounds)
    report = {
        "tickets_loaded": loaded,
        "rounds": len(rounds),
        "failed_loads": 0 if writer.returncode == 0 and len(rounds) == args.rounds else 1,
        "writer_exit": writer.returncode,
        "queries": len(latencies),
        "failed_queries": len(failures),
        "wall_s": round(elapsed, 1),
        "query_p50_ms": round(statistics.median(latencies) * 1000, 1),
        "query_p99_ms": round(sorted(latencies)[int(len(latencies) * 0.99) - 1] * 1000, 1),
        "load_s_per_round": round(statistics.mean(r["load_s"] for r in rounds), 2),
        "publish_s_per_round": round(statistics.mean(r["publish_s"] for r in rounds), 2),
        "warehouse_mb": round((work / "w.duckdb").stat().st_size / 1e6, 1),
        "loadavg": os.getloadavg(),
    }
    print(json.dumps(report, indent=2))
    if failures:
        print("first failure:", failures[0], file=sys.stderr)


if __name__ == "__main__":
    main()
