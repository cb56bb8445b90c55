"""Attribution: the right change, or none, in the customers' words."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from transforms.attribution import (
    AttributionSettings,
    attribute,
    rising_terms,
    stem,
    terms,
    time_score,
)
from transforms.schema import PRODUCT_CHANGES, conform

ONSET = datetime(2025, 3, 10, tzinfo=UTC)
DAY = timedelta(days=1)

PRICE = {
    "change_id": "price-rise",
    "title": "Price rise for the Standard plan",
    "kind": "price",
    "description": "Standard goes to $12.99.",
    "announced_at": ONSET - 3 * DAY,
    "effective_at": ONSET - DAY / 2,
    "areas": ["pricing"],
    "keywords": ["price"],
    "reverts": None,
}
UI = {
    "change_id": "ui-2",
    "title": "Redesigned home screen",
    "kind": "release",
    "description": "New layout and menu.",
    "announced_at": ONSET - DAY,
    "effective_at": ONSET - DAY,
    "areas": ["ui"],
    "keywords": ["design"],
    "reverts": None,
}
ROLLBACK = {
    "change_id": "price-back",
    "title": "Old price restored",
    "kind": "price",
    "description": "",
    "announced_at": ONSET + 5 * DAY,
    "effective_at": ONSET + 6 * DAY,
    "areas": ["pricing"],
    "keywords": [],
    "reverts": "price-rise",
}


def tickets(topic: str, spike: list[str], normal: list[str], n: int = 30) -> pl.DataFrame:
    rows = []
    for i in range(n):  # four weeks of ordinary complaints before the onset
        text = normal[i % len(normal)]
        rows.append((f"b{i}", ONSET - DAY * 28 + DAY * i * 27 / n, text, True))
    for i in range(n):
        text = spike[i % len(spike)]
        rows.append((f"s{i}", ONSET + timedelta(hours=i % 20), text, True))
    rows.append(("q1", ONSET + timedelta(hours=3), "How do I change my email?", False))
    return pl.DataFrame(
        {
            "ticket_key": [r[0] for r in rows],
            "created_at": [r[1] for r in rows],
            "subject": [r[2] for r in rows],
            "body": ["" for _ in rows],
            "topics": [[topic] for _ in rows],
            "is_complaint": [r[3] for r in rows],
        }
    )


def episode(topic: str, resolved_at: datetime | None = None) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "series": [f"day/topic={topic}/channel=*"],
            "topic": [topic],
            "started_at": [ONSET],
            "last_anomalous_at": [ONSET],
            "resolved_at": [resolved_at],
        },
        schema_overrides={"resolved_at": pl.Datetime("us", "UTC")},
    )


def changes(*rows: dict[str, object]) -> pl.DataFrame:
    return conform(pl.DataFrame(list(rows)), PRODUCT_CHANGES)


PRICING_NORMAL = ["Receipt missing", "Update my card please", "Where is my invoice?"]
PRICING_SPIKE = [
    "My bill went up!",
    "Why am I charged more now?",
    "Too expensive, cancelling",
    "My bill went up without warning",
]


def test_stems_and_concepts_bridge_customer_words() -> None:
    assert stem("billed") == stem("billing") == stem("bills") == "bill"
    assert "@price" in terms("my bill went up")
    assert "@price" in terms("Price rise")


def test_pricing_spike_is_blamed_on_the_price_change() -> None:
    out = attribute(
        episode("pricing"),
        tickets("pricing", PRICING_SPIKE, PRICING_NORMAL),
        changes(PRICE, UI),
        now=ONSET + 2 * DAY,
        step=DAY,
    ).row(0, named=True)
    assert out["change_id"] == "price-rise"
    assert out["change_title"] == PRICE["title"]
    assert out["runner_up_change_id"] == "ui-2"
    assert out["attribution_score"] > out["runner_up_score"]
    assert "bill" in out["rising_terms"]
    assert 3 <= len(out["example_ticket_keys"]) <= 5
    assert all(k.startswith("s") for k in out["example_ticket_keys"])


def test_total_series_without_topic_still_matches_by_words() -> None:
    out = attribute(
        episode("*"),
        tickets("pricing", PRICING_SPIKE, PRICING_NORMAL),
        changes(PRICE, UI),
        now=ONSET + 2 * DAY,
        step=DAY,
    )
    assert out["change_id"][0] == "price-rise"


def test_playback_incident_is_not_blamed_on_an_unrelated_release() -> None:
    out = attribute(
        episode("playback"),
        tickets(
            "playback",
            ["Video keeps buffering", "Playback error on every film", "Stream freezes, crash"],
            ["Subtitles out of sync", "Wrong audio language"],
        ),
        changes(UI),
        now=ONSET + 2 * DAY,
        step=DAY,
    ).row(0, named=True)
    assert out["change_id"] is None
    assert out["runner_up_change_id"] == "ui-2"
    assert "buffering" in out["rising_terms"]


def test_change_outside_the_window_is_not_a_candidate() -> None:
    old = {**PRICE, "announced_at": ONSET - 40 * DAY, "effective_at": ONSET - 30 * DAY}
    out = attribute(
        episode("pricing"),
        tickets("pricing", PRICING_SPIKE, PRICING_NORMAL),
        changes(old),
        now=ONSET + 2 * DAY,
        step=DAY,
    )
    assert out["change_id"][0] is None
    assert out["runner_up_change_id"][0] is None


def test_recovery_hours_after_a_revert() -> None:
    resolved = ONSET + 7 * DAY
    out = attribute(
        episode("pricing", resolved_at=resolved),
        tickets("pricing", PRICING_SPIKE, PRICING_NORMAL),
        changes(PRICE, ROLLBACK),
        now=ONSET + 10 * DAY,
        step=DAY,
    ).row(0, named=True)
    assert out["change_id"] == "price-rise"
    assert out["reverted_by"] == "price-back"
    assert out["recovery_hours"] == pytest.approx(48.0)  # end of the calm bucket - effective


def test_revert_not_yet_effective_is_not_reported() -> None:
    out = attribute(
        episode("pricing"),
        tickets("pricing", PRICING_SPIKE, PRICING_NORMAL),
        changes(PRICE, ROLLBACK),
        now=ONSET + 2 * DAY,
        step=DAY,
    )
    assert out["reverted_by"][0] is None
    assert out["recovery_hours"][0] is None


def test_time_score_counts_both_dates_and_decays() -> None:
    s = AttributionSettings()
    near = time_score(ONSET, [ONSET - 20 * DAY, ONSET - DAY], s)
    far = time_score(ONSET, [ONSET - 10 * DAY], s)
    assert near > far > 0
    assert time_score(ONSET, [ONSET + 3 * DAY], s) == 0.0
    assert time_score(ONSET, [ONSET + DAY / 2], s) == 1.0


def test_rising_terms_rank_what_rose() -> None:
    spike = ["bill went up", "my bill is higher", "bill bill", "the app is fine"]
    base = ["the app is fine", "app crashed", "fine thanks"]
    top = rising_terms(spike, base, k=3)
    assert top[0] == "bill"
    assert "app" not in top


def test_slow_burn_is_timed_from_where_its_rise_began() -> None:
    # The change took effect a week before the detector confirmed the rise:
    # from the confirmation day it is too old, from the rise's start it fits.
    slow = {**PRICE, "announced_at": ONSET - 20 * DAY, "effective_at": ONSET - 7 * DAY}
    confirmed = episode("pricing")
    dated = confirmed.with_columns(pl.lit(ONSET - 6 * DAY).alias("rise_started_at"))
    data = tickets("pricing", PRICING_SPIKE, PRICING_NORMAL)
    late = attribute(confirmed, data, changes(slow), now=ONSET + 2 * DAY, step=DAY)
    early = attribute(dated, data, changes(slow), now=ONSET + 2 * DAY, step=DAY)
    assert late["change_id"][0] is None
    assert early["change_id"][0] == "price-rise"
    assert early["attribution_score"][0] > 3 * (late["runner_up_score"][0] or 0.0)
