"""Evaluation data never copies training data: splits by parent document, salted by domain,
and one-way cross-domain de-duplication (exact, MinHash near-duplicates, contained text)."""

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from hdee.config import DedupConfig, SplitConfig, load_config
from hdee.data.dedup import TrainingIndex
from hdee.data.documents import Document
from hdee.data.embedded.domain import register
from hdee.data.prepare import prepare
from hdee.data.shards import read_split
from hdee.data.split import split_of
from hdee.data.tokenizer import load_tokenizer
from hdee.core.errors import ConfigError, DataError
from hdee.core.layout import RunLayout

from tests.helpers.data_helpers import digests, make_config

HDEE = str(Path(sys.executable).parent / "hdee")
BIG = 10**6  # caps no test split reaches: every document of a domain is read


@pytest.fixture(autouse=True)
def _cache(monkeypatch, tmp_path):
    monkeypatch.setenv("RAYON_NUM_THREADS", "1")
    monkeypatch.setenv("HDEE_CACHE", str(tmp_path / "cache"))


def _words(rng: random.Random, n: int) -> str:
    return " ".join(f"w{rng.randrange(5000)}" for _ in range(n))


def _split_texts(layout: RunLayout, domain: str) -> dict[str, str]:
    tok = load_tokenizer(layout.tokenizer_path)
    return {s: tok.decode(read_split(layout.domain_dir(domain), s).tolist(), skip_special_tokens=False)
            for s in ("train", "val", "test")}


# ------------------------------------------------------------------ the index


def test_index_finds_exact_near_and_contained_copies_only():
    rng = random.Random(0)
    a, b, c = (_words(rng, 300) for _ in range(3))
    index = TrainingIndex(DedupConfig())
    index.add("train_dom", [Document("a", a), Document("b", b), Document("c", c)])
    near = a.split()
    near[100:103] = ["changed", "three", "words"]
    docs = [
        Document("exact", a.upper().replace(" ", "  ")),  # case and spacing do not matter
        Document("near", " ".join(near)),
        Document("contained", b[: len(b) // 2] + " " + c[len(c) // 2 :]),  # halves of two training documents
        Document("fresh", _words(rng, 300)),
        Document("no words", "+-*/ ... !!!"),
    ]
    assert index.matches(docs) == ["exact", "near", "contained", None, None]
    off = TrainingIndex(DedupConfig(exact=False, near=0, contained=0))
    off.add("train_dom", [Document("a", a)])
    assert not off.enabled and off.matches(docs[:1]) == [None]


def test_dedup_settings_are_validated(tmp_path):
    with pytest.raises(ConfigError, match=r"data\.dedup\.near") as err:
        load_config(make_config(tmp_path, data_extra="dedup = { near = 1.5 }\n"))
    assert "\n" not in str(err.value)


# ------------------------------------------------------------------ prepare


def _write(path: Path, texts: list[str]) -> None:
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))


def _training_texts(corpus: Path, domain: str) -> list[str]:
    """The documents of `domain`'s file that its train split takes (ids are file:line)."""
    lines = (corpus / f"{domain}.jsonl").read_text().splitlines()
    return [json.loads(line)["text"] for i, line in enumerate(lines, 1)
            if split_of(f"{domain}.jsonl:{i}", domain, SplitConfig()) == "train"]


def _copycat_config(tmp_path: Path, copies: list[str]) -> Path:
    """A held-out domain `omega` with copies of alpha's training documents among fresh ones."""
    path = make_config(tmp_path, max_train=BIG, max_eval=BIG)
    rng = random.Random(1)
    _write(tmp_path / "corpus" / "omega.jsonl", copies + [_words(rng, 80) for _ in range(40)])
    return path


def test_heldout_and_eval_data_lose_copies_of_training_data(tmp_path):
    path = make_config(tmp_path, max_train=BIG, max_eval=BIG)
    corpus = tmp_path / "corpus"
    alpha_train = _training_texts(corpus, "alpha")
    longest = max(alpha_train, key=len).split()
    near = " ".join(longest[:-1] + ["zz"])  # one word changed: most of its n-grams are the same
    copies = [alpha_train[0], near, alpha_train[2] + " " + alpha_train[3]]
    path = _copycat_config(tmp_path, copies)
    # beta repeats alpha's training documents in its own file: they stay in beta's train split
    # (training data never lose documents) but leave beta's val and test
    beta = (corpus / "beta.jsonl").read_text().splitlines()
    _write(corpus / "beta.jsonl", [json.loads(line)["text"] for line in beta] + alpha_train)
    layout = RunLayout(tmp_path / "run")
    manifests = prepare(load_config(path), layout)

    omega = manifests["omega"]
    assert sum(s.dup_exact for s in omega.splits.values()) == 1
    assert sum(s.dup_near for s in omega.splits.values()) == 1
    assert sum(s.dup_contained for s in omega.splits.values()) == 1
    assert 0 < omega.duplicate_share() < 0.5
    texts = _split_texts(layout, "omega")
    for copy in copies:
        assert copy.split()[10] + " " + copy.split()[11] not in texts["val"] + texts["test"]
    beta_m = manifests["beta"]
    beta_texts = _split_texts(layout, "beta")
    dropped = sum(beta_m.splits[s].dup_docs for s in ("val", "test"))
    kept_in_train = sum(t in beta_texts["train"] for t in alpha_train)
    assert dropped > 0 and kept_in_train > 0 and dropped + kept_in_train == len(alpha_train)
    assert beta_m.splits["train"].dup_docs == 0
    assert not any(t in beta_texts["val"] + beta_texts["test"] for t in alpha_train)
    # alpha's own val/test documents are not training documents: nothing of alpha is dropped
    assert manifests["alpha"].duplicate_share() == 0


def test_a_heldout_domain_never_changes_what_experts_train_on(tmp_path):
    base = make_config(tmp_path, max_train=BIG, max_eval=BIG)
    cfg = load_config(base)
    one = RunLayout(tmp_path / "one")
    prepare(cfg, one)
    trained = {d: digests(one.domain_dir(d)) for d in cfg.train_domains}
    mtimes = {p: p.stat().st_mtime_ns for p in one.data_dir.rglob("*") if p.is_file()}
    copies = _training_texts(tmp_path / "corpus", "gamma")[:5]
    extra_file = tmp_path / "copycat.jsonl"
    _write(extra_file, copies + [_words(random.Random(2), 60) for _ in range(30)])
    extra = f'\n[[domains]]\nname = "copycat"\nrole = "heldout"\nsource = {{ kind = "files", paths = ["{extra_file}"] }}\n'
    with_extra = load_config(make_config(tmp_path, max_train=BIG, max_eval=BIG, extra_domains=extra))
    manifests = prepare(with_extra, one)
    assert sum(s.dup_docs for s in manifests["copycat"].splits.values()) == 5
    # the added domain was built; nothing else was touched
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes
    assert {d: digests(one.domain_dir(d)) for d in cfg.train_domains} == trained
    fresh = RunLayout(tmp_path / "fresh")
    prepare(with_extra, fresh)
    assert {d: digests(fresh.domain_dir(d)) for d in cfg.train_domains} == trained


@pytest.mark.slow  # starts hdee in new processes, each importing torch
def test_a_heldout_domain_that_only_copies_training_data_is_an_error(tmp_path):
    layout = RunLayout(tmp_path / "run")
    prepare(load_config(make_config(tmp_path, max_train=BIG, max_eval=BIG)), layout)
    before = digests(layout.root)
    copies = _training_texts(tmp_path / "corpus", "delta")
    extra_file = tmp_path / "copies.jsonl"
    _write(extra_file, copies)
    extra = f'\n[[domains]]\nname = "copies"\nrole = "heldout"\nsource = {{ kind = "files", paths = ["{extra_file}"] }}\n'
    cfg_path = make_config(tmp_path, max_train=BIG, max_eval=BIG, extra_domains=extra)
    with pytest.raises(DataError, match="dropped as duplicates of training documents") as err:
        prepare(load_config(cfg_path), layout)
    assert "'copies'" in str(err.value) and "\n" not in str(err.value)
    assert digests(layout.root) == before
    cli = subprocess.run([HDEE, "prepare", str(cfg_path), "--run-dir", str(layout.root)], capture_output=True, text=True)
    assert cli.returncode == 2 and len(cli.stderr.strip().splitlines()) == 1
    assert digests(layout.root) == before


# ------------------------------------------------------------------ splits by parent document

_LONG = "test_long_documents"


@register(_LONG, "documents long enough to be cut into pieces")
def _long_documents(ctx):
    rng = random.Random(3)
    for i in range(40):
        yield Document(f"doc{i:02d}", "\n\n".join(f"doc{i:02d} part {j} {_words(rng, 60)}" for j in range(30)))


def test_pieces_of_one_document_never_straddle_splits(tmp_path):
    cfg = load_config(make_config(tmp_path, max_train=BIG, max_eval=BIG,
                                  sources={"alpha": f'{{ kind = "embedded", name = "{_LONG}" }}'}))
    layout = RunLayout(tmp_path / "run")
    m = prepare(cfg, layout)["alpha"]
    assert m.docs_read > 80  # the 40 documents were cut into pieces
    texts = _split_texts(layout, "alpha")
    for i in range(40):
        holders = {s for s, text in texts.items() if f"doc{i:02d} part" in text}
        assert holders == {split_of(f"doc{i:02d}", "alpha", cfg.data.split)}, f"doc{i:02d} is in {holders}"


def test_job_ids_follow_what_the_dedup_compares_with(tiny):
    from hdee.plan import build_plan

    def ids(cfg) -> dict[str, set[str]]:
        plan = build_plan(cfg, 300)
        return {kind: {j.id for j in plan.jobs if j.kind == kind} for kind in ("seed", "train", "score")}

    def with_data(**update):
        return tiny.model_copy(update={"data": tiny.data.model_copy(update=update)})

    base = ids(tiny)
    # the val splits the models validate on and the test splits they are scored on change with the dedup
    off = ids(with_data(dedup=DedupConfig(exact=False, near=0, contained=0)))
    stricter = ids(with_data(dedup=DedupConfig(near=0.6)))
    for other in (off, stricter):
        assert all(not (base[k] & other[k]) for k in base)
    # a held-out domain is never what the others are compared with: the trained models keep their ids
    heldout = next(d for d in tiny.domains if d.role == "heldout")
    fewer = ids(tiny.model_copy(update={"domains": [d for d in tiny.domains if d is not heldout]}))
    assert fewer["seed"] == base["seed"] and fewer["train"] == base["train"]
