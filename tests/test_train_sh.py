"""scripts/train.sh: what it detects (plain machine, SLURM allocation, torchrun worker) and the `nmt fit`
command it runs, with `srun` and the Python interpreter replaced by stand-ins that print their arguments."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TRAIN_SH = ROOT / "scripts" / "train.sh"


@pytest.fixture
def stand_ins(tmp_path: Path) -> Path:
    """A bin/ with `srun` and `fakepython` (which reports 0 GPUs, or prints the command it was given)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text('#!/bin/sh\necho "srun $*"\n')
    (bin_dir / "fakepython").write_text('#!/bin/sh\nif [ "$1" = -c ]; then echo 0; else echo "python $*"; fi\n')
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    return bin_dir


def train_sh(stand_ins: Path, **env: str) -> tuple[str, str]:
    """(what train.sh said it detected, the command it ran)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "NMT_", "TORCHELASTIC_"))}
    clean.pop("LOCAL_WORLD_SIZE", None)
    clean.update(PATH=f"{stand_ins}{os.pathsep}{os.environ['PATH']}", NMT_PYTHON="fakepython", **env)
    result = subprocess.run(
        ["bash", str(TRAIN_SH), "configs/tiny.yaml", "--trainer.max_epochs", "1"],
        cwd=ROOT, env=clean, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    detected = [line for line in result.stderr.splitlines() if line.startswith("train.sh:")]
    assert len(detected) == 1, result.stderr
    return detected[0], result.stdout.strip()


def test_plain_cpu_machine(stand_ins: Path) -> None:
    detected, command = train_sh(stand_ins)
    assert detected == "train.sh: this machine, CPU, 1 process(es)"
    assert command.endswith("--trainer.accelerator cpu --trainer.devices 1 --trainer.max_epochs 1")
    detected, command = train_sh(stand_ins, NMT_DEVICES="2")
    assert "2 process(es)" in detected and "--trainer.devices 2 --trainer.strategy ddp" in command


def test_slurm_allocation_launches_one_task_per_device_through_srun(stand_ins: Path) -> None:
    detected, command = train_sh(stand_ins, SLURM_JOB_ID="42", SLURM_NNODES="2", SLURM_NTASKS_PER_NODE="4")
    assert detected == "train.sh: SLURM job 42: 2 node(s) x 4 task(s) through srun"
    assert command.startswith("srun --kill-on-bad-exit=1 fakepython -m nmt fit --config configs/tiny.yaml")
    assert "--trainer.num_nodes 2 --trainer.devices 4 --trainer.strategy ddp" in command


def test_torchrun_worker(stand_ins: Path) -> None:
    detected, command = train_sh(stand_ins, TORCHELASTIC_RUN_ID="r", WORLD_SIZE="8", LOCAL_WORLD_SIZE="4", RANK="5")
    assert detected == "train.sh: torchrun worker 5/8 (2 node(s) x 4)"
    assert command.startswith("python -m nmt fit")
    assert "--trainer.num_nodes 2 --trainer.devices 4 --trainer.strategy ddp" in command
