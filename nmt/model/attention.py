"""The alignment model of Bahdanau et al. 2015 (§3.1, Appendix A.1.2):

    e_ij = v_aᵀ tanh(W_a s_{i-1} + U_a h_j),   α_ij = softmax_j(e_ij),   c_i = Σ_j α_ij h_j.

`AdditiveAttention` computes it; its `Keys`, U_a h_j once per sentence, say in which form the energies are computed.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from nmt.model.layers import reset_linear_


class Keys(NamedTuple):
    """U_a h_j of every source word, computed once per sentence (``AdditiveAttention.keys``), in the form that says
    how the energies are computed from z_ij = W_a s_{i-1} + U_a h_j. Since tanh z = 2σ(2z) − 1,

        e_ij = v_aᵀ tanh(z_ij) = 2 v_aᵀ σ(2 z_ij) − Σ v_a,

    and the softmax over j drops the constant − Σ v_a: either form gives the same α."""

    tensor: Tensor  # (B, S, A): 2 U_a h_j in float32 if `sigmoid`, else U_a h_j in the model's dtype
    sigmoid: bool  # the energies as 2 v_aᵀ σ(2 z_ij) in float32 (True), or as v_aᵀ tanh(z_ij) (False)

    def first(self, rows: int) -> Keys:
        """The keys of the first `rows` sentences."""
        return self._replace(tensor=self.tensor[:rows])


class AdditiveAttention(nn.Module):
    """e_ij = v_aᵀ tanh(W_a s_{i-1} + U_a h_j);  α_ij = softmax_j(e_ij);  c_i = Σ_j α_ij h_j.

    U_a h_j does not depend on i: ``keys`` computes it once per sentence. W_a s_{i-1} is passed in already computed
    (``query``) so the decoder can fuse it with the other products of s_{i-1} in one matmul. The values weighed may
    be the annotations h_j or a linear map of them, M h_j, whose weighted sum is M c_i.
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

    def keys(self, h: Tensor) -> Keys:
        """Annotations h (B, S, key_dim) -> their keys (B, S, A), in the σ form (float32) wherever the energies are
        computed in float32: a float32 model's, and a half-precision model's inference on a CPU (where torch's σ is
        the faster kernel, docs/benchmarks.md, and float32 keeps tanh's bits near 0, which σ in half precision would
        lose). A half-precision model keeps its own dtype and tanh on a GPU (tanh as fast as σ there) and in
        training (autograd would keep float32 energies: more memory for no faster step)."""
        U_a_h = self.U_a(h)
        training = U_a_h.requires_grad and torch.is_grad_enabled()
        if U_a_h.dtype != torch.float32 and (U_a_h.device.type != "cpu" or training):
            return Keys(U_a_h, sigmoid=False)
        return Keys(U_a_h.float() * 2, sigmoid=True)

    def forward(
        self, query: Tensor, keys: Keys, values: Tensor, mask: Tensor, *, batch_invariant: bool = False
    ) -> tuple[Tensor, Tensor]:
        """query = W_a s_{i-1} (B·k, A): k ≥ 1 consecutive rows per sentence (a beam's hypotheses); keys from
        ``keys`` (B, S, A), values (B, S, D): h or M h, and mask (B, S), False at padding: one row per sentence, which
        its k queries share. Returns Σ_j α_ij values_j (B·k, D), the context c_i (or M c_i), and α_i (B·k, S).

        ``batch_invariant``: v_aᵀ applied as a row-wise sum rather than a matrix-vector product, whose value then
        does not depend on how many rows the batch has (BLAS blocks a product by its row count): what scoring needs
        (a pair's score the same in any batch, ``nmt.scoring.scorer``); slower, so only there."""
        B, S, _ = keys.tensor.shape
        k = query.shape[0] // B
        query = query.view(B, k, 1, -1)  # against the keys' (B, 1, S, A)
        # z_ij = W_a s_{i-1} + U_a h_j over (B, k, S, A), the step's largest tensor, transformed in place
        if keys.sigmoid:  # the keys hold 2 U_a h_j (float32): σ(2 z_ij), weighed by 2 v_a gives e_ij + Σ v_a (Keys)
            energy = torch.add(keys.tensor.unsqueeze(1), query, alpha=2).sigmoid_()  # σ(2 U_a h_j + 2 W_a s_{i-1})
            v = self.v_a.float() * 2
        else:  # the keys hold U_a h_j: tanh(z_ij), weighed by v_a gives e_ij
            energy, v = (keys.tensor.unsqueeze(1) + query).tanh_(), self.v_a
        e = (energy * v).sum(-1) if batch_invariant else energy @ v  # e_ij = v_aᵀ tanh(z_ij) (A.1.2): (B, k, S)
        # α_ij = softmax_j(e_ij) (A.1.2), in float32 whatever the weights' dtype (bf16 inference, mixed precision)
        alpha = torch.softmax(e.masked_fill(~mask.unsqueeze(1), float("-inf")), dim=-1, dtype=torch.float32)
        c = torch.bmm(alpha.to(values.dtype), values)  # c_i = Σ_j α_ij h_j (A.1.2): (B, k, S) @ (B, S, D) -> (B, k, D)
        return c.view(B * k, -1), alpha.view(B * k, S)
