"""Planted backlashes with known truth, replayed through ``transforms.monitor.backtest``.

Each scenario is a synthetic support desk (complaints and questions per topic
per day, negative-binomial noise, a weekly rhythm, slow growth) with spikes
planted at known days and a change calendar saying what caused them. The
monitor is replayed with a daily step over the last year, as a scheduled run
would have seen it, and every alert is matched to the truth:

* an alert *matches* a planted spike when it is on the spike's topic (or on
  the all-topics total) and starts between one day before the onset and one
  day after the spike ended; any other alert is a false alert;
* recall = spikes with at least one matching alert; precision = matching
  alerts / alerts; attribution = first matching alert's ``change_id`` equals
  the planted cause (``None`` for the spike no change explains);
* delay = ``detected_at`` minus the onset day's start (a daily run cannot
  know a day before it is over, so one day is the floor); also from the
  *material onset*, the first day the planted excess reaches the monitor's
  ``min_ratio`` and ``min_excess`` (the onset itself for sudden spikes; day
  5 of the two-week ramp): see :func:`material_onset`.

Ticket *texts* are what attribution reads; at 50,000 complaints a day they are
thinned (every bucket keeps the same mix of backlash and ordinary texts) so
the benchmark runs in seconds, while the counts the detector sees are full.

    .venv/bin/python benchmarks/planted.py --seeds 5
    .venv/bin/python benchmarks/planted.py --seeds 5 --cusum-h 8   # faster, tuned here
    .venv/bin/python benchmarks/planted.py --reachable             # best delay for a ramp
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from transforms.monitor import MonitorSettings, backtest
from transforms.schema import COMPLAINT_COUNTS, PRODUCT_CHANGES, conform

START = datetime(2024, 1, 1, tzinfo=UTC)  # a Monday
DAY = timedelta(days=1)
DAYS = 730
REPLAY_FROM = 365  # the backtest replays the second year
TEXT_CAP = 400  # ticket texts kept per day and topic (counts are never thinned)

NORMAL: dict[str, tuple[str, ...]] = {
    "pricing": (
        "Question about my invoice",
        "How do I update my payment card?",
        "Receipt missing for last month",
        "Can I change my plan to annual?",
    ),
    "playback": (
        "Subtitles out of sync",
        "Audio language wrong on one film",
        "Video quality looks low on my TV",
        "Episode order is wrong",
    ),
    "account": (
        "Cannot reset my password",
        "Change the email on my account",
        "Two factor code never arrives",
        "Login page keeps reloading",
    ),
    "catalog": (
        "A film I liked is not in the catalogue",
        "Search does not find a series",
        "Wrong poster on a documentary",
        "When does the new season arrive?",
    ),
}
BACKLASH: dict[str, tuple[str, ...]] = {
    "price": (
        "My bill went up again, this is outrageous",
        "Why was I charged more this month? Too expensive now",
        "The new price is a joke, I am cancelling",
        "You raised the cost of my subscription without asking",
    ),
    "downloads": (
        "Offline downloads are gone from my plan",
        "Why did you remove downloads? I watch on the train",
        "I cannot download episodes anymore, bring it back",
        "Downloads disappeared from the app after the update",
    ),
    "profiles": (
        "My kids' profiles were deleted",
        "Why can I only have two profiles now?",
        "You removed the family profiles, my household shares one account",
        "Profiles limit is ridiculous, we are a family of five",
    ),
    "outage": (
        "Video keeps buffering and then stops",
        "Playback error on every film tonight",
        "Streaming is broken, black screen when I press play",
        "Everything freezes after a few seconds of playback",
    ),
}
CHANGES: dict[str, dict[str, object]] = {
    "price-rise": {
        "title": "Standard plan price rise",
        "kind": "price",
        "description": "Standard plan goes from $9.99 to $12.99 a month.",
        "areas": ["pricing", "billing"],
        "keywords": ["price", "increase"],
    },
    "price-rollback": {
        "title": "Standard plan price restored",
        "kind": "price",
        "description": "We heard you: the old price is back.",
        "areas": ["pricing"],
        "keywords": ["price"],
        "reverts": "price-rise",
    },
    "downloads-removal": {
        "title": "Offline downloads leave the Basic plan",
        "kind": "removal",
        "description": "Downloads for offline viewing are removed from Basic.",
        "areas": ["catalog", "apps"],
        "keywords": ["downloads", "offline"],
    },
    "profiles-limit": {
        "title": "Two profiles per household",
        "kind": "removal",
        "description": "Accounts keep at most two profiles; extra profiles are deleted.",
        "areas": ["account"],
        "keywords": ["profiles", "household"],
    },
    # Harmless releases: nobody complains about them.
    "ui-refresh": {
        "title": "New home screen layout",
        "kind": "release",
        "description": "A redesigned home screen with bigger artwork and a new menu.",
        "areas": ["ui"],
        "keywords": ["design", "menu"],
    },
    "dark-theme": {
        "title": "Dark theme",
        "kind": "release",
        "description": "A dark theme for the web player.",
        "areas": ["ui"],
        "keywords": ["theme"],
    },
    "faster-search": {
        "title": "Faster search",
        "kind": "release",
        "description": "Search results now appear as you type.",
        "areas": ["search"],
        "keywords": ["search"],
    },
    "tv-app": {
        "title": "Android TV app 4.0",
        "kind": "release",
        "description": "A new Android TV app with voice control.",
        "areas": ["apps"],
        "keywords": ["android", "tv"],
    },
    "gift-cards": {
        "title": "Gift cards",
        "kind": "release",
        "description": "Gift cards can be bought in the web shop.",
        "areas": ["shop"],
        "keywords": ["gift"],
    },
}


@dataclass(frozen=True, slots=True)
class Spike:
    """A planted backlash: ``extra`` x the topic's base rate on top, for ``days`` days.

    ``ramp`` days rise linearly from zero to the full ``extra`` (a slow burn).
    """

    topic: str
    onset: int
    days: int
    extra: float
    texts: str
    cause: str | None
    ramp: int = 0


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    base: dict[str, float]  # complaints per day per topic (weekday mean ~1.1x)
    spikes: tuple[Spike, ...] = ()
    # change id -> (announced day, effective day)
    calendar: dict[str, tuple[int, int]] = field(default_factory=dict)


HARMLESS = {
    "ui-refresh": (430, 430),
    "dark-theme": (480, 480),
    "faster-search": (530, 530),
    "tv-app": (600, 600),
    "gift-cards": (660, 667),
}
MID = {"pricing": 30.0, "playback": 40.0, "account": 25.0, "catalog": 20.0}

SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "sudden spikes",
        MID,
        (
            Spike("pricing", 420, 6, 1.5, "price", "price-rise"),
            Spike("catalog", 560, 4, 1.2, "downloads", "downloads-removal"),
        ),
        {"price-rise": (420, 440), "downloads-removal": (560, 560), **HARMLESS},
    ),
    Scenario(
        "slow burn (two weeks)",
        MID,
        (Spike("account", 500, 40, 1.2, "profiles", "profiles-limit", ramp=14),),
        {"profiles-limit": (486, 500), **HARMLESS},
    ),
    Scenario(
        "small shop (5/day)",
        {"pricing": 2.0, "playback": 2.0, "account": 1.0},
        (Spike("pricing", 450, 3, 6.0, "price", "price-rise"),),
        {"price-rise": (450, 450), **HARMLESS},
    ),
    Scenario(
        "large (50,000/day)",
        {"pricing": 15_000.0, "playback": 20_000.0, "account": 15_000.0},
        (Spike("pricing", 450, 4, 1.0, "price", "price-rise"),),
        {"price-rise": (450, 450), **HARMLESS},
    ),
    Scenario("quiet year, harmless changes", MID, (), dict(HARMLESS)),
    Scenario(
        "spike with no change",
        MID,
        (Spike("playback", 470, 2, 2.0, "outage", None),),
        {"ui-refresh": (468, 468), "tv-app": (466, 466)},
    ),
    Scenario(
        "price rise and rollback",
        MID,
        (
            Spike("pricing", 400, 4, 0.8, "price", "price-rise"),
            Spike("pricing", 420, 14, 1.3, "price", "price-rise"),
        ),
        {"price-rise": (400, 420), "price-rollback": (433, 434), "ui-refresh": (600, 600)},
    ),
)


def _extra(spike: Spike, days: np.ndarray) -> np.ndarray:
    k = days - spike.onset
    inside = (k >= 0) & (k < spike.days)
    ramp = np.clip((k + 1) / spike.ramp, 0.0, 1.0) if spike.ramp else np.ones(days.size)
    return np.where(inside, spike.extra * ramp, 0.0)


def material_onset(spike: Spike, base: float, settings: MonitorSettings) -> int:
    """First day the planted excess is *material* by the monitor's own rule.

    For a sudden spike that is its onset. A slow burn's first days add +9%,
    +17%, ... : no detector configured to ignore rises under ``min_ratio``
    (and ``min_excess`` tickets) may raise them, so its delay is also
    reported from the first day the expected excess crosses both.
    """
    days = np.arange(spike.onset, spike.onset + spike.days)
    weekly = np.where((days + START.weekday()) % 7 < 5, 1.12, 0.7)
    growth = 1.0 + 0.15 * days / DAYS
    ratio = _extra(spike, days)
    excess = ratio * base * weekly * growth
    ok = (ratio >= settings.min_ratio - 1.0) & (excess >= settings.min_excess)
    return int(days[np.argmax(ok)]) if ok.any() else spike.onset


def reachable_delay(
    base: float,
    *,
    extra: float = 1.2,
    ramp: int = 14,
    phi: float = 0.01,
    z: float = 3.67,
    settings: MonitorSettings | None = None,
) -> tuple[int, int]:
    """Days from a ramp's start until (a) an *oracle* could call it and (b) it is material.

    The oracle knows the baseline exactly and that a linear ramp began on day
    0, and sums the excess since then (the most powerful test there is for
    that alternative); it calls the rise when the sum reaches ``z`` standard
    deviations of the null noise (NB, variance mu + phi mu^2). z = 3.67 is
    the one-sided p of 1.2e-4 the bucket tests need (alpha 0.01 over 84 tests
    per four weeks). Returned as daily-run delays (a day is known at its
    end): no detector with the same false-alarm budget does better, and none
    configured to ignore rises under ``min_ratio`` / ``min_excess`` raises
    them before (b).
    """
    s = settings or MonitorSettings()
    days = np.arange(ramp * 3)
    ratio = extra * np.minimum((days + 1) / ramp, 1.0)
    excess = np.cumsum(ratio * base)
    noise = np.sqrt(np.cumsum(np.full(days.size, base + phi * base * base)))
    called = int(days[np.argmax(excess >= z * noise)]) + 1
    material = (ratio >= s.min_ratio - 1.0) & (ratio * base >= s.min_excess)
    return called, (int(days[np.argmax(material)]) + 1 if material.any() else -1)


def _nb(rng: np.random.Generator, mu: np.ndarray, phi: float = 0.01) -> np.ndarray:
    """Negative binomial counts of mean ``mu`` and variance mu + phi mu^2."""
    r = 1.0 / phi
    return rng.poisson(rng.gamma(r, mu / r)).astype(np.int64)


def simulate(scenario: Scenario, seed: int) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Counts (COMPLAINT_COUNTS, channel '*'), ticket texts and the change calendar."""
    rng = np.random.default_rng(seed)
    days = np.arange(DAYS)
    weekly = np.where((days + START.weekday()) % 7 < 5, 1.12, 0.7)
    growth = 1.0 + 0.15 * days / DAYS
    counts, texts = [], []
    for topic, base in scenario.base.items():
        mu = base * weekly * growth
        ordinary = _nb(rng, mu)
        questions = _nb(rng, 2.0 * mu)
        extra = np.zeros(DAYS, dtype=np.int64)
        kinds: list[tuple[np.ndarray, tuple[str, ...]]] = []
        for spike in scenario.spikes:
            if spike.topic == topic:
                planted = rng.poisson(_extra(spike, days) * base * weekly * growth)
                extra += planted
                kinds.append((planted, BACKLASH[spike.texts]))
        counts.append(
            pl.DataFrame(
                {
                    "bucket": [START + DAY * int(d) for d in days],
                    "topic": topic,
                    "complaints": ordinary + extra,
                    "tickets": ordinary + extra + questions,
                }
            )
        )
        keep = np.minimum(1.0, TEXT_CAP / np.maximum(ordinary + extra + questions, 1))
        for label, n, pool, complaint in (
            ("n", ordinary, NORMAL[topic], True),
            ("q", questions, NORMAL[topic], False),
            *(("x", planted, pool, True) for planted, pool in kinds),
        ):
            kept = rng.binomial(n, keep)
            day = np.repeat(days, kept)
            texts.append(
                pl.DataFrame(
                    {
                        "day": day,
                        "minute": rng.integers(0, 1440, day.size),
                        "subject": np.asarray(pool)[rng.integers(0, len(pool), day.size)],
                    }
                ).with_columns(
                    pl.lit(topic).alias("topic"),
                    pl.lit(label).alias("label"),
                    pl.lit(complaint).alias("is_complaint"),
                )
            )
    per_topic = pl.concat(counts)
    total = per_topic.group_by("bucket").agg(pl.col("complaints", "tickets").sum())
    frame = pl.concat(
        [per_topic, total.with_columns(pl.lit("*").alias("topic"))], how="diagonal"
    ).with_columns(pl.lit("*").alias("channel"), pl.lit(0).alias("cancel_intents"))
    tickets = (
        pl.concat(texts)
        .with_row_index("i")
        .select(
            pl.format("t{}-{}-{}", "topic", "label", "i").alias("ticket_key"),
            (pl.lit(START) + pl.duration(days=pl.col("day"), minutes=pl.col("minute")))
            .dt.cast_time_unit("us")
            .alias("created_at"),
            "subject",
            pl.format("Hello, {}. Regards, a customer", pl.col("subject").str.to_lowercase()).alias(
                "body"
            ),
            pl.concat_list(pl.col("topic")).alias("topics"),
            "is_complaint",
        )
    )
    rows = []
    for change_id, (announced, effective) in scenario.calendar.items():
        info = CHANGES[change_id]
        rows.append(
            {
                "change_id": change_id,
                "title": info["title"],
                "kind": info["kind"],
                "description": info["description"],
                "announced_at": START + DAY * announced + timedelta(hours=9),
                "effective_at": START + DAY * effective + timedelta(hours=9),
                "areas": info["areas"],
                "keywords": info["keywords"],
                "reverts": info.get("reverts"),
            }
        )
    return conform(frame, COMPLAINT_COUNTS), tickets, conform(pl.DataFrame(rows), PRODUCT_CHANGES)


@dataclass
class Outcome:
    scenario: str
    seed: int
    spikes: int = 0
    found: int = 0
    alerts: int = 0
    matched_alerts: int = 0
    attributed: int = 0
    delays: list[float] = field(default_factory=list)
    material_delays: list[float] = field(default_factory=list)
    false_alerts: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def score(
    scenario: Scenario,
    seed: int,
    alerts: pl.DataFrame,
    settings: MonitorSettings | None = None,
) -> Outcome:
    out = Outcome(scenario.name, seed, spikes=len(scenario.spikes), alerts=alerts.height)
    matched: set[int] = set()
    for spike in scenario.spikes:
        onset = START + DAY * spike.onset
        hits = alerts.with_row_index("_i").filter(
            pl.col("topic").is_in([spike.topic, "*"])
            & (pl.col("started_at") >= onset - DAY)
            & (pl.col("started_at") <= onset + DAY * (spike.days + 1))
        )
        matched |= set(hits["_i"].to_list())
        if hits.is_empty():
            out.notes.append(f"missed {spike.topic}@{spike.onset}")
            continue
        out.found += 1
        first = hits.sort("detected_at").row(0, named=True)
        out.delays.append((first["detected_at"] - onset) / DAY)
        material = material_onset(spike, scenario.base[spike.topic], settings or MonitorSettings())
        out.material_delays.append((first["detected_at"] - (START + DAY * material)) / DAY)
        if first["change_id"] == spike.cause:
            out.attributed += 1
        else:
            out.notes.append(
                f"{spike.topic}@{spike.onset} blamed {first['change_id']} not {spike.cause}"
            )
    out.matched_alerts = len(matched)
    for i, row in enumerate(alerts.iter_rows(named=True)):
        if i not in matched:
            day = (row["started_at"] - START) / DAY
            out.false_alerts.append(f"{row['topic']}@{day:.0f}")
    return out


def run(seeds: int, settings: MonitorSettings) -> list[Outcome]:
    outcomes = []
    for scenario in SCENARIOS:
        for seed in range(seeds):
            counts, tickets, calendar = simulate(scenario, seed)
            alerts = backtest(
                counts,
                tickets,
                calendar,
                start=START + DAY * REPLAY_FROM,
                end=START + DAY * DAYS,
                step=DAY,
                settings=settings,
            )
            outcome = score(scenario, seed, alerts, settings)
            if scenario.name.startswith("price rise and rollback"):
                effective = alerts.filter(
                    (pl.col("topic") == "pricing") & (pl.col("started_at") >= START + DAY * 419)
                )
                rolled = effective.filter(pl.col("reverted_by") == "price-rollback")
                outcome.notes.append(
                    "rollback tracked"
                    if rolled.height and rolled["recovery_hours"].is_not_null().all()
                    else "rollback NOT tracked"
                )
            outcomes.append(outcome)
    return outcomes


def _ratio(num: float, den: float) -> str:
    return f"{num / den:.3f}" if den else "n/a"


def table(outcomes: list[Outcome]) -> str:
    lines = [
        "| scenario | runs | spikes | recall | precision | attribution | within 2 days "
        "| median delay (days) | within 2 days of material onset | median delay from it "
        "| alerts per found spike | false alerts |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    groups: dict[str, list[Outcome]] = {}
    for o in outcomes:
        groups.setdefault(o.scenario, []).append(o)
    groups["**all**"] = outcomes
    for name, group in groups.items():
        spikes = sum(o.spikes for o in group)
        found = sum(o.found for o in group)
        alerts = sum(o.alerts for o in group)
        matched = sum(o.matched_alerts for o in group)
        delays = [d for o in group for d in o.delays]
        mdelays = [d for o in group for d in o.material_delays]
        lines.append(
            f"| {name} | {len(group)} | {spikes} | {_ratio(found, spikes)} "
            f"| {_ratio(matched, alerts)} | {_ratio(sum(o.attributed for o in group), found)} "
            f"| {_ratio(sum(d <= 2 for d in delays), len(delays))} "
            f"| {statistics.median(delays) if delays else 'n/a'} "
            f"| {_ratio(sum(d <= 2 for d in mdelays), len(mdelays))} "
            f"| {statistics.median(mdelays) if mdelays else 'n/a'} "
            f"| {_ratio(matched, found)} | {sum(len(o.false_alerts) for o in group)} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=5, help="runs per scenario")
    parser.add_argument("--verbose", action="store_true", help="print every miss and false alert")
    parser.add_argument(
        "--reachable", action="store_true", help="print the best delay a two-week ramp allows"
    )
    parser.add_argument(
        "--cusum-h",
        type=float,
        default=None,
        help="the CUSUM's alarm level in nats (default: from alpha; 0: off)",
    )
    args = parser.parse_args()
    if args.reachable:
        print("| complaints/day | oracle call, z=3.67 (days) | oracle call, z=3.0 | material |")
        print("|---|---|---|---|")
        for base in (5.0, 25.0, 100.0, 1000.0, 50_000.0):
            strict, material = reachable_delay(base)
            loose, _ = reachable_delay(base, z=3.0)
            print(f"| {base:,.0f} | {strict} | {loose} | {material} |")
        return
    began = time.perf_counter()
    outcomes = run(args.seeds, MonitorSettings(cusum_h=args.cusum_h))
    print(table(outcomes))
    print(f"\n{len(outcomes)} runs in {time.perf_counter() - began:.1f}s")
    for o in outcomes:
        if args.verbose or o.false_alerts or any("NOT" in n or "missed" in n for n in o.notes):
            print(f"- {o.scenario} seed {o.seed}: false={o.false_alerts} notes={o.notes}")


if __name__ == "__main__":
    main()
