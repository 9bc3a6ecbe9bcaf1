import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from hdee.config import load_config
from hdee.data.prepare import prepare
from hdee.data.shards import load_manifest, read_split
from hdee.data.tokenizer import load_hf_tokenizer, tokenizer_hash
from hdee.core.errors import DataError
from hdee.core.fsutil import sha256_file
from hdee.core.layout import RunLayout

from tests.helpers.data_helpers import HELDOUT, TRAIN, _corpus, digests, make_config

HDEE = str(Path(sys.executable).parent / "hdee")


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch, tmp_path):
    import torch

    torch.set_num_threads(1)
    monkeypatch.setenv("RAYON_NUM_THREADS", "1")
    monkeypatch.setenv("HDEE_CACHE", str(tmp_path / "cache"))


def test_prepare_writes_readable_shards(tmp_path):
    cfg = load_config(make_config(tmp_path))
    layout = RunLayout(tmp_path / "run")
    manifests = prepare(cfg, layout)
    assert set(manifests) == set(TRAIN + HELDOUT)
    thash = tokenizer_hash(layout.tokenizer_path)
    tok = load_hf_tokenizer(layout.tokenizer_path)
    assert tok.eos_token == "<|endoftext|>" and tok.bos_token == "<|endoftext|>"
    for name, m in manifests.items():
        assert m.tokenizer_hash == thash and m.dtype == "uint16"
        assert load_manifest(layout.domain_dir(name)) == m
        for split in ("val", "test"):
            ids = read_split(layout.domain_dir(name), split)
            assert isinstance(ids, np.memmap) and ids.dtype == np.dtype("<u2")
            assert 0 < len(ids) <= 400 and ids.max() < m.vocab_size
            assert m.splits[split].sha256 == sha256_file(layout.domain_dir(name) / f"{split}.bin")
    alpha = read_split(layout.domain_dir("alpha"), "train")
    assert len(alpha) == 3000 and manifests["alpha"].splits["train"].capped
    # documents are separated by EOS and decode back to the source text
    eos = manifests["alpha"].eos_id
    first = np.asarray(alpha[: int(np.argmax(alpha == eos))]).tolist()
    assert tok.decode(first) in (tmp_path / "corpus" / "alpha.jsonl").read_text()
    assert len(read_split(layout.domain_dir("omega"), "train")) == 0
    assert manifests["omega"].splits["train"].docs == 0 and manifests["omega"].role == "heldout"


def test_prepare_is_deterministic_and_rerun_is_a_noop(tmp_path):
    cfg_path = make_config(tmp_path)
    cfg = load_config(cfg_path)
    prepare(cfg, RunLayout(tmp_path / "one"))
    prepare(cfg, RunLayout(tmp_path / "two"))
    first = digests(tmp_path / "one")
    assert first == digests(tmp_path / "two")
    mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / "one").rglob("*.bin")}
    prepare(cfg, RunLayout(tmp_path / "one"))
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "one").rglob("*.bin")} == mtimes
    assert digests(tmp_path / "one") == first


def test_changed_cap_rebuilds_only_shards(tmp_path):
    layout = RunLayout(tmp_path / "run")
    prepare(load_config(make_config(tmp_path)), layout)
    tok_before = sha256_file(layout.tokenizer_path)
    m = prepare(load_config(make_config(tmp_path, max_train=1000)), layout)
    assert m["alpha"].splits["train"].tokens == 1000
    assert sha256_file(layout.tokenizer_path) == tok_before


def test_tokenizer_hash_differs_from_shards(tmp_path):
    layout = RunLayout(tmp_path / "run")
    prepare(load_config(make_config(tmp_path)), layout)
    before = digests(layout.data_dir / "domains")
    # a different tokenizer dropped in by hand
    other = tmp_path / "other"
    prepare(load_config(make_config(tmp_path, vocab=280)), RunLayout(other))
    layout.tokenizer_path.write_bytes((other / "data" / "tokenizer.json").read_bytes())
    with pytest.raises(DataError, match="differs from the one the shards") as err:
        prepare(load_config(make_config(tmp_path)), layout)
    assert "\n" not in str(err.value)
    assert digests(layout.data_dir / "domains") == before


def test_large_vocab_uses_uint32_and_explicit_uint16_fails(tmp_path, monkeypatch):
    import hdee.data.shards as shards

    monkeypatch.setattr(shards, "UINT16_MAX_VOCAB", 200)
    m = prepare(load_config(make_config(tmp_path)), RunLayout(tmp_path / "a"))
    assert m["alpha"].dtype == "uint32"
    assert read_split(tmp_path / "a" / "data" / "domains" / "alpha", "val").dtype == np.dtype("<u4")
    with pytest.raises(DataError, match="uint16"):
        prepare(load_config(make_config(tmp_path, data_extra='token_dtype = "uint16"')), RunLayout(tmp_path / "b"))


def test_non_utf8_is_counted_not_fatal(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    _corpus(corpus, "beta")
    with open(corpus / "beta.jsonl", "ab") as f:
        f.write(b'{"text": "bad \xff\xfe bytes here and more words to tokenize"}\n')
    m = prepare(load_config(make_config(tmp_path)), RunLayout(tmp_path / "run"))
    assert m["beta"].invalid_utf8 == 2 and m["alpha"].invalid_utf8 == 0


def test_empty_domain_is_an_error_and_leaves_earlier_outputs(tmp_path):
    layout = RunLayout(tmp_path / "run")
    prepare(load_config(make_config(tmp_path)), layout)
    before = digests(layout.root)
    (tmp_path / "blank.jsonl").write_text('{"text": "   "}\n{"text": ""}\n')
    extra = f'\n[[domains]]\nname = "blank"\nrole = "heldout"\nsource = {{ kind = "files", paths = ["{tmp_path}/blank.jsonl"] }}\n'
    with pytest.raises(DataError, match="'blank': no documents"):
        prepare(load_config(make_config(tmp_path, extra_domains=extra)), layout)
    assert digests(layout.root) == before


def test_unknown_embedded_domain(tmp_path):
    cfg = load_config(make_config(tmp_path, sources={"omega": '{ kind = "embedded", name = "no_such_domain" }'}))
    with pytest.raises(DataError, match="unknown embedded domain 'no_such_domain'"):
        prepare(cfg, RunLayout(tmp_path / "run"))


def test_wheel_hash_mismatch(tmp_path, monkeypatch):
    """Hermetic: every wheel the domain needs is already in the cache (corrupt), so nothing is downloaded."""
    from hdee.data import wheels
    from hdee.data.embedded import get_domain

    def no_download(*args, **kwargs):
        raise AssertionError(f"the test tried to download: {args[0]}")

    monkeypatch.setattr(wheels.subprocess, "run", no_download)
    wheels.wheel_dir().mkdir(parents=True)
    for project in get_domain("jokes_dialogue").wheels:
        (wheels.wheel_dir() / wheels.PINS[project].filename).write_bytes(b"not the wheel")
    with pytest.raises(DataError, match="does not match the pin"):
        wheels.fetch_wheel(wheels.PINS["pyjokes"])
    cfg = load_config(make_config(tmp_path, sources={"omega": '{ kind = "embedded", name = "jokes_dialogue" }'}))
    with pytest.raises(DataError, match="does not match the pin"):
        prepare(cfg, RunLayout(tmp_path / "run"))


@pytest.mark.slow  # starts hdee in new processes, each importing torch
def test_cli_prepare_and_errors_exit_2(tmp_path):
    cfg_path = make_config(tmp_path)
    env = {**os.environ, "HDEE_CACHE": str(tmp_path / "cache")}
    ok = subprocess.run([HDEE, "prepare", str(cfg_path), "--run-dir", str(tmp_path / "run")],
                        capture_output=True, text=True, env=env)
    assert ok.returncode == 0, ok.stderr
    assert "alpha" in ok.stdout and "omega" in ok.stdout and "dup share" in ok.stdout
    (tmp_path / "bad").mkdir()
    bad = make_config(tmp_path / "bad", sources={"omega": '{ kind = "files", paths = ["/nonexistent/*.txt"] }'})
    err = subprocess.run([HDEE, "prepare", str(bad), "--run-dir", str(tmp_path / "run")],
                         capture_output=True, text=True, env=env)
    assert err.returncode == 2
    assert "no file matches" in err.stderr and len(err.stderr.strip().splitlines()) == 1


@pytest.mark.slow  # starts hdee in new processes, each importing torch
def test_killed_prepare_then_rerun_matches_clean_run(tmp_path):
    # enough domains that the process is still working when the first domain is finished
    extra = ""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(12):
        _corpus(corpus, f"more{i}", docs=400)
        extra += f'\n[[domains]]\nname = "more{i}"\nrole = "heldout"\nsource = {{ kind = "files", paths = ["{corpus}/more{i}.jsonl"] }}\n'
    cfg_path = make_config(tmp_path, extra_domains=extra, max_train=20_000)
    env = {**os.environ, "HDEE_CACHE": str(tmp_path / "cache")}
    run = tmp_path / "killed"
    proc = subprocess.Popen([HDEE, "prepare", str(cfg_path), "--run-dir", str(run)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and not list((run / "data" / "domains").glob("*/manifest.json")):
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "prepare finished before it could be interrupted"
    assert len(list((run / "data" / "domains").glob("*/manifest.json"))) < 17
    # whatever is there looks finished only if it is complete
    for manifest in (run / "data" / "domains").glob("*/manifest.json"):
        for split in ("train", "val", "test"):
            read_split(manifest.parent, split)
    cfg = load_config(cfg_path)
    prepare(cfg, RunLayout(run))
    prepare(cfg, RunLayout(tmp_path / "clean"))
    assert digests(run) == digests(tmp_path / "clean")
