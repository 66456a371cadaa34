"""The Lightning DataModule: corpora -> SentencePiece -> token ids in Arrow on disk -> token-bucket batches."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Literal

import datasets
import lightning as L
import numpy as np
import pyarrow.compute as pc
import torch
from torch.utils.data import DataLoader

from nmt.data.batch import Batch, collate
from nmt.data.corpus import Corpus, corpus_fingerprint, load_corpus
from nmt.data.encoding import cut, source_ids, target_ids
from nmt.data.sampler import TokenBucketSampler
from nmt.data.tokenizer import Tokenizer, TokenizerConfig, VocabularySizeError
from nmt.errors import InputError
from nmt.textio import file_signature, replacing

__all__ = ["TranslationDataModule"]

Split = Literal["train", "val", "test"]

DEFAULT_DATA_DIR = "data/multi30k"
DATA_DIR_ENV = "NMT_DATA_DIR"
# How to get the corpora of the shipped configs, by the name of their data directory: what the error for a
# missing corpus file says.
_CORPUS_SOURCES = {
    "multi30k": "data/fetch_multi30k.sh fetches Multi30k "
    "(its English and French ship in the repository's data/multi30k)",
    "wmt14_en_fr": "data/prepare_wmt14_en_fr.py prepares WMT'14 English-French",
}
_DEFAULT_TOKENIZER = TokenizerConfig()  # frozen, so one shared default instance is safe
# Bump when the layout or content of the cached artefacts changes, so old caches are not reused.
_CACHE_VERSION = 3
# Beside each tokenized split: its (2, N) int32 source and target lengths, what the batch sampler needs. Read
# whole (N x 8 bytes), rather than computed from the memory-mapped token ids at every start, which would touch
# every record batch of the Arrow file and bring a corpus-sized share of it into the page cache (and RSS).
_LENGTHS_FILE = "lengths.npy"


def _features(vocab_size: int) -> datasets.Features:
    """Text and token ids of a split; ids in 2 bytes when the vocabulary allows (the training reads them through
    a memory map, so their size is what a long run brings into the page cache and RSS)."""
    id_type = "uint16" if vocab_size <= np.iinfo(np.uint16).max + 1 else "int32"
    return datasets.Features(
        {
            "src": datasets.Value("string"),
            "tgt": datasets.Value("string"),
            "src_ids": datasets.List(datasets.Value(id_type)),
            "tgt_ids": datasets.List(datasets.Value(id_type)),
        }
    )


class TranslationDataModule(L.LightningDataModule):
    """Parallel corpora, tokenized once into memory-mapped Arrow files, served in token-bucket batches.

    `prepare_data` builds what is missing under ``cache_dir/<fingerprint>/`` (the tokenizer, then each
    split's token ids); the fingerprint covers the training corpus (spec, file sizes and mtimes) and the
    tokenizer config, so a changed config never reuses a stale model. `setup` only loads. Nothing holds
    the corpus in Python lists: batches are read from Arrow by index.

    Training pairs with an empty side or longer than the limits are dropped; validation and test keep
    every line (references stay complete), truncating over-long ones to the limits.

    Distributed training needs ``Trainer(use_distributed_sampler=False)``: the batch sampler shards itself.
    """

    def __init__(
        self,
        *,
        data_dir: str = DEFAULT_DATA_DIR,
        train: Corpus,
        val: Corpus,
        test: Corpus | None = None,
        tokenizer: TokenizerConfig = _DEFAULT_TOKENIZER,
        max_src_tokens: int = 80,
        max_tgt_tokens: int = 80,
        batch_tokens: int = 2000,
        batch_sentences: int | None = None,
        val_batch_tokens: int = 4000,
        seed: int = 1234,
        num_workers: int = 0,
        num_proc: int = 1,
        cache_dir: str = ".cache/nmt",
    ) -> None:
        """
        Args:
            data_dir: base directory of relative corpus paths; left at its default, $NMT_DATA_DIR replaces it.
            train: the training corpus (also what the tokenizer is trained on).
            val: the validation corpus (loss and BLEU during training).
            test: the test corpus, if any.
            tokenizer: the SentencePiece models: trained on `train`, or existing .model files.
            max_src_tokens: source pieces (EOS excluded) above which a training pair is dropped and an
                evaluation sentence truncated.
            max_tgt_tokens: the same for the target side.
            batch_tokens: padded-token budget of a training batch.
            batch_sentences: also cap training batches at this many sentences (None: no cap).
            val_batch_tokens: padded-token budget of a validation/test batch.
            seed: seed of the training batch order (epoch e shuffles with seed + e).
            num_workers: DataLoader worker processes (0: load in the training process).
            num_proc: processes for tokenizing the corpora (`Dataset.map`).
            cache_dir: where tokenizers and tokenized corpora are stored.
        """
        super().__init__()
        for name, value, low in (
            ("max_src_tokens", max_src_tokens, 1),
            ("max_tgt_tokens", max_tgt_tokens, 1),
            ("batch_tokens", batch_tokens, 1),
            ("batch_sentences", batch_sentences or 1, 1),
            ("val_batch_tokens", val_batch_tokens, 1),
            ("num_workers", num_workers, 0),
            ("num_proc", num_proc, 1),
        ):
            if value < low:
                raise ValueError(f"{name} must be >= {low}, got {value}")
        env_data_dir = os.environ.get(DATA_DIR_ENV)
        self.data_dir = env_data_dir if data_dir == DEFAULT_DATA_DIR and env_data_dir else data_dir
        self.corpora: dict[Split, Corpus] = {"train": train, "val": val} | ({"test": test} if test else {})
        self.tokenizer_config = tokenizer
        self.max_src_tokens = max_src_tokens
        self.max_tgt_tokens = max_tgt_tokens
        self.batch_tokens = batch_tokens
        self.batch_sentences = batch_sentences
        self.val_batch_tokens = val_batch_tokens
        self.seed = seed
        self.num_workers = num_workers
        self.num_proc = num_proc
        self.cache_dir = Path(cache_dir)
        self._root: Path | None = None  # cache_dir/<fingerprint>, computed on first use (it stats files)
        self._tokenizer: Tokenizer | None = None
        self._datasets: dict[Split, datasets.Dataset] = {}
        self._lengths: dict[Split, tuple[np.ndarray, np.ndarray]] = {}  # (N,) int32 src, tgt lengths

    # -- artefact locations -------------------------------------------------------------------------------

    @property
    def root(self) -> Path:
        """``cache_dir/<fingerprint>``: this training corpus + tokenizer config's artefacts."""
        if self._root is None:
            config = self.tokenizer_config
            record = {
                "version": _CACHE_VERSION,
                "train": corpus_fingerprint(self.corpora["train"], data_dir=self.data_dir),
                "tokenizer": asdict(config),
                "model_files": [file_signature(p) for p in config.model_files],
            }
            self._root = self.cache_dir / _hash(record)
        return self._root

    @property
    def tokenizer_dir(self) -> Path:
        """Where the SentencePiece model(s) live once `prepare_data` has run."""
        return self.root / "tokenizer"

    def dataset_dir(self, split: Split) -> Path:
        """Where `split`'s tokenized corpus is saved (Arrow, `Dataset.save_to_disk`)."""
        record = {
            "corpus": corpus_fingerprint(self.corpora[split], data_dir=self.data_dir),
            "max_src_tokens": self.max_src_tokens,
            "max_tgt_tokens": self.max_tgt_tokens,
        }
        return self.root / f"{split}-{_hash(record)}"

    # -- Lightning hooks ----------------------------------------------------------------------------------

    def prepare_data(self) -> None:
        """Build the missing artefacts (idempotent; Lightning runs it on one process per node)."""
        with self._missing_corpus_explained():
            if not self.tokenizer_dir.exists():
                _write_atomically(self.tokenizer_dir, self._build_tokenizer().save)
            tokenizer = Tokenizer.load(self.tokenizer_dir)
            for split in self.corpora:
                target = self.dataset_dir(split)
                if not target.exists():
                    _write_atomically(target, lambda tmp, split=split: self._encode_split(split, tokenizer, tmp))

    def setup(self, stage: str | None = None) -> None:
        """Load the tokenizer and the splits `stage` needs, memory-mapped, with their length arrays."""
        with self._missing_corpus_explained():
            self._setup(stage)

    def _setup(self, stage: str | None) -> None:
        if not self.tokenizer_dir.exists():
            raise RuntimeError(f"no tokenizer in {self.tokenizer_dir}: call prepare_data() first")
        self._tokenizer = Tokenizer.load(self.tokenizer_dir)
        splits: dict[str | None, tuple[Split, ...]] = {
            "fit": ("train", "val"),
            "validate": ("val",),
            "test": ("test",),
            "predict": (),
            None: tuple(self.corpora),
        }
        for split in splits[stage]:
            if split not in self.corpora:
                raise ValueError(f"stage {stage!r} needs a {split} corpus, and none is configured")
            if split not in self._datasets:
                dataset = datasets.load_from_disk(os.fspath(self.dataset_dir(split)))
                self._datasets[split] = dataset
                src_lengths, tgt_lengths = np.load(self.dataset_dir(split) / _LENGTHS_FILE)
                self._lengths[split] = (src_lengths, tgt_lengths)

    def train_dataloader(self) -> DataLoader[Batch]:
        sampler = self._sampler("train", max_tokens=self.batch_tokens, shuffle=True, max_sentences=self.batch_sentences)
        # Lightning calls set_epoch at each epoch start; this covers the first one after a resume.
        sampler.set_epoch(self.trainer.current_epoch if self.trainer is not None else 0)
        return _ResumableLoader(
            _PairReader(self._dataset("train")),
            batch_sampler=sampler,
            collate_fn=_collate_fetched,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            generator=self._loader_generator(),
        )

    def val_dataloader(self) -> DataLoader[Batch]:
        return self._loader("val", self._evaluation_sampler("val"))

    def test_dataloader(self) -> DataLoader[Batch]:
        return self._loader("test", self._evaluation_sampler("test"))

    # -- what the LightningModule needs -------------------------------------------------------------------

    @property
    def tokenizer(self) -> Tokenizer:
        """The source/target SentencePiece models (after `setup`; before it, AttributeError)."""
        if self._tokenizer is None:
            # AttributeError, so `getattr(datamodule, "tokenizer", None)` works before setup.
            raise AttributeError("the tokenizer is loaded by setup(); call prepare_data() and setup() first")
        return self._tokenizer

    @property
    def src_vocab_size(self) -> int:
        """Source vocabulary size, known before `prepare_data` (LightningCLI links it to the model)."""
        return self._vocab_sizes()[0]

    @property
    def tgt_vocab_size(self) -> int:
        """Target vocabulary size, known before `prepare_data`."""
        return self._vocab_sizes()[1]

    def references(self, split: Split) -> list[str]:
        """The raw target sentences of an evaluation split in corpus order (index them with `Batch.indices`).
        The training split keeps token ids only."""
        if split == "train":
            raise ValueError("the training split is stored as token ids only; references exist for val and test")
        return list(self._dataset(split)["tgt"])

    # -- internals ----------------------------------------------------------------------------------------

    @contextmanager
    def _missing_corpus_explained(self) -> Iterator[None]:
        """A corpus file that does not exist: the one-line error also says where it was looked for and how to
        get the corpus (the Multi30k configs' data/multi30k is relative to the working directory)."""
        try:
            yield
        except InputError as error:
            corpora = {os.fspath(p) for c in self.corpora.values() for p in c.local_files(data_dir=self.data_dir)}
            if not isinstance(error.__cause__, FileNotFoundError) or error.path not in corpora:
                raise
            where = f"data_dir {self.data_dir}"
            if not Path(self.data_dir).is_absolute():
                where += f", relative to the working directory {os.getcwd()}"
            source = _CORPUS_SOURCES.get(Path(self.data_dir).name)
            hint = f"{source}, or set" if source else "set"
            message = f"{error.message} ({where}); {hint} --data.data_dir or {DATA_DIR_ENV} to the corpus directory"
            raise InputError(path=error.path, line=error.line, message=message) from None

    def _vocab_sizes(self) -> tuple[int, int]:
        # The model is built before prepare_data runs, so the sizes cannot come from a trained tokenizer:
        # a trained model has exactly `vocab_size` pieces (Tokenizer.train checks), given ones are read.
        if self._tokenizer is not None:
            return self._tokenizer.src_vocab_size, self._tokenizer.tgt_vocab_size
        config = self.tokenizer_config
        if not config.model_files:
            return config.vocab_size, config.vocab_size
        given = Tokenizer.from_files(*config.model_files)
        return given.src_vocab_size, given.tgt_vocab_size

    def _build_tokenizer(self) -> Tokenizer:
        config = self.tokenizer_config
        if config.model is not None:
            return Tokenizer.from_files(config.model)
        if config.src_model is not None and config.tgt_model is not None:
            return Tokenizer.from_files(config.src_model, config.tgt_model)
        raw = self._load_raw("train")
        try:
            return Tokenizer.train(config, _texts(raw, "src"), _texts(raw, "tgt"))
        except VocabularySizeError as e:  # one line naming the option and the value that works
            corpus = "the training corpus" if e.side == "joint" else f"the {e.side} side of the training corpus"
            option = "data.tokenizer.vocab_size"
            if e.largest is not None:
                message = f"{e.vocab_size} is more than {corpus} allows: at most {e.largest} pieces; set {option} to "
                message += f"{e.largest} or less"
            else:
                coverage = f"data.tokenizer.character_coverage={config.character_coverage}"
                message = f"{e.vocab_size} is less than {corpus} needs: at least {e.smallest} pieces, one for each "
                message += f"character it keeps ({coverage}); raise it or lower data.tokenizer.character_coverage"
            raise InputError(path=option, message=message) from None

    def _load_raw(self, split: Split) -> datasets.Dataset:
        return load_corpus(self.corpora[split], data_dir=self.data_dir, cache_dir=self.cache_dir / "corpora")

    def _encode_split(self, split: Split, tokenizer: Tokenizer, out_dir: Path) -> None:
        """Tokenize `split` (filtering training pairs, truncating evaluation ones) and save it in `out_dir`."""
        raw = self._load_raw(split)
        work = out_dir.with_name(out_dir.name + ".work")  # map/filter cache files, deleted afterwards
        work.mkdir(parents=True, exist_ok=True)
        try:
            limits = None if split == "train" else (self.max_src_tokens, self.max_tgt_tokens)
            encoded = raw.map(
                _EncodePairs(tokenizer, truncate_to=limits),
                batched=True,
                num_proc=self.num_proc,
                features=_features(max(tokenizer.src_vocab_size, tokenizer.tgt_vocab_size)),
                cache_file_name=os.fspath(work / "encoded.arrow"),
                new_fingerprint=_hash({"encode": out_dir.name}),
                desc=f"Tokenizing {split}",
            )
            if split == "train":
                encoded = encoded.filter(
                    _within_limits,
                    batched=True,
                    input_columns=["src_ids", "tgt_ids"],
                    fn_kwargs={"max_src": self.max_src_tokens, "max_tgt": self.max_tgt_tokens},
                    num_proc=self.num_proc,
                    cache_file_name=os.fspath(work / "kept.arrow"),
                    new_fingerprint=_hash({"filter": out_dir.name}),
                    desc="Filtering train by length",
                )
                # Training reads only ids; without the text the mapped file is ids and offsets alone.
                encoded = encoded.remove_columns(["src", "tgt"])
            encoded.save_to_disk(os.fspath(out_dir))
            lengths = np.stack([_list_lengths(encoded, "src_ids"), _list_lengths(encoded, "tgt_ids")])  # (2, N)
            np.save(out_dir / _LENGTHS_FILE, lengths)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _dataset(self, split: Split) -> datasets.Dataset:
        if split not in self._datasets:
            raise RuntimeError(f"the {split} split is not loaded; call setup() for a stage that uses it")
        return self._datasets[split]

    def _evaluation_sampler(self, split: Split) -> TokenBucketSampler:
        # Sentences, not batches, dealt out to the ranks: each is decoded exactly once (BLEU, loss).
        return self._sampler(split, max_tokens=self.val_batch_tokens, shuffle=False, shard="sentences")

    def _sampler(
        self,
        split: Split,
        *,
        max_tokens: int,
        shuffle: bool,
        max_sentences: int | None = None,
        shard: Literal["batches", "sentences"] = "batches",
    ) -> TokenBucketSampler:
        self._dataset(split)
        src_lengths, tgt_lengths = self._lengths[split]
        trainer = self.trainer  # when attached, its world size and rank (else torch.distributed's)
        return TokenBucketSampler(
            src_lengths=src_lengths,
            tgt_lengths=tgt_lengths,
            max_tokens=max_tokens,
            shuffle=shuffle,
            max_sentences=max_sentences,
            seed=self.seed,
            num_replicas=trainer.world_size if trainer is not None else None,
            rank=trainer.global_rank if trainer is not None else None,
            shard=shard,
        )

    def _loader(self, split: Split, sampler: TokenBucketSampler) -> DataLoader[Batch]:
        return DataLoader(
            _PairReader(self._dataset(split)),
            batch_sampler=sampler,
            collate_fn=_collate_fetched,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            generator=self._loader_generator(),
        )

    def _loader_generator(self) -> torch.Generator:
        # Each new DataLoader iterator draws a worker seed; from the global RNG, that draw would shift the
        # dropout masks depending on when loaders start, and a resumed run would no longer retrace the
        # uninterrupted one. Our batches need no randomness of the loader's.
        return torch.Generator().manual_seed(self.seed)


class _ResumableLoader(DataLoader[Batch]):
    """The training DataLoader, resumable mid-epoch: Lightning saves its `state_dict` in checkpoints.

    The state counts the batches this loader has handed out in the epoch, so batches that workers had
    prefetched but not delivered are not lost; Lightning fetches no batch ahead from a loader with a length,
    so a resumed run goes on with exactly the next batch (tests/test_resume.py).
    """

    batch_sampler: TokenBucketSampler

    def __iter__(self) -> Iterator[Batch]:
        sampler = self.batch_sampler
        self._position = {"epoch": sampler.epoch, "batches_yielded": sampler.pending_skip}
        for batch in super().__iter__():
            self._position["batches_yielded"] += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        """The epoch and the number of its batches delivered so far (skipped ones included)."""
        return dict(getattr(self, "_position", None) or self.batch_sampler.state_dict())

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.batch_sampler.load_state_dict(state)


class _EncodePairs:
    """`Dataset.map` function: adds ``src_ids`` (ending in EOS) and ``tgt_ids``; picklable for num_proc > 1."""

    def __init__(self, tokenizer: Tokenizer, *, truncate_to: tuple[int, int] | None) -> None:
        self.tokenizer = tokenizer
        self.truncate_to = truncate_to  # (max source pieces, max target pieces), or None to keep all

    def __call__(self, batch: dict[str, list[str | None]]) -> dict[str, list[object]]:
        src = [text or "" for text in batch["src"]]  # `datasets` corpora may hold nulls
        tgt = [text or "" for text in batch["tgt"]]
        src_ids, tgt_ids = source_ids(self.tokenizer, src), target_ids(self.tokenizer, tgt)
        if self.truncate_to is not None:
            max_src, max_tgt = self.truncate_to
            src_ids = [cut(ids, max_src) for ids in src_ids]
            tgt_ids = [ids[:max_tgt] for ids in tgt_ids]
        return {"src": src, "tgt": tgt, "src_ids": src_ids, "tgt_ids": tgt_ids}


def _within_limits(src_ids: list[list[int]], tgt_ids: list[list[int]], *, max_src: int, max_tgt: int) -> list[bool]:
    """Training filter: 1..max_src source pieces (plus the EOS) and 1..max_tgt target pieces."""
    return [1 <= len(s) - 1 <= max_src and 1 <= len(t) <= max_tgt for s, t in zip(src_ids, tgt_ids, strict=True)]


class _PairReader(torch.utils.data.Dataset[tuple[list[tuple[list[int], list[int]]], list[int]]]):
    """A whole batch per read: the DataLoader hands `__getitems__` the sampler's list of indices."""

    def __init__(self, dataset: datasets.Dataset) -> None:
        self._ids = dataset.select_columns(["src_ids", "tgt_ids"])

    def __len__(self) -> int:
        return len(self._ids)

    def __getitem__(self, index: int) -> tuple[list[tuple[list[int], list[int]]], list[int]]:
        return self.__getitems__([index])

    def __getitems__(self, indices: list[int]) -> tuple[list[tuple[list[int], list[int]]], list[int]]:
        columns = self._ids[indices]  # one Arrow take, not one read per row
        return list(zip(columns["src_ids"], columns["tgt_ids"], strict=True)), indices


def _collate_fetched(fetched: tuple[list[tuple[list[int], list[int]]], list[int]]) -> Batch:
    rows, indices = fetched
    return collate(rows, indices)


def _texts(dataset: datasets.Dataset, column: str) -> Iterator[str]:
    """Yield one text column in chunks, so tokenizer training never holds the corpus in a Python list."""
    for chunk in dataset.select_columns([column]).iter(batch_size=10_000):
        yield from (text or "" for text in chunk[column])


def _list_lengths(dataset: datasets.Dataset, column: str) -> np.ndarray:
    """(N,) int32 lengths of a list column, computed in Arrow chunk by chunk."""
    out = np.empty(len(dataset), dtype=np.int32)
    start = 0
    for table in dataset.select_columns([column]).with_format("arrow").iter(batch_size=100_000):
        lengths = pc.list_value_length(table.column(column)).to_numpy(zero_copy_only=False)
        out[start : start + len(lengths)] = lengths
        start += len(lengths)
    return out


def _write_atomically(target: Path, write: Callable[[Path], None]) -> None:
    """Build a cache directory with ``write(tmp_dir)`` through the one atomic writer, so a crash never leaves a
    half-built artefact. Two processes may build the same one at once: the first rename wins, the other's is
    dropped."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with replacing(target, directory=True) as tmp:
            write(tmp)
    except InputError:
        if not target.exists():  # not another process winning the race: a real failure
            raise


def _hash(record: object) -> str:
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()[:16]
