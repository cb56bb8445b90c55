"""One spike is one anomaly: consecutive anomalous buckets become an episode.

Leadership wants one email per backlash, not one per day of it, and wants to
know when it is over. Episodes are derived from the rows ``detect`` scored,
so they are as causal as the detector: re-deriving them with more history
keeps the same onset and therefore the same ``alert_id``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import polars as pl
from scipy import stats

from transforms.anomaly import nb_params


@dataclass(frozen=True, slots=True)
class Severity:
    """Thresholds on (episode ratio, episode excess) for severities 2, 3 and 4.

    An episode below the first step is severity 1: real, but only worth the
    daily digest.
    """

    warning: tuple[float, float] = (1.5, 10.0)
    major: tuple[float, float] = (2.5, 50.0)
    critical: tuple[float, float] = (4.0, 200.0)


def alert_id(series: str, started_at: datetime) -> str:
    """Stable across runs: the same series and onset always give the same id."""
    digest = hashlib.sha256(f"{series}|{started_at.isoformat()}".encode()).hexdigest()
    return digest[:16]


def severity_expr(ratio: pl.Expr, excess: pl.Expr, levels: Severity) -> pl.Expr:
    def step(th: tuple[float, float]) -> pl.Expr:
        return (ratio >= th[0]) & (excess >= th[1])

    return (
        pl.when(step(levels.critical))
        .then(4)
        .when(step(levels.major))
        .then(3)
        .when(step(levels.warning))
        .then(2)
        .otherwise(1)
        .cast(pl.Int32)
    )


def _excess_interval(
    observed: np.ndarray, mus: list[np.ndarray], phis: list[np.ndarray], level: float
) -> tuple[np.ndarray, np.ndarray]:
    """Interval of the excess (observed - counterfactual), CausalImpact-style.

    The counterfactual sum of an episode's buckets is moment-matched to one
    negative binomial: mean sum(mu), variance sum(mu + phi mu^2).
    """
    lo = np.empty(len(mus))
    hi = np.empty(len(mus))
    for i, (mu, phi) in enumerate(zip(mus, phis, strict=True)):
        m = float(np.nansum(mu))
        var = float(np.nansum(mu + np.nan_to_num(phi) * mu * mu))
        phi_sum = max((var - m) / (m * m), 1e-8) if m > 0 else 1e-8
        n, p = nb_params(np.array([m]), np.array([phi_sum]))
        q_lo = stats.nbinom.ppf((1 - level) / 2, n, p)[0]
        q_hi = stats.nbinom.ppf(1 - (1 - level) / 2, n, p)[0]
        lo[i] = observed[i] - q_hi
        hi[i] = observed[i] - q_lo
    return lo, hi


def episodes(
    scored: pl.DataFrame,
    *,
    now: datetime,
    step: timedelta,
    max_gap: int = 1,
    severity: Severity = Severity(),
    interval: float = 0.90,
) -> pl.DataFrame:
    """Group each series' anomalous buckets (gaps of up to ``max_gap`` calm
    buckets allowed) into episodes, one row each.

    ``scored`` is ``detect`` output with a ``series`` column; ``step`` is the
    bucket size (a bucket is known at its end, which is ``detected_at``).
    """
    cols = ["series", "ts", "value", "expected", "upper", "p_value", "score", "is_anomaly"]
    frame = (
        scored.select(
            *cols,
            pl.col("dispersion").fill_null(0.0),
            (pl.col("rise_lead") if "rise_lead" in scored.columns else pl.lit(0))
            .fill_null(0)
            .cast(pl.Int64)
            .alias("_lead"),
            (pl.col("baseline") if "baseline" in scored.columns else pl.col("expected")).alias(
                "_cf"
            ),
            (pl.col("ramp_lead") if "ramp_lead" in scored.columns else pl.lit(0))
            .fill_null(0)
            .cast(pl.Int64)
            .alias("_ramp"),
        )
        .with_columns(pl.col("ts").dt.convert_time_zone("UTC"))
        .filter(pl.col("ts") + step <= now)
        .sort("series", "ts")
        .with_columns(
            ((pl.col("ts") - pl.col("ts").min()) / pl.lit(step)).round().cast(pl.Int64).alias("_i")
        )
    )
    anomalous = frame.filter(pl.col("is_anomaly"))
    if anomalous.is_empty():
        return pl.DataFrame()
    # A new episode begins after more than ``max_gap`` calm buckets, unless
    # the rise that revealed it started inside the previous one (its
    # ``rise_lead`` reaches back): a slow burn that the adaptive level
    # half-absorbs flags in bursts, and it is still one backlash.
    runs = anomalous.sort("series", "ts").with_columns(
        (
            (pl.col("_i") - pl.col("_lead") - pl.col("_i").shift(1).over("series")).fill_null(
                max_gap + 2
            )
            > max_gap + 1
        )
        .cum_sum()
        .alias("_ep")
    )
    bounds = runs.group_by("_ep").agg(
        pl.col("series").first(),
        # A slow burn starts where its rise began, before the bucket that
        # revealed it (``detect``'s rise_lead); a sudden spike at its bucket.
        # Only the first bucket's lead counts: later ones must not move the
        # onset (and with it the alert_id) as the episode grows.
        (pl.col("_i") - pl.col("_lead")).first().alias("_start"),
        pl.col("_i").max().alias("_end"),
        (pl.col("ts") - pl.col("_lead") * pl.lit(step)).first().alias("started_at"),
        # Where the cumulative excess began (``detect``'s ramp_lead): a slow
        # burn's cause took effect around then, days before ``started_at``.
        (pl.col("ts") - pl.max_horizontal("_lead", "_ramp") * pl.lit(step))
        .first()
        .alias("rise_started_at"),
        pl.col("ts").min().alias("_first_flag"),
        pl.col("ts").max().alias("last_anomalous_at"),
        # Peak = largest excess: scores saturate at 1 for any big spike.
        pl.col("ts").sort_by(pl.col("value") - pl.col("expected")).last().alias("peak_at"),
        pl.col("value").first().alias("_first_obs"),
        pl.col("expected").first().alias("_first_exp"),
        pl.col("p_value").min().alias("_pmin"),
        pl.col("p_value").len().alias("_n_anom"),
        pl.col("score").max().alias("score"),
    )
    # Every bucket from onset to the last anomalous one belongs to the episode.
    inside = frame.join(bounds.select("series", "_ep", "_start", "_end"), on="series").filter(
        (pl.col("_i") >= pl.col("_start")) & (pl.col("_i") <= pl.col("_end"))
    )
    sums = (
        inside.group_by("_ep")
        .agg(
            pl.col("value").sum().alias("observed"),
            # Counterfactual: the pre-onset level, not one the episode has
            # already dragged up (see ``detect``'s baseline).
            pl.col("_cf").sum().alias("expected"),
            pl.col("_cf").alias("_mus"),
            pl.col("dispersion").alias("_phis"),
        )
        .sort("_ep")
    )
    # Resolved: the first later bucket back inside the expected band.
    after = (
        frame.join(bounds.select("series", "_ep", "_end"), on="series")
        .filter(
            (pl.col("_i") > pl.col("_end"))
            & ~pl.col("is_anomaly")
            & (pl.col("value") <= pl.col("upper"))
        )
        .group_by("_ep")
        .agg(pl.col("ts").min().alias("resolved_at"))
    )
    out = bounds.sort("_ep").join(sums, on="_ep", how="left").join(after, on="_ep", how="left")
    lo, hi = _excess_interval(
        out["observed"].to_numpy(),
        [np.asarray(m, dtype=float) for m in out["_mus"].to_list()],
        [np.asarray(p, dtype=float) for p in out["_phis"].to_list()],
        interval,
    )
    n_anom = pl.col("_n_anom").cast(pl.Float64)
    out = out.with_columns(
        pl.Series("lower", lo),
        pl.Series("upper", hi),
        (pl.col("observed") - pl.col("expected")).alias("excess"),
        (pl.col("observed") / pl.col("expected").clip(lower_bound=1e-9)).alias("ratio"),
        # Bonferroni over the episode's anomalous buckets: conservative, simple.
        (pl.col("_pmin") * n_anom).clip(upper_bound=1.0).alias("p_value"),
        (pl.col("_first_flag") + step).alias("detected_at"),
    ).with_columns(
        severity_expr(pl.col("ratio"), pl.col("excess"), severity).alias("severity"),
        severity_expr(
            pl.col("_first_obs") / pl.col("_first_exp").clip(lower_bound=1e-9),
            pl.col("_first_obs") - pl.col("_first_exp"),
            severity,
        ).alias("initial_severity"),
    )
    out = out.with_columns(
        pl.max_horizontal("severity", "initial_severity").alias("severity"),
        pl.struct("series", "started_at")
        .map_elements(lambda r: alert_id(r["series"], r["started_at"]), return_dtype=pl.String)
        .alias("alert_id"),
        pl.when(pl.col("resolved_at").is_not_null() & (pl.col("resolved_at") + step <= now))
        .then(pl.lit("resolved"))
        .when(pl.col("resolved_at").is_null() & (pl.col("detected_at") > now - step))
        .then(pl.lit("new"))
        .when(pl.col("severity") > pl.col("initial_severity"))
        .then(pl.lit("escalated"))
        .otherwise(pl.lit("ongoing"))
        .alias("status"),
        pl.lit(now).cast(pl.Datetime("us", "UTC")).alias("updated_at"),
    )
    return out.drop(
        "_ep",
        "_start",
        "_end",
        "_first_flag",
        "_first_obs",
        "_first_exp",
        "_pmin",
        "_n_anom",
        "_mus",
        "_phis",
    ).sort("series", "started_at")
