"""Great Expectations on each normalised batch; failing rows to quarantine.

Every row of every batch is checked against every expectation of the suite,
as vectorised Polars expressions (one pass, ~10 ms per 50k rows). Great
Expectations then runs the same suite, through its pandas source, on a sample:
all the rows the Polars checks failed plus up to ``sample_rows`` random others.
GE's verdicts are merged in (a row GE fails is quarantined even if the Polars
check missed it, and the disagreement is logged), so the suite stays the
reference and the hand-written checks cannot drift from it unnoticed.

Why not GE on every row: GE's per-call cost is ~0.5 s of graph building
whatever the batch size, plus pandas conversion; at 1M tickets it was the
largest single cost of an ingest (benchmarks/results/ingest.md). A batch of at
most ``sample_rows`` rows (every scheduled run of a few hundred tickets, every
test) is still validated by GE row for row.

Great Expectations 1.x has no Polars data source (PITFALLS.md). It takes ~5 s
to import, so it is imported here, lazily, and one ephemeral context with one
suite serves the whole process; the run's clock reaches the "not in the
future" expectation as a suite parameter.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

import polars as pl

from transforms.schema import CHANNELS

# One reason per expectation, in words an operator reads in meta.quarantine.
REASONS: dict[str, str] = {
    "expect_column_values_to_not_be_null:ticket_key": "ticket key is missing",
    "expect_column_values_to_be_unique:ticket_key": "ticket key repeated in the batch",
    "expect_column_values_to_not_be_null:created_at": "created_at is missing",
    "expect_column_values_to_be_between:created_at": "created_at is in the future",
    "expect_column_values_to_be_in_set:channel": "channel is not one of " + ", ".join(CHANNELS),
    "expect_column_values_to_be_between:text_chars": "no text: subject and body are empty",
}


# Above this many rows, Great Expectations sees the failing rows and a sample.
SAMPLE_ROWS = 2_000

log = logging.getLogger("backlash")


@dataclass(frozen=True, slots=True)
class Validation:
    valid: pl.DataFrame
    rejects: list[tuple[str, str, str]]  # (source_id, reason, payload)
    checked: int
    # Rows Great Expectations itself validated (all of them in small batches).
    sampled: int = 0


@cache
def _suite_runner() -> tuple[Any, Any]:
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    source = context.data_sources.add_pandas("backlash_batches")
    asset = source.add_dataframe_asset(name="tickets")
    batch_definition = asset.add_batch_definition_whole_dataframe("batch")
    suite = context.suites.add(gx.ExpectationSuite(name="core_tickets"))
    ex = gx.expectations
    suite.add_expectation(ex.ExpectColumnValuesToNotBeNull(column="ticket_key"))
    suite.add_expectation(ex.ExpectColumnValuesToBeUnique(column="ticket_key"))
    suite.add_expectation(ex.ExpectColumnValuesToNotBeNull(column="created_at"))
    suite.add_expectation(
        ex.ExpectColumnValuesToBeInSet(column="channel", value_set=list(CHANNELS))
    )
    suite.add_expectation(ex.ExpectColumnValuesToBeBetween(column="text_chars", min_value=1))
    # "Not in the future" depends on the run's clock: a suite parameter.
    suite.add_expectation(
        ex.ExpectColumnValuesToBeBetween(column="created_at", max_value={"$PARAMETER": "now"})
    )
    return batch_definition, suite


def _polars_checks(now: datetime) -> dict[str, pl.Expr]:
    """The suite's expectations as expressions: True where a row fails one.

    Null semantics follow GE's: the set, range and uniqueness expectations
    ignore nulls (the not-null expectations catch those).
    """
    key, created = pl.col("ticket_key"), pl.col("created_at")
    return {
        "expect_column_values_to_not_be_null:ticket_key": key.is_null(),
        "expect_column_values_to_be_unique:ticket_key": key.is_not_null() & key.is_duplicated(),
        "expect_column_values_to_not_be_null:created_at": created.is_null(),
        "expect_column_values_to_be_in_set:channel": pl.col("channel").is_not_null()
        & ~pl.col("channel").is_in(list(CHANNELS)),
        "expect_column_values_to_be_between:text_chars": pl.col("text_chars") < 1,
        "expect_column_values_to_be_between:created_at": created.is_not_null()
        & (created > pl.lit(now).cast(pl.Datetime("us", "UTC"))),
    }


def _ge_failures(frame: pl.DataFrame, now: datetime) -> dict[int, list[str]]:
    """Run the GE suite on ``frame``; failing positions (in ``frame``) to their keys."""
    batch_definition, suite = _suite_runner()
    pandas_frame = frame.select("ticket_key", "created_at", "channel", "text_chars").to_pandas(
        use_pyarrow_extension_array=False
    )
    batch = batch_definition.get_batch(batch_parameters={"dataframe": pandas_frame})
    result = batch.validate(
        suite,
        result_format={"result_format": "COMPLETE"},
        expectation_parameters={"now": now},
    )
    failures: dict[int, list[str]] = {}
    for item in result.results:
        config = item.expectation_config
        key = f"{config.type}:{config.kwargs.get('column')}"
        exception = getattr(item, "exception_info", None) or {}
        if exception.get("raised_exception"):
            raise RuntimeError(f"validation {key} could not run: {exception}")
        if item.success:
            continue
        for position in item.result.get("unexpected_index_list") or []:
            failures.setdefault(int(position), []).append(key)
    return failures


def validate_tickets(
    tickets: pl.DataFrame,
    *,
    now: datetime,
    sample_rows: int = SAMPLE_ROWS,
    seed: int | None = None,
) -> Validation:
    """Split a normalised batch into rows that load and rows that are quarantined.

    The batch must already be de-duplicated (latest version per key), so the
    uniqueness expectation catches normaliser bugs, not ordinary updates.
    """
    if tickets.is_empty():
        return Validation(tickets, [], 0)
    checks = _polars_checks(now)
    flagged = tickets.with_columns(
        (
            pl.col("subject").fill_null("").str.strip_chars().str.len_chars()
            + pl.col("body").fill_null("").str.strip_chars().str.len_chars()
        ).alias("text_chars")
    ).with_row_index("__pos")
    flagged = flagged.with_columns(
        pl.concat_list([pl.when(failed).then(pl.lit(key)) for key, failed in checks.items()])
        .list.drop_nulls()
        .alias("__failed")
    )
    failing = flagged.filter(pl.col("__failed").list.len() > 0)
    if tickets.height <= sample_rows + failing.height:
        sample = flagged
    else:
        passing = flagged.filter(pl.col("__failed").list.len() == 0)
        sample = pl.concat([failing, passing.sample(sample_rows, seed=seed)])
    reasons: dict[int, list[str]] = {
        pos: list(keys) for pos, keys in failing.select("__pos", "__failed").iter_rows()
    }
    positions = sample["__pos"].to_list()
    for at, keys in _ge_failures(sample, now).items():
        pos = positions[at]
        missed = [k for k in keys if k not in reasons.get(pos, [])]
        if missed:
            log.warning(
                "validation: GE failed row %d on %s, the Polars checks did not", pos, missed
            )
            reasons.setdefault(pos, []).extend(missed)
    if not reasons:
        return Validation(tickets, [], tickets.height, sample.height)
    bad_positions = sorted(reasons)
    mask = pl.Series("bad", [False] * tickets.height)
    mask[bad_positions] = True
    bad_rows = tickets.filter(mask)
    rejects = [
        (
            str(row["source_id"] or row["ticket_key"] or "(no id)"),
            "; ".join(REASONS.get(k, k) for k in reasons[pos]),
            pl.DataFrame([row]).write_json(),
        )
        for pos, row in zip(bad_positions, bad_rows.to_dicts(), strict=True)
    ]
    return Validation(tickets.filter(~mask), rejects, tickets.height, sample.height)
