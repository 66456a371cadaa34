"""The README's Python example runs as written."""

from __future__ import annotations

import contextlib
import io
import math
import re
import shutil
from pathlib import Path

from factories import tiny_checkpoint

from nmt.inference import Translator

README = Path(__file__).resolve().parents[1] / "README.md"


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
