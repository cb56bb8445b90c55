"""The detector on planted spikes in synthetic negative-binomial series."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from transforms.anomaly import benjamini_hochberg, detect, infer_grain

START = datetime(2024, 1, 1, tzinfo=UTC)  # a Monday


def nb_series(
    days: int = 730, base: float = 50.0, *, seed: int = 0, phi: float = 0.02
) -> tuple[list[datetime], np.ndarray]:
    """Daily counts with a weekly pattern (quiet weekends) and NB noise."""
    rng = np.random.default_rng(seed)
    ts = [START + timedelta(days=i) for i in range(days)]
    weekly = np.array([1.15 if t.weekday() < 5 else 0.6 for t in ts])
    mu = base * weekly
    r = 1 / phi
    return ts, rng.negative_binomial(r, r / (r + mu)).astype(float)


def frame(ts: list[datetime], values: np.ndarray, name: str | None = None) -> pl.DataFrame:
    data: dict[str, object] = {"ts": ts, "value": values}
    if name is not None:
        data = {"series": [name] * len(ts), **data}
    return pl.DataFrame(data)


def anomalous_days(scored: pl.DataFrame) -> list[int]:
    return scored.with_row_index("i").filter(pl.col("is_anomaly"))["i"].to_list()


def test_output_columns_and_ranges() -> None:
    ts, x = nb_series(200)
    out = detect(frame(ts, x))
    for col in ("ts", "value", "expected", "lower", "upper", "score", "is_anomaly", "p_value"):
        assert col in out.columns
    assert out.height == 200
    assert out["ts"].to_list() == ts
    scored = out.drop_nulls("p_value")
    assert scored.height > 100
    assert scored["score"].is_between(0, 1).all()
    assert scored["p_value"].is_between(0, 1).all()
    assert (scored["lower"] <= scored["expected"]).all()
    assert (scored["expected"] <= scored["upper"]).all()


@pytest.mark.parametrize("seed", range(5))
def test_quiet_series_raises_nothing_over_two_years(seed: int) -> None:
    ts, x = nb_series(730, seed=seed)
    assert anomalous_days(detect(frame(ts, x))) == []


@pytest.mark.parametrize("day", [200, 450, 701])
def test_sudden_spike_found_at_its_onset(day: int) -> None:
    ts, x = nb_series(730, seed=3)
    x[day] += 120
    x[day + 1] += 60
    found = anomalous_days(detect(frame(ts, x)))
    assert found
    assert found[0] == day
    assert set(found) <= {day, day + 1}


def test_slow_burn_over_two_weeks_is_found() -> None:
    ts, x = nb_series(730, seed=4)
    rng = np.random.default_rng(9)
    ramp = np.linspace(0, 1.2, 14)  # up to +120% over two weeks, then stays
    start = 500
    for i in range(start, 730):
        extra = 50 * (ramp[i - start] if i - start < 14 else 1.2)
        x[i] += rng.poisson(extra)
    found = anomalous_days(detect(frame(ts, x)))
    assert found, "the slow burn was missed"
    assert start <= found[0] <= start + 14
    assert all(d >= start for d in found)


def test_small_shop_spike_found_and_blip_not() -> None:
    ts, x = nb_series(400, base=5, seed=1)
    x[300] += 25
    x[350] += 3
    found = anomalous_days(detect(frame(ts, x)))
    assert 300 in found
    assert 350 not in found


def test_same_spike_in_many_large_series() -> None:
    names = [f"s{i}" for i in range(20)]
    parts = []
    for i, name in enumerate(names):
        ts, x = nb_series(400, base=50_000, seed=100 + i)
        if i % 2 == 0:
            x[350] *= 2.5
        parts.append(frame(ts, x, name))
    out = detect(pl.concat(parts))
    hits = out.filter(pl.col("is_anomaly")).group_by("series").agg(pl.col("ts"))
    flagged = {r["series"]: r["ts"] for r in hits.iter_rows(named=True)}
    assert set(flagged) == {n for i, n in enumerate(names) if i % 2 == 0}
    assert all(v == [START + timedelta(days=350)] for v in flagged.values())


def test_past_spike_does_not_mask_a_later_one() -> None:
    ts, x = nb_series(500, seed=2)
    x[300:305] += 200  # a five-day backlash
    x[320] += 100  # a later, smaller one, two weeks on
    out = detect(frame(ts, x))
    found = anomalous_days(out)
    assert 300 in found
    assert 320 in found
    # The baseline right after the first spike is not inflated by it.
    assert out["expected"][310] < 1.3 * out["expected"][295]


def test_bh_keeps_200_null_series_quiet() -> None:
    parts = [frame(*nb_series(300, seed=1000 + i), f"s{i}") for i in range(200)]
    out = detect(pl.concat(parts))
    assert out["is_anomaly"].sum() <= 2


def test_young_series_never_alerts_and_never_crashes() -> None:
    for days in (0, 1, 2, 5, 27):
        ts, x = nb_series(days, seed=5)
        if days:
            x[-1] += 500
        out = detect(frame(ts, x) if days else pl.DataFrame({"ts": [], "value": []}))
        assert out.height == days
        assert not out["is_anomaly"].any()


def test_hourly_grain_is_inferred_and_scored() -> None:
    rng = np.random.default_rng(0)
    hours = 24 * 7 * 6
    ts = [START + timedelta(hours=h) for h in range(hours)]
    mu = np.array([2.0 + 8.0 * (9 <= t.hour < 18) for t in ts])
    x = rng.poisson(mu).astype(float)
    x[-20] += 60
    assert infer_grain(pl.Series(ts)).name == "hour"
    found = anomalous_days(detect(frame(ts, x)))
    assert found == [hours - 20]


def test_benjamini_hochberg_matches_the_textbook() -> None:
    p = np.array([[0.01], [0.04], [0.03], [0.005]])
    q = benjamini_hochberg(p)[:, 0]
    assert np.allclose(q, [0.02, 0.04, 0.04, 0.02])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    cut=st.integers(1, 120),
    spike=st.integers(0, 300),
)
def test_prefix_scores_exactly_as_the_whole(seed: int, cut: int, spike: int) -> None:
    names = ["a", "b", "c"]
    parts = []
    for i, name in enumerate(names):
        ts, x = nb_series(120, base=20 + 10 * i, seed=seed + i)
        x[min(cut, 119) - 1] += spike
        parts.append(frame(ts, x, name))
    whole = detect(pl.concat(parts))
    prefix = detect(pl.concat(parts).filter(pl.col("ts") < START + timedelta(days=cut)))
    same = whole.filter(pl.col("ts") < START + timedelta(days=cut))
    assert prefix.equals(same)


def test_compiled_filter_matches_the_numpy_one() -> None:
    from transforms import anomaly

    if anomaly._filter_kernel is None:
        pytest.skip("numba not installed")
    rng = np.random.default_rng(3)
    x = rng.poisson(rng.lognormal(1, 1, 40)[:, None] * np.ones(600)).astype(float)
    x[3, 100:130] = np.nan  # a gap inside a series
    x[5, :50] = np.nan  # a series that starts late
    x[7, 400] += 300
    for period in (7, 168):
        slots = np.arange(600) % period
        fast = anomaly._filter(x, slots, period, min_history=28, clip_z=3.0)
        slow = anomaly._filter_numpy(x, slots, period, min_history=28, clip_z=3.0)
        for a, b in zip(fast, slow, strict=True):
            assert np.array_equal(np.isnan(a), np.isnan(b))
            assert np.allclose(a, b, rtol=1e-7, equal_nan=True)


@pytest.mark.slow
@pytest.mark.parametrize(("grain", "steps"), [("day", 500), ("hour", 24 * 120)])
def test_detect_matrix_makes_the_same_decisions_as_detect(grain: str, steps: int) -> None:
    from transforms import anomaly

    if anomaly._score_kernel is None:
        pytest.skip("numba not installed")
    rng = np.random.default_rng(11)
    step = timedelta(days=1) if grain == "day" else timedelta(hours=1)
    ts = [START + step * i for i in range(steps)]
    n = 30
    x = rng.poisson(rng.lognormal(1.5, 1.0, n)[:, None] * np.ones(steps)).astype(float)
    hits = rng.integers(steps // 2, steps, 25)
    x[rng.integers(0, n, 25), hits] += rng.integers(10, 80, 25)
    x[4, steps - 40 :] *= 2.5  # a lasting rise: the window tests' turf
    names = [f"s{i:02d}" for i in range(n)]  # sorted as detect sorts them
    frame_in = pl.DataFrame({"series": np.repeat(names, steps), "ts": ts * n, "value": x.ravel()})
    want = detect(frame_in).with_row_index("r").filter(pl.col("is_anomaly"))["r"].to_numpy()
    grain_ = infer_grain(pl.Series(ts))
    slots = anomaly._slot(pl.Series(ts).to_numpy(), grain_)
    s_idx, t_idx = anomaly.detect_matrix(x, slots, grain_.period, chunk=7)
    assert want.size >= 10
    assert sorted((s_idx * steps + t_idx).tolist()) == sorted(want.tolist())


@pytest.mark.slow
def test_detect_matrix_keeps_every_candidate_when_its_room_runs_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Low counts are far from normal, so dozens of cells per series pass the
    # kernel's screen. With room for one candidate per series the kernel runs
    # out of room and the chunk is scored again with more. The decisions must
    # be those of ample room and of the frame API.
    from transforms import anomaly

    if anomaly._score_kernel is None:
        pytest.skip("numba not installed")
    rng = np.random.default_rng(17)
    steps, n = 24 * 200, 6
    x = rng.poisson(0.4, (n, steps)).astype(np.float32)
    x[2, 3000:3006] += 25  # a real spike among the noise
    x[4, :500] = np.nan  # a series that starts late
    ts = [START + timedelta(hours=i) for i in range(steps)]
    grain = infer_grain(pl.Series(ts))
    slots = anomaly._slot(pl.Series(ts).to_numpy(), grain)
    large = anomaly.detect_matrix(x, slots, grain.period, chunk=1000)
    monkeypatch.setattr(anomaly, "_ROOM", 1)
    small = anomaly.detect_matrix(x, slots, grain.period, chunk=1)
    assert np.array_equal(small[0], large[0])
    assert np.array_equal(small[1], large[1])
    names = [f"s{i}" for i in range(n)]
    keep = ~np.isnan(x.ravel())
    frame_in = pl.DataFrame(
        {"series": np.repeat(names, steps), "ts": ts * n, "value": x.ravel().astype(float)}
    ).filter(pl.Series(keep))
    scored = detect(frame_in).with_columns(
        pl.col("series").str.slice(1).cast(pl.Int64).alias("s"),
        ((pl.col("ts") - START).dt.total_hours()).alias("t"),
    )
    want = scored.filter(pl.col("is_anomaly")).sort("s", "t")
    assert want.height >= 1
    assert want["s"].to_list() == small[0].tolist()
    assert want["t"].to_list() == small[1].tolist()


def test_gaussian_mode_scores_real_values_causally() -> None:
    rng = np.random.default_rng(5)
    n = 3000
    ts = [START + timedelta(minutes=5 * i) for i in range(n)]
    x = 40.0 + rng.normal(0, 2.0, n)  # e.g. CPU percent: not counts, can be fractional
    x[2500:] += 25.0  # a level shift
    x[1800] = 5.0  # a sudden drop
    out = detect(frame(ts, x), model="gaussian")
    found = anomalous_days(out)
    assert 2500 in found
    assert 1800 in found
    assert all(i in (1800, 1801) or i >= 2500 for i in found)
    prefix = detect(frame(ts[:2200], x[:2200]), model="gaussian")
    assert prefix.equals(out.head(2200))
    with pytest.raises(ValueError, match="unknown model"):
        detect(frame(ts, x), model="prophet")


def test_cusum_compiled_matches_the_numpy_one(monkeypatch: pytest.MonkeyPatch) -> None:
    from transforms import anomaly

    if anomaly._cusum_kernel is None:
        pytest.skip("numba not installed")
    rng = np.random.default_rng(5)
    mu = rng.lognormal(2, 1, (20, 1)) * np.ones((20, 300))
    x = rng.poisson(mu * np.where(np.arange(300) > 250, 1.8, 1.0)).astype(float)
    mu[:, :10] = np.nan  # not started yet
    x[2, 100:120] = np.nan  # a gap
    phi = np.full(x.shape, 0.02)
    fast = anomaly.cusum(x, mu, phi, 1.5, 9.0)
    monkeypatch.setattr(anomaly, "_cusum_kernel", None)
    slow = anomaly.cusum(x, mu, phi, 1.5, 9.0)
    assert np.allclose(fast, slow, rtol=1e-9)
    assert fast.max() == pytest.approx(9.0)  # the rise reaches the cap
    assert (fast[:, :10] == 0).all()


def test_cusum_confirms_a_moderate_rise_sooner_than_the_bucket_tests() -> None:
    # Three weekdays at +70% on ~35 a day: no single bucket is extraordinary,
    # but two in a row are evidence enough for a CUSUM with a low threshold.
    ts, x = nb_series(400, base=30, seed=5, phi=0.01)
    x[302:305] = 60
    without = anomalous_days(detect(frame(ts, x), cusum_h=0))
    with_cusum = anomalous_days(detect(frame(ts, x), cusum_h=7.0))
    assert with_cusum == [303, 304]
    assert without == [304]
    # The threshold is what trades speed for false alarms: at its default
    # (one series: log(28 / 0.01) nats) it waits for the third day here.
    assert anomalous_days(detect(frame(ts, x))) == [304]


def test_cusum_threshold_pays_for_more_series_and_stricter_alpha() -> None:
    from transforms.anomaly import cusum_threshold

    one = cusum_threshold(0.01, 28, 1)
    assert one == pytest.approx(np.log(2800))
    assert cusum_threshold(0.01, 28, 100) > one > cusum_threshold(0.05, 28, 1)
