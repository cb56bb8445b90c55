"""The n-gram layer: the compiled kernel against its reference, the vote, the
evidence it adds, and the version its weights give the labeller."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transforms.label_model import (
    MAX_BYTES,
    MODEL_PATH,
    LabelModel,
    char_ngrams,
    default_model,
    load_model,
    score_texts,
    word_ngrams,
)
from transforms.labels import (
    LABELLER_RULES_VERSION,
    label_tickets,
    labeller_version,
    normalised_texts,
)
from transforms.taxonomy import DEFAULT_TOPICS


def _frame(*bodies: str) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "ticket_key": [f"t:{i}" for i in range(len(bodies))],
            "subject": [None] * len(bodies),
            "body": list(bodies),
        },
        schema={"ticket_key": pl.String, "subject": pl.String, "body": pl.String},
    )


def _reference(model: LabelModel, text: str) -> tuple[float, float]:
    """Probabilities computed the slow, obvious way from the weights file."""
    index = {(fid >= model.n_word, feature): fid for fid, feature in enumerate(model.features)}
    logits = [model.complaint_intercept, model.cancel_intercept]
    for is_char, grams in ((False, word_ngrams(text)), (True, char_ngrams(text))):
        ids = {index[(is_char, g)] for g in grams if (is_char, g) in index}
        if ids:
            for k in range(2):
                logits[k] += sum(model.weights[i, k] for i in ids) / math.sqrt(len(ids))
    return 1 / (1 + math.exp(-logits[0])), 1 / (1 + math.exp(-logits[1]))


TRICKY = [
    "",
    "!?",
    "a",
    "charged twice!! why???",
    "l'abonnement a augmente de 4 euros, c'est n'importe quoi",
    "seit dem update sturzt die app standig ab",
    "emoji-angry the app emoji-angry emoji-angry",
    "x" * 5000,
    "refund " * 400,
    "caf\u00e9 na\u00efve \u4e2d\u6587 \U0001f600 10.99 -> 15.99",
]


def test_kernel_matches_the_reference_on_tricky_texts() -> None:
    model = default_model()
    out = score_texts(pl.Series(TRICKY), model)
    for text, p_c, p_k in zip(TRICKY, out["lm_complaint"], out["lm_cancel"], strict=True):
        ref_c, ref_k = _reference(model, text)
        assert p_c == pytest.approx(ref_c, abs=1e-9), text
        assert p_k == pytest.approx(ref_k, abs=1e-9), text


@settings(max_examples=40, deadline=None)
@given(st.lists(st.text(alphabet="abcdeilnorstuy019 !?.'\u00e9\n", max_size=80), max_size=5))
def test_kernel_matches_the_reference_on_generated_texts(texts: list[str]) -> None:
    model = default_model()
    out = score_texts(pl.Series(texts, dtype=pl.String), model)
    assert out.height == len(texts)
    for text, p_c, p_k in zip(texts, out["lm_complaint"], out["lm_cancel"], strict=True):
        ref_c, ref_k = _reference(model, text)
        assert p_c == pytest.approx(ref_c, abs=1e-9)
        assert p_k == pytest.approx(ref_k, abs=1e-9)


def test_a_sliced_series_scores_like_the_whole() -> None:
    texts = pl.Series(["it keeps freezing", "love the new app", "charged twice", "hi"] * 200)
    whole = score_texts(texts)
    part = score_texts(texts.slice(301, 250))
    assert part["lm_complaint"].to_list() == whole["lm_complaint"].slice(301, 250).to_list()


def test_only_the_opening_bytes_are_read() -> None:
    opening = "the app crashed again and i want my money back. " * 30
    assert len(opening.encode()) > MAX_BYTES
    out = score_texts(pl.Series([opening, opening + "thank you so much, all good now " * 50]))
    assert out["lm_complaint"][0] == out["lm_complaint"][1]


@pytest.mark.parametrize(
    "text",
    [
        # written for this test, not copied from a labelled set: the rules see no
        # complaint cue; the model reads a fault report
        "Ich habe im Mai gekündigt und wurde im Juni trotzdem belastet.",
    ],
)
def test_the_vote_flags_a_complaint_the_rules_miss_and_quotes_the_model(text: str) -> None:
    rules = label_tickets(_frame(text), rules_only=True).row(0, named=True)
    voted = label_tickets(_frame(text)).row(0, named=True)
    assert not rules["is_complaint"], rules
    assert voted["is_complaint"], voted
    quoted = set(voted["evidence"]) - set(rules["evidence"])
    assert quoted, "the n-grams that tipped the vote must be quoted"
    normalised = normalised_texts(pl.Series([None], dtype=pl.String), pl.Series([text]))[0]
    assert all(g in " ".join(word_ngrams(normalised)) for g in quoted)


def test_the_rules_decide_unless_the_model_is_sure(tmp_path: Path) -> None:
    texts = ["This is unacceptable, charged twice.", "How do I add a profile?", "ok", "hi"]
    frame = _frame(*texts)
    rules = label_tickets(frame, rules_only=True)["complaint_score"].to_numpy()
    voted = label_tickets(frame)["complaint_score"].to_numpy()
    texts_seen = normalised_texts(frame["subject"], frame["body"])
    model = score_texts(texts_seen)["lm_complaint"].to_numpy()
    m = default_model()
    sure = (model < m.complaint_low) | (model >= m.complaint_high)
    assert voted == pytest.approx(np.where(sure, model, rules))
    # a model that is never sure leaves the rules' scores untouched
    never_sure = {"complaint_low": 0.0, "complaint_high": 1.1, "cancel_veto": 0.0, "cancel_add": 2}
    unsure = _edited_weights(tmp_path, {"vote": never_sure})
    assert label_tickets(frame, model=unsure)["complaint_score"].to_numpy() == pytest.approx(rules)


def _edited_weights(tmp_path: Path, edit: dict[str, object]) -> LabelModel:
    spec = json.loads(MODEL_PATH.read_text(encoding="utf-8"))
    spec.update(edit)
    path = tmp_path / "label_model.json"
    path.write_text(json.dumps(spec), encoding="utf-8")
    return load_model(path)


def test_the_model_vetoes_a_cancellation_and_its_evidence(tmp_path: Path) -> None:
    text = "I am cancelling my account today."
    kept = label_tickets(_frame(text)).row(0, named=True)
    assert kept["cancel_intent"], kept
    sceptic = _edited_weights(tmp_path, {"intercept": {"complaint": 0.0, "cancel": -50.0}})
    vetoed = label_tickets(_frame(text), model=sceptic).row(0, named=True)
    assert not vetoed["cancel_intent"], vetoed
    assert not any("cancel" in e for e in vetoed["evidence"]), vetoed["evidence"]


def test_same_weights_same_version_other_weights_other_version(tmp_path: Path) -> None:
    base = labeller_version(DEFAULT_TOPICS)
    assert base.startswith(LABELLER_RULES_VERSION + "+")
    copy = tmp_path / "copy.json"
    shutil.copyfile(MODEL_PATH, copy)
    assert labeller_version(DEFAULT_TOPICS, load_model(copy)) == base

    spec = json.loads(MODEL_PATH.read_text(encoding="utf-8"))
    spec["word"][0][1] += 0.001  # one weight, one thousandth
    changed = tmp_path / "changed.json"
    changed.write_text(json.dumps(spec), encoding="utf-8")
    assert labeller_version(DEFAULT_TOPICS, load_model(changed)) != base

    rules_only = labeller_version(DEFAULT_TOPICS, rules_only=True)
    assert not rules_only.startswith(LABELLER_RULES_VERSION)
    assert rules_only != base
    labels = label_tickets(_frame("hello"))
    assert labels["labeller_version"].to_list() == [base]


def test_weights_file_is_small_and_names_its_version() -> None:
    assert MODEL_PATH.stat().st_size < 2_000_000
    model = default_model()
    assert LABELLER_RULES_VERSION.endswith("+" + model.version)
    assert 0 < model.n_word < len(model.features)
    assert np.isfinite(model.weights).all()


@pytest.mark.slow
def test_training_reproduces_the_shipped_weights(tmp_path: Path) -> None:
    pytest.importorskip("sklearn", reason="training needs scikit-learn (the train extra)")
    from benchmarks.train_label_model import main

    out = tmp_path / "label_model.json"
    assert main(["--out", str(out)]) == 0
    assert out.read_bytes() == MODEL_PATH.read_bytes()
