"""`nmt.training.lightning_internals`: for each Lightning internal exact resume relies on, the behaviour nmt relies
on, checked on Lightning's own demo model, so that a Lightning release that changes one fails here by name."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.demos.boring_classes import BoringModel, RandomDataset
from torch.utils.data import DataLoader

from nmt.training.lightning_internals import (
    batches_that_stepped,
    end_restart,
    find_last_checkpoints,
    resume_point_loop_state,
    validates_after,
)


def trainer(tmp_path: Path, callback: L.Callback, **options) -> L.Trainer:
    defaults = dict(max_epochs=1, limit_val_batches=1, logger=False, enable_checkpointing=False)
    defaults |= dict(enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    return L.Trainer(default_root_dir=tmp_path, callbacks=[callback], **(defaults | options))


class Record(L.Callback):
    def __init__(self) -> None:
        self.seen: list[tuple] = []


def test_batches_that_stepped_is_the_logging_step_before_the_batch_counts(tmp_path: Path) -> None:
    class Stepped(Record):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            self.seen.append((batch_idx, batches_that_stepped(trainer), trainer.global_step))

    record = Stepped()
    run = trainer(tmp_path, record, limit_train_batches=4, accumulate_grad_batches=2)
    run.fit(BoringModel())
    # In the hook of the batch that steps, the optimizer step is taken (global_step) but not yet counted here.
    assert record.seen == [(0, 0, 0), (1, 0, 1), (2, 1, 1), (3, 1, 2)]
    assert batches_that_stepped(run) == 2


def test_validates_after_is_true_exactly_after_the_batches_lightning_validates_after(tmp_path: Path) -> None:
    class Validations(Record):
        def __init__(self) -> None:
            super().__init__()
            self.predicted: list[int] = []
            self.last = -1

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            self.last = batch_idx
            if validates_after(trainer, batch_idx):
                self.predicted.append(batch_idx)

        def on_validation_start(self, trainer, pl_module) -> None:
            self.seen.append(self.last)

    for options in ({"val_check_interval": 2}, {"check_val_every_n_epoch": 2, "max_epochs": 2}, {}):
        record = Validations()
        trainer(tmp_path, record, limit_train_batches=5, **options).fit(BoringModel())
        # (After an epoch's last batch it answers True, for the epoch end, where ResumeCheckpoint never writes.)
        assert [i for i in record.predicted if i < 4] == [i for i in record.seen if i < 4], options
    assert record.seen == [4]  # the default: after an epoch's last batch


class PositionedLoader(DataLoader):
    """A DataLoader with a position, as nmt's training loader has (Lightning saves and restores it)."""

    restored: dict | None = None

    def state_dict(self) -> dict:
        return {"epoch": 0, "batches_yielded": 0}

    def load_state_dict(self, state: dict) -> None:
        PositionedLoader.restored = state


class PositionedModel(BoringModel):
    def train_dataloader(self) -> DataLoader:
        return PositionedLoader(RandomDataset(32, 64), batch_size=2)


def test_a_resume_point_loop_state_restarts_after_its_batch_and_end_restart_lowers_the_flag(tmp_path: Path) -> None:
    path = tmp_path / "point.ckpt"

    class SaveAfterTwo(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            if batch_idx == 1:
                trainer.save_checkpoint(path)

        def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
            # As ResumeCheckpoint records it: 2 batches of epoch 0 done, 2 batches in all, 2 logging steps.
            checkpoint["loops"] = resume_point_loop_state(
                checkpoint["loops"], epoch=0, batches=2, total_batches=2, steps=2
            )

    trainer(tmp_path, SaveAfterTwo(), limit_train_batches=5).fit(PositionedModel())

    class Resumed(Record):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            restarting = trainer.fit_loop.restarting
            end_restart(trainer)
            self.seen.append((trainer.current_epoch, batch_idx, trainer.global_step, restarting))
            assert not trainer.fit_loop.restarting

    record = Resumed()
    run = trainer(tmp_path, record, limit_train_batches=5)
    run.fit(PositionedModel(), ckpt_path=path)
    assert record.seen[0] == (0, 2, 2, True)  # batch 2 of epoch 0 next, the restart flag raised until lowered
    assert [seen[1] for seen in record.seen] == [2, 3, 4] and run.global_step == 5
    assert batches_that_stepped(run) == 5
    assert PositionedLoader.restored == {"epoch": 0, "batches_yielded": 2}  # the loader's own position, restored
    assert (
        torch.load(path, weights_only=True)["loops"]["fit_loop"]["epoch_loop.state_dict"]["_batches_that_stepped"] == 1
    )


def test_find_last_checkpoints_looks_in_the_directory_given(tmp_path: Path) -> None:
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    directory = tmp_path / "checkpoints"
    directory.mkdir()
    for name in ("last.ckpt", "last-v1.ckpt", "best.ckpt"):
        (directory / name).write_bytes(b"")
    callback = ModelCheckpoint()  # no dirpath: Lightning's own choice would be the logger's version directory
    run = L.Trainer(default_root_dir=tmp_path, logger=CSVLogger(tmp_path), callbacks=[callback])
    found = find_last_checkpoints(callback, run, str(directory))
    assert found == {str(directory / "last.ckpt"), str(directory / "last-v1.ckpt")}
    assert callback.dirpath == str(directory)
