"""Bad inputs and damaged runs, one table: each exits 2 with one line naming what and where,
and every earlier output (a finished tiny run, the working directory's files) is byte-identical.

Commands run in this process through typer's test runner; a second process appears only where
a case needs one (another command holding the run directory).
"""

from __future__ import annotations

import contextlib
import errno
import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest
import torch
from typer.testing import CliRunner

from hdee.cli.app import app
from tests.helpers.safety_helpers import flip_byte, lock_held, snapshot, truncate

torch.set_num_threads(1)


@dataclass
class Workspace:
    root: Path
    plan: dict

    @property
    def run(self) -> Path:
        return self.root / "runs" / "tiny"

    def expert(self, strategy: str, i: int) -> str:
        return f"runs/tiny/experts/{self.plan['ensembles'][strategy]['experts'][i]}"

    def seed(self, size: str) -> str:
        return next(f"runs/tiny/experts/{e}" for e in self.plan["experts"] if e.startswith(f"seed-{size}-"))

    def config(self, old: str, new: str, name: str = "bad.toml") -> str:
        text = (self.root / "tiny.toml").read_text()
        assert old in text, old
        (self.root / name).write_text(text.replace(old, new, 1))
        return name

    def extra_domain(self, source_file: str) -> str:
        """tiny.toml plus a held-out domain read from corpus/<source_file>: prepare builds only that one."""
        text = (self.root / "tiny.toml").read_text()
        text += f'\n[[domains]]\nname = "extra"\nrole = "heldout"\nsource = {{ kind = "files", paths = ["corpus/{source_file}"] }}\n'
        (self.root / "extra.toml").write_text(text)
        return "extra.toml"


@pytest.fixture
def ws(tiny_run, tmp_path, monkeypatch) -> Workspace:
    root = tmp_path / "ws"
    tiny_run.copy(root / "runs" / "tiny")
    shutil.copy(tiny_run.config_path, root / "tiny.toml")
    (root / "data").mkdir()
    (root / "data" / "tokenizer.json").write_text("the user's own file, not hdee's")
    corpus = root / "corpus"
    corpus.mkdir()
    good = "\n".join(json.dumps({"text": f"document {i} " + "words and more words " * 20}) for i in range(60))
    (corpus / "good.jsonl").write_text(good + "\n")
    (corpus / "broken.jsonl").write_text(good + "\n{not json\n")
    (corpus / "nofield.jsonl").write_text(json.dumps({"body": "no text field"}) + "\n")
    (corpus / "bad.parquet").write_bytes(b"PAR1 this is not a parquet file")
    other = root / "other"
    other.mkdir()
    (other / "notes.txt").write_text("an existing directory")
    monkeypatch.chdir(root)
    return Workspace(root, json.loads((root / "runs/tiny/plan.json").read_text()))


Setup = Callable[[Workspace, pytest.MonkeyPatch, contextlib.ExitStack], dict]


@dataclass
class Case:
    id: str
    args: Callable[[Workspace], list[str]]
    match: str  # a regex, formatted with what `setup` returns
    setup: Setup = field(default=lambda w, mp, stack: {})


def _locked(command: str) -> Setup:
    def setup(w, mp, stack):
        return {"pid": stack.enter_context(lock_held(w.run, command))}

    return setup


def _damage(path: str, how: Callable[[Path], None]) -> Setup:
    def setup(w, mp, stack):
        how(w.root / path)
        return {}

    return setup


def _write(path: str, data: bytes) -> Setup:
    def setup(w, mp, stack):
        (w.root / path).write_bytes(data)
        return {}

    return setup


def _disk_full(w, mp, stack):
    from hdee.data import shards

    add = shards.SplitWriter.add

    def full(self, *args, **kwargs):
        if self.path is None:  # the de-duplication index counts in memory: no disk to fill
            return add(self, *args, **kwargs)
        raise OSError(errno.ENOSPC, "No space left on device", str(self.path))

    mp.setattr(shards.SplitWriter, "add", full)
    return {}


def _damage_expert(strategy: str, i: int, how: Callable[[Path], None]) -> Setup:
    def setup(w, mp, stack):
        how(w.root / w.expert(strategy, i) / "model.safetensors")
        return {}

    return setup


def _escaping_plan_id(w, mp, stack):
    plan = dict(w.plan)
    plan["experts"] = {**plan["experts"], "../../escape": "experts/whatever"}
    (w.run / "plan.json").write_text(json.dumps(plan))
    return {}


def _gen(w: Workspace, *extra: str, tokenizer: str = "runs/tiny/data/tokenizer.json") -> list[str]:
    return ["generate", w.expert("MHe-IHo", 0), w.expert("MHe-IHo", 1), "--prompt", "def f():", "--tokenizer", tokenizer,
            "--max-new-tokens", "2", *extra]


def _avg(w: Workspace, *extra: str) -> list[str]:
    return ["average", w.expert("MHo-IHo", 0), w.expert("MHo-IHo", 1), *extra]


CASES = [
    # ---- the config file
    Case("config-missing", lambda w: ["prepare", "nothing.toml"], r"nothing\.toml: config file not found"),
    Case("config-not-utf8", lambda w: ["run", "latin.toml"], r"latin\.toml: not UTF-8 text \(invalid byte at offset \d+\)",
         _write("latin.toml", b'name = "caf\xe9"\n')),
    Case("config-toml-syntax", lambda w: ["run", w.config("[data]", "[data")], r"bad\.toml: cannot parse"),
    Case("config-unknown-key", lambda w: ["run", w.config("seq_len = 32", "seq_lne = 32")],
         r"bad\.toml: data\.seq_lne: unknown key \(typo\?\)"),
    Case("config-suffix", lambda w: ["plan", "tiny.json"], r"tiny\.json: unknown config format '\.json'",
         _write("tiny.json", b"{}")),
    Case("config-yaml-list", lambda w: ["plan", "list.yaml"], r"list\.yaml: expected a mapping at the top level",
         _write("list.yaml", b"- a\n- b\n")),
    Case("domain-named-dot", lambda w: ["prepare", w.config('name = "py_code"', 'name = "."')],
         r"domains\.0\.name: name '\.' must be 1-64 letters"),
    Case("domain-named-dotdot", lambda w: ["run", w.config('name = "py_code"', 'name = ".."'), "--no-view"],
         r"domains\.0\.name: name '\.\.' must be"),
    Case("experiment-named-dotdot", lambda w: ["prepare", w.config('name = "tiny"', 'name = ".."')],
         r"bad\.toml: name: name '\.\.' must be"),
    Case("size-key-escapes", lambda w: ["run", w.config("L = 80", '"../../x" = 80'), "--no-view"],
         r"model\.intermediate: name '\.\./\.\./x' must be"),
    Case("negative-mlp-width", lambda w: ["run", w.config("S = 48", "S = -48"), "--no-view"],
         r"model\.intermediate\.S: Input should be greater than 0"),
    Case("lineage-with-slash", lambda w: ["plan", w.config('name = "easy"', 'name = "easy/x"')],
         r"lineages\.0\.name: name 'easy/x' must be"),
    Case("strategy-escapes", lambda w: ["plan", w.config('"MHe-IHo"]', '"../MHe"]')], r"strategies\.1: name '\.\./MHe' must be"),
    Case("unknown-strategy", lambda w: ["plan", w.config('"MHe-IHo"]', '"bogus"]')], r"unknown strategy 'bogus'"),
    Case("unknown-mixing-method", lambda w: ["plan", w.config("[eval]\n", '[eval]\nmethods = ["bogus"]\n')],
         r"eval: unknown mixing method 'bogus'"),
    Case("batch-not-multiple-of-seq", lambda w: ["plan", w.config("batch_tokens = 256", "batch_tokens = 250")],
         r"train\.batch_tokens 250 is not a multiple of data\.seq_len 32"),
    Case("lineage-unknown-domain", lambda w: ["plan", w.config('"py_code", "pydoc_topics"', '"py_code", "nope"')],
         r"lineage 'easy' names unknown domain 'nope'"),
    # ---- run directories
    Case("run-dir-of-another-config", lambda w: ["run", w.config("seed = 0", "seed = 7"), "--no-view"],
         r"runs/tiny was made by a different config \(differs in seed\);.* use --force"),
    Case("run-locked", lambda w: ["run", "tiny.toml", "--no-view"], r"runs/tiny: in use by pid {pid} \(hdee run\)", _locked("run")),
    Case("prepare-locked", lambda w: ["prepare", "tiny.toml"], r"in use by pid {pid} \(hdee eval\)", _locked("eval")),
    Case("eval-locked", lambda w: ["eval", "runs/tiny"], r"in use by pid {pid} \(hdee run\)", _locked("run")),
    Case("report-locked", lambda w: ["report", "runs/tiny"], r"in use by pid {pid} \(hdee prepare\)", _locked("prepare")),
    Case("train-locked", lambda w: ["train", "-c", "tiny.toml", "--run-dir", "runs/tiny", "-d", "py_code", "--steps", "1",
                                    "-o", "runs/tiny/experts/by-hand", "--no-progress"],
         r"in use by pid {pid} \(hdee run\)", _locked("run")),
    # ---- data sources and shards
    Case("files-no-match", lambda w: ["prepare", w.extra_domain("missing-*.jsonl")], r"domain 'extra': no file matches"),
    Case("bad-parquet", lambda w: ["prepare", w.extra_domain("bad.parquet")],
         r"domain 'extra': corpus/bad\.parquet: not a readable parquet file"),
    Case("jsonl-invalid-line", lambda w: ["prepare", w.extra_domain("broken.jsonl")],
         r"domain 'extra': corpus/broken\.jsonl:61: invalid JSON"),
    Case("jsonl-missing-field", lambda w: ["prepare", w.extra_domain("nofield.jsonl")], r"nofield\.jsonl:1 has no field 'text'"),
    Case("disk-full-in-prepare", lambda w: ["prepare", w.extra_domain("good.jsonl")],
         r"runs/tiny/data/domains/extra: no space left on device; finished domains are kept, rerun `hdee prepare`", _disk_full),
    Case("tokenizer-edited-after-prepare", lambda w: ["prepare", "tiny.toml"],
         r"tokenizer\.json: tokenizer hash \w+ differs from the one the shards", _damage("runs/tiny/data/tokenizer.json", flip_byte)),
    Case("train-domain-escapes", lambda w: ["train", "-c", "tiny.toml", "-d", "../../x", "--steps", "1", "--vocab", "512",
                                            "-o", "other/e", "--no-progress"],
         r"domains/\.\./\.\./x: refused, it is not inside runs/tiny/data/domains"),
    Case("train-needs-arguments", lambda w: ["train", "-c", "tiny.toml"], r"hdee train needs --job, or --config with --domain and --out"),
    # ---- hdee eval on damaged runs
    Case("eval-not-a-run-dir", lambda w: ["eval", "other"], r"other/config\.json: not found \(is other a run directory\?\)"),
    Case("eval-corrupt-config-json", lambda w: ["eval", "runs/tiny"], r"runs/tiny/config\.json: not valid JSON",
         _damage("runs/tiny/config.json", truncate)),
    Case("eval-corrupt-plan-json", lambda w: ["eval", "runs/tiny"], r"runs/tiny/plan\.json: not a plan: not valid JSON",
         _damage("runs/tiny/plan.json", truncate)),
    Case("eval-plan-id-escapes", lambda w: ["eval", "runs/tiny"], r"plan\.json: not a plan: experts: job id '\.\./\.\./escape' must be",
         _escaping_plan_id),
    Case("eval-flipped-test-shard", lambda w: ["eval", "runs/tiny"],
         r"data/domains/py_code/test\.bin: sha256 does not match manifest\.json",
         _damage("runs/tiny/data/domains/py_code/test.bin", flip_byte)),
    Case("eval-flipped-expert-weights", lambda w: ["eval", "runs/tiny"],
         r"model\.safetensors: checksum does not match hdee\.json", _damage_expert("MHo-IHo", 0, flip_byte)),
    Case("report-corrupt-results", lambda w: ["report", "runs/tiny"], r"results/results\.json: not valid JSON",
         _damage("runs/tiny/results/results.json", truncate)),
    Case("report-missing-dir", lambda w: ["report", "runs/none"], r"runs/none: run directory not found"),
    # ---- hdee generate
    Case("generate-truncated-weights", lambda w: _gen(w), r"model\.safetensors: checksum does not match hdee\.json \(corrupt, truncated",
         _damage_expert("MHe-IHo", 1, truncate)),
    Case("generate-foreign-tokenizer", lambda w: _gen(w, tokenizer="data/tokenizer.json"),
         r"data/tokenizer\.json: tokenizer hash \w+ differs from the experts'", _write("data/tokenizer.json", b"{}")),
    Case("generate-missing-tokenizer", lambda w: _gen(w, tokenizer="nothing.json"), r"nothing\.json: tokenizer file not found"),
    Case("generate-not-an-expert", lambda w: ["generate", "other", "--prompt", "x", "--tokenizer", "data/tokenizer.json"],
         r"other: not an expert directory \(no config\.json\)"),
    Case("generate-oracle-method", lambda w: _gen(w, "--method", "best-expert"), r"cannot generate with method 'best-expert'"),
    # ---- hdee average
    Case("average-over-existing-dir", lambda w: _avg(w, "--out", "other"), r"other: already exists and is not an earlier average"),
    Case("average-out-holds-the-experts", lambda w: _avg(w, "--out", "runs/tiny/experts", "--force"),
         r"runs/tiny/experts: the output would overwrite one of the averaged experts"),
    Case("average-truncated-weights", lambda w: _avg(w, "--out", "merged"), r"checksum does not match hdee\.json",
         _damage_expert("MHo-IHo", 1, truncate)),
    Case("average-bad-weights", lambda w: _avg(w, "--out", "merged", "--weights", "a,b"), r"--weights 'a,b': expected comma-separated"),
    Case("average-mixed-sizes", lambda w: ["average", w.seed("S"), w.seed("M"), "--out", "merged"],
         r"cannot average: intermediate_size is 64, seed-S-\w+ has 48"),
]


def test_the_table_is_large_enough():
    assert len(CASES) >= 35 and len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, ws: Workspace, monkeypatch):
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
