"""Throughput of tokenizing and packing shards on this machine (CPython's own source as text).

    .venv/bin/python benchmarks/prepare_throughput.py [--mb 16] [--vocab 4096]

Prints MB/s and tokens/s for (1) encode_batch alone, (2) the whole per-domain shard build
(read JSON lines, split, encode, pack, checksum, manifest) and MB/s for (3) indexing the text
for de-duplication and (4) checking it against that index (exact, MinHash, n-gram containment).
"""

from __future__ import annotations

import argparse
import json
import sysconfig
import tempfile
import time
from pathlib import Path

from hdee.config import DataConfig, DedupConfig, DomainConfig, ExperimentConfig
from hdee.data.sources import FilesSource
from hdee.data.dedup import TrainingIndex
from hdee.data.documents import Document
from hdee.data.prepare import build_domain_shards
from hdee.data.intake import Encoder
from hdee.data.sources import open_source
from hdee.data.tokenizer import train_bpe

_BASE = {
    "name": "bench",
    "model": {"hidden": 32, "layers": 2, "heads": 2, "intermediate": {"M": 64}},
    "seed_models": {"tokens": 1},
    "budget": {"baseline": {"size": "M", "steps": 1}},
    "strategies": ["MHo-IHo"],
    "lineages": [{"name": "a", "tier": "easy", "domains": ["code"]}],
}


def stdlib_texts(limit: int) -> list[str]:
    out, total = [], 0
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).rglob("*.py")):
        text = path.read_bytes().decode("utf-8", errors="replace")
        out.append(text)
        total += len(text.encode())
        if total >= limit:
            break
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=float, default=16)
    ap.add_argument("--vocab", type=int, default=4096)
    args = ap.parse_args()
    texts = stdlib_texts(int(args.mb * 1e6))
    mb = sum(len(t.encode()) for t in texts) / 1e6
    tok = train_bpe(texts[: max(1, len(texts) // 8)], args.vocab)

    t0 = time.perf_counter()
    n_tok = sum(len(e.ids) for e in tok.encode_batch(texts, add_special_tokens=False))
    dt = time.perf_counter() - t0
    print(f"encode_batch only : {mb:6.1f} MB in {dt:5.2f}s = {mb / dt:6.2f} MB/s, {n_tok / dt / 1e6:5.2f} M tokens/s")

    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "code.jsonl"
        corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
        dom = DomainConfig(name="code", role="train", source=FilesSource(paths=[str(corpus)]))
        cfg = ExperimentConfig.model_validate({**_BASE, "domains": [dom.model_dump()], "data": DataConfig().model_dump()})
        t0 = time.perf_counter()
        m = build_domain_shards(cfg, dom, open_source(dom), {}, Encoder(tok), "bench", "uint16", Path(tmp) / "out")
        dt = time.perf_counter() - t0
    tokens = sum(s.tokens for s in m.splits.values())
    print(f"end to end shards : {mb:6.1f} MB in {dt:5.2f}s = {mb / dt:6.2f} MB/s, {tokens / dt / 1e6:5.2f} M tokens/s")

    docs = [Document(str(i), t) for i, t in enumerate(texts)]
    index = TrainingIndex(DedupConfig())
    t0 = time.perf_counter()
    index.add("code", docs)
    dt = time.perf_counter() - t0
    print(f"dedup index       : {mb:6.1f} MB in {dt:5.2f}s = {mb / dt:6.2f} MB/s")
    t0 = time.perf_counter()
    found = sum(m is not None for m in index.matches([Document(d.id, d.text + " one more line") for d in docs]))
    dt = time.perf_counter() - t0
    print(f"dedup check       : {mb:6.1f} MB in {dt:5.2f}s = {mb / dt:6.2f} MB/s (copies with a line added: {found} of {len(docs)} found)")


if __name__ == "__main__":
    main()
