"""SentencePiece tokenizer: fixed special ids, determinism, round trips, serialization."""

from __future__ import annotations

import gzip
import io
import itertools
import unicodedata
from pathlib import Path

import pytest
import sentencepiece as spm
import torch

from nmt.data.tokenizer import BOS, EOS, PAD, UNK, Tokenizer, TokenizerConfig

VOCAB = 500


def lines(directory: Path, name: str, n: int) -> list[str]:
    with gzip.open(directory / name, "rt", encoding="utf-8") as f:
        return [line.rstrip("\n") for line in itertools.islice(f, n)]


@pytest.fixture(scope="module")
def corpus(multi30k: Path) -> tuple[list[str], list[str]]:
    return lines(multi30k, "train.en.gz", 2000), lines(multi30k, "train.fr.gz", 2000)


@pytest.fixture(scope="module")
def joint(corpus: tuple[list[str], list[str]]) -> Tokenizer:
    return Tokenizer.train(TokenizerConfig(vocab_size=VOCAB), *corpus)


@pytest.fixture(scope="module")
def separate(corpus: tuple[list[str], list[str]]) -> Tokenizer:
    return Tokenizer.train(TokenizerConfig(joint=False, vocab_size=300, model_type="bpe"), *corpus)


def test_special_ids_and_vocab_sizes(joint: Tokenizer, separate: Tokenizer) -> None:
    assert joint.joint and not separate.joint
    assert (joint.src_vocab_size, joint.tgt_vocab_size) == (VOCAB, VOCAB)
    assert (separate.src_vocab_size, separate.tgt_vocab_size) == (300, 300)
    assert joint.src_pieces([PAD, UNK, BOS, EOS]) == ["<pad>", "<unk>", "<s>", "</s>"]
    assert Tokenizer.is_unk_piece(joint.tgt_pieces([UNK])[0])
    assert not Tokenizer.is_unk_piece(joint.tgt_pieces([EOS])[0])


def test_training_is_deterministic(corpus: tuple[list[str], list[str]], joint: Tokenizer) -> None:
    # From fresh iterators (generators, as the datamodule passes), not the lists the fixture used.
    again = Tokenizer.train(TokenizerConfig(vocab_size=VOCAB), iter(corpus[0]), (s for s in corpus[1]))
    assert again.to_bytes() == joint.to_bytes()


def test_separate_models_learn_each_language(separate: Tokenizer) -> None:
    protos = separate.to_bytes()
    assert protos["src"] != protos["tgt"]
    # " était" is French: one piece or few on the target side, more pieces on the English side.
    assert len(separate.encode_tgt(["était"])[0]) < len(separate.encode_src(["était"])[0]) - 1


def test_encoding_conventions(joint: Tokenizer) -> None:
    src, tgt = joint.encode_src(["A dog runs."])[0], joint.encode_tgt(["A dog runs."])[0]
    assert src == tgt + [EOS]  # joint: same pieces; the source adds EOS, the target nothing
    assert BOS not in src and EOS not in tgt
    assert joint.encode_src([""]) == [[EOS]] and joint.encode_tgt([""]) == [[]]


def test_decode_stops_at_eos_and_drops_pad_and_bos(joint: Tokenizer) -> None:
    ids = joint.encode_tgt(["Two dogs play.", "A cat."])
    rows = [[BOS, *ids[0], EOS, *ids[1], PAD], [*ids[1], PAD, PAD], [BOS, EOS], []]
    assert joint.decode_tgt(rows) == ["Two dogs play.", "A cat.", "", ""]
    assert joint.decode_tgt(torch.tensor([[BOS, *ids[1], EOS]])) == ["A cat."]
    assert joint.decode_tgt([]) == []


def test_round_trip_of_corpus_sentences(corpus: tuple[list[str], list[str]], joint: Tokenizer) -> None:
    # SentencePiece normalizes (NFKC, whitespace runs collapsed): sentences already in that form come back
    # unchanged. Lines beyond the training data, so unseen words are covered too.
    sentences = [
        s
        for s in corpus[0][-300:] + corpus[1][-300:]
        if s == " ".join(s.split()) and s == unicodedata.normalize("NFKC", s)
    ]
    assert len(sentences) > 500
    assert joint.decode_tgt(joint.encode_tgt(sentences)) == sentences
    assert joint.decode_tgt([ids[:-1] for ids in joint.encode_src(sentences)]) == sentences


def test_bytes_survive_a_weights_only_checkpoint(tmp_path: Path, joint: Tokenizer, separate: Tokenizer) -> None:
    for tokenizer in (joint, separate):
        torch.save({"tokenizer": tokenizer.to_bytes()}, tmp_path / "ckpt.pt")
        protos = torch.load(tmp_path / "ckpt.pt", weights_only=True)["tokenizer"]
        restored = Tokenizer.from_bytes(protos["src"], protos["tgt"])
        assert restored.joint == tokenizer.joint
        assert restored.to_bytes() == tokenizer.to_bytes()


def test_save_and_load(tmp_path: Path, joint: Tokenizer, separate: Tokenizer) -> None:
    joint.save(tmp_path / "j")
    separate.save(tmp_path / "s")
    assert sorted(p.name for p in (tmp_path / "j").iterdir()) == ["spm.model"]
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["spm.src.model", "spm.tgt.model"]
    assert Tokenizer.load(tmp_path / "j").to_bytes() == joint.to_bytes()
    assert Tokenizer.load(tmp_path / "s").to_bytes() == separate.to_bytes()
    with pytest.raises(FileNotFoundError):
        Tokenizer.load(tmp_path)


def test_models_with_other_special_ids_are_rejected(corpus: tuple[list[str], list[str]]) -> None:
    writer = io.BytesIO()  # SentencePiece's defaults: unk=0, bos=1, eos=2, no pad
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus[0]), model_writer=writer, vocab_size=200, minloglevel=2
    )
    with pytest.raises(ValueError, match="special ids"):
        Tokenizer.from_bytes(writer.getvalue())


@pytest.mark.parametrize(
    ("options", "complaint"),
    [
        ({"model": "m.model", "joint": False}, "joint"),
        ({"src_model": "a.model", "joint": False}, "together"),
        ({"src_model": "a.model", "tgt_model": "b.model"}, "joint=False"),
        ({"vocab_size": 4}, "vocab_size"),
        ({"character_coverage": 0.0}, "character_coverage"),
    ],
)
def test_invalid_configs(options: dict[str, object], complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        TokenizerConfig(**options)


@pytest.mark.parametrize("joint", [True, False], ids=["joint", "separate"])
def test_a_vocabulary_the_corpus_cannot_fill_names_the_largest_it_can(
    corpus: tuple[list[str], list[str]], joint: bool
) -> None:
    src, tgt = corpus[0][:500], corpus[1][:500]
    with pytest.raises(ValueError, match=r"vocab_size=5000 is more than the .* allow: at most \d+ pieces") as error:
        Tokenizer.train(TokenizerConfig(joint=joint, vocab_size=5000), src, tgt)
    largest = error.value.largest
    assert error.value.smallest is None and 100 < largest < 5000
    # The largest is what the side that failed can make; with separate models the other side may allow less.
    side = (src + tgt) if joint else src
    trained = Tokenizer.train(TokenizerConfig(joint=True, vocab_size=largest), side, [])
    assert trained.src_vocab_size == largest
    with pytest.raises(ValueError, match=r"at most \d+"):
        Tokenizer.train(TokenizerConfig(joint=True, vocab_size=largest + 1), side, [])


def test_a_vocabulary_smaller_than_the_alphabet_names_the_smallest(corpus: tuple[list[str], list[str]]) -> None:
    with pytest.raises(ValueError, match=r"vocab_size=30 is less than the .* need: at least \d+ pieces") as error:
        Tokenizer.train(TokenizerConfig(vocab_size=30), corpus[0][:500], corpus[1][:500])
    assert error.value.largest is None and error.value.smallest > 30
