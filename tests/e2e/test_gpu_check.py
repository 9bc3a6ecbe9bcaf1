"""scripts/gpu-check on CPU: its steps and commands, the JUnit counts and the summary table it prints."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
from pathlib import Path

import pytest
from tests.helpers.paths import ROOT



@pytest.fixture(scope="module")
def gc():
    loader = importlib.machinery.SourceFileLoader("gpu_check", str(ROOT / "scripts" / "gpu-check"))
    spec = importlib.util.spec_from_loader("gpu_check", loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # its dataclasses look their module up
    try:
        loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop("gpu_check", None)


def test_steps_install_offline_then_bench_run_and_test(gc, tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    for name in ("pydantic-2.9.0-py3-none-any.whl", "datasets-4.0.0-py3-none-any.whl"):
        (wheels / name).write_bytes(b"")
    args = gc.parse_args(["--wheels", str(wheels), "--out", str(tmp_path / "out"), "--python", "/opt/py/bin/python"])
    steps = gc.plan(args)
    assert [s.name for s in steps] == ["install", "bench", "tiny", "suite"]
    install = steps[0].commands
    assert all({"--no-deps", "--no-index"} <= set(cmd) for cmd in install)
    assert [Path(c).name for c in install[0] if c.endswith(".whl")] == sorted(p.name for p in wheels.iterdir())
    assert install[-1][-2:] == ["-e", str(ROOT)] and "--no-build-isolation" in install[-1]
    bench = steps[1].commands[0]
    assert bench[0] == "/opt/py/bin/python" and bench[bench.index("--config") + 1] == "configs/paper-small-close.toml"
    assert bench[bench.index("--sizes") + 1] == "M" and bench[bench.index("--json") + 1] == str((tmp_path / "out" / "bench.json").resolve())
    tiny = steps[2].commands[0]
    assert tiny[tiny.index("run") + 1] == "configs/tiny.toml" and steps[2].env["HDEE_CACHE"].startswith(str(tmp_path))
    suite = steps[3].commands[0]
    assert suite[1:3] == ["-m", "pytest"] and any(c.startswith("--junitxml=") for c in suite)
    assert all(s.timeout > 0 for s in steps)  # no step may hang the check


def test_skips_and_options_reach_the_commands(gc, tmp_path):
    args = gc.parse_args(["--skip", "install", "--skip", "suite", "--vocab", "128002", "--loss", "chunked", "--compile",
                          "--bench-config", "configs/tiny.toml", "--timeout", "30"])
    steps = gc.plan(args)
    assert [s.name for s in steps] == ["bench", "tiny"]
    bench = steps[0].commands[0]
    assert bench[bench.index("--vocab") + 1] == "128002" and bench[bench.index("--loss") + 1] == "chunked" and "--compile" in bench
    assert all(s.timeout == 30 for s in steps)
    with pytest.raises(SystemExit):
        gc.parse_args(["--skip", "everything"])


def test_dry_run_prints_every_command_and_runs_nothing(gc, tmp_path, capsys):
    assert gc.main(["--dry-run", "--out", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert [line.split("]")[0] + "]" for line in printed] == ["[install]", "[bench]", "[tiny]", "[suite]"]
    assert not (tmp_path / "out").exists()


def test_junit_counts(gc, tmp_path):
    report = tmp_path / "suite.xml"
    report.write_text('<?xml version="1.0"?><testsuites><testsuite name="pytest" tests="12" failures="1" errors="1" '
                      'skipped="3" time="81.5"></testsuite></testsuites>')
    assert gc.junit_counts(report) == {"passed": 7, "failed": 1, "errors": 1, "skipped": 3, "seconds": 81.5}
    assert gc.junit_counts(tmp_path / "missing.xml") is None


def test_summary_table_reports_device_benchmark_run_and_suite(gc):
    probe = {"device": "NVIDIA H100 80GB HBM3", "torch": "2.11.0+cu130", "cuda_version": "13.0", "gpus": 1, "cuda": True}
    bench = {"precision": "bf16", "peak_flops": 7.84e14, "vocab": 128002, "loss": "fused", "sizes": [{
        "size": "M", "micro_tokens": 43008, "raw_tokens_per_s": 270_000.0, "raw_mfu": 0.46, "trainer_tokens_per_s": 262_000.0,
        "trainer_mfu": 0.446, "ratio": 0.97, "trainer_peak_gib": 50.2, "estimate_gib": 52.9, "checkpoint_s": 3.2,
        "checkpoint_share": 0.024}]}
    outcomes = [gc.Outcome("install", "ok", 12.0), gc.Outcome("bench", "ok", 95.0), gc.Outcome("tiny", "ok", 63.0),
                gc.Outcome("suite", "failed", 150.0, "exit 1; see suite.log")]
    suite = {"passed": 230, "failed": 2, "errors": 0, "skipped": 5, "seconds": 149.0}
    table = gc.summary_table(outcomes, probe, bench, suite, 330.0)
    lines = table.splitlines()
    assert lines[:2] == ["| check | result |", "|---|---|"] and all(line.count("|") == 3 for line in lines)
    assert "NVIDIA H100 80GB HBM3 (torch 2.11.0+cu130, CUDA 13.0, 1 GPU)" in table
    assert "| bf16 matmul peak | 784.0 TFLOP/s |" in table
    assert "270,000 tokens/s, MFU 46.0%" in table and "MFU 44.6%, trainer/raw 0.97, peak 50.2 GiB (estimate 52.9)" in table
    assert "3.2 s = 2.4% of the steps between two" in table
    assert "| hdee run configs/tiny.toml | ok, 1 min 3 s |" in table
    assert "failed: 230 passed, 2 failed, 0 errors, 5 skipped, 2 min 30 s (exit 1; see suite.log)" in table
    assert lines[-1] == "| total | 5 min 30 s |"
    # a benchmark that died leaves its row with the reason and no numbers
    table = gc.summary_table([gc.Outcome("bench", "timeout", 180.0, "over 180 s")], None, None, None, 180.0)
    assert "| benchmark | timeout, 3 min 0 s: over 180 s |" in table and "MFU" not in table
