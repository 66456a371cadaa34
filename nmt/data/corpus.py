"""Parallel corpora: where the sentence pairs come from, read into a `datasets.Dataset` with `src`, `tgt`.

Plain-text corpora (two aligned files, or one TSV file) are read line by line by a generator that checks
every line as it goes, so a broken file fails with ``FILE:LINE: what is wrong`` instead of a silently
misaligned corpus. `Dataset.from_generator` writes the pairs to an Arrow file on disk (memory-mapped on
load), so the corpus never sits in Python lists. Anything `datasets.load_dataset` can open (a hub dataset
such as ``wmt14``, or the local builders ``json``/``csv``/``parquet``) is the third kind of corpus; with
``hf_streaming`` it is streamed record by record into an Arrow file of its two text fields only, instead of
downloading and converting the whole dataset first.
"""

from __future__ import annotations

import glob
import hashlib
import itertools
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import datasets
from datasets.exceptions import DatasetGenerationError

from nmt.errors import InputError, find_input_error
from nmt.textio import file_signature, read_binary_lines

__all__ = ["Corpus", "corpus_fingerprint", "load_corpus"]

_FEATURES = datasets.Features({"src": datasets.Value("string"), "tgt": datasets.Value("string")})
_UTF8_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class Corpus:
    """One parallel corpus. Give exactly one of: `src` + `tgt`, `tsv`, `phrase_table` or `hf_path`.

    Relative file paths (`src`, `tgt`, `tsv`, `hf_data_files`) are resolved against the data directory
    given when the corpus is loaded.

    Args:
        src: source-language text file, one sentence a line, UTF-8, plain or .gz.
        tgt: target-language text file, line-aligned with `src`.
        tsv: one file of ``source<TAB>target`` lines, plain or .gz (instead of `src` + `tgt`).
        phrase_table: a Moses phrase table, plain or .gz: its unique (source, target) phrase pairs, each once
            per epoch whatever its count (Cho et al. 2014 §4.1.1).
        hf_path: a `datasets` builder or hub dataset, e.g. "wmt14", or "json"/"csv"/"parquet" for local files.
        hf_name: the dataset's configuration name, e.g. "fr-en".
        hf_split: the split to read, e.g. "train", "validation", "test" or "train[:10000]".
        hf_data_files: file(s) or glob(s) for a local builder, e.g. "train.jsonl".
        hf_streaming: stream the dataset (`load_dataset(streaming=True)`) and keep only the two text fields:
            no full download and conversion first, memory flat. The split cannot be sliced
            ("train[:1000]"); use `limit`.
        src_field: dotted path of the source text in a record, e.g. "translation.en".
        tgt_field: dotted path of the target text in a record, e.g. "translation.fr".
        limit: use only the first `limit` pairs (smoke tests, quick experiments); None: all of them.
    """

    src: str | None = None
    tgt: str | None = None
    tsv: str | None = None
    phrase_table: str | None = None
    hf_path: str | None = None
    hf_name: str | None = None
    hf_split: str = "train"
    hf_data_files: str | list[str] | None = None
    hf_streaming: bool = False
    src_field: str = "src"
    tgt_field: str = "tgt"
    limit: int | None = None

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"Corpus: limit must be positive (or None for all pairs), got {self.limit}")
        given = [name for name in ("src", "tgt", "tsv", "phrase_table", "hf_path") if getattr(self, name) is not None]
        for name in given:
            if not getattr(self, name):
                raise ValueError(f"Corpus: `{name}` is an empty string")
        if (self.src is None) != (self.tgt is None):
            only, missing = ("src", "tgt") if self.tgt is None else ("tgt", "src")
            raise ValueError(f"Corpus: `{only}` is given without `{missing}`; parallel files come in pairs")
        kinds = [
            kind
            for kind, present in (
                ("src+tgt", self.src),
                ("tsv", self.tsv),
                ("phrase_table", self.phrase_table),
                ("hf_path", self.hf_path),
            )
            if present is not None
        ]
        if len(kinds) != 1:
            got = " and ".join(kinds) if kinds else "none of them"
            raise ValueError(f"Corpus: give exactly one of src+tgt, tsv, phrase_table, hf_path; got {got}")
        if self.hf_path is None:
            hf_only = {
                "hf_name": self.hf_name is not None,
                "hf_data_files": self.hf_data_files is not None,
                "hf_streaming": self.hf_streaming,
                "hf_split": self.hf_split != "train",
                "src_field": self.src_field != "src",
                "tgt_field": self.tgt_field != "tgt",
            }
            stray = [name for name, set_ in hf_only.items() if set_]
            if stray:
                raise ValueError(f"Corpus: {', '.join(stray)} only apply with hf_path (this corpus is {kinds[0]})")
        elif self.src_field == self.tgt_field:
            raise ValueError(f"Corpus: src_field and tgt_field are both {self.src_field!r}")

    def local_files(self, *, data_dir: str | os.PathLike[str]) -> list[Path]:
        """The local files this corpus reads, resolved against `data_dir` (globs expanded, sorted)."""
        if self.tsv is not None:
            return [_resolve(self.tsv, data_dir)]
        if self.phrase_table is not None:
            return [_resolve(self.phrase_table, data_dir)]
        if self.src is not None and self.tgt is not None:
            return [_resolve(self.src, data_dir), _resolve(self.tgt, data_dir)]
        files: list[Path] = []
        for pattern in _resolved_data_files(self, data_dir) or []:
            if "://" in pattern:  # remote: nothing local to track
                continue
            matches = sorted(Path(p) for p in glob.glob(pattern, recursive=True))
            files.extend(matches or [Path(pattern)])  # a missing file is reported when it is stat'ed
        return files


def corpus_fingerprint(corpus: Corpus, *, data_dir: str | os.PathLike[str]) -> str:
    """A hash of the corpus spec and of its local files' paths, sizes and mtimes: it changes when they do."""
    record = {"spec": asdict(corpus), "files": _file_signatures(corpus.local_files(data_dir=data_dir))}
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:16]


def load_corpus(
    corpus: Corpus, *, data_dir: str | os.PathLike[str], cache_dir: str | os.PathLike[str]
) -> datasets.Dataset:
    """Read `corpus` into a memory-mapped Dataset with string columns ``src`` and ``tgt``, in file order.

    Text corpora are cached as Arrow under `cache_dir`, keyed by the files' paths, sizes and mtimes,
    so an edited file is read again. Raises `InputError` (file and 1-based line) for bad input.
    """
    if corpus.hf_path is not None:
        return _load_hf(corpus, data_dir=data_dir, cache_dir=cache_dir)
    if corpus.phrase_table is not None:
        from nmt.data.phrase_table import load_phrase_table_pairs

        pairs = load_phrase_table_pairs(_resolve(corpus.phrase_table, data_dir), cache_dir=cache_dir)
        pairs = pairs.select_columns(["src", "tgt"])
        return pairs.select(range(min(corpus.limit, len(pairs)))) if corpus.limit else pairs
    files = corpus.local_files(data_dir=data_dir)
    # Strings and tuples only: `datasets` treats list values in gen_kwargs as shards to split.
    gen_kwargs: dict[str, object] = {
        "paths": tuple(str(p) for p in files),
        "tsv": corpus.tsv is not None,
        "limit": corpus.limit,
        "signatures": _file_signatures(files),
    }
    return _pairs_from_generator(_generate_pairs, gen_kwargs, cache_dir)


def _pairs_from_generator(
    generator: Callable[..., Iterator[dict[str, str | None]]],
    gen_kwargs: dict[str, object],
    cache_dir: str | os.PathLike[str],
) -> datasets.Dataset:
    """An Arrow dataset of {"src", "tgt"} from a generator, cached by `datasets` under a key of its kwargs."""
    try:
        return datasets.Dataset.from_generator(
            generator, features=_FEATURES, cache_dir=os.fspath(cache_dir), gen_kwargs=gen_kwargs
        )
    except DatasetGenerationError as error:
        # `datasets` wraps whatever the generator raised; the user needs our message, not the wrapper's.
        cause = find_input_error(error)
        if cause is None:
            raise
        raise cause from None


def _generate_pairs(
    paths: tuple[str, ...], tsv: bool, limit: int | None, signatures: object
) -> Iterator[dict[str, str]]:
    """Yield the first `limit` (or all) ``{"src", "tgt"}`` records.

    `signatures` is unused here: it only makes the Arrow cache key change when a file does.
    """
    del signatures
    pairs = _tsv_pairs(Path(paths[0])) if tsv else _parallel_pairs(Path(paths[0]), Path(paths[1]))
    yield from itertools.islice(pairs, limit)


def _parallel_pairs(src: Path, tgt: Path) -> Iterator[dict[str, str]]:
    count = 0
    for count, (s, t) in enumerate(itertools.zip_longest(_read_lines(src), _read_lines(tgt)), start=1):
        if s is None or t is None:
            short, other = (src, tgt) if s is None else (tgt, src)
            # Located at the first missing line: the one the other file has and this one lacks.
            raise InputError(
                path=short,
                line=count,
                message=f"line missing: the file ends after line {count - 1}, but {other} goes on "
                "(parallel files must have the same number of lines)",
            )
        yield {"src": s, "tgt": t}


def _tsv_pairs(path: Path) -> Iterator[dict[str, str]]:
    for number, line in enumerate(_read_lines(path), start=1):
        tabs = line.count("\t")
        if tabs != 1:
            raise InputError(
                path=path, line=number, message=f"expected one tab between source and target, found {tabs}"
            )
        s, t = line.split("\t")
        yield {"src": s, "tgt": t}


def _read_lines(path: Path) -> Iterator[str]:
    """Yield the lines of a plain or gzip'd UTF-8 file without their line ends, checking each one.

    Lines end at "\\n" only (like `wc -l`), not at the other characters `str.splitlines` splits on, so a
    stray U+2028 inside a sentence cannot shift the alignment of a parallel corpus. A file that is empty or
    holds only blank lines is an error; blank lines among others are kept (the datamodule drops such
    training pairs).
    """
    number, blank = 0, 0
    for number, raw in enumerate(read_binary_lines(path), start=1):
        if number == 1 and raw == _UTF8_BOM:  # nothing but a BOM: an empty file
            number = 0
            break
        line = _decode_line(raw, path=path, number=number)
        blank += not line.strip()
        yield line
    if number == 0:
        raise InputError(path=path, message="file is empty")
    if blank == number:  # nothing to learn from or to evaluate on: surely the wrong file
        raise InputError(path=path, message=f"all {number} lines are blank")


def _decode_line(raw: bytes, *, path: Path, number: int) -> str:
    if number == 1 and raw.startswith(_UTF8_BOM):
        raw = raw[len(_UTF8_BOM) :]
    if raw.endswith(b"\n"):
        raw = raw[:-2] if raw.endswith(b"\r\n") else raw[:-1]
    if b"\x00" in raw:
        raise InputError(path=path, line=number, message=f"NUL byte at byte {raw.index(0) + 1} of the line")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise InputError(
            path=path,
            line=number,
            message=f"invalid UTF-8: byte 0x{raw[error.start]:02x} at byte {error.start + 1} of the line",
        ) from None


def _load_hf(
    corpus: Corpus, *, data_dir: str | os.PathLike[str], cache_dir: str | os.PathLike[str]
) -> datasets.Dataset:
    assert corpus.hf_path is not None
    data_files = _resolved_data_files(corpus, data_dir)
    source = corpus.hf_path if data_files is None else f"{corpus.hf_path}:{','.join(data_files)}"
    if corpus.hf_streaming:
        return _load_hf_streaming(corpus, data_dir=data_dir, data_files=data_files, source=source, cache_dir=cache_dir)
    loaded = datasets.load_dataset(
        corpus.hf_path, corpus.hf_name, split=corpus.hf_split, data_files=data_files, cache_dir=os.fspath(cache_dir)
    )
    if not isinstance(loaded, datasets.Dataset):
        raise InputError(path=source, message=f"split {corpus.hf_split!r} did not give one dataset")
    # Struct columns become dotted columns ("translation" -> "translation.en"): zero-copy, and it makes
    # the dotted field paths plain column names.
    flat = loaded.flatten()
    for field in (corpus.src_field, corpus.tgt_field):
        if field not in flat.column_names:
            raise InputError(path=source, message=f"no field {field!r}; fields are {', '.join(flat.column_names)}")
        feature = flat.features[field]
        if not (isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string")):
            raise InputError(path=source, message=f"field {field!r} holds {feature}, not text")
    pairs = flat.select_columns([corpus.src_field, corpus.tgt_field]).rename_columns(
        {corpus.src_field: "src", corpus.tgt_field: "tgt"}
    )
    return pairs if corpus.limit is None else pairs.select(range(min(corpus.limit, len(pairs))))


def _load_hf_streaming(
    corpus: Corpus,
    *,
    data_dir: str | os.PathLike[str],
    data_files: list[str] | None,
    source: str,
    cache_dir: str | os.PathLike[str],
) -> datasets.Dataset:
    # Strings and tuples only: `datasets` treats list values in gen_kwargs as shards to split.
    gen_kwargs: dict[str, object] = {
        "spec": json.dumps({**asdict(corpus), "hf_data_files": data_files}, sort_keys=True),
        "source": source,
        # Only makes the Arrow cache key change when a local file does.
        "signatures": _file_signatures(corpus.local_files(data_dir=data_dir)),
    }
    return _pairs_from_generator(_stream_hf_pairs, gen_kwargs, cache_dir)


def _stream_hf_pairs(spec: str, source: str, signatures: object) -> Iterator[dict[str, str | None]]:
    """Yield ``{"src", "tgt"}`` from a streamed Hugging Face dataset, one record at a time."""
    del signatures
    corpus = Corpus(**json.loads(spec))
    stream = datasets.load_dataset(
        corpus.hf_path, corpus.hf_name, split=corpus.hf_split, data_files=corpus.hf_data_files, streaming=True
    )
    for number, record in enumerate(itertools.islice(stream, corpus.limit), start=1):
        yield {
            "src": _text_field(record, corpus.src_field, source=source, number=number),
            "tgt": _text_field(record, corpus.tgt_field, source=source, number=number),
        }


def _text_field(record: dict, field: str, *, source: str, number: int) -> str | None:
    """The text at dotted path `field` of a streamed record (nested dicts, as in ``translation.en``)."""
    value: object = record
    for key in field.split("."):
        if not isinstance(value, dict) or key not in value:
            fields = ", ".join(_field_paths(record))
            raise InputError(path=source, message=f"record {number}: no field {field!r}; fields are {fields}")
        value = value[key]
    if value is not None and not isinstance(value, str):
        what = type(value).__name__
        raise InputError(path=source, message=f"record {number}: field {field!r} holds {what}, not text")
    return value


def _field_paths(record: dict, prefix: str = "") -> Iterator[str]:
    for key, value in record.items():
        if isinstance(value, dict):
            yield from _field_paths(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"


def _resolve(path: str, data_dir: str | os.PathLike[str]) -> Path:
    return Path(data_dir) / Path(path).expanduser()  # an absolute `path` wins over data_dir


def _resolved_data_files(corpus: Corpus, data_dir: str | os.PathLike[str]) -> list[str] | None:
    if corpus.hf_data_files is None:
        return None
    patterns = [corpus.hf_data_files] if isinstance(corpus.hf_data_files, str) else corpus.hf_data_files
    # Remote URLs ("hf://...", "https://...") pass through untouched.
    return [p if "://" in p else os.fspath(_resolve(p, data_dir)) for p in patterns]


def _file_signatures(files: list[Path]) -> tuple[tuple[str, int, int], ...]:
    """(absolute path, size, mtime in ns) of each local file; raises `InputError` for a missing one."""
    return tuple(file_signature(path) for path in files)
