"""``scripts/gpu_check.sh``: every device path in one run, one line of figures each; CI runs it on the CPU."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.factories import ROOT

pytestmark = pytest.mark.slow


def test_gpu_check_runs_every_path_on_the_cpu_and_prints_a_line_of_figures_each(tmp_path):
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1", NMT_DATA_DIR=str(tmp_path / "elsewhere"))
    done = subprocess.run(
        ["bash", "scripts/gpu_check.sh", "--device", "cpu", "--config", "configs/tiny.yaml", "--steps", "6",
         "--lines", "40", "--work", str(tmp_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    number = r"[0-9][0-9,]*(\.[0-9]+)?"
    fits = [line for line in lines if line.startswith("fit ")]
    assert [line.split(":")[0] for line in fits] == [
        f"fit cell={cell} precision={precision}"
        for cell in ("paper", "cudnn")
        for precision in ("32-true", "bf16-mixed")
    ]
    assert all(re.search(rf"6 steps in {number} s .*, {number} target tokens/s$", line) for line in fits), fits
    for dtype in ("float32", "bfloat16", "int8"):
        assert any(re.fullmatch(rf"translate dtype={dtype}: 40 lines in {number} s, {number} sentences/s .*", line)
                   for line in lines), lines  # fmt: skip
        for vocabulary in ("full", "shortlist"):
            pattern = rf"evaluate dtype={dtype} vocabulary={vocabulary}: BLEU {number}, 40 lines in {number} s, .*"
            assert any(re.fullmatch(pattern, line) for line in lines), lines
        assert any(re.fullmatch(rf"score dtype={dtype}: 40 pairs in {number} s, {number} pairs/s .*", line)
                   for line in lines), lines  # fmt: skip
    assert lines[-1] == "all paths passed"


def test_gpu_check_names_the_path_that_fails(tmp_path):
    env = dict(os.environ, PYTHON=sys.executable)
    done = subprocess.run(
        ["bash", "scripts/gpu_check.sh", "--device", "cpu", "--config", "configs/no-such.yaml", "--steps", "2",
         "--lines", "5", "--work", str(tmp_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith("gpu_check.sh: FAILED: fit cell=paper precision=32-true")
    assert (
        subprocess.run(["bash", "scripts/gpu_check.sh", "--device", "tpu"], cwd=ROOT, capture_output=True).returncode
        == 2
    )
