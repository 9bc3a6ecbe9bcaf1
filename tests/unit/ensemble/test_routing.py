"""Routed ensembles: routers from train data only, routed mixing, inference FLOPs, router files, generation."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from tests.helpers.cli_helpers import cli_error
from tests.helpers.experts import make_expert
from hdee.cli.app import app
from hdee.config import ExperimentConfig
from hdee.ensemble import mixing, routing, scoring
from hdee.ensemble.experts import load_model, read_expert
from hdee.ensemble.routers import fit_tfidf, load_router, save_router, tensors_path, tfidf, token_counts
from hdee.core.errors import EnsembleError
from hdee.evaluation.evaluate import EnsembleSpec, evaluate
from hdee.core.layout import RunLayout
from hdee.plan import EnsemblePlan, Plan

torch.set_num_threads(1)

#: each tiny domain draws its tokens from its own id range, so a router can tell them apart
RANGES = {"py_code": (0, 64), "pydoc_topics": (64, 128), "py_docstrings": (128, 192), "c_headers": (192, 256),
          "py_tests": (0, 128), "py_license": (128, 256)}
OWN = {"a": "py_code", "b": "pydoc_topics", "c": "py_docstrings"}


class Reader:
    def __init__(self):
        self.tokens = {(d, s): np.random.default_rng(i).integers(*RANGES[d], size=3000)
                       for i, (d, s) in enumerate((d, s) for d in RANGES for s in ("train", "val", "test"))}
        self.reads: list[tuple[str, str]] = []

    def __call__(self, layout, domain, split):
        self.reads.append((domain, split))
        return self.tokens[(domain, split)]


METHODS = ("prefix-posterior", "uniform", "best-expert", "routed-top1", "routed-top2", "routed-top3")


def config(tiny, router="tfidf", methods=METHODS):
    raw = tiny.model_dump()
    return ExperimentConfig.model_validate({**raw, "eval": {**raw["eval"], "methods": list(methods)},
                                            "routing": {**raw["routing"], "router": router}})


@pytest.fixture(scope="module")
def experts(tmp_path_factory):
    root = tmp_path_factory.mktemp("experts")
    out = {
        "a": make_expert(root / "a", 1, intermediate=48, scale=20, size="S", domain="py_code"),
        "b": make_expert(root / "b", 2, intermediate=64, scale=20, size="M", domain="pydoc_topics"),
        "c": make_expert(root / "c", 3, intermediate=80, scale=20, size="L", domain="py_docstrings"),
        "seed-S": make_expert(root / "seed-S", 4, intermediate=48, scale=20, size="S", domain="", kind="seed"),
        "seed-M": make_expert(root / "seed-M", 5, intermediate=64, scale=20, size="M", domain="", kind="seed"),
    }
    return out


ENS = {"trio": EnsembleSpec(["a", "b", "c"])}


@pytest.fixture(scope="module")
def run(tiny, experts, tmp_path_factory):
    layout = RunLayout(tmp_path_factory.mktemp("run"))
    reader = Reader()
    cfg = config(tiny)
    return cfg, layout, reader, evaluate(cfg, layout, experts, ENS, reader)


def _stack(layout, ids, domain):
    return np.stack([np.load(layout.score_path(e, domain, "test")) for e in ids])


def test_routed_mix_with_every_expert_is_prefix_posterior_after_the_prefix():
    rng = np.random.default_rng(0)
    lp = np.log(rng.dirichlet(np.ones(5), size=(3, 7, 12))[..., 0])  # [K=3, n=7, T=12]
    prefix_lp = np.log(rng.uniform(0.01, 1, size=(7, 12)))
    choice = np.stack([rng.permutation(3) for _ in range(7)])  # every expert, in any order
    out = routing.routed_mix(lp, prefix_lp, choice, 4)
    np.testing.assert_allclose(out[:, 4:], mixing.prefix_posterior(lp)[:, 4:], rtol=1e-12)
    np.testing.assert_array_equal(out[:, :4], prefix_lp[:, :4])
    assert not np.allclose(out[:, 4:], mixing.uniform(lp)[:, 4:])
    one = routing.routed_mix(lp, prefix_lp, np.full((7, 1), 2), 4)
    np.testing.assert_allclose(one[:, 4:], lp[2][:, 4:], rtol=1e-12)


def test_routed_top_K_in_evaluate_is_prefix_posterior_after_the_prefix(run):
    cfg, layout, _, res = run
    r = cfg.route_tokens
    ens = res["ensembles"]["trio"]
    assert ens["routing"]["prefix_model"] == "seed-S" and ens["routing"]["route_tokens"] == r == 8
    for d in cfg.eval_domains:
        lp = _stack(layout, ["a", "b", "c"], d)
        seed = np.load(layout.score_path("seed-S", d, "test"))
        want = np.concatenate([seed[:, :r], mixing.prefix_posterior(lp)[:, r:]], axis=1)
        assert ens["ppl"]["routed-top3"][d] == pytest.approx(mixing.perplexity(want), rel=1e-9)
        assert ens["ppl"]["routed-top3"][d] != pytest.approx(ens["ppl"]["prefix-posterior"][d], rel=1e-6)


def test_tfidf_router_sends_each_trained_domain_to_its_expert(run):
    _, _, _, res = run
    share = res["ensembles"]["trio"]["routing"]["top1_share"]
    for eid, dom in OWN.items():
        assert share[dom][eid] == 1.0
    assert share["py_tests"]["a"] + share["py_tests"]["b"] == 1.0 and 0 < share["py_tests"]["a"] < 1


def test_router_never_reads_test_windows(run, experts):
    cfg, layout, _, res = run
    reader = Reader()
    infos = {e: read_expert(p) for e, p in experts.items()}
    router, path = routing.ensure_router(cfg, layout, ["a", "b", "c"], infos, "seed-S", reader, lambda: None)
    assert {s for _, s in reader.reads} == {"train"}
    assert str(path.relative_to(layout.root)) == res["ensembles"]["trio"]["routing"]["router_file"]
    before = path.read_bytes(), tensors_path(path).read_bytes()
    for d in RANGES:  # poison every test and val split: the router files must not change
        for s in ("test", "val"):
            reader.tokens[(d, s)] = np.random.default_rng(7).integers(0, 256, size=3000)
    again = evaluate(cfg, layout, experts, ENS, reader)
    assert again["ensembles"]["trio"]["routing"]["router_file"] == res["ensembles"]["trio"]["routing"]["router_file"]
    assert (path.read_bytes(), tensors_path(path).read_bytes()) == before
    reader.tokens[("py_code", "train")] = np.random.default_rng(8).integers(0, 256, size=3000)
    _, moved = routing.ensure_router(cfg, layout, ["a", "b", "c"], infos, "seed-S", reader, lambda: None)
    assert moved != path  # versioned by what it was built from


def test_routed_top1_inference_flops_equal_the_hand_count(run):
    _, _, _, res = run
    flops = res["ensembles"]["trio"]["inference_flops"]
    # non-embedding params: 2 layers x (attention 4*32*32 + MLP 3*32*I + norms 64) + 32; head 256*32 = 8192
    # S (I=48): 17568 + 8192 = 25760; M (I=64): 20640 + 8192 = 28832; L (I=80): 23712 + 8192 = 31904
    # a forward over n tokens: 2 x params x n + attention 2*L*d*n^2 = 128 n^2
    f_s, f_m, f_l = 2 * 25760 * 32 + 128 * 32**2, 2 * 28832 * 32 + 128 * 32**2, 2 * 31904 * 32 + 128 * 32**2
    assert (f_s, f_m, f_l) == (1779712, 1976320, 2172928)
    seed_prefix = 2 * 25760 * 8 + 128 * 8**2  # seed-S over the R = 8 routing tokens: 420352
    router = 4 * 8 + 2 * 3 * 8  # tf-idf of 8 tokens + 3 cosine similarities: 80
    assert flops["routed-top1"]["pydoc_topics"] == (seed_prefix + router + f_m) / 32 == 74898.5  # all routed to b (M)
    assert flops["routed-top1"]["py_code"] == (420352 + 80 + f_s) / 32
    assert flops["uniform"]["py_code"] == flops["prefix-posterior"]["py_tests"] == (f_s + f_m + f_l) / 32 == 185280
    assert flops["routed-top3"]["py_code"] == (420352 + 0 + f_s + f_m + f_l) / 32  # k = K: nothing to route
    best = res["ensembles"]["trio"]["best_expert"]["py_code"]
    assert flops["best-expert"]["py_code"] == {"a": f_s, "b": f_m, "c": f_l}[best] / 32
    share = res["ensembles"]["trio"]["routing"]["top1_share"]["py_tests"]
    assert flops["routed-top1"]["py_tests"] == pytest.approx((420352 + 80 + share["a"] * f_s + share["b"] * f_m) / 32, rel=1e-12)


def test_param_count_behind_the_hand_count_matches_the_model(experts):
    model = load_model(experts["a"])
    non_embedding = sum(p.numel() for n, p in model.named_parameters() if "embed_tokens" not in n)
    assert non_embedding == 25760  # includes the head, as the inference convention counts it


def test_cached_routing_equals_running_only_the_chosen_experts(run, experts):
    cfg, layout, reader, res = run
    d, r = "py_tests", cfg.route_tokens
    windows = scoring.domain_windows(layout, d, "test", cfg, reader)
    router = load_router(layout.root / res["ensembles"]["trio"]["routing"]["router_file"])
    chosen = router.route(windows[:, :r], 1)[:, 0]
    models = {e: load_model(experts[e]) for e in ("a", "b", "c", "seed-S")}
    rows = []
    for w, c in zip(windows, chosen):
        seed = scoring.score_model(models["seed-S"], w[None])[0]
        expert = scoring.score_model(models[router.expert_ids[c]], w[None])[0]
        rows.append(np.concatenate([seed[:r], expert[r:]]))
    assert res["ensembles"]["trio"]["ppl"]["routed-top1"][d] == pytest.approx(mixing.perplexity(np.stack(rows)), rel=1e-5)


def test_router_files_load_without_pickle(run, monkeypatch):
    _, layout, _, res = run
    path = layout.root / res["ensembles"]["trio"]["routing"]["router_file"]

    def refuse(*a, **k):
        raise AssertionError("unpickling")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)
    monkeypatch.setattr(torch, "load", refuse)
    router = load_router(path)
    assert router.kind == "tfidf" and router.expert_ids == ["a", "b", "c"]
    assert router.centroids.shape == (3, 256) and router.idf.shape == (256,)
    rec = json.loads(path.read_text())
    assert [e["domain"] for e in rec["experts"]] == ["py_code", "pydoc_topics", "py_docstrings"]
    assert rec["prefix_model"]["id"] == "seed-S" and rec["route_tokens"] == 8
    from safetensors import safe_open

    with safe_open(str(tensors_path(path)), framework="numpy") as f:
        assert sorted(f.keys()) == ["centroids", "idf"]


def test_tfidf_features_equal_scikit_learns_transformer():
    from sklearn.feature_extraction.text import TfidfTransformer

    rng = np.random.default_rng(0)
    counts = token_counts(rng.integers(0, 50, size=(40, 6)), 50)
    fitted = TfidfTransformer(sublinear_tf=True).fit(counts)
    np.testing.assert_allclose(tfidf(counts, fitted.idf_).toarray(), fitted.transform(counts).toarray(), rtol=1e-12)


def test_router_file_errors_are_one_line(tmp_path):
    router = fit_tfidf([np.array([[1, 2, 3]]), np.array([[4, 5, 6]])], np.array([[1, 2, 3], [4, 5, 6]]), 8, 3)
    router.meta = {"experts": [{"id": "x"}, {"id": "y"}]}
    path = tmp_path / "r.json"
    save_router(router, path)
    assert load_router(path).expert_ids == ["x", "y"]
    cases = []
    with pytest.raises(EnsembleError, match="router file not found") as e:
        load_router(tmp_path / "none.json")
    cases.append(e)
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    with pytest.raises(EnsembleError, match="not a router file") as e:
        load_router(bad)
    cases.append(e)
    rec = json.loads(path.read_text())
    path.write_text(json.dumps({**rec, "kind": "magic"}))
    with pytest.raises(EnsembleError, match="not a router file") as e:
        load_router(path)
    cases.append(e)
    path.write_text(json.dumps(rec))
    data = bytearray(tensors_path(path).read_bytes())
    data[-1] ^= 1
    tensors_path(path).write_bytes(bytes(data))
    with pytest.raises(EnsembleError, match="checksum does not match") as e:
        load_router(path)
    cases.append(e)
    assert all("\n" not in str(c.value) for c in cases)


def test_hidden_router_builds_from_the_prefix_model(tiny, experts, tmp_path):
    cfg = config(tiny, router="hidden", methods=("uniform", "routed-top1"))
    layout = RunLayout(tmp_path)
    res = evaluate(cfg, layout, experts, ENS, Reader())
    rec = res["ensembles"]["trio"]["routing"]
    assert rec["router"] == "hidden" and rec["router_file"].startswith("routers/hidden-")
    router = load_router(layout.root / rec["router_file"])
    assert router.centroids.shape == (3, 32) and router.idf is None
    share = rec["top1_share"]
    assert np.mean([share[dom][e] for e, dom in OWN.items()]) > 0.5  # chance is 1/3
    flops = res["ensembles"]["trio"]["inference_flops"]["routed-top1"]["pydoc_topics"]
    assert flops < res["ensembles"]["trio"]["inference_flops"]["uniform"]["pydoc_topics"] / 2


def test_generation_loads_and_runs_only_the_routed_experts(run, experts, monkeypatch):
    from hdee.ensemble import Ensemble
    from hdee.ensemble import ensemble as ensemble_module

    _, layout, _, res = run
    path = layout.root / res["ensembles"]["trio"]["routing"]["router_file"]
    loaded = []
    real = ensemble_module.load_model
    monkeypatch.setattr(ensemble_module, "load_model", lambda p: loaded.append(p) or real(p))
    prompt = [70, 80, 90, 100, 110, 120, 65, 75, 5]  # its first R = 8 tokens are pydoc_topics' (b)
    out, chosen = routing.generate_routed(path, prompt, "routed-top1", max_new_tokens=5, seed=3)
    assert chosen == ["b"] and [p.resolve() for p in loaded] == [experts["b"].resolve()]
    assert out.weights.shape == (5, 1)
    alone = Ensemble([experts["b"]]).generate(prompt, 5, seed=3)
    assert out.new_ids == alone.new_ids
    loaded.clear()
    out2, chosen2 = routing.generate_routed(path, prompt, "routed-top2", max_new_tokens=3, seed=3)
    assert chosen2[0] == "b" and len(loaded) == 2 and out2.weights.shape == (3, 2)
    with pytest.raises(EnsembleError, match="routed-top<k>"):
        routing.generate_routed(path, prompt, "uniform")


@pytest.fixture(scope="module")
def tokenizer_file(tmp_path_factory):
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = [f"w{i}" for i in range(256)]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    tok.save(str(path))
    return path


def test_cli_generate_with_router(run, experts, tokenizer_file, tmp_path):
    _, layout, _, res = run
    path = layout.root / res["ensembles"]["trio"]["routing"]["router_file"]
    text = "w130 w140 w150 w160 w170 w180 w135 w145 w1"  # 8 tokens of py_docstrings' range (c), then one more
    out = CliRunner().invoke(app, ["generate", "--router", str(path), "--prompt", text,
                                   "--tokenizer", str(tokenizer_file), "--max-new-tokens", "3"])
    assert out.exit_code == 0, out.output
    assert out.stdout.startswith(text + " w") and "routed to c" in out.stderr
    both = CliRunner().invoke(app, ["generate", str(experts["a"]), "--router", str(path), "--prompt", "w1",
                                    "--tokenizer", str(tokenizer_file)])
    assert "not both" in cli_error(both)
    missing = CliRunner().invoke(app, ["generate", "--router", str(tmp_path / "no.json"), "--prompt", "w1",
                                       "--tokenizer", str(tokenizer_file)])
    assert "router file not found" in cli_error(missing)


def test_routed_method_names_and_route_tokens_are_validated(tiny):
    assert config(tiny, methods=("routed-top5",)).eval.methods == ["routed-top5"]
    raw = tiny.model_dump()
    for bad, what in (({"eval": {**raw["eval"], "methods": ["routed-top0"]}}, "unknown mixing method 'routed-top0'"),
                      ({"routing": {**raw["routing"], "route_tokens": 32}}, "must be below data.seq_len 32"),
                      ({"routing": {**raw["routing"], "prefix_model": "XL"}}, "not in model.intermediate")):
        with pytest.raises(ValueError, match=what):
            ExperimentConfig.model_validate({**raw, **bad})
    assert tiny.route_tokens == 8  # seq_len 32 // 4


def test_cli_eval_methods_option(run, experts, tiny, tmp_path, monkeypatch):
    from hdee.core.fsutil import atomic_write_json

    layout = RunLayout(tmp_path / "run")
    atomic_write_json(layout.config_snapshot, tiny.model_dump(mode="json"))
    Plan(config_name=tiny.name, vocab=256, budget_flops=1.0, jobs=[], experts={k: str(v) for k, v in experts.items()},
         ensembles={"trio": EnsemblePlan(experts=["a", "b", "c"])}).write(layout.plan_json)
    monkeypatch.setattr(scoring, "read_tokens", Reader())
    res = CliRunner().invoke(app, ["eval", str(layout.root), "--methods", "uniform,routed-top1"])
    assert res.exit_code == 0, res.output
    out = json.loads(layout.results_json.read_text())
    assert out["methods"] == ["uniform", "routed-top1"] and out["ensembles"]["trio"]["routing"]["router"] == "tfidf"
    bad = CliRunner().invoke(app, ["eval", str(layout.root), "--methods", "uniform,routed-topx"])
    assert "unknown mixing method 'routed-topx'" in cli_error(bad)
    mixed = CliRunner().invoke(app, ["eval", str(layout.root), "--methods", "uniform", "--without", "a"])
    assert "--methods goes with the run's own evaluation" in cli_error(mixed)


def test_prefix_model_choice(tiny, experts):
    infos = {e: read_expert(p) for e, p in experts.items()}
    assert routing.pick_prefix_model(tiny, infos, ["a", "b"])[0] == "seed-S"
    raw = tiny.model_dump()
    m = ExperimentConfig.model_validate({**raw, "routing": {**raw["routing"], "prefix_model": "M"}})
    assert routing.pick_prefix_model(m, infos, ["a", "b"])[0] == "seed-M"
    no_seeds = {e: i for e, i in infos.items() if not e.startswith("seed")}
    eid, why = routing.pick_prefix_model(tiny, no_seeds, ["b", "c"])
    assert eid == "b" and "no seed model" in why
    large = ExperimentConfig.model_validate({**raw, "routing": {**raw["routing"], "prefix_model": "L"}})
    with pytest.raises(EnsembleError, match="no seed model of that size"):
        routing.pick_prefix_model(large, infos, ["a"])


def test_forward_flops_are_a_third_of_the_training_count():
    from hdee.model import SizeSpec, flops_per_token_full, forward_flops

    spec = SizeSpec(vocab=2048, hidden=96, layers=3, heads=3, kv_heads=3, intermediate=384, seq_len=128)
    assert forward_flops(spec, 128) == pytest.approx(flops_per_token_full(spec) * 128 / 3, rel=1e-12)
    assert forward_flops(spec, 16) < forward_flops(spec, 128) * 16 / 128  # a shorter context attends less
