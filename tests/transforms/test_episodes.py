"""Episodes: one spike is one anomaly, with a stable id and a status as of now."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from transforms.anomaly import detect
from transforms.episodes import Severity, alert_id, episodes

START = datetime(2024, 1, 1, tzinfo=UTC)
DAY = timedelta(days=1)


def scored_series(spikes: dict[int, float], days: int = 300, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    ts = [START + DAY * i for i in range(days)]
    mu = np.array([40.0 if t.weekday() < 5 else 25.0 for t in ts])
    x = rng.poisson(mu).astype(float)
    for day, extra in spikes.items():
        x[day] += extra
    return detect(pl.DataFrame({"series": "s", "ts": ts, "value": x}))


def test_consecutive_buckets_make_one_episode_with_its_timeline() -> None:
    scored = scored_series({200: 80, 201: 120, 202: 60})
    now = START + DAY * 300
    found = episodes(scored, now=now, step=DAY)
    assert found.height == 1
    ep = found.row(0, named=True)
    assert ep["started_at"] == START + DAY * 200
    assert ep["detected_at"] == START + DAY * 201  # daily bucket known at its end
    assert ep["peak_at"] == START + DAY * 201
    assert ep["last_anomalous_at"] == START + DAY * 202
    assert ep["resolved_at"] == START + DAY * 203
    assert ep["status"] == "resolved"
    assert 230 < ep["excess"] < 290
    assert ep["lower"] < ep["excess"] < ep["upper"]
    assert ep["ratio"] > 2
    assert ep["p_value"] < 1e-6
    assert ep["alert_id"] == alert_id("s", START + DAY * 200)


def test_short_gap_is_bridged_and_long_gap_splits() -> None:
    scored = scored_series({200: 120, 202: 120, 230: 120})
    found = episodes(scored, now=START + DAY * 300, step=DAY, max_gap=1)
    assert found["started_at"].to_list() == [START + DAY * 200, START + DAY * 230]
    split = episodes(scored, now=START + DAY * 300, step=DAY, max_gap=0)
    assert split.height == 3


def test_status_as_of_now_and_stable_ids() -> None:
    scored = scored_series({200: 40, 201: 200, 202: 220})
    # Only the first bucket is complete: new, and at its initial severity.
    first = episodes(scored, now=START + DAY * 201, step=DAY)
    assert first["status"].to_list() == ["new"]
    later = episodes(scored, now=START + DAY * 203, step=DAY)
    row = later.row(0, named=True)
    assert row["alert_id"] == first["alert_id"][0]
    assert row["severity"] > row["initial_severity"]
    assert row["status"] == "escalated"
    assert row["resolved_at"] is None
    done = episodes(scored, now=START + DAY * 210, step=DAY)
    assert done["status"].to_list() == ["resolved"]


def test_severity_thresholds_are_parameters() -> None:
    scored = scored_series({200: 120})
    strict = Severity(warning=(10.0, 1e6), major=(20.0, 1e6), critical=(30.0, 1e6))
    assert episodes(scored, now=START + DAY * 300, step=DAY, severity=strict)["severity"][0] == 1
    loose = Severity(warning=(1.0, 0.0), major=(1.0, 0.0), critical=(1.0, 0.0))
    assert episodes(scored, now=START + DAY * 300, step=DAY, severity=loose)["severity"][0] == 4


def test_quiet_series_has_no_episodes() -> None:
    assert episodes(scored_series({}), now=START + DAY * 300, step=DAY).is_empty()


def test_slow_burn_is_measured_against_the_level_before_it() -> None:
    # +100% reached over two weeks, then held: the adaptive level climbs with
    # it, so the excess must be counted against the pre-rise baseline.
    rng = np.random.default_rng(4)
    days = 330
    ts = [START + DAY * i for i in range(days)]
    mu = np.array([40.0 if t.weekday() < 5 else 25.0 for t in ts])
    ramp = np.clip((np.arange(days) - 280 + 1) / 14, 0.0, 1.0)
    x = rng.poisson(mu * (1.0 + ramp)).astype(float)
    scored = detect(pl.DataFrame({"series": "s", "ts": ts, "value": x}))
    found = episodes(scored, now=START + DAY * days, step=DAY)
    assert found.height >= 1
    ep = found.sort("started_at").row(0, named=True)
    assert START + DAY * 280 <= ep["started_at"] <= START + DAY * 296
    inside = scored.filter(
        (pl.col("ts") >= ep["started_at"]) & (pl.col("ts") <= ep["last_anomalous_at"])
    )
    # The counterfactual is at or below the adaptive expectation, never above.
    assert ep["expected"] <= inside["expected"].sum() + 1e-6
    assert ep["expected"] == pytest.approx(inside["baseline"].sum())
    assert ep["ratio"] >= 1.5


def flagged_frame(anomalous: dict[int, int], days: int = 40) -> pl.DataFrame:
    """A scored frame by hand: ``anomalous`` maps a day to its rise_lead."""
    ts = [START + DAY * i for i in range(days)]
    return pl.DataFrame(
        {
            "series": "s",
            "ts": ts,
            "value": [60.0 if i in anomalous else 20.0 for i in range(days)],
            "expected": 20.0,
            "upper": 30.0,
            "p_value": [1e-9 if i in anomalous else 0.5 for i in range(days)],
            "score": [0.9 if i in anomalous else 0.0 for i in range(days)],
            "is_anomaly": [i in anomalous for i in range(days)],
            "dispersion": 0.01,
            "baseline": 20.0,
            "rise_lead": [anomalous.get(i, 0) for i in range(days)],
        }
    )


def test_a_burst_whose_rise_began_inside_the_last_episode_continues_it() -> None:
    # Days 10-12 flagged, calm 13-16, flagged again on 17: a new episode,
    # unless the rise that revealed day 17 began by day 14 (inside the gap
    # the episode may bridge): then it is the same backlash, one alert.
    apart = episodes(flagged_frame({10: 0, 11: 0, 12: 0, 17: 0}), now=START + DAY * 40, step=DAY)
    assert apart.height == 2
    joined = episodes(flagged_frame({10: 0, 11: 0, 12: 0, 17: 4}), now=START + DAY * 40, step=DAY)
    assert joined.height == 1
    ep = joined.row(0, named=True)
    assert ep["started_at"] == START + DAY * 10
    assert ep["last_anomalous_at"] == START + DAY * 17
    assert ep["alert_id"] == alert_id("s", START + DAY * 10)
    # A lead that stops short of the episode does not join it.
    short = episodes(flagged_frame({10: 0, 11: 0, 12: 0, 17: 2}), now=START + DAY * 40, step=DAY)
    assert short.height == 2


def test_slow_burn_rise_start_is_dated_before_its_confirmation() -> None:
    rng = np.random.default_rng(4)
    days = 330
    ts = [START + DAY * i for i in range(days)]
    mu = np.array([40.0 if t.weekday() < 5 else 25.0 for t in ts])
    ramp = np.clip((np.arange(days) - 280 + 1) / 14, 0.0, 1.0)
    x = rng.poisson(mu * (1.0 + ramp)).astype(float)
    scored = detect(pl.DataFrame({"series": "s", "ts": ts, "value": x}))
    ep = episodes(scored, now=START + DAY * days, step=DAY).sort("started_at").row(0, named=True)
    confirmed = (ep["detected_at"] - DAY - START) / DAY
    began = (ep["rise_started_at"] - START) / DAY
    assert began <= (ep["started_at"] - START) / DAY
    assert 279 <= began <= 284 < confirmed
