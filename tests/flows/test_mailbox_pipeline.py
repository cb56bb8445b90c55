"""The demo company's support mailbox through the real pipeline functions (no Prefect).

A short, small Reelbox (tickets.csv + support.mbox) is ingested from a config
with both sources into a real DuckDB file; the generator's truth knows every
conversation, so the tests can hold the warehouse to it: one ticket per
conversation keyed by its first Message-ID, every reply in ``core.messages``,
machine mail never counted, the marts counting the email tickets, and a second
ingest adding nothing.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import duckdb
import pytest

from flows import pipeline
from flows.config import load_settings
from flows.demo_company import SUPPORT_DOMAIN, DemoTruth, generate
from flows.sources import open_source
from transforms.mime import has_reply_prefix
from warehouse.db import connect

pytestmark = pytest.mark.slow

# Within KNOWN_THREAD_DAYS (60) of every message: see the lead-engineer note in the report.
NOW = datetime(2024, 12, 27, tzinfo=UTC)
CONFIG = f"""\
[warehouse]
path = "warehouse.duckdb"

[[sources]]
name = "support"
kind = "file"
path = "data/tickets.csv"

[[sources]]
name = "mail"
kind = "mbox"
path = "data/support.mbox"
batch_size = 40
support_addresses = ["{SUPPORT_DOMAIN}"]

[changes]
path = "data/changes.yaml"
"""
TABLES = ("core.tickets", "core.messages", "core.ticket_labels", "raw.mail_records")


def counts(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    out = {}
    for table in (*TABLES, "marts.complaints_daily", "meta.quarantine"):
        row = con.sql(f"SELECT count(*) FROM {table}").fetchall()[0]
        out[table] = row[0] if row else 0
    return out


def ingest_all(con: duckdb.DuckDBPyConnection, settings: Any) -> dict[str, Any]:
    stats = {
        s.name: pipeline.ingest_source(con, settings, s.name, now=NOW) for s in settings.sources
    }
    starts = [s.since for s in stats.values() if s.since is not None]
    pipeline.load_changes(con, settings)
    pipeline.refresh(con, min(starts) if starts else None)
    return stats


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    directory = tmp_path_factory.mktemp("mailbox_pipeline")
    truth = generate(directory / "data", seed=5, start=date(2024, 11, 1), days=55, volume=0.3)
    config = directory / "backlash.toml"
    config.write_text(CONFIG, encoding="utf-8")
    settings = load_settings(config)
    con = connect(settings.warehouse.path)
    first = ingest_all(con, settings)
    after_first = counts(con)
    file_tickets = con.sql("SELECT count(*) FROM core.tickets WHERE source = 'support'").fetchall()
    marts_before = con.sql("SELECT * FROM marts.complaints_daily ORDER BY ALL").fetchall()
    second = ingest_all(con, settings)
    yield {
        "truth": truth,
        "con": con,
        "first": first,
        "second": second,
        "after_first": after_first,
        "file_tickets": file_tickets[0][0],
        "after_second": counts(con),
        "marts_before": marts_before,
    }
    con.close()


def test_every_conversation_is_one_ticket_keyed_by_its_first_message(
    loaded: dict[str, Any],
) -> None:
    truth: DemoTruth = loaded["truth"]
    assert truth.mailbox is not None
    con = loaded["con"]
    rows = con.sql(
        "SELECT source_id, subject, channel, requester_key, is_auto FROM core.tickets "
        "WHERE source = 'mail'"
    ).fetchall()
    tickets = {r[0]: r for r in rows}
    conversations = truth.mailbox.conversations
    assert len(conversations) > 150
    for conv in conversations:
        assert conv.root_id in tickets, conv
        _, subject, channel, requester, _ = tickets[conv.root_id]
        assert subject == conv.subject
        assert channel == "email"
        if not conv.is_auto:
            assert requester == conv.customer
    # Replies that lost every threading header and the "Re:" open a ticket of their own,
    # as a helpdesk would; nothing else may.
    no_re = sum(
        1 for c in conversations for m in c.headerless if not has_reply_prefix(_subject_of(con, m))
    )
    assert len(conversations) <= len(tickets) <= len(conversations) + no_re + 2


def _subject_of(con: duckdb.DuckDBPyConnection, message_id: str) -> str:
    row = con.sql(
        "SELECT subject FROM core.messages WHERE message_id = ?", params=[message_id]
    ).fetchall()[0]
    assert row is not None, message_id
    return str(row[0])


def test_replies_are_messages_of_their_conversations_ticket(loaded: dict[str, Any]) -> None:
    truth: DemoTruth = loaded["truth"]
    assert truth.mailbox is not None
    con = loaded["con"]
    stored = dict(
        con.sql("SELECT message_id, ticket_key FROM core.messages WHERE source = 'mail'").fetchall()
    )
    assert len(stored) == truth.mailbox.messages
    threaded = [c for c in truth.mailbox.conversations if not c.headerless]
    multi = [c for c in threaded if len(c.message_ids) >= 3]
    assert len(multi) > 20  # customer -> agent -> customer, across pages of 40
    for conv in threaded:
        assert {stored[m] for m in conv.message_ids} == {f"mail:{conv.root_id}"}, conv
    # Headerless replies that kept "Re:" still join by subject and sender.
    rejoined = [
        m
        for c in truth.mailbox.conversations
        for m in c.headerless
        if stored[m] == f"mail:{c.root_id}"
    ]
    headerless = sum(len(c.headerless) for c in truth.mailbox.conversations)
    assert headerless > 5
    assert len(rejoined) >= 0.6 * headerless


def test_machine_mail_is_stored_but_never_counted(loaded: dict[str, Any]) -> None:
    truth: DemoTruth = loaded["truth"]
    assert truth.mailbox is not None
    con = loaded["con"]
    auto_roots = {c.root_id for c in truth.mailbox.conversations if c.is_auto}
    assert len(auto_roots) >= 2
    auto_tickets = {
        r[0]
        for r in con.sql(
            "SELECT source_id FROM core.tickets WHERE source = 'mail' AND is_auto"
        ).fetchall()
    }
    assert auto_tickets == auto_roots
    # Auto-replies inside a conversation are messages marked auto; their tickets count.
    auto_messages = con.sql(
        "SELECT count(*) FROM core.messages WHERE source = 'mail' AND is_auto"
    ).fetchall()[0]
    assert auto_messages is not None
    assert auto_messages[0] == truth.mailbox.auto_messages
    counted = con.sql(
        "SELECT count(*) FROM core.tickets WHERE NOT is_auto AND NOT is_deleted "
        "AND duplicate_of IS NULL"
    ).fetchall()[0]
    total = con.sql(
        "SELECT sum(tickets) FROM marts.complaints_daily WHERE topic = '*' AND channel = '*'"
    ).fetchall()[0]
    assert counted is not None
    assert total is not None
    assert total[0] == counted[0]


def test_email_complaints_appear_in_the_daily_counts(loaded: dict[str, Any]) -> None:
    truth: DemoTruth = loaded["truth"]
    assert truth.mailbox is not None
    con = loaded["con"]
    email_only = con.sql(
        "SELECT count(*) FILTER (l.is_complaint), count(*) FROM core.tickets t "
        "JOIN core.ticket_labels l USING (ticket_key) "
        "WHERE t.source = 'mail' AND NOT t.is_auto"
    ).fetchall()[0]
    assert email_only is not None
    planted = sum(c.kind == "complaint" for c in truth.mailbox.conversations)
    humans = sum(not c.is_auto for c in truth.mailbox.conversations)
    assert email_only[1] >= humans
    # The labeller is not perfect, but it finds the email complaints the generator wrote.
    assert 0.75 * planted <= email_only[0] <= 1.25 * planted
    file_tickets = con.sql(
        "SELECT count(*) FROM core.tickets WHERE source = 'support' AND NOT is_auto"
    ).fetchall()[0]
    marts = con.sql(
        "SELECT sum(tickets), sum(complaints) FROM marts.complaints_daily "
        "WHERE topic = '*' AND channel = '*'"
    ).fetchall()[0]
    assert file_tickets is not None
    assert marts is not None
    assert marts[0] == file_tickets[0] + email_only[1]
    # And per day: every day with email complaints counts at least that many on channel email.
    per_day = dict(
        con.sql(
            "SELECT bucket::DATE, complaints FROM marts.complaints_daily "
            "WHERE topic = '*' AND channel = 'email'"
        ).fetchall()
    )
    email_days = dict(
        con.sql(
            "SELECT t.created_at::DATE, count(*) FROM core.tickets t "
            "JOIN core.ticket_labels l USING (ticket_key) "
            "WHERE t.source = 'mail' AND NOT t.is_auto AND l.is_complaint GROUP BY 1"
        ).fetchall()
    )
    assert email_days
    assert all(per_day.get(day, 0) >= n for day, n in email_days.items())


def test_a_second_ingest_adds_nothing(loaded: dict[str, Any]) -> None:
    assert loaded["after_second"] == loaded["after_first"]
    assert loaded["first"]["mail"].raw_new == loaded["truth"].mailbox.messages
    for stats in loaded["second"].values():
        assert stats.records == 0
        assert stats.raw_new == 0
    after = loaded["con"].sql("SELECT * FROM marts.complaints_daily ORDER BY ALL").fetchall()
    assert after == loaded["marts_before"]


def test_nothing_was_quarantined(loaded: dict[str, Any]) -> None:
    assert loaded["after_first"]["meta.quarantine"] == 0


@pytest.fixture(scope="module")
def paged(loaded: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The mailbox again, committed 40 messages at a time into a warehouse of its own."""
    truth: DemoTruth = loaded["truth"]
    directory = tmp_path_factory.mktemp("paged")
    config = directory / "backlash.toml"
    config.write_text(
        CONFIG.replace('"data/', f'"{truth.tickets_path.parent.as_posix()}/'), encoding="utf-8"
    )
    settings = load_settings(config)
    cfg = settings.source("mail")
    con = connect(settings.warehouse.path)
    try:
        stats = pipeline.ingest_pages(
            con,
            cfg,
            open_source(cfg).pages({}),
            topics=pipeline.topics_of(settings),
            now=NOW,
            batch_records=40,
        )
        return {
            "stats": stats,
            "messages": dict(
                con.sql("SELECT message_id, ticket_key FROM core.messages").fetchall()
            ),
            "tickets": con.sql("SELECT count(*) FROM core.tickets").fetchall()[0][0],
            "labels": dict(
                con.sql("SELECT ticket_key, is_complaint FROM core.ticket_labels").fetchall()
            ),
        }
    finally:
        con.close()


def test_small_pages_thread_like_one_batch(loaded: dict[str, Any], paged: dict[str, Any]) -> None:
    """Replies land pages after their conversation's first message and still join it."""
    truth: DemoTruth = loaded["truth"]
    assert truth.mailbox is not None
    assert paged["stats"].pages >= truth.mailbox.messages // 40
    whole = dict(
        loaded["con"]
        .sql("SELECT message_id, ticket_key FROM core.messages WHERE source = 'mail'")
        .fetchall()
    )
    assert paged["messages"] == whole
    assert paged["tickets"] == loaded["after_first"]["core.tickets"] - loaded["file_tickets"]


def test_small_pages_keep_each_tickets_label(loaded: dict[str, Any], paged: dict[str, Any]) -> None:
    """A reply in a later commit must not relabel its ticket from "any update?"."""
    whole = dict(
        loaded["con"]
        .sql(
            "SELECT ticket_key, is_complaint FROM core.ticket_labels WHERE ticket_key LIKE 'mail:%'"
        )
        .fetchall()
    )
    changed = [k for k, v in whole.items() if paged["labels"].get(k) != v]
    assert changed == []
