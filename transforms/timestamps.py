"""ISO 8601 text to UTC timestamps, vectorised, for every normaliser.

Exports mix ``Z``, offsets, a space instead of ``T``, fractions and bare
dates; Polars infers one format from the first value and nulls the rest. So
each string is first brought to one canonical shape (naive and date-only values
are taken as UTC), then parsed with one explicit format. Unparsable text
becomes null, which the normaliser turns into a quarantine reason.
"""

from __future__ import annotations

import polars as pl

_CANONICAL = "%Y-%m-%dT%H:%M:%S%.f%z"


def parse_utc(text: pl.Expr) -> pl.Expr:
    s = text.cast(pl.String).str.strip_chars()
    s = s.str.replace(r"^(\d{4}-\d{2}-\d{2})$", "${1}T00:00:00")
    s = s.str.replace(r"^(\d{4}-\d{2}-\d{2}) ", "${1}T")
    s = s.str.replace(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2})$", "${1}:00")
    s = s.str.replace(r"[Zz]$", "+00:00")
    # No offset at all: UTC by convention (DESIGN.md: all timestamps are UTC).
    s = pl.when(s.str.contains(r"[+-]\d{2}:?\d{2}$")).then(s).otherwise(s + "+00:00")
    return s.str.to_datetime(_CANONICAL, strict=False, time_zone="UTC", time_unit="us")
