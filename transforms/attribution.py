"""Which product change caused a spike, in the customers' own words.

A change is a candidate when it was announced or took effect shortly before
the onset. It is blamed only when the timing fits *and* the complaints talk
about it: customers say "my bill went up", not "price rise", so both sides
are reduced to stems plus a small built-in map of concepts, and the terms
that count are the ones *rising* against the weeks before. A release that
merely happened the same week as an outage is never blamed for it.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache

import polars as pl

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")

STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "been",
        "but",
        "by",
        "can",
        "could",
        "did",
        "do",
        "does",
        "for",
        "from",
        "had",
        "has",
        "have",
        "he",
        "her",
        "him",
        "his",
        "how",
        "i",
        "i'm",
        "if",
        "in",
        "into",
        "is",
        "it",
        "it's",
        "its",
        "just",
        "me",
        "my",
        "no",
        "not",
        "now",
        "of",
        "on",
        "or",
        "our",
        "please",
        "so",
        "that",
        "the",
        "their",
        "them",
        "then",
        "there",
        "they",
        "this",
        "to",
        "too",
        "us",
        "was",
        "we",
        "were",
        "what",
        "when",
        "which",
        "who",
        "why",
        "will",
        "with",
        "would",
        "you",
        "your",
        "yours",
        "hi",
        "hello",
        "thanks",
        "thank",
        "regards",
        "dear",
        "team",
        "am",
        "get",
        "got",
        "one",
        "all",
        "any",
        "also",
        "again",
        "still",
        "about",
        "after",
        "before",
        "more",
        "very",
        "really",
        "only",
        "out",
        "up",
    ]
)

# Concept -> words (stems after `stem`) that evoke it. Small on purpose:
# enough for the usual backlashes (price, bundle split, removed feature,
# outage, redesign); the change calendar's keywords add the rest.
CONCEPTS: dict[str, frozenset[str]] = {
    "@price": frozenset(
        [
            "price",
            "pric",
            "bill",
            "charg",
            "cost",
            "expens",
            "fee",
            "rais",
            "rise",
            "hike",
            "increas",
            "pay",
            "paid",
            "dollar",
            "subscript",
            "plan",
            "afford",
            "cheap",
            "overcharg",
            "money",
            "invoic",
        ]
    ),
    "@cancel": frozenset(["cancel", "unsubscrib", "quit", "leav", "switch", "refund", "terminat"]),
    "@split": frozenset(["split", "separ", "divid", "unbundl", "spin", "spun", "brand", "rebrand"]),
    "@remove": frozenset(
        [
            "remov",
            "gone",
            "missing",
            "delet",
            "discontinu",
            "drop",
            "disappear",
            "elimin",
            "kill",
            "lost",
            "took",
            "away",
        ]
    ),
    "@outage": frozenset(
        [
            "buffer",
            "playback",
            "stream",
            "freez",
            "crash",
            "outag",
            "error",
            "load",
            "stall",
            "stutter",
            "broken",
        ]
    ),
    "@ui": frozenset(
        [
            "ui",
            "interfac",
            "design",
            "redesign",
            "layout",
            "menu",
            "button",
            "look",
            "navig",
            "theme",
        ]
    ),
    "@account": frozenset(
        ["profil", "account", "user", "household", "famili", "kid", "share", "login"]
    ),
    "@mail": frozenset(["dvd", "disc", "disk", "mail", "envelop", "ship", "deliveri"]),
}

_SUFFIXES = (
    "ations",
    "ation",
    "ments",
    "ment",
    "ingly",
    "ings",
    "ing",
    "edly",
    "ies",
    "ied",
    "ers",
    "er",
    "ed",
    "es",
    "ly",
    "e",
    "s",
)


def stem(word: str) -> str:
    """A light suffix-stripper: "billed", "billing", "bills" -> "bill".

    A full Porter stemmer is not needed for matching a few hundred words and
    would be one more dependency.
    """
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)]
            # Porter's rule: "stopped" -> "stop", but "billed" -> "bill".
            if len(word) > 3 and word[-1] == word[-2] and word[-1] not in "aeioulsz":
                word = word[:-1]
            break
    return word


# Concept words reduced like text words; a text stem evokes a concept when it
# is one of them or, for roots of four letters or more, starts with one
# ("expensiv" -> "expens"; but "feel" is not "fee"): this spares a lexicon.
_ROOTS: dict[str, tuple[str, ...]] = {
    c: tuple(sorted({stem(w) for w in words})) for c, words in CONCEPTS.items()
}


def terms(text: str | None) -> set[str]:
    """Stems of a text plus the concepts they evoke (prefixed with '@')."""
    if not text:
        return set()
    stems = {_stem(w) for w in _WORD.findall(text.lower()) if w not in STOPWORDS and len(w) > 1}
    concepts: set[str] = set()
    for s in stems:
        concepts |= _concepts(s)
    return stems | concepts


@lru_cache(maxsize=65536)
def _stem(word: str) -> str:
    return stem(word)


@lru_cache(maxsize=65536)
def _concepts(s: str) -> frozenset[str]:
    return frozenset(
        c
        for c, roots in _ROOTS.items()
        if any(s == r or (len(r) >= 4 and s.startswith(r)) for r in roots)
    )


def _surface(texts: Iterable[str]) -> dict[str, str]:
    """The most common written form of each stem, to show people words, not stems."""
    forms: dict[str, Counter[str]] = {}
    for text in texts:
        for w in _WORD.findall((text or "").lower()):
            if w not in STOPWORDS and len(w) > 1:
                forms.setdefault(stem(w), Counter())[w] += 1
    return {s: c.most_common(1)[0][0] for s, c in forms.items()}


def term_lift(
    spike_texts: Sequence[str], baseline_texts: Sequence[str], *, prior: float = 0.5
) -> dict[str, float]:
    """Smoothed log-odds of each term's document frequency, spike vs baseline."""
    spike = Counter(t for text in spike_texts for t in terms(text))
    base = Counter(t for text in baseline_texts for t in terms(text))
    n_s, n_b = max(len(spike_texts), 1), max(len(baseline_texts), 1)

    def logit(c: float, n: int) -> float:
        f = (c + prior) / (n + 2 * prior)
        return math.log(f / (1 - f))

    return {t: logit(c, n_s) - logit(base.get(t, 0), n_b) for t, c in spike.items()}


def rising_terms(
    spike_texts: Sequence[str], baseline_texts: Sequence[str], k: int = 8
) -> list[str]:
    """Top ``k`` words that rose most in the spike's texts against the baseline.

    Ranked by smoothed log-odds of document frequency, weighted by how many
    spike documents use the word, so a word in one ticket does not top it.
    """
    lift = term_lift(spike_texts, baseline_texts)
    counts = Counter(
        t
        for text in spike_texts
        for t in terms(text)
        # Concepts, bare numbers and contractions ("don't") tell a reader nothing.
        if not t.startswith("@") and not t.isdigit() and "'" not in t
    )
    min_docs = 2 if len(spike_texts) >= 4 else 1
    ranked = sorted(
        (t for t, c in counts.items() if c >= min_docs and lift.get(t, 0.0) > 0),
        key=lambda t: (-lift[t] * math.log1p(counts[t]), t),
    )
    surface = _surface(spike_texts)
    return [surface.get(t, t) for t in ranked[:k]]


@dataclass(frozen=True, slots=True)
class AttributionSettings:
    window_days: int = 14
    slack_days: float = 1.0  # same-day announcements after the onset bucket began
    decay_days: float = 3.0  # time score halves roughly every 2 days from a change date
    threshold: float = 0.2
    topic_weight: float = 0.4
    examples: int = 4


def time_score(onset: datetime, dates: Sequence[datetime | None], s: AttributionSettings) -> float:
    """Complaints start on the announcement day and again on the effective day:
    each date counts, decaying with its distance before the onset."""
    best = 0.0
    for d in dates:
        if d is None:
            continue
        lead = (onset - d).total_seconds() / 86400
        if -s.slack_days <= lead <= s.window_days:
            best = max(best, math.exp(-max(lead, 0.0) / s.decay_days))
    return best


def text_score(
    change: dict[str, object], topic: str, lift: dict[str, float], spike_docs: list[set[str]]
) -> float:
    """How much the spike's complaints talk about this change (0..1).

    Share of spike documents using a rising term of the change, plus a bonus
    when the spike's topic is one of the change's areas.
    """
    areas = [str(a).lower() for a in (change.get("areas") or [])]  # type: ignore[attr-defined]
    keywords = [str(k) for k in (change.get("keywords") or [])]  # type: ignore[attr-defined]
    words = terms(
        " ".join(
            [
                str(change.get("title") or ""),
                str(change.get("description") or ""),
                " ".join(keywords),
                " ".join(areas),
                str(change.get("kind") or ""),
            ]
        )
    )
    rising = {t for t in words if lift.get(t, 0.0) > 0.5}
    coverage = sum(1 for doc in spike_docs if doc & rising) / len(spike_docs) if spike_docs else 0.0
    topic_match = 1.0 if topic != "*" and topic.lower() in areas else 0.0
    return min(1.0, (1 - 0.4) * coverage + 0.4 * topic_match) if topic != "*" else coverage


def _texts(frame: pl.DataFrame) -> list[str]:
    return [f"{s or ''}\n{b or ''}" for s, b in zip(frame["subject"], frame["body"], strict=True)]


def attribute(
    episodes: pl.DataFrame,
    tickets: pl.DataFrame,
    changes: pl.DataFrame,
    *,
    now: datetime,
    step: timedelta,
    settings: AttributionSettings = AttributionSettings(),
    cutoff: pl.Series | None = None,
) -> pl.DataFrame:
    """Add change_id, change_title, attribution_score, runner-up, reverted_by,
    recovery_hours, rising_terms and example_ticket_keys to each episode.

    ``cutoff`` (one timestamp per episode) limits the tickets read, so a
    backtest attributes with only what was known at detection time.
    """
    change_rows = changes.to_dicts() if not changes.is_empty() else []
    results: list[dict[str, object]] = []
    for i, ep in enumerate(episodes.iter_rows(named=True)):
        topic = ep["topic"]
        onset: datetime = ep["started_at"]
        # A slow burn is confirmed days after its cause took effect: time is
        # also scored from where its cumulative excess began.
        onsets = [onset, *([ep["rise_started_at"]] if ep.get("rise_started_at") else [])]
        end: datetime = ep["last_anomalous_at"] + step
        limit = cutoff[i] if cutoff is not None else now
        relevant = tickets.filter(pl.col("created_at") < limit)
        if topic != "*":
            relevant = relevant.filter(pl.col("topics").list.contains(topic))
        complaints = relevant.filter(pl.col("is_complaint"))
        spike = complaints.filter((pl.col("created_at") >= onset) & (pl.col("created_at") < end))
        baseline = relevant.filter(
            (pl.col("created_at") < onset) & (pl.col("created_at") >= onset - timedelta(days=28))
        )
        spike_texts, base_texts = _texts(spike), _texts(baseline)
        lift = term_lift(spike_texts, base_texts)
        docs = [terms(t) for t in spike_texts]
        scored = []
        for ch in change_rows:
            dates = [ch.get("announced_at"), ch.get("effective_at")]
            t_score = max(time_score(o, dates, settings) for o in onsets)
            if t_score <= 0:
                continue
            scored.append((t_score * text_score(ch, topic, lift, docs), ch))
        scored.sort(key=lambda sc: (-sc[0], str(sc[1]["change_id"])))
        best = scored[0] if scored and scored[0][0] >= settings.threshold else None
        runner = (
            scored[1] if best and len(scored) > 1 else (scored[0] if scored and not best else None)
        )
        top = rising_terms(spike_texts, base_texts, k=8)
        reverted_by, recovery = None, None
        if best is not None:
            for ch in change_rows:
                eff = ch.get("effective_at")
                if ch.get("reverts") == best[1]["change_id"] and eff is not None and eff <= now:
                    reverted_by = ch["change_id"]
                    # Back to normal by the end of the first calm bucket.
                    back = ep.get("resolved_at")
                    if back is not None and back + step >= eff:
                        recovery = (back + step - eff).total_seconds() / 3600
                    break
        results.append(
            {
                "change_id": best[1]["change_id"] if best else None,
                "change_title": best[1]["title"] if best else None,
                "attribution_score": best[0] if best else None,
                "runner_up_change_id": runner[1]["change_id"] if runner else None,
                "runner_up_score": runner[0] if runner else None,
                "reverted_by": reverted_by,
                "recovery_hours": recovery,
                "rising_terms": top,
                "example_ticket_keys": examples(spike, top, settings.examples),
            }
        )
    extra = pl.DataFrame(
        results,
        schema={
            "change_id": pl.String,
            "change_title": pl.String,
            "attribution_score": pl.Float64,
            "runner_up_change_id": pl.String,
            "runner_up_score": pl.Float64,
            "reverted_by": pl.String,
            "recovery_hours": pl.Float64,
            "rising_terms": pl.List(pl.String),
            "example_ticket_keys": pl.List(pl.String),
        },
    )
    return pl.concat([episodes.drop(extra.columns, strict=False), extra], how="horizontal")


def examples(spike: pl.DataFrame, rising: Sequence[str], k: int) -> list[str]:
    """The complaints that best show the rising words (most of them, earliest first)."""
    if spike.is_empty():
        return []
    wanted = {stem(w) for w in rising}
    ranked = sorted(
        zip(spike["ticket_key"], spike["created_at"], _texts(spike), strict=True),
        key=lambda r: (-len(terms(r[2]) & wanted), r[1], r[0]),
    )
    return [str(r[0]) for r in ranked[:k]]
