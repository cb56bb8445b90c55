"""Complaint counts per bucket, topic and channel, rebuilt from ``core``.

A refresh rebuilds only the buckets at or after ``since`` (the earliest
``created_at`` a run touched), so a scheduled run with a few new tickets does
not recount two years of history. Topic '*' and channel '*' are totals counted
per ticket, so a ticket with two topics is one complaint in the total.
Deleted tickets, auto-replies and cross-source duplicates are not counted.
"""

from __future__ import annotations

from datetime import datetime

import duckdb

from warehouse.db import transaction

GRAINS = {"hourly": "hour", "daily": "day"}

_COUNTS = """
WITH live AS (
    SELECT t.ticket_key, date_trunc('{unit}', t.created_at) AS bucket, t.channel,
           coalesce(l.is_complaint, false) AS is_complaint,
           coalesce(l.cancel_intent, false) AS cancel_intent,
           CASE WHEN l.topics IS NULL OR len(l.topics) = 0 THEN ['other'] ELSE l.topics END
               AS topics
    FROM core.tickets t
    LEFT JOIN core.ticket_labels l USING (ticket_key)
    WHERE NOT t.is_deleted AND NOT t.is_auto AND t.duplicate_of IS NULL
      AND t.created_at >= $since
),
per_topic AS (
    SELECT bucket, unnest(topics) AS topic, channel, is_complaint, cancel_intent FROM live
),
by_topic AS (
    SELECT bucket, topic, coalesce(channel, '*') AS channel,
           count(*) AS tickets, count(*) FILTER (is_complaint) AS complaints,
           count(*) FILTER (is_complaint AND cancel_intent) AS cancel_intents
    FROM per_topic
    GROUP BY GROUPING SETS ((bucket, topic, channel), (bucket, topic))
),
by_total AS (
    SELECT bucket, '*' AS topic, coalesce(channel, '*') AS channel,
           count(*) AS tickets, count(*) FILTER (is_complaint) AS complaints,
           count(*) FILTER (is_complaint AND cancel_intent) AS cancel_intents
    FROM live
    GROUP BY GROUPING SETS ((bucket, channel), (bucket))
)
SELECT * FROM by_topic UNION ALL SELECT * FROM by_total
"""


def refresh_marts(con: duckdb.DuckDBPyConnection, since: datetime | None = None) -> None:
    """Recount every bucket from the one holding ``since`` on (all if None)."""
    start = since or datetime(1970, 1, 1)
    with transaction(con):
        for table, unit in GRAINS.items():
            con.execute(
                f"DELETE FROM marts.complaints_{table} "
                f"WHERE bucket >= date_trunc('{unit}', $since::TIMESTAMPTZ)",
                {"since": start},
            )
            con.execute(
                f"INSERT INTO marts.complaints_{table} "
                + _COUNTS.format(unit=unit).replace(
                    "$since", f"date_trunc('{unit}', $since::TIMESTAMPTZ)"
                ),
                {"since": start},
            )
