"""The figures: files are real PNGs of the asked size with something drawn, and the attention heatmap shows
exactly the model's attention weights (teacher-forced for a given target, the search's for its own output)
beside a colour bar from 0 to 1; the curves keep evaluations (nmt validate/test) off the training curve and
BLEU above 0; the phrase map's labels do not overlap and its PCA axes give their share of the variance."""

from __future__ import annotations

import random
import re
import struct

import matplotlib.image
import numpy as np
import pytest
import torch
from factories import tiny_checkpoint
from lightning.pytorch.loggers import CSVLogger
from matplotlib.backends.backend_agg import FigureCanvasAgg

from nmt.cli import main as nmt_main
from nmt.commands import plot_attention, translate
from nmt.commands.plot_curves import PANELS, read_run
from nmt.data.tokenizer import BOS, EOS
from nmt.decoding import SearchConfig, search
from nmt.inference import Translator
from nmt.plotting import (
    attention_heatmap,
    curves_figure,
    phrase_map,
    principal_components,
    save_figure,
    scatter_map,
    tsne,
)

SRC = "Two young men are playing football on a green field."
TGT = "Deux jeunes hommes jouent au football sur un terrain vert."


def png_size(path) -> tuple[int, int]:
    """(width, height) from the IHDR chunk, after checking the PNG signature."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def assert_png(path, width: int, height: int) -> None:
    assert png_size(path) == (width, height)
    pixels = matplotlib.image.imread(path)  # (H, W, 4) floats
    assert pixels.shape[:2] == (height, width)
    assert len(np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0)) > 2, "the image is (nearly) uniform"


@pytest.fixture
def translator(checkpoint):
    """The checkpoint's model with every weight redrawn from N(0, 0.5²): the papers' initialisation sets
    v_a = 0, which makes every attention weight 1/|src|, and a uniform matrix would hide transposed axes."""
    translator = Translator.load(checkpoint, device="cpu")
    torch.manual_seed(0)
    with torch.no_grad():
        for p in translator.model.parameters():
            p.normal_(0.0, 0.5)
    return translator


def test_heatmap_draws_the_matrix_it_is_given(tmp_path):
    alpha = torch.softmax(torch.randn(5, 7, generator=torch.Generator().manual_seed(0)), dim=-1).numpy()
    fig = attention_heatmap(alpha, [f"s{j}" for j in range(7)], [f"t{i}" for i in range(5)], size=(5, 4))
    (image,) = fig.axes[0].images
    np.testing.assert_array_equal(image.get_array(), alpha)
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == [f"s{j}" for j in range(7)]
    assert image.get_clim() == (0.0, 1.0)  # grey scale from 0 (black) to 1 (white), as in the paper
    bar = image.colorbar  # so that a row spread evenly (dark grey) is not read as zero (black)
    assert bar is not None and bar.ax in fig.axes and bar.ax.get_ylim() == (0.0, 1.0)
    assert (fig.axes[0].get_xlabel(), fig.axes[0].get_ylabel()) == ("source pieces", "target pieces")
    save_figure(fig, tmp_path / "a.png", dpi=50)
    assert_png(tmp_path / "a.png", 250, 200)
    with pytest.raises(ValueError, match="labels"):
        attention_heatmap(alpha, ["x"], ["y"])


def test_alignment_of_a_given_target_is_the_teacher_forced_attention(translator):
    model, tok = translator.model, translator.tokenizer
    shown = translator.attention(SRC, TGT)

    src_ids, tgt_ids = tok.encode_src([SRC])[0], tok.encode_tgt([TGT])[0]
    with torch.no_grad():
        enc = model.encode(torch.tensor([src_ids]), torch.tensor([len(src_ids)]))
        expected = model.teacher_forced(enc, torch.tensor([[BOS, *tgt_ids]])).alpha[0].numpy()  # (T, S)
    np.testing.assert_array_equal(shown.alpha, expected)
    assert shown.alpha.shape == (len(tgt_ids) + 1, len(src_ids))
    assert shown.src_pieces == tok.src_pieces(src_ids) and shown.src_pieces[-1] == "</s>"
    assert shown.tgt_pieces == [*tok.tgt_pieces(tgt_ids), "</s>"]
    np.testing.assert_allclose(shown.alpha.sum(-1), 1.0, rtol=1e-5)
    assert shown.alpha.std() > 1e-2  # far from uniform, so a transposed matrix would not pass


def test_alignment_of_the_models_translation_is_the_searchs_attention(translator):
    model, tok = translator.model, translator.tokenizer
    shown = translator.attention(SRC, beam_size=3)

    src_ids = tok.encode_src([SRC])[0]
    src, lengths = torch.tensor([src_ids]), torch.tensor([len(src_ids)])
    best = search(model, src, lengths, SearchConfig(beam_size=3), bos_id=BOS, eos_id=EOS)[0][0]
    np.testing.assert_array_equal(shown.alpha, best.alpha.numpy())
    assert shown.tgt_pieces == [*tok.tgt_pieces(best.tokens), *(["</s>"] if best.complete else [])]
    # The search's weights are the model's: teacher-forcing its own output gives the same matrix.
    T = shown.alpha.shape[0]
    with torch.no_grad():
        tgt_in = torch.tensor([[BOS, *best.tokens][:T]])
        forced = model.teacher_forced(model.encode(src, lengths), tgt_in).alpha[0].numpy()
    np.testing.assert_allclose(shown.alpha, forced, atol=1e-5)


def test_plot_attention_command_writes_the_png(checkpoint, tmp_path, capsys):
    out = tmp_path / "fig.png"
    args = ["--checkpoint", str(checkpoint), "--src", SRC, "--output", str(out), "--dpi", "40"]
    assert nmt_main(["plot-attention", *args, "--tgt", TGT, "--size", "6", "5"]) == 0
    assert_png(out, 240, 200)
    assert nmt_main(["plot-attention", *args]) == 0  # the model's own translation, size from its length
    assert png_size(out)[0] >= 160
    assert "fig.png" in capsys.readouterr().err


def test_plot_attention_searches_as_translate_does_by_default():
    searched = plot_attention.build_parser().get_defaults().beam_size
    assert searched == translate.build_parser().get_defaults().beam_size == 5


def test_plot_attention_refuses_a_model_without_attention(tmp_path, capsys):
    checkpoint = tiny_checkpoint(tmp_path, architecture="rnnencdec")
    status = nmt_main(["plot-attention", "--checkpoint", str(checkpoint), "--src", SRC, "--output", "x.png"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1
    assert str(checkpoint) in err[0] and "rnnencdec" in err[0] and "rnnsearch" in err[0]
    assert not (tmp_path / "x.png").exists()


def write_run(directory, *, steps: range, val_every: int, bleu_gain: float) -> None:
    """A run's CSV logs as Lightning's CSVLogger writes them, one version per call."""
    logger = CSVLogger(save_dir=directory, name="logs")
    for step in steps:
        logger.log_metrics({"train/loss": 6.0 - step / 50, "epoch": step // val_every}, step=step)
        if (step + 1) % val_every == 0:
            logger.log_metrics({"val/loss": 5.5 - step / 60, "val/bleu": bleu_gain * step}, step=step)
    logger.save()


def test_plot_curves_overlays_runs_from_their_csv_logs(tmp_path, capsys):
    run_a, run_b = tmp_path / "runs" / "a", tmp_path / "runs" / "b"
    write_run(run_a, steps=range(0, 100), val_every=25, bleu_gain=0.1)
    write_run(run_a, steps=range(100, 150), val_every=25, bleu_gain=0.1)  # resumed: logs/version_1
    write_run(run_b, steps=range(0, 80), val_every=20, bleu_gain=0.2)

    a = read_run(run_a).series
    np.testing.assert_array_equal(a["train/loss"].steps, np.arange(150))
    np.testing.assert_array_equal(a["val/bleu"].steps, [24, 49, 74, 99, 124, 149])
    fig = curves_figure({"a": a, "b": read_run(run_b).series}, PANELS)
    loss_panel, bleu_panel = fig.axes
    assert len(loss_panel.lines) == 4 and len(bleu_panel.lines) == 2  # (train, val) × 2 runs; BLEU × 2 runs
    np.testing.assert_array_equal(bleu_panel.lines[0].get_ydata(), a["val/bleu"].values)
    assert bleu_panel.get_ylim()[0] == 0.0 and bleu_panel.get_ylim()[1] >= 0.2 * 79  # from 0, all values shown

    out = tmp_path / "curves.png"
    status = nmt_main(["plot-curves", str(run_a), str(run_b), "--output", str(out), "--size", "8", "3", "--dpi", "50"])
    assert status == 0
    assert_png(out, 400, 150)
    assert "2 run(s)" in capsys.readouterr().err


def write_evaluation(directory, stage: str, *, bleu: float) -> None:
    """The version `nmt validate` (stage "val") or `nmt test` ("test") writes: Lightning logs one row of the
    stage's metrics at step 0 (an evaluation restores no training loop), with the epoch, and no train/* key."""
    logger = CSVLogger(save_dir=directory, name="logs")
    metrics = {f"{stage}/loss": 2.5, f"{stage}/ppl": 12.18, f"{stage}/bleu": bleu, f"{stage}/chrf": 40.0, "epoch": 0}
    logger.log_metrics(metrics, step=0)
    logger.save()


def test_plot_curves_keeps_evaluations_off_the_training_curve(tmp_path, capsys):
    run = tmp_path / "run"
    write_run(run, steps=range(0, 100), val_every=25, bleu_gain=0.1)  # version_0: the fit
    write_evaluation(run, "val", bleu=12.5)  # version_1: nmt validate --ckpt_path best
    write_evaluation(run, "test", bleu=11.75)  # version_2: nmt test
    write_run(run, steps=range(100, 130), val_every=30, bleu_gain=0.1)  # version_3: resumed, one validation
    resumed = CSVLogger(save_dir=run, name="logs")  # version_4: resumed, validated at once, stopped: a fit still
    resumed.log_metrics({"val/loss": 3.0, "val/bleu": 14.0, "epoch": 5}, step=140)
    resumed.save()

    logs = read_run(run)
    np.testing.assert_array_equal(logs.series["val/bleu"].steps, [24, 49, 74, 99, 119, 140])  # no point at 0
    np.testing.assert_array_equal(logs.series["val/loss"].values, [*(5.5 - s / 60 for s in (24, 49, 74, 99, 119)), 3])
    assert [e.path.parent.name for e in logs.evaluations] == ["version_1", "version_2"]
    assert logs.evaluations[1].results["test/bleu"] == 11.75

    out = tmp_path / "curves.png"
    assert nmt_main(["plot-curves", str(run), "--output", str(out), "--dpi", "20"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 3 and err[2].endswith(f"1 run(s) -> {out}")
    for line, version, results in zip(
        err[:2], ["version_1", "version_2"], ["val/bleu 12.5", "test/bleu 11.75"], strict=True
    ):
        assert line.startswith(f"nmt plot-curves: {run / 'logs' / version}: an evaluation (nmt validate or nmt test")
        assert results in line and line.endswith("not drawn")

    only = tmp_path / "evaluated"
    write_evaluation(only, "val", bleu=3.0)
    assert nmt_main(["plot-curves", str(only), "--output", str(tmp_path / "only.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        err[-1]
        == f"nmt plot-curves: error: {only}: only evaluations (nmt validate or nmt test) here: no training curve"
    )
    assert not (tmp_path / "only.png").exists()


def test_bleu_axis_starts_at_zero_even_when_every_value_is_zero(tmp_path):
    run = tmp_path / "run"
    write_run(run, steps=range(0, 40), val_every=10, bleu_gain=0.0)  # a smoke run: BLEU 0.00 throughout
    fig = curves_figure({"run": read_run(run).series}, PANELS)
    bleu_panel = fig.axes[1]
    assert bleu_panel.get_ylim() == (0.0, 1.0)  # not ticks of -0.04 … 0.04 around a flat line
    FigureCanvasAgg(fig).draw()
    low, high = bleu_panel.get_ylim()
    assert min(t for t in bleu_panel.get_yticks() if low <= t <= high) == 0.0

    early = tmp_path / "early"
    write_run(early, steps=range(0, 10), val_every=25, bleu_gain=0.1)  # stopped before its first validation
    loss_panel, bleu_panel = curves_figure({"early": read_run(early).series}, PANELS).axes
    assert [t.get_text() for t in bleu_panel.texts] == ["no val/bleu logged yet"]
    assert bleu_panel.get_xlim() == loss_panel.get_xlim()  # one step axis for both panels


def test_plot_curves_without_logs_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert nmt_main(["plot-curves", str(tmp_path / "empty"), "--output", str(tmp_path / "c.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "empty" in err[0] and "metrics.csv" in err[0]


def test_scatter_map_labels_the_chosen_points(tmp_path):
    xy = np.random.default_rng(0).normal(size=(50, 2))
    labels = [f"phrase {i}" if i % 10 == 0 else None for i in range(50)]
    fig = scatter_map(xy, labels, title="map", size=(4, 3))
    assert sorted(t.get_text() for t in fig.axes[0].texts) == sorted(t for t in labels if t)
    save_figure(fig, tmp_path / "map.png", dpi=50)
    assert_png(tmp_path / "map.png", 200, 150)


def label_boxes(fig):
    """The pixel boxes (x0, y0, x1, y1) of the labels of a scatter map, after a full draw at the figure's dpi."""
    FigureCanvasAgg(fig).draw()
    renderer = fig.canvas.get_renderer()
    return [t.get_window_extent(renderer).extents for t in fig.axes[0].texts]


def test_crowded_labels_do_not_overlap(tmp_path):
    rng = np.random.default_rng(0)
    xy = np.concatenate([rng.normal(0, 0.05, size=(150, 2)), rng.normal(3, 1.0, size=(150, 2))])  # a dense knot
    labels = [f"a rather long phrase {i}" if i % 4 == 0 else None for i in range(300)]  # 75, 38 in the knot
    fig = scatter_map(xy, labels, size=(8, 6))
    boxes = label_boxes(fig)
    assert len(boxes) >= 70  # nearly all find room
    axes = fig.axes[0].get_window_extent().extents
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        assert axes[0] <= x0 and x1 <= axes[2] and axes[1] <= y0 and y1 <= axes[3]
        for u0, v0, u1, v1 in boxes[i + 1 :]:
            assert x1 <= u0 or u1 <= x0 or y1 <= v0 or v1 <= y0, "two labels overlap"
    texts = {t.get_text() for t in fig.axes[0].texts}
    assert texts <= {label for label in labels if label}
    # Saved at another dpi, the layout (and so the labels' places relative to each other) stays the same.
    save_figure(fig, tmp_path / "map.png", dpi=60)
    assert_png(tmp_path / "map.png", 480, 360)
    np.testing.assert_allclose(label_boxes(fig), boxes, atol=0.5)


def test_pca_axes_give_their_share_of_the_variance():
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(200, 16)) * np.linspace(3, 0.1, 16)  # unequal variances along the axes
    fig = phrase_map(vectors.astype(np.float32), [f"p{i}" for i in range(200)], labels=5, rng=random.Random(0))
    ax = fig.axes[0]
    shares = [
        float(re.search(r"\(([\d.]+)% of the variance\)", name).group(1)) for name in (ax.get_xlabel(), ax.get_ylabel())
    ]
    eigenvalues = np.sort(np.linalg.eigvalsh(np.cov(vectors.astype(np.float32).astype(np.float64), rowvar=False)))[::-1]
    np.testing.assert_allclose(shares, 100 * eigenvalues[:2] / eigenvalues.sum(), atol=0.05)  # one decimal shown
    assert shares[0] >= shares[1] and sum(shares) <= 100
    assert "PCA" in ax.get_title()

    repeated = [f"p{i % 3}" for i in range(200)]  # 3 phrases, each many times: each labelled once
    fig = phrase_map(vectors.astype(np.float32), repeated, labels=10, rng=random.Random(0))
    assert sorted(t.get_text() for t in fig.axes[0].texts) == ["p0", "p1", "p2"]

    xy, one_dim = principal_components(np.arange(5.0)[:, None])  # D = 1: all the variance on the first axis
    assert one_dim.tolist() == [1.0, 0.0] and xy.shape == (5, 2)
    _, constant = principal_components(np.ones((4, 3)))
    assert constant.tolist() == [0.0, 0.0]


def test_tsne_map_is_scikit_learns_tsne():
    manifold = pytest.importorskip("sklearn.manifold", reason="t-SNE is the optional extra nmt[tsne]")
    vectors = np.random.default_rng(2).normal(size=(40, 8)).astype(np.float32)
    xy, perplexity = tsne(vectors, seed=7)
    assert perplexity == 13.0  # (40 - 1) / 3: it must stay below the number of points
    expected = manifold.TSNE(perplexity=13.0, init="pca", learning_rate="auto", random_state=7).fit_transform(vectors)
    np.testing.assert_allclose(xy, expected, rtol=1e-5)
    fig = phrase_map(vectors, [f"p{i}" for i in range(40)], labels=5, rng=random.Random(0), projection="tsne")
    assert (fig.axes[0].get_xlabel(), fig.axes[0].get_ylabel()) == ("t-SNE 1", "t-SNE 2")
    assert "t-SNE, perplexity 13" in fig.axes[0].get_title()
