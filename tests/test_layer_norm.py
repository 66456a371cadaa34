"""``model.network.layer_norm`` (Ba et al. 2016): layer normalisation inside the paper GRU, against its equations."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nmt import Translator
from nmt.checkpoint import export_checkpoint
from nmt.model import NetworkConfig, build_model
from nmt.model.gru import PaperGRUCell
from nmt.model.int8 import Int8PaperGRUCell
from tests.factories import tiny_checkpoint
from tests.test_model import randomise_
from tests.test_old_checkpoints import OLD_CHECKPOINT

SOURCES = ["A man sleeping in a green room on a couch.", "Two dogs play in the snow."]


def ln(a: torch.Tensor, gain: torch.Tensor, bias: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Ba et al. 2016, Eqs. 3–4 (§3.1): μ = (1/H) Σ_i a_i, σ = √((1/H) Σ_i (a_i − μ)² + ε), g / σ ⊙ (a − μ) + b."""
    mu = a.mean(-1, keepdim=True)
    sigma = ((a - mu).pow(2).mean(-1, keepdim=True) + eps).sqrt()
    return gain / sigma * (a - mu) + bias


def test_layer_normalised_paper_cell_matches_ba_et_al_equations():
    """Cho et al. 2014 Eqs. 5–8 with each product normalised on its own (Ba et al. 2016, §3.1):

    r = σ(LN(W_r x) + LN(U_r h)),  z = σ(LN(W_z x) + LN(U_z h)),  h̃ = tanh(LN(W x) + LN(U (r ⊙ h))),
    h_t = z ⊙ h + (1 − z) ⊙ h̃, each LN with its own gain and bias."""
    torch.manual_seed(0)
    B, H = 4, 5
    cell = PaperGRUCell(H, layer_norm=True)
    randomise_(cell)
    x_proj, h = torch.randn(B, 3 * H), torch.randn(B, H)
    norm = cell.norm
    x_r, x_z, x_n = (ln(x_proj[:, g * H : (g + 1) * H], norm.input_gain[g], norm.input_bias[g]) for g in range(3))
    U_r, U_z = cell.U_rz[:H], cell.U_rz[H:]
    r = torch.sigmoid(x_r + ln(h @ U_r.T, norm.state_gain[0], norm.state_bias[0]))
    z = torch.sigmoid(x_z + ln(h @ U_z.T, norm.state_gain[1], norm.state_bias[1]))
    h_tilde = torch.tanh(x_n + ln((r * h) @ cell.U.T, norm.state_gain[2], norm.state_bias[2]))
    expected = z * h + (1 - z) * h_tilde
    torch.testing.assert_close(cell(x_proj, h), expected)
    torch.testing.assert_close(cell(x_proj, h, h @ cell.U_rz.T), expected)  # the caller's own [U_r; U_z] h
    int8 = Int8PaperGRUCell.from_float(cell)
    torch.testing.assert_close(int8(x_proj, h), expected, atol=0.05, rtol=0)
    torch.testing.assert_close(int8.to_float()(x_proj, h), expected, atol=0.05, rtol=0)


@pytest.mark.parametrize("layer_norm", ["encoder", "all"])
def test_layer_norm_gains_and_biases_are_trained_where_the_option_puts_them(layer_norm):
    torch.manual_seed(0)
    config = NetworkConfig(emb_dim=6, encoder_dim=5, decoder_dim=7, attention_dim=4, maxout_units=3, init_std=0.3)
    model = build_model(NetworkConfig(**vars(config) | {"layer_norm": layer_norm}), src_vocab_size=9, tgt_vocab_size=8)
    plain = build_model(config, src_vocab_size=9, tgt_vocab_size=8)
    norms = {name for name, _ in model.named_parameters()} - {name for name, _ in plain.named_parameters()}
    in_decoder = {"cell.norm.input_gain", "cell.norm.input_bias", "cell.norm.state_gain", "cell.norm.state_bias"}
    assert (norms >= in_decoder) == (layer_norm == "all")
    assert {n.split(".norm.")[0] for n in norms} == {"encoder.cells.0", "encoder.cells.1"} | (
        {"cell"} if layer_norm == "all" else set()
    )
    assert all(torch.all(p == (1 if "gain" in n else 0)) for n, p in model.named_parameters() if n in norms)
    model(torch.randint(4, 9, (2, 5)), torch.tensor([5, 3]), torch.randint(4, 8, (2, 4))).logsumexp(-1).sum().backward()
    for name, p in model.named_parameters():
        if name in norms:
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_layer_norm_needs_the_paper_cell_in_one_line():
    with pytest.raises(ValueError, match=r"layer_norm: 'encoder' needs cell 'paper'") as error:
        build_model(NetworkConfig(cell="cudnn", layer_norm="encoder"), src_vocab_size=9, tgt_vocab_size=9)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("architecture", ["rnnencdec", "rnnsearch"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "int8"])
def test_a_layer_normalised_checkpoint_translates_and_scores_in_each_dtype(tmp_path: Path, architecture, dtype):
    path = tiny_checkpoint(tmp_path, architecture=architecture, layer_norm="all", edit=lambda m: randomise_(m, 0.2))
    assert torch.load(path, weights_only=True)["nmt"]["network"]["layer_norm"] == "all"  # the metadata has it
    translator = Translator.load(path, device="cpu")
    texts = [t.text for t in translator.translate(SOURCES)]
    logprob = torch.as_tensor(translator.score(SOURCES, texts).logprob)
    export_checkpoint(path, tmp_path / "exported.ckpt", dtype=dtype)
    for loaded in (Translator.load(path, device="cpu", dtype=dtype), Translator.load(tmp_path / "exported.ckpt")):
        scores = torch.as_tensor(loaded.score(SOURCES, texts).logprob)
        if dtype == "float32":
            assert [t.text for t in loaded.translate(SOURCES)] == texts
            assert torch.equal(scores, logprob)
        else:  # the same function in fewer bits: each sentence's log-probability within 0.5 %
            torch.testing.assert_close(scores, logprob, atol=0, rtol=0.005)


def test_an_old_checkpoint_loads_without_layer_norm():
    translator = Translator.load(OLD_CHECKPOINT, device="cpu")
    assert all(cell.norm is None for cell in [*translator.model.encoder.cells, translator.model.cell])
