"""What a scoring run tells its user on stderr while it writes: warnings naming FILE:LINE (the first few of
each kind, the rest counted), progress in lines/s, and the summary at the end."""

from __future__ import annotations

import sys
import time
from collections import Counter

from nmt.scoring.scorer import PairScores, ScoringConfig

WARNINGS_SHOWN = 5  # per kind; the rest are only counted


class Report:
    """Warnings (the first few of each kind, with file:line), progress and the end-of-run summary, on stderr,
    each line starting with `prog`."""

    def __init__(self, prog: str, *, progress: bool | None) -> None:
        self.prog = prog
        self.counts: Counter[str] = Counter()
        self.lines = 0
        self.tty = sys.stderr.isatty()
        self.progress = self.tty if progress is None else progress  # None: when stderr is a terminal
        self.start = self._last = time.perf_counter()
        self._line_open = False  # a progress line without its newline is on the terminal

    def warn(self, kind: str, path: str, number: int, message: str) -> None:
        self.counts[kind] += 1
        if self.counts[kind] <= WARNINGS_SHOWN:
            more = "; further ones are only counted" if self.counts[kind] == WARNINGS_SHOWN else ""
            self._print(f"{self.prog}: warning: {path}:{number}: {message}{more}")

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
            text = f"{self.prog}: {self.lines:,} lines ({self.lines / (now - self.start):,.0f} lines/s)"
            sys.stderr.write(f"\r{text}" if self.tty else f"{text}\n")  # a log file gets one line per update
            sys.stderr.flush()
            self._line_open = self.tty

    def summary(self) -> None:
        elapsed = time.perf_counter() - self.start
        self._print(
            f"{self.prog}: {self.lines:,} lines in {elapsed:.1f} s ({self.lines / max(elapsed, 1e-9):,.0f} "
            f"lines/s): {self.counts['truncated']:,} with an over-long side, {self.counts['empty']:,} with an "
            f"empty side, {self.counts['malformed']:,} malformed lines copied through"
        )

    def _print(self, text: str) -> None:
        if self._line_open:
            sys.stderr.write("\r\033[K")  # clear the progress line
            self._line_open = False
        print(text, file=sys.stderr, flush=True)
