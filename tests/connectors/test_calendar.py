from __future__ import annotations

import csv
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from connectors.base import ConnectorError
from connectors.calendar import CalendarError, read_changes


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


YAML_OK = """\
changes:
  - id: price-rise
    title: Plan price rise
    kind: price
    announced_at: 2026-03-10
    effective_at: "2026-04-10T09:30:00+02:00"
    description: From $9.99 to $15.98
    areas: [pricing]
    keywords: [price, bill]
  - id: price-kept
    title: Old price kept
    announced_at: "2026-03-20 12:00"
    areas: "pricing; plans"
    reverts: price-rise
"""


def test_yaml_dates_lists_and_defaults(tmp_path: Path) -> None:
    rise, kept = read_changes(write(tmp_path / "c.yaml", YAML_OK))
    assert rise["change_id"] == "price-rise"
    assert rise["announced_at"] == datetime(2026, 3, 10, tzinfo=UTC)
    # An offset is converted, not dropped.
    assert rise["effective_at"] == datetime(2026, 4, 10, 7, 30, tzinfo=UTC)
    assert rise["effective_at"].utcoffset() == timedelta(0)
    assert rise["areas"] == ["pricing"]
    assert rise["keywords"] == ["price", "bill"]
    assert rise["reverts"] is None
    # Naive datetimes are UTC; one date stands for both; "a; b" text is a list.
    assert kept["announced_at"] == datetime(2026, 3, 20, 12, tzinfo=UTC)
    assert kept["effective_at"] == kept["announced_at"]
    assert kept["areas"] == ["pricing", "plans"]
    assert kept["keywords"] == []
    assert kept["kind"] is None
    assert kept["reverts"] == "price-rise"
    assert set(rise) == {
        "change_id",
        "title",
        "kind",
        "description",
        "announced_at",
        "effective_at",
        "areas",
        "keywords",
        "reverts",
    }


def test_yaml_top_level_list_equals_changes_mapping(tmp_path: Path) -> None:
    as_list = textwrap.dedent(YAML_OK.replace("changes:\n", ""))
    assert as_list.startswith("- id: price-rise")
    assert read_changes(write(tmp_path / "l.yml", as_list)) == read_changes(
        write(tmp_path / "m.yaml", YAML_OK)
    )


def test_csv_matches_yaml(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
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
        writer.writerow(
            [
                "price-rise",
                "Plan price rise",
                "price",
                "2026-03-10",
                "2026-04-10T07:30:00Z",
                "From $9.99 to $15.98",
                "pricing",
                "price;bill",
                "",
            ]
        )
        writer.writerow(
            [
                "price-kept",
                "Old price kept",
                "",
                "2026-03-20T12:00:00",
                "",
                "",
                "pricing; plans",
                "",
                "price-rise",
            ]
        )
    assert read_changes(path) == read_changes(write(tmp_path / "c.yaml", YAML_OK))


def test_empty_calendar_is_no_changes(tmp_path: Path) -> None:
    assert read_changes(write(tmp_path / "e.yaml", "")) == []
    assert read_changes(write(tmp_path / "e2.yaml", "changes:\n")) == []
    assert read_changes(write(tmp_path / "e.csv", "id,title\n")) == []


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ("- title: no id\n", ["entry #0", "missing 'id'"]),
        ("- id: a\n  title: A\n- id: b\n", ["entry #1", "'b'", "missing 'title'"]),
        (
            "- id: a\n  title: A\n- id: a\n  title: again\n",
            ["entry #1", "'a'", "duplicate", "#0"],
        ),
        (
            "- id: a\n  title: A\n  announced_at: next tuesday\n",
            ["entry #0", "'a'", "announced_at", "next tuesday"],
        ),
        (
            "- id: a\n  title: A\n  effective_at: 2026-13-45\n",
            ["entry #0", "effective_at", "2026-13-45"],
        ),
        (
            "- id: a\n  title: A\n- id: b\n  title: B\n  reverts: zzz\n",
            ["entry #1", "'b'", "zzz"],
        ),
        ("just: a mapping\n", ["changes:"]),
    ],
)
def test_errors_name_file_entry_and_id(tmp_path: Path, text: str, needles: list[str]) -> None:
    path = write(tmp_path / "bad.yaml", text)
    with pytest.raises(CalendarError) as info:
        read_changes(path)
    message = str(info.value)
    assert str(path) in message
    for needle in needles:
        assert needle in message


def test_csv_errors_too(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.csv", "id,title,announced_at\nx,X,2026-01-01\nx,Y,2026-01-02\n")
    with pytest.raises(CalendarError, match=r"entry #1 \(id 'x'\): duplicate"):
        read_changes(path)


def test_unknown_extension_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CalendarError, match=r"unknown extension '\.txt'"):
        read_changes(write(tmp_path / "c.txt", YAML_OK))
    with pytest.raises(ConnectorError, match="cannot read"):
        read_changes(tmp_path / "absent.yaml")


def test_yaml_is_read_safely(tmp_path: Path) -> None:
    text = "- id: !!python/object/apply:os.system ['echo pwned']\n  title: x\n"
    with pytest.raises(CalendarError, match="not valid YAML"):
        read_changes(write(tmp_path / "evil.yaml", text))


def test_aware_yaml_timestamp_is_converted(tmp_path: Path) -> None:
    # PyYAML itself parses this into an aware datetime.
    text = "- id: a\n  title: A\n  announced_at: 2026-01-01T23:00:00-05:00\n"
    (change,) = read_changes(write(tmp_path / "tz.yaml", text))
    assert change["announced_at"] == datetime(2026, 1, 2, 4, tzinfo=UTC)
    assert change["announced_at"].utcoffset() == timedelta(0)
