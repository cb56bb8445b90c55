"""Mail for the people who run backlash and read it daily: the digest and failure notes.

Alerts (``flows.alerts``) interrupt leadership once per anomaly. The daily
digest is the calm view: every anomaly of the last day, notices (severity 1)
included, and what is still open. Failure notes go to ``[alerts] operators``
only: a broken pipeline is an operator's problem, not the board's.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any

import duckdb
from jinja2 import Environment, PackageLoader, select_autoescape

from flows.config import Settings, secret
from transforms.masking import mask_pii

log = logging.getLogger("backlash.ops")

_env = Environment(
    loader=PackageLoader("flows", "templates"),
    autoescape=select_autoescape(["html", "j2"], default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)

DIGEST_HTML = "digest.html.j2"


def digest_rows(con: duckdb.DuckDBPyConnection, *, now: datetime) -> dict[str, Any]:
    """What the digest shows, as of ``now``: the last day's anomalies and the open ones."""
    since = now - timedelta(days=1)
    recent = con.execute(
        "SELECT alert_id, topic, channel, started_at, observed, expected, ratio, severity, "
        "status, change_id, change_title FROM marts.anomalies "
        "WHERE last_anomalous_at >= ? OR (status <> 'resolved' AND started_at <= ?) "
        "ORDER BY severity DESC, started_at",
        [since, now],
    ).fetchall()
    columns = [
        "alert_id",
        "topic",
        "channel",
        "started_at",
        "observed",
        "expected",
        "ratio",
        "severity",
        "status",
        "change_id",
        "change_title",
    ]
    day = con.execute(
        "SELECT topic, sum(complaints)::BIGINT, sum(tickets)::BIGINT FROM marts.complaints_daily "
        "WHERE channel = '*' AND bucket >= ? AND bucket < ? GROUP BY topic "
        "ORDER BY topic = '*' DESC, 2 DESC",
        [since, now],
    ).fetchall()
    emerging = con.execute(
        "SELECT topic, terms, tickets FROM marts.emergent_topics ORDER BY z DESC"
    ).fetchall()
    return {
        "anomalies": [dict(zip(columns, row, strict=True)) for row in recent],
        "complaints": [{"topic": t, "complaints": c, "tickets": n} for t, c, n in day],
        "emerging": [{"topic": t, "terms": list(terms), "tickets": n} for t, terms, n in emerging],
    }


def compose_digest(
    content: dict[str, Any], *, sender: str, to: list[str], now: datetime, message_id: str
) -> EmailMessage:
    anomalies = content["anomalies"]
    open_ = [a for a in anomalies if a["status"] != "resolved"]
    msg = EmailMessage()
    msg["Subject"] = (
        f"backlash daily digest {now:%a %d %b}: {len(open_)} open, {len(anomalies)} in the last day"
    )
    msg["From"] = sender
    msg["To"] = ", ".join(to)
    msg["Date"] = format_datetime(now)
    msg["Message-ID"] = message_id
    lines = [f"backlash daily digest, {now:%Y-%m-%d %H:%M} UTC", ""]
    if not anomalies:
        lines.append("No complaint spikes in the last day.")
    for a in anomalies:
        cause = f"follows {a['change_title']}" if a["change_id"] else "no product change found"
        lines.append(
            f"- [{a['status']}] {a['topic']}: {a['observed']:.0f} complaints vs "
            f"{a['expected']:.0f} expected ({a['ratio']:.1f}x) since "
            f"{a['started_at']:%a %d %b}, severity {a['severity']}, {cause}"
        )
    if content["emerging"]:
        lines += ["", "New words in complaints (no topic of ours names them yet):"]
        lines += [
            f"  {e['topic']}: {e['tickets']} complaints ({', '.join(e['terms'])})"
            for e in content["emerging"]
        ]
    lines += ["", "Complaints in the last day by topic:"]
    lines += [
        f"  {c['topic'] if c['topic'] != '*' else 'all'}: {c['complaints']} of {c['tickets']}"
        for c in content["complaints"]
    ]
    msg.set_content("\n".join(lines) + "\n")
    html = _env.get_template(DIGEST_HTML).render(now=now, **content)
    msg.add_alternative(html, subtype="html")
    return msg


def compose_failure(
    *, flow_name: str, run_name: str, message: str, sender: str, to: list[str], now: datetime
) -> EmailMessage:
    msg = EmailMessage()
    # One line: exception text may hold CR/LF, never let it into a header.
    first = mask_pii(" ".join(message.split()))[:120]
    msg["Subject"] = f"backlash flow {flow_name} failed: {first}"
    msg["From"] = sender
    msg["To"] = ", ".join(to)
    msg["Date"] = format_datetime(now)
    msg["Message-ID"] = make_msgid(domain="backlash.invalid")
    msg.set_content(
        f"The Prefect flow run {run_name!r} of {flow_name!r} failed "
        f"at {now:%Y-%m-%d %H:%M} UTC.\n\n"
        f"{mask_pii(message)}\n\n"
        "Nothing is lost: pages commit with their cursor, so the next run resumes where this one\n"
        "stopped. See the run's logs in the Prefect UI, or `backlash status`.\n"
    )
    return msg


def deliver(
    settings: Settings, msg: EmailMessage, *, name: str, recipients: list[str]
) -> tuple[Path, bool]:
    """Write the .eml copy, then send by SMTP when configured.

    Returns the copy's path and whether every configured channel took it.
    """
    from connectors.outbox import write_eml

    alerts = settings.alerts
    path = write_eml(alerts.outbox, msg, name=name)
    if alerts.smtp_host and recipients:
        from connectors.smtp import send

        result = send(
            msg,
            host=alerts.smtp_host,
            port=alerts.smtp_port,
            security=alerts.security,
            user=alerts.user,
            password=secret(alerts.password_env, what="[alerts]"),
            timeout=alerts.timeout_seconds,
            retries=alerts.retries,
            backoff=alerts.retry_backoff_seconds,
        )
        if result.status != "sent":
            log.warning("%s not delivered by SMTP: %s", name, result.detail)
            return path, False
    return path, True


def send_digest(con: duckdb.DuckDBPyConnection, settings: Settings, *, now: datetime) -> Path:
    alerts = settings.alerts
    to = alerts.digest_to or alerts.to or ["leadership@localhost"]
    content = digest_rows(con, now=now)
    msg = compose_digest(
        content,
        sender=alerts.sender,
        to=to,
        now=now,
        message_id=f"<digest.{now:%Y%m%d}@backlash.invalid>",
    )
    key = f"digest-{now:%Y-%m-%d}"
    done = con.execute(
        "SELECT detail FROM meta.alert_deliveries WHERE alert_id = ? AND status = 'sent'", [key]
    ).fetchone()
    if done:  # a retried or second run the same day: the digest went out already
        return Path(done[0])
    path, delivered = deliver(settings, msg, name=key, recipients=to)
    if not delivered:  # not recorded: the next run (or the task's retry) sends it again
        raise RuntimeError(f"the digest {key} could not be sent; see the log")
    con.execute(
        "INSERT OR REPLACE INTO meta.alert_deliveries "
        "VALUES (?, 'digest', 'email', ?, 'sent', ?, ?, ?, ?)",
        [key, ", ".join(to), msg["Message-ID"], now, now, str(path)],
    )
    return path


def notify_failure(
    settings: Settings, *, flow_name: str, run_name: str, message: str, now: datetime
) -> Path | None:
    """Best effort: a failure hook must never raise, or it hides the real failure."""
    operators = settings.alerts.operators
    if not operators:
        return None
    try:
        msg = compose_failure(
            flow_name=flow_name,
            run_name=run_name,
            message=message,
            sender=settings.alerts.sender,
            to=operators,
            now=now,
        )
        path, _ = deliver(
            settings, msg, name=f"failure-{flow_name}-{now:%Y%m%dT%H%M%S}", recipients=operators
        )
        return path
    except Exception:
        log.exception("could not notify operators of the failed %s run", flow_name)
        return None
