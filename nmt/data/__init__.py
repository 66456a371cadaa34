"""Data pipeline: parallel corpora, SentencePiece tokenizers, token-bucket batches, the Lightning DataModule.

Names are imported lazily, so `from nmt.data.tokenizer import ...` (inference) does not pay for importing
`datasets` and Lightning.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nmt.data.batch import Batch, collate
    from nmt.data.corpus import Corpus, load_corpus
    from nmt.data.datamodule import TranslationDataModule
    from nmt.data.sampler import TokenBucketSampler
    from nmt.data.tokenizer import BOS, EOS, PAD, UNK, Tokenizer, TokenizerConfig

_HOMES = {
    "Batch": "batch",
    "collate": "batch",
    "Corpus": "corpus",
    "load_corpus": "corpus",
    "TranslationDataModule": "datamodule",
    "TokenBucketSampler": "sampler",
    "BOS": "tokenizer",
    "EOS": "tokenizer",
    "PAD": "tokenizer",
    "UNK": "tokenizer",
    "Tokenizer": "tokenizer",
    "TokenizerConfig": "tokenizer",
}
__all__ = [
    "BOS",
    "EOS",
    "PAD",
    "UNK",
    "Batch",
    "Corpus",
    "TokenBucketSampler",
    "Tokenizer",
    "TokenizerConfig",
    "TranslationDataModule",
    "collate",
    "load_corpus",
]


def __getattr__(name: str) -> object:
    if name not in _HOMES:
        raise AttributeError(f"module 'nmt.data' has no attribute {name!r}")
    return getattr(importlib.import_module(f"nmt.data.{_HOMES[name]}"), name)
