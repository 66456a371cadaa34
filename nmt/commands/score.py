"""``nmt score``: the model's p(target | source) of the pairs of a Moses phrase table, sentence pairs or n-best list.

For a phrase table, as Cho et al. 2014 §3.1 used it: a new feature of the SMT log-linear model.

    nmt score --checkpoint M.ckpt --phrase-table phrase-table.gz --output scored.gz [--log] [--unk-feature]
    nmt score --checkpoint M.ckpt --src test.en --tgt test.fr          # sum <TAB> mean <TAB> tokens
    nmt score --checkpoint M.ckpt --tsv pairs.tsv
    nmt score --checkpoint M.ckpt --nbest nbest.gz --src dev.en [--feature-name RNN] [--weights moses.ini]

Every input line gives exactly one output line, in the input's order. A phrase table or n-best list comes
out byte for byte as it went in, plus the new value(s):

- phrase table: p(tgt | src) appended to the scores field (Moses takes the log of every phrase-table
  score itself), floored at e^-100, the value Moses floors log-scores to; ``--log`` writes log p instead,
  unfloored. ``--unk-feature`` appends the number n of target words the vocabulary cannot represent
  (see `nmt.scoring.scorer`), written as e^n so that Moses' log gives n back (like the phrase penalty 2.718),
  or as n with ``--log``.
- n-best list: ``RNN= log p(hyp | src)`` appended to the features (n-best features are log-domain), in the
  list's label style (``RNN:`` for the colon-labelled lists of ~2008); ``--unk-feature`` adds
  ``RNN_unk= n``. ``--weights`` (a moses.ini or ``Name= w …`` lines, with a weight for the new feature)
  rewrites each total as Σ w·f over the printed features and re-orders each sentence's hypotheses by it.
  A sentence's hypotheses must be consecutive lines, as Moses writes them: the list streams through one
  sentence at a time, and an id that comes back after another id is an error naming that line.
  Features Moses does not print (UnknownWordPenalty0) are not in the new total.

The text given to the model is the field stripped of surrounding blanks with Moses escapes undone
(``&apos;`` -> ``'``; ``--keep-escapes`` gives it as it is); the output keeps the escapes.
``--direction tgt2src`` gives the model the target side and scores the source side.
Unscorable pairs (see `nmt.scoring.scorer`): an empty side is scored as the empty string; an over-long side
is truncated (or floored, ``--too-long floor``); both are warned about and counted in the summary on stderr.
"""

from __future__ import annotations

import argparse
import itertools
import math
import re
from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import IO, Literal

import numpy as np
from jsonargparse import ArgumentParser, Namespace

from nmt import limits
from nmt.commands import options
from nmt.commands.options import CommandParser
from nmt.errors import InputError
from nmt.inference import Translator
from nmt.inference.batching import chunks, prefetch
from nmt.moses import (
    MalformedLine,
    NBestEntry,
    PhrasePair,
    Reranker,
    format_value,
    parse_nbest_line,
    parse_phrase_line,
    read_weights,
    unescape,
)
from nmt.scoring.report import Report
from nmt.scoring.scorer import PairScorer, PairScores, ScoringConfig
from nmt.textio import atomic_output, check_input, check_output, read_binary_lines, read_lines

PROG = "nmt score"
_LABEL = re.compile(r"[^\s=:|]+")  # an n-best feature label, without its "=" / ":"


def build_parser() -> ArgumentParser:
    p = CommandParser(prog=PROG, description=__doc__.split("\n\n")[0])
    options.add_model_arguments(p, ensemble=False)
    inputs = p.add_argument_group("input (one of: --phrase-table; --src + --tgt; --tsv; --nbest + --src)")
    inputs.add_argument("--phrase-table", default=None, metavar="FILE", help="Moses phrase table, plain or .gz")
    inputs.add_argument("--src", default=None, metavar="FILE", help="source sentences, one a line")
    inputs.add_argument("--tgt", default=None, metavar="FILE", help="target sentences, line-aligned with --src")
    inputs.add_argument("--tsv", default=None, metavar="FILE", help="source<TAB>target lines")
    inputs.add_argument("--nbest", default=None, metavar="FILE", help="Moses n-best list (with --src)")
    p.add_argument("--output", default="-", metavar="FILE", help="output file ('-': stdout; .gz compresses)")
    p.add_argument(
        "--direction",
        type=Literal["src2tgt", "tgt2src"],
        default="src2tgt",
        help="src2tgt: p(tgt | src); tgt2src: the model reads the target side and scores the source",
    )
    p.add_argument("--log", action="store_true", help="phrase table: write log p instead of p")
    p.add_argument(
        "--unk-feature",
        action="store_true",
        help="also write the number of target words the vocabulary cannot represent",
    )
    p.add_argument("--feature-name", default="RNN", metavar="NAME", help="n-best: label of the new feature")
    p.add_argument(
        "--weights",
        default=None,
        metavar="FILE",
        help="n-best: moses.ini or 'Name= w …' lines; rewrite totals and re-rank each sentence's hypotheses "
        "(the lines of a sentence id must be consecutive, as Moses writes them: an id that comes back after "
        "another is an error)",
    )
    p.add_argument(
        "--skip-malformed",
        action="store_true",
        help="copy lines with too few fields through unchanged (with a warning) instead of failing",
    )
    p.add_argument(
        "--encoding-errors",
        type=Literal["strict", "replace"],
        default="strict",
        help="invalid UTF-8 in a text the model reads: an error, or replaced by U+FFFD",
    )
    p.add_argument("--keep-escapes", action="store_true", help="give the model Moses escapes (&apos;) as they are")
    p.add_argument(
        "--digits",
        type=options.count(1, options.MAX_DIGITS),
        default=6,
        help="significant digits of the values written",
    )
    p.add_argument(
        "--window",
        type=limits.WINDOW,
        default=ScoringConfig.window,
        help="lines sorted by length together",
    )
    p.add_argument(
        "--max-len",
        type=limits.SCORED_PIECES,
        default=ScoringConfig.max_len,
        help="pieces per side, EOS included",
    )
    p.add_argument(
        "--too-long",
        type=Literal["truncate", "floor"],
        default="truncate",
        help="an over-long side: truncate it, or give the pair --floor",
    )
    p.add_argument(
        "--floor",
        type=limits.LOG_PROBABILITY,
        default=ScoringConfig.floor,
        help="log p of a floored pair",
    )
    options.add_runtime_arguments(p, batch_tokens=ScoringConfig.batch_tokens)
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="lines/s on stderr (default: when stderr is a terminal)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    kind = _input_kind(args)
    if kind is _NBest and not _LABEL.fullmatch(args.feature_name):
        raise InputError(
            path="--feature-name",
            message=f"{args.feature_name!r} cannot be an n-best feature label (no blanks, '=', ':' or '|')",
        )
    config = ScoringConfig(
        batch_tokens=args.batch_tokens,
        window=args.window,
        max_len=args.max_len,
        too_long=args.too_long,
        floor=args.floor,
    )
    weights = _weights(args) if kind is _NBest else None
    inputs = [args.phrase_table, args.src, args.tgt, args.tsv, args.nbest, args.weights, args.checkpoint]
    for path in inputs[:-1]:  # all before the model is loaded
        check_input(path)
    check_output(args.output, inputs)
    with options.torch_threads(args.threads):
        translator = Translator.load(args.checkpoint, device=args.device, dtype=args.dtype)
        scorer = translator.scorer(config, count_unk=args.unk_feature)
        report = Report(PROG, progress=args.progress)
        with atomic_output(args.output, inputs=inputs) as out:
            source = _NBest(args, out, weights) if kind is _NBest else kind(args, out)
            _score(source, args, scorer, report)
        report.summary()
    return 0


def _input_kind(args: Namespace) -> type[_Input]:
    given = [name for name in ("phrase_table", "src", "tgt", "tsv", "nbest") if getattr(args, name) is not None]
    kinds = {("phrase_table",): _PhraseTable, ("src", "tgt"): _Pairs, ("tsv",): _Pairs, ("src", "nbest"): _NBest}
    if tuple(given) not in kinds:
        got = ", ".join("--" + g.replace("_", "-") for g in given) or "none"
        raise InputError(
            path="command line", message=f"give --phrase-table, --src + --tgt, --tsv, or --nbest + --src (got {got})"
        )
    if args.weights is not None and given != ["src", "nbest"]:
        raise InputError(path="command line", message="--weights applies to n-best lists only")
    return kinds[tuple(given)]


# -- the pipeline ----------------------------------------------------------------------------------------------


class _Input(ABC):
    """One kind of input: its lines, how a line becomes a pair to score, and how a scored line is written.
    `parse` raises MalformedLine for a line `--skip-malformed` may copy through (`copy`)."""

    path: str  # the file the line numbers refer to
    malformed: str  # what happens to a malformed line that is copied through, for its warning

    def __init__(self, args: Namespace, out: IO[str]) -> None:
        self.args, self.out = args, out

    @abstractmethod
    def lines(self) -> Iterator[tuple[int, object]]:
        """(line number, the line as read) of every input line."""

    @abstractmethod
    def parse(self, number: int, line: object) -> tuple[object, str, str]:
        """(what `write` needs of the line, source text, target text), the texts as the model reads them."""

    @abstractmethod
    def write(self, number: int, item: object, logprob: float, n_tokens: int, n_unk: int) -> None:
        """Write a scored line."""

    @abstractmethod
    def copy(self, line: object) -> None:
        """Write a malformed line in its place (``--skip-malformed``)."""

    @abstractmethod
    def finish(self) -> None:
        """Write what is held back, after the last line."""

    def model_text(self, text: str) -> str:
        return text if self.args.keep_escapes else unescape(text)


def _score(source: _Input, args: Namespace, scorer: PairScorer, report: Report) -> None:
    """Every kind of input goes through this one loop: a window of lines is read and parsed (the first bad line
    in file order is the error), tokenized and batched in the reading thread (while the model scores the window
    before), scored, checked, and written line by line in the input's order, a malformed line copied through in
    its place."""
    path = source.path

    def parsed() -> Iterator[tuple[int, object, str | None, str | None, str | None]]:
        """(number, the parsed line, None, source, target), or (number, the line as read, problem, None, None)."""
        for number, line in source.lines():
            try:
                item, src, tgt = source.parse(number, line)
            except MalformedLine as error:
                if not args.skip_malformed:
                    raise InputError(
                        path=error.path,
                        line=error.line,
                        message=f"{error.message} (--skip-malformed copies such lines through)",
                    ) from None
                yield number, line, error.message, None, None
                continue
            yield number, item, None, src, tgt

    def read_windows() -> Iterator[tuple[list, list[str], list[str]]]:
        for window in chunks(parsed(), scorer.config.window):
            lines = [(number, item, problem) for number, item, problem, _, _ in window]
            src = [s for _, _, problem, s, _ in window if problem is None]
            tgt = [t for _, _, problem, _, t in window if problem is None]
            yield lines, src, tgt

    def prepare(window: tuple[list, list[str], list[str]]) -> tuple:
        lines, src, tgt = window
        return lines, scorer.prepare(*((src, tgt) if args.direction == "src2tgt" else (tgt, src)))

    for lines, prepared in prefetch(read_windows(), prepare):
        scores = scorer.run(prepared)
        scored = [number for number, _, problem in lines if problem is None]
        _check_finite(path, scored, scores)
        report.flags(path, scored, scores, scorer.config)
        k = 0
        for number, item, problem in lines:
            if problem is not None:
                report.warn("malformed", path, number, f"{problem}; {source.malformed}")
                source.copy(item)
                continue
            source.write(number, item, float(scores.logprob[k]), int(scores.n_tokens[k]), int(scores.n_unk[k]))
            k += 1
        report.advance(len(lines))
    source.finish()


def _check_finite(path: str, numbers: list[int], scores: PairScores) -> None:
    """A NaN or infinite log-probability is a broken model (overflow, bad weights), never a score to write."""
    bad = np.flatnonzero(~np.isfinite(scores.logprob))
    if len(bad):
        k = int(bad[0])
        raise InputError(
            path=path,
            line=numbers[k],
            message=f"the model gives this pair log p = {scores.logprob[k]} (its network overflows or its weights "
            "are broken); stopping rather than writing it",
        )


# -- phrase tables ---------------------------------------------------------------------------------------------


class _PhraseTable(_Input):
    """p(tgt | src) (or log p) appended to each line's scores field."""

    malformed = "copied through"

    def __init__(self, args: Namespace, out: IO[str]) -> None:
        super().__init__(args, out)
        self.path = args.phrase_table

    def lines(self) -> Iterator[tuple[int, bytes]]:
        return enumerate(read_binary_lines(self.path), start=1)

    def parse(self, number: int, line: bytes) -> tuple[PhrasePair, str, str]:
        pair = parse_phrase_line(line, path=self.path, number=number, errors=self.args.encoding_errors)
        return pair, self.model_text(pair.src), self.model_text(pair.tgt)

    def write(self, number: int, pair: PhrasePair, logprob: float, n_tokens: int, n_unk: int) -> None:
        log = self.args.log
        values = [logprob if log else math.exp(max(logprob, -100.0))]
        if self.args.unk_feature:
            values.append(n_unk if log else math.exp(n_unk))
        self.out.buffer.write(pair.with_scores(format_value(v, self.args.digits) for v in values))

    def copy(self, line: bytes) -> None:
        self.out.buffer.write(line)

    def finish(self) -> None:
        """Nothing is held back: each line is written as it is scored."""


# -- sentence pairs --------------------------------------------------------------------------------------------


class _Pairs(_Input):
    """``sum <TAB> mean <TAB> tokens [<TAB> unknown words]`` for each pair of --src/--tgt or --tsv."""

    malformed = "written as 'nan nan 0'"

    def __init__(self, args: Namespace, out: IO[str]) -> None:
        super().__init__(args, out)
        self.path = args.tsv or args.src

    def lines(self) -> Iterator[tuple[int, str | tuple[str, str]]]:
        """(number, a TSV line) or (number, (source, target)) of two files."""
        args, errors = self.args, self.args.encoding_errors
        if args.tsv is not None:
            for number, (line, _) in enumerate(read_lines(args.tsv, errors=errors), start=1):
                yield number, line
            return
        src_lines, tgt_lines = read_lines(args.src, errors=errors), read_lines(args.tgt, errors=errors)
        for number, (s, t) in enumerate(itertools.zip_longest(src_lines, tgt_lines), start=1):
            if s is None or t is None:
                short, other = (args.src, args.tgt) if s is None else (args.tgt, args.src)
                raise InputError(
                    path=short,
                    line=number - 1 or None,
                    message=f"file ends after line {number - 1}, but {other} goes on",
                )
            yield number, (s[0], t[0])

    def parse(self, number: int, line: str | tuple[str, str]) -> tuple[None, str, str]:
        if isinstance(line, str):
            tabs = line.count("\t")
            if tabs != 1:
                raise MalformedLine(
                    path=self.path, line=number, message=f"expected one tab between source and target, found {tabs}"
                )
            line = tuple(line.split("\t"))
        src, tgt = line
        return None, self.model_text(src), self.model_text(tgt)

    def write(self, number: int, item: None, logprob: float, n_tokens: int, n_unk: int) -> None:
        digits = self.args.digits
        fields = [format_value(logprob, digits), format_value(logprob / n_tokens, digits), str(n_tokens)]
        if self.args.unk_feature:
            fields.append(str(n_unk))
        self.out.write("\t".join(fields) + "\n")

    def copy(self, line: str | tuple[str, str]) -> None:
        self.out.write("nan\tnan\t0" + ("\t0" if self.args.unk_feature else "") + "\n")

    def finish(self) -> None:
        """Nothing is held back: each line is written as it is scored."""


# -- n-best lists ----------------------------------------------------------------------------------------------


def _weights(args: Namespace) -> dict[str, list[float]] | None:
    if args.weights is None:
        return None
    weights = read_weights(args.weights)
    needed = [args.feature_name] + ([f"{args.feature_name}_unk"] if args.unk_feature else [])
    for name in needed:
        if name not in weights:
            raise InputError(
                path=args.weights, message=f"no weight for the new feature {name!r} (add a line '{name}= WEIGHT')"
            )
    return weights


class _NBest(_Input):
    """``NAME= log p`` (and ``NAME_unk= n``) appended to each hypothesis' features; with weights, each
    sentence's hypotheses re-ranked by the new total (`nmt.moses.Reranker`)."""

    malformed = "copied through"

    def __init__(self, args: Namespace, out: IO[str], weights: dict[str, list[float]] | None) -> None:
        super().__init__(args, out)
        self.path, self.name, self.weights = args.nbest, args.feature_name, weights
        self.sources = [self.model_text(text) for text, _ in read_lines(args.src, errors=args.encoding_errors)]
        self.started: dict[int, int] = {}  # with weights: sentence id -> the line its run of hypotheses starts at
        self.current: int | None = None
        self.ranker = Reranker(out.buffer, weights, path=self.path)

    def lines(self) -> Iterator[tuple[int, bytes]]:
        return enumerate(read_binary_lines(self.path), start=1)

    def parse(self, number: int, line: bytes) -> tuple[NBestEntry, str, str]:
        hyp = parse_nbest_line(line, path=self.path, number=number, errors=self.args.encoding_errors)
        if not 0 <= hyp.sentence_id < len(self.sources):
            raise InputError(
                path=self.path,
                line=number,
                message=f"sentence id {hyp.sentence_id}, but "
                f"{self.args.src} has {len(self.sources)} lines (ids count from 0)",
            )
        if hyp.has_label(self.name):
            raise InputError(
                path=self.path,
                line=number,
                message=f"the list already has a feature {self.name!r}; choose --feature-name",
            )
        if self.weights is not None:
            self._check_grouped(hyp.sentence_id, number)
        return hyp, self.sources[hyp.sentence_id], self.model_text(hyp.text)

    def _check_grouped(self, sentence_id: int, number: int) -> None:
        """Re-ranking holds one sentence's hypotheses at a time (the list streams through): they must be
        consecutive lines, as Moses writes them. An id that comes back after another is refused, since its
        hypotheses would be ranked in two separate pieces."""
        if sentence_id == self.current:
            return
        if sentence_id in self.started:
            raise InputError(
                path=self.path,
                line=number,
                message=f"sentence id {sentence_id} again, after id {self.current} (its hypotheses start at line "
                f"{self.started[sentence_id]}): --weights re-ranks the hypotheses of a sentence together, so they "
                "must be consecutive lines, as Moses writes them; sort the list by id first, keeping their order "
                "(e.g. sort -s -n -k1,1)",
            )
        self.started[sentence_id], self.current = number, sentence_id

    def write(self, number: int, hyp: NBestEntry, logprob: float, n_tokens: int, n_unk: int) -> None:
        new = {self.name: format_value(logprob, self.args.digits)}
        if self.args.unk_feature:
            new[f"{self.name}_unk"] = str(n_unk)
        self.ranker.add(number, hyp, new, self.args.digits)

    def copy(self, line: bytes) -> None:
        self.ranker.copy(line)

    def finish(self) -> None:
        self.ranker.flush()
