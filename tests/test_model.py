"""The networks against trusted references: the paper's equations written out, nn.GRUCell, step-by-step
decoding, and batch/padding invariance."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nmt.model import NetworkConfig, build_model
from nmt.model.gru import CuDNNGRUCell, PaperGRUCell, run_recurrence

ARCHS = ["rnnencdec", "rnnsearch"]
CELLS = ["paper", "cudnn"]


def tiny_config(architecture: str, cell: str, **overrides) -> NetworkConfig:
    base = dict(
        architecture=architecture,
        cell=cell,
        emb_dim=12,
        encoder_dim=10,
        decoder_dim=14,
        attention_dim=9,
        maxout_units=7,
        maxout_pool=2,
        init="paper",
        init_std=0.3,
        attention_init_std=0.3,
    )
    base.update(overrides)
    return NetworkConfig(**base)


def test_paper_cell_matches_equations_5_to_8():
    torch.manual_seed(0)
    B, n_in, H = 4, 6, 5
    cell = PaperGRUCell(H)
    W_r, W_z, W = (torch.randn(H, n_in) for _ in range(3))
    b_r, b_z, b = (torch.randn(H) for _ in range(3))
    x, h = torch.randn(B, n_in), torch.randn(B, H)
    U_r, U_z = cell.U_rz.detach()[:H], cell.U_rz.detach()[H:]
    U = cell.U.detach()
    # Eqs. 5–8 written out, one unit vector at a time as in the paper
    r = torch.sigmoid(x @ W_r.T + b_r + h @ U_r.T)
    z = torch.sigmoid(x @ W_z.T + b_z + h @ U_z.T)
    h_tilde = torch.tanh(x @ W.T + b + (r * h) @ U.T)
    expected = z * h + (1 - z) * h_tilde
    x_proj = torch.cat([x @ W_r.T + b_r, x @ W_z.T + b_z, x @ W.T + b], dim=-1)
    torch.testing.assert_close(cell(x_proj, h), expected)
    # and it is not nn.GRU's formulation: reset after U differs
    cudnn_like = z * h + (1 - z) * torch.tanh(x @ W.T + b + r * (h @ U.T))
    assert not torch.allclose(cell(x_proj, h), cudnn_like, atol=1e-4)


def test_cudnn_cell_matches_nn_grucell():
    torch.manual_seed(1)
    B, n_in, H = 3, 7, 6
    reference = nn.GRUCell(n_in, H)
    cell = CuDNNGRUCell(H)
    with torch.no_grad():
        cell.weight_hh.copy_(reference.weight_hh)
        cell.bias_hh.copy_(reference.bias_hh)
    x, h = torch.randn(B, n_in), torch.randn(B, H)
    x_proj = x @ reference.weight_ih.T + reference.bias_ih
    torch.testing.assert_close(cell(x_proj, h), reference(x, h))


def test_run_recurrence_carries_state_over_padding():
    torch.manual_seed(2)
    cell = PaperGRUCell(4)
    x = torch.randn(2, 5, 12)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    h0 = torch.zeros(2, 4)
    out = run_recurrence(cell, x, h0, mask)
    alone = run_recurrence(cell, x[:1, :3], h0[:1])
    torch.testing.assert_close(out[:1, :3], alone)
    torch.testing.assert_close(out[0, 4], alone[0, 2])  # the last real state is carried to the end
    back = run_recurrence(cell, x, h0, mask, reverse=True)
    back_alone = run_recurrence(cell, x[:1, :3], h0[:1], reverse=True)
    torch.testing.assert_close(back[:1, :3], back_alone)


@pytest.mark.parametrize("cell", CELLS)
def test_fused_cho_decoder_equals_step_by_step(cell):
    torch.manual_seed(3)
    model = build_model(tiny_config("rnnencdec", cell), src_vocab_size=20, tgt_vocab_size=15).eval()
    src = torch.randint(4, 20, (3, 6))
    lengths = torch.full((3,), 6)
    tgt_in = torch.randint(4, 15, (3, 5))
    enc = model.encode(src, lengths)
    fused = torch.log_softmax(model.logits(model.teacher_forced(enc, tgt_in).features), dim=-1)
    state = model.initial_state(enc)
    for t in range(tgt_in.shape[1]):
        out = model.step(tgt_in[:, t], state, enc)
        torch.testing.assert_close(out.log_probs, fused[:, t], atol=1e-5, rtol=1e-5)
        state = out.state


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("cell", CELLS)
def test_teacher_forcing_equals_stepwise_and_padding_is_invisible(arch, cell):
    torch.manual_seed(4)
    model = build_model(tiny_config(arch, cell), src_vocab_size=25, tgt_vocab_size=18).eval()
    short_src, long_src = torch.randint(4, 25, (1, 4)), torch.randint(4, 25, (1, 9))
    short_tgt, long_tgt = torch.randint(4, 18, (1, 3)), torch.randint(4, 18, (1, 7))
    src = torch.zeros(2, 9, dtype=torch.long)  # PAD = 0
    src[0, :4], src[1] = short_src[0], long_src[0]
    tgt = torch.zeros(2, 7, dtype=torch.long)
    tgt[0, :3], tgt[1] = short_tgt[0], long_tgt[0]
    batched = model(src, torch.tensor([4, 9]), tgt)
    alone = model(short_src, torch.tensor([4]), short_tgt)
    torch.testing.assert_close(batched[0, :3], alone[0], atol=1e-5, rtol=1e-5)
    # step-by-step decoding gives the teacher-forced distributions
    enc = model.encode(src, torch.tensor([4, 9]))
    state = model.initial_state(enc)
    for t in range(7):
        out = model.step(tgt[:, t], state, enc)
        torch.testing.assert_close(out.log_probs, torch.log_softmax(batched[:, t], -1), atol=1e-5, rtol=1e-5)
        state = out.state
        if out.alpha is not None:
            assert torch.all(out.alpha[0, 4:] == 0)  # no attention on padding
            torch.testing.assert_close(out.alpha.sum(-1), torch.ones(2))


def test_rnnsearch_initial_state_is_backward_first_annotation():
    torch.manual_seed(5)
    cfg = tiny_config("rnnsearch", "paper")
    model = build_model(cfg, src_vocab_size=12, tgt_vocab_size=12).eval()
    src = torch.randint(4, 12, (2, 5))
    enc = model.encode(src, torch.tensor([5, 5]))
    (s0,) = model.initial_state(enc)
    torch.testing.assert_close(s0, torch.tanh(enc.h[:, 0, cfg.encoder_dim :] @ model.W_s.weight.T))
    # s_0 depends on the whole sentence through the backward GRU
    src2 = src.clone()
    src2[:, -1] = (src2[:, -1] - 3) % 8 + 4
    assert not torch.allclose(model.initial_state(model.encode(src2, torch.tensor([5, 5])))[0], s0)


def test_factorized_embeddings_and_output_have_the_rank():
    cfg = tiny_config("rnnencdec", "paper", emb_rank=3, output_rank=4)
    model = build_model(cfg, src_vocab_size=30, tgt_vocab_size=40)
    assert model.src_embed.lookup.weight.shape == (30, 3)
    assert model.src_embed.expand.weight.shape == (12, 3)
    assert torch.linalg.matrix_rank(model.output.W_o[1].weight @ model.output.W_o[0].weight) <= 4


def test_paper_initialisation():
    cfg = tiny_config("rnnsearch", "paper", init_std=0.01, attention_init_std=0.001, decoder_dim=32, encoder_dim=16)
    model = build_model(cfg, src_vocab_size=50, tgt_vocab_size=50)
    U = model.cell.U.detach()
    torch.testing.assert_close(U @ U.T, torch.eye(32), atol=1e-5, rtol=0)
    assert torch.all(model.attention.v_a == 0)
    assert 0.0005 < model.attention.U_a.weight.std() < 0.002
    assert 0.005 < model.W_dec.weight.std() < 0.02
    assert torch.all(model.W_dec.bias == 0)
    assert torch.all(model.tgt_embed.lookup.weight[0] == 0)  # the padding row
