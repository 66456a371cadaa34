"""``nmt export``: an inference-only copy of a training checkpoint.

    nmt export --checkpoint CKPT --output OUT [--dtype float32|bfloat16|int8]
    nmt export CKPT OUT [--dtype …]

A training checkpoint holds the weights, Adam's two moments of every weight, the loops' progress and the
callbacks' state: about three times what translating needs. OUT holds the weights (in --dtype) and what
inference needs besides them (the network's options, the vocabularies and the SentencePiece models), and every
inference command (translate, evaluate, score, embed, plot-attention, serve) reads it as it reads CKPT, through
the same safe loader. It cannot resume or fine-tune a run (no optimizer state): keep CKPT for that. Every
check of loading is made before anything is written; OUT is written as every command's output is
(``nmt.textio.atomic_output``): a file appears complete or not at all, a device or ``-`` is written into.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from jsonargparse import ArgumentParser

from nmt.checkpoint import INFERENCE_DTYPES, export_checkpoint
from nmt.commands import options
from nmt.commands.options import CommandParser
from nmt.errors import InputError
from nmt.textio import check_output

PROG = "nmt export"


def build_parser() -> ArgumentParser:
    parser = CommandParser(prog=PROG, description=__doc__.split("\n\n")[0])
    options.add_model_arguments(parser, checkpoint_required=False, ensemble=False)
    parser.add_argument("--output", default=None, help="the inference-only file to write")
    parser.add_argument(
        "paths", nargs="*", default=[], metavar="CKPT OUT", help="the checkpoint and the output, without the options"
    )
    parser.add_argument(
        "--dtype",
        default="float32",
        choices=list(INFERENCE_DTYPES),
        help="the stored weights: float32 (as trained), bfloat16 (half the size) or int8 (the linear layers' weights "
        "as --dtype int8 computes with them, the rest float32); the commands' --dtype decides what they compute in",
    )
    return parser


def checkpoint_and_output(args: argparse.Namespace) -> tuple[str, str]:
    """(CKPT, OUT) from the options, the positional arguments filling in those not given."""
    positional = list(args.paths)
    checkpoint = args.checkpoint or (positional.pop(0) if positional else None)
    output = args.output or (positional.pop(0) if positional else None)
    if positional:
        raise InputError(path="command line", message=f"unexpected argument {positional[0]!r} (give CKPT OUT or the "
                         "options --checkpoint and --output)")  # fmt: skip
    for option, path in (("--checkpoint", checkpoint), ("--output", output)):
        if path is None:
            raise InputError(path=option, message="required (or give CKPT OUT as arguments)")
    return checkpoint, output


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    checkpoint, output = checkpoint_and_output(args)
    check_output(output, [checkpoint])
    start = time.perf_counter()
    written = export_checkpoint(checkpoint, output, dtype=args.dtype)
    before = os.path.getsize(checkpoint)
    print(
        f"{PROG}: {output}: {written / 1e6:.1f} MB, {args.dtype} weights ({checkpoint}: {before / 1e6:.1f} MB; "
        f"{time.perf_counter() - start:.1f} s)",
        file=sys.stderr,
    )
    return 0
