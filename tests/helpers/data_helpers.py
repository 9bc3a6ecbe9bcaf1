"""A small files-based experiment config and corpus for the data tests."""

from __future__ import annotations

import json
import random
from pathlib import Path

from hdee.core.fsutil import sha256_file
from hdee.core.lock import LOCK_FILE

TRAIN = ["alpha", "beta", "gamma", "delta"]
HELDOUT = ["omega"]

BODY = """
[data]
seq_len = 16
max_train_tokens = {max_train}
max_eval_tokens = {max_eval}
{data_extra}
[data.tokenizer]
kind = "bpe"
vocab_size = {vocab}
train_bytes = 60_000

[model]
hidden = 32
layers = 2
heads = 2
intermediate = {{ S = 48, M = 64, L = 80 }}

[seed_models]
tokens = 1024

[budget]
baseline = {{ size = "M", steps = 2 }}

[[lineages]]
name = "a"
tier = "easy"
domains = ["alpha", "beta"]

[[lineages]]
name = "b"
tier = "hard"
domains = ["gamma", "delta"]
"""


def _corpus(root: Path, name: str, docs: int = 120) -> None:
    rng = random.Random(name)
    words = ["".join(rng.choice("abcdefghijklmnop"[: 6 + len(name)]) for _ in range(rng.randint(2, 7))) for _ in range(60)]
    lines = [json.dumps({"text": " ".join(rng.choice(words) for _ in range(rng.randint(20, 60)))}) for _ in range(docs)]
    (root / f"{name}.jsonl").write_text("\n".join(lines) + "\n")


def make_config(tmp_path: Path, vocab: int = 300, max_train: int = 3000, data_extra: str = "", extra_domains: str = "",
                sources: dict | None = None, max_eval: int = 400) -> Path:
    corpus = tmp_path / "corpus"
    corpus.mkdir(exist_ok=True)
    text = 'name = "t"\nstrategies = ["MHo-IHo"]\n' + BODY.format(vocab=vocab, max_train=max_train, max_eval=max_eval, data_extra=data_extra)
    for name in TRAIN + HELDOUT:
        if not (corpus / f"{name}.jsonl").exists():
            _corpus(corpus, name)
        role = "heldout" if name in HELDOUT else "train"
        src = (sources or {}).get(name, f'{{ kind = "files", paths = ["{corpus / name}.jsonl"] }}')
        text += f'\n[[domains]]\nname = "{name}"\nrole = "{role}"\nsource = {src}\n'
    path = tmp_path / "cfg.toml"
    path.write_text(text + extra_domains)
    return path


def digests(root: Path) -> dict[str, str]:
    """Every output file's sha256 (not the lock file, which only names the last command that held the run)."""
    return {str(p.relative_to(root)): sha256_file(p) for p in sorted(root.rglob("*")) if p.is_file() and p.name != LOCK_FILE}
