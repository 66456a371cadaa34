"""Exact resume from every stop point: a real `nmt fit` stopped by max_steps, by max_time, by SIGTERM, or by
SIGKILL right after a checkpoint or during validation, then resumed with ``--ckpt_path last`` (the shipped
``max_epochs`` kind of config: epochs, an LR schedule on validation BLEU, early stopping), retraces the run
that was never interrupted: the same loss at every step, the same validations, the same final weights and
the same number of updates. A kill while a checkpoint is being written leaves the previous one loadable;
`--ckpt_path last` takes a newer SLURM requeue checkpoint."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from factories import MULTI30K
from lightning.pytorch.callbacks import ModelCheckpoint
from test_training import TINY, run_nmt

from nmt.training.resume import AtomicCheckpointIO, newest_resume_checkpoint

ROOT = Path(__file__).resolve().parents[1]
EPOCHS = 4  # of 7 batches each (300 pairs): 28 updates in all
BATCHES = 7
EVERY = 4  # periodic last.ckpt interval
pytestmark = pytest.mark.slow


def resume_config(directory: Path) -> Path:
    """tiny.yaml on 300 training pairs for EPOCHS epochs, a loss in the CSV for every step, last.ckpt also every
    EVERY steps, the LR halved whenever validation BLEU does not improve (it does not, on this tiny model: so
    a lost or repeated scheduler step shows in the losses), early stopping that never triggers."""
    config = yaml.safe_load(TINY.read_text())
    trainer = config["trainer"]
    trainer["log_every_n_steps"] = 1
    trainer["max_epochs"] = EPOCHS
    trainer["enable_progress_bar"] = False
    for callback in trainer["callbacks"]:
        if callback["class_path"] == "nmt.training.resume.ResumeCheckpoint":
            callback.setdefault("init_args", {})["every_n_train_steps"] = EVERY
    trainer["callbacks"].append(
        {
            "class_path": "lightning.pytorch.callbacks.EarlyStopping",
            "init_args": {"monitor": "val/loss", "mode": "min", "patience": 10, "check_on_train_epoch_end": False},
        }
    )
    config["lr_scheduler"] = {
        "class_path": "lightning.pytorch.cli.ReduceLROnPlateau",
        "init_args": {"monitor": "val/bleu", "mode": "max", "factor": 0.5, "patience": 0},
    }
    config["data"]["train"]["limit"] = 300
    config["data"]["val"]["limit"] = 40
    config["data"]["tokenizer"]["vocab_size"] = 500  # with batch_tokens 1500: BATCHES batches an epoch
    config["data"]["batch_tokens"] = 1500
    path = directory / "resume.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def logged(run_dir: Path, key: str) -> list[tuple[int, float]]:
    """(step, value) of `key` in every CSV log version, oldest version first."""
    rows: list[tuple[int, float]] = []
    for version in sorted(run_dir.glob("logs/version_*"), key=lambda p: int(p.name.split("_")[1])):
        with open(version / "metrics.csv") as f:
            rows.extend((int(r["step"]), float(r[key])) for r in csv.DictReader(f) if r.get(key))
    return rows


def watch(args: list[str], cwd: Path, until: Callable[[], bool], sig: int, timeout: float = 300) -> int:
    """Start `nmt`, send it `sig` as soon as `until()` holds, and return its exit status."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    with open(cwd / "stopped.log", "a") as log:
        process = subprocess.Popen([sys.executable, "-m", "nmt", *args], cwd=cwd, env=env, stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline and process.poll() is None:
                if until():
                    process.send_signal(sig)
                    return process.wait(timeout=120)
                time.sleep(0.01)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    raise AssertionError(f"the condition never held before the run ended:\n{(cwd / 'stopped.log').read_text()[-3000:]}")


def saved_step(path: Path) -> int | None:
    try:
        return torch.load(path, weights_only=True)["global_step"]
    except Exception:  # not there yet, or being replaced
        return None


def test_resume_from_every_stop_point_retraces_the_uninterrupted_run(tmp_path: Path) -> None:
    config = resume_config(tmp_path)
    common = ["fit", "--config", str(config), "--data.data_dir", str(MULTI30K), "--data.cache_dir", str(tmp_path / "c")]
    straight_dir, stops_dir = tmp_path / "straight", tmp_path / "stops"
    straight_dir.mkdir()
    stops_dir.mkdir()
    straight = run_nmt(common, cwd=straight_dir)
    assert straight.returncode == 0, straight.stderr[-3000:]
    run = straight_dir / "runs" / "tiny"
    expected = dict(logged(run, "train/loss"))
    assert sorted(expected) == list(range(EPOCHS * BATCHES)), sorted(expected)
    expected_val = logged(run, "val/loss")
    assert [step for step, _ in expected_val] == [BATCHES * (e + 1) - 1 for e in range(EPOCHS)]
    assert len({round(v, 9) for _, v in logged(run, "lr-Adam")}) > 1  # the schedule changed the LR during the run

    stops = stops_dir / "runs" / "tiny"
    last = stops / "checkpoints" / "last.ckpt"
    resume = [*common, "--ckpt_path", "last"]

    def segment(args: list[str], *, status: int = 0) -> None:
        done = run_nmt(args, cwd=stops_dir)
        assert done.returncode == status, done.stderr[-3000:]

    # 1. max_steps mid-epoch, then a larger max_steps that ends exactly at the epoch end (its validation and
    #    LR step included), then one that crosses into the next epoch.
    segment([*common, "--trainer.max_steps", "5"])
    assert saved_step(last) == 5
    segment([*resume, "--trainer.max_steps", str(BATCHES)])
    assert saved_step(last) == BATCHES
    segment([*resume, "--trainer.max_steps", str(BATCHES + 2)])
    assert saved_step(last) == BATCHES + 2
    # 2. max_time: the run stops wherever the clock says, and validates there at once (not a resume point).
    segment([*resume, "--trainer.max_time", "00:00:00:01"])
    # 3. SIGTERM as soon as a new checkpoint is on disk: Lightning stops at the next batch boundary, last.ckpt is
    #    written there, and the exit status says the run did not finish.
    start = saved_step(last)
    assert start < EPOCHS * BATCHES - BATCHES, start  # work left for the stops below
    status = watch(resume, stops_dir, lambda: saved_step(last) != start, signal.SIGTERM)
    assert status == 128 + signal.SIGTERM, (stops_dir / "stopped.log").read_text()[-3000:]
    assert "terminated (resume with --ckpt_path last)" in (stops_dir / "stopped.log").read_text()
    # 4. SIGKILL during validation (its sample translations are written at its end): last.ckpt is the resume
    #    point before it.
    samples = set(stops.glob("logs/*/samples/*.tsv"))
    watch(resume, stops_dir, lambda: bool(set(stops.glob("logs/*/samples/*.tsv")) - samples), signal.SIGKILL)
    # 5. SIGKILL as soon as the checkpoint written at the start of an epoch is on disk.
    start = saved_step(last)
    assert start < EPOCHS * BATCHES, start

    def at_epoch_start() -> bool:
        step = saved_step(last)
        return step is not None and step != start and step % BATCHES == 0

    watch(resume, stops_dir, at_epoch_start, signal.SIGKILL)
    # 6. The rest of the run.
    segment(resume)

    got = logged(stops, "train/loss")
    assert {step for step, _ in got} == set(expected)
    for step, loss in got:  # steps trained twice (after a kill) must have given the same loss both times
        assert loss == pytest.approx(expected[step], rel=1e-6, abs=1e-7), (step, loss, expected[step])
    # The validations at the epoch ends: the same, and none missing (max_time adds one where it stopped).
    got_val = dict(logged(stops, "val/loss"))
    for step, loss in expected_val:
        assert got_val[step] == pytest.approx(loss, rel=1e-6), (step, got_val.get(step), loss)
    straight_final = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    resumed_final = torch.load(last, weights_only=True)
    assert straight_final["global_step"] == resumed_final["global_step"] == EPOCHS * BATCHES
    assert straight_final["epoch"] == resumed_final["epoch"] == EPOCHS
    for name, weight in straight_final["state_dict"].items():
        torch.testing.assert_close(resumed_final["state_dict"][name], weight, rtol=1e-6, atol=1e-7, msg=name)
    adam = [s["step"] for s in straight_final["optimizer_states"][0]["state"].values()]
    assert adam == [s["step"] for s in resumed_final["optimizer_states"][0]["state"].values()]
    assert straight_final["lr_schedulers"] == resumed_final["lr_schedulers"]


WRITER = """
import sys, torch
from lightning.pytorch.callbacks import ModelCheckpoint
from nmt.training.resume import AtomicCheckpointIO, newest_resume_checkpoint
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
    (path.parent / ".last.ckpt.orphan.partial").write_bytes(b"left by a SIGKILL")
    io.save_checkpoint({"global_step": 3}, path)
    assert torch.load(path, weights_only=True)["global_step"] == 3
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]  # temp files of killed writes are cleaned up


def test_ckpt_path_last_takes_the_newest_of_last_and_the_slurm_requeue_checkpoints(tmp_path: Path) -> None:
    checkpoints = tmp_path / "checkpoints"
    trainer = L.Trainer(
        default_root_dir=tmp_path,
        callbacks=[ModelCheckpoint(dirpath=checkpoints, filename="last")],
        logger=False,
        enable_progress_bar=False,
    )
    checkpoints.mkdir()
    last, requeue = checkpoints / "last.ckpt", tmp_path / "hpc_ckpt_1.ckpt"
    assert newest_resume_checkpoint(trainer) is None  # nothing yet: the run starts from scratch
    last.write_bytes(b"")
    assert newest_resume_checkpoint(trainer) == str(last)
    requeue.write_bytes(b"")
    for path, age in ((last, 100), (requeue, 10)):
        os.utime(path, ns=(time.time_ns() - age * 10**9,) * 2)
    assert newest_resume_checkpoint(trainer) == str(requeue)
    os.utime(last)  # last.ckpt written after the requeue checkpoint
    assert newest_resume_checkpoint(trainer) == str(last)
