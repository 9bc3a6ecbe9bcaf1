"""Faults inside a run: expert directories that hold another job's model, and text to evaluate
that is far larger than what is scored."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from hdee.core.errors import CheckpointError, HdeeError
from tests.helpers.tiny_run import InlineExecutor

torch.set_num_threads(1)


def _rerun(tiny_run, layout, monkeypatch) -> None:
    import hdee.pipeline.experiment as pipeline

    monkeypatch.setattr(pipeline, "make_executor", lambda cfg, run_dir, **kw: InlineExecutor(run_dir))
    pipeline.run_experiment(tiny_run.cfg, layout, view=False)


def test_swapped_expert_dirs_are_refused_not_used(tiny_run, tmp_path, monkeypatch):
    """Two experts of one strategy swap directories: the rerun refuses the first one it meets,
    naming both jobs, and leaves the results as they were."""
    layout = tiny_run.copy(tmp_path / "run")
    a, b = (layout.expert_dir(e) for e in tiny_run.plan["ensembles"]["MHo-IHo"]["experts"])
    results = layout.results_json.read_bytes()
    os.rename(a, tmp_path / "swap")
    os.rename(b, a)
    os.rename(tmp_path / "swap", b)
    with pytest.raises(HdeeError, match=r"holds a finished expert of another job \(job train-\S+ there, train-\S+ here\)"):
        _rerun(tiny_run, layout, monkeypatch)
    assert layout.results_json.read_bytes() == results


def test_an_expert_with_another_jobs_settings_is_refused(tiny_run, tmp_path, monkeypatch):
    """Same job id, same size and steps, another seed: told apart by the recorded job identity."""
    from hdee.run import prepared_vocab
    from hdee.train.for_run import train_job_for
    from hdee.plan import Plan
    from hdee.train import run_train_job

    layout = tiny_run.copy(tmp_path / "run")
    plan = Plan.read(layout.plan_json)
    job = next(j for j in plan.jobs if j.kind == "train")
    train_job = train_job_for(job, layout, tiny_run.cfg, prepared_vocab(layout))
    record = run_train_job(train_job)  # finished: returned as it is
    assert record["job_identity"] and record["job_id"] == job.id
    other = train_job.model_copy(update={"seed": train_job.seed + 1})
    with pytest.raises(CheckpointError, match="holds a finished expert of another job \\(trained with other settings\\)"):
        run_train_job(other)


def test_a_moved_run_still_finds_its_experts(tiny_run, tmp_path, monkeypatch):
    """Identities name directories by their last part: a copied run directory reruns nothing."""
    layout = tiny_run.copy(tmp_path / "elsewhere" / "run")
    stamps = {p: p.stat().st_mtime_ns for p in layout.experts_dir.glob("*/model.safetensors")}
    _rerun(tiny_run, layout, monkeypatch)
    assert {p: p.stat().st_mtime_ns for p in layout.experts_dir.glob("*/model.safetensors")} == stamps


def test_eval_data_reads_only_up_to_its_cap(tiny_run, tmp_path, monkeypatch):
    """A one-line text file of 4 MB, scored with a cap of 256 tokens: reading stops after the
    first blocks, and the tokens are those of the file's beginning."""
    from hdee.run import load_run
    from hdee.data import text_stream
    from hdee.data.tokenizer import load_tokenizer
    from hdee.evaluation.new_text import parse_source, read_tokens, text_domain

    line = " ".join(f"value_{i % 97} = compute(x{i % 13}) + {i}" for i in range(200_000))
    path = tmp_path / "one-line.txt"
    path.write_text(line[: 4_000_000])
    monkeypatch.setattr(text_stream, "BLOCK_BYTES", 1 << 16)
    blocks = []
    original = text_stream._plain_blocks

    def counted(p):
        for block in original(p):
            blocks.append(len(block))
            yield block

    monkeypatch.setattr(text_stream, "_plain_blocks", counted)
    run = load_run(tiny_run.layout.root)
    domain = text_domain("one-line", parse_source(str(path)), run)
    tokens = read_tokens(domain, run.layout.tokenizer_path, 2000)
    assert len(tokens) == 2000
    assert sum(blocks) < 600_000  # a few 64 KiB blocks of the 4 MB
    head = load_tokenizer(run.layout.tokenizer_path).encode(line[:20_000], add_special_tokens=False).ids
    assert np.array_equal(tokens[:1000], head[:1000])


def test_text_pieces_keep_short_documents_whole_and_cut_long_ones_at_line_ends(tmp_path, monkeypatch):
    from hdee.config import DomainConfig
    from hdee.data.sources import FilesSource
    from hdee.data import text_stream

    monkeypatch.setattr(text_stream, "PIECE_CHARS", 100)
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps({"text": t}) for t in ["short one", "   ", "line\n" * 50]) + "\n")
    domain = DomainConfig(name="t", source=FilesSource(paths=[str(tmp_path / "a.jsonl")]), role="heldout")
    pieces = list(text_stream.text_pieces(domain))
    assert pieces[0] == ("short one", True, True)  # whole; the blank document is left out
    long = pieces[1:]
    assert "".join(p for p, _, _ in long) == "line\n" * 50
    assert all(len(p) <= 100 and p.endswith("\n") for p, _, _ in long)
    assert [(f, l) for _, f, l in long] == [(True, False)] + [(False, False)] * (len(long) - 2) + [(False, True)]


def test_non_utf8_inside_a_block_boundary_names_its_offset(tmp_path, monkeypatch):
    from hdee.config import DomainConfig
    from hdee.data.sources import FilesSource
    from hdee.data import text_stream
    from hdee.core.errors import DataError

    monkeypatch.setattr(text_stream, "BLOCK_BYTES", 8)
    data = "héllo wörld ".encode() * 4 + b"\xff" + b"tail"
    path = tmp_path / "t.txt"
    path.write_bytes(data)
    domain = DomainConfig(name="t", source=FilesSource(paths=[str(path)]), role="heldout")
    bad = data.index(bytes([0xFF]))
    with pytest.raises(DataError, match=rf"invalid byte at offset {bad}\)"):
        list(text_stream.text_pieces(domain))
    path.write_bytes("héllo".encode() * 10)  # multi-byte characters split across blocks decode whole
    assert "".join(p for p, _, _ in text_stream.text_pieces(domain)) == "héllo" * 10


def test_an_imported_seed_of_another_job_is_refused(tiny, tmp_path):
    from tests.helpers.experts import make_expert
    from hdee.core.fsutil import sha256_file
    from hdee.model import size_spec
    from hdee.train.pretrained import import_seed

    out = make_expert(tmp_path / "seed-M-aaaa", 0)
    record = json.loads((out / "hdee.json").read_text())
    record.update(job_id="seed-M-aaaa", source="org/ckpt-a", model_sha256=sha256_file(out / "model.safetensors"))
    (out / "hdee.json").write_text(json.dumps(record))
    kwargs = dict(tokenizer=tmp_path / "tokenizer.json", tokenizer_hash=None, val_dirs=[], eval_tokens=64)
    spec = size_spec(tiny, "M", 512)
    assert import_seed("org/ckpt-a", out, spec, meta={"job_id": "seed-M-aaaa"}, **kwargs)["source"] == "org/ckpt-a"
    with pytest.raises(CheckpointError, match=r"seed-M-aaaa: holds a finished seed of another job \(job seed-M-aaaa, from 'org/ckpt-a'"):
        import_seed("org/ckpt-b", out, spec, meta={"job_id": "seed-M-bbbb"}, **kwargs)
