"""The alignment model of Bahdanau et al. 2015 (§3.1, Appendix A.1.2)."""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from nmt.model.layers import reset_linear_

_ROW_WISE_ENERGIES = contextvars.ContextVar("row_wise_energies", default=False)


@contextmanager
def batch_invariant_energies() -> Iterator[None]:
    """Within it, v_aᵀ tanh(…) is a row-wise sum rather than a matrix-vector product: its value then does not
    depend on how many rows the batch has (BLAS blocks a product by its row count), which scoring needs (a pair's
    score the same in any batch, ``nmt.scoring.scorer``). About 1.5× slower for that product, so only there."""
    token = _ROW_WISE_ENERGIES.set(True)
    try:
        yield
    finally:
        _ROW_WISE_ENERGIES.reset(token)


class AdditiveAttention(nn.Module):
    """e_ij = v_aᵀ tanh(W_a s_{i-1} + U_a h_j);  α_ij = softmax_j(e_ij);  c_i = Σ_j α_ij h_j.

    U_a h_j does not depend on i: ``keys`` computes it once per sentence. W_a s_{i-1} is passed in already computed
    (``query``) so the decoder can fuse it with the other products of s_{i-1} in one matmul. The values weighed may
    be the annotations h_j or a linear map of them, M h_j, whose weighted sum is M c_i.

    In float32 the energies go through σ, torch's faster CPU kernel (docs/benchmarks.md): tanh z = 2σ(2z) − 1, so
    v_aᵀ tanh z = 2 v_aᵀ σ(2z) − Σ v_a, and the softmax over j drops the constant − Σ v_a: the same α. The 2 of σ(2z)
    is in the keys (2 U_a h_j) and in the sum that adds the query to them. A half-precision model's inference on a
    CPU gets float32 keys too, so its energies are computed this way in float32 (σ in half precision would lose
    tanh's bits near 0). Half-precision keys stay U_a h_j, with the paper's tanh, on a GPU (where tanh is as fast)
    and in training (autograd would keep float32 energies: more memory, and the step was no faster). ``keys``
    decides; ``forward`` follows the keys' dtype.
    """

    def __init__(self, *, query_dim: int, key_dim: int, attention_dim: int) -> None:
        super().__init__()
        self.attention_dim = attention_dim
        self.W_a = nn.Linear(query_dim, attention_dim, bias=False)
        self.U_a = nn.Linear(key_dim, attention_dim, bias=False)
        self.v_a = nn.Parameter(torch.zeros(attention_dim))

    @torch.no_grad()
    def reset_parameters(self, std: float | None = None) -> None:
        """W_a and U_a from N(0, std²), v_a 0 (Bahdanau B.1, where std = 0.001). std None: PyTorch's default
        for W_a and U_a."""
        reset_linear_(self.W_a, std)
        reset_linear_(self.U_a, std)
        nn.init.zeros_(self.v_a)

    def keys(self, h: Tensor) -> Tensor:
        """Annotations h (B, S, key_dim) -> the keys as ``forward`` adds them (B, S, attention_dim): 2 U_a h_j in
        float32, and for inference on a CPU whatever the model's dtype; U_a h_j in half precision on a GPU and in
        training (see the class docstring)."""
        keys = self.U_a(h)
        training = keys.requires_grad and torch.is_grad_enabled()
        if keys.dtype != torch.float32 and (keys.device.type != "cpu" or training):
            return keys
        return keys.float() * 2

    def forward(self, query: Tensor, keys: Tensor, values: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """query = W_a s_{i-1} (B·k, A): k ≥ 1 consecutive rows per sentence (a beam's hypotheses); keys (B, S, A)
        from ``keys``, values (B, S, D): h or M h, and mask (B, S), False at padding: one row per sentence, which its
        k queries share. Returns Σ_j α_ij values_j (B·k, D), the context c_i (or M c_i), and α_i (B·k, S)."""
        B, S, _ = keys.shape
        k = query.shape[0] // B
        # e_ij = v_aᵀ tanh(z_ij), z_ij = W_a s_{i-1} + U_a h_j (Bahdanau et al. 2015, A.1.2), over (B, k, S, A), the
        # step's largest tensor, transformed in place (the sum is not needed again)
        if keys.dtype == torch.float32:  # keys = 2 U_a h_j: e_ij + Σ v_a = 2 v_aᵀ σ(2 z_ij) (see the class docstring)
            energy = torch.add(keys.unsqueeze(1), query.view(B, k, 1, -1), alpha=2).sigmoid_()  # float32
            v = self.v_a.float() * 2
        else:  # keys = U_a h_j
            energy, v = (keys.unsqueeze(1) + query.view(B, k, 1, -1)).tanh_(), self.v_a
        e = (energy * v).sum(-1) if _ROW_WISE_ENERGIES.get() else energy @ v  # (B, k, S)
        # the softmax in float32 whatever the weights' dtype (bf16 inference, mixed-precision training)
        alpha = torch.softmax(e.masked_fill(~mask.unsqueeze(1), float("-inf")), dim=-1, dtype=torch.float32)
        c = torch.bmm(alpha.to(values.dtype), values)  # (B, k, S) @ (B, S, D) -> (B, k, D)
        return c.view(B * k, -1), alpha.view(B * k, S)
