from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl

from transforms.notices import due_notices, notified_severity

NOW = datetime(2026, 3, 20, tzinfo=UTC)


def anomalies(*rows: dict) -> pl.DataFrame:
    base = {"started_at": NOW - timedelta(days=3), "last_anomalous_at": NOW - timedelta(days=1)}
    return pl.DataFrame([{**base, **r} for r in rows])


def sent(*pairs: tuple[str, str]) -> pl.DataFrame:
    return pl.DataFrame(
        {"alert_id": [p[0] for p in pairs], "notice": [p[1] for p in pairs]},
        schema={"alert_id": pl.String, "notice": pl.String},
    )


def test_new_then_escalation_then_resolution_each_once() -> None:
    a = {"alert_id": "a", "severity": 2, "status": "new"}
    assert [n.notice for n in due_notices(anomalies(a), sent(), min_severity=2, now=NOW)] == [
        "new:2"
    ]
    assert due_notices(anomalies(a), sent(("a", "new:2")), min_severity=2, now=NOW) == []
    grown = {**a, "severity": 4, "status": "escalated"}
    due = due_notices(anomalies(grown), sent(("a", "new:2")), min_severity=2, now=NOW)
    assert [n.notice for n in due] == ["escalated:4"]
    done = sent(("a", "new:2"), ("a", "escalated:4"))
    assert due_notices(anomalies(grown), done, min_severity=2, now=NOW) == []
    over = {**grown, "status": "resolved"}
    assert [n.notice for n in due_notices(anomalies(over), done, min_severity=2, now=NOW)] == [
        "resolved"
    ]
    assert (
        due_notices(
            anomalies(over), sent(("a", "new:2"), ("a", "resolved")), min_severity=2, now=NOW
        )
        == []
    )


def test_below_threshold_and_old_history_are_not_emailed() -> None:
    low = {"alert_id": "low", "severity": 1, "status": "new"}
    old = {
        "alert_id": "old",
        "severity": 3,
        "status": "resolved",
        "last_anomalous_at": NOW - timedelta(days=90),
    }
    due = due_notices(
        anomalies(low, old), sent(), min_severity=2, now=NOW, max_age=timedelta(days=7)
    )
    assert due == []
    due = due_notices(anomalies(low, old), sent(), min_severity=2, now=NOW, max_age=None)
    assert [n.alert_id for n in due] == ["old"]


def test_notified_severity_reads_the_highest_step() -> None:
    assert notified_severity(["new:2", "escalated:3", "resolved"]) == 3
    assert notified_severity([]) == 0
