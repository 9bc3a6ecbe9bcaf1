"""lm-evaluation-harness adapter: an ensemble's mixture as an lm-eval language model.

`EnsembleLM` answers lm-eval's three request types from the experts' own next-token
distributions: loglikelihood and loglikelihood_rolling from the mixture's per-token
log-probabilities (the weights every mixing method gives each position, as in evaluation),
generate_until from the sampler of `hdee generate`. Needs the `lm-eval` extra
(`pip install hdee[lm-eval]`); a run directory's ensemble runs with `hdee lm-eval`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch

from hdee.core.errors import ConfigError, EnsembleError
from hdee.core.fsutil import atomic_write_text
from hdee.data.tokenizer import load_hf_tokenizer
from hdee.ensemble.ensemble import Ensemble
from hdee.ensemble.generate import generation_methods
from hdee.registry import MIXING_METHODS, default_method
from hdee.evaluation.sampling import run_prior

if TYPE_CHECKING:
    from hdee.run import Run

try:
    from lm_eval.api.model import TemplateLM
    from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
except ImportError as exc:  # the optional extra
    raise ImportError("the lm-eval adapter needs lm-eval >= 0.4: pip install 'hdee[lm-eval]'") from exc


class EnsembleLM(TemplateLM):
    """The mixture of `expert_dirs` (one tokenizer) under one mixing method, for lm-eval."""

    def __init__(
        self,
        expert_dirs: Sequence[str | Path],
        tokenizer: str | Path,
        method: str | None = None,
        *,
        log_prior: np.ndarray | None = None,
        top_k: int = 2,
        max_length: int | None = None,
        batch_size: int = 1,
    ):
        super().__init__()
        method = method or default_method()
        if batch_size < 1:
            raise EnsembleError(f"batch size must be at least 1, got {batch_size}")
        self.batch_size = int(batch_size)
        entry = MIXING_METHODS.find(method)
        if entry is None or entry.generate is None:  # best-expert picks by the scored text, which an answer must not see
            raise EnsembleError(f"lm-eval method {method!r}: use one of {', '.join(generation_methods())}")
        if entry.needs_prior and log_prior is None:
            raise EnsembleError(f"{method} needs a prior (hdee lm-eval --prior-domain DOMAIN)")
        self.ensemble = Ensemble(expert_dirs)
        self.tokenizer = load_hf_tokenizer(tokenizer, require_eos=False)
        if self.tokenizer.eos_token_id is None:
            raise EnsembleError(f"{tokenizer}: lm-eval needs an end-of-text token")
        self.method, self.log_prior, self.top_k = method, log_prior, top_k
        self._step = entry.generate
        k = len(self.ensemble)
        prior = torch.zeros(k, dtype=torch.float64) if log_prior is None else torch.as_tensor(np.asarray(log_prior, dtype=np.float64))
        if prior.shape != (k,):
            raise EnsembleError(f"prior has {prior.numel()} weights for {k} experts")
        self._log_prior = prior - torch.logsumexp(prior, 0)  # normalised, as generation normalises it
        positions = [int(e.config.get("max_position_embeddings") or 0) for e in self.ensemble.experts]
        self.max_length = int(max_length or min(p for p in positions if p) or 2048)

    # ------------------------------------------------------------------ tokens

    @property
    def eot_token_id(self) -> int:
        return int(self.tokenizer.eos_token_id)

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        return list(self.tokenizer.encode(string, add_special_tokens=False))

    # ------------------------------------------------------------------ scoring

    @torch.inference_mode()
    def continuation_logprob(self, tokens: list[int], n_cont: int) -> tuple[float, bool]:
        """log p(last `n_cont` tokens | the ones before) under the mixture, and whether each was its argmax.

        The window keeps the last `max_length + 1` tokens. At each position the method's registered
        `generate` step weighs the experts by what they gave the window's tokens so far (as
        evaluation mixes a window) and mixes their whole next-token distributions.
        """
        return self.continuation_logprobs([(tokens, n_cont)])[0]

    @torch.inference_mode()
    def continuation_logprobs(self, requests: Sequence[tuple[list[int], int]]) -> list[tuple[float, bool]]:
        """`continuation_logprob` of several requests, each expert run once on the batch (right-padded
        with end-of-text under an attention mask, so each request's real tokens score as alone)."""
        windows = [list(tokens)[-(self.max_length + 1):] for tokens, _ in requests]
        width = max(len(w) - 1 for w in windows)
        pad = self.eot_token_id
        x = torch.tensor([w[:-1] + [pad] * (width - len(w) + 1) for w in windows])
        mask = torch.tensor([[1] * (len(w) - 1) + [0] * (width - len(w) + 1) for w in windows])
        batched = [torch.log_softmax(model(input_ids=x, attention_mask=mask, use_cache=False).logits.double(), dim=-1)
                   for model in self.ensemble.models]  # K x [B, T, V]
        out = []
        for b, ((_, n_cont), w) in enumerate(zip(requests, windows)):
            target = torch.tensor(w[1:])
            n_cont = min(n_cont, len(w) - 1)
            lsm = [lp[b, : len(target)] for lp in batched]
            true_lp = torch.stack([m.gather(-1, target[:, None])[:, 0] for m in lsm])  # [K, T]
            tail = torch.stack([m[-n_cont:] for m in lsm])  # [K, C, V]
            out.append(self._mix(true_lp, tail, target, n_cont))
        return out

    def _mix(self, true_lp: torch.Tensor, tail: torch.Tensor, target: torch.Tensor, n_cont: int) -> tuple[float, bool]:
        first = len(target) - n_cont
        ll, greedy = 0.0, True
        for c in range(n_cont):
            t = first + c
            seen = true_lp[:, :t].sum(1)
            last = true_lp[:, t - 1] if t > 0 else None
            _, mixture = self._step(tail[:, c], self._log_prior, seen, last, self.top_k)
            ll += float(mixture[target[t]])
            greedy = greedy and int(mixture.argmax()) == int(target[t])
        return ll, greedy

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs) -> list[tuple[float, bool]]:
        out = []
        for start in range(0, len(requests), self.batch_size):
            chunk = requests[start : start + self.batch_size]
            results = self.continuation_logprobs([(list(c) + list(k), len(k)) for _, c, k in chunk])
            for (key, _, _), result in zip(chunk, results):
                if key is not None:
                    self.cache_hook.add_partial("loglikelihood", key, result)
                out.append(result)
        return out

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        out = []
        for req in requests:
            (text,) = req.args
            windows = map(make_disjoint_window, get_rolling_token_windows(
                token_list=self.tok_encode(text), prefix_token=self.eot_token_id, max_seq_len=self.max_length, context_len=1))
            total = sum(self.continuation_logprob(list(ctx) + list(cont), len(cont))[0] for ctx, cont in windows)
            self.cache_hook.add_partial("loglikelihood_rolling", (text,), total)
            out.append(total)
        return out

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        out = []
        for req in requests:
            context, kwargs = req.args
            kwargs = dict(kwargs or {})
            until = kwargs.get("until") or [self.tokenizer.decode([self.eot_token_id])]
            until = [until] if isinstance(until, str) else list(until)
            max_new = int(kwargs.get("max_gen_toks", 256))
            temperature = float(kwargs.get("temperature", 0.0)) if kwargs.get("do_sample", False) else 0.0
            prompt = self.tok_encode(context)[-max(1, self.max_length - max_new):] or [self.eot_token_id]
            gen = self.ensemble.generate(prompt, max_new, temperature, float(kwargs.get("top_p", 1.0)), self.method,
                                         int(kwargs.get("seed", 0)), log_prior=self.log_prior, top_k=self.top_k,
                                         eos_id=self.eot_token_id)
            text = self.tokenizer.decode(gen.new_ids)
            for stop in until:
                if stop and stop in text:
                    text = text.split(stop)[0]
            self.cache_hook.add_partial("generate_until", (context, kwargs), text)
            out.append(text)
        return out


def run_lm_eval(
    run: "Run",
    strategy: str,
    method: str,
    tasks: list[str],
    include_path: str | Path | None = None,
    limit: int | None = None,
    prior_domain: str | None = None,
    num_fewshot: int | None = None,
    *,
    output_path: str | Path | None = None,
    batch_size: int = 1,
    log_samples: bool = False,
    bootstrap_iters: int = 100000,
    force: bool = False,
) -> tuple[dict[str, Any], Path]:
    """lm-eval's `simple_evaluate` on one strategy's ensemble, written to `output_path` (default:
    `RunLayout.lm_eval_path`, named by strategy, method and tasks). An existing file is
    never overwritten without `force`; checked before anything runs."""
    import lm_eval
    from lm_eval.tasks import TaskManager
    from lm_eval.utils import handle_non_serializable

    dirs = [Path(d).resolve() for d in run.ensemble_dirs(strategy)]
    path = Path(output_path).expanduser().resolve() if output_path else run.layout.lm_eval_path(strategy, method, tasks).resolve()
    if path.is_dir():
        raise ConfigError(f"--output-path {path}: is a directory; name the results file")
    if path.exists() and not force:
        raise ConfigError(f"{path}: already exists; choose another --output-path or pass --force to replace it")
    prior = run_prior(run, strategy, prior_domain) if prior_domain else None
    lm = EnsembleLM(dirs, run.layout.tokenizer_path, method, log_prior=prior, top_k=run.cfg.eval.top_k,
                    max_length=run.cfg.data.seq_len, batch_size=batch_size)
    if include_path is not None and not Path(include_path).is_dir():
        raise ConfigError(f"--include-path {include_path}: not a directory")
    manager = None
    if include_path is not None:  # indexing lm-eval's own ~15k task files takes half a minute: only when needed
        manager = TaskManager(include_path=str(include_path), include_defaults=False)
        if any(t not in manager.all_tasks for t in tasks):
            manager = None
    manager = manager or TaskManager(include_path=str(include_path) if include_path else None)
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        raise ConfigError(f"lm-eval task {unknown[0]!r} not found" + (f" (also looked in {include_path})" if include_path else ""))
    results = lm_eval.simple_evaluate(model=lm, tasks=tasks, limit=limit, task_manager=manager, num_fewshot=num_fewshot,
                                      log_samples=log_samples, bootstrap_iters=bootstrap_iters)
    results["hdee"] = {"run_dir": str(run.layout.root.resolve()), "strategy": strategy, "method": method,
                       "experts": [str(d) for d in dirs], "tokenizer": str(run.layout.tokenizer_path.resolve()),
                       "prior_domain": prior_domain, "tasks": list(tasks), "batch_size": batch_size,
                       "bootstrap_iters": bootstrap_iters, "log_samples": log_samples,
                       "include_path": str(Path(include_path).resolve()) if include_path else None, "output_path": str(path)}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(results, indent=2, default=handle_non_serializable) + "\n")
    return results, path
