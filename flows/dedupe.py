"""One complaint, one count: email threads that a helpdesk also turned into a ticket.

A support address often forwards into Zendesk or Freshdesk *and* sits in a
mailbox backlash reads. Without this step the customer who wrote once is
counted twice, and a backlash looks twice as large as it is. After each
ingest, the email tickets of the window are matched against the helpdesk
tickets (``transforms.normalize_email.dedupe_against``: the same Message-ID,
or the same requester and subject within minutes) and the matches get
``core.tickets.duplicate_of``, which every mart already leaves out. The email
ticket stays in ``core`` (with its replies): nothing is deleted.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import duckdb
import polars as pl

from transforms.normalize_email import dedupe_against
from transforms.normalize_file import requester_key_expr
from warehouse.db import transaction
from warehouse.load import registered

EMAIL_KINDS = frozenset({"imap", "mbox"})
HELPDESK_KINDS = frozenset({"zendesk", "freshdesk", "file"})
# A forwarded copy is created within minutes of the email; look a little
# further back than the window so a pair split across two runs still meets.
MATCH_MINUTES = 10
LOOK_BACK = timedelta(days=1)


def _tickets(
    con: duckdb.DuckDBPyConnection, sources: list[str], since: datetime | None
) -> pl.DataFrame:
    """Tickets of ``sources`` from ``since`` on, with every Message-ID of their messages."""
    return con.sql(
        """
        SELECT t.ticket_key, t.source_id, t.requester_key, t.subject, t.created_at,
               list(m.message_id) FILTER (m.message_id IS NOT NULL) AS message_ids
        FROM core.tickets t
        LEFT JOIN core.messages m USING (ticket_key)
        WHERE list_contains($sources, t.source)
          AND ($since IS NULL OR t.created_at >= $since)
          AND NOT t.is_deleted
        GROUP BY ALL
        """,
        params={"sources": sources, "since": since},
    ).pl()


def _pseudonymous(frame: pl.DataFrame) -> pl.DataFrame:
    """Compare requesters by the same pseudonym the helpdesk normalisers store.

    Email tickets keep the sender's address; helpdesk tickets keep its
    pseudonym. Hashing here makes them comparable without writing addresses
    anywhere new.
    """
    return frame.with_columns(
        pl.when(pl.col("requester_key").str.starts_with("req_"))
        .then(pl.col("requester_key"))
        .otherwise(requester_key_expr("", pl.col("requester_key")))
        .alias("requester_key")
    )


def mark_cross_source_duplicates(
    con: duckdb.DuckDBPyConnection, settings: Any, since: datetime | None
) -> int:
    """Mark the window's email tickets that duplicate a helpdesk ticket; return how many.

    ``since`` is the earliest ``created_at`` the run touched (``None``: all of
    history, as ``replay`` does). Only marks, never unmarks: a match found
    once stays found.
    """
    email = [s.name for s in settings.sources if s.kind in EMAIL_KINDS]
    helpdesk = [s.name for s in settings.sources if s.kind in HELPDESK_KINDS]
    if not email or not helpdesk:
        return 0
    start = since - LOOK_BACK if since is not None else None
    mail = _tickets(con, email, start)
    if mail.is_empty():
        return 0
    tickets = _tickets(con, helpdesk, start - LOOK_BACK if start is not None else None)
    found = dedupe_against(
        _pseudonymous(mail), _pseudonymous(tickets), minutes=MATCH_MINUTES
    ).filter(pl.col("is_duplicate"))
    if found.is_empty():
        return 0
    pairs = found.select("ticket_key", "duplicate_of")
    with transaction(con), registered(con, "_duplicates", pairs):
        con.execute(
            "UPDATE core.tickets SET duplicate_of = d.duplicate_of FROM _duplicates d "
            "WHERE core.tickets.ticket_key = d.ticket_key "
            "AND core.tickets.duplicate_of IS DISTINCT FROM d.duplicate_of"
        )
    return pairs.height
