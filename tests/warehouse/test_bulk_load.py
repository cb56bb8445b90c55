"""Bulk loads checkpoint every few batches, then leave the database as they found it."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from warehouse.db import bulk_load, connect, transaction


def _threshold(con: duckdb.DuckDBPyConnection) -> str:
    row = con.execute("SELECT current_setting('checkpoint_threshold')").fetchone()
    return str(row[0])


def test_batches_share_a_checkpoint_and_the_setting_is_restored(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    con = connect(path)
    wal = path.with_name(path.name + ".wal")
    before = _threshold(con)
    con.execute("CREATE TABLE core.t (k INTEGER, text VARCHAR)")
    with bulk_load(con, "1GB"):
        assert _threshold(con) != before
        for batch in range(3):
            with transaction(con):
                con.execute(
                    "INSERT INTO core.t SELECT range, repeat('x', 500) FROM range(?, ?)",
                    [batch * 50_000, (batch + 1) * 50_000],
                )
        # ~75 MB committed: with the default 16 MB threshold it would have been
        # checkpointed by now; here it waits in the write-ahead log.
        assert wal.exists()
        assert wal.stat().st_size > 16 * 2**20
    # The loop ends with a checkpoint: the log is folded into the file.
    assert not wal.exists() or wal.stat().st_size < 2**20
    assert _threshold(con) == before
    assert con.execute("SELECT count(*) FROM core.t").fetchone() == (150_000,)


def test_a_failed_loop_restores_the_setting_and_keeps_committed_batches(tmp_path: Path) -> None:
    con = connect(tmp_path / "w.duckdb")
    before = _threshold(con)
    con.execute("CREATE TABLE core.t (k INTEGER)")

    def load() -> None:
        with bulk_load(con):
            with transaction(con):
                con.execute("INSERT INTO core.t VALUES (1)")
            with transaction(con):
                con.execute("INSERT INTO core.t VALUES (2)")
                raise RuntimeError("batch failed")

    with pytest.raises(RuntimeError, match="batch failed"):
        load()
    assert _threshold(con) == before
    assert con.execute("SELECT list(k) FROM core.t").fetchone() == ([1],)
