"""``nmt shortlist``: the lexical table a vocabulary shortlist is drawn from (``--shortlist`` of translate, evaluate).

    nmt shortlist --checkpoint CKPT --source train.en.gz --target train.fr.gz --output lex.tsv [--keep 100]

The corpus (plain or gzip'd, one sentence a line, the two sides line by line) is tokenized with the checkpoint's
SentencePiece model, and IBM Model 1 (five EM iterations) estimates p(target piece | source piece); TABLE keeps
the --keep best translations of each source piece and every target piece's count, in the tab-separated text
format of ``nmt.decoding.shortlist`` (``nmt.data.lexicon`` estimates it). Build it from the corpus the model was
trained on.
"""

from __future__ import annotations

import sys
import time

from jsonargparse import ArgumentParser

from nmt.checkpoint import load_model
from nmt.commands import options
from nmt.commands.options import CommandParser
from nmt.data.lexicon import build_table
from nmt.textio import check_output

PROG = "nmt shortlist"


def build_parser() -> ArgumentParser:
    parser = CommandParser(prog=PROG, description=__doc__.split("\n\n")[0])
    options.add_model_arguments(parser, ensemble=False)
    parser.add_argument("--source", required=True, help="the training corpus' source side (plain or .gz)")
    parser.add_argument("--target", required=True, help="its target side, line by line with --source")
    parser.add_argument("--output", required=True, help="the table to write (tab-separated text; .gz compresses)")
    parser.add_argument(
        "--keep",
        type=options.count(1, 100_000),
        default=100,
        help="translations kept per source piece (a shortlist uses up to this many: --shortlist-per-word)",
    )
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    inputs = [args.checkpoint, args.source, args.target]
    check_output(args.output, inputs)
    start = time.perf_counter()
    tokenizer = load_model(args.checkpoint, device="cpu").tokenizer  # only its SentencePiece model is used
    pairs = build_table(args.output, tokenizer, args.source, args.target, keep=args.keep)
    print(f"{PROG}: {args.output}: {pairs:,} sentence pairs, {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return 0
