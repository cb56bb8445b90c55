"""The monitoring step end to end on a synthetic company (pure: frames in, frames out)."""

from __future__ import annotations

from datetime import timedelta

import polars as pl
import pytest

from tests.transforms.synthetic_company import (
    DAYS,
    OUTAGE,
    PRICE_ANNOUNCED,
    PRICE_EFFECTIVE,
    START,
    Company,
    make_company,
)
from transforms.monitor import MonitorSettings, backtest, monitor
from transforms.schema import ANOMALIES

DAY = timedelta(days=1)
NOW = START + DAY * DAYS


@pytest.fixture(scope="module")
def company() -> Company:
    return make_company(seed=1)


@pytest.fixture(scope="module")
def found(company: Company) -> pl.DataFrame:
    return monitor(company.counts, company.tickets, company.changes, now=NOW)


def test_output_conforms_to_anomalies(found: pl.DataFrame) -> None:
    assert found.schema == pl.Schema(ANOMALIES)
    assert found["alert_id"].n_unique() == found.height


def test_price_backlash_attributed_with_recovery(found: pl.DataFrame) -> None:
    pricing = found.filter(pl.col("topic") == "pricing").sort("started_at")
    assert pricing.height >= 1
    assert set(pricing["change_id"].to_list()) == {"price-rise"}
    onsets = pricing["started_at"].to_list()
    assert START + DAY * PRICE_ANNOUNCED <= onsets[0] <= START + DAY * (PRICE_ANNOUNCED + 2)
    effective = pricing.filter(pl.col("started_at") >= START + DAY * PRICE_EFFECTIVE).row(
        0, named=True
    )
    assert effective["started_at"] == START + DAY * PRICE_EFFECTIVE
    assert effective["reverted_by"] == "price-rollback"
    assert 0 < effective["recovery_hours"] <= 72
    assert effective["status"] == "resolved"
    assert effective["severity"] >= 2
    assert len(effective["example_ticket_keys"]) >= 3
    assert any(t in effective["rising_terms"] for t in ("bill", "charged", "price", "cost"))


def test_outage_found_and_blamed_on_nothing(found: pl.DataFrame) -> None:
    playback = found.filter(pl.col("topic") == "playback")
    assert playback["started_at"].to_list() == [START + DAY * OUTAGE]
    assert playback["change_id"].to_list() == [None]
    assert playback["runner_up_change_id"].to_list() == ["ui-refresh"]


def test_quiet_topic_and_quiet_company_raise_nothing(found: pl.DataFrame) -> None:
    assert found.filter(pl.col("topic") == "account").is_empty()
    quiet = make_company(seed=2, price_spike=False, outage=False)
    assert monitor(quiet.counts, quiet.tickets, quiet.changes, now=NOW).is_empty()


@pytest.mark.slow
def test_busy_season_is_not_a_backlash() -> None:
    busy = make_company(seed=3, price_spike=False, outage=False, busy_factor=2.2)
    assert monitor(busy.counts, busy.tickets, busy.changes, now=NOW).is_empty()


def test_only_complete_buckets_are_scored(company: Company) -> None:
    # Mid-way through the outage's first day: that bucket is not complete yet.
    early = monitor(
        company.counts, company.tickets, company.changes, now=START + DAY * OUTAGE + DAY / 2
    )
    assert early.filter(pl.col("topic") == "playback").is_empty()
    at_close = monitor(
        company.counts, company.tickets, company.changes, now=START + DAY * (OUTAGE + 1)
    )
    row = at_close.filter(pl.col("topic") == "playback").row(0, named=True)
    assert row["status"] == "new"
    assert row["detected_at"] == START + DAY * (OUTAGE + 1)


def test_settings_change_the_outcome(company: Company) -> None:
    strict = MonitorSettings(min_ratio=10.0)
    assert monitor(
        company.counts, company.tickets, company.changes, now=NOW, settings=strict
    ).is_empty()


def test_backtest_reports_first_scheduled_detection(company: Company, found: pl.DataFrame) -> None:
    start = START + DAY * 300
    replay = backtest(
        company.counts,
        company.tickets,
        company.changes,
        start=start,
        end=NOW,
        step=timedelta(hours=6),
    )
    assert replay.schema == pl.Schema(ANOMALIES)
    assert set(replay["alert_id"]) == set(found["alert_id"])
    for row in replay.iter_rows(named=True):
        closed = row["started_at"] + DAY
        assert closed <= row["detected_at"] < closed + timedelta(hours=6)
    outage = replay.filter(pl.col("topic") == "playback").row(0, named=True)
    assert outage["change_id"] is None
    # Examples at detection come only from tickets created before it.
    created = dict(zip(company.tickets["ticket_key"], company.tickets["created_at"], strict=True))
    for row in replay.iter_rows(named=True):
        assert all(created[k] < row["detected_at"] for k in row["example_ticket_keys"])


def test_zone_spelling_from_duckdb_is_accepted(company: Company, found: pl.DataFrame) -> None:
    # DuckDB may return TIMESTAMPTZ as "Etc/UTC": the same instants must give the same result.
    def etc(frame: pl.DataFrame, *cols: str) -> pl.DataFrame:
        return frame.with_columns(pl.col(c).dt.convert_time_zone("Etc/UTC") for c in cols)

    again = monitor(
        etc(company.counts, "bucket"),
        etc(company.tickets, "created_at"),
        etc(company.changes, "announced_at", "effective_at"),
        now=NOW,
    )
    assert again.drop("updated_at").equals(found.drop("updated_at"))


def test_one_backlash_is_one_alert_not_one_per_series() -> None:
    from transforms.monitor import _one_alert_per_backlash

    def ep(topic: str, channel: str, start: int, end: int) -> dict[str, object]:
        return {
            "topic": topic,
            "channel": channel,
            "started_at": START + DAY * start,
            "last_anomalous_at": START + DAY * end,
        }

    found = pl.DataFrame(
        [
            ep("pricing", "*", 100, 110),
            ep("*", "*", 101, 104),  # the price backlash lifting the total: told by pricing
            ep("pricing", "email", 100, 103),  # one channel of it: told by pricing as a whole
            ep("*", "*", 200, 202),  # a diffuse rise no topic explains: kept
            ep("dvd", "email", 300, 301),  # a channel whose topic did not fire: kept
        ]
    )
    kept = _one_alert_per_backlash(found)
    assert kept.select("topic", "channel", "started_at").rows() == [
        ("pricing", "*", START + DAY * 100),
        ("*", "*", START + DAY * 200),
        ("dvd", "email", START + DAY * 300),
    ]


def test_slow_burn_is_one_alert_blamed_on_its_change() -> None:
    # The planted benchmark's two-week ramp (benchmarks/planted.py, seed 0):
    # its change took effect on the ramp's first day, a week before the rise
    # was confirmed, and the adaptive level half-absorbed the plateau.
    from benchmarks import planted

    scenario = next(s for s in planted.SCENARIOS if s.name.startswith("slow burn"))
    counts, tickets, calendar = planted.simulate(scenario, seed=0)
    alerts = backtest(
        counts,
        tickets,
        calendar,
        start=planted.START + DAY * planted.REPLAY_FROM,
        end=planted.START + DAY * planted.DAYS,
        step=DAY,
    )
    assert alerts.height == 1
    alert = alerts.row(0, named=True)
    assert alert["topic"] == "account"
    assert alert["change_id"] == "profiles-limit"
    onset = planted.START + DAY * 500
    assert onset <= alert["started_at"] < alert["detected_at"] <= onset + DAY * 9
