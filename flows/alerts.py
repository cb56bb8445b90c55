"""Turning due notices into emails and webhook posts, exactly once per anomaly and step.

The ledger ``meta.alert_deliveries`` holds one row per (alert, notice, channel,
recipient), and each row moves through

    pending -> sending -> sent | failed | rejected      (and unconfirmed, below)

``pending`` is the intent, recorded with the Message-ID fixed by alert and
notice before anything goes out. ``sending`` is written (and committed) just
before the SMTP session or the webhook POST; the server's acceptance is
recorded as ``sent`` the moment its 250 arrives (``connectors.smtp.send``
calls back after each accepted DATA), before retries to other recipients or
anything else can fail. ``failed`` (temporary: 4xx, refused connection,
retries exhausted) is tried again next run; ``rejected`` (5xx, HTTP 4xx) never.

What no client can close is the gap between a server accepting a message and
the client hearing so: a crash there leaves the row ``sending``. A re-run
cannot ask the server, so it decides by ``[alerts] resend_unconfirmed``:
false (the default) records ``unconfirmed`` and does not send again, so
leadership never gets a second copy, at the price that a crash just before the
server's 250 loses that one delivery (its ``.eml`` is in the outbox and the
row says so); true sends it again with the same Message-ID (never lost; Gmail
and most clients show one message per Message-ID). A ``pending`` row (crash
before the send began) is always sent: nothing went out. DuckDB's single-writer
lock means a ``sending`` row seen by a new run is always a dead run's.
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
# Rows that need no more work: due_notices never returns their notice again.
SETTLED = ("sent", "rejected", "unconfirmed")


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
    """Notices with no delivery left to do (sent, rejected or unconfirmed),
    with when they last went out (spaces reminders)."""
    return con.sql(
        "SELECT alert_id, notice, max(sent_at) AS sent_at FROM meta.alert_deliveries "
        "GROUP BY alert_id, notice "
        f"HAVING bool_and(status IN {SETTLED!r})"
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
    """Upsert one ledger row; autocommitted, so it survives a crash right after."""
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
    fix = None
    if row.get("reverted_by"):
        fix = con.execute(
            "SELECT title FROM core.product_changes WHERE change_id = ?", [row["reverted_by"]]
        ).fetchone()
    chosen = next((c for c in candidates if c[0] == row["change_id"]), None)
    runner_up = next((c for c in candidates if c[0] == row["runner_up_change_id"]), None)
    topic_literal = row["topic"].replace("'", "''")  # a snippet to paste: quote it right
    sql = (
        "SELECT t.created_at, t.subject, l.topics, l.evidence\n"
        "FROM core.tickets t JOIN core.ticket_labels l USING (ticket_key)\n"
        f"WHERE l.is_complaint AND list_contains(l.topics, '{topic_literal}')\n"
        if row["topic"] != "*"
        else "SELECT t.created_at, t.subject, l.topics, l.evidence\n"
        "FROM core.tickets t JOIN core.ticket_labels l USING (ticket_key)\nWHERE l.is_complaint\n"
    ) + (
        f"  AND t.created_at >= TIMESTAMPTZ '{row['started_at'].isoformat()}'\n"
        "ORDER BY t.created_at LIMIT 100;"
    )
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
        fix_title=fix[0] if fix else None,
        sql_snippet=sql,
    )


def deliver_alerts(
    con: duckdb.DuckDBPyConnection,
    settings: Settings,
    *,
    now: datetime,
    max_age: timedelta | None = None,
) -> list[Delivery]:
    """Send every due notice on every configured channel; return what happened.

    Channels: ``outbox`` (always: the .eml), ``smtp`` (one row per To/Cc
    recipient, when ``smtp_host`` is set), ``webhook`` (recipient = the name
    of the environment variable holding the URL, never the URL itself).
    """
    from connectors.outbox import write_eml
    from flows.alert_email import compose

    alerts = settings.alerts
    anomalies = con.sql("SELECT * FROM marts.anomalies").pl()
    notices = due_notices(
        anomalies,
        settled_notices(con),
        min_severity=settings.detection.alert_min_severity,
        now=now,
        max_age=max_age,
        escalation_only=alerts.escalation_only,
        reminder_every=timedelta(hours=alerts.reminder_hours),
        resolved_note=alerts.resolved_note,
    )
    by_id = {r["alert_id"]: r for r in anomalies.iter_rows(named=True)}
    recipients = list(dict.fromkeys([*alerts.to, *alerts.cc]))
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
        if alerts.webhook_url_env:
            channels.append(("webhook", alerts.webhook_url_env))
        todo = _to_do(con, settings, notice, channels, now, deliveries)
        for ch, rcpt in todo:
            _record(con, notice, ch, rcpt, "pending", now)
        if ("outbox", "*") in todo:
            name = f"{notice.alert_id}-{notice.notice.replace(':', '-')}"
            path = write_eml(alerts.outbox, msg, name=name)
            _record(con, notice, "outbox", "*", "sent", now, detail=str(path))
            deliveries.append(
                Delivery(notice.alert_id, notice.notice, "outbox", "*", "sent", str(path))
            )
        smtp_rcpts = [rcpt for ch, rcpt in todo if ch == "smtp"]
        if smtp_rcpts:
            deliveries += _send_smtp(con, settings, notice, msg, smtp_rcpts, now)
        webhook = [rcpt for ch, rcpt in todo if ch == "webhook"]
        if webhook:
            deliveries.append(_send_webhook(con, settings, notice, view, webhook[0], now))
        if notice.kind == "new" and row["status"] == "resolved":
            # First seen already over: this email said so; no separate note.
            covered = Notice(notice.alert_id, "resolved")
            for ch, rcpt in channels:
                _record(con, covered, ch, rcpt, "sent", now, detail="covered by first notice")
    return deliveries


def _to_do(
    con: duckdb.DuckDBPyConnection,
    settings: Settings,
    notice: Notice,
    channels: list[tuple[str, str]],
    now: datetime,
    deliveries: list[Delivery],
) -> list[tuple[str, str]]:
    """The channels still to send on; settles rows a dead run left ``sending``."""
    todo: list[tuple[str, str]] = []
    for ch, rcpt in channels:
        status = _ledger_status(con, notice.alert_id, notice.notice, ch, rcpt)
        if status in SETTLED:
            continue
        if status == "sending" and ch != "outbox" and not settings.alerts.resend_unconfirmed:
            detail = (
                "a run crashed while this was being sent; the server may have accepted it: "
                "not sent again (resend_unconfirmed = false)"
            )
            _record(con, notice, ch, rcpt, "unconfirmed", now, detail=detail)
            deliveries.append(Delivery(notice.alert_id, notice.notice, ch, rcpt, "unconfirmed"))
            log.warning("alert %s via %s: %s", notice.alert_id, ch, detail)
            continue
        todo.append((ch, rcpt))
    return todo


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
    password = secret(alerts.password_env, what="[alerts]")
    started = f"SMTP session to {alerts.smtp_host}:{alerts.smtp_port} began {now.isoformat()}"
    for rcpt in recipients:
        _record(con, notice, "smtp", rcpt, "sending", now, detail=started)

    def accepted(rcpts: tuple[str, ...]) -> None:
        # The server's 250 just arrived: record it before anything else
        # (each row autocommits; the caller may not hold a transaction open).
        for rcpt in rcpts:
            _record(con, notice, "smtp", rcpt, "sent", now)

    result = send(
        msg,
        host=alerts.smtp_host,
        port=alerts.smtp_port,
        security=alerts.security,
        user=alerts.user,
        password=password,
        timeout=alerts.timeout_seconds,
        retries=alerts.retries,
        backoff=alerts.retry_backoff_seconds,
        envelope_to=recipients,
        on_accepted=accepted,
    )
    out: list[Delivery] = []
    for rcpt in recipients:
        if rcpt in result.unconfirmed:
            # The session dropped after the whole message went out: same rule
            # as a crash mid-send.
            status = "failed" if alerts.resend_unconfirmed else "unconfirmed"
        elif rcpt in result.deferred:
            status = "failed"  # still 4xx when retries ran out: worth trying next run
        elif rcpt in result.accepted:
            status = "sent"
        elif result.permanent or rcpt in result.refused:
            status = "rejected"
        else:
            status = "failed"
        if status != "sent":  # accepted ones were recorded the moment the server took them
            _record(con, notice, "smtp", rcpt, status, now, detail=result.detail)
            log.warning("alert %s to %s: %s", notice.alert_id, rcpt, status)
        out.append(Delivery(notice.alert_id, notice.notice, "smtp", rcpt, status))
    return out


def _send_webhook(
    con: duckdb.DuckDBPyConnection,
    settings: Settings,
    notice: Notice,
    view: Any,
    env_name: str,
    now: datetime,
) -> Delivery:
    from connectors.webhook import post
    from flows.alert_webhook import slack_payload

    alerts = settings.alerts
    url = secret(env_name, what="[alerts] webhook_url_env")
    assert url is not None
    _record(con, notice, "webhook", env_name, "sending", now, detail=f"POST began {now:%FT%TZ}")
    result = post(
        url,
        slack_payload(view),
        timeout=alerts.timeout_seconds,
        retries=alerts.retries,
        backoff=alerts.retry_backoff_seconds,
    )
    # 'unknown' (a 500 or a read timeout: it may have been posted) is settled
    # like a crash mid-send, by the same rule.
    status = result.status
    if status == "unknown":
        status = "failed" if alerts.resend_unconfirmed else "unconfirmed"
    _record(con, notice, "webhook", env_name, status, now, detail=result.detail)
    if status != "sent":
        log.warning("alert %s via webhook: %s (%s)", notice.alert_id, status, result.detail)
    return Delivery(notice.alert_id, notice.notice, "webhook", env_name, status)
