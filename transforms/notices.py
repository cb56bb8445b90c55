"""Which alert notices are due, given the anomalies and what was already sent.

One email per anomaly and severity step: ``new:<severity>`` when it is first
seen, ``escalated:<severity>`` each time it grows past the highest severity
already announced, and one ``resolved`` when it is back to normal. An anomaly
first seen already resolved gets a single ``new`` notice that says so. The
ledger (meta.alert_deliveries) is the memory; this function only compares.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

import polars as pl


@dataclass(frozen=True, slots=True)
class Notice:
    alert_id: str
    notice: str  # 'new:3', 'escalated:4', 'resolved'

    @property
    def kind(self) -> str:
        return self.notice.split(":", 1)[0]


def notified_severity(notices: Iterable[str]) -> int:
    best = 0
    for notice in notices:
        kind, _, level = notice.partition(":")
        if kind in ("new", "escalated") and level.isdigit():
            best = max(best, int(level))
    return best


def due_notices(
    anomalies: pl.DataFrame,
    sent: pl.DataFrame,
    *,
    min_severity: int,
    now: datetime,
    max_age: timedelta | None = None,
) -> list[Notice]:
    """``sent`` has columns alert_id, notice (any delivery that is not failed)."""
    already: dict[str, set[str]] = {}
    for alert_id, notice in sent.select("alert_id", "notice").iter_rows():
        already.setdefault(alert_id, set()).add(notice)
    due: list[Notice] = []
    for row in anomalies.sort("started_at").iter_rows(named=True):
        if row["severity"] < min_severity:
            continue  # the digest's business, not an alert
        done = already.get(row["alert_id"], set())
        first = not any(n.startswith("new:") for n in done)
        if first:
            if max_age is not None and row["last_anomalous_at"] < now - max_age:
                continue  # history from before monitoring started: not news
            due.append(Notice(row["alert_id"], f"new:{row['severity']}"))
            continue
        if row["status"] == "resolved":
            if "resolved" not in done:
                due.append(Notice(row["alert_id"], "resolved"))
        elif row["severity"] > notified_severity(done):
            due.append(Notice(row["alert_id"], f"escalated:{row['severity']}"))
    return due
