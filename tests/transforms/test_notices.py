from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

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


def sent_at(*rows: tuple[str, str, datetime]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "alert_id": [r[0] for r in rows],
            "notice": [r[1] for r in rows],
            "sent_at": [r[2] for r in rows],
        },
        schema={"alert_id": pl.String, "notice": pl.String, "sent_at": pl.Datetime("us", "UTC")},
    )


def test_ongoing_spike_is_silent_by_default() -> None:
    a = {"alert_id": "a", "severity": 3, "status": "ongoing"}
    later = NOW + timedelta(days=30)
    done = sent_at(("a", "new:3", NOW - timedelta(days=3)))
    assert due_notices(anomalies(a), done, min_severity=2, now=later) == []


def test_reminders_once_per_period_and_not_right_after_another_notice() -> None:
    a = {"alert_id": "a", "severity": 3, "status": "ongoing"}  # started NOW - 3 days
    every = timedelta(days=2)
    kw = {"min_severity": 2, "escalation_only": False, "reminder_every": every}
    done = sent_at(("a", "new:3", NOW - timedelta(days=3)))
    due = due_notices(anomalies(a), done, now=NOW, **kw)
    assert [n.notice for n in due] == ["reminder:1"]
    assert due[0].kind == "reminder"
    done = sent_at(("a", "new:3", NOW - timedelta(days=3)), ("a", "reminder:1", NOW))
    assert due_notices(anomalies(a), done, now=NOW + timedelta(hours=1), **kw) == []
    # An escalation an hour ago: no reminder on its heels, even in a new period.
    done = sent_at(
        ("a", "new:3", NOW - timedelta(days=3)), ("a", "escalated:3", NOW - timedelta(hours=1))
    )
    assert due_notices(anomalies(a), done, now=NOW, **kw) == []
    # Escalation wins over a reminder.
    grown = {**a, "severity": 4}
    due = due_notices(anomalies(grown), sent(("a", "new:3")), now=NOW, **kw)
    assert [n.notice for n in due] == ["escalated:4"]


def test_reminders_need_a_period() -> None:
    a = {"alert_id": "a", "severity": 3, "status": "ongoing"}
    with pytest.raises(ValueError, match="reminder_every"):
        due_notices(anomalies(a), sent(), min_severity=2, now=NOW, escalation_only=False)


def test_resolved_note_can_be_turned_off() -> None:
    over = {"alert_id": "a", "severity": 3, "status": "resolved"}
    done = sent(("a", "new:3"))
    assert due_notices(anomalies(over), done, min_severity=2, now=NOW, resolved_note=False) == []
    assert [n.notice for n in due_notices(anomalies(over), done, min_severity=2, now=NOW)] == [
        "resolved"
    ]
