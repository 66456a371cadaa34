"""The Lightning internals exact resume relies on: what Lightning offers no public form of, in one place.

Each function here reads or writes one private attribute of Lightning's fit loop or trainer, and
``tests/test_lightning_internals.py`` checks, for each, the behaviour nmt relies on, so that a Lightning release
that changes one fails a fast test by name instead of a resumed run drifting from the uninterrupted one. Everything
else of nmt uses Lightning through its public API (hooks, ``Trainer.save_checkpoint``, callbacks' state,
``trainer.global_step`` and the loops' progress counters).

Why each exists: `ResumeCheckpoint` (``nmt.training.resume``) writes ``last.ckpt`` between two training batches,
and must know whether validation follows a batch (`validates_after`), what the logging step is
(`batches_that_stepped`), and record the point in the loop state that Lightning's restart logic reads
(`resume_point_loop_state`); Lightning skips the LR-scheduler step of the epoch it resumed in unless its
"restarting" flag is lowered once the restart is over (`end_restart`); and ``Trainer.fit(ckpt_path="last")`` looks
for ``last.ckpt`` before any hook of the callback runs, where it has no directory yet (`find_last_checkpoints`).
"""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.callbacks import ModelCheckpoint


def find_last_checkpoints(callback: ModelCheckpoint, trainer: L.Trainer, dirpath: str) -> set[str]:
    """The ``last*.ckpt`` files ``ckpt_path="last"`` considers for `callback` (Lightning asks each ModelCheckpoint's
    ``_find_last_checkpoints``, before the callback's `setup`): looked for in `dirpath` when the callback was given
    no directory, which it then keeps, with the filesystem ModelCheckpoint derives from a directory it is given."""
    if callback.dirpath is None:
        callback.dirpath = dirpath
        callback._fs = get_filesystem(dirpath)
    return ModelCheckpoint._find_last_checkpoints(callback, trainer)


def end_restart(trainer: L.Trainer) -> None:
    """Lower the fit loop's "restarting" flag. Lightning keeps it raised until the end of the epoch it resumed in
    and skips that epoch's LR-scheduler step meanwhile (a ReduceLROnPlateau would not lower the LR where the
    uninterrupted run does). Called at the first batch, when the restart is over; the child loops keep theirs."""
    trainer.fit_loop._restarting = False


def batches_that_stepped(trainer: L.Trainer) -> int:
    """Lightning's count of training batches that ended an optimizer step (skipped steps included): the step the
    loggers use, which `trainer.global_step` (optimizer steps taken) is not."""
    return trainer.fit_loop.epoch_loop._batches_that_stepped


def validates_after(trainer: L.Trainer, batch_idx: int) -> bool:
    """Whether Lightning validates after training batch `batch_idx` on its schedule (a stop aside)."""
    loop = trainer.fit_loop.epoch_loop
    if not loop._should_check_val_epoch():
        return False
    if loop.batch_progress.is_last_batch:
        return True
    if getattr(trainer, "_val_check_time_interval", None) is not None:
        return True  # validation by the clock (Lightning 2.6: a timedelta val_check_interval): after any batch
    if trainer.val_check_batch == float("inf"):
        return False
    iteration = loop.total_batch_idx if trainer.check_val_every_n_epoch is None else batch_idx
    return (iteration + 1) % trainer.val_check_batch == 0


def resume_point_loop_state(loops: dict[str, Any], *, epoch: int, batches: int, total_batches: int, steps: int) -> dict:
    """Lightning's loop state (a checkpoint's ``loops``) for the resume point "`batches` batches of `epoch` done".

    Both forms are states Lightning's restart logic recognises and resumes exactly, whether or not the resumed
    run sets ``max_steps``: mid-epoch (``batches > 0``), what Lightning saves after a training batch that no
    validation follows; at an epoch start, what it saves in ``on_train_epoch_start`` (that epoch's start hooks
    run again on resume) with the batch counters of a restart after a batch. Not the state of finished epochs
    alone: under ``max_steps`` Lightning would take that for a stop after the last batch and spend an iteration
    on the validation it thinks is pending. `total_batches` counts the batches trained since the run began and
    `steps` the batches that stepped the optimizer (the logging step); optimizer and scheduler counters stay.
    The training DataLoader's own position (its ``state_dict``, saved by Lightning) is set to the same point.
    """
    fit = dict(loops["fit_loop"])

    def counters(done: int) -> dict[str, int]:  # batch `done` ran and its hooks too, but is not booked complete
        return {"ready": done, "started": done, "processed": done, "completed": done - 1}

    if batches > 0:
        epochs = {"ready": epoch + 1, "started": epoch + 1, "processed": epoch, "completed": epoch}
    else:
        epochs = {"ready": epoch + 1, "started": epoch, "processed": epoch, "completed": epoch}
    fit["epoch_progress"] = {"total": dict(epochs), "current": dict(epochs)}
    fit["epoch_loop.batch_progress"] = {
        "total": counters(total_batches),
        "current": counters(batches),
        "is_last_batch": False,
    }
    # Restarting after a batch, Lightning counts that batch's update in the logging step itself.
    fit["epoch_loop.state_dict"] = {**fit.get("epoch_loop.state_dict", {}), "_batches_that_stepped": steps - 1}
    fit["state_dict"] = {**fit.get("state_dict", {}), "combined_loader": [{"epoch": epoch, "batches_yielded": batches}]}
    return {**loops, "fit_loop": fit}
