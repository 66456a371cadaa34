"""The networks against trusted references: the paper's equations written out, nn.GRUCell, step-by-step
decoding, and batch/padding invariance."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nmt.model import NetworkConfig, build_model
from nmt.model.attention import AdditiveAttention, Keys
from nmt.model.gru import CuDNNGRUCell, PaperGRUCell, run_recurrence, tanh
from nmt.model.layers import stacked_linear
from tests.factories import tiny_network

ARCHS = ["rnnencdec", "rnnsearch"]
CELLS = ["paper", "cudnn"]


def tiny_config(architecture: str, cell: str, **overrides) -> NetworkConfig:
    """`tiny_network` with sizes that all differ, so that a mixed-up dimension is a shape error."""
    sizes = dict(emb_dim=12, encoder_dim=10, decoder_dim=14, attention_dim=9, maxout_units=7, maxout_pool=2)
    return tiny_network(architecture, cell, **(sizes | dict(init_std=0.3, attention_init_std=0.3) | overrides))


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


def test_tanh_is_torchs_tanh_up_to_float32_rounding_and_exactly_torchs_in_bfloat16():
    """The cells' tanh: 2σ(2x) − 1 in float32 on a CPU (torch's sigmoid is the faster kernel there), with and without
    autograd; torch.tanh itself in bfloat16, where σ near 1/2 would lose tanh's bits near 0."""
    torch.manual_seed(0)
    x = torch.cat(
        [torch.randn(4000) * 3, torch.tensor([0.0, -0.0, 1e-8, -1e-8, 20.0, -20.0, 1e4, float("inf"), -float("inf")])]
    )
    kept = x.clone()
    torch.testing.assert_close(tanh(x), torch.tanh(x), rtol=0, atol=3e-7)
    assert torch.equal(x, kept)  # the input is left as it was
    assert tanh(torch.tensor([float("nan")])).isnan().all()
    leaf = x[:4000].clone().requires_grad_()
    y = tanh(leaf)
    y.backward(torch.ones_like(y))
    torch.testing.assert_close(y.detach(), torch.tanh(x[:4000]), rtol=0, atol=3e-7)
    torch.testing.assert_close(leaf.grad, 1 - torch.tanh(x[:4000]) ** 2, rtol=0, atol=1e-6)
    small = torch.linspace(-1e-3, 1e-3, 101).bfloat16()
    assert torch.equal(tanh(small), torch.tanh(small))


@torch.no_grad()
def test_attention_energies_through_sigmoid_give_the_softmax_of_the_tanh_energies():
    """α_ij = softmax_j(v_aᵀ tanh(W_a s + U_a h_j)): float32 computes 2 v_aᵀ σ(2z), the same up to a constant per row
    that the softmax drops. A bfloat16 model on the CPU does the same in float32 from its bfloat16 products, for
    inference; half-precision keys (a GPU's, or in training) keep tanh and give the reference's bits."""
    torch.manual_seed(1)
    B, k, S, D = 3, 4, 6, 10
    attention = AdditiveAttention(query_dim=D, key_dim=D, attention_dim=8)
    attention.v_a.normal_()
    h, s = torch.randn(B, S, D), torch.randn(B * k, D)
    mask = torch.ones(B, S, dtype=torch.bool)
    mask[1, 4:] = False

    def reference(attention, h, s):
        e = torch.tanh(attention.U_a(h).unsqueeze(1) + attention.W_a(s).view(B, k, 1, -1)) @ attention.v_a
        alpha = torch.softmax(e.masked_fill(~mask.unsqueeze(1), float("-inf")), dim=-1, dtype=torch.float32)
        return (alpha.to(h.dtype) @ h).view(B * k, -1), alpha.view(B * k, S)

    keys = attention.keys(h)
    assert keys.sigmoid and torch.equal(keys.tensor, attention.U_a(h) * 2)  # float32: 2 U_a h_j, for σ
    c, alpha = attention(attention.W_a(s), keys, h, mask)
    expected_c, expected_alpha = reference(attention, h, s)
    torch.testing.assert_close(alpha, expected_alpha, rtol=0, atol=1e-6)
    torch.testing.assert_close(c, expected_c, rtol=0, atol=1e-5)
    assert (alpha.view(B, k, S)[1, :, 4:] == 0).all()  # padding gets no weight
    # the batch-invariant form (scoring's) computes the same function: v_aᵀ as a row-wise sum
    c_rows, alpha_rows = attention(attention.W_a(s), keys, h, mask, batch_invariant=True)
    torch.testing.assert_close(alpha_rows, alpha, rtol=0, atol=1e-6)
    torch.testing.assert_close(c_rows, c, rtol=0, atol=1e-6)
    half = attention.bfloat16()
    h16, s16 = h.bfloat16(), s.bfloat16()
    query16, keys16 = half.W_a(s16), half.U_a(h16)
    assert half.keys(h16).tensor.dtype == torch.float32 and half.keys(h16).sigmoid  # on the CPU
    c16, alpha16 = half(query16, half.keys(h16), h16, mask)
    e = torch.tanh(keys16.float().unsqueeze(1) + query16.float().view(B, k, 1, -1)) @ half.v_a.float()
    expected_alpha16 = torch.softmax(e.masked_fill(~mask.unsqueeze(1), float("-inf")), dim=-1).view(B * k, S)
    torch.testing.assert_close(alpha16, expected_alpha16, rtol=0, atol=1e-6)
    assert c16.dtype == torch.bfloat16
    torch.testing.assert_close(c16, (expected_alpha16.bfloat16().view(B, k, S) @ h16).view(B * k, -1))
    c16, alpha16 = half(query16, Keys(keys16, sigmoid=False), h16, mask)  # tanh in bfloat16: the reference's bits
    expected_c16, expected_alpha16 = reference(half, h16, s16)
    assert torch.equal(alpha16, expected_alpha16) and torch.equal(c16, expected_c16)
    with torch.enable_grad():  # training keeps the half-precision keys (autograd stores the energies)
        training_keys = half.keys(h16)
        assert not training_keys.sigmoid and torch.equal(training_keys.tensor, keys16)
    with torch.no_grad():
        assert half.keys(h16).tensor.dtype == torch.float32


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


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("cell", CELLS)
def test_teacher_forcing_over_each_rows_own_positions_equals_the_full_pass(arch, cell):
    """With each row's length (longest first), only those positions are computed (each step over the rows still
    inside their target); they equal the full pass's, the rest are zeros, and gradients reach the same weights."""
    torch.manual_seed(4)
    model = build_model(tiny_config(arch, cell), src_vocab_size=20, tgt_vocab_size=15)
    model.eval()
    src = torch.randint(4, 20, (4, 6))
    enc = model.encode(src, torch.full((4,), 6))
    tgt_in = torch.randint(4, 15, (4, 5))
    lengths = torch.tensor([5, 3, 3, 1])
    full = model.teacher_forced(enc, tgt_in)
    own = model.teacher_forced(enc, tgt_in, lengths)
    inside = torch.arange(5) < lengths.unsqueeze(1)  # (B, T)
    torch.testing.assert_close(own.features[inside], full.features[inside], atol=1e-6, rtol=1e-6)
    assert (own.features[~inside] == 0).all()
    if arch == "rnnsearch":
        torch.testing.assert_close(own.alpha[inside], full.alpha[inside], atol=1e-6, rtol=1e-6)
    own.features[inside].sum().backward()
    assert all(p.grad is not None for name, p in model.named_parameters() if not name.startswith("output.W_o"))
    with pytest.raises(ValueError, match="non-increasing"):
        model.teacher_forced(enc, tgt_in, torch.tensor([3, 5, 3, 1]))


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


# Network options that change the decoder's step: Ba et al.'s layer normalisation, Press & Wolf's tied embeddings.
OPTIONS = [{}, {"layer_norm": "encoder"}, {"layer_norm": "all"}, {"tie_embeddings": True, "maxout_units": 12}]


# Each cell with each option it takes (layer normalisation is an option of the paper cell only).
CELL_OPTIONS = [(cell, opts) for cell in CELLS for opts in OPTIONS if cell == "paper" or "layer_norm" not in opts]
CELL_OPTION_IDS = [f"{cell}-" + ("-".join(map(str, opts.values())) or "plain") for cell, opts in CELL_OPTIONS]


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize(("cell", "options"), CELL_OPTIONS, ids=CELL_OPTION_IDS)
def test_teacher_forcing_equals_stepwise_and_padding_is_invisible(arch, cell, options):
    torch.manual_seed(4)
    model = build_model(tiny_config(arch, cell, **options), src_vocab_size=25, tgt_vocab_size=18).eval()
    if options:
        randomise_(model, 0.3)  # layer normalisation's gains and biases too, not 1 and 0
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


@pytest.mark.parametrize("arch", ARCHS)
@torch.no_grad()
def test_factorized_embeddings_and_output_have_the_rank(arch):
    """Cho et al. 2014 §4.1.1: the embeddings of all V words span only emb_rank of emb_dim dimensions, and the
    output layer's scores W_o t of any t only output_rank of V (without the factorisation, emb_dim and units)."""
    torch.manual_seed(0)
    model = build_model(tiny_config(arch, "paper", emb_rank=3, output_rank=4), src_vocab_size=30, tgt_vocab_size=40)
    full = build_model(tiny_config(arch, "paper"), src_vocab_size=30, tgt_vocab_size=40)
    for vocab_size, embed in [(30, model.src_embed), (40, model.tgt_embed)]:
        vectors = embed(torch.arange(vocab_size))
        assert vectors.shape == (vocab_size, 12) and torch.linalg.matrix_rank(vectors) == 3
    t = torch.randn(50, 7)  # maxout outputs (units 7)
    bias = model.output.logits(torch.zeros(1, 7))
    assert model.output.logits(t).shape == (50, 40)
    assert torch.linalg.matrix_rank(model.output.logits(t) - bias) == 4
    assert torch.linalg.matrix_rank(full.output.logits(t) - full.output.logits(torch.zeros(1, 7))) == 7
    assert torch.linalg.matrix_rank(full.src_embed(torch.arange(30))) == 12


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


# -- the papers' initialisation, parameter by parameter ------------------------------------------------------


def initialisation_by_name(name: str) -> str:
    """The initialisation each parameter had when ``init_weights`` matched parameter names (before it walked
    modules): the reference the module-by-module initialisation must reproduce."""
    leaf = name.rsplit(".", 1)[-1]
    if "bias" in leaf or leaf == "v_a":
        return "zero"
    if leaf in ("U_rz", "U") or leaf.startswith("weight_hh"):
        return "orthogonal"
    if name.endswith(("W_a.weight", "U_a.weight")):
        return "attention"
    return "normal"


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("ranks", [{}, {"emb_rank": 8, "output_rank": 6}])
def test_paper_initialisation_gives_each_parameter_its_distribution(arch, cell, ranks):
    torch.manual_seed(6)
    std, attention_std = 0.01, 0.001
    overrides = dict(emb_dim=16, encoder_dim=12, decoder_dim=16, attention_dim=10, maxout_units=8, **ranks)
    cfg = tiny_config(arch, cell, init_std=std, attention_init_std=attention_std, **overrides)
    model = build_model(cfg, src_vocab_size=40, tgt_vocab_size=30)
    seen = set()
    for name, p in model.named_parameters():
        kind = initialisation_by_name(name)
        seen.add(kind)
        p = p.detach()
        if kind == "zero":
            assert torch.all(p == 0), name
        elif kind == "orthogonal":
            H = p.shape[1]
            for block in p.split(H):  # every gate's (H, H) block
                torch.testing.assert_close(block @ block.T, torch.eye(H), atol=1e-5, rtol=0, msg=name)
        else:
            if name.endswith("lookup.weight"):  # an embedding: its padding row is 0, the others are drawn
                assert torch.all(p[0] == 0), name
                p = p[1:]
            target = attention_std if kind == "attention" else std
            assert 0.8 * target < p.std() < 1.25 * target, f"{name}: std {p.std():.3g}, expected {target}"
            assert abs(p.mean()) < 4 * target / p.numel() ** 0.5, f"{name}: mean {p.mean():.3g}"
    assert seen >= {"zero", "orthogonal", "normal"} | ({"attention"} if arch == "rnnsearch" else set())


# -- one decoding step against the papers' equations ------------------------------------------------------


def randomise_(model: nn.Module, std: float = 0.5) -> None:
    """Every parameter from N(0, std²), v_a and the biases included: nothing vanishes from the equations."""
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, std)


def maxout(t_tilde: torch.Tensor, pool: int) -> torch.Tensor:
    """t_j = max over the j-th group of `pool` consecutive units of t̃ (Cho A.2.2, Bahdanau A.2.2)."""
    B, width = t_tilde.shape
    return torch.stack([t_tilde[:, j : j + pool].max(dim=-1).values for j in range(0, width, pool)], dim=-1)


def paper_gru(cell: PaperGRUCell, x_r, x_z, x_n, h):
    """Eqs. 5–8 with the input-side terms x_r, x_z, x_n already summed."""
    H = cell.hidden_dim
    U_r, U_z, U = cell.U_rz[:H], cell.U_rz[H:], cell.U
    r = torch.sigmoid(x_r + h @ U_r.T)
    z = torch.sigmoid(x_z + h @ U_z.T)
    h_tilde = torch.tanh(x_n + (r * h) @ U.T)
    return z * h + (1 - z) * h_tilde


@torch.no_grad()
def test_rnnsearch_step_matches_bahdanau_equations():
    """Bahdanau et al. 2015, A.1.2 and A.2.2, for one step i:

    e_ij = v_aᵀ tanh(W_a s_{i-1} + U_a h_j),  α_ij = softmax_j(e_ij),  c_i = Σ_j α_ij h_j
    s_i = GRU(s_{i-1}, e(y_{i-1}), c_i)  (c_i through C_r, C_z, C)
    t̃_i = U_o s_{i-1} + V_o e(y_{i-1}) + C_o c_i,  t_i = maxout(t̃_i),  p(y_i) = softmax(W_o t_i)
    """
    torch.manual_seed(7)
    cfg = tiny_config("rnnsearch", "paper")
    model = build_model(cfg, src_vocab_size=20, tgt_vocab_size=15).eval()
    randomise_(model)
    n, pool = cfg.decoder_dim, cfg.maxout_pool
    src = torch.tensor([[5, 6, 7, 8, 9], [10, 11, 12, 0, 0]])
    enc = model.encode(src, torch.tensor([5, 3]))
    y_prev = torch.tensor([4, 9])
    s_prev = torch.tanh(torch.randn(2, n))  # s_{i-1}: any state, not the initial one
    out = model.step(y_prev, (s_prev,), enc)

    h, mask = enc.h, src != 0  # the annotations h_j
    E = model.tgt_embed.lookup.weight[y_prev]  # e(y_{i-1})
    W_a, U_a, v_a = model.attention.W_a.weight, model.attention.U_a.weight, model.attention.v_a
    W_dec, b_dec, C = model.W_dec.weight, model.W_dec.bias, model.C.weight
    o = model.output

    def attend(query_state):
        e = torch.tanh((query_state @ W_a.T).unsqueeze(1) + h @ U_a.T) @ v_a  # e_ij (B, S)
        alpha = torch.softmax(e.masked_fill(~mask, float("-inf")), dim=-1)
        return (alpha.unsqueeze(-1) * h).sum(1), alpha  # c_i, α_i

    def log_probs(output_state, c):
        t_tilde = output_state @ o.O_h.weight.T + o.O_h.bias + E @ o.O_y.weight.T + c @ o.O_c.weight.T
        return torch.log_softmax(maxout(t_tilde, pool) @ o.W_o.weight.T + o.W_o.bias, dim=-1)

    c, alpha = attend(s_prev)  # the query is s_{i-1}
    x = E @ W_dec.T + b_dec + c @ C.T  # [W_r; W_z; W] e(y_{i-1}) + b + [C_r; C_z; C] c_i
    s_i = paper_gru(model.cell, x[:, :n], x[:, n : 2 * n], x[:, 2 * n :], s_prev)
    expected = log_probs(s_prev, c)  # the output reads s_{i-1}

    torch.testing.assert_close(out.state[0], s_i)
    torch.testing.assert_close(out.alpha, alpha)
    torch.testing.assert_close(out.log_probs, expected)
    # the test tells the order apart: s_i as the query, or as the output layer's state, gives other numbers
    c_from_s_i, _ = attend(s_i)
    assert not torch.allclose(log_probs(s_prev, c_from_s_i), expected, atol=1e-3)
    assert not torch.allclose(log_probs(s_i, c), expected, atol=1e-3)
    # the products [C; C_o] h_j a step weighs are prepared by encode, unless a teacher-forcing caller declines them
    lean = model.encode(src, torch.tensor([5, 3]), for_steps=False)
    assert lean.context is None
    torch.testing.assert_close(
        model.teacher_forced(lean, y_prev[:, None]).features, model.teacher_forced(enc, y_prev[:, None]).features
    )
    with pytest.raises(ValueError, match="for_steps=True"):
        model.step(y_prev, (s_prev,), lean)


@torch.no_grad()
def test_rnn_encoder_decoder_step_matches_cho_equations():
    """Cho et al. 2014, Appendix A, for one step t:

    c = tanh(V h_T),  h'_0 = tanh(V' c)
    r' = σ(W'_r e(y_{t-1}) + C_r c + U'_r h'_{t-1}),  z' likewise,
    h̃' = tanh(W' e(y_{t-1}) + C c + U' (r' ⊙ h'_{t-1})),  h'_t = z' ⊙ h'_{t-1} + (1 − z') ⊙ h̃'
    s' = O_h h'_t + O_y e(y_{t-1}) + O_c c,  maxout,  p(y_t) = softmax(W_o ·)
    """
    torch.manual_seed(8)
    cfg = tiny_config("rnnencdec", "paper")
    model = build_model(cfg, src_vocab_size=20, tgt_vocab_size=15).eval()
    randomise_(model)
    n, pool = cfg.decoder_dim, cfg.maxout_pool
    src, lengths = torch.tensor([[5, 6, 7, 8, 9], [10, 11, 12, 0, 0]]), torch.tensor([5, 3])
    enc = model.encode(src, lengths)
    _, h_T = model.encoder(model.src_embed(src), lengths, src != 0)
    c = torch.tanh(h_T @ model.V.weight.T)
    torch.testing.assert_close(enc.c, c)
    torch.testing.assert_close(model.initial_state(enc)[0], torch.tanh(c @ model.V_dec.weight.T))

    y_prev = torch.tensor([4, 9])
    h_prev = torch.tanh(torch.randn(2, n))  # h'_{t-1}: any state, not the initial one
    out = model.step(y_prev, (h_prev,), enc)

    E = model.tgt_embed.lookup.weight[y_prev]  # e(y_{t-1})
    x = E @ model.W_dec.weight.T + model.W_dec.bias + c @ model.C.weight.T
    h_t = paper_gru(model.cell, x[:, :n], x[:, n : 2 * n], x[:, 2 * n :], h_prev)
    o = model.output

    def log_probs(state):
        t_tilde = state @ o.O_h.weight.T + o.O_h.bias + E @ o.O_y.weight.T + c @ o.O_c.weight.T
        return torch.log_softmax(maxout(t_tilde, pool) @ o.W_o.weight.T + o.W_o.bias, dim=-1)

    expected = log_probs(h_t)  # g(h'_t, y_{t-1}, c): the output reads the new state
    torch.testing.assert_close(out.state[0], h_t)
    torch.testing.assert_close(out.log_probs, expected)
    assert out.alpha is None
    assert not torch.allclose(log_probs(h_prev), expected, atol=1e-3)  # the previous state gives other numbers


def test_a_stack_of_linear_maps_computes_each_of_them_and_passes_gradients_back():
    torch.manual_seed(0)
    with_bias, without_bias, bare = nn.Linear(6, 4), nn.Linear(6, 3, bias=False), torch.randn(2, 6)
    stack = stacked_linear(with_bias, without_bias, (bare, None))
    x = torch.randn(5, 6)
    expected = torch.cat([with_bias(x), without_bias(x), x @ bare.T], dim=-1)
    torch.testing.assert_close(stack(x), expected)
    assert stack.out_features == 9
    stack(x).sum().backward()  # a teacher-forced step trains through its stack
    assert with_bias.weight.grad is not None and without_bias.weight.grad is not None


@pytest.mark.parametrize("layer_norm", [False, True])
def test_both_directions_in_one_loop_equal_each_direction_alone_with_their_gradients(layer_norm):
    from nmt.model.encoder import GRUEncoder

    torch.manual_seed(0)
    encoder = GRUEncoder(emb_dim=6, hidden_dim=5, bidirectional=True, cell="paper", layer_norm=layer_norm)
    if layer_norm:
        randomise_(encoder)
    x = torch.randn(3, 7, 6)
    lengths = torch.tensor([7, 4, 2])
    mask = torch.arange(7) < lengths.unsqueeze(1)
    h, last = encoder(x, lengths, mask)
    h.sum().backward()
    paired = [p.grad.clone() for p in encoder.parameters()]
    encoder.zero_grad()
    x_proj, h0 = encoder.W(x), torch.zeros(3, 5)
    forward = run_recurrence(encoder.cells[0], x_proj[..., :15], h0, mask)
    backward = run_recurrence(encoder.cells[1], x_proj[..., 15:], h0, mask, reverse=True)
    alone = torch.cat([forward, backward], dim=-1)
    torch.testing.assert_close(h, alone)
    torch.testing.assert_close(last, forward[:, -1])
    alone.sum().backward()
    for a, b in zip(paired, [p.grad for p in encoder.parameters()], strict=True):
        torch.testing.assert_close(a, b)
