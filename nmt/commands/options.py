"""The options of the inference commands: the range of every numeric option, and a parser that reports a bad
value in one line.

Each numeric option's type is a `nmt.limits.Range` (those the Python API takes too are defined there, and
`SearchConfig` and `nmt.Translator` check their arguments against the same ranges): a value that is not a
number, or lies outside the range, is refused while the command line is parsed, before any file is read or
any model loaded, as one line on stderr, ``nmt translate: error: --beam-size: 100000 is more than 256 (…)``,
exit status 2 (`CommandParser` turns every parse error into an `InputError` naming the option, which the CLI
prints). Limits that depend on another
option — the pixels of a figure — are checked by the functions below as soon
as what they need is known (a beam no wider than the target vocabulary: by `nmt.Translator`, which knows it). The
limits are listed in docs/hostile-input.md.
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, NoReturn

import torch
from jsonargparse import ArgumentParser, DefaultHelpFormatter

from nmt.checkpoint import INFERENCE_DTYPES
from nmt.cli import plain_text
from nmt.decoding import SearchConfig
from nmt.decoding.shortlist import SHORTLIST_FIRST, SHORTLIST_PER_WORD, Shortlist
from nmt.errors import InputError
from nmt.limits import (
    ALPHA,
    BATCH_TOKENS,
    BEAM_SIZE,
    MAX_INPUT_TOKENS,
    MAX_LENGTH_A,
    MAX_LENGTH_B,
    PIECES,
    Range,
    count,
    number_text,
)

if TYPE_CHECKING:
    from nmt.inference import Translator

MAX_THREADS = 1024
MAX_DIGITS = 17
"""Significant digits of a float64: more would print noise."""
MAX_PLOT_POINTS = 100_000
MIN_DPI, MAX_DPI = 10, 2400
MIN_INCHES, MAX_INCHES = 0.5, 500.0
MAX_PIXELS = 50_000_000
"""Pixels of a raster figure (width × height): 200 MB of RGBA to draw. The default size of the largest
heatmap `nmt plot-attention` draws (200 × 200 pieces) at the default 100 dpi is 43 million."""
MAX_SIDE_PIXELS = 65_535
"""matplotlib's Agg renderer draws less than 2^16 pixels in each direction."""


THREADS = count(0, MAX_THREADS, why_high="more threads than cores only slow torch down")
DPI = count(MIN_DPI, MAX_DPI, why_low="text cannot be drawn that small", why_high="see also the pixel limit")
INCHES = Range(float, MIN_INCHES, MAX_INCHES, why_low="nothing fits", why_high="see also the pixel limit")


TRANSLATE_BATCH_TOKENS = 500
"""Source pieces per batch of beam search (≈ 32 Multi30k sentences): the fastest on 1-2 CPU threads."""


# -- the option groups every inference command shares ------------------------------------------------------------


def add_model_arguments(parser: ArgumentParser, *, checkpoint_required: bool = True, ensemble: bool = True) -> None:
    """--checkpoint (and --ensemble: further checkpoints decoded together)."""
    parser.add_argument(
        "--checkpoint",
        required=checkpoint_required,
        default=None,
        metavar="CKPT",
        help="a checkpoint written by `nmt fit` (or `nmt export`)",
    )
    if ensemble:
        parser.add_argument(
            "--ensemble",
            nargs="+",
            default=[],
            metavar="CKPT",
            help="further checkpoints (same SentencePiece model) decoded together with --checkpoint: "
            "the mean of their log-probabilities",
        )


def add_runtime_arguments(parser: ArgumentParser, *, batch_tokens: int | None, dtype: bool = True) -> None:
    """--device, --dtype, --threads, --batch-tokens (batch_tokens None: none, the command batches otherwise): the
    same meaning and defaults in every command."""
    parser.add_argument(
        "--device", default="auto", help="where to run the model: auto (CUDA when present), cpu, cuda, cuda:1 …"
    )
    if dtype:
        parser.add_argument(
            "--dtype",
            default="float32",
            choices=list(INFERENCE_DTYPES),
            help="weights and activations: float32 (as trained); bfloat16 (scores stay float32; about 2x faster "
            "on GPUs and on CPUs with AVX-512 BF16 or AMX, much slower on CPUs without them); int8 (the linear "
            "layers' weights and products in int8, the rest and every score float32: faster on any CPU)",
        )
    parser.add_argument(
        "--threads",
        type=THREADS,
        default=0,
        help="CPU threads for torch (0: torch's default, all cores; on a busy machine 1 can be much faster)",
    )
    if batch_tokens is not None:
        parser.add_argument(
            "--batch-tokens", type=BATCH_TOKENS, default=batch_tokens, help="pieces per batch (use more on a GPU)"
        )


def add_input_arguments(parser: ArgumentParser, *, doing: str, encoding: bool = True) -> None:
    """--max-input-tokens and (encoding: bytes are decoded here) --encoding-errors, for commands that read source
    lines."""
    parser.add_argument(
        "--max-input-tokens",
        type=PIECES,
        default=MAX_INPUT_TOKENS,
        help=f"longer lines are {doing} from their first this many pieces (with a warning)",
    )
    if not encoding:
        return
    parser.add_argument(
        "--encoding-errors",
        default="strict",
        choices=["strict", "replace"],
        help="invalid UTF-8 in the input: stop with an error, or replace it with U+FFFD",
    )


_SEARCH = SearchConfig()


def add_search_arguments(parser: ArgumentParser) -> None:
    """The beam search's options (`SearchConfig`)."""
    parser.add_argument("--beam-size", type=BEAM_SIZE, default=_SEARCH.beam_size, help="beam width (1 = greedy)")
    parser.add_argument(
        "--length-penalty",
        default=_SEARCH.length_penalty,
        choices=["none", "length", "gnmt"],
        help="rank finished hypotheses by log_prob / lp(L): lp = 1, L^alpha or ((5+L)/6)^alpha",
    )
    parser.add_argument("--alpha", type=ALPHA, default=_SEARCH.alpha, help="exponent of the length penalty")
    parser.add_argument(
        "--max-length-a",
        type=MAX_LENGTH_A,
        default=_SEARCH.max_length_a,
        help="output length limit a·|src| + b (|src| in pieces, EOS included)",
    )
    parser.add_argument("--max-length-b", type=MAX_LENGTH_B, default=_SEARCH.max_length_b, help="see --max-length-a")


def search_config(args: argparse.Namespace, parser: ArgumentParser, n_best: int = 1) -> SearchConfig:
    """The `SearchConfig` of the search options. It checks them itself (the API's checks are the CLI's): a
    refusal ``name: reason`` becomes one line naming the option, ``--name: reason``."""
    try:
        return SearchConfig(
            beam_size=args.beam_size,
            length_penalty=args.length_penalty,
            alpha=args.alpha,
            max_length_a=args.max_length_a,
            max_length_b=args.max_length_b,
            n_best=n_best,
        )
    except ValueError as e:
        name, _, reason = str(e).partition(": ")
        raise InputError(path=_option(name), message=_SEARCH_PARAMETER.sub(lambda m: _option(m[0]), reason)) from None


_SEARCH_PARAMETER = re.compile(r"\b(beam_size|n_best|length_penalty|alpha|max_length_a|max_length_b)\b")


def _option(parameter: str) -> str:
    """The command-line option of a `SearchConfig` parameter: n_best -> --n-best."""
    return "--" + parameter.replace("_", "-")


def add_shortlist_arguments(parser: ArgumentParser) -> None:
    """--shortlist and its sizes (translate, evaluate)."""
    parser.add_argument(
        "--shortlist",
        default=None,
        metavar="TABLE",
        help="decode each batch over a vocabulary shortlist: the pieces TABLE (written by nmt shortlist) lists "
        "for its source pieces, and the most frequent ones; faster, and the probabilities are renormalised over it, "
        "so it is refused with --scores and --n-best (exact log-probabilities)",
    )
    parser.add_argument(
        "--shortlist-first",
        type=count(0, 1_000_000),
        default=SHORTLIST_FIRST,
        metavar="K",
        help="the K most frequent target pieces are always in the shortlist",
    )
    parser.add_argument(
        "--shortlist-per-word",
        type=count(0, 1_000_000),
        default=SHORTLIST_PER_WORD,
        metavar="N",
        help="and the N best translations of each source piece of the batch",
    )


def load_shortlist(args: argparse.Namespace, translator: Translator) -> Shortlist | None:
    """The shortlist --shortlist names, for the translator's vocabulary (None without one)."""
    if args.shortlist is None:
        return None
    for option in ("scores", "n_best"):
        if getattr(args, option, None):
            raise InputError(
                path="--shortlist",
                message=f"--{option.replace('_', '-')} asks for exact log-probabilities; a shortlist renormalises "
                "them over part of the vocabulary (leave out one or the other)",
            )
    if args.shortlist_first == args.shortlist_per_word == 0:
        raise InputError(
            path="--shortlist-first",
            message="0 with --shortlist-per-word 0 leaves each sentence EOS alone: every translation would be empty",
        )
    return translator.load_shortlist(args.shortlist, first=args.shortlist_first, per_word=args.shortlist_per_word)


def translation_options(
    args: argparse.Namespace, *, prog: str, source_name: str, shortlist: Shortlist | None = None
) -> dict:
    """The keyword arguments of `Translator.translate` that translate and evaluate take from their options."""
    return dict(
        batch_tokens=args.batch_tokens,
        max_input_tokens=args.max_input_tokens,
        source_name=source_name,
        warning_prefix=f"{prog}: warning",
        shortlist=shortlist,
    )


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Use `threads` CPU threads (0: leave torch's setting) and restore the setting afterwards, since a command's
    ``main`` may run in-process (tests, scripts)."""
    before = torch.get_num_threads()
    if threads > 0:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def progress(enabled: bool, total: int | None = None):
    """Lines done, lines/s and (with a total) the ETA, on stderr."""
    from tqdm import tqdm

    return tqdm(total=total, disable=not enabled, unit=" lines", file=sys.stderr, dynamic_ncols=True, mininterval=0.5)


class CommandParser(ArgumentParser):
    """jsonargparse's parser for the inference commands. Its errors are one line naming the option (an `InputError`:
    the CLI prints ``nmt CMD: error: --OPTION: what is wrong`` and exits with status 2) instead of the usage and a
    report over several lines: an unknown option with the nearest known ones ("did you mean --beam-size?"), a
    missing one by its flag. Options are never abbreviated (``--beam 5`` is an unknown option, not
    ``--beam-size 5``), and ``--help`` is `CommandHelpFormatter`'s."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", CommandHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error:  # a caller that asked for jsonargparse's exception
            super().error(message, ex)
        if match := _UNRECOGNIZED.match(message):
            raise self._unknown(match.group(1).split()) from None
        if match := _REQUIRED.match(message):
            raise self._missing([name.strip() for name in match.group(1).split(",")]) from None
        option, text = _located(message)
        raise InputError(path=option, message=text) from None

    def _unknown(self, words: list[str]) -> InputError:
        """The first of the words the parser did not take: an option it does not know, or a stray argument."""
        flag = next((word.partition("=")[0] for word in words if re.match(r"--?[^\W\d]", word)), None)
        if flag is None:
            return InputError(
                path="command line",
                message=f"unexpected argument {words[0]!r} (options start with --; {self.prog} --help lists them)",
            )
        near = self.nearest_options(flag)
        hint = f"did you mean {' or '.join(near)}?" if near else f"{self.prog} --help lists the options"
        return InputError(path=flag, message=f"unknown option; {hint}")

    def nearest_options(self, flag: str) -> list[str]:
        """The options a mistyped `flag` most likely meant: the same with dashes for underscores (the training
        commands' spelling), those it begins (an abbreviation), or the closest spellings."""
        known = [option for action in self._actions for option in action.option_strings if option.startswith("--")]
        spelled = "--" + flag.lstrip("-").replace("_", "-")
        if spelled in known:
            return [spelled]
        if started := [option for option in known if option.startswith(spelled)]:
            return started[:3]
        return difflib.get_close_matches(spelled, known, n=2, cutoff=0.6)

    def _missing(self, names: list[str]) -> InputError:
        """A required option (or argument) not given, named as on the command line (jsonargparse names its key)."""
        actions = {action.dest: action for action in self._actions}
        flags, helps = [], []
        for name in names:
            action = actions.get(name)
            if action is None:
                flags.append(name)
                continue
            longest = max(action.option_strings, key=len, default=None)
            flags.append(longest or str(action.metavar or action.dest.upper()))
            helps.append(plain_text(action.help or ""))
        what = helps[0] if len(flags) == 1 and helps and helps[0] else f"{self.prog} --help describes them"
        return InputError(path=", ".join(flags), message=f"required ({what})")


class CommandHelpFormatter(DefaultHelpFormatter):
    """``--help`` as a user reads it: each option's metavar says what it takes (N, X, {a,b} or the command's
    own, e.g. FILE), its help ends with what it needs, its range and its default once, "(1 to 256; default: 5)",
    and no text shows reStructuredText markup or Python types."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if isinstance(action, argparse._HelpAction):
            return super()._get_help_string(action)
        text = action.help or ""
        notes = ["required"] if action.required and action.option_strings else []  # a positional always is
        if isinstance(action.type, Range) and action.type.bounds:
            notes.append(action.type.bounds)
        default = _shown_default(action.default)
        if default is not None and "default:" not in text:  # a help text may describe its default itself
            notes.append(f"default: {default}")
        return text + (f" ({'; '.join(notes)})" if notes else "")

    def _expand_help(self, action: argparse.Action) -> str:
        return plain_text(super()._expand_help(action))

    def _format_text(self, text: str) -> str:
        return super()._format_text(plain_text(text))

    def _get_default_metavar_for_optional(self, action: argparse.Action) -> str:
        if isinstance(action.type, Range):
            return "N" if action.type.kind is int else "X"
        return super()._get_default_metavar_for_optional(action)


def _shown_default(value: object) -> str | None:
    """A default as --help shows it: None, a flag's False and an empty list are no default to show."""
    if value is None or value is argparse.SUPPRESS or isinstance(value, bool) or value == []:
        return None
    if isinstance(value, (list, tuple)):
        return " ".join(number_text(v) if isinstance(v, float) else str(v) for v in value)
    return number_text(value) if isinstance(value, float) else str(value)


_UNRECOGNIZED = re.compile(r"unrecognized arguments: (.*)", re.S)
_REQUIRED = re.compile(r"the following arguments are required: (.*)", re.S)
_LITERAL = re.compile(r"Expected a (?:typing\.)?Literal\[(.*?)\]\. Got value: (.*)")
_ARGUMENT = re.compile(r"argument ([^\s:]+): (.*)", re.S)
_PARSER_KEY = re.compile(r'Parser key "([^"]+)"(?: element \d+)?:\s*(.*)', re.S)


def _located(message: str) -> tuple[str, str]:
    """(option, what is wrong) from an argparse/jsonargparse error message, on one line."""
    option = "command line"
    if match := _ARGUMENT.match(message):
        option, message = match.group(1).split("/")[0], match.group(2)
    elif match := _PARSER_KEY.match(message):
        option, message = "--" + match.group(1).replace("_", "-"), match.group(2)
    if match := _LITERAL.search(message):  # jsonargparse's words for a value outside a Literal's choices
        choices = [choice.strip().strip("'\"") for choice in match.group(1).split(",")]
        near = difflib.get_close_matches(match.group(2), choices, n=1)
        message = f"{match.group(2)!r} is not one of {', '.join(choices)}" + (
            f"; did you mean {near[0]}?" if near else ""
        )
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    return option, "; ".join(lines) or "invalid"


# -- limits between options, or that need the model ------------------------------------------------------------


def check_figure(width: float, height: float, dpi: int, *, size_given: bool, default_dpi: int) -> None:
    """A raster figure of width × height inches at `dpi`: at most MAX_PIXELS pixels, and at most MAX_SIDE_PIXELS in
    each direction. The error names --size when the size was given and is too large even at the default dpi,
    else --dpi."""

    def fits(at: int) -> bool:
        w, h = round(width * at), round(height * at)
        return w * h <= MAX_PIXELS and max(w, h) <= MAX_SIDE_PIXELS

    if fits(dpi):
        return
    w, h = round(width * dpi), round(height * dpi)
    raise InputError(
        path="--size" if size_given and not fits(default_dpi) else "--dpi",
        message=f"{width:g}×{height:g} inches at {dpi} dpi is {w:,}×{h:,} pixels; the most is {MAX_PIXELS:,} pixels, "
        f"and {MAX_SIDE_PIXELS:,} in each direction (lower --dpi or --size)",
    )
