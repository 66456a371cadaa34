"""``nmt shortlist``: the lexical table a vocabulary shortlist is drawn from (``--shortlist`` of translate, evaluate).

    nmt shortlist --checkpoint CKPT --source train.en.gz --target train.fr.gz --output lex.tsv [--keep 100]
                  [--max-tokens 250]

The corpus (plain or gzip'd, one sentence a line, the two sides line by line) is tokenized with the checkpoint's
SentencePiece model, and IBM Model 1 (five EM iterations) estimates p(target piece | source piece); TABLE keeps
the --keep best translations of each source piece and every target piece's count, in the tab-separated text
format of ``nmt.decoding.shortlist`` (``nmt.data.lexicon`` estimates it). Build it from the corpus the model was
trained on. A corpus without a pair of non-blank lines is refused; a pair with a side over --max-tokens pieces
is skipped (IBM Model 1 links each of its source pieces to each of its target pieces: its memory grows with the
square of the length), and how many were is said on stderr.
"""

from __future__ import annotations

import sys
import time

from jsonargparse import ArgumentParser

from nmt import limits
from nmt.checkpoint import load_model
from nmt.commands import options
from nmt.commands.options import CommandParser
from nmt.data.lexicon import build_table, corpus_pairs
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
    parser.add_argument(
        "--max-tokens",
        type=limits.PIECES,
        default=limits.MAX_INPUT_TOKENS,
        help="sentence pairs with a side over this many pieces are skipped (as training drops them), with a count "
        "on stderr",
    )
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    inputs = [args.checkpoint, args.source, args.target]
    check_output(args.output, inputs)
    start = time.perf_counter()
    src_lines, tgt_lines = corpus_pairs(args.source, args.target)  # an empty corpus is refused before the model loads
    tokenizer = load_model(args.checkpoint, device="cpu").tokenizer  # only its SentencePiece model is used
    built = build_table(
        args.output,
        tokenizer,
        src_lines,
        tgt_lines,
        keep=args.keep,
        max_tokens=args.max_tokens,
        source_name=args.source,
        inputs=[args.source, args.target],
    )
    if built.skipped:
        print(
            f"{PROG}: warning: {built.skipped:,} sentence pair(s) with a side over --max-tokens {args.max_tokens} "
            "pieces skipped",
            file=sys.stderr,
        )
    print(
        f"{PROG}: {args.output}: {built.pairs:,} sentence pairs, {time.perf_counter() - start:.1f} s", file=sys.stderr
    )
    return 0
