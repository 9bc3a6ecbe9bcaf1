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

from hdee.data.tokenizer import load_hf_tokenizer
from hdee.ensemble.ensemble import Ensemble
from hdee.ensemble.generate import generation_methods
from hdee.ensemble.mixing import estimate_prior
from hdee.ensemble.scoring import split_val
from hdee.errors import ConfigError, EnsembleError
from hdee.fsutil import atomic_write_text
from hdee.registry import MIXING_METHODS

if TYPE_CHECKING:
    from hdee.api import Run

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
        method: str = "prefix-posterior",
        *,
        log_prior: np.ndarray | None = None,
        top_k: int = 2,
        max_length: int | None = None,
    ):
        super().__init__()
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
        tokens = tokens[-(self.max_length + 1):]
        n_cont = min(n_cont, len(tokens) - 1)
        x = torch.tensor([tokens[:-1]])
        target = torch.tensor(tokens[1:])
        true, tails = [], []
        for model in self.ensemble.models:
            lsm = torch.log_softmax(model(input_ids=x, use_cache=False).logits[0].double(), dim=-1)  # [T, V]
            true.append(lsm.gather(-1, target[:, None])[:, 0])
            tails.append(lsm[-n_cont:])
        true_lp, tail = torch.stack(true), torch.stack(tails)  # [K, T], [K, C, V]
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
        for key, context_enc, continuation_enc in requests:
            result = self.continuation_logprob(list(context_enc) + list(continuation_enc), len(continuation_enc))
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


def run_prior(run: "Run", strategy: str, domain: str) -> np.ndarray:
    """The ensemble's cached prior on one of the run's domains, from the cached scores of the
    validation windows evaluation estimates it on (the first `eval.prior_sequences`)."""
    if domain not in run.cfg.eval_domains:
        raise ConfigError(f"--prior-domain {domain!r} is not a domain of the run ({', '.join(run.cfg.eval_domains)})")
    ids = run.ensembles[strategy].experts
    paths = [run.layout.score_path(e, domain, "val") for e in ids]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise EnsembleError(f"{missing[0]}: no cached validation scores (run hdee eval {run.layout.root} first)")
    prior_lp, _ = split_val(np.stack([np.load(p, allow_pickle=False) for p in paths]), run.cfg.eval.prior_sequences)
    return estimate_prior(prior_lp, run.cfg.eval.prior_alpha)


def run_lm_eval(
    run: "Run",
    strategy: str,
    method: str,
    tasks: list[str],
    include_path: str | Path | None = None,
    limit: int | None = None,
    prior_domain: str | None = None,
    num_fewshot: int | None = None,
) -> tuple[dict[str, Any], Path]:
    """lm-eval's `simple_evaluate` on one strategy's ensemble; results written to results/lm-eval-<strategy>-<method>.json."""
    import lm_eval
    from lm_eval.tasks import TaskManager
    from lm_eval.utils import handle_non_serializable

    dirs = run.ensemble_dirs(strategy)
    prior = run_prior(run, strategy, prior_domain) if prior_domain else None
    lm = EnsembleLM(dirs, run.layout.tokenizer_path, method, log_prior=prior, top_k=run.cfg.eval.top_k,
                    max_length=run.cfg.data.seq_len)
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
                                      log_samples=True, bootstrap_iters=0)
    results["hdee"] = {"strategy": strategy, "method": method, "experts": [str(d) for d in dirs],
                       "prior_domain": prior_domain}
    path = run.layout.lm_eval_path(strategy, method)
    atomic_write_text(path, json.dumps(results, indent=2, default=handle_non_serializable) + "\n")
    return results, path
