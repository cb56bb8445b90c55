"""The pure monitoring step: counts in, anomalies (marts.anomalies rows) out.

The flow reads the warehouse, calls :func:`monitor` with the current time and
stores what it returns; :func:`backtest` replays the same step over history.
Both are pure: the clock is a parameter, the data are frames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import polars as pl

from transforms.anomaly import DAY, HOUR, detect
from transforms.attribution import AttributionSettings, attribute
from transforms.episodes import Severity, episodes
from transforms.schema import ANOMALIES, conform, empty

_BUSY = "__non_complaints__"


@dataclass(frozen=True, slots=True)
class MonitorSettings:
    """Every knob of detection and attribution; the flow maps config keys onto it."""

    alpha: float = 0.01
    min_excess: float = 8.0
    min_ratio: float = 1.5
    window_days: int = 14
    grain: str = "day"  # "day" | "hour"
    min_history: int | None = None  # buckets; None = the detector's default
    max_gap: int = 1  # calm buckets allowed inside one episode
    per_channel: bool = False
    severity: Severity = field(default_factory=Severity)
    attribution_threshold: float = 0.2
    slack_days: float = 1.0
    examples: int = 4
    # Alarm level of the sequential (CUSUM) test, in nats; None = the bucket
    # tests' own false-alarm budget (see transforms.anomaly.cusum_threshold).
    cusum_h: float | None = None


def as_utc(frame: pl.DataFrame, *columns: str) -> pl.DataFrame:
    """Timestamps in one zone spelling ("UTC"): DuckDB may hand back "Etc/UTC"
    (or none), and Polars refuses to compare the two."""
    exprs = []
    for name in columns:
        dtype = frame.schema.get(name)
        if isinstance(dtype, pl.Datetime):
            col = pl.col(name).dt.cast_time_unit("us")
            col = (
                col.dt.replace_time_zone("UTC")
                if dtype.time_zone is None
                else col.dt.convert_time_zone("UTC")
            )
            exprs.append(col.alias(name))
    return frame.with_columns(exprs) if exprs else frame


def _inputs(
    counts: pl.DataFrame, tickets: pl.DataFrame, changes: pl.DataFrame
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    return (
        as_utc(counts, "bucket"),
        as_utc(tickets, "created_at"),
        as_utc(changes, "announced_at", "effective_at"),
    )


def _step(grain: str) -> timedelta:
    return HOUR if grain == "hour" else DAY


def series_name(grain: str, topic: str, channel: str) -> str:
    return f"{grain}/topic={topic}/channel={channel}"


def _series(counts: pl.DataFrame, settings: MonitorSettings, now: datetime) -> pl.DataFrame:
    """Complaints per topic (all channels), overall, optionally per channel, plus
    the non-complaint tickets of all topics: the busyness of the season."""
    step = _step(settings.grain)
    complete = counts.filter(pl.col("bucket") + step <= now)
    keep = pl.col("channel") == "*"
    if settings.per_channel:
        keep = keep | (pl.col("topic") == "*")
    monitored = complete.filter(keep).select(
        pl.concat_str(
            pl.lit(f"{settings.grain}/topic="), "topic", pl.lit("/channel="), "channel"
        ).alias("series"),
        pl.col("bucket").alias("ts"),
        pl.col("complaints").cast(pl.Float64).alias("value"),
    )
    busy = complete.filter((pl.col("topic") == "*") & (pl.col("channel") == "*")).select(
        pl.lit(_BUSY).alias("series"),
        pl.col("bucket").alias("ts"),
        (pl.col("tickets") - pl.col("complaints")).cast(pl.Float64).alias("value"),
    )
    return pl.concat([monitored, busy])


def _busyness(scored: pl.DataFrame, found: pl.DataFrame, step: timedelta) -> pl.Series:
    """Observed / expected non-complaint tickets over each episode (1 = a normal week).

    When everything rises together (a busy season, a marketing push), the
    complaint ratio divided by this is what is left of a backlash.
    """
    busy = scored.filter(pl.col("series") == _BUSY).select("ts", "value", "expected")
    out = []
    for start, last in zip(found["started_at"], found["last_anomalous_at"], strict=True):
        window = busy.filter((pl.col("ts") >= start) & (pl.col("ts") <= last))
        obs, exp = window["value"].sum(), window["expected"].sum()
        out.append(obs / exp if exp and not math.isnan(exp) and exp > 0 else 1.0)
    return pl.Series("busyness", out, dtype=pl.Float64)


def _score_episodes(counts: pl.DataFrame, settings: MonitorSettings, now: datetime) -> pl.DataFrame:
    step = _step(settings.grain)
    frame = _series(counts, settings, now)
    if frame.is_empty():
        return pl.DataFrame()
    # The busyness series is scored on its own: it must not take part in the
    # false-discovery control of the complaint series.
    options = {
        "alpha": settings.alpha,
        "min_excess": settings.min_excess,
        "min_ratio": settings.min_ratio,
        "min_history": settings.min_history,
        "cusum_h": settings.cusum_h,
    }
    scored = pl.concat(
        [
            detect(frame.filter(pl.col("series") != _BUSY), **options),  # type: ignore[arg-type]
            detect(frame.filter(pl.col("series") == _BUSY), **options),  # type: ignore[arg-type]
        ]
    )
    found = episodes(
        scored.filter(pl.col("series") != _BUSY),
        now=now,
        step=step,
        max_gap=settings.max_gap,
        severity=settings.severity,
    )
    if found.is_empty():
        return found
    found = found.with_columns(_busyness(scored, found, step))
    # A backlash is complaints rising beyond what the season's traffic explains.
    found = found.filter(
        pl.col("ratio") / pl.col("busyness").clip(lower_bound=1.0) >= settings.min_ratio
    )
    parts = pl.col("series").str.extract_groups(r"^(\w+)/topic=(.*)/channel=(.*)$")
    found = found.with_columns(
        parts.struct.field("1").alias("grain"),
        parts.struct.field("2").alias("topic"),
        parts.struct.field("3").alias("channel"),
    )
    return _one_alert_per_backlash(found)


def _one_alert_per_backlash(found: pl.DataFrame) -> pl.DataFrame:
    """Drop episodes another episode of the same days already tells.

    A pricing backlash also lifts the all-topics total, and with per-channel
    series on, the email channel of pricing too. Leadership should get one
    email naming the topic: the total speaks only when no topic explains it
    (a diffuse rise), and a channel only when its topic as a whole did not fire.
    """
    spans = found.select("topic", "channel", "started_at", "last_anomalous_at")
    pairs = found.with_row_index("_row").join(spans, how="cross", suffix="_other")
    overlaps = (pl.col("started_at") <= pl.col("last_anomalous_at_other")) & (
        pl.col("started_at_other") <= pl.col("last_anomalous_at")
    )
    total_told_by_topic = (
        (pl.col("topic") == "*")
        & (pl.col("topic_other") != "*")
        & (pl.col("channel_other") == pl.col("channel"))
    )
    channel_told_by_topic = (
        (pl.col("channel") != "*")
        & (pl.col("channel_other") == "*")
        & (pl.col("topic_other") == pl.col("topic"))
    )
    covered = pairs.filter(overlaps & (total_told_by_topic | channel_told_by_topic))["_row"]
    return (
        found.with_row_index("_row").filter(~pl.col("_row").is_in(covered.implode())).drop("_row")
    )


def _attribution_settings(settings: MonitorSettings) -> AttributionSettings:
    return AttributionSettings(
        window_days=settings.window_days,
        slack_days=settings.slack_days,
        threshold=settings.attribution_threshold,
        examples=settings.examples,
    )


def monitor(
    counts: pl.DataFrame,
    tickets: pl.DataFrame,
    changes: pl.DataFrame,
    *,
    now: datetime,
    settings: MonitorSettings = MonitorSettings(),
) -> pl.DataFrame:
    """All episodes known at ``now`` (complete buckets only), attributed; ANOMALIES schema."""
    counts, tickets, changes = _inputs(counts, tickets, changes)
    found = _score_episodes(counts, settings, now)
    if found.is_empty():
        return empty(ANOMALIES)
    found = attribute(
        found,
        tickets,
        changes,
        now=now,
        step=_step(settings.grain),
        settings=_attribution_settings(settings),
    )
    return conform(found, ANOMALIES)


def backtest(
    counts: pl.DataFrame,
    tickets: pl.DataFrame,
    changes: pl.DataFrame,
    *,
    start: datetime,
    end: datetime,
    step: timedelta,
    settings: MonitorSettings = MonitorSettings(),
) -> pl.DataFrame:
    """Episodes a monitor scheduled every ``step`` from ``start`` would have raised by ``end``.

    ``detect`` is causal, so one pass over the history up to ``end`` gives
    every episode's onset exactly as the scheduled runs would have seen it;
    ``detected_at`` is the first scheduled run at or after the onset bucket
    closed, and attribution reads only tickets created before it.
    """
    counts, tickets, changes = _inputs(counts, tickets, changes)
    found = _score_episodes(counts, settings, end)
    if found.is_empty():
        return empty(ANOMALIES)
    closed = found["detected_at"]  # end of the first anomalous bucket
    runs = [start + step * max(0, math.ceil((c - start) / step)) for c in closed.to_list()]
    found = found.with_columns(pl.Series("detected_at", runs, dtype=closed.dtype)).filter(
        (pl.col("detected_at") >= start) & (pl.col("detected_at") <= end)
    )
    if found.is_empty():
        return empty(ANOMALIES)
    found = attribute(
        found,
        tickets,
        changes,
        now=end,
        step=_step(settings.grain),
        settings=_attribution_settings(settings),
        cutoff=found["detected_at"],
    )
    return conform(found, ANOMALIES).sort("detected_at", "series")
