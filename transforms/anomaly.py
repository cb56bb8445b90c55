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
  a guard gap, so a rising level cannot absorb itself;
* a one-sided CUSUM of the NB log-likelihood ratio ("``min_ratio`` x the
  expectation" against "as expected") adds the evidence of consecutive
  moderately high buckets; its alarm level spends the same false-alarm
  budget as the bucket tests (see :func:`cusum_threshold`).

An anomaly needs statistical surprise (Benjamini-Hochberg across the series
tested at the same timestamp) *and* material size (``min_excess`` and
``min_ratio``): a p-value alone would page people about +3 tickets.

Because every quantity of row ``t`` depends only on rows ``<= t`` (BH only
mixes series at the same timestamp), a prefix of a series scores exactly as
the same rows of the whole.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import polars as pl
from scipy import special, stats

try:  # Optional: compiles the filter's loop over time (same model, ~50x faster).
    import numba
except ImportError:  # pragma: no cover - exercised where numba is absent
    numba = None

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)

# Slow-burn windows (buckets summed) and their guard gaps (buckets the
# baseline level lags behind the window's start).
SUM_RAW = 3  # windows this short sum raw counts (an onset must not be clipped away)
SUM_SUPPORT = 0.25  # p-value the last bucket of a firing window needs on its own
ONSET_RATIO = 1.2
RISE_RATIO = 1.1  # a slow burn starts where the excess over 1.1x the old level begins
RISE_EVIDENCE = 0.5  # sd of its own noise the excess before the revealing bucket needs
MIN_RAMP = 4  # buckets: a shorter run before a flag is noise or the spike itself
VAR_SPAN = 180  # buckets: dispersion is a slow property of a series
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
    """P(X >= x): the upper-tail p-value of an observed count.

    The regularised incomplete beta directly: the same value as
    ``stats.nbinom.sf(ceil(x) - 1, n, p)`` at half the time (no argument
    checking and broadcasting through scipy.stats' generic machinery).
    """
    n, p = nb_params(mu, phi)
    k = np.ceil(x)
    with np.errstate(invalid="ignore"):
        tail = special.betainc(np.maximum(k, 1.0), n, 1.0 - p)
    return np.where(k <= 0, np.where(np.isnan(k), np.nan, 1.0), tail)


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
    """The causal filter, compiled when numba is installed (see :func:`_filter_numpy`)."""
    if _filter_kernel is not None and x.size:
        outs = tuple(np.empty(x.shape) for _ in range(5))
        _filter_kernel(
            np.ascontiguousarray(x, dtype=np.float64),
            np.ascontiguousarray(slots, dtype=np.int64),
            period,
            min_history,
            clip_z,
            2.0 / (28 + 1),
            2.0 / (16 + 1),
            2.0 / (VAR_SPAN + 1),
            *outs,
        )
        return outs  # type: ignore[return-value]
    return _filter_numpy(x, slots, period, min_history=min_history, clip_z=clip_z)


def _compiled(**options: object) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """``numba.njit(**options)`` when numba is installed, else the plain function."""
    if numba is None:  # pragma: no cover - exercised where numba is absent
        return lambda fn: fn
    return numba.njit(**options)  # type: ignore[no-any-return]


# Compiled without Python's division checks (a NaN or inf, like NumPy, not
# an exception) and with the fast-math flags that reorder arithmetic but keep
# NaN and inf semantics: missing buckets are NaN and must stay visible.
_FAST: dict[str, object] = {
    "cache": True,
    "error_model": "numpy",
    "fastmath": {"nsz", "arcp", "contract", "afn", "reassoc"},
}
_JIT = {**_FAST, "parallel": True}


@_compiled(**_FAST)
def _filter_row(
    x: np.ndarray,
    slots: np.ndarray,
    period: int,
    min_history: int,
    clip_z: float,
    alpha_level: float,
    alpha_season: float,
    alpha_var: float,
    mu_out: np.ndarray,
    phi_out: np.ndarray,
    param_out: np.ndarray,
    level_out: np.ndarray,
    clipped: np.ndarray,
) -> None:
    """:func:`_filter_numpy` for one series, one bucket at a time: the only
    compiled copy of the filter.

    Both kernels call it (:func:`_filter_series` for :func:`detect`,
    :func:`_score_series` for :func:`detect_matrix`), so the two APIs cannot
    drift apart. It owns the whole loop over time, so that the compiler
    optimises the same code the same way wherever it is called: with
    fast-math, a filter step inlined into different surroundings was
    rounded differently, and last-bit differences of the clipped values
    change ``ceil`` of the window sums, i.e. p-values. Written for numba
    (plain loops, no allocation in the loop). The seasonal factors are kept
    unnormalised with one scale per series, so keeping their mean at one
    costs O(1) per bucket instead of O(period).
    """
    nan = np.nan
    level = 0.0
    var_ratio = 0.0
    seen = 0.0
    raw = np.ones(period)
    raw_sum = float(period)
    scale = 1.0
    seen_slot = np.zeros(period)
    for t in range(x.shape[0]):
        xt = x[t]
        present = not np.isnan(xt)
        slot = slots[t]
        f = raw[slot] * scale
        mu = max(level * f, 0.05)
        phi = min(max(var_ratio, 0.0), 4.0)
        started = seen > 0
        a = max(alpha_level, 1.0 / (seen + 1.0))
        g = max(alpha_season, 1.0 / (seen_slot[slot] + 1.0))
        param = (a / (2 - a) + g / (2 - g)) * (phi + 1.0 / mu)
        if started:
            mu_out[t] = mu
            phi_out[t] = phi + param
            param_out[t] = param
            level_out[t] = level
        else:
            mu_out[t] = nan
            phi_out[t] = nan
            param_out[t] = nan
            level_out[t] = nan
        sd = np.sqrt(mu + phi * mu * mu)
        warm = seen >= min_history
        upper = mu + clip_z * sd + 1.0
        lower = max(mu - clip_z * sd - 1.0, 0.0)
        xc = min(max(xt, lower), upper) if (warm and present) else xt
        clipped[t] = xc
        if not present:
            continue
        v = max(alpha_var, 1.0 / (seen + 1.0))
        deseason = xc / max(f, 1e-3)
        new_level = level + a * (deseason - level) if started else xc
        ratio = xc / max(new_level, 1e-9) if new_level > 0 else 1.0
        new_season = f + g * (ratio - f)
        new_var = var_ratio + v * (((xc - mu) ** 2 - mu) / (mu * mu) - var_ratio)
        level = new_level
        if period > 1:
            if seen >= period:
                raw_sum += new_season / scale - raw[slot]
                raw[slot] = new_season / scale
            mean = raw_sum * scale / period
            if mean > 0:
                scale /= mean
            seen_slot[slot] += 1
        in_band = lower <= xt <= upper
        if started and (in_band or not warm):
            var_ratio = new_var
        seen += 1.0


def _filter_series(
    x: np.ndarray,
    slots: np.ndarray,
    period: int,
    min_history: int,
    clip_z: float,
    alpha_level: float,
    alpha_season: float,
    alpha_var: float,
    mu_out: np.ndarray,
    phi_out: np.ndarray,
    param_out: np.ndarray,
    level_out: np.ndarray,
    clipped: np.ndarray,
) -> None:
    """:func:`_filter_row` for every series, in parallel."""
    for i in numba.prange(x.shape[0]):  # type: ignore[union-attr]
        _filter_row(
            x[i], slots, period, min_history, clip_z, alpha_level, alpha_season, alpha_var,
            mu_out[i], phi_out[i], param_out[i], level_out[i], clipped[i],
        )  # fmt: skip


_filter_kernel = numba.njit(**_JIT)(_filter_series) if numba else None


def _filter_numpy(
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
    alpha_var = 2.0 / (VAR_SPAN + 1)
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


def _rise_lead(x: np.ndarray, mu: np.ndarray, level: np.ndarray, flagged: np.ndarray) -> np.ndarray:
    """Buckets between the start of a rise and the bucket that revealed it.

    A slow burn is flagged days after it began. Attribution needs the start
    to line the rise up with the change that caused it: the run of buckets
    just before, each already ``ONSET_RATIO`` x the level frozen before the
    longest window. A run of one is noise, not a ramp, so a sudden spike
    starts at its own bucket.
    """
    window, guard = SUM_WINDOWS[-1]
    lag = window + guard
    lead = np.zeros(x.shape, dtype=np.int64)
    if x.shape[1] <= lag:
        return lead
    factor = np.where(level > 0, mu / np.maximum(level, 1e-9), 1.0)
    frozen = np.full(x.shape, np.nan)
    frozen[:, lag:] = level[:, :-lag]
    chain = np.ones(x.shape, dtype=bool)
    for back in range(1, window):
        risen = np.zeros(x.shape, dtype=bool)
        risen[:, back:] = x[:, :-back] >= ONSET_RATIO * frozen[:, back:] * factor[:, :-back]
        chain &= risen
        lead = np.where(chain & flagged, back, lead)
    return np.where(lead >= MIN_RAMP, lead, 0)


def _ramp_lead(
    x: np.ndarray, mu: np.ndarray, phi: np.ndarray, level: np.ndarray, flagged: np.ndarray
) -> np.ndarray:
    """Buckets between where the cumulative excess began and the flagged bucket.

    A slow burn is flagged days after it began, and attribution needs the
    start to line the rise up with the change that caused it (a change that
    took effect a week before the flag). The start is where the cumulative
    excess over the level frozen before the longest window began (CUSUM's
    change-point estimate: the start of the suffix with the largest sum of
    ``x - RISE_RATIO x frozen baseline``), at most ``window + guard``
    buckets back. It counts only when the excess *before* the revealing
    bucket is itself some evidence (``RISE_EVIDENCE`` standard deviations of
    its own noise). Unlike ``rise_lead`` (which dates the episode and its
    ``alert_id``), this estimate may reach back before a sudden spike that
    took two buckets to confirm, so it only widens attribution's view of
    when the rise began. Only flagged cells are looked at.
    """
    window, guard = SUM_WINDOWS[-1]
    lag = window + guard
    span = lag  # look back as far as the level frozen before them allows
    lead = np.zeros(x.shape, dtype=np.int64)
    s_i, t_i = np.nonzero(flagged)
    keep = t_i >= lag + span
    s_i, t_i = s_i[keep], t_i[keep]
    if not s_i.size:
        return lead
    back = np.arange(span)  # 0 = the flagged bucket itself
    cols = t_i[:, None] - back[None, :]
    rows = s_i[:, None]
    lv = level[rows, cols]
    factor = np.where(lv > 0, mu[rows, cols] / np.maximum(lv, 1e-9), 1.0)
    frozen = level[s_i, t_i - lag][:, None] * np.nan_to_num(factor, nan=1.0)
    xs = np.nan_to_num(x[rows, cols])
    excess = xs - RISE_RATIO * frozen
    ph = np.nan_to_num(phi[rows, cols])
    var = frozen + ph * frozen * frozen
    # Suffix sums ending at the flagged bucket, growing backwards in time.
    suffix = np.cumsum(excess, axis=1)
    best = np.argmax(suffix, axis=1)
    before = suffix[np.arange(best.size), best] - excess[:, 0]
    noise = np.sqrt(np.cumsum(var, axis=1)[np.arange(best.size), best] - var[:, 0])
    ok = (best >= 1) & (before >= RISE_EVIDENCE * noise) & ~np.isnan(frozen[:, 0])
    lead[s_i[ok], t_i[ok]] = best[ok]
    return lead


def _cusum_series(
    x: np.ndarray, mu: np.ndarray, phi: np.ndarray, ratio: float, cap: float, out: np.ndarray
) -> None:
    """Page's one-sided CUSUM of the negative-binomial log-likelihood ratio
    "mean is ``ratio`` x expected" against "mean is as expected", per series.

    A bucket test needs one bucket to be extraordinary; a +100% day at 25
    complaints is only ~3 sd, and confirming it waits for a window test a day
    later. The CUSUM adds each bucket's evidence as it comes and forgets it at
    the drift of the null (a calm bucket subtracts), so two such days in a row
    are as strong as one far larger one. It is capped at ``cap`` so that a
    long spike cannot leave credit behind for weeks. NaN (not scored) buckets
    leave it unchanged. Plain loops: compiled by numba when installed.
    """
    for i in range(x.shape[0]):
        s = 0.0
        for t in range(x.shape[1]):
            m = mu[i, t]
            xt = x[i, t]
            # Increasing in x and negative at x = m: an empty CUSUM stays empty.
            if np.isnan(m) or np.isnan(xt) or (s == 0.0 and xt <= m):
                out[i, t] = s
                continue
            f = max(phi[i, t], 1e-8)
            llr = xt * math.log(ratio) - (xt + 1.0 / f) * math.log(
                (1.0 + f * ratio * m) / (1.0 + f * m)
            )
            s = min(max(s + llr, 0.0), cap)
            out[i, t] = s


_cusum_kernel = numba.njit(cache=True, error_model="numpy")(_cusum_series) if numba else None


def cusum_threshold(alpha: float, buckets: int, series: int) -> float:
    """The CUSUM's alarm level h, in nats, on the bucket tests' budget.

    Under the null a CUSUM of log-likelihood ratios crosses h at most once
    per e^h buckets (Wald's bound), so h = log(buckets / alpha) spends
    ``alpha`` per series per horizon of ``buckets`` (what ``alpha`` means for
    the bucket tests too), and + log(m) is e-BH's price for testing ``m``
    series together (e^S is an e-value): the CUSUM may not raise what the
    false-discovery control of the bucket tests would refuse. The budget is
    a second one beside the bucket tests', not shared with them.
    """
    return math.log(buckets * max(series, 1) / alpha)


def cusum(x: np.ndarray, mu: np.ndarray, phi: np.ndarray, ratio: float, cap: float) -> np.ndarray:
    """:func:`_cusum_series` for a series x bucket matrix (compiled, or vectorised over series)."""
    out = np.empty(x.shape)
    if _cusum_kernel is not None:
        _cusum_kernel(
            np.ascontiguousarray(x, dtype=np.float64),
            np.ascontiguousarray(mu, dtype=np.float64),
            np.ascontiguousarray(phi, dtype=np.float64),
            ratio,
            cap,
            out,
        )
        return out
    s = np.zeros(x.shape[0])
    for t in range(x.shape[1]):
        m, xt = mu[:, t], x[:, t]
        f = np.maximum(phi[:, t], 1e-8)
        with np.errstate(invalid="ignore"):
            gap = np.log((1.0 + f * ratio * m) / (1.0 + f * m))
            llr = xt * math.log(ratio) - (xt + 1.0 / f) * gap
        s = np.where(np.isnan(m) | np.isnan(xt), s, np.minimum(np.maximum(s + llr, 0.0), cap))
        out[:, t] = s
    return out


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
    model: str = "count",
    window: int = 1000,
    cusum_h: float | None = None,
) -> pl.DataFrame:
    """Score every row of one or many count series; see the module docstring.

    ``series`` has ``ts`` and ``value`` (and ``series`` to hold many). Rows
    come back in the input order with ``expected, lower, upper, p_value,
    score, is_anomaly`` and the NB ``dispersion`` (episodes need it for
    intervals) and ``baseline``, the expectation at the level of two
    slow-burn windows earlier (episodes measure their excess against it);
    ``rise_lead`` and ``ramp_lead`` say how many buckets before a flagged
    one its rise began (the first dates the episode, the second, where the
    cumulative excess began, only times attribution: see :func:`_ramp_lead`).
    ``cusum_h`` is the CUSUM's alarm level in nats (None: from ``alpha``;
    0 turns the CUSUM off).
    Missing buckets inside a series count as zero; no anomaly is raised
    before ``min_history`` buckets (default: four seasonal cycles for daily
    data, two for hourly) so a young series never cries wolf.

    ``model="gaussian"`` is for real-valued series (latencies, CPU, prices:
    not counts): see :func:`detect_gaussian`; ``window`` is its look-back.
    """
    if model == "gaussian":
        return detect_gaussian(
            series, alpha=alpha, window=window, min_history=min_history, interval=interval
        )
    if model != "count":
        raise ValueError(f"unknown model {model!r}: use 'count' or 'gaussian'")
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
        "baseline": pl.Float64,
        "rise_lead": pl.Int64,
        "ramp_lead": pl.Int64,
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
    tests: list[tuple[np.ndarray, np.ndarray, int]] = [(p1, material, 1)]
    if slow_burn:
        for window, guard in SUM_WINDOWS:
            pw, obs_w, exp_w, exp_now = _lagged_sum_test(
                x if window <= SUM_RAW else xc, mu, phi, param, level, window, guard
            )
            ok = ready & (history >= min_history + window + guard)
            pw = np.where(ok, pw, np.nan)
            mat_w = (obs_w - exp_w >= min_excess * np.sqrt(window)) & (obs_w >= min_ratio * exp_w)
            # The window's last bucket must itself be materially up on the
            # frozen level, and not unremarkable on its own: else a spike that
            # ended echoes for `window` buckets.
            support = (x > mu) & (x >= min_ratio * exp_now) & (p1 <= SUM_SUPPORT)
            tests.append((pw, mat_w & support, window))
    # alpha is the false-alarm rate per series per `horizon_cycles` seasonal
    # cycles (default four weeks), not per bucket: 1% per daily bucket would
    # be ~4 false alarms a year.
    k = len(tests) * grain.period * horizon_cycles
    p_all = np.stack([np.where(np.isnan(t[0]), 1.0, t[0]) for t in tests])
    p_min = np.where(ready, p_all.min(axis=0), np.nan)
    fired = [
        (benjamini_hochberg(np.where(ready, np.minimum(1.0, k * p_t), np.nan)) <= alpha)
        & mat
        & ready
        for p_t, mat, _ in tests
    ]
    horizon = grain.period * horizon_cycles
    cusum_h = cusum_threshold(alpha, horizon, x.shape[0]) if cusum_h is None else cusum_h
    if cusum_h > 0:
        evidence = cusum(x, mu, phi, min_ratio, cusum_h)
        fired.append((evidence >= cusum_h) & material & ready)
    flagged = np.logical_or.reduce(fired)
    lead = _rise_lead(x, mu, level, flagged)
    ramp = _ramp_lead(x, mu, phi, level, flagged)
    # The counterfactual an episode is measured against: the level as it was
    # before the longest slow-burn window began. A rise over two weeks drags
    # the adaptive level up with it; against that level a slow burn looks
    # half its size and would fall under ``min_ratio`` at the episode stage.
    lag = max(w + g for w, g in SUM_WINDOWS)
    baseline = np.full(x.shape, np.nan)
    if x.shape[1] > lag:
        factor = np.where(level > 0, mu / np.maximum(level, 1e-9), 1.0)
        baseline[:, lag:] = np.minimum(mu[:, lag:], level[:, :-lag] * factor[:, lag:])
    baseline = np.where(np.isnan(baseline), mu, baseline)
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
            "baseline": baseline[cell],
            "rise_lead": lead[cell],
            "ramp_lead": ramp[cell],
        },
        schema_overrides={"_row": pl.UInt32},
    ).with_columns(pl.col(pl.Float64).fill_nan(None))
    result = frame.join(scored, on="_row", how="left").sort("_row").drop("_row")
    if not has_series:
        result = result.drop("series")
    return result


def detect_gaussian(
    series: pl.DataFrame,
    *,
    alpha: float = 0.01,
    window: int = 1000,
    min_history: int | None = None,
    interval: float = 0.98,
) -> pl.DataFrame:
    """Robust z-scores on the level and on the step, for real-valued series.

    Rows are scored in time order within each series against the median and
    interquartile spread of the ``window`` rows *before* them (shifted by
    one, so the row never dilutes its own surprise: causal, and a prefix
    scores as the whole). A level shift shows in the level's z, a sudden
    jump or drop inside the normal range in the step's z; the two-sided
    p-value of the larger, Bonferroni-corrected for the two tests, is the
    row's. No spacing is assumed between rows: NAB-style sensor series
    come every 5 minutes, every hour or irregularly.
    """
    has_series = "series" in series.columns
    frame = series.with_row_index("_row")
    if not has_series:
        frame = frame.with_columns(pl.lit("").alias("series"))
    min_history = min_history if min_history is not None else max(window // 8, 10)
    iqr_to_sd = 1.0 / 1.349

    def robust(col: pl.Expr) -> tuple[pl.Expr, pl.Expr]:
        past = col.shift(1)
        opts = {"window_size": window, "min_samples": min_history}
        med = past.rolling_median(**opts).over("series")
        q75 = past.rolling_quantile(0.75, **opts).over("series")
        q25 = past.rolling_quantile(0.25, **opts).over("series")
        # The quartiles ignore past spikes, but a series that sits still 80%
        # of the time and moves in bursts has no interquartile spread: the
        # plain deviation then says how much it normally moves. On NAB the
        # larger of the two beat either alone (see benchmarks/nab.py).
        spread = (q75 - q25) * iqr_to_sd
        std = past.rolling_std(**opts).over("series")
        # Flat stretches have no spread at all: a floor keeps z finite.
        floor = (med.abs() * 1e-3).clip(lower_bound=1e-6)
        return med, pl.max_horizontal(spread, std, floor)

    ordered = frame.sort("series", "ts", "_row").with_columns(
        pl.col("value").cast(pl.Float64).alias("_x"),
    )
    ordered = ordered.with_columns(pl.col("_x").diff().over("series").alias("_d"))
    med, sd = robust(pl.col("_x"))
    dmed, dsd = robust(pl.col("_d"))
    ordered = ordered.with_columns(
        med.alias("expected"),
        sd.alias("_sd"),
        ((pl.col("_x") - med) / sd).abs().alias("_zl"),
        ((pl.col("_d") - dmed) / dsd).abs().alias("_zd"),
    )
    z = np.fmax(ordered["_zl"].to_numpy(), ordered["_zd"].to_numpy())
    with np.errstate(invalid="ignore"):
        p = np.minimum(1.0, 2.0 * 2.0 * stats.norm.sf(z))
    p = np.where(np.isnan(z), np.nan, p)
    half = float(stats.norm.ppf(1 - (1 - interval) / 2))
    with np.errstate(divide="ignore", invalid="ignore"):
        score = np.clip(-np.log10(np.maximum(p, 1e-300)) / 10.0, 0.0, 1.0)
    scored = ordered.select(
        "_row",
        "expected",
        (pl.col("expected") - half * pl.col("_sd")).alias("lower"),
        (pl.col("expected") + half * pl.col("_sd")).alias("upper"),
        pl.Series("p_value", p),
        pl.Series("score", score),
        # alpha is the false-alarm rate per ``window`` rows, not per row.
        pl.Series("is_anomaly", np.nan_to_num(p, nan=1.0) <= alpha / window),
        pl.lit(None, dtype=pl.Float64).alias("dispersion"),
        pl.col("expected").alias("baseline"),
        pl.lit(0, dtype=pl.Int64).alias("rise_lead"),
        pl.lit(0, dtype=pl.Int64).alias("ramp_lead"),
    ).with_columns(pl.col(pl.Float64).fill_nan(None))
    result = frame.join(scored, on="_row", how="left").sort("_row").drop("_row")
    if not has_series:
        result = result.drop("series")
    return result


def _score_series(
    x: np.ndarray,
    slots: np.ndarray,
    period: int,
    min_history: int,
    clip_z: float,
    alpha_level: float,
    alpha_season: float,
    alpha_var: float,
    min_excess: float,
    min_ratio: float,
    windows: np.ndarray,
    guards: np.ndarray,
    raw_max: int,
    support: float,
    cusum_h: float,
    screen: float,
    valid: np.ndarray,
    found: np.ndarray,
    cand_rows: np.ndarray,
    cand_x: np.ndarray,
    cand_state: np.ndarray,
) -> None:
    """The filter (:func:`_filter_row`) and every test of :func:`detect`, per
    series, keeping only what the exact refinement of candidates needs.

    Each test's tail probability is screened with a *normal approximation*
    (continuity-corrected): the negative binomial's right tail is heavier
    than the normal's, so the approximation is below the exact value out
    there and no cell the exact test would flag is screened out;
    :func:`detect_matrix` recomputes the exact value for the few cells that
    pass. The screen compares in float32, as the float32 p-values of earlier
    rounds did, so the same cells pass.

    Nothing is written per cell. ``valid[b, j, t]`` counts the series of
    block b (``valid.shape[0]`` contiguous blocks: one thread owns a block,
    no shared counter) for which test j is defined at t, i.e.
    Benjamini-Hochberg's m. Each candidate cell (a test passes the screen,
    or the CUSUM fires on a material bucket: see :func:`_cusum_series`, here
    on the same state) is appended to its block's slice of the ``cand_*``
    arrays: ``cand_rows[b, c]`` = (series, bucket, bits) with bit j where
    test j passes, bit ``n_tests`` where the CUSUM fires and bit 8 + j where
    test j is also material (and supported); ``cand_x`` the raw values and
    ``cand_state`` the filter state (mu, phi, param, level, clipped, rounded
    to float32 as earlier rounds stored them) of the bucket and the
    ``cand_x.shape[2] - 1`` before it, newest last. ``found[b]`` counts the
    block's candidates even past the arrays' capacity, so the caller can
    retry with more room.
    """
    nan = np.nan
    n_sum = windows.shape[0]
    n_rows, t_count = x.shape
    log_r = math.log(min_ratio)
    n_blocks = valid.shape[0]
    per_block = (n_rows + n_blocks - 1) // n_blocks
    for b in numba.prange(n_blocks):  # type: ignore[union-attr]
        # One series' filter state at a time (a few hundred KB: stays in cache).
        mu_s = np.empty(t_count)
        phi_s = np.empty(t_count)
        param_s = np.empty(t_count)
        level_s = np.empty(t_count)
        xc_s = np.empty(t_count)
        f_s = np.empty(t_count)  # seasonal factor mu / level (1 where not started)
        for i in range(b * per_block, min(n_rows, (b + 1) * per_block)):
            _filter_row(
                x[i], slots, period, min_history, clip_z, alpha_level, alpha_season,
                alpha_var, mu_s, phi_s, param_s, level_s, xc_s,
            )  # fmt: skip
            # Running window sums (values and seasonal factors): O(1) per bucket,
            # reading the leaving bucket back from the rows (no ring buffer, no
            # integer modulo per bucket).
            sx = np.zeros(n_sum)
            sf = np.zeros(n_sum)
            evidence = 0.0
            history = -1
            for t in range(t_count):
                xt = x[i, t]
                present = not np.isnan(xt)
                if present:
                    history += 1
                mu = mu_s[t]
                started = not np.isnan(mu)
                fk = 1.0
                if started and level_s[t] > 0:
                    fk = mu / level_s[t]
                f_s[t] = fk
                for j in range(n_sum):
                    w = windows[j]
                    use_raw = w <= raw_max
                    if present:
                        sx[j] += xt if use_raw else xc_s[t]
                    sf[j] += fk
                    if t >= w:
                        old = x[i, t - w]
                        if not np.isnan(old):
                            sx[j] -= old if use_raw else xc_s[t - w]
                        sf[j] -= f_s[t - w]
                if not (started and present):
                    continue
                bits = 0
                phi_t = phi_s[t]  # the data's dispersion plus the baseline's
                param = param_s[t]
                # The log-likelihood ratio is increasing in x and negative at
                # x = mu: an empty CUSUM stays empty without computing it.
                if cusum_h > 0 and (evidence > 0 or xt > mu):
                    f_c = max(phi_t, 1e-8)
                    llr = xt * log_r - (xt + 1.0 / f_c) * math.log(
                        (1.0 + f_c * min_ratio * mu) / (1.0 + f_c * mu)
                    )
                    evidence = min(max(evidence + llr, 0.0), cusum_h)
                if history >= min_history:
                    var1 = mu + phi_t * mu * mu
                    z1 = (xt - 0.5 - mu) / np.sqrt(var1)
                    # The tail only matters far out (screen ~1e-4): skip erfc near the centre.
                    p1 = 0.5 * math.erfc(z1 / math.sqrt(2.0)) if z1 > 2.5 else 0.5
                    mat1 = (xt - mu >= min_excess) and (xt >= min_ratio * mu)
                    valid[b, 0, t] += 1
                    if np.float32(max(p1, 1e-30)) <= screen:
                        bits |= 1 | (256 if mat1 else 0)
                    if mat1 and cusum_h > 0 and evidence >= cusum_h:
                        bits |= 1 << (n_sum + 1)
                    for j in range(n_sum):
                        w = windows[j]
                        lag = w + guards[j]
                        if history < min_history + lag or t < lag:
                            continue
                        base = level_s[t - lag]
                        if np.isnan(base):
                            continue
                        valid[b, j + 1, t] += 1
                        obs = sx[j]
                        exp = max(base * sf[j], 0.05 * w)
                        phi_w = (phi_t - param) / w + param
                        zw = (obs - 0.5 - exp) / np.sqrt(exp + phi_w * exp * exp)
                        pw = 0.5 * math.erfc(zw / math.sqrt(2.0)) if zw > 2.5 else 0.5
                        if np.float32(max(pw, 1e-30)) > screen:
                            continue
                        now = base * fk
                        mat = (obs - exp >= min_excess * np.sqrt(w)) and (obs >= min_ratio * exp)
                        sup = (xt > mu) and (xt >= min_ratio * now) and (p1 <= support)
                        bits |= (1 << (j + 1)) | ((256 << (j + 1)) if (mat and sup) else 0)
                if bits == 0:
                    continue
                c = found[b]
                found[b] += 1
                if c >= cand_rows.shape[1]:
                    continue  # no room: the caller retries with the count
                cand_rows[b, c, 0] = i
                cand_rows[b, c, 1] = t
                cand_rows[b, c, 2] = bits
                span = cand_x.shape[2]
                for d in range(span):
                    tt = t - (span - 1) + d
                    if tt < 0:
                        cand_x[b, c, d] = nan
                        for q in range(5):
                            cand_state[b, c, q, d] = nan
                        continue
                    cand_x[b, c, d] = x[i, tt]
                    cand_state[b, c, 0, d] = mu_s[tt]
                    cand_state[b, c, 1, d] = phi_s[tt]
                    cand_state[b, c, 2, d] = param_s[tt]
                    cand_state[b, c, 3, d] = level_s[tt]
                    cand_state[b, c, 4, d] = xc_s[tt]


_score_kernel = numba.njit(**_JIT)(_score_series) if numba else None
# Series blocks per kernel call: several per thread, so a slow block (the
# other core busy) does not leave a thread idle at the end.
_BLOCKS = 16
# Candidate cells kept per series before a chunk must be scored again: the
# screen passes ~40 per hourly series over two years (low counts are far
# from normal).
_ROOM = 64


def detect_matrix(
    x: np.ndarray,
    slots: np.ndarray,
    period: int,
    *,
    alpha: float = 0.01,
    min_excess: float = 5.0,
    min_ratio: float = 1.5,
    min_history: int | None = None,
    clip_z: float = 3.0,
    horizon_cycles: int = 4,
    chunk: int = 1000,
    cusum_h: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`detect`'s decisions for a series x bucket matrix, at scale.

    For 10,000 hourly series over two years (175 million cells) a frame per
    cell does not fit the time or the memory: this takes the matrix (NaN =
    no bucket), scores ``chunk`` series at a time with the compiled kernel,
    keeps only the cells whose approximate p-value could pass, makes those
    exact, and runs Benjamini-Hochberg across all series per timestamp on
    them alone (cells that cannot pass cannot change a passing cell's
    rank). Nothing is stored per cell: the kernel counts the defined tests
    per timestamp and keeps the filter state of the ``lag + 1`` buckets
    ending at each candidate, which is all the exact tails read (a few MB
    per chunk beyond the input). Returns the (series, bucket) indices of
    anomalous cells. Needs numba.
    """
    if _score_kernel is None:
        raise RuntimeError("detect_matrix needs numba (pip install numba)")
    if min_history is None:
        min_history = 4 * period if period == 7 else 2 * period
    windows = np.array([w for w, _ in SUM_WINDOWS], dtype=np.int64)
    guards = np.array([g for _, g in SUM_WINDOWS], dtype=np.int64)
    n_tests = 1 + len(SUM_WINDOWS)
    if n_tests + 1 > 8:
        raise ValueError("a candidate's bits hold at most 7 tests and the CUSUM")
    k = n_tests * period * horizon_cycles
    screen = alpha / k * 10.0  # exact p <= alpha / k is needed to pass; 10x slack
    s_count, t_count = x.shape
    horizon = period * horizon_cycles
    cusum_h = cusum_threshold(alpha, horizon, s_count) if cusum_h is None else cusum_h
    cands: list[list[tuple[np.ndarray, ...]]] = [[] for _ in range(n_tests)]
    slots = np.ascontiguousarray(slots, dtype=np.int64)
    params = (
        slots, period, min_history, clip_z, 2.0 / (28 + 1), 2.0 / (16 + 1), 2.0 / (VAR_SPAN + 1),
        # Support (p1 <= SUM_SUPPORT) is checked exactly below, not screened.
        min_excess, min_ratio, windows, guards, SUM_RAW, 1.0, cusum_h, screen,
    )  # fmt: skip
    lag_max = max(w + g for w, g in SUM_WINDOWS)
    span = lag_max + 1  # buckets of state kept per candidate: itself and the lag before
    valid = np.zeros((_BLOCKS, n_tests, t_count), dtype=np.int64)
    found = np.zeros(_BLOCKS, dtype=np.int64)
    # Candidates per block, grown (and the chunk scored again) when short.
    room = _ROOM * -(-min(chunk, s_count) // _BLOCKS)
    cusum_hits: list[tuple[np.ndarray, np.ndarray]] = []
    for lo in range(0, s_count, chunk):
        xs = np.ascontiguousarray(x[lo : lo + chunk])  # read in place when already so
        while True:
            found[:] = 0
            counts = np.zeros_like(valid)
            cand_rows = np.empty((_BLOCKS, room, 3), dtype=np.int64)
            cand_x = np.empty((_BLOCKS, room, span))
            cand_state = np.empty((_BLOCKS, room, 5, span), dtype=np.float32)
            _score_kernel(xs, *params, counts, found, cand_rows, cand_x, cand_state)
            if found.max() <= room:
                break
            room = int(found.max())
        valid += counts
        keep = np.arange(room)[None, :] < found[:, None]
        rows_, xw, state = cand_rows[keep], cand_x[keep], cand_state[keep]
        if not rows_.shape[0]:
            continue
        s_f, t_f, bits = rows_[:, 0], rows_[:, 1], rows_[:, 2]
        fired = (bits & (1 << n_tests)) > 0
        cusum_hits.append((s_f[fired] + lo, t_f[fired]))
        # The exact tails, from the state kept around each candidate (float32,
        # as stored before; the tails themselves are computed in float64).
        now = span - 1
        for j in range(n_tests):
            pick = np.flatnonzero((bits & (1 << j)) > 0)
            if not pick.size:
                continue
            mu, phi, param, level, xc = (state[pick, q].astype(np.float64) for q in range(5))
            xv = xw[pick]
            at = np.arange(pick.size)
            material = (bits[pick] & (256 << j)) > 0
            p1 = nb_sf(xv[:, now], mu[:, now], phi[:, now])
            if j == 0:
                exact = p1
            else:
                w, g = SUM_WINDOWS[j - 1]
                back = now - np.arange(w)[None, :]
                src = xv if w <= SUM_RAW else xc
                obs = np.nan_to_num(src[at[:, None], back]).sum(axis=1)
                lv = level[at[:, None], back]
                fac = np.where(lv > 0, mu[at[:, None], back] / np.maximum(lv, 1e-9), 1.0)
                base = level[:, now - w - g]
                exp = np.maximum(base * np.nan_to_num(fac).sum(axis=1), 0.05 * w)
                ph = (phi[:, now] - param[:, now]) / w + param[:, now]
                exact = nb_sf(obs, exp, ph)
                # The support condition, now with the exact single-bucket p.
                material &= p1 <= SUM_SUPPORT
            cands[j].append((s_f[pick] + lo, t_f[pick], exact, material))
    valid = valid.sum(axis=0)
    flagged: set[tuple[int, int]] = set()
    for s_c, t_c in cusum_hits:
        flagged.update(zip(s_c.tolist(), t_c.tolist(), strict=True))
    for j in range(n_tests):
        if not cands[j]:
            continue
        s_i = np.concatenate([c[0] for c in cands[j]])
        t_i = np.concatenate([c[1] for c in cands[j]])
        pv = np.minimum(1.0, k * np.concatenate([c[2] for c in cands[j]]))
        mat = np.concatenate([c[3] for c in cands[j]])
        order = np.lexsort((pv, t_i))
        s_i, t_i, pv, mat = s_i[order], t_i[order], pv[order], mat[order]
        starts = np.r_[0, np.flatnonzero(np.diff(t_i)) + 1]
        rank = np.arange(t_i.size) - np.repeat(starts, np.diff(np.r_[starts, t_i.size])) + 1
        q = pv * valid[j, t_i] / rank
        # Step-up: the adjusted value is the minimum over larger ranks.
        for a, b in zip(starts, np.r_[starts[1:], t_i.size], strict=True):
            q[a:b] = np.minimum.accumulate(q[a:b][::-1])[::-1]
        hit = (q <= alpha) & mat
        flagged.update(zip(s_i[hit].tolist(), t_i[hit].tolist(), strict=True))
    if not flagged:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    cells = np.array(sorted(flagged), dtype=np.int64)
    return cells[:, 0], cells[:, 1]
