"""Which alert notices are due, given the anomalies and what was already sent.

One email per anomaly and severity step: ``new:<severity>`` when it is first
seen, ``escalated:<severity>`` each time it grows past the highest severity
already announced, and one ``resolved`` when it is back to normal. An anomaly
first seen already resolved gets a single ``new`` notice that says so. The
ledger (meta.alert_deliveries) is the memory; this function only compares.

Leadership asked not to be told the same thing twice, so by default an ongoing
spike that does not grow is silent (``escalation_only``). Teams that want a
nudge while it lasts turn that off and get ``reminder:<k>`` every
``reminder_every`` since onset: ``k`` counts periods, so the notice id is a
pure function of the anomaly and the clock and a re-run cannot send the same
reminder twice.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

import polars as pl

KINDS = ("new", "escalated", "reminder", "resolved")


@dataclass(frozen=True, slots=True)
class Notice:
    alert_id: str
    notice: str  # 'new:3', 'escalated:4', 'reminder:2', 'resolved'

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


def _reminder(
    row: dict, done: set[str], last: datetime | None, now: datetime, every: timedelta
) -> str | None:
    """The reminder for the period ``now`` falls in, unless already sent.

    Period 0 is the onset (the ``new`` notice covers it); a reminder is due
    once a whole period has passed since the last notice of any kind, so an
    escalation is not followed by a reminder an hour later.
    """
    k = int((now - row["started_at"]) / every)
    if k < 1 or (last is not None and now - last < every):
        return None
    notice = f"reminder:{k}"
    return None if notice in done else notice


def due_notices(
    anomalies: pl.DataFrame,
    sent: pl.DataFrame,
    *,
    min_severity: int,
    now: datetime,
    max_age: timedelta | None = None,
    escalation_only: bool = True,
    reminder_every: timedelta | None = None,
    resolved_note: bool = True,
) -> list[Notice]:
    """``sent`` has columns alert_id, notice (deliveries that need no more work)
    and optionally sent_at (when that notice went out), which spaces reminders.

    ``escalation_only=False`` with a ``reminder_every`` adds periodic
    reminders for ongoing spikes; ``resolved_note=False`` drops the "back to
    normal" note.
    """
    if not escalation_only and (reminder_every is None or reminder_every <= timedelta(0)):
        raise ValueError("escalation_only=False needs a positive reminder_every")
    already: dict[str, set[str]] = {}
    last_sent: dict[str, datetime] = {}
    has_times = "sent_at" in sent.columns
    columns = ["alert_id", "notice", "sent_at"] if has_times else ["alert_id", "notice"]
    for alert_id, notice, *when in sent.select(columns).iter_rows():
        already.setdefault(alert_id, set()).add(notice)
        if when and when[0] is not None:
            last_sent[alert_id] = max(when[0], last_sent.get(alert_id, when[0]))
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
            if resolved_note and "resolved" not in done:
                due.append(Notice(row["alert_id"], "resolved"))
        elif row["severity"] > notified_severity(done):
            due.append(Notice(row["alert_id"], f"escalated:{row['severity']}"))
        elif not escalation_only and reminder_every is not None:
            last = last_sent.get(row["alert_id"])
            reminder = _reminder(row, done, last, now, reminder_every)
            if reminder:
                due.append(Notice(row["alert_id"], reminder))
    return due
