"""Open prepared domain directories for training: tokens, manifest checks, fingerprints."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hdee.errors import DataError
from hdee.fsutil import read_json, sha256_file

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class DomainData:
    name: str
    domain_dir: Path
    tokens: np.ndarray
    fingerprint: str  # sha256 of the manifest (or of the split file when there is no manifest)
    tokenizer_hash: str | None


def _manifest(domain_dir: Path) -> dict | None:
    path = domain_dir / MANIFEST
    if not path.is_file():
        return None
    try:
        from hdee.data.shards import load_manifest  # the data package's reader, when present
    except ImportError:
        load_manifest = None
    try:
        if load_manifest is not None:
            m = load_manifest(domain_dir)
            return m.model_dump(mode="json") if hasattr(m, "model_dump") else dict(m)
        return read_json(path)
    except Exception as exc:  # any parse or validation failure is the user's broken file
        raise DataError(f"{path}: unreadable manifest: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None


def _read_tokens(domain_dir: Path, split: str, manifest: dict | None) -> np.ndarray:
    try:
        from hdee.data.shards import read_split
    except ImportError:
        read_split = None
    if read_split is not None and manifest is not None:
        return read_split(domain_dir, split)
    path = domain_dir / f"{split}.bin"
    if not path.is_file():
        raise DataError(f"{path}: token file not found")
    dtype = np.dtype((manifest or {}).get("dtype", "uint16")).newbyteorder("<")
    return np.memmap(path, dtype=dtype, mode="r")


def open_domain(domain_dir: str | Path, split: str, vocab: int, tokenizer_hash: str | None) -> DomainData:
    """Tokens of one split, after checking the tokenizer hash and that every id fits the model's vocab."""
    domain_dir = Path(domain_dir)
    if not domain_dir.is_dir():
        raise DataError(f"{domain_dir}: domain directory not found")
    manifest = _manifest(domain_dir)
    data_hash = (manifest or {}).get("tokenizer_hash")
    if tokenizer_hash and data_hash and data_hash != tokenizer_hash:
        raise DataError(
            f"{domain_dir / MANIFEST}: tokenizer hash {data_hash[:12]} differs from the job's {tokenizer_hash[:12]}"
        )
    tokens = _read_tokens(domain_dir, split, manifest)
    if len(tokens) == 0:
        raise DataError(f"{domain_dir}: split {split!r} is empty")
    manifest_vocab = (manifest or {}).get("vocab_size")
    if manifest_vocab is not None and int(manifest_vocab) > vocab:
        raise DataError(f"{domain_dir}: tokenizer vocab {manifest_vocab} is larger than the model's vocab {vocab}")
    top = int(np.max(tokens))
    if top >= vocab:
        raise DataError(f"{domain_dir}: split {split!r} has token id {top}, outside the model's vocab of {vocab}")
    fp_file = domain_dir / MANIFEST if manifest is not None else domain_dir / f"{split}.bin"
    return DomainData(domain_dir.name, domain_dir, tokens, sha256_file(fp_file), data_hash)
