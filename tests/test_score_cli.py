"""`nmt score` end to end on real Moses files (the first lines of each in tests/data/smt, see
tests/data/README.md, or the whole files under $NMT_TEST_SHARED_DATA), with small random models.

The trusted reference for every score is the model's own step-by-step decoder (`model.step`, one pair at a
time, no padding): the score of a pair must be its log-probability, whatever batch it was scored in."""

from __future__ import annotations

import gzip
import itertools
import math
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from factories import SMT, argv, multi30k_lines, needs_whole_file

from nmt.cli import main as nmt_main
from nmt.data.tokenizer import BOS, EOS
from nmt.inference import Translator
from nmt.moses import parse_labelled_values, read_weights, unescape, weighted_total

ROOT = Path(__file__).resolve().parents[1]


def nmt(args: list[str]) -> int:
    """`nmt …` in-process, on one thread: these models are tiny, and more threads only wait on each other."""
    return nmt_main([*args, "--threads", "1"])


# table -> (source language, target language) as SOURCES.md gives them
TABLES = {
    "AranBSmith_SMT-Project/phrase-table.gz": ("fr", "en"),
    "moses-regression-tests/multimodel-model1/phrase-table.gz": ("de", "en"),
    "moses-regression-tests/lexicalized-reordering/phrase-table.0-0.gz": ("fr", "en"),
    "Portage-SMT-TAS/cpt.ibm2-rf-zn-kn3.train.en2fr.gz": ("en", "fr"),
}


@pytest.fixture(scope="session")
def checkpoints(tiny_checkpoints) -> dict[tuple[str, str], Path]:
    return {
        ("fr", "en"): tiny_checkpoints(architecture="rnnencdec", src_lang="fr", tgt_lang="en"),
        ("de", "en"): tiny_checkpoints(architecture="rnnsearch", src_lang="de", tgt_lang="en"),
        ("en", "fr"): tiny_checkpoints(architecture="rnnsearch", src_lang="en", tgt_lang="fr"),
    }


@pytest.fixture(scope="session")
def translators(checkpoints):
    return {pair: Translator.load(path, device="cpu") for pair, path in checkpoints.items()}


def reference_logprob(translator, src: str, tgt: str, *, max_len: int | None = None) -> float:
    """log p(tgt EOS | src) by stepping the decoder one word at a time, one pair alone."""
    model, tok = translator.model, translator.tokenizer
    src_ids, tgt_ids = tok.encode_src([src])[0], tok.encode_tgt([tgt])[0]
    if max_len is not None:
        src_ids = src_ids[: max_len - 1] + [EOS] if len(src_ids) > max_len else src_ids
        tgt_ids = tgt_ids[: max_len - 1]
    with torch.no_grad():
        enc = model.encode(torch.tensor([src_ids]), torch.tensor([len(src_ids)]))
        state, y, total = model.initial_state(enc), torch.tensor([BOS]), 0.0
        for gold in tgt_ids + [EOS]:
            out = model.step(y, state, enc)
            total += float(out.log_probs[0, gold])
            state, y = out.state, torch.tensor([gold])
    return total


def head_file(name: str, n: int, directory: Path, *, gz: bool) -> Path:
    with gzip.open(SMT / name, "rb") as f:
        data = b"".join(itertools.islice(f, n))
    path = directory / (Path(name).name.removesuffix(".gz") + (".gz" if gz else ".txt"))
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def read(path: Path) -> bytes:
    return gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()


def split_scored(original: bytes, scored: bytes, extra: int) -> list[list[float]]:
    """Check that each scored line is its original line plus `extra` values at the end of the scores field,
    and return those values."""
    a, b = original.splitlines(keepends=True), scored.splitlines(keepends=True)
    assert len(a) == len(b)
    values = []
    for x, y in zip(a, b, strict=True):
        fx, fy = x.split(b"|||"), y.split(b"|||")
        assert fx[:2] == fy[:2] and fx[3:] == fy[3:]
        new = fy[2].split()[len(fx[2].split()) :]
        assert len(new) == extra and fy[2].split()[: len(fx[2].split())] == fx[2].split()
        assert y.replace(b" " + b" ".join(new), b"", 1) == x  # every other byte is the original's
        values.append([float(v) for v in new])
    return values


@pytest.mark.parametrize("name", TABLES)
def test_phrase_table_round_trip_plain_and_gz(name, checkpoints, tmp_path, capsys):
    ckpt = checkpoints[TABLES[name]]
    plain, packed = head_file(name, 2000, tmp_path, gz=False), head_file(name, 2000, tmp_path, gz=True)
    assert nmt(["score", "--checkpoint", str(ckpt), "--phrase-table", str(plain), "--output", str(tmp_path / "p")]) == 0
    probabilities = split_scored(read(plain), (tmp_path / "p").read_bytes(), 1)
    assert all(math.exp(-100) * 0.999 <= p <= 1.0 for (p,) in probabilities)
    command = argv("score --checkpoint", ckpt, "--phrase-table", packed, "--output", tmp_path / "l")
    assert nmt([*command, "--log", "--unk-feature"]) == 0
    logs = split_scored(read(packed), (tmp_path / "l").read_bytes(), 2)
    assert all(lp <= 0 and n >= 0 and n == int(n) for lp, n in logs)
    # the same pairs get the same score in both runs (p written with 6 significant digits)
    for (p,), (lp, _) in zip(probabilities, logs, strict=True):
        assert p == pytest.approx(max(math.exp(lp), math.exp(-100)), rel=1e-4)
    assert "2,000 lines" in capsys.readouterr().err


@pytest.mark.slow
@needs_whole_file("smt/moses-regression-tests/lexicalized-reordering/phrase-table.0-0.gz")
def test_a_whole_real_table(checkpoints, tmp_path, capsys):
    name = "moses-regression-tests/lexicalized-reordering/phrase-table.0-0.gz"
    table = SMT / name
    out = tmp_path / "scored"
    assert nmt(argv("score --checkpoint", checkpoints[TABLES[name]], "--phrase-table", table, "--output", out)) == 0
    values = split_scored(gzip.decompress(table.read_bytes()), out.read_bytes(), 1)
    assert len(values) == 41915
    assert "41,915 lines" in capsys.readouterr().err


def test_scores_are_the_models_log_probabilities_whatever_the_batch(checkpoints, translators, tmp_path):
    name = "AranBSmith_SMT-Project/phrase-table.gz"
    table = head_file(name, 400, tmp_path, gz=True)
    ckpt, runs = checkpoints[TABLES[name]], {}
    for label, options in {"default": [], "small": ["--batch-tokens", "40", "--window", "37"]}.items():
        out = tmp_path / f"{label}.txt"
        command = argv("score --checkpoint", ckpt, "--phrase-table", table, "--output", out, "--log --digits 12")
        assert nmt([*command, *options]) == 0
        runs[label] = [v for (v,) in split_scored(read(table), out.read_bytes(), 1)]
    assert runs["default"] == pytest.approx(runs["small"], abs=1e-4)
    lines = read(table).decode().splitlines()
    for i in range(0, 400, 23):
        src, tgt = (unescape(f.strip()) for f in lines[i].split("|||")[:2])
        assert runs["small"][i] == pytest.approx(reference_logprob(translators[TABLES[name]], src, tgt), abs=1e-4)


def test_direction_tgt2src_gives_the_model_the_target_side(checkpoints, translators, tmp_path):
    # An En→Fr model scoring the Fr→En table: p(fr | en) = p(source phrase | target phrase)
    table = head_file("AranBSmith_SMT-Project/phrase-table.gz", 60, tmp_path, gz=False)
    out = tmp_path / "out"
    ckpt = checkpoints["en", "fr"]
    command = argv("score --checkpoint", ckpt, "--phrase-table", table, "--output", out, "--log --digits 12")
    assert nmt([*command, "--direction", "tgt2src"]) == 0
    values = split_scored(table.read_bytes(), out.read_bytes(), 1)
    for line, (value,) in zip(table.read_text().splitlines(), values, strict=True):
        fr, en = (unescape(f.strip()) for f in line.split("|||")[:2])
        assert value == pytest.approx(reference_logprob(translators["en", "fr"], en, fr), abs=1e-4)


def test_unk_feature_counts_words_the_vocabulary_cannot_represent(checkpoints, tmp_path):
    table = tmp_path / "t"
    table.write_text("le chat ||| the cat ||| 1\nle chat ||| 日本 cat 語語 ||| 1\nx ||| a日 b ||| 1\n")
    for options, expected in (([], [1, math.e**2, math.e]), (["--log"], [0, 2, 1])):
        out = tmp_path / "out"
        command = argv("score --checkpoint", checkpoints["fr", "en"], "--phrase-table", table, "--output", out)
        assert nmt([*command, "--unk-feature", *options]) == 0
        unk = [v[1] for v in split_scored(table.read_bytes(), out.read_bytes(), 2)]
        assert unk == pytest.approx(expected, rel=1e-5)


def test_malformed_lines_fail_with_file_and_line_or_are_copied_through(checkpoints, tmp_path, capsys):
    table = tmp_path / "t.txt"
    table.write_bytes(b"le chat ||| the cat ||| 1\nno separators here\r\nle ||| the ||| 0.5 ||| 0-0\n")
    out = tmp_path / "out.txt"
    args = ["score", "--checkpoint", str(checkpoints["fr", "en"]), "--phrase-table", str(table), "--output", str(out)]
    assert nmt(args) == 2
    err = capsys.readouterr().err
    assert f"{table}:2: malformed phrase-table line: 1 field(s)" in err and "--skip-malformed" in err
    assert not out.exists() and not list(tmp_path.glob(".out.txt*"))  # no partial output left behind
    assert nmt([*args, "--skip-malformed"]) == 0
    lines = out.read_bytes().splitlines(keepends=True)
    assert len(lines) == 3 and lines[1] == b"no separators here\r\n"
    assert lines[2].startswith(b"le ||| the ||| 0.5 ") and lines[2].endswith(b" ||| 0-0\n")
    err = capsys.readouterr().err
    assert f"warning: {table}:2:" in err and "1 malformed lines copied through" in err


@pytest.mark.parametrize("kind", ["--phrase-table", "--tsv"])
def test_the_first_bad_line_in_file_order_is_the_error(kind, checkpoints, tmp_path, capsys):
    """A malformed line 2 is the error even when the window it is in goes on into a truncated gzip stream."""
    good = b"le chat ||| the cat ||| 1\n" if kind == "--phrase-table" else b"le chat\tthe cat\n"
    data = gzip.compress(good + b"no separators here\n" + good * 2000)
    source = tmp_path / "in.gz"
    source.write_bytes(data[: len(data) // 2])
    out = tmp_path / "out.txt"
    assert nmt(["score", "--checkpoint", str(checkpoints["fr", "en"]), kind, str(source), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("error") == 1 and f"{source}:2: " in err and "--skip-malformed" in err
    assert not out.exists()


def test_empty_sides_are_scored_as_the_empty_string(checkpoints, translators, tmp_path, capsys):
    table = tmp_path / "t"
    table.write_text("le chat |||  ||| 1\n ||| the cat ||| 1\nle ||| the ||| 1\n")
    out = tmp_path / "out"
    ckpt = checkpoints["fr", "en"]
    assert nmt(argv("score --checkpoint", ckpt, "--phrase-table", table, "--output", out, "--log --digits 12")) == 0
    values = [v for (v,) in split_scored(table.read_bytes(), out.read_bytes(), 1)]
    model = translators["fr", "en"]
    expected = [
        reference_logprob(model, "le chat", ""),
        reference_logprob(model, "", "the cat"),
        reference_logprob(model, "le", "the"),
    ]
    assert values == pytest.approx(expected, abs=1e-4)
    assert "2 with an empty side" in capsys.readouterr().err


def test_over_long_sides_are_truncated_or_floored(checkpoints, translators, tmp_path, capsys):
    table = tmp_path / "t"
    table.write_text(
        "le chat noir est sur la table ||| the cat ||| 1\nle ||| the black cat is on the table ||| 1\n"
        "le ||| the ||| 1\n"
    )
    out = tmp_path / "out"
    ckpt = checkpoints["fr", "en"]
    base = argv("score --checkpoint", ckpt, "--phrase-table", table, "--output", out, "--log --digits 12 --max-len 4")
    assert nmt(base) == 0
    values = [v for (v,) in split_scored(table.read_bytes(), out.read_bytes(), 1)]
    model = translators["fr", "en"]
    pairs = [("le chat noir est sur la table", "the cat"), ("le", "the black cat is on the table"), ("le", "the")]
    assert values == pytest.approx([reference_logprob(model, s, t, max_len=4) for s, t in pairs], abs=1e-4)
    assert values[2] == pytest.approx(reference_logprob(model, "le", "the"), abs=1e-4)  # short pairs untouched
    err = capsys.readouterr().err
    assert "2 with an over-long side" in err and f"{table}:1: a side is longer than 4 pieces: truncated" in err
    assert nmt([*base, "--too-long", "floor", "--floor", "-50"]) == 0
    values = [v for (v,) in split_scored(table.read_bytes(), out.read_bytes(), 1)]
    assert values[:2] == [-50.0, -50.0]


def test_sentence_pairs_from_two_files_or_a_tsv(checkpoints, translators, tmp_path, capsys):
    src, tgt = multi30k_lines("val", "fr", 30), multi30k_lines("val", "en", 30)
    (tmp_path / "s").write_text("\n".join(src) + "\n")
    (tmp_path / "t").write_text("\n".join(tgt) + "\n")
    (tmp_path / "p.tsv").write_text("".join(f"{s}\t{t}\n" for s, t in zip(src, tgt, strict=True)))
    ckpt = str(checkpoints["fr", "en"])
    outputs = []
    for inputs in (["--src", str(tmp_path / "s"), "--tgt", str(tmp_path / "t")], ["--tsv", str(tmp_path / "p.tsv")]):
        out = tmp_path / "out"
        assert nmt(["score", "--checkpoint", ckpt, *inputs, "--output", str(out), "--digits", "12"]) == 0
        outputs.append(out.read_text())
    assert outputs[0] == outputs[1]
    rows = [line.split("\t") for line in outputs[0].splitlines()]
    tok = translators["fr", "en"].tokenizer
    for (total, mean, count), t in zip(rows, tgt, strict=True):
        assert int(count) == len(tok.encode_tgt([t])[0]) + 1
        assert float(mean) == pytest.approx(float(total) / int(count), rel=1e-9)
    for i in (0, 17, 29):
        assert float(rows[i][0]) == pytest.approx(reference_logprob(translators["fr", "en"], src[i], tgt[i]), abs=1e-4)
    (tmp_path / "t").write_text("\n".join(tgt[:20]) + "\n")
    assert nmt(["score", "--checkpoint", ckpt, "--src", str(tmp_path / "s"), "--tgt", str(tmp_path / "t")]) == 2
    assert f"{tmp_path / 't'}:20: file ends after line 20" in capsys.readouterr().err
    (tmp_path / "p.tsv").write_text("a\tb\nno tab\nc\td\n")
    assert nmt(["score", "--checkpoint", ckpt, "--tsv", str(tmp_path / "p.tsv")]) == 2
    assert "p.tsv:2: expected one tab" in capsys.readouterr().err
    assert nmt(["score", "--checkpoint", ckpt, "--tsv", str(tmp_path / "p.tsv"), "--skip-malformed"]) == 0
    assert capsys.readouterr().out.splitlines()[1] == "nan\tnan\t0"


NBESTS = {  # n-best list -> its sources (any text: these models are random)
    "moses-regression-tests/mert.extractor-txt/nbest.1.gz": "moses-regression-tests/mert.extractor-txt/reference",
    "mosesdecoder/nbest.out": "mosesdecoder/reference.txt",
    "swaeng_model/run7.best100.out.gz": None,  # en→sw; no source file: Multi30k English lines stand in
}


def nbest_inputs(name: str, n: int, directory: Path) -> tuple[Path, Path]:
    opener = gzip.open if name.endswith(".gz") else open
    with opener(SMT / name, "rb") as f:
        data = b"".join(itertools.islice(f, n))
    (directory / "nbest").write_bytes(data)
    src = directory / "src"
    if NBESTS[name] is None:
        src.write_text("\n".join(multi30k_lines("val", "en", 1000)) + "\n")
    else:
        src.write_bytes((SMT / NBESTS[name]).read_bytes())
    return directory / "nbest", src


@pytest.mark.parametrize("name", NBESTS)
def test_nbest_feature_is_added_to_every_hypothesis(name, checkpoints, translators, tmp_path):
    nbest, src = nbest_inputs(name, 300, tmp_path)
    out = tmp_path / "out"
    command = argv("score --checkpoint", checkpoints["en", "fr"], "--nbest", nbest, "--src", src, "--output", out)
    assert nmt([*command, "--feature-name", "NMT0", "--digits", "12"]) == 0
    sources = src.read_text().splitlines()
    original, scored = nbest.read_bytes().splitlines(True), out.read_bytes().splitlines(True)
    assert len(scored) == len(original) == 300
    label = "NMT0:" if name == "mosesdecoder/nbest.out" else "NMT0="
    for i, (x, y) in enumerate(zip(original, scored, strict=True)):
        tokens = y.split(b"|||")[2].split()
        assert tokens[-2] == label.encode()
        assert y.replace(b" %s %s" % (tokens[-2], tokens[-1]), b"", 1) == x
        if i % 50 == 0:
            fields = x.decode().split("|||")
            expected = reference_logprob(translators["en", "fr"], sources[int(fields[0])], fields[1].strip())
            assert float(tokens[-1]) == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize(
    "name", ["moses-regression-tests/mert.extractor-txt/nbest.1.gz", "swaeng_model/run7.best100.out.gz"]
)
def test_nbest_reranking_orders_hypotheses_by_the_new_total(name, checkpoints, tmp_path):
    nbest, src = nbest_inputs(name, 400, tmp_path)
    weights = tmp_path / "weights.ini"
    if name.startswith("swaeng"):  # the weights MERT found for this list, plus one for the new feature
        weights.write_text((SMT / "swaeng_model/run7.moses.ini").read_text() + "RNN= 0.05\n")
    else:
        weights.write_text("d= 0.1 0.1 0.1 0.1 0.1 0.1 0.1\nlm= 0.2\ntm= 0.05 0.05 0.05 0.05 -0.1\nw= -0.3\nRNN= 0.2\n")
    out = tmp_path / "out"
    command = argv("score --checkpoint", checkpoints["en", "fr"], "--nbest", nbest, "--src", src, "--output", out)
    assert nmt([*command, "--weights", str(weights)]) == 0
    w = read_weights(str(weights))
    original, scored = nbest.read_bytes().splitlines(True), out.read_bytes().splitlines(True)
    assert len(scored) == len(original)
    groups: dict[int, list[float]] = {}
    for line in scored:
        fields = line.decode().split("|||")
        total = float(fields[3])
        features = parse_labelled_values(fields[2], path="out", number=0)
        assert total == pytest.approx(weighted_total(features, w, path="out", number=0), rel=1e-5, abs=1e-4)
        groups.setdefault(int(fields[0]), []).append(total)
    assert all(totals == sorted(totals, reverse=True) for totals in groups.values())
    # the same hypotheses, each id's lines kept together and in the original id order
    strip = [b"|||".join(line.split(b"|||")[:2]) for line in original]
    assert sorted(strip) == sorted(b"|||".join(line.split(b"|||")[:2]) for line in scored)
    assert [int(line.split(b"|||")[0]) for line in scored] == [int(line.split(b"|||")[0]) for line in original]
    # at least one sentence's order changed: the new feature matters
    assert scored != original


def test_nbest_errors(checkpoints, tmp_path, capsys):
    nbest, src = nbest_inputs("moses-regression-tests/mert.extractor-txt/nbest.1.gz", 300, tmp_path)
    ckpt = str(checkpoints["en", "fr"])
    src.write_text("one source line\n")
    assert nmt(["score", "--checkpoint", ckpt, "--nbest", str(nbest), "--src", str(src)]) == 2
    assert "sentence id 1, but" in capsys.readouterr().err
    weights = tmp_path / "w"
    weights.write_text("d= 1\n")
    assert (
        nmt(["score", "--checkpoint", ckpt, "--nbest", str(nbest), "--src", str(src), "--weights", str(weights)]) == 2
    )
    assert "no weight for the new feature 'RNN'" in capsys.readouterr().err
    assert nmt(["score", "--checkpoint", ckpt, "--nbest", str(nbest), "--src", str(src), "--feature-name", "tm"]) == 2
    assert "already has a feature 'tm'" in capsys.readouterr().err


def test_nbest_reranking_refuses_a_sentence_split_across_the_list(checkpoints, tmp_path, capsys):
    """--weights re-ranks one sentence's hypotheses at a time, as the list streams through: an id that comes back
    after another id would be ranked in two pieces (its best not written first), so it is refused, naming the
    line. Without --weights nothing is re-ranked and any order is fine; a grouped list in any id order is."""
    (tmp_path / "src").write_text("a man\nthe dog\n")
    weights = tmp_path / "w"
    weights.write_text("d= 1\nRNN= 0\n")  # the total is d: the best hypothesis is known in advance
    nbest, out, ckpt = tmp_path / "nbest", tmp_path / "out", str(checkpoints["en", "fr"])
    base = ["score", "--checkpoint", ckpt, "--nbest", str(nbest), "--src", str(tmp_path / "src"), "--output", str(out)]
    split = [b"0 ||| un homme ||| d= -2 ||| -2", b"0 ||| le homme ||| d= -3 ||| -3", b"1 ||| le chien ||| d= -1 ||| -1"]
    split += [b"1 ||| un chien ||| d= -4 ||| -4", b"0 ||| homme ||| d= -0.5 ||| -0.5"]
    nbest.write_bytes(b"".join(line + b"\n" for line in split))
    assert nmt([*base, "--weights", str(weights)]) == 2
    err = capsys.readouterr().err
    assert re.fullmatch(
        rf"nmt score: error: {re.escape(str(nbest))}:5: sentence id 0 again, after id 1 \(its hypotheses start at "
        r"line 1\): --weights re-ranks .*\n",
        err,
    )
    assert not out.exists() and not list(tmp_path.glob(".out*"))
    assert nmt(base) == 0  # no re-ranking: every line scored in place

    def texts() -> list[bytes]:
        return [line.split(b" ||| ")[1] for line in out.read_bytes().splitlines()]

    assert texts() == [line.split(b" ||| ")[1] for line in split]

    grouped = [split[2], split[3], split[0], split[1], split[4]]  # ids 1 1 0 0 0: grouped, not ascending
    nbest.write_bytes(b"".join(line + b"\n" for line in grouped))
    assert nmt([*base, "--weights", str(weights)]) == 0
    assert texts() == [b"le chien", b"un chien", b"homme", b"un homme", b"le homme"]

    # a malformed line copied through inside a sentence keeps its place; the sentence is still ranked whole
    malformed = [split[0], b"0 ||| broken ||| d= x ||| -1", split[1], split[4], split[2]]
    nbest.write_bytes(b"".join(line + b"\n" for line in malformed))
    assert nmt([*base, "--weights", str(weights), "--skip-malformed"]) == 0
    assert texts() == [b"homme", b"broken", b"un homme", b"le homme", b"le chien"]


@pytest.mark.slow
def test_a_pairs_score_does_not_depend_on_its_batch(checkpoints, tmp_path):
    """A pair's score is a function of the pair alone, to the last digit printed: 24 phrase pairs, each scored
    alone, then among 1,000 others of a real table at different places, with different batch sizes and windows
    (so with other neighbours, batch sizes and padding), print the same value — p with 6 digits and log p with
    17 — and 1,000 copies of one pair print 1,000 times its value alone."""
    ckpt = str(checkpoints["de", "en"])
    with gzip.open(SMT / "moses-regression-tests/multimodel-model1/phrase-table.gz", "rb") as f:
        lines = [b"|||".join(line.split(b"|||")[:2]) + b"||| 1\n" for line in itertools.islice(f, 3000)]
    rng = random.Random(0)
    targets = rng.sample(lines, 24)
    table = rng.sample(lines, 1000)
    places = sorted(rng.sample(range(1024), 24))
    for place, line in zip(places, targets, strict=True):
        table.insert(place, line)
    (tmp_path / "table").write_bytes(b"".join(table))
    (tmp_path / "same").write_bytes(targets[0] * 1000)

    def scored(name: str, options: list[str]) -> list[bytes]:
        out = tmp_path / "out"
        argv = ["score", "--checkpoint", ckpt, "--phrase-table", str(tmp_path / name), "--output", str(out)]
        assert nmt([*argv, "--device", "cpu", *options]) == 0
        return out.read_bytes().splitlines()

    for digits in ([], ["--log", "--digits", "17"]):
        alone = []
        for line in targets:
            (tmp_path / "one").write_bytes(line)
            alone += scored("one", digits)
        for batching in (
            [],
            ["--window", "3"],
            ["--window", "7"],
            ["--batch-tokens", "40", "--window", "37"],
            ["--batch-tokens", "300", "--window", "555"],
        ):
            got = scored("table", [*digits, *batching])
            assert [got[place] for place in places] == alone, batching
        assert scored("same", digits) == [alone[0]] * 1000


def test_one_input_kind_at_a_time(checkpoints, tmp_path, capsys):
    ckpt = str(checkpoints["en", "fr"])
    assert nmt(["score", "--checkpoint", ckpt, "--src", "a"]) == 2
    assert "give --phrase-table, --src + --tgt, --tsv, or --nbest + --src (got --src)" in capsys.readouterr().err
    assert nmt(["score", "--checkpoint", ckpt, "--tsv", "a", "--phrase-table", "b"]) == 2


@pytest.mark.slow
def test_command_line_smoke_with_progress(checkpoints, tmp_path):
    table = head_file("Portage-SMT-TAS/cpt.ibm2-rf-zn-kn3.train.en2fr.gz", 50, tmp_path, gz=True)
    command = argv("-m nmt score --checkpoint", checkpoints["en", "fr"], "--phrase-table", table, "--progress")
    result = subprocess.run([sys.executable, *command, "--threads", "1"], capture_output=True, cwd=ROOT, check=True)
    split_scored(read(table), result.stdout, 1)
    assert "50 lines in" in result.stderr.decode()
