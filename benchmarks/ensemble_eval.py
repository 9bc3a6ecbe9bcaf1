"""Cost of evaluating every mixing method: score-once-then-mix versus naive full-vocabulary mixing.

For K experts of the embedded "M" shape (hidden 128, 4 layers, MLP 512, vocab 4096, seq 128):

- fast:  score each expert once (true-token log-probs), run every cached method on the scores,
         plus `product` from the models on `--product-windows` windows;
- naive: per method, run all K models again and build the mixture's full [batch, seq, vocab]
         distribution from their stacked [K, batch, seq, vocab] softmaxes, then read the true token.

Each (case, K) runs in its own process so its peak RSS (ru_maxrss) is its own; `load` measures
the process with only the models loaded. Usage:

    .venv/bin/python benchmarks/ensemble_eval.py --ks 3 9 --windows 64 --naive-windows 16
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from hdee.ensemble.experts import load_model
from hdee.ensemble.mixing import mix_cached, perplexity
from hdee.ensemble.product import product_scores
from hdee.ensemble.scoring import score_model
from hdee.registry import MIXING_METHODS as REGISTERED

MIXING_METHODS = REGISTERED.builtin_names()
CACHED_METHODS = [name for name in MIXING_METHODS if REGISTERED.get(name).cached]

VAL_WINDOWS = 4


def build_experts(root: Path, k: int, vocab: int, seq: int) -> list[Path]:
    from transformers import LlamaConfig, LlamaForCausalLM

    dirs = []
    for i in range(k):
        path = root / f"e{i}"
        if not path.exists():
            torch.manual_seed(i)
            cfg = LlamaConfig(vocab_size=vocab, hidden_size=128, intermediate_size=512, num_hidden_layers=4,
                              num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=seq,
                              initializer_range=0.2, tie_word_embeddings=False)
            LlamaForCausalLM(cfg).save_pretrained(path)
            (path / "hdee.json").write_text(json.dumps({"tokenizer_hash": "bench", "sha256": f"bench-{i}"}))
        dirs.append(path)
    return dirs


def windows(n: int, seq: int, vocab: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, vocab, size=(n, seq + 1), dtype=np.int64)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def case_fast(models, test, val, args) -> dict:
    t0 = time.perf_counter()
    lp = np.stack([score_model(m, test, args.batch) for m in models])
    vlp = np.stack([score_model(m, val, args.batch) for m in models])
    t1 = time.perf_counter()
    ppl = {m: perplexity(mix_cached(m, lp, vlp, top_k_experts=2)) for m in CACHED_METHODS}
    t2 = time.perf_counter()
    ppl["product"] = perplexity(product_scores(models, test[: args.product_windows], args.batch))
    t3 = time.perf_counter()
    sub = lp[:, : args.naive_windows]  # the naive case's windows, to check both give the same numbers
    ppl_sub = {m: perplexity(mix_cached(m, sub, vlp, top_k_experts=2)) for m in CACHED_METHODS}
    return {"score_s": t1 - t0, "mix_s": t2 - t1, "product_s": t3 - t2, "ppl": ppl, "ppl_naive_windows": ppl_sub}


@torch.inference_mode()
def _full_logprobs(models, batch: torch.Tensor) -> torch.Tensor:
    return torch.stack([torch.log_softmax(m(input_ids=batch[:, :-1]).logits.float(), -1) for m in models])


@torch.inference_mode()
def naive_method(models, method: str, test: np.ndarray, val: np.ndarray, batch_size: int) -> np.ndarray:
    """One method from scratch: full [K, B, T, V] distributions, explicit mixture, true-token read-out."""
    k = len(models)
    log_prior = torch.full((k,), -float(np.log(k)))
    if method.startswith("cached-prior"):
        post = []
        for i in range(0, len(val), batch_size):
            b = torch.from_numpy(val[i : i + batch_size])
            full = _full_logprobs(models, b)
            true = full.gather(-1, b[None, :, 1:, None].expand(k, -1, -1, 1)).squeeze(-1)
            post.append(torch.log_softmax(true.sum(-1), 0))
        q = torch.cat(post, 1).exp()  # [K, m]
        decay = (1 - 0.3) ** torch.arange(q.shape[1] - 1, -1, -1, dtype=torch.float32)
        log_prior = torch.log((q * decay).sum(1) / decay.sum())
    out, per_expert = [], []
    for i in range(0, len(test), batch_size):
        b = torch.from_numpy(test[i : i + batch_size])
        full = _full_logprobs(models, b)  # [K, B, T, V]
        true = full.gather(-1, b[None, :, 1:, None].expand(k, -1, -1, 1)).squeeze(-1)  # [K, B, T]
        per_expert.append(true)
        if method == "product":
            mixture = torch.log_softmax(full.mean(0), -1)
        elif method == "best-expert":
            mixture = full  # chosen after the loop, from the full-data losses
        else:
            prefix = torch.cumsum(true, -1) - true
            prev = torch.cat([torch.zeros_like(true[..., :1]), true[..., :-1]], -1)
            if method == "uniform":
                logw = torch.zeros_like(true)
            elif method in ("prevtoken-posterior", "cached-prior-prevtoken"):
                logw = prev
            else:
                logw = prefix
            logw = torch.log_softmax(logw + log_prior[:, None, None], 0)
            if method == "top-k":
                idx = torch.argsort(-logw, dim=0, stable=True)[:2]  # ties -> lower index, as hdee's top-k
                keep = torch.zeros_like(logw, dtype=torch.bool).scatter_(0, idx, True)
                logw = torch.log_softmax(torch.where(keep, logw, torch.tensor(-torch.inf)), 0)
            mixture = torch.logsumexp(logw[..., None] + full, 0)  # [B, T, V]
        if method == "best-expert":
            out.append(full.gather(-1, b[None, :, 1:, None].expand(k, -1, -1, 1)).squeeze(-1))
        else:
            out.append(mixture.gather(-1, b[:, 1:, None]).squeeze(-1))
    if method == "best-expert":
        allk = torch.cat(out, 1)
        return allk[int(torch.argmax(allk.sum((1, 2))))].double().numpy()
    return torch.cat(out).double().numpy()


def case_naive(models, test, val, args) -> dict:
    t0 = time.perf_counter()
    ppl = {m: perplexity(naive_method(models, m, test, val, args.batch)) for m in MIXING_METHODS}
    return {"naive_s": time.perf_counter() - t0, "ppl": ppl}


def child(args) -> None:
    torch.set_num_threads(args.threads)
    dirs = build_experts(Path(args.root), args.k, args.vocab, args.seq)
    models = [load_model(d) for d in dirs]
    n = args.naive_windows if args.case == "naive" else args.windows
    test, val = windows(n, args.seq, args.vocab, 1), windows(VAL_WINDOWS, args.seq, args.vocab, 2)
    res: dict = {"case": args.case, "k": args.k, "tokens": int(n * args.seq)}
    if args.case == "fast":
        res.update(case_fast(models, test, val, args))
    elif args.case == "naive":
        res.update(case_naive(models, test, val, args))
    res["peak_rss_mib"] = peak_rss_mib()
    print(json.dumps(res))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ks", type=int, nargs="+", default=[3, 9])
    p.add_argument("--windows", type=int, default=64)
    p.add_argument("--naive-windows", type=int, default=16)
    p.add_argument("--product-windows", type=int, default=8)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--vocab", type=int, default=4096)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--case", choices=["load", "fast", "naive"])
    p.add_argument("--k", type=int)
    p.add_argument("--root")
    args = p.parse_args()
    if args.case:
        child(args)
        return
    with tempfile.TemporaryDirectory() as root:
        rows = []
        for k in args.ks:
            for case in ("load", "fast", "naive"):
                cmd = [sys.executable, __file__, "--case", case, "--k", str(k), "--root", root]
                for name in ("windows", "naive_windows", "product_windows", "batch", "vocab", "seq", "threads"):
                    cmd += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
                out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
                rows.append(json.loads(out.strip().splitlines()[-1]))
    for k in args.ks:
        load, fast, naive = (next(r for r in rows if r["k"] == k and r["case"] == c) for c in ("load", "fast", "naive"))
        total = fast["score_s"] + fast["mix_s"] + fast["product_s"]
        fast_tps, naive_tps = fast["tokens"] / total, naive["tokens"] / naive["naive_s"]
        agree = max(abs(np.log(fast["ppl_naive_windows"][m]) - np.log(naive["ppl"][m])) for m in CACHED_METHODS)
        print(f"K={k}: {len(MIXING_METHODS)} methods, vocab {args.vocab}, seq {args.seq}, {args.threads} thread(s)")
        print(f"  fast : {fast['tokens']} tokens, score {fast['score_s']:.2f}s + mix {fast['mix_s']:.3f}s"
              f" + product({args.product_windows} windows) {fast['product_s']:.2f}s = {total:.2f}s"
              f" -> {fast_tps:,.0f} tokens/s for all methods;"
              f" all-methods / score-once = {total / fast['score_s']:.3f}"
              f" (cached methods only: {(fast['score_s'] + fast['mix_s']) / fast['score_s']:.3f})")
        print(f"  naive: {naive['tokens']} tokens, {naive['naive_s']:.2f}s -> {naive_tps:,.0f} tokens/s;"
              f" speed-up {fast_tps / naive_tps:.1f}x")
        print(f"  peak RSS MiB: models loaded {load['peak_rss_mib']:.0f}, fast {fast['peak_rss_mib']:.0f}"
              f" (+{fast['peak_rss_mib'] - load['peak_rss_mib']:.0f}), naive {naive['peak_rss_mib']:.0f}"
              f" (+{naive['peak_rss_mib'] - load['peak_rss_mib']:.0f}); one [K,B,T,V] fp32 tensor ="
              f" {k * args.batch * args.seq * args.vocab * 4 / 2**20:.0f} MiB")
        print(f"  same windows, cached methods: max |log ppl fast - log ppl naive| = {agree:.2e}")


if __name__ == "__main__":
    main()
