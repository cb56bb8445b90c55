"""Support mail: parse speed, threading accuracy, and the demo story with the mailbox in it.

All three run on the demo company's generated ``support.mbox``
(``flows.demo_company.generate``), whose truth knows every conversation:

    .venv/bin/python benchmarks/mail.py threads [--volume 1.0] [--seed 7]
    .venv/bin/python benchmarks/mail.py story   [--volume 1.0] [--seed 7]
    .venv/bin/python benchmarks/mail.py all     # both, and write benchmarks/results/mail.md

``threads`` reads the mbox through ``connectors.mailbox`` and times each stage
(read, MIME parse, normalise + thread), then scores the threading against the
known conversations: pairwise precision/recall/F1 over "same conversation"
message pairs, and the share of conversations recovered exactly (same set of
messages, nothing more or less). It scores the whole mailbox in one batch and
in the pages an ingest run would see (``batch_size`` messages, threads joined
across pages through the stored messages, as ``flows.pipeline`` does).

``story`` runs the demo (tickets.csv + support.mbox) through the pipeline
functions, without Prefect, into a temporary warehouse, and checks that the
detector still finds exactly the planted story: pricing -> price-rise,
dvd -> dvd-split, profiles -> profiles-removal, playback -> no change, and
nothing else; once with the ticket export alone, once with the mailbox added.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime
from itertools import combinations
from pathlib import Path
from typing import Any

import polars as pl

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))

from connectors.mailbox import MailboxSource  # noqa: E402
from flows.demo_company import SUPPORT_DOMAIN, DemoTruth, generate  # noqa: E402
from transforms.mime import parse_message  # noqa: E402
from transforms.normalize_email import normalize_email  # noqa: E402

RESULTS = ROOT / "results"
NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)  # the demo's "today", as in the e2e test
EXPECTED_CAUSES = {"pricing": "price-rise", "dvd": "dvd-split", "profiles": "profiles-removal"}
MBOX_SOURCE = f"""
[[sources]]
name = "support-mail"
kind = "mbox"
path = "data/support.mbox"
support_addresses = ["{SUPPORT_DOMAIN}"]
"""


# --------------------------------------------------------------------------- scoring


def pair_scores(pred: dict[str, str], truth: dict[str, str]) -> tuple[float, float, float]:
    """Pairwise precision, recall and F1 of "these two messages are one conversation"."""

    def pairs(groups: dict[str, str]) -> set[tuple[str, str]]:
        members: dict[str, list[str]] = defaultdict(list)
        for mid, gid in groups.items():
            members[gid].append(mid)
        return {
            (a, b) if a < b else (b, a) for ms in members.values() for a, b in combinations(ms, 2)
        }

    predicted, actual = pairs(pred), pairs(truth)
    hit = len(predicted & actual)
    precision = hit / len(predicted) if predicted else 1.0
    recall = hit / len(actual) if actual else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def exact_threads(pred: dict[str, str], truth: dict[str, str]) -> float:
    """Share of true conversations whose messages form exactly one predicted thread."""
    by_truth: dict[str, set[str]] = defaultdict(set)
    by_pred: dict[str, set[str]] = defaultdict(set)
    for mid, conv in truth.items():
        by_truth[conv].add(mid)
        by_pred[pred[mid]].add(mid)
    predicted = {frozenset(s) for s in by_pred.values()}
    return sum(frozenset(s) in predicted for s in by_truth.values()) / len(by_truth)


def score(pred: dict[str, str], truth: DemoTruth) -> dict[str, float]:
    assert truth.mailbox is not None
    known = truth.mailbox.thread_of
    missing = set(known) - set(pred)
    if missing:
        raise AssertionError(f"{len(missing)} messages were not threaded, e.g. {min(missing)}")
    p, r, f1 = pair_scores({m: pred[m] for m in known}, known)
    # Ticket keys are the root Message-ID: a thread named by its root is the right ticket.
    named = sum(pred[m] == root for m, root in known.items()) / len(known)
    return {
        "precision": p,
        "recall": r,
        "f1": f1,
        "exact_threads": exact_threads({m: pred[m] for m in known}, known),
        "named_by_root": named,
        "tickets": len(set(pred.values())),
        "conversations": len(truth.mailbox.conversations),
    }


# --------------------------------------------------------------------------- threads


def _pages(path: Path, batch_size: int) -> list[tuple[list[bytes], list[str]]]:
    source = MailboxSource("bench", path=path, batch_size=batch_size)
    return [(list(p.records), p.record_ids) for p in source.pages({})]  # type: ignore[arg-type]


def _thread_paged(pages: Iterable[tuple[list[bytes], list[str]]], anchor: str) -> dict[str, str]:
    """Thread page by page, joining each page to stored messages as ingest does.

    ``flows.pipeline`` passes the source's messages created in the last
    ``KNOWN_THREAD_DAYS`` before ``now`` (``anchor="now"``); ``"latest"`` anchors
    that window at the newest stored message instead, which is the same for a
    live mailbox and right for a backfill of old mail.
    """
    from flows.pipeline import KNOWN_THREAD_DAYS

    stored = pl.DataFrame()
    pred: dict[str, str] = {}
    for raws, ids in pages:
        known = None
        if stored.height:
            since = (NOW if anchor == "now" else stored["created_at"].max()) - KNOWN_THREAD_DAYS
            known = stored.filter(pl.col("created_at") >= since)
        out = normalize_email(
            raws,
            ids,
            source="m",
            ingested_at=NOW,
            known_threads=known,
            support_addresses=(SUPPORT_DOMAIN,),
        )
        messages = out.messages
        stored = pl.concat(
            [
                stored,
                messages.select("message_id", "ticket_key", "subject", "author_key", "created_at"),
            ]
            if stored.height
            else [
                messages.select("message_id", "ticket_key", "subject", "author_key", "created_at")
            ]
        )
        pred.update(
            zip(
                messages["message_id"].to_list(),
                messages["ticket_key"].str.strip_prefix("m:").to_list(),
                strict=True,
            )
        )
    return pred


def bench_threads(volume: float, seed: int, batch_size: int = 200) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        began = time.perf_counter()
        truth = generate(Path(tmp), seed=seed, volume=volume)
        generated = time.perf_counter() - began
        assert truth.mailbox is not None
        path = truth.mailbox.path
        size_mb = path.stat().st_size / 1e6

        began, cpu = time.perf_counter(), time.process_time()
        pages = _pages(path, 1_000_000)
        read_s, read_cpu = time.perf_counter() - began, time.process_time() - cpu
        raws, ids = pages[0]

        began, cpu = time.perf_counter(), time.process_time()
        for raw in raws:
            parse_message(raw)
        parse_s, parse_cpu = time.perf_counter() - began, time.process_time() - cpu

        began, cpu = time.perf_counter(), time.process_time()
        whole = normalize_email(
            raws, ids, source="m", ingested_at=NOW, support_addresses=(SUPPORT_DOMAIN,)
        )
        normalize_s, normalize_cpu = time.perf_counter() - began, time.process_time() - cpu
        pred_whole = dict(
            zip(
                whole.messages["message_id"].to_list(),
                whole.messages["ticket_key"].str.strip_prefix("m:").to_list(),
                strict=True,
            )
        )
        began = time.perf_counter()
        pred_paged = _thread_paged(_pages(path, batch_size), "latest")
        paged_s = time.perf_counter() - began
        pred_now = _thread_paged(_pages(path, batch_size), "now")

        auto_truth = {c.root_id for c in truth.mailbox.conversations if c.is_auto}
        auto_found = set(
            whole.tickets.filter(pl.col("is_auto"))["source_id"].to_list()  # type: ignore[arg-type]
        )
        n = len(raws)
        return {
            "volume": volume,
            "seed": seed,
            "messages": n,
            "conversations": len(truth.mailbox.conversations),
            "mbox_mb": round(size_mb, 1),
            "dropped_references": truth.mailbox.dropped_references,
            "dropped_all_headers": truth.mailbox.dropped_all_headers,
            "auto_messages": truth.mailbox.auto_messages,
            "generate_s": round(generated, 2),
            "read_s": round(read_s, 2),
            "read_per_s": round(n / read_s),
            "read_cpu_s": round(read_cpu, 2),
            "read_per_cpu_s": round(n / read_cpu),
            "parse_s": round(parse_s, 2),
            "parse_per_s": round(n / parse_s),
            "parse_cpu_s": round(parse_cpu, 2),
            "parse_per_cpu_s": round(n / parse_cpu),
            "normalize_s": round(normalize_s, 2),
            "normalize_per_s": round(n / normalize_s),
            "normalize_cpu_s": round(normalize_cpu, 2),
            "normalize_per_cpu_s": round(n / normalize_cpu),
            "rejects": len(whole.rejects),
            "one_batch": score(pred_whole, truth),
            "paged": {**score(pred_paged, truth), "batch_size": batch_size},
            "paged_window_at_now": {**score(pred_now, truth), "batch_size": batch_size},
            "paged_s": round(paged_s, 2),
            "load": round(os.getloadavg()[0], 1),
            "auto_only_conversations": len(auto_truth),
            "auto_only_found": len(auto_truth & auto_found),
            "auto_false": len(auto_found - auto_truth),
        }


# --------------------------------------------------------------------------- story


def _run_pipeline(config: Path) -> dict[str, Any]:
    from flows import pipeline
    from flows.config import load_settings
    from warehouse.db import connect

    settings = load_settings(config)
    con = connect(settings.warehouse.path)
    try:
        began = time.perf_counter()
        stats = {}
        for source in settings.sources:
            t0 = time.perf_counter()
            s = pipeline.ingest_source(con, settings, source.name, now=NOW)
            stats[source.name] = {**s.as_dict(), "seconds": round(time.perf_counter() - t0, 1)}
        pipeline.load_changes(con, settings)
        starts = [s["since"] for s in stats.values() if s["since"]]
        pipeline.refresh(con, datetime.fromisoformat(min(starts)) if starts else None)
        found = pipeline.detect_anomalies(con, settings, now=NOW)
        took = time.perf_counter() - began
        email = con.sql(
            "SELECT count(*) FILTER (NOT is_auto) AS counted, count(*) FILTER (is_auto) AS auto "
            "FROM core.tickets WHERE source = 'support-mail'"
        ).fetchall()[0]
        totals = con.sql(
            "SELECT sum(tickets), sum(complaints) FROM marts.complaints_daily "
            "WHERE topic = '*' AND channel = '*'"
        ).fetchall()[0]
    finally:
        con.close()
    anomalies = [
        {
            "topic": a["topic"],
            "channel": a["channel"],
            "grain": a["grain"],
            "started_at": a["started_at"].isoformat(),
            "change_id": a["change_id"],
            "ratio": round(a["ratio"], 2) if a["ratio"] is not None else None,
            "severity": a["severity"],
        }
        for a in found.sort("started_at").iter_rows(named=True)
    ]
    return {
        "seconds": round(took, 1),
        "sources": stats,
        "email_tickets_counted": email[0] if email else 0,
        "email_tickets_auto": email[1] if email else 0,
        "marts_tickets": totals[0] if totals else 0,
        "marts_complaints": totals[1] if totals else 0,
        "anomalies": anomalies,
        "verdict": verdict(anomalies),
    }


def verdict(anomalies: list[dict[str, Any]]) -> list[str]:
    """What differs from the planted story (empty: exactly the story)."""
    problems = []
    by_change: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for a in anomalies:
        if a["change_id"]:
            by_change[a["change_id"]].append(a)
    for topic, change in EXPECTED_CAUSES.items():
        hits = by_change.get(change, [])
        if not hits:
            problems.append(f"no anomaly attributed to {change}")
        elif any(a["topic"] not in (topic, "*") for a in hits):
            problems.append(f"{change} blamed for another topic: {hits}")
    for change in set(by_change) - set(EXPECTED_CAUSES.values()):
        problems.append(f"{change} blamed: {by_change[change]}")
    playback = [a for a in anomalies if a["topic"] == "playback"]
    if not playback:
        problems.append("the playback incident was not detected")
    if any(a["change_id"] for a in playback):
        problems.append(f"playback blamed on a change: {playback}")
    expected_topics = {*EXPECTED_CAUSES, "playback", "*"}
    for a in anomalies:
        if a["topic"] not in expected_topics:
            problems.append(f"unplanned anomaly: {a}")
    return problems


def bench_story(volume: float, seed: int) -> dict[str, Any]:
    from flows.demo import prepare_demo

    out: dict[str, Any] = {"volume": volume, "seed": seed, "now": NOW.isoformat()}
    with tempfile.TemporaryDirectory() as tmp:
        for label, with_mail in (("tickets_only", False), ("tickets_and_mailbox", True)):
            directory = Path(tmp) / label
            config = prepare_demo(directory, volume=volume, seed=seed)
            if with_mail:
                config.write_text(config.read_text(encoding="utf-8") + MBOX_SOURCE, "utf-8")
            out[label] = _run_pipeline(config)
    return out


# --------------------------------------------------------------------------- report


def _fmt_scores(s: dict[str, Any]) -> str:
    return (
        f"{s['precision']:.4f} | {s['recall']:.4f} | {s['f1']:.4f} | "
        f"{s['exact_threads']:.4f} | {s['named_by_root']:.4f} | {s['tickets']:,} |"
    )


def report(threads: dict[str, Any] | None, story: dict[str, Any] | None) -> str:
    lines = [
        "# Support mail: parse speed, threading accuracy, the story with email",
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d} on {platform.node() or 'this machine'} "
        f"({os.cpu_count()} CPUs, Python {platform.python_version()}) with "
        "`.venv/bin/python benchmarks/mail.py all`. The data is the demo company's "
        "generated `support.mbox` (`flows/demo_company.py`), whose truth knows every "
        "conversation. The script prints the raw numbers as JSON.",
        "",
    ]
    if threads:
        t = threads
        lines += [
            "## Parse speed",
            "",
            f"{t['messages']:,} messages ({t['mbox_mb']} MB, {t['conversations']:,} "
            f"conversations) at volume {t['volume']}, seed {t['seed']}; one process. The "
            f"machine was shared (load average {t.get('load', '?')}): CPU seconds are the "
            "figure to compare, wall seconds what this run waited.",
            "",
            "| stage | CPU s | messages/CPU-s | wall s | messages/wall-s |",
            "|---|---:|---:|---:|---:|",
            f"| read the mbox (`connectors.mailbox`) | {t['read_cpu_s']} | "
            f"{t['read_per_cpu_s']:,} | {t['read_s']} | {t['read_per_s']:,} |",
            f"| MIME parse (`transforms.mime.parse_message`) | {t['parse_cpu_s']} | "
            f"{t['parse_per_cpu_s']:,} | {t['parse_s']} | {t['parse_per_s']:,} |",
            f"| parse + thread + shape (`normalize_email`, one batch) | {t['normalize_cpu_s']} | "
            f"{t['normalize_per_cpu_s']:,} | {t['normalize_s']} | {t['normalize_per_s']:,} |",
            "",
            f"Rejected as unparseable: {t['rejects']}. The generator wrote the mailbox in "
            f"{t['generate_s']} s (with tickets.csv).",
            "",
            "## Threading accuracy",
            "",
            "Ground truth: the generator's conversations. Of the customers' replies, "
            f"{t['dropped_references']:,} lost `References` (kept `In-Reply-To`) and "
            f"{t['dropped_all_headers']:,} lost every threading header (about a quarter of "
            "those also lost the `Re:`); there are "
            f"{t['auto_messages']:,} machine messages (acknowledgements, out-of-office, "
            "bounces).",
            "",
            "| run | pairwise precision | pairwise recall | F1 | exact threads | "
            "named by root | tickets |",
            "|---|---:|---:|---:|---:|---:|---:|",
            f"| whole mailbox in one batch | {_fmt_scores(t['one_batch'])}",
            f"| pages of {t['paged']['batch_size']}, known threads = 60 days before the newest "
            f"stored message | {_fmt_scores(t['paged'])}",
            f"| pages of {t['paged']['batch_size']}, known threads = 60 days before `now` "
            f"(`flows.pipeline` today) | {_fmt_scores(t['paged_window_at_now'])}",
            "",
            f"Conversations: {t['one_batch']['conversations']:,}. *Exact threads*: share of "
            "conversations whose messages form exactly one predicted thread. *Named by root*: "
            "share of messages whose thread id is their conversation's first Message-ID "
            "(the ticket key). "
            f"Machine-only conversations (bounces, auto-replies): {t['auto_only_conversations']}"
            f", all-auto tickets found for {t['auto_only_found']} of them, "
            f"{t['auto_false']} human conversations wrongly marked all-auto.",
            "",
            "What the paged rows show: a reply whose client dropped `References` names only "
            "its parent, so when the parent was committed in an earlier page the reply needs "
            "the stored messages (`known_threads`) to find its ticket. `flows.pipeline` passes "
            "the messages of the 60 days before `now`; replaying two years of demo mail, most "
            "parents are older than that, hence the lower recall in the last row. Anchoring the "
            "window at the newest stored message of the source gives the same result for a "
            "live mailbox and restores the one-batch accuracy for a backfill. Before the fix "
            "in `transforms/threads.py` (stored messages were allowed to join *each other* by "
            'subject, so every "Re: Refund" the team sent merged), the paged run measured '
            "pairwise precision 0.077.",
            "",
        ]
    if story:
        lines += [
            "## The planted story, with the mailbox",
            "",
            f"`benchmarks/mail.py story`: the demo (volume {story['volume']}, seed "
            f"{story['seed']}) through `flows.pipeline` (ingest_source, load_changes, refresh, "
            f"detect_anomalies; no Prefect) into a temporary warehouse, now = {story['now']}.",
            "",
            "| data | email tickets counted (auto) | marts tickets | complaints | anomalies | "
            "differs from the story | pipeline s |",
            "|---|---:|---:|---:|---:|---|---:|",
        ]
        for label in ("tickets_only", "tickets_and_mailbox"):
            r = story[label]
            lines.append(
                f"| {label.replace('_', ' ')} | {r['email_tickets_counted']:,} "
                f"({r['email_tickets_auto']}) | {r['marts_tickets']:,} | "
                f"{r['marts_complaints']:,} | {len(r['anomalies'])} | "
                f"{'; '.join(r['verdict']) or 'nothing'} | {r['seconds']} |"
            )
        lines += ["", "Anomalies with the mailbox:", ""]
        lines += ["| topic | channel | grain | started | ratio | severity | change |"]
        lines += ["|---|---|---|---|---:|---:|---|"]
        for a in story["tickets_and_mailbox"]["anomalies"]:
            lines.append(
                f"| {a['topic']} | {a['channel']} | {a['grain']} | {a['started_at'][:16]} | "
                f"{a['ratio']} | {a['severity']} | {a['change_id'] or '-'} |"
            )
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=["threads", "story", "all"])
    parser.add_argument("--volume", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--batch-size", type=int, default=200)
    args = parser.parse_args()
    threads = story = None
    if args.what in ("threads", "all"):
        threads = bench_threads(args.volume, args.seed, args.batch_size)
        print(json.dumps(threads, indent=2))
    if args.what in ("story", "all"):
        story = bench_story(args.volume, args.seed)
        print(json.dumps(story, indent=2, default=str))
    if args.what == "all":
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "mail.md").write_text(report(threads, story), encoding="utf-8")
        print(f"wrote {RESULTS / 'mail.md'}")


if __name__ == "__main__":
    main()
