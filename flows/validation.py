"""Great Expectations on each normalised batch; failing rows to quarantine.

Great Expectations 1.x has no Polars data source (a Polars frame fails with
BuildBatchRequestError, PITFALLS.md), so each batch goes through its pandas
source: ``to_pandas()`` over Arrow is ~0.08 s per 1M rows, cheaper than
staging the batch in DuckDB for GE's SQL source and keeping the warehouse
transaction open meanwhile. Great Expectations only reports; moving failing
rows aside is ours to do, by the positions it lists as unexpected.

GE takes ~5 s to import, so it is imported here, lazily, and one ephemeral
context with one suite serves the whole process.
"""

from __future__ import annotations

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


@dataclass(frozen=True, slots=True)
class Validation:
    valid: pl.DataFrame
    rejects: list[tuple[str, str, str]]  # (source_id, reason, payload)
    checked: int


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
    return batch_definition, suite


def validate_tickets(tickets: pl.DataFrame, *, now: datetime) -> Validation:
    """Split a normalised batch into rows that load and rows that are quarantined.

    The batch must already be de-duplicated (latest version per key), so the
    uniqueness expectation catches normaliser bugs, not ordinary updates.
    """
    if tickets.is_empty():
        return Validation(tickets, [], 0)
    import great_expectations as gx

    batch_definition, suite = _suite_runner()
    checked = tickets.with_columns(
        (
            pl.col("subject").fill_null("").str.strip_chars().str.len_chars()
            + pl.col("body").fill_null("").str.strip_chars().str.len_chars()
        ).alias("text_chars")
    )
    frame = checked.select("ticket_key", "created_at", "channel", "text_chars").to_pandas(
        use_pyarrow_extension_array=False
    )
    # "Not in the future" depends on the run's clock; the suite is shared, so
    # this one expectation is evaluated per batch with the run's ``now``.
    future = gx.expectations.ExpectColumnValuesToBeBetween(column="created_at", max_value=now)
    batch = batch_definition.get_batch(batch_parameters={"dataframe": frame})
    result = batch.validate(suite, result_format={"result_format": "COMPLETE"})
    future_result = batch.validate(future, result_format={"result_format": "COMPLETE"})
    reasons: dict[int, list[str]] = {}
    for item in [*result.results, future_result]:
        if item.success:
            continue
        config = item.expectation_config
        key = f"{config.type}:{config.kwargs.get('column')}"
        reason = REASONS.get(key, key)
        exception = getattr(item, "exception_info", None) or {}
        if exception.get("raised_exception"):
            raise RuntimeError(f"validation {key} could not run: {exception}")
        for position in item.result.get("unexpected_index_list") or []:
            reasons.setdefault(int(position), []).append(reason)
    if not reasons:
        return Validation(tickets, [], tickets.height)
    bad_positions = sorted(reasons)
    mask = pl.Series("bad", [False] * tickets.height)
    mask[bad_positions] = True
    bad_rows = tickets.filter(mask)
    rejects = [
        (
            str(row["source_id"] or row["ticket_key"] or "(no id)"),
            "; ".join(reasons[pos]),
            pl.DataFrame([row]).write_json(),
        )
        for pos, row in zip(bad_positions, bad_rows.to_dicts(), strict=True)
    ]
    return Validation(tickets.filter(~mask), rejects, tickets.height)
