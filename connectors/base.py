"""The one shape every inbound connector yields.

A connector is a generator of pages. Each page carries the raw records exactly
as the source sent them and the cursor that comes *after* them, so the
warehouse can commit both in one transaction: a crash between pages loses
nothing and duplicates nothing.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

JSONValue = Any
Cursor = dict[str, JSONValue]


@dataclass(frozen=True, slots=True)
class Page:
    """One fetch from a source.

    ``records`` are JSON-able dicts (helpdesks, file exports) or raw ``bytes``
    (RFC 822 messages). ``record_ids`` holds the source's own id of each
    record, in the same order. ``cursor`` is what the next run resumes from;
    it must be JSON-serialisable and must never point past a record that is
    not in this page or an earlier one.
    """

    stream: str
    records: list[dict[str, JSONValue]] | list[bytes]
    record_ids: list[str]
    cursor: Cursor
    # Records the connector itself could not read (a malformed CSV row, an
    # unparsable JSON line): (record_id, reason, raw text). They go to
    # meta.quarantine with the page, and the run goes on.
    rejects: list[tuple[str, str, str]] = field(default_factory=list)
    # How many records this pass will yield in all, when the source can tell
    # (a file export can; most APIs cannot): only for the progress bar's ETA.
    expected_total: int | None = None

    def __post_init__(self) -> None:
        if len(self.records) != len(self.record_ids):
            raise ValueError(
                f"page of stream {self.stream!r}: {len(self.records)} records "
                f"but {len(self.record_ids)} record ids"
            )


class Source(Protocol):
    """What the ingest flow needs of a connector."""

    name: str

    def pages(self, state: Mapping[str, Cursor]) -> Iterator[Page]:
        """Yield pages from the cursors in ``state`` (stream -> cursor)."""
        ...


class ConnectorError(RuntimeError):
    """A source cannot be read; the message names the source and what to check."""


class PermanentError(ConnectorError):
    """Retrying cannot help (a missing file, rejected credentials): fail the run at once."""


def field_definitions_page(fields: Iterable[dict[str, JSONValue]]) -> Page:
    """A helpdesk's ticket-field dictionary as a ``ticket_fields`` page.

    Its cursor resumes nothing: the dictionary is small and read whole each run.
    """
    kept = [f for f in fields if f.get("id") is not None]
    return Page("ticket_fields", kept, [str(f["id"]) for f in kept], {"fields": len(kept)})


def is_loopback(host: str) -> bool:
    """Whether ``host`` is this machine: the only place plain-text mail protocols are allowed."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
