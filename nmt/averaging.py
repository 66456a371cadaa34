"""Checkpoint averaging (``nmt average``): the element-wise mean of the weights of checkpoints of one model.

Every input is read and checked as inference reads a checkpoint (`nmt.checkpoint.read_model`), one at a time,
and must describe the same network (every ``network`` option), the same SentencePiece model(s) (byte for byte)
and, for the tensors that are not floating point, the same values; the first difference is one `InputError`
naming the file and what differs. The floating-point weights are summed in float64 and divided once, then cast
back to their dtype (float32 as trained). The result is an inference-only checkpoint, as ``nmt export`` writes:
the weights and the first input's metadata, with ``exported`` recording what was averaged.

A checkpoint of a run trained with Lightning's ``EMAWeightAveraging`` holds the moving average of the weights
under ``state_dict`` (the raw weights under ``current_model_state``, which only resuming reads): those averaged
weights are what is read here, as by every other command.

A run directory (a run's ``default_root_dir``, or its ``checkpoints/`` folder) gives the inputs by rule:

* `last_checkpoints`: the N checkpoints with the most updates (``global_step``), one file per step (``last.ckpt``
  and a ``best`` checkpoint written at the same step hold the same weights);
* `best_checkpoints`: the N with the highest validation BLEU. The score of a file is the one Lightning's
  ``ModelCheckpoint`` monitoring ``val/bleu`` recorded for it (its ``best_k_models``, in the callback state that
  every checkpoint of the run carries), the newest record winning: neither the file name nor the logs are
  parsed, so any ``filename`` template works and a moved run directory still does (files are matched by name).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import torch

from nmt.checkpoint import read_checkpoint, read_model, write_inference_checkpoint
from nmt.errors import InputError
from nmt.model import NetworkConfig

MONITOR = "val/bleu"  # what --best ranks by: the metric our configs' ModelCheckpoint monitors (mode max)


def average_checkpoints(paths: Sequence[str | os.PathLike[str]], output: str | os.PathLike[str]) -> int:
    """Write the element-wise mean of the weights of the checkpoints `paths` to `output` (an inference-only
    checkpoint, through `nmt.textio.atomic_output`). Raises InputError, naming the file, for an unreadable
    checkpoint or one of another network, vocabulary or non-float buffer than the first. Returns the bytes
    written."""
    paths = [os.fspath(p) for p in paths]
    if not paths:
        raise InputError(path="command line", message="no checkpoint to average")
    first_ckpt, first = read_model(paths[0])
    reference = first.model.state_dict()
    sums = {name: t.to(torch.float64) for name, t in reference.items() if t.is_floating_point()}
    origins = [_origin(paths[0], first_ckpt)]
    for path in paths[1:]:
        ckpt, loaded = read_model(path)
        _check_same_model(path, ckpt, loaded.network, paths[0], first_ckpt, first.network)
        for name, tensor in loaded.model.state_dict().items():
            if name in sums:
                sums[name] += tensor.to(torch.float64)
            elif not torch.equal(tensor, reference[name]):
                raise InputError(path=path, message=f"its {name} ({tensor.dtype}) differs from {paths[0]}'s; "
                                 "only floating-point weights are averaged, the rest must be equal")  # fmt: skip
        origins.append(_origin(path, ckpt))
        del ckpt, loaded
    state = {
        f"model.{name}": (sums[name] / len(paths)).to(tensor.dtype) if name in sums else tensor.clone()
        for name, tensor in reference.items()
    }
    metadata = {**first_ckpt["nmt"], "exported": {"dtype": "float32", "averaged": origins}}
    del first_ckpt, first, sums
    return write_inference_checkpoint(state, metadata, output, inputs=paths)


def _origin(path: str, ckpt: dict) -> dict:
    """What the output records of one input: its file name, and the epoch and updates it was saved at."""
    origin: dict = {"from": os.path.basename(path)}
    return origin | {key: ckpt[key] for key in ("epoch", "global_step") if isinstance(ckpt.get(key), int)}


def _check_same_model(
    path: str, ckpt: dict, network: NetworkConfig, first_path: str, first_ckpt: dict, first_network: NetworkConfig
) -> None:
    for field in dataclasses.fields(NetworkConfig):
        theirs, ours = getattr(network, field.name), getattr(first_network, field.name)
        if theirs != ours:
            raise InputError(
                path=path, message=f"network.{field.name} is {theirs!r} in it, {ours!r} in {first_path}: "
                "only checkpoints of one network are averaged"
            )  # fmt: skip
    tokenizers = ckpt["nmt"]["tokenizer"], first_ckpt["nmt"]["tokenizer"]
    for side, name in (("src", "source"), ("tgt", "target")):
        if tokenizers[0].get(side) != tokenizers[1].get(side):
            raise InputError(
                path=path, message=f"its {name} SentencePiece model differs from {first_path}'s: only checkpoints "
                "of one vocabulary are averaged"
            )  # fmt: skip


class RunCheckpoint(NamedTuple):
    """A checkpoint file of a run directory, with what the selection rules read of it."""

    path: Path
    global_step: int
    scores: dict[str, float]  # file name -> val/bleu, as its ModelCheckpoint state records them


def checkpoint_directory(run: str | os.PathLike[str]) -> Path:
    """The folder of a run's checkpoints: ``RUN/checkpoints`` (a run's ``default_root_dir``), else RUN itself."""
    run = Path(run)
    if not run.is_dir():
        raise InputError(path=run, message="not a directory (--run takes a run's directory, e.g. runs/NAME)")
    return run / "checkpoints" if (run / "checkpoints").is_dir() else run


def run_checkpoints(run: str | os.PathLike[str]) -> list[RunCheckpoint]:
    """The training checkpoints (``*.ckpt`` with a ``global_step``) of a run directory, oldest first; exported
    (inference-only) files are left out."""
    directory = checkpoint_directory(run)
    found = []
    for path in sorted(directory.glob("*.ckpt")):
        ckpt = read_checkpoint(str(path))
        step = ckpt.get("global_step") if isinstance(ckpt, dict) else None
        if isinstance(step, int) and "exported" not in (ckpt.get("nmt") or {}):
            found.append(RunCheckpoint(path, step, _recorded_scores(ckpt)))
        del ckpt
    if not found:
        raise InputError(path=directory, message="no training checkpoint (*.ckpt with a global_step) in it")
    return sorted(found, key=lambda c: c.global_step)


def _recorded_scores(ckpt: dict) -> dict[str, float]:
    """{file name: val/bleu} from the state of every ModelCheckpoint that monitors val/bleu."""
    scores = {}
    callbacks = ckpt.get("callbacks")
    for state in callbacks.values() if isinstance(callbacks, dict) else ():
        if isinstance(state, dict) and state.get("monitor") == MONITOR and isinstance(state.get("best_k_models"), dict):
            for file, score in state["best_k_models"].items():
                if isinstance(file, str) and isinstance(score, torch.Tensor | float | int):
                    scores[os.path.basename(file)] = float(score)
    return scores


def last_checkpoints(run: str | os.PathLike[str], n: int) -> list[Path]:
    """The `n` checkpoints of the run with the most updates, one per global step (the first file name of those
    saved at one step), the newest first."""
    by_step: dict[int, Path] = {}
    for checkpoint in run_checkpoints(run):
        by_step.setdefault(checkpoint.global_step, checkpoint.path)
    if len(by_step) < n:
        raise InputError(path=checkpoint_directory(run), message=f"--last {n}, but it holds checkpoints of "
                         f"{len(by_step)} different step(s)")  # fmt: skip
    return [by_step[step] for step in sorted(by_step, reverse=True)[:n]]


def best_checkpoints(run: str | os.PathLike[str], n: int) -> list[Path]:
    """The `n` checkpoints of the run with the highest validation BLEU, the best first (ties: more updates
    first). Scores come from the ModelCheckpoint state the checkpoints carry, the newest checkpoint's record of a
    file winning."""
    checkpoints = run_checkpoints(run)
    scores: dict[str, float] = {}
    for checkpoint in checkpoints:  # oldest first: a newer record of a file name replaces an older one
        scores |= checkpoint.scores
    steps = {c.path.name: c.global_step for c in checkpoints}
    ranked = sorted((c.path for c in checkpoints if c.path.name in scores),
                    key=lambda p: (scores[p.name], steps[p.name]), reverse=True)  # fmt: skip
    if len(ranked) < n:
        raise InputError(
            path=checkpoint_directory(run),
            message=f"--best {n}, but its checkpoints record the {MONITOR} of {len(ranked)} file(s) here; keep the N "
            f"best with ModelCheckpoint(monitor: {MONITOR}, save_top_k: N) (docs/training.md, Checkpoint averaging)",
        )
    return ranked[:n]
