"""Parameter averaging (BTM merge): one HF model whose weights are a weighted mean of experts'.

Only meaningful for experts of one architecture that branched from a common seed.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from hdee.ensemble.experts import ExpertInfo, check_compatible, load_model, read_expert
from hdee.core.errors import EnsembleError
from hdee.expert_dir import load_record, weights_path, write_record
from hdee.core.fsutil import atomic_dir, plain_modes, sha256_file
from hdee.core.lock import file_lock, output_lock_path
from hdee.modelcard import CARD_FILE, render_card

# config.json keys that fix the parameter shapes or how they are used
_ARCHITECTURE_KEYS = (
    "model_type",
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "tie_word_embeddings",
    "hidden_act",
)


def _architecture(config: dict[str, Any]) -> dict[str, Any]:
    return {k: config.get(k) for k in _ARCHITECTURE_KEYS}


def _tensor_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    from safetensors import safe_open

    with safe_open(str(weights_path(path)), framework="pt") as f:
        return {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}


def _normalised_weights(weights: Sequence[float] | None, n: int) -> np.ndarray:
    if weights is None:
        return np.full(n, 1.0 / n)
    w = np.asarray(list(weights), dtype=np.float64)
    if w.shape != (n,):
        raise EnsembleError(f"{w.size} averaging weights for {n} experts")
    if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise EnsembleError(f"averaging weights must be non-negative with a positive sum, got {w.tolist()}")
    return w / w.sum()


def _copy_tokenizer(src: Path, dst: Path) -> None:
    """The experts' tokenizer files (they share one tokenizer), when the first expert carries them."""
    from hdee.data.tokenizer import TOKENIZER_FILES

    for name in TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copyfile(src / name, dst / name)


def _same_average(out_dir: Path, parent_sha256: list[str], weights: list[float]) -> bool:
    """`out_dir` is an earlier average of these very experts with these weights."""
    try:
        record = load_record(out_dir)
    except (OSError, ValueError):
        return False
    extra = record.model_extra or {}
    return record.kind == "average" and extra.get("parent_sha256") == parent_sha256 and extra.get("weights") == weights


def _not_replaceable(out_dir: Path) -> str | None:
    """Why `--force` must not delete `out_dir`, or None when it is an empty dir or an earlier average."""
    names = {p.name for p in out_dir.iterdir()}
    if not names:
        return None
    if {"plan.json", ".lock", "jobs"} & names or {"config.json", "experts"} <= names:
        return "is a run directory"
    try:
        record = load_record(out_dir)
    except FileNotFoundError:
        return "is not a model directory hdee wrote (no hdee.json)"
    except (OSError, ValueError):
        return "has an unreadable hdee.json"
    if record.kind != "average":
        return f"holds a model of kind {record.kind!r}, not an average"
    return None


def _check_output(out_dir: Path, infos: list[ExpertInfo], parent_sha256: list[str], weights: list[float], force: bool) -> None:
    """Refuse an output that would overwrite or delete anything but an earlier identical average."""
    out = out_dir.resolve()
    for info in infos:
        src = info.path.resolve()
        if out == src or out in src.parents or src in out.parents:
            raise EnsembleError(f"{out_dir}: the output would overwrite one of the averaged experts ({info.path})")
    if not out_dir.exists() and not out_dir.is_symlink():
        return
    if not out_dir.is_dir():
        raise EnsembleError(f"{out_dir}: exists and is not a directory")
    if _same_average(out_dir, parent_sha256, weights):
        return
    if force:
        what = _not_replaceable(out_dir)
        if what is None:
            return
        raise EnsembleError(f"{out_dir}: {what}; --force replaces only an earlier average (hdee.json of kind 'average') "
                            "or an empty directory, choose another --out")
    raise EnsembleError(
        f"{out_dir}: already exists and is not an earlier average of these experts; "
        "choose another --out or pass --force to replace it"
    )


def average_experts(
    dirs: Sequence[str | Path], weights: Sequence[float] | None, out_dir: str | Path, force: bool = False
) -> Path:
    """Write the weighted parameter mean of `dirs` to `out_dir` (HF dir + hdee.json), atomically.

    Weights (e.g. a cached domain prior) are normalised to sum to one; default: equal. An
    existing `out_dir` is replaced only when it is an earlier average of the same experts with
    the same weights, or with `force`.
    """
    infos = [read_expert(d) for d in dirs]
    check_compatible(infos)
    ref = _architecture(infos[0].config)
    for info in infos[1:]:
        arch = _architecture(info.config)
        diff = sorted(k for k in ref.keys() | arch.keys() if ref.get(k) != arch.get(k))
        if diff:
            key = diff[0]
            raise EnsembleError(
                f"{info.path}: cannot average: {key} is {arch.get(key)!r}, {infos[0].path.name} has {ref.get(key)!r}"
            )
    ref_shapes = _tensor_shapes(infos[0].path)
    for info in infos[1:]:
        shapes = _tensor_shapes(info.path)
        if shapes != ref_shapes:
            name = sorted(n for n in ref_shapes.keys() | shapes.keys() if ref_shapes.get(n) != shapes.get(n))[0]
            raise EnsembleError(
                f"{info.path}: cannot average: tensor {name} is {shapes.get(name)}, {infos[0].path.name} has {ref_shapes.get(name)}"
            )
    out_dir = Path(out_dir)
    w = _normalised_weights(weights, len(infos))
    parent_sha256 = [i.weights_sha256() for i in infos]
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(output_lock_path(out_dir), out_dir, "average", "one writer per output directory", remove=True):
        _check_output(out_dir, infos, parent_sha256, w.tolist(), force)
        _write_average(infos, w, parent_sha256, out_dir)
    return out_dir


def _write_average(infos: list[ExpertInfo], w: np.ndarray, parent_sha256: list[str], out_dir: Path) -> None:
    merged = load_model(infos[0].path)
    with torch.no_grad():
        acc = {name: t.detach().double() * w[0] for name, t in merged.state_dict().items()}
        for info, wi in zip(infos[1:], w[1:]):
            for name, t in load_model(info.path).state_dict().items():
                acc[name] += t.detach().double() * wi
        merged.load_state_dict({name: t.float() for name, t in acc.items()})

    meta = {
        "kind": "average",
        "parents": [str(i.path) for i in infos],
        "parent_sha256": parent_sha256,
        "weights": w.tolist(),
        "tokenizer_hash": infos[0].tokenizer_hash,
    }
    for key in ("size_name", "lineage"):
        values = {getattr(i.record, key) for i in infos}
        if len(values) == 1 and None not in values:
            meta[key] = values.pop()
    if infos[0].record.params:  # one architecture: the parents' counts are the average's
        meta["params"] = dict(infos[0].record.params)
    if (infos[0].path / "tokenizer.json").is_file():
        from hdee.data.tokenizer import special_token_ids
        from hdee.model import set_special_tokens

        set_special_tokens(merged, special_token_ids(infos[0].path / "tokenizer.json"))
    with atomic_dir(out_dir) as tmp:
        merged.save_pretrained(tmp)
        _copy_tokenizer(infos[0].path, tmp)
        (tmp / CARD_FILE).write_text(render_card(meta, out_dir.name, out_dir), encoding="utf-8")
        plain_modes(tmp)
        # both keys: `model_sha256` is what the trainer verifies when this model becomes a parent
        meta["sha256"] = meta["model_sha256"] = sha256_file(weights_path(tmp))
        write_record(tmp, meta)
