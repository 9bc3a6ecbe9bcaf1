"""The seed cache: `hdee seeds` trains each seed once outside the run, and runs import it."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from tests.helpers.cli_helpers import cli_error
from hdee.cli.app import app
from hdee.config import ExperimentConfig, load_config
from hdee.core.errors import CheckpointError, LockError
from hdee.expert_dir import load_record
from hdee.core.layout import RunLayout
from hdee.plan import build_plan
from hdee.train.seed_cache import model_dir, seeds_root
from tests.helpers.tiny_run import ROOT, InlineExecutor

pytestmark = pytest.mark.slow  # each test trains tiny seed models


@pytest.fixture(scope="module")
def _cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(autouse=True)
def _inline(monkeypatch, _cache_dir):
    """Jobs run in this process (no worker start-up); the embedded texts are built once for the
    module, and every test starts with an empty seed cache."""
    monkeypatch.setenv("HDEE_CACHE", str(_cache_dir))
    shutil.rmtree(_cache_dir / "seeds", ignore_errors=True)
    monkeypatch.setenv("RAYON_NUM_THREADS", "1")
    import hdee.pipeline.experiment
    import hdee.pipeline.seed_build

    def inline(cfg, run_dir, **kw):
        return InlineExecutor(run_dir)

    monkeypatch.setattr(hdee.pipeline.seed_build, "make_executor", inline)
    monkeypatch.setattr(hdee.pipeline.experiment, "make_executor", inline)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _config(tmp_path: Path, tokens: int = 2048, cache: bool = True) -> ExperimentConfig:
    """configs/tiny.toml with one strategy (an M seed), its seeds trained on a seed domain of their own."""
    text = (ROOT / "configs/tiny.toml").read_text()
    text = text.replace('strategies = ["MHo-IHo", "MHo-IHe", "MHe-IHo", "MHe-IHe", "dense"]', 'strategies = ["MHo-IHo"]')
    text = text.replace("[seed_models]\ntokens = 4096",
                        f'[seed_models]\n{"cache = true" if cache else ""}\ndomains = ["seed_text"]\ntokens = {tokens}')
    text += '\n[[domains]]\nname = "seed_text"\nrole = "seed"\nsource = { kind = "embedded", name = "idle_docs" }\nmax_bytes = 100_000\n'
    path = tmp_path / f"seeded-{tokens}.toml"
    path.write_text(text)
    return load_config(path)


def _mtimes(key: str) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in model_dir(key).iterdir()}


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "model.safetensors"))


def test_second_build_is_a_noop_a_new_run_imports_and_a_changed_input_rebuilds(tmp_path):
    from hdee.pipeline.seed_build import build_seeds

    cfg = _config(tmp_path)
    first = build_seeds(cfg, RunLayout(tmp_path / "a"), view=False)
    (row,) = first["seeds"]
    key = Path(row["entry"]).parent.name
    assert row["trained_now"] and row["size"] == "M" and Path(row["entry"]).parent.parent == seeds_root()
    assert row["steps"] == 8 and row["val_loss"] is not None
    before = _mtimes(key)

    again = build_seeds(cfg, RunLayout(tmp_path / "a"), view=False)
    assert again["jobs_run"] == 0 and not again["seeds"][0]["trained_now"] and _mtimes(key) == before

    # another run directory of the same config: the seed is imported from the cache, not trained
    other = build_seeds(cfg, RunLayout(tmp_path / "b"), view=False)
    assert not other["seeds"][0]["trained_now"] and _mtimes(key) == before
    imported = RunLayout(tmp_path / "b").expert_dir(other["seeds"][0]["job"])
    cached = _weights(model_dir(key))
    assert all(torch.equal(t, cached[n]) for n, t in _weights(imported).items())
    rec = load_record(imported)
    assert rec.source == str(model_dir(key)) and rec.steps == 8 and rec.flops and rec.flops > 0
    assert rec.extra("trained")["model_sha256"] == load_record(model_dir(key)).model_sha256

    # a changed input (more seed tokens) names a new entry and trains it; the old one stays
    changed = build_seeds(_config(tmp_path, tokens=4096), RunLayout(tmp_path / "c"), view=False)["seeds"][0]
    assert changed["trained_now"] and Path(changed["entry"]).parent.name != key and changed["steps"] == 16
    assert _mtimes(key) == before

    # a damaged entry is never imported: the run that needs it stops with one line naming the file
    weights = model_dir(key) / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(CheckpointError, match=re.escape(str(model_dir(key)))):
        build_seeds(cfg, RunLayout(tmp_path / "d"), view=False)


def test_an_imported_seed_is_validated_on_the_seed_eval_budget(tmp_path):
    """`seed_models.eval_tokens` decides both the cached seed's and the imported seed's validation
    loss (the number gate (b) compares), on the same windows; `train.eval_tokens` neither."""
    from hdee.pipeline.seed_build import build_seeds

    cfg = _config(tmp_path)
    assert cfg.train.eval_tokens == 512
    cfg = cfg.model_copy(update={"seed_models": cfg.seed_models.model_copy(update={"eval_tokens": 256})})
    (row,) = build_seeds(cfg, RunLayout(tmp_path / "a"), view=False)["seeds"]
    cached = load_record(Path(row["entry"]))
    imported = load_record(RunLayout(tmp_path / "a").expert_dir(row["job"]))
    assert imported.final_val_loss == pytest.approx(cached.final_val_loss, rel=1e-5)



def test_an_entry_being_trained_elsewhere_is_not_trained_twice(tmp_path):
    from hdee.core.lock import run_dir_lock
    from hdee.train.seed_cache import entry_dir, train_cached

    with run_dir_lock(entry_dir("M-0123456789abcdef"), "seeds"):
        with pytest.raises(LockError, match=r"in use by pid \d+ \(hdee seeds\)"):
            train_cached("M-0123456789abcdef", job=None)  # refused before the job is read
    assert not model_dir("M-0123456789abcdef").exists()


def test_the_main_job_imports_cached_draws_and_seed_repeats_select_among_them(tmp_path):
    from hdee.pipeline.experiment import run_experiment
    from hdee.pipeline.seed_build import build_seeds

    cfg = _config(tmp_path)
    built = build_seeds(cfg, RunLayout(tmp_path / "seeds"), draws=2, view=False)["seeds"]
    assert [r["draw"] for r in built] == [0, 1] and len({r["entry"] for r in built}) == 2
    before = {r["draw"]: _mtimes(Path(r["entry"]).parent.name) for r in built}

    layout = RunLayout(tmp_path / "run")
    run_experiment(cfg, layout, seeds=2, vary="seed-models", view=False)
    for draw, row in enumerate(built):
        assert _mtimes(Path(row["entry"]).parent.name) == before[draw]  # nothing retrained
        plan = json.loads(layout.plan_path(draw, "seed-models").read_text())
        (seed,) = [j for j in plan["jobs"] if j["kind"] == "seed"]
        assert seed["cache"] == Path(row["entry"]).parent.name
        assert load_record(layout.expert_dir(seed["id"])).source == row["entry"]
    assert layout.results_path(1, "seed-models").is_file()


def test_plan_names_the_entry_by_what_decides_the_weights(tmp_path):
    cfg = _config(tmp_path)
    plain = _config(tmp_path, cache=False)
    seed = build_plan(cfg, 512).jobs_of("seed")[0]
    assert seed.cache and seed.cache.startswith("M-")
    assert build_plan(plain, 512).jobs_of("seed")[0].cache is None
    assert "cache" not in plain.model_dump(mode="json")["seed_models"]  # old configs hash as before
    draw1 = build_plan(cfg, 512, repeat=1, vary="seed-models").jobs_of("seed")[0]
    assert draw1.cache != seed.cache
    assert build_plan(cfg, 512, repeat=1).jobs_of("seed")[0].cache == seed.cache  # domain-phase repeats share draw 0


def test_seeds_command_refuses_a_config_that_trains_seeds_in_the_run(tmp_path):
    path = tmp_path / "plain.toml"
    path.write_text((ROOT / "configs/tiny.toml").read_text())
    result = CliRunner().invoke(app, ["seeds", str(path), "--run-dir", str(tmp_path / "r"), "--no-view"])
    assert result.exit_code == 2
    assert "set seed_models.cache = true" in cli_error(result) and not (tmp_path / "r").exists()


def test_cache_and_imported_checkpoints_exclude_each_other(tmp_path):
    raw = _config(tmp_path).model_dump(mode="json")
    raw["seed_models"] = {"from": {"M": "somewhere"}, "cache": True}
    with pytest.raises(ValueError, match="seed_models.cache trains seeds once"):
        ExperimentConfig.model_validate(raw)


def test_an_entry_interrupted_in_one_job_resumes_in_another(tmp_path):
    """`hdee seeds` and a run (or two runs) name the same entry with jobs of other ids and paths:
    whichever stopped, the next one resumes its state and ends with the uninterrupted weights."""
    from hdee.train.seed_cache import train_cached
    from tests.helpers.train_helpers import make_domain, tiny_job

    domains = [make_domain(tmp_path / "data", "alpha", 1)]
    job = tiny_job(tmp_path / "unused", domains, steps=6)
    mine, theirs = (job.model_copy(update={"meta": {**job.meta, "job_id": j}, "val": v})
                    for j, v in (("seed-M-aaaa", list(domains)), ("seed-M-bbbb", [])))

    def stop(row):
        if row["step"] == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_cached("M-00000000000000aa", mine, progress=stop)
    assert (model_dir("M-00000000000000aa") / "state").is_dir()
    steps = []
    resumed = train_cached("M-00000000000000aa", theirs, progress=lambda row: steps.append(row["step"]))
    assert steps and min(steps) > 4  # resumed, not restarted
    whole = train_cached("M-00000000000000bb", mine)
    assert all(torch.equal(t, _weights(whole)[n]) for n, t in _weights(resumed).items())


def test_a_state_matched_by_the_whole_job_still_resumes_under_that_job(tmp_path, monkeypatch):
    """States written before entries resumed by their key carry the whole job's fingerprint."""
    from hdee.train import loop
    from hdee.train.seed_cache import train_cached
    from tests.helpers.train_helpers import make_domain, tiny_job

    domains = [make_domain(tmp_path / "data", "alpha", 1)]
    job = tiny_job(tmp_path / "unused", domains, steps=6)
    job = job.model_copy(update={"meta": {**job.meta, "job_id": "seed-M-aaaa"}})

    def stop(row):
        if row["step"] == 4:
            raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(loop, "job_fingerprint", loop._whole_job)
        with pytest.raises(KeyboardInterrupt):
            train_cached("M-00000000000000cc", job, progress=stop)
    steps = []
    train_cached("M-00000000000000cc", job, progress=lambda row: steps.append(row["step"]))
    assert steps and min(steps) > 4
