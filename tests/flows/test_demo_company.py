"""The demo company holds the story it claims: tests read the files it writes."""

from __future__ import annotations

import csv
import re
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from connectors.calendar import read_changes
from connectors.mailbox import MailboxSource
from flows.demo_company import TOPIC_TAG, DemoTruth, generate
from transforms.mime import ParsedMessage, parse_message

COLUMNS = ["id", "created_at", "subject", "body", "channel", "requester", "tags", "status"]
ISO_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")


def rows_of(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames == COLUMNS
        return list(reader)


def complaints_per_day(rows: list[dict[str, str]], topic: str) -> Counter[date]:
    """Complaints of one topic per day, from the agents' tags in the export."""
    tag = TOPIC_TAG[topic]
    out: Counter[date] = Counter()
    for row in rows:
        tags = row["tags"].split()
        if "complaint" in tags and tag in tags:
            out[datetime.fromisoformat(row["created_at"]).date()] += 1
    return out


def mean(counts: Counter[date], first: date, days: int) -> float:
    return sum(counts[first + timedelta(days=i)] for i in range(days)) / days


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> DemoTruth:
    return generate(tmp_path_factory.mktemp("small"), seed=3, volume=0.1)


@pytest.fixture(scope="module")
def full(tmp_path_factory: pytest.TempPathFactory) -> tuple[DemoTruth, list[dict[str, str]]]:
    truth = generate(tmp_path_factory.mktemp("full"), seed=7, volume=1.0)
    return truth, rows_of(truth.tickets_path)


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path, small: DemoTruth) -> None:
    again = generate(tmp_path / "again", seed=3, volume=0.1)
    assert again.tickets_path.read_bytes() == small.tickets_path.read_bytes()
    assert again.changes_path.read_bytes() == small.changes_path.read_bytes()
    other = generate(tmp_path / "other", seed=4, volume=0.1)
    assert other.tickets_path.read_bytes() != small.tickets_path.read_bytes()


def test_row_count_scales_with_volume(tmp_path: Path, small: DemoTruth) -> None:
    triple = generate(tmp_path / "triple", seed=3, volume=0.3)
    assert len(rows_of(small.tickets_path)) == small.tickets
    assert len(rows_of(triple.tickets_path)) == triple.tickets
    assert 2.6 < triple.tickets / small.tickets < 3.4


def test_export_format(small: DemoTruth) -> None:
    rows = rows_of(small.tickets_path)
    stamps = [r["created_at"] for r in rows]
    assert all(ISO_UTC.match(s) for s in stamps)
    assert stamps == sorted(stamps)
    assert len({r["id"] for r in rows}) == len(rows)
    assert {r["channel"] for r in rows} == {"email", "web", "chat", "phone", "social"}
    assert {r["status"] for r in rows} <= {"open", "pending", "solved", "closed"}
    assert all(re.fullmatch(r"[a-z0-9.]+@example\.(com|org|net)", r["requester"]) for r in rows)
    assert all(r["subject"] and r["body"] and r["tags"] for r in rows)
    assert any("\n" in r["body"] for r in rows)
    assert any(re.search(r"\d{3}[-. )]+\d{3}[-. ]\d{4}", r["body"]) for r in rows)
    first = datetime.fromisoformat(stamps[0])
    last = datetime.fromisoformat(stamps[-1])
    assert first >= datetime(2024, 11, 1, tzinfo=UTC)
    assert last < datetime(2024, 11, 1, tzinfo=UTC) + timedelta(days=730)
    # Bodies are varied text, not one template.
    assert len({r["body"] for r in rows}) > 0.75 * len(rows)


def test_weekdays_are_busier_than_weekends(small: DemoTruth) -> None:
    per_weekday = Counter(
        datetime.fromisoformat(r["created_at"]).weekday() for r in rows_of(small.tickets_path)
    )
    assert per_weekday[0] > 1.4 * per_weekday[6]


def test_calendar_has_the_story_and_the_incident_has_no_change(small: DemoTruth) -> None:
    changes = {c["change_id"]: c for c in read_changes(small.changes_path)}
    assert len(changes) == 8
    assert changes["profiles-kept"]["reverts"] == "profiles-removal"
    assert changes["dvd-split-reversed"]["reverts"] == "dvd-split"
    assert small.reverts == {"profiles-kept": "profiles-removal", "dvd-split-reversed": "dvd-split"}
    assert changes["price-rise"]["announced_at"] == datetime(2026, 3, 10, tzinfo=UTC)
    assert changes["price-rise"]["effective_at"] == datetime(2026, 4, 10, tzinfo=UTC)
    assert changes["dvd-split"]["kind"] == "service_split"
    incident = small.event("playback-incident")
    assert incident.change_id is None
    assert incident.spike_expected
    assert not incident.attributed
    # No change touches the incident's day or the three days before it but release-search,
    # eight days earlier, which must not be blamed.
    near = [
        c["change_id"]
        for c in changes.values()
        if timedelta(0) <= incident.onset - c["announced_at"].date() <= timedelta(days=14)
    ]
    assert near == ["release-search"]
    assert incident.onset - changes["release-search"]["announced_at"].date() == timedelta(days=8)
    assert set(changes) >= {e.change_id for e in small.events if e.change_id}


def test_calendar_yaml_and_csv_read_the_same(small: DemoTruth, tmp_path: Path) -> None:
    from_yaml = read_changes(small.changes_path)
    path = tmp_path / "changes.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            [
                "id",
                "title",
                "kind",
                "announced_at",
                "effective_at",
                "description",
                "areas",
                "keywords",
                "reverts",
            ]
        )
        for c in from_yaml:
            writer.writerow(
                [
                    c["change_id"],
                    c["title"],
                    c["kind"],
                    c["announced_at"].strftime("%Y-%m-%dT%H:%M:%SZ"),
                    c["effective_at"].date().isoformat(),
                    c["description"],
                    ";".join(c["areas"]),
                    ";".join(c["keywords"]),
                    c["reverts"] or "",
                ]
            )
    assert read_changes(path) == from_yaml


def test_truth_counts_match_the_file(small: DemoTruth) -> None:
    rows = rows_of(small.tickets_path)
    for topic, planted in small.complaints_per_day.items():
        counts = complaints_per_day(rows, topic)
        assert [counts[small.start + timedelta(days=i)] for i in range(small.days)] == planted


def test_short_run_keeps_calendar_consistent(tmp_path: Path) -> None:
    truth = generate(tmp_path, seed=1, days=170, volume=0.05)
    ids = [c["change_id"] for c in read_changes(truth.changes_path)]
    assert ids == ["release-android-tv", "profiles-removal", "profiles-kept"]
    assert {e.name for e in truth.events} == {"release-android-tv", "profiles-removal"}


def test_texts_speak_the_customers_words(small: DemoTruth) -> None:
    rows = rows_of(small.tickets_path)
    bodies = "\n".join(r["body"] for r in rows).lower()
    for phrase in ("qwikster", "$15.98", "profiles", "buffering", "password", "cancel"):
        assert phrase in bodies, phrase
    questions = [r for r in rows if "question" in r["tags"].split()]
    assert questions
    assert sum("?" in r["body"] for r in questions) > 0.9 * len(questions)


@pytest.mark.slow
def test_full_demo_is_fast_and_sized(tmp_path: Path) -> None:
    import time

    # CPU time, not wall time: the budget is the generator's, not a busy CI machine's.
    began = time.process_time()
    truth = generate(tmp_path, seed=11)
    took = time.process_time() - began
    assert took < 10
    assert 150 <= truth.tickets / truth.days <= 250


@pytest.mark.slow
def test_planted_events_raise_their_topic_by_the_planted_factor(
    full: tuple[DemoTruth, list[dict[str, str]]],
) -> None:
    truth, rows = full
    for event in truth.events:
        counts = complaints_per_day(rows, event.topic)
        before = mean(counts, event.onset - timedelta(days=28), 28)
        during = mean(counts, event.onset, event.peak_days)
        ratio = during / before
        if event.spike_expected:
            assert 0.7 * event.peak_factor <= ratio <= 1.4 * event.peak_factor, (event, ratio)
        else:
            assert ratio < 1.6, (event, ratio)


@pytest.mark.slow
def test_reverts_bring_complaints_back(full: tuple[DemoTruth, list[dict[str, str]]]) -> None:
    truth, rows = full
    for event in truth.events:
        if event.reverted_by is None:
            continue
        counts = complaints_per_day(rows, event.topic)
        before = mean(counts, event.onset - timedelta(days=28), 28)
        revert_day = {"profiles-kept": date(2025, 4, 14), "dvd-split-reversed": date(2026, 7, 6)}
        back = mean(counts, revert_day[event.reverted_by] + timedelta(days=5), 14)
        assert back < 1.3 * before, (event, back, before)


@pytest.mark.slow
def test_price_rise_has_a_second_bump_and_cancel_intent(
    full: tuple[DemoTruth, list[dict[str, str]]],
) -> None:
    _, rows = full
    counts = complaints_per_day(rows, "pricing")
    effective = date(2026, 4, 10)
    assert mean(counts, effective, 2) > 1.8 * mean(counts, effective - timedelta(days=7), 5)
    pricing = [r for r in rows if {"billing", "complaint"} <= set(r["tags"].split())]
    in_backlash = [r for r in pricing if "2026-03-10" <= r["created_at"][:10] <= "2026-03-20"]
    quiet = [r for r in pricing if "2025-09-01" <= r["created_at"][:10] <= "2025-10-31"]
    share = sum("cancel" in r["tags"].split() for r in in_backlash) / len(in_backlash)
    quiet_share = sum("cancel" in r["tags"].split() for r in quiet) / len(quiet)
    assert share > 0.3 > 0.1 > quiet_share


# --------------------------------------------------------------------------- the mailbox


def test_mailbox_does_not_change_the_tickets_and_is_deterministic(
    tmp_path: Path, small: DemoTruth
) -> None:
    assert small.mailbox is not None
    without = generate(tmp_path / "without", seed=3, volume=0.1, mailbox=False)
    assert without.mailbox is None
    assert not (tmp_path / "without" / "support.mbox").exists()
    assert without.tickets_path.read_bytes() == small.tickets_path.read_bytes()
    again = generate(tmp_path / "again", seed=3, volume=0.1)
    assert again.mailbox is not None
    assert again.mailbox.path.read_bytes() == small.mailbox.path.read_bytes()
    other = generate(tmp_path / "other", seed=4, volume=0.1)
    assert other.mailbox is not None
    assert other.mailbox.path.read_bytes() != small.mailbox.path.read_bytes()


def parsed_mailbox(truth: DemoTruth) -> list[ParsedMessage]:
    assert truth.mailbox is not None
    pages = MailboxSource("demo", path=truth.mailbox.path, batch_size=10_000).pages({})
    return [parse_message(raw) for page in pages for raw in page.records]  # type: ignore[arg-type]


def test_mailbox_holds_the_conversations_its_truth_claims(small: DemoTruth) -> None:
    mailbox = small.mailbox
    assert mailbox is not None
    messages = parsed_mailbox(small)
    assert len(messages) == mailbox.messages == len(mailbox.thread_of)
    by_id = {m.message_id: m for m in messages}
    assert set(by_id) == set(mailbox.thread_of)
    dates = [m.date for m in messages]
    assert all(d is not None for d in dates)
    assert dates == sorted(dates)  # type: ignore[type-var]
    for conv in mailbox.conversations:
        first = by_id[conv.root_id]
        assert first.subject == conv.subject
        assert first.date == conv.created_at
        assert first.from_addr == conv.customer.lower()
        assert first.in_reply_to is None
        assert not first.references
        for mid in conv.message_ids[1:]:
            reply = by_id[mid]
            assert reply.date is not None
            assert reply.date > first.date
            if mid not in conv.headerless and not reply.is_auto:
                assert reply.in_reply_to in conv.message_ids
            if mid in conv.headerless:
                assert reply.in_reply_to is None
                assert not reply.references
    assert sum(len(c.headerless) for c in mailbox.conversations) == mailbox.dropped_all_headers
    # Share of the ticket volume, as planned.
    assert 0.08 < len(mailbox.conversations) / small.tickets < 0.16


def test_mailbox_is_as_messy_as_real_support_mail(small: DemoTruth) -> None:
    mailbox = small.mailbox
    assert mailbox is not None
    raw = mailbox.path.read_bytes().decode("utf-8")
    messages = parsed_mailbox(small)
    for marker in (
        "Content-Transfer-Encoding: quoted-printable",
        "Content-Transfer-Encoding: base64",
        "Content-Type: multipart/alternative",
        "Content-Type: multipart/report",
        "=?utf-8?",  # RFC 2047 display names
        "Subject: AW: ",
        "Subject: RE: ",
        "-----Original Message-----",
        "wrote:\n> ",
        "Auto-Submitted: auto-replied",
    ):
        assert marker in raw, marker
    html_only = [m for m in raw.split("\nFrom MAILER-DAEMON ") if "Content-Type: text/html" in m]
    assert any("multipart/alternative" not in m for m in html_only)
    assert any(m.from_name and not m.from_name.isascii() for m in messages)
    auto = [m for m in messages if m.is_auto]
    assert len(auto) == mailbox.auto_messages
    assert sum(c.is_auto for c in mailbox.conversations) >= 2
    assert mailbox.dropped_references > 0
    assert any(re.search(r"\d{3}[-. )]+\d{3}[-. ]\d{4}", m.body) for m in messages)
    # Every message's own words were found (quotes cut), none is empty.
    assert all(m.body.strip() for m in messages)
    assert not any(line.startswith(">") for m in messages for line in m.body.splitlines())
    assert not any("wrote:" in m.body for m in messages)


def test_mailbox_texts_follow_the_story(small: DemoTruth) -> None:
    mailbox = small.mailbox
    assert mailbox is not None
    by_pool: dict[str | None, int] = Counter(c.pool for c in mailbox.conversations)
    for pool in ("price-rise", "dvd-split", "profiles-removal"):
        assert by_pool[pool] > 0, pool
    rise = small.event("price-rise").onset
    for conv in mailbox.conversations:
        if conv.pool == "price-rise":
            assert conv.created_at.date() >= rise
            assert conv.topic == "pricing"
            assert conv.kind == "complaint"


@pytest.mark.slow
def test_backlashes_are_visible_in_the_mailbox(
    full: tuple[DemoTruth, list[dict[str, str]]],
) -> None:
    truth, _ = full
    mailbox = truth.mailbox
    assert mailbox is not None
    for event in truth.events:
        daily = mailbox.complaints_per_day[event.topic]
        onset = (event.onset - truth.start).days
        before = sum(daily[onset - 28 : onset]) / 28
        during = sum(daily[onset : onset + event.peak_days]) / event.peak_days
        if event.spike_expected:
            assert during > 0.5 * event.peak_factor * before, (event, during, before)
        else:
            assert during < 2.5 * max(before, 0.5), (event, during, before)
