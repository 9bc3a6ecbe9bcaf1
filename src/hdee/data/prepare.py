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

from tokenizers import Tokenizer

from hdee.config import DomainConfig, ExperimentConfig
from hdee.data.documents import Document
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
from hdee.data.split import SPLITS, split_for_role, split_of, splits_for_role
from hdee.data.tokenizer import (
    eos_token,
    load_tokenizer,
    pretrained_tokenizer,
    save_tokenizer,
    serialized_hash,
    tokenizer_hash,
    train_bpe,
)
from hdee.errors import DataError
from hdee.fsutil import atomic_dir, atomic_write_json, clean_stale_temps, read_json, sha256_file
from hdee.layout import RunLayout

ProgressFn = Callable[[str, int, int], None]  # (what is happening, steps done, steps in all)

BATCH_BYTES = 1 << 20  # text handed to one encode_batch call
BATCH_DOCS = 1024
MAX_BYTES_PER_TOKEN = 8  # pending text this many times a split's remaining room surely fills it


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
            for d in _tokenizer_domains(cfg)
        ],
    }


def _tokenizer_domains(cfg: ExperimentConfig) -> list[DomainConfig]:
    return [d for d in cfg.domains if d.role in ("train", "seed")]


def tokenizer_texts(cfg: ExperimentConfig, sources: dict[str, DocumentSource]) -> Iterator[str]:
    """Training-split text of the training domains, `train_bytes` in all, the same share from each."""
    doms = _tokenizer_domains(cfg)
    share = cfg.data.tokenizer.train_bytes // max(len(doms), 1)
    for d in doms:
        docs = capped(sources[d.name].documents(), default_max_bytes(d))
        train_docs = (doc for doc in docs if split_of(doc.id, cfg.data.split) == "train")
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


def domain_fingerprint(cfg: ExperimentConfig, d: DomainConfig, source_fp: dict, tok_hash: str, dtype: str) -> str:
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
        "max_train_tokens": cfg.data.max_train_tokens,
        "max_eval_tokens": cfg.data.max_eval_tokens,
    })


def _split_caps(cfg: ExperimentConfig, role: str) -> dict[str, int | None]:
    wanted = splits_for_role(role)
    caps = {"train": cfg.data.max_train_tokens, "val": cfg.data.max_eval_tokens, "test": cfg.data.max_eval_tokens}
    return {s: (caps[s] if s in wanted else 0) for s in SPLITS}


def build_domain_shards(cfg: ExperimentConfig, d: DomainConfig, source: DocumentSource, source_fp: dict,
                        tok: Tokenizer, tok_hash: str, dtype: str, out_dir: Path) -> DomainManifest:
    """Tokenize one domain into {train,val,test}.bin + manifest.json, atomically replacing `out_dir`."""
    eos_id = tok.token_to_id(eos_token(tok))
    caps = _split_caps(cfg, d.role)
    wanted = splits_for_role(d.role)
    docs_read = bytes_read = invalid = 0
    with atomic_dir(out_dir) as tmp:
        writers: dict[str, SplitWriter] = {}
        pending: dict[str, list[Document]] = {s: [] for s in SPLITS}
        pending_bytes = dict.fromkeys(SPLITS, 0)

        def flush(s: str) -> None:
            docs = pending[s]
            if docs:
                encodings = tok.encode_batch([doc.text for doc in docs], add_special_tokens=False)
                writers[s].add([e.ids for e in encodings], [len(doc.text.encode("utf-8")) for doc in docs], eos_id)
            pending[s], pending_bytes[s] = [], 0

        try:
            for s in SPLITS:  # inside the try: a failed open still closes the files already opened
                writers[s] = SplitWriter(tmp / f"{s}.bin", dtype, caps[s])
            for doc in capped(source.documents(), default_max_bytes(d)):
                if all(writers[s].full for s in wanted):
                    break
                docs_read += 1
                size = len(doc.text.encode("utf-8"))
                bytes_read += size
                invalid += doc.invalid_utf8
                s = split_for_role(doc.id, cfg.data.split, d.role)
                if writers[s].full:
                    continue
                pending[s].append(doc)
                pending_bytes[s] += size
                room = writers[s].remaining()
                if (pending_bytes[s] >= BATCH_BYTES or len(pending[s]) >= BATCH_DOCS
                        or (room is not None and pending_bytes[s] >= room * MAX_BYTES_PER_TOKEN)):
                    flush(s)
            for s in SPLITS:
                flush(s)
        finally:
            for w in writers.values():
                w.close()
        if docs_read == 0:
            raise DataError(f"domain {d.name!r}: no documents (the source is empty or every text is blank)")
        for s in wanted:
            if writers[s].stats.tokens == 0:
                raise DataError(
                    f"domain {d.name!r}: split {s!r} is empty ({docs_read} documents in all); "
                    f"the domain needs more documents"
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
            fingerprint=domain_fingerprint(cfg, d, source_fp, tok_hash, dtype),
            max_bytes=default_max_bytes(d),
            tokenizer_hash=tok_hash,
            vocab_size=tok.get_vocab_size(),
            eos_id=eos_id,
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

    manifests: dict[str, DomainManifest] = {}
    for i, d in enumerate(cfg.domains):
        report(f"tokenizing {d.name}", len(cfg.domains) + 1 + i, total)
        out_dir = layout.domain_dir(d.name)
        fp = domain_fingerprint(cfg, d, fingerprints[d.name], tok_hash, dtype)
        manifest = _finished(out_dir, fp)
        if manifest is None:
            try:
                manifest = build_domain_shards(cfg, d, sources[d.name], fingerprints[d.name], tok, tok_hash, dtype, out_dir)
            except OSError as exc:
                raise _io_error(exc, out_dir) from None
        manifests[d.name] = manifest
    report("done", total, total)
    return manifests
