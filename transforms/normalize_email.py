"""Raw RFC 822 messages -> ``core.tickets`` and ``core.messages`` frames.

One conversation is one ticket: the complaint is what the customer first wrote,
not every "any news?" that followed, and the helpdesk sources count the same way.
Threads span pages and runs, so ticket keys come from the thread's root
Message-ID (see :mod:`transforms.threads`) and the warehouse merges a later
batch's row for the same key into the stored one (earliest created_at, latest
updated_at, subject and body of the earliest message).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Collection
from datetime import datetime, timedelta

import polars as pl

from transforms.mime import ParsedMessage, UnparseableMessage, normalize_subject, parse_message
from transforms.schema import MESSAGES, TICKETS, UTC_TS, Normalized, conform, empty
from transforms.threads import thread_messages

__all__ = ["dedupe_against", "message_id_of", "normalize_email"]


def message_id_of(parsed: ParsedMessage | None, raw: bytes) -> str:
    """The message's id, or a content hash for mail without one (stable across runs)."""
    if parsed is not None and parsed.message_id:
        return parsed.message_id
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def normalize_email(
    raws: list[bytes],
    record_ids: list[str],
    *,
    source: str,
    ingested_at: datetime,
    known_threads: pl.DataFrame | None = None,
    window: timedelta = timedelta(days=14),
    support_addresses: Collection[str] = (),
) -> Normalized:
    """Parse, thread and shape one page (or several) of raw messages.

    ``known_threads`` (optional) is ``message_id, ticket_key`` of messages of
    this source already in ``core.messages``: replies whose References were cut
    then join the ticket their parent is in; with ``subject``, ``author_key``
    and ``created_at`` as well, a reply that lost all its headers joins by the
    subject fallback too; with ``body`` (and ``is_auto``) as well, a conversation
    the batch continues gets its ticket rebuilt from all its messages, so a later
    "any update?" does not replace the words (and label) it started with.
    Messages without a Date take their
    first Received time, else ``ingested_at``. ``support_addresses`` (full
    addresses or ``@domain``) are the team's own: their mail is never the
    customer's, so a conversation the team opened is still requested by the
    customer who answers.
    """
    if len(raws) != len(record_ids):
        raise ValueError(f"{len(raws)} messages but {len(record_ids)} record ids")
    rejects: list[tuple[str, str, str]] = []
    rows: list[dict[str, object]] = []
    seen: set[str] = set()
    for raw, record_id in zip(raws, record_ids, strict=True):
        try:
            parsed = parse_message(raw)
        except UnparseableMessage as exc:
            payload = "base64:" + base64.b64encode(raw).decode("ascii")
            rejects.append((record_id, f"unparseable email: {exc.reason}", payload))
            continue
        msg_id = message_id_of(parsed, raw)
        if msg_id in seen:  # the same mail in two folders, or a resync after UIDVALIDITY
            continue
        seen.add(msg_id)
        rows.append(
            {
                "message_id": msg_id,
                "in_reply_to": parsed.in_reply_to,
                "references": list(parsed.references),
                "subject": parsed.subject,
                "from_addr": parsed.from_addr,
                "date": parsed.date or parsed.received_at or ingested_at,
                "body": parsed.body,
                "is_auto": parsed.is_auto,
            }
        )
    if not rows:
        return Normalized(tickets=empty(TICKETS), rejects=rejects)

    frame = pl.DataFrame(
        rows,
        schema={
            "message_id": pl.String,
            "in_reply_to": pl.String,
            "references": pl.List(pl.String),
            "subject": pl.String,
            "from_addr": pl.String,
            "date": UTC_TS,
            "body": pl.String,
            "is_auto": pl.Boolean,
        },
    )
    known = None
    if known_threads is not None and known_threads.height:
        prefix = f"{source}:"
        optional = [
            pl.col(col).alias(alias)
            for col, alias in (
                ("subject", "subject"),
                ("author_key", "from_addr"),
                ("created_at", "date"),
            )
            if col in known_threads.columns
        ]
        known = known_threads.select(
            pl.col("message_id"),
            pl.col("ticket_key").str.strip_prefix(prefix).alias("thread_id"),
            *optional,
        ).filter(pl.col("message_id").is_not_null())
    threaded = thread_messages(frame, window=window, known=known).with_columns(
        ticket_key=pl.lit(f"{source}:") + pl.col("thread_id"), _prior=pl.lit(False)
    )
    prior = _prior_messages(known_threads, threaded, source)
    if prior is not None:
        threaded = pl.concat([threaded, prior], how="diagonal_relaxed")

    # The customer is whoever opened the conversation (the first human sender
    # who is not the support team).
    own = {a.strip().lower() for a in support_addresses if a.strip()}
    own_domains = [a for a in own if a.startswith("@")]
    is_own = pl.col("from_addr").is_in(list(own - set(own_domains)))
    for domain in own_domains:
        is_own = is_own | pl.col("from_addr").str.ends_with(domain)
    ordered = threaded.sort("date", "message_id").with_columns(
        _own=is_own.fill_null(False) if own else pl.lit(False)
    )
    firsts = (
        ordered.filter(~pl.col("is_auto") & ~pl.col("_own"))
        .group_by("ticket_key", maintain_order=True)
        .first()
        .select("ticket_key", pl.col("from_addr").alias("customer"))
    )
    joined = ordered.join(firsts, on="ticket_key", how="left", maintain_order="left")
    messages = joined.with_columns(
        is_customer=(pl.col("from_addr") == pl.col("customer")).fill_null(False)
        & ~pl.col("is_auto")
        & ~pl.col("_own")
    )
    messages_out = conform(
        messages.filter(~pl.col("_prior")).with_columns(
            message_key=pl.lit(f"{source}:") + pl.col("message_id"),
            source=pl.lit(source),
            author_key=pl.col("from_addr"),
            created_at=pl.col("date"),
            ingested_at=pl.lit(ingested_at).cast(UTC_TS),
        ),
        MESSAGES,
    )

    first_any = messages.group_by("ticket_key", maintain_order=True).agg(
        source_id=pl.col("thread_id").first(),
        created_at=pl.col("date").min(),
        updated_at=pl.col("date").max(),
        subject=pl.col("subject").first(),
        all_auto=pl.col("is_auto").all(),
        requester_key=pl.col("customer").first(),
        body=pl.col("body").filter(pl.col("is_customer")).first(),
        any_body=pl.col("body").first(),
    )
    tickets = first_any.with_columns(
        source=pl.lit(source),
        body=pl.coalesce("body", "any_body"),
        requester_key=pl.coalesce("requester_key", pl.lit(None, dtype=pl.String)),
        channel=pl.lit("email"),
        status=pl.lit(None, dtype=pl.String),
        tags=pl.lit([], dtype=pl.List(pl.String)),
        is_auto=pl.col("all_auto"),
        is_deleted=pl.lit(False),
        ingested_at=pl.lit(ingested_at).cast(UTC_TS),
    )
    return Normalized(tickets=conform(tickets, TICKETS), messages=messages_out, rejects=rejects)


def _prior_messages(
    known_threads: pl.DataFrame | None, threaded: pl.DataFrame, source: str
) -> pl.DataFrame | None:
    """Stored messages of the conversations this batch continues, to rebuild their tickets.

    A ticket row is labelled from its subject and body; built from a batch that
    holds only "Any update?" it would relabel a complaint as nothing. With the
    stored ``body`` (and ``subject``, ``author_key``, ``created_at``, optionally
    ``is_auto``) in ``known_threads``, a continued conversation's ticket is rebuilt
    from all its messages, so its subject, body and label stay those of its start.
    """
    needed = {"message_id", "ticket_key", "subject", "author_key", "created_at", "body"}
    if known_threads is None or known_threads.height == 0:
        return None
    if not needed <= set(known_threads.columns):
        return None
    touched = threaded.get_column("ticket_key").unique().to_list()
    new_ids = threaded.get_column("message_id").to_list()
    prefix = f"{source}:"
    is_auto = (
        pl.col("is_auto").fill_null(False) if "is_auto" in known_threads.columns else pl.lit(False)
    )
    prior = known_threads.filter(
        pl.col("ticket_key").is_in(touched) & ~pl.col("message_id").is_in(new_ids)
    ).select(
        pl.col("message_id"),
        pl.col("subject"),
        pl.col("author_key").alias("from_addr"),
        pl.col("created_at").cast(UTC_TS).alias("date"),
        pl.col("body"),
        is_auto.alias("is_auto"),
        pl.col("ticket_key").str.strip_prefix(prefix).alias("thread_id"),
        pl.col("ticket_key"),
        _prior=pl.lit(True),
    )
    return prior if prior.height else None


def dedupe_against(
    email_tickets: pl.DataFrame,
    helpdesk_tickets: pl.DataFrame,
    *,
    minutes: int = 10,
) -> pl.DataFrame:
    """Mark email tickets that a helpdesk also turned into a ticket.

    Support addresses often forward into Zendesk/Freshdesk *and* sit in an
    IMAP inbox we read: without this, one complaint counts twice. A match is
    the same Message-ID (any id of the email thread — its ``source_id`` and
    optional ``message_ids`` list — found in the helpdesk's ``message_id`` or
    ``message_ids`` column), or the same requester and normalised subject with
    created_at within ``minutes``.

    Returns ``email_tickets`` with ``duplicate_of`` (the helpdesk ticket_key,
    else whatever ``duplicate_of`` the row already had, else null) and
    ``is_duplicate``; the other columns and the row order are unchanged.
    """
    out_cols = [c for c in email_tickets.columns if c != "is_duplicate"]
    out_cols += [c for c in ("duplicate_of", "is_duplicate") if c not in out_cols]
    previous = (
        email_tickets.get_column("duplicate_of").cast(pl.String)
        if "duplicate_of" in email_tickets.columns
        else pl.Series("duplicate_of", [None] * email_tickets.height, dtype=pl.String)
    )
    base = email_tickets.drop("duplicate_of", "is_duplicate", strict=False).with_columns(
        _prev=previous
    )
    if email_tickets.height == 0 or helpdesk_tickets.height == 0:
        return base.with_columns(
            duplicate_of=pl.col("_prev"), is_duplicate=pl.col("_prev").is_not_null()
        ).select(out_cols)

    email = base.with_row_index("_row")
    # 1. Message-ID matches.
    email_ids = email.select(
        "_row",
        pl.concat_list(
            pl.col("source_id").cast(pl.String),
            *(
                [pl.col("message_ids").cast(pl.List(pl.String))]
                if "message_ids" in email.columns
                else []
            ),
        ).alias("_mid"),
    ).explode("_mid")
    hd_id_exprs = []
    if "message_id" in helpdesk_tickets.columns:
        hd_id_exprs.append(pl.concat_list(pl.col("message_id").cast(pl.String)))
    if "message_ids" in helpdesk_tickets.columns:
        hd_id_exprs.append(pl.col("message_ids").cast(pl.List(pl.String)))
    by_id = pl.DataFrame(schema={"_row": pl.UInt32, "_dup": pl.String})
    if hd_id_exprs:
        hd_ids = (
            helpdesk_tickets.select(
                pl.col("ticket_key").alias("_dup"), pl.concat_list(hd_id_exprs).alias("_mid")
            )
            .explode("_mid")
            .filter(pl.col("_mid").is_not_null())
            .with_columns(pl.col("_mid").str.strip_chars("<> "))
        )
        by_id = (
            email_ids.filter(pl.col("_mid").is_not_null())
            .join(hd_ids, on="_mid")
            .group_by("_row")
            .agg(pl.col("_dup").min())
        )

    # 2. Same requester + subject, close in time.
    def keyed(frame: pl.DataFrame) -> pl.DataFrame:
        return frame.with_columns(
            _who=pl.col("requester_key").str.to_lowercase().str.strip_chars(),
            _subj=pl.col("subject").map_elements(normalize_subject, return_dtype=pl.String),
        ).filter(pl.col("_who").is_not_null() & (pl.col("_subj") != ""))

    hd = keyed(helpdesk_tickets).select(
        "_who", "_subj", pl.col("created_at").alias("_hd_at"), pl.col("ticket_key").alias("_dup")
    )
    by_subject = (
        keyed(email)
        .select("_row", "_who", "_subj", "created_at")
        .join(hd, on=["_who", "_subj"])
        .with_columns(_gap=(pl.col("created_at") - pl.col("_hd_at")).abs())
        .filter(pl.col("_gap") <= timedelta(minutes=minutes))
        .sort("_row", "_gap", "_dup")
        .group_by("_row", maintain_order=True)
        .first()
        .select("_row", pl.col("_dup").alias("_dup_subj"))
    )
    return (
        email.join(by_id, on="_row", how="left")
        .join(by_subject, on="_row", how="left")
        .with_columns(duplicate_of=pl.coalesce("_dup", "_dup_subj", "_prev"))
        .with_columns(is_duplicate=pl.col("duplicate_of").is_not_null())
        .sort("_row")
        .select(out_cols)
    )
