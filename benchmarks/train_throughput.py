"""Training throughput and MFU on this machine: a minimal raw loop vs `run_train_job`.

    .venv/bin/python benchmarks/train_throughput.py [--config configs/embedded.toml] [--steps 12]
    python benchmarks/train_throughput.py --config configs/paper-small-close.toml --sizes M --steps 3 --rounds 1 --json out.json

Measures the matmul peak itself (square matmuls: fp32 on CPU, bf16 on CUDA, the precision each
trains its matmuls in), then for each size of the config's family runs (a) forward/backward/
AdamW on random tokens with the trainer's own pieces (loss, autocast, optimizer, micro batch)
and (b) the full trainer (data sampling, validation, metrics, checkpointing, final save) for
the same number of steps, and prints tokens/s and MFU (FLOPs counted with `flops_per_token_full`).
On CUDA it also reports peak GPU memory (against `hdee.train.memory`'s estimate) and the time
to checkpoint the model with its optimizer state, as a share of the steps between two
checkpoints. The vocabulary is the config's tokenizer's (`hdee.run.resolve_vocab`: 128,002 for
an unprepared Llama-3 tokenizer) unless `--vocab` says otherwise. The trainer validates on one
batch at its start and end only. Numbers are noisy when the machine is shared; compare the
ratios from one run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from hdee.config import load_config
from hdee.data.shards import DomainManifest, SplitStats, dtype_for_vocab, np_dtype
from hdee.expert_dir import read_metrics
from hdee.model import SizeSpec, build_model, flops_per_token_full, param_counts
from hdee.run import resolve_vocab
from hdee.train import Budget, DataMix, TrainJob, plan_steps, run_train_job
from hdee.train import checkpoint as ckpt
from hdee.train.device import amp_dtype, autocast, default_context, make_optimizer
from hdee.train.loss import CausalLMLoss
from hdee.train.memory import GIB, estimate_bytes

TOKENIZER_HASH = "random-tokens"


def matmul_peak(device: str, seconds: float = 2.0) -> tuple[float, str]:
    """FLOP/s of large square matmuls in the precision training uses there: bf16 on CUDA, fp32 on CPU."""
    n, dtype = (8192, torch.bfloat16) if device == "cuda" else (1024, torch.float32)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        reps += 1
        if device == "cuda":
            torch.cuda.synchronize()
    return 2 * n**3 * reps / (time.perf_counter() - t0), "bf16" if dtype == torch.bfloat16 else "fp32"


def _rate(flops: float) -> str:
    return f"{flops / 1e12:,.1f} TFLOP/s" if flops >= 1e12 else f"{flops / 1e9:,.1f} GFLOP/s"


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _peak_gib(device: str) -> float | None:
    return torch.cuda.max_memory_allocated() / GIB if device == "cuda" else None


def _reset_peak(device: str) -> None:
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def raw_loop(job: TrainJob, steps: int, ckpt_dir: Path) -> dict:
    """Random tokens through the trainer's own loss, autocast, optimizer and micro batch; then one checkpoint."""
    ctx = default_context()
    device = ctx.device.type
    plan = plan_steps(job)
    spec = job.size
    model = build_model(spec, 0).to(ctx.device).train()
    loss_model: torch.nn.Module = CausalLMLoss(model, job.train.loss, ctx.device, amp_dtype(ctx))
    if job.train.compile:
        loss_model = torch.compile(loss_model)
    opt = make_optimizer(model.parameters(), job.schedule.lr, job.train.betas, job.train.weight_decay, ctx)
    _reset_peak(device)
    times = []
    for _ in range(steps + 1):
        t0 = time.perf_counter()
        batch = torch.randint(0, spec.vocab, (plan.batch_seqs, spec.seq_len + 1), device=ctx.device)
        for i in range(plan.accum):
            with autocast(ctx):
                loss = loss_model(batch[i * plan.micro_seqs : (i + 1) * plan.micro_seqs]) / plan.accum
            loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), job.train.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        _sync(device)
        times.append(time.perf_counter() - t0)
    peak = _peak_gib(device)
    t0 = time.perf_counter()
    ckpt.save_state(ckpt_dir, model, opt, {"step": steps})
    checkpoint_s = time.perf_counter() - t0
    step_s = statistics.median(times[1:])  # the first step is warm-up (and compilation)
    return {"tokens_per_s": plan.tokens_per_step / step_s, "step_s": step_s, "peak_gib": peak, "checkpoint_s": checkpoint_s}


def trainer(job: TrainJob) -> dict:
    """(median per-step tokens/s, end-to-end tokens/s including evals, checkpoints and the final save)."""
    device = default_context().device.type
    _reset_peak(device)
    t0 = time.perf_counter()
    run_train_job(job)
    wall = time.perf_counter() - t0
    rows = [r for r in read_metrics(Path(job.out_dir) / "metrics.jsonl") if r["step"] >= 1]
    rows = rows[1:] or rows  # the first step is warm-up when there are others
    steps = job.budget.steps
    return {
        "tokens_per_s": statistics.median(r["tokens_per_s"] for r in rows),
        "e2e_tokens_per_s": steps * job.train.batch_tokens / wall,
        "peak_gib": _peak_gib(device),
    }


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


def bench_job(cfg, train, spec: SizeSpec, data_dir: Path, out: Path, steps: int) -> TrainJob:
    train = train.model_copy(update={"checkpoint_every": max(1, steps // 2), "eval_every": steps, "eval_tokens": train.batch_tokens})
    return TrainJob(
        out_dir=out, size=spec, data=[DataMix(domain_dir=data_dir)], val=[data_dir], tokenizer_hash=TOKENIZER_HASH,
        budget=Budget(steps=steps), schedule=cfg.seed_models.schedule, train=train,
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/embedded.toml")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--sizes", default=None, help="comma-separated, default: every size of the family")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=3, help="alternate raw/trainer this many times; keep the best of each")
    ap.add_argument("--warmup-steps", type=int, default=4, help="steps of an untimed first trainer run (0: none)")
    ap.add_argument("--vocab", type=int, default=None, help="vocabulary size (default: the config's tokenizer's)")
    ap.add_argument("--loss", choices=["plain", "chunked", "fused"], default=None, help="override train.loss")
    ap.add_argument("--micro-batch-tokens", type=int, default=None, help="override train.micro_batch_tokens")
    ap.add_argument("--compile", action="store_true", help="torch.compile the raw loop and the trainer")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = default_context().device.type
    cfg = load_config(args.config)
    vocab, vocab_from = resolve_vocab(cfg, vocab=args.vocab)
    update = {"compile": args.compile}
    if args.loss:
        update["loss"] = args.loss
    if args.micro_batch_tokens:
        update["micro_batch_tokens"] = args.micro_batch_tokens
    train = cfg.train.model_copy(update=update)
    peak, precision = matmul_peak(device)
    peaks = [peak]
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    print(f"device {name}, threads {torch.get_num_threads()}, vocab {vocab:,} ({vocab_from}), loss {train.loss}, "
          f"{precision} matmul peak {_rate(peak)}")
    sizes = args.sizes.split(",") if args.sizes else list(cfg.model.intermediate)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        data = make_data(Path(tmp), vocab, max(200_000, 4 * args.steps * cfg.train.batch_tokens))
        spec_of = {s: SizeSpec.from_family(cfg.model, s, vocab=vocab, seq_len=cfg.data.seq_len) for s in sizes}
        if args.warmup_steps:  # first kernels of a process are slow; not timed
            trainer(bench_job(cfg, train, spec_of[sizes[0]], data, Path(tmp) / "warm-up", args.warmup_steps))
        for size in sizes:
            spec = spec_of[size]
            raw, tr = [], []
            for r in range(args.rounds):  # interleaved, so both see the same background load
                job = bench_job(cfg, train, spec, data, Path(tmp) / f"out-{size}-{r}", args.steps)
                raw.append(raw_loop(job, args.steps, Path(tmp) / f"ckpt-{size}-{r}"))
                tr.append(trainer(job))
            peaks.append(matmul_peak(device)[0])
            plan = plan_steps(job)
            best_raw = max(raw, key=lambda x: x["tokens_per_s"])
            best_tr = max(tr, key=lambda x: x["tokens_per_s"])
            results.append({
                "size": size,
                "params": param_counts(spec)["total"],
                "micro_tokens": plan.micro_seqs * spec.seq_len,
                "accum": plan.accum,
                "raw_tokens_per_s": best_raw["tokens_per_s"],
                "trainer_tokens_per_s": best_tr["tokens_per_s"],
                "e2e_tokens_per_s": max(x["e2e_tokens_per_s"] for x in tr),
                "raw_peak_gib": best_raw["peak_gib"],
                "trainer_peak_gib": best_tr["peak_gib"],
                "estimate_gib": estimate_bytes(spec, plan.micro_seqs * spec.seq_len, train.loss) / GIB,
                "checkpoint_s": min(x["checkpoint_s"] for x in raw),
                "checkpoint_share": min(x["checkpoint_s"] for x in raw) / (cfg.train.checkpoint_every * best_raw["step_s"]),
            })
    peak = max(peaks)
    for row in results:
        fpt = flops_per_token_full(spec_of[row["size"]])
        row["raw_mfu"] = row["raw_tokens_per_s"] * fpt / peak
        row["trainer_mfu"] = row["trainer_tokens_per_s"] * fpt / peak
        row["ratio"] = row["trainer_tokens_per_s"] / row["raw_tokens_per_s"]
    print(f"{precision} matmul peak, best of {len(peaks)}: {_rate(peak)} (MFU below uses this)")
    print(f"{'size':>4} {'micro':>7} {'raw tok/s':>10} {'raw MFU':>8} {'trainer tok/s':>14} {'MFU':>6} {'ratio':>6}"
          f" {'end-to-end tok/s':>17} {'peak GiB (est.)':>16} {'checkpoint':>18}")
    for r in results:
        mem = f"{r['trainer_peak_gib']:.1f} ({r['estimate_gib']:.1f})" if r["trainer_peak_gib"] is not None else f"- ({r['estimate_gib']:.1f})"
        print(
            f"{r['size']:>4} {r['micro_tokens']:>7,} {r['raw_tokens_per_s']:>10,.0f} {r['raw_mfu']:>8.1%} {r['trainer_tokens_per_s']:>14,.0f}"
            f" {r['trainer_mfu']:>6.1%} {r['ratio']:>6.2f} {r['e2e_tokens_per_s']:>17,.0f} {mem:>16}"
            f" {r['checkpoint_s']:>6.2f} s = {r['checkpoint_share']:>5.1%}"
        )
    print(f"checkpoint: model + optimizer state, as a share of the {cfg.train.checkpoint_every} steps between two checkpoints")
    if args.json:
        summary = {"device": name, "torch": torch.__version__, "precision": precision, "peak_flops": peak, "vocab": vocab,
                   "loss": train.loss, "compile": train.compile, "config": args.config, "steps": args.steps, "sizes": results}
        Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
