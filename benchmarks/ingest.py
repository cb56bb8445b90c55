"""Ingest speed: backlash against dlt and against DuckDB's own ``read_json``.

The same Zendesk incremental-export pages on disk (one NDJSON file per export
page of 1,000 tickets, ~2 KB a ticket) are loaded three ways, each in its own
process so that its peak memory (``ru_maxrss`` from ``wait4``) is its own:

a. ``backlash``: the real per-page loop of ``flows.pipeline`` (raw landing,
   Zendesk normaliser, de-duplication, validation, labels, upserts into
   ``core.tickets`` with raw + cursor in one transaction), then the marts;
b. ``dlt``: a ``dlt`` pipeline into DuckDB, ``write_disposition="merge"`` on
   ``id`` — what a data engineer would pick instead;
c. ``duckdb``: ``CREATE TABLE AS SELECT * FROM read_json(...)`` — the floor.

Why pages on disk and not the sandbox API: the benchmark measures ingest, not
HTTP; every contender reads the very same files. backlash reads them through
``DiskExportPages`` (below), which yields the ``Page`` objects the Zendesk
connector would have yielded for those export pages, cursor included.

    .venv/bin/pip install "dlt[duckdb]"        # contender (b) only; not a backlash dependency
    export BENCH_DUCKDB_MEMORY_LIMIT=2GB       # backlash's DuckDB buffer pool (default 80% RAM)
    .venv/bin/python benchmarks/ingest.py run --tickets 1000000 --repeat 2
    .venv/bin/python benchmarks/ingest.py memory --tickets 10000000
    .venv/bin/python benchmarks/ingest.py incremental --base 10000000 --new 1000 --db COPY
    .venv/bin/python benchmarks/ingest.py prefect --repeat 2   # one ticket via `backlash ingest`
    .venv/bin/python benchmarks/ingest.py table                # results/*.json as Markdown

Generated pages are cached under ``benchmarks/.data/`` (gitignored); results
go to ``benchmarks/results/ingest.json`` and the table to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent
DATA = ROOT / ".data"
RESULTS = ROOT / "results"
PAGE_SIZE = 1000  # Zendesk's incremental export returns at most 1,000 tickets a page
SOURCE = "zendesk_bench"
# Tickets are spread over two years ending here (fixed: the data is reproducible).
END = datetime(2026, 11, 1, tzinfo=UTC)
SPAN_SECONDS = 2 * 365 * 86_400
# Every 100th record is a later version of a ticket already exported (the export
# repeats a ticket each time it changes): merges must keep the newest.
UPDATE_EVERY = 100
# A few records are broken the way real exports are: they must be quarantined.
BAD_EVERY = 20_011
# Bumped when the generated data changes: cached pages of another version are rewritten.
GENERATOR = 2

# -- generation ------------------------------------------------------------------

_OPENERS = [
    "Hello,",
    "Hi team,",
    "Dear support,",
    "Good morning,",
    "Hey there,",
    "To whom it may concern,",
]
_COMPLAINTS = [
    "I just saw that my monthly price went up again and nobody told me in advance.",
    "This is absolutely unacceptable, the new plan costs twice as much for the same thing.",
    "Since the last update the app crashes every time I open my playlists.",
    "You removed offline downloads from the basic plan and that was the only reason I paid.",
    "I was charged twice this month and I want a refund immediately.",
    "The service split means I now need two subscriptions for what used to be one.",
    "I am going to cancel my subscription if this is not fixed by Friday.",
    "Your support has ignored my three previous emails, this is ridiculous.",
    "The price hike is a rip-off and I will tell everyone I know.",
    "Streaming quality has been terrible all week, constant buffering on every device.",
]
_NEUTRAL = [
    "How do I change the email address on my account?",
    "Could you tell me where to find my invoices for last year?",
    "I would like to add a second profile for my daughter, is that possible on my plan?",
    "Thanks for the quick help last time, everything works now.",
    "Is there a student discount available in my country?",
    "My card expires next month, how do I update the payment details?",
    "Can I move my subscription to another region when I relocate?",
    "Love the new design of the home screen, great work.",
]
_FILLER = [
    "I have been a customer for several years and usually I am happy with the service.",
    "I tried logging out and back in, clearing the cache and reinstalling the app.",
    "This happens on my phone, on the tablet and in the browser on my laptop.",
    "My account is registered under the same address I am writing from.",
    "I attached a screenshot of the screen I see, in case it helps.",
    "Please let me know if you need any more information from my side.",
    "My order number should be in your system, I received the confirmation email.",
    "The issue started on Monday evening and has not gone away since then.",
    "I checked the help center articles but none of them describe this situation.",
    "Other people in my household have the same problem on their devices.",
    "I would appreciate an answer within the next couple of days if possible.",
    "We are a small business account with five seats, all of them are affected.",
]
_CLOSERS = ["Thanks,", "Regards,", "Best wishes,", "Cheers,", "Kind regards,", "Sincerely,"]
_CHANNELS = ["email", "web", "web_widget", "mobile_sdk", "chat", "voice", "api", "twitter"]
_STATUSES = ["new", "open", "pending", "hold", "solved", "closed"]
_PRIORITIES = ["low", "normal", "high", "urgent", None]
_TAGS = [
    "billing",
    "pricing",
    "refund",
    "cancel",
    "playback",
    "android",
    "ios",
    "web",
    "vip",
    "downloads",
    "account",
    "bundle",
    "escalated",
    "churn_risk",
    "invoice",
]
_TYPES = ["question", "incident", "problem", "task", None]


def _iso(seconds: float) -> str:
    return (END - timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _description(rng: random.Random) -> str:
    complaint = rng.random() < 0.35
    lead = _COMPLAINTS if complaint else _NEUTRAL
    paragraphs = [rng.choice(_OPENERS)]
    for _ in range(rng.randint(3, 5)):
        sentences = [rng.choice(lead)] if rng.random() < 0.5 else []
        sentences += rng.sample(_FILLER, rng.randint(2, 3))
        paragraphs.append(" ".join(sentences))
    paragraphs.append(f"{rng.choice(_CLOSERS)}\nCustomer {rng.randint(1, 999_999)}")
    return "\n\n".join(paragraphs)


def make_ticket(number: int, total: int, rng: random.Random) -> dict[str, Any]:
    """Export record ``number`` (1-based) of ``total``, in export order (oldest first)."""
    ticket_id = number
    age = SPAN_SECONDS * (1 - number / (total + 1))
    updated_age = max(0.0, age - rng.uniform(0, 3 * 86_400))
    if number % UPDATE_EVERY == 0 and number > 10 * UPDATE_EVERY:
        # A later version of an earlier ticket: same id, same created_at, newer update.
        # (number - 250 is never itself an update, so the id is a real earlier ticket.)
        ticket_id = number - 2 * UPDATE_EVERY - UPDATE_EVERY // 2
        age = SPAN_SECONDS * (1 - ticket_id / (total + 1))
    created = _iso(age)
    requester = 1_000_000 + rng.randint(0, max(1, total // 4))
    channel = rng.choice(_CHANNELS)
    subject = rng.choice(_COMPLAINTS + _NEUTRAL)[: rng.randint(30, 70)].rstrip()
    ticket: dict[str, Any] = {
        "url": f"https://acme.zendesk.com/api/v2/tickets/{ticket_id}.json",
        "id": ticket_id,
        "external_id": None,
        "via": {
            "channel": channel,
            "source": {
                "from": {"address": f"customer{requester}@example.com", "name": "A Customer"}
                if channel == "email"
                else {},
                "to": {"address": "support@acme.com", "name": "Acme"},
                "rel": None,
            },
        },
        "created_at": created,
        "updated_at": _iso(updated_age),
        "generated_timestamp": int((END - timedelta(seconds=updated_age)).timestamp()),
        "type": rng.choice(_TYPES),
        "subject": subject,
        "raw_subject": subject,
        "description": _description(rng),
        "priority": rng.choice(_PRIORITIES),
        "status": rng.choice(_STATUSES),
        "recipient": "support@acme.com",
        "requester_id": requester,
        "submitter_id": requester,
        "assignee_id": 900_000 + rng.randint(0, 50),
        "organization_id": 500_000 + rng.randint(0, 2000) if rng.random() < 0.4 else None,
        "group_id": 360_000 + rng.randint(0, 12),
        "collaborator_ids": [],
        "follower_ids": [],
        "email_cc_ids": [],
        "forum_topic_id": None,
        "problem_id": None,
        "has_incidents": False,
        "is_public": True,
        "due_at": None,
        "tags": rng.sample(_TAGS, rng.randint(0, 4)),
        "custom_fields": [
            {"id": 360_001, "value": rng.choice(["basic", "standard", "premium", "family"])},
            {"id": 360_002, "value": rng.choice(["android", "ios", "web", "tv", None])},
            {"id": 360_003, "value": str(rng.randint(1, 120))},
            {"id": 360_004, "value": rng.random() < 0.1},
        ],
        "satisfaction_rating": {"score": rng.choice(["offered", "unoffered", "good", "bad"])},
        "sharing_agreement_ids": [],
        "followup_ids": [],
        "brand_id": 100 + rng.randint(0, 2),
        "allow_channelback": False,
        "allow_attachments": True,
        "from_messaging_channel": channel in ("chat", "mobile_sdk"),
    }
    if number % BAD_EVERY == 0:
        # Broken the way exports break: an unreadable timestamp, or no text at all.
        if (number // BAD_EVERY) % 2:
            ticket["created_at"] = "31/12/2025 25:61"
        else:
            ticket["subject"] = ticket["raw_subject"] = ticket["description"] = ""
    return ticket


def dataset_dir(total: int) -> Path:
    return DATA / f"zendesk-{total}"


def _write_pages(args: tuple[int, int, int, Path]) -> int:
    first_page, last_page, total, folder = args
    written = 0
    for page in range(first_page, last_page):
        rng = random.Random(page * 7919 + total)
        start = page * PAGE_SIZE + 1
        stop = min(total, start + PAGE_SIZE - 1)
        lines = [orjson.dumps(make_ticket(n, total, rng)) for n in range(start, stop + 1)]
        tmp = folder / f"page-{page:06d}.ndjson.tmp"
        tmp.write_bytes(b"\n".join(lines) + b"\n")
        tmp.rename(folder / f"page-{page:06d}.ndjson")
        written += len(lines)
    return written


def generate(total: int, workers: int | None = None, *, any_version: bool = False) -> Path:
    """Write (or reuse) ``total`` export records as pages; returns the folder.

    ``any_version``: reuse cached pages written by an older ``GENERATOR`` too
    (same sizes and shape; only which records repeat an earlier ticket differs),
    when regenerating them would not fit the time (10M: ~23 min).
    """
    folder = dataset_dir(total)
    manifest = folder / "manifest.json"
    if manifest.exists():
        cached = json.loads(manifest.read_text())
        if cached.get("generator") == GENERATOR or (any_version and cached.get("records") == total):
            return folder
    folder.mkdir(parents=True, exist_ok=True)
    pages = (total + PAGE_SIZE - 1) // PAGE_SIZE
    workers = workers or os.cpu_count() or 1
    chunk = max(1, min(200, pages // (workers * 4) or 1))
    jobs = [(p, min(pages, p + chunk), total, folder) for p in range(0, pages, chunk)]
    started = time.perf_counter()
    with ProcessPoolExecutor(workers) as pool:
        records = sum(pool.map(_write_pages, jobs))
    seconds = time.perf_counter() - started
    size = sum(p.stat().st_size for p in folder.glob("page-*.ndjson"))
    manifest.write_text(
        json.dumps(
            {
                "generator": GENERATOR,
                "records": records,
                "pages": pages,
                "bytes": size,
                "generate_seconds": seconds,
            },
            indent=1,
        )
    )
    print(
        f"generated {records:,} records in {pages:,} pages, {size / 1e9:.2f} GB, "
        f"in {seconds:.1f} s",
        file=sys.stderr,
    )
    return folder


def generate_new(base: int, new: int) -> Path:
    """``new`` records exported after the ``base`` ones (ids from base + 1 on, and
    every 100th an update of an older ticket), as the next page(s) of that export."""
    folder = DATA / f"zendesk-{base}-new{new}"
    if (folder / "manifest.json").exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    first_page = (base + PAGE_SIZE - 1) // PAGE_SIZE
    rng = random.Random(base + new)
    for offset in range(0, new, PAGE_SIZE):
        numbers = range(base + offset + 1, base + min(new, offset + PAGE_SIZE) + 1)
        lines = [orjson.dumps(make_ticket(n, base, rng)) for n in numbers]
        page = first_page + offset // PAGE_SIZE
        (folder / f"page-{page:06d}.ndjson").write_bytes(b"\n".join(lines) + b"\n")
    (folder / "manifest.json").write_text(json.dumps({"records": new, "after": base}))
    return folder


def page_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("page-*.ndjson"))


# -- backlash: the export pages on disk, as the Zendesk connector would yield them --


class DiskExportPages:
    """Zendesk incremental-export pages saved as NDJSON files, read back as ``Page``s.

    The cursor after each page names the file (``after_cursor``), the way
    Zendesk's own cursor points just after the page's last ticket, so a second
    run on the same folder resumes after the newest page it committed.
    """

    def __init__(self, name: str, folder: Path) -> None:
        self.name = name
        self.folder = folder

    def pages(self, state: Mapping[str, Any]) -> Iterator[Any]:
        from connectors.base import Page

        after = (state.get("tickets") or {}).get("after_cursor")
        for path in page_files(self.folder):
            if after is not None and path.stem <= after:
                continue
            records = [orjson.loads(line) for line in path.read_bytes().splitlines() if line]
            stamps = [r.get("generated_timestamp") or 0 for r in records]
            yield Page(
                "tickets",
                records,
                [str(r.get("id")) for r in records],
                {"after_cursor": path.stem, "generated_timestamp": max(stamps, default=0)},
            )


def source_config(name: str = SOURCE) -> Any:
    from flows.config import ZendeskSourceConfig

    # Never contacted: the pages come from disk; the config selects the Zendesk normaliser.
    return ZendeskSourceConfig(name=name, kind="zendesk", base_url="http://zendesk.invalid")


class _Trace:
    """After each committed batch: elapsed seconds, records so far and resident
    memory (MB, from /proc), kept in the result and printed every ~100k records,
    so a long run shows whether memory grows with the warehouse while it runs."""

    def __init__(self, trace: list[tuple[float, int, float]], started: float) -> None:
        self.trace = trace
        self.started = started
        self.records = 0

    def __call__(self, records: int, _total: int | None) -> None:
        before, self.records = self.records, self.records + records
        pages = Path("/proc/self/statm").read_text().split()
        rss_mb = int(pages[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
        seconds = time.perf_counter() - self.started
        self.trace.append((round(seconds, 1), self.records, round(rss_mb)))
        if before // 100_000 != self.records // 100_000:
            print(
                f"  {seconds:7.0f} s {self.records:>11,} records  rss {rss_mb:6.0f} MB  "
                f"load {os.getloadavg()[0]:.1f}",
                file=sys.stderr,
                flush=True,
            )


def run_backlash(folder: Path, db: Path) -> dict[str, Any]:
    """The scheduled run's work on ``folder``'s pages; phase times in seconds."""
    t0 = time.perf_counter()
    import flows.validation
    from flows import pipeline
    from transforms.taxonomy import DEFAULT_TOPICS
    from warehouse import load
    from warehouse.db import connect
    from warehouse.marts import refresh_marts

    flows.validation._suite_runner()  # GE's import and context: a fixed cost, timed apart
    t_import = time.perf_counter()
    con = connect(db)
    if limit := os.environ.get("BENCH_DUCKDB_MEMORY_LIMIT"):
        # DuckDB's buffer pool otherwise grows to 80% of RAM before it evicts.
        if not re.fullmatch(r"\d+(\.\d+)?\s*[KMGT]i?B", limit):
            raise SystemExit(f"BENCH_DUCKDB_MEMORY_LIMIT={limit!r}: write e.g. 2GB")
        con.execute(f"SET memory_limit = '{limit}'")
    cfg = source_config()
    now = datetime.now(UTC)
    state = load.get_state(con, cfg.name)
    steps: dict[str, float] = {}
    trace: list[tuple[float, int, float]] = []
    stats = pipeline.ingest_pages(
        con,
        cfg,
        DiskExportPages(cfg.name, folder).pages(state),
        topics=DEFAULT_TOPICS,
        now=now,
        timings=steps,
        progress=_Trace(trace, t_import),
    )
    t_pages = time.perf_counter()
    refresh_marts(con, stats.since)
    t_marts = time.perf_counter()
    counts = dict(load.table_counts(con))
    # What DuckDB holds in memory at the end, by kind (the primary-key indexes
    # of core.tickets and core.ticket_labels grow with the warehouse).
    duckdb_memory = {
        tag: int(used)
        for tag, used in con.execute(
            "SELECT tag, memory_usage_bytes FROM duckdb_memory() WHERE memory_usage_bytes > 0"
        ).fetchall()
    }
    con.close()
    return {
        "duckdb_memory_bytes": duckdb_memory,
        # (seconds, records committed, resident MB) after each batch: is memory flat?
        "trace": trace,
        "import_s": t_import - t0,
        "pages_s": t_pages - t_import,
        "marts_s": t_marts - t_pages,
        "work_s": t_marts - t_import,
        "steps_s": steps,
        "stats": stats.as_dict(),
        "counts": counts,
    }


# -- dlt: what a data engineer would pick instead -----------------------------------


def run_dlt(folder: Path, db: Path) -> dict[str, Any]:
    t0 = time.perf_counter()
    os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")
    import dlt

    t_import = time.perf_counter()

    @dlt.resource(name="tickets", write_disposition="merge", primary_key="id")
    def tickets() -> Iterator[list[dict[str, Any]]]:
        for path in page_files(folder):
            yield [orjson.loads(line) for line in path.read_bytes().splitlines() if line]

    pipeline = dlt.pipeline(
        pipeline_name="ingest_bench",
        destination=dlt.destinations.duckdb(str(db)),
        dataset_name="zendesk",
        pipelines_dir=str(db.parent / "dlt_pipelines"),
    )
    # Parquet load files: dlt's default for DuckDB (SQL INSERT statements) was
    # ten times slower to load in a trial at 5k tickets; give dlt its best.
    pipeline.run(tickets(), loader_file_format="parquet")
    t_done = time.perf_counter()
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    rows = con.execute("SELECT count(*) FROM zendesk.tickets").fetchone()
    con.close()
    return {
        "import_s": t_import - t0,
        "work_s": t_done - t_import,
        "counts": {"zendesk.tickets": int(rows[0]) if rows else 0},
    }


# -- DuckDB's own reader: the floor --------------------------------------------------


def run_duckdb(folder: Path, db: Path) -> dict[str, Any]:
    t0 = time.perf_counter()
    import duckdb

    t_import = time.perf_counter()
    con = duckdb.connect(str(db))
    con.read_json(str(folder / "page-*.ndjson"), format="newline_delimited").create("tickets")
    t_done = time.perf_counter()
    rows = con.execute("SELECT count(*) FROM tickets").fetchone()
    con.close()
    return {
        "import_s": t_import - t0,
        "work_s": t_done - t_import,
        "counts": {"tickets": int(rows[0]) if rows else 0},
    }


CONTENDERS = {"backlash": run_backlash, "dlt": run_dlt, "duckdb": run_duckdb}


# -- driver: each contender in its own process ---------------------------------------


def _child(contender: str, folder: Path, db: Path) -> None:
    """Run one contender here and print its result as one JSON line."""
    sys.path.insert(0, str(ROOT.parent))
    result = CONTENDERS[contender](folder, db)
    print(json.dumps(result, default=str))


def _timed(command: list[str], env: dict[str, str]) -> tuple[bytes, float, float]:
    """Run ``command``; its stdout, wall seconds, and peak RSS in MB (its own, by ``wait4``).

    Its CPU seconds (user + system, also from ``wait4``) go to ``_LAST_CPU_S``:
    on a shared machine they vary much less with the load than wall time does.
    """
    started = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, cwd=ROOT.parent, env=env)
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise RuntimeError(f"{command[1:3]} failed with exit code {code}")
    _LAST_CPU_S[0] = usage.ru_utime + usage.ru_stime
    return out, wall, usage.ru_maxrss / 1024  # Linux: kilobytes


_LAST_CPU_S = [0.0]


def measure(contender: str, folder: Path, db: Path, *, fresh: bool = True) -> dict[str, Any]:
    """Wall time and peak RSS of one contender in a child process (``wait4``)."""
    if fresh:
        for path in (db, db.with_name(db.name + ".wal")):
            path.unlink(missing_ok=True)
        shutil.rmtree(db.parent / "dlt_pipelines", ignore_errors=True)
    db.parent.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    out, wall, peak_mb = _timed(
        [sys.executable, __file__, "_child", contender, str(folder), str(db)],
        {**os.environ, "PYTHONPATH": str(ROOT.parent)},
    )
    result = json.loads(out.decode().strip().splitlines()[-1])
    manifest = json.loads((folder / "manifest.json").read_text())
    result.update(
        contender=contender,
        records=manifest["records"],
        generator=manifest.get("generator", 1),
        cpu_s=_LAST_CPU_S[0],
        wall_s=wall,
        peak_rss_mb=peak_mb,
        loadavg_before=load_before,
        loadavg_after=os.getloadavg(),
        db_bytes=db.stat().st_size if db.exists() else None,
    )
    print(
        f"{contender:9s} {manifest['records']:>10,} records  wall {wall:7.1f} s  "
        f"work {result['work_s']:7.1f} s  peak {result['peak_rss_mb']:7.0f} MB  "
        f"load {load_before[0]:.1f}",
        file=sys.stderr,
    )
    return result


def _save(name: str, results: list[dict[str, Any]]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    previous = json.loads(path.read_text()) if path.exists() else []
    path.write_text(json.dumps([*previous, *results], indent=1, default=str))
    return path


def cmd_run(args: argparse.Namespace) -> None:
    """1M tickets (or ``--tickets``) through each contender, ``--repeat`` times, and one ticket."""
    folder = generate(args.tickets)
    one = generate(1)
    work = Path(args.work)
    results = []
    for _ in range(args.repeat):
        for contender in args.contenders:
            results.append(measure(contender, folder, work / f"{contender}.duckdb"))
            results.append(measure(contender, one, work / f"{contender}-one.duckdb"))
    _save("ingest", results)


def cmd_memory(args: argparse.Namespace) -> None:
    """backlash alone at a large size: is peak memory flat in input size?"""
    folder = generate(args.tickets, any_version=args.any_version)
    _save("memory", [measure("backlash", folder, Path(args.work) / "backlash-big.duckdb")])


def cmd_incremental(args: argparse.Namespace) -> None:
    """A scheduled run: ``--new`` tickets on top of the ``--base`` warehouse of ``memory``."""
    db = Path(args.db) if args.db else Path(args.work) / "backlash-big.duckdb"
    if not db.exists():
        raise SystemExit(f"{db} missing: run `memory --tickets {args.base}` first")
    folder = generate_new(args.base, args.new)
    _save("incremental", [measure("backlash", folder, db, fresh=False)])


def cmd_prefect(args: argparse.Namespace) -> None:
    """One ticket through the real CLI (``backlash ingest``: Prefect flow, Zendesk
    connector against the local sandbox): the orchestrator's fixed start-up."""
    from connectors.sandbox import serve_zendesk

    email, token = "bench@example.com", "bench-token"
    server, url = serve_zendesk(
        [make_ticket(1, 1, random.Random(1))], rate_per_minute=None, credentials=(email, token)
    )
    folder = DATA / "prefect-run"
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "backlash.toml"
    config.write_text(
        '[warehouse]\npath = "warehouse.duckdb"\n\n[[sources]]\nname = "support"\n'
        f'kind = "zendesk"\nbase_url = "{url}"\nemail = "{email}"\n'
        'token_env = "BENCH_ZENDESK_TOKEN"\ncomments = false\n'
    )
    home = Path(args.prefect_home) if args.prefect_home else folder / "prefect-home"
    env = {**os.environ, "BENCH_ZENDESK_TOKEN": token, "PREFECT_HOME": str(home)}
    env.pop("PREFECT_API_URL", None)
    backlash = str(Path(sys.executable).with_name("backlash"))
    results = []
    try:
        for attempt in range(args.repeat):
            for path in folder.glob("warehouse*.duckdb*"):
                path.unlink()
            load_before = os.getloadavg()
            out, wall, peak = _timed([backlash, "--config", str(config), "ingest"], env)
            results.append(
                {
                    "contender": "backlash-cli-prefect",
                    "records": 1,
                    "attempt": attempt,
                    "wall_s": wall,
                    "peak_rss_mb": peak,
                    "loadavg_before": load_before,
                    "output": out.decode(errors="replace")[-400:],
                }
            )
            print(
                f"prefect one-ticket run {attempt}: {wall:.1f} s, peak {peak:.0f} MB",
                file=sys.stderr,
            )
    finally:
        server.close()
    _save("prefect", results)


def cmd_table(args: argparse.Namespace) -> None:
    """The measured runs as a Markdown table (from results/*.json), in the order run."""
    print(
        "| # | kind | contender | records | wall s | work s | records/s | peak RSS MB | load "
        "| cpu s |"
    )
    print("|---:|---|---|---:|---:|---:|---:|---:|---:|---:|")
    number = 0
    # round4.json: runs recorded apart so that earlier rows keep their numbers;
    # each says its kind and which code ran (an A/B of the old and new loader).
    for name in ("ingest", "memory", "incremental", "prefect", "round4"):
        path = RESULTS / f"{name}.json"
        for r in json.loads(path.read_text()) if path.exists() else []:
            number += 1
            kind = r.get("kind", name) + (f" ({r['code']})" if r.get("code") else "")
            work = r.get("work_s")
            rate = f"{r['records'] / work:,.0f}" if work else "-"
            print(
                f"| {number} | {kind} | {r['contender']} | {r['records']:,} | {r['wall_s']:.1f} | "
                f"{'-' if work is None else f'{work:.1f}'} | {rate} | {r['peak_rss_mb']:,.0f} |"
                f" {r['loadavg_before'][0]:.1f} | {_cpu(r)} |"
            )
            if r.get("steps_s"):
                steps = ", ".join(f"{k} {v:.1f}" for k, v in r["steps_s"].items())
                print(f"|  | | steps (s): {steps}; marts {r.get('marts_s', 0):.1f} | | | | | | | |")


def _cpu(result: Mapping[str, Any]) -> str:
    cpu = result.get("cpu_s")
    return "-" if cpu is None else f"{cpu:.1f}"


def cmd_child(args: argparse.Namespace) -> None:
    _child(args.contender, Path(args.folder), Path(args.db))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(required=True)
    default_work = str(DATA / "work")
    run = sub.add_parser("run", help="the three contenders on the same pages")
    run.add_argument("--tickets", type=int, default=1_000_000)
    run.add_argument("--repeat", type=int, default=2)
    run.add_argument("--contenders", nargs="+", default=list(CONTENDERS), choices=list(CONTENDERS))
    run.add_argument("--work", default=default_work)
    run.set_defaults(func=cmd_run)
    memory = sub.add_parser("memory", help="backlash's peak memory at a large size")
    memory.add_argument("--tickets", type=int, default=10_000_000)
    memory.add_argument("--work", default=default_work)
    memory.add_argument(
        "--any-version", action="store_true", help="reuse cached pages of an older generator"
    )
    memory.set_defaults(func=cmd_memory)
    inc = sub.add_parser("incremental", help="new tickets on top of the memory run's warehouse")
    inc.add_argument("--base", type=int, default=10_000_000)
    inc.add_argument("--new", type=int, default=1000)
    inc.add_argument("--work", default=default_work)
    inc.add_argument("--db", default=None, help="the warehouse to add to (a copy is wise)")
    inc.set_defaults(func=cmd_incremental)
    pre = sub.add_parser("prefect", help="one ticket through `backlash ingest` (Prefect)")
    pre.add_argument("--repeat", type=int, default=2)
    pre.add_argument("--prefect-home", default=None)
    pre.set_defaults(func=cmd_prefect)
    table = sub.add_parser("table", help="the results so far as a Markdown table")
    table.set_defaults(func=cmd_table)
    gen = sub.add_parser("generate", help="only write the pages")
    gen.add_argument("--tickets", type=int, default=1_000_000)
    gen.set_defaults(func=lambda a: generate(a.tickets))
    child = sub.add_parser("_child")
    child.add_argument("contender", choices=list(CONTENDERS))
    child.add_argument("folder")
    child.add_argument("db")
    child.set_defaults(func=cmd_child)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
