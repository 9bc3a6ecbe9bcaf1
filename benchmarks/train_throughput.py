"""Training throughput and MFU on this machine: a minimal raw loop vs `run_train_job`.

    .venv/bin/python benchmarks/train_throughput.py [--config configs/embedded.toml] [--steps 12]

Measures the fp32 matmul peak itself (square matmuls), then for each size of the config's family
runs (a) forward/backward/AdamW on random tokens and (b) the full trainer (data sampling,
validation, metrics, checkpointing, final save) for the same number of steps, and prints
tokens/s and MFU (FLOPs counted with `flops_per_token_full`). Numbers are noisy when the machine
is shared; compare the ratios from one run.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from hdee.config import load_config
from hdee.data.shards import DomainManifest, SplitStats, dtype_for_vocab, np_dtype
from hdee.model import SizeSpec, build_model, flops_per_token_full
from hdee.train import Budget, DataMix, TrainJob, run_train_job
from hdee.train.metrics import read_metrics


def matmul_peak(n: int = 1024, seconds: float = 2.0, device: str = "cpu") -> float:
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    for _ in range(3):
        a @ b
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        reps += 1
        if device == "cuda":
            torch.cuda.synchronize()
    return 2 * n**3 * reps / (time.perf_counter() - t0)


def raw_loop(spec: SizeSpec, batch_seqs: int, micro_seqs: int, steps: int, lr: float, device: str) -> float:
    """Tokens/s of the bare minimum: random tokens, forward, backward, clip, AdamW step."""
    model = build_model(spec, 0).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, foreach=False)
    accum = batch_seqs // micro_seqs
    times = []
    for _ in range(steps + 1):
        t0 = time.perf_counter()
        for _ in range(accum):
            x = torch.randint(0, spec.vocab, (micro_seqs, spec.seq_len + 1), device=device)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device == "cuda"):
                logits = model(input_ids=x[:, :-1]).logits
            loss = F.cross_entropy(logits.float().reshape(-1, spec.vocab), x[:, 1:].reshape(-1)) / accum
            loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return batch_seqs * spec.seq_len / statistics.median(times[1:])  # first step is warm-up


TOKENIZER_HASH = "random-tokens"


def make_data(root: Path, vocab: int, n_tokens: int) -> Path:
    d = root / "bench"
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    dtype = dtype_for_vocab(vocab)
    sizes = {"train": n_tokens, "val": n_tokens // 8}
    for split, n in sizes.items():
        rng.integers(0, vocab, n).astype(np_dtype(dtype)).tofile(d / f"{split}.bin")
    manifest = DomainManifest(
        domain="bench", role="train", source={"kind": "random"}, source_fingerprint={}, fingerprint="random-0",
        tokenizer_hash=TOKENIZER_HASH, vocab_size=vocab, eos_id=0, dtype=dtype,
        splits={split: SplitStats(file=f"{split}.bin", tokens=n) for split, n in sizes.items()},
    )
    (d / "manifest.json").write_text(manifest.model_dump_json())
    return d


def trainer(spec: SizeSpec, cfg, data_dir: Path, out: Path, steps: int, compile_: bool = False) -> tuple[float, float]:
    """(median per-step tokens/s, end-to-end tokens/s including evals, checkpoints and the final save)."""
    train = cfg.train.model_copy(update={"compile": compile_, "checkpoint_every": max(1, steps // 2)})
    job = TrainJob(
        out_dir=out,
        size=spec,
        data=[DataMix(domain_dir=data_dir)],
        val=[data_dir],
        tokenizer_hash=TOKENIZER_HASH,
        budget=Budget(steps=steps),
        schedule=cfg.seed_models.schedule,
        train=train,
    )
    t0 = time.perf_counter()
    run_train_job(job)
    wall = time.perf_counter() - t0
    rows = [r for r in read_metrics(out / "metrics.jsonl") if r["step"] > 1]
    return statistics.median(r["tokens_per_s"] for r in rows), steps * job.train.batch_tokens / wall


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/embedded.toml")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--sizes", default=None, help="comma-separated, default: every size of the family")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=3, help="alternate raw/trainer this many times; keep the best of each")
    ap.add_argument("--compile", action="store_true", help="also time the trainer with torch.compile")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    cfg = load_config(args.config)
    vocab = cfg.data.tokenizer.vocab_size
    peaks = [matmul_peak(4096 if device == "cuda" else 1024, device=device)]
    print(f"device {device}, threads {torch.get_num_threads()}, fp32 matmul peak {peaks[0] / 1e9:,.1f} GFLOP/s")
    sizes = args.sizes.split(",") if args.sizes else list(cfg.model.intermediate)
    batch_seqs = cfg.train.batch_tokens // cfg.data.seq_len
    micro = (cfg.train.micro_batch_tokens or 16384) // cfg.data.seq_len
    micro = max(d for d in range(1, min(batch_seqs, micro) + 1) if batch_seqs % d == 0)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        data = make_data(Path(tmp), vocab, max(200_000, 4 * args.steps * cfg.train.batch_tokens))
        warm = SizeSpec.from_family(cfg.model, sizes[0], vocab=vocab, seq_len=cfg.data.seq_len)
        trainer(warm, cfg, data, Path(tmp) / "warm-up", 4)  # first kernels of a process are slow; not timed
        for name in sizes:
            spec = SizeSpec.from_family(cfg.model, name, vocab=vocab, seq_len=cfg.data.seq_len)
            raw, step_tps, e2e_tps = [], [], []
            for r in range(args.rounds):  # interleaved, so both see the same background load
                raw.append(raw_loop(spec, batch_seqs, micro, args.steps, cfg.seed_models.schedule.lr, device))
                s_tps, e_tps = trainer(spec, cfg, data, Path(tmp) / f"out-{name}-{r}", args.steps)
                step_tps.append(s_tps)
                e2e_tps.append(e_tps)
            peaks.append(matmul_peak(4096 if device == "cuda" else 1024, device=device))
            results.append((name, spec, max(raw), max(step_tps), max(e2e_tps)))
            if args.compile:
                c_tps, _ = trainer(spec, cfg, data, Path(tmp) / f"out-{name}-compiled", args.steps, compile_=True)
                print(f"{name:>4} torch.compile: trainer {c_tps:,.0f} tok/s ({c_tps / max(step_tps):.2f}x eager)")
    peak = max(peaks)
    print(f"fp32 matmul peak, best of {len(peaks)}: {peak / 1e9:,.1f} GFLOP/s (MFU below uses this)")
    print(f"{'size':>4} {'raw tok/s':>10} {'raw MFU':>8} {'trainer tok/s':>14} {'MFU':>6} {'ratio':>6} {'end-to-end tok/s':>17}")
    for name, spec, raw, step_tps, e2e in results:
        fpt = flops_per_token_full(spec)
        print(
            f"{name:>4} {raw:>10,.0f} {raw * fpt / peak:>8.1%} {step_tps:>14,.0f} {step_tps * fpt / peak:>6.1%}"
            f" {step_tps / raw:>6.2f} {e2e:>17,.0f}"
        )


if __name__ == "__main__":
    main()
