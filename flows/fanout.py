"""Fetching many sources at once while one process writes the warehouse.

DuckDB lets one process write the file, so parallel ingestion cannot mean
parallel writers. What is slow with many sources is the network: a Zendesk
brand's export is capped at 10 requests a minute, a mailbox answers at the
speed of its server. So the fan-out (``backlash ingest --task-runner dask``)
runs each source's *fetch* in a worker and the flow's own process commits:

- a worker pulls pages from its source and writes each one to a spool
  directory as ``NNNNNNNN.json`` (written to a temporary name, then renamed,
  so the writer never reads half a page), with a ``state.json`` beside it
  holding the cursor after the last spooled page;
- the writer tails the spool of one source after another, in page order, and
  commits each page (raw records, tickets, labels and the cursor, one
  transaction) through the same ``ingest_pages`` loop as a sequential run,
  deleting the file once committed.

Nothing here moves a cursor by itself: only a committed page does. A crash of
the writer or a worker loses the spooled pages not yet committed, and the
next run fetches them again from the last committed cursor. A worker whose
fetch is retried resumes from the cursor of its last spooled page, so pages
are neither spooled twice nor skipped.
"""

from __future__ import annotations

import base64
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import orjson

from connectors.base import Cursor, Page

STATE_FILE = "state.json"
_BYTES = "b64"  # marks a record that was raw bytes (an RFC 822 message)


def spool_root(warehouse_path: Path) -> Path:
    """Where a warehouse's fetch spools live: next to it, never inside a temp dir
    that another machine's worker could not see."""
    return warehouse_path.parent / f".{warehouse_path.name}.spool"


def _encode(record: Any) -> Any:
    if isinstance(record, bytes):
        return {_BYTES: base64.b64encode(record).decode("ascii")}
    return record


def _decode(record: Any) -> Any:
    if isinstance(record, dict) and len(record) == 1 and _BYTES in record:
        return base64.b64decode(record[_BYTES])
    return record


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(path)


def read_spool_state(directory: Path) -> tuple[dict[str, Cursor], int] | None:
    """The cursors after the last spooled page and the next page number, if any."""
    path = directory / STATE_FILE
    if not path.exists():
        return None
    saved = orjson.loads(path.read_bytes())
    return saved["state"], saved["next"]


def spool_pages(
    pages: Iterable[Page], directory: Path, state: Mapping[str, Cursor], first: int = 0
) -> int:
    """Write every page to ``directory`` in order; return how many were written."""
    directory.mkdir(parents=True, exist_ok=True)
    current = dict(state)
    seq = first
    for page in pages:
        body = {
            "stream": page.stream,
            "records": [_encode(r) for r in page.records],
            "record_ids": page.record_ids,
            "cursor": page.cursor,
            "rejects": page.rejects,
            "expected_total": page.expected_total,
        }
        _write_atomically(directory / f"{seq:08d}.json", orjson.dumps(body))
        current[page.stream] = page.cursor
        seq += 1
        _write_atomically(directory / STATE_FILE, orjson.dumps({"state": current, "next": seq}))
    return seq - first


def _read_page(path: Path) -> Page:
    body = orjson.loads(path.read_bytes())
    return Page(
        body["stream"],
        [_decode(r) for r in body["records"]],
        body["record_ids"],
        body["cursor"],
        [tuple(r) for r in body["rejects"]],  # type: ignore[misc]
        body["expected_total"],
    )


def tail_spool(
    directory: Path,
    finished: Callable[[], bool],
    *,
    poll_seconds: float = 0.2,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[Page]:
    """Yield the spooled pages in order as the worker writes them.

    A page file is deleted when the consumer asks for the next one, i.e. after
    it was committed. Ends when the worker has ``finished`` (succeeded or
    failed) and no page is left.
    """
    seq = 0
    while True:
        path = directory / f"{seq:08d}.json"
        if path.exists():
            yield _read_page(path)
            path.unlink()
            seq += 1
            continue
        if finished():
            if path.exists():  # written just before the worker ended
                continue
            return
        sleep(poll_seconds)


def clear_spool(directory: Path) -> None:
    """Drop a spool: its pages are refetched from the last committed cursor."""
    shutil.rmtree(directory, ignore_errors=True)
