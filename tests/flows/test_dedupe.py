"""A complaint that reached both the helpdesk and the mailbox is counted once.

A real warehouse file, a helpdesk export (file source) and a real mbox: the
customer who wrote to support@ and whose mail was also forwarded into the
helpdesk must count once in the marts, while a different customer with the
same subject, and the same customer an hour later, still count.
"""

from __future__ import annotations

import mailbox
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path

import duckdb
import pytest

from flows import pipeline
from flows.config import load_settings
from flows.dedupe import mark_cross_source_duplicates
from warehouse.db import connect

NOW = datetime(2026, 3, 12, tzinfo=UTC)
CONFIG = """\
[warehouse]
path = "warehouse.duckdb"

[[sources]]
name = "helpdesk"
kind = "file"
path = "tickets.csv"

[[sources]]
name = "mail"
kind = "mbox"
path = "support.mbox"
support_addresses = ["@reelbox.example"]
"""
EXPORT = """\
id,created_at,subject,body,channel,requester,tags,status
1,2026-03-10T09:00:00Z,Price rise,"My bill went up!",email,Ana.Silva@example.com,,open
2,2026-03-10T09:30:00Z,Price rise,"The new price is too much.",web,bob@example.com,,open
"""


def _mail(sender: str, subject: str, at: datetime, message_id: str, body: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = "support@reelbox.example"
    msg["Subject"] = subject
    msg["Date"] = format_datetime(at)
    msg["Message-ID"] = message_id
    msg.set_content(body)
    return msg


@pytest.fixture
def warehouse(tmp_path: Path) -> duckdb.DuckDBPyConnection:
    (tmp_path / "backlash.toml").write_text(CONFIG, encoding="utf-8")
    (tmp_path / "tickets.csv").write_text(EXPORT, encoding="utf-8")
    box = mailbox.mbox(tmp_path / "support.mbox")
    for msg in (
        # The same complaint the helpdesk got by forwarding: 4 minutes earlier, "Re:"-less.
        _mail(
            "Ana Silva <ana.silva@example.com>",
            "Price rise",
            datetime(2026, 3, 10, 8, 56, tzinfo=UTC),
            "<a1@mail.example.com>",
            "Why did my bill go up to $15.98? I will cancel.",
        ),
        # Same subject, another customer the helpdesk never saw.
        _mail(
            "carol@example.com",
            "Price rise",
            datetime(2026, 3, 10, 9, 1, tzinfo=UTC),
            "<c1@mail.example.com>",
            "I am cancelling because of the price.",
        ),
        # The first customer again, an hour later: a second complaint.
        _mail(
            "ana.silva@example.com",
            "Price rise again",
            datetime(2026, 3, 10, 10, 5, tzinfo=UTC),
            "<a2@mail.example.com>",
            "Still no answer about the price rise, cancel my plan.",
        ),
    ):
        box.add(msg)
    box.flush()
    box.close()
    settings = load_settings(tmp_path / "backlash.toml")
    con = connect(settings.warehouse.path)
    starts = [
        pipeline.ingest_source(con, settings, s.name, now=NOW).since for s in settings.sources
    ]
    since = min(s for s in starts if s is not None)
    marked = mark_cross_source_duplicates(con, settings, since)
    pipeline.refresh(con, since)
    con.execute("CREATE TEMP TABLE marked AS SELECT ? AS n", [marked])
    yield con
    con.close()


def test_the_forwarded_email_is_a_duplicate_of_the_helpdesk_ticket(
    warehouse: duckdb.DuckDBPyConnection,
) -> None:
    rows = warehouse.sql(
        "SELECT source, subject, duplicate_of FROM core.tickets ORDER BY source, created_at"
    ).fetchall()
    assert rows == [
        ("helpdesk", "Price rise", None),
        ("helpdesk", "Price rise", None),
        ("mail", "Price rise", "helpdesk:1"),
        ("mail", "Price rise", None),
        ("mail", "Price rise again", None),
    ]
    assert warehouse.sql("SELECT n FROM marked").fetchall() == [(1,)]


def test_the_marts_count_it_once(warehouse: duckdb.DuckDBPyConnection) -> None:
    total = warehouse.sql(
        "SELECT sum(tickets) FROM marts.complaints_daily WHERE topic = '*' AND channel = '*'"
    ).fetchall()
    assert total == [(4,)]  # five tickets in core, one of them the same complaint twice


def test_marking_again_changes_nothing(
    tmp_path: Path, warehouse: duckdb.DuckDBPyConnection
) -> None:
    settings = load_settings(tmp_path / "backlash.toml")
    before = warehouse.sql("SELECT * FROM core.tickets ORDER BY ticket_key").fetchall()
    mark_cross_source_duplicates(warehouse, settings, None)
    assert warehouse.sql("SELECT * FROM core.tickets ORDER BY ticket_key").fetchall() == before
