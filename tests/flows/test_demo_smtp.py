"""The demo's loopback SMTP server: a real server, messages kept as .eml files."""

from __future__ import annotations

import smtplib
from email import policy
from email.parser import BytesParser
from pathlib import Path

import pytest

from connectors.smtp import send
from flows.config import load_settings
from flows.demo_smtp import environment, loopback_smtp
from tests.flows.test_alert_email import build, make_view


def test_messages_arrive_as_eml_files(tmp_path: Path) -> None:
    folder = tmp_path / "smtp-received"
    msg = build(make_view())
    with loopback_smtp(folder) as server:
        assert server.host == "127.0.0.1"
        result = send(
            msg, host=server.host, port=server.port, security="none", user=None, password=None
        )
        assert result.status == "sent"
        assert len(server.received) == 1
    (eml,) = sorted(folder.glob("*.eml"))
    assert eml.name.startswith("0001-")
    got = BytesParser(policy=policy.default).parsebytes(eml.read_bytes())
    assert got["Message-ID"] == msg["Message-ID"]
    assert got.get_all("X-Envelope-To") == [
        "ceo@acme.test",
        "cfo@acme.test",
        "support-lead@acme.test",
    ]
    assert got.get_body(preferencelist=("html",)) is not None
    assert not list(folder.glob("*.tmp"))


def test_server_is_gone_after_the_block(tmp_path: Path) -> None:
    with loopback_smtp(tmp_path) as server:
        port = server.port
    with pytest.raises(OSError):
        smtplib.SMTP("127.0.0.1", port, timeout=2)


def test_env_points_the_alerts_config_at_it(tmp_path: Path) -> None:
    config = tmp_path / "backlash.toml"
    config.write_text('[warehouse]\npath = "w.duckdb"\n[alerts]\nto = ["a@b.test"]\n')
    with loopback_smtp(tmp_path / "in") as server, environment(server.env()):
        alerts = load_settings(config).alerts
    assert (alerts.smtp_host, alerts.smtp_port, alerts.security) == (
        "127.0.0.1",
        server.port,
        "none",
    )
    assert load_settings(config).alerts.smtp_host is None  # restored afterwards
