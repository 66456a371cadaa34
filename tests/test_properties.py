"""Property-based tests of the line-exact contract: random Unicode (combining marks, right-to-left text, emoji,
control characters, stray CRs, BOMs) through `nmt translate`, and random field layouts through `nmt score`.

- translate: output line i belongs to input line i: as many output lines as input lines (``--n-best``: each
  line's hypotheses carry its id), blank in gives blank out, and line i's translation is the one line i gets
  when translated alone. A line with a NUL byte is the only error, and it is named.
- score: a phrase-table line is scored exactly when it is well-formed (3+ fields, numeric scores, no NUL);
  with ``--skip-malformed`` every other line is copied through byte for byte, and without it the first
  malformed line is the one the error names.
"""

from __future__ import annotations

import contextlib
import io
import re
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nmt.cli import main as nmt_main

PROPERTY = settings(max_examples=25, deadline=None, database=None)
SEARCH = ["--beam-size", "2", "--max-length-a", "0", "--max-length-b", "4", "--threads", "1", "--no-progress"]

HOSTILE_CHARACTERS = [
    "\u0301",  # combining acute accent (alone, or after a letter)
    "e\u0301",
    "\u05e9\u05dc\u05d5\u05dd",  # Hebrew, right to left
    "\u0645\u0631\u062d\u0628\u0627",  # Arabic
    "\u202e",  # right-to-left override
    "\u200f",  # right-to-left mark
    "\U0001f600",  # emoji
    "\U0001f469\u200d\U0001f469\u200d\U0001f467",  # a ZWJ emoji sequence
    "\t",
    "\r",  # a CR inside a line (a CR before the newline is a CRLF line end)
    "\x0b",
    "\x1c",
    "\x85",  # NEL
    "\u2028",  # line separator: not a line end for nmt
    "\ufeff",  # a BOM inside a line
    "\x7f",
    "\x00",  # NUL: the one character that is an error
]
# Any code point but "\n" (which ends lines) and the surrogates (which UTF-8 cannot hold), and the hostile ones.
PIECE = st.one_of(
    st.characters(exclude_categories=("Cs",), exclude_characters="\n\x00"), st.sampled_from(HOSTILE_CHARACTERS)
)
LINE = st.one_of(st.lists(PIECE, max_size=10).map("".join), st.sampled_from(["", " ", "A man rides a bike.", "\u3000"]))


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("examples")


def file_of(lines: list[str], *, ending: str, final_newline: bool, bom: bool, directory: Path) -> Path:
    text = ending.join(lines) + (ending if final_newline and lines else "")
    path = Path(tempfile.mkdtemp(dir=directory)) / "in.txt"
    path.write_bytes(("\ufeff" if bom else "").encode() + text.encode("utf-8"))
    return path


def quietly(argv: list[str]) -> tuple[int, str]:
    """`nmt ARGV` in this process: (exit status, stderr). (capsys is not reset between hypothesis examples.)"""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        status = nmt_main(argv)
    return status, err.getvalue()


def translate(checkpoint: Path, path: Path, *options: str) -> tuple[int, list[str] | None, str]:
    """(exit status, output lines, stderr)."""
    out = path.with_name("out.txt")
    status, err = quietly(["translate", "--checkpoint", str(checkpoint), "--input", str(path), "--output", str(out),
                           *SEARCH, *options])  # fmt: skip
    lines = out.read_text(encoding="utf-8").split("\n") if out.exists() else None
    if lines is not None:
        assert lines[-1] == "", "the output ends with a newline"
        lines = lines[:-1]
    return status, lines, err


def as_read(lines: list[str], ending: str, final_newline: bool, bom: bool) -> list[str]:
    """The text of each line as the reader gives it: the file's first BOM is dropped (ours, or the line's own),
    and a CR just before the newline belongs to the line end."""
    texts = list(lines)
    if texts and not bom:
        texts[0] = texts[0].removeprefix("\ufeff")
    for i, text in enumerate(texts):
        has_end = final_newline or i < len(texts) - 1
        if has_end and ending == "\n" and text.endswith("\r"):
            texts[i] = text[:-1]
    return texts


@PROPERTY
@given(
    lines=st.lists(LINE, max_size=6),
    ending=st.sampled_from(["\n", "\r\n"]),
    final_newline=st.booleans(),
    bom=st.booleans(),
    alone=st.integers(min_value=0),
)
def test_translate_is_line_exact(lines, ending, final_newline, bom, alone, checkpoint, work):
    path = file_of(lines, ending=ending, final_newline=final_newline, bom=bom, directory=work)
    if lines and not final_newline and not lines[-1]:
        lines = lines[:-1]  # an empty last line without its newline is no line at all
    status, output, err = translate(checkpoint, path)
    nul = next((i for i, line in enumerate(lines, start=1) if "\x00" in line), None)
    if nul is not None:
        assert status == 2 and output is None
        assert re.fullmatch(rf"nmt translate: error: {re.escape(str(path))}:{nul}: NUL byte in line\n", err)
        return
    assert status == 0, err
    assert len(output) == len(lines)
    for text, translation in zip(as_read(lines, ending, final_newline, bom), output, strict=True):
        if not text.strip():
            assert translation == ""  # blank in, blank out
    if lines:  # the line alone gives the same translation: output line i is line i's
        i = alone % len(lines)
        single = file_of([lines[i]], ending="\n", final_newline=True, bom=False, directory=work)
        assert translate(checkpoint, single)[1] == [output[i]]


@PROPERTY
@given(lines=st.lists(LINE, min_size=1, max_size=5), n_best=st.integers(min_value=1, max_value=3))
def test_translate_n_best_keeps_every_line_id(lines, n_best, checkpoint, work):
    lines = [line.replace("\x00", "") for line in lines]
    path = file_of(lines, ending="\n", final_newline=True, bom=False, directory=work)
    status, output, _ = translate(checkpoint, path, "--n-best", str(n_best), "--beam-size", "3")
    assert status == 0
    ids = [int(line.split(" ||| ")[0]) for line in output]
    assert ids == sorted(ids) and set(ids) == set(range(len(lines)))
    for i, text in enumerate(as_read(lines, "\n", True, False)):
        assert ids.count(i) == (1 if not text.strip() else n_best)


# -- score: random phrase-table layouts ------------------------------------------------------------------------

PHRASE = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\n|"), max_size=8)
SCORE = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False, width=32).map(lambda x: f"{x:g}"),
    st.sampled_from(["1", "2.718", "-0", "1e-05", "nan", "high", "0,5", "", "&apos;"]),
)
SEPARATOR = st.sampled_from([" ||| ", "|||", "  |||  ", " |||"])


@st.composite
def phrase_table_line(draw) -> str:
    """src ||| tgt ||| scores [||| alignment [||| counts …]], with any number of fields from 1 to 6."""
    fields = [draw(PHRASE), draw(PHRASE), " ".join(draw(st.lists(SCORE, max_size=4)))]
    fields += draw(st.lists(st.sampled_from(["0-0 1-1", "1 1 1", "", "{{x 1}}"]), max_size=3))
    fields = fields[: draw(st.integers(min_value=1, max_value=len(fields)))]
    return draw(SEPARATOR).join(fields)


def well_formed(line: str) -> bool:
    """The oracle: at least 3 fields, every score a number, no NUL."""
    fields = line.split("|||")
    if len(fields) < 3 or "\x00" in line:
        return False
    try:
        [float(token) for token in fields[2].split()]
    except ValueError:
        return False
    return True


@PROPERTY
@given(lines=st.lists(phrase_table_line(), max_size=6), ending=st.sampled_from(["\n", "\r\n"]))
def test_score_keeps_every_phrase_table_line_in_place(lines, ending, checkpoint, work):
    path = file_of(lines, ending=ending, final_newline=True, bom=False, directory=work)
    out = path.with_name("out.txt")
    argv = ["score", "--checkpoint", str(checkpoint), "--phrase-table", str(path), "--output", str(out),
            "--threads", "1", "--device", "cpu", "--window", "3"]  # fmt: skip
    first_bad = next((i for i, line in enumerate(lines, start=1) if not well_formed(line)), None)

    status, err = quietly(argv)
    if first_bad is None:
        assert status == 0, err
    else:
        assert status == 2 and not out.exists()
        assert re.match(rf"nmt score: error: {re.escape(str(path))}:{first_bad}: ", err.splitlines()[-1]), err

    assert quietly([*argv, "--skip-malformed"])[0] == 0
    written = out.read_bytes().decode("utf-8").split(ending)
    assert written[-1] == "" and len(written) - 1 == len(lines)
    for line, result in zip(lines, written, strict=False):
        if not well_formed(line):
            assert result == line  # copied through
            continue
        before, after = line.split("|||"), result.split("|||")
        assert after[:2] == before[:2] and after[3:] == before[3:]
        content = before[2].rstrip(" ")
        assert after[2].startswith(content) and after[2].endswith(before[2][len(content) :])
        new = after[2][len(content) :].split()[0]
        assert 0.0 <= float(new) <= 1.0  # p(tgt | src)
