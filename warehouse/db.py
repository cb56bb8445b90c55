"""Opening the warehouse and bringing its schema up to date.

Migrations are plain numbered SQL files (``migrations/NNN_name.sql``) applied
in order, each in its own transaction together with its row in
``meta.schema_version``: a crash mid-migration leaves the previous version,
never half of one.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import duckdb

MIGRATION_NAME = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")


class WarehouseError(RuntimeError):
    """The warehouse file cannot be used; the message says what to do."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations() -> list[Migration]:
    found: list[Migration] = []
    for entry in resources.files("warehouse").joinpath("migrations").iterdir():
        match = MIGRATION_NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise WarehouseError(f"migrations must be numbered 001.. without gaps, found {versions}")
    return found


def migrate(con: duckdb.DuckDBPyConnection) -> list[int]:
    """Apply pending migrations; return the versions applied now."""
    con.execute("CREATE SCHEMA IF NOT EXISTS meta")
    con.execute(
        "CREATE TABLE IF NOT EXISTS meta.schema_version ("
        " version INTEGER PRIMARY KEY, name VARCHAR NOT NULL,"
        " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
    )
    applied = {row[0] for row in con.execute("SELECT version FROM meta.schema_version").fetchall()}
    done: list[int] = []
    for migration in migrations():
        if migration.version in applied:
            continue
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute(migration.sql)
            con.execute(
                "INSERT INTO meta.schema_version (version, name) VALUES (?, ?)",
                [migration.version, migration.name],
            )
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise
        done.append(migration.version)
    return done


def connect(path: Path) -> duckdb.DuckDBPyConnection:
    """Open the warehouse for writing and migrate it.

    Only one process may hold the file for writing (DuckDB's lock); the error
    says so instead of DuckDB's bare IO message.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        con = duckdb.connect(str(path))
    except duckdb.IOException as exc:
        if "lock" in str(exc).lower():
            raise WarehouseError(
                f"{path} is in use by another process (DuckDB allows one writer). "
                "Analysts should query the published snapshot (backlash sql does); "
                "wait for the running flow to finish and retry."
            ) from exc
        raise
    con.execute("SET TimeZone = 'UTC'")
    migrate(con)
    return con


# Write-ahead log size that triggers a checkpoint during bulk loads (DuckDB's
# default, 16 MB, checkpoints after every 50k-ticket batch).
BULK_CHECKPOINT_THRESHOLD = "1GB"


@contextmanager
def bulk_load(
    con: duckdb.DuckDBPyConnection, checkpoint_threshold: str = BULK_CHECKPOINT_THRESHOLD
) -> Iterator[duckdb.DuckDBPyConnection]:
    """Let a loop of many batch transactions checkpoint every few batches, not each one.

    With DuckDB's 16 MB default every 50k-ticket commit (~200 MB of WAL) also
    checkpointed: at 100k tickets that was 4.4 s of a 5.6 s commit time, and a
    checkpoint rewrites the primary-key index, whose size grows with the
    warehouse. A larger threshold lets several batches share one checkpoint;
    the WAL stays bounded (a crash replays at most that much), each batch is
    still its own durable transaction, and the loop ends with a checkpoint so
    readers and the next run start from a compact file. The setting is global
    to the database, so it is restored afterwards.
    """
    row = con.execute("SELECT current_setting('checkpoint_threshold')").fetchone()
    previous = str(row[0]) if row else "16.0 MiB"
    con.execute("SET checkpoint_threshold = ?", [checkpoint_threshold])
    try:
        yield con
        con.execute("CHECKPOINT")
    finally:
        con.execute("SET checkpoint_threshold = ?", [previous])


@contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    con.execute("BEGIN TRANSACTION")
    try:
        yield con
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")
