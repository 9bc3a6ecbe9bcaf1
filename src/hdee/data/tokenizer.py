"""The shared tokenizer: a byte-level BPE trained on the training domains, or a pretrained one.

It is saved as one HF `tokenizer.json`; its sha256 (`tokenizer_hash`) goes into every shard
manifest so shards and tokenizer can never be mixed up.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from hdee.core.errors import DataError
from hdee.core.fsutil import atomic_write_bytes, atomic_write_text, sha256_bytes, sha256_file

EOS_TOKEN = "<|endoftext|>"
_KNOWN_EOS = (EOS_TOKEN, "<|end_of_text|>", "</s>", "<eos>", "<|im_end|>")


def tokenizer_hash(path: str | Path) -> str:
    return sha256_file(path)


def train_bpe(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    """Train a byte-level BPE on `texts`; the EOS token `<|endoftext|>` gets id 0."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def save_tokenizer(tok: Tokenizer, path: str | Path) -> str:
    """Write `tok` atomically; return its hash (the sha256 of the bytes written)."""
    text = tok.to_str()
    atomic_write_text(path, text)
    return sha256_bytes(text.encode("utf-8"))


def serialized_hash(tok: Tokenizer) -> str:
    return sha256_bytes(tok.to_str().encode("utf-8"))


def pretrained_tokenizer(source: str) -> Tokenizer:
    """A pretrained tokenizer from a tokenizer.json file, a directory holding one, or a hub id."""
    src = Path(source).expanduser()
    if src.is_dir():
        src = src / "tokenizer.json"
    if src.is_file():
        try:
            tok = Tokenizer.from_file(str(src))
        except Exception as exc:
            raise DataError(f"{src}: not a tokenizers file ({str(exc).splitlines()[0]})") from None
    else:
        try:
            from transformers import AutoTokenizer

            hf = AutoTokenizer.from_pretrained(source)
        except Exception as exc:
            raise DataError(f"tokenizer {source!r}: neither a local tokenizer.json nor loadable ({type(exc).__name__})") from None
        if not getattr(hf, "is_fast", False):
            raise DataError(f"tokenizer {source!r} has no fast (tokenizers) version")
        tok = hf.backend_tokenizer
    eos_token(tok, where=str(source))
    return tok


def find_eos_token(tok: Tokenizer) -> str | None:
    """The first known end-of-text token in `tok`'s vocabulary, or None."""
    vocab = tok.get_vocab()
    return next((name for name in _KNOWN_EOS if name in vocab), None)


def eos_token(tok: Tokenizer, where: str = "tokenizer") -> str:
    name = find_eos_token(tok)
    if name is None:
        raise DataError(f"{where}: no end-of-text token (looked for {', '.join(_KNOWN_EOS)})")
    return name


def load_tokenizer(path: str | Path) -> Tokenizer:
    """A tokenizer.json as a `tokenizers.Tokenizer`; one-line DataError when absent or unreadable."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: tokenizer file not found")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as exc:  # the tokenizers library raises its own exception type
        raise DataError(f"{path}: cannot load tokenizer: {str(exc).splitlines()[0] if str(exc) else exc!r}") from None


def vocab_size(path: str | Path) -> int:
    """Vocabulary size of a tokenizer.json (the models' embedding rows)."""
    return load_tokenizer(path).get_vocab_size()


def load_hf_tokenizer(path: str | Path, require_eos: bool = True):
    """The same file as a `transformers.PreTrainedTokenizerFast` with eos/bos/pad set (pad = eos).

    Without `require_eos`, a tokenizer with no known end-of-text token loads with eos/bos unset.
    """
    from transformers import PreTrainedTokenizerFast

    tok = load_tokenizer(path)
    eos = eos_token(tok, where=str(path)) if require_eos else find_eos_token(tok)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=eos, bos_token=eos, pad_token=eos)


def special_token_ids(path: str | Path) -> dict[str, int | None]:
    """bos, eos and pad ids of a tokenizer.json: all three the end-of-text token (documents are
    joined by it in training), or None when it has none."""
    tok = load_tokenizer(path)
    eos = find_eos_token(tok)
    tid = None if eos is None else tok.token_to_id(eos)
    return {"bos": tid, "eos": tid, "pad": tid}


#: the files `save_tokenizer_files` writes into a model directory
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def save_tokenizer_files(path: str | Path, out_dir: str | Path, model_max_length: int | None = None) -> list[Path]:
    """Write `tokenizer.json`, `tokenizer_config.json` and `special_tokens_map.json` into `out_dir`.

    The model directory then loads with `AutoTokenizer`, `transformers.pipeline` and tools
    that read HF model dirs (lm-eval's `hf` model, mergekit). The class is recorded as
    `PreTrainedTokenizerFast`, which every transformers version knows.
    """
    import json

    out_dir = Path(out_dir)
    hf = load_hf_tokenizer(path, require_eos=False)
    if model_max_length:
        hf.model_max_length = model_max_length
    hf.save_pretrained(str(out_dir))
    config_path = out_dir / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config.pop("backend", None)
    special = {k: config[k] for k in ("bos_token", "eos_token", "unk_token", "pad_token") if config.get(k)}
    # the run's own bytes, so the copy's sha256 is the `tokenizer_hash` every hdee.json records
    atomic_write_bytes(out_dir / "tokenizer.json", Path(path).read_bytes())
    atomic_write_text(config_path, json.dumps(config, indent=2, sort_keys=True) + "\n")
    atomic_write_text(out_dir / "special_tokens_map.json", json.dumps(special, indent=2, sort_keys=True) + "\n")
    return [out_dir / name for name in TOKENIZER_FILES]
