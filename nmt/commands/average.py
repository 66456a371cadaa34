"""``nmt average``: one checkpoint whose weights are the element-wise mean of several checkpoints' weights.

    nmt average CKPT CKPT... --output OUT
    nmt average --run DIR --best N --output OUT     # the N best of a run by validation BLEU
    nmt average --run DIR --last N --output OUT     # the N latest checkpoints of a run

The checkpoints must be of one network (every network option equal) and one vocabulary (byte-identical
SentencePiece models); the first difference is refused in one line naming the file. --best ranks a run's
checkpoints by the val/bleu that its ModelCheckpoint recorded for each (keep the N best with save_top_k: N);
--last takes those with the most updates, one per step. OUT is an inference-only checkpoint, as ``nmt export``
writes (the averaged weights in float32, the network, the vocabularies, and the list of files averaged under
``nmt.exported.averaged``): every inference command reads it. The checkpoints of a run trained with
EMAWeightAveraging hold the moving average, and that is what is averaged. OUT is written as every command's
output is (``nmt.textio.atomic_output``).
"""

from __future__ import annotations

import sys
import time

from jsonargparse import ArgumentParser

from nmt.averaging import average_checkpoints, best_checkpoints, last_checkpoints
from nmt.commands.options import CommandParser
from nmt.errors import InputError
from nmt.limits import count
from nmt.textio import check_output

PROG = "nmt average"
MAX_CHECKPOINTS = 1000  # loaded one at a time: memory does not grow with it, time does
CHECKPOINTS = count(1, MAX_CHECKPOINTS, why_high="checkpoints are read one by one; average fewer")


def build_parser() -> ArgumentParser:
    parser = CommandParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", nargs="*", default=[], metavar="CKPT", help="the checkpoints to average")
    parser.add_argument("--run", default=None, metavar="DIR", help="a run's directory (default_root_dir) or its "
                        "checkpoints/ folder, with --best or --last instead of CKPT...")  # fmt: skip
    parser.add_argument("--best", type=CHECKPOINTS, default=None, help="with --run: the N checkpoints with the "
                        "highest val/bleu, as the run's ModelCheckpoint recorded it")  # fmt: skip
    parser.add_argument("--last", type=CHECKPOINTS, default=None, help="with --run: the N checkpoints with the most "
                        "updates")  # fmt: skip
    parser.add_argument("--output", required=True, metavar="FILE", help="the averaged inference checkpoint to write")
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    check_output(args.output)  # before any checkpoint is read; again below against the inputs
    if args.run is None:
        if args.best is not None or args.last is not None:
            raise InputError(path="--best" if args.best is not None else "--last", message="needs --run DIR")
        if len(args.checkpoints) < 2:
            raise InputError(path="command line", message="give two checkpoints or more (CKPT CKPT...), or --run DIR "
                             "with --best N or --last N")  # fmt: skip
        paths = list(args.checkpoints)
    else:
        if args.checkpoints:
            raise InputError(path="--run", message=f"give --run DIR or checkpoints, not both ({args.checkpoints[0]})")
        if (args.best is None) == (args.last is None):
            raise InputError(path="--run", message="needs one of --best N and --last N")
        paths = [str(p) for p in (best_checkpoints(args.run, args.best) if args.best is not None
                                  else last_checkpoints(args.run, args.last))]  # fmt: skip
    check_output(args.output, paths)
    start = time.perf_counter()
    written = average_checkpoints(paths, args.output)
    print(
        f"{PROG}: {args.output}: the mean of {len(paths)} checkpoints ({', '.join(paths)}), {written / 1e6:.1f} MB; "
        f"{time.perf_counter() - start:.1f} s",
        file=sys.stderr,
    )
    return 0
