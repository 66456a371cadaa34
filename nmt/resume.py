"""What lets a killed run continue as if nothing happened: crash-safe checkpoint files, and the random states.

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
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import lightning as L
import numpy as np
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.fabric.utilities.cloud_io import _is_local_file_protocol
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_warn

__all__ = [
    "AtomicCheckpointIO",
    "collect_rng_states",
    "install_atomic_checkpoint_io",
    "newest_resume_checkpoint",
    "restore_rng_states",
]


class AtomicCheckpointIO(TorchCheckpointIO):
    """`TorchCheckpointIO` whose local writes are atomic and durable: temp file in the target's directory,
    fsync, `os.replace`, fsync of the directory. Remote paths (``s3://`` …) keep Lightning's writer."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None) -> None:
        if storage_options is not None or not _is_local_file_protocol(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        write_atomically(Path(path), lambda f: torch.save(checkpoint, f))


def write_atomically(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Call ``write(file)`` on a hidden temp file beside `path`, then rename it to `path` once it is on disk."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # Hidden and not ending in .ckpt, so neither `--ckpt_path last` nor a ModelCheckpoint ever picks it up;
    # created with mode 0o666 so the umask, not the temp-file default 0o600, decides who may read it.
    tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)  # the rename itself survives a power loss
    # Temp files of writes that were killed (SIGKILL leaves no chance to clean up) would pile up otherwise.
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        stale.unlink(missing_ok=True)


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # some filesystems cannot open directories; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def install_atomic_checkpoint_io(trainer: L.Trainer) -> None:
    """Make `trainer` write checkpoints with `AtomicCheckpointIO`, unless it was given a CheckpointIO of its own."""
    if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
        trainer.strategy.checkpoint_io = AtomicCheckpointIO()


def newest_resume_checkpoint(trainer: L.Trainer) -> str | None:
    """The newest of the ModelCheckpoints' ``last*.ckpt`` and of Lightning's SLURM requeue checkpoints
    (``default_root_dir/hpc_ckpt_N.ckpt``, written when SLURM signals a preemption or the time limit), or
    None when there is no requeue checkpoint (then ``--ckpt_path last`` is Lightning's own)."""
    requeue = list(Path(trainer.default_root_dir).glob("hpc_ckpt_*.ckpt"))
    if not requeue:
        return None
    last = [
        path
        for callback in trainer.checkpoint_callbacks
        if isinstance(callback, ModelCheckpoint) and callback.dirpath and _is_local_file_protocol(callback.dirpath)
        for path in Path(callback.dirpath).glob("last*.ckpt")
    ]
    return os.fspath(max(requeue + last, key=lambda path: path.stat().st_mtime_ns))


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
