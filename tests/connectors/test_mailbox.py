"""MailboxSource on real mbox files (written by stdlib ``mailbox``) and folders of .eml files."""

from __future__ import annotations

import hashlib
import json
import mailbox
import os
from email.message import EmailMessage
from pathlib import Path

import pytest

from connectors.base import Page, PermanentError
from connectors.mailbox import (
    EML_STREAM,
    TRUNCATION_HEADER,
    MailboxSource,
    message_record_id,
)
from transforms.mime import parse_message


def make(i: int, *, body: str = "", with_id: bool = True, size: int = 0) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = f"c{i}@example.com"
    msg["To"] = "support@acme.test"
    msg["Subject"] = f"Complaint {i}"
    if with_id:
        msg["Message-ID"] = f"<m{i}@example.com>"
    msg["Date"] = "Mon, 10 Feb 2025 09:00:00 +0000"
    msg.set_content(body or f"Complaint number {i}.\n")
    if size:
        msg.add_attachment(b"\0" * size, maintype="application", subtype="zip", filename="a.zip")
    return msg


def write_mbox(path: Path, messages: list[EmailMessage]) -> None:
    box = mailbox.mbox(path)
    box.lock()
    try:
        for msg in messages:
            box.add(msg)
        box.flush()
    finally:
        box.unlock()
        box.close()


def drain(source: MailboxSource, state: dict[str, dict]) -> list[Page]:
    """Run like the ingest flow: commit each page's cursor as it comes."""
    pages = []
    for page in source.pages(state):
        json.dumps(page.cursor)  # cursors must be JSON
        state[page.stream] = page.cursor
        pages.append(page)
    return pages


def ids(pages: list[Page]) -> list[str]:
    return [rid for page in pages for rid in page.record_ids]


def test_mbox_file_in_batches_then_only_new_mail(tmp_path: Path) -> None:
    box = tmp_path / "support.mbox"
    write_mbox(box, [make(i) for i in range(5)])
    source = MailboxSource("archive", path=box, batch_size=2)
    state: dict[str, dict] = {}
    pages = drain(source, state)
    assert [len(p.records) for p in pages] == [2, 2, 1]
    assert {p.stream for p in pages} == {"support.mbox"}
    assert ids(pages) == [f"m{i}@example.com" for i in range(5)]
    assert parse_message(pages[0].records[0]).subject == "Complaint 0"
    assert drain(source, state) == []  # nothing new: nothing yielded

    write_mbox(box, [make(5), make(6)])
    assert ids(drain(source, state)) == ["m5@example.com", "m6@example.com"]
    assert state["support.mbox"]["count"] == 7


def test_mbox_escaped_from_lines_are_restored_and_bodies_intact(tmp_path: Path) -> None:
    box = tmp_path / "support.mbox"
    body = "Hello,\n\nFrom now on I pay less elsewhere.\n>From the start this was bad.\n"
    write_mbox(box, [make(1, body=body), make(2)])
    pages = drain(MailboxSource("archive", path=box), {})
    assert ids(pages) == ["m1@example.com", "m2@example.com"]
    text = parse_message(pages[0].records[0]).text
    assert "From now on I pay less elsewhere." in text
    assert "From the start this was bad." in text


def test_rewritten_mbox_is_read_again_from_the_start(tmp_path: Path) -> None:
    box = tmp_path / "support.mbox"
    write_mbox(box, [make(i) for i in range(3)])
    source = MailboxSource("archive", path=box)
    state: dict[str, dict] = {}
    drain(source, state)
    box.unlink()
    write_mbox(box, [make(i) for i in range(10, 14)])  # rotated: different, and longer
    assert ids(drain(source, state)) == [f"m{i}@example.com" for i in range(10, 14)]


def test_half_written_last_message_waits_for_the_next_run(tmp_path: Path) -> None:
    box = tmp_path / "support.mbox"
    write_mbox(box, [make(1)])
    with box.open("ab") as fh:
        fh.write(
            b"From MAILER-DAEMON Mon Feb 10 09:00:00 2025\nFrom: x@example.com\n"
            b"Message-ID: <m2@example.com>\nSubject: half"
        )
    source = MailboxSource("archive", path=box)
    state: dict[str, dict] = {}
    assert ids(drain(source, state)) == ["m1@example.com"]
    with box.open("ab") as fh:
        fh.write(b"\n\nnow complete\n")
    assert ids(drain(source, state)) == ["m2@example.com"]


def test_record_id_is_message_id_or_content_hash(tmp_path: Path) -> None:
    box = tmp_path / "support.mbox"
    write_mbox(box, [make(1, with_id=False)])
    (page,) = drain(MailboxSource("archive", path=box), {})
    assert page.record_ids == ["sha256:" + hashlib.sha256(page.records[0]).hexdigest()]
    assert message_record_id(b"Message-ID:\n <folded@x>\n\nbody") == "folded@x"


def test_repeated_messages_keep_page_record_ids_unique(tmp_path: Path) -> None:
    box = tmp_path / "takeout.mbox"
    reused = make(1, body="A different message under the same id.\n")
    write_mbox(box, [make(1), make(1), reused, make(2)])
    (page,) = drain(MailboxSource("archive", path=box), {})
    assert len(page.record_ids) == len(set(page.record_ids)) == 3
    assert page.record_ids[0] == "m1@example.com"
    assert page.record_ids[1].startswith("m1@example.com#sha256:")


def test_folder_of_eml_and_mbox_files(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    for i in range(3):
        (tmp_path / f"{i}.eml").write_bytes(make(i).as_bytes())
    (tmp_path / "sub" / "late.eml").write_bytes(make(3).as_bytes())
    write_mbox(tmp_path / "sub" / "old.mbox", [make(10), make(11)])
    (tmp_path / "notes.txt").write_text("not mail")
    source = MailboxSource("drop", path=tmp_path, batch_size=2)
    state: dict[str, dict] = {}
    pages = drain(source, state)
    streams = {p.stream for p in pages}
    assert streams == {"sub/old.mbox", EML_STREAM}
    eml = [rid for p in pages if p.stream == EML_STREAM for rid in p.record_ids]
    assert sorted(eml) == [f"m{i}@example.com" for i in range(4)]
    assert sorted(ids(pages)) == sorted([*eml, "m10@example.com", "m11@example.com"])

    assert drain(source, state) == []
    newer = tmp_path / "4.eml"
    newer.write_bytes(make(4).as_bytes())
    stamp = max(f.stat().st_mtime_ns for f in tmp_path.rglob("*.eml")) + 1_000_000
    os.utime(newer, ns=(stamp, stamp))
    assert ids(drain(source, state)) == ["m4@example.com"]


def test_single_eml_file_and_oversized_message_is_cut_with_a_note(tmp_path: Path) -> None:
    file = tmp_path / "big.eml"
    file.write_bytes(make(1, size=300_000).as_bytes())
    (page,) = drain(MailboxSource("one", path=file, max_message_bytes=50_000), {})
    raw = page.records[0]
    assert raw.startswith(TRUNCATION_HEADER.encode())
    assert len(raw) < 50_200
    parsed = parse_message(raw)
    assert parsed.truncated
    assert parsed.body == "Complaint number 1."
    assert [a.filename for a in parsed.attachments] == ["a.zip"]


def test_missing_path_is_a_connector_error(tmp_path: Path) -> None:
    with pytest.raises(PermanentError, match="does not exist"):
        list(MailboxSource("gone", path=tmp_path / "nope").pages({}))
