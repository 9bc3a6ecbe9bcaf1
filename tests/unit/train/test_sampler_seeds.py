"""No job replays the windows its parent (or any ancestor) saw, in the order it saw them.

Each plan job becomes the TrainJob the executor builds, and that the sampler the trainer builds;
the token arrays are synthetic (token = position + a per-domain offset), so every drawn window
tells which domain and which start it came from.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hdee.config import load_config
from hdee.data.tokenizer import save_tokenizer, train_bpe
from hdee.execute.kinds import MODEL_KINDS
from hdee.core.layout import RunLayout
from hdee.plan import build_plan
from hdee.run import prepared_vocab
from hdee.train.for_run import train_job_for
from hdee.train.start import make_sampler
from tests.helpers.paths import CONFIGS

OFFSET = 1_000_000
WINDOWS = 150  # per domain: enough for every job to draw from each of its domains many times
DRAWS = 600


@pytest.fixture(scope="module")
def embedded():
    return load_config(CONFIGS / "embedded.toml")


@pytest.fixture
def layout(tmp_path) -> RunLayout:
    layout = RunLayout(tmp_path)
    layout.tokenizer_path.parent.mkdir(parents=True)
    save_tokenizer(train_bpe(["a small text to make a tokenizer from"] * 4, 300), layout.tokenizer_path)
    return layout


def _orders(job, cfg, layout, domains: list[str]) -> dict[str, list[int]]:
    """Window starts per domain, in the order `job`'s sampler draws them."""
    tj = train_job_for(job, layout, cfg, prepared_vocab(layout))
    seq = tj.size.seq_len
    tokens = [OFFSET * domains.index(d) + np.arange(WINDOWS * seq + 1, dtype=np.int64) for d in job.domains]
    batch = make_sampler(tj, tokens, list(job.domains)).next_batch(DRAWS)
    out: dict[str, list[int]] = {}
    for first in batch[:, 0].tolist():
        out.setdefault(domains[first // OFFSET], []).append(first % OFFSET)
    return out


def _same_order(a: list[int], b: list[int]) -> float:
    n = min(len(a), len(b), WINDOWS)
    return sum(x == y for x, y in zip(a[:n], b[:n])) / n


def _plans(cfg, vocab):
    return [build_plan(cfg, vocab, repeat=0), build_plan(cfg, vocab, repeat=1),
            build_plan(cfg, vocab, repeat=1, vary="seed-models")]


def test_no_job_replays_an_ancestors_window_order(embedded, layout):
    domains = embedded.train_domains
    for plan in _plans(embedded, 300):
        jobs = {j.id: j for j in plan.jobs if j.kind in MODEL_KINDS}
        orders = {jid: _orders(j, embedded, layout, domains) for jid, j in jobs.items()}
        checked = 0
        for jid, job in jobs.items():
            parent = job.parent
            while parent is not None:  # the parent, its parent, ... up to the seed model
                for d in set(orders[jid]) & set(orders[parent]):
                    same = _same_order(orders[jid][d], orders[parent][d])
                    assert same < 0.1, f"repeat {plan.repeat}: {jid} replays {parent}'s windows of {d} ({same:.0%} in place)"
                    checked += 1
                parent = jobs[parent].parent
        assert checked >= 30


def test_dense_and_first_experts_draw_other_orders_than_their_seed(embedded, layout):
    plan = build_plan(embedded, 300)
    jobs = {j.id: j for j in plan.jobs}
    dense = next(j for j in plan.jobs if j.kind == "dense")
    seed = jobs[dense.parent]
    assert seed.kind == "seed" and seed.seed == embedded.seed  # repeat 0's seed models keep the config seed
    dense_order = _orders(dense, embedded, layout, embedded.train_domains)
    seed_order = _orders(seed, embedded, layout, embedded.train_domains)
    for d in embedded.train_domains:
        assert _same_order(dense_order[d], seed_order[d]) < 0.1
    first = embedded.train_domains[0]  # the seed's first source: where an expert's own source index coincides
    expert = next(j for j in plan.jobs if j.kind == "train" and j.domains == [first] and j.parent == seed.id)
    assert _same_order(_orders(expert, embedded, layout, embedded.train_domains)[first], seed_order[first]) < 0.1


def test_same_role_siblings_share_an_order_and_repeats_do_not(embedded, layout):
    domains = embedded.train_domains
    plan = build_plan(embedded, 300)
    last = [j for j in plan.jobs if j.kind == "train" and j.iteration == embedded.iterations]
    # MHo-IHo and MHo-IHe differ only in the last iteration's steps: same parent, same domain, paired order
    pairs = [(a, b) for a in last for b in last if a.id < b.id and a.parent == b.parent and a.domains == b.domains]
    assert pairs and any(a.steps != b.steps for a, b in pairs)
    for a, b in pairs:
        d = a.domains[0]
        assert _orders(a, embedded, layout, domains)[d] == _orders(b, embedded, layout, domains)[d]
    again = build_plan(embedded, 300, repeat=1)
    for job in [j for j in plan.jobs if j.kind in ("train", "dense")][:6]:
        other = next(j for j in again.jobs if j.kind == job.kind and j.domains == job.domains and j.size == job.size
                     and j.steps == job.steps)
        d = job.domains[0]
        assert _same_order(_orders(job, embedded, layout, domains)[d], _orders(other, embedded, layout, domains)[d]) < 0.1


def test_seed_model_repeats_retrain_the_seeds_under_ids_of_their_own(embedded):
    r0, r1, s1 = _plans(embedded, 300)
    seeds = [{j.id: j.seed for j in p.jobs if j.kind == "seed"} for p in (r0, r1, s1)]
    assert seeds[0] == seeds[1] and set(seeds[0].values()) == {embedded.seed}  # domain-phase repeats share them
    assert not set(seeds[2]) & set(seeds[0]) and embedded.seed not in seeds[2].values()
    ids = [{j.id for j in p.jobs if j.kind != "prepare"} for p in (r0, r1, s1)]
    assert not ids[2] & ids[0] and not ids[2] & ids[1]  # nothing a seed-model repeat runs can overwrite another's


@pytest.mark.slow  # starts hdee in new processes, each importing torch
def test_unknown_vary_is_one_line_and_exit_2(tmp_path):
    import subprocess
    import sys

    hdee = str(Path(sys.executable).parent / "hdee")
    for args in (["run", str(CONFIGS / "tiny.toml"), "--seeds", "2", "--vary", "everything", "--run-dir", str(tmp_path / "r"),
                  "--no-view"], ["report", str(tmp_path / "r"), "--vary", "everything"]):
        res = subprocess.run([hdee, *args], capture_output=True, text=True)
        assert res.returncode == 2 and "--vary must be one of domain-phase, seed-models" in res.stderr
        assert len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()
