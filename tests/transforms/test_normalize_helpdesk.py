"""Zendesk and Freshdesk records to core.tickets / core.messages frames."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from transforms.normalize_file import normalize_file
from transforms.normalize_helpdesk import normalize_freshdesk, normalize_zendesk
from transforms.schema import MESSAGES, TICKETS

NOW = datetime(2026, 11, 23, 12, tzinfo=UTC)


def zd_ticket(ticket_id: int, **extra: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "id": ticket_id,
        "created_at": "2026-09-20T08:00:00Z",
        "updated_at": "2026-09-21T09:30:00Z",
        "generated_timestamp": 1790000000,
        "subject": "  Price went up again  ",
        "raw_subject": "Price went up again",
        "description": "I am cancelling.",
        "status": "open",
        "priority": "high",
        "requester_id": 42,
        "organization_id": 77,
        "tags": ["pricing", "cancel"],
        "via": {"channel": "email", "source": {"from": {"address": "Ann@Example.com"}}},
        "custom_fields": [{"id": 1, "value": "gold"}],
    }
    record.update(extra)
    return record


def fd_ticket(ticket_id: int, **extra: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "id": ticket_id,
        "subject": "Split plan",
        "description": "<div>Why split it?</div>",
        "description_text": "Why split it?",
        "status": 2,
        "priority": 4,
        "source": 7,
        "requester_id": 9001,
        "company_id": 33,
        "tags": ["plans"],
        "custom_fields": {"cf_plan": "basic"},
        "created_at": "2026-09-20T08:00:00Z",
        "updated_at": "2026-09-21T09:30:00Z",
    }
    record.update(extra)
    return record


def _zd(records: list[Any], stream: str = "tickets") -> Any:
    return normalize_zendesk(records, source="support", stream=stream, ingested_at=NOW)


def _fd(records: list[Any], stream: str = "tickets") -> Any:
    return normalize_freshdesk(records, source="fresh", stream=stream, ingested_at=NOW)


def test_zendesk_ticket_fields() -> None:
    result = _zd([zd_ticket(7)])
    assert result.tickets.schema == pl.Schema(TICKETS)
    row = result.tickets.row(0, named=True)
    assert row["ticket_key"] == "support:7"
    assert row["source_id"] == "7"
    assert row["created_at"] == datetime(2026, 9, 20, 8, tzinfo=UTC)
    assert row["updated_at"] == datetime(2026, 9, 21, 9, 30, tzinfo=UTC)
    assert row["subject"] == "Price went up again"
    assert row["body"] == "I am cancelling."
    assert row["channel"] == "email"
    assert (row["status"], row["priority"]) == ("open", "high")
    assert row["organization"] == "77"
    assert row["tags"] == ["pricing", "cancel"]
    assert row["is_deleted"] is False
    assert row["ingested_at"] == NOW
    assert result.rejects == []


def test_requester_key_matches_other_sources_for_the_same_address() -> None:
    zendesk = _zd([zd_ticket(1)]).tickets["requester_key"][0]
    from_file = normalize_file(
        [{"id": "x", "created_at": "2026-01-01", "requester": "ann@example.com "}],
        source="export",
        ingested_at=NOW,
    ).tickets["requester_key"][0]
    assert zendesk == from_file
    assert "ann" not in zendesk  # pseudonymous
    # Without an address, the user id keys it, namespaced by source.
    web = zd_ticket(2, via={"channel": "web", "source": {}})
    other = zd_ticket(3, via={"channel": "web", "source": {}}, requester_id=43)
    keys = _zd([web, other]).tickets["requester_key"].to_list()
    assert len(set(keys)) == 2
    assert None not in keys


def test_zendesk_channels_and_unknown_channel_is_other() -> None:
    channels = {
        "email": "email",
        "web": "web",
        "voice": "phone",
        "native_messaging": "chat",
        "twitter": "social",
        "api": "api",
        "hologram_v9": "other",
    }
    records = [zd_ticket(i, via={"channel": c}) for i, c in enumerate(channels, start=1)]
    records.append(zd_ticket(99, via=None))
    got = _zd(records).tickets["channel"].to_list()
    assert got == [*channels.values(), "other"]


def test_deleted_ticket_is_kept_and_flagged() -> None:
    frame = _zd([zd_ticket(1, status="deleted"), zd_ticket(2)]).tickets
    assert frame["is_deleted"].to_list() == [True, False]
    assert frame["status"].to_list() == ["deleted", "open"]


def test_schema_drift_does_not_break_the_page() -> None:
    drifted = [
        zd_ticket(1, custom_fields=[{"id": 1, "value": ["multi", "select"]}]),
        zd_ticket(2, custom_fields=[{"id": 1, "value": True}], brand_new_field={"a": [1, 2]}),
        zd_ticket(3, tags="a b", priority=None, organization_id=None, via={"channel": 12}),
        zd_ticket(4, subject=None, description=None),
    ]
    frame = _zd(drifted).tickets
    assert frame.height == 4
    assert frame["tags"].to_list()[2] == ["a", "b"]
    assert frame["channel"].to_list()[2] == "other"
    assert frame["subject"].to_list()[3] == "Price went up again"  # raw_subject fallback


def test_bad_records_are_rejected_with_reasons_the_rest_load() -> None:
    records = [
        zd_ticket(1),
        zd_ticket(2, created_at="yesterday-ish"),
        {"subject": "no id"},
        "not even an object",
        zd_ticket(3, updated_at="31/12/2026"),
    ]
    result = _zd(records)
    assert result.tickets["source_id"].to_list() == ["1"]
    reasons = {rid: reason for rid, reason, _ in result.rejects}
    assert "created_at" in reasons["2"]
    assert "updated_at" in reasons["3"]
    anonymous = [rid for rid in reasons if rid.startswith("(no id)")]
    assert len(anonymous) == 2
    assert len(set(anonymous)) == 2
    payloads = {rid: payload for rid, _, payload in result.rejects}
    assert json.loads(payloads["2"])["created_at"] == "yesterday-ish"


def test_two_versions_of_a_ticket_in_one_page_are_both_returned() -> None:
    older = zd_ticket(5, status="open")
    newer = zd_ticket(5, status="solved", updated_at="2026-09-22T00:00:00Z")
    frame = _zd([older, newer]).tickets
    assert frame["ticket_key"].to_list() == ["support:5", "support:5"]
    assert frame.sort("updated_at")["status"].to_list() == ["open", "solved"]


def test_zendesk_comments_become_messages() -> None:
    comments = [
        {
            "id": 11,
            "author_id": 42,
            "body": "Hi",
            "plain_body": "Hi there",
            "public": True,
            "created_at": "2026-09-20T08:00:00Z",
            "via": {"channel": "email", "source": {"from": {"address": "ann@example.com"}}},
            "_ticket_id": 7,
            "_requester_id": 42,
        },
        {
            "id": 12,
            "author_id": 3,
            "body": "Sorry",
            "public": True,
            "created_at": "2026-09-20T09:00:00Z",
            "via": {"channel": "web"},
            "_ticket_id": 7,
            "_requester_id": 42,
        },
        {
            "id": 13,
            "author_id": -1,
            "body": "Auto",
            "public": False,
            "created_at": "2026-09-20T09:01:00Z",
            "via": {"channel": "rule"},
            "_ticket_id": 7,
            "_requester_id": 42,
        },
        {"id": 14, "body": "lost", "created_at": "2026-09-20T09:00:00Z"},
    ]
    result = _zd(comments, stream="comments")
    assert result.tickets.is_empty()
    messages = result.messages
    assert messages.schema == pl.Schema(MESSAGES)
    assert messages["message_key"].to_list() == ["support:11", "support:12", "support:13"]
    assert set(messages["ticket_key"]) == {"support:7"}
    assert messages["body"].to_list() == ["Hi there", "Sorry", "Auto"]
    assert messages["is_customer"].to_list() == [True, False, False]
    assert messages["is_auto"].to_list() == [False, False, True]
    ticket_key = _zd([zd_ticket(7)]).tickets["requester_key"][0]
    assert messages["author_key"][0] == ticket_key
    assert [r[0] for r in result.rejects] == ["comment:14"]  # apart from ticket 14


def test_side_streams_and_empty_pages_normalise_to_nothing() -> None:
    users = _zd([{"id": 1, "email": "a@b.c"}], stream="users")
    assert users.tickets.is_empty()
    assert users.messages.is_empty()
    assert users.rejects == []
    assert _zd([]).tickets.schema == pl.Schema(TICKETS)


def test_freshdesk_codes_are_mapped_to_names() -> None:
    records = [
        fd_ticket(1),
        fd_ticket(2, status=5, priority=1, source=1),
        fd_ticket(3, status=6, priority=2, source=3),  # 6: a custom status
        fd_ticket(4, status=3, priority=3, source=99),
        fd_ticket(5, status=4, source=10, deleted=True),
    ]
    frame = _fd(records).tickets
    assert frame.schema == pl.Schema(TICKETS)
    assert frame["status"].to_list() == ["open", "closed", "6", "pending", "resolved"]
    assert frame["priority"].to_list() == ["urgent", "low", "medium", "high", "urgent"]
    assert frame["channel"].to_list() == ["chat", "email", "phone", "other", "email"]
    assert frame["is_deleted"].to_list() == [False, False, False, False, True]
    row = frame.row(0, named=True)
    assert row["ticket_key"] == "fresh:1"
    assert row["body"] == "Why split it?"
    assert row["organization"] == "33"
    assert row["tags"] == ["plans"]


def test_freshdesk_requester_email_when_included() -> None:
    with_requester = fd_ticket(1, requester={"id": 9001, "email": "ann@example.com"})
    keys = _fd([with_requester, fd_ticket(2)]).tickets["requester_key"].to_list()
    assert keys[0] == _zd([zd_ticket(1)]).tickets["requester_key"][0]
    assert keys[1] is not None
    assert keys[1] != keys[0]


def test_freshdesk_conversations_become_messages() -> None:
    conversations = [
        {
            "id": 1,
            "ticket_id": 8,
            "body": "<p>Hi</p>",
            "body_text": "Hi",
            "incoming": True,
            "from_email": "ann@example.com",
            "user_id": 9001,
            "created_at": "2026-09-20T08:00:00Z",
        },
        {
            "id": 2,
            "ticket_id": 8,
            "body_text": "Reply",
            "incoming": False,
            "user_id": 5,
            "from_email": "support@acme.com",
            "created_at": "2026-09-20T09:00:00Z",
        },
    ]
    messages = _fd(conversations, stream="conversations").messages
    assert messages["ticket_key"].to_list() == ["fresh:8", "fresh:8"]
    assert messages["is_customer"].to_list() == [True, False]
    assert messages["body"].to_list() == ["Hi", "Reply"]
    assert messages["author_key"][0] == _zd([zd_ticket(1)]).tickets["requester_key"][0]


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
_record = st.fixed_dictionaries(
    {},
    optional={
        "id": st.integers(1, 10**9) | st.text(min_size=1, max_size=6),
        "created_at": st.sampled_from(["2026-01-01T00:00:00Z", "bad", "2026-02-03"]) | _json,
        "updated_at": st.sampled_from(["2026-01-02T00:00:00Z", ""]) | _json,
        "status": _json,
        "priority": _json,
        "source": _json,
        "via": _json,
        "tags": _json,
        "subject": _json,
        "custom_fields": _json,
        "requester": _json,
    },
)


@pytest.mark.slow
@settings(max_examples=50, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(records=st.lists(_record, max_size=6), zendesk=st.booleans())
def test_every_record_is_a_row_or_a_reject_never_an_exception(
    records: list[dict[str, Any]], zendesk: bool
) -> None:
    result = _zd(records) if zendesk else _fd(records)
    assert result.tickets.height + len(result.rejects) == len(records)
    assert result.tickets.schema == pl.Schema(TICKETS)
    assert result.tickets["channel"].null_count() == 0
