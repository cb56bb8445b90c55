"""How long 1,000,000 Zendesk tickets take to land, measured small and extrapolated.

Nobody has a million-ticket Zendesk to spare, and at the export's documented
10 requests a minute the answer is dominated by waiting; so this measures
real runs and says exactly what is extrapolated:

1. ``unlimited``: the sandbox on loopback with its rate limit off serves N
   tickets (1,000 a page, ~2 KB each: text, tags, custom fields, a rating);
   the real ``ZendeskSource`` reads them and ``flows.pipeline.ingest_source``
   (the loop ``backlash ingest`` runs, without Prefect) lands them in a fresh
   DuckDB file: raw, normalise, validate, label, upsert, custom fields and
   ratings, cursor. The same pages are also read by the connector alone
   (HTTP + JSON). Run at two sizes (or at 1,000,000 itself) to see whether
   the cost per ticket grows with the warehouse.
2. ``limited``: a short real run with both the sandbox and the client at
   10 export requests a minute, to measure the cadence actually achieved
   (pages per minute) and whether a page's processing hides inside the wait.

Extrapolation to 1M: unlimited = the larger run's seconds per ticket × 1M
(linear; the two sizes show how far that holds); limited = 1M / 1,000 pages
at the measured cadence, processing overlapping the waits (the loop reads
the next page in a second thread while it commits), plus the last batch.

    .venv/bin/python benchmarks/helpdesk_1m.py [--sizes 10000 50000]
        [--limited-pages 4] [--repeat 2] [--json-out FILE]

Results and their reading: benchmarks/results/helpdesk.md.
"""

from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing
import os
import platform
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from connectors.sandbox import serve_zendesk
from connectors.zendesk import ZendeskSource
from flows import pipeline
from flows.config import load_settings
from warehouse.db import connect

EMAIL, TOKEN_ENV, TOKEN = "bench@example.com", "BENCH_ZENDESK_TOKEN", "bench-token-1m"
PAGE_SIZE = 1000
TARGET = 1_000_000
EXPORT_LIMIT = 10  # Zendesk: incremental exports, requests a minute, every plan

PARAGRAPHS = [
    "I have been a customer for six years and this is the first time I write in.",
    "Since the price went up last month the bill is 40% higher and nothing changed for me.",
    "The download button for offline viewing is gone from the app after the update.",
    "Please tell me how to add a profile for my daughter, the settings page is confusing.",
    "If this is not fixed by the end of the month I will cancel my subscription.",
]


def make_tickets(n: int, now: float) -> list[dict[str, Any]]:
    base = now - 30 * 86_400
    out: list[dict[str, Any]] = []
    for i in range(1, n + 1):
        at = datetime.fromtimestamp(base + i * 2, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = " ".join(PARAGRAPHS[(i + k) % len(PARAGRAPHS)] for k in range(4))
        out.append(
            {
                "id": i,
                "url": f"https://acme.zendesk.com/api/v2/tickets/{i}.json",
                "created_at": at,
                "updated_at": at,
                "generated_timestamp": int(base + i * 2),
                "subject": PARAGRAPHS[i % len(PARAGRAPHS)][:60],
                "raw_subject": PARAGRAPHS[i % len(PARAGRAPHS)][:60],
                "description": body,
                "status": ["open", "pending", "solved"][i % 3],
                "priority": "normal",
                "type": "question",
                "requester_id": 10_000 + i % 5000,
                "submitter_id": 10_000 + i % 5000,
                "organization_id": 70 + i % 50,
                "tags": ["pricing", "web"] if i % 2 else ["product"],
                "via": {"channel": ["email", "web", "chat"][i % 3], "source": {}},
                "custom_fields": [
                    {"id": 360_001, "value": ["basic", "standard", "premium"][i % 3]},
                    {"id": 360_002, "value": ["tv", "mobile"] if i % 2 else None},
                    {"id": 360_003, "value": i % 7 == 0},
                    {"id": 360_004, "value": None},
                ],
                "satisfaction_rating": {"score": "good"} if i % 5 else {"score": "unoffered"},
            }
        )
    return out


def _config(folder: Path, url: str, rate: int) -> Path:
    path = folder / "backlash.toml"
    path.write_text(
        '[warehouse]\npath = "w.duckdb"\n\n'
        f'[[sources]]\nname = "support"\nkind = "zendesk"\nbase_url = "{url}"\n'
        f'email = "{EMAIL}"\ntoken_env = "{TOKEN_ENV}"\nstart_time = "2000-01-01T00:00:00Z"\n'
        f"comments = false\nrate_per_minute = {rate}\napi_rate_per_minute = 1000000\n",
        encoding="utf-8",
    )
    return path


def _source(url: str, rate: int) -> ZendeskSource:
    return ZendeskSource(
        "support",
        base_url=url,
        email=EMAIL,
        token=TOKEN,
        start_time=datetime(2000, 1, 1, tzinfo=UTC),
        comments=False,
        rate_per_minute=rate,
        page_size=PAGE_SIZE,
    )


def _serve_child(n: int, urls: Any) -> None:
    """The sandbox in a process of its own, as the real Zendesk is: its JSON
    encoding must not compete with the client's parsing for one GIL."""
    _server, url = serve_zendesk(
        make_tickets(n, time.time()),
        rate_per_minute=None,
        page_size=PAGE_SIZE,
        credentials=(EMAIL, TOKEN),
    )
    urls.put(url)
    threading.Event().wait()


def unlimited(n: int) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    urls = context.Queue()
    child = context.Process(target=_serve_child, args=(n, urls), daemon=True)
    child.start()
    try:
        url = urls.get(timeout=300)
        # The connector alone: HTTP, JSON, cursor, pages.
        started = time.perf_counter()
        # Counted as they come, not kept: a million parsed tickets would not fit beside the rest.
        read, export_pages, payload_bytes = 0, 0, 0.0
        for page in _source(url, 1_000_000).pages({}):
            if page.stream != "tickets":
                continue
            if not export_pages:
                payload_bytes = len(json.dumps(page.records)) / len(page.records)
            export_pages += 1
            read += len(page.records)
        read_s = time.perf_counter() - started
        assert read == n, "the connector lost tickets"
        with tempfile.TemporaryDirectory(prefix="helpdesk-1m-") as folder:
            settings = load_settings(_config(Path(folder), url, 1_000_000))
            con = connect(settings.warehouse.path)
            try:
                timings: dict[str, float] = {}
                started = time.perf_counter()
                cfg = settings.source("support")
                connector = _source(url, 1_000_000)
                stats = pipeline.ingest_pages(
                    con,
                    cfg,
                    connector.pages({}),
                    topics=pipeline.topics_of(settings),
                    now=datetime.now(UTC),
                    timings=timings,
                )
                pipeline.refresh(con, stats.since)
                pipeline_s = time.perf_counter() - started
                landed = con.execute("SELECT count(*) FROM core.tickets").fetchone()
                # Custom fields, the field dictionary and ratings are landed by the loop
                # itself, in each batch's transaction: they are part of pipeline_s.
                extras_s = build_s = 0.0
                field_rows = con.execute(
                    "SELECT count(*) FROM core.ticket_custom_fields"
                ).fetchone()
                db_mb = os.path.getsize(settings.warehouse.path) / 1e6
            finally:
                con.close()
    finally:
        child.terminate()
        child.join(timeout=30)
    return {
        "tickets": n,
        "payload_bytes_per_ticket": round(payload_bytes),
        "export_pages": export_pages,
        "connector_only_s": round(read_s, 2),
        "pipeline_s": round(pipeline_s, 2),
        "pipeline_steps_s": {k: round(v, 2) for k, v in timings.items()},
        "tickets_landed": landed[0] if landed else 0,
        "extras_s": round(extras_s, 2),
        "extras_build_s": round(build_s, 2),
        "custom_field_rows": field_rows[0] if field_rows else 0,
        "warehouse_mb": round(db_mb, 1),
        "tickets_per_s": round(n / pipeline_s),
        "with_extras_tickets_per_s": round(n / (pipeline_s + extras_s)),
    }


def limited(pages: int) -> dict[str, Any]:
    n = pages * PAGE_SIZE
    server, url = serve_zendesk(
        make_tickets(n, time.time()),
        rate_per_minute=EXPORT_LIMIT,
        page_size=PAGE_SIZE,
        credentials=(EMAIL, TOKEN),
    )
    try:
        with tempfile.TemporaryDirectory(prefix="helpdesk-1m-") as folder:
            settings = load_settings(_config(Path(folder), url, EXPORT_LIMIT))
            con = connect(settings.warehouse.path)
            try:
                started = time.perf_counter()
                stats = pipeline.ingest_source(con, settings, "support", now=datetime.now(UTC))
                elapsed = time.perf_counter() - started
            finally:
                con.close()
        times = list(server.state.export_times)
    finally:
        server.close()
    gaps = [b - a for a, b in itertools.pairwise(times)]
    cadence = sum(gaps) / len(gaps) if gaps else float("nan")
    return {
        "tickets": n,
        "export_requests": server.state.export_requests,
        "server_429s": server.state.rate_limited,
        "elapsed_s": round(elapsed, 2),
        "tickets_landed": stats.tickets,
        "seconds_between_export_requests": round(cadence, 3),
        "pages_per_minute": round(60 / cadence, 3),
        "share_of_limit": round(60 / cadence / EXPORT_LIMIT, 4),
        # The time after the last export answer: processing that did not hide in a wait.
        "tail_after_last_request_s": round(elapsed - (times[-1] - times[0]), 2) if times else None,
    }


def extrapolate(runs: list[dict[str, Any]], limited_run: dict[str, Any]) -> dict[str, Any]:
    """Linear from the largest run, and from the marginal cost between the two largest."""
    ordered = sorted(runs, key=lambda r: r["tickets"])
    big = ordered[-1]
    per_ticket = big["pipeline_s"] / big["tickets"]
    per_ticket_extras = (big["pipeline_s"] + big["extras_s"]) / big["tickets"]
    out: dict[str, Any] = {
        "unlimited_1m_linear_min": round(per_ticket * TARGET / 60, 1),
        "unlimited_1m_linear_with_extras_min": round(per_ticket_extras * TARGET / 60, 1),
    }
    if len(ordered) > 1:
        small = ordered[-2]
        marginal = (big["pipeline_s"] - small["pipeline_s"]) / (big["tickets"] - small["tickets"])
        out["marginal_ms_per_ticket"] = round(marginal * 1000, 3)
        out["unlimited_1m_marginal_min"] = round(
            (big["pipeline_s"] + marginal * (TARGET - big["tickets"])) / 60, 1
        )
    pages = TARGET // PAGE_SIZE
    cadence = limited_run["seconds_between_export_requests"]
    batch = PAGE_SIZE * per_ticket_extras  # the last page's processing, after the last wait
    out.update(
        limited_1m_min=round(((pages - 1) * cadence + batch) / 60, 1),
        limited_floor_min=round((pages - 1) * 60 / EXPORT_LIMIT / 60, 1),
        per_page_processing_s=round(batch, 2),
        per_page_wait_s=round(cadence, 2),
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 50_000])
    parser.add_argument("--limited-pages", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args()
    os.environ[TOKEN_ENV] = TOKEN
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    load_before = os.getloadavg()[0]
    # Imports and Great Expectations' first context are paid once per process
    # (4-9 s): a warm-up run takes them, so the sizes below differ by work only.
    warm_up = unlimited(PAGE_SIZE)
    # The build machine is shared: each size runs --repeat times, the fastest counts.
    tries = {n: [unlimited(n) for _ in range(args.repeat)] for n in args.sizes}
    runs = [min(found, key=lambda r: r["pipeline_s"] + r["extras_s"]) for found in tries.values()]
    limited_run = limited(args.limited_pages)
    result = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        "load_1min_before": round(load_before, 2),
        "load_1min_after": round(os.getloadavg()[0], 2),
        "warm_up": warm_up,
        "unlimited": runs,
        "all_tries_s": {
            str(n): [round(r["pipeline_s"] + r["extras_s"], 2) for r in found]
            for n, found in tries.items()
        },
        "limited": limited_run,
        "extrapolated": extrapolate(runs, limited_run),
    }
    if args.json_out:
        args.json_out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
