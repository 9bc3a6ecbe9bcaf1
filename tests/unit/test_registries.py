"""The registries are the only list of names: a data source, a router kind and the defaults come from
them, a new source is one plugin module, and reading a config imports neither torch nor datasets."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from hdee.config import ExperimentConfig, load_config
from hdee.core.errors import ConfigError, EnsembleError
from hdee.data.sources import open_source, source_from_text
from hdee.ensemble.inference_flops import method_flops
from hdee.registry import MIXING_METHODS, ROUTERS, SOURCES, STRATEGIES, default_method, default_strategies

from tests.helpers.paths import ROOT

PLUGIN = '''
"""A data source in one module: numbered notes from a text file, one document per line."""
from pathlib import Path

from hdee.config import SourceSpec
from hdee.data.documents import Document
from hdee.data.sources import register_source


class NotesSource(SourceSpec):
    kind: str = "notes"
    path: str
    prefix: str = ""


class NotesDocs:
    def __init__(self, spec, where):
        self.spec, self.where = spec, where

    def documents(self):
        for i, line in enumerate(Path(self.spec.path).read_text().splitlines()):
            yield Document(id=f"note-{i}", text=self.spec.prefix + line)

    def fingerprint(self):
        return {"path": self.spec.path, "size": Path(self.spec.path).stat().st_size}


register_source("notes", NotesSource, NotesDocs, prefix="notes",
                parse=lambda rest, text_field: NotesSource(path=rest))
'''


def _tiny_raw() -> dict:
    return load_config(ROOT / "configs" / "tiny.toml").model_dump(mode="json")


@pytest.fixture
def notes_plugin(tmp_path, monkeypatch):
    (tmp_path / "notes_source.py").write_text(textwrap.dedent(PLUGIN))
    monkeypatch.syspath_prepend(str(tmp_path))
    notes = tmp_path / "notes.txt"
    notes.write_text("first note\nsecond note\n")
    yield notes
    SOURCES.remove("notes")
    sys.modules.pop("notes_source", None)


def test_a_data_source_is_one_plugin_module(notes_plugin):
    raw = _tiny_raw()
    raw["plugins"] = ["notes_source"]
    raw["domains"].append({"name": "notes", "role": "heldout", "source": {"kind": "notes", "path": str(notes_plugin), "prefix": "> "}})
    cfg = ExperimentConfig.model_validate(raw)
    domain = cfg.domains[-1]
    docs = list(open_source(domain).documents())
    assert [(d.id, d.text) for d in docs] == [("note-0", "> first note"), ("note-1", "> second note")]
    # the snapshot keeps the plugin's settings and reads back to the same config
    dumped = cfg.model_dump(mode="json")
    assert dumped["domains"][-1]["source"] == {"kind": "notes", "path": str(notes_plugin), "prefix": "> "}
    assert ExperimentConfig.model_validate(dumped) == cfg
    # `hdee eval --data notes:PATH` reaches it through its registered prefix
    assert source_from_text(f"notes:{notes_plugin}").path == str(notes_plugin)
    # its settings are checked by its own model: an unknown key fails with where and what
    raw["domains"][-1]["source"]["colour"] = "red"
    with pytest.raises(ValueError, match="colour"):
        ExperimentConfig.model_validate(raw)


def test_unknown_source_and_router_kinds_name_the_known_ones(tmp_path):
    raw = _tiny_raw()
    raw["domains"][0]["source"] = {"kind": "ftp", "url": "x"}
    with pytest.raises(ValueError, match=r"unknown source kind 'ftp'; known: embedded, hf, files"):
        ExperimentConfig.model_validate(raw)
    raw = _tiny_raw()
    raw["routing"] = {"router": "bm25"}
    with pytest.raises(ValueError, match=r"unknown router kind 'bm25'; known: tfidf, hidden"):
        ExperimentConfig.model_validate(raw)


def test_a_router_kind_is_registered_like_the_others():
    from hdee.ensemble.router_kinds import TfidfRouter, register_router
    from hdee.ensemble.routers import Router

    class CountRouter(TfidfRouter):
        @staticmethod
        def flops_per_window(router):
            return 7.0

    register_router("test-count", CountRouter)
    try:
        raw = _tiny_raw()
        raw["routing"] = {"router": "test-count"}
        assert ExperimentConfig.model_validate(raw).routing.router == "test-count"
        router = Router("test-count", 4, np.eye(2, 3, dtype=np.float32), np.ones(3, dtype=np.float32))
        assert router.flops_per_window() == 7.0 and router.kind_spec is CountRouter
    finally:
        ROUTERS.remove("test-count")


def test_defaults_come_from_the_registries():
    assert ExperimentConfig.model_validate({k: v for k, v in _tiny_raw().items() if k != "strategies"}).strategies == default_strategies()
    assert default_strategies() == [e.name for e in STRATEGIES if e.default] == ["MHo-IHo", "MHo-IHe", "MHe-IHo", "dense"]
    assert default_method() == "prefix-posterior" and sum(e.default for e in MIXING_METHODS) == 1
    # the oracle runs only the expert it picks: a trait, not a name check
    assert [e.name for e in MIXING_METHODS if e.runs_one] == ["best-expert"]
    assert method_flops("best-expert", [10.0, 30.0], 2, best=1) == 15.0
    with pytest.raises(EnsembleError, match="best-expert FLOPs need the chosen expert"):
        method_flops("best-expert", [10.0, 30.0], 2)


def test_a_plugin_cannot_make_its_strategy_a_default():
    from hdee.strategies import Strategy, register

    class Mine(Strategy):
        pass

    with pytest.raises(ValueError, match="only hdee's own strategies may be default"):
        register("test-mine", Mine, default=True)
    assert "test-mine" not in STRATEGIES


def test_reading_a_config_imports_neither_torch_nor_datasets():
    code = (
        "import sys\n"
        "from hdee.config import load_config\n"
        f"cfg = load_config({str(ROOT / 'configs' / 'embedded.toml')!r})\n"
        "print(sorted(m for m in ('torch', 'datasets', 'transformers') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_bad_source_in_a_config_file_is_one_line(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text((ROOT / "configs" / "tiny.toml").read_text().replace('kind = "embedded"', 'kind = "embeded"', 1))
    with pytest.raises(ConfigError) as err:
        load_config(cfg)
    assert "\n" not in str(err.value) and "unknown source kind 'embeded'" in str(err.value)
