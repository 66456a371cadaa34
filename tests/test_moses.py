"""Moses phrase-table and n-best lines: parsing and byte-exact rewriting, on real files (the first lines of
each in tests/data/smt, see tests/data/README.md, or the whole files under $NMT_TEST_SHARED_DATA), and the
phrase table as training data."""

from __future__ import annotations

import gzip
import itertools
from pathlib import Path

import pytest
from factories import SMT, needs_whole_file

from nmt.data.phrase_table import load_phrase_table_pairs
from nmt.errors import InputError
from nmt.moses import (
    MalformedLine,
    parse_labelled_values,
    parse_nbest_line,
    parse_phrase_line,
    read_weights,
    unescape,
    weighted_total,
)
from nmt.textio import read_binary_lines

# (file, number of fields, scores per line) as SOURCES.md describes them
PHRASE_TABLES = {
    "AranBSmith_SMT-Project/phrase-table.gz": 6,  # trailing " |||"
    "moses-regression-tests/multimodel-model1/phrase-table.gz": 5,
    "moses-regression-tests/lexicalized-reordering/phrase-table.0-0.gz": 3,
    "Portage-SMT-TAS/cpt.ibm2-rf-zn-kn3.train.en2fr.gz": 3,
}
SCORES = {
    "AranBSmith_SMT-Project/phrase-table.gz": 4,
    "moses-regression-tests/multimodel-model1/phrase-table.gz": 4,
    "moses-regression-tests/lexicalized-reordering/phrase-table.0-0.gz": 5,
    "Portage-SMT-TAS/cpt.ibm2-rf-zn-kn3.train.en2fr.gz": 6,
}


def head(name: str, n: int) -> list[bytes]:
    return list(itertools.islice(read_binary_lines(str(SMT / name)), n))


@pytest.mark.parametrize("name", PHRASE_TABLES)
def test_new_score_goes_after_the_last_score_and_nothing_else_moves(name):
    for number, raw in enumerate(head(name, 2000), start=1):
        pair = parse_phrase_line(raw, path=name, number=number)
        out = pair.with_scores(["0.123", "4"])
        before, after = raw.split(b"|||"), out.split(b"|||")
        assert len(after) == len(before) == PHRASE_TABLES[name]
        assert after[:2] == before[:2] and after[3:] == before[3:]
        assert after[2].split() == before[2].split() + [b"0.123", b"4"]
        assert len(before[2].split()) == SCORES[name]
        # the spacing of the field is the file's own: only " 0.123 4" was inserted
        assert out.replace(b" 0.123 4", b"", 1) == raw
        assert pair.src == before[0].decode().strip() and pair.tgt == before[1].decode().strip()


def test_spacing_conventions_are_kept():
    cases = {
        b"a ||| b ||| 0.5 0.2 ||| 0-0 ||| 1 1 1 |||\n": b"a ||| b ||| 0.5 0.2 X ||| 0-0 ||| 1 1 1 |||\n",
        b"a ||| b ||| 0.5 2.718\n": b"a ||| b ||| 0.5 2.718 X\n",
        b"a ||| b ||| 0.5 2.718\r\n": b"a ||| b ||| 0.5 2.718 X\r\n",
        b"a ||| b ||| 0.5": b"a ||| b ||| 0.5 X",  # last line without a newline
        b"a|||b|||0.5|||0-0\n": b"a|||b|||0.5 X|||0-0\n",
        b"a ||| b ||| 0.5\t ||| x\n": b"a ||| b ||| 0.5 X\t ||| x\n",
        b"a |||  ||| 0.5\n": b"a |||  ||| 0.5 X\n",  # empty target phrase
    }
    for line, expected in cases.items():
        assert parse_phrase_line(line, path="t", number=1).with_scores(["X"]) == expected


def test_fields_are_stripped_escapes_kept_bom_dropped():
    pair = parse_phrase_line(b"\xef\xbb\xbfl &apos; homme ||| the man  ||| 1\n", path="t", number=1)
    assert pair.src == "l &apos; homme" and pair.tgt == "the man"
    assert pair.with_scores(["2"]).startswith(b"\xef\xbb\xbfl &apos; homme")
    assert unescape(pair.src) == "l ' homme"
    assert unescape("&amp;lt; &#124; &#91;x&#93; &quot;&gt;") == '&lt; | [x] ">'
    assert unescape("AT&T &nbsp;") == "AT&T &nbsp;"  # only Moses' own escapes


def test_malformed_and_non_utf8_lines():
    with pytest.raises(MalformedLine, match=r"^t:7: malformed phrase-table line: 2 field\(s\)"):
        parse_phrase_line(b"a ||| b\n", path="t", number=7)
    with pytest.raises(MalformedLine):
        parse_phrase_line(b"\n", path="t", number=1)
    with pytest.raises(InputError, match=r"^t:3: invalid UTF-8"):
        parse_phrase_line(b"caf\xe9 ||| b ||| 1\n", path="t", number=3)
    pair = parse_phrase_line(b"caf\xe9 ||| b ||| 1\n", path="t", number=3, errors="replace")
    assert pair.src == "caf\ufffd" and pair.with_scores(["2"]) == b"caf\xe9 ||| b ||| 1 2\n"


NBESTS = {
    "moses-regression-tests/mert.extractor-txt/nbest.1.gz": "=",  # "0||| hyp ||| d= … tm= … w= … ||| total"
    "mosesdecoder/nbest.out": ":",  # colon labels (~2008)
    "swaeng_model/run7.best100.out.gz": "=",  # modern Name= labels
}


@pytest.mark.parametrize("name", NBESTS)
def test_nbest_feature_is_appended_in_the_lists_label_style(name):
    suffix = NBESTS[name]
    for number, raw in enumerate(head(name, 1500), start=1):
        hyp = parse_nbest_line(raw, path=name, number=number)
        assert hyp.label_suffix == suffix
        fields = raw.split(b"|||")
        assert hyp.sentence_id == int(fields[0]) and hyp.text == fields[1].decode().strip()
        out = hyp.rewrite([("RNN", "-12.5")])
        assert out.split(b"|||")[2].split()[-2:] == [f"RNN{suffix}".encode(), b"-12.5"]
        assert out.replace(f" RNN{suffix} -12.5".encode(), b"", 1) == raw
        features = hyp.feature_values(path=name, number=number)
        assert sum(map(len, features.values())) == len(fields[2].split()) - len(features)
        # replacing the total touches the number only
        new_total = hyp.rewrite([("RNN", "1")], total="-1.5").split(b"|||")
        assert new_total[3] == fields[3].replace(fields[3].strip(), b"-1.5")
        assert new_total[:2] == fields[:2] and new_total[4:] == fields[4:]


def test_weights_reproduce_moses_totals():
    """SOURCES.md: on the run7 n-best, total = Σ weight·feature − 100·(#OOV), to within 0.0054. Lines whose
    hypotheses keep no source word untranslated carry no OOV, so Σ w·f alone must give their total."""
    weights = read_weights(str(SMT / "swaeng_model/run7.moses.ini"))
    assert weights["TranslationModel0"] == [0.0422168, 0.0404436, 0.0422168, 0.033517]
    assert weights["UnknownWordPenalty0"] == [1.0]
    name = "swaeng_model/run7.best100.out.gz"
    checked = 0
    for number, raw in enumerate(head(name, 3000), start=1):
        hyp = parse_nbest_line(raw, path=name, number=number)
        total = float(raw.split(b"|||")[3])
        ours = weighted_total(hyp.feature_values(path=name, number=number), weights, path=name, number=number)
        oov = round((ours - total) / 100)
        assert oov >= 0
        assert abs(ours - 100 * oov - total) <= 0.0055
        checked += oov == 0
    # 341 of tests/data's 1,541 lines carry no OOV, 541 of the whole list's first 3,000; the others differ by
    # whole multiples of 100
    assert checked > 300


def test_weights_errors(tmp_path):
    w = tmp_path / "w.txt"
    w.write_text("# weights\nd= 0.5 0.25\nlm: 1\n")
    assert read_weights(str(w)) == {"d": [0.5, 0.25], "lm": [1.0]}
    features = parse_labelled_values("d= 2 4 lm= -3", path="n", number=1)
    assert weighted_total(features, read_weights(str(w)), path="n", number=1) == pytest.approx(2 - 3)
    with pytest.raises(InputError, match="n:1: no weight for feature 'tm'"):
        weighted_total({"tm": [1.0]}, {"d": [1.0]}, path="n", number=1)
    with pytest.raises(InputError, match="has 1 value"):
        weighted_total({"d": [1.0]}, {"d": [1.0, 2.0]}, path="n", number=1)
    w.write_text("[weight]\nx\n")
    with pytest.raises(InputError, match=r"w.txt:2: 'x' is neither a label nor a number"):
        read_weights(str(w))
    with pytest.raises(MalformedLine, match="n:4: n-best sentence id"):
        parse_nbest_line(b"x ||| a ||| d= 1 ||| 2\n", path="n", number=4)
    with pytest.raises(MalformedLine, match="n:5: malformed n-best line"):
        parse_nbest_line(b"0 ||| a ||| d= 1\n", path="n", number=5)


def test_read_binary_lines_keeps_every_byte(tmp_path):
    data = b"a ||| b ||| 1\r\n\xff ||| c ||| 2\nlast ||| d ||| 3"
    (tmp_path / "t").write_bytes(data)
    (tmp_path / "t.gz").write_bytes(gzip.compress(data))
    for name in ("t", "t.gz"):
        assert b"".join(read_binary_lines(str(tmp_path / name))) == data
    (tmp_path / "bad.gz").write_bytes(gzip.compress(data)[:-10])
    with pytest.raises(InputError, match="corrupt or truncated gzip"):
        list(read_binary_lines(str(tmp_path / "bad.gz")))
    with pytest.raises(InputError, match="cannot open"):
        list(read_binary_lines(str(tmp_path / "missing")))


# -- the phrase table as training data ----------------------------------------------------------------------


def test_training_pairs_are_the_unique_pairs_in_table_order(tmp_path):
    lines = head("moses-regression-tests/multimodel-model1/phrase-table.gz", 3000)
    table = tmp_path / "pt"
    # duplicates: the first 500 pairs again with other scores, and a pair that differs only by an escape
    again = [b"|||".join([*line.split(b"|||")[:2], b" 0.9 0.9 "]) + b"\n" for line in lines[:500]]
    table.write_bytes(b"".join(lines + again) + b"l'homme ||| x ||| 1\nl&apos;homme ||| x ||| 0.5 0.5\n")
    ds = load_phrase_table_pairs(table, cache_dir=tmp_path / "cache")
    expected = list(
        dict.fromkeys(
            (unescape(p.src), unescape(p.tgt)) for p in (parse_phrase_line(raw, path="pt", number=1) for raw in lines)
        )
    )
    assert ds.column_names == ["src", "tgt"]
    assert list(zip(ds["src"], ds["tgt"], strict=True)) == expected + [("l'homme", "x")]
    swapped = load_phrase_table_pairs(table, cache_dir=tmp_path / "cache", swap=True)
    assert swapped[0] == {"src": expected[0][1], "tgt": expected[0][0]}


@needs_whole_file("smt/AranBSmith_SMT-Project/phrase-table.gz")
def test_training_pairs_of_a_whole_real_table(tmp_path):
    path = SMT / "AranBSmith_SMT-Project/phrase-table.gz"
    ds = load_phrase_table_pairs(path, cache_dir=tmp_path)
    assert len(ds) == 41320  # a Moses table holds each pair once
    assert "&apos;" not in "".join(ds["src"][:5000])


def test_training_pairs_malformed_line_names_file_and_line(tmp_path):
    table = tmp_path / "pt.gz"
    table.write_bytes(gzip.compress(b"a ||| b ||| 1\nbroken line\n"))
    with pytest.raises(InputError, match=r"pt.gz:2: malformed phrase-table line"):
        load_phrase_table_pairs(table, cache_dir=tmp_path / "cache")
    with pytest.raises(InputError, match="cannot open"):
        load_phrase_table_pairs(Path(tmp_path / "missing"), cache_dir=tmp_path / "cache")
