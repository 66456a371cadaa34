"""Small real artefacts for tests: SentencePiece models trained on real Multi30k lines, and checkpoints of
randomly initialised models in the exact format training writes."""

from __future__ import annotations

import gzip
import itertools
from pathlib import Path

import torch

from nmt.checkpoint import checkpoint_metadata
from nmt.data.tokenizer import PAD, Tokenizer, TokenizerConfig
from nmt.model import NetworkConfig, build_model

ROOT = Path(__file__).resolve().parents[1]
MULTI30K = ROOT / "data" / "multi30k"  # English and French, shipped with the repository
SHARED = ROOT.parent / "shared"  # read-only data beside the repository (here and in CI)
SHARED_MULTI30K = SHARED / "data" / "multi30k"  # all four languages: the German is read from here
SMT = SHARED / "data" / "smt"


def multi30k_file(split: str, lang: str) -> Path:
    """A Multi30k file: the repository's copy for English and French, ../shared's for German and Czech."""
    return (MULTI30K if lang in ("en", "fr") else SHARED_MULTI30K) / f"{split}.{lang}.gz"


def multi30k_lines(split: str, lang: str, n: int | None = None) -> list[str]:
    with gzip.open(multi30k_file(split, lang), "rt", encoding="utf-8") as f:
        return [line.rstrip("\n") for line in itertools.islice(f, n)]


_TOKENIZERS: dict[tuple, Tokenizer] = {}


def tiny_tokenizer(
    src_lang: str = "en", tgt_lang: str = "fr", *, lines: int = 3000, vocab_size: int = 400
) -> Tokenizer:
    key = (src_lang, tgt_lang, lines, vocab_size)
    if key not in _TOKENIZERS:
        config = TokenizerConfig(joint=True, vocab_size=vocab_size)
        _TOKENIZERS[key] = Tokenizer.train(
            config, multi30k_lines("train", src_lang, lines), multi30k_lines("train", tgt_lang, lines)
        )
    return _TOKENIZERS[key]


def tiny_network(architecture: str = "rnnsearch", cell: str = "paper", **overrides) -> NetworkConfig:
    sizes = dict(emb_dim=16, encoder_dim=16, decoder_dim=24, attention_dim=16, maxout_units=12, init_std=0.1)
    sizes.update(overrides)
    return NetworkConfig(architecture=architecture, cell=cell, **sizes)


def tiny_checkpoint(
    directory: str | Path,
    *,
    architecture: str = "rnnsearch",
    cell: str = "paper",
    seed: int = 0,
    src_lang: str = "en",
    tgt_lang: str = "fr",
    **network_overrides,
) -> Path:
    """A checkpoint of a small random model (with its SentencePiece model) that `nmt.Translator.load` reads."""
    tokenizer = tiny_tokenizer(src_lang, tgt_lang)
    network = tiny_network(architecture, cell, **network_overrides)
    torch.manual_seed(seed)
    model = build_model(
        network, src_vocab_size=tokenizer.src_vocab_size, tgt_vocab_size=tokenizer.tgt_vocab_size, pad_id=PAD
    )
    path = Path(directory) / f"{architecture}-{cell}-{src_lang}{tgt_lang}-{seed}.ckpt"
    torch.save(
        {
            "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
            "nmt": checkpoint_metadata(network, tokenizer.src_vocab_size, tokenizer.tgt_vocab_size, tokenizer),
        },
        path,
    )
    return path
