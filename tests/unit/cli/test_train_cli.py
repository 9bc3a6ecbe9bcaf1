import json

import pytest
import torch
from typer.testing import CliRunner

from hdee.cli import app
from tests.helpers.train_helpers import make_domain, tiny_job

torch.set_num_threads(1)
runner = CliRunner()

CONFIG = """
name = "clitest"
strategies = ["MHo-IHo"]
[data]
seq_len = 16
[model]
hidden = 32
layers = 2
heads = 4
intermediate = {{ S = 48, M = 64 }}
[train]
batch_tokens = 64
eval_every = 2
eval_tokens = 64
checkpoint_every = 2
[seed_models]
tokens = 1000
[budget]
baseline = {{ size = "M", steps = 2 }}
[[lineages]]
name = "l"
tier = "easy"
domains = ["alpha"]
[[domains]]
name = "alpha"
role = "train"
source = {{ kind = "files", paths = ["{path}"] }}
"""


@pytest.mark.slow
def test_train_from_config_and_from_job_file(tmp_path):
    run_dir = tmp_path / "run"
    make_domain(run_dir / "data" / "domains", "alpha", 1)
    cfg = tmp_path / "c.toml"
    cfg.write_text(CONFIG.format(path=tmp_path / "x.txt"))
    out = tmp_path / "seed"
    args = ["train", "-c", str(cfg), "--run-dir", str(run_dir), "-d", "alpha", "--size", "S",
            "--steps", "3", "--vocab", "256", "-o", str(out), "--no-progress"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    record = json.loads((out / "hdee.json").read_text())
    assert record["steps"] == 3 and record["size"]["intermediate"] == 48 and record["size"]["vocab"] == 256

    job = tiny_job(tmp_path / "branch", [run_dir / "data" / "domains" / "alpha"], steps=2)
    job_file = tmp_path / "job.json"
    job_file.write_text(job.model_dump_json())
    res = runner.invoke(app, ["train", "--job", str(job_file), "--no-progress"])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "branch" / "hdee.json").read_text())["steps"] == 2


def test_bad_input_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    import sys

    from hdee import cli

    cfg = tmp_path / "c.toml"
    cfg.write_text(CONFIG.format(path=tmp_path / "x.txt"))
    make_domain(tmp_path / "run" / "data" / "domains", "alpha", 1)
    monkeypatch.setattr(sys, "argv", ["hdee", "train", "-c", str(cfg), "--run-dir", str(tmp_path / "run"), "-d", "alpha",
                                      "--steps", "1", "--vocab", "256", "-o", str(tmp_path / "o"),
                                      "--parent", str(tmp_path / "missing"), "--no-progress"])
    try:
        cli.main()
    except SystemExit as exc:
        assert exc.code == 2
    else:
        raise AssertionError("expected exit 2")
    err = capsys.readouterr().err.strip()
    assert "missing" in err and "not found" in err and len(err.splitlines()) == 1
