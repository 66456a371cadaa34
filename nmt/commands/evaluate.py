"""``nmt evaluate``: BLEU, chrF and TER (sacrebleu) of a hypothesis file, or of a checkpoint's translations.

    nmt evaluate --hyp FILE --ref FILE [FILE …] [--lowercase] [--json]
    nmt evaluate --checkpoint CKPT --src FILE --ref FILE [--beam-size 5 …] [--output HYP_FILE]

Every score is printed with its sacrebleu signature (``--json``: one JSON object, sacrebleu's fields per
metric). ``--lowercase`` is sacrebleu's ``-lc`` (for TER: case-insensitive). The hypotheses and every
reference must have the same number of lines; a mismatch names the longer file and its first extra line.
Empty files are an error (there is nothing to score); blank lines are sentences like any other.
"""

from __future__ import annotations

import argparse
import json
import sys

from jsonargparse import ArgumentParser
from sacrebleu.metrics import BLEU, CHRF, TER

from nmt.commands import options
from nmt.commands.options import CommandParser
from nmt.decoding import SearchConfig
from nmt.errors import InputError
from nmt.inference import Translator
from nmt.textio import atomic_output, check_input, check_output, read_lines

PROG = "nmt evaluate"


def build_parser() -> ArgumentParser:
    parser = CommandParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--hyp", default=None, metavar="FILE", help="hypotheses, one per line (instead of --checkpoint/--src)"
    )
    parser.add_argument("--src", default=None, metavar="FILE", help="source sentences to translate with --checkpoint")
    parser.add_argument("--ref", nargs="+", required=True, metavar="FILE", help="reference translation(s)")
    parser.add_argument("--lowercase", action="store_true", help="case-insensitive scores (sacrebleu -lc)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.add_argument(
        "--output", default=None, metavar="FILE", help="with --checkpoint: also write the translations here"
    )
    options.add_model_arguments(parser, checkpoint_required=False)
    options.add_search_arguments(parser)
    options.add_runtime_arguments(parser, batch_tokens=options.TRANSLATE_BATCH_TOKENS)
    options.add_input_arguments(parser, doing="translated")
    options.add_shortlist_arguments(parser)
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="with --checkpoint: lines translated, lines/s and ETA on stderr (default: when stderr is a terminal)",
    )
    return parser


def read_texts(path: str, errors: str = "strict") -> list[str]:
    return [text for text, _ in read_lines(path, errors=errors)]


def check_line_counts(hyp_path: str, n_hyp: int, ref_path: str, n_ref: int) -> None:
    if n_hyp == n_ref == 0:
        raise InputError(path=hyp_path, message="the file is empty: no sentences to score")
    if n_hyp == n_ref:
        return
    longer, shorter, n_short = (ref_path, hyp_path, n_hyp) if n_ref > n_hyp else (hyp_path, ref_path, n_ref)
    raise InputError(
        path=longer, line=n_short + 1, message=f"line has no counterpart: {shorter} has only {n_short} lines"
    )


def translate_texts(args: argparse.Namespace, texts: list[str], config: SearchConfig) -> list[str]:
    """Translate the --src lines with the checkpoint(s), in batches of similar length; in input order."""
    translator = Translator.load(args.checkpoint, ensemble=args.ensemble, device=args.device, dtype=args.dtype)
    shortlist = options.load_shortlist(args, translator)
    found = translator.translate(  # checks the beam against the vocabulary before the progress bar shows
        texts, config, **options.translation_options(args, prog=PROG, source_name=args.src, shortlist=shortlist)
    )
    show = sys.stderr.isatty() if args.progress is None else args.progress
    hypotheses: list[str] = []
    with options.progress(show, total=len(texts)) as bar:
        for translation in found:
            hypotheses.append(translation.text)
            bar.update(1)
    return hypotheses


def score(hypotheses: list[str], references: list[list[str]], *, lowercase: bool) -> list:
    """(metric, score) for BLEU, chrF and TER."""
    metrics = [BLEU(lowercase=lowercase), CHRF(lowercase=lowercase), TER(case_sensitive=not lowercase)]
    return [(m, m.corpus_score(hypotheses, references)) for m in metrics]


def _json_score(metric, result) -> dict:
    """sacrebleu's JSON fields, with the score unrounded."""
    return {**json.loads(result.format(signature=str(metric.get_signature()), is_json=True)), "score": result.score}


def main(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if (args.hyp is None) == (args.checkpoint is None):
        parser.error("give either --hyp, or --checkpoint with --src")
    if args.checkpoint is not None and args.src is None:
        parser.error("--checkpoint needs --src (the sentences to translate)")
    inputs = [args.hyp, args.src, *args.ref, args.checkpoint, *args.ensemble]
    for path in [args.hyp, args.src, *args.ref]:
        check_input(path)
    check_output("-")  # the scores; both checked before the (long) translation
    check_output(args.output, inputs)
    references = [read_texts(path, args.encoding_errors) for path in args.ref]
    if args.hyp is not None:
        hypotheses, hyp_path = read_texts(args.hyp, args.encoding_errors), args.hyp
    else:
        hyp_path, texts = args.src, read_texts(args.src, args.encoding_errors)
        for path, refs in zip(args.ref, references, strict=True):  # fail before the (long) translation
            check_line_counts(hyp_path, len(texts), path, len(refs))
        with options.torch_threads(args.threads):
            hypotheses = translate_texts(args, texts, options.search_config(args, parser))
        if args.output is not None:
            with atomic_output(args.output, inputs=inputs) as out:
                out.writelines(h + "\n" for h in hypotheses)
    for path, refs in zip(args.ref, references, strict=True):
        check_line_counts(hyp_path, len(hypotheses), path, len(refs))

    results = score(hypotheses, references, lowercase=args.lowercase)
    if args.json:
        report = {
            "hypotheses": args.hyp or args.output,
            "checkpoint": args.checkpoint,
            "references": args.ref,
            "sentences": len(hypotheses),
            **{m.__class__.__name__.lower(): _json_score(m, s) for m, s in results},
        }
        sys.stdout.write(json.dumps(report, indent=1) + "\n")
    else:
        for m, s in results:
            sys.stdout.write(s.format(signature=str(m.get_signature())) + "\n")
    return 0
