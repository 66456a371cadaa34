"""The README's Python example runs as written."""

from __future__ import annotations

import contextlib
import gzip
import io
import math
import re
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest
from factories import tiny_checkpoint

from nmt.cli import main
from nmt.inference import Translator

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def python_example() -> str:
    """The first ```python block of the section "## From Python"."""
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## From Python\n", 1)
    assert len(section) == 2, 'README has no "## From Python" section'
    block = re.search(r"```python\n(.*?)```", section[1], re.S)
    assert block is not None, 'no ```python block under "## From Python"'
    return block.group(1)


def test_the_python_example_of_the_readme_runs_as_written(tmp_path, monkeypatch):
    example = python_example()
    path = re.search(r'Translator\.load\("([^"]+)"\)', example).group(1)
    checkpoint = tmp_path / path
    checkpoint.parent.mkdir(parents=True)
    shutil.copy(tiny_checkpoint(tmp_path), checkpoint)
    monkeypatch.chdir(tmp_path)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(example, str(README), "exec"), {"__name__": "__readme__"})
    lines = printed.getvalue().splitlines()
    sentences = re.search(r"sentences = (\[.*?\])", example).group(1)
    assert len(lines) == len(eval(sentences)) + 1  # one translation a sentence, then the score
    translator = Translator.load(checkpoint, device="cpu")
    from nmt import SearchConfig

    expected = [t.text for t in translator.translate(eval(sentences), SearchConfig(beam_size=5))]
    assert lines[:-1] == expected
    logprob = float(lines[-1])
    assert math.isfinite(logprob) and logprob < 0
    assert logprob == translator.score(["A dog runs."], ["Un chien court."]).logprob[0]


def readme_command_lines(command: str) -> list[list[str]]:
    """Every `nmt COMMAND` line of the README's ```bash blocks, continuation lines joined, split as a shell would."""
    text = README.read_text(encoding="utf-8")
    found = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words[:2] == ["nmt", command]:
                found.append(words[1:])
    return found


@pytest.mark.parametrize("command", ["score", "embed"])
def test_the_score_and_embed_examples_of_the_readme_run_from_a_fresh_clone(command, tmp_path, monkeypatch):
    """Their inputs ship in data/; the checkpoint they name (the smoke run's) is replaced by a tiny one."""
    examples = readme_command_lines(command)
    assert examples, f"the README has no `nmt {command}` example"
    checkpoint = tiny_checkpoint(tmp_path)
    (tmp_path / "data").symlink_to(ROOT / "data")
    monkeypatch.chdir(tmp_path)
    for argv in examples:
        named = argv[argv.index("--checkpoint") + 1]
        assert named == "runs/tiny/checkpoints/best.ckpt", "the examples use the smoke run's checkpoint"
        argv[argv.index("--checkpoint") + 1] = str(checkpoint)
        for option in ("--phrase-table", "--input"):
            if option in argv:
                assert (ROOT / argv[argv.index(option) + 1]).is_file(), f"{option} names a file that does not ship"
        assert main(argv) == 0, argv
        output = tmp_path / argv[argv.index("--output") + 1]
        if command == "score":
            with gzip.open(output, "rt", encoding="utf-8") as f:
                lines = f.read().splitlines()
            with gzip.open(ROOT / argv[argv.index("--phrase-table") + 1], "rt", encoding="utf-8") as f:
                assert len(lines) == len(f.read().splitlines())
        else:
            phrases = (ROOT / argv[argv.index("--input") + 1]).read_text(encoding="utf-8").splitlines()
            assert np.load(output).shape[0] == len(phrases)
            if "--plot" in argv:
                assert (tmp_path / argv[argv.index("--plot") + 1]).stat().st_size > 0
