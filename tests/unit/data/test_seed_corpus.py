"""The seed corpus: no expert domain's text in it, none of it in any val/test split, and its own train cap."""

from __future__ import annotations

import io
import json
import random
import zipfile

import pytest

from hdee.config import SplitConfig, load_config
from hdee.data.embedded import EMBEDDED
from hdee.data.embedded import seed_text
from hdee.data.prepare import prepare
from hdee.data.split import split_of
from hdee.core.errors import ConfigError
from hdee.core.layout import RunLayout

from tests.helpers.data_helpers import make_config

from tests.helpers.paths import CONFIGS


@pytest.fixture(autouse=True)
def _cache(monkeypatch, tmp_path):
    monkeypatch.setenv("RAYON_NUM_THREADS", "1")
    monkeypatch.setenv("HDEE_CACHE", str(tmp_path / "cache"))


def _words(rng: random.Random, n: int) -> str:
    return " ".join(f"w{rng.randrange(5000)}" for _ in range(n))


class _Wheel:
    """A BuildContext stand-in whose scancode wheel holds the given licence files."""

    def __init__(self, files: dict[str, str]):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            for name, text in files.items():
                z.writestr(f"licensedcode/data/licenses/{name}.LICENSE", text)
            z.writestr("licensedcode/data/rules/x.RULE", "a rule, not a licence text")
        self.zip = zipfile.ZipFile(buf)

    def wheel(self, project: str) -> zipfile.ZipFile:
        assert project == "scancode-toolkit"
        return self.zip


def test_the_seed_builder_drops_licences_found_in_other_domains(monkeypatch):
    rng = random.Random(0)
    boiler, own, half = _words(rng, 200), _words(rng, 200), _words(rng, 100)
    expert_text = "header of a source file\n" + boiler + "\n" + half + " and code follows"
    monkeypatch.setattr(seed_text, "avoid_index", lambda ctx, domains: seed_text.ngram_hashes(expert_text))
    ctx = _Wheel({
        "pasted": f"---\nkey: pasted\nname: Pasted Licence\n---\n{boiler}",
        "own": f"---\nkey: own\nname: Own Licence 1.0\n---\n{own}",
        "partly": f"---\nkey: partly\n---\n{half} " + _words(rng, 300),  # a quarter of it is in expert text
    })
    docs = {d.id: d.text for d in seed_text.licence_texts(ctx)}
    assert set(docs) == {"own"}  # the one in expert text goes, and so does the one a quarter in it
    assert docs["own"] == f"Own Licence 1.0\n\n{own}"  # the title line, not the YAML
    assert seed_text.contained(own, seed_text.ngram_hashes(expert_text)) == 0.0


def test_the_seed_corpus_avoids_every_other_embedded_domain():
    seed = EMBEDDED["licence_texts"]
    shipped = {n for n, d in EMBEDDED.items() if d.build.__module__.startswith("hdee.")}  # not domains tests register
    assert set(seed.avoid) == shipped - {"licence_texts"}
    assert "scancode-toolkit" in seed.wheels
    key = seed.cache_key()
    assert key["avoid"]["wikipedia"] == EMBEDDED["wikipedia"].cache_key()  # a changed expert domain rebuilds it


def test_the_regime_config_trains_its_seeds_on_the_seed_corpus_only():
    cfg = load_config(CONFIGS / "regime.toml")
    assert cfg.seed_domains == ["seed_licences"] and cfg.domain("seed_licences").role == "seed"
    assert cfg.domain("seed_licences").source.name == "licence_texts"
    assert not set(cfg.seed_domains) & set(cfg.eval_domains)
    assert cfg.seed_models.cache and cfg.budget.max_lr_vs_seed == 0.1
    assert cfg.budget.schedule.lr <= 0.1 * cfg.seed_models.schedule.lr and cfg.budget.schedule.warmup > 0


def test_val_and_test_splits_lose_copies_of_the_seed_corpus_and_it_has_its_own_cap(tmp_path):
    rng = random.Random(2)
    seed_docs = [_words(rng, 120) for _ in range(200)]
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "seedtext.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in seed_docs))
    seed_train = [t for i, t in enumerate(seed_docs, 1) if split_of(f"seedtext.jsonl:{i}", "seedtext", SplitConfig()) == "train"]
    extra = (f'\n[[domains]]\nname = "seedtext"\nrole = "seed"\nmax_train_tokens = 1_000_000\nmax_eval_tokens = 300\n'
             f'source = {{ kind = "files", paths = ["{corpus / "seedtext.jsonl"}"] }}\n')
    path = make_config(tmp_path, max_train=3000, max_eval=10**6, extra_domains=extra)
    # omega (held out) copies seed training documents among fresh ones; every one of them leaves its splits
    (corpus / "omega.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in seed_train[:5] + [_words(rng, 80) for _ in range(40)]))
    cfg = load_config(path)
    manifests = prepare(cfg, RunLayout(tmp_path / "run"))
    omega = manifests["omega"]
    assert sum(s.dup_exact for s in omega.splits.values()) == 5
    # the seed domain's own cap (1M) lets it take every train document; the others stop at 3,000 tokens
    assert manifests["seedtext"].splits["train"].docs == len(seed_train)
    assert manifests["seedtext"].splits["train"].tokens > 3000 * 5
    assert all(manifests[d].splits["train"].tokens <= 3000 for d in cfg.train_domains)
    # and its own val/test cap (300), where the others take all of theirs (global cap 1M)
    assert 0 < manifests["seedtext"].splits["val"].tokens <= 300 and manifests["seedtext"].splits["test"].tokens <= 300
    assert max(manifests[d].splits["val"].tokens for d in cfg.train_domains) > 300


def test_seed_models_have_their_own_eval_cadence_and_unset_it_changes_no_id(tmp_path):
    from hdee.plan import build_plan

    base = load_config(make_config(tmp_path))
    assert base.seed_train() == base.train
    tuned = base.model_copy(update={"seed_models": base.seed_models.model_copy(update={"eval_every": 7, "eval_tokens": 512})})
    assert (tuned.seed_train().eval_every, tuned.seed_train().eval_tokens) == (7, 512)
    assert (tuned.train.eval_every, tuned.train.eval_tokens) == (base.train.eval_every, base.train.eval_tokens)
    assert "eval_tokens" not in base.seed_models.model_dump(mode="json")  # configs without it hash as before
    seeds = lambda c: sorted(j.id for j in build_plan(c, vocab=64).jobs if j.kind == "seed")  # noqa: E731
    experts = lambda c: sorted(j.id for j in build_plan(c, vocab=64).jobs if j.kind == "train")  # noqa: E731
    assert seeds(tuned) != seeds(base) and experts(tuned) != experts(base)  # the experts branch from other seeds


def test_a_domain_train_cap_must_be_positive(tmp_path):
    extra = '\n[[domains]]\nname = "s"\nrole = "seed"\nmax_train_tokens = 0\nsource = { kind = "files", paths = ["x.txt"] }\n'
    with pytest.raises(ConfigError, match=r"domains\.5\.max_train_tokens: .*greater than 0"):
        load_config(make_config(tmp_path, extra_domains=extra))
