import pytest

from hdee.config import ExperimentConfig, load_config
from hdee.core.errors import ConfigError
from tests.helpers.paths import CONFIGS as CONFIG_DIR

CONFIGS = sorted(CONFIG_DIR.glob("*.toml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    cfg = load_config(path)
    assert isinstance(cfg, ExperimentConfig)
    assert cfg.train_domains and cfg.lineages
    assert set(cfg.eval_domains) <= {d.name for d in cfg.domains}


def test_embedded_preset_shape():
    cfg = load_config(CONFIG_DIR / "embedded.toml")
    assert len(cfg.train_domains) == 9 and len(cfg.heldout_domains) == 12
    assert len(cfg.lineages) == 3 and cfg.iterations == 3


def test_tiny_uses_only_cpython_domains():
    from hdee.data.embedded import get_domain

    cfg = load_config(CONFIG_DIR / "tiny.toml")
    for d in cfg.domains:
        assert d.source.kind == "embedded"
        assert get_domain(d.source.name).wheels == ()


def _write_typo(tmp_path, old, new):
    src = (CONFIG_DIR / "tiny.toml").read_text()
    assert old in src
    path = tmp_path / "typo.toml"
    path.write_text(src.replace(old, new, 1))
    return path


def test_typo_in_a_key_names_the_key_and_file(tmp_path):
    path = _write_typo(tmp_path, "max_train_tokens", "max_train_tokenz")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    assert "\n" not in msg
    assert str(path) in msg and "max_train_tokenz" in msg and "unknown key" in msg


def test_unknown_source_kind_is_one_line(tmp_path):
    path = _write_typo(tmp_path, 'kind = "embedded"', 'kind = "ftp"')
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "\n" not in str(err.value) and "source" in str(err.value)


def test_token_dtype_values(tmp_path):
    path = _write_typo(tmp_path, "[data]\n", '[data]\ntoken_dtype = "uint8"\n')
    with pytest.raises(ConfigError, match="token_dtype"):
        load_config(path)


def test_batch_must_hold_whole_sequences(tmp_path):
    path = _write_typo(tmp_path, "batch_tokens = 256", "batch_tokens = 250")
    with pytest.raises(ConfigError, match="batch_tokens 250 is not a multiple of data.seq_len 32") as err:
        load_config(path)
    assert "\n" not in str(err.value)
