"""Step 1: rules-6's outputs on the four readable labelled sets, one line per message.

Run with the project's ``.venv/bin/python`` (the embedding venv need not have
backlash's dependencies). Reads only eval, holdout, holdout2 and holdout3:
never a held-out set that is still blind.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.labels_eval import SETS, load_eval  # noqa: E402
from transforms.labels import label_tickets  # noqa: E402

# Work files (rules outputs, embeddings, results): kept out of git.
HERE = Path(os.environ.get("EMBED_WORK", ROOT / "benchmarks" / ".data" / "embedding"))
NAMES = ("eval", "holdout", "holdout2", "holdout3")


def main() -> None:
    HERE.mkdir(parents=True, exist_ok=True)
    with (HERE / "rules_out.jsonl").open("w", encoding="utf-8") as out:
        for name in NAMES:
            path = SETS[name]
            gold = load_eval(path)
            lines = path.read_text(encoding="utf-8").splitlines()
            texts = [json.loads(line)["text"] for line in lines if line]
            labels = label_tickets(gold.select("ticket_key", "subject", "body"))
            joined = gold.join(labels, on="ticket_key", how="left", maintain_order="left")
            for i, row in enumerate(joined.iter_rows(named=True)):
                record = {
                    "set": name,
                    "i": i,
                    "text": texts[i],
                    "language": row["gold_language"],
                    "gold_complaint": row["gold_complaint"],
                    "gold_cancel": row["gold_cancel"],
                    "rule_score": row["complaint_score"],
                    "rule_complaint": row["is_complaint"],
                    "rule_cancel": row["cancel_intent"],
                }
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
            print(name, joined.height)


if __name__ == "__main__":
    main()
