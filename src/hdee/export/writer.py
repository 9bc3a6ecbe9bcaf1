"""`hdee export`: write one Hugging Face model directory holding a run's ensemble.

    DIR/config.json                       HdeeEnsembleConfig: every network's own config, the members,
                                          the method, the fixed prior, the routing settings, auto_map
    DIR/configuration_hdee_ensemble.py    the config and modeling code (torch + transformers only),
    DIR/modeling_hdee_ensemble.py         copied from hdee.export, so remote code needs no hdee
    DIR/model-<i>-<id>.safetensors        network i's weights as its expert dir holds them, keys under
                                          `models.<i>.`; router.safetensors the router's idf/centroids
    DIR/model.safetensors.index.json      which file holds each tensor (transformers' sharded format)
    DIR/router.json                       the router's record (routed methods)
    DIR/tokenizer.json, tokenizer_config.json, special_tokens_map.json, generation_config.json
    DIR/README.md                         the model card (hdee.export.card)
    DIR/hdee-export.json                  the run, strategy, members and their weights' sha256, the method's inputs

The directory appears whole or not at all (`hdee.core.fsutil.atomic_dir`); an existing one is
replaced only with `force`.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hdee.core.errors import EnsembleError
from hdee.expert_dir import weights_path
from hdee.export.spec import ExportSpec, export_spec
from hdee.core.fsutil import atomic_dir, read_json, sha256_file

if TYPE_CHECKING:
    from hdee.run import Run

CODE_FILES = ("configuration_hdee_ensemble.py", "modeling_hdee_ensemble.py")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
INDEX = "model.safetensors.index.json"
RECORD = "hdee-export.json"


@dataclass(frozen=True)
class Exported:
    path: Path
    spec: ExportSpec
    files: list[str]


def check_out(out: Path, run_root: Path, force: bool) -> None:
    """Refuse an --out that would replace the run (or hold it), or any existing path without --force."""
    out, root = out.resolve(), run_root.resolve()
    if out == root or root.is_relative_to(out) or out.is_relative_to(root):
        raise EnsembleError(f"--out {out}: must lie outside the run directory {root}")
    if out.exists() or out.is_symlink():
        if not out.is_dir():
            raise EnsembleError(f"--out {out}: exists and is not a directory")
        if any(out.iterdir()) and not force:
            raise EnsembleError(f"--out {out}: already exists; choose another --out or pass --force to replace it")


def _config(spec: ExportSpec, tokenizer: Any) -> Any:
    from hdee.export.configuration_hdee_ensemble import HdeeEnsembleConfig

    routing = None
    if spec.prefix_model:
        routing = {"route_tokens": spec.route_tokens, "prefix_model": spec.models.index(spec.prefix_model)}
        if spec.router is not None:
            routing.update(kind=spec.router.kind, features=int(spec.router.centroids.shape[1]),
                           version=spec.router.meta.get("version"))
    cfg = HdeeEnsembleConfig(
        models=[spec.infos[e].config for e in spec.models],
        members=list(range(len(spec.members))),
        member_names=list(spec.members),
        method=spec.method,
        mix_top_k=spec.top_k,
        log_prior=None if spec.log_prior is None else np.asarray(spec.log_prior, dtype=np.float64).tolist(),
        prior_domain=spec.prior_domain,
        routing=routing,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    cfg.architectures = ["HdeeEnsembleForCausalLM"]
    cfg.auto_map = {
        "AutoConfig": "configuration_hdee_ensemble.HdeeEnsembleConfig",
        "AutoModelForCausalLM": "modeling_hdee_ensemble.HdeeEnsembleForCausalLM",
    }
    return cfg


def _write_weights(spec: ExportSpec, tmp: Path) -> list[str]:
    """One safetensors file per network (keys under `models.<i>.`), the router's, and the index."""
    import torch
    from safetensors.torch import load_file, save  # torch's: any dtype an expert holds (bfloat16 too)

    weight_map: dict[str, str] = {}
    total = 0
    files = []
    for i, eid in enumerate(spec.models):
        src = weights_path(spec.infos[eid].path)
        if sha256_file(src) != spec.infos[eid].weights_sha256():  # read now: the bytes exported are the ones recorded
            raise EnsembleError(f"{src}: checksum does not match its hdee.json (modified during the export?)")
        tensors = {f"models.{i}.{k}": v for k, v in load_file(str(src)).items()}
        name = f"model-{i:02d}-{eid}.safetensors"
        (tmp / name).write_bytes(save(tensors, metadata={"format": "pt"}))
        weight_map.update(dict.fromkeys(tensors, name))
        total += sum(v.numel() * v.element_size() for v in tensors.values())
        files.append(name)
    if spec.router is not None:
        tensors = {"router_centroids": torch.from_numpy(np.ascontiguousarray(spec.router.centroids, dtype=np.float32))}
        if spec.router.idf is not None:
            tensors["router_idf"] = torch.from_numpy(np.ascontiguousarray(spec.router.idf, dtype=np.float32))
        (tmp / "router.safetensors").write_bytes(save(tensors, metadata={"format": "pt"}))
        weight_map.update(dict.fromkeys(tensors, "router.safetensors"))
        total += sum(v.numel() * v.element_size() for v in tensors.values())
        files.append("router.safetensors")
        (tmp / "router.json").write_text(json.dumps({**spec.router.meta, "kind": spec.router.kind,
                                                     "route_tokens": spec.router.route_tokens}, indent=2) + "\n")
        files.append("router.json")
    (tmp / INDEX).write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2) + "\n")
    return [*files, INDEX]


def _record(spec: ExportSpec, run_name: str) -> dict:
    return {
        "run": str(spec.run_root), "config": run_name, "strategy": spec.strategy, "ensemble": spec.kind,
        "method": spec.method, "top_k": spec.top_k, "prior_domain": spec.prior_domain,
        "log_prior": None if spec.log_prior is None else np.asarray(spec.log_prior).tolist(),
        "members": [{"id": e, "size": spec.infos[e].record.size_name, "domain": spec.infos[e].record.domain,
                     "weights_sha256": spec.infos[e].weights_sha256()} for e in spec.members],
        "prefix_model": None if not spec.prefix_model else {
            "id": spec.prefix_model, "reason": spec.prefix_reason,
            "weights_sha256": spec.infos[spec.prefix_model].weights_sha256()},
        "router_file": None if spec.router_file is None else str(spec.router_file.relative_to(spec.run_root)),
    }


def write_export(spec: ExportSpec, out: str | Path, run_name: str, results: dict | None, force: bool = False) -> Exported:
    """Write `spec` as one model directory at `out` (atomic)."""
    from transformers import GenerationConfig

    from hdee.data.tokenizer import load_hf_tokenizer
    from hdee.export.card import render_card

    out = Path(out)
    check_out(out, spec.run_root, force)
    first = spec.infos[spec.members[0]].path
    missing = [f for f in TOKENIZER_FILES if not (first / f).is_file()]
    if missing:
        raise EnsembleError(f"{first}: no {missing[0]} (an expert directory carries the run's tokenizer files)")
    tokenizer = load_hf_tokenizer(first / "tokenizer.json", require_eos=False)
    with atomic_dir(out) as tmp:
        files = _write_weights(spec, tmp)
        cfg = _config(spec, tokenizer)
        cfg.save_pretrained(tmp)
        GenerationConfig(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id).save_pretrained(tmp)
        here = Path(__file__).resolve().parent
        for f in CODE_FILES:
            shutil.copyfile(here / f, tmp / f)
        for f in TOKENIZER_FILES:
            shutil.copyfile(first / f, tmp / f)
        (tmp / "README.md").write_text(render_card(spec, results, run_name), encoding="utf-8")
        (tmp / RECORD).write_text(json.dumps(_record(spec, run_name), indent=2) + "\n", encoding="utf-8")
        files = sorted({*files, "config.json", "generation_config.json", *CODE_FILES, *TOKENIZER_FILES, "README.md", RECORD})
    return Exported(out, spec, files)


def export_run(run: "Run", strategy: str, method: str, out: str | Path, kind: str = "final",
               prior_domain: str | None = None, force: bool = False) -> Exported:
    """`hdee export`: resolve what to export (`export_spec`), then write it with the run's measured results."""
    check_out(Path(out), run.layout.root, force)  # before any work
    spec = export_spec(run, strategy, method, kind, prior_domain)
    path = run.layout.results_path(0)
    results = read_json(path) if path.is_file() else None
    return write_export(spec, out, run.cfg.name, results, force)
