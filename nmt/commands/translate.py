"""``nmt translate``: translate lines with beam search, streaming.

    nmt translate --checkpoint CKPT [--input FILE|-] [--output FILE|-] [--beam-size 5] [--n-best N] …

One output line per input line (``--n-best N``: N lines, each starting with the input line's id; a blank
input line has one, empty, hypothesis), in input order. The command streams: a reader thread reads and
encodes lines ahead into a queue; the main thread takes the lines already there (waiting only for the
first), up to 8 batches' worth, sorts them by length and translates them in batches of ``--batch-tokens``
source pieces. Each translation is written, and the output flushed, as soon as every line before it is
done, so ``tail -f log | nmt translate …`` answers each line as it comes, and a file is decoded in batches
of similar length.

Lines are never dropped: an empty (or blank) line gives an empty translation (score 0), and a line
longer than ``--max-input-tokens`` pieces is translated from its first pieces (warning naming the line).
Output lines end with "\\n" whatever the input's line ends ("\\r\\n" is read as a line end and not written
back; a last line without one gets one), and a translation never holds a line break of its own. A NaN or
infinite score (a broken model) stops the command with an error naming the line.

Output formats (fields after the translation, in this order, each only when asked for):

    plain     TRANSLATION[<TAB>LOG_PROB][<TAB>ALIGNMENT]
    n-best    ID ||| TRANSLATION ||| SCORE[ ||| LOG_PROB][ ||| ALIGNMENT]     (Moses; ID counts from 0)

LOG_PROB (``--scores``) is the total log-probability of the translation including its EOS; SCORE is the
length-normalised score the n-best list is ranked by (equal to LOG_PROB with ``--length-penalty none``).
ALIGNMENT (``--alignment``, attention models only) is Pharaoh ``i-j`` pairs: for every target piece j,
the source piece i it attends to most. Both indices count *SentencePiece pieces* from 0 — what the model
reads and writes, not words — and links to the source EOS are left out.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable

from jsonargparse import ArgumentParser

from nmt import limits
from nmt.commands import options
from nmt.commands.options import CommandParser
from nmt.inference import Candidate, Translation, Translator
from nmt.textio import announce_terminal_input, atomic_output, check_input, check_output, read_lines

PROG = "nmt translate"


def build_parser() -> ArgumentParser:
    parser = CommandParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--input", default="-", metavar="FILE", help="plain or .gz UTF-8 text, one sentence per line (- = stdin)"
    )
    parser.add_argument(
        "--output", default="-", metavar="FILE", help="plain or .gz (- = stdout); a file appears when complete"
    )
    options.add_model_arguments(parser)
    options.add_search_arguments(parser)
    options.add_runtime_arguments(parser, batch_tokens=options.TRANSLATE_BATCH_TOKENS)
    options.add_input_arguments(parser, doing="translated")
    options.add_shortlist_arguments(parser)
    parser.add_argument(
        "--n-best",
        type=limits.N_BEST,
        default=None,
        metavar="N",
        help="write the N best translations of every line, Moses format 'id ||| hyp ||| score'",
    )
    parser.add_argument("--scores", action="store_true", help="append the log-probability of each translation")
    parser.add_argument(
        "--alignment",
        action="store_true",
        help="append the attention's argmax alignment, Pharaoh i-j over SentencePiece pieces",
    )
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress on stderr (default: when --output is a file)",
    )
    return parser


def format_lines(translation: Translation, *, n_best: int | None, scores: bool, align: bool) -> Iterable[str]:
    """The output line(s) of one input line (see the module docstring)."""
    for candidate in translation.candidates if n_best else translation.candidates[:1]:
        extra = ([f"{candidate.log_prob:.4f}"] if scores else []) + ([pharaoh(candidate)] if align else [])
        if n_best:
            yield " ||| ".join([str(translation.line - 1), candidate.text, f"{candidate.score:.4f}", *extra])
        else:
            yield "\t".join([candidate.text, *extra])


def pharaoh(candidate: Candidate) -> str:
    return " ".join(f"{i}-{j}" for i, j in candidate.alignment())


def main(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    config = options.search_config(args, parser, n_best=1 if args.n_best is None else args.n_best)
    inputs = [args.input, args.checkpoint, *args.ensemble]
    check_input(args.input)  # both before the model is loaded
    check_output(args.output, inputs)
    with options.torch_threads(args.threads):
        translator = Translator.load(args.checkpoint, ensemble=args.ensemble, device=args.device, dtype=args.dtype)
        if args.alignment:
            translator.require_attention("--alignment")
        shortlist = options.load_shortlist(args, translator)
        # Nothing is read yet (the reader thread starts with the first batch, once the output is open), but the
        # beam is checked against the vocabulary here, before the output is opened.
        ready_groups = translator.translate_batches(
            (text for text, _ in read_lines(args.input, errors=args.encoding_errors)),
            config,
            **options.translation_options(args, prog=PROG, source_name=args.input, shortlist=shortlist),
        )
        announce_terminal_input(args.input, PROG)
        show_progress = args.output != "-" if args.progress is None else args.progress
        with atomic_output(args.output, inputs=inputs) as out, options.progress(show_progress) as bar:
            for ready in ready_groups:
                for translation in ready:
                    for line in format_lines(translation, n_best=args.n_best, scores=args.scores, align=args.alignment):
                        out.write(line + "\n")
                out.flush()  # each line answered once its batch is done (a pipe, tail -f); kept if we are killed
                bar.update(len(ready))
    return 0
