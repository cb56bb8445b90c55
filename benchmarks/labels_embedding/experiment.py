"""Step 3: does a MiniLM sentence embedding help rules-6? Protocol in PROTOCOL.md.

Run with the embedding venv (see README.md). Stage ``cv`` only touches
eval/holdout/holdout2; stage ``holdout3`` refuses to run twice
(``holdout3_scored.json`` is the lock).
"""

import json
import os
import sys
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

ROOT = Path(__file__).resolve().parents[2]
# Work files (rules outputs, embeddings, results): not in git.
HERE = Path(os.environ.get("EMBED_WORK", ROOT / "benchmarks" / ".data" / "embedding"))
CS = [0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1, 3, 10]
TRAIN_SETS = ["eval", "holdout", "holdout2"]
TARGETS = {
    "complaint": ("gold_complaint", "rule_complaint"),
    "cancel": ("gold_cancel", "rule_cancel"),
}
CONFIGS = ["emb", "stack", "rules_or"]
LANGS = ["en", "de", "fr", "es"]

rows = [
    json.loads(line)
    for line in (HERE / "rules_out.jsonl").read_text(encoding="utf-8").splitlines()
    if line
]
E = np.load(HERE / "embeddings.npy")
assert E.shape[0] == len(rows)
R = np.array([[r["rule_score"], float(r["rule_complaint"]), float(r["rule_cancel"])] for r in rows])
SET = np.array([r["set"] for r in rows])
LANG = np.array([r["language"] for r in rows])


def gold(target):
    return np.array([r[TARGETS[target][0]] for r in rows], dtype=bool)


def rule(target):
    return np.array([r[TARGETS[target][1]] for r in rows], dtype=bool)


def prf(y, p):
    tp = int((y & p).sum())
    fp = int((~y & p).sum())
    fn = int((y & ~p).sum())
    pr = tp / (tp + fp) if tp + fp else 0.0
    rc = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * pr * rc / (pr + rc) if pr + rc else 0.0
    return pr, rc, f1


def features(config):
    return np.hstack([E, R]) if config == "stack" else E


def fit_predict(config, target, c, train, test):
    x = features(config)
    y = gold(target)
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=5000))
    clf.fit(x[train], y[train])
    p = clf.predict_proba(x[test])[:, 1] >= 0.5
    if config == "rules_or":
        p = p | rule(target)[test]
    return p


def cv():
    table, chosen = [], {}
    for target in TARGETS:
        y = gold(target)
        for config in CONFIGS:
            best = None
            for c in CS:
                folds = []
                for held in TRAIN_SETS:
                    train = np.isin(SET, [s for s in TRAIN_SETS if s != held])
                    test = held == SET
                    folds.append(prf(y[test], fit_predict(config, target, c, train, test)))
                mean_f1 = float(np.mean([f[2] for f in folds]))
                table.append(
                    {
                        "target": target,
                        "config": config,
                        "C": c,
                        "mean_f1": mean_f1,
                        "folds": dict(zip(TRAIN_SETS, folds, strict=True)),
                    }
                )
                if best is None or mean_f1 > best[1] + 1e-12:
                    best = (c, mean_f1)
            chosen[f"{target}/{config}"] = best[0]
        rule_folds = {s: prf(y[s == SET], rule(target)[s == SET]) for s in TRAIN_SETS}
        table.append(
            {
                "target": target,
                "config": "rules-6",
                "C": None,
                "mean_f1": float(np.mean([f[2] for f in rule_folds.values()])),
                "folds": rule_folds,
            }
        )
    (HERE / "cv_results.json").write_text(
        json.dumps({"chosen_C": chosen, "table": table}, indent=1)
    )
    print_cv(table, chosen)


def print_cv(table, chosen):
    lines = [
        "| target | config | C | eval P/R/F1 | holdout P/R/F1 | holdout2 P/R/F1 | mean F1 |",
        "|---|---|---|---|---|---|---|",
    ]
    for t in table:
        if t["config"] != "rules-6" and chosen[f"{t['target']}/{t['config']}"] != t["C"]:
            continue
        cells = ["/".join(f"{v:.3f}" for v in t["folds"][s]) for s in TRAIN_SETS]
        lines.append(
            f"| {t['target']} | {t['config']} | {t['C']} | "
            + " | ".join(cells)
            + f" | {t['mean_f1']:.3f} |"
        )
    lines.append("")
    lines.append("Mean LOSO F1 by C (selection curve):")
    for target in TARGETS:
        for config in CONFIGS:
            curve = [
                f"{t['C']}:{t['mean_f1']:.3f}"
                for t in table
                if t["target"] == target and t["config"] == config
            ]
            lines.append(f"  {target}/{config}: " + "  ".join(curve))
    text = "\n".join(lines)
    print(text)
    (HERE / "cv_table.md").write_text(text + "\n")


def boot(y, base, new, idx_sets, metric):
    out = []
    for idx in idx_sets:
        a = prf(y[idx], base[idx])
        b = prf(y[idx], new[idx])
        out.append(b[metric] - a[metric])
    return float(np.percentile(out, 2.5)), float(np.percentile(out, 97.5))


def holdout3():
    lock = HERE / "holdout3_scored.json"
    if lock.exists():
        sys.exit("holdout3 already scored once: see holdout3_scored.json")
    chosen = json.loads((HERE / "cv_results.json").read_text())["chosen_C"]
    train = np.isin(SET, TRAIN_SETS)
    test = SET == "holdout3"
    lang = LANG[test]
    rng = np.random.default_rng(0)
    n = int(test.sum())
    boots = {"all": [rng.integers(0, n, n) for _ in range(2000)]}
    for lg in LANGS:
        where = np.flatnonzero(lang == lg)
        boots[lg] = [where[rng.integers(0, len(where), len(where))] for _ in range(2000)]
    result = {"chosen_C": chosen, "rows": []}
    for target in TARGETS:
        y = gold(target)[test]
        base = rule(target)[test]
        preds = {"rules-6": base}
        for config in CONFIGS:
            preds[config] = fit_predict(config, target, chosen[f"{target}/{config}"], train, test)
        metric = 2 if target == "complaint" else 0  # F1 for complaint, precision for cancel
        for name, p in preds.items():
            for scope in ["all", *LANGS]:
                idx = np.arange(n) if scope == "all" else np.flatnonzero(lang == scope)
                pr, rc, f1 = prf(y[idx], p[idx])
                row = {
                    "target": target,
                    "config": name,
                    "scope": scope,
                    "n": len(idx),
                    "positives": int(y[idx].sum()),
                    "predicted": int(p[idx].sum()),
                    "P": pr,
                    "R": rc,
                    "F1": f1,
                }
                if name != "rules-6":
                    base_m = prf(y[idx], base[idx])[metric]
                    row["delta_key"] = [pr, rc, f1][metric] - base_m
                    row["delta_key_ci95"] = boot(y, base, p, boots[scope], metric)
                result["rows"].append(row)
    lock.write_text(json.dumps(result, indent=1))
    lines = [
        "| target | config | scope | n (pos) | P | R | F1 | delta key metric vs rules-6 [95% CI] |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        d = ""
        if "delta_key" in r:
            lo, hi = r["delta_key_ci95"]
            d = f"{r['delta_key']:+.3f} [{lo:+.3f}, {hi:+.3f}]"
        lines.append(
            f"| {r['target']} | {r['config']} | {r['scope']} | {r['n']} ({r['positives']}) | "
            f"{r['P']:.3f} | {r['R']:.3f} | {r['F1']:.3f} | {d} |"
        )
    text = "\n".join(lines)
    print(text)
    (HERE / "holdout3_table.md").write_text(text + "\n")


if __name__ == "__main__":
    {"cv": cv, "holdout3": holdout3}[sys.argv[1]]()
