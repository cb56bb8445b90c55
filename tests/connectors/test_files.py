from __future__ import annotations

import csv
import json
from pathlib import Path

import polars as pl
import pytest

from connectors.base import ConnectorError
from connectors.files import FileSource

COLUMNS = ["id", "created_at", "subject", "body", "channel", "requester", "tags", "status"]


def write_csv(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=[*COLUMNS, "extra"])
        writer.writeheader()
        for row in rows:
            writer.writerow(row)


def row(i: int, ts: str) -> dict:
    return {
        "id": str(i),
        "created_at": ts,
        "subject": f"s{i}",
        "body": "b",
        "channel": "email",
        "requester": "a@b.c",
        "tags": "x y",
        "status": "open",
        "extra": f"e{i}",
    }


def drain(source: FileSource, state: dict) -> tuple[list[str], dict]:
    ids: list[str] = []
    for page in source.pages(state):
        ids += page.record_ids
        state = {**state, page.stream: page.cursor}
    return ids, state


def test_second_run_yields_only_new_rows_including_same_second(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    write_csv(path, [row(1, "2025-01-01T10:00:00Z"), row(2, "2025-01-01T11:00:00Z")])
    source = FileSource("s", path=path, batch_size=1)
    ids, state = drain(source, {})
    assert ids == ["1", "2"]
    # Re-export: one more row at exactly the cursor's second, one later, one unchanged.
    write_csv(
        path,
        [
            row(1, "2025-01-01T10:00:00Z"),
            row(2, "2025-01-01T11:00:00Z"),
            row(3, "2025-01-01T11:00:00Z"),
            row(4, "2025-01-02T00:00:00Z"),
        ],
    )
    ids, state = drain(source, state)
    assert ids == ["3", "4"]
    assert drain(source, state)[0] == []


def test_extra_columns_stay_in_the_raw_record(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    write_csv(path, [row(1, "2025-01-01T10:00:00Z")])
    (page,) = list(FileSource("s", path=path).pages({}))
    assert page.records[0]["extra"] == "e1"


def test_unparsable_time_is_yielded_not_dropped_and_does_not_move_cursor(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    write_csv(path, [row(1, "yesterday"), row(2, "2025-01-01T10:00:00Z")])
    pages = list(FileSource("s", path=path).pages({}))
    assert [i for p in pages for i in p.record_ids] == ["1", "2"]
    assert pages[-1].cursor["created_at"].startswith("2025-01-01T10:00:00")


def test_jsonl_bad_line_is_rejected_and_the_rest_loads(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    lines = [
        json.dumps(row(1, "2025-01-01T10:00:00Z")),
        "{not json",
        json.dumps([1, 2]),
        json.dumps({**row(2, "2025-01-01T11:00:00Z"), "tags": ["a", "b"]}),
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    pages = list(FileSource("s", path=path).pages({}))
    assert [i for p in pages for i in p.record_ids] == ["1", "2"]
    reasons = [r[1] for p in pages for r in p.rejects]
    assert any("line 2: invalid JSON" in r for r in reasons)
    assert any("line 3: not a JSON object" in r for r in reasons)


def test_parquet_and_folder_of_files(tmp_path: Path) -> None:
    pl.DataFrame([row(1, "2025-01-01T10:00:00Z")]).write_parquet(tmp_path / "a.parquet")
    write_csv(tmp_path / "b.csv", [row(2, "2025-01-02T10:00:00Z")])
    ids, _ = drain(FileSource("s", path=tmp_path), {})
    assert ids == ["1", "2"]


def test_missing_required_column_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("ticket,when\n1,2025-01-01\n", encoding="utf-8")
    with pytest.raises(ConnectorError, match="lacks column"):
        list(FileSource("s", path=path).pages({}))


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConnectorError, match="does not exist"):
        list(FileSource("s", path=tmp_path / "nope.csv").pages({}))


def test_backfill_state_rereads_from_the_given_time(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    path = tmp_path / "t.csv"
    write_csv(
        path,
        [
            row(1, "2025-01-01T10:00:00Z"),
            row(2, "2025-01-02T10:00:00Z"),
            row(3, "2025-01-03T10:00:00Z"),
        ],
    )
    source = FileSource("s", path=path)
    _, state = drain(source, {})
    assert drain(source, state)[0] == []
    since = datetime(2025, 1, 2, 10, tzinfo=UTC)
    ids, after = drain(source, source.backfill_state(since))
    assert ids == ["2", "3"]
    assert after == state
