"""What each job's id hashes: exactly the inputs that decide its output, nothing else.

A training job reads a few domains through the run's tokenizer, so its key holds those
domains' source and prepare settings (with what their val/test documents are de-duplicated
against: the training domains, never a held-out one) and the tokenizer's own inputs, never the
rest of the config: adding a held-out domain, a strategy or changing `eval.*` leaves every
trained model's id (and so its directory) as it is. Keys are built from the config alone, so `hdee plan` prints
the same ids before and after anything is prepared.
"""

from __future__ import annotations

from typing import Any

from hdee.config import ExperimentConfig
from hdee.config.sections import TRAIN_DISPLAY_ONLY
from hdee.data.sources import default_max_bytes



def _read_key(cfg: ExperimentConfig, name: str) -> dict[str, Any]:
    """What decides which documents one domain reads and how they split."""
    d = cfg.domain(name)
    data = cfg.data
    return {
        "name": d.name,
        "source": d.source.model_dump(mode="json"),
        "role": d.role,
        "max_bytes": default_max_bytes(d),
        "split": data.split.model_dump(mode="json"),
        "caps": [d.max_train_tokens if d.max_train_tokens is not None else data.max_train_tokens,
                 d.max_eval_tokens if d.max_eval_tokens is not None else data.max_eval_tokens],
        "dtype": data.token_dtype,
    }


def dedup_key(cfg: ExperimentConfig) -> dict[str, Any] | None:
    """What the val/test splits of every domain are de-duplicated against (hdee.data.dedup): the
    settings and the training domains' inputs, never a held-out domain's; None when it is off."""
    dedup = cfg.data.dedup
    if not (dedup.exact or dedup.near or dedup.contained):
        return None
    training = [d.name for d in cfg.domains if d.role in ("train", "seed")]  # as hdee.data.intake.training_domains
    return {"settings": dedup.model_dump(mode="json"), "training": [_read_key(cfg, n) for n in training]}


def domain_key(cfg: ExperimentConfig, name: str) -> dict[str, Any]:
    """What decides one domain's token shards: its source and the prepare settings (not its tier),
    and what its val/test documents are de-duplicated against."""
    return {**_read_key(cfg, name), "dedup": dedup_key(cfg)}


def tokenizer_key(cfg: ExperimentConfig) -> dict[str, Any]:
    """What decides the tokenizer: a pretrained one's path, or the BPE's settings and training domains."""
    t = cfg.data.tokenizer
    if t.kind == "pretrained":
        return {"pretrained": t.path}
    trained_on = [d.name for d in cfg.domains if d.role in ("train", "seed")]  # as hdee.data.prepare trains it
    return {"bpe": t.vocab_size, "train_bytes": t.train_bytes, "split": cfg.data.split.model_dump(mode="json"),
            "domains": [_read_key(cfg, n) for n in trained_on]}  # their train splits, never de-duplicated


def data_key(cfg: ExperimentConfig, domains: list[str]) -> dict[str, Any]:
    """The token windows a job reads: its domains, the tokenizer, the window length."""
    return {"domains": [domain_key(cfg, d) for d in domains], "tokenizer": tokenizer_key(cfg), "seq_len": cfg.data.seq_len}


def train_key(cfg: ExperimentConfig) -> dict[str, Any]:
    """Trainer settings every training job shares (batch, optimizer, validation)."""
    return {k: v for k, v in cfg.train.model_dump(mode="json").items() if k not in TRAIN_DISPLAY_ONLY}


def score_key(cfg: ExperimentConfig) -> dict[str, Any]:
    """What decides a score job's windows (test, and the val windows of the prior and the method
    choice); mixing settings (`prior_alpha`, `top_k`, `method`, methods) only re-mix."""
    e = cfg.eval
    return {"max_tokens": e.max_tokens, "prior_sequences": e.prior_sequences, "select_sequences": e.select_sequences}
