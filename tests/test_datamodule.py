"""The DataModule end to end on the first lines of real Multi30k En-Fr, plus the collate function by hand."""

from __future__ import annotations

import gzip
import itertools
import json
import os
from pathlib import Path

import pytest
import torch
from lightning.fabric.utilities.data import _set_sampler_epoch
from lightning.fabric.utilities.types import _Stateful

from nmt.data import Batch, Corpus, TokenizerConfig, TranslationDataModule, collate
from nmt.data.tokenizer import BOS, EOS, PAD
from nmt.errors import InputError

TRAIN_LINES, VAL_LINES, VOCAB = 2000, 150, 500


def copy_head(source: Path, target: Path, n: int) -> None:
    with gzip.open(source, "rb") as f, gzip.open(target, "wb") as g:
        g.writelines(itertools.islice(f, n))


@pytest.fixture(scope="module")
def data_dir(multi30k: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Trimmed gzip copies of Multi30k en/fr train and val."""
    directory = tmp_path_factory.mktemp("multi30k")
    for lang in ("en", "fr"):
        copy_head(multi30k / f"train.{lang}.gz", directory / f"train.{lang}.gz", TRAIN_LINES)
        copy_head(multi30k / f"val.{lang}.gz", directory / f"val.{lang}.gz", VAL_LINES)
    return directory


def make(data_dir: Path, cache_dir: Path, **overrides: object) -> TranslationDataModule:
    options: dict[str, object] = {
        "data_dir": str(data_dir),
        "train": Corpus(src="train.en.gz", tgt="train.fr.gz"),
        "val": Corpus(src="val.en.gz", tgt="val.fr.gz"),
        "tokenizer": TokenizerConfig(vocab_size=VOCAB),
        "max_src_tokens": 40,
        "max_tgt_tokens": 40,
        "batch_tokens": 600,
        "val_batch_tokens": 900,
        "cache_dir": str(cache_dir),
    }
    return TranslationDataModule(**(options | overrides))


@pytest.fixture(scope="module")
def prepared(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> TranslationDataModule:
    datamodule = make(data_dir, tmp_path_factory.mktemp("cache"))
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule


def test_batches_respect_the_budget_and_shift_the_target(prepared: TranslationDataModule) -> None:
    stored = prepared._dataset("train")
    seen = 0
    for batch in prepared.train_dataloader():
        assert isinstance(batch, Batch)
        assert batch.src.dtype == batch.tgt_in.dtype == torch.long
        assert len(batch.src) * max(batch.src.shape[1], batch.tgt_in.shape[1]) <= 600
        assert batch.tgt_in.shape == batch.tgt_out.shape
        assert (batch.tgt_in[:, 0] == BOS).all()
        # tgt_out is tgt_in shifted left by one, with EOS where tgt_in has its first PAD (or at the end).
        n = (batch.tgt_out != PAD).sum(1)
        for row in range(len(batch.src)):
            assert batch.tgt_out[row, : n[row] - 1].tolist() == batch.tgt_in[row, 1 : n[row]].tolist()
            assert batch.tgt_out[row, n[row] - 1] == EOS
            assert batch.src[row, batch.src_lengths[row] - 1] == EOS
        assert batch.num_tgt_tokens == int(n.sum())
        for row in (0, len(batch.src) - 1):  # each row is the stored pair its index names
            pair = stored[int(batch.indices[row])]
            assert batch.tgt_out[row, : n[row] - 1].tolist() == pair["tgt_ids"]
            assert batch.src[row, : batch.src_lengths[row]].tolist() == pair["src_ids"]
        seen += len(batch.src)
    assert seen == len(stored)


def test_training_pairs_are_filtered_and_evaluation_lines_all_kept(prepared: TranslationDataModule) -> None:
    src_lengths, tgt_lengths = prepared._lengths["train"]
    assert 1500 < len(src_lengths) < TRAIN_LINES  # some over-long pairs dropped, most kept
    assert src_lengths.min() >= 2 and src_lengths.max() <= 40 + 1  # 1..40 pieces + EOS
    assert tgt_lengths.min() >= 1 and tgt_lengths.max() <= 40
    assert src_lengths.dtype.name == "int32"
    with gzip.open(Path(prepared.data_dir) / "val.fr.gz", "rt", encoding="utf-8") as f:
        assert prepared.references("val") == [line.rstrip("\n") for line in f]
    indices = [i for batch in prepared.val_dataloader() for i in batch.indices.tolist()]
    assert sorted(indices) == list(range(VAL_LINES))


def test_val_batches_are_length_sorted_and_not_shuffled(prepared: TranslationDataModule) -> None:
    first = [b.indices.tolist() for b in prepared.val_dataloader()]
    assert first == [b.indices.tolist() for b in prepared.val_dataloader()]
    widths = [max(b.src.shape[1], b.tgt_in.shape[1]) for b in prepared.val_dataloader()]
    assert widths == sorted(widths)


def test_prepare_data_again_is_a_no_op(prepared: TranslationDataModule, data_dir: Path) -> None:
    model_file = prepared.tokenizer_dir / "spm.model"
    before = {p: p.stat().st_mtime_ns for p in prepared.root.rglob("*")}
    again = make(data_dir, prepared.cache_dir)
    assert again.root == prepared.root
    again.prepare_data()
    assert {p: p.stat().st_mtime_ns for p in prepared.root.rglob("*")} == before
    assert model_file.exists()
    # A different tokenizer config gets its own directory: nothing stale is reused.
    other = make(data_dir, prepared.cache_dir, tokenizer=TokenizerConfig(vocab_size=400))
    assert other.root != prepared.root
    # Length limits only change the tokenized training split, not the tokenizer.
    limited = make(data_dir, prepared.cache_dir, max_src_tokens=20)
    assert limited.root == prepared.root and limited.dataset_dir("train") != prepared.dataset_dir("train")


def test_vocab_sizes_are_known_before_prepare_data(prepared: TranslationDataModule, data_dir: Path) -> None:
    fresh = make(data_dir, prepared.cache_dir)
    assert (fresh.src_vocab_size, fresh.tgt_vocab_size) == (VOCAB, VOCAB)
    assert (prepared.tokenizer.src_vocab_size, prepared.tokenizer.tgt_vocab_size) == (VOCAB, VOCAB)
    with pytest.raises(AttributeError):
        _ = fresh.tokenizer


def test_tokenizer_round_trips_normal_sentences(prepared: TranslationDataModule) -> None:
    sentences = ["A man in a blue shirt is standing on a ladder.", "Deux chiens jouent dans la neige."]
    tokenizer = prepared.tokenizer
    assert tokenizer.decode_tgt(tokenizer.encode_tgt(sentences)) == sentences


def test_the_train_sampler_follows_lightnings_epoch(prepared: TranslationDataModule) -> None:
    loader = prepared.train_dataloader()
    first = [b.indices.tolist() for b in loader]
    _set_sampler_epoch(loader, 1)
    assert [b.indices.tolist() for b in loader] != first


def test_the_train_loader_resumes_mid_epoch(prepared: TranslationDataModule) -> None:
    loader = prepared.train_dataloader()
    assert isinstance(loader, _Stateful)  # so Lightning stores its state in checkpoints
    _set_sampler_epoch(loader, 2)
    full = [b.indices.tolist() for b in loader]
    partial = iter(loader)
    seen = [next(partial).indices.tolist() for _ in range(3)]
    state = loader.state_dict()
    assert state == {"epoch": 2, "batches_yielded": 3}

    resumed = prepared.train_dataloader()  # as after a restart: a new loader, then Lightning's restore calls
    resumed.load_state_dict(state)
    _set_sampler_epoch(resumed, 2)
    assert len(resumed) == len(full)  # the whole epoch's: Lightning counts on from the restored position
    assert seen + [b.indices.tolist() for b in resumed] == full
    assert resumed.state_dict() == {"epoch": 2, "batches_yielded": len(full)}


def test_existing_model_file_and_data_dir_from_the_environment(
    prepared: TranslationDataModule, data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Set only while the module is built (where the variable is read): datasets' map(num_proc=…) rebinds
    # os.environ to a copy, and monkeypatch would then unset the variable in the old mapping only, leaking it
    # into every later test's subprocesses.
    with monkeypatch.context() as patch:
        patch.setenv("NMT_DATA_DIR", str(data_dir))
        datamodule = TranslationDataModule(  # data_dir left at its default: the variable wins
            train=Corpus(src="train.en.gz", tgt="train.fr.gz", limit=300),
            val=Corpus(src="val.en.gz", tgt="val.fr.gz"),
            tokenizer=TokenizerConfig(model=str(prepared.tokenizer_dir / "spm.model")),
            cache_dir=str(tmp_path),
        )
    assert "NMT_DATA_DIR" not in os.environ
    assert datamodule.data_dir == str(data_dir)
    assert datamodule.src_vocab_size == VOCAB
    datamodule.prepare_data()
    datamodule.setup("validate")
    assert datamodule.tokenizer.to_bytes() == prepared.tokenizer.to_bytes()
    assert len(datamodule.references("val")) == VAL_LINES


def test_tsv_and_json_corpora(prepared: TranslationDataModule, tmp_path: Path) -> None:
    tgt = prepared.references("val")
    src = [" ".join(reversed(t.split())) for t in tgt]  # a stand-in source language: any text will do
    (tmp_path / "train.tsv").write_text("".join(f"{s}\t{t}\n" for s, t in zip(src, tgt, strict=True)), "utf-8")
    records = [{"translation": {"en": s, "fr": t}} for s, t in zip(src, tgt, strict=True)]
    (tmp_path / "val.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), "utf-8")
    datamodule = TranslationDataModule(
        data_dir=str(tmp_path),
        train=Corpus(tsv="train.tsv"),
        val=Corpus(hf_path="json", hf_data_files="val.jsonl", src_field="translation.en", tgt_field="translation.fr"),
        tokenizer=TokenizerConfig(vocab_size=200),
        cache_dir=str(tmp_path / "cache"),
    )
    datamodule.prepare_data()
    datamodule.setup("fit")
    assert datamodule.references("val") == tgt
    assert sum(len(b.src) for b in datamodule.val_dataloader()) == len(tgt)


@pytest.mark.parametrize(
    ("content", "line", "complaint"),
    [(b"one\ntwo\n", 3, "line missing"), (b"", None, "empty"), (b"ok\n\xc3(\n", 2, "UTF-8"), (b"a\x00\n", 1, "NUL")],
)
def test_a_bad_corpus_fails_with_file_and_line(
    tmp_path: Path, content: bytes, line: int | None, complaint: str
) -> None:
    (tmp_path / "train.en.gz").write_bytes(gzip.compress(b"one\ntwo\nthree\n"))
    (tmp_path / "train.fr.gz").write_bytes(gzip.compress(content))
    (tmp_path / "val.en").write_bytes(b"x\n")
    (tmp_path / "val.fr").write_bytes(b"y\n")
    datamodule = make(tmp_path, tmp_path / "cache", val=Corpus(src="val.en", tgt="val.fr"))
    with pytest.raises(InputError) as caught:
        datamodule.prepare_data()
    assert (caught.value.path, caught.value.line) == (str(tmp_path / "train.fr.gz"), line)
    assert complaint in caught.value.message


def test_a_missing_corpus_file_names_the_data_dir_to_set(data_dir: Path, tmp_path: Path) -> None:
    """A directory of one's own: no fetch script to name, but where the file was looked for and how to point
    there (the test split is the one missing)."""
    datamodule = make(data_dir, tmp_path / "cache", test=Corpus(src="test.en.gz", tgt="test.fr.gz"))
    with pytest.raises(InputError) as caught:
        datamodule.prepare_data()
    assert str(caught.value) == (
        f"{data_dir / 'test.en.gz'}: cannot open: No such file or directory (data_dir {data_dir}); "
        "set --data.data_dir or NMT_DATA_DIR to the corpus directory"
    )


def test_collate_by_hand() -> None:
    rows = [([5, 6, EOS], [7, 8, 9]), ([4, EOS], [])]
    batch = collate(rows, [10, 3])
    assert batch.src.tolist() == [[5, 6, EOS], [4, EOS, PAD]]
    assert batch.src_lengths.tolist() == [3, 2]
    assert batch.tgt_in.tolist() == [[BOS, 7, 8, 9], [BOS, PAD, PAD, PAD]]
    assert batch.tgt_out.tolist() == [[7, 8, 9, EOS], [EOS, PAD, PAD, PAD]]
    assert batch.indices.tolist() == [10, 3]
    assert (len(batch.src), batch.num_tgt_tokens) == (2, 5)
    with pytest.raises(ValueError):
        collate([], [])


def test_training_ids_are_compact_and_without_text(prepared: TranslationDataModule) -> None:
    # What a training run maps into memory: two-byte ids (the vocabulary fits), no text columns.
    train = prepared._dataset("train")
    assert set(train.column_names) == {"src_ids", "tgt_ids"}
    assert train.features["tgt_ids"].feature.dtype == "uint16"
    with pytest.raises(ValueError, match="token ids only"):
        prepared.references("train")
    assert len(prepared.references("val")) == len(prepared._dataset("val"))
