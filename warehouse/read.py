"""Read-only access for analysts and for commands that need no orchestration.

Readers open the published snapshot (see ``warehouse.snapshot``), falling back
to the main file when none was published yet. Statements are checked before
they run: only queries pass, so ``backlash sql`` can never change the
warehouse, whatever file it happens to open.
"""

from __future__ import annotations

import time
from pathlib import Path

import duckdb
import polars as pl

READ_STATEMENTS = {
    duckdb.StatementType.SELECT,
    duckdb.StatementType.EXPLAIN,
    duckdb.StatementType.PRAGMA,
}


class ReadOnlyError(ValueError):
    """A statement that would write was refused."""


class NoWarehouseError(FileNotFoundError):
    """Nothing has been loaded yet."""


def check_read_only(sql: str) -> None:
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.ParserException:
        raise  # a syntax error is the analyst's to see, unchanged
    if not statements:
        raise ReadOnlyError("no SQL statement given")
    for statement in statements:
        if statement.type not in READ_STATEMENTS:
            kind = statement.type.name
            raise ReadOnlyError(
                f"refused: {kind} statements are not allowed; backlash sql is read-only "
                "(the flows own all writes). Use SELECT, DESCRIBE, SHOW, SUMMARIZE or EXPLAIN."
            )


def open_reader(
    read_path: Path, main_path: Path, *, attempts: int = 20, wait: float = 0.25
) -> duckdb.DuckDBPyConnection:
    """Open the snapshot read-only; retry briefly if the main file is locked."""
    candidates = [read_path] if read_path.exists() else [main_path]
    if not candidates[0].exists():
        raise NoWarehouseError(
            f"no warehouse at {main_path} yet: run `backlash ingest` (or `make demo`) first"
        )
    last: Exception | None = None
    for _ in range(attempts):
        try:
            con = duckdb.connect(str(candidates[0]), read_only=True)
            con.execute("SET TimeZone = 'UTC'")
            return con
        except duckdb.IOException as exc:  # the writer holds the main file
            last = exc
            time.sleep(wait)
    raise NoWarehouseError(
        f"{candidates[0]} is locked by a running flow and no snapshot exists yet; "
        "retry when the first load has finished"
    ) from last


def query(con: duckdb.DuckDBPyConnection, sql: str) -> pl.DataFrame:
    check_read_only(sql)
    return con.sql(sql).pl()
