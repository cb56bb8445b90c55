"""A small synthetic company for the monitor and attribution tests.

Tickets with texts, their daily counts in the COMPLAINT_COUNTS shape, and a
change calendar with planted backlashes: a price rise (announced, then
effective, then rolled back) and a playback outage that happens two days
after an unrelated UI release.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl

from transforms.schema import COMPLAINT_COUNTS, PRODUCT_CHANGES, conform

START = datetime(2024, 1, 1, tzinfo=UTC)
DAYS = 560
PRICE_ANNOUNCED = 400
PRICE_EFFECTIVE = 420
PRICE_ROLLBACK = 434
UI_RELEASE = 468
OUTAGE = 470

NORMAL = {
    "pricing": [
        "Question about my invoice",
        "How do I update my payment card?",
        "Receipt missing for last month",
        "Can I change my plan to annual?",
    ],
    "playback": [
        "Subtitles out of sync",
        "Audio language wrong on one film",
        "Video quality looks low on my TV",
        "Episode order is wrong",
    ],
    "account": [
        "Cannot reset my password",
        "Change the email on my account",
        "Two factor code never arrives",
        "Login page keeps reloading",
    ],
}
BACKLASH = {
    "price": [
        "My bill went up again, this is outrageous",
        "Why was I charged more this month? Too expensive now",
        "The new price is a joke, I am cancelling",
        "You raised the cost of my subscription without asking",
    ],
    "outage": [
        "Video keeps buffering and then stops",
        "Playback error on every film tonight",
        "Streaming is broken, black screen when I press play",
        "Everything freezes after a few seconds of playback",
    ],
}


@dataclass
class Company:
    tickets: pl.DataFrame
    counts: pl.DataFrame
    changes: pl.DataFrame


def _extra(topic: str, days: np.ndarray, *, price_spike: bool, outage: bool) -> np.ndarray:
    """Extra complaints per day of the planted backlashes of ``topic``."""
    extra = np.zeros(days.size)
    if topic == "pricing" and price_spike:
        extra[(days >= PRICE_ANNOUNCED) & (days < PRICE_ANNOUNCED + 4)] = 25.0
        extra[(days >= PRICE_EFFECTIVE) & (days < PRICE_ROLLBACK)] = 40.0
    if topic == "playback" and outage:
        extra[(days >= OUTAGE) & (days < OUTAGE + 3)] = 60.0
    return extra


def make_company(
    *, seed: int = 0, price_spike: bool = True, outage: bool = True, busy_factor: float = 1.0
) -> Company:
    """``busy_factor`` multiplies every ticket (complaints and others) in the last 60 days:
    a busy season, not a backlash."""
    rng = np.random.default_rng(seed)
    days = np.arange(DAYS)
    weekday = (days + START.weekday()) % 7 < 5
    weekly = np.where(weekday, 1.1, 0.75) * np.where(days >= DAYS - 60, busy_factor, 1.0)
    parts = []
    for topic, mu in {"pricing": 12.0, "playback": 15.0, "account": 10.0}.items():
        kind = "price" if topic == "pricing" else "outage"
        # Per day: ordinary complaints, backlash complaints, questions.
        for label, rate, texts, complaint in (
            ("n", mu * weekly, NORMAL[topic], True),
            (
                "x",
                _extra(topic, days, price_spike=price_spike, outage=outage),
                BACKLASH[kind],
                True,
            ),
            ("q", 2 * mu * weekly, NORMAL[topic], False),
        ):
            n = rng.poisson(rate)
            day = np.repeat(days, n)
            idx = np.arange(day.size)
            subjects = np.asarray(texts)[rng.integers(0, len(texts), day.size)]
            parts.append(
                pl.DataFrame(
                    {
                        "ticket_key": [
                            f"t:{d}-{topic}-{label}{i}" for d, i in zip(day, idx, strict=True)
                        ],
                        "created_at": [
                            START + timedelta(days=int(d), minutes=int(m))
                            for d, m in zip(day, rng.integers(0, 1440, day.size), strict=True)
                        ],
                        "subject": subjects,
                        "body": [f"Hello, {t.lower()}. Regards, a customer" for t in subjects],
                        "topics": [[topic]] * day.size,
                        "is_complaint": [complaint] * day.size,
                        "channel": np.where(idx % 2 == 1, "email", "web"),
                    },
                    schema_overrides={"created_at": pl.Datetime("us", "UTC")},
                )
            )
    tickets = pl.concat(parts)
    return Company(tickets=tickets.drop("channel"), counts=counts_of(tickets), changes=changes())


def counts_of(tickets: pl.DataFrame) -> pl.DataFrame:
    """Daily COMPLAINT_COUNTS with '*' totals, as the marts build them."""
    day = tickets.with_columns(pl.col("created_at").dt.truncate("1d").alias("bucket"))
    per_topic = day.explode("topics").rename({"topics": "topic"})
    aggs = [
        pl.len().alias("tickets"),
        pl.col("is_complaint").sum().alias("complaints"),
        pl.lit(0).alias("cancel_intents"),
    ]
    frames = [
        per_topic.group_by("bucket", "topic", "channel").agg(aggs),
        per_topic.group_by("bucket", "topic").agg(aggs).with_columns(pl.lit("*").alias("channel")),
        day.group_by("bucket", "channel").agg(aggs).with_columns(pl.lit("*").alias("topic")),
        day.group_by("bucket")
        .agg(aggs)
        .with_columns(pl.lit("*").alias("topic"), pl.lit("*").alias("channel")),
    ]
    return pl.concat([conform(f, COMPLAINT_COUNTS) for f in frames]).sort("bucket", "topic")


def changes() -> pl.DataFrame:
    def at(day: int) -> datetime:
        return START + timedelta(days=day, hours=9)

    rows = [
        {
            "change_id": "price-rise",
            "title": "Standard plan price rise",
            "kind": "price",
            "description": "Standard plan goes from $9.99 to $12.99 a month.",
            "announced_at": at(PRICE_ANNOUNCED),
            "effective_at": at(PRICE_EFFECTIVE),
            "areas": ["pricing", "billing"],
            "keywords": ["price", "increase"],
            "reverts": None,
        },
        {
            "change_id": "price-rollback",
            "title": "Standard plan price restored",
            "kind": "price",
            "description": "We heard you: the old price is back.",
            "announced_at": at(PRICE_ROLLBACK - 1),
            "effective_at": at(PRICE_ROLLBACK),
            "areas": ["pricing"],
            "keywords": ["price"],
            "reverts": "price-rise",
        },
        {
            "change_id": "ui-refresh",
            "title": "New home screen layout",
            "kind": "release",
            "description": "A redesigned home screen with bigger artwork and a new menu.",
            "announced_at": at(UI_RELEASE),
            "effective_at": at(UI_RELEASE),
            "areas": ["ui"],
            "keywords": ["design", "menu"],
            "reverts": None,
        },
    ]
    return conform(pl.DataFrame(rows), PRODUCT_CHANGES)
