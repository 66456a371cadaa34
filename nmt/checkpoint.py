"""Loading a training checkpoint for inference (translate, evaluate, score, embed, plots).

Nothing in a checkpoint is executed: it is read with ``torch.load(weights_only=True)``, which accepts only
tensors and plain containers. Everything inference needs — the network's hyper-parameters, the vocabulary
sizes and the SentencePiece model(s) as bytes — sits under ``checkpoint["nmt"]``. Everything read is checked
(format version, metadata types, network options, vocabulary sizes, weight names and shapes, finite weights),
and each problem is one `InputError` naming it.

`nmt fit|validate|test --ckpt_path` read a training checkpoint the same way before Lightning does
(`nmt.training.checkpoint`: `read_checkpoint`, `checked_metadata`, `checked_network`).
`export_checkpoint` (``nmt export``) writes the inference part of a checkpoint alone: weights and metadata.
"""

from __future__ import annotations

import dataclasses
import io
import os
import pickle
import re
import stat
import typing
import warnings
from pathlib import Path
from typing import NamedTuple

import torch

from nmt import __version__
from nmt.data.tokenizer import PAD, Tokenizer
from nmt.errors import InputError
from nmt.model import NetworkConfig, Seq2Seq, build_model
from nmt.model.int8 import dequantize_linear_layers_, quantize_linear_layers_

CHECKPOINT_FORMAT = 1
# A torch.load(weights_only=True) refusal that names a global (a function or class) the pickle asks for:
# "Unsupported global: GLOBAL io.open …", "Trying to load unsupported GLOBAL posix.open …"
_UNSAFE_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")
# Inference dtypes (--dtype). bfloat16: weights and activations in bf16, the output distribution and every
# score in float32 (the models' log_softmax, the search's sums); about twice as fast where the hardware has bf16
# matrix instructions (GPUs, CPUs with AVX-512 BF16 or AMX), much slower on CPUs without them. int8: the linear
# layers' weights and products in int8, everything else float32 (`nmt.model.int8`): what pays on CPUs without bf16.
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
INFERENCE_DTYPES = (*DTYPES, "int8")


class LoadedModel(NamedTuple):
    """A checkpoint's model ready for inference (eval mode, on its device) with its tokenizer; `nmt.Translator`
    drives it."""

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


def load_model(
    path: str | Path, *, device: str | torch.device = "auto", dtype: torch.dtype | str = torch.float32
) -> LoadedModel:
    """Build the model and tokenizer stored in a checkpoint, on `device` ("auto": CUDA when there is one, as
    `nmt.Translator.load`), its weights cast to ``dtype`` (float32 as trained, bfloat16, or "int8": see
    ``INFERENCE_DTYPES``). Raises InputError with a one-line reason."""
    device = resolve_device(device) if isinstance(device, str) else device
    path = str(path)
    return _loaded(path, read_checkpoint(path), device=device, dtype=dtype)


def _loaded(path: str, ckpt: object, *, device: str | torch.device, dtype: torch.dtype | str) -> LoadedModel:
    meta = checked_metadata(path, ckpt)
    written_by = f"checkpoint written by nmt {meta.get('version')}"
    network = checked_network(path, meta["network"], written_by)
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
    stored_int8 = isinstance(meta.get("exported"), dict) and meta["exported"].get("dtype") == "int8"
    if stored_int8:  # its int8 layers (those with a .qweight) hold int8 weights and scales: built so before loading
        stored = {k.removeprefix("model.") for k in ckpt["state_dict"] if isinstance(k, str)}
        quantize_linear_layers_(model, lambda name: f"{name}.qweight" in stored or f"{name}.U.qweight" in stored)
    model.load_state_dict(_weights(path, ckpt["state_dict"], model.state_dict(), network, written_by))
    if dtype == "int8":
        if not stored_int8:
            quantize_linear_layers_(model)
        model.to(device=device).eval()
    else:
        if stored_int8:  # computed in float: the int8 weights times their scales
            dequantize_linear_layers_(model)
        model.to(device=device, dtype=DTYPES[dtype] if isinstance(dtype, str) else dtype).eval()
    return LoadedModel(model=model, tokenizer=tokenizer, network=network, path=path)


def export_checkpoint(path: str | os.PathLike[str], output: str | os.PathLike[str], *, dtype: str = "float32") -> int:
    """Write the inference part of checkpoint `path` to `output`: the model's weights (in `dtype`, one of
    `INFERENCE_DTYPES`) and the metadata every inference command needs (network, vocabularies, SentencePiece
    models), without the optimizer state, the loops and the callbacks' state that only resuming needs. The
    file is an nmt checkpoint like any other for `load_model`; `nmt fit/validate/test --ckpt_path` refuse it.
    Everything is checked as `load_model` checks it before anything is written. `output` is written through
    `nmt.textio.atomic_output`, like every command's output: a file appears complete or not at all, a device, FIFO
    or ``-`` (standard output) is written into, and a failed write is an `InputError` naming it. torch.save
    seeks in what it writes, so the file is serialized in memory first (one more copy of the weights). Returns
    the number of bytes written."""
    if dtype not in INFERENCE_DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(INFERENCE_DTYPES)}, got {dtype!r}")
    path = os.fspath(path)
    ckpt, loaded = read_model(path, dtype=dtype if dtype == "int8" else "float32")  # every check of load_model
    weights = DTYPES.get(dtype, torch.float32)  # int8: what is not int8 stays float32
    state = {
        f"model.{name}": (tensor.to(weights) if tensor.is_floating_point() else tensor).clone()
        for name, tensor in loaded.model.state_dict().items()
    }
    origin = {"dtype": dtype, "from": os.path.basename(path)}
    origin |= {key: ckpt[key] for key in ("epoch", "global_step") if isinstance(ckpt.get(key), int)}
    del loaded
    return write_inference_checkpoint(state, {**ckpt["nmt"], "exported": origin}, output, inputs=[path])


def read_model(path: str, *, dtype: str = "float32") -> tuple[dict, LoadedModel]:
    """The checkpoint at `path` as read (a dict) and its model on the CPU in `dtype`, every check of `load_model`
    made: what `export_checkpoint` and `nmt.averaging` take the weights and the metadata from."""
    ckpt = read_checkpoint(path)
    loaded = _loaded(path, ckpt, device="cpu", dtype=dtype)
    assert isinstance(ckpt, dict)
    return ckpt, loaded


def write_inference_checkpoint(
    state_dict: dict[str, torch.Tensor], metadata: dict, output: str | os.PathLike[str], *, inputs: list[str]
) -> int:
    """Write an inference-only checkpoint (``{"state_dict", "nmt"}``, `metadata` with its ``exported`` record) to
    `output` through `nmt.textio.atomic_output` (`inputs`: the files it must not overwrite). torch.save seeks in
    what it writes, so the file is serialized in memory first. Returns the number of bytes written."""
    from nmt.textio import atomic_output

    serialized = io.BytesIO()
    torch.save({"state_dict": state_dict, "nmt": metadata}, serialized)
    with atomic_output(output, inputs=inputs, binary=True) as out:
        out.write(serialized.getbuffer())
    return serialized.getbuffer().nbytes


"""What `export_checkpoint` can store the weights in (bfloat16: half the size; int8: the linear layers' weights in
int8 with a scale per row, as ``--dtype int8`` computes with them, the rest float32). Inference casts them to its
--dtype when it loads them (an int8 file run in float computes with its int8 weights times their scales)."""


def read_checkpoint(path: str) -> object:
    """torch.load with weights_only=True: tensors and plain containers only, never code."""
    _check_regular_file(path)
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
    except Exception as e:
        raise InputError(path=path, message=f"not a readable checkpoint (corrupt data: {type(e).__name__})") from None


def _check_regular_file(path: str) -> None:
    """A checkpoint is a regular file: a directory is named as one, and a device or a pipe (/dev/zero, a FIFO,
    which torch.load would read forever or block on) is refused before it is opened."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise InputError(path=path, message="checkpoint not found") from None
    except OSError as e:
        raise InputError(path=path, message=f"cannot read it ({e.strerror or e})") from None
    if stat.S_ISDIR(mode):
        raise InputError(path=path, message="is a directory, not a checkpoint file")
    if not stat.S_ISREG(mode):
        kinds = {stat.S_ISCHR: "a character device", stat.S_ISBLK: "a block device", stat.S_ISFIFO: "a pipe",
                 stat.S_ISSOCK: "a socket"}  # fmt: skip
        kind = next((name for test, name in kinds.items() if test(mode)), "not a file")
        raise InputError(path=path, message=f"not a regular file ({kind}); a checkpoint is a file")


def checked_metadata(path: str, ckpt: object) -> dict:
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


def checked_network(path: str, options: dict, written_by: str) -> NetworkConfig:
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
        if tensor.is_floating_point() != expected[name].is_floating_point():  # int8 weights where floats belong
            raise InputError(
                path=path, message=f"weight {name} is {tensor.dtype}, the network expects {expected[name].dtype}"
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
