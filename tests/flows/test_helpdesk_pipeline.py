"""A Zendesk source configured in backlash.toml, ingested through the pipeline.

The sandbox serves Zendesk's incremental cursor export on loopback; the
pipeline lands raw pages, normalises, validates, labels and upserts them, and a
second run adds nothing while an update in between lands as an update.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from connectors.sandbox import SandboxServer, serve_zendesk, tickets_from_export_rows
from flows import pipeline
from flows.config import load_settings
from warehouse.db import connect

pytestmark = pytest.mark.slow

NOW = datetime.now(UTC)
START = NOW - timedelta(days=30)


def rows(n: int) -> list[dict[str, str]]:
    return [
        {
            "id": str(i + 1),
            "created_at": (START + timedelta(hours=i)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "subject": "My bill went up" if i % 3 == 0 else "How do I add a profile?",
            "body": "You raised the price again, I am cancelling."
            if i % 3 == 0
            else "Where is the setting to add a profile for my son?",
            "channel": "email" if i % 2 else "web",
            "requester": f"customer{i}@example.com",
            "tags": "billing" if i % 3 == 0 else "profiles",
            "status": "open",
        }
        for i in range(n)
    ]


@pytest.fixture
def sandbox() -> Iterator[tuple[SandboxServer, str]]:
    server, url = serve_zendesk(
        tickets_from_export_rows(rows(250)), rate_per_minute=None, page_size=100
    )
    try:
        yield server, url
    finally:
        server.close()


def config(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "backlash.toml"
    path.write_text(
        '[warehouse]\npath = "w.duckdb"\n\n'
        '[[sources]]\nname = "support"\nkind = "zendesk"\n'
        f'base_url = "{url}"\nemail = "ops@example.com"\ntoken_env = "TEST_ZENDESK_TOKEN"\n'
        f'start_time = "{START - timedelta(days=1):%Y-%m-%dT%H:%M:%SZ}"\ncomments = false\n',
        encoding="utf-8",
    )
    return path


def tickets(con: duckdb.DuckDBPyConnection) -> list[tuple[str, str]]:
    return con.execute(
        "SELECT ticket_key, subject FROM core.tickets ORDER BY ticket_key"
    ).fetchall()


def test_zendesk_source_lands_each_ticket_once_and_updates_in_place(
    tmp_path: Path, sandbox: tuple[SandboxServer, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_ZENDESK_TOKEN", "not-a-real-token")
    server, url = sandbox
    settings = load_settings(config(tmp_path, url))
    con = connect(settings.warehouse.path)
    try:
        first = pipeline.ingest_source(con, settings, "support", now=NOW)
        assert first.tickets == 250
        assert first.quarantined == 0
        loaded = tickets(con)
        assert len(loaded) == 250
        assert all(key.startswith("support:") for key, _ in loaded)
        labelled = con.execute(
            "SELECT count(*) FILTER (is_complaint AND list_contains(topics, 'pricing')) "
            "FROM core.ticket_labels"
        ).fetchone()
        assert labelled is not None
        assert labelled[0] >= 70  # 84 price complaints were served

        again = pipeline.ingest_source(con, settings, "support", now=NOW)
        assert again.tickets == 0
        assert tickets(con) == loaded

        changed = dict(server.state.tickets[7])
        changed["subject"] = "Still waiting for my refund"
        changed["updated_at"] = (NOW - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
        server.state.put(changed, at=(NOW - timedelta(minutes=5)).timestamp())
        third = pipeline.ingest_source(con, settings, "support", now=NOW)
        assert third.tickets == 1
        after = dict(tickets(con))
        assert len(after) == 250
        assert after["support:7"] == "Still waiting for my refund"
        raw = con.execute("SELECT count(*) FROM raw.support_records").fetchone()
        assert raw is not None
        assert raw[0] == 251  # every version fetched is kept in raw
    finally:
        con.close()
