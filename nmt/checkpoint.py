"""Loading a training checkpoint for inference (translate, evaluate, score, embed, plots).

Nothing in a checkpoint is executed: it is read with ``torch.load(weights_only=True)``, which accepts only
tensors and plain containers. Everything inference needs — the network's hyper-parameters, the vocabulary
sizes and the SentencePiece model(s) as bytes — sits under ``checkpoint["nmt"]``. Everything read is checked
(format version, metadata types, network options, vocabulary sizes, weight names and shapes, finite weights),
and each problem is one `InputError` naming it.
"""

from __future__ import annotations

import dataclasses
import pickle
import re
import typing
import warnings
from pathlib import Path
from typing import NamedTuple

import torch

from nmt import __version__
from nmt.data.tokenizer import PAD, Tokenizer
from nmt.errors import InputError
from nmt.model import NetworkConfig, Seq2Seq, build_model

CHECKPOINT_FORMAT = 1
# A torch.load(weights_only=True) refusal that names a global (a function or class) the pickle asks for:
# "Unsupported global: GLOBAL io.open …", "Trying to load unsupported GLOBAL posix.open …"
_UNSAFE_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")
# Inference dtypes (--dtype). bfloat16: weights and activations in bf16, the output distribution and every
# score in float32 (the models' log_softmax, the search's sums); about twice as fast where the hardware has bf16
# matrix instructions (GPUs, CPUs with AVX-512 BF16 or AMX), much slower on CPUs without them.
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


class Translator(NamedTuple):
    """A model ready for inference (eval mode, on its device) with its tokenizer."""

    model: Seq2Seq
    tokenizer: Tokenizer
    network: NetworkConfig
    path: str


def checkpoint_metadata(network: NetworkConfig, src_vocab_size: int, tgt_vocab_size: int, tokenizer: Tokenizer) -> dict:
    """What every checkpoint carries besides the weights (plain data only)."""
    return {
        "format": CHECKPOINT_FORMAT,
        "version": __version__,
        "network": dataclasses.asdict(network),
        "src_vocab_size": src_vocab_size,
        "tgt_vocab_size": tgt_vocab_size,
        "tokenizer": tokenizer.to_bytes(),
    }


def load_translator(
    path: str | Path, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> Translator:
    """Build the model and tokenizer stored in a checkpoint, its weights cast to ``dtype`` (float32 as trained,
    or bfloat16 for faster inference: see ``DTYPES``). Raises InputError with a one-line reason."""
    path = str(path)
    ckpt = _read(path)
    meta = _metadata(path, ckpt)
    written_by = f"checkpoint written by nmt {meta.get('version')}"
    network = _network(path, meta["network"], written_by)
    try:
        tok = meta["tokenizer"]
        tokenizer = Tokenizer.from_bytes(tok["src"], tok.get("tgt"))
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise InputError(path=path, message=f"its SentencePiece model is unreadable ({_first_line(e)})") from None
    sizes = (meta["src_vocab_size"], meta["tgt_vocab_size"])
    if sizes != (tokenizer.src_vocab_size, tokenizer.tgt_vocab_size):
        raise InputError(
            path=path,
            message=f"the network was built for vocabularies of {sizes[0]}/{sizes[1]} pieces but its SentencePiece "
            f"model has {tokenizer.src_vocab_size}/{tokenizer.tgt_vocab_size}",
        )
    try:
        model = build_model(network, src_vocab_size=sizes[0], tgt_vocab_size=sizes[1], pad_id=PAD)
    except (TypeError, ValueError, RuntimeError) as e:
        raise InputError(path=path, message=f"cannot build its network ({_first_line(e)}); {written_by}") from None
    model.load_state_dict(_weights(path, ckpt["state_dict"], model.state_dict(), network, written_by))
    model.to(device=device, dtype=dtype).eval()
    return Translator(model=model, tokenizer=tokenizer, network=network, path=path)


def _read(path: str) -> object:
    """torch.load with weights_only=True: tensors and plain containers only, never code."""
    if not Path(path).is_file():
        raise InputError(path=path, message="checkpoint not found")
    try:
        with warnings.catch_warnings():
            # Corrupt bytes can look like an unknown pickle protocol; the error below says it in one line.
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        refused = _UNSAFE_GLOBAL.search(str(e))
        if refused:  # the pickle asks for a function or class: loading it would run code
            raise InputError(
                path=path,
                message=f"refused to load: its pickle would call {refused.group(1)}, i.e. run code; nmt reads "
                "checkpoints as plain data only (torch.load weights_only=True)",
            ) from None
        raise InputError(path=path, message=f"not a readable checkpoint ({_unpickling_problem(str(e))})") from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        detail = str(e).strip().split(". ")[0].splitlines()[0] if str(e).strip() else "the file is empty or cut short"
        raise InputError(path=path, message=f"not a readable checkpoint ({detail})") from None
    except Exception as e:  # noqa: BLE001 - corrupt bytes fail inside the unpickler in many ways (unknown opcode: KeyError, …)
        raise InputError(path=path, message=f"not a readable checkpoint (corrupt data: {type(e).__name__})") from None


def _metadata(path: str, ckpt: object) -> dict:
    """checkpoint["nmt"], checked for the types and the format version this nmt reads."""
    if (
        not isinstance(ckpt, dict)
        or not isinstance(ckpt.get("nmt"), dict)
        or not isinstance(ckpt.get("state_dict"), dict)
    ):
        raise InputError(path=path, message="not an nmt checkpoint (no 'nmt' metadata or no state_dict)")
    meta = ckpt["nmt"]
    fmt, version = meta.get("format"), meta.get("version")
    if fmt != CHECKPOINT_FORMAT:
        newer = isinstance(fmt, int) and fmt > CHECKPOINT_FORMAT
        raise InputError(
            path=path,
            message=f"checkpoint format {fmt} (written by nmt {version}) but this is nmt {__version__}, which reads "
            f"format {CHECKPOINT_FORMAT}" + ("; upgrade nmt to read it" if newer else ""),
        )
    for key, kind in (("network", dict), ("src_vocab_size", int), ("tgt_vocab_size", int), ("tokenizer", dict)):
        if not isinstance(meta.get(key), kind):
            what = "missing" if meta.get(key) is None else f"a {type(meta[key]).__name__}, not a {kind.__name__}"
            raise InputError(path=path, message=f"checkpoint metadata nmt.{key} is {what}")
    return meta


def _network(path: str, options: dict, written_by: str) -> NetworkConfig:
    """The NetworkConfig of the metadata; options or values this nmt does not know are named."""
    fields = {f.name for f in dataclasses.fields(NetworkConfig)}
    unknown = sorted(str(name) for name in set(options) - fields)
    if unknown:
        raise InputError(
            path=path, message=f"network option(s) {', '.join(unknown)} unknown to nmt {__version__} ({written_by})"
        )
    hints = typing.get_type_hints(NetworkConfig)
    for name, value in options.items():
        allowed = typing.get_args(hints[name]) if typing.get_origin(hints[name]) is typing.Literal else ()
        if allowed and value not in allowed:
            raise InputError(
                path=path,
                message=f"network.{name} is {value!r}; nmt {__version__} knows {', '.join(map(repr, allowed))} "
                f"({written_by})",
            )
    return NetworkConfig(**options)


def _weights(path: str, state_dict: dict, expected: dict, network: NetworkConfig, written_by: str) -> dict:
    """The model's tensors from the Lightning state_dict, checked against the network the metadata describes."""
    prefix = "model."
    state = {k[len(prefix) :]: v for k, v in state_dict.items() if isinstance(k, str) and k.startswith(prefix)}
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise InputError(
            path=path,
            message=f"its weights do not fit the {network.architecture}/{network.cell} network its metadata "
            f"describes: {len(missing)} missing (e.g. {missing[:1]}), {len(unexpected)} unexpected "
            f"(e.g. {unexpected[:1]}); {written_by}",
        )
    for name, tensor in state.items():
        if not isinstance(tensor, torch.Tensor) or tensor.shape != expected[name].shape:
            shape = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
            raise InputError(
                path=path,
                message=f"weight {name} has shape {shape}, the network expects {tuple(expected[name].shape)}",
            )
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise InputError(
                path=path, message=f"weight {name} holds NaN or infinite values (saved from a diverged run?)"
            )
    return state


def _unpickling_problem(text: str) -> str:
    """The informative line of torch's weights_only error, without its advice to load with weights_only=False."""
    for paragraph in text.split("\n\n"):
        line = paragraph.strip().removeprefix("WeightsUnpickler error:").strip()
        if line and not line.startswith(("Weights only load failed", "Check the documentation", "Please file")):
            return line.splitlines()[0]
    return "not a PyTorch checkpoint"


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def resolve_device(device: str) -> torch.device:
    """'auto' picks CUDA when available; 'cuda' without a GPU is an error, not a silent fallback."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(path="--device", message=f"{device} requested but no CUDA device is available")
    return torch.device(device)
