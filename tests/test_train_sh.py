"""scripts/train.sh: what it detects (plain machine, SLURM allocation, torchrun worker) and the `nmt fit`
command it runs, with `srun` and the Python interpreter replaced by stand-ins that print their arguments."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # trains or starts `nmt` subprocesses: not in the fast tier

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


def test_slurm_job_requeues_on_its_signal_and_the_training_stops_at_a_resume_point(tmp_path: Path) -> None:
    """scripts/slurm/train.sbatch: SIGUSR1 (sent to the batch script before the time limit) requeues the job;
    SLURM's SIGTERM to the training (mimicked by the `scontrol` stand-in) ends it, and the job ends with the
    training's status (143: `nmt fit` stopped at a resume point, not finished)."""
    submit = tmp_path / "submit"
    (submit / "scripts").mkdir(parents=True)
    log, pid = tmp_path / "log", tmp_path / "training.pid"
    fake_train = submit / "scripts" / "train.sh"
    fake_train.write_text(
        "#!/bin/bash\n"
        f'echo "train.sh $*" >> {log}\n'
        f"trap 'echo SIGTERM >> {log}; exit 143' TERM\n"
        f"echo $$ > {pid}\n"
        "while true; do sleep 0.05; done\n"
    )
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(f'#!/bin/sh\necho "scontrol $*" >> {log}\nkill -TERM "$(cat {pid})"\n')
    for tool in (fake_train, bin_dir / "scontrol"):
        tool.chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", SLURM_JOB_ID="42", SLURM_NNODES="1")
    env["SLURM_SUBMIT_DIR"] = str(submit)
    job = subprocess.Popen(
        ["bash", str(ROOT / "scripts" / "slurm" / "train.sbatch"), "configs/tiny.yaml", "--trainer.max_epochs", "1"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not pid.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert pid.exists(), "the training never started"
        job.send_signal(signal.SIGUSR1)
        output, _ = job.communicate(timeout=30)
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode == 143, output
    lines = log.read_text().splitlines()
    assert lines[0].startswith("train.sh configs/tiny.yaml --ckpt_path last")
    assert lines[1:] == ["scontrol requeue 42", "SIGTERM"]
    assert "requeueing" in output
