"""`nmt embed`: the phrase vectors are the encoder's own summary (checked against `model.encode` run on one
phrase at a time), one row per input line, and the PCA map (or t-SNE's, with scikit-learn) is drawn."""

from __future__ import annotations

import io
import sys

import matplotlib.image
import numpy as np
import pytest
import torch
from factories import argv, multi30k_lines, tiny_checkpoint

from nmt.cli import main as nmt
from nmt.inference import Translator


@pytest.fixture(scope="module")
def phrases(tmp_path_factory):
    path = tmp_path_factory.mktemp("embed") / "phrases.txt"
    lines = [
        " ".join(line.split()[:k])
        for k, line in zip([1, 2, 3, 5, 8, 13] * 20, multi30k_lines("val", "en", 120), strict=True)
    ]
    lines[7] = "l&apos;homme"
    path.write_text("\n".join(lines) + "\n")
    return path, lines


def encode_one(translator, text: str):
    ids = translator.tokenizer.encode_src([text])[0]
    with torch.no_grad():
        return translator.model.encode(torch.tensor([ids]), torch.tensor([len(ids)])), len(ids)


@pytest.mark.parametrize("architecture", ["rnnencdec", "rnnsearch"])
def test_vectors_are_the_encoder_summary_one_row_per_line(architecture, phrases, tmp_path, capsys):
    path, lines = phrases
    ckpt = tiny_checkpoint(tmp_path, architecture=architecture)
    translator = Translator.load(ckpt, device="cpu")
    out = tmp_path / "v.npy"
    assert (
        nmt(["embed", "--checkpoint", str(ckpt), "--input", str(path), "--output", str(out), "--batch-tokens", "60"])
        == 0
    )
    vectors = np.load(out)
    assert vectors.dtype == np.float32 and vectors.shape[0] == len(lines)
    saved = io.BytesIO()
    np.save(saved, vectors)
    assert out.read_bytes() == saved.getvalue()  # streamed block by block, yet byte for byte numpy's own file
    H = translator.network.encoder_dim
    for i in range(0, len(lines), 11):
        enc, length = encode_one(translator, lines[i])
        if architecture == "rnnencdec":
            expected = enc.c[0]  # c = tanh(V h_T)
        else:
            expected = torch.cat([enc.h[0, length - 1, :H], enc.h[0, 0, H:]])  # [→h_T; ←h_1]
        np.testing.assert_allclose(vectors[i], expected.numpy(), atol=1e-5)
    assert f"{len(lines)} phrases" in capsys.readouterr().err


def test_rnnsearch_mean_annotation_and_unescape(phrases, tmp_path):
    path, lines = phrases
    ckpt = tiny_checkpoint(tmp_path, architecture="rnnsearch")
    translator = Translator.load(ckpt, device="cpu")
    out = tmp_path / "v.npy"
    command = argv("embed --checkpoint", ckpt, "--input", path, "--output", out, "--rnnsearch-vector mean --unescape")
    assert nmt(command) == 0
    vectors = np.load(out)
    for i in (0, 7, 100):
        enc, _ = encode_one(translator, lines[i].replace("&apos;", "'"))
        np.testing.assert_allclose(vectors[i], enc.h[0].mean(0).numpy(), atol=1e-5)


def test_plot_is_a_png_map(phrases, tmp_path):
    """The map is 10 × 8 inches at 120 dpi: the 50 sampled phrases as points, 10 of them labelled with their text."""
    path, _ = phrases
    ckpt = tiny_checkpoint(tmp_path, architecture="rnnencdec")
    pictures = {}
    for labels in (0, 10):
        plot = tmp_path / f"map{labels}.png"
        command = argv("embed --checkpoint", ckpt, "--input", path, "--output", tmp_path / "v.npy", "--plot", plot)
        assert nmt(command + argv("--labels", labels, "--plot-points 50")) == 0
        pictures[labels] = matplotlib.image.imread(plot)[..., :3]  # (H, W, RGB) in [0, 1]
    for picture in pictures.values():
        assert picture.shape == (960, 1200, 3)
        red, blue = picture[..., 0], picture[..., 2]
        assert (blue - red > 0.2).sum() > 50 * 10  # the points (matplotlib's blue): at least 50 dots' worth
    dark = {labels: int((picture.max(-1) < 0.3).sum()) for labels, picture in pictures.items()}
    assert dark[10] > dark[0] + 1000  # the labels' text: more dark pixels than the axes and title alone


def embed_with_tsne(ckpt, path, tmp_path) -> list[str]:
    out, plot = tmp_path / "v.npy", tmp_path / "map.png"
    return ["embed", "--checkpoint", str(ckpt), "--input", str(path), "--output", str(out), "--plot", str(plot)] + [
        "--projection",
        "tsne",
        "--plot-points",
        "40",
        "--labels",
        "8",
    ]


def test_tsne_without_scikit_learn_names_the_extra(phrases, tmp_path, capsys, monkeypatch):
    path, _ = phrases
    monkeypatch.setitem(sys.modules, "sklearn.manifold", None)  # `import sklearn.manifold` fails as if missing
    ckpt = tmp_path / "never-loaded.ckpt"  # refused before the model is read
    assert nmt(embed_with_tsne(ckpt, path, tmp_path)) == 2
    (err,) = capsys.readouterr().err.strip().splitlines()
    assert err == (
        "nmt embed: error: --projection tsne: t-SNE needs scikit-learn, which is not installed: pip install 'nmt[tsne]'"
    )
    assert not list(tmp_path.glob("*.npy")) and not list(tmp_path.glob("*.png"))


def test_tsne_map(phrases, tmp_path, capsys):
    pytest.importorskip("sklearn.manifold", reason="t-SNE is the optional extra nmt[tsne]")
    path, _ = phrases
    ckpt = tiny_checkpoint(tmp_path, architecture="rnnencdec")
    assert nmt(embed_with_tsne(ckpt, path, tmp_path)) == 0
    assert (tmp_path / "map.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"t-SNE map of 40 phrases (8 labelled) -> {tmp_path / 'map.png'}" in capsys.readouterr().err


def test_errors(tmp_path, capsys):
    ckpt = tiny_checkpoint(tmp_path, architecture="rnnencdec")
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    out = tmp_path / "v.npy"
    assert nmt(["embed", "--checkpoint", str(ckpt), "--input", str(empty), "--output", str(out)]) == 2
    assert "no phrases to embed" in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.glob(".v.npy*"))
    assert nmt(["embed", "--checkpoint", str(ckpt), "--input", str(empty), "--output", str(tmp_path / "v.txt")]) == 2
    assert "name it *.npy" in capsys.readouterr().err
