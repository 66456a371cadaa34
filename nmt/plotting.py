"""The figures people look at: attention heatmaps (Bahdanau et al. 2015, Fig. 3), training curves, and 2-D
maps of phrase representations (Cho et al. 2014, Figs. 4–5).

Figures are built with matplotlib's object-oriented API on ``matplotlib.figure.Figure`` (rendered by Agg),
never through ``pyplot``: no display is needed, no global figure registry fills up during a long training
run, and importing this module changes no global matplotlib setting. A figure of ``size`` inches saved with
``dpi`` is exactly size × dpi pixels (``save_figure`` does not crop).
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from nmt.errors import InputError
from nmt.textio import atomic_output

DPI = 100


class Series(NamedTuple):
    """One metric of one run: values at training steps."""

    steps: np.ndarray  # (N,)
    values: np.ndarray  # (N,)


def attention_heatmap(
    alpha: np.ndarray,
    src_labels: Sequence[str],
    tgt_labels: Sequence[str],
    *,
    title: str | None = None,
    size: tuple[float, float] | None = None,
) -> Figure:
    """The alignment matrix as in Bahdanau et al. 2015, Fig. 3: source pieces along the top (x), target pieces
    down the side (y), α_ij in grey scale from 0 (black) to 1 (white).

    Args:
        alpha: (T, S) attention weights; row i is target position i, column j source position j.
        src_labels: the S source pieces (EOS included).
        tgt_labels: the T target pieces (EOS included).
        size: (width, height) in inches; by default about a third of an inch per piece.
    """
    alpha = np.asarray(alpha, dtype=np.float32)
    T, S = alpha.shape
    if (len(tgt_labels), len(src_labels)) != (T, S):
        raise ValueError(f"alpha is {T}×{S} but there are {len(tgt_labels)}×{len(src_labels)} labels")
    if size is None:
        size = (max(4.0, 1.5 + 0.32 * S), max(3.0, 1.5 + 0.32 * T))
    fig = Figure(figsize=size, dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    ax.imshow(alpha, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest", aspect="auto")
    ax.xaxis.tick_top()  # the paper reads the source along the top
    ax.set_xticks(range(S), list(src_labels), rotation=90, fontsize=8)
    ax.set_yticks(range(T), list(tgt_labels), fontsize=8)
    if title:
        ax.set_title(title, fontsize=9)
    return fig


def curves_figure(
    runs: Mapping[str, Mapping[str, Series]],
    panels: Sequence[tuple[str, Sequence[str]]],
    *,
    size: tuple[float, float] = (12.0, 4.5),
) -> Figure:
    """One panel per (title, metric keys), each run in its own colour: the first key of a panel as a thin line
    (e.g. the noisy training loss), the others dashed with markers (e.g. validation, once an epoch).

    Args:
        runs: run label -> metric key (``train/loss``) -> its Series; a run may lack some keys.
        panels: e.g. ``[("loss", ["train/loss", "val/loss"]), ("BLEU", ["val/bleu"])]``.
    """
    fig = Figure(figsize=size, dpi=DPI, layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    colours = [f"C{i % 10}" for i in range(len(runs))]
    for ax, (title, keys) in zip(axes, panels, strict=True):
        for colour, (run, metrics) in zip(colours, runs.items(), strict=True):
            for k, key in enumerate(keys):
                if key not in metrics:
                    continue
                series = metrics[key]
                style = dict(lw=0.8, alpha=0.7) if k == 0 and len(keys) > 1 else dict(ls="--", marker="o", ms=3)
                ax.plot(series.steps, series.values, color=colour, label=f"{run} {key}", **style)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if ax.has_data():
            ax.legend(fontsize=7)
    return fig


def scatter_map(
    xy: np.ndarray,
    labels: Sequence[str | None],
    *,
    title: str | None = None,
    axis_names: tuple[str, str] = ("PC 1", "PC 2"),
    size: tuple[float, float] = (10.0, 8.0),
) -> Figure:
    """Points in 2-D, some labelled with their text (Cho et al. 2014, Figs. 4–5).

    Args:
        xy: (N, 2) coordinates.
        labels: N labels; None leaves a point unlabelled.
    """
    fig = Figure(figsize=size, dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    ax.scatter(xy[:, 0], xy[:, 1], s=4, alpha=0.5)
    for (x, y), label in zip(xy, labels, strict=True):
        if label is not None:
            ax.annotate(label, (x, y), fontsize=7)
    ax.set_xlabel(axis_names[0])
    ax.set_ylabel(axis_names[1])
    if title:
        ax.set_title(title)
    return fig


def principal_components(vectors: np.ndarray) -> np.ndarray:
    """The (N, 2) coordinates of `vectors` (N, D) on their first two principal directions: the top two right
    singular vectors of the centred matrix (numpy's SVD, in float64); a second coordinate of 0 when D is 1."""
    centred = vectors.astype(np.float64) - vectors.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)  # rows of vt: principal directions
    xy = centred @ vt[:2].T  # (N, 2)
    if xy.shape[1] < 2:
        xy = np.pad(xy, ((0, 0), (0, 2 - xy.shape[1])))
    return xy


def phrase_map(vectors: np.ndarray, texts: Sequence[str], *, labels: int, rng: random.Random) -> Figure:
    """Phrase representations (N, D) projected to 2-D by PCA (Cho et al. 2014, Fig. 4), `labels` random points
    of them labelled with (the first 40 characters of) their phrase."""
    xy = principal_components(vectors)
    shown = set(rng.sample(range(len(texts)), min(labels, len(texts))))
    names = [text[:40] if i in shown else None for i, text in enumerate(texts)]
    return scatter_map(xy, names, title=f"Phrase representations, PCA ({len(texts):,} phrases)")


def save_figure(fig: Figure, path: str | Path, *, dpi: int = DPI) -> None:
    """Write the figure (format from the suffix: png, pdf, svg, …) at exactly its size × dpi pixels, through
    `nmt.textio.atomic_output`: under a unique temporary name, renamed when complete (an interrupted run never
    leaves half a picture under `path`); a device or FIFO is written into. A failed write is an InputError
    naming `path` (one line: ``PATH: cannot write: …``)."""
    try:
        with atomic_output(path, binary=True) as f:
            fig.savefig(f, dpi=dpi, format=Path(path).suffix.lstrip(".").lower())
    except OSError as error:
        raise InputError(path=os.fspath(path), message=f"cannot write: {error.strerror or error}") from None


def supported_formats() -> set[str]:
    """File suffixes ``save_figure`` can write, without the dot."""
    return set(Figure().canvas.get_supported_filetypes())


def figure_to_rgb(fig: Figure) -> np.ndarray:
    """The figure rendered at its own dpi as an (H, W, 3) uint8 array, for loggers that take images."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()  # (H, W, 4) RGBA -> RGB
