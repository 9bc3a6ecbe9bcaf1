"""Open prepared domain directories for training: tokens, manifest checks, fingerprints."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hdee.data.shards import load_manifest, read_split
from hdee.core.errors import DataError
from hdee.core.fsutil import sha256_file


@dataclass(frozen=True)
class DomainData:
    name: str
    domain_dir: Path
    tokens: np.ndarray
    fingerprint: str  # sha256 of the manifest
    tokenizer_hash: str


def open_domain(domain_dir: str | Path, split: str, vocab: int, tokenizer_hash: str | None) -> DomainData:
    """Tokens of one split, after checking the tokenizer hash and that every id fits the model's vocab."""
    domain_dir = Path(domain_dir)
    if not domain_dir.is_dir():
        raise DataError(f"{domain_dir}: domain directory not found")
    manifest = load_manifest(domain_dir)
    data_hash = manifest.tokenizer_hash
    if tokenizer_hash and data_hash and data_hash != tokenizer_hash:
        raise DataError(
            f"{domain_dir / 'manifest.json'}: tokenizer hash {data_hash[:12]} differs from the job's {tokenizer_hash[:12]}"
        )
    tokens = read_split(domain_dir, split)
    if len(tokens) == 0:
        raise DataError(f"{domain_dir}: split {split!r} is empty")
    if manifest.vocab_size > vocab:
        raise DataError(f"{domain_dir}: tokenizer vocab {manifest.vocab_size} is larger than the model's vocab {vocab}")
    top = int(np.max(tokens))
    if top >= vocab:
        raise DataError(f"{domain_dir}: split {split!r} has token id {top}, outside the model's vocab of {vocab}")
    return DomainData(domain_dir.name, domain_dir, tokens, sha256_file(domain_dir / "manifest.json"), data_hash)
