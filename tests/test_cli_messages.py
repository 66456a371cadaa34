"""What the ``nmt`` command says when it is used wrongly or asked for help: every mistake on the command line of
an inference command is one line (two at most) on stderr naming the option and the fix, exit status 2, no usage
dump; ``--help`` reads as a user expects; ``nmt --help`` lists the commands and ``nmt --version`` works."""

from __future__ import annotations

import importlib.metadata
import io
import os
import re
import sys
from pathlib import Path

import pytest

from nmt.cli import TOOLS, TRAINING_COMMANDS, main
from nmt.errors import InputError
from nmt.textio import check_input
from tests.factories import tiny_checkpoint


def mistake(argv: list[str], capsys) -> str:
    """stderr of `nmt ARGV`, checked to be a short error: status 2, nothing on stdout, at most two lines."""
    status = main(argv)
    out, err = capsys.readouterr()
    assert status == 2 and out == ""
    assert err.endswith("\n") and 1 <= len(err.splitlines()) <= 2, err
    assert "usage" not in err
    return err


MISTAKES = {
    "underscore spelling": (["translate", "--beam_size", "5"], ["--beam_size: unknown option", "--beam-size?"]),
    "underscore with =": (["translate", "--n_best=3"], ["--n_best: unknown option", "--n-best?"]),
    "misspelt option": (["translate", "--chekpoint", "m.ckpt"], ["--chekpoint: unknown option", "--checkpoint?"]),
    "abbreviation": (["translate", "--checkpoint", "m.ckpt", "--beam", "5"], ["--beam: unknown", "--beam-size?"]),
    "abbreviated flag": (["evaluate", "--hyp", "h", "--ref", "r", "--lowercas"], ["--lowercas:", "--lowercase?"]),
    "plot option": (["plot-curves", "run", "--output", "c.png", "--lables", "a"], ["--lables:", "--labels?"]),
    "missing checkpoint": (["translate"], ["nmt translate: error: --checkpoint: required"]),
    "missing input": (["embed", "--checkpoint", "m", "--output", "v.npy"], ["--input: required"]),
    "missing languages": (["serve", "--checkpoint", "m.ckpt"], ["--source-lang, --target-lang: required"]),
    "choice": (["score", "--checkpoint", "m", "--direction", "src2tg"], ["--direction:", "did you mean src2tgt?"]),
    "stray argument": (["translate", "in.txt"], ["unexpected argument 'in.txt'", "nmt translate --help"]),
    "stray dash": (["translate", "--checkpoint", "m", "-"], ["command line: unexpected argument '-'"]),
    "stray number": (["translate", "--beam-size", "5", "-3"], ["command line: unexpected argument '-3'"]),
    "unknown command": (["transalte", "--checkpoint", "m"], ["nmt: error: unknown command 'transalte'", "translate?"]),
    "unknown training command": (["fitt", "--config", "c.yaml"], ["unknown command 'fitt'; did you mean fit?"]),
}


@pytest.mark.parametrize("argv, expected", MISTAKES.values(), ids=MISTAKES.keys())
def test_a_mistake_is_one_line_naming_the_option_and_the_fix(argv, expected, capsys):
    err = mistake(argv, capsys)
    for text in expected:
        assert text in err


@pytest.mark.parametrize("command", TOOLS)
def test_every_command_refuses_an_unknown_option_in_one_line(command, capsys):
    err = mistake([command, "--no-such-option", "1"], capsys)
    assert err.startswith(f"nmt {command}: error: --no-such-option: unknown option")


@pytest.mark.parametrize("command", TOOLS)
def test_every_command_suggests_the_dashed_spelling_of_its_options(command, capsys):
    from nmt.commands.options import CommandParser

    parser = __import__(TOOLS[command], fromlist=["build_parser"]).build_parser()
    assert isinstance(parser, CommandParser)
    dashed = [o for a in parser._actions for o in a.option_strings if o.startswith("--") and "-" in o[2:]]
    for option in dashed:
        err = mistake([command, option.replace("-", "_").replace("__", "--", 1), "1"], capsys)
        assert f"did you mean {option}?" in err


def help_text(command: str, capsys) -> str:
    with pytest.raises(SystemExit) as exit:
        main([command, "--help"])
    assert exit.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("command", TOOLS)
def test_help_shows_no_markup_python_types_or_doubled_defaults(command, capsys):
    text = help_text(command, capsys)
    assert text.startswith(f"usage: nmt {command}")
    for python in ("`", "str | null", "null", "Literal[", "type:", "NoneType", "<class"):
        assert python not in text, python
    # One entry per option (its invocation line and the indented lines of its help), each default at most once.
    entries = re.split(r"\n  (?=-)", text.partition("\noptions:\n")[2])
    assert len(entries) > 1
    for entry in entries:
        assert entry.count("default:") <= 1, entry


@pytest.mark.parametrize("command", ["translate", "evaluate", "score"])
def test_progress_can_be_switched_both_ways(command, capsys):
    assert "--progress, --no-progress" in help_text(command, capsys)


def test_help_shows_metavars_ranges_and_defaults_readably(capsys):
    text = " ".join(help_text("translate", capsys).split())  # the help as one line, whatever the wrapping
    assert "--checkpoint CKPT" in text and "--input FILE" in text
    assert "--beam-size N beam width (1 = greedy) (1 to 256; default: 5)" in text
    assert "--alpha X exponent of the length penalty (0 to 10; default: 1)" in text
    assert "--checkpoint CKPT a checkpoint written by nmt fit (or nmt export) (required)" in text
    assert "--progress, --no-progress progress on stderr (default: when --output is a file)" in text
    text = " ".join(help_text("score", capsys).split())
    assert "--direction {src2tgt,tgt2src}" in text and "(default: src2tgt)" in text


def test_nmt_help_gives_one_line_per_command(capsys):
    assert main(["--help"]) == 0
    out, err = capsys.readouterr()
    assert err == "" and "`" not in out
    for command in [*TRAINING_COMMANDS, *TOOLS]:
        lines = [line for line in out.splitlines() if line.split()[:1] == [command]]
        assert len(lines) == 1, command
        assert len(lines[0].split()) > 4  # the command and what it does
    assert re.search(r"^  translate +translate lines with beam search", out, re.M)
    assert re.search(r"^  fit +train a model", out, re.M)


def test_nmt_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"nmt {importlib.metadata.version('nmt')}\n"


def test_nmt_alone_shows_the_commands_on_stderr(capsys):
    assert main([]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "translate" in err


# -- inputs ---------------------------------------------------------------------------------------------------


INPUT_OPTIONS = {
    "translate": ["--input", "{dir}"],
    "score": ["--src", "{dir}", "--tgt", "{dir}"],
    "embed": ["--input", "{dir}", "--output", "{out}/v.npy"],
    "evaluate": ["--hyp", "{dir}", "--ref", "{dir}"],
}


@pytest.mark.parametrize("command", INPUT_OPTIONS)
def test_a_directory_input_is_refused_before_the_model_loads(command, tmp_path, capsys):
    # The checkpoint does not exist: the error about the input shows it was checked first.
    given = [arg.format(dir=tmp_path, out=tmp_path) for arg in INPUT_OPTIONS[command]]
    checkpoint = [] if command == "evaluate" else ["--checkpoint", str(tmp_path / "missing.ckpt")]
    err = mistake([command, *checkpoint, *given], capsys)
    assert err == f"nmt {command}: error: {tmp_path}: is a directory; give a file\n"


def test_check_input(tmp_path):
    check_input("-")
    check_input(None)
    (tmp_path / "a.txt").write_text("a\n")
    check_input(tmp_path / "a.txt")
    with pytest.raises(InputError, match="is a directory; give a file"):
        check_input(tmp_path)
    with pytest.raises(InputError, match="cannot open: No such file"):
        check_input(tmp_path / "missing.txt")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt"), architecture="rnnsearch", seed=1)


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_translate_from_a_terminal_says_it_reads_standard_input(checkpoint, capsys, monkeypatch):
    master, slave = os.openpty()
    os.write(master, b"A man rides a bike.\n\x04")  # a typed line, then Ctrl-D
    try:
        with open(slave, encoding="utf-8") as terminal:
            monkeypatch.setattr(sys, "stdin", terminal)
            status = main(["translate", "--no-progress", "--checkpoint", str(checkpoint)])
    finally:
        os.close(master)
    out, err = capsys.readouterr()
    assert status == 0 and len(out.splitlines()) == 1
    assert err == "nmt translate: reading standard input; Ctrl-D to end\n"


def test_translate_from_a_pipe_says_nothing(checkpoint, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"A man rides a bike.\n")))
    status = main(["translate", "--no-progress", "--checkpoint", str(checkpoint)])
    out, err = capsys.readouterr()
    assert status == 0 and len(out.splitlines()) == 1 and err == ""
