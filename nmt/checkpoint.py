"""Loading a training checkpoint for inference (translate, evaluate, score, embed, plots).

Nothing in a checkpoint is executed: it is read with ``torch.load(weights_only=True)``, which accepts only
tensors and plain containers. Everything inference needs — the network's hyper-parameters, the vocabulary
sizes and the SentencePiece model(s) as bytes — sits under ``checkpoint["nmt"]``.
"""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path
from typing import NamedTuple

import torch

from nmt import __version__
from nmt.data.tokenizer import PAD, Tokenizer
from nmt.errors import InputError
from nmt.model import NetworkConfig, Seq2Seq, build_model

CHECKPOINT_FORMAT = 1


class Translator(NamedTuple):
    """A model ready for inference (eval mode, on its device) with its tokenizer."""

    model: Seq2Seq
    tokenizer: Tokenizer
    network: NetworkConfig
    path: str


def checkpoint_metadata(
    network: NetworkConfig, src_vocab_size: int, tgt_vocab_size: int, tokenizer: Tokenizer
) -> dict:
    """What every checkpoint carries besides the weights (plain data only)."""
    return {
        "format": CHECKPOINT_FORMAT,
        "version": __version__,
        "network": dataclasses.asdict(network),
        "src_vocab_size": src_vocab_size,
        "tgt_vocab_size": tgt_vocab_size,
        "tokenizer": tokenizer.to_bytes(),
    }


def load_translator(path: str | Path, *, device: str | torch.device = "cpu") -> Translator:
    """Build the model and tokenizer stored in a checkpoint. Raises InputError with a one-line reason."""
    path = str(path)
    if not Path(path).is_file():
        raise InputError(path=path, message="checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(
            path=path, message=f"refused to load: the file holds more than plain data ({first})"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise InputError(
            path=path,
            message=f"not a readable checkpoint ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})",
        ) from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("nmt"), dict) or "state_dict" not in ckpt:
        raise InputError(path=path, message="not an nmt checkpoint (no 'nmt' metadata or no state_dict)")
    meta = ckpt["nmt"]
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise InputError(
            path=path,
            message=f"checkpoint format {meta.get('format')} (nmt {meta.get('version')}) but this is nmt "
            f"{__version__}, which reads format {CHECKPOINT_FORMAT}",
        )
    if meta.get("tokenizer") is None:
        raise InputError(path=path, message="checkpoint carries no SentencePiece model")
    known = {f.name for f in dataclasses.fields(NetworkConfig)}
    unknown = sorted(set(meta["network"]) - known)
    if unknown:
        raise InputError(
            path=path,
            message=f"network option(s) {', '.join(unknown)} unknown to nmt {__version__} "
            f"(checkpoint written by nmt {meta.get('version')})",
        )
    network = NetworkConfig(**meta["network"])
    model = build_model(
        network, src_vocab_size=meta["src_vocab_size"], tgt_vocab_size=meta["tgt_vocab_size"], pad_id=PAD
    )
    prefix = "model."
    state = {k[len(prefix) :]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise InputError(
            path=path,
            message=f"weights do not fit a {network.architecture}/{network.cell} network: "
            f"{len(missing)} missing (e.g. {missing[:1]}), {len(unexpected)} unexpected (e.g. {unexpected[:1]})",
        )
    for name, tensor in state.items():
        if tensor.shape != expected[name].shape:
            raise InputError(
                path=path,
                message=f"weight {name} has shape {tuple(tensor.shape)}, "
                f"the network expects {tuple(expected[name].shape)}",
            )
    model.load_state_dict(state)
    tok = meta["tokenizer"]
    tokenizer = Tokenizer.from_bytes(tok["src"], tok.get("tgt"))
    model.to(device).eval()
    return Translator(model=model, tokenizer=tokenizer, network=network, path=path)


def resolve_device(device: str) -> torch.device:
    """'auto' picks CUDA when available; 'cuda' without a GPU is an error, not a silent fallback."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(path="--device", message=f"{device} requested but no CUDA device is available")
    return torch.device(device)
