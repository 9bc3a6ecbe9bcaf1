"""`Ensemble`: a set of expert directories sharing one tokenizer, any mix of sizes."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from hdee.data.tokenizer import load_hf_tokenizer
from hdee.ensemble.experts import ExpertInfo, check_compatible, load_model, read_expert
from hdee.ensemble.generate import Generation, generate_ids
from hdee.ensemble.mixing import mix_cached
from hdee.ensemble.scoring import score_model
from hdee.core.errors import EnsembleError
from hdee.registry import MIXING_METHODS, default_method


class Ensemble:
    """N experts (HF causal-LM dirs with hdee.json) that share a tokenizer.

    Metadata is read and checked at construction; weights are loaded on first use.
    """

    def __init__(self, expert_dirs: Sequence[str | Path]):
        self.experts: list[ExpertInfo] = [read_expert(d) for d in expert_dirs]
        check_compatible(self.experts)
        self._models: list[torch.nn.Module] | None = None

    def __len__(self) -> int:
        return len(self.experts)

    @property
    def vocab_size(self) -> int:
        return self.experts[0].vocab_size

    @property
    def tokenizer_hash(self) -> str | None:
        return self.experts[0].tokenizer_hash

    def check_tokenizer_file(self, path: str | Path) -> None:
        """Refuse a tokenizer.json other than the one the experts recorded (hdee.json `tokenizer_hash`)."""
        from hdee.data.tokenizer import tokenizer_hash

        path = Path(path)
        if not path.is_file():
            raise EnsembleError(f"{path}: tokenizer file not found")
        want = self.tokenizer_hash
        got = tokenizer_hash(path)
        if want is not None and got != want:
            raise EnsembleError(
                f"{path}: tokenizer hash {got[:12]} differs from the experts' {str(want)[:12]} "
                "(give the tokenizer.json of the run that trained them)"
            )

    @property
    def models(self) -> list[torch.nn.Module]:
        if self._models is None:
            self._models = [load_model(e.path) for e in self.experts]
        return self._models

    def score(self, windows: np.ndarray, batch_size: int = 8) -> np.ndarray:
        """Every expert's true-token log-probs on `windows`: float32 [K, n, seq_len]."""
        windows = np.asarray(windows, dtype=np.int64)
        return np.stack([score_model(m, windows, batch_size) for m in self.models])

    def log_probs(
        self,
        windows: np.ndarray,
        method: str | None = None,
        *,
        val_windows: np.ndarray | None = None,
        top_k: int = 2,
        prior_alpha: float = 0.3,
        batch_size: int = 8,
    ) -> np.ndarray:
        """The mixture's log-prob of each true next token in `windows`: float64 [n, seq_len].

        The cached-prior methods estimate their prior on `val_windows` only.
        """
        windows = np.asarray(windows, dtype=np.int64)
        method = method or default_method()
        entry = MIXING_METHODS.get(method)
        if entry.score_models is not None:
            return entry.score_models(self.models, windows, batch_size)
        val_lp = self.score(val_windows, batch_size) if val_windows is not None else None
        return mix_cached(method, self.score(windows, batch_size), val_lp, top_k_experts=top_k, prior_alpha=prior_alpha)

    def generate(
        self,
        prompt: str | Sequence[int],
        max_new_tokens: int = 32,
        temperature: float = 1.0,
        top_p: float = 1.0,
        method: str | None = None,
        seed: int = 0,
        *,
        tokenizer: Any = None,
        log_prior: np.ndarray | None = None,
        top_k: int = 2,
        use_cache: bool = True,
        eos_id: int | None = None,
        keep_distributions: bool = False,
        stream: Callable[[str], None] | None = None,
    ) -> Generation:
        """Sample from the mixture; a text prompt needs `tokenizer` (object or tokenizer.json path).

        `stream` (with a tokenizer) receives the new text piece by piece as it is sampled.

        A tokenizer file must be the one the experts were trained with (their `tokenizer_hash`),
        and no tokenizer may know more tokens than the experts' vocabulary.
        """
        if isinstance(tokenizer, (str, Path)):
            self.check_tokenizer_file(tokenizer)
            tokenizer = load_hf_tokenizer(tokenizer, require_eos=False)
        if tokenizer is not None and len(tokenizer) > self.vocab_size:
            raise EnsembleError(
                f"the tokenizer has {len(tokenizer)} tokens, more than the experts' vocabulary of {self.vocab_size}"
            )
        if isinstance(prompt, str):
            if tokenizer is None:
                raise EnsembleError("a text prompt needs a tokenizer (tokenizer.json)")
            prompt_ids = tokenizer.encode(prompt, add_special_tokens=False)
        else:
            prompt_ids = [int(t) for t in prompt]
        bad = [t for t in prompt_ids if not 0 <= t < self.vocab_size]
        if bad:
            raise EnsembleError(f"prompt token id {bad[0]} is outside the experts' vocabulary of {self.vocab_size}")
        if eos_id is None and tokenizer is not None:
            eos_id = tokenizer.eos_token_id
        out = generate_ids(
            self.models,
            prompt_ids,
            max_new_tokens,
            temperature,
            top_p,
            method,
            seed,
            log_prior=log_prior,
            top_k=top_k,
            use_cache=use_cache,
            eos_id=eos_id,
            keep_distributions=keep_distributions,
            on_token=_text_stream(tokenizer, prompt_ids, stream) if stream is not None and tokenizer is not None else None,
        )
        if tokenizer is not None:
            head, whole = tokenizer.decode(out.prompt_ids), tokenizer.decode(out.ids)
            out.text = whole[len(head) :] if whole.startswith(head) else tokenizer.decode(out.new_ids)
        return out


def _text_stream(tokenizer: Any, prompt_ids: Sequence[int], emit: Callable[[str], None]) -> Callable[[int], None]:
    """A token callback that hands `emit` each piece of newly decoded text (held back while a
    character is still incomplete, so multi-byte characters arrive whole)."""
    ids = list(prompt_ids)
    shown = len(tokenizer.decode(ids))

    def on_token(token: int) -> None:
        nonlocal shown
        ids.append(token)
        text = tokenizer.decode(ids)
        if text.endswith("\ufffd"):
            return
        if len(text) > shown:
            emit(text[shown:])
        shown = len(text)

    return on_token
