"""Vocabulary shortlists (``nmt shortlist``, ``--shortlist``): the lexical table, the search over part of the
vocabulary, and the commands."""

from __future__ import annotations

import gzip
import io
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from nmt.cli import main
from nmt.data.lexicon import lexical_table
from nmt.data.tokenizer import EOS
from nmt.decoding import Ensemble, SearchConfig, search
from nmt.decoding.shortlist import Shortlist
from nmt.errors import InputError
from nmt.inference import Translator
from nmt.inference.batching import pad_sources
from tests.factories import multi30k_lines

LINES = multi30k_lines("test_2016_flickr", "en", 8)


@pytest.fixture(scope="module")
def checkpoints(tiny_checkpoints) -> dict[str, Path]:
    return {
        "rnnsearch": tiny_checkpoints(architecture="rnnsearch", seed=4),
        "rnnsearch2": tiny_checkpoints(architecture="rnnsearch", seed=5),
        "rnnencdec": tiny_checkpoints(architecture="rnnencdec", cell="cudnn", seed=4),
    }


CORPUS_LINES = 5000


@pytest.fixture(scope="module")
def table(checkpoints, tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("lex")
    for lang in ("en", "fr"):  # a plain-text and a gzip'd side
        lines = "\n".join(multi30k_lines("train", lang, CORPUS_LINES)) + "\n"
        if lang == "en":
            (directory / "train.en").write_text(lines, encoding="utf-8")
        else:
            with gzip.open(directory / "train.fr.gz", "wt", encoding="utf-8") as f:
                f.write(lines)
    path = directory / "lex.tsv"
    assert main(["shortlist", "--checkpoint", str(checkpoints["rnnsearch"]), "--source", str(directory / "train.en"),
                 "--target", str(directory / "train.fr.gz"), "--output", str(path), "--keep", "20"]) == 0  # fmt: skip
    return path


def test_ibm_model_1_finds_the_translation_that_co_occurrence_alone_would_miss():
    """Target 7 appears in every sentence (like "the"); 5 only with source 1. Counts alone rank 7 first for source
    1; EM explains 7 by source 0 (present everywhere) and gives source 1 its own translation."""
    src = [[0, 1], [0, 2], [0, 1], [0, 3], [0, 2]]
    tgt = [[7, 5], [7, 6], [7, 5], [7, 8], [7, 6]]
    best, counts = lexical_table(src, tgt, src_vocab=4, tgt_vocab=9, keep=3)
    assert best[1][0][0] == 5 and best[2][0][0] == 6 and best[3][0][0] == 8 and best[0][0][0] == 7
    assert all(p >= q for entries in best for (_, p), (_, q) in zip(entries, entries[1:], strict=False))  # best first
    assert counts.tolist() == [0, 0, 0, 0, 0, 2, 2, 5, 1]


def test_the_table_of_a_real_corpus_translates_words(checkpoints, table):
    rows = [line.split("\t") for line in table.read_text(encoding="utf-8").splitlines()]
    assert all(len(r) == 3 for r in rows)
    best = {}
    for s, t, _ in rows:
        best.setdefault(s, t)
    assert best["▁dog"] == "▁chien" and best["▁red"] == "▁rouge"
    assert all(len([r for r in rows if r[0] == s]) <= 20 for s in ("▁dog", "▁red", "▁a"))  # --keep
    tokenizer = Translator.load(checkpoints["rnnsearch"], device="cpu").tokenizer
    ids = tokenizer.encode_tgt(multi30k_lines("train", "fr", CORPUS_LINES))
    counts = Counter(tokenizer.tgt_pieces([i for sentence in ids for i in sentence]))
    frequent = [(t, int(c)) for s, t, c in rows if s == ""]
    assert dict(frequent) == counts
    assert [c for _, c in frequent] == sorted(counts.values(), reverse=True)


@pytest.mark.parametrize("name", ["rnnsearch", "rnnencdec", "ensemble"])
def test_a_shortlist_of_the_whole_vocabulary_changes_nothing(checkpoints, name):
    paths = [checkpoints["rnnsearch"], checkpoints["rnnsearch2"]] if name == "ensemble" else [checkpoints[name]]
    translator = Translator.load(paths[0], ensemble=paths[1:], device="cpu")
    config = SearchConfig(beam_size=4, n_best=3)
    vocab_size = translator.tokenizer.tgt_vocab_size
    everything = Shortlist([], range(vocab_size), per_word=0, first=vocab_size, vocab_size=vocab_size)
    plain = list(translator.translate(LINES, config))
    listed = list(translator.translate(LINES, config, shortlist=everything))
    for a, b in zip(plain, listed, strict=True):
        assert [(c.text, c.tokens, c.score, c.log_prob) for c in a.candidates] == [
            (c.text, c.tokens, c.score, c.log_prob) for c in b.candidates
        ]


def test_the_search_chooses_only_shortlisted_pieces_with_probabilities_renormalised_over_them(checkpoints):
    translator = Translator.load(checkpoints["rnnsearch"], device="cpu")
    ids = translator.tokenizer.encode_src(LINES)
    src, lengths = pad_sources(ids, torch.device("cpu"))
    vocab = torch.tensor(sorted({EOS, *range(40, 60)}))
    config = SearchConfig(beam_size=3, n_best=3, max_length_a=0, max_length_b=6)
    found = search(translator.model, src, lengths, config, bos_id=2, eos_id=EOS, vocab=vocab)
    allowed = set(vocab.tolist())
    for hyps in found:
        assert len(hyps) == 3
        assert all(set(h.tokens) <= allowed for h in hyps)
    # the log-probability of a hypothesis is that of the model with its softmax over the shortlist
    model, best = translator.model, found[0][0]
    enc = model.encode(src[:1], lengths[:1])
    state, y_prev, total = model.initial_state(enc), torch.tensor([2]), 0.0
    tokens = best.tokens + ([EOS] if best.complete else [])
    with torch.inference_mode():
        for token in tokens:
            out = model.step(y_prev, state, enc)
            logits = out.log_probs[0, vocab]
            total += float(logits[vocab.tolist().index(token)] - torch.logsumexp(logits, dim=0))
            state, y_prev = out.state, torch.tensor([token])
    assert best.log_prob == pytest.approx(total, abs=1e-4)
    with pytest.raises(ValueError, match="EOS"):
        search(translator.model, src, lengths, config, bos_id=2, eos_id=EOS, vocab=torch.tensor([40, 41]))


def test_a_batch_shortlist_is_the_frequent_pieces_the_translations_of_its_pieces_and_eos(checkpoints, table):
    translator = Translator.load(checkpoints["rnnsearch"], device="cpu")
    shortlist = translator.load_shortlist(str(table), first=10, per_word=3)
    src = translator.tokenizer.encode_src(["a dog", "a red car"])
    ids = set(shortlist.for_batch(src)[0].tolist())
    expected = {EOS, *shortlist.base.tolist()} | {int(t) for s in src for i in s for t in shortlist.translations[i]}
    assert ids == expected and len(shortlist.base) == 11
    assert translator.tokenizer.tgt_pieces([min(ids, key=lambda i: -1)])  # ids are target ids
    chien = translator.tokenizer.encode_tgt(["chien"])[0][-1]
    assert chien in ids and np.all(np.diff(shortlist.for_batch(src)[0].numpy()) > 0)  # sorted, distinct
    # a smaller shortlist gives a smaller output layer, and the translations use its pieces only
    found = list(translator.translate(LINES, SearchConfig(beam_size=3), shortlist=shortlist))
    allowed = set(shortlist.for_batch(translator.tokenizer.encode_src(LINES))[0].tolist())
    assert all(set(t.candidates[0].tokens) <= allowed for t in found)


@pytest.mark.parametrize(
    ("content", "line", "message"),
    [
        ("▁dog\t▁chien\t0.5\n▁dog\t▁chat\n", 2, "expected 3 tab-separated fields, found 2"),
        (
            "▁dog\t▁chien\t0.5\n▁dog\tnot-a-piece\t0.1\n",
            2,
            "target piece 'not-a-piece' is not in the model's vocabulary",
        ),
        ("nope-nope\t▁chien\t0.5\n", 1, "source piece 'nope-nope' is not in the model's vocabulary"),
        ("▁dog\t▁chien\tnan\n", 1, "'nan' is not a probability or a count"),
        ("\t▁chien\t-3\n", 1, "'-3' is not a probability or a count"),
    ],
)
def test_a_bad_table_is_one_error_naming_its_line(checkpoints, tmp_path, content, line, message):
    path = tmp_path / "lex.tsv"
    path.write_text(content, encoding="utf-8")
    translator = Translator.load(checkpoints["rnnsearch"], device="cpu")
    with pytest.raises(InputError) as caught:
        translator.load_shortlist(str(path))
    assert (caught.value.path, caught.value.line, caught.value.message) == (str(path), line, message)


def test_a_bad_table_on_stdin_is_the_same_error_naming_its_line(checkpoints, monkeypatch):
    """The fast reader takes stdin in one read; the line-by-line reader that then names the bad line must check what
    was read, not read stdin again (it would find nothing and call the table empty)."""
    content = "▁dog\t▁chien\t0.5\n▁dog\t▁chat\n"
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(content.encode("utf-8"))))
    translator = Translator.load(checkpoints["rnnsearch"], device="cpu")
    with pytest.raises(InputError) as caught:
        translator.load_shortlist("-")
    assert (caught.value.path, caught.value.line, caught.value.message) == (
        "-",
        2,
        "expected 3 tab-separated fields, found 2",
    )


def test_translate_and_evaluate_take_a_shortlist(checkpoints, table, tmp_path, capsys):
    src = tmp_path / "src.en"
    src.write_text("\n".join(LINES) + "\n", encoding="utf-8")
    ckpt = str(checkpoints["rnnsearch"])
    out = tmp_path / "out.fr"
    assert main(["translate", "--checkpoint", ckpt, "--input", str(src), "--output", str(out), "--shortlist",
                 str(table), "--no-progress"]) == 0  # fmt: skip
    assert len(out.read_text(encoding="utf-8").splitlines()) == len(LINES)
    ref = tmp_path / "ref.fr"
    ref.write_text("\n".join(multi30k_lines("test_2016_flickr", "fr", len(LINES))) + "\n", encoding="utf-8")
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", ckpt, "--src", str(src), "--ref", str(ref), "--shortlist", str(table),
                 "--no-progress"]) == 0  # fmt: skip
    assert "BLEU" in capsys.readouterr().out
    for option in (["--scores"], ["--n-best", "2"]):
        assert main(["translate", "--checkpoint", ckpt, "--input", str(src), "--shortlist", str(table), *option]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"{option[0]} asks for exact log-probabilities" in err


def test_shortlist_refuses_a_corpus_whose_sides_differ_in_length(checkpoints, tmp_path, capsys):
    src, tgt = tmp_path / "a.en", tmp_path / "a.fr"
    src.write_text("a dog\na cat\n", encoding="utf-8")
    tgt.write_text("un chien\n", encoding="utf-8")
    out = tmp_path / "lex.tsv"
    assert main(["shortlist", "--checkpoint", str(checkpoints["rnnsearch"]), "--source", str(src), "--target",
                 str(tgt), "--output", str(out)]) == 2  # fmt: skip
    assert capsys.readouterr().err == f"nmt shortlist: error: {tgt}: 2 source lines but 1 target lines\n"
    assert not out.exists()


def test_an_ensemble_restricts_every_member(checkpoints):
    members = [Translator.load(checkpoints[n], device="cpu").model for n in ("rnnsearch", "rnnsearch2")]
    ensemble = Ensemble(members).eval()
    weights = ensemble.step_weights(torch.tensor([EOS, 10, 11]))
    assert len(weights) == 2 and all(w.output.out_features == 3 for w in weights)


def test_a_sentences_translation_does_not_depend_on_its_batch_mates(checkpoints, table):
    """Each sentence chooses among its own shortlist, renormalised over it, whatever the batch's union holds (how
    many lines a batch gets depends on how far the reader thread got)."""
    translator = Translator.load(checkpoints["rnnsearch"], device="cpu")
    shortlist = translator.load_shortlist(str(table), first=5, per_word=3)
    config = SearchConfig(beam_size=3, n_best=2)
    together = list(translator.translate(LINES, config, shortlist=shortlist))
    alone = [next(iter(translator.translate([line], config, shortlist=shortlist))) for line in LINES]
    for a, b in zip(together, alone, strict=True):
        assert [c.tokens for c in a.candidates] == [c.tokens for c in b.candidates]
        assert [c.log_prob for c in a.candidates] == [c.log_prob for c in b.candidates]  # the same bits
    ids, allowed = shortlist.for_batch(translator.tokenizer.encode_src(LINES[:2]))
    own = shortlist.for_batch(translator.tokenizer.encode_src(LINES[:1]))[0]
    assert set(ids[allowed[0]].tolist()) == set(own.tolist()) and allowed.shape == (2, len(ids))


def test_a_shortlist_of_eos_alone_is_refused_in_one_line(checkpoints, table, tmp_path, capsys):
    src = tmp_path / "src.en"
    src.write_text("a dog\n", encoding="utf-8")
    argv = ["translate", "--checkpoint", str(checkpoints["rnnsearch"]), "--input", str(src), "--shortlist", str(table)]
    assert main([*argv, "--shortlist-first", "0", "--shortlist-per-word", "0"]) == 2
    assert capsys.readouterr().err == (
        "nmt translate: error: --shortlist-first: 0 with --shortlist-per-word 0 leaves each sentence EOS alone: "
        "every translation would be empty\n"
    )


def test_each_sentence_chooses_among_its_own_columns_of_the_batch_shortlist():
    from nmt.decoding.search import _OwnPieces

    allowed = torch.tensor([[True, False, True, True], [False, True, False, False], [True, True, True, True]])
    own = _OwnPieces.of(allowed)
    assert own.position[0, :3].tolist() == [0, 2, 3] and own.position[1, 0] == 1
    assert own.position[2].tolist() == [0, 1, 2, 3]
    assert own.padding.tolist() == [[False, False, False, True], [False, True, True, True], [False] * 4]


def test_a_table_read_column_wise_is_the_table_read_line_by_line(checkpoints, table, tmp_path):
    """The fast reader of a well-formed table and the line-by-line one (which a table with CRLF line ends or a BOM
    goes to) give the same shortlist."""
    translator = Translator.load(checkpoints["rnnsearch"], device="cpu")
    fast = translator.load_shortlist(str(table), first=7, per_word=3)
    windows = tmp_path / "lex-crlf.tsv"
    windows.write_bytes(b"\xef\xbb\xbf" + table.read_bytes().replace(b"\n", b"\r\n"))
    checked = translator.load_shortlist(str(windows), first=7, per_word=3)
    assert fast.base.tolist() == checked.base.tolist() and len(fast.translations) == len(checked.translations)
    assert all(a.tolist() == b.tolist() for a, b in zip(fast.translations, checked.translations, strict=True))
    assert sum(len(t) for t in fast.translations) > 0


@pytest.mark.parametrize("corpus", ["", "\n  \n\t\n"], ids=["empty", "all blank"])
def test_a_corpus_without_text_is_refused_at_the_source(checkpoints, tmp_path, capsys, corpus):
    src, tgt, out = tmp_path / "c.en", tmp_path / "c.fr", tmp_path / "lex.tsv"
    src.write_text(corpus)
    tgt.write_text(corpus)
    argv = ["shortlist", "--checkpoint", str(checkpoints["rnnsearch"]), "--source", str(src), "--target", str(tgt)]
    assert main([*argv, "--output", str(out)]) == 2
    err = capsys.readouterr().err
    what = "is empty" if not corpus else "has no sentence pair with text on both sides"
    assert err == f"nmt shortlist: error: {src}: {what}: there is nothing to estimate a lexical table from\n"
    assert not out.exists()


def test_a_very_long_pair_is_skipped_and_memory_stays_with_the_corpus(checkpoints, tmp_path, capsys):
    """IBM Model 1 links every source piece of a pair to every target piece: one pair of 1,500 words a side would
    take hundreds of MB; it is skipped (over --max-tokens), said on stderr, and the table is that of the rest."""
    import tracemalloc

    lines_en, lines_fr = multi30k_lines("train", "en", 50), multi30k_lines("train", "fr", 50)
    long_en, long_fr = " ".join(["dog"] * 1500), " ".join(["chien"] * 1500)
    files = {}
    for name, lines in {"with.en": [*lines_en, long_en], "with.fr": [*lines_fr, long_fr],
                        "without.en": lines_en, "without.fr": lines_fr}.items():  # fmt: skip
        files[name] = tmp_path / name
        files[name].write_text("".join(line + "\n" for line in lines))
    ckpt = str(checkpoints["rnnsearch"])

    def shortlist(corpus: str) -> tuple[int, str]:
        out = tmp_path / f"{corpus}.tsv"
        argv = ["shortlist", "--checkpoint", ckpt, "--source", str(files[f"{corpus}.en"]), "--target"]
        status = main([*argv, str(files[f"{corpus}.fr"]), "--output", str(out)])
        return status, out.read_text()

    tracemalloc.start()
    try:
        status, table = shortlist("with")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    err = capsys.readouterr().err
    assert status == 0, err
    assert "nmt shortlist: warning: 1 sentence pair(s) with a side over --max-tokens 250 pieces skipped\n" in err
    assert peak < 50e6, f"{peak / 1e6:.0f} MB for a 51-line corpus"
    assert table == shortlist("without")[1]
