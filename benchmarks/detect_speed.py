"""How fast is ``transforms.anomaly.detect`` on many series at once?

Generates ``--series`` Poisson count series with a daily and weekly pattern
at hourly (or daily) grain over ``--days`` days, runs the detector once on
all of them, and prints the wall time and the peak resident memory.

``--api frame`` times ``detect`` (a Polars frame in, one scored row out per
input row); ``--api matrix`` times ``detect_matrix`` (a series x bucket
matrix in, the anomalous cells out: the same decisions, see its docstring),
the only one that fits 175 million cells. ``--api statsmodels`` fits a
per-series Holt-Winters model (statsmodels, not a dependency of backlash:
``pip install statsmodels``) to ``--sample`` series and extrapolates.

    .venv/bin/python benchmarks/detect_speed.py --series 10000 --days 730 --grain hour --api matrix
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from transforms.anomaly import Grain, _slot, detect, detect_matrix


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


def make_matrix(series: int, days: int, grain: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The same counts as :func:`make_frame` as a float32 matrix, plus each bucket's slot."""
    steps = days * 24 if grain == "hour" else days
    rng = np.random.default_rng(seed)
    t = np.arange(steps)
    hour = t % 24 if grain == "hour" else np.full(steps, 12)
    dow = (t // 24) % 7 if grain == "hour" else t % 7
    shape = (0.3 + np.exp(-((hour - 14) ** 2) / 18)) * np.where(dow < 5, 1.1, 0.75)
    level = rng.lognormal(1.0, 1.0, series)[:, None]
    x = np.empty((series, steps), dtype=np.float32)
    for lo in range(0, series, 500):  # in blocks: the float64 rates would double the memory
        x[lo : lo + 500] = rng.poisson(level[lo : lo + 500] * shape[None, :])
    start = np.datetime64("2024-01-01T00:00:00", "s")
    step = np.timedelta64(1, "h") if grain == "hour" else np.timedelta64(1, "D")
    grain_ = Grain(
        grain,
        timedelta(hours=1) if grain == "hour" else timedelta(days=1),
        168 if grain == "hour" else 7,
    )
    return x, _slot(start + step * t, grain_)


def per_series_baseline(frame: pl.DataFrame, sample: int, grain: str) -> tuple[float, int]:
    """Seconds per series for Holt-Winters (additive trend and season), fitted per series."""
    from statsmodels.tsa.holtwinters import ExponentialSmoothing

    period = 168 if grain == "hour" else 7
    names = frame["series"].unique(maintain_order=True).head(sample)
    began = time.perf_counter()
    for name in names:
        y = frame.filter(pl.col("series") == name)["value"].to_numpy().astype(float) + 1.0
        model = ExponentialSmoothing(y, trend="add", seasonal="add", seasonal_periods=period)
        fit = model.fit()
        resid = y - fit.fittedvalues
        _ = np.abs(resid) > 3 * resid.std()
    return (time.perf_counter() - began) / names.len(), names.len()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--series", type=int, default=1000)
    parser.add_argument("--days", type=int, default=730)
    parser.add_argument("--grain", choices=["hour", "day"], default="hour")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--api", choices=["frame", "matrix", "statsmodels"], default="frame")
    parser.add_argument("--chunk", type=int, default=1000, help="series per chunk (matrix)")
    parser.add_argument("--sample", type=int, default=20, help="series fitted (statsmodels)")
    args = parser.parse_args()
    if args.api == "matrix":
        # Compile (or load the cached kernel) outside the timing.
        warm_x, warm_slots = make_matrix(2, 60, args.grain, 1)
        detect_matrix(warm_x, warm_slots, 168 if args.grain == "hour" else 7)
        x, slots = make_matrix(args.series, args.days, args.grain, args.seed)
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        start, cpu = time.perf_counter(), time.process_time()
        s_idx, _ = detect_matrix(x, slots, 168 if args.grain == "hour" else 7, chunk=args.chunk)
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(
            f"cpu={cpu:.1f}s (all threads) load_avg_1min={os.getloadavg()[0]:.1f} "
            f"api=matrix series={args.series} days={args.days} grain={args.grain} "
            f"cells={x.size:,} detect_matrix={elapsed:.2f}s cells/s={x.size / elapsed:,.0f} "
            f"peak_rss={peak:,.0f}MB (input matrix {x.nbytes / 2**20:,.0f}MB, before "
            f"{rss_before:,.0f}MB) anomalies={s_idx.size}"
        )
        return
    frame = make_frame(args.series, args.days, args.grain, args.seed)
    if args.api == "statsmodels":
        per, n = per_series_baseline(frame, args.sample, args.grain)
        print(
            f"api=statsmodels Holt-Winters grain={args.grain} days={args.days}: "
            f"{per:.3f}s per series over {n} series -> {per * args.series:,.0f}s "
            f"extrapolated for {args.series:,} series (one core)"
        )
        return
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    out = detect(frame)
    elapsed = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"api=frame series={args.series} days={args.days} grain={args.grain} rows={frame.height:,} "
        f"detect={elapsed:.2f}s rows/s={frame.height / elapsed:,.0f} "
        f"peak_rss={peak:,.0f}MB (before detect {rss_before:,.0f}MB) "
        f"anomalies={out['is_anomaly'].sum()}"
    )


if __name__ == "__main__":
    main()
