"""Corpus readers: what they return, and that every kind of broken file is reported at its file and line."""

from __future__ import annotations

import gzip
import json
import os
import pickle
import re
from pathlib import Path

import datasets
import pytest

from nmt.data.corpus import Corpus, corpus_fingerprint, load_corpus
from nmt.errors import InputError


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def load(tmp_path: Path, **spec: object) -> list[tuple[str, str]]:
    dataset = load_corpus(Corpus(**spec), data_dir=tmp_path, cache_dir=tmp_path / "cache")
    assert dataset.column_names == ["src", "tgt"]
    return list(zip(dataset["src"], dataset["tgt"], strict=True))


def load_error(tmp_path: Path, **spec: object) -> InputError:
    with pytest.raises(InputError) as caught:
        load(tmp_path, **spec)
    return caught.value


# -- InputError ---------------------------------------------------------------------------------------------


def test_input_error_formats_as_path_line_message_and_pickles() -> None:
    error = InputError(path=Path("a/b.txt"), line=3, message="bad")
    assert str(error) == "a/b.txt:3: bad"
    assert str(InputError(path="a/b.txt", message="empty")) == "a/b.txt: empty"
    clone = pickle.loads(pickle.dumps(error))
    assert (clone.path, clone.line, clone.message, str(clone)) == ("a/b.txt", 3, "bad", "a/b.txt:3: bad")


# -- reading ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_parallel_files_strip_bom_and_line_ends_and_keep_empty_lines(tmp_path: Path, suffix: str) -> None:
    write(tmp_path / f"a.en{suffix}", "\ufeffHello world\r\n\nlast, no newline".encode())
    write(tmp_path / f"a.fr{suffix}", "Bonjour\n\u00e9t\u00e9 \u2028 inside\nfin\n".encode())
    pairs = load(tmp_path, src=f"a.en{suffix}", tgt=f"a.fr{suffix}")
    # U+2028 is no line break for us (str.splitlines would split there and misalign the corpus).
    assert pairs == [("Hello world", "Bonjour"), ("", "\u00e9t\u00e9 \u2028 inside"), ("last, no newline", "fin")]


def test_absolute_paths_ignore_data_dir_and_limit_reads_a_prefix(tmp_path: Path, multi30k: Path) -> None:
    pairs = load(tmp_path / "elsewhere", src=str(multi30k / "val.en.gz"), tgt=str(multi30k / "val.fr.gz"), limit=5)
    with gzip.open(multi30k / "val.fr.gz", "rt", encoding="utf-8") as f:
        first_fr = [next(f).rstrip("\n") for _ in range(5)]
    assert [t for _, t in pairs] == first_fr


def test_tsv(tmp_path: Path) -> None:
    write(tmp_path / "c.tsv.gz", b"a b\tx y\n\t\nc\td\n")
    assert load(tmp_path, tsv="c.tsv.gz") == [("a b", "x y"), ("", ""), ("c", "d")]


@pytest.mark.parametrize("line", [b"no tab", b"two\ttabs\there"])
def test_tsv_line_without_exactly_one_tab(tmp_path: Path, line: bytes) -> None:
    write(tmp_path / "c.tsv", b"a\tb\n" + line + b"\n")
    error = load_error(tmp_path, tsv="c.tsv")
    assert (error.path, error.line) == (str(tmp_path / "c.tsv"), 2)
    assert "tab" in error.message


def test_json_lines_through_datasets_with_nested_fields(tmp_path: Path) -> None:
    records = [{"id": i, "translation": {"en": f"hello {i}", "fr": f"bonjour {i}"}} for i in range(5)]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    spec = {"hf_path": "json", "hf_data_files": "d.jsonl", "src_field": "translation.fr", "tgt_field": "translation.en"}
    assert load(tmp_path, **spec) == [(f"bonjour {i}", f"hello {i}") for i in range(5)]
    assert len(load(tmp_path, **spec, limit=2)) == 2
    error = load_error(tmp_path, **{**spec, "src_field": "translation.de"})
    assert "translation.de" in error.message and "translation.en" in error.message
    with pytest.raises(InputError, match="not text"):
        load(tmp_path, **{**spec, "src_field": "id"})


def test_a_streamed_dataset_gives_the_same_pairs_into_an_arrow_file(tmp_path: Path) -> None:
    records = [{"id": i, "translation": {"en": f"hello {i}", "fr": f"bonjour {i}"}} for i in range(50)]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    spec = {"hf_path": "json", "hf_data_files": "d.jsonl", "src_field": "translation.fr", "tgt_field": "translation.en"}
    streamed = load_corpus(Corpus(**spec, hf_streaming=True), data_dir=tmp_path, cache_dir=tmp_path / "cache")
    assert isinstance(streamed, datasets.Dataset) and streamed.cache_files  # on disk, memory-mapped
    assert streamed.column_names == ["src", "tgt"]
    assert list(zip(streamed["src"], streamed["tgt"], strict=True)) == load(tmp_path, **spec)
    assert load(tmp_path, **spec, hf_streaming=True, limit=3) == [(f"bonjour {i}", f"hello {i}") for i in range(3)]
    error = load_error(tmp_path, **{**spec, "src_field": "translation.de"}, hf_streaming=True)
    assert "record 1" in error.message and "translation.de" in error.message and "translation.en" in error.message
    with pytest.raises(InputError, match="not text"):
        load(tmp_path, **{**spec, "tgt_field": "id"}, hf_streaming=True)


# -- broken input: each reported at FILE:LINE ------------------------------------------------------------------


@pytest.mark.parametrize("shorter", ["src", "tgt"])
def test_parallel_files_of_different_lengths_name_the_shorter_file_and_its_first_missing_line(
    tmp_path: Path, shorter: str
) -> None:
    write(tmp_path / "long.gz", b"1\n2\n3\n4\n")
    write(tmp_path / "short.gz", b"1\n2\n3\n")
    spec = {"src": "short.gz", "tgt": "long.gz"} if shorter == "src" else {"src": "long.gz", "tgt": "short.gz"}
    error = load_error(tmp_path, **spec)
    assert (error.path, error.line) == (str(tmp_path / "short.gz"), 4)
    assert "long.gz" in error.message and "after line 3" in error.message


@pytest.mark.parametrize("name", ["empty.txt", "empty.gz"])
def test_empty_file(tmp_path: Path, name: str) -> None:
    write(tmp_path / name, b"")
    write(tmp_path / "ok.txt", b"a\n")
    error = load_error(tmp_path, src="ok.txt", tgt=name)
    assert (error.path, error.line, error.message) == (str(tmp_path / name), None, "file is empty")


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_invalid_utf8(tmp_path: Path, suffix: str) -> None:
    write(tmp_path / f"a{suffix}", b"ok\nalso ok\nbad \xff byte\n")
    write(tmp_path / f"b{suffix}", b"1\n2\n3\n")
    error = load_error(tmp_path, src=f"a{suffix}", tgt=f"b{suffix}")
    assert (error.path, error.line) == (str(tmp_path / f"a{suffix}"), 3)
    assert "UTF-8" in error.message and "0xff" in error.message


def test_nul_byte(tmp_path: Path) -> None:
    write(tmp_path / "a", b"ok\nok\n")
    write(tmp_path / "b", b"1\n2\x003\n")
    error = load_error(tmp_path, src="a", tgt="b")
    assert (error.path, error.line) == (str(tmp_path / "b"), 2)
    assert "NUL" in error.message


def test_truncated_gzip(tmp_path: Path) -> None:
    lines = b"".join(b"sentence number %d with some words\n" % i for i in range(2000))
    whole = gzip.compress(lines)
    (tmp_path / "cut.gz").write_bytes(whole[: len(whole) // 2])
    write(tmp_path / "b.txt", lines)
    error = load_error(tmp_path, src="cut.gz", tgt="b.txt")
    assert error.path == str(tmp_path / "cut.gz")
    assert error.line is not None and 1 < error.line < 2000
    assert "gzip" in error.message


def test_gz_that_is_not_gzip(tmp_path: Path) -> None:
    (tmp_path / "plain.gz").write_bytes(b"not compressed\n")
    write(tmp_path / "b.txt", b"x\n")
    error = load_error(tmp_path, src="plain.gz", tgt="b.txt")
    assert (error.path, error.line) == (str(tmp_path / "plain.gz"), 1)


def test_missing_file(tmp_path: Path) -> None:
    write(tmp_path / "b.txt", b"x\n")
    error = load_error(tmp_path, src="nope.txt", tgt="b.txt")
    assert error.path == str(tmp_path / "nope.txt") and "cannot open" in error.message


# -- caching ---------------------------------------------------------------------------------------------------


def test_an_edited_file_is_read_again(tmp_path: Path) -> None:
    write(tmp_path / "a", b"one\n")
    write(tmp_path / "b", b"un\n")
    first = load_corpus(Corpus(src="a", tgt="b"), data_dir=tmp_path, cache_dir=tmp_path / "cache")
    again = load_corpus(Corpus(src="a", tgt="b"), data_dir=tmp_path, cache_dir=tmp_path / "cache")
    assert again.cache_files == first.cache_files  # the Arrow cache is reused
    fingerprint = corpus_fingerprint(Corpus(src="a", tgt="b"), data_dir=tmp_path)
    write(tmp_path / "b", b"uno\n")
    os.utime(tmp_path / "b", ns=(0, 10**18))  # a distinct mtime even on coarse-grained file systems
    assert corpus_fingerprint(Corpus(src="a", tgt="b"), data_dir=tmp_path) != fingerprint
    assert load(tmp_path, src="a", tgt="b") == [("one", "uno")]


# -- spec validation -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "complaint"),
    [
        ({}, "exactly one"),
        ({"src": "a"}, "without `tgt`"),
        ({"src": "a", "tgt": "b", "tsv": "c"}, "src+tgt and tsv"),
        ({"tsv": "c", "hf_path": "json"}, "tsv and hf_path"),
        ({"tsv": "c", "src_field": "x"}, "only apply with hf_path"),
        ({"tsv": "c", "hf_streaming": True}, "only apply with hf_path"),
        ({"tsv": ""}, "empty"),
        ({"hf_path": "json", "src_field": "x", "tgt_field": "x"}, "both"),
        ({"tsv": "c", "limit": 0}, "limit"),
    ],
)
def test_invalid_specs_are_rejected_up_front(spec: dict[str, object], complaint: str) -> None:
    with pytest.raises(ValueError, match=re.escape(complaint)):
        Corpus(**spec)


def test_a_fixed_file_loads_after_an_error(tmp_path: Path) -> None:
    write(tmp_path / "a", b"one\ntwo\n")
    write(tmp_path / "b", b"un\n")
    load_error(tmp_path, src="a", tgt="b")
    write(tmp_path / "b", b"un\ndeux\n")
    assert load(tmp_path, src="a", tgt="b") == [("one", "un"), ("two", "deux")]
