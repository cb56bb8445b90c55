"""File exports (CSV, JSONL, Parquet) as pages of raw rows with a cursor.

Helpdesk exports are re-exported whole, with new rows added. The cursor is the
newest ``created_at`` seen plus the ids seen at exactly that instant, so a
second run yields only rows after it, and two tickets created in the same
second are neither skipped nor repeated. Rows whose ``created_at`` cannot be
read are always yielded (their normaliser quarantines them with the reason:
re-quarantining is idempotent, dropping would lose them).

Rows are read as text (no type inference: a ``"007"`` id stays ``"007"``), and
every column of the export, known or not, is kept in the raw payload.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

import polars as pl

from connectors.base import ConnectorError, Cursor, Page, PermanentError
from transforms.timestamps import parse_utc

Format = Literal["auto", "csv", "jsonl", "parquet"]
SUFFIXES: dict[str, str] = {
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".parquet": "parquet",
}
REQUIRED = ("id", "created_at")
STREAM = "tickets"


class FileSource:
    def __init__(
        self, name: str, *, path: Path, format: Format = "auto", batch_size: int = 50_000
    ) -> None:
        self.name = name
        self.path = path
        self.format = format
        self.batch_size = batch_size

    def files(self) -> list[Path]:
        if self.path.is_dir():
            found = sorted(p for p in self.path.iterdir() if p.suffix.lower() in SUFFIXES)
        elif self.path.is_file():
            found = [self.path]
        else:
            raise PermanentError(f"source {self.name!r}: {self.path} does not exist")
        return found

    def _format_of(self, path: Path) -> str:
        if self.format != "auto":
            return self.format
        try:
            return SUFFIXES[path.suffix.lower()]
        except KeyError:
            raise PermanentError(
                f"source {self.name!r}: cannot tell the format of {path.name}; "
                "set format = 'csv' | 'jsonl' | 'parquet'"
            ) from None

    def _read(self, path: Path) -> tuple[pl.DataFrame, list[tuple[str, str, str]]]:
        fmt = self._format_of(path)
        rejects: list[tuple[str, str, str]] = []
        try:
            if fmt == "csv":
                frame = pl.read_csv(path, infer_schema=False, truncate_ragged_lines=True)
            elif fmt == "parquet":
                frame = pl.read_parquet(path)
                frame = frame.with_columns(pl.all().cast(pl.String))
            else:
                frame, rejects = _read_jsonl(path)
        except (pl.exceptions.PolarsError, OSError, UnicodeDecodeError) as exc:
            raise ConnectorError(f"source {self.name!r}: cannot read {path.name}: {exc}") from exc
        missing = [c for c in REQUIRED if c not in frame.columns]
        if missing and not frame.is_empty():
            raise ConnectorError(
                f"source {self.name!r}: {path.name} lacks column(s) {', '.join(missing)}; "
                "the export format needs id, created_at, subject, body, channel, requester, "
                "tags, status"
            )
        return frame, rejects

    def backfill_state(self, since: datetime) -> dict[str, Cursor]:
        """A cursor just before ``since``: the next pages re-read everything from it on."""
        before = since.astimezone(UTC) - timedelta(microseconds=1)
        return {STREAM: {"created_at": before.isoformat(), "ids": []}}

    def pages(self, state: Mapping[str, Cursor]) -> Iterator[Page]:
        cursor = dict(state.get(STREAM, {}))
        after = cursor.get("created_at")
        seen_at_after: set[str] = set(cursor.get("ids", []))
        frames: list[pl.DataFrame] = []
        rejects: list[tuple[str, str, str]] = []
        for path in self.files():
            frame, bad = self._read(path)
            rejects.extend(bad)
            if not frame.is_empty():
                frames.append(frame.with_columns(pl.col("id").cast(pl.String)))
        if not frames:
            if rejects:
                yield Page(STREAM, [], [], cursor, rejects)
            return
        rows = pl.concat(frames, how="diagonal_relaxed")
        rows = rows.with_columns(parse_utc(pl.col("created_at")).alias("__ts"))
        without_id = rows.filter(pl.col("id").is_null() | (pl.col("id").str.strip_chars() == ""))
        rejects.extend(
            ("(no id)", "missing id", json.dumps(r, default=str))
            for r in without_id.drop("__ts").to_dicts()
        )
        rows = rows.filter(pl.col("id").is_not_null() & (pl.col("id").str.strip_chars() != ""))
        if after is not None:
            after_ts = pl.lit(after).str.to_datetime(time_zone="UTC", time_unit="us")
            rows = rows.filter(
                pl.col("__ts").is_null()
                | (pl.col("__ts") > after_ts)
                | ((pl.col("__ts") == after_ts) & ~pl.col("id").is_in(list(seen_at_after)))
            )
        # Unparsable timestamps first (they do not move the cursor), then by time.
        rows = rows.sort(["__ts", "id"], nulls_last=False)
        if rows.is_empty():
            if rejects:
                yield Page(STREAM, [], [], cursor, rejects)
            return
        for offset in range(0, rows.height, self.batch_size):
            batch = rows.slice(offset, self.batch_size)
            stamps = batch["__ts"].drop_nulls()
            if not stamps.is_empty():
                newest = stamps.max()
                at_newest = batch.filter(pl.col("__ts") == newest)["id"].to_list()
                if newest.isoformat() == after:  # type: ignore[union-attr]
                    seen_at_after |= set(at_newest)
                else:
                    after = newest.isoformat()  # type: ignore[union-attr]
                    seen_at_after = set(at_newest)
                cursor = {"created_at": after, "ids": sorted(seen_at_after)}
            records = batch.drop("__ts").to_dicts()
            yield Page(
                STREAM,
                records,
                [str(r["id"]) for r in records],
                dict(cursor),
                rejects if offset == 0 else [],
                expected_total=rows.height,
            )


def _read_jsonl(path: Path) -> tuple[pl.DataFrame, list[tuple[str, str, str]]]:
    """One line at a time: ``pl.read_ndjson`` fails a whole file on one bad line."""
    good: list[dict[str, object]] = []
    bad: list[tuple[str, str, str]] = []
    with path.open("r", encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                bad.append(
                    (f"{path.name}:{number}", f"line {number}: invalid JSON: {exc.msg}", line)
                )
                continue
            if not isinstance(value, dict):
                bad.append((f"{path.name}:{number}", f"line {number}: not a JSON object", line))
                continue
            good.append(
                {
                    k: v
                    if isinstance(v, str) or v is None
                    else json.dumps(v)
                    if isinstance(v, list | dict)
                    else str(v)
                    for k, v in value.items()
                }
            )
    if not good:
        return pl.DataFrame(), bad
    return pl.DataFrame(good, infer_schema_length=None).cast(pl.String), bad
