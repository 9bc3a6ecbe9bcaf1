"""Evaluate a finished run's ensembles on any text, without retraining and without touching its config.

The text comes from files (txt / jsonl / parquet, as a `files` source) or a dataset
(`hf:DATASET[:CONFIG][:SPLIT]`, as an `hf` source), is tokenized with the run's own tokenizer
(each document followed by EOS, as `prepare` does) and cut into the same evaluation windows.
The first windows are held out and never scored: they estimate the cached-prior methods'
prior, and the windows after those choose the main method (as a run's validation windows do).
Scores are cached per expert, so a rerun only mixes again.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
from pydantic import ValidationError

from hdee.config import DomainConfig, SourceSpec
from hdee.core.errors import ConfigError, DataError
from hdee.data.sources import source_from_text
from hdee.data.text_stream import text_pieces
from hdee.data.tokenizer import eos_token, load_tokenizer
from hdee.ensemble.scoring import eval_token_cap
from hdee.evaluation.evaluate import ScoreProgress, evaluate
from hdee.registry import MIXING_METHODS

if TYPE_CHECKING:
    from hdee.run import Run

#: at most this share of a short text's windows goes to the prior, and as much to the method choice
HELD_OUT_SHARE = 0.2
ENCODE_BATCH = 256
ENCODE_CHARS = 1 << 18  # characters tokenized at once: bounds the tokenizer's memory, whatever the file


def parse_source(spec: str, text_field: str = "text") -> SourceSpec:
    """`--data`: `hf:DATASET[:CONFIG][:SPLIT]` (or another registered prefix) or a file path or glob."""
    try:
        return source_from_text(spec, text_field)
    except DataError as exc:
        raise ConfigError(f"--data {spec!r}: {exc}") from None


def default_name(spec: str) -> str:
    """A domain name from the source: the file's stem or the dataset's last path part."""
    if spec.startswith("hf:"):
        base = spec[3:].split(":")[0].rstrip("/").rsplit("/", 1)[-1]
    else:
        base = Path(spec.split("*")[0] or ".").name or Path(spec).parent.name
        base = base.split(".")[0] if "*" not in spec else base
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", base).strip("_.") or "text"


def text_domain(name: str, source: SourceSpec, run: "Run") -> DomainConfig:
    """The new text as a held-out domain; its name follows the config's rules and is new to the run."""
    try:
        domain = DomainConfig(name=name, source=source, role="heldout")
    except ValidationError:
        raise ConfigError(f"--name {name!r}: use letters, digits, '_', '.' and '-' only (as domain names)") from None
    if name in {d.name for d in run.cfg.domains}:
        raise ConfigError(f"--name {name!r} is a domain of the run's config already; pick another name")
    return domain


def read_tokens(domain: DomainConfig, tokenizer_path: Path, limit: int | None,
                progress: Callable[[int], None] | None = None) -> np.ndarray:
    """Token ids of the source's documents, each followed by EOS, stopping once `limit` are read.

    The text arrives in pieces (`hdee.data.text_stream`): however large a file or document, only
    the pieces that reach `limit` are read and tokenized.
    """
    tok = load_tokenizer(tokenizer_path)
    eos_id = tok.token_to_id(eos_token(tok, where=str(tokenizer_path)))
    chunks: list[np.ndarray] = []
    total = 0
    batch: list[tuple[str, bool]] = []
    chars = 0

    def flush() -> None:
        nonlocal total, chars
        try:
            encoded = tok.encode_batch([text for text, _ in batch], add_special_tokens=False)
        except MemoryError:
            raise DataError(f"--data: out of memory while tokenizing, after {total:,} tokens; "
                            "lower --max-tokens or free memory") from None
        for enc, (_, last) in zip(encoded, batch):
            ids = enc.ids + [eos_id] if last else enc.ids
            chunks.append(np.asarray(ids, dtype=np.int64))
            total += len(ids)
        batch.clear()
        chars = 0
        if progress is not None:
            progress(total)

    for piece, _first, last in text_pieces(domain):
        batch.append((piece, last))
        chars += len(piece)
        if len(batch) >= ENCODE_BATCH or chars >= ENCODE_CHARS:
            flush()
            if limit is not None and total >= limit:
                break
    if batch:
        flush()
    tokens = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int64)
    return tokens[:limit] if limit is not None else tokens


def split_held_out(
    tokens: np.ndarray, seq_len: int, prior_windows: int, select_windows: int
) -> tuple[np.ndarray, np.ndarray, int, int]:
    """(held-out head, scored tokens, prior windows, selection windows) of a text.

    The head's first windows estimate the prior, the next ones choose the main method; everything
    after the head is scored, and the two parts share no token. A short text gives at most
    HELD_OUT_SHARE of its windows to each of the head's two parts.
    """
    shortest = 3 * seq_len + 2  # one window for the prior, one for the choice, one scored
    if len(tokens) < shortest:
        raise DataError(f"the text has {len(tokens)} tokens; it needs at least {shortest} "
                        f"(a window of {seq_len + 1} for the prior, one for choosing the method, one to score)")
    windows = (len(tokens) - 1) // seq_len
    k = max(1, min(prior_windows, int(windows * HELD_OUT_SHARE)))
    s = max(1, min(select_windows, int(windows * HELD_OUT_SHARE)))
    cut = (k + s) * seq_len + 1
    return tokens[:cut], tokens[cut:], k, s


def evaluate_text(
    run: "Run",
    spec: str,
    name: str | None = None,
    max_tokens: int | None = None,
    text_field: str = "text",
    read_progress: Callable[[int], None] | None = None,
    score_progress: ScoreProgress | None = None,
) -> dict[str, Any]:
    """Every strategy's ensemble (every mixing method), the dense model and each expert on the text `spec`.

    Writes `results/eval-<name>.json` and `.csv`; `max_tokens` caps the scored tokens (default:
    the run's own per-domain cap, so the numbers compare with its table). The held-out head is
    not capped by it: its windows are `eval.prior_sequences` and `eval.select_sequences`.
    """
    cfg, layout = run.cfg, run.layout
    domain = text_domain(name or default_name(spec), parse_source(spec, text_field), run)
    name = domain.name
    seq_len = cfg.data.seq_len
    cap = max_tokens if max_tokens is not None else eval_token_cap(cfg)
    held = (cfg.eval.prior_sequences + cfg.eval.select_sequences) * seq_len + 1
    tokens = read_tokens(domain, layout.tokenizer_path, None if cap is None else held + cap + 1, read_progress)
    head, scored, k, s = split_held_out(tokens, seq_len, cfg.eval.prior_sequences, cfg.eval.select_sequences)
    if cap is not None:
        scored = scored[: (cap // seq_len) * seq_len + 1]  # whole windows, as eval_windows caps
    # the head and the scored tokens are what the reader hands out: no further cap on either
    one_domain = cfg.model_copy(update={
        "domains": [domain],
        "data": cfg.data.model_copy(update={"max_eval_tokens": None}),
        # routed methods are left out: their routers are built from the run's own domains' train splits
        "eval": cfg.eval.model_copy(update={"max_tokens": None, "prior_sequences": k, "select_sequences": s,
                                            "methods": [m for m in cfg.eval.methods if not MIXING_METHODS.get(m).routed]}),
    })
    parts = {"test": scored, "val": head}

    def reader(_layout, _domain: str, split: str) -> np.ndarray:
        return parts[split]

    extra = {
        "source": spec,
        "text_field": text_field,
        "prior": {"windows": k, "tokens": k * seq_len,
                  "note": "the first windows of the text; they estimate the cached prior and are never scored"},
        "select": {"windows": s, "tokens": s * seq_len,
                   "note": "the windows after the prior's; they choose the main method and are never scored"},
    }
    return evaluate(one_domain, layout, run.experts, run.ensembles, reader,
                    results_path=layout.text_results_path(name), progress=score_progress, extra=extra)
