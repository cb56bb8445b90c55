"""Turning due notices into emails, exactly once per anomaly and severity step.

The ledger ``meta.alert_deliveries`` holds one row per (alert, notice, channel,
recipient). Intent is recorded first (``pending``, with the Message-ID fixed by
alert and notice), then the message goes out, then the row is marked ``sent``
(or ``failed``: retried next run, or ``rejected``: permanent, not retried).
A run that crashed after sending finds ``pending`` rows and sends again with
the same Message-ID, which mail systems treat as the same message; channels
already ``sent`` are never sent again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import duckdb
import polars as pl

from flows.config import Settings, secret
from transforms.notices import Notice, due_notices

log = logging.getLogger("backlash.alerts")

SERIES_WEEKS = 8


@dataclass(frozen=True, slots=True)
class Delivery:
    alert_id: str
    notice: str
    channel: str
    recipient: str
    status: str
    path: str | None = None


def message_id(alert_id: str, notice: str) -> str:
    """Stable per alert and notice, so a resend is recognisably the same message."""
    return f"<{alert_id}.{notice.replace(':', '-')}@backlash.invalid>"


def settled_notices(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """Notices with no delivery left to do (all sent or permanently rejected)."""
    return con.sql(
        "SELECT alert_id, notice FROM meta.alert_deliveries GROUP BY alert_id, notice "
        "HAVING bool_and(status IN ('sent', 'rejected'))"
    ).pl()


def _ledger_status(
    con: duckdb.DuckDBPyConnection, alert_id: str, notice: str, channel: str, recipient: str
) -> str | None:
    row = con.execute(
        "SELECT status FROM meta.alert_deliveries "
        "WHERE alert_id = ? AND notice = ? AND channel = ? AND recipient = ?",
        [alert_id, notice, channel, recipient],
    ).fetchone()
    return row[0] if row else None


def _record(
    con: duckdb.DuckDBPyConnection,
    notice: Notice,
    channel: str,
    recipient: str,
    status: str,
    now: datetime,
    detail: str | None = None,
) -> None:
    con.execute(
        "INSERT INTO meta.alert_deliveries VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (alert_id, notice, channel, recipient) DO UPDATE SET "
        "status = excluded.status, detail = excluded.detail, "
        "sent_at = CASE WHEN excluded.status = 'sent' THEN excluded.sent_at "
        "ELSE meta.alert_deliveries.sent_at END",
        [
            notice.alert_id,
            notice.notice,
            channel,
            recipient,
            status,
            message_id(notice.alert_id, notice.notice),
            now,
            now if status == "sent" else None,
            detail,
        ],
    )


def build_view(
    con: duckdb.DuckDBPyConnection, settings: Settings, row: dict[str, Any], notice: str
) -> Any:
    """Everything one email shows, read from the warehouse."""
    from flows.alert_email import AlertView
    from transforms.anomaly import detect

    series = con.sql(
        "SELECT bucket AS ts, complaints::DOUBLE AS value FROM marts.complaints_daily "
        "WHERE topic = ? AND channel = ? ORDER BY bucket",
        params=[row["topic"], row["channel"]],
    ).pl()
    scored = detect(series) if not series.is_empty() else series
    end = row["resolved_at"] or row["last_anomalous_at"]
    window_start = row["started_at"] - timedelta(weeks=SERIES_WEEKS)
    if not scored.is_empty():
        scored = scored.filter(
            (pl.col("ts") >= window_start) & (pl.col("ts") <= end + timedelta(days=7))
        ).select("ts", "value", "expected", "lower", "upper")
    keys = list(row["example_ticket_keys"] or [])
    texts = dict(
        con.execute(
            "SELECT ticket_key, trim(coalesce(subject, '') || E'\\n' || coalesce(body, '')) "
            "FROM core.tickets WHERE ticket_key IN (SELECT unnest(?))",
            [keys],
        ).fetchall()
    )
    window = timedelta(days=settings.detection.window_days)
    candidates = con.execute(
        "SELECT change_id, title, kind, announced_at, effective_at FROM core.product_changes "
        "WHERE coalesce(announced_at, effective_at) <= ? + INTERVAL 1 DAY "
        "AND greatest(coalesce(announced_at, effective_at), coalesce(effective_at, announced_at))"
        " >= ? ORDER BY coalesce(announced_at, effective_at)",
        [row["started_at"], row["started_at"] - window],
    ).fetchall()
    chosen = next((c for c in candidates if c[0] == row["change_id"]), None)
    runner_up = next((c for c in candidates if c[0] == row["runner_up_change_id"]), None)
    series_label = "all topics" if row["topic"] == "*" else row["topic"]
    sql = (
        "SELECT t.created_at, t.subject, l.topics, l.evidence\n"
        "FROM core.tickets t JOIN core.ticket_labels l USING (ticket_key)\n"
        f"WHERE l.is_complaint AND list_contains(l.topics, '{row['topic']}')\n"
        if row["topic"] != "*"
        else "SELECT t.created_at, t.subject, l.topics, l.evidence\n"
        "FROM core.tickets t JOIN core.ticket_labels l USING (ticket_key)\nWHERE l.is_complaint\n"
    ) + (
        f"  AND t.created_at >= TIMESTAMPTZ '{row['started_at'].isoformat()}'\n"
        "ORDER BY t.created_at LIMIT 100;"
    )
    del series_label
    return AlertView(
        alert_id=row["alert_id"],
        notice=notice,
        topic=row["topic"],
        channel=row["channel"],
        grain=row["grain"],
        started_at=row["started_at"],
        detected_at=row["detected_at"],
        observed=row["observed"],
        expected=row["expected"],
        excess=row["excess"],
        lower=row["lower"],
        upper=row["upper"],
        ratio=row["ratio"],
        p_value=row["p_value"],
        severity=row["severity"],
        status=row["status"],
        change_id=row["change_id"],
        change_title=row["change_title"],
        change_kind=chosen[2] if chosen else None,
        change_announced_at=chosen[3] if chosen else None,
        change_effective_at=chosen[4] if chosen else None,
        runner_up_title=runner_up[1] if runner_up else None,
        rising_terms=list(row["rising_terms"] or []),
        examples=[(k, texts[k]) for k in keys if k in texts],
        series=scored,
        candidate_changes=[(c[1], c[3], c[4]) for c in candidates],
        recovery_hours=row["recovery_hours"],
        sql_snippet=sql,
    )


def deliver_alerts(
    con: duckdb.DuckDBPyConnection,
    settings: Settings,
    *,
    now: datetime,
    max_age: timedelta | None = None,
) -> list[Delivery]:
    from connectors.outbox import write_eml
    from flows.alert_email import compose

    anomalies = con.sql("SELECT * FROM marts.anomalies").pl()
    notices = due_notices(
        anomalies,
        settled_notices(con),
        min_severity=settings.detection.alert_min_severity,
        now=now,
        max_age=max_age,
    )
    by_id = {r["alert_id"]: r for r in anomalies.iter_rows(named=True)}
    alerts = settings.alerts
    recipients = [*alerts.to, *alerts.cc]
    deliveries: list[Delivery] = []
    for notice in notices:
        row = by_id[notice.alert_id]
        view = build_view(con, settings, row, notice.notice)
        msg = compose(
            view,
            sender=alerts.sender,
            to=alerts.to or ["leadership@localhost"],
            cc=alerts.cc,
            message_id=message_id(notice.alert_id, notice.notice),
            now=now,
        )
        channels = [("outbox", "*")]
        if alerts.smtp_host:
            channels += [("smtp", r) for r in recipients]
        pending = [
            (ch, rcpt)
            for ch, rcpt in channels
            if _ledger_status(con, notice.alert_id, notice.notice, ch, rcpt)
            not in ("sent", "rejected")
        ]
        for ch, rcpt in pending:
            _record(con, notice, ch, rcpt, "pending", now)
        if ("outbox", "*") in pending:
            name = f"{notice.alert_id}-{notice.notice.replace(':', '-')}"
            path = write_eml(alerts.outbox, msg, name=name)
            _record(con, notice, "outbox", "*", "sent", now, detail=str(path))
            deliveries.append(
                Delivery(notice.alert_id, notice.notice, "outbox", "*", "sent", str(path))
            )
        smtp_rcpts = [rcpt for ch, rcpt in pending if ch == "smtp"]
        if smtp_rcpts:
            deliveries += _send_smtp(con, settings, notice, msg, smtp_rcpts, now)
        if notice.kind == "new" and row["status"] == "resolved":
            # First seen already over: this email said so; no separate note.
            covered = Notice(notice.alert_id, "resolved")
            for ch, rcpt in channels:
                _record(con, covered, ch, rcpt, "sent", now, detail="covered by first notice")
    return deliveries


def _send_smtp(
    con: duckdb.DuckDBPyConnection,
    settings: Settings,
    notice: Notice,
    msg: Any,
    recipients: list[str],
    now: datetime,
) -> list[Delivery]:
    from connectors.smtp import send

    alerts = settings.alerts
    assert alerts.smtp_host is not None
    del msg["To"], msg["Cc"]
    msg["To"] = ", ".join(recipients)
    result = send(
        msg,
        host=alerts.smtp_host,
        port=alerts.smtp_port,
        security=alerts.security,
        user=alerts.user,
        password=secret(alerts.password_env, what="[alerts]"),
        timeout=alerts.timeout_seconds,
    )
    out: list[Delivery] = []
    refused = getattr(result, "refused", {}) or {}
    for rcpt in recipients:
        if rcpt in (getattr(result, "deferred", ()) or ()):
            status = "failed"  # still 4xx when retries ran out: worth trying next run
        elif result.status == "sent" and rcpt not in refused:
            status = "sent"
        elif getattr(result, "permanent", False) or rcpt in refused:
            status = "rejected"
        else:
            status = "failed"
        _record(con, notice, "smtp", rcpt, status, now, detail=getattr(result, "detail", None))
        out.append(Delivery(notice.alert_id, notice.notice, "smtp", rcpt, status))
        if status != "sent":
            log.warning("alert %s to %s: %s", notice.alert_id, rcpt, status)
    return out
