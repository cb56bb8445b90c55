"""Analysts query while the loader writes: zero failed queries, zero failed loads.

A separate process ingests rounds of new tickets, publishing the read snapshot
after each; this process runs ``backlash sql`` in a loop meanwhile.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.cli import app

pytestmark = pytest.mark.slow

ROUNDS = 6
PER_ROUND = 20_000

WRITER = textwrap.dedent(
    """
    import csv, sys
    from datetime import UTC, datetime, timedelta
    from pathlib import Path
    from flows.config import load_settings
    from flows import pipeline
    from warehouse.db import connect
    from warehouse.snapshot import publish_snapshot

    config, rounds, per_round = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    settings = load_settings(config)
    export = settings.sources[0].path
    start = datetime(2025, 1, 1, tzinfo=UTC)
    con = connect(settings.warehouse.path)
    publish_snapshot(con, settings.warehouse.read_path)
    print("ready", flush=True)
    for r in range(rounds):
        with export.open("a", newline="") as handle:
            w = csv.writer(handle)
            for i in range(per_round):
                n = r * per_round + i
                ts = (start + timedelta(minutes=n)).strftime("%Y-%m-%dT%H:%M:%SZ")
                w.writerow([n, ts, "My bill went up", "The price is too high, I am upset",
                            "email", f"user{n % 997}@example.com", "billing", "open"])
        now = start + timedelta(days=365 * 3)
        stats = pipeline.ingest_source(con, settings, "support", now=now)
        pipeline.refresh(con, stats.since)
        publish_snapshot(con, settings.warehouse.read_path)
        print("round", r, stats.tickets, flush=True)
    con.close()
    """
)


def test_sql_loop_never_fails_while_another_process_loads(tmp_path: Path) -> None:
    export = tmp_path / "tickets.csv"
    with export.open("w", newline="") as handle:
        csv.writer(handle).writerow(
            ["id", "created_at", "subject", "body", "channel", "requester", "tags", "status"]
        )
    config = tmp_path / "backlash.toml"
    config.write_text(
        '[warehouse]\npath = "w.duckdb"\n[[sources]]\nname = "support"\nkind = "file"\n'
        'path = "tickets.csv"\nbatch_size = 5000\n',
        encoding="utf-8",
    )
    script = tmp_path / "writer.py"
    script.write_text(WRITER, encoding="utf-8")
    writer = subprocess.Popen(
        [sys.executable, str(script), str(config), str(ROUNDS), str(PER_ROUND)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert writer.stdout is not None
    assert writer.stdout.readline().strip() == "ready"
    runner = CliRunner()
    queries, failures, seen = 0, [], []
    started = time.monotonic()
    while writer.poll() is None and time.monotonic() - started < 600:
        result = runner.invoke(
            app,
            [
                "--config",
                str(config),
                "sql",
                "--format",
                "json",
                "SELECT count(*) AS n FROM core.tickets",
            ],
        )
        queries += 1
        if result.exit_code != 0:
            failures.append(result.output)
        else:
            seen.append(json.loads(result.output)[0]["n"])
    out, err = writer.communicate(timeout=60)
    assert writer.returncode == 0, err
    assert failures == []
    assert queries >= 50, f"only {queries} queries ran during the load"
    # The readers saw the loads progress, never a count going backwards.
    assert seen == sorted(seen)
    assert seen[-1] > 0
    assert out.count("round") == ROUNDS
