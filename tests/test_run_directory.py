"""Where `nmt fit` writes: `trainer.default_root_dir` alone decides it. Checkpoints go to ROOT/checkpoints, the
CSV logs to ROOT/logs/version_N, `--ckpt_path last` resumes from ROOT/checkpoints/last.ckpt, so two runs of
one config from one directory, each given its own --trainer.default_root_dir, do not touch each other's files.
A run stopped by max_steps leaves its final state in last.ckpt, even right after a validation."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
import yaml
from factories import MULTI30K
from test_training import TINY, run_nmt

from nmt.training.cli import train_cli

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
SHORT = ["--data.train.limit", "300", "--data.val.limit", "20", "--trainer.enable_progress_bar", "false"]


def step(checkpoint: Path) -> int:
    return torch.load(checkpoint, weights_only=True)["global_step"]


def logged(root: Path, key: str) -> list[tuple[int, float]]:
    rows: list[tuple[int, float]] = []
    for path in sorted(root.glob("logs/version_*/metrics.csv")):
        with open(path) as f:
            rows.extend((int(r["step"]), float(r[key])) for r in csv.DictReader(f) if r.get(key))
    return rows


@pytest.mark.parametrize("config", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_every_config_names_its_run_directory_once(config: Path) -> None:
    """default_root_dir, and no save_dir or dirpath beside it; last.ckpt from ResumeCheckpoint."""
    trainer = yaml.safe_load(config.read_text())["trainer"]
    assert trainer["default_root_dir"] == f"runs/{config.stem}"
    assert "save_dir" not in (trainer["logger"].get("init_args") or {})
    for callback in trainer["callbacks"]:
        assert "dirpath" not in (callback.get("init_args") or {}), callback
    assert "nmt.training.resume.ResumeCheckpoint" in [callback["class_path"] for callback in trainer["callbacks"]]


@pytest.mark.parametrize("extra_logger", [None, "lightning.pytorch.loggers.TensorBoardLogger"])
def test_checkpoints_and_logs_go_under_default_root_dir(tmp_path: Path, monkeypatch, extra_logger) -> None:
    monkeypatch.chdir(tmp_path)
    args = ["--config", str(TINY), "--trainer.default_root_dir", "elsewhere/run"]
    if extra_logger:
        args.append(f"--trainer.logger+={extra_logger}")
    trainer = train_cli(args, run=False).trainer
    checkpoints = trainer.checkpoint_callbacks
    assert [type(c).__name__ for c in checkpoints] == ["ModelCheckpoint", "ResumeCheckpoint"]
    assert {c.dirpath for c in checkpoints} == {str(tmp_path / "elsewhere" / "run" / "checkpoints")}
    assert [logger.save_dir for logger in trainer.loggers] == ["elsewhere/run"] * len(trainer.loggers)
    assert Path(trainer.loggers[0].log_dir) == Path("elsewhere/run/logs/version_0")
    assert not (tmp_path / "runs").exists()
    # An explicit save_dir stays.
    trainer = train_cli([*args, "--trainer.logger.save_dir", "mine"], run=False).trainer
    assert trainer.loggers[-1].save_dir == "mine"


def test_resume_checkpoint_defaults_to_default_root_dir_without_the_cli(tmp_path: Path) -> None:
    """The Trainer API: last.ckpt in default_root_dir/checkpoints, not in the logger's version directory, and
    `ckpt_path="last"` finds it there."""
    import lightning as L
    from lightning.pytorch.demos.boring_classes import BoringModel, RandomDataset
    from lightning.pytorch.loggers import CSVLogger
    from torch.utils.data import DataLoader

    from nmt.training.resume import ResumeCheckpoint

    class Loader(DataLoader):  # a loader with a state, as ResumeCheckpoint expects (nmt's own resumes mid-epoch)
        def state_dict(self) -> dict:
            return {}

        def load_state_dict(self, state: dict) -> None:
            pass

    class Model(BoringModel):
        def train_dataloader(self) -> DataLoader:
            return Loader(RandomDataset(32, 64))

    def fit(steps: int, **kwargs: object) -> L.Trainer:
        trainer = L.Trainer(
            default_root_dir=tmp_path / "run",
            logger=CSVLogger(tmp_path / "run"),
            callbacks=[ResumeCheckpoint()],
            max_steps=steps,
            limit_train_batches=10,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        trainer.fit(Model(), **kwargs)
        return trainer

    fit(12)  # an epoch and a bit: last.ckpt at step 12
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert step(last) == 12
    trainer = fit(15, ckpt_path="last")
    assert trainer.ckpt_path == str(last) and step(last) == 15


@pytest.mark.slow
def test_two_runs_of_one_config_from_one_directory_keep_to_their_own_directories(tmp_path: Path) -> None:
    common = ["fit", "--config", str(TINY), "--data.data_dir", str(MULTI30K), "--data.cache_dir", str(tmp_path / "c")]
    common += [*SHORT, "--trainer.log_every_n_steps", "1"]
    for name, steps in (("a", 3), ("b", 5)):
        done = run_nmt([*common, "--trainer.default_root_dir", name, "--trainer.max_steps", str(steps)], tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
    a, b = tmp_path / "a", tmp_path / "b"
    assert step(a / "checkpoints" / "last.ckpt") == 3 and step(b / "checkpoints" / "last.ckpt") == 5
    assert [s for s, _ in logged(a, "train/loss")] == [0, 1, 2]
    assert [s for s, _ in logged(b, "train/loss")] == [0, 1, 2, 3, 4]
    assert not (tmp_path / "runs").exists() and not (tmp_path / "lightning_logs").exists()
    # `--ckpt_path last` resumes a from its own last.ckpt (step 3), not from b's newer one (step 5).
    resumed = run_nmt(
        [*common, "--trainer.default_root_dir", "a", "--trainer.max_steps", "4", "--ckpt_path", "last"], tmp_path
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"Restored all states from the checkpoint at {a / 'checkpoints' / 'last.ckpt'}" in resumed.stderr
    assert step(a / "checkpoints" / "last.ckpt") == 4 and step(b / "checkpoints" / "last.ckpt") == 5
    assert [s for s, _ in logged(a, "train/loss")] == [0, 1, 2, 3]  # logs/version_0, then logs/version_1
    assert [s for s, _ in logged(b, "train/loss")] == [0, 1, 2, 3, 4]


@pytest.mark.slow
def test_a_run_stopped_by_max_steps_after_a_validation_leaves_its_final_state(tmp_path: Path, monkeypatch) -> None:
    """From the repository root with the configs' default data_dir (the shipped data/multi30k): one epoch of 7
    batches validated every 3, stopped by max_steps 3 (after the first validation), then resumed to the epoch's
    end, is the run that was never stopped."""
    monkeypatch.delenv("NMT_DATA_DIR", raising=False)
    common = ["fit", "--config", str(TINY), "--data.cache_dir", str(tmp_path / "c"), *SHORT]
    common += ["--trainer.max_epochs", "1", "--trainer.val_check_interval", "3", "--trainer.log_every_n_steps", "1"]
    common += ["--data.batch_tokens", "1500", "--data.tokenizer.vocab_size", "500"]  # the 7 batches of one epoch
    stopped, straight = tmp_path / "stopped", tmp_path / "straight"

    def fit(*args: str) -> None:
        done = run_nmt([*common, *args], ROOT)
        assert done.returncode == 0, done.stderr[-3000:]

    fit("--trainer.default_root_dir", str(stopped), "--trainer.max_steps", "3")
    last = stopped / "checkpoints" / "last.ckpt"
    assert step(last) == 3
    assert [s for s, _ in logged(stopped, "val/loss")] == [2]  # validated after its last batch
    fit("--trainer.default_root_dir", str(stopped), "--ckpt_path", "last")
    fit("--trainer.default_root_dir", str(straight))
    assert logged(stopped, "val/loss") == logged(straight, "val/loss")
    assert logged(stopped, "train/loss") == logged(straight, "train/loss")
    resumed, uninterrupted = (torch.load(p, weights_only=True) for p in (last, straight / "checkpoints" / "last.ckpt"))
    assert resumed["global_step"] == uninterrupted["global_step"] == 7
    for name, weight in uninterrupted["state_dict"].items():
        torch.testing.assert_close(resumed["state_dict"][name], weight, rtol=0, atol=0, msg=name)
