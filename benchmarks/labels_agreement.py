"""How far does a second, blind annotator agree with a set's own labels?

Why: the labeller's goals (complaint F1 >= 0.9, cancellation precision >= 0.9)
only mean something if two careful people labelling the same messages by the
same guidelines agree well above that. Each evaluation set was written and
labelled by one person; a second annotator then labelled the *texts alone*
(ids and texts, never the labels, the rules or any other set), one message at
a time, by the same guidelines as the writer. Their labels are scored here
exactly as the labeller is scored, with the writer's labels as the truth:

    .venv/bin/python benchmarks/labels_agreement.py [--set holdout2|holdout3] [--json]

``benchmarks/data/labels_<set>.annotator_b.jsonl`` holds the second
annotator's labels, one JSON object per line with ``id`` (the line number in
the set, from 0), ``is_complaint``, ``cancel_intent``, ``topics`` and
``language``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.labels_eval import _score  # noqa: E402

DATA = ROOT / "benchmarks" / "data"
TOPICS = ("pricing", "dvd", "profiles", "playback", "account", "content")
LANGUAGES = ("en", "de", "fr", "es")


def _read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def _prf(gold: list[bool], pred: list[bool]) -> dict[str, float]:
    """Scored exactly as the labeller is (labels_eval's own counting)."""
    score = _score("", gold, pred)
    return {
        "precision": score.precision,
        "recall": score.recall,
        "f1": score.f1,
        "support": score.support,
    }


def _kappa(gold: list[bool], pred: list[bool]) -> float:
    """Cohen's kappa: agreement beyond what the two base rates give by chance."""
    n = len(gold)
    observed = sum(g == p for g, p in zip(gold, pred, strict=True)) / n
    pg, pp = sum(gold) / n, sum(pred) / n
    chance = pg * pp + (1 - pg) * (1 - pp)
    return (observed - chance) / (1 - chance) if chance < 1 else 1.0


def agreement(name: str) -> dict[str, Any]:
    gold = _read(DATA / f"labels_{name}.jsonl")
    second = {int(r["id"]): r for r in _read(DATA / f"labels_{name}.annotator_b.jsonl")}
    if sorted(second) != list(range(len(gold))):
        raise SystemExit(f"{name}: annotator B labelled {len(second)} of {len(gold)} messages")
    b = [second[i] for i in range(len(gold))]
    out: dict[str, Any] = {"set": name, "messages": len(gold)}
    for key in ("is_complaint", "cancel_intent"):
        g = [bool(r[key]) for r in gold]
        p = [bool(r[key]) for r in b]
        out[key] = {**_prf(g, p), "kappa": _kappa(g, p)}
    pairs = list(zip(gold, b, strict=True))
    out["complaint_f1_by_language"] = {
        lang: _prf(
            [bool(g["is_complaint"]) for g, _ in pairs if g["language"] == lang],
            [bool(s["is_complaint"]) for g, s in pairs if g["language"] == lang],
        )["f1"]
        for lang in LANGUAGES
    }
    out["topic_f1"] = {
        t: _prf([t in r["topics"] for r in gold], [t in s["topics"] for s in b])["f1"]
        for t in TOPICS
    }
    out["language_agreement"] = sum(
        r["language"] == s["language"] for r, s in zip(gold, b, strict=True)
    ) / len(gold)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", choices=["holdout2", "holdout3"], action="append")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = [agreement(name) for name in args.set or ["holdout2", "holdout3"]]
    if args.json:
        json.dump(results, sys.stdout, indent=2)
        print()
        return
    for r in results:
        c, k = r["is_complaint"], r["cancel_intent"]
        print(f"{r['set']} ({r['messages']} messages), annotator B against the writer's labels:")
        print(
            f"  complaint      P {c['precision']:.3f}  R {c['recall']:.3f}  F1 {c['f1']:.3f}"
            f"  kappa {c['kappa']:.3f}"
        )
        print(
            f"  cancel intent  P {k['precision']:.3f}  R {k['recall']:.3f}  F1 {k['f1']:.3f}"
            f"  kappa {k['kappa']:.3f}"
        )
        by_lang = " / ".join(f"{v:.2f}" for v in r["complaint_f1_by_language"].values())
        print(f"  complaint F1 {' / '.join(LANGUAGES)}: {by_lang}")
        topics = " / ".join(f"{v:.2f}" for v in r["topic_f1"].values())
        print(f"  topic F1 {' / '.join(TOPICS)}: {topics}")
        print(f"  language agreement {r['language_agreement']:.3f}")


if __name__ == "__main__":
    main()
