"""Causal spike detection on count series (complaints per bucket).

The model is a robust seasonal level, updated one bucket at a time across all
series at once (a series x time matrix, one NumPy step per bucket):

* expected = level x seasonal factor (day-of-week for daily grain,
  hour-of-week for hourly grain, inferred from the spacing of ``ts``);
* updates are *winsorised*: a bucket far above its band only moves the level
  as if it had been at the band's edge, so a spike does not inflate the
  baseline that follows it and cannot mask a later spike;
* over-dispersion is a negative binomial whose dispersion is estimated from
  past (winsorised) residuals;
* slow burns are tested by 3- and 7-bucket sums against a level lagged behind
  a guard gap, so a rising level cannot absorb itself.

An anomaly needs statistical surprise (Benjamini-Hochberg across the series
tested at the same timestamp) *and* material size (``min_excess`` and
``min_ratio``): a p-value alone would page people about +3 tickets.

Because every quantity of row ``t`` depends only on rows ``<= t`` (BH only
mixes series at the same timestamp), a prefix of a series scores exactly as
the same rows of the whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import polars as pl
from scipy import stats

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)

# Slow-burn windows (buckets summed) and their guard gaps (buckets the
# baseline level lags behind the window's start).
SUM_WINDOWS: tuple[tuple[int, int], ...] = ((3, 7), (7, 7))


@dataclass(frozen=True, slots=True)
class Grain:
    """Bucket size and its season: what "the same time last week" means."""

    name: str
    step: timedelta
    period: int  # buckets per seasonal cycle


def infer_grain(ts: pl.Series) -> Grain:
    """Hourly if buckets are an hour apart or closer, else daily."""
    diffs = ts.sort().unique().diff().drop_nulls()
    if diffs.len() and diffs.min() <= HOUR:  # type: ignore[operator]
        return Grain("hour", HOUR, 168)
    return Grain("day", DAY, 7)


def _slot(ts: np.ndarray, grain: Grain) -> np.ndarray:
    """Seasonal slot of each bucket: day of week (0 = Monday) or hour of week."""
    seconds = ts.astype("datetime64[s]").astype(np.int64)
    # 1970-01-01 was a Thursday: shift so that slot 0 is Monday.
    if grain.name == "hour":
        return ((seconds // 3600) + 3 * 24) % 168
    return ((seconds // 86400) + 3) % 7


def nb_params(mu: np.ndarray, phi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """scipy's (n, p) for a negative binomial of mean ``mu`` and variance mu + phi mu^2."""
    phi = np.maximum(phi, 1e-8)
    n = 1.0 / phi
    p = n / (n + np.maximum(mu, 1e-9))
    return n, p


def nb_sf(x: np.ndarray, mu: np.ndarray, phi: np.ndarray) -> np.ndarray:
    """P(X >= x): the upper-tail p-value of an observed count."""
    n, p = nb_params(mu, phi)
    return stats.nbinom.sf(np.ceil(x) - 1, n, p)


def nb_quantile(q: float, mu: np.ndarray, phi: np.ndarray) -> np.ndarray:
    """Approximate NB quantile (Cornish-Fisher: normal plus skewness), in whole counts.

    scipy's exact ``nbinom.ppf`` searches numerically and took ~70% of
    ``detect``'s time; the band is for charts and resolution, the decision
    itself uses the exact tail probability.
    """
    z = float(stats.norm.ppf(q))
    phi = np.maximum(phi, 0.0)
    sd = np.sqrt(mu + phi * mu * mu)
    skew = (1.0 + 2.0 * phi * mu) / np.maximum(sd, 1e-9)
    value = mu + sd * (z + (z * z - 1.0) * skew / 6.0)
    rounded = np.ceil(value) if q > 0.5 else np.floor(value)
    return np.maximum(rounded, 0.0)


def benjamini_hochberg(p: np.ndarray) -> np.ndarray:
    """BH-adjusted p-values along axis 0 (the series tested at one timestamp).

    NaN p-values (series not tested at that time) take no part in the count.
    """
    out = np.full_like(p, np.nan)
    valid = ~np.isnan(p)
    m = valid.sum(axis=0)
    filled = np.where(valid, p, np.inf)
    order = np.argsort(filled, axis=0)
    ranked = np.take_along_axis(filled, order, axis=0)
    ranks = np.arange(1, p.shape[0] + 1)[:, None]
    adjusted = ranked * np.maximum(m, 1)[None, :] / ranks
    # Monotone from the largest p downwards.
    adjusted = np.minimum.accumulate(adjusted[::-1], axis=0)[::-1]
    adjusted = np.minimum(adjusted, 1.0)
    np.put_along_axis(out, order, adjusted, axis=0)
    out[~valid] = np.nan
    return out


def _filter(
    x: np.ndarray, slots: np.ndarray, period: int, *, min_history: int, clip_z: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One causal pass over time, vectorised across series.

    Returns, per (series, t), the one-step-ahead expected count, the NB
    predictive dispersion and the part of it due to estimating the baseline,
    the level *before* bucket t was seen (for lagged sums) and
    the winsorised value (so one past spike cannot carry a multi-bucket sum).
    """
    s_count, t_count = x.shape
    mu_out = np.full(x.shape, np.nan)
    phi_out = np.full(x.shape, np.nan)
    param_out = np.full(x.shape, np.nan)
    level_out = np.full(x.shape, np.nan)
    clipped = np.full(x.shape, np.nan)
    level = np.zeros(s_count)
    season = np.ones((s_count, period))
    var_ratio = np.zeros(s_count)  # EWMA of (resid^2 - mu) / mu^2
    seen = np.zeros(s_count)
    seen_slot = np.zeros((s_count, period))
    alpha_level = 2.0 / (28 + 1)
    alpha_season = 2.0 / (16 + 1)
    alpha_var = 2.0 / (56 + 1)
    for t in range(t_count):
        xt = x[:, t]
        present = ~np.isnan(xt)
        slot = slots[t]
        f = season[:, slot]
        mu = np.maximum(level * f, 0.05)
        phi = np.clip(var_ratio, 0.0, 4.0)
        started = seen > 0
        mu_out[:, t] = np.where(started, mu, np.nan)
        # Predictive dispersion: the noise of the estimated level and season
        # (EWMA variance a/(2-a) of the bucket's own CV^2) adds to the data's.
        a_eff = np.maximum(alpha_level, 1.0 / (seen + 1.0))
        g_eff = np.maximum(alpha_season, 1.0 / (seen_slot[:, slot] + 1.0))
        param = (a_eff / (2 - a_eff) + g_eff / (2 - g_eff)) * (phi + 1.0 / mu)
        phi_out[:, t] = np.where(started, phi + param, np.nan)
        param_out[:, t] = np.where(started, param, np.nan)
        level_out[:, t] = np.where(started, level, np.nan)
        # Winsorise: once the band is trustworthy, a bucket counts at most as
        # its upper edge (and at least its lower one).
        sd = np.sqrt(mu + phi * mu * mu)
        warm = seen >= min_history
        upper = mu + clip_z * sd + 1.0
        lower = np.maximum(mu - clip_z * sd - 1.0, 0.0)
        xc = np.where(warm, np.clip(xt, lower, upper), xt)
        clipped[:, t] = xc
        # Early on, plain running means; later, exponential forgetting.
        a = np.maximum(alpha_level, 1.0 / (seen + 1.0))
        ns = seen_slot[:, slot]
        g = np.maximum(alpha_season, 1.0 / (ns + 1.0))
        v = np.maximum(alpha_var, 1.0 / (seen + 1.0))
        deseason = xc / np.maximum(f, 1e-3)
        new_level = np.where(started, level + a * (deseason - level), xc)
        ratio = np.where(new_level > 0, xc / np.maximum(new_level, 1e-9), 1.0)
        new_season_val = f + g * (ratio - f)
        resid = (xc - mu) ** 2 - mu
        new_var = var_ratio + v * (resid / (mu * mu) - var_ratio)
        level = np.where(present, new_level, level)
        if period > 1:
            upd = present & (seen >= period)  # seasonal factors after one full cycle
            season[upd, slot] = new_season_val[upd]
            # Keep the factors' mean at one so level stays "per bucket".
            mean = season.mean(axis=1, keepdims=True)
            season = season / np.where(mean > 0, mean, 1.0)
            seen_slot[present, slot] += 1
        # An outlier says nothing about ordinary noise: it would widen the band
        # for weeks and mask the next spike. Only in-band buckets update it.
        in_band = (xt <= upper) & (xt >= lower)
        var_ratio = np.where(present & started & (in_band | ~warm), new_var, var_ratio)
        seen = seen + present
    return mu_out, phi_out, param_out, level_out, clipped


def _lagged_sum_test(
    x: np.ndarray,
    mu: np.ndarray,
    phi: np.ndarray,
    param: np.ndarray,
    level: np.ndarray,
    window: int,
    guard: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """p-value, observed sum and expected sum of the last ``window`` buckets,
    with the expected level frozen ``guard`` buckets before the window began,
    and the current bucket's expectation at that same frozen level."""
    s_count, t_count = x.shape
    lag = window + guard
    p = np.full(x.shape, np.nan)
    obs = np.full(x.shape, np.nan)
    exp = np.full(x.shape, np.nan)
    now = np.full(x.shape, np.nan)
    if t_count <= lag:
        return p, obs, exp, now
    # Seasonal factor of each bucket = mu / level (both from the same filter).
    factor = np.where(level > 0, mu / np.maximum(level, 1e-9), 1.0)
    xs = np.nan_to_num(x)
    csum = np.concatenate([np.zeros((s_count, 1)), np.cumsum(xs, axis=1)], axis=1)
    fsum = np.concatenate([np.zeros((s_count, 1)), np.cumsum(np.nan_to_num(factor), axis=1)], 1)
    t = np.arange(lag, t_count)
    obs[:, t] = csum[:, t + 1] - csum[:, t + 1 - window]
    base = level[:, t - lag]
    exp[:, t] = np.maximum(base * (fsum[:, t + 1] - fsum[:, t + 1 - window]), 0.05 * window)
    now[:, t] = base * factor[:, t]
    # Data noise averages out over the window; the frozen level's own error
    # does not (``param`` is its share of ``phi``).
    p[:, t] = nb_sf(obs[:, t], exp[:, t], (phi[:, t] - param[:, t]) / window + param[:, t])
    bad = np.isnan(base) | np.isnan(mu[:, t])
    p[:, t] = np.where(bad, np.nan, p[:, t])
    return p, obs, exp, now


def detect(
    series: pl.DataFrame,
    *,
    alpha: float = 0.01,
    min_excess: float = 5.0,
    min_ratio: float = 1.5,
    min_history: int | None = None,
    interval: float = 0.98,
    clip_z: float = 3.0,
    slow_burn: bool = True,
    horizon_cycles: int = 4,
) -> pl.DataFrame:
    """Score every row of one or many count series; see the module docstring.

    ``series`` has ``ts`` and ``value`` (and ``series`` to hold many). Rows
    come back in the input order with ``expected, lower, upper, p_value,
    score, is_anomaly`` and the NB ``dispersion`` (episodes need it for
    intervals). Missing buckets inside a series count as zero; no anomaly is
    raised before ``min_history`` buckets (default: four seasonal cycles for
    daily data, two for hourly) so a young series never cries wolf.
    """
    has_series = "series" in series.columns
    frame = series.with_row_index("_row")
    if not has_series:
        frame = frame.with_columns(pl.lit("").alias("series"))
    out_cols = {
        "expected": pl.Float64,
        "lower": pl.Float64,
        "upper": pl.Float64,
        "p_value": pl.Float64,
        "score": pl.Float64,
        "is_anomaly": pl.Boolean,
        "dispersion": pl.Float64,
    }
    if frame.is_empty():
        return series.with_columns([pl.lit(None, dtype=d).alias(c) for c, d in out_cols.items()])
    grain = infer_grain(frame["ts"])
    if min_history is None:
        min_history = 4 * grain.period if grain.name == "day" else 2 * grain.period
    names = frame["series"].unique(maintain_order=True).sort()
    start, end = frame["ts"].min(), frame["ts"].max()
    grid = pl.datetime_range(
        start, end, grain.step, eager=True, time_zone=frame["ts"].dtype.time_zone
    )  # type: ignore[arg-type, attr-defined]
    t_count = grid.len()
    s_index = {n: i for i, n in enumerate(names.to_list())}
    pos = frame.select(
        pl.col("series").replace_strict(s_index, return_dtype=pl.Int64).alias("s"),
        ((pl.col("ts") - pl.lit(start)) / pl.lit(grain.step)).floor().cast(pl.Int64).alias("t"),
        pl.col("value").cast(pl.Float64).fill_null(0.0).alias("v"),
    )
    s_idx = pos["s"].to_numpy()
    t_idx = pos["t"].to_numpy()
    x = np.full((len(s_index), t_count), np.nan)
    x[s_idx, t_idx] = 0.0  # present cells; duplicates of a bucket add up below
    np.add.at(x, (s_idx, t_idx), pos["v"].to_numpy())
    # Inside a series' own span, a missing bucket is a bucket with no tickets.
    first = np.full(len(s_index), t_count)
    last = np.full(len(s_index), -1)
    np.minimum.at(first, s_idx, t_idx)
    np.maximum.at(last, s_idx, t_idx)
    cols = np.arange(t_count)[None, :]
    inside = (cols >= first[:, None]) & (cols <= last[:, None])
    x = np.where(inside & np.isnan(x), 0.0, x)

    slots = _slot(grid.to_numpy(), grain)
    mu, phi, param, level, xc = _filter(
        x, slots, grain.period, min_history=min_history, clip_z=clip_z
    )
    history = np.cumsum(~np.isnan(x), axis=1) - 1  # buckets seen before t
    ready = (history >= min_history) & ~np.isnan(mu) & ~np.isnan(x)

    p1 = np.where(ready, nb_sf(x, mu, phi), np.nan)
    material = (x - mu >= min_excess) & (x >= min_ratio * mu)
    tests = [(p1, material)]
    if slow_burn:
        for window, guard in SUM_WINDOWS:
            pw, obs_w, exp_w, exp_now = _lagged_sum_test(xc, mu, phi, param, level, window, guard)
            ok = ready & (history >= min_history + window + guard)
            pw = np.where(ok, pw, np.nan)
            mat_w = (obs_w - exp_w >= min_excess * np.sqrt(window)) & (obs_w >= min_ratio * exp_w)
            # The window's last bucket must itself be materially up on the
            # frozen level: else a spike that ended echoes for `window` buckets.
            tests.append((pw, mat_w & (x > mu) & (x >= min_ratio * exp_now)))
    # alpha is the false-alarm rate per series per `horizon_cycles` seasonal
    # cycles (default four weeks), not per bucket: 1% per daily bucket would
    # be ~4 false alarms a year.
    k = len(tests) * grain.period * horizon_cycles
    p_all = np.stack([np.where(np.isnan(t[0]), 1.0, t[0]) for t in tests])
    p_min = np.where(ready, p_all.min(axis=0), np.nan)
    flagged = np.zeros(x.shape, dtype=bool)
    for p_t, mat in tests:
        q_t = benjamini_hochberg(np.where(ready, np.minimum(1.0, k * p_t), np.nan))
        flagged |= (q_t <= alpha) & mat & ready
    lo_q, hi_q = (1 - interval) / 2, 1 - (1 - interval) / 2
    lower = np.where(np.isnan(mu), np.nan, nb_quantile(lo_q, mu, phi))
    upper = np.where(np.isnan(mu), np.nan, nb_quantile(hi_q, mu, phi))
    with np.errstate(divide="ignore"):
        score = np.clip(-np.log10(np.maximum(p_min, 1e-300)) / 10.0, 0.0, 1.0)

    cell = (s_idx, t_idx)
    scored = pl.DataFrame(
        {
            "_row": frame["_row"],
            "expected": mu[cell],
            "lower": lower[cell],
            "upper": upper[cell],
            "p_value": p_min[cell],
            "score": score[cell],
            "is_anomaly": flagged[cell],
            "dispersion": phi[cell],
        },
        schema_overrides={"_row": pl.UInt32},
    ).with_columns(pl.col(pl.Float64).fill_nan(None))
    result = frame.join(scored, on="_row", how="left").sort("_row").drop("_row")
    if not has_series:
        result = result.drop("series")
    return result
