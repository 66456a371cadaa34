"""What lets a stopped run continue as if nothing happened: where ``last.ckpt`` is written, crash-safe
checkpoint files, and the random states.

* `ResumeCheckpoint` writes ``last.ckpt`` (in ``default_root_dir/checkpoints`` unless given another directory)
  only at points from which training can go on exactly as the uninterrupted run would (between two training
  batches, with any validation of the earlier one done), and records that point explicitly in the checkpoint's
  loop state. Lightning's own checkpoints are written wherever a hook fires (after the last batch but before
  the epoch's validation, during the epoch-end hooks, after a stop by ``max_steps``/``max_time`` that Lightning
  books as a finished epoch) and resuming from those skips or repeats work.
* `AtomicCheckpointIO` writes a checkpoint to a temporary file beside its target, flushes it to disk and
  renames it over the target, so a kill at any moment leaves either the previous checkpoint or the new
  one, whole. (Lightning's own writer stages the file in the system temp directory and moves it: a copy,
  not a rename, whenever that directory is on another filesystem, as it usually is on a cluster.)
* `collect_rng_states` / `restore_rng_states`: every rank's torch (CPU and its GPU), numpy and Python random states,
  which Lightning does not checkpoint; restored, dropout draws the same masks as in an uninterrupted run.

The step, epoch, optimizer and scheduler states are Lightning's; the position inside the epoch's batch
order is the training DataLoader's `state_dict` (``nmt.data.datamodule``).
"""

from __future__ import annotations

import glob
import os
import random
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO
from weakref import proxy

import lightning as L
import numpy as np
import torch
from fsspec.utils import get_protocol
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.callbacks import ModelCheckpoint, OnExceptionCheckpoint
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from lightning.pytorch.utilities.exceptions import SIGTERMException

from nmt.textio import replacing
from nmt.training.lightning_internals import (
    batches_that_stepped,
    end_restart,
    find_last_checkpoints,
    resume_point_loop_state,
    validates_after,
)

__all__ = [
    "AtomicCheckpointIO",
    "ResumeCheckpoint",
    "collect_rng_states",
    "default_checkpoint_dir",
    "install_atomic_checkpoint_io",
    "newest_resume_checkpoint",
    "restore_rng_states",
    "use_default_checkpoint_dir",
]


class AtomicCheckpointIO(TorchCheckpointIO):
    """`TorchCheckpointIO` whose local writes are atomic and durable: temp file in the target's directory,
    fsync, `os.replace`, fsync of the directory. Remote paths (``s3://`` …) keep Lightning's writer."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None) -> None:
        if storage_options is not None or not _is_local(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        write_atomically(Path(path), lambda f: torch.save(checkpoint, f))


def write_atomically(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Call ``write(file)`` through the one atomic writer (`nmt.textio.replacing`): a hidden ``.NAME.….partial``
    file beside `path` that neither `--ckpt_path last` nor a ModelCheckpoint ever picks up, fsync'd and renamed
    to `path`, the rename made durable."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with replacing(path) as tmp, open(tmp, "wb") as f:
        write(f)
    # Temp files of writes that were killed (SIGKILL leaves no chance to clean up) would pile up otherwise;
    # one process writes a given checkpoint at a time.
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.partial"):
        stale.unlink(missing_ok=True)


def install_atomic_checkpoint_io(trainer: L.Trainer) -> None:
    """Make `trainer` write checkpoints with `AtomicCheckpointIO`, unless it was given a CheckpointIO of its own."""
    if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
        trainer.strategy.checkpoint_io = AtomicCheckpointIO()


def _is_local(path: str | os.PathLike) -> bool:
    """Whether `path` is a local file path (no ``s3://``, ``gs://`` … protocol)."""
    return get_protocol(os.fspath(path)) in ("file", "local")


def default_checkpoint_dir(trainer: L.Trainer) -> str:
    """``default_root_dir/checkpoints``, the directory of a run's checkpoints (what Lightning takes for a
    ModelCheckpoint without a dirpath when the trainer has no logger), normalised as ModelCheckpoint normalises
    the dirpath it is given."""
    path = os.path.join(trainer.default_root_dir, "checkpoints")
    return os.path.realpath(os.path.expanduser(path)) if _is_local(path) else path


def use_default_checkpoint_dir(callback: ModelCheckpoint, trainer: L.Trainer) -> None:
    """Give `callback` the directory `default_checkpoint_dir` if it was given none."""
    if callback.dirpath is None:  # set before `setup`, which derives the callback's filesystem from it
        callback.dirpath = default_checkpoint_dir(trainer)


class ResumeCheckpoint(ModelCheckpoint):
    """Writes ``last.ckpt`` (what ``--ckpt_path last`` resumes from) at exact resume points only.

    A resume point is a place between two training batches of epoch ``e``: ``b`` batches done, their
    updates, logging and any validation that follows them done, nothing of batch ``b`` started (``b = 0``:
    every earlier epoch finished, its validation, LR-scheduler step and early-stopping check included).
    It is written

    * every `every_n_train_steps` updates, after the batch that reaches the count (or the next batch that
      is not followed by validation and not inside a gradient-accumulation window);
    * at the start of every epoch;
    * when training stops: after the batch at which ``max_steps`` or ``max_time`` (or an early stop) ends the
      run, before the validation Lightning then runs at once (after it, at the end of the run, when that batch
      is one the schedule validates after); at the end of the run when its last epoch was finished; and after
      SIGTERM, at the batch boundary where Lightning stops (nothing is written when the signal lands during
      validation or the epoch-end hooks: ``last.ckpt`` is then the previous point).

    The checkpoint's loop state is rewritten to describe that point exactly (``resume_point_loop_state``), so
    Lightning's restart logic resumes with batch ``b`` of epoch ``e`` whatever hook wrote it.
    """

    def __init__(self, dirpath: str | os.PathLike | None = None, every_n_train_steps: int = 0) -> None:
        """
        Args:
            dirpath: directory of ``last.ckpt`` (default: ``checkpoints`` under the trainer's ``default_root_dir``).
            every_n_train_steps: also write it every this many updates (0: at epoch starts and stops only).
        """
        if every_n_train_steps < 0:
            raise ValueError(f"every_n_train_steps must be >= 0, got {every_n_train_steps}")
        super().__init__(dirpath=dirpath, filename=self.CHECKPOINT_NAME_LAST, enable_version_counter=False)
        self.every = every_n_train_steps
        self._point: tuple[int, int, int] | None = None  # (epoch, batches done, logging step) of the write in progress
        self._saved_step = -1  # trainer.global_step at the last write (or at the point resumed from)

    @property
    def state_key(self) -> str:
        # The key of its state in a checkpoint's "callbacks": the form Lightning's callbacks use (class name and
        # the arguments that tell two instances apart), unchanged since nmt 0.1.0 so that older checkpoints match.
        options = {"dirpath": os.fspath(self.dirpath) if self.dirpath else None, "every": self.every}
        return f"{type(self).__qualname__}{options!r}"

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        use_default_checkpoint_dir(self, trainer)
        super().setup(trainer, pl_module, stage)

    def _find_last_checkpoints(self, trainer: L.Trainer) -> set[str]:
        # Lightning's lookup for `Trainer.fit(ckpt_path="last")`, before `setup`: in our default directory too.
        return find_last_checkpoints(self, trainer, default_checkpoint_dir(trainer))

    # ModelCheckpoint's own saving hooks fire at points that are not resume points: replaced by ours.
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pass

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pass

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._saved_step = trainer.global_step  # the point just resumed from is on disk already
        if trainer.ckpt_path is not None:  # restored by now: say from where, and which point of the run
            rank_zero_info(
                f"resuming from {trainer.ckpt_path}: epoch {trainer.current_epoch}, step {trainer.global_step}"
            )

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        end_restart(trainer)  # by the first batch the restart is over (see `end_restart`)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_step != self._saved_step:
            self._save_point(trainer, trainer.current_epoch, 0, steps=batches_that_stepped(trainer))

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int
    ) -> None:
        done = batch_idx + 1
        stopping = trainer.should_stop or (trainer.max_steps != -1 and trainer.global_step >= trainer.max_steps)
        due = self.every and trainer.global_step - self._saved_step >= self.every
        if not (stopping or due) or trainer.global_step == self._saved_step:
            return
        if done >= trainer.num_training_batches or done % trainer.accumulate_grad_batches:
            return  # the epoch end, or inside an accumulation window: not a resume point
        if validates_after(trainer, batch_idx):
            return  # written once validation is done: at the next batch, or when the run ends
        # Lightning counts this batch's update in the logging step only after this hook.
        self._save_point(trainer, trainer.current_epoch, done, steps=batches_that_stepped(trainer) + 1)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_step == self._saved_step:
            return
        if _epoch_finished(trainer):
            self._save_point(trainer, trainer.current_epoch, 0, steps=batches_that_stepped(trainer))
            return
        # Stopped inside an epoch (max_steps, max_time, an early stop) right after a batch that validation
        # followed: `on_train_batch_end` left that point for after the validation, which is now.
        progress = trainer.fit_loop.epoch_progress.current
        done = trainer.fit_loop.epoch_loop.batch_progress.current.completed
        if 0 < done < trainer.num_training_batches and done % trainer.accumulate_grad_batches == 0:
            # Lightning books an epoch cut short as finished: the batches were those of the last epoch started.
            self._save_point(trainer, progress.started - 1, done, steps=batches_that_stepped(trainer))

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        # Lightning raises SIGTERMException only between batches (after validation) or after an epoch's end.
        if not isinstance(exception, SIGTERMException) or trainer.validating or trainer.sanity_checking:
            return
        if trainer.global_step == self._saved_step:
            return
        if _epoch_finished(trainer):
            self._save_point(trainer, trainer.current_epoch, 0, steps=batches_that_stepped(trainer))
            return
        progress = trainer.fit_loop.epoch_progress.current
        done = trainer.fit_loop.epoch_loop.batch_progress.current.completed
        if progress.completed < progress.started and done % trainer.accumulate_grad_batches == 0:
            if done < trainer.num_training_batches:
                self._save_point(trainer, progress.completed, done, steps=batches_that_stepped(trainer))

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        if self._point is not None:
            epoch, batches, steps = self._point
            checkpoint["epoch"] = epoch
            checkpoint["loops"] = resume_point_loop_state(
                checkpoint["loops"],
                epoch=epoch,
                batches=batches,
                total_batches=trainer.fit_loop.epoch_loop.batch_progress.total.processed,
                steps=steps,
            )

    def _save_point(self, trainer: L.Trainer, epoch: int, batches: int, *, steps: int) -> None:
        path = self.format_checkpoint_name({})
        self._point = (epoch, batches, steps)
        try:
            trainer.save_checkpoint(
                path, weights_only=False
            )  # the whole training state; every rank: a collective (on_save_checkpoint above rewrites the loops)
        finally:
            self._point = None
        self._saved_step = trainer.global_step
        if trainer.is_global_zero:
            for logger in trainer.loggers:  # what ModelCheckpoint tells them (W&B's log_model uploads the file)
                logger.after_save_checkpoint(proxy(self))


def _epoch_finished(trainer: L.Trainer) -> bool:
    """Whether the epoch Lightning last ran went through all its batches and its whole end (validation, epoch-end
    hooks, LR-scheduler step). Lightning books an epoch cut short by a stop as finished too: not this."""
    progress = trainer.fit_loop.epoch_progress.current
    batches = trainer.fit_loop.epoch_loop.batch_progress.current.completed
    return progress.completed == progress.started and batches >= trainer.num_training_batches


def newest_resume_checkpoint(trainer: L.Trainer) -> str | None:
    """The file ``--ckpt_path last`` resumes from, as Lightning picks it and then some: the newest of the
    ModelCheckpoints' ``last*.ckpt``, an OnExceptionCheckpoint's file and Lightning's SLURM requeue checkpoints
    (``default_root_dir/hpc_ckpt_N.ckpt``, written when SLURM signals a preemption or the time limit), so that a
    requeued job resumes from whichever is newer. None when there is none of them."""
    candidates = [os.fspath(path) for path in Path(trainer.default_root_dir).glob("hpc_ckpt_*.ckpt")]
    for callback in trainer.callbacks:
        if isinstance(callback, OnExceptionCheckpoint):
            candidates.append(callback.ckpt_path)
        elif isinstance(callback, ModelCheckpoint) and callback.dirpath:
            fs = get_filesystem(callback.dirpath)
            if fs.isdir(callback.dirpath):
                names = fs.ls(callback.dirpath, detail=False)
                candidates += [name for name in names if re.match(r"last.*\.ckpt$", os.path.basename(name))]
    modified = {}
    for path in candidates:
        fs = get_filesystem(path)
        if fs.isfile(path):
            modified[path] = os.stat(path).st_mtime_ns if _is_local(path) else fs.modified(path).timestamp()
    return max(modified, key=modified.get) if modified else None


def _local_rng_state() -> dict[str, Any]:
    """This process's random states as plain data (tensors, ints, lists), so checkpoints load with
    ``torch.load(weights_only=True)``."""
    kind, key, pos, has_gauss, cached_gaussian = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        # The current device's only: under DDP each rank uses one GPU, and touching the others would
        # create a CUDA context on each of them.
        "cuda": torch.cuda.get_rng_state() if torch.cuda.is_initialized() else None,
        "numpy": [kind, torch.from_numpy(key.astype(np.int64)), pos, has_gauss, cached_gaussian],
        "python": [version, list(internal), gauss_next],
    }


def collect_rng_states(trainer: L.Trainer) -> list[dict[str, Any]]:
    """Every rank's random states, in rank order (a collective: all ranks must call it, as they all do
    when Lightning saves a checkpoint)."""
    local = _local_rng_state()
    if trainer.world_size == 1 or not torch.distributed.is_available() or not torch.distributed.is_initialized():
        return [local]
    gathered: list[dict[str, Any] | None] = [None] * trainer.world_size
    torch.distributed.all_gather_object(gathered, local)
    return gathered  # type: ignore[return-value]


def restore_rng_states(states: list[dict[str, Any]], *, rank: int) -> None:
    """Set this process's random states to those `rank` had when `states` were collected.

    With a different number of ranks than the run that saved them, rank r takes the state of rank
    ``r % saved ranks``: training goes on, but no longer bit for bit as it would have.
    """
    if len(states) != 1 and rank >= len(states):
        rank_zero_warn(f"the checkpoint holds the random states of {len(states)} ranks; resuming with more")
    state = states[rank % len(states)]
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
    kind, key, pos, has_gauss, cached_gaussian = state["numpy"]
    np.random.set_state((kind, key.numpy().astype(np.uint32), pos, has_gauss, cached_gaussian))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
