"""`prepare`: sources -> tokenizer -> token shards for every domain of an experiment.

Resumable and idempotent: each domain directory is written in one atomic rename and carries a
fingerprint of all its inputs, so a rerun skips finished domains and rebuilds only what changed
or was interrupted.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable, Iterator

from hdee.config import DomainConfig, ExperimentConfig
from hdee.data.dedup import TrainingIndex
from hdee.data.intake import DuplicateFilter, Encoder, eval_cap, route, split_caps, train_cap, training_domains, training_index
from hdee.data.shards import (
    MANIFEST,
    SHARD_FORMAT,
    DomainManifest,
    SplitWriter,
    check_files,
    dtype_for_vocab,
    load_manifest,
    verify_split,
)
from hdee.data.sources import DocumentSource, capped, default_max_bytes, open_source
from hdee.data.split import SPLITS, split_of, splits_for_role
from hdee.data.tokenizer import (
    load_tokenizer,
    pretrained_tokenizer,
    save_tokenizer,
    serialized_hash,
    tokenizer_hash,
    train_bpe,
)
from hdee.core.errors import DataError
from hdee.core.fsutil import atomic_dir, atomic_write_json, clean_stale_temps, read_json, sha256_file
from hdee.core.layout import RunLayout

ProgressFn = Callable[[str, int, int], None]  # (what is happening, steps done, steps in all)


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


# ------------------------------------------------------------------ tokenizer


def _tokenizer_inputs(cfg: ExperimentConfig, fingerprints: dict[str, dict]) -> dict[str, Any]:
    t = cfg.data.tokenizer
    if t.kind == "pretrained":
        return {"kind": "pretrained", "path": t.path}
    return {
        "kind": "bpe",
        "vocab_size": t.vocab_size,
        "train_bytes": t.train_bytes,
        "split": cfg.data.split.model_dump(mode="json"),
        "domains": [
            {"name": d.name, "source": d.source.model_dump(mode="json"), "fingerprint": fingerprints[d.name],
             "max_bytes": default_max_bytes(d)}
            for d in training_domains(cfg)
        ],
    }


def tokenizer_texts(cfg: ExperimentConfig, sources: dict[str, DocumentSource]) -> Iterator[str]:
    """Training-split text of the training domains, `train_bytes` in all, the same share from each."""
    doms = training_domains(cfg)
    share = cfg.data.tokenizer.train_bytes // max(len(doms), 1)
    for d in doms:
        docs = capped(sources[d.name].documents(), default_max_bytes(d))
        train_docs = (doc for doc in docs if split_of(doc.split_key, d.name, cfg.data.split) == "train")
        for doc in capped(train_docs, share):
            yield doc.text


def _check_tokenizer_untouched(layout: RunLayout) -> None:
    """Refuse a tokenizer.json that differs from the shards beside it and was not written by prepare."""
    path = layout.tokenizer_path
    if not path.exists():
        return
    current = tokenizer_hash(path)
    meta_path = layout.tokenizer_inputs
    written = read_json(meta_path).get("tokenizer_hash") if meta_path.exists() else None
    if current == written:
        return
    for manifest_path in sorted(layout.domains_dir.glob(f"*/{MANIFEST}")):
        try:
            shard_hash = load_manifest(manifest_path.parent).tokenizer_hash
        except DataError:
            continue
        if shard_hash != current:
            raise DataError(
                f"{path}: tokenizer hash {current[:12]} differs from the one the shards in "
                f"{manifest_path.parent} were made with ({shard_hash[:12]}); restore it or delete {layout.data_dir}"
            )


def ensure_tokenizer(cfg: ExperimentConfig, layout: RunLayout, sources: dict[str, DocumentSource],
                     fingerprints: dict[str, dict]) -> Path:
    """Reuse data/tokenizer.json if it was made from the same inputs, else train or copy it."""
    path = layout.tokenizer_path
    meta_path = layout.tokenizer_inputs
    inputs_hash = _hash(_tokenizer_inputs(cfg, fingerprints))
    if path.exists() and meta_path.exists():
        meta = read_json(meta_path)
        if meta.get("inputs_hash") == inputs_hash and meta.get("tokenizer_hash") == tokenizer_hash(path):
            return path
    t = cfg.data.tokenizer
    if t.kind == "pretrained":
        tok = pretrained_tokenizer(t.path or "")
    else:
        tok = train_bpe(tokenizer_texts(cfg, sources), t.vocab_size)
    # the record goes first: a crash before the file is replaced leaves old shards still matching the old file
    atomic_write_json(meta_path, {"inputs_hash": inputs_hash, "tokenizer_hash": serialized_hash(tok)})
    save_tokenizer(tok, path)
    return path


# ------------------------------------------------------------------ shards


def domain_fingerprint(cfg: ExperimentConfig, d: DomainConfig, source_fp: dict, tok_hash: str, dtype: str,
                       reference: str = "") -> str:
    """Hash of every input of a domain's shards; `reference` is `reference_fingerprint` (what dedup compares with)."""
    return _hash({
        "format": SHARD_FORMAT,
        "domain": d.name,
        "role": d.role,
        "tier": cfg.tier_of(d.name),
        "source": d.source.model_dump(mode="json"),
        "source_fingerprint": source_fp,
        "max_bytes": default_max_bytes(d),
        "split": cfg.data.split.model_dump(mode="json"),
        "tokenizer": tok_hash,
        "dtype": dtype,
        "max_train_tokens": train_cap(cfg, d),
        "max_eval_tokens": eval_cap(cfg, d),
        "reference": reference,
    })


def reference_fingerprint(cfg: ExperimentConfig, fingerprints: dict[str, dict], tok_hash: str, dtype: str) -> str:
    """What the training index depends on: the dedup settings and the training domains' train inputs only."""
    dedup = cfg.data.dedup
    if not (dedup.exact or dedup.near or dedup.contained):
        return ""
    return _hash({
        "dedup": dedup.model_dump(mode="json"),
        "training": [domain_fingerprint(cfg, d, fingerprints[d.name], tok_hash, dtype) for d in training_domains(cfg)],
    })


def build_domain_shards(cfg: ExperimentConfig, d: DomainConfig, source: DocumentSource, source_fp: dict,
                        encode: Encoder, tok_hash: str, dtype: str, out_dir: Path,
                        index: TrainingIndex | None = None, reference: str = "") -> DomainManifest:
    """Tokenize one domain into {train,val,test}.bin + manifest.json, atomically replacing `out_dir`.

    With `index`, val/test documents that duplicate training documents are dropped (and counted).
    """
    caps = split_caps(cfg, d)
    wanted = splits_for_role(d.role)
    with atomic_dir(out_dir) as tmp:
        writers: dict[str, SplitWriter] = {}
        try:
            for s in SPLITS:  # inside the try: a failed open still closes the files already opened
                writers[s] = SplitWriter(tmp / f"{s}.bin", dtype, caps[s])
            docs_read, bytes_read, invalid = route(d, cfg, source, encode, writers, wanted,
                                                   keep=DuplicateFilter(index, writers))
        finally:
            for w in writers.values():
                w.close()
        if docs_read == 0:
            raise DataError(f"domain {d.name!r}: no documents (the source is empty or every text is blank)")
        for s in wanted:
            if writers[s].stats.tokens == 0:
                dups = writers[s].stats.dup_docs
                raise DataError(
                    f"domain {d.name!r}: split {s!r} is empty ({docs_read} documents in all"
                    + (f", {dups} of them in {s!r} dropped as duplicates of training documents" if dups else "")
                    + "); the domain needs more documents"
                )
        stats = {}
        for s, w in writers.items():
            w.stats.sha256 = sha256_file(w.path)
            stats[s] = w.stats
        manifest = DomainManifest(
            domain=d.name,
            role=d.role,
            tier=cfg.tier_of(d.name),
            source=d.source.model_dump(mode="json"),
            source_fingerprint=source_fp,
            fingerprint=domain_fingerprint(cfg, d, source_fp, tok_hash, dtype, reference),
            max_bytes=default_max_bytes(d),
            tokenizer_hash=tok_hash,
            vocab_size=encode.tok.get_vocab_size(),
            eos_id=encode.eos_id,
            dtype=dtype,  # type: ignore[arg-type]
            docs_read=docs_read,
            bytes_read=bytes_read,
            invalid_utf8=invalid,
            splits=stats,
        )
        atomic_write_json(tmp / MANIFEST, manifest.model_dump(mode="json"))
    return manifest


def _finished(domain_dir: Path, fingerprint: str) -> DomainManifest | None:
    if not (domain_dir / MANIFEST).exists():
        return None
    try:
        manifest = load_manifest(domain_dir)
        check_files(domain_dir, manifest)
        for split in manifest.splits:
            verify_split(domain_dir, manifest, split)
    except DataError:
        return None
    return manifest if manifest.fingerprint == fingerprint else None


def _io_error(exc: OSError, where: Path) -> DataError:
    """A failed read or write (a full disk, say) as one line; atomic writes left earlier outputs as they were."""
    reason = "no space left on device" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc))
    name = str(exc.filename or "")
    what = name if name and ".tmp" not in name else where  # a temp file's name says nothing to the user
    return DataError(f"{what}: {reason}; finished domains are kept, rerun `hdee prepare` to finish")


def prepare(cfg: ExperimentConfig, layout: RunLayout, progress: ProgressFn | None = None) -> dict[str, DomainManifest]:
    """Make the tokenizer and the shards of every domain (seed ones included); skip finished work."""
    report = progress or (lambda what, done, total: None)
    if cfg.data.workers:
        # the tokenizers thread pool reads this when it first starts
        os.environ.setdefault("RAYON_NUM_THREADS", str(cfg.data.workers))
    clean_stale_temps(layout.data_dir)
    clean_stale_temps(layout.domains_dir)
    _check_tokenizer_untouched(layout)

    total = 2 * len(cfg.domains) + 1
    sources: dict[str, DocumentSource] = {}
    fingerprints: dict[str, dict] = {}
    for i, d in enumerate(cfg.domains):
        report(f"reading source of {d.name}", i, total)
        sources[d.name] = open_source(d)
        fingerprints[d.name] = sources[d.name].fingerprint()

    report("tokenizer", len(cfg.domains), total)
    try:
        tok_path = ensure_tokenizer(cfg, layout, sources, fingerprints)
    except OSError as exc:
        raise _io_error(exc, layout.tokenizer_path) from None
    tok = load_tokenizer(tok_path)
    tok_hash = tokenizer_hash(tok_path)
    dtype = dtype_for_vocab(tok.get_vocab_size(), cfg.data.token_dtype)

    reference = reference_fingerprint(cfg, fingerprints, tok_hash, dtype)
    encode = Encoder(tok)
    manifests: dict[str, DomainManifest] = {}
    index: TrainingIndex | None = None
    for i, d in enumerate(cfg.domains):
        out_dir = layout.domain_dir(d.name)
        manifest = _finished(out_dir, domain_fingerprint(cfg, d, fingerprints[d.name], tok_hash, dtype, reference))
        if manifest is None:
            if index is None and reference:
                index = training_index(cfg, sources, encode, dtype, lambda what: report(what, len(cfg.domains) + 1 + i, total))
            report(f"tokenizing {d.name}", len(cfg.domains) + 1 + i, total)
            try:
                manifest = build_domain_shards(cfg, d, sources[d.name], fingerprints[d.name], encode, tok_hash, dtype,
                                               out_dir, index, reference)
            except OSError as exc:
                raise _io_error(exc, out_dir) from None
        manifests[d.name] = manifest
    report("done", total, total)
    return manifests
