"""The alignment model of Bahdanau et al. 2015 (§3.1, Appendix A.1.2)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class AdditiveAttention(nn.Module):
    """e_ij = v_aᵀ tanh(W_a s_{i-1} + U_a h_j);  α_ij = softmax_j(e_ij);  c_i = Σ_j α_ij h_j.

    U_a h_j does not depend on i: ``keys`` computes it once per sentence. W_a s_{i-1} is passed in already
    computed (``query``) so the decoder can fuse it with the other products of s_{i-1} in one matmul.
    """

    def __init__(self, *, query_dim: int, key_dim: int, attention_dim: int) -> None:
        super().__init__()
        self.attention_dim = attention_dim
        self.W_a = nn.Linear(query_dim, attention_dim, bias=False)
        self.U_a = nn.Linear(key_dim, attention_dim, bias=False)
        self.v_a = nn.Parameter(torch.zeros(attention_dim))

    def keys(self, h: Tensor) -> Tensor:
        """Annotations h (B, S, key_dim) -> U_a h_j (B, S, attention_dim)."""
        return self.U_a(h)

    def forward(self, query: Tensor, keys: Tensor, h: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """query = W_a s_{i-1} (B, A); keys = U_a h (B, S, A); h (B, S, D); mask (B, S), False at padding.
        Returns the context c_i (B, D) and the weights α_i (B, S)."""
        e = torch.tanh(keys + query.unsqueeze(1)) @ self.v_a  # (B, S)
        # the softmax in float32 whatever the weights' dtype (bf16 inference, mixed-precision training)
        alpha = torch.softmax(e.masked_fill(~mask, float("-inf")), dim=-1, dtype=torch.float32)
        c = torch.bmm(alpha.to(h.dtype).unsqueeze(1), h).squeeze(1)  # (B, 1, S) @ (B, S, D) -> (B, D)
        return c, alpha
