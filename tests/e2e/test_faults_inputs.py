"""The faults of a second battery of bad inputs, one table as in test_bad_inputs: each exits 2
with one line naming what and where, and every earlier output is byte-identical afterwards.

Damaged files, links out of the run, foreign config snapshots and plugins, a full disk and a
failed allocation; the cases that pass (a streamed generation, a trusted plugin) are below it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

from hdee.cli.app import app
from tests.helpers.safety_helpers import snapshot
from tests.e2e.test_bad_inputs import Case, Workspace, ws  # noqa: F401 - `ws` is the workspace fixture

torch.set_num_threads(1)

LOCK_HOLDER = (
    "import sys, time\n"
    "from pathlib import Path\n"
    "from hdee.core.lock import file_lock, output_lock_path\n"
    "with file_lock(output_lock_path(sys.argv[1]), sys.argv[1], 'average', 'one writer per output directory', remove=True):\n"
    "    print('held', flush=True)\n"
    "    time.sleep(120)\n"
)


def _edit_json(path: str, edit) -> callable:
    def setup(w, mp, stack):
        p = w.root / path
        data = json.loads(p.read_text())
        edit(data)
        p.write_text(json.dumps(data))
        return {}

    return setup


def _write(path: str, data: bytes):
    def setup(w, mp, stack):
        (w.root / path).write_bytes(data)
        return {}

    return setup


def _disk_full(w, mp, stack):
    from hdee.core import fsutil

    def full(f, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    mp.setattr(fsutil, "_write_file", full)
    return {}


def _tokenizer_out_of_memory(w, mp, stack):
    from hdee.evaluation import new_text as evaluate_text

    load = evaluate_text.load_tokenizer

    class Starved:
        def __init__(self, tok):
            self.tok = tok

        def __getattr__(self, name):
            return getattr(self.tok, name)

        def encode_batch(self, *args, **kwargs):
            raise MemoryError

    mp.setattr(evaluate_text, "load_tokenizer", lambda path: Starved(load(path)))
    return {}


def _foreign_plugins(w, mp, stack):
    """config.json naming a plugin, with plan.json agreeing: a run directory made elsewhere."""
    from hdee.trust import config_sha256

    cfg = json.loads((w.run / "config.json").read_text())
    cfg["plugins"] = ["hdee_faults_no_such_plugin"]
    (w.run / "config.json").write_text(json.dumps(cfg))
    plan = json.loads((w.run / "plan.json").read_text())
    plan["config_sha256"] = config_sha256(cfg)
    (w.run / "plan.json").write_text(json.dumps(plan))
    return {}


def _link_out(rel: str):
    """Move runs/tiny/<rel> to outside/<name> and leave a symbolic link to it in its place."""

    def setup(w, mp, stack):
        inside = w.run / rel
        (w.root / "outside").mkdir(exist_ok=True)
        target = w.root / "outside" / inside.name
        os.rename(inside, target)
        os.symlink(target, inside)
        return {"target": re.escape(str(target.resolve()))}

    return setup


def _average_lock_held(w, mp, stack):
    proc = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(w.root / "merged")], stdout=subprocess.PIPE, text=True)
    stack.callback(proc.wait)
    stack.callback(proc.kill)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return {"pid": proc.pid}


def _avg(w: Workspace, *extra: str) -> list[str]:
    return ["average", w.expert("MHo-IHo", 0), w.expert("MHo-IHo", 1), *extra]


def _train(w: Workspace, *extra: str) -> list[str]:
    return ["train", "-c", "tiny.toml", "--run-dir", "runs/tiny", "-d", "py_code", "--no-progress", *extra]


def _results(edit):
    return _edit_json("runs/tiny/results/results.json", edit)


def _set_ppl(results):
    results["ensembles"]["MHo-IHo"]["ppl"]["uniform"]["py_code"] = "abc"


LONG_PROMPT = " ".join(["def f(x): return x"] * 12)

CASES = [
    # ---- tracebacks that are one line now
    Case("config-seed-out-of-range", lambda w: ["run", w.config("seed = 0", "seed = 99999999999999999999"), "--no-view"],
         r"bad\.toml: seed: Input should be less than 9223372036854775808"),
    Case("config-seed-negative", lambda w: ["plan", w.config("seed = 0", "seed = -1")], r"bad\.toml: seed: Input should be greater"),
    Case("plugin-relative-name", lambda w: ["plan", "rel.toml"],
         r"rel\.toml: plugins: plugin '\.rel': not an absolute module name",
         lambda w, mp, s: {} if (w.root / "rel.toml").write_text('plugins = [".rel"]\n' + (w.root / "tiny.toml").read_text()) else {}),
    Case("train-steps-zero", lambda w: _train(w, "--steps", "0", "-o", "other/e"), r"--steps 0: must be positive"),
    Case("train-flops-negative", lambda w: _train(w, "--flops", "-5", "-o", "other/e"), r"--flops -5\.0: must be positive"),
    Case("train-seed-out-of-range", lambda w: _train(w, "--steps", "1", "--seed", "-3", "-o", "other/e"),
         r"--seed -3: must be a whole number in \[0, 2\*\*63\)"),
    Case("report-non-number-perplexity", lambda w: ["report", "runs/tiny"],
         r"results\.json: ensembles\.MHo-IHo\.ppl\.uniform\.py_code is 'abc', not a perplexity", _results(_set_ppl)),
    Case("report-null-expert-perplexity", lambda w: ["report", "runs/tiny"], r"results\.json: experts\.\S+\.ppl\.py_code is None",
         _results(lambda r: next(iter(r["experts"].values()))["ppl"].update(py_code=None))),
    Case("eval-garbage-job-record", lambda w: ["eval", "runs/tiny"],
         r"runs/tiny/jobs/prepare-\w+\.json: not a done record \(not valid JSON", lambda w, mp, s: {} if [
             p.write_text("{garbage") for p in (w.run / "jobs").glob("prepare-*.json")] else {}),
    Case("eval-job-record-cost-not-a-number", lambda w: ["eval", "runs/tiny"],
         r"jobs/prepare-\w+\.json: not a done record \(its cost is not seconds and GPUs\)", lambda w, mp, s: {} if [
             p.write_text(json.dumps({"id": "x", "cost": {"seconds": "soon"}})) for p in (w.run / "jobs").glob("prepare-*.json")] else {}),
    Case("eval-disk-full", lambda w: ["eval", "runs/tiny"], r"runs/tiny/results/results\.json: no space left on device", _disk_full),
    Case("report-disk-full", lambda w: ["report", "runs/tiny"], r"runs/tiny/report\.md: no space left on device", _disk_full),
    Case("eval-data-disk-full", lambda w: ["eval", "runs/tiny", "--data", "corpus/good.jsonl"],
         r"runs/tiny/scores/\S+/good\.\w+\.npy: no space left on device", _disk_full),
    Case("eval-data-tokenizer-out-of-memory", lambda w: ["eval", "runs/tiny", "--data", "corpus/good.jsonl"],
         r"--data: out of memory while tokenizing", _tokenizer_out_of_memory),
    # ---- eval --data: text only, UTF-8 only
    Case("eval-data-binary", lambda w: ["eval", "runs/tiny", "--data", "corpus/blob.bin"],
         r"corpus/blob\.bin: a NUL byte at offset 7: binary data, not text", _write("corpus/blob.bin", b"abcdefg\x00\x01\x02" * 50)),
    Case("eval-data-latin1", lambda w: ["eval", "runs/tiny", "--data", "corpus/latin.txt"],
         r"corpus/latin\.txt: not UTF-8 text \(invalid byte at offset 3\)", _write("corpus/latin.txt", b"caf\xe9 au lait " * 200)),
    Case("eval-data-jsonl-not-utf8", lambda w: ["eval", "runs/tiny", "--data", "corpus/mixed.jsonl"],
         r"corpus/mixed\.jsonl:2: not UTF-8 text", _write("corpus/mixed.jsonl", b'{"text": "fine"}\n{"text": "caf\xe9"}\n')),
    # ---- silent before, refused now
    Case("report-strategy-deleted", lambda w: ["report", "runs/tiny"], r"results\.json: no results for strategy MHo-IHo of its plan",
         _results(lambda r: r["ensembles"].pop("MHo-IHo"))),
    Case("eval-edited-config", lambda w: ["eval", "runs/tiny"],
         r"runs/tiny/config\.json: differs from the config plan\.json was made from",
         _edit_json("runs/tiny/config.json", lambda c: c["eval"].update(prior_sequences=c["eval"]["prior_sequences"] + 1))),
    # ---- plugins of a run directory not started here
    Case("eval-foreign-plugins", lambda w: ["eval", "runs/tiny"],
         r"runs/tiny/config\.json: names plugins \(hdee_faults_no_such_plugin\), .* pass --trust-plugins", _foreign_plugins),
    Case("report-foreign-plugins", lambda w: ["report", "runs/tiny"], r"names plugins .* pass --trust-plugins", _foreign_plugins),
    Case("lm-eval-foreign-plugins", lambda w: ["lm-eval", "runs/tiny", "--strategy", "MHo-IHo", "--tasks", "arc_easy"],
         r"runs/tiny/config\.json: names plugins \(hdee_faults_no_such_plugin\)", _foreign_plugins),
    Case("eval-trusted-plugins-are-imported", lambda w: ["eval", "runs/tiny", "--trust-plugins"],
         r"plugins: cannot import plugin 'hdee_faults_no_such_plugin'", _foreign_plugins),
    # ---- finished experts that belong to another job
    Case("train-out-is-another-jobs-expert", lambda w: _train(w, "--size", "S", "--steps", "3", "-o", w.seed("M")),
         r"experts/seed-M-\w+: holds a finished expert of another job \(size M there, S here; steps \d+ there, 3 here\)"),
    # ---- symbolic links out of the run
    Case("run-expert-linked-outside", lambda w: ["run", "tiny.toml", "--no-view"],
         r"runs/tiny/experts/seed-S-\w+: a symbolic link to {target}, outside the run directory",
         lambda w, mp, s: _link_out(f"experts/{next(e for e in w.plan['experts'] if e.startswith('seed-S-'))}")(w, mp, s)),
    Case("eval-results-linked-outside", lambda w: ["eval", "runs/tiny"],
         r"runs/tiny/results: a symbolic link to {target}, outside the run directory", _link_out("results")),
    # ---- hdee average --force
    Case("average-force-over-a-data-dir", lambda w: _avg(w, "--out", "corpus", "--force"),
         r"corpus: is not a model directory hdee wrote"),
    Case("average-force-over-the-run-dir", lambda w: _avg(w, "--out", "copy", "--force"), r"copy: is a run directory",
         lambda w, mp, s: {} if subprocess.run(["cp", "-r", str(w.run), str(w.root / "copy")], check=True) else {}),
    Case("average-force-over-a-trained-expert", lambda w: _avg(w, "--out", w.seed("L"), "--force"),
         r"seed-L-\w+: holds a model of kind 'seed', not an average"),
    Case("average-force-over-other-files", lambda w: _avg(w, "--out", "other", "--force"),
         r"other: is not a model directory hdee wrote \(no hdee\.json\); --force replaces only an earlier average"),
    Case("average-output-locked", lambda w: _avg(w, "--out", "merged"), r"merged: in use by pid {pid} \(hdee average\)",
         _average_lock_held),
    # ---- generate
    Case("generate-out-of-memory", lambda w: ["generate", w.expert("MHo-IHo", 0), "--prompt", "x",
                                              "--tokenizer", "runs/tiny/data/tokenizer.json"],
         r"^error: out of memory; free memory", lambda w, mp, s: {} if mp.setattr(
             "hdee.ensemble.ensemble.load_hf_tokenizer", lambda *a, **k: (_ for _ in ()).throw(MemoryError())) else {}),
    Case("generate-prompt-fills-the-context", lambda w: ["generate", w.expert("MHo-IHo", 0), "--prompt", LONG_PROMPT,
                                                         "--tokenizer", "runs/tiny/data/tokenizer.json"],
         r"the prompt has \d+ tokens, which fills the experts' context of 32"),
]


def test_the_table_is_large_enough():
    assert len(CASES) >= 33 and len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_fault(case: Case, ws: Workspace, monkeypatch):  # noqa: F811 - the fixture imported above
    with contextlib.ExitStack() as stack:
        values = case.setup(ws, monkeypatch, stack)
        args = case.args(ws)
        before = snapshot(ws.root)
        res = CliRunner().invoke(app, args, env={"COLUMNS": "80"})
        after = snapshot(ws.root)
    assert res.exit_code == 2, (res.exit_code, res.output, res.exception)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("error: ") and re.search(case.match.format(**values), lines[0]), lines[0]
    assert sorted(after) == sorted(before) and all(after[k] == before[k] for k in before), "earlier outputs changed"


def test_generate_streams_and_stops_at_the_context(ws: Workspace):  # noqa: F811
    """A request far past the experts' context runs to the context and says so; the text goes to stdout."""
    prompt = "def f():"
    res = CliRunner().invoke(app, ["generate", ws.expert("MHe-IHo", 0), ws.expert("MHe-IHo", 1), "--prompt", prompt,
                                   "--tokenizer", "runs/tiny/data/tokenizer.json", "--temperature", "0",
                                   "--max-new-tokens", "1000000000"])
    assert res.exit_code == 0, res.output
    assert res.stdout.startswith(prompt) and len(res.stdout) > len(prompt) + 5
    assert "stopped at the experts' context of 32 tokens" in res.stderr


def test_generate_hands_out_the_text_as_it_is_sampled(ws: Workspace):  # noqa: F811
    from hdee.ensemble import Ensemble

    ens = Ensemble([ws.root / ws.expert("MHe-IHo", 0), ws.root / ws.expert("MHe-IHo", 1)])
    pieces: list[str] = []
    out = ens.generate("import", 6, temperature=0, tokenizer=ws.run / "data/tokenizer.json", stream=pieces.append)
    assert out.capped_at is None and len(out.new_ids) == 6
    assert len(pieces) >= 2 and "".join(pieces) == out.text  # several pieces, together the whole continuation


def test_a_path_that_is_only_linked_inside_the_run_is_accepted(ws: Workspace):  # noqa: F811
    """A link that stays inside the run directory is not a way out: left alone."""
    os.symlink("results", ws.run / "results-link")
    res = CliRunner().invoke(app, ["report", "runs/tiny"])
    assert res.exit_code == 0, res.output


def test_a_trusted_run_imports_its_plugins_without_the_flag(tmp_path, monkeypatch):
    """`hdee run` notes the run (in the user's cache) with its config.json; edits undo the trust."""
    from hdee.core.errors import ConfigError
    from hdee.trust import check_plugins, remember_run

    monkeypatch.setenv("HDEE_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "run"
    run.mkdir()
    raw = {"name": "x", "plugins": ["my_plugin"]}
    with pytest.raises(ConfigError, match="names plugins \\(my_plugin\\)"):
        check_plugins(run, run / "config.json", raw, trust=False)
    remember_run(run, raw)
    check_plugins(run, run / "config.json", raw, trust=False)  # started here: no flag needed
    with pytest.raises(ConfigError, match="not started here with this config.json"):
        check_plugins(run, run / "config.json", {**raw, "plugins": ["other_plugin"]}, trust=False)
    copy = tmp_path / "copy"
    copy.mkdir()
    with pytest.raises(ConfigError, match="pass --trust-plugins"):  # the same config in another directory
        check_plugins(copy, copy / "config.json", raw, trust=False)
    check_plugins(copy, copy / "config.json", raw, trust=True)
    check_plugins(copy, copy / "config.json", {"name": "x"}, trust=False)  # no plugins: nothing to trust


def test_plan_records_the_config_it_was_made_from(tiny_run):
    from hdee.trust import config_sha256

    cfg = json.loads(tiny_run.layout.config_snapshot.read_text())
    assert tiny_run.plan["config_sha256"] == config_sha256(cfg) == tiny_run.cfg.fingerprint()


def test_model_weights_follow_the_umask(tiny_run, tmp_path):
    """Every model.safetensors the trainer and `hdee average` write gets the umask's permissions."""
    from hdee.ensemble import average_experts
    from hdee.core.fsutil import _umask

    want = 0o666 & ~_umask()
    weights = sorted(tiny_run.layout.experts_dir.glob("*/model.safetensors"))
    assert weights and {oct(p.stat().st_mode & 0o777) for p in weights} == {oct(want)}
    old = os.umask(0o002)
    try:
        out = average_experts(tiny_run.final_experts("MHo-IHo"), None, tmp_path / "avg")
    finally:
        os.umask(old)
    assert {oct((out / n).stat().st_mode & 0o777) for n in ("model.safetensors", "config.json", "hdee.json")} == {oct(0o664)}
