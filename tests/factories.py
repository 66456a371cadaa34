"""Small real artefacts for tests: SentencePiece models trained on real Multi30k lines, and checkpoints of
randomly initialised models in the exact format training writes."""

from __future__ import annotations

import gzip
import itertools
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from nmt.checkpoint import checkpoint_metadata
from nmt.data.tokenizer import PAD, Tokenizer, TokenizerConfig
from nmt.model import NetworkConfig, build_model

ROOT = Path(__file__).resolve().parents[1]
MULTI30K = ROOT / "data" / "multi30k"  # English and French, shipped with the repository
# The whole real Moses files (laid out as tests/data/smt is, under smt/) when this names their directory;
# without it the tests read tests/data/smt, the first lines of the same files (tests/data/README.md), and the
# tests that need whole files skip.
FULL_DATA_VARIABLE = "NMT_TEST_SHARED_DATA"
FULL_DATA = Path(os.environ[FULL_DATA_VARIABLE]) if os.environ.get(FULL_DATA_VARIABLE) else None
SMT = (FULL_DATA or ROOT / "tests" / "data") / "smt"  # Moses phrase tables and n-best lists


def needs_whole_file(relative: str) -> Callable[[Callable], Callable]:
    """Marks a test `full_data` and skips it, with a one-line reason, unless $NMT_TEST_SHARED_DATA holds the
    file `relative` (decided at collection, before any fixture is built)."""
    if FULL_DATA is None:
        reason = f"needs the whole {relative}: set {FULL_DATA_VARIABLE} to the directory that holds it"
    elif not (FULL_DATA / relative).is_file():
        reason = f"needs the whole {relative}: not found under {FULL_DATA_VARIABLE}={FULL_DATA}"
    else:
        reason = None

    def mark(test: Callable) -> Callable:
        test = pytest.mark.full_data(test)
        return pytest.mark.skip(reason=reason)(test) if reason else test

    return mark


def argv(*parts: str | os.PathLike | int) -> list[str]:
    """A command line: each string split at its spaces, each path or number one argument, as in
    ``argv("score --checkpoint", checkpoint, "--phrase-table", table, "--log --digits", 12)``."""
    return [word for part in parts for word in (part.split() if isinstance(part, str) else [str(part)])]


def multi30k_file(split: str, lang: str) -> Path:
    """A Multi30k file: the repository's copy for English and French; for German, the first 3,000 training
    lines in tests/data (what tiny_tokenizer reads)."""
    return (MULTI30K if lang in ("en", "fr") else ROOT / "tests" / "data" / "multi30k") / f"{split}.{lang}.gz"


def multi30k_lines(split: str, lang: str, n: int | None = None) -> list[str]:
    """The first n lines (all without n); fewer than n is an error, so that no test quietly reads less."""
    path = multi30k_file(split, lang)
    with gzip.open(path, "rt", encoding="utf-8") as f:
        lines = [line.rstrip("\n") for line in itertools.islice(f, n)]
    if n is not None and len(lines) < n:
        raise ValueError(f"{path} has {len(lines)} lines, fewer than the {n} asked for")
    return lines


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
    edit: Callable[[torch.nn.Module], None] | None = None,
    **network_overrides,
) -> Path:
    """A checkpoint of a small random model (with its SentencePiece model) that `nmt.Translator.load` reads.
    `edit` changes the initialised model's weights in place (without gradients) before it is saved."""
    tokenizer = tiny_tokenizer(src_lang, tgt_lang)
    network = tiny_network(architecture, cell, **network_overrides)
    torch.manual_seed(seed)
    model = build_model(
        network, src_vocab_size=tokenizer.src_vocab_size, tgt_vocab_size=tokenizer.tgt_vocab_size, pad_id=PAD
    )
    if edit is not None:
        with torch.no_grad():
            edit(model)
    path = Path(directory) / f"{architecture}-{cell}-{src_lang}{tgt_lang}-{seed}.ckpt"
    torch.save(
        {
            "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
            "nmt": checkpoint_metadata(network, tokenizer.src_vocab_size, tokenizer.tgt_vocab_size, tokenizer),
        },
        path,
    )
    return path
