"""Mail exported to disk: an mbox file, or a folder of .eml and mbox files.

Support teams hand over mailboxes as Google Takeout / Thunderbird mbox files or
as folders of .eml files dropped by a mail rule. This reads them without
loading a whole mailbox into memory (mbox files are streamed line by line),
and resumes where the last run stopped:

- an mbox file is a stream named by its path relative to ``path``; its cursor is
  the byte offset after the last complete message, the count so far and a hash
  of the file's first bytes, so a rotated or rewritten file is read again from
  the start rather than from a meaningless offset;
- the .eml files under a folder are one stream, ``"eml"``; its cursor is a
  watermark (mtime in ns, relative name): files are taken in that order, so
  mail rules must write a file then rename it into place (the Maildir way).

Record ids are the Message-ID (without brackets) or ``sha256:<hex>`` of the
bytes: the same message exported twice has the same id.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import BinaryIO

from connectors.base import ConnectorError, Cursor, Page, PermanentError

__all__ = ["TRUNCATION_HEADER", "MailboxSource", "message_record_id", "truncate_message"]

# Same name as transforms.mime.TRUNCATION_HEADER (connectors do not import transforms).
TRUNCATION_HEADER = "X-Backlash-Truncated"
EML_STREAM = "eml"
_HEAD_BYTES = 4096
_MSGID_RE = re.compile(rb"^message-id:[ \t]*(?:\r?\n[ \t]+)?<([^<>\s]+)>", re.IGNORECASE | re.M)
_MBOXRD_RE = re.compile(rb"^>(>*From )")


def message_record_id(raw: bytes) -> str:
    """Message-ID from the header block, else a hash of the bytes."""
    end = raw.find(b"\n\n")
    end2 = raw.find(b"\r\n\r\n")
    cut = min((e for e in (end, end2) if e >= 0), default=min(len(raw), 64_000))
    match = _MSGID_RE.search(raw[: cut + 1])
    if match:
        return match.group(1).decode("ascii", "replace")
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def truncate_message(raw: bytes, max_bytes: int) -> bytes:
    """Keep the first ``max_bytes`` and say so in a prepended header.

    Attachments beyond the cap are known only by their MIME headers (name,
    type); the parser reads the header and reports the body as truncated.
    """
    if len(raw) <= max_bytes:
        return raw
    note = f"{TRUNCATION_HEADER}: original-size={len(raw)}; kept={max_bytes}\r\n"
    return note.encode("ascii") + raw[:max_bytes]


def _head_hash(fh: BinaryIO, length: int) -> str:
    fh.seek(0)
    return hashlib.sha256(fh.read(length)).hexdigest()


class MailboxSource:
    """Messages from an mbox file or a directory of .eml / mbox files."""

    def __init__(
        self,
        name: str,
        *,
        path: Path,
        batch_size: int = 200,
        max_message_bytes: int = 5_000_000,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.name = name
        self.path = Path(path)
        self.batch_size = batch_size
        self.max_message_bytes = max_message_bytes

    # ------------------------------------------------------------------ discovery

    def _mbox_files(self) -> list[tuple[str, Path]]:
        if self.path.is_file():
            return [] if self.path.suffix.lower() == ".eml" else [(self.path.name, self.path)]
        found = []
        for file in sorted(self.path.rglob("*")):
            if not file.is_file() or file.suffix.lower() == ".eml":
                continue
            if file.suffix.lower() == ".mbox" or _looks_like_mbox(file):
                found.append((file.relative_to(self.path).as_posix(), file))
        return found

    def pages(self, state: Mapping[str, Cursor]) -> Iterator[Page]:
        """Yield pages per stream: every mbox file, then the .eml files."""
        if not self.path.exists():
            raise PermanentError(f"mailbox source {self.name!r}: {self.path} does not exist")
        for stream, file in self._mbox_files():
            yield from self._mbox_pages(stream, file, state.get(stream) or {})
        if self.path.is_dir() or self.path.suffix.lower() == ".eml":
            yield from self._eml_pages(state.get(EML_STREAM) or {})

    # ------------------------------------------------------------------ mbox

    def _mbox_pages(self, stream: str, file: Path, cursor: Cursor) -> Iterator[Page]:
        try:
            fh = file.open("rb")
        except OSError as exc:
            raise ConnectorError(
                f"mailbox source {self.name!r}: cannot read {file}: {exc}"
            ) from exc
        with fh:
            size = file.stat().st_size
            offset = int(cursor.get("offset", 0))
            count = int(cursor.get("count", 0))
            head_len = int(cursor.get("head_len", 0))
            if offset and (size < offset or _head_hash(fh, head_len) != cursor.get("head_sha256")):
                offset, count = 0, 0  # replaced or truncated: read it all again
            head_len = min(size, _HEAD_BYTES)
            head = _head_hash(fh, head_len)
            fh.seek(offset)

            records: list[bytes] = []
            ids: list[str] = []
            seen: dict[str, int] = {}
            for end, raw in _iter_mbox(fh, offset, complete_tail=_ends_with_newline(fh, size)):
                raw = truncate_message(raw, self.max_message_bytes)
                _add(records, ids, seen, raw)
                count += 1
                offset = end
                if len(records) >= self.batch_size:
                    yield Page(stream, records, ids, _mbox_cursor(offset, count, head, head_len))
                    records, ids, seen = [], [], {}
            if records:
                yield Page(stream, records, ids, _mbox_cursor(offset, count, head, head_len))

    # ------------------------------------------------------------------ eml

    def _eml_pages(self, cursor: Cursor) -> Iterator[Page]:
        mark = (int(cursor.get("mtime_ns", -1)), str(cursor.get("name", "")))
        files = []
        base = self.path.parent if self.path.is_file() else self.path
        candidates = [self.path] if self.path.is_file() else self.path.rglob("*")
        for file in candidates:
            if file.suffix.lower() != ".eml" or not file.is_file():
                continue
            try:
                stamp = (file.stat().st_mtime_ns, file.relative_to(base).as_posix())
            except OSError:
                continue  # removed while listing
            if stamp > mark:
                files.append((stamp, file))
        files.sort()
        records: list[bytes] = []
        ids: list[str] = []
        seen: dict[str, int] = {}
        rejects: list[tuple[str, str, str]] = []
        last = mark
        for stamp, file in files:
            try:
                raw = file.read_bytes()
            except OSError as exc:
                rejects.append((f"file:{stamp[1]}", f"unreadable .eml file: {exc}", ""))
            else:
                raw = truncate_message(raw, self.max_message_bytes)
                _add(records, ids, seen, raw)
            last = stamp
            if len(records) + len(rejects) >= self.batch_size:
                yield Page(EML_STREAM, records, ids, _eml_cursor(last), rejects, len(files))
                records, ids, rejects, seen = [], [], [], {}
        if records or rejects:
            yield Page(EML_STREAM, records, ids, _eml_cursor(last), rejects, len(files))


def _add(records: list[bytes], ids: list[str], seen: dict[str, int], raw: bytes) -> None:
    """Append a message unless the page holds the same bytes already.

    Exports repeat messages (one copy per label or folder), and some clients
    reuse a Message-ID for different mail; record ids must stay unique within
    a page (``raw.*`` is keyed by them), so a reused id gets a content suffix.
    """
    record_id = message_record_id(raw)
    if record_id in seen:  # a dict, not ``ids``: a list lookup made large pages quadratic
        if raw == records[seen[record_id]]:
            return
        record_id = f"{record_id}#sha256:{hashlib.sha256(raw).hexdigest()[:16]}"
        if record_id in seen:
            return
    seen[record_id] = len(records)
    records.append(raw)
    ids.append(record_id)


def _mbox_cursor(offset: int, count: int, head: str, head_len: int) -> Cursor:
    return {"offset": offset, "count": count, "head_sha256": head, "head_len": head_len}


def _eml_cursor(stamp: tuple[int, str]) -> Cursor:
    return {"mtime_ns": stamp[0], "name": stamp[1]}


def _looks_like_mbox(file: Path) -> bool:
    try:
        with file.open("rb") as fh:
            return fh.read(5) == b"From "
    except OSError:
        return False


def _ends_with_newline(fh: BinaryIO, size: int) -> bool:
    if size == 0:
        return True
    pos = fh.tell()
    fh.seek(size - 1)
    last = fh.read(1)
    fh.seek(pos)
    return last == b"\n"


def _iter_mbox(fh: BinaryIO, offset: int, *, complete_tail: bool) -> Iterator[tuple[int, bytes]]:
    """(end offset, message bytes) for each message from ``offset``.

    A message starts at a ``From `` line at the start or after a blank line
    (mboxrd ``>From `` escapes are undone). The last message is held back when
    the file does not end with a newline: a writer is probably still appending.
    """
    lines: list[bytes] = []
    start_seen = False
    pos = offset
    prev_blank = True
    for line in iter(fh.readline, b""):
        line_start = pos
        pos += len(line)
        if line.startswith(b"From ") and prev_blank:
            if start_seen:
                yield line_start, _finish(lines)
            lines = []
            start_seen = True
            prev_blank = False
            continue
        prev_blank = line in (b"\n", b"\r\n")
        if start_seen:
            lines.append(_MBOXRD_RE.sub(rb"\1", line))
    if start_seen and lines and complete_tail:
        yield pos, _finish(lines)


def _finish(lines: list[bytes]) -> bytes:
    # The blank line before the next "From " belongs to the mbox, not the message.
    if lines and lines[-1] in (b"\n", b"\r\n"):
        lines = lines[:-1]
    return b"".join(lines)
