"""Emergent topics: a new word in complaints becomes a topic; ordinary days raise none."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from flows.demo_company import generate
from transforms.emergent import EMERGENT_TOPICS, emergent_topics
from transforms.labels import label_tickets

NOW = datetime(2026, 3, 1, tzinfo=UTC)
EVERYDAY = [
    "The app keeps buffering on my TV tonight.",
    "I was charged twice this month, please refund me.",
    "My DVD arrived cracked again.",
    "Can't log in, the password reset never arrives.",
    "You removed my favourite series, very disappointing.",
    "Why is the picture so blurry on my laptop?",
    "The price went up and nothing improved.",
    "Subtitles are out of sync on every episode.",
]


def _frame(rows: list[tuple[str, datetime, str, str]]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "ticket_key": [r[0] for r in rows],
            "created_at": [r[1] for r in rows],
            "requester_key": [r[2] for r in rows],
            "subject": [None] * len(rows),
            "body": [r[3] for r in rows],
        },
        schema_overrides={"created_at": pl.Datetime("us", "UTC"), "subject": pl.String},
    )


def _background(days: int = 59, per_day: int = 30, seed: int = 1) -> list:
    rng = random.Random(seed)
    rows = []
    for d in range(days):
        for i in range(per_day):
            at = NOW - timedelta(days=days - d) + timedelta(minutes=37 * i)
            rows.append((f"bg:{d}:{i}", at, f"c{rng.randrange(5000)}", rng.choice(EVERYDAY)))
    return rows


def test_a_new_product_name_emerges_with_its_tickets_and_first_seen() -> None:
    launch = NOW - timedelta(days=2)
    new = [
        (
            f"new:{i}",
            launch + timedelta(hours=i),
            f"n{i}",
            "Zoomflix charged twice this month, please refund me.",
        )
        for i in range(25)
    ]
    result = emergent_topics(_frame(_background() + new), now=NOW)
    assert result.schema == pl.Schema(EMERGENT_TOPICS)
    assert result["topic"][0] == "zoomflix"
    assert result["tickets"][0] == 25
    assert result["baseline_tickets"][0] == 0
    assert result["first_seen"][0] == launch
    assert set(result["ticket_keys"][0]) == {f"new:{i}" for i in range(25)}
    assert "zoomflix charged" in result["terms"][0]  # the bigram joined the same cluster


def test_ordinary_days_raise_nothing() -> None:
    assert emergent_topics(_frame(_background()), now=NOW).is_empty()


def test_one_customer_repeating_a_word_is_one_voice() -> None:
    repeats = [
        (f"rep:{i}", NOW - timedelta(hours=5 + i), "same-person", "Zoomflix Zoomflix Zoomflix!")
        for i in range(30)
    ]
    assert emergent_topics(_frame(_background() + repeats), now=NOW).is_empty()


def test_signature_names_never_become_topics() -> None:
    signed = [
        (
            f"sig:{i}",
            NOW - timedelta(hours=3 + i),
            f"s{i}",
            f"{EVERYDAY[i % 8]}\nThanks,\nAda Lovelace",
        )
        for i in range(30)
    ]
    assert emergent_topics(_frame(_background() + signed), now=NOW).is_empty()


def test_tickets_after_now_are_ignored_and_complaints_filter_applies() -> None:
    future = [
        (f"f:{i}", NOW + timedelta(hours=i), f"f{i}", "Zoomflix charged twice this month.")
        for i in range(30)
    ]
    assert emergent_topics(_frame(_background() + future), now=NOW).is_empty()

    recent = [
        (
            f"r:{i}",
            NOW - timedelta(hours=1 + i),
            f"r{i}",
            "Zoomflix: the app keeps buffering on my TV tonight.",
        )
        for i in range(30)
    ]
    frame = _frame(_background() + recent).with_columns(
        is_complaint=~pl.col("ticket_key").str.starts_with("r:")
    )
    assert emergent_topics(frame, now=NOW).is_empty()  # not labelled complaints
    frame = frame.with_columns(is_complaint=pl.lit(True))
    assert emergent_topics(frame, now=NOW)["topic"].to_list() == ["zoomflix"]


def test_unmatched_only_skips_tickets_a_configured_topic_took() -> None:
    new = [
        (f"new:{i}", NOW - timedelta(hours=2 + i), f"n{i}", "Zoomflix ate my DVD queue")
        for i in range(25)
    ]
    frame = _frame(_background() + new).with_columns(
        topics=pl.when(pl.col("ticket_key").str.starts_with("new:"))
        .then(pl.lit(["dvd"]))
        .otherwise(pl.lit([], dtype=pl.List(pl.String)))
    )
    assert emergent_topics(frame, now=NOW)["topic"][0] == "zoomflix"
    assert emergent_topics(frame, now=NOW, unmatched_only=True).is_empty()


def test_empty_input_gives_the_empty_schema() -> None:
    empty = _frame([])
    assert emergent_topics(empty, now=NOW).schema == pl.Schema(EMERGENT_TOPICS)


@pytest.fixture(scope="module")
def demo_complaints(tmp_path_factory: pytest.TempPathFactory) -> pl.DataFrame:
    out: Path = tmp_path_factory.mktemp("demo")
    generate(out, seed=7, volume=1.0)
    raw = pl.read_csv(out / "tickets.csv", infer_schema_length=0)
    tickets = raw.select(
        pl.col("id").alias("ticket_key"),
        pl.col("requester").alias("requester_key"),
        pl.col("created_at").str.to_datetime(time_zone="UTC"),
        "subject",
        "body",
    )
    labels = label_tickets(tickets).select("ticket_key", "is_complaint", "topics")
    return tickets.join(labels, on="ticket_key")


@pytest.mark.slow
def test_demo_qwikster_emerges_within_a_day_of_the_split(demo_complaints: pl.DataFrame) -> None:
    split = datetime(2026, 6, 15, tzinfo=UTC)
    before = emergent_topics(demo_complaints, now=split)
    assert "qwikster" not in before["topic"].to_list()
    after = emergent_topics(demo_complaints, now=split + timedelta(days=1))
    assert after["topic"][0] == "qwikster"
    assert after["first_seen"][0].date() == split.date()
    assert after["baseline_tickets"][0] == 0


@pytest.mark.slow
def test_demo_quiet_month_raises_nothing(demo_complaints: pl.DataFrame) -> None:
    day = datetime(2025, 11, 1, tzinfo=UTC)
    found = {}
    while day < datetime(2025, 12, 1, tzinfo=UTC):
        result = emergent_topics(demo_complaints, now=day)
        if not result.is_empty():
            found[day.date()] = result["topic"].to_list()
        day += timedelta(days=1)
    assert found == {}
