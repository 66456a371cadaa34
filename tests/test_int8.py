"""int8 inference (``--dtype int8``, ``nmt.model.int8``): the integer products, the layers it replaces, and the
int8 export."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from nmt.checkpoint import load_model
from nmt.cli import main
from nmt.decoding import SearchConfig
from nmt.inference import Translator
from nmt.model.gru import PaperGRUCell
from nmt.model.int8 import (
    Int8Linear,
    Int8PaperGRUCell,
    dequantize_linear_layers_,
    quantize_linear_layers_,
    quantize_rows,
)
from nmt.model.layers import stacked_linear
from tests.factories import multi30k_lines, tiny_checkpoint

LINES = multi30k_lines("test_2016_flickr", "en", 6)


@pytest.fixture(scope="module")
def checkpoints(tiny_checkpoints) -> dict[str, Path]:
    return {arch: tiny_checkpoints(architecture=arch, seed=3) for arch in ("rnnsearch", "rnnencdec")}


def test_an_int8_layer_computes_the_integer_product_of_its_quantized_rows_and_weights():
    torch.manual_seed(0)
    layer = nn.Linear(48, 37)
    x = torch.randn(5, 7, 48) * 3
    q = Int8Linear.from_float(layer)
    assert q.qweight.dtype == torch.int8 and q.qweight.abs().max() == 127  # each row's largest weight is ±127
    x_q, x_scale = quantize_rows(x.reshape(-1, 48))
    exact = (x_q.double() @ q.qweight.double().T) * x_scale.double() * q.scale.double() + layer.bias.double()
    y = q(x)
    assert y.shape == (5, 7, 37) and y.dtype == torch.float32
    torch.testing.assert_close(y.reshape(-1, 37).double(), exact, rtol=1e-6, atol=1e-5)
    reference = layer(x)
    # the quantization error: a small fraction of the output's scale
    assert (y - reference).abs().max() < 0.02 * reference.abs().max()


def test_an_all_zero_row_and_a_layer_without_bias():
    layer = nn.Linear(8, 4, bias=False)
    x = torch.zeros(3, 8)
    x[1] = torch.arange(8.0)
    y = Int8Linear.from_float(layer)(x)
    assert torch.equal(y[0], torch.zeros(4)) and torch.isfinite(y).all()
    torch.testing.assert_close(y[1], layer(x)[1], rtol=0.02, atol=0.02)


def test_quantizing_a_dequantized_model_gives_back_the_same_int8_weights(checkpoints):
    model = load_model(checkpoints["rnnsearch"], device="cpu").model
    quantize_linear_layers_(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert not any(isinstance(m, nn.Linear) for n, m in model.named_modules() if not n.startswith("encoder"))
    assert not any(isinstance(m, (Int8Linear, Int8PaperGRUCell)) for m in model.encoder.modules())  # float32
    dequantize_linear_layers_(model)
    assert not any(isinstance(m, Int8Linear) for m in model.modules())
    quantize_linear_layers_(model)
    after = model.state_dict()
    assert before.keys() == after.keys()
    for name, tensor in before.items():
        assert torch.equal(tensor, after[name]) if tensor.dtype == torch.int8 else torch.allclose(tensor, after[name])


@pytest.mark.parametrize("architecture", ["rnnsearch", "rnnencdec"])
def test_int8_inference_scores_pairs_close_to_float32(architecture, tmp_path):
    """Every linear layer int8, the rest float32: log p(y | x) of each real pair within 1% of float32's. The
    weights are drawn wide (init_std 0.5) so that the model's distributions are far from uniform (more than 2 nats a
    piece): a near-uniform model scores every pair about |y|·log V whatever its weights."""
    checkpoint = tiny_checkpoint(tmp_path, architecture=architecture, seed=3, init_std=0.5)
    float32 = Translator.load(checkpoint, device="cpu")
    int8 = Translator.load(checkpoint, device="cpu", dtype="int8")
    assert any(isinstance(m, Int8Linear) for m in int8.model.modules())
    assert not any(isinstance(m, nn.Linear) for n, m in int8.model.named_modules() if not n.startswith("encoder"))
    targets = multi30k_lines("test_2016_flickr", "fr", len(LINES))
    exact, approx = (t.score(LINES, targets) for t in (float32, int8))
    uniform = exact.n_tokens * math.log(float32.tokenizer.tgt_vocab_size)
    assert (abs(exact.logprob + uniform) > 2 * exact.n_tokens).all()  # each pair far from the uniform score
    for line, (e, a) in enumerate(zip(exact.logprob, approx.logprob, strict=True), 1):
        assert abs(a - e) < 0.01 * abs(e), (line, e, a)
    found = list(int8.translate(LINES, SearchConfig(beam_size=3)))
    assert [t.line for t in found] == list(range(1, len(LINES) + 1))


def test_an_int8_export_holds_int8_weights_and_loads_in_any_dtype(checkpoints, tmp_path):
    ckpt = checkpoints["rnnsearch"]
    full, small = tmp_path / "full.ckpt", tmp_path / "int8.ckpt"
    assert main(["export", str(ckpt), str(full)]) == 0
    assert main(["export", str(ckpt), str(small), "--dtype", "int8"]) == 0
    weights = torch.load(small, weights_only=True)["state_dict"]
    assert weights["model.output.W_o.qweight"].dtype == torch.int8 and "model.output.W_o.weight" not in weights
    assert small.stat().st_size < full.stat().st_size

    def translations(path: Path, dtype: str) -> list[str]:
        translator = Translator.load(path, device="cpu", dtype=dtype)
        return [t.text for t in translator.translate(LINES, SearchConfig(beam_size=3))]

    # the file holds exactly what --dtype int8 computes with
    assert translations(small, "int8") == translations(ckpt, "int8")
    # in float32: its int8 weights times their scales
    model = load_model(small, device="cpu", dtype=torch.float32).model
    assert any(isinstance(m, nn.Linear) for m in model.modules())
    assert len(translations(small, "float32")) == len(LINES)


def test_int8_weights_where_float_weights_belong_are_refused_in_one_line(checkpoints, tmp_path):
    ckpt = torch.load(checkpoints["rnnsearch"], weights_only=True)
    ckpt["state_dict"]["model.W_s.weight"] = ckpt["state_dict"]["model.W_s.weight"].to(torch.int8)
    bad = tmp_path / "bad.ckpt"
    torch.save(ckpt, bad)
    with pytest.raises(Exception, match=r"weight W_s.weight is torch.int8, the network expects torch.float32"):
        load_model(bad, device="cpu")


def test_translate_and_score_take_dtype_int8(checkpoints, tmp_path, capsys):
    src = tmp_path / "src.en"
    src.write_text("\n".join(LINES) + "\n", encoding="utf-8")
    out = tmp_path / "out.fr"
    status = main(["translate", "--checkpoint", str(checkpoints["rnnsearch"]), "--input", str(src), "--output",
                   str(out), "--dtype", "int8", "--no-progress"])  # fmt: skip
    assert status == 0 and len(out.read_text(encoding="utf-8").splitlines()) == len(LINES)
    assert main(["translate", "--checkpoint", str(checkpoints["rnnsearch"]), "--dtype", "int4"]) == 2
    assert "--dtype" in capsys.readouterr().err


def test_the_decoders_paper_cell_is_int8_and_the_encoder_stays_float(checkpoints, tmp_path):
    from nmt.model.gru import CuDNNGRUCell

    paper = load_model(checkpoints["rnnsearch"], device="cpu", dtype="int8").model
    assert isinstance(paper.cell, Int8PaperGRUCell)
    assert all(type(c) is PaperGRUCell for c in paper.encoder.cells) and type(paper.encoder.W) is nn.Linear
    cudnn_checkpoint = tiny_checkpoint(tmp_path, architecture="rnnsearch", cell="cudnn")
    cudnn = load_model(cudnn_checkpoint, device="cpu", dtype="int8").model
    assert isinstance(cudnn.cell, CuDNNGRUCell)  # its recurrent matrix joins the int8 stack of a decoding step
    assert isinstance(cudnn.step_weights().state, Int8Linear)
    # the int8 cell computes Eqs. 5–8 with int8 products: close to the float cell
    torch.manual_seed(0)
    cell = PaperGRUCell(24)
    x, h = torch.randn(9, 72), torch.rand(9, 24) * 2 - 1
    approx = Int8PaperGRUCell.from_float(cell)(x, h)
    assert (approx - cell(x, h)).abs().max() < 0.02
    assert torch.equal(Int8PaperGRUCell.from_float(cell).to_float().U, Int8PaperGRUCell.from_float(cell).U.weight)


def test_an_int8_export_loads_with_the_layers_it_stored_in_int8(checkpoints, tmp_path):
    """An export whose encoder is int8 too (as ``nmt export --dtype int8`` wrote them before the encoder stayed
    float32) loads and runs with its encoder in int8."""
    exported = tmp_path / "int8.ckpt"
    assert main(["export", str(checkpoints["rnnsearch"]), str(exported), "--dtype", "int8"]) == 0
    everything = quantize_linear_layers_(load_model(checkpoints["rnnsearch"], device="cpu").model, lambda name: True)
    ckpt = torch.load(exported, weights_only=True)
    ckpt["state_dict"] = {f"model.{k}": v for k, v in everything.state_dict().items()}
    older = tmp_path / "older.ckpt"
    torch.save(ckpt, older)
    for path, encoder_cell in ((exported, PaperGRUCell), (older, Int8PaperGRUCell)):
        model = load_model(path, device="cpu", dtype="int8").model
        assert all(type(c) is encoder_cell for c in model.encoder.cells)
        translator = Translator.load(path, device="cpu", dtype="int8")
        assert len(list(translator.translate(LINES, SearchConfig(beam_size=2)))) == len(LINES)


def test_an_int8_stack_keeps_each_rows_scale_and_quantizes_its_float_members():
    torch.manual_seed(0)
    first, second, bare = nn.Linear(16, 8), nn.Linear(16, 4, bias=False), torch.randn(5, 16)
    int8 = Int8Linear.from_float(first)
    stack = stacked_linear(int8, second, bare)
    assert isinstance(stack, Int8Linear) and stack.out_features == 17
    x = torch.randn(3, 16)
    y = stack(x)
    assert torch.equal(y[:, :8], int8(x))  # the same int8 weights, scales and bias
    torch.testing.assert_close(y[:, 8:12], Int8Linear.from_float(second)(x))
    torch.testing.assert_close(y[:, 12:], x @ bare.T, rtol=0.05, atol=0.05)
