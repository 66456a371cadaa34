"""A Moses phrase table as a training corpus: its unique pairs, each once (Cho et al. 2014 §4.1.1)."""

from __future__ import annotations

import gzip
import itertools

from factories import SMT

from nmt.data.corpus import Corpus, load_corpus
from nmt.moses import unescape


def test_phrase_table_corpus_gives_each_unique_pair_once(tmp_path):
    source = SMT / "AranBSmith_SMT-Project" / "phrase-table.gz"
    with gzip.open(source, "rt", encoding="utf-8") as f:
        head = list(itertools.islice(f, 2000))
    table = tmp_path / "table.gz"
    # every line twice: counts must not matter
    with gzip.open(table, "wt", encoding="utf-8") as f:
        f.writelines(head + head)
    expected = list(
        dict.fromkeys((unescape(line.split("|||")[0].strip()), unescape(line.split("|||")[1].strip())) for line in head)
    )
    pairs = load_corpus(Corpus(phrase_table="table.gz"), data_dir=tmp_path, cache_dir=tmp_path / "cache")
    assert list(zip(pairs["src"], pairs["tgt"], strict=True)) == expected
    limited = load_corpus(Corpus(phrase_table="table.gz", limit=10), data_dir=tmp_path, cache_dir=tmp_path / "cache")
    assert len(limited) == 10
