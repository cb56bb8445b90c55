"""Emergent topics: what customers newly complain about that no configured topic names.

Why: the taxonomy in ``backlash.toml`` only knows the product changes someone
thought of. When a launch brings a new word into the complaints ("Qwikster",
a new fee's name, a device model), leadership should hear about it the day it
appears, before anyone edits the config. So this module looks for terms
(words and two-word phrases) whose share of complaint tickets in the last few
days is far above their share in the weeks before, and groups the tickets
that use them.

How a term qualifies (all of these, so that one chatty customer or the
ordinary day-to-day wobble of hundreds of words does not raise a topic):

* it appears in at least ``min_count`` tickets of the recent window;
* its smoothed log-odds of document frequency, recent versus baseline, is at
  least ``min_log_odds`` (a share at least e^x times higher), with an add-0.5
  prior so a term never seen before gets a finite, count-driven score;
* the log-odds is at least ``min_z`` standard errors above zero, which is
  what keeps a term seen in 5 of 40 tickets from outranking one seen in 60;
* it was rare before (in at most ``max_baseline_share`` of baseline writers):
  "terrible" and "nothing" rise in every spike but name none.

Counts are of distinct writers (``requester_key`` when given), and signature
lines are dropped, so a customer's five follow-ups or a common surname in
sign-offs never make a topic.

Terms are then clustered greedily by the tickets they share (a term joins the
strongest cluster whose tickets mostly contain it), so "qwikster",
"two websites" and "qwikster account" come back as one topic with its terms,
not three. Pure: the caller passes ``now`` and the tickets; nothing is read
from the clock or the warehouse.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime, timedelta

import polars as pl

from transforms.attribution import STOPWORDS

# Words that carry no topic in support mail, beyond ordinary stop words.
_SUPPORT_STOPWORDS = frozenset(
    {
        "hi",
        "hello",
        "hey",
        "dear",
        "thanks",
        "thank",
        "regards",
        "cheers",
        "best",
        "please",
        "team",
        "support",
        "morning",
        "evening",
        "afternoon",
        "re",
        "fw",
        "fwd",
        "subject",
        "ticket",
        "just",
        "now",
        "get",
        "got",
        "also",
        "still",
        "even",
        "really",
        "one",
        "two",
        "like",
        "would",
        "could",
        "can",
        "will",
        "it's",
        "i'm",
        "don't",
        "can't",
        "i've",
        "that's",
        "won't",
        "didn't",
        "doesn't",
        "isn't",
    }
)
_STOP = frozenset(STOPWORDS) | _SUPPORT_STOPWORDS

# Letters of any script, then letters, digits and inner apostrophes: "qwikster",
# "kündigung", "i'm". Digits alone ("2", "19.99") never make a topic.
_WORD_RE = r"[^\W\d_][\w']*[\w]|[^\W\d_]"

# A line holding only one to three capitalised words is a signature ("Sarah
# Walker", "Cheers, Tom"): names recur by chance and must never become a topic.
_NAME_LINE = r"(?m)^[ \t]*(?:[A-Z][\w'.-]*,?[ \t]+){0,3}[A-Z][\w'.-]*[ \t]*$"

EMERGENT_TOPICS: dict[str, pl.DataType] = {
    "topic": pl.String(),  # the cluster's strongest term, as a display name
    "terms": pl.List(pl.String()),  # strongest first
    "tickets": pl.Int64(),  # recent-window tickets using any of the terms
    "baseline_tickets": pl.Int64(),  # baseline tickets using the lead term
    "log_odds": pl.Float64(),  # of the lead term, recent vs baseline
    "z": pl.Float64(),
    "first_seen": pl.Datetime("us", "UTC"),  # earliest ticket (any supplied) with the lead term
    "ticket_keys": pl.List(pl.String()),  # the recent tickets in the cluster
}


@dataclass(frozen=True, slots=True)
class _Term:
    term: str
    recent: int
    base: int
    log_odds: float
    z: float
    docs: frozenset[str]


def _empty() -> pl.DataFrame:
    return pl.DataFrame(schema=EMERGENT_TOPICS)


def _text(tickets: pl.DataFrame) -> pl.Expr:
    subject = (
        pl.col("subject").cast(pl.String).fill_null("")
        if "subject" in tickets.columns
        else pl.lit("")
    )
    body = pl.col("body").cast(pl.String).fill_null("") if "body" in tickets.columns else pl.lit("")
    return (
        pl.concat_str([subject, body], separator="\n")
        .str.replace_all(_NAME_LINE, "\n")
        .str.to_lowercase()
    )


def _documents(tickets: pl.DataFrame) -> pl.DataFrame:
    """One row per ticket: key, who wrote it, time and its distinct terms.

    Terms are content words (3+ letters, not stop words) and bigrams of two
    content words *adjacent in the text* ("two websites", "qwikster account"),
    so template filler never pairs words a customer did not write together.
    """
    stop = list(_STOP)
    content = (pl.element().str.len_chars() >= 3) & ~pl.element().is_in(stop)
    words = _text(tickets).str.extract_all(_WORD_RE)
    bigrams = words.list.eval(
        pl.when(content & (content.shift(-1)))
        .then(pl.element() + pl.lit(" ") + pl.element().shift(-1))
        .drop_nulls()
    )
    unigrams = words.list.eval(pl.element().filter(content))
    who = (
        pl.col("requester_key").cast(pl.String).fill_null(pl.col("ticket_key").cast(pl.String))
        if "requester_key" in tickets.columns
        else pl.col("ticket_key").cast(pl.String)
    )
    return tickets.select(
        pl.col("ticket_key").cast(pl.String),
        who.alias("who"),
        pl.col("created_at"),
        pl.concat_list([unigrams, bigrams]).list.unique().alias("terms"),
    )


def _bounded(term: str) -> str:
    """A regex for ``term`` as whole words, whatever the spacing between them."""
    return r"(?:^|[^\w])" + r"\s+".join(re.escape(w) for w in term.split()) + r"(?:$|[^\w])"


def _log_odds(r: int, n_r: int, b: int, n_b: int, prior: float) -> tuple[float, float]:
    """Smoothed log-odds ratio of document frequency and its z (Monroe et al. 2008,
    with a flat add-``prior`` Dirichlet prior)."""
    lo_r = math.log((r + prior) / (n_r - r + prior))
    lo_b = math.log((b + prior) / (n_b - b + prior))
    var = 1 / (r + prior) + 1 / (n_r - r + prior) + 1 / (b + prior) + 1 / (n_b - b + prior)
    delta = lo_r - lo_b
    return delta, delta / math.sqrt(var)


def _rising(
    docs: pl.DataFrame,
    start: datetime,
    split: datetime,
    now: datetime,
    *,
    min_count: int,
    min_log_odds: float,
    min_z: float,
    max_baseline_share: float,
    prior: float,
) -> list[_Term]:
    period = pl.when(pl.col("created_at") >= split).then(pl.lit("r")).otherwise(pl.lit("b"))
    scoped = docs.filter((pl.col("created_at") >= start) & (pl.col("created_at") < now))
    # One customer writing five follow-ups is one voice: count distinct writers.
    n_r = scoped.filter(pl.col("created_at") >= split)["who"].n_unique()
    n_b = scoped.filter(pl.col("created_at") < split)["who"].n_unique()
    if n_r < min_count:
        return []
    counts = (
        scoped.with_columns(period.alias("_p"))
        .explode("terms")
        .drop_nulls("terms")
        .group_by("terms")
        .agg(
            pl.col("who").filter(pl.col("_p") == "r").n_unique().alias("r"),
            pl.col("who").filter(pl.col("_p") == "b").n_unique().alias("b"),
            pl.col("ticket_key").filter(pl.col("_p") == "r").alias("keys"),
        )
        .filter(pl.col("r") >= min_count)
    )
    out = []
    for term, r, b, keys in counts.iter_rows():
        delta, z = _log_odds(r, n_r, b, n_b, prior)
        common = b > max_baseline_share * max(n_b, 1)
        if delta >= min_log_odds and z >= min_z and not common:
            out.append(_Term(term, r, b, delta, z, frozenset(keys)))
    # Strongest first: how far the term rose, weighted by how many people use it,
    # so a brand-new word ("qwikster") outranks an old one that merely grew
    # ("dvds"). Ties (words that always come together) go to the single, longer
    # word, the likelier name, then to the spelling, so hash order never decides.
    out.sort(
        key=lambda t: (-t.log_odds * math.log1p(t.recent), " " in t.term, -len(t.term), t.term)
    )
    return out


def _clusters(terms: list[_Term], overlap: float) -> list[list[_Term]]:
    """Greedy: a term joins the first (strongest) cluster whose tickets mostly contain it."""
    groups: list[tuple[list[_Term], set[str]]] = []
    for term in terms:
        for members, docs in groups:
            shared = len(term.docs & docs)
            if shared >= overlap * min(len(term.docs), len(docs)):
                members.append(term)
                docs |= term.docs
                break
        else:
            groups.append(([term], set(term.docs)))
    return [members for members, _ in groups]


def emergent_topics(
    tickets: pl.DataFrame,
    *,
    now: datetime,
    window: timedelta = timedelta(days=3),
    baseline: timedelta = timedelta(days=56),
    min_count: int = 8,
    min_log_odds: float = 1.5,
    min_z: float = 4.5,
    max_baseline_share: float = 0.02,
    k: int = 5,
    unmatched_only: bool = False,
    overlap: float = 0.5,
    max_terms: int = 8,
    prior: float = 0.5,
) -> pl.DataFrame:
    """Up to ``k`` topics rising in ``[now - window, now)`` against the ``baseline`` before it.

    ``tickets`` needs ``ticket_key``, ``created_at`` (UTC) and ``subject``/``body``.
    When it has ``is_complaint`` only complaints count; with ``unmatched_only``
    and a ``topics`` column, only tickets no configured topic matched (the
    issue's "tickets that fit none"). Returns the ``EMERGENT_TOPICS`` columns,
    strongest topic first; empty when nothing rises.
    """
    if tickets.is_empty():
        return _empty()
    frame = tickets
    if "is_complaint" in frame.columns:
        frame = frame.filter(pl.col("is_complaint").fill_null(False))
    if unmatched_only and "topics" in frame.columns:
        frame = frame.filter(pl.col("topics").list.len().fill_null(0) == 0)
    frame = frame.filter(pl.col("created_at") < now)
    if frame.is_empty():
        return _empty()
    split = now - window
    start = split - baseline
    docs = _documents(frame.filter(pl.col("created_at") >= start))
    rising = _rising(
        docs,
        start,
        split,
        now,
        min_count=min_count,
        min_log_odds=min_log_odds,
        min_z=min_z,
        max_baseline_share=max_baseline_share,
        prior=prior,
    )
    if not rising:
        return _empty()
    groups = _clusters(rising, overlap)[:k]
    lead_terms = [g[0].term for g in groups]
    # Earliest use in everything supplied (not only the baseline): a word
    # customers used two years ago and again now is not "new since Monday".
    texts = frame.select(pl.col("created_at"), _text(frame).alias("_t"))
    first = dict(
        texts.select(
            [
                pl.col("created_at")
                .filter(pl.col("_t").str.contains(_bounded(term)))
                .min()
                .alias(term)
                for term in dict.fromkeys(lead_terms)
            ]
        )
        .row(0, named=True)
        .items()
    )
    rows = []
    for group in groups:
        lead = group[0]
        keys = sorted(set().union(*(t.docs for t in group)))
        rows.append(
            {
                "topic": lead.term,
                "terms": [t.term for t in group[:max_terms]],
                "tickets": len(keys),
                "baseline_tickets": lead.base,
                "log_odds": lead.log_odds,
                "z": lead.z,
                "first_seen": first.get(lead.term),
                "ticket_keys": keys,
            }
        )
    return pl.DataFrame(rows, schema=EMERGENT_TOPICS)
