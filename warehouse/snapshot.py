"""A read-only copy of the warehouse, published atomically after each load.

DuckDB lets one process hold a file for writing, and while it does no other
process can open it, even read-only (PITFALLS.md). So the flows write the main
file and, after each load, copy it to ``<name>.read.duckdb`` through a temp
file and ``os.replace``: an analyst's query either sees the previous snapshot
or the new one, never a half-written one, and never blocks the loader.
"""

from __future__ import annotations

import os
from pathlib import Path

import duckdb


def publish_snapshot(con: duckdb.DuckDBPyConnection, target: Path) -> Path:
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    row = con.execute("SELECT current_database()").fetchone()
    assert row is not None
    source_db = row[0]
    con.execute(f"ATTACH '{_sql_path(tmp)}' AS backlash_snapshot")
    try:
        con.execute(f'COPY FROM DATABASE "{source_db}" TO backlash_snapshot')
    finally:
        con.execute("DETACH backlash_snapshot")
    os.replace(tmp, target)
    return target


def _sql_path(path: Path) -> str:
    # ATTACH takes no bound parameters; the path is ours, but quote it anyway.
    return str(path).replace("'", "''")
