"""Embeddings and the deep maxout output layer shared by both models."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nmt.model.config import NetworkConfig
from nmt.model.int8 import Int8Linear


@torch.no_grad()
def reset_linear_(layer: nn.Linear, std: float | None = None) -> None:
    """The papers' initialisation of a linear map: its weight from N(0, std²), its bias 0. std None: PyTorch's
    default."""
    if std is None:
        layer.reset_parameters()
        return
    nn.init.normal_(layer.weight, 0.0, std)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)


class Embedding(nn.Module):
    """Word embeddings e(y), optionally the product of two rank-k matrices (Cho et al. 2014 §4.1.1 approximate
    the input and output matrices by rank-100 ones): a V×k lookup followed by a k→dim linear map."""

    def __init__(self, vocab_size: int, dim: int, *, rank: int | None = None, pad_id: int = 0) -> None:
        super().__init__()
        self.lookup = nn.Embedding(vocab_size, rank or dim, padding_idx=pad_id)
        self.expand = nn.Linear(rank, dim, bias=False) if rank else None

    @torch.no_grad()
    def reset_parameters(self, std: float | None = None) -> None:
        """Every weight from N(0, std²) (the papers), the padding row 0. std None: PyTorch's default."""
        if std is None:
            self.lookup.reset_parameters()
        else:
            nn.init.normal_(self.lookup.weight, 0.0, std)
            if self.lookup.padding_idx is not None:
                self.lookup.weight[self.lookup.padding_idx].zero_()
        if self.expand is not None:
            reset_linear_(self.expand, std)

    def forward(self, ids: Tensor) -> Tensor:
        """ids (...,) long -> (..., dim)."""
        e = self.lookup(ids)
        return self.expand(e) if self.expand is not None else e


class MaxoutOutput(nn.Module):
    """The deep output layer of both papers (Cho A.2 / Bahdanau A.2.2):

        t̃ = O_h h + O_y e(y_{t-1}) + O_c c          (2·units wide)
        t = max over each group of `pool` units of t̃ (maxout)
        p(y_t | …) = softmax(W_o t)                     (W_o optionally of rank k)

    ``project_context`` and ``features`` are separate so that a term that is the same at every step (Cho's c)
    is projected once per sentence.
    """

    def __init__(
        self,
        *,
        state_dim: int,
        emb_dim: int,
        ctx_dim: int,
        units: int,
        pool: int,
        vocab_size: int,
        rank: int | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.units, self.pool = units, pool
        self.O_h = nn.Linear(state_dim, units * pool)  # its bias is the layer's bias
        self.O_y = nn.Linear(emb_dim, units * pool, bias=False)
        self.O_c = nn.Linear(ctx_dim, units * pool, bias=False)
        self.dropout = nn.Dropout(dropout)
        if rank:
            self.W_o = nn.Sequential(nn.Linear(units, rank, bias=False), nn.Linear(rank, vocab_size))
        else:
            self.W_o = nn.Linear(units, vocab_size)

    @classmethod
    def for_network(cls, config: NetworkConfig, *, state_dim: int, ctx_dim: int, vocab_size: int) -> MaxoutOutput:
        """The layer a NetworkConfig describes (maxout units, pool, output rank, dropout)."""
        return cls(
            state_dim=state_dim,
            emb_dim=config.emb_dim,
            ctx_dim=ctx_dim,
            units=config.maxout_units,
            pool=config.maxout_pool,
            vocab_size=vocab_size,
            rank=config.output_rank,
            dropout=config.dropout,
        )

    @torch.no_grad()
    def reset_parameters(self, std: float | None = None) -> None:
        """Every weight (O_h, O_y, O_c, W_o) from N(0, std²) (the papers), every bias 0. std None: PyTorch's
        default."""
        for layer in self.modules():
            if isinstance(layer, nn.Linear):
                reset_linear_(layer, std)

    def project_context(self, c: Tensor) -> Tensor:
        """c (..., ctx_dim) -> O_c c (..., units·pool)."""
        return self.O_c(c)

    def features(self, h: Tensor, e_prev: Tensor, ctx_term: Tensor) -> Tensor:
        """h (..., state_dim), e_prev (..., emb_dim), ctx_term = O_c c broadcastable -> t (..., units)."""
        return self.maxout(self.O_h(h) + self.O_y(e_prev) + ctx_term)

    def maxout(self, t_tilde: Tensor) -> Tensor:
        """t̃ (..., units·pool) -> t (..., units): the max of each group of `pool` units (then dropout)."""
        return self.dropout(t_tilde.unflatten(-1, (self.units, self.pool)).amax(dim=-1))

    def logits(self, t: Tensor) -> Tensor:
        """t (..., units) -> unnormalised scores W_o t (..., V)."""
        return self.W_o(t)

    def rows(self, ids: Tensor) -> nn.Module:
        """W_o restricted to the target ids `ids` (a vocabulary shortlist): its rows, in that order."""
        if isinstance(self.W_o, nn.Sequential):  # rank-k: only the second factor has a row per target id
            return nn.Sequential(self.W_o[0], linear_rows(self.W_o[1], ids))
        return linear_rows(self.W_o, ids)


def tie_output_to_embedding_(output: MaxoutOutput, embedding: Embedding) -> None:
    """Press & Wolf 2017, "Using the Output Embedding to Improve Language Models": W_o (its last factor, the one
    with a row per target word, when it has rank k) becomes the target embedding lookup, one parameter that both
    the input and the output of the decoder train. W_o keeps its own bias. The shared matrix is initialised as
    W_o is (the output layer is reset after the embeddings), its padding row included."""
    W_o = output.W_o[1] if isinstance(output.W_o, nn.Sequential) else output.W_o
    W_o.weight = embedding.lookup.weight


def linear_rows(layer: nn.Module, ids: Tensor) -> nn.Module:
    """The outputs `ids` of a linear layer (an ``nn.Linear`` or an int8 ``Int8Linear``) as a layer of their own."""
    if isinstance(layer, Int8Linear):
        return layer.rows(ids)
    bias = None if layer.bias is None else layer.bias.index_select(0, ids)
    return FixedLinear(layer.weight.index_select(0, ids), bias)


LinearMap = nn.Linear | Int8Linear | Tensor | tuple[Tensor, Tensor | None]
"""A linear map x ↦ W x + b: a layer, a bare weight W (no bias), or (W, b)."""


def stacked_linear(*maps: LinearMap) -> nn.Module:
    """x ↦ [W_1 x + b_1; W_2 x + b_2; …]: several linear maps of the same input as one layer, so that a decoding
    step computes them in one matrix product (and, in int8, quantizes x once). A map without a bias adds zeros to
    the stacked bias. If any map is an ``Int8Linear`` the stack is one, the float maps among them quantized."""
    if any(isinstance(m, Int8Linear) for m in maps):
        return Int8Linear.stack([m if isinstance(m, Int8Linear) else Int8Linear.from_weight(*_weight_bias(m))
                                 for m in maps])  # fmt: skip
    pairs = [_weight_bias(m) for m in maps]
    weight = torch.cat([w for w, _ in pairs])
    if all(b is None for _, b in pairs):
        return FixedLinear(weight, None)
    return FixedLinear(weight, torch.cat([weight.new_zeros(w.shape[0]) if b is None else b for w, b in pairs]))


def _weight_bias(layer: LinearMap) -> tuple[Tensor, Tensor | None]:
    if isinstance(layer, (nn.Linear, Int8Linear)):
        return layer.weight, layer.bias
    return (layer, None) if isinstance(layer, Tensor) else layer


class FixedLinear(nn.Module):
    """x ↦ x Wᵀ + b with tensors that belong to other layers (a stack or a selection of their weights): not
    parameters of its own, so gradients flow back to those layers' parameters."""

    def __init__(self, weight: Tensor, bias: Tensor | None) -> None:
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.weight, self.bias = weight, bias

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight, self.bias)
