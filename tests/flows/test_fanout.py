"""Fetching sources in parallel workers while one process writes (``--task-runner``).

The spool is tested on its own (pages survive the round trip, a retried worker
resumes after its last page, the writer can read while the worker writes);
then the real ingest flow runs on a small demo company with a file and a
mailbox source through Dask worker processes and through threads, and must
leave exactly the warehouse a sequential run leaves.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest

from connectors.base import Page
from flows import fanout
from flows.demo_company import SUPPORT_DOMAIN, generate

NOW = datetime(2024, 12, 27, tzinfo=UTC)


def _pages(n: int, stream: str = "s") -> list[Page]:
    return [
        Page(
            stream,
            [{"id": i, "text": f"ticket {i} é"}, b"From: a@b\r\n\r\nraw \xff bytes"],
            [str(i), f"m{i}"],
            {"after": i},
            [(f"bad{i}", "unreadable created_at", '{"id": "x"}')] if i % 2 else [],
            n,
        )
        for i in range(n)
    ]


def test_spooled_pages_come_back_identical_and_in_order(tmp_path: Path) -> None:
    pages = _pages(5)
    assert fanout.spool_pages(pages, tmp_path, {"other": {"x": 1}}) == 5
    back = list(fanout.tail_spool(tmp_path, lambda: True))
    assert back == pages
    # Consumed pages are gone; the state says where a retry resumes.
    assert sorted(p.name for p in tmp_path.iterdir()) == [fanout.STATE_FILE]
    assert fanout.read_spool_state(tmp_path) == ({"other": {"x": 1}, "s": {"after": 4}}, 5)


def test_a_retried_worker_continues_the_numbering(tmp_path: Path) -> None:
    fanout.spool_pages(_pages(2), tmp_path, {})
    state, first = fanout.read_spool_state(tmp_path) or ({}, 0)
    more = _pages(4)[2:]
    assert fanout.spool_pages(more, tmp_path, state, first) == 2
    assert [p.cursor for p in fanout.tail_spool(tmp_path, lambda: True)] == [
        {"after": i} for i in range(4)
    ]


def test_the_writer_reads_pages_while_the_worker_is_still_writing(tmp_path: Path) -> None:
    done = threading.Event()
    pages = _pages(6)

    def worker() -> None:
        for page in pages:
            fanout.spool_pages([page], tmp_path, {}, int(page.cursor["after"]))
            time.sleep(0.05)
        done.set()

    thread = threading.Thread(target=worker)
    thread.start()
    seen: list[Page] = []
    first_seen_while_writing = False
    for page in fanout.tail_spool(tmp_path, done.is_set, poll_seconds=0.01):
        first_seen_while_writing = first_seen_while_writing or not done.is_set()
        seen.append(page)
    thread.join()
    assert seen == pages
    assert first_seen_while_writing


def test_an_unknown_task_runner_is_a_clear_error() -> None:
    from flows.config import ConfigError
    from flows.flows import task_runner

    with pytest.raises(ConfigError, match="sequential, threads, dask"):
        task_runner("ray", 2)


CONFIG = f"""\
[warehouse]
path = "warehouse.duckdb"

[[sources]]
name = "support"
kind = "file"
path = "data/tickets.csv"
batch_size = 500

[[sources]]
name = "mail"
kind = "mbox"
path = "data/support.mbox"
batch_size = 40
support_addresses = ["{SUPPORT_DOMAIN}"]

[changes]
path = "data/changes.yaml"
"""
BROKEN = """
[[sources]]
name = "lost"
kind = "file"
path = "data/no-such-export.csv"
"""
TABLES = (
    "core.tickets",
    "core.messages",
    "core.ticket_labels",
    "marts.complaints_daily",
    "meta.sync_state",
    "meta.quarantine",
)
COLUMNS = {
    "core.tickets": "source, source_id, updated_at, subject, body, channel",
    "core.messages": "message_key, ticket_key, created_at",
    "core.ticket_labels": "ticket_key, is_complaint, topics",
    "marts.complaints_daily": "*",
    "meta.sync_state": "source, stream, cursor",
    "meta.quarantine": "source, record_id, reason",
}


@pytest.fixture(scope="module")
def company(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("fanout")
    generate(directory / "data", seed=11, start=date(2024, 11, 1), days=40, volume=0.2)
    return directory / "data"


def _warehouse(root: Path, data: Path, extra: str = "") -> Path:
    root.mkdir()
    (root / "data").symlink_to(data)
    config = root / "backlash.toml"
    config.write_text(CONFIG + extra, encoding="utf-8")
    return config


def _contents(path: Path) -> dict[str, Any]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return {
            table: con.sql(f"SELECT {COLUMNS[table]} FROM {table} ORDER BY ALL").fetchall()
            for table in TABLES
        }
    finally:
        con.close()


@pytest.mark.slow
@pytest.mark.prefect
@pytest.mark.parametrize("kind", ["dask", "threads"])
def test_parallel_fetch_leaves_the_warehouse_a_sequential_run_leaves(
    company: Path, tmp_path: Path, prefect_harness: None, kind: str
) -> None:
    from flows.flows import ingest_flow, ingest_with, task_runner

    sequential = _warehouse(tmp_path / "sequential", company)
    ingest_flow(config=str(sequential), now=NOW)
    parallel = _warehouse(tmp_path / "parallel", company)
    result = ingest_with(task_runner(kind, 2))(config=str(parallel), now=NOW, fan_out=True)

    expected = _contents(sequential.parent / "warehouse.duckdb")
    assert len(expected["core.tickets"]) > 500
    assert any(row[0] == "mail" for row in expected["core.tickets"])
    assert _contents(parallel.parent / "warehouse.duckdb") == expected
    assert {s["source"]: s["records"] > 0 for s in result["sources"]} == {
        "support": True,
        "mail": True,
    }
    assert not fanout.spool_root(parallel.parent / "warehouse.duckdb").exists()

    # A second parallel run fetches nothing new and changes nothing.
    again = ingest_with(task_runner(kind, 2))(config=str(parallel), now=NOW, fan_out=True)
    assert all(s["tickets"] == 0 for s in again["sources"])
    assert _contents(parallel.parent / "warehouse.duckdb") == expected


@pytest.mark.slow
@pytest.mark.prefect
def test_a_failing_source_does_not_stop_the_others_and_fails_the_run(
    company: Path, tmp_path: Path, prefect_harness: None
) -> None:
    from flows.flows import ingest_with, task_runner

    config = _warehouse(tmp_path / "broken", company, BROKEN)
    with pytest.raises(RuntimeError, match=r"fetching failed for lost: .*no-such-export"):
        ingest_with(task_runner("threads", 3))(config=str(config), now=NOW, fan_out=True)
    con = duckdb.connect(str(config.parent / "warehouse.duckdb"), read_only=True)
    try:
        by_source = dict(
            con.sql("SELECT source, count(*) FROM core.tickets GROUP BY ALL").fetchall()
        )
        runs = con.sql("SELECT status FROM meta.runs").fetchall()
    finally:
        con.close()
    assert by_source.keys() == {"support", "mail"}
    assert runs == [("failed",)]
