"""Hostile input × every entry point: each case is fed to each command that reads that kind of file, and the
outcome is the one the "Hostile input" table of docs/hostile-input.md promises.

An outcome is either
- ``OK``: exit 0 and a line-exact output (output line i, or array row i, belongs to input line i), or
- ``SAME``: ``OK``, and the output is that of the clean file (the same records, "\\n" line ends, no BOM), up to
  the bytes a byte-exact output keeps (BOM, "\\r\\n", a missing last newline), or
- ``Err(line, what)``: exit 2, a single line on stderr ``nmt CMD: error: FILE[:LINE]: …what…``, no traceback,
  and neither the output file nor a temporary one left behind.

Commands run in-process through ``nmt.cli.main``; the training corpus readers (``nmt fit`` data loading) through
``load_corpus``, whose `InputError` the CLI prints as that same one line (tests/test_training.py).
"""

from __future__ import annotations

import gzip
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
from factories import multi30k_lines

from nmt.cli import main as nmt_main
from nmt.data.corpus import Corpus, load_corpus
from nmt.errors import InputError

# -- the cases ------------------------------------------------------------------------------------------------

# How a text record becomes a line of each format (ids of n-best lines all 0: the source file has one line).
WRAP = {
    "text": lambda t: t,
    "tsv": lambda t: t + b"\t" + t,
    "phrase": lambda t: t + b" ||| " + t + b" ||| 0.5 0.25",
    "nbest": lambda t: b"0 ||| " + t + b" ||| d= -1 lm= -2.5 ||| -3.5",
}
GOOD = [b"a man rides a bike", b"the dog"]
_random, _words = random.Random(0), " ".join(multi30k_lines("val", "en", 50)).split()
MANY = [" ".join(_random.choices(_words, k=9)).encode() for _ in range(3000)]  # too varied to gzip into one block


@dataclass(frozen=True)
class Case:
    """A hostile file: its records (wrapped per format), or raw lines per format for structural faults."""

    records: list[bytes] = field(default_factory=lambda: list(GOOD))
    raw: dict[str, bytes] | None = None  # format -> a line put as it is between two good records
    ending: bytes = b"\n"
    bom: bool = False
    final_newline: bool = True
    gz: str | None = None  # "truncated": half a gzip stream; "corrupt": not gzip at all
    missing: bool = False
    options: tuple[str, ...] = ()  # extra options for the commands that have them (--encoding-errors)

    def lines(self, fmt: str) -> list[bytes]:
        if self.raw is not None:
            return [WRAP[fmt](GOOD[0]), self.raw[fmt], WRAP[fmt](GOOD[1])]
        return [WRAP[fmt](r) for r in self.records]

    def content(self, fmt: str) -> bytes:
        lines = self.lines(fmt)
        data = b"".join(line + self.ending for line in lines)
        if not self.final_newline:
            data = data.removesuffix(self.ending)
        if self.bom:
            data = b"\xef\xbb\xbf" + data
        if self.gz == "truncated":
            whole = gzip.compress(data)
            return whole[: len(whole) // 2]
        if self.gz == "corrupt":
            return b"this is not gzip data\n"
        return data

    def write(self, directory: Path, fmt: str, name: str = "in") -> Path:
        path = directory / (name + (".gz" if self.gz else ".txt"))
        if not self.missing:
            path.write_bytes(self.content(fmt))
        return path

    def clean(self) -> Case:
        return Case(records=self.records, raw=self.raw)


CASES = {
    "empty file": Case(records=[]),
    "empty and blank lines": Case(records=[b"a man", b"", b"   ", b" \xc2\xa0 ", b"the dog"]),  # NBSP
    "only blank lines": Case(records=[b"", b"   "]),
    "invalid UTF-8": Case(records=[b"a man", b"caf\xe9 noir"]),
    "invalid UTF-8, --encoding-errors replace": Case(
        records=[b"a man", b"caf\xe9 noir"], options=("--encoding-errors", "replace")
    ),
    "NUL byte": Case(records=[b"a man", b"a\x00dog"]),
    "UTF-8 BOM": Case(bom=True),
    "CRLF line ends": Case(ending=b"\r\n"),
    "no newline at the end": Case(final_newline=False),
    "10,000-token line": Case(records=[b"a man", b" ".join([b"word"] * 10_000)]),
    "truncated .gz": Case(records=MANY, gz="truncated"),
    "corrupt .gz": Case(gz="corrupt"),
    "missing file": Case(missing=True),
    # structure of phrase tables, n-best lists and TSV files
    "missing field": Case(raw={"tsv": b"no tab", "phrase": b"a ||| b", "nbest": b"0 ||| a ||| d= 1"}),
    "extra field": Case(
        raw={
            "tsv": b"a\tb\tc",
            "phrase": b"a ||| b ||| 0.5 ||| 0-0 ||| 1 1 1 ||| |||",
            "nbest": b"0 ||| a ||| d= 1 ||| -2 ||| 0-0 ||| extra",
        }
    ),
    "non-numeric score": Case(raw={"phrase": b"a ||| b ||| 0.5 high", "nbest": b"0 ||| a ||| d= high ||| -2"}),
    "Moses escapes": Case(
        raw={
            "tsv": b"l&apos;homme &#124; x\tthe &amp; man",
            "phrase": b"l&apos;homme &#124; x ||| the &amp; man ||| 0.5",
            "nbest": b"0 ||| l&apos;homme &#124; x ||| d= 1 ||| -2",
        }
    ),
    "blank line in a table": Case(raw={"tsv": b"", "phrase": b"", "nbest": b"   "}),
}


class Ok(NamedTuple):
    same_as_clean: bool = False
    warns: bool = False  # a warning on stderr names the file and line


class Err(NamedTuple):
    line: int | None
    what: str  # a regular expression the message matches


OK, SAME = Ok(), Ok(same_as_clean=True)
TEXT_COMMANDS = ["translate", "evaluate --hyp", "evaluate --checkpoint", "score --src --tgt", "embed", "fit src+tgt"]
TABLE_COMMANDS = ["score --tsv", "score --phrase-table", "score --nbest", "fit tsv", "fit phrase_table"]
COMMANDS = TEXT_COMMANDS + TABLE_COMMANDS
UTF8, NUL, GZIP, NO_FILE = r"invalid UTF-8", r"NUL byte", r"corrupt or truncated gzip", r"(?i)(no such file)"


def expected(case: str, command: str) -> Ok | Err | None:
    """What `command` does with `case` (None: the case does not apply to that kind of input)."""
    fmt = _format(command)
    if CASES[case].raw is not None:  # a structural fault of one line (line 2) of a table
        if fmt not in CASES[case].raw:
            return None
        return {
            "missing field": Err(2, r"expected one tab between source and target, found 0|malformed .* field\(s\)"),
            "extra field": Err(2, r"found 2") if fmt == "tsv" else OK,
            "non-numeric score": Err(2, r"(score|feature value) 'high' is not a number"),
            "Moses escapes": OK,
            "blank line in a table": Err(2, r"found 0|malformed .* 1 field"),
        }[case]
    if case == "invalid UTF-8, --encoding-errors replace" and command.startswith("fit"):
        return Err(2, UTF8)  # training corpora have no such option: fix the file
    overrides = {
        ("empty file", "evaluate --hyp"): Err(None, "the file is empty"),
        ("empty file", "evaluate --checkpoint"): Err(None, "the file is empty"),
        ("empty file", "embed"): Err(None, "no phrases to embed"),
        ("empty file", "fit src+tgt"): Err(None, "file is empty"),
        ("empty file", "fit tsv"): Err(None, "file is empty"),
        ("empty file", "fit phrase_table"): Err(None, "no phrase pairs"),
        ("only blank lines", "fit src+tgt"): Err(None, "all 2 lines are blank"),
        ("only blank lines", "fit tsv"): Err(None, "all 2 lines are blank"),
        ("10,000-token line", "evaluate --hyp"): OK,  # sacrebleu reads any length
        ("10,000-token line", "fit src+tgt"): OK,  # kept here; the datamodule drops it (max_src_tokens)
        ("10,000-token line", "fit tsv"): OK,
        ("10,000-token line", "fit phrase_table"): OK,
    }
    return overrides.get((case, command), DEFAULTS[case])


DEFAULTS = {
    "empty file": OK,  # streaming commands: nothing in, nothing out
    "empty and blank lines": OK,  # a blank line gives a blank translation / an "empty side" score
    "only blank lines": OK,
    "invalid UTF-8": Err(2, UTF8),
    "invalid UTF-8, --encoding-errors replace": OK,
    "NUL byte": Err(2, NUL),
    "UTF-8 BOM": SAME,
    "CRLF line ends": SAME,
    "no newline at the end": SAME,
    "10,000-token line": Ok(warns=True),
    "truncated .gz": Err(None, GZIP),  # at the line where the stream breaks
    "corrupt .gz": Err(1, GZIP),
    "missing file": Err(None, NO_FILE),
}


def _format(command: str) -> str:
    return next((fmt for key, fmt in FORMAT_OF.items() if key in command), "text")


FORMAT_OF = {"tsv": "tsv", "phrase": "phrase", "nbest": "nbest"}


MATRIX = [(case, command) for case in CASES for command in COMMANDS if expected(case, command) is not None]


# -- running a command ----------------------------------------------------------------------------------------


class Outcome(NamedTuple):
    status: int
    output: list[bytes] | None  # output lines (with their ends), or array rows as bytes; None when none written
    stderr: str


SHORT_SEARCH = ["--beam-size", "1", "--max-length-a", "0", "--max-length-b", "6", "--threads", "1"]


def run(command: str, path: Path, case: Case, checkpoint: Path, work: Path, capsys) -> Outcome:
    """Run `command` on the hostile file `path` (its other inputs are clean)."""
    ckpt = str(checkpoint)
    out = work / ("out.npy" if command == "embed" else "out.txt")
    options = list(case.options)
    if command.startswith("fit"):
        return _fit(command, path, work)
    n_records = len(case.lines(_format(command)))
    argv = {
        "translate": [
            "translate",
            "--checkpoint",
            ckpt,
            "--input",
            str(path),
            "--output",
            str(out),
            "--no-progress",
            *SHORT_SEARCH,
        ],
        "evaluate --hyp": ["evaluate", "--hyp", str(path), "--ref", str(_clean_lines(work, n_records))],
        "evaluate --checkpoint": [
            "evaluate",
            "--checkpoint",
            ckpt,
            "--src",
            str(path),
            "--ref",
            str(_clean_lines(work, n_records)),
            "--output",
            str(out),
            *SHORT_SEARCH,
        ],
        "score --src --tgt": ["score", "--checkpoint", ckpt, "--src", str(path), "--tgt", str(path)],
        "score --tsv": ["score", "--checkpoint", ckpt, "--tsv", str(path)],
        "score --phrase-table": ["score", "--checkpoint", ckpt, "--phrase-table", str(path)],
        "score --nbest": ["score", "--checkpoint", ckpt, "--nbest", str(path), "--src", str(_clean_lines(work, 1))],
        "embed": ["embed", "--checkpoint", ckpt, "--input", str(path), "--output", str(out), "--device", "cpu"],
    }[command]
    if command.startswith("score"):
        argv += ["--output", str(out), "--threads", "1", "--device", "cpu"]
    status = nmt_main(argv + options)
    err = capsys.readouterr().err
    if not out.exists():
        return Outcome(status, None, err)
    if command == "embed":
        rows = [row.tobytes() for row in np.load(out)]
    else:
        rows = out.read_bytes().splitlines(keepends=True)
    out.unlink()
    return Outcome(status, rows, err)


def _clean_lines(work: Path, n: int) -> Path:
    path = work / f"clean{n}.txt"
    path.write_bytes(b"a man\n" * n)
    return path


def _fit(command: str, path: Path, work: Path) -> Outcome:
    kind = command.removeprefix("fit ")
    corpus = Corpus(src=str(path), tgt=str(path)) if kind == "src+tgt" else Corpus(**{kind: str(path)})
    try:
        pairs = load_corpus(corpus, data_dir=work, cache_dir=work / "cache")
    except InputError as error:  # what `nmt fit` prints, after "nmt fit: error: "
        return Outcome(2, None, f"nmt fit: error: {error}\n")
    return Outcome(0, [f"{s}\t{t}\n".encode() for s, t in zip(pairs["src"], pairs["tgt"], strict=True)], "")


# -- the matrix -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("case", "command"), MATRIX, ids=[f"{c} | {m}" for c, m in MATRIX])
def test_hostile_input(case, command, checkpoint, tmp_path, capsys):
    spec, want = CASES[case], expected(case, command)
    path = spec.write(tmp_path, _format(command))
    got = run(command, path, spec, checkpoint, tmp_path, capsys)
    assert "Traceback" not in got.stderr
    if isinstance(want, Err):
        assert got.status == 2, got
        assert got.output is None, "no output file may be left on an error"
        lines = got.stderr.strip().splitlines()
        assert len(lines) == 1, got.stderr
        where = re.escape(str(path)) + (f":{want.line}:" if want.line else r"(:\d+)?:")
        assert re.match(rf"nmt [\w-]+: error: {where} ", lines[0]), lines[0]
        assert re.search(want.what, lines[0]), lines[0]
        if case == "truncated .gz":
            assert 1 < int(re.search(rf"{re.escape(str(path))}:(\d+):", lines[0]).group(1)) <= len(MANY)
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []  # no temporary file
        return
    assert got.status == 0, got.stderr
    records = spec.lines(_format(command))
    if command not in ("evaluate --hyp", "fit phrase_table"):  # scores only / unique pairs
        assert got.output is not None and len(got.output) == len(records), "one output line per input line"
    if command in ("translate", "evaluate --checkpoint"):
        assert all(line.endswith(b"\n") and not line.endswith(b"\r\n") for line in got.output)  # normalised
        for record, line in zip(records, got.output, strict=True):
            if not record.strip():
                assert line == b"\n"  # blank in, blank out
    if command in ("score --phrase-table", "score --nbest"):
        original = spec.content(_format(command)).splitlines(keepends=True)
        for line, before in zip(got.output, original, strict=True):
            assert_byte_exact(line, before)
    if want.warns:
        assert re.search(rf"warning: {re.escape(str(path))}:2: ", got.stderr), got.stderr
    if want.same_as_clean:
        clean = spec.clean().write(tmp_path, _format(command), name="clean")
        reference = run(command, clean, spec.clean(), checkpoint, tmp_path, capsys)
        assert reference.status == 0
        text = command != "embed"
        assert _normalised(got.output, text) == _normalised(reference.output, text)


def assert_byte_exact(line: bytes, before: bytes) -> None:
    """`line` is `before` with something appended to its third field (scores / features) and nothing else."""
    a, b = line.split(b"|||"), before.split(b"|||")
    assert len(a) == len(b) and a[:2] == b[:2] and a[3:] == b[3:]
    assert a[2].startswith(b[2].rstrip()) and len(a[2]) > len(b[2])
    assert a[2].endswith(b[2][len(b[2].rstrip()) :])  # the blanks and line end after the last value


def _normalised(rows: list[bytes] | None, text: bool) -> list[bytes] | None:
    """Text rows without what a byte-exact output keeps of its input: the BOM, CRs, a missing last newline."""
    if rows is None or not text or not rows:
        return rows
    rows = [row.replace(b"\r\n", b"\n") for row in rows]
    rows[0] = rows[0].removeprefix(b"\xef\xbb\xbf")
    rows[-1] = rows[-1] if rows[-1].endswith(b"\n") else rows[-1] + b"\n"
    return rows


# -- parallel files of different lengths ----------------------------------------------------------------------

LENGTH_COMMANDS = {
    "evaluate --hyp": lambda a, b, ckpt: ["evaluate", "--hyp", a, "--ref", b],
    "evaluate --checkpoint": lambda a, b, ckpt: ["evaluate", "--checkpoint", ckpt, "--src", a, "--ref", b],
    "score --src --tgt": lambda a, b, ckpt: ["score", "--checkpoint", ckpt, "--src", a, "--tgt", b, "--threads", "1"],
    "fit src+tgt": None,
}


@pytest.mark.parametrize("command", LENGTH_COMMANDS)
@pytest.mark.parametrize("longer", ["first", "second"])
def test_parallel_files_of_different_lengths(command, longer, checkpoint, tmp_path, capsys):
    """The first file given (hypotheses, source) and the second (references, target) differ by one line: the
    error names the file that lacks the line, or the one that has it, with that line's number."""
    two, three = tmp_path / "two.txt", tmp_path / "three.txt"
    two.write_bytes(b"a man\nthe dog\n")
    three.write_bytes(b"a man\nthe dog\na cat\n")
    first, second = (three, two) if longer == "first" else (two, three)
    if command == "fit src+tgt":
        with pytest.raises(InputError) as error:
            load_corpus(Corpus(src=str(first), tgt=str(second)), data_dir=tmp_path, cache_dir=tmp_path / "cache")
        message = f"nmt fit: error: {error.value}"
    else:
        assert nmt_main(LENGTH_COMMANDS[command](str(first), str(second), str(checkpoint))) == 2
        message = capsys.readouterr().err
    assert len(message.strip().splitlines()) == 1 and "Traceback" not in message
    assert re.search(rf"({re.escape(str(two))}:[23]|{re.escape(str(three))}:3): ", message), message


# -- the plot commands ----------------------------------------------------------------------------------------

METRICS = {  # metrics.csv content -> None (a picture) or (line, what)
    b"": (1, "no 'step' column"),
    b"step,train/loss\n1,2.5\n2,\xff\n": (3, "invalid UTF-8"),
    b"step,train/loss\n1,2.5\n2,1\x00\n": (3, "NUL byte"),
    b"step,train/loss\n1,2.5\n2,high\n": (3, "not a number"),
    b"\xef\xbb\xbfstep,train/loss\n1,2.5\n2,2\n": None,  # BOM
    b"step,train/loss\r\n1,2.5\r\n2,2\r\n": None,  # CRLF
    b"step,train/loss\n1,2.5\n2,2": None,  # no newline at the end
    b"step,train/loss,val/loss\n1,2.5\n2,2,3\n3\n": None,  # short rows: nothing logged there
    b"step,train/loss\n1,2.5\n2,nan\n3,inf\n4,2\n": None,  # a diverged step's loss: a gap in the curve
}


@pytest.mark.parametrize("content", METRICS, ids=[repr(c[:40]) for c in METRICS])
def test_plot_curves_on_hostile_metrics(content, tmp_path, capsys):
    metrics, figure = tmp_path / "metrics.csv", tmp_path / "curves.png"
    metrics.write_bytes(content)
    status = nmt_main(["plot-curves", str(metrics), "--output", str(figure), "--dpi", "20"])
    err = capsys.readouterr().err
    if METRICS[content] is None:
        assert status == 0 and figure.read_bytes()[:4] == b"\x89PNG"
        return
    line, what = METRICS[content]
    assert status == 2 and not figure.exists() and "Traceback" not in err
    assert re.fullmatch(rf"nmt plot-curves: error: {re.escape(str(metrics))}:{line}: [^\n]*{what}[^\n]*\n", err)


@pytest.mark.parametrize(
    ("src", "what"),
    [("   ", "the sentence is empty"), ("caf\udce9", "not valid UTF-8"), ("word " * 10_000, "pieces; a heatmap")],
    ids=["blank", "invalid UTF-8 in argv", "10,000 tokens"],
)
def test_plot_attention_on_hostile_sentences(src, what, checkpoint, tmp_path, capsys):
    figure = tmp_path / "a.png"
    assert nmt_main(["plot-attention", "--checkpoint", str(checkpoint), "--src", src, "--output", str(figure)]) == 2
    err = capsys.readouterr().err
    assert re.fullmatch(rf"nmt plot-attention: error: --src: [^\n]*{what}[^\n]*\n", err) and not figure.exists()


# -- malformed lines copied through -----------------------------------------------------------------------------

MALFORMED = {  # format -> lines, every one but the first and last malformed
    "phrase": [b"a ||| b ||| 0.5", b"a ||| b", b"a ||| b ||| 0.5 high", b"a ||| b\x00 ||| 0.5", b"", b"c ||| d ||| 1"],
    "nbest": [
        b"0 ||| a ||| d= 1 ||| -2",
        b"x ||| a ||| d= 1 ||| -2",
        b"0 ||| a ||| d= one ||| -2",
        b"0 ||| a ||| d= 1",
        b"0 ||| b ||| d= 1 ||| -3",
    ],
    "tsv": [b"a\tb", b"no tab", b"a\tb\tc", b"", b"c\td"],
}


@pytest.mark.parametrize("fmt", MALFORMED)
def test_skip_malformed_keeps_every_line_in_place(fmt, checkpoint, tmp_path):
    lines = MALFORMED[fmt]
    table, out = tmp_path / "in.txt", tmp_path / "out.txt"
    table.write_bytes(b"".join(line + b"\r\n" for line in lines))
    given = {"phrase": ["--phrase-table", str(table)], "tsv": ["--tsv", str(table)]}.get(fmt)
    if given is None:
        (tmp_path / "src").write_bytes(b"a man\n")
        given = ["--nbest", str(table), "--src", str(tmp_path / "src")]
    argv = ["score", "--checkpoint", str(checkpoint), *given, "--output", str(out), "--threads", "1"]
    assert nmt_main(argv + ["--skip-malformed"]) == 0
    written = out.read_bytes().splitlines(keepends=True)
    assert len(written) == len(lines)
    for line, original in zip(written[1:-1], lines[1:-1], strict=True):
        assert line == (b"nan\tnan\t0\n" if fmt == "tsv" else original + b"\r\n")  # copied through
    assert written[0] != lines[0] + b"\r\n" and written[-1] != lines[-1] + b"\r\n"  # scored


def test_a_translation_never_spans_two_lines(checkpoint, tmp_path, monkeypatch, capsys):
    """Even a SentencePiece model that spells a line break (byte fallback, user symbols) cannot shift lines."""
    from nmt.data.tokenizer import Tokenizer

    monkeypatch.setattr(Tokenizer, "decode_tgt", lambda self, ids: ["one\ntwo\r\nthree" for _ in ids])
    source = tmp_path / "in.txt"
    source.write_text("a man\nthe dog\n")
    assert nmt_main(["translate", "--checkpoint", str(checkpoint), "--input", str(source), *SHORT_SEARCH]) == 0
    assert capsys.readouterr().out == "one two  three\n" * 2


# -- option values ------------------------------------------------------------------------------------------------

BIG = str(10**9)
OPTION_CASES = {  # command -> option -> bad values (a tuple: the option's several arguments)
    "translate": {
        "--beam-size": ["0", "-3", "100000", "abc", "2.5"],
        "--n-best": ["0", "6", "100000"],  # 6: more than the beam (5)
        "--alpha": ["-1", "nan", "inf", "11"],
        "--max-length-a": ["-0.5", "nan", "1e9"],
        "--max-length-b": ["-1", "100000", "1"],  # 1: with --max-length-a 0, room for nothing but EOS
        "--batch-tokens": ["0", "-1", BIG],
        "--max-input-tokens": ["0", "-1", BIG],
        "--threads": ["-1", "100000"],
    },
    "evaluate": {
        "--beam-size": ["0", "100000"],
        "--alpha": ["nan"],
        "--max-length-a": ["inf"],
        "--max-length-b": ["0"],
        "--batch-tokens": ["0"],
        "--max-input-tokens": ["0"],
        "--threads": ["-1"],
    },
    "score": {
        "--batch-tokens": ["0", "-5", BIG],
        "--window": ["0", "-1", BIG],
        "--max-len": ["0", "1", BIG],
        "--digits": ["-1", "0", "100"],
        "--floor": ["1", "nan", "-inf"],
        "--threads": ["-1", "100000"],
    },
    "score --nbest": {"--feature-name": ["a b", "RNN=", "x|||y", ""]},
    "embed": {
        "--plot-points": ["0", "-1", BIG],
        "--labels": ["-1", BIG],
        "--batch-tokens": ["0", "-1", BIG],
        "--max-input-tokens": ["0", "-5", BIG],
        "--seed": ["1.5", "x"],
    },
    "plot-attention": {
        "--beam-size": ["0", "100000"],
        "--size": [("0", "0"), ("1000", "1000"), ("-1", "3"), ("nan", "3"), ("3",), ("100", "100")],  # 10^8 pixels
        "--dpi": ["0", "1", "100000", "2000"],  # 2000: the default size at 2000 dpi is too many pixels
    },
    "plot-curves": {
        "--size": [("0", "0"), ("1000", "1000"), ("300", "300")],
        "--dpi": ["0", "100000", "2400"],
    },
    "average": {"--best": ["0", "-1", "x", BIG], "--last": ["0", "1.5", BIG]},
}
OPTIONS = [
    (command, option, value)
    for command, by_option in OPTION_CASES.items()
    for option, values in by_option.items()
    for value in values
]


def _command_line(command: str, checkpoint: Path, work: Path) -> tuple[list[str], list[Path]]:
    """A command line that runs (every input clean and small), and the outputs it would write."""
    ckpt, text, out = str(checkpoint), _clean_lines(work, 2), work / "out.txt"
    figure = work / "fig.png"
    if command == "translate":
        return ["translate", "--checkpoint", ckpt, "--input", str(text), "--output", str(out), *_QUICK], [out]
    if command == "evaluate":
        return ["evaluate", "--checkpoint", ckpt, "--src", str(text), "--ref", str(text), *_QUICK], []
    if command == "score":
        tsv = work / "pairs.tsv"
        tsv.write_text("a man\tun homme\n")
        return ["score", "--checkpoint", ckpt, "--tsv", str(tsv), "--output", str(out), "--device", "cpu"], [out]
    if command == "score --nbest":
        nbest = work / "nbest.txt"
        nbest.write_text("0 ||| un homme ||| d= -1 ||| -1\n")
        argv = ["score", "--checkpoint", ckpt, "--nbest", str(nbest), "--src", str(text), "--output", str(out)]
        return argv, [out]
    if command == "embed":
        npy = work / "out.npy"
        argv = ["embed", "--checkpoint", ckpt, "--input", str(text), "--output", str(npy), "--plot", str(figure)]
        return [*argv, "--device", "cpu"], [npy, figure]
    if command == "plot-attention":
        return ["plot-attention", "--checkpoint", ckpt, "--src", "a man", "--output", str(figure)], [figure]
    if command == "average":
        return ["average", "--run", str(work), "--output", str(out)], [out]
    metrics = work / "metrics.csv"
    metrics.write_text("step,train/loss\n1,2.5\n2,2\n")
    return ["plot-curves", str(metrics), "--output", str(figure)], [figure]


_QUICK = ["--max-length-a", "0", "--max-length-b", "6", "--threads", "1"]  # short translations


@pytest.mark.parametrize(("command", "option", "value"), OPTIONS, ids=[f"{c} {o} {v!r}" for c, o, v in OPTIONS])
def test_an_option_out_of_its_range_is_one_line_naming_it(command, option, value, checkpoint, tmp_path, capsys):
    """Every numeric option of every command has a range: a value outside it (or not a number) is refused in
    one line naming the option, exit status 2, no traceback, nothing written — before any memory is spent."""
    argv, outputs = _command_line(command, checkpoint, tmp_path)
    status = nmt_main([*argv, option, *([value] if isinstance(value, str) else value)])
    err = capsys.readouterr().err
    assert status == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    prog = command.split()[0]
    assert re.match(rf"nmt {prog}: error: {re.escape(option)}: \S", err), err
    assert not any(path.exists() for path in outputs)


def test_a_beam_wider_than_the_target_vocabulary_is_refused(checkpoint, tmp_path, monkeypatch, capsys):
    """The tiny model has 400 target pieces; a wider beam (allowed by a raised maximum) cannot be filled."""
    from nmt import limits

    monkeypatch.setattr(limits.BEAM_SIZE, "high", 10_000)
    for command in ("translate", "evaluate", "plot-attention"):
        argv, outputs = _command_line(command, checkpoint, tmp_path)
        assert nmt_main([*argv, "--beam-size", "401"]) == 2
        err = capsys.readouterr().err
        beam = r"a beam of 401 is wider than its target vocabulary \(400 pieces\): "
        assert re.fullmatch(rf"nmt {command}: error: {re.escape(str(checkpoint))}: {beam}.*\n", err), err
        assert not any(path.exists() for path in outputs)
