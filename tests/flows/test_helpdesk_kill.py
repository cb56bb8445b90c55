"""SIGKILL the real ``backlash ingest`` mid-run against a slow Zendesk, then run it again.

The claim under test is the one the whole helpdesk path rests on: each page's
raw records, normalised rows and cursor commit together, so a process killed
at any instant resumes from its last committed page and ends with exactly the
warehouse an uninterrupted run builds. Everything is real: the CLI in a
subprocess (its own Prefect ephemeral server included), the sandbox Zendesk on
loopback serving a few thousand tickets a page at a time, DuckDB files on disk
(the killed run's write-ahead log is replayed by the next open).

The kill comes once the server has answered ``KILL_AFTER_EXPORT_PAGES`` export
requests: by then the tickets of the pages before the previous one are
committed (the loop commits each stream's batch before it asks for the next
export page), and the rest of the run is still to come.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest

from connectors.sandbox import SandboxServer, serve_zendesk

pytestmark = pytest.mark.slow

TICKETS = 2_000
PAGE_SIZE = 100
EXPORT_DELAY = 0.3  # seconds per export answer: ~6 s of export in a 20-page run
KILL_AFTER_EXPORT_PAGES = 8
TOKEN = "zd-kill-test-token-4f9c1e"
NOW = datetime.now(UTC).replace(microsecond=0)
START = NOW - timedelta(days=20)
BACKLASH = Path(sys.executable).with_name("backlash")


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def helpdesk(n: int) -> tuple[list[dict[str, Any]], dict[int, list[dict[str, Any]]], list[Any]]:
    """Tickets shaped like the export's, with what a live account has: deleted
    tickets, several comments, custom fields (a multi-select among them),
    satisfaction ratings, sideloaded users and organizations."""
    subjects = [
        ("My bill went up again", "You raised the price and I am cancelling my plan."),
        ("Where is the offline mode?", "The download button is gone since the update."),
        ("Add a profile", "How do I add a profile for my daughter?"),
    ]
    tickets: list[dict[str, Any]] = []
    comments: dict[int, list[dict[str, Any]]] = {}
    for i in range(1, n + 1):
        created = START + timedelta(minutes=7 * i)
        updated = created + timedelta(hours=2)
        subject, body = subjects[i % 3]
        rating: dict[str, Any] = (
            {"id": 900_000 + i, "score": "bad" if i % 3 == 1 else "good", "comment": "meh"}
            if i % 5 == 0
            else {"score": "unoffered"}
        )
        tickets.append(
            {
                "id": i,
                "created_at": _iso(created),
                "updated_at": _iso(updated),
                "generated_timestamp": int(updated.timestamp()),
                "subject": f"{subject} #{i}",
                "raw_subject": f"{subject} #{i}",
                "description": body,
                "status": "deleted" if i % 97 == 0 else ("solved" if i % 4 == 0 else "open"),
                "priority": "normal",
                "requester_id": 10_000 + i % 300,
                "submitter_id": 10_000 + i % 300,
                "organization_id": 70 + i % 4,
                "tags": ["pricing"] if i % 3 == 1 else ["product"],
                "via": {"channel": "email" if i % 2 else "web", "source": {}},
                "custom_fields": [
                    {"id": 360_001, "value": ["basic", "standard", "premium"][i % 3]},
                    {"id": 360_002, "value": ["tv", "mobile"] if i % 2 else None},
                    {"id": 360_003, "value": i % 7 == 0},
                ],
                "satisfaction_rating": rating,
            }
        )
        if i % 10 == 0:
            comments[i] = [
                {
                    "id": i * 1000 + k,
                    "type": "Comment",
                    "author_id": 10_000 + i % 300 if k == 1 else 42,
                    "body": body if k == 1 else "We are looking into it.",
                    "plain_body": body if k == 1 else "We are looking into it.",
                    "public": True,
                    "via": {"channel": "web"},
                    "created_at": _iso(created + timedelta(minutes=k)),
                }
                for k in (1, 2)
            ]
    users = [
        {"id": 10_000 + u, "name": f"Customer {u}", "email": f"c{u}@example.com"}
        for u in range(300)
    ]
    organizations = [{"id": 70 + o, "name": f"Org {o}"} for o in range(4)]
    return tickets, comments, [users, organizations]


@pytest.fixture
def slow_zendesk() -> Iterator[SandboxServer]:
    tickets, comments, (users, organizations) = helpdesk(TICKETS)
    server, _ = serve_zendesk(
        tickets,
        rate_per_minute=None,
        page_size=PAGE_SIZE,
        comments=comments,
        users=users,
        organizations=organizations,
        credentials=("ops@example.com", TOKEN),
        export_delay=EXPORT_DELAY,
        # Served for when the ingest loop lands the field dictionary too: every
        # core table is compared below, whichever the loop fills.
        ticket_fields=[
            {"id": 360_001, "type": "tagger", "title": "Plan", "active": True},
            {"id": 360_002, "type": "multiselect", "title": "Devices", "active": True},
            {"id": 360_003, "type": "checkbox", "title": "VIP", "active": True},
        ],
    )
    try:
        yield server
    finally:
        server.close()


def write_config(folder: Path, server: SandboxServer) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    host, port = server.server_address[:2]
    path = folder / "backlash.toml"
    path.write_text(
        '[warehouse]\npath = "w.duckdb"\n\n'
        '[[sources]]\nname = "support"\nkind = "zendesk"\n'
        f'base_url = "http://{host}:{port}"\nemail = "ops@example.com"\n'
        'token_env = "KILL_TEST_ZENDESK_TOKEN"\n'
        f'start_time = "{_iso(START - timedelta(days=1))}"\n'
        "comments = true\nrate_per_minute = 100000\napi_rate_per_minute = 1000000\n",
        encoding="utf-8",
    )
    return path


def start_ingest(config: Path, prefect_home: Path) -> subprocess.Popen[bytes]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("PREFECT_") and not k.startswith("BACKLASH_")
    }
    env.update(
        KILL_TEST_ZENDESK_TOKEN=TOKEN,
        PREFECT_HOME=str(prefect_home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="180",
        PREFECT_LOGGING_LEVEL="WARNING",
        GX_ANALYTICS_ENABLED="false",
    )
    # A session of its own: the kill reaches the ephemeral Prefect server it starts too.
    return subprocess.Popen(
        [
            str(BACKLASH),
            "--config",
            str(config),
            "ingest",
            "--now",
            NOW.strftime("%Y-%m-%d %H:%M:%S"),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def finish(process: subprocess.Popen[bytes], timeout: float = 300) -> str:
    try:
        out, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, _ = process.communicate()
        pytest.fail(f"ingest did not finish in {timeout} s:\n{out.decode(errors='replace')}")
    text = out.decode(errors="replace")
    assert process.returncode == 0, text
    return text


def kill_when(process: subprocess.Popen[bytes], server: SandboxServer, pages: int) -> None:
    deadline = time.monotonic() + 240
    while server.state.export_requests < pages:
        if process.poll() is not None:
            out = process.stdout.read().decode(errors="replace") if process.stdout else ""
            pytest.fail(f"ingest ended before it could be killed:\n{out}")
        if time.monotonic() > deadline:
            break
        time.sleep(0.01)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    if process.stdout:
        process.stdout.close()


def snapshot(path: Path) -> dict[str, Any]:
    """What must be equal: every core table's rows, raw versions, quarantine, cursors."""
    con = duckdb.connect(str(path), read_only=True)
    try:
        core = [
            name
            for (name,) in con.execute(
                "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'core' ORDER BY 1"
            ).fetchall()
        ]
        out: dict[str, Any] = {
            f"core.{name}": sorted(con.execute(f"SELECT * FROM core.{name}").fetchall(), key=repr)
            for name in core
        }
        out["raw versions"] = sorted(
            con.execute(
                "SELECT stream, record_id, json_extract_string(payload, '$.updated_at') AS v, "
                "count(*) FROM raw.support_records GROUP BY ALL"
            ).fetchall(),
            key=repr,
        )
        out["quarantine"] = sorted(
            con.execute("SELECT source, record_id, reason FROM meta.quarantine").fetchall()
        )
        out["cursors"] = sorted(
            (stream, json.loads(cursor))
            for stream, cursor in con.execute(
                "SELECT stream, cursor FROM meta.sync_state WHERE source = 'support'"
            ).fetchall()
        )
        return out
    finally:
        con.close()


def count(path: Path, sql: str) -> int:
    con = duckdb.connect(str(path), read_only=True)
    try:
        row = con.execute(sql).fetchone()
        return int(row[0]) if row else 0
    finally:
        con.close()


def test_sigkill_mid_run_then_rerun_equals_an_uninterrupted_run(
    tmp_path: Path, slow_zendesk: SandboxServer
) -> None:
    server = slow_zendesk
    prefect_home = tmp_path / "prefect"

    killed = write_config(tmp_path / "killed", server)
    kill_when(start_ingest(killed, prefect_home), server, KILL_AFTER_EXPORT_PAGES)
    warehouse = killed.parent / "w.duckdb"
    committed = count(warehouse, "SELECT count(*) FROM core.tickets")
    # Killed mid-run: some pages committed, far from all.
    assert 0 < committed < TICKETS
    assert count(warehouse, "SELECT count(*) FROM meta.sync_state WHERE stream = 'tickets'") == 1
    served_before = server.state.export_requests

    resumed_log = finish(start_ingest(killed, prefect_home))
    # It resumed from the committed cursor instead of starting over.
    resumed_requests = server.state.export_requests - served_before
    assert resumed_requests < TICKETS // PAGE_SIZE

    fresh = write_config(tmp_path / "fresh", server)
    fresh_log = finish(start_ingest(fresh, prefect_home))

    interrupted, uninterrupted = snapshot(warehouse), snapshot(fresh.parent / "w.duckdb")
    assert len(uninterrupted["core.tickets"]) == TICKETS
    tickets, comments, _ = helpdesk(TICKETS)
    alive = [t["id"] for t in tickets if t["status"] != "deleted"]
    assert len(uninterrupted["core.messages"]) == sum(len(comments.get(i, [0])) for i in alive)
    for name, rows in uninterrupted.items():
        assert interrupted[name] == rows, name
    # Every raw version landed once, killed or not.
    assert {row[3] for row in interrupted["raw versions"]} == {1}
    assert TOKEN not in resumed_log
    assert TOKEN not in fresh_log
