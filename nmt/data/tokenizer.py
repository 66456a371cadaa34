"""SentencePiece subword models for the source and target side, with the special ids fixed for all of nmt.

Every model nmt trains or accepts uses PAD=0, UNK=1, BOS=2, EOS=3, so padding, the decoder's start
symbol and the stopping rule of search never depend on which tokenizer is loaded.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Literal

import sentencepiece as spm

__all__ = ["BOS", "EOS", "EOS_PIECE", "PAD", "UNK", "UNK_PIECE", "Tokenizer", "TokenizerConfig", "VocabularySizeError"]

PAD, UNK, BOS, EOS = 0, 1, 2, 3
UNK_PIECE = "<unk>"
EOS_PIECE = "</s>"  # also the label of EOS in attention plots

_SPECIAL_IDS = {"pad_id": PAD, "unk_id": UNK, "bos_id": BOS, "eos_id": EOS}
_SPECIAL_PIECES = {"pad_piece": "<pad>", "unk_piece": UNK_PIECE, "bos_piece": "<s>", "eos_piece": EOS_PIECE}
# SentencePiece's learned vocabulary depends on its thread count (observed with 0.2.x: 1, 2, 4, 8, 16
# and 32 threads give 6 different unigram models on the same input). Fixing it makes a model a function
# of its input and options only, whatever machine trains it.
_TRAIN_THREADS = 16
_JOINT_FILE, _SRC_FILE, _TGT_FILE = "spm.model", "spm.src.model", "spm.tgt.model"
# SentencePiece's refusals of a vocab_size (a RuntimeError each, the numbers in its text):
# "Vocabulary size too high (30000). Please set it to a value <= 7931."
# "Vocabulary size is smaller than required_chars. 30 vs 69. Increase vocab_size or decrease character_coverage …"
_TOO_HIGH = re.compile(r"Vocabulary size too high \((\d+)\)\. Please set it to a value <= (\d+)")
_TOO_LOW = re.compile(r"Vocabulary size is smaller than required_chars\. (\d+) vs (\d+)")


class VocabularySizeError(ValueError):
    """`vocab_size` is more pieces than SentencePiece can make of the training sentences (`largest` is the most it
    can), or fewer than their characters need (`smallest` is the least). `side`: "joint", "source" or "target"."""

    def __init__(self, *, vocab_size: int, side: str, largest: int | None = None, smallest: int | None = None) -> None:
        self.vocab_size, self.side, self.largest, self.smallest = vocab_size, side, largest, smallest
        sentences = "source and target" if side == "joint" else side
        if largest is not None:
            what = f"more than the {sentences} sentences allow: at most {largest} pieces"
        else:
            what = f"less than the {sentences} sentences need: at least {smallest} pieces (one for each character kept)"
        super().__init__(f"vocab_size={vocab_size} is {what}")


@dataclass(frozen=True)
class TokenizerConfig:
    """How to get the subword models: train them on the training corpus, or load existing ones.

    Args:
        model: an existing joint SentencePiece .model to use instead of training one (needs joint=True).
        src_model: an existing source-side .model (with tgt_model, needs joint=False).
        tgt_model: an existing target-side .model (with src_model, needs joint=False).
        joint: one model shared by both languages (True) or one model per language (False).
        vocab_size: pieces per trained model, the 4 special symbols included.
        model_type: SentencePiece's segmentation algorithm, "unigram" or "bpe".
        character_coverage: share of the training characters the model covers; rarer ones become <unk>.
        input_sentence_size: train each model on a sample of this many sentences (0: all of them).
        seed: seed of SentencePiece's sentence sampling (used when input_sentence_size > 0).
    """

    model: str | None = None
    src_model: str | None = None
    tgt_model: str | None = None
    joint: bool = True
    vocab_size: int = 8000
    model_type: Literal["unigram", "bpe"] = "unigram"
    character_coverage: float = 1.0
    input_sentence_size: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.model is not None and not self.joint:
            raise ValueError("TokenizerConfig: `model` is a joint model; use src_model/tgt_model with joint=False")
        if (self.src_model is None) != (self.tgt_model is None):
            raise ValueError("TokenizerConfig: src_model and tgt_model go together")
        if self.src_model is not None and self.joint:
            raise ValueError(
                "TokenizerConfig: src_model/tgt_model are separate models; set joint=False (or give one joint `model`)"
            )
        if self.vocab_size <= len(_SPECIAL_IDS):
            raise ValueError(
                f"TokenizerConfig: vocab_size={self.vocab_size} leaves no room beside the 4 special symbols"
            )
        if not 0.0 < self.character_coverage <= 1.0:
            raise ValueError(f"TokenizerConfig: character_coverage={self.character_coverage} is not in (0, 1]")
        if self.input_sentence_size < 0:
            raise ValueError(f"TokenizerConfig: input_sentence_size={self.input_sentence_size} is negative")

    @property
    def model_files(self) -> list[str]:
        """The existing model files this config names (empty when the models are to be trained)."""
        if self.model is not None:
            return [self.model]
        return [self.src_model, self.tgt_model] if self.src_model and self.tgt_model else []


class Tokenizer:
    """The source and target SentencePiece models (one shared object when joint).

    Encoded sources end with EOS (the encoder reads it as the end of the sentence); encoded targets carry
    no BOS/EOS, which `nmt.data.batch.collate` adds when it builds the shifted decoder input and output.
    """

    def __init__(self, *, src: spm.SentencePieceProcessor, tgt: spm.SentencePieceProcessor) -> None:
        for side, model in (("source", src), ("target", tgt)):
            ids = {
                "pad_id": model.pad_id(),
                "unk_id": model.unk_id(),
                "bos_id": model.bos_id(),
                "eos_id": model.eos_id(),
            }
            if ids != _SPECIAL_IDS:
                raise ValueError(
                    f"the {side} SentencePiece model has special ids {ids}; nmt needs {_SPECIAL_IDS} "
                    "(train with --pad_id=0 --unk_id=1 --bos_id=2 --eos_id=3)"
                )
        self._src = src
        self._tgt = tgt

    @classmethod
    def train(cls, config: TokenizerConfig, src_sentences: Iterable[str], tgt_sentences: Iterable[str]) -> Tokenizer:
        """Train on sentence iterators (SentencePiece cannot read .gz or Arrow itself).

        Joint: one model on the source sentences followed by the target sentences. Deterministic: the
        same sentences and config give byte-identical models.
        """
        options = {
            "model_type": config.model_type,
            "vocab_size": config.vocab_size,
            "character_coverage": config.character_coverage,
            "input_sentence_size": config.input_sentence_size,
            "shuffle_input_sentence": config.input_sentence_size > 0,
            "num_threads": _TRAIN_THREADS,
            "minloglevel": 2,  # SentencePiece logs every EM step to stderr otherwise
            **_SPECIAL_IDS,
            **_SPECIAL_PIECES,
        }

        def train_one(sentences: Iterable[str], side: str) -> bytes:
            spm.set_random_generator_seed(config.seed)
            writer = io.BytesIO()
            try:
                spm.SentencePieceTrainer.train(sentence_iterator=iter(sentences), model_writer=writer, **options)
            except RuntimeError as e:  # a vocab_size these sentences cannot give: say which, and the limit
                if high := _TOO_HIGH.search(str(e)):
                    raise VocabularySizeError(vocab_size=config.vocab_size, side=side, largest=int(high[2])) from None
                if low := _TOO_LOW.search(str(e)):
                    raise VocabularySizeError(vocab_size=config.vocab_size, side=side, smallest=int(low[2])) from None
                raise
            proto = writer.getvalue()
            size = spm.SentencePieceProcessor(model_proto=proto).vocab_size()
            if size < config.vocab_size:  # the model's vocab size is promised before training (see datamodule)
                raise VocabularySizeError(vocab_size=config.vocab_size, side=side, largest=size)
            if size != config.vocab_size:
                raise RuntimeError(f"SentencePiece made {size} pieces, not vocab_size={config.vocab_size}")
            return proto

        if config.joint:
            return cls.from_bytes(train_one(chain(src_sentences, tgt_sentences), "joint"))
        return cls.from_bytes(train_one(src_sentences, "source"), train_one(tgt_sentences, "target"))

    @classmethod
    def from_bytes(cls, src: bytes, tgt: bytes | None = None) -> Tokenizer:
        """Models from serialized protos; `tgt` None (or equal to `src`) means joint."""
        src_model = spm.SentencePieceProcessor(model_proto=src)
        tgt_model = src_model if tgt is None or tgt == src else spm.SentencePieceProcessor(model_proto=tgt)
        return cls(src=src_model, tgt=tgt_model)

    @classmethod
    def from_files(cls, src: str | os.PathLike[str], tgt: str | os.PathLike[str] | None = None) -> Tokenizer:
        """Models from .model files; `tgt` None means `src` is a joint model."""
        return cls.from_bytes(Path(src).read_bytes(), None if tgt is None else Path(tgt).read_bytes())

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> Tokenizer:
        """Load what `save` wrote: ``spm.model`` (joint) or ``spm.src.model`` + ``spm.tgt.model``."""
        directory = Path(directory)
        if (directory / _JOINT_FILE).exists():
            return cls.from_files(directory / _JOINT_FILE)
        if (directory / _SRC_FILE).exists() and (directory / _TGT_FILE).exists():
            return cls.from_files(directory / _SRC_FILE, directory / _TGT_FILE)
        raise FileNotFoundError(f"no {_JOINT_FILE}, nor {_SRC_FILE} + {_TGT_FILE}, in {directory}")

    def save(self, directory: str | os.PathLike[str]) -> None:
        """Write the model(s) into `directory` (created if missing)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        protos = self.to_bytes()
        if self.joint:
            (directory / _JOINT_FILE).write_bytes(protos["src"])
        else:
            (directory / _SRC_FILE).write_bytes(protos["src"])
            (directory / _TGT_FILE).write_bytes(protos["tgt"])

    def to_bytes(self) -> dict[str, bytes]:
        """``{"src": proto, "tgt": proto}``: plain data a checkpoint can hold (`torch.load(weights_only=True)`).

        When joint, both keys hold the same bytes object, which pickle stores once.
        """
        src = self._src.serialized_model_proto()
        return {"src": src, "tgt": src if self.joint else self._tgt.serialized_model_proto()}

    @property
    def joint(self) -> bool:
        return self._src is self._tgt

    @property
    def src_vocab_size(self) -> int:
        return self._src.vocab_size()

    @property
    def tgt_vocab_size(self) -> int:
        return self._tgt.vocab_size()

    def encode_src(self, texts: Sequence[str]) -> list[list[int]]:
        """Piece ids of each source sentence, followed by EOS."""
        return _encode(self._src, texts, add_eos=True)

    def encode_tgt(self, texts: Sequence[str]) -> list[list[int]]:
        """Piece ids of each target sentence, without BOS/EOS."""
        return _encode(self._tgt, texts, add_eos=False)

    def decode_tgt(self, ids: Sequence[Sequence[int]]) -> list[str]:
        """Detokenized target sentences; each row stops at its first EOS, PAD and BOS are dropped."""
        rows = []
        for row in ids:
            row = [int(i) for i in row]
            if EOS in row:
                row = row[: row.index(EOS)]
            rows.append([i for i in row if i != PAD and i != BOS])
        # one row at a time: SentencePiece's batch decoding starts threads per call, which costs more than a few short
        # rows take one by one (docs/benchmarks.md), and translate decodes a sentence's n best at a time
        return [self._tgt.decode(row) for row in rows]

    def decode_src(self, ids: Sequence[int]) -> str:
        """The source sentence of source ids (EOS, if there, dropped): SentencePiece's detokenisation, byte-fallback
        pieces joined back into their characters."""
        return self._src.decode([int(i) for i in ids if i != EOS])

    def src_pieces(self, ids: Sequence[int]) -> list[str]:
        """The pieces of source ids, e.g. to label an attention plot ("</s>" for EOS)."""
        return [self._src.id_to_piece(int(i)) for i in ids]

    def tgt_pieces(self, ids: Sequence[int]) -> list[str]:
        """The pieces of target ids ("<s>"/"</s>" for BOS/EOS)."""
        return [self._tgt.id_to_piece(int(i)) for i in ids]

    @staticmethod
    def is_unk_piece(piece: str) -> bool:
        """Whether a piece from `src_pieces`/`tgt_pieces` is the unknown symbol."""
        return piece == UNK_PIECE


SMALL_BATCH = 32
"""Up to this many texts are encoded one by one: SentencePiece's batch call starts threads each time, which costs
more than a short sentence alone (docs/benchmarks.md) and pays only for many texts (a corpus, a phrase table)."""


def _encode(model: spm.SentencePieceProcessor, texts: Sequence[str], *, add_eos: bool) -> list[list[int]]:
    if len(texts) <= SMALL_BATCH:
        return [model.encode(text, out_type=int, add_eos=add_eos) for text in texts]
    return model.encode(list(texts), out_type=int, add_eos=add_eos)
