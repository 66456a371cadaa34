"""Exact resume: a real `nmt fit` killed with SIGKILL mid-epoch and resumed with ``--ckpt_path last`` retraces
the run that was never interrupted, step for step (same losses, same final weights); a kill while a
checkpoint is being written leaves the previous one loadable; `--ckpt_path last` takes a newer SLURM
requeue checkpoint."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from factories import MULTI30K
from lightning.pytorch.callbacks import ModelCheckpoint
from test_training import TINY, column, metrics, run_nmt

from nmt.resume import AtomicCheckpointIO, newest_resume_checkpoint

ROOT = Path(__file__).resolve().parents[1]
STEPS = 16  # the whole run; epochs of 7 batches, so the resumed half crosses an epoch end and its validation
EVERY = 8  # periodic checkpoint interval: the kill comes after the step-8 checkpoint, mid-epoch


def resume_config(directory: Path) -> Path:
    """tiny.yaml on 300 training pairs, a loss in the CSV for every step, last.ckpt also every EVERY steps."""
    config = yaml.safe_load(TINY.read_text())
    trainer = config["trainer"]
    trainer["log_every_n_steps"] = 1
    trainer["max_epochs"] = -1  # max_steps ends every run
    trainer["enable_progress_bar"] = False
    checkpoints = [c for c in trainer["callbacks"] if c["class_path"].endswith("ModelCheckpoint")]
    periodic = {**checkpoints[-1], "init_args": {**checkpoints[-1]["init_args"], "every_n_train_steps": EVERY}}
    trainer["callbacks"] = [*checkpoints, periodic]
    config["data"]["train"]["limit"] = 300
    config["data"]["val"]["limit"] = 40
    path = directory / "resume.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def step_losses(run_dir: Path) -> dict[int, float]:
    """train/loss by global step, from the newest CSV log version (the one a resumed run wrote)."""
    newest = max(run_dir.glob("logs/version_*"), key=lambda p: int(p.name.split("_")[1]))
    with open(newest / "metrics.csv") as f:
        return {int(r["step"]): float(r["train/loss"]) for r in csv.DictReader(f) if r.get("train/loss")}


def kill_after_checkpoint(args: list[str], cwd: Path, checkpoint: Path, *, step: int, timeout: float = 120) -> int:
    """Start `nmt` and SIGKILL it as soon as `checkpoint` holds global step >= `step`; returns that step."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    with open(cwd / "killed.log", "w") as log:
        process = subprocess.Popen([sys.executable, "-m", "nmt", *args], cwd=cwd, env=env, stdout=log, stderr=log)
        deadline, seen = time.monotonic() + timeout, 0
        try:
            while time.monotonic() < deadline and process.poll() is None:
                if checkpoint.exists() and checkpoint.stat().st_mtime_ns != seen:
                    seen = checkpoint.stat().st_mtime_ns
                    saved = torch.load(checkpoint, weights_only=True)["global_step"]
                    if saved >= step:
                        process.send_signal(signal.SIGKILL)
                        process.wait()
                        return saved
                time.sleep(0.02)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    raise AssertionError(f"no step-{step} checkpoint before the run ended:\n{(cwd / 'killed.log').read_text()[-3000:]}")


def test_killed_and_resumed_run_retraces_the_uninterrupted_one(tmp_path: Path) -> None:
    config = resume_config(tmp_path)
    common = [
        "fit",
        "--config",
        str(config),
        "--data.data_dir",
        str(MULTI30K),
        "--data.cache_dir",
        str(tmp_path / "cache"),
    ]
    straight_dir, crash_dir = tmp_path / "straight", tmp_path / "crash"
    straight_dir.mkdir()
    crash_dir.mkdir()

    straight = run_nmt([*common, "--trainer.max_steps", str(STEPS)], cwd=straight_dir)
    assert straight.returncode == 0, straight.stderr[-3000:]
    expected = step_losses(straight_dir / "runs" / "tiny")
    assert sorted(expected) == list(range(STEPS)), sorted(expected)

    # The same run, but with no end in sight: killed once its periodic checkpoint is on disk.
    last = crash_dir / "runs" / "tiny" / "checkpoints" / "last.ckpt"
    killed_at = kill_after_checkpoint([*common, "--trainer.max_steps", "1000"], crash_dir, last, step=EVERY)
    assert EVERY <= killed_at < STEPS
    resumed = run_nmt([*common, "--trainer.max_steps", str(STEPS), "--ckpt_path", "last"], cwd=crash_dir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    got = step_losses(crash_dir / "runs" / "tiny")

    assert sorted(got) == list(range(killed_at, STEPS))
    for step, loss in got.items():
        assert loss == pytest.approx(expected[step], rel=1e-6, abs=1e-7), (step, loss, expected[step])
    # Validation after the epoch end that the resumed half crossed: the same loss too.
    assert column(metrics(crash_dir / "runs" / "tiny"), "val/loss")[-1] == pytest.approx(
        column(metrics(straight_dir / "runs" / "tiny"), "val/loss")[-1], rel=1e-6
    )
    straight_final = torch.load(straight_dir / "runs" / "tiny" / "checkpoints" / "last.ckpt", weights_only=True)
    resumed_final = torch.load(last, weights_only=True)
    assert straight_final["global_step"] == resumed_final["global_step"] == STEPS
    for name, weight in straight_final["state_dict"].items():
        torch.testing.assert_close(resumed_final["state_dict"][name], weight, rtol=1e-6, atol=1e-7, msg=name)


WRITER = """
import sys, torch
from lightning.pytorch.callbacks import ModelCheckpoint
from nmt.resume import AtomicCheckpointIO, newest_resume_checkpoint
io, step = AtomicCheckpointIO(), 0
while True:
    step += 1
    io.save_checkpoint({"global_step": step, "weights": torch.full((8_000_000,), float(step))}, sys.argv[1])
    print(step, flush=True)
"""


@pytest.mark.parametrize("delay", [0.3, 0.7])
def test_sigkill_while_writing_checkpoints_leaves_a_whole_one(tmp_path: Path, delay: float) -> None:
    path = tmp_path / "last.ckpt"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout is not None
        written = int(writer.stdout.readline())  # one whole checkpoint on disk; now it writes the next ones
        time.sleep(delay)  # 32 MB a checkpoint: the kill most likely lands in the middle of a write
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    checkpoint = torch.load(path, weights_only=True)
    assert checkpoint["global_step"] >= written
    assert bool((checkpoint["weights"] == checkpoint["global_step"]).all())


def test_a_failed_write_leaves_the_previous_checkpoint_and_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    io = AtomicCheckpointIO()
    path = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"global_step": 1}, path)

    def dies_halfway(obj: object, f: object) -> None:
        f.write(b"PK\x03\x04 half a zip archive")  # type: ignore[attr-defined]
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"global_step": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True)["global_step"] == 1
    (path.parent / ".last.ckpt.orphan.tmp").write_bytes(b"left by a SIGKILL")
    io.save_checkpoint({"global_step": 3}, path)
    assert torch.load(path, weights_only=True)["global_step"] == 3
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]  # temp files of killed writes are cleaned up


def test_ckpt_path_last_prefers_a_newer_slurm_requeue_checkpoint(tmp_path: Path) -> None:
    checkpoints = tmp_path / "checkpoints"
    trainer = L.Trainer(
        default_root_dir=tmp_path,
        callbacks=[ModelCheckpoint(dirpath=checkpoints, filename="last")],
        logger=False,
        enable_progress_bar=False,
    )
    checkpoints.mkdir()
    last, requeue = checkpoints / "last.ckpt", tmp_path / "hpc_ckpt_1.ckpt"
    last.write_bytes(b"")
    assert newest_resume_checkpoint(trainer) is None  # no requeue checkpoint: Lightning's own "last"
    requeue.write_bytes(b"")
    for path, age in ((last, 100), (requeue, 10)):
        os.utime(path, ns=(time.time_ns() - age * 10**9,) * 2)
    assert newest_resume_checkpoint(trainer) == str(requeue)
    os.utime(last)  # last.ckpt written after the requeue checkpoint
    assert newest_resume_checkpoint(trainer) == str(last)
