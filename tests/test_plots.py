"""The figures: files are real PNGs of the asked size with something drawn, and the attention heatmap shows
exactly the model's attention weights (teacher-forced for a given target, the search's for its own output)."""

from __future__ import annotations

import struct

import matplotlib.image
import numpy as np
import pytest
import torch
from factories import tiny_checkpoint
from lightning.pytorch.loggers import CSVLogger

from nmt.cli import main as nmt_main
from nmt.commands.plot_curves import PANELS, read_run
from nmt.data.tokenizer import BOS, EOS
from nmt.decoding import SearchConfig, search
from nmt.inference import Translator
from nmt.plotting import attention_heatmap, curves_figure, save_figure, scatter_map

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

    a = read_run(run_a)
    np.testing.assert_array_equal(a["train/loss"].steps, np.arange(150))
    np.testing.assert_array_equal(a["val/bleu"].steps, [24, 49, 74, 99, 124, 149])
    fig = curves_figure({"a": a, "b": read_run(run_b)}, PANELS)
    loss_panel, bleu_panel = fig.axes
    assert len(loss_panel.lines) == 4 and len(bleu_panel.lines) == 2  # (train, val) × 2 runs; BLEU × 2 runs
    np.testing.assert_array_equal(bleu_panel.lines[0].get_ydata(), a["val/bleu"].values)

    out = tmp_path / "curves.png"
    status = nmt_main(["plot-curves", str(run_a), str(run_b), "--output", str(out), "--size", "8", "3", "--dpi", "50"])
    assert status == 0
    assert_png(out, 400, 150)
    assert "2 run(s)" in capsys.readouterr().err


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
