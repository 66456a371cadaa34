"""``nmt plot-curves``: loss and BLEU curves of one or more runs, from their CSV logs.

    nmt plot-curves runs/multi30k_en_fr_attention [runs/multi30k_en_fr_cho …] --output curves.png

A RUN is a run directory (every ``metrics.csv`` below it is read: ``logs/version_0``, ``logs/version_1`` after
a resume …, in version order), one version directory, or a ``metrics.csv`` file — what Lightning's CSVLogger
writes. Left panel: training loss (thin) and validation loss (dashed) against the step; right panel:
validation BLEU, its axis from 0. Several runs are overlaid, one colour each.

``nmt validate`` and ``nmt test`` write a version of their own into the run directory: one row of val/* or
test/* metrics, logged at step 0 whatever the checkpoint's step (an evaluation restores no training loop), and
no train/* row. Such a version is an evaluation, not a point of the training curve: it is not drawn, and its
results are printed on stderr. (A resumed fit that only validated before it stopped logs at its own step, past
0, and stays on the curve.)
"""

from __future__ import annotations

import csv
import io
import math
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np
from jsonargparse import ArgumentParser

from nmt.commands import options
from nmt.commands.options import CommandParser
from nmt.errors import InputError
from nmt.plotting import DPI, Panel, Series, curves_figure, save_figure, supported_formats
from nmt.textio import check_output

PROG = "nmt plot-curves"
PANELS = [Panel("loss", ["train/loss", "val/loss"]), Panel("BLEU", ["val/bleu"], y_from_zero=True)]
EVALUATION_PREFIXES = ("val/", "test/")
TRAINING_PREFIX = "train/"


class Evaluation(NamedTuple):
    """A version directory written by ``nmt validate`` or ``nmt test``: its metrics.csv and what it logged."""

    path: Path
    results: dict[str, float]  # e.g. {"val/bleu": 23.4, "val/loss": 2.1}


class RunLogs(NamedTuple):
    """What `read_run` finds in a run: the training curve, and the evaluations kept off it."""

    series: dict[str, Series]  # metric key -> its values by step
    evaluations: list[Evaluation]


def build_parser() -> ArgumentParser:
    p = CommandParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directories or metrics.csv files")
    p.add_argument("--output", required=True, metavar="FILE", help="the figure: .png, .pdf, .svg …")
    p.add_argument(
        "--labels", nargs="+", default=None, metavar="NAME", help="legend name of each run (default: the paths given)"
    )
    p.add_argument("--size", type=options.INCHES, nargs=2, default=[12.0, 4.5], metavar=("W", "H"), help="inches")
    p.add_argument("--dpi", type=options.DPI, default=DPI, help="pixels per inch of a raster output")
    return p


def metrics_files(run: Path) -> list[Path]:
    """The metrics.csv files of a run, in version order (version_2 before version_10)."""
    if run.is_file():
        return [run]
    if not run.is_dir():
        raise InputError(path=run, message="no such run directory or file")

    def version_key(path: Path) -> list[int | str]:
        return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(path.relative_to(run)))]

    files = sorted(run.rglob("metrics.csv"), key=version_key)
    if not files:
        raise InputError(path=run, message="no metrics.csv below it (written by the CSVLogger of `nmt fit`)")
    return files


def csv_rows(path: Path) -> Iterator[tuple[int, dict[str, str | None]]]:
    """(line number, row) of a metrics.csv, checked as it is read: UTF-8 (a BOM is dropped), no NUL bytes,
    a 'step' column."""
    try:
        data = path.read_bytes()  # a metrics.csv is small
    except OSError as error:
        raise InputError(path=path, message=f"cannot read: {error.strerror or error}") from None
    data = data.removeprefix(b"\xef\xbb\xbf")
    if b"\x00" in data:
        raise InputError(path=path, line=data.count(b"\n", 0, data.index(0)) + 1, message="NUL byte in line")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise InputError(path=path, line=line, message=f"invalid UTF-8 (byte 0x{data[error.start]:02x})") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        if reader.fieldnames is None or "step" not in reader.fieldnames:
            raise InputError(path=path, line=1, message="not a Lightning metrics.csv: no 'step' column")
        for row in reader:
            yield reader.line_num, row
    except csv.Error as error:
        raise InputError(path=path, line=reader.line_num, message=f"not CSV: {error}") from None


def read_version(path: Path) -> tuple[dict[str, list[tuple[float, float]]], Evaluation | None]:
    """One metrics.csv: metric key -> its finite (step, value) points, for the keys of PANELS; and the
    Evaluation it is when it holds no train/* value and every val/* or test/* value is logged at step 0."""
    points: dict[str, list[tuple[float, float]]] = {}
    trained = False
    evaluated: dict[str, float] = {}  # the last value of each val/* or test/* key
    evaluation_steps: set[float | None] = set()
    for line, row in csv_rows(path):
        for key, value in row.items():
            if not value or key is None:  # empty, or a field beyond the header
                continue
            if key.startswith(TRAINING_PREFIX):
                trained = True
            elif key.startswith(EVALUATION_PREFIXES):
                evaluation_steps.add(_number(row["step"]))
                try:
                    evaluated[key] = float(value)
                except (TypeError, ValueError):
                    pass  # a value of PANELS is refused below; other keys are not drawn
        for key in {k for panel in PANELS for k in panel.keys} & set(row):
            if row[key]:  # empty (or missing, in a short row): not logged at this step
                try:
                    point = float(row["step"]), float(row[key])
                except (TypeError, ValueError):
                    raise InputError(path=path, line=line, message=f"{key} or step: not a number") from None
                if math.isfinite(point[1]):  # a NaN/inf loss of a diverged step is a gap in the curve
                    points.setdefault(key, []).append(point)
    if not trained and evaluated and evaluation_steps == {0.0}:
        return points, Evaluation(path, evaluated)
    return points, None


def _number(text: str | None) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def read_run(run: Path) -> RunLogs:
    """The training curve over every metrics.csv of the run, less the versions that are evaluations."""
    points: dict[str, list[tuple[float, float]]] = {}
    evaluations = []
    for path in metrics_files(run):
        version, evaluation = read_version(path)
        if evaluation is not None:
            evaluations.append(evaluation)
            continue
        for key, pairs in version.items():
            points.setdefault(key, []).extend(pairs)
    series = {}
    for key, pairs in points.items():
        pairs.sort(key=lambda p: p[0])  # a resumed run's versions may overlap
        steps, values = np.array(pairs).T
        series[key] = Series(steps, values)
    return RunLogs(series, evaluations)


def describe(evaluation: Evaluation) -> str:
    """``PATH: an evaluation (nmt validate or nmt test: val/bleu 23.41, val/loss 2.103, …), not drawn``"""
    results = ", ".join(f"{key} {value:.4g}" for key, value in sorted(evaluation.results.items()))
    return f"{evaluation.path.parent}: an evaluation (nmt validate or nmt test: {results}), not drawn"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    suffix = Path(args.output).suffix.lstrip(".").lower()
    if suffix not in supported_formats():
        raise InputError(path=args.output, message=f"unknown figure format {suffix!r}; use .png, .pdf or .svg")
    labels = args.labels or args.runs
    if len(labels) != len(args.runs) or len(set(labels)) != len(labels):
        raise InputError(path="--labels", message=f"give {len(args.runs)} distinct labels, one per run")
    options.check_figure(*args.size, args.dpi, size_given=True, default_dpi=DPI)
    check_output(args.output, [file for run in args.runs for file in metrics_files(Path(run))])
    runs = {}
    for label, run in zip(labels, args.runs, strict=True):
        logs = read_run(Path(run))
        for evaluation in logs.evaluations:
            print(f"{PROG}: {describe(evaluation)}", file=sys.stderr)
        if not logs.series:
            if logs.evaluations:
                raise InputError(
                    path=run, message="only evaluations (nmt validate or nmt test) here: no training curve"
                )
            raise InputError(path=run, message="no loss or BLEU values logged yet")
        runs[label] = logs.series
    fig = curves_figure(runs, PANELS, size=tuple(args.size))
    save_figure(fig, args.output, dpi=args.dpi)
    print(f"{PROG}: {len(runs)} run(s) -> {args.output}", file=sys.stderr)
    return 0
