"""Token-level cross-entropy with label smoothing, summed over tokens, in as few passes over (N, V) as possible.

    loss_n = −(1 − ε) log p(y_n) − ε/V Σ_c log p(c)  =  lse_n − (1 − ε) x_{n,y_n} − ε/V Σ_c x_{n,c}
    ∂loss_n/∂x_{n,c} = softmax(x_n)_c − ε/V − (1 − ε) [c = y_n]

(lse = log Σ_c exp x_c; the same loss as ``F.cross_entropy(..., label_smoothing=ε)``.) The vocabulary-wide
tensors are the largest ones of a training step: PyTorch's version materialises log-softmax, a zero-filled
one-hot gradient and a smoothing gradient and adds them up, where the gradient above is one exp over the saved
logits plus a scatter into the target column.
"""

from __future__ import annotations

import torch
from torch import Tensor


class _SmoothedCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits: Tensor, target: Tensor, smoothing: float) -> Tensor:
        row_max = logits.amax(dim=-1, keepdim=True)
        exp = torch.sub(logits, row_max).exp_()  # kept for the backward pass: the softmax without a second exp
        row_sum = exp.sum(dim=-1, keepdim=True)
        lse = (row_sum.log() + row_max).squeeze(-1)
        loss = lse - (1.0 - smoothing) * logits.gather(-1, target.unsqueeze(-1)).squeeze(-1)
        if smoothing:
            loss = loss - (smoothing / logits.shape[-1]) * logits.sum(dim=-1)
        ctx.save_for_backward(exp, row_sum, target)
        ctx.smoothing, ctx.consumed = smoothing, False
        return loss.sum()

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:
        if ctx.consumed:  # the saved buffer is overwritten below
            raise RuntimeError("smoothed_cross_entropy supports one backward pass (no retain_graph re-use)")
        ctx.consumed = True
        exp, row_sum, target = ctx.saved_tensors
        smoothing = ctx.smoothing
        d_logits = exp.mul_(grad / row_sum)  # grad · softmax, in the saved buffer (used once)
        if smoothing:
            d_logits.sub_(grad * (smoothing / exp.shape[-1]))
        target_column = target.unsqueeze(-1)
        d_logits.scatter_add_(-1, target_column, (grad * (smoothing - 1.0)).expand(target_column.shape).to(exp.dtype))
        return d_logits, None, None


def smoothed_cross_entropy(logits: Tensor, target: Tensor, smoothing: float = 0.0) -> Tensor:
    """Summed cross-entropy of logits (N, V) against target (N,) long, with label smoothing ε = ``smoothing``.
    Equal to ``F.cross_entropy(logits, target, reduction="sum", label_smoothing=smoothing)`` in value and
    gradient."""
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"label smoothing must be in [0, 1), got {smoothing}")
    return _SmoothedCrossEntropy.apply(logits, target, float(smoothing))
