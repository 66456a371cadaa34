"""A checkpoint given to ``nmt fit|validate|test --ckpt_path``, read before Lightning reads it: as inference reads a
checkpoint (`nmt.checkpoint`: a regular file, ``torch.load(weights_only=True)``, the metadata and weights checked),
then compared with the network the configuration builds, so that a mismatch is one line naming the option."""

from __future__ import annotations

import dataclasses
import os
from typing import NamedTuple

import torch

from nmt.checkpoint import checked_metadata, checked_network, read_checkpoint
from nmt.errors import InputError
from nmt.model import NetworkConfig

# Network options that only shape training (regularisation, the initial weights): a checkpoint still fits a network
# that differs in them. Every other option changes which weights there are or their shapes.
_TRAINING_ONLY_OPTIONS = frozenset(
    {"dropout", "embedding_dropout", "context_dropout", "init", "init_std", "attention_init_std"}
)


class TrainingCheckpoint(NamedTuple):
    """What `nmt fit|validate|test --ckpt_path` need to know of a checkpoint before Lightning loads it."""

    path: str
    network: NetworkConfig
    vocab_sizes: tuple[int, int]  # (source, target)
    shapes: dict[str, tuple[int, ...]]  # its state_dict: name -> shape
    resumable: bool  # it holds the training state (optimizer, loops), not just the weights
    written_by: str


def read_training_checkpoint(path: str | os.PathLike[str]) -> TrainingCheckpoint:
    """Read a checkpoint given to ``--ckpt_path`` as inference does (a regular file, ``weights_only=True``, its
    metadata and weights checked) and keep what `check_training_checkpoint` compares. Raises InputError."""
    path = os.fspath(path)
    ckpt = read_checkpoint(path)
    meta = checked_metadata(path, ckpt)
    if "exported" in meta:
        raise InputError(
            path=path,
            message="an inference-only file written by nmt export (weights and vocabularies, no training state): "
            "the inference commands read it; give --ckpt_path the training checkpoint it was exported from",
        )
    written_by = f"checkpoint written by nmt {meta.get('version')}"
    network = checked_network(path, meta["network"], written_by)
    shapes = {}
    for name, tensor in ckpt["state_dict"].items():
        if not isinstance(name, str) or not isinstance(tensor, torch.Tensor):
            raise InputError(path=path, message=f"its state_dict holds a {type(tensor).__name__} under {name!r}")
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise InputError(
                path=path, message=f"weight {name} holds NaN or infinite values (saved from a diverged run?)"
            )
        shapes[name] = tuple(tensor.shape)
    return TrainingCheckpoint(
        path=path,
        network=network,
        vocab_sizes=(meta["src_vocab_size"], meta["tgt_vocab_size"]),
        shapes=shapes,
        resumable="optimizer_states" in ckpt and "loops" in ckpt,
        written_by=written_by,
    )


def check_training_checkpoint(
    checkpoint: TrainingCheckpoint,
    *,
    network: NetworkConfig,
    vocab_sizes: tuple[int, int],
    vocab_option: str,
    state_dict: dict[str, torch.Tensor],
    resume: bool,
) -> None:
    """Raise InputError unless `checkpoint`'s weights load into the module whose `state_dict` is given (built with
    `network` and `vocab_sizes`), naming the first network option (``model.network.*``) or the vocabulary option
    (`vocab_option`) that differs; with `resume`, it must also hold the training state."""
    path = checkpoint.path
    expected = {name: tuple(tensor.shape) for name, tensor in state_dict.items()}
    missing = sorted(set(expected) - set(checkpoint.shapes))
    unexpected = sorted(set(checkpoint.shapes) - set(expected))
    reshaped = [
        name for name in sorted(set(expected) & set(checkpoint.shapes)) if expected[name] != checkpoint.shapes[name]
    ]
    if missing or unexpected or reshaped or checkpoint.vocab_sizes != vocab_sizes:
        why = "its weights do not fit the configured network"
        for field in dataclasses.fields(NetworkConfig):
            theirs, ours = getattr(checkpoint.network, field.name), getattr(network, field.name)
            unused = field.name == "attention_dim" and not (network.has_attention or checkpoint.network.has_attention)
            if theirs != ours and field.name not in _TRAINING_ONLY_OPTIONS and not unused:
                raise InputError(
                    path=path, message=f"{why}: model.network.{field.name} is {theirs!r} in it, {ours!r} here"
                )
        if checkpoint.vocab_sizes != vocab_sizes:
            theirs, ours = ("/".join(map(str, sizes)) for sizes in (checkpoint.vocab_sizes, vocab_sizes))
            raise InputError(
                path=path, message=f"{why}: vocabularies of {theirs} pieces in it, {ours} here ({vocab_option})"
            )
        if reshaped:
            name = reshaped[0]
            raise InputError(
                path=path,
                message=f"weight {name.removeprefix('model.')} has shape {checkpoint.shapes[name]}, the configured "
                f"network has {expected[name]}",
            )
        raise InputError(
            path=path,
            message=f"{why}: {len(missing)} missing (e.g. {missing[:1]}), {len(unexpected)} unexpected "
            f"(e.g. {unexpected[:1]}); {checkpoint.written_by}",
        )
    if resume and not checkpoint.resumable:
        raise InputError(
            path=path,
            message="it holds the weights only, no optimizer state or training progress (save_weights_only?): "
            "nmt fit cannot resume from it; nmt validate/test and the inference commands read it",
        )
