"""``nmt plot-attention``: the soft alignment of one sentence pair, as in Bahdanau et al. 2015, Fig. 3.

    nmt plot-attention --checkpoint CKPT --src "A man rides a bike." [--tgt "Un homme …"] --output fig.png

Without ``--tgt`` the picture shows the model's own translation, searched as ``nmt translate`` searches by
default (``--beam-size`` 5, the same default), so it is the translation ``translate`` prints; with ``--tgt``
the weights α_ij the model gives the given target, teacher-forced. Source pieces run along the top, target
pieces down the side, both ending with ``</s>``; white is weight 1, black 0, and the colour bar beside the
matrix shows the grey of each value between (a row spread evenly over 10 pieces is 0.1 each: dark, not zero).
Needs an attention model (rnnsearch): the RNN Encoder–Decoder has no alignment to show.
"""

from __future__ import annotations

import sys
from pathlib import Path

from jsonargparse import ArgumentParser

from nmt.commands import options
from nmt.commands.options import CommandParser
from nmt.data.encoding import UnencodableText, check_encodable, source_ids, target_ids
from nmt.decoding import SearchConfig
from nmt.errors import InputError
from nmt.inference import Translator
from nmt.plotting import DPI, attention_heatmap, save_figure, supported_formats
from nmt.textio import check_output

PROG = "nmt plot-attention"
MAX_PIECES = 200  # per side: beyond this the labels overlap, and drawing takes minutes


def build_parser() -> ArgumentParser:
    p = CommandParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--checkpoint",
        required=True,
        metavar="CKPT",
        help="an attention (rnnsearch) checkpoint written by `nmt fit` (or `nmt export`)",
    )
    p.add_argument("--src", required=True, metavar="TEXT", help="the source sentence")
    p.add_argument(
        "--tgt", default=None, metavar="TEXT", help="a target sentence to align (default: the model's translation)"
    )
    p.add_argument("--output", required=True, metavar="FILE", help="the figure: .png, .pdf, .svg …")
    p.add_argument(
        "--beam-size",
        type=options.BEAM_SIZE,
        default=SearchConfig().beam_size,
        help="beam width of the model's own translation, as nmt translate's (1 = greedy)",
    )
    p.add_argument(
        "--size", type=options.INCHES, nargs=2, default=None, metavar=("W", "H"), help="inches (default: by length)"
    )
    p.add_argument("--dpi", type=options.DPI, default=DPI, help="pixels per inch of a raster output")
    p.add_argument("--device", default="auto", help="where to run the model: auto (CUDA when present), cpu, cuda …")
    return p


def check_sentence(option: str, text: str | None) -> None:
    """A sentence from the command line: not blank, and text (undecodable bytes in argv come as surrogates)."""
    if text is None:
        return
    if not text.strip():
        raise InputError(path=option, message="the sentence is empty")
    try:
        check_encodable([text])
    except UnencodableText:
        raise InputError(path=option, message="the sentence is not valid UTF-8") from None
    if "\x00" in text or "\n" in text:
        raise InputError(path=option, message="give one sentence: no NUL bytes or line breaks")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    suffix = Path(args.output).suffix.lstrip(".").lower()
    if suffix not in supported_formats():
        raise InputError(path=args.output, message=f"unknown figure format {suffix!r}; use .png, .pdf or .svg")
    for option, text in (("--src", args.src), ("--tgt", args.tgt)):
        check_sentence(option, text)
    if args.size is not None:
        options.check_figure(*args.size, args.dpi, size_given=True, default_dpi=DPI)
    check_output(args.output, [args.checkpoint])
    translator = Translator.load(args.checkpoint, device=args.device)
    if not translator.has_attention:
        raise InputError(
            path=args.checkpoint,
            message=f"no attention to plot: this is a {translator.network.architecture} model (needs rnnsearch)",
        )
    for option, text, encode in (("--src", args.src, source_ids), ("--tgt", args.tgt, target_ids)):
        if text is not None and (n := len(encode(translator.tokenizer, [text])[0])) > MAX_PIECES:
            raise InputError(path=option, message=f"{n} pieces; a heatmap of more than {MAX_PIECES} is unreadable")
    shown = translator.attention(args.src, args.tgt, beam_size=args.beam_size)
    title = f"{args.src}\n{shown.translation}"
    fig = attention_heatmap(shown.alpha, shown.src_pieces, shown.tgt_pieces, title=title, size=args.size)
    options.check_figure(*fig.get_size_inches(), args.dpi, size_given=args.size is not None, default_dpi=DPI)
    save_figure(fig, args.output, dpi=args.dpi)
    print(f"{PROG}: {len(shown.tgt_pieces)}×{len(shown.src_pieces)} alignment -> {args.output}", file=sys.stderr)
    return 0
