"""Tiny models, token data and jobs for the training tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from hdee.data.shards import DomainManifest
from hdee.core.fsutil import sha256_file

from hdee.config import Schedule, TrainConfig
from hdee.model import SizeSpec
from hdee.train import Budget, DataMix, TrainJob

VOCAB = 256
SEQ = 16
TOKHASH = "tok-test"


def tiny_spec(intermediate: int = 64, **kw) -> SizeSpec:
    args = dict(name="M", vocab=VOCAB, hidden=32, layers=2, heads=4, kv_heads=4, intermediate=intermediate, seq_len=SEQ)
    args.update(kw)
    return SizeSpec(**args)


def make_domain(root: Path, name: str, seed: int, n_train: int = 4000, n_val: int = 600, **manifest) -> Path:
    """A domain dir with train/val/test .bin files (uint16) and a manifest.json."""
    d = root / name
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    # a learnable pattern: a noisy cycle whose stride depends on the domain
    stride = 1 + seed % 7
    for split, n in (("train", n_train), ("val", n_val), ("test", n_val)):
        base = (np.arange(n) * stride) % 64
        noise = rng.integers(0, VOCAB, size=n)
        toks = np.where(rng.random(n) < 0.8, base, noise).astype("<u2")
        toks.tofile(d / f"{split}.bin")
    info = {
        "domain": name,
        "role": "train",
        "source": {"kind": "files", "paths": []},
        "source_fingerprint": {},
        "fingerprint": f"test-{name}-{seed}",
        "dtype": "uint16",
        "tokenizer_hash": TOKHASH,
        "vocab_size": VOCAB,
        "eos_id": 0,
        "splits": {
            split: {"file": f"{split}.bin", "tokens": n, "sha256": sha256_file(d / f"{split}.bin")}
            for split, n in (("train", n_train), ("val", n_val), ("test", n_val))
        },
    }
    info.update(manifest)
    DomainManifest.model_validate(info)
    (d / "manifest.json").write_text(json.dumps(info))
    return d


def tiny_job(out_dir: Path, domains: list[Path], steps: int = 6, **kw) -> TrainJob:
    train = dict(batch_tokens=4 * SEQ, micro_batch_tokens=2 * SEQ, eval_every=3, eval_tokens=8 * SEQ, checkpoint_every=2)
    train.update(kw.pop("train", {}))
    args = dict(
        out_dir=out_dir,
        size=tiny_spec(),
        data=[DataMix(domain_dir=d) for d in domains],
        val=list(domains),
        tokenizer_hash=TOKHASH,
        budget=Budget(steps=steps),
        schedule=Schedule(lr=3e-3, min_lr=3e-4, warmup=2),
        train=TrainConfig(**train),
        seed=1,
        meta={"domain": domains[0].name, "lineage": "l0", "iteration": 1},
    )
    args.update(kw)
    return TrainJob(**args)
