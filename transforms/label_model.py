"""A small learned layer beside the rules: logistic regression over n-grams.

Why: the rules fit their authors. Scored once on a set nobody had tuned on
(labels_holdout3.jsonl, 696 messages), rules-6 reached complaint F1 0.806; a
linear model over word and character n-grams, trained on the three older sets
only, reached 0.848 alone. Two careful annotators agree on 99.7% of the
complaint labels (benchmarks/labels_agreement.py), so the gap is the rules',
not the labels'.

The vote (lm-2): the rules decide a complaint unless the model is sure
(probability below ``complaint_low`` or from ``complaint_high`` on, which then
is the score), so the rules' handling of negation and sarcasm stands wherever
the model hesitates; a cancellation the rules found stands unless the model
gives it less than ``cancel_veto``, and the model alone flags one from
``cancel_add`` on where the rules saw no cancellation phrase at all (a phrase
they saw and ruled out, "I'm not going to cancel yet", stays ruled out). The
settings were chosen by leaving out, in turn, each of the four sets no rule
was written from (benchmarks/train_label_model.py --cv). The weights are
trained on 4,880 messages by eight writers; scored once on
labels_holdout4.jsonl (806 messages, written blind): complaint F1 0.772 ->
0.866, cancellation precision 0.865 -> 0.908 (README). The n-grams that pushed
the model are quoted as evidence beside the rules' phrases.

Features, all on the labeller's normalised text (lower case, accents folded):
tokens are runs of ``[a-z0-9]`` plus ``!`` and ``?`` on their own; the model
sees token unigrams and bigrams ("won t", "t load") and the character 3-5
grams of each token padded with spaces (" refu", "und "), which carry across
inflections, typos and languages. Each block is binary and L2-normalised per
ticket, as scikit-learn's ``CountVectorizer(binary=True)`` + ``normalize``
computed it at training time; :func:`ngrams` is the reference definition
both sides use. (The holdout3 figures above used scikit-learn's own
``char_wb`` tokens, split on white space; these kernel-friendly tokens were
chosen afterwards by the same leave-one-set-out CV on the three older sets:
complaint F1 0.872 against 0.868. They have not been scored on unseen text.)

Speed: a numba kernel walks the Arrow UTF-8 buffer once, hashes every n-gram
(FNV-1a, 64 bit) and looks it up in an open-addressing table built from the
weights file; no Python runs per ticket. A token's character n-grams are
looked up once per batch (cached by the token's hash), and only the first
MAX_BYTES of a ticket are read. The weights are a reviewable JSON
file shipped beside this module and trained by
``benchmarks/train_label_model.py``.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from functools import cache
from itertools import pairwise
from pathlib import Path

import numba
import numpy as np
import polars as pl

MODEL_PATH = Path(__file__).with_name("label_model.json")

_TOKEN = re.compile(r"[a-z0-9]+|[!?]")
_CHAR_SIZES = (3, 4, 5)

_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)
_WORD_NS = ord("w")
_CHAR_NS = ord("c")
_TOP = 3  # n-grams quoted as evidence per ticket
# The model reads a ticket's first MAX_BYTES bytes of normalised text (subject
# first): it was trained on messages of at most 560 bytes, the opening says what
# the ticket is about, and a 2 KB ticket then costs what a 1 KB one does.
MAX_BYTES = 1024


def tokens(text: str) -> list[str]:
    """The model's tokens: what the kernel treats as one, on normalised text."""
    return _TOKEN.findall(text.encode()[:MAX_BYTES].decode(errors="ignore"))


def word_ngrams(text: str) -> list[str]:
    toks = tokens(text)
    return toks + [f"{a} {b}" for a, b in pairwise(toks)]


def char_ngrams(text: str) -> list[str]:
    """Character n-grams inside each padded token, as scikit-learn's ``char_wb``
    counts them: a token shorter than ``n`` counts once, whole."""
    out: list[str] = []
    for tok in tokens(text):
        padded = f" {tok} "
        for n in _CHAR_SIZES:
            if len(padded) <= n:
                out.append(padded)
                break
            out.extend(padded[i : i + n] for i in range(len(padded) - n + 1))
    return out


def ngrams(text: str) -> tuple[list[str], list[str]]:
    """Word and character n-grams of one normalised text (reference, not hot path)."""
    return word_ngrams(text), char_ngrams(text)


@dataclass(frozen=True)
class LabelModel:
    """Weights of both targets over one shared vocabulary, and the lookup table."""

    version: str
    digest: str  # sha256 of the weights file: part of the labeller version
    features: tuple[str, ...]  # the vocabulary; index = feature id
    is_char: np.ndarray  # bool per feature: the character block (else the word block)
    quotable: np.ndarray  # bool per feature: reads as a phrase, so it may be quoted as evidence
    complaint_intercept: float
    cancel_intercept: float
    # The vote: the rules decide unless the model is sure; below ``complaint_low``
    # or from ``complaint_high`` on, the model's probability is the score.
    complaint_low: float
    complaint_high: float
    cancel_veto: float  # a rules cancellation stands only when the model's p >= this
    cancel_add: float  # the model alone flags a cancellation at p >= this
    table: np.ndarray  # see _pack_table
    weights: np.ndarray  # (features, 2): complaint, cancel
    n_word: int  # features [0, n_word) are word n-grams, the rest character n-grams


def _fnv(namespace: int, data: bytes) -> int:
    h = int(_FNV_OFFSET)
    for byte in bytes([namespace]) + data:
        h = ((h ^ byte) * int(_FNV_PRIME)) & 0xFFFFFFFFFFFFFFFF
    return h or 1


def _table(features: tuple[str, ...], is_char: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Open addressing, linear probing, at most a quarter full; key 0 means empty."""
    size = 1 << max(4, (4 * len(features)).bit_length())
    keys = np.zeros(size, dtype=np.uint64)
    ids = np.full(size, -1, dtype=np.int32)
    mask = size - 1
    for fid, (feature, char) in enumerate(zip(features, is_char, strict=True)):
        key = _fnv(_CHAR_NS if char else _WORD_NS, feature.encode("ascii"))
        slot = key & mask
        while keys[slot]:
            if int(keys[slot]) >> _ID_BITS == key >> _ID_BITS:
                raise ValueError(f"hash collision on n-gram {feature!r}")
            slot = (slot + 1) & mask
        keys[slot] = key
        ids[slot] = fid
    return keys, ids


def _quotable(ngram: str) -> bool:
    """Word n-grams a reader can make sense of: a two-word phrase, or a word of
    five letters or more ("charged", "twice", "my plan"), not "s" or "this"."""
    if "!" in ngram or "?" in ngram or not any(c.isalpha() for c in ngram):
        return False
    return " " in ngram or len(ngram) >= 5


def load_model(path: Path = MODEL_PATH) -> LabelModel:
    """Read a weights file (see benchmarks/train_label_model.py for its format)."""
    raw = path.read_bytes()
    spec = json.loads(raw)
    rows = [*(("w", *r) for r in spec["word"]), *(("c", *r) for r in spec["char"])]
    features = tuple(r[1] for r in rows)
    is_char = np.array([r[0] == "c" for r in rows], dtype=np.bool_)
    keys, ids = _table(features, is_char)
    quotable = np.array(
        [not char and _quotable(f) for f, char in zip(features, is_char, strict=True)],
        dtype=np.bool_,
    )
    return LabelModel(
        version=spec["version"],
        digest=hashlib.sha256(raw).hexdigest(),
        features=features,
        is_char=is_char,
        quotable=quotable,
        complaint_intercept=float(spec["intercept"]["complaint"]),
        cancel_intercept=float(spec["intercept"]["cancel"]),
        complaint_low=float(spec["vote"]["complaint_low"]),
        complaint_high=float(spec["vote"]["complaint_high"]),
        cancel_veto=float(spec["vote"]["cancel_veto"]),
        cancel_add=float(spec["vote"].get("cancel_add", 2.0)),  # > 1: never
        table=_pack_table(keys, ids),
        weights=np.array([[r[2], r[3]] for r in rows], dtype=np.float64).reshape(-1, 2),
        n_word=len(spec["word"]),
    )


@cache
def default_model() -> LabelModel:
    """The shipped weights, read once per process (they are code, not data)."""
    return load_model()


# --- the kernel ------------------------------------------------------------------
# One table slot is one uint64: the n-gram's hash above bit 24, its feature id + 1
# below; the slot is chosen by the low hash bits, so slot and fingerprint together
# compare 57 bits of the hash. One memory access per probe, the table 1 MB.

_ID_BITS = 24
_ID_MASK = (1 << _ID_BITS) - 1
_SEEN_SLOTS = 4096  # distinct tokens remembered per ticket (repeats skip their char n-grams)
_CACHE_SLOTS = 1 << 16  # distinct tokens whose features are cached per batch and thread
_CACHE_POOL = 1 << 20  # feature ids those cached tokens hold, in all

_JIT = {"cache": True, "nogil": True, "error_model": "numpy"}


def _pack_table(keys: np.ndarray, ids: np.ndarray) -> np.ndarray:
    packed = (keys & ~np.uint64(_ID_MASK)) | (ids + 1).astype(np.uint64)
    return np.where(keys == 0, np.uint64(0), packed)


@numba.njit(**_JIT)
def _step(h: np.uint64, byte: np.uint64) -> np.uint64:
    return (h ^ byte) * _FNV_PRIME


@numba.njit(**_JIT)
def _find(table: np.ndarray, h: np.uint64) -> int:
    """Feature id of hash ``h`` or -1 (the same probe order as :func:`_table`)."""
    if h == 0:
        h = np.uint64(1)
    mask = np.uint64(table.shape[0] - 1)
    high = h & ~np.uint64(_ID_MASK)
    slot = h & mask
    while True:
        entry = table[slot]
        if entry == 0:
            return -1
        if (entry & ~np.uint64(_ID_MASK)) == high:
            return np.int64(entry & np.uint64(_ID_MASK)) - 1
        slot = (slot + np.uint64(1)) & mask


@numba.njit(**_JIT)
def _score_range(
    data, offsets, first, last, max_bytes, table, weights, n_word, quotable, out, out_top
):  # type: ignore[no-untyped-def]
    n_features = weights.shape[0]
    stamp = np.full(n_features, -1, dtype=np.int64)
    seen_key = np.zeros(_SEEN_SLOTS, dtype=np.uint64)
    seen_doc = np.full(_SEEN_SLOTS, -1, dtype=np.int64)
    found = np.empty(16 * 1024, dtype=np.int64)
    cache_key = np.zeros(_CACHE_SLOTS, dtype=np.uint64)
    cache_start = np.zeros(_CACHE_SLOTS, dtype=np.int64)
    cache_len = np.zeros(_CACHE_SLOTS, dtype=np.int64)
    pool = np.empty(_CACHE_POOL, dtype=np.int64)
    pool_used = 0
    n_cached = 0
    sums = np.zeros((2, 3))
    top_w = np.zeros((2, out_top.shape[2]))
    n_top = out_top.shape[2]
    w_ns = _step(_FNV_OFFSET, np.uint64(_WORD_NS))
    c_ns = _step(_FNV_OFFSET, np.uint64(_CHAR_NS))
    space = np.uint64(32)
    for doc in range(first, last):
        pos = offsets[doc]
        end = min(offsets[doc + 1], pos + max_bytes)
        n_found = 0
        n_seen = 0
        prev_h = np.uint64(0)
        has_prev = False
        while pos < end:
            b = data[pos]
            if (97 <= b <= 122) or (48 <= b <= 57):
                stop = pos + 1
                while stop < end and ((97 <= data[stop] <= 122) or (48 <= data[stop] <= 57)):
                    stop += 1
            elif b == 33 or b == 63:  # ! ?
                stop = pos + 1
            else:
                pos += 1
                continue
            if n_found + 3 * (stop - pos) + 8 > found.shape[0]:
                break  # a pathological ticket: score what was read
            h = w_ns
            for i in range(pos, stop):
                h = _step(h, np.uint64(data[i]))
            if has_prev:  # the bigram: previous token, a space, this token
                hb = _step(prev_h, space)
                for i in range(pos, stop):
                    hb = _step(hb, np.uint64(data[i]))
                found[n_found] = _find(table, hb)
                n_found += 1
            prev_h = h
            has_prev = True
            # a token already met in this ticket adds nothing new but its bigram
            slot = np.int64(h & np.uint64(_SEEN_SLOTS - 1))
            repeat = False
            while seen_doc[slot] == doc:
                if seen_key[slot] == h:
                    repeat = True
                    break
                slot = (slot + 1) & (_SEEN_SLOTS - 1)
            if not repeat and n_seen < _SEEN_SLOTS // 2:
                seen_doc[slot] = doc
                seen_key[slot] = h
                n_seen += 1
            if not repeat:
                # the token's features (unigram, character 3-5 grams of " token ")
                # are the same in every ticket: computed once per batch and cached
                slot = np.int64(h & np.uint64(_CACHE_SLOTS - 1))
                cached = -1
                while cache_key[slot] != 0:
                    if cache_key[slot] == h:
                        cached = slot
                        break
                    slot = (slot + 1) & (_CACHE_SLOTS - 1)
                if cached >= 0:
                    start = cache_start[cached]
                    for j in range(start, start + cache_len[cached]):
                        found[n_found] = pool[j]
                        n_found += 1
                else:
                    first_new = n_found
                    found[n_found] = _find(table, h)
                    n_found += 1
                    length = stop - pos + 2
                    for s in range(length - 2):
                        hc = c_ns
                        for p in range(s, min(s + 5, length)):
                            byte = (
                                space
                                if (p == 0 or p == length - 1)
                                else np.uint64(data[pos + p - 1])
                            )
                            hc = _step(hc, byte)
                            if p - s >= 2:
                                fid = _find(table, hc)
                                if fid >= 0:
                                    found[n_found] = fid
                                    n_found += 1
                    size = n_found - first_new
                    if n_cached < _CACHE_SLOTS // 2 and pool_used + size <= pool.shape[0]:
                        cache_key[slot] = h
                        cache_start[slot] = pool_used
                        cache_len[slot] = size
                        pool[pool_used : pool_used + size] = found[first_new:n_found]
                        pool_used += size
                        n_cached += 1
            pos = stop
        # binary features: each counts once; the two blocks are L2-normalised apart.
        # The strongest quotable n-grams pushing towards each target (complaint,
        # cancellation) are kept on the way, strongest first.
        sums[:] = 0.0
        top_w[:] = 0.0
        out_top[doc, :, :] = -1
        for j in range(n_found):
            fid = found[j]
            if fid < 0 or stamp[fid] == doc:
                continue
            stamp[fid] = doc
            block = 1 if fid >= n_word else 0
            sums[block, 0] += weights[fid, 0]
            sums[block, 1] += weights[fid, 1]
            sums[block, 2] += 1.0
            if not quotable[fid]:
                continue
            for target in range(2):
                w = weights[fid, target]
                if w > top_w[target, n_top - 1]:
                    k = n_top - 1
                    while k > 0 and top_w[target, k - 1] < w:
                        top_w[target, k] = top_w[target, k - 1]
                        out_top[doc, target, k] = out_top[doc, target, k - 1]
                        k -= 1
                    top_w[target, k] = w
                    out_top[doc, target, k] = fid
        for k in range(2):
            out[doc, k] = 0.0
            for block in range(2):
                if sums[block, 2] > 0:
                    out[doc, k] += sums[block, k] / math.sqrt(sums[block, 2])


@numba.njit(parallel=True, cache=True)
def _score_all(data, offsets, max_bytes, table, weights, n_word, quotable, out, out_top, chunks):  # type: ignore[no-untyped-def]
    n = offsets.shape[0] - 1
    for c in numba.prange(chunks):
        _score_range(
            data, offsets, c * n // chunks, (c + 1) * n // chunks, max_bytes,
            table, weights, n_word, quotable, out, out_top,
        )  # fmt: skip


def score_texts(texts: pl.Series, model: LabelModel | None = None) -> pl.DataFrame:
    """Model probabilities for normalised texts (see transforms.labels), one row each:
    ``lm_complaint`` and ``lm_cancel`` (0..1), and ``lm_ngrams`` /
    ``lm_cancel_ngrams``, the word n-grams that pushed hardest towards a
    complaint / a cancellation, strongest first."""
    model = model or default_model()
    array = texts.fill_null("").cast(pl.String).to_arrow(compat_level=pl.CompatLevel.oldest())
    n = len(array)
    out = np.zeros((n, 2))
    out_top = np.full((n, 2, _TOP), -1, dtype=np.int64)
    if n:
        _, offset_buf, data_buf = array.buffers()
        offsets = np.frombuffer(offset_buf, dtype=np.int64)[array.offset : array.offset + n + 1]
        data = np.frombuffer(data_buf, dtype=np.uint8) if data_buf else np.zeros(0, dtype=np.uint8)
        _score_all(
            data, offsets, MAX_BYTES, model.table, model.weights, model.n_word, model.quotable,
            out, out_top,
            # few chunks, so each keeps a warm token cache; two per thread
            max(1, min(n // 256, 2 * numba.get_num_threads())),
        )  # fmt: skip
    vocab = pl.Series("vocab", [*model.features, None], dtype=pl.String)
    top = np.where(out_top < 0, len(model.features), out_top)

    def quoted(target: int) -> pl.Series:
        ids = np.ascontiguousarray(top[:, target, :]).ravel()
        return vocab.gather(ids).reshape((n, _TOP)).arr.to_list().list.drop_nulls()

    return pl.DataFrame(
        {
            "lm_complaint": 1.0 / (1.0 + np.exp(-(out[:, 0] + model.complaint_intercept))),
            "lm_cancel": 1.0 / (1.0 + np.exp(-(out[:, 1] + model.cancel_intercept))),
            "lm_ngrams": quoted(0),
            "lm_cancel_ngrams": quoted(1),
        },
        schema={
            "lm_complaint": pl.Float64,
            "lm_cancel": pl.Float64,
            "lm_ngrams": pl.List(pl.String),
            "lm_cancel_ngrams": pl.List(pl.String),
        },
    )
