"""`hdee export`: the exported HF model computes exactly hdee's mixture, loads anywhere, generates, is refused cleanly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import hdee  # noqa: F401 - registers hdee_ensemble with the Auto classes
from hdee.run import load_run
from hdee.cli.app import app
from hdee.ensemble.experts import read_expert
from hdee.ensemble.mixing import mix_cached
from hdee.ensemble.routing import RoutedEvaluator
from hdee.ensemble.scoring import domain_windows, read_tokens, split_val
from hdee.export.spec import ExportSpec
from hdee.export.writer import write_export
from tests.helpers.cli_helpers import cli_error

torch.set_num_threads(1)
STRATEGY, DOMAIN = "MHe-IHo", "py_code"
from tests.helpers.paths import ROOT


def _export(tiny_run, out: Path, method: str, *extra: str) -> Path:
    res = CliRunner().invoke(app, ["export", str(tiny_run.layout.root), "--strategy", STRATEGY, "--method", method,
                                   "--out", str(out), *extra])
    assert res.exit_code == 0, res.output
    assert f"wrote {out}" in res.output
    return out


class _Exports(dict):
    """Each method's export of the tiny run's MHe-IHo ensemble, written on first use."""

    def __init__(self, tiny_run, root: Path):
        super().__init__()
        self.tiny_run, self.root = tiny_run, root

    def __missing__(self, method: str) -> Path:
        extra = ["--prior-domain", DOMAIN] if method.startswith("cached-prior") else []
        self[method] = _export(self.tiny_run, self.root / method, method, *extra)
        return self[method]


@pytest.fixture(scope="module")
def exports(tiny_run, tmp_path_factory):
    return _Exports(tiny_run, tmp_path_factory.mktemp("exports"))


def _stacked(layout, ids, split):
    return np.stack([np.load(layout.score_path(e, DOMAIN, split), allow_pickle=False) for e in ids])


def _hdee_scores(tiny_run, method: str, windows: np.ndarray) -> np.ndarray:
    """hdee's own mixture of the ensemble on DOMAIN's test windows, from the run's cached scores."""
    run = load_run(tiny_run.layout.root)
    ids = run.ensembles[STRATEGY].experts
    lp = _stacked(run.layout, ids, "test")
    if method.startswith("routed"):
        infos = {e: read_expert(d) for e, d in run.experts.items()}
        k = int(method.removeprefix("routed-top"))
        mixed, _ = RoutedEvaluator(run.cfg, run.layout, infos, read_tokens).mix(ids, DOMAIN, windows, lp, k)
        return mixed
    prior_lp, _ = split_val(_stacked(run.layout, ids, "val"), run.cfg.eval.prior_sequences)
    return mix_cached(method, lp, prior_lp, top_k_experts=run.cfg.eval.top_k, prior_alpha=run.cfg.eval.prior_alpha)


def _exported_scores(model, windows: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(np.ascontiguousarray(windows, dtype=np.int64))
    with torch.inference_mode():
        logits = model(input_ids=x[:, :-1]).logits
    return logits.double().gather(-1, x[:, 1:, None])[..., 0].numpy()


@pytest.mark.parametrize("method", ["prefix-posterior", "cached-prior", "routed-top1", "uniform", "prevtoken-posterior",
                                    "cached-prior-prevtoken", "routed-top2"])
def test_exported_log_probs_equal_hdee_scores(tiny_run, exports, method):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(exports[method])).eval()  # no remote code: hdee registered it
    assert type(model).__module__ == "hdee.export.modeling_hdee_ensemble"
    windows = domain_windows(tiny_run.layout, DOMAIN, "test", tiny_run.cfg, read_tokens)
    got = _exported_scores(model, windows)
    want = _hdee_scores(tiny_run, method, windows)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    if method == "routed-top1":  # the router really chose: both experts appear across the windows
        with torch.inference_mode():
            from hdee.export.modeling_hdee_ensemble import HdeeEnsembleCache

            state = HdeeEnsembleCache()
            model(input_ids=torch.from_numpy(windows[:, :-1].astype(np.int64)), cache=state)
        assert sorted(set(state.choice[:, 0].tolist())) == [0, 1]


def test_hidden_router_over_all_experts_equals_hdee(tiny_run, tmp_path):
    """routed-top2 over the four experts of the `all` ensemble, with a hidden-state router (built now,
    in a copy of the run, from train splits): the export equals evaluation's routed mixture."""
    import shutil

    from transformers import AutoModelForCausalLM

    from hdee.export.writer import export_run
    from hdee.trust import config_sha256

    shutil.copytree(tiny_run.layout.root, tmp_path / "run")
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    cfg["routing"]["router"] = "hidden"  # evaluation-only: no job id changes
    (tmp_path / "run" / "config.json").write_text(json.dumps(cfg))
    plan = json.loads((tmp_path / "run" / "plan.json").read_text())
    plan["config_sha256"] = config_sha256(cfg)  # as `hdee run` with the edited config would record it
    (tmp_path / "run" / "plan.json").write_text(json.dumps(plan))
    run = load_run(tmp_path / "run")
    done = export_run(run, STRATEGY, "routed-top2", tmp_path / "hf", kind="all")
    ids = done.spec.members
    assert done.spec.router.kind == "hidden" and len(ids) == 4 and done.spec.prefix_model not in ids
    model = AutoModelForCausalLM.from_pretrained(str(done.path)).eval()
    infos = {e: read_expert(d) for e, d in run.experts.items()}
    windows = domain_windows(run.layout, DOMAIN, "test", run.cfg, read_tokens)
    lp = np.stack([np.load(run.layout.score_path(e, DOMAIN, "test"), allow_pickle=False) for e in ids])
    want, _ = RoutedEvaluator(run.cfg, run.layout, infos, read_tokens).mix(ids, DOMAIN, windows, lp, 2)
    np.testing.assert_allclose(_exported_scores(model, windows), want, atol=1e-5, rtol=0)


def test_cached_prior_is_fixed_in_the_config(tiny_run, exports):
    cfg = json.loads((exports["cached-prior"] / "config.json").read_text())
    assert cfg["prior_domain"] == DOMAIN and len(cfg["log_prior"]) == 2
    results = json.loads(tiny_run.layout.results_path(0).read_text())
    np.testing.assert_allclose(np.exp(cfg["log_prior"]), results["ensembles"][STRATEGY]["priors"][DOMAIN], atol=1e-12)
    card = (exports["cached-prior"] / "README.md").read_text()
    ppl = results["ensembles"][STRATEGY]["ppl"]["cached-prior"][DOMAIN]
    assert card.startswith("---\n") and "library_name: transformers" in card and f"{ppl:.3f}" in card


def test_generate_with_cache_equals_without(exports):
    from transformers import AutoModelForCausalLM

    for method in ("cached-prior", "routed-top1"):
        model = AutoModelForCausalLM.from_pretrained(str(exports[method])).eval()
        for prompt in (torch.tensor([[5, 17, 42]]), torch.tensor([[7]])):  # shorter than the routing prefix: routed mid-generation
            a = model.generate(prompt, max_new_tokens=12, do_sample=False, use_cache=True)
            b = model.generate(prompt, max_new_tokens=12, do_sample=False, use_cache=False)
            assert a.shape == (1, prompt.shape[1] + 12) and a.tolist() == b.tolist()
        with torch.inference_mode():  # and the last step's cached logits equal a full forward's
            full = model(input_ids=a).logits[0, -1]
            out = model(input_ids=a[:, :-1], use_cache=True)
            step = model(input_ids=a[:, -1:], cache=out.cache, use_cache=True).logits[0, -1]
        torch.testing.assert_close(step, full, atol=1e-5, rtol=0)


@pytest.mark.parametrize("method", ["cached-prior", "routed-top1"])
def test_left_padded_batch_equals_each_prompt_alone(exports, method):
    """pipeline and lm-eval batch prompts with left padding: each row must get what it gets alone
    (the posterior ignores padding; a routed row routes on its own first R tokens)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(exports[method])).eval()
    tok = AutoTokenizer.from_pretrained(str(exports[method]), padding_side="left")
    tok.pad_token = tok.eos_token
    prompts = ["def main(argv):\n    parser = argparse", "import"]
    batch = tok(prompts, return_tensors="pt", padding=True)
    assert batch.attention_mask[1, 0] == 0
    with torch.inference_mode():
        together = model.generate(**batch, max_new_tokens=8, do_sample=False)
        logits = model(**batch).logits
        for i, p in enumerate(prompts):
            ids = tok(p, return_tensors="pt").input_ids
            alone = model.generate(ids, max_new_tokens=8, do_sample=False)
            assert together[i, -8:].tolist() == alone[0, -8:].tolist()
            torch.testing.assert_close(logits[i, -ids.shape[1]:], model(input_ids=ids).logits[0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("method", ["top-k", "product"])
def test_heterogeneous_s_m_l_export_loads_and_generates(tiny_run, tmp_path, method):
    from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

    from hdee.ensemble import Ensemble

    names = sorted(p.name for p in tiny_run.layout.experts_dir.iterdir())
    ids = [next(n for n in names if n.startswith(f"train-{lin}-i2-{s}-")) for lin, s in (("easy", "S"), ("easy", "M"), ("hard", "L"))]
    infos = {e: read_expert(tiny_run.layout.expert_dir(e)) for e in ids}
    assert sorted({i.config["intermediate_size"] for i in infos.values()}) == [48, 64, 80]
    spec = ExportSpec(tiny_run.layout.root, "hand-picked", "final", method, ids, infos, top_k=2)
    out = write_export(spec, tmp_path / "sml", "tiny", None).path
    model = AutoModelForCausalLM.from_pretrained(str(out)).eval()
    assert [m.config.intermediate_size for m in model.models] == [48, 64, 80]
    windows = domain_windows(tiny_run.layout, DOMAIN, "test", tiny_run.cfg, read_tokens)[:3]
    want = Ensemble([infos[e].path for e in ids]).log_probs(windows, method, top_k=2)  # top-k: 2 of the 3
    np.testing.assert_allclose(_exported_scores(model, windows), want, atol=1e-5, rtol=0)
    tok = AutoTokenizer.from_pretrained(str(out), trust_remote_code=True)
    text = pipeline("text-generation", model=model, tokenizer=tok)("def f(x):\n", max_new_tokens=8, do_sample=False)
    assert text[0]["generated_text"].startswith("def f(x):\n")
    assert "hand-picked" in (out / "README.md").read_text()


def test_network_with_tied_embeddings_keeps_its_output_layer(tmp_path):
    """An expert whose output layer shares its input embedding (its safetensors holds the embedding only)."""
    from safetensors.torch import load_file, save_file
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    from hdee.export.configuration_hdee_ensemble import HdeeEnsembleConfig

    torch.manual_seed(0)
    net = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                       num_attention_heads=2, tie_word_embeddings=True)).eval()
    net.save_pretrained(tmp_path / "net")
    tensors = load_file(tmp_path / "net" / "model.safetensors")
    assert "lm_head.weight" not in tensors
    HdeeEnsembleConfig(models=[net.config.to_dict()], method="uniform").save_pretrained(tmp_path / "ens")
    save_file({f"models.0.{k}": v for k, v in tensors.items()}, tmp_path / "ens" / "model.safetensors", metadata={"format": "pt"})
    ens = AutoModelForCausalLM.from_pretrained(str(tmp_path / "ens")).eval()
    x = torch.tensor([[1, 2, 3, 4]])
    with torch.inference_mode():
        torch.testing.assert_close(ens(input_ids=x).logits, torch.log_softmax(net(input_ids=x).logits, -1), atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    "args, expect",
    [
        (["--method", "best-expert"], "cannot be exported: it picks its expert by the scored text itself"),
        (["--method", "cached-prior"], "fixes its prior at export: name the domain"),
        (["--method", "uniform", "--prior-domain", DOMAIN], "--prior-domain goes with a cached-prior method"),
        (["--method", "no-such-method"], "unknown mixing method"),
        (["--ensemble", "some"], "--ensemble 'some': use one of final, all"),
        (["--method", "routed-soft-top2"], "cannot be exported: the exported model computes only"),
    ],
)
def test_refused_in_one_line(tiny_run, tmp_path, args, expect):
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["export", str(tiny_run.layout.root), "--strategy", STRATEGY, "--out", str(out), *args])
    assert expect in cli_error(res)
    assert not out.exists()


def test_a_router_the_model_cannot_compute_is_refused(tiny_run):
    import dataclasses

    from hdee.core.errors import ConfigError
    from hdee.export.spec import export_spec
    from hdee.run import load_run

    run = load_run(tiny_run.layout.root)
    bigram = run.cfg.model_copy(update={"routing": run.cfg.routing.model_copy(update={"router": "bigram"})})
    with pytest.raises(ConfigError, match="routing.router 'bigram': the exported model computes tfidf, hidden routers only"):
        export_spec(dataclasses.replace(run, cfg=bigram), STRATEGY, "routed-top1", "all")


def test_a_plugin_method_is_refused(monkeypatch):
    """A method a plugin registers runs inside hdee only: the exported model cannot compute it."""
    from hdee.core.errors import EnsembleError
    from hdee.export import spec as export_spec_module
    from hdee.registry import MixingEntry

    plugin = MixingEntry("my-mix", score=lambda lp, log_prior, top_k: lp.mean(0))
    monkeypatch.setattr(export_spec_module.MIXING_METHODS, "find", lambda name: plugin)
    with pytest.raises(EnsembleError, match="my-mix: cannot be exported: the exported model computes only"):
        export_spec_module.check_method("my-mix")


def test_refuses_out_in_run_dir_or_existing(tiny_run, tmp_path):
    inside = tiny_run.layout.root / "exported"
    res = CliRunner().invoke(app, ["export", str(tiny_run.layout.root), "--strategy", STRATEGY, "--out", str(inside)])
    assert "must lie outside the run directory" in cli_error(res) and not inside.exists()
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    res = CliRunner().invoke(app, ["export", str(tiny_run.layout.root), "--strategy", STRATEGY, "--out", str(tmp_path / "taken")])
    assert "already exists" in cli_error(res)
    assert (tmp_path / "taken" / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize("method", ["prefix-posterior", "cached-prior"])
def test_lm_eval_hf_model_agrees_with_hdee_lm_eval(tiny_run, exports, method, monkeypatch):
    """`lm_eval --model hf` on the export and hdee's own EnsembleLM (`hdee lm-eval`): same accuracy, same
    log-likelihood of every choice (summed float32 log-probs, so to 1e-4)."""
    pytest.importorskip("lm_eval")
    import lm_eval
    from lm_eval.tasks import TaskManager

    from hdee.evaluation.lm_eval import EnsembleLM, run_prior

    monkeypatch.chdir(ROOT)  # the task yaml names its jsonl relative to the repository root
    run = load_run(tiny_run.layout.root)
    tasks = TaskManager(include_path=str(ROOT / "tests/data/lm_eval"), include_defaults=False)
    kw = {"tasks": ["hdee_tiny_mc"], "task_manager": tasks, "log_samples": True, "bootstrap_iters": 0}
    hf = lm_eval.simple_evaluate(model="hf", model_args=f"pretrained={exports[method]},trust_remote_code=True",
                                 device="cpu", **kw)
    prior = run_prior(run, STRATEGY, DOMAIN) if method == "cached-prior" else None
    own_lm = EnsembleLM(run.ensemble_dirs(STRATEGY), run.layout.tokenizer_path, method, log_prior=prior,
                        max_length=run.cfg.data.seq_len)
    own = lm_eval.simple_evaluate(model=own_lm, **kw)
    for key in ("acc,none", "acc_norm,none"):
        assert hf["results"]["hdee_tiny_mc"][key] == own["results"]["hdee_tiny_mc"][key]
    ll = [[float(r[0][0]) for s in res["samples"]["hdee_tiny_mc"] for r in s["resps"]] for res in (hf, own)]
    assert len(ll[0]) == len(ll[1]) > 0
    np.testing.assert_allclose(ll[0], ll[1], atol=1e-4, rtol=0)
    if method == "cached-prior":  # generate_until: lm-eval's batched, left-padded greedy search, hdee's sampler
        from lm_eval.api.instance import Instance
        from lm_eval.models.huggingface import HFLM

        reqs = [Instance("generate_until", {}, (c, {"until": ["\n\n"], "max_gen_toks": 10, "do_sample": False}), 0)
                for c in ["def main(argv):\n", "import os", "Question: what is x?\nAnswer:"]]
        lm = HFLM(pretrained=str(exports[method]), trust_remote_code=True, device="cpu", batch_size=2)
        assert lm.generate_until(reqs) == own_lm.generate_until(reqs)


_REMOTE = """
import sys
sys.modules["hdee"] = None  # as where hdee is not installed
import numpy as np, torch
from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline
d = sys.argv[1]
m = AutoModelForCausalLM.from_pretrained(d, trust_remote_code=True).eval()
x = torch.from_numpy(np.load(sys.argv[2]))
with torch.inference_mode():
    np.save(sys.argv[3], m(input_ids=x).logits.numpy())
tok = AutoTokenizer.from_pretrained(d, trust_remote_code=True)
print(pipeline("text-generation", model=m, tokenizer=tok)("import os", max_new_tokens=5, do_sample=False)[0]["generated_text"])
"""


@pytest.mark.slow  # a fresh interpreter imports transformers: ~10 s
def test_loads_as_remote_code_without_hdee(tiny_run, exports, tmp_path):
    from transformers import AutoModelForCausalLM

    d = exports["routed-top1"]
    x = domain_windows(tiny_run.layout, DOMAIN, "test", tiny_run.cfg, read_tokens)[:4, :-1].astype(np.int64)
    np.save(tmp_path / "x.npy", x)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-c", _REMOTE, str(d), str(tmp_path / "x.npy"), str(tmp_path / "y.npy")],
                         check=False, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.startswith("import os")
    with torch.inference_mode():
        here = AutoModelForCausalLM.from_pretrained(str(d)).eval()(input_ids=torch.from_numpy(x)).logits.numpy()
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), here, atol=1e-6, rtol=0)


@pytest.mark.slow  # a fresh interpreter imports transformers: ~10 s
def test_import_hdee_registers_lazily(tmp_path):
    """`import hdee` imports neither torch nor transformers; the Auto classes know hdee_ensemble once loaded."""
    script = (
        "import sys, hdee\n"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules\n"
        "from transformers import AutoConfig, AutoModelForCausalLM\n"
        "cfg = AutoConfig.for_model('hdee_ensemble')\n"
        "print(type(cfg).__module__, AutoModelForCausalLM._model_mapping[type(cfg)].__name__)\n"
    )
    env = os.environ | {"PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1"}
    res = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, env=env,
                         cwd=tmp_path, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.split() == ["hdee.export.configuration_hdee_ensemble", "HdeeEnsembleForCausalLM"]
