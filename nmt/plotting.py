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
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
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
    down the side (y), α_ij in grey scale from 0 (black) to 1 (white), with a colour bar from 0 to 1 beside it
    (a row spread evenly over many pieces is dark grey, not zero: the bar says how dark each value is).

    Args:
        alpha: (T, S) attention weights; row i is target position i, column j source position j.
        src_labels: the S source pieces (EOS included).
        tgt_labels: the T target pieces (EOS included).
        size: (width, height) in inches; by default about a third of an inch per piece, and room for the bar.
    """
    alpha = np.asarray(alpha, dtype=np.float32)
    T, S = alpha.shape
    if (len(tgt_labels), len(src_labels)) != (T, S):
        raise ValueError(f"alpha is {T}×{S} but there are {len(tgt_labels)}×{len(src_labels)} labels")
    if size is None:
        size = (max(4.0, 2.5 + 0.32 * S), max(3.0, 1.8 + 0.32 * T))
    fig = Figure(figsize=size, dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(alpha, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest", aspect="auto")
    ax.xaxis.tick_top()  # the paper reads the source along the top
    ax.xaxis.set_label_position("top")
    ax.set_xticks(range(S), list(src_labels), rotation=90, fontsize=8)
    ax.set_yticks(range(T), list(tgt_labels), fontsize=8)
    ax.set_xlabel("source pieces", fontsize=8)
    ax.set_ylabel("target pieces", fontsize=8)
    bar = fig.colorbar(image, ax=ax, aspect=30)
    bar.set_ticks([0.0, 0.25, 0.5, 0.75, 1.0])
    bar.ax.tick_params(labelsize=7)
    bar.set_label(r"attention weight $\alpha_{ij}$", fontsize=8)
    if title:
        # Wrapped to the figure's width (about 12 characters an inch at 9 points): a long translation would
        # otherwise run off both edges.
        width = max(20, int(size[0] * 12))
        ax.set_title("\n".join(textwrap.fill(line, width) for line in title.splitlines()), fontsize=9)
    return fig


class Panel(NamedTuple):
    """One panel of `curves_figure`: its title, the metric keys drawn in it, and whether its y axis starts at 0
    (a score such as BLEU, which is never negative: an axis reaching below 0 would suggest it can be)."""

    title: str
    keys: Sequence[str]
    y_from_zero: bool = False


def curves_figure(
    runs: Mapping[str, Mapping[str, Series]],
    panels: Sequence[Panel],
    *,
    size: tuple[float, float] = (12.0, 4.5),
) -> Figure:
    """One panel per `Panel`, each run in its own colour: the first key of a panel as a thin line (e.g. the
    noisy training loss), the others dashed with markers (e.g. validation, once an epoch).

    Args:
        runs: run label -> metric key (``train/loss``) -> its Series; a run may lack some keys.
        panels: e.g. ``[Panel("loss", ["train/loss", "val/loss"]), Panel("BLEU", ["val/bleu"], y_from_zero=True)]``.
    """
    fig = Figure(figsize=size, dpi=DPI, layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False, sharex=True)[0]  # one step axis for every panel
    colours = [f"C{i % 10}" for i in range(len(runs))]
    for ax, panel in zip(axes, panels, strict=True):
        for colour, (run, metrics) in zip(colours, runs.items(), strict=True):
            for k, key in enumerate(panel.keys):
                if key not in metrics:
                    continue
                series = metrics[key]
                thin = k == 0 and len(panel.keys) > 1
                style = dict(lw=0.8, alpha=0.7) if thin else dict(ls="--", marker="o", ms=3)
                ax.plot(series.steps, series.values, color=colour, label=f"{run} {key}", **style)
        ax.set_title(panel.title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if panel.y_from_zero:
            # At least 0-1, so that runs still at 0 draw a line along the bottom, not ticks of 0.01.
            ax.set_ylim(0.0, max(1.0, ax.get_ylim()[1]))
        if ax.has_data():
            ax.legend(fontsize=7)
        else:  # e.g. a run stopped before its first validation: say so rather than draw an empty box
            message = f"no {' or '.join(panel.keys)} logged yet"
            ax.text(0.5, 0.5, message, transform=ax.transAxes, ha="center", va="center", color="0.4")
    return fig


def scatter_map(
    xy: np.ndarray,
    labels: Sequence[str | None],
    *,
    title: str | None = None,
    axis_names: tuple[str, str] = ("PC 1", "PC 2"),
    size: tuple[float, float] = (10.0, 8.0),
) -> Figure:
    """Points in 2-D, some labelled with their text (Cho et al. 2014, Figs. 4–5). The labelled points are drawn
    darker, and their labels placed by `place_labels` so that no two overlap; a label with no free place
    inside the axes is left out (``len(fig.axes[0].texts)`` says how many were drawn).

    Args:
        xy: (N, 2) coordinates.
        labels: N labels; None leaves a point unlabelled.
    """
    fig = Figure(figsize=size, dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    ax.scatter(xy[:, 0], xy[:, 1], s=4, alpha=0.5, color="C0")
    labelled = np.array([label is not None for label in labels], dtype=bool)
    ax.scatter(xy[labelled, 0], xy[labelled, 1], s=9, color="C3")
    ax.set_xlabel(axis_names[0])
    ax.set_ylabel(axis_names[1])
    if title:
        ax.set_title(title)
    ax.margins(0.08)  # room for the labels of the outermost points
    ax.autoscale_view()
    ax.set_xlim(ax.get_xlim())  # fixed from here: the labels are placed in pixels
    ax.set_ylim(ax.get_ylim())
    place_labels(ax, xy, labels)
    return fig


LABEL_GAP = 2.0
"""Pixels kept free between two labels, and between a point and its own label."""


def place_labels(ax: Axes, xy: np.ndarray, labels: Sequence[str | None], *, fontsize: float = 7.0) -> None:
    """Writes each label near its point, where it overlaps no label placed before it, preferring spots close
    to the point that cover few other points. The candidates are rings of 16 spots around the point, each ring
    wider than the last, up to the whole axes; a label more than a few pixels away gets a thin line to its
    point. Labels are placed in the order given; one that finds no free spot inside the axes is left out.

    The figure's layout is computed first (the axes' limits must be fixed), in pixels at the figure's dpi;
    the labels take no part in the layout afterwards, so the saved figure (at any dpi) keeps them apart."""
    fig = ax.get_figure()
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw_without_rendering()  # runs the layout: the axes' place in pixels is final from here
    box = ax.get_window_extent(renderer)  # the axes in pixels
    points = ax.transData.transform(xy)  # (N, 2) pixels
    to_data = ax.transData.inverted()
    rings = _rings(max(box.width, box.height))
    angles = np.deg2rad([45, 135, 315, 225, 90, 270, 0, 180, 22.5, 67.5, 112.5, 157.5, 202.5, 247.5, 292.5, 337.5])
    cos, sin = np.cos(angles), np.sin(angles)
    placed = np.empty((0, 4))  # (M, 4) x0, y0, x1, y1 of the labels placed so far
    leaders = []
    for i, label in enumerate(labels):
        if label is None:
            continue
        text = ax.text(0, 0, label, fontsize=fontsize, ha="left", va="bottom", parse_math=False)
        text.set_in_layout(False)
        extent = text.get_window_extent(renderer)
        width, height = extent.width, extent.height
        best: tuple[float, np.ndarray, float] | None = None  # (cost, (x0, y0, x1, y1), radius)
        for radius in rings:
            if best is not None and best[0] <= radius:
                break  # every spot further out costs more than the best found
            # The box on the side of the point it lies in: left edge at the spot when to the right, etc.
            x, y = points[i, 0] + radius * cos, points[i, 1] + radius * sin
            x0 = np.where(cos > 0.3, x, np.where(cos < -0.3, x - width, x - width / 2))
            y0 = np.where(sin > 0.3, y, np.where(sin < -0.3, y - height, y - height / 2))
            spots = np.stack([x0, y0, x0 + width, y0 + height], axis=1)  # (16, 4)
            inside = (spots[:, 0] >= box.x0) & (spots[:, 1] >= box.y0) & (spots[:, 2] <= box.x1)
            inside &= spots[:, 3] <= box.y1
            free = inside & ~_overlaps(spots, placed, LABEL_GAP).any(axis=1)
            if not free.any():
                continue
            covered = _covered(spots[free], points, LABEL_GAP).sum(axis=1)  # points under each free spot
            cost = radius + 8.0 * covered  # a covered point costs as much as 8 pixels further out
            k = int(np.argmin(cost))
            if best is None or cost[k] < best[0]:
                best = (float(cost[k]), spots[free][k], radius)
        if best is None:
            text.remove()
            continue
        _, spot, radius = best
        text.set_position(to_data.transform(spot[:2]))
        placed = np.vstack([placed, spot])
        if radius > 4 * LABEL_GAP:
            nearest = np.clip(points[i], spot[:2], spot[2:])  # the point of the box nearest to its point
            leaders.append(to_data.transform([points[i], nearest]))
    if leaders:
        ax.add_collection(LineCollection(leaders, colors="0.45", linewidths=0.5), autolim=False)


def _rings(largest: float) -> list[float]:
    """Distances in pixels from a point to the candidate spots of its label: from LABEL_GAP, each about a
    third further than the last, up to `largest` (the axes' longer side)."""
    rings = [LABEL_GAP]
    while rings[-1] < largest:
        rings.append(rings[-1] * 1.35 + 2.0)
    return rings


def _overlaps(boxes: np.ndarray, others: np.ndarray, gap: float) -> np.ndarray:
    """(B, O) whether box b comes closer than `gap` to box o; boxes as rows of x0, y0, x1, y1."""
    b, o = boxes[:, None, :], others[None, :, :]
    return (
        (b[..., 0] < o[..., 2] + gap)
        & (o[..., 0] < b[..., 2] + gap)
        & (b[..., 1] < o[..., 3] + gap)
        & (o[..., 1] < b[..., 3] + gap)
    )


def _covered(boxes: np.ndarray, points: np.ndarray, gap: float) -> np.ndarray:
    """(B, N) whether point n lies within `gap` of box b."""
    x, y = points[None, :, 0], points[None, :, 1]
    return (
        (boxes[:, None, 0] - gap <= x)
        & (x <= boxes[:, None, 2] + gap)
        & (boxes[:, None, 1] - gap <= y)
        & (y <= boxes[:, None, 3] + gap)
    )


def principal_components(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The (N, 2) coordinates of `vectors` (N, D) on their first two principal directions: the top two right
    singular vectors of the centred matrix (numpy's SVD, in float64); a second coordinate of 0 when D is 1.
    Also the share of the total variance along each of the two directions, σ_k² / Σ σ² of the singular values
    (0 and 0 when every vector is the same)."""
    centred = vectors.astype(np.float64) - vectors.mean(0)
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)  # rows of vt: principal directions
    xy = centred @ vt[:2].T  # (N, 2)
    variance = singular**2
    total = variance.sum()
    shares = variance[:2] / total if total > 0 else np.zeros(min(2, len(variance)))
    if xy.shape[1] < 2:
        xy = np.pad(xy, ((0, 0), (0, 2 - xy.shape[1])))
        shares = np.pad(shares, (0, 2 - len(shares)))
    return xy, shares


PROJECTIONS = ("pca", "tsne")
LABEL_CHARS = 40
"""A phrase map's label: the first characters of its phrase."""
TSNE_PERPLEXITY = 30.0
"""van der Maaten and Hinton's (2008) usual value, and scikit-learn's default; lowered for a few phrases."""
TSNE_MISSING = "t-SNE needs scikit-learn, which is not installed: pip install 'nmt[tsne]'"


def require_tsne() -> None:
    """An InputError naming the extra to install when scikit-learn (its TSNE) cannot be imported."""
    try:
        import sklearn.manifold  # noqa: F401
    except ImportError:
        raise InputError(path="--projection tsne", message=TSNE_MISSING) from None


def tsne(vectors: np.ndarray, *, seed: int) -> tuple[np.ndarray, float]:
    """(N, 2) t-SNE coordinates of `vectors` (N, D) by scikit-learn's TSNE (Barnes-Hut, initialised by PCA,
    as in Cho et al. 2014, Fig. 4), and the perplexity used: TSNE_PERPLEXITY, or (N − 1) / 3 for fewer
    phrases, since it must stay below N."""
    require_tsne()
    from sklearn.manifold import TSNE

    perplexity = min(TSNE_PERPLEXITY, max(1.0, (len(vectors) - 1) / 3))
    if len(vectors) < 2:
        return np.zeros((len(vectors), 2)), perplexity  # one phrase: a map of one point
    model = TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto", random_state=seed)
    return model.fit_transform(vectors.astype(np.float32)).astype(np.float64), perplexity


def phrase_map(
    vectors: np.ndarray, texts: Sequence[str], *, labels: int, rng: random.Random, projection: str = "pca"
) -> Figure:
    """Phrase representations (N, D) projected to 2-D by PCA or t-SNE (Cho et al. 2014, Fig. 4), `labels`
    random points of them labelled with (the first LABEL_CHARS characters of) their phrase, each distinct label
    once. A PCA map's axis titles say the share of the variance along each axis; t-SNE's axes have no units
    (only neighbourhoods mean much)."""
    first: dict[str, int] = {}  # a phrase listed twice is two points in one place: one label is enough
    for i, text in enumerate(texts):
        first.setdefault(text[:LABEL_CHARS], i)
    distinct = sorted(first.values())
    shown = set(rng.sample(distinct, min(labels, len(distinct))))
    names = [text[:LABEL_CHARS] if i in shown else None for i, text in enumerate(texts)]
    if projection == "pca":
        xy, shares = principal_components(vectors)
        axis_names = (f"PC 1 ({shares[0]:.1%} of the variance)", f"PC 2 ({shares[1]:.1%} of the variance)")
        method = "PCA"
    elif projection == "tsne":
        xy, perplexity = tsne(vectors, seed=rng.randrange(2**31))
        axis_names, method = ("t-SNE 1", "t-SNE 2"), f"t-SNE, perplexity {perplexity:g}"
    else:
        raise ValueError(f"projection {projection!r} is not one of {PROJECTIONS}")
    return scatter_map(
        xy, names, title=f"Phrase representations, {method} ({len(texts):,} phrases)", axis_names=axis_names
    )


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
