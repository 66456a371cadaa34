"""The range of every number a user gives nmt's inference, in one place, for the command line and the Python API.

A `Range` is both an option type (``type=BEAM_SIZE``: `nmt.commands.options` builds every numeric option from
one) and the check of the API (`SearchConfig`, `nmt.Translator`): ``BEAM_SIZE.check(value, "beam_size")``. So
``--beam-size 0`` and ``SearchConfig(beam_size=0)`` are refused for the same reason, and the two cannot drift
apart. The limits are listed in docs/hostile-input.md. `texts` and `each_text` are the API's check of a sequence
of lines: one str where a list of lines belongs is a TypeError (iterated, it would give a line per character),
and so is an item that is not a str, named by its index.
"""

from __future__ import annotations

import argparse
import math
import numbers
from collections.abc import Iterable, Iterator

MAX_BEAM_SIZE = 256
"""Widest beam (also the most ``--n-best`` hypotheses): memory and time grow in proportion to it."""
MAX_PIECES = 1000
"""Most ``--max-input-tokens`` (translate, evaluate, embed) and ``--max-len`` (score): longer inputs cost
memory in proportion to batch × length, and no model here is trained on pieces that far apart."""
MAX_INPUT_TOKENS = 250
"""Pieces of an input line read by default (``--max-input-tokens``); longer lines are cut, with a warning."""
MAX_BATCH_TOKENS = 100_000
MAX_WINDOW = 200_000


class Range:
    """An int or a finite float within [low, high] (either end may be open: None).

    As an option type (called with the option's text) a refused value raises ``argparse.ArgumentTypeError``
    with the reason, which the parser reports as ``--OPTION: reason``; `check` is the same test of a value
    given in Python."""

    def __init__(
        self, kind: type, low: float | None = None, high: float | None = None, *, why_low: str = "", why_high: str = ""
    ) -> None:
        if kind not in (int, float):
            raise TypeError(f"Range is for int or float options, not {kind.__name__}")
        self.kind, self.low, self.high, self.why_low, self.why_high = kind, low, high, why_low, why_high
        # what --help shows ("" for a range open at both ends)
        if low is not None and high is not None:
            self.bounds = f"{number_text(low)} to {number_text(high)}"
        elif low is not None or high is not None:
            self.bounds = f"≥ {number_text(low)}" if low is not None else f"≤ {number_text(high)}"
        else:
            self.bounds = ""
        self.__name__ = f"{kind.__name__}, {self.bounds or 'any'}"

    def __repr__(self) -> str:
        return self.__name__

    def __call__(self, text: object) -> int | float:
        try:
            return self._within(self._parse(text))
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    def check(self, value: object, name: str) -> int | float:
        """`value` given in Python for parameter `name`: a TypeError when it is not a number of this kind (a bool, a
        str, a float for an int; numpy's numbers are numbers), a ValueError ``NAME: reason`` when it is outside the
        range or not finite. Returns the value as an int or a float."""
        wanted = "a whole number (int)" if self.kind is int else "a number"
        if isinstance(value, bool) or not isinstance(value, numbers.Integral if self.kind is int else numbers.Real):
            raise TypeError(f"{name} must be {wanted}, not {type(value).__name__} {value!r:.40}")
        try:
            return self._within(int(value) if self.kind is int else float(value))
        except ValueError as error:
            raise ValueError(f"{name}: {error}") from None

    def _within(self, value: int | float) -> int | float:
        if not math.isfinite(value):
            raise ValueError(f"{value} is not a finite number")
        if self.low is not None and value < self.low:
            raise ValueError(f"{number_text(value)} is less than {number_text(self.low)}{_because(self.why_low)}")
        if self.high is not None and value > self.high:
            raise ValueError(f"{number_text(value)} is more than {number_text(self.high)}{_because(self.why_high)}")
        return value

    def _parse(self, text: object) -> int | float:
        if isinstance(text, bool):
            raise ValueError(f"{text!r} is not a number")
        if self.kind is int:
            if isinstance(text, int):
                return text
            try:
                return int(str(text).strip())
            except ValueError:
                raise ValueError(f"{str(text)[:40]!r} is not a whole number") from None
        try:
            return float(text) if isinstance(text, (int, float)) else float(str(text).strip())
        except ValueError:
            raise ValueError(f"{str(text)[:40]!r} is not a number") from None


def number_text(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


def _because(why: str) -> str:
    return f" ({why})" if why else ""


def count(low: int, high: int | None = None, *, why_low: str = "", why_high: str = "") -> Range:
    """An int within [low, high]."""
    return Range(int, low, high, why_low=why_low, why_high=why_high)


BEAM_SIZE = count(
    1, MAX_BEAM_SIZE, why_high=f"the widest beam searched: memory and time grow with it; {MAX_BEAM_SIZE} is plenty"
)
N_BEST = count(1, MAX_BEAM_SIZE, why_high=f"at most --beam-size hypotheses, and a beam is at most {MAX_BEAM_SIZE}")
ALPHA = Range(float, 0.0, 10.0)
MAX_LENGTH_A = Range(float, 0.0, 10.0)
MAX_LENGTH_B = count(0, 1000)
PIECES = count(1, MAX_PIECES, why_high=f"memory grows with batch × length; no model reads {MAX_PIECES} pieces well")
BATCH_TOKENS = count(1, MAX_BATCH_TOKENS, why_high="memory grows with it")
WINDOW = count(1, MAX_WINDOW, why_high="the lines of a window are held in memory")
SCORED_PIECES = count(2, MAX_PIECES, why_low="one piece and EOS")
"""Pieces per side given to the scoring model, EOS included (``nmt score --max-len``, `ScoringConfig.max_len`)."""
LOG_PROBABILITY = Range(float, high=0.0, why_high="a log-probability is at most 0")


def not_one_text(lines: object, name: str) -> None:
    """A str (or bytes) where a sequence of lines belongs is refused: iterating it would give one line per
    character, silently misaligned with what the caller meant."""
    if isinstance(lines, (str, bytes, bytearray)):
        raise TypeError(
            f"{name} must be a sequence of lines (a list of str), not one {type(lines).__name__}: for one line "
            f"pass [{name[:-1] if name.endswith('s') else name}]"
        )


def each_text(lines: Iterable[object], name: str) -> Iterator[str]:
    """The items of `lines`, each checked to be a str as it is reached (a stream is not read ahead for it); one
    str for `lines` is refused at once (`not_one_text`)."""
    not_one_text(lines, name)
    return _each_text(lines, name)


def _each_text(lines: Iterable[object], name: str) -> Iterator[str]:
    for index, line in enumerate(lines):
        if not isinstance(line, str):
            raise TypeError(f"{name}[{index}] must be a str, not {type(line).__name__} {line!r:.40}")
        yield line


def texts(lines: Iterable[object], name: str) -> list[str]:
    """`lines` as a list, every item checked to be a str (`each_text`)."""
    return list(each_text(lines, name))
