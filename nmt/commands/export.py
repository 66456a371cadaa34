"""``nmt export``: an inference-only copy of a training checkpoint.

    nmt export CKPT OUT [--dtype float32|bfloat16|int8]

A training checkpoint holds the weights, Adam's two moments of every weight, the loops' progress and the
callbacks' state: about three times what translating needs. OUT holds the weights (in --dtype) and what
inference needs besides them (the network's options, the vocabularies and the SentencePiece models), and every
inference command (translate, evaluate, score, embed, plot-attention, serve) reads it as it reads CKPT, through
the same safe loader. It cannot resume or fine-tune a run (no optimizer state): keep CKPT for that. Every
check of loading is made before anything is written; OUT appears complete or not at all.
"""

from __future__ import annotations

import os
import sys
import time

from jsonargparse import ArgumentParser

from nmt.checkpoint import INFERENCE_DTYPES, export_checkpoint
from nmt.commands.options import CommandParser
from nmt.textio import check_output

PROG = "nmt export"


def build_parser() -> ArgumentParser:
    parser = CommandParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="a checkpoint written by `nmt fit`")
    parser.add_argument("output", help="the inference-only file to write")
    parser.add_argument(
        "--dtype",
        default="float32",
        choices=list(INFERENCE_DTYPES),
        help="the stored weights: float32 (as trained), bfloat16 (half the size) or int8 (the linear layers' weights "
        "as --dtype int8 computes with them, the rest float32); the commands' --dtype decides what they compute in",
    )
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    check_output(args.output, [args.checkpoint])
    start = time.perf_counter()
    export_checkpoint(args.checkpoint, args.output, dtype=args.dtype)
    before, after = os.path.getsize(args.checkpoint), os.path.getsize(args.output)
    print(
        f"{PROG}: {args.output}: {after / 1e6:.1f} MB, {args.dtype} weights ({args.checkpoint}: {before / 1e6:.1f} MB; "
        f"{time.perf_counter() - start:.1f} s)",
        file=sys.stderr,
    )
    return 0
