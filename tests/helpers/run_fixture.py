"""A finished-looking run directory without training: the tiny config, a real BPE, random experts."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers.experts import make_expert
from hdee.config import load_config
from hdee.data.tokenizer import save_tokenizer, tokenizer_hash, train_bpe
from hdee.expert_dir import record_path
from hdee.core.fsutil import atomic_write_json
from hdee.core.layout import RunLayout
from hdee.plan import EnsemblePlan, Plan
from tests.helpers.paths import ROOT

VOCAB = 300
CORPUS = [
    "def add(a, b):\n    return a + b\n",
    "The quick brown fox jumps over the lazy dog while the cat sleeps.\n",
    "import os\nfor name in os.listdir('.'):\n    print(name)\n",
    "Question: what colour is the sky? Answer: blue, on a clear day.\n",
]


def make_run(root: Path) -> RunLayout:
    """config.json (configs/tiny.toml), data/tokenizer.json, three experts in two strategies plus a seed."""
    cfg = load_config(ROOT / "configs/tiny.toml")
    layout = RunLayout(root)
    atomic_write_json(layout.config_snapshot, cfg.model_dump(mode="json"))
    layout.data_dir.mkdir(parents=True, exist_ok=True)
    save_tokenizer(train_bpe(CORPUS * 50, VOCAB), layout.tokenizer_path)
    th = tokenizer_hash(layout.tokenizer_path)
    specs = {
        "train-easy-i2-M-8-aaaa": ("pydoc_topics", "easy", "M", 64),
        "train-hard-i2-M-8-bbbb": ("c_headers", "hard", "M", 64),
        "train-hard-i2-L-8-cccc": ("c_headers", "hard", "L", 80),
        "seed-M-dddd": (None, None, "M", 64),
    }
    for i, (eid, (dom, lin, size, inter)) in enumerate(specs.items()):
        path = make_expert(layout.expert_dir(eid), 10 + i, intermediate=inter, vocab=VOCAB, tokenizer_hash=th,
                           domain=dom or "", size=size, scale=20)
        meta = json.loads(record_path(path).read_text())
        meta.update({"kind": "seed" if dom is None else "train", "lineage": lin, "size_name": size,
                     "domains": [dom] if dom else ["pydoc_topics", "c_headers"], "domain": dom})
        record_path(path).write_text(json.dumps(meta))
    plan = Plan(
        config_name=cfg.name,
        vocab=VOCAB,
        budget_flops=1.0,
        jobs=[],
        experts={eid: RunLayout.expert_rel(eid) for eid in specs},
        ensembles={
            "MHo-IHo": EnsemblePlan(experts=["train-easy-i2-M-8-aaaa", "train-hard-i2-M-8-bbbb"], domain_flops=1.0),
            "MHe-IHo": EnsemblePlan(experts=["train-easy-i2-M-8-aaaa", "train-hard-i2-L-8-cccc"], domain_flops=1.0),
        },
    )
    plan.write(layout.plan_json)
    return layout
