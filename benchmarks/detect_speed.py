"""How fast is ``transforms.anomaly.detect`` on many series at once?

Generates ``--series`` Poisson count series with a daily and weekly pattern
at hourly (or daily) grain over ``--days`` days, runs ``detect`` once on all
of them, and prints the wall time and the peak resident memory.

    .venv/bin/python benchmarks/detect_speed.py --series 1000 --days 730 --grain hour
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from transforms.anomaly import detect


def make_frame(series: int, days: int, grain: str, seed: int) -> pl.DataFrame:
    step = timedelta(hours=1) if grain == "hour" else timedelta(days=1)
    steps = days * 24 if grain == "hour" else days
    rng = np.random.default_rng(seed)
    ts = pl.datetime_range(
        datetime(2024, 1, 1, tzinfo=UTC),
        datetime(2024, 1, 1, tzinfo=UTC) + step * (steps - 1),
        step,
        eager=True,
        time_zone="UTC",
    )
    t = np.arange(steps)
    hour = t % 24 if grain == "hour" else np.full(steps, 12)
    dow = (t // 24) % 7 if grain == "hour" else t % 7
    shape = (0.3 + np.exp(-((hour - 14) ** 2) / 18)) * np.where(dow < 5, 1.1, 0.75)
    level = rng.lognormal(1.0, 1.0, series)[:, None]
    values = rng.poisson(level * shape[None, :]).astype(np.float32)
    return pl.DataFrame(
        {
            "series": pl.Series(np.repeat(np.arange(series), steps)).cast(pl.String),
            "ts": pl.concat([ts] * series),
            "value": values.ravel(),
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--series", type=int, default=1000)
    parser.add_argument("--days", type=int, default=730)
    parser.add_argument("--grain", choices=["hour", "day"], default="hour")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    frame = make_frame(args.series, args.days, args.grain, args.seed)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    out = detect(frame)
    elapsed = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"series={args.series} days={args.days} grain={args.grain} rows={frame.height:,} "
        f"detect={elapsed:.2f}s rows/s={frame.height / elapsed:,.0f} "
        f"peak_rss={peak:,.0f}MB (before detect {rss_before:,.0f}MB) "
        f"anomalies={out['is_anomaly'].sum()}"
    )


if __name__ == "__main__":
    main()
