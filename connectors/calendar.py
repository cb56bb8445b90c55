"""The product-change calendar: the list of changes a spike may be blamed on.

The calendar is kept by people (product managers, a spreadsheet export), so it
is read leniently where intent is clear (a bare date is midnight UTC, a naive
datetime is UTC, ``areas`` may be a list or ``a;b`` text) and strictly where a
mistake would silently corrupt attribution (an unparsable date, a duplicate id,
a ``reverts`` that points nowhere): those stop the load with an error naming the
file, the entry's position and its id, so the person who edited it can fix it.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any

import yaml

from connectors.base import ConnectorError

FIELDS = (
    "id",
    "title",
    "kind",
    "announced_at",
    "effective_at",
    "description",
    "areas",
    "keywords",
    "reverts",
)
YAML_SUFFIXES = (".yaml", ".yml")
CSV_SUFFIXES = (".csv",)


class _Loader(yaml.SafeLoader):
    """``yaml.safe_load`` without implicit timestamps.

    PyYAML turns ``2026-13-45`` into an exception from inside the parser, with
    no entry to blame; dates stay text here and are parsed (and reported) per entry.
    """


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


class CalendarError(ConnectorError):
    """The change calendar cannot be used as written; the message says where."""


def read_changes(path: Path) -> list[dict[str, Any]]:
    """Read a YAML or CSV change calendar into plain dicts (``core.product_changes`` columns).

    Every entry is checked before any is returned: attribution over a half-read
    calendar would blame the wrong change without anyone noticing.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in YAML_SUFFIXES:
        entries = _yaml_entries(path)
    elif suffix in CSV_SUFFIXES:
        entries = _csv_entries(path)
    else:
        raise CalendarError(
            f"change calendar {path}: unknown extension {path.suffix!r}; use .yaml, .yml or .csv"
        )
    changes = [_change(path, index, entry) for index, entry in enumerate(entries)]
    _check_ids(path, changes)
    return changes


def _open_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise CalendarError(f"change calendar {path}: cannot read it: {exc}") from exc


def _yaml_entries(path: Path) -> list[Mapping[str, Any]]:
    try:
        loaded = yaml.load(_open_text(path), Loader=_Loader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as exc:
        raise CalendarError(f"change calendar {path}: not valid YAML: {exc}") from exc
    if loaded is None:
        return []
    if isinstance(loaded, Mapping):
        if "changes" not in loaded:
            raise CalendarError(
                f"change calendar {path}: a mapping at the top needs a 'changes:' list"
            )
        loaded = loaded["changes"] or []
    if not isinstance(loaded, list):
        raise CalendarError(f"change calendar {path}: expected a list of changes")
    for index, entry in enumerate(loaded):
        if not isinstance(entry, Mapping):
            raise CalendarError(
                f"change calendar {path}: entry #{index} is not a mapping of fields"
            )
    return loaded


def _csv_entries(path: Path) -> list[Mapping[str, Any]]:
    reader = csv.DictReader(_open_text(path).splitlines())
    if reader.fieldnames is None:
        return []
    header = [name.strip() for name in reader.fieldnames]
    reader.fieldnames = header
    return [row for row in reader if any((value or "").strip() for value in row.values())]


def _where(path: Path, index: int, change_id: str | None) -> str:
    named = f" (id {change_id!r})" if change_id else ""
    return f"change calendar {path}: entry #{index}{named}"


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _list(value: Any) -> list[str]:
    """YAML gives lists; CSV cells (and hurried YAML) give ``a;b`` text."""
    if value is None:
        return []
    items = value if isinstance(value, list | tuple) else str(value).split(";")
    return [text for text in (_text(item) for item in items) if text]


def _timestamp(value: Any) -> datetime | None:
    """A date, datetime or ISO 8601 text as an aware UTC datetime (naive means UTC)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        moment = datetime.combine(value, time())
    elif isinstance(value, str):
        text = value.strip()
        if text[-1:] in ("Z", "z"):
            text = text[:-1] + "+00:00"
        moment = datetime.fromisoformat(text)  # ValueError: reported by the caller
    else:
        raise ValueError(f"not a date: {value!r}")
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _change(path: Path, index: int, entry: Mapping[str, Any]) -> dict[str, Any]:
    change_id = _text(entry.get("id"))
    where = _where(path, index, change_id)
    if change_id is None:
        raise CalendarError(f"{where}: missing 'id'")
    title = _text(entry.get("title"))
    if title is None:
        raise CalendarError(f"{where}: missing 'title'")
    moments: dict[str, datetime | None] = {}
    for name in ("announced_at", "effective_at"):
        try:
            moments[name] = _timestamp(entry.get(name))
        except ValueError:
            raise CalendarError(
                f"{where}: {name} {entry.get(name)!r} is not an ISO 8601 date or datetime"
            ) from None
    # One date is enough: a change is announced the day it takes effect unless told otherwise.
    announced = moments["announced_at"] or moments["effective_at"]
    effective = moments["effective_at"] or moments["announced_at"]
    return {
        "change_id": change_id,
        "title": title,
        "kind": _text(entry.get("kind")),
        "description": _text(entry.get("description")),
        "announced_at": announced,
        "effective_at": effective,
        "areas": _list(entry.get("areas")),
        "keywords": _list(entry.get("keywords")),
        "reverts": _text(entry.get("reverts")),
    }


def _check_ids(path: Path, changes: list[dict[str, Any]]) -> None:
    first_at: dict[str, int] = {}
    for index, change in enumerate(changes):
        change_id = change["change_id"]
        if change_id in first_at:
            raise CalendarError(
                f"{_where(path, index, change_id)}: duplicate id, "
                f"already used by entry #{first_at[change_id]}"
            )
        first_at[change_id] = index
    for index, change in enumerate(changes):
        target = change["reverts"]
        if target is not None and target not in first_at:
            raise CalendarError(
                f"{_where(path, index, change['change_id'])}: reverts {target!r}, "
                "which is not in the calendar"
            )
