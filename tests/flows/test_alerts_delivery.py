"""Exactly once, measured end to end: a real DuckDB warehouse file with anomalies,
a real SMTP server (aiosmtpd) on loopback, ``deliver_alerts`` as the monitor flow
calls it, and a real crash (SIGKILL of a child process) in the middle of a send.

Every claim is counted at the server: what it accepted, how many sessions it
served, which Message-IDs it saw.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from email import policy
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pytest

from flows.alerts import deliver_alerts, message_id
from flows.config import Settings, load_settings
from tests.connectors.test_smtp import Script, Server, start_server
from transforms.schema import ANOMALIES, conform
from warehouse.db import connect
from warehouse.load import registered

REPO = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 3, 20, 9, 0, tzinfo=UTC)
ONSET = datetime(2026, 3, 10, tzinfo=UTC)
CEO, CFO = "ceo@acme.test", "cfo@acme.test"


# --------------------------------------------------------------------------- a tiny warehouse


def anomaly(alert_id: str, topic: str, **overrides: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "alert_id": alert_id,
        "series": f"day/topic={topic}/channel=*",
        "grain": "day",
        "topic": topic,
        "channel": "*",
        "started_at": ONSET,
        "detected_at": ONSET + timedelta(days=1),
        "peak_at": ONSET + timedelta(days=2),
        "last_anomalous_at": NOW - timedelta(days=1),
        "resolved_at": None,
        "observed": 140.0,
        "expected": 35.0,
        "excess": 105.0,
        "lower": 80.0,
        "upper": 125.0,
        "ratio": 4.0,
        "p_value": 1e-9,
        "score": 0.99,
        "severity": 3,
        "initial_severity": 3,
        "status": "ongoing",
        "change_id": "price-rise",
        "change_title": "Plan price rise",
        "attribution_score": 0.8,
        "runner_up_change_id": "dark-mode",
        "runner_up_score": 0.1,
        "reverted_by": None,
        "recovery_hours": None,
        "rising_terms": ["price", "expensive"],
        "example_ticket_keys": [f"file:{topic}-1", f"file:{topic}-2"],
        "updated_at": NOW,
    }
    row.update(overrides)
    return row


def build_warehouse(path: Path, anomalies: list[dict[str, Any]]) -> None:
    """Changes, tickets, a daily series per topic and the anomalies: what build_view reads."""
    con = connect(path)
    try:
        con.execute(
            "INSERT INTO core.product_changes (change_id, title, kind, announced_at, effective_at,"
            " reverts) VALUES (?, ?, ?, ?, ?, ?), (?, ?, ?, ?, ?, ?), (?, ?, ?, ?, ?, ?)",
            [
                "price-rise",
                "Plan price rise",
                "price",
                ONSET - timedelta(days=1),
                ONSET,
                None,
                "dark-mode",
                "Dark mode removed",
                "feature",
                ONSET - timedelta(days=5),
                ONSET - timedelta(days=5),
                None,
                "price-rollback",
                "Old prices back",
                "price",
                NOW - timedelta(days=2),
                NOW - timedelta(days=2),
                "price-rise",
            ],
        )
        topics = sorted({a["topic"] for a in anomalies})
        days = [ONSET - timedelta(days=30) + timedelta(days=i) for i in range(40)]
        daily = pl.DataFrame(
            [
                {
                    "bucket": day,
                    "topic": topic,
                    "channel": "*",
                    "tickets": 200,
                    "complaints": 35 + (i % 5) + (100 if day >= ONSET else 0),
                    "cancel_intents": 1,
                }
                for topic in topics
                for i, day in enumerate(days)
            ]
        )
        tickets = pl.DataFrame(
            [
                {
                    "ticket_key": f"file:{topic}-{n}",
                    "source": "file",
                    "source_id": f"{topic}-{n}",
                    "created_at": ONSET + timedelta(hours=n),
                    "updated_at": ONSET + timedelta(hours=n),
                    "subject": f"{topic} complaint <script>alert(1)</script>",
                    "body": "Too expensive now, call me on +44 20 7946 0958 or jo@example.com",
                    "channel": "email",
                    "ingested_at": NOW,
                }
                for topic in topics
                for n in (1, 2)
            ]
        )
        frame = conform(pl.DataFrame(anomalies, infer_schema_length=None), ANOMALIES)
        with registered(con, "daily_in", daily):
            con.execute("INSERT INTO marts.complaints_daily BY NAME SELECT * FROM daily_in")
        with registered(con, "tickets_in", tickets):
            con.execute("INSERT INTO core.tickets BY NAME SELECT * FROM tickets_in")
        with registered(con, "anomalies_in", frame):
            con.execute("INSERT INTO marts.anomalies BY NAME SELECT * FROM anomalies_in")
    finally:
        con.close()


def write_config(tmp: Path, port: int, **alerts: Any) -> Path:
    values: dict[str, Any] = {
        "to": [CEO],
        "cc": [CFO],
        "from": "backlash <alerts@acme.test>",
        "smtp_host": "127.0.0.1",
        "smtp_port": port,
        "security": "none",
        "timeout_seconds": 5,
        "retry_backoff_seconds": 0.01,
        "outbox": "outbox",
        "max_age_days": 0,
    }
    values.update(alerts)
    lines = ["[warehouse]", 'path = "warehouse.duckdb"', "", "[alerts]"]
    for key, value in values.items():
        if isinstance(value, str):
            lines.append(f'{key} = "{value}"')
        elif isinstance(value, bool):
            lines.append(f"{key} = {str(value).lower()}")
        elif isinstance(value, list):
            lines.append(f"{key} = [{', '.join(repr(v).replace(chr(39), chr(34)) for v in value)}]")
        else:
            lines.append(f"{key} = {value}")
    config = tmp / "backlash.toml"
    config.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return config


def deliver(settings: Settings, now: datetime = NOW) -> list[Any]:
    con = connect(settings.warehouse.path)
    try:
        return deliver_alerts(con, settings, now=now, max_age=None)
    finally:
        con.close()


def ledger(settings: Settings) -> dict[tuple[str, str, str, str], str]:
    con = duckdb.connect(str(settings.warehouse.path), read_only=True)
    try:
        rows = con.execute(
            "SELECT alert_id, notice, channel, recipient, status FROM meta.alert_deliveries"
        ).fetchall()
    finally:
        con.close()
    return {tuple(r[:4]): r[4] for r in rows}


def received_ids(server: Server) -> list[str]:
    return [
        BytesParser(policy=policy.default).parsebytes(content)["Message-ID"]
        for _, _, content in server.script.received
    ]


@pytest.fixture
def server() -> Any:
    srv = start_server(Script(), auth_require_tls=False)
    yield srv
    srv.controller.stop()


@pytest.fixture
def two_alerts(tmp_path: Path, server: Server) -> Settings:
    settings = load_settings(write_config(tmp_path, server.port))
    build_warehouse(
        settings.warehouse.path, [anomaly("a-pricing", "pricing"), anomaly("b-billing", "billing")]
    )
    return settings


# --------------------------------------------------------------------------- once per anomaly


@pytest.mark.slow
def test_one_message_per_anomaly_and_a_rerun_sends_nothing(
    two_alerts: Settings, server: Server
) -> None:
    first = deliver(two_alerts)
    assert sorted(received_ids(server)) == [
        message_id("a-pricing", "new:3"),
        message_id("b-billing", "new:3"),
    ]
    for _, rcpts, _ in server.script.received:
        assert rcpts == [CEO, CFO]  # one message to both, not one per recipient
    assert {(d.channel, d.status) for d in first} == {("outbox", "sent"), ("smtp", "sent")}
    assert set(ledger(two_alerts).values()) == {"sent"}
    assert len(ledger(two_alerts)) == 2 * 3  # outbox + two recipients, per anomaly
    assert len(list(two_alerts.alerts.outbox.glob("*.eml"))) == 2
    sessions = server.connections

    assert deliver(two_alerts) == []
    assert deliver(two_alerts, now=NOW + timedelta(hours=6)) == []
    assert len(server.script.received) == 2
    assert server.connections == sessions  # not even a connection


@pytest.mark.slow
def test_the_delivered_message_is_the_outbox_copy(two_alerts: Settings, server: Server) -> None:
    deliver(two_alerts)
    by_id = {
        BytesParser(policy=policy.default).parsebytes(c)["Message-ID"]: c
        for _, _, c in server.script.received
    }
    for eml in two_alerts.alerts.outbox.glob("*.eml"):
        stored = BytesParser(policy=policy.default).parsebytes(eml.read_bytes())
        got = BytesParser(policy=policy.default).parsebytes(by_id[stored["Message-ID"]])
        assert got["To"] == CEO
        assert got["Cc"] == CFO
        assert got["Subject"] == stored["Subject"]
        assert "<script>" not in got.get_body(preferencelist=("html",)).get_content()


def test_451_once_is_retried_and_delivered_once(two_alerts: Settings, server: Server) -> None:
    server.script.data = ["451 4.3.0 Try again later"]
    deliver(two_alerts)
    assert len(server.script.received) == 2
    assert server.connections == 3  # the refused session, its retry, the other alert
    assert set(ledger(two_alerts).values()) == {"sent"}


@pytest.mark.slow
def test_4xx_past_the_retries_is_failed_then_delivered_once_next_run(
    two_alerts: Settings, server: Server
) -> None:
    server.script.rcpt = {CFO: ["451 4.2.1 Mailbox busy"] * 8}  # both alerts, all 4 attempts
    deliver(two_alerts)
    book = ledger(two_alerts)
    assert book[("a-pricing", "new:3", "smtp", CFO)] == "failed"
    assert book[("a-pricing", "new:3", "smtp", CEO)] == "sent"
    assert [r for _, r, _ in server.script.received] == [[CEO], [CEO]]

    deliver(two_alerts, now=NOW + timedelta(hours=1))
    assert [r for _, r, _ in server.script.received] == [[CEO], [CEO], [CFO], [CFO]]
    assert set(ledger(two_alerts).values()) == {"sent"}
    retried = BytesParser(policy=policy.default).parsebytes(server.script.received[2][2])
    assert retried["Cc"] == CFO  # the headers still show everyone it went to
    assert retried["To"] == CEO


def test_550_is_recorded_rejected_and_not_retried_next_run(
    two_alerts: Settings, server: Server
) -> None:
    server.script.rcpt = {CFO: ["550 5.1.1 No such user"] * 10}
    deliver(two_alerts)
    book = ledger(two_alerts)
    assert book[("a-pricing", "new:3", "smtp", CFO)] == "rejected"
    assert book[("b-billing", "new:3", "smtp", CFO)] == "rejected"
    assert book[("a-pricing", "new:3", "smtp", CEO)] == "sent"
    sessions = server.connections
    assert sessions == 2  # a 5xx is not retried within the run either

    assert deliver(two_alerts, now=NOW + timedelta(hours=1)) == []
    assert server.connections == sessions
    assert len(server.script.received) == 2


# --------------------------------------------------------------------------- a real crash

CHILD = textwrap.dedent(
    """
    import sys
    from datetime import datetime
    from flows.alerts import deliver_alerts
    from flows.config import load_settings
    from warehouse.db import connect

    settings = load_settings(sys.argv[1])
    con = connect(settings.warehouse.path)
    print("ready", flush=True)
    deliver_alerts(con, settings, now=datetime.fromisoformat(sys.argv[2]))
    print("finished", flush=True)
    """
)


class KillOnData(Script):
    """Takes the message, then kills the sending process before it hears the 250:
    the server has accepted it, the client never learns so."""

    victim: int | None = None

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        reply = await super().handle_DATA(server, session, envelope)
        if self.victim is not None:
            os.kill(self.victim, signal.SIGKILL)
            self.victim = None
        return reply


def crash_during_send(settings: Settings, script: KillOnData) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(settings.config_path), NOW.isoformat()],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    script.victim = child.pid
    out, err = child.communicate(timeout=120)
    assert child.returncode == -signal.SIGKILL, (out, err)
    assert "ready" in out
    assert "finished" not in out


@pytest.mark.slow
@pytest.mark.parametrize("resend", [False, True])
def test_crash_after_the_server_accepted(tmp_path: Path, resend: bool) -> None:
    script = KillOnData()
    srv = start_server(script, auth_require_tls=False)
    try:
        settings = load_settings(write_config(tmp_path, srv.port, resend_unconfirmed=resend))
        build_warehouse(
            settings.warehouse.path,
            [anomaly("a-pricing", "pricing"), anomaly("b-billing", "billing")],
        )
        crash_during_send(settings, script)
        assert len(script.received) == 1  # the server took the first alert
        first_id = received_ids(srv)[0]
        book = ledger(settings)
        crashed = next(a for (a, *_), s in book.items() if s == "sending")
        assert message_id(crashed, "new:3") == first_id
        assert book[(crashed, "new:3", "outbox", "*")] == "sent"  # written before sending
        assert book[(crashed, "new:3", "smtp", CEO)] == "sending"

        again = deliver(settings)  # the retried run
        ids = received_ids(srv)
        other = {"a-pricing", "b-billing"} - {crashed}
        book = ledger(settings)
        if resend:
            # No loss: sent again, recognisably the same message.
            assert ids == [first_id, first_id, message_id(other.pop(), "new:3")]
            assert set(book.values()) == {"sent"}
        else:
            # No duplicate: the crashed one is not sent again, the other goes out once.
            assert ids == [first_id, message_id(other.pop(), "new:3")]
            assert book[(crashed, "new:3", "smtp", CEO)] == "unconfirmed"
            assert book[(crashed, "new:3", "smtp", CFO)] == "unconfirmed"
            assert {d.status for d in again if d.alert_id == crashed} == {"unconfirmed"}
        count = len(srv.script.received)
        assert deliver(settings, now=NOW + timedelta(hours=1)) == []
        assert len(srv.script.received) == count
    finally:
        srv.controller.stop()


@pytest.mark.slow
def test_pending_intent_without_a_send_is_sent_on_rerun(
    two_alerts: Settings, server: Server
) -> None:
    """A crash after recording intent but before any session: nothing went out, so send."""
    con = connect(two_alerts.warehouse.path)
    try:
        for rcpt in (CEO, CFO):
            con.execute(
                "INSERT INTO meta.alert_deliveries VALUES (?, ?, 'smtp', ?, 'pending', ?, ?, NULL,"
                " NULL)",
                ["a-pricing", "new:3", rcpt, message_id("a-pricing", "new:3"), NOW],
            )
    finally:
        con.close()
    deliver(two_alerts)
    assert sorted(received_ids(server)) == [
        message_id("a-pricing", "new:3"),
        message_id("b-billing", "new:3"),
    ]
    assert set(ledger(two_alerts).values()) == {"sent"}


# --------------------------------------------------------------------------- follow-ups


def _set(settings: Settings, alert_id: str, **values: Any) -> None:
    con = connect(settings.warehouse.path)
    try:
        for column, value in values.items():
            con.execute(
                f"UPDATE marts.anomalies SET {column} = ? WHERE alert_id = ?",
                [value, alert_id],
            )
    finally:
        con.close()


@pytest.mark.slow
def test_ongoing_spike_follows_up_only_when_it_escalates(
    two_alerts: Settings, server: Server
) -> None:
    deliver(two_alerts)
    assert deliver(two_alerts, now=NOW + timedelta(days=2)) == []  # still 3: silence
    _set(two_alerts, "a-pricing", severity=4, status="escalated")
    deliver(two_alerts, now=NOW + timedelta(days=2))
    ids = received_ids(server)
    assert ids[2:] == [message_id("a-pricing", "escalated:4")]
    subject = BytesParser(policy=policy.default).parsebytes(server.script.received[2][2])["Subject"]
    assert subject.startswith("Worse (critical)")
    assert deliver(two_alerts, now=NOW + timedelta(days=3)) == []


@pytest.mark.slow
def test_reminders_when_escalation_only_is_off(tmp_path: Path, server: Server) -> None:
    settings = load_settings(
        write_config(tmp_path, server.port, escalation_only=False, reminder_hours=48)
    )
    build_warehouse(settings.warehouse.path, [anomaly("a-pricing", "pricing")])
    deliver(settings)  # NOW is 10 days after onset: the new notice
    assert deliver(settings, now=NOW + timedelta(hours=47)) == []  # within the period
    deliver(settings, now=NOW + timedelta(hours=49))
    deliver(settings, now=NOW + timedelta(hours=50))
    ids = received_ids(server)
    assert ids == [message_id("a-pricing", "new:3"), message_id("a-pricing", "reminder:6")]
    subject = BytesParser(policy=policy.default).parsebytes(server.script.received[1][2])["Subject"]
    assert subject.startswith("Still high: complaints about pricing 4.0×")


@pytest.mark.slow
def test_resolved_note_shows_the_recovery_after_the_rollback(
    two_alerts: Settings, server: Server
) -> None:
    deliver(two_alerts)
    _set(
        two_alerts,
        "a-pricing",
        status="resolved",
        resolved_at=NOW,
        reverted_by="price-rollback",
        recovery_hours=31.0,
    )
    deliver(two_alerts, now=NOW + timedelta(hours=2))
    assert received_ids(server)[2:] == [message_id("a-pricing", "resolved")]
    note = BytesParser(policy=policy.default).parsebytes(server.script.received[2][2])
    assert note["Subject"] == (
        "Back to normal: complaints about pricing (spike since Tue 10 Mar, after "
        "'Plan price rise'; recovered 31 h after 'Old prices back')"
    )
    text = note.get_body(preferencelist=("plain",)).get_content()
    assert 'Recovered 31 h after "Old prices back".' in text
    assert "Old prices back" in note.get_body(preferencelist=("html",)).get_content()
    assert deliver(two_alerts, now=NOW + timedelta(hours=3)) == []


def test_no_resolved_note_when_turned_off(tmp_path: Path, server: Server) -> None:
    settings = load_settings(write_config(tmp_path, server.port, resolved_note=False))
    build_warehouse(settings.warehouse.path, [anomaly("a-pricing", "pricing")])
    deliver(settings)
    _set(settings, "a-pricing", status="resolved", resolved_at=NOW)
    assert deliver(settings, now=NOW + timedelta(hours=2)) == []
    assert len(server.script.received) == 1


def test_session_dropped_after_the_message_is_unconfirmed_not_resent(
    two_alerts: Settings, server: Server
) -> None:
    server.script.drop_after_data = 1
    deliver(two_alerts)
    book = ledger(two_alerts)
    first = BytesParser(policy=policy.default).parsebytes(server.script.received[0][2])
    dropped = first["X-Backlash-Alert-Id"]
    assert book[(dropped, "new:3", "smtp", CEO)] == "unconfirmed"
    assert len(server.script.received) == 2  # the dropped one and the other alert
    assert deliver(two_alerts, now=NOW + timedelta(hours=1)) == []
    assert len(server.script.received) == 2


# --------------------------------------------------------------------------- webhook channel

HOOK = "/services/T1/B1/hook-secret-token"


def test_webhook_posts_once_per_anomaly_in_the_same_ledger(
    tmp_path: Path, server: Server, httpserver: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BACKLASH_TEST_WEBHOOK", httpserver.url_for(HOOK))
    httpserver.expect_request(HOOK, method="POST").respond_with_data("ok")
    settings = load_settings(
        write_config(tmp_path, server.port, webhook_url_env="BACKLASH_TEST_WEBHOOK")
    )
    build_warehouse(
        settings.warehouse.path, [anomaly("a-pricing", "pricing"), anomaly("b-billing", "billing")]
    )
    deliver(settings)
    posts = [json.loads(request.get_data()) for request, _ in httpserver.log]
    assert len(posts) == 2
    assert sorted(p["text"].split(" ")[2] for p in posts) == ["billing", "pricing"]
    assert all(p["blocks"][0]["type"] == "header" for p in posts)
    book = ledger(settings)
    assert book[("a-pricing", "new:3", "webhook", "BACKLASH_TEST_WEBHOOK")] == "sent"
    assert len(server.script.received) == 2  # email too

    assert deliver(settings, now=NOW + timedelta(hours=1)) == []
    assert len(httpserver.log) == 2
    con = duckdb.connect(str(settings.warehouse.path), read_only=True)
    try:
        stored = con.execute(
            "SELECT string_agg(concat_ws(' ', recipient, detail), ' ') FROM meta.alert_deliveries"
        ).fetchone()[0]
    finally:
        con.close()
    assert "hook-secret-token" not in stored


def test_webhook_400_is_rejected_and_not_retried_next_run(
    tmp_path: Path, server: Server, httpserver: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BACKLASH_TEST_WEBHOOK", httpserver.url_for(HOOK))
    httpserver.expect_request(HOOK, method="POST").respond_with_data("invalid_blocks", status=400)
    settings = load_settings(
        write_config(tmp_path, server.port, webhook_url_env="BACKLASH_TEST_WEBHOOK")
    )
    build_warehouse(settings.warehouse.path, [anomaly("a-pricing", "pricing")])
    deliver(settings)
    assert len(httpserver.log) == 1
    book = ledger(settings)
    assert book[("a-pricing", "new:3", "webhook", "BACKLASH_TEST_WEBHOOK")] == "rejected"
    assert book[("a-pricing", "new:3", "smtp", CEO)] == "sent"
    assert deliver(settings, now=NOW + timedelta(hours=1)) == []
    assert len(httpserver.log) == 1


def test_webhook_429_then_200_is_delivered_once(
    tmp_path: Path, server: Server, httpserver: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from werkzeug import Response

    monkeypatch.setenv("BACKLASH_TEST_WEBHOOK", httpserver.url_for(HOOK))
    httpserver.expect_ordered_request(HOOK, method="POST").respond_with_response(
        Response("slow down", status=429, headers={"Retry-After": "1"})
    )
    httpserver.expect_ordered_request(HOOK, method="POST").respond_with_data("ok")
    settings = load_settings(
        write_config(tmp_path, server.port, webhook_url_env="BACKLASH_TEST_WEBHOOK")
    )
    build_warehouse(settings.warehouse.path, [anomaly("a-pricing", "pricing")])
    deliver(settings)
    assert len(httpserver.log) == 2
    assert ledger(settings)[("a-pricing", "new:3", "webhook", "BACKLASH_TEST_WEBHOOK")] == "sent"
