"""backlash's detector on the Numenta Anomaly Benchmark (NAB v1.1 scoring).

The 58 NAB series are real-valued (CPU, latency, taxi rides, tweets), so they
run through ``detect(model="gaussian")``, causally, one series at a time.
Scoring follows NAB's own ``sweeper.py`` (re-implemented here, no NAB code
is imported):

* every row gets a weighted score: inside a labelled window a detection is
  worth ``tpWeight * scaledSigmoid(position) / scaledSigmoid(-1)`` (early in
  the window is worth most), outside one ``fpWeight * scaledSigmoid(distance
  past the previous window)`` (-fpWeight before the first window);
  ``scaledSigmoid(x) = 2 / (1 + e^(5x)) - 1``, and -1 at three window widths;
* the first 15% of each file (at most 750 rows) is probationary: not scored;
* a window without a detection costs ``fnWeight``; a window's value is its
  best detection; every false positive counts;
* one threshold per profile for the whole corpus, chosen as NAB's optimiser
  does: sweep every distinct anomaly score, keep the best corpus total;
* normalised score = 100 * (raw - null) / (perfect - null), where null is the
  detector that never fires (scored the same way) and perfect detects every
  window at its first row (tpWeight x number of windows).

The anomaly score NAB thresholds is backlash's episode onset: a row's
surprise (``L = -log10 p``, as L / (L + 10) to stay in [0, 1)) counts only
if it beats every score of the ``--episode`` rows before it, so a burst of
anomalous rows is one alert, as ``transforms.episodes`` makes one alert of
one spike. This is causal and
threshold-free, so NAB's threshold sweep applies unchanged.

    .venv/bin/python benchmarks/nab.py --nab ../shared/nab
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from transforms.anomaly import detect

PROBATION = 0.15


def scaled_sigmoid(position: np.ndarray) -> np.ndarray:
    """NAB's reward curve: ~0.987 at a window's left edge, 0 at its right, -1 far past it."""
    out = 2.0 / (1.0 + np.exp(5.0 * position)) - 1.0
    return np.where(position >= 3.0, -1.0, out)


@dataclass(frozen=True, slots=True)
class Profile:
    tp: float
    fp: float
    fn: float


@dataclass
class Points:
    """Scorable rows of one file: anomaly score, weighted sweep score, window id (-1 = none)."""

    score: np.ndarray
    sweep: np.ndarray
    window: np.ndarray


def sweep_points(
    ts: np.ndarray, score: np.ndarray, windows: list[list[str]], p: Profile, base: int
) -> Points:
    """Per-row weighted scores as NAB's ``Sweeper.calcSweepScore``; window ids start at ``base``."""
    n = ts.size
    probation = min(math.floor(PROBATION * n), PROBATION * 5000)
    sweep = np.empty(n)
    window = np.full(n, -1)
    max_tp = float(scaled_sigmoid(np.array([-1.0]))[0])
    bounds = []
    for start, end in windows:
        lo = int(np.searchsorted(ts, np.datetime64(start.replace(" ", "T")), side="left"))
        hi = int(np.searchsorted(ts, np.datetime64(end.replace(" ", "T")), side="right")) - 1
        bounds.append((lo, hi))
    idx = np.arange(n)
    prev_right, prev_width = None, None
    cursor = 0
    for k, (lo, hi) in enumerate([*bounds, (n, n)]):
        # Rows between the previous window and this one: false positives.
        gap = idx[cursor:lo]
        if prev_right is None:
            sweep[gap] = -1.0 * p.fp
        else:
            position = np.abs(prev_right - gap) / float(prev_width - 1)
            sweep[gap] = scaled_sigmoid(position) * p.fp
        if lo >= n:
            break
        width = float(hi - lo + 1)
        inside = idx[lo : hi + 1]
        position = -(hi - inside + 1) / width
        sweep[inside] = scaled_sigmoid(position) * p.tp / max_tp
        window[inside] = base + k
        prev_right, prev_width = hi, width
        cursor = hi + 1
    keep = idx >= probation
    return Points(score[keep], sweep[keep], window[keep])


def best_threshold(points: list[Points], p: Profile) -> tuple[float, float]:
    """NAB's corpus-wide threshold sweep: (best raw score, its threshold)."""
    score = np.concatenate([q.score for q in points])
    sweep = np.concatenate([q.sweep for q in points])
    window = np.concatenate([q.window for q in points])
    windows = np.unique(window[window >= 0])
    best_in = dict.fromkeys(windows.tolist(), -p.fn)
    total = -p.fn * len(windows)
    order = np.argsort(-score, kind="stable")
    best, best_t = total, 1.1
    i = 0
    while i < order.size:
        t = score[order[i]]
        j = i
        while j < order.size and score[order[j]] == t:
            r = order[j]
            w = int(window[r])
            if w < 0:
                total += sweep[r]
            elif sweep[r] > best_in[w]:
                total += sweep[r] - best_in[w]
                best_in[w] = sweep[r]
            j += 1
        if total > best:
            best, best_t = total, float(t)
        i = j
    return best, best_t


def episode_onsets(score: np.ndarray, episode: int) -> np.ndarray:
    """A row's score if it beats the ``episode`` rows before it, else 0 (causal)."""
    s = np.nan_to_num(score, nan=0.0)
    if episode <= 0:
        return s
    prev_max = (
        pl.Series(s).shift(1).rolling_max(window_size=episode, min_samples=1).fill_null(0.0)
    ).to_numpy()
    return np.where(s > prev_max, s, 0.0)


def _check_scores(
    ts: np.ndarray, windows: list[list[str]], rng: np.random.Generator, *, perfect: bool
) -> np.ndarray:
    """``--check``: 1 at each window's first row (perfect) or uniform noise (random)."""
    if not perfect:
        return rng.random(ts.size)
    out = np.zeros(ts.size)
    for start, _ in windows:
        out[int(np.searchsorted(ts, np.datetime64(start.replace(" ", "T"))))] = 1.0
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nab", type=Path, default=Path("../shared/nab"))
    parser.add_argument("--window", type=int, default=1000, help="look-back rows of the detector")
    parser.add_argument("--episode", type=int, default=200, help="rows one alert covers")
    parser.add_argument(
        "--check",
        choices=["perfect", "random"],
        help="score a perfect (must give 100) or uniform-random detector instead of backlash",
    )
    args = parser.parse_args()
    root = args.nab
    labels = json.loads((root / "labels/combined_windows.json").read_text())
    profiles = {
        name: Profile(
            c["CostMatrix"]["tpWeight"], c["CostMatrix"]["fpWeight"], c["CostMatrix"]["fnWeight"]
        )
        for name, c in json.loads((root / "config/profiles.json").read_text()).items()
    }
    began = time.perf_counter()
    rng = np.random.default_rng(0)
    files: list[tuple[str, np.ndarray, np.ndarray]] = []
    for rel in sorted(labels):
        data = pl.read_csv(root / "data" / rel, try_parse_dates=True)
        frame = data.select(pl.col("timestamp").cast(pl.Datetime("us")).alias("ts"), "value")
        scored = detect(frame, model="gaussian", window=args.window)
        ts = frame["ts"].to_numpy().astype("datetime64[us]")
        # -log10 p mapped into [0, 1) without saturating: ``score`` tops out at
        # 1 for every p < 1e-10, and NAB's threshold sweep needs an order.
        surprise = -np.log10(np.maximum(scored["p_value"].fill_null(1.0).to_numpy(), 1e-300))
        anomaly = episode_onsets(surprise / (surprise + 10.0), args.episode)
        if args.check:
            anomaly = _check_scores(ts, labels[rel], rng, perfect=args.check == "perfect")
        files.append((rel, ts, anomaly))
    elapsed = time.perf_counter() - began
    n_windows = sum(len(w) for w in labels.values())
    ours = {}
    for name, prof in profiles.items():
        base, pts, nulls = 0, [], []
        for rel, ts, score in files:
            pts.append(sweep_points(ts, score, labels[rel], prof, base))
            nulls.append(sweep_points(ts, np.zeros(ts.size), labels[rel], prof, base))
            base += len(labels[rel])
        raw, threshold = best_threshold(pts, prof)
        null, _ = best_threshold(nulls, prof)
        perfect = prof.tp * n_windows
        ours[name] = (100 * (raw - null) / (perfect - null), threshold, raw, null)
    board = json.loads((root / "results/final_results.json").read_text())
    board[f"backlash ({args.check or 'gaussian'}, this run)"] = {k: v[0] for k, v in ours.items()}
    print(f"{len(files)} files, {sum(f[1].size for f in files):,} rows, detect {elapsed:.1f}s")
    for name, (norm, thr, raw, null) in ours.items():
        print(f"  {name}: score {norm:.1f} (raw {raw:.2f}, null {null:.2f}, threshold {thr:.3f})")
    print("\n| detector | standard | reward_low_FP_rate | reward_low_FN_rate |\n|---|---|---|---|")
    for det, s in sorted(board.items(), key=lambda kv: -kv[1]["standard"]):
        print(
            f"| {det} | {s['standard']:.1f} | {s['reward_low_FP_rate']:.1f} "
            f"| {s['reward_low_FN_rate']:.1f} |"
        )


if __name__ == "__main__":
    main()
