"""``nmt score``: the model's p(target | source) for every phrase pair of a Moses phrase table (Cho et al.
2014 §3.1: a new feature of the SMT log-linear model), for sentence pairs, or for Moses n-best lists.

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

import itertools
import math
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import IO, Literal

import numpy as np
from jsonargparse import ArgumentParser, Namespace

from nmt.commands import options
from nmt.commands.options import CommandParser, Range
from nmt.errors import InputError
from nmt.inference import Translator
from nmt.inference.batching import chunks, prefetch
from nmt.moses import (
    MalformedLine,
    NBestEntry,
    format_value,
    parse_nbest_line,
    parse_phrase_line,
    read_weights,
    unescape,
    weighted_total,
)
from nmt.scoring.scorer import PairScorer, PairScores, ScoringConfig
from nmt.textio import atomic_output, check_output, read_binary_lines, read_lines

PROG = "nmt score"
_WARNINGS_SHOWN = 5  # per kind; the rest are only counted
_LABEL = re.compile(r"[^\s=:|]+")  # an n-best feature label, without its "=" / ":"


def build_parser() -> ArgumentParser:
    p = CommandParser(prog=PROG, description=__doc__.split("\n\n")[0])
    options.add_model_arguments(p, ensemble=False)
    inputs = p.add_argument_group("input (one of: --phrase-table; --src + --tgt; --tsv; --nbest + --src)")
    inputs.add_argument("--phrase-table", type=str | None, default=None, help="Moses phrase table, plain or .gz")
    inputs.add_argument("--src", type=str | None, default=None, help="source sentences, one a line")
    inputs.add_argument("--tgt", type=str | None, default=None, help="target sentences, line-aligned with --src")
    inputs.add_argument("--tsv", type=str | None, default=None, help="source<TAB>target lines")
    inputs.add_argument("--nbest", type=str | None, default=None, help="Moses n-best list (with --src)")
    p.add_argument("--output", default="-", help="output file ('-': stdout; .gz compresses)")
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
    p.add_argument("--feature-name", default="RNN", help="n-best: label of the new feature")
    p.add_argument(
        "--weights",
        type=str | None,
        default=None,
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
        type=options.count(1, options.MAX_WINDOW, why_high="the lines of a window are held in memory"),
        default=ScoringConfig.window,
        help="lines sorted by length together",
    )
    p.add_argument(
        "--max-len",
        type=options.count(2, options.MAX_PIECES, why_low="one piece and EOS"),
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
        type=Range(float, high=0.0, why_high="a log-probability is at most 0"),
        default=ScoringConfig.floor,
        help="log p of a floored pair",
    )
    options.add_runtime_arguments(p, batch_tokens=ScoringConfig.batch_tokens)
    p.add_argument("--progress", action="store_true", help="lines/s on stderr even when it is not a terminal")
    return p


class Report:
    """Warnings (the first few of each kind, with file:line), progress and the end-of-run summary, on stderr."""

    def __init__(self, *, progress: bool) -> None:
        self.counts: Counter[str] = Counter()
        self.lines = 0
        self.tty = sys.stderr.isatty()
        self.progress = progress or self.tty
        self.start = self._last = time.perf_counter()
        self._line_open = False  # a progress line without its newline is on the terminal

    def warn(self, kind: str, path: str, number: int, message: str) -> None:
        self.counts[kind] += 1
        if self.counts[kind] <= _WARNINGS_SHOWN:
            more = "; further ones are only counted" if self.counts[kind] == _WARNINGS_SHOWN else ""
            self._print(f"{PROG}: warning: {path}:{number}: {message}{more}")

    def flags(self, path: str, numbers: list[int], scores: PairScores, config: ScoringConfig) -> None:
        """Warn about the pairs of one window the scorer flagged."""
        policy = "truncated" if config.too_long == "truncate" else f"scored {config.floor}"
        for k in scores.truncated.nonzero()[0]:
            self.warn("truncated", path, numbers[k], f"a side is longer than {config.max_len} pieces: {policy}")
        for k in scores.empty.nonzero()[0]:
            self.warn("empty", path, numbers[k], "empty side, scored as the empty string")

    def advance(self, lines: int) -> None:
        self.lines += lines
        now = time.perf_counter()
        if self.progress and now - self._last >= 1.0:
            self._last = now
            text = f"{PROG}: {self.lines:,} lines ({self.lines / (now - self.start):,.0f} lines/s)"
            sys.stderr.write(f"\r{text}" if self.tty else f"{text}\n")  # a log file gets one line per update
            sys.stderr.flush()
            self._line_open = self.tty

    def summary(self) -> None:
        elapsed = time.perf_counter() - self.start
        self._print(
            f"{PROG}: {self.lines:,} lines in {elapsed:.1f} s ({self.lines / max(elapsed, 1e-9):,.0f} lines/s): "
            f"{self.counts['truncated']:,} with an over-long side, {self.counts['empty']:,} with an empty side, "
            f"{self.counts['malformed']:,} malformed lines copied through"
        )

    def _print(self, text: str) -> None:
        if self._line_open:
            sys.stderr.write("\r\033[K")  # clear the progress line
            self._line_open = False
        print(text, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    mode = _mode(args)
    if mode == "nbest" and not _LABEL.fullmatch(args.feature_name):
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
    weights = _weights(args) if mode == "nbest" else None
    inputs = [args.phrase_table, args.src, args.tgt, args.tsv, args.nbest, args.weights, args.checkpoint]
    check_output(args.output, inputs)  # before the model is loaded
    with options.torch_threads(args.threads):
        translator = Translator.load(args.checkpoint, device=args.device, dtype=args.dtype)
        scorer = translator.scorer(config, count_unk=args.unk_feature)
        report = Report(progress=args.progress)
        with atomic_output(args.output, inputs=inputs) as out:
            if mode == "table":
                _score_table(args, scorer, report, out.buffer)
            elif mode == "nbest":
                _score_nbest(args, scorer, report, out.buffer, weights)
            else:
                _score_pairs(args, scorer, report, out)
        report.summary()
    return 0


def _mode(args: Namespace) -> str:
    given = [name for name in ("phrase_table", "src", "tgt", "tsv", "nbest") if getattr(args, name) is not None]
    modes = {("phrase_table",): "table", ("src", "tgt"): "pairs", ("tsv",): "pairs", ("src", "nbest"): "nbest"}
    if tuple(given) not in modes:
        got = ", ".join("--" + g.replace("_", "-") for g in given) or "none"
        raise InputError(
            path="command line", message=f"give --phrase-table, --src + --tgt, --tsv, or --nbest + --src (got {got})"
        )
    if args.weights is not None and given != ["src", "nbest"]:
        raise InputError(path="command line", message="--weights applies to n-best lists only")
    return modes[tuple(given)]


def _not_skipped(error: MalformedLine) -> InputError:
    return InputError(
        path=error.path, line=error.line, message=f"{error.message} (--skip-malformed copies such lines through)"
    )


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


def _model_text(args: Namespace, text: str) -> str:
    return text if args.keep_escapes else unescape(text)


def _oriented(args: Namespace, src: list[str], tgt: list[str]) -> tuple[list[str], list[str]]:
    """(model inputs, model outputs) for the chosen direction."""
    return (src, tgt) if args.direction == "src2tgt" else (tgt, src)


def _preparer(args: Namespace, scorer: PairScorer) -> Callable[[tuple], tuple]:
    """(lines, sources, targets) of a window -> (lines, the window tokenized and batched): the work done ahead,
    in the reading thread, while the model scores the window before."""

    def prepare(window: tuple) -> tuple:
        lines, src, tgt = window
        return lines, scorer.prepare(*_oriented(args, src, tgt))

    return prepare


# -- phrase tables ---------------------------------------------------------------------------------------------


def _score_table(args: Namespace, scorer: PairScorer, report: Report, out: IO[bytes]) -> None:
    path = args.phrase_table

    def read_windows() -> Iterator:
        for window in chunks(enumerate(read_binary_lines(path), start=1), scorer.config.window):
            pairs, src, tgt = [], [], []
            for number, raw in window:
                try:
                    pair = parse_phrase_line(raw, path=path, number=number, errors=args.encoding_errors)
                except MalformedLine as error:
                    if not args.skip_malformed:
                        raise _not_skipped(error) from None
                    pairs.append((number, raw, error.message))
                    continue
                pairs.append((number, pair, None))
                src.append(_model_text(args, pair.src))
                tgt.append(_model_text(args, pair.tgt))
            yield pairs, src, tgt

    digits = args.digits
    for pairs, prepared in prefetch(read_windows(), _preparer(args, scorer)):
        scores = scorer.run(prepared)
        scored = [number for number, _, problem in pairs if problem is None]
        _check_finite(path, scored, scores)
        report.flags(path, scored, scores, scorer.config)
        k = 0
        for number, pair, problem in pairs:
            if problem is not None:
                report.warn("malformed", path, number, f"{problem}; copied through")
                out.write(pair)
                continue
            lp, n_unk = float(scores.logprob[k]), int(scores.n_unk[k])
            k += 1
            values = [lp if args.log else math.exp(max(lp, -100.0))]
            if args.unk_feature:
                values.append(n_unk if args.log else math.exp(n_unk))
            out.write(pair.with_scores(format_value(v, digits) for v in values))
        report.advance(len(pairs))


# -- sentence pairs --------------------------------------------------------------------------------------------


def _pair_lines(args: Namespace) -> Iterator[tuple[int, str | None, str | None, str | None]]:
    """(line number, source, target, problem) of every pair of --src/--tgt or --tsv."""
    errors = args.encoding_errors
    if args.tsv is not None:
        for number, (line, _) in enumerate(read_lines(args.tsv, errors=errors), start=1):
            tabs = line.count("\t")
            if tabs == 1:
                src, tgt = line.split("\t")
                yield number, src, tgt, None
            elif args.skip_malformed:
                yield number, None, None, f"expected one tab between source and target, found {tabs}"
            else:
                raise _not_skipped(
                    MalformedLine(
                        path=args.tsv, line=number, message=f"expected one tab between source and target, found {tabs}"
                    )
                )
        return
    src_lines, tgt_lines = read_lines(args.src, errors=errors), read_lines(args.tgt, errors=errors)
    for number, (s, t) in enumerate(itertools.zip_longest(src_lines, tgt_lines), start=1):
        if s is None or t is None:
            short, other = (args.src, args.tgt) if s is None else (args.tgt, args.src)
            raise InputError(
                path=short, line=number - 1 or None, message=f"file ends after line {number - 1}, but {other} goes on"
            )
        yield number, s[0], t[0], None


def _score_pairs(args: Namespace, scorer: PairScorer, report: Report, out: IO[str]) -> None:
    path = args.tsv or args.src

    def read_windows() -> Iterator:
        for window in chunks(_pair_lines(args), scorer.config.window):
            good = [(s, t) for _, s, t, problem in window if problem is None]
            src = [_model_text(args, s) for s, _ in good]
            tgt = [_model_text(args, t) for _, t in good]
            yield window, src, tgt

    digits = args.digits
    for window, prepared in prefetch(read_windows(), _preparer(args, scorer)):
        scores = scorer.run(prepared)
        scored = [number for number, *_, problem in window if problem is None]
        _check_finite(path, scored, scores)
        report.flags(path, scored, scores, scorer.config)
        k = 0
        for number, _, _, problem in window:
            if problem is not None:
                report.warn("malformed", path, number, f"{problem}; written as 'nan nan 0'")
                out.write("nan\tnan\t0" + ("\t0" if args.unk_feature else "") + "\n")
                continue
            lp, n = float(scores.logprob[k]), int(scores.n_tokens[k])
            fields = [format_value(lp, digits), format_value(lp / n, digits), str(n)]
            if args.unk_feature:
                fields.append(str(int(scores.n_unk[k])))
            k += 1
            out.write("\t".join(fields) + "\n")
        report.advance(len(window))


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


def _score_nbest(
    args: Namespace, scorer: PairScorer, report: Report, out: IO[bytes], weights: dict[str, list[float]] | None
) -> None:
    path, name = args.nbest, args.feature_name
    sources = [_model_text(args, text) for text, _ in read_lines(args.src, errors=args.encoding_errors)]
    started: dict[int, int] = {}  # with --weights: sentence id -> the line its run of hypotheses starts at
    current: int | None = None

    def check_grouped(sentence_id: int, number: int) -> None:
        """Re-ranking holds one sentence's hypotheses at a time (the list streams through): they must be
        consecutive lines, as Moses writes them. An id that comes back after another is refused, since its
        hypotheses would be ranked in two separate pieces."""
        nonlocal current
        if sentence_id == current:
            return
        if sentence_id in started:
            raise InputError(
                path=path,
                line=number,
                message=f"sentence id {sentence_id} again, after id {current} (its hypotheses start at line "
                f"{started[sentence_id]}): --weights re-ranks the hypotheses of a sentence together, so they must "
                "be consecutive lines, as Moses writes them; sort the list by id first, keeping their order "
                "(e.g. sort -s -n -k1,1)",
            )
        started[sentence_id], current = number, sentence_id

    def read_windows() -> Iterator:
        for window in chunks(enumerate(read_binary_lines(path), start=1), scorer.config.window):
            hyps, src, tgt = [], [], []
            for number, raw in window:
                try:
                    hyp = parse_nbest_line(raw, path=path, number=number, errors=args.encoding_errors)
                except MalformedLine as error:
                    if not args.skip_malformed:
                        raise _not_skipped(error) from None
                    hyps.append((number, raw, error.message))
                    continue
                if not 0 <= hyp.sentence_id < len(sources):
                    raise InputError(
                        path=path,
                        line=number,
                        message=f"sentence id {hyp.sentence_id}, but "
                        f"{args.src} has {len(sources)} lines (ids count from 0)",
                    )
                if hyp.has_label(name):
                    raise InputError(
                        path=path,
                        line=number,
                        message=f"the list already has a feature {name!r}; choose --feature-name",
                    )
                if weights is not None:
                    check_grouped(hyp.sentence_id, number)
                hyps.append((number, hyp, None))
                src.append(sources[hyp.sentence_id])
                tgt.append(_model_text(args, hyp.text))
            yield hyps, src, tgt

    ranker = _Reranker(out, weights, path=path)
    for hyps, prepared in prefetch(read_windows(), _preparer(args, scorer)):
        scores = scorer.run(prepared)
        scored = [number for number, _, problem in hyps if problem is None]
        _check_finite(path, scored, scores)
        report.flags(path, scored, scores, scorer.config)
        k = 0
        for number, hyp, problem in hyps:
            if problem is not None:
                report.warn("malformed", path, number, f"{problem}; copied through")
                ranker.copy(hyp)
                continue
            new = {name: format_value(float(scores.logprob[k]), args.digits)}
            if args.unk_feature:
                new[f"{name}_unk"] = str(int(scores.n_unk[k]))
            k += 1
            ranker.add(number, hyp, new, args.digits)
        report.advance(len(hyps))
    ranker.flush()


class _Reranker:
    """Writes hypotheses with their new features. With weights, holds one sentence's hypotheses (its run of
    consecutive lines: `_score_nbest` refuses a list whose ids are not grouped) and writes them best first by
    the new total, a malformed line copied through among them keeping its place; without, writes each line at
    once."""

    def __init__(self, out: IO[bytes], weights: dict[str, list[float]] | None, *, path: str) -> None:
        self.out, self.weights, self.path = out, weights, path
        self.group: list[tuple[float, bytes] | bytes] = []  # (total, line) of a hypothesis, or a malformed line
        self.sentence_id: int | None = None

    def copy(self, raw: bytes) -> None:
        """A malformed line, copied through in its place."""
        if self.group:
            self.group.append(raw)
        else:
            self.out.write(raw)

    def add(self, number: int, hyp: NBestEntry, new: dict[str, str], digits: int) -> None:
        """`new`: the new features' values as they are written (the total is computed from those)."""
        if self.weights is None:
            self.out.write(hyp.rewrite(new.items()))
            return
        if hyp.sentence_id != self.sentence_id:
            self.flush()
            self.sentence_id = hyp.sentence_id
        features = hyp.feature_values(path=self.path, number=number)
        features.update({label: [float(value)] for label, value in new.items()})
        total = weighted_total(features, self.weights, path=self.path, number=number)
        self.group.append((total, hyp.rewrite(new.items(), format_value(total, digits))))

    def flush(self) -> None:
        hypotheses = [entry for entry in self.group if isinstance(entry, tuple)]
        ranked = iter(sorted(hypotheses, key=lambda entry: -entry[0]))  # stable: ties keep their order
        for entry in self.group:  # the hypotheses' places get them best first; malformed lines stay in theirs
            self.out.write(next(ranked)[1] if isinstance(entry, tuple) else entry)
        self.group, self.sentence_id = [], None
