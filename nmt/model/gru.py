"""The gated recurrent unit of Cho et al. (2014), §2.3, and the cuDNN formulation of it.

Both cells take the *input-side* pre-activations ``x_proj = W x + b`` (3H wide, gate order r, z, n) from
the caller, so a layer can compute them for all time steps in one matrix product before its time loop;
only the products with the previous state remain inside the loop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def tanh(x: Tensor) -> Tensor:
    """tanh(x), computed in float32 on a CPU as 2σ(2x) − 1: the same function, but torch's CPU sigmoid is
    vectorised far better than its tanh (docs/benchmarks.md, σ for tanh). In bfloat16 or float16, σ near 1/2 keeps
    too few bits of tanh near 0, and a GPU's tanh is as fast as its sigmoid: torch.tanh there."""
    if x.dtype != torch.float32 or x.device.type != "cpu":
        return torch.tanh(x)
    if x.requires_grad and torch.is_grad_enabled():
        return torch.sigmoid(x * 2) * 2 - 1  # out of place: σ's output is kept for the backward pass
    return (x * 2).sigmoid_().mul_(2).sub_(1)


class GateNorms(NamedTuple):
    """The gains and biases of Ba et al. 2016's layer normalisation in a GRU (`GRULayerNorm`), (…, 3, H) each, gate
    order r, z, n: the input-side pre-activations W x + b and the recurrent ones [U_r h; U_z h; U (r ⊙ h)] are
    each normalised over their H units, gate by gate, then given their own gain and bias (§3.1, as their LSTM
    normalises W_h h and W_x x apart)."""

    input_gain: Tensor
    input_bias: Tensor
    state_gain: Tensor
    state_bias: Tensor

    def inputs(self, x_proj: Tensor) -> Tensor:
        """LN(W x + b) of the three gates, x_proj (…, 3H)."""
        return _normalise_gates(x_proj, self.input_gain, self.input_bias)

    def state_rz(self, rz_proj: Tensor) -> Tensor:
        """LN of [U_r h; U_z h] (…, 2H)."""
        return _normalise_gates(rz_proj, self.state_gain[..., :2, :], self.state_bias[..., :2, :])

    def state_n(self, n_proj: Tensor) -> Tensor:
        """LN of U (r ⊙ h) (…, H)."""
        return _normalise_gates(n_proj, self.state_gain[..., 2:, :], self.state_bias[..., 2:, :])


def _normalise_gates(x: Tensor, gain: Tensor, bias: Tensor) -> Tensor:
    """Ba et al. 2016, Eq. 4 on each gate's H units of x (…, k·H): g ⊙ (a − μ) / σ + b, gain and bias (…, k, H)."""
    k, H = gain.shape[-2:]
    return torch.addcmul(bias, F.layer_norm(x.unflatten(-1, (k, H)), (H,)), gain).flatten(-2)


class GRULayerNorm(nn.Module):
    """The learned gains (1 at first) and biases (0) of a layer-normalised GRU (Ba et al. 2016; `GateNorms`)."""

    def __init__(self, hidden_dim: int) -> None:
        super().__init__()
        self.input_gain = nn.Parameter(torch.ones(3, hidden_dim))
        self.input_bias = nn.Parameter(torch.zeros(3, hidden_dim))
        self.state_gain = nn.Parameter(torch.ones(3, hidden_dim))
        self.state_bias = nn.Parameter(torch.zeros(3, hidden_dim))

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Gains 1, biases 0 (Ba et al. 2016), in either initialisation."""
        for gain in (self.input_gain, self.state_gain):
            nn.init.ones_(gain)
        for bias in (self.input_bias, self.state_bias):
            nn.init.zeros_(bias)

    def gates(self) -> GateNorms:
        return GateNorms(self.input_gain, self.input_bias, self.state_gain, self.state_bias)


class PaperGRUCell(nn.Module):
    """Cho et al. 2014, Eqs. 5–8 (and Bahdanau et al. 2015, A.2.2):

        r = σ(W_r x + U_r h_{t-1})                    (Eq. 5)
        z = σ(W_z x + U_z h_{t-1})                    (Eq. 6)
        h̃ = tanh(W x + U (r ⊙ h_{t-1}))               (Eq. 8)
        h_t = z ⊙ h_{t-1} + (1 − z) ⊙ h̃               (Eq. 7)

    The reset gate multiplies h_{t-1} *before* U, so U (r ⊙ h) needs r first: two recurrent products per
    step. ``U_rz`` stacks [U_r; U_z]. The recurrent products carry no bias (the input side has it).

    layer_norm: each of W x + b, U_r h, U_z h and U (r ⊙ h) layer-normalised per gate (Ba et al. 2016; not in the
    papers), ``norm`` holding the gains and biases.
    """

    def __init__(self, hidden_dim: int, *, layer_norm: bool = False) -> None:
        super().__init__()
        self.hidden_dim = hidden_dim
        self.U_rz = nn.Parameter(torch.empty(2 * hidden_dim, hidden_dim))
        self.U = nn.Parameter(torch.empty(hidden_dim, hidden_dim))
        self.norm = GRULayerNorm(hidden_dim) if layer_norm else None
        self.reset_parameters()

    def reset_parameters(self, std: float | None = None) -> None:
        """Recurrent matrices orthogonal per gate block (Cho §4.1.1), in either initialisation. ``std`` (of the
        paper initialisation's Gaussian weights) does not apply: the cell holds no input-side weights."""
        del std
        orthogonal_blocks_(self.U_rz)
        orthogonal_blocks_(self.U)
        if self.norm is not None:
            self.norm.reset_parameters()

    @property
    def state_weight(self) -> Tensor:
        """The matrix applied to h_{t-1} itself, [U_r; U_z]: a caller may fuse it with its own products of
        h_{t-1} in one matmul and pass the result as ``h_proj``."""
        return self.U_rz

    def forward(self, x_proj: Tensor, h: Tensor, h_proj: Tensor | None = None) -> Tensor:
        """x_proj (B, 3H) = W x + b; h (B, H) = h_{t-1}; h_proj (B, 2H) = [U_r; U_z] h_{t-1} if the caller
        already computed it. Returns h_t (B, H)."""
        if h_proj is None:
            h_proj = F.linear(h, self.U_rz)
        norms = None if self.norm is None else self.norm.gates()
        return paper_step(x_proj, h, h_proj, lambda v: F.linear(v, self.U), norms)


class PaperGRUCellPair:
    """Two paper cells stepped together (the directions of a bidirectional encoder): states (2, B, H), inputs
    (2, B, 3H), and each recurrent product one batched matmul for both, so a time step costs the operations of one
    cell instead of two. The same equations as each cell alone (`paper_step`)."""

    def __init__(self, first: PaperGRUCell, second: PaperGRUCell) -> None:
        self.hidden_dim = first.hidden_dim
        self.U_rz = torch.stack([first.U_rz, second.U_rz]).transpose(1, 2)  # (2, H, 2H): h @ U_rzᵀ for each
        self.U = torch.stack([first.U, second.U]).transpose(1, 2)  # (2, H, H)
        self.norms = None  # or each gain and bias (2, 1, 3, H), broadcast over the batch
        if first.norm is not None and second.norm is not None:
            both = zip(first.norm.gates(), second.norm.gates(), strict=True)
            self.norms = GateNorms(*(torch.stack([a, b]).unsqueeze(1) for a, b in both))

    def __call__(self, x_proj: Tensor, h: Tensor, h_proj: Tensor | None = None) -> Tensor:
        """x_proj (2, B, 3H), h (2, B, H), h_proj (2, B, 2H) or None: `PaperGRUCell.forward` of each direction."""
        if h_proj is None:
            h_proj = torch.bmm(h, self.U_rz)
        return paper_step(x_proj, h, h_proj, lambda v: torch.bmm(v, self.U), self.norms)


def paper_step(
    x_proj: Tensor, h: Tensor, rz_proj: Tensor, U: Callable[[Tensor], Tensor], norms: GateNorms | None = None
) -> Tensor:
    """One step of the paper cell (Cho et al. 2014, Eqs. 5–8), whatever computes its recurrent products (a float
    matrix, an int8 one, both directions of an encoder at once). x_proj (…, 3H) = W x + b; h (…, H) = h_{t-1};
    rz_proj (…, 2H) = [U_r; U_z] h_{t-1}; U: v ↦ U v; norms: layer normalisation of each product (Ba et al. 2016),
    applied here to the products however they were computed (a caller's stacked matmul included). Returns h_t."""
    H = h.shape[-1]
    if norms is not None:
        x_proj, rz_proj = norms.inputs(x_proj), norms.state_rz(rz_proj)
    x_rz, x_n = x_proj.split((2 * H, H), dim=-1)
    r, z = torch.sigmoid(x_rz + rz_proj).chunk(2, dim=-1)  # Eqs. 5–6
    n_proj = U(r * h)
    h_tilde = tanh(x_n + (n_proj if norms is None else norms.state_n(n_proj)))  # Eq. 8
    # Eq. 7: z ⊙ h + (1 − z) ⊙ h̃. Under autocast h̃ and z come out of bf16/fp16 matmuls; the state keeps
    # the dtype it started in (float32 for the encoders), which lerp needs of all three.
    return torch.lerp(h_tilde.to(h.dtype), h, z.to(h.dtype))


class CuDNNGRUCell(nn.Module):
    """The formulation of ``nn.GRU``/cuDNN: the reset gate is applied *after* the recurrent product,

        n = tanh(W_n x + b_in + r ⊙ (U_n h + b_hn)),   h_t = (1 − z) ⊙ n + z ⊙ h_{t-1},

    which is a different function from Eq. 8 but lets one product [U_r; U_z; U_n] h serve all gates.
    Parameter names follow ``nn.GRUCell`` so its weights can be compared or loaded directly.
    """

    def __init__(self, hidden_dim: int) -> None:
        super().__init__()
        self.hidden_dim = hidden_dim
        self.weight_hh = nn.Parameter(torch.empty(3 * hidden_dim, hidden_dim))
        self.bias_hh = nn.Parameter(torch.zeros(3 * hidden_dim))
        self.reset_parameters()

    def reset_parameters(self, std: float | None = None) -> None:
        """[U_r; U_z; U_n] orthogonal per gate block, the recurrent bias 0, in either initialisation (``std``, as
        for ``PaperGRUCell``, does not apply)."""
        del std
        orthogonal_blocks_(self.weight_hh)
        nn.init.zeros_(self.bias_hh)

    @property
    def state_weight(self) -> Tensor:
        """The matrix applied to h_{t-1}, [U_r; U_z; U_n] (see ``PaperGRUCell.state_weight``)."""
        return self.weight_hh

    def forward(self, x_proj: Tensor, h: Tensor, h_proj: Tensor | None = None) -> Tensor:
        """x_proj (B, 3H) = W x + b_i; h (B, H); h_proj (B, 3H) = [U_r; U_z; U_n] h if already computed (without
        the bias). Returns h_t (B, H)."""
        gh = F.linear(h, self.weight_hh, self.bias_hh) if h_proj is None else h_proj + self.bias_hh
        return cudnn_step(x_proj, h, gh)


def cudnn_step(x_proj: Tensor, h: Tensor, gh: Tensor) -> Tensor:
    """One step of the cuDNN formulation. x_proj (B, 3H) = W x + b_i; h (B, H); gh (B, 3H) = U h + b_h."""
    H = h.shape[-1]
    x_rz, x_n = x_proj.split((2 * H, H), dim=-1)
    h_rz, h_n = gh.split((2 * H, H), dim=-1)
    r, z = torch.sigmoid(x_rz + h_rz).chunk(2, dim=-1)
    n = tanh(x_n + r * h_n)
    return torch.lerp(n.to(h.dtype), h, z.to(h.dtype))  # (1 − z) ⊙ n + z ⊙ h; dtypes as in PaperGRUCell


def make_cell(cell: str, hidden_dim: int, *, layer_norm: bool = False) -> PaperGRUCell | CuDNNGRUCell:
    if cell == "paper":
        return PaperGRUCell(hidden_dim, layer_norm=layer_norm)
    if cell == "cudnn":
        return CuDNNGRUCell(hidden_dim)
    raise ValueError(f"unknown GRU cell {cell!r}: expected 'paper' or 'cudnn'")


@torch.no_grad()
def orthogonal_blocks_(weight: Tensor) -> Tensor:
    """Orthogonal init of every (H, H) block of a stacked recurrent matrix (Cho §4.1.1: left singular
    vectors of a Gaussian matrix; Bahdanau B.1)."""
    H = weight.shape[1]
    for block in weight.split(H, dim=0):
        nn.init.orthogonal_(block)
    return weight


@torch.no_grad()
def reset_gru_(rnn: nn.GRU, std: float | None = None) -> None:
    """The papers' initialisation of an ``nn.GRU``: its recurrent matrices orthogonal per gate block, its input
    matrices from N(0, std²), its biases 0. std None: PyTorch's default."""
    if std is None:
        rnn.reset_parameters()
        return
    for w_ih, w_hh, *biases in rnn.all_weights:  # one list per layer and direction
        nn.init.normal_(w_ih, 0.0, std)
        orthogonal_blocks_(w_hh)
        for bias in biases:
            nn.init.zeros_(bias)


def run_recurrence(
    cell: PaperGRUCell | CuDNNGRUCell,
    x_proj: Tensor,
    h0: Tensor,
    mask: Tensor | None = None,
    reverse: bool = False,
) -> Tensor:
    """Run a cell over time with the input-side products already done.

    x_proj: (B, T, 3H); h0: (B, H); mask: (B, T) bool, False at padding, where the state is carried over
    unchanged (so a right-padded batch runs backwards correctly: the state stays h0 until the last real
    token). Returns the states (B, T, H); the output at a padded step is the carried state. A `PaperGRUCellPair`
    takes x_proj (2, T, B, 3H), h0 (2, B, H) and mask (2, T, B), and returns (2, T, B, H).
    """
    # unbind, not x_proj[:, t]: the backward of one unbind stacks T gradients once, whereas each indexing
    # op's backward would scatter into its own zero-filled (B, T, 3H) tensor — O(T²) memory traffic.
    inputs = x_proj.unbind(1)
    masks = mask.unsqueeze(-1).unbind(1) if mask is not None else None
    T = len(inputs)
    h = h0
    outputs: list[Tensor] = [h0] * T
    steps = range(T - 1, -1, -1) if reverse else range(T)
    for t in steps:
        h_new = cell(inputs[t], h)
        h = h_new if masks is None else torch.where(masks[t], h_new, h)
        outputs[t] = h
    return torch.stack(outputs, dim=1)
