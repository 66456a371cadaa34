"""The contract between a translation model and everything that drives it (training, search, scoring).

    enc = model.encode(src, src_lengths)            # once per batch
    state = model.initial_state(enc)                # a tuple of (B, ·) tensors
    out = model.step(y_prev, state, enc)            # one target position: log-probs, next state, α
    logits = model(src, src_lengths, tgt_in)        # teacher-forced, all positions at once

``enc`` and ``state`` are NamedTuples/tuples of tensors with the batch first, so a beam search reorders them
with one ``index_select`` each (``reorder``) without knowing what is inside. Modules keep no state
between calls.
"""

from __future__ import annotations

from typing import NamedTuple, TypeVar

import torch
from torch import Tensor, nn

T = TypeVar("T", bound=tuple)


class StepOutput(NamedTuple):
    log_probs: Tensor  # (B, V) log p(y_t | y_<t, x)
    state: tuple[Tensor, ...]  # the decoder state after consuming y_prev
    alpha: Tensor | None  # (B, S) attention weights of this step (None for the RNN Encoder–Decoder)


class TeacherForced(NamedTuple):
    features: Tensor  # (B, T, units): the maxout output t_i before the softmax projection
    alpha: Tensor | None  # (B, T, S) attention weights, when the model has attention


def reorder(tensors: T, index: Tensor) -> T:
    """Select batch rows of every tensor of a state or encoder output: index (B',) long -> rows (B', …)."""
    return type(tensors)(*(t.index_select(0, index) for t in tensors))


class Seq2Seq(nn.Module):
    """Base class of both models; subclasses implement encode / initial_state / step / teacher_forced."""

    pad_id: int

    def encode(self, src: Tensor, src_lengths: Tensor) -> tuple[Tensor, ...]:
        """src (B, S) long, padded with pad_id; src_lengths (B,). Returns the model's encoder output."""
        raise NotImplementedError

    def initial_state(self, enc: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        raise NotImplementedError

    def step(self, y_prev: Tensor, state: tuple[Tensor, ...], enc: tuple[Tensor, ...]) -> StepOutput:
        """y_prev (B,) long: the previous target word (BOS at the start). One decoding step."""
        raise NotImplementedError

    def teacher_forced(self, enc: tuple[Tensor, ...], tgt_in: Tensor) -> TeacherForced:
        """tgt_in (B, T) = BOS y_1 … y_{T-1}: the output features of every position at once."""
        raise NotImplementedError

    def logits(self, features: Tensor) -> Tensor:
        """features (..., units) -> scores over the target vocabulary (..., V)."""
        return self.output.logits(features)

    def forward(self, src: Tensor, src_lengths: Tensor, tgt_in: Tensor) -> Tensor:
        """Teacher-forced scores (B, T, V) of tgt_out given tgt_in."""
        return self.logits(self.teacher_forced(self.encode(src, src_lengths), tgt_in).features)

    def src_mask(self, src: Tensor) -> Tensor:
        return src != self.pad_id

    @torch.no_grad()
    def init_weights(self, *, std: float, attention_std: float) -> None:
        """The papers' initialisation (Cho §4.1.1, Bahdanau B.1): recurrent matrices orthogonal (per gate
        block), the alignment model's W_a and U_a from N(0, attention_std²), v_a and all biases 0, every
        other weight from N(0, std²)."""
        from nmt.model.gru import orthogonal_blocks_

        for name, p in self.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if "bias" in leaf or leaf == "v_a":
                nn.init.zeros_(p)
            elif leaf in ("U_rz", "U") or leaf.startswith("weight_hh"):
                orthogonal_blocks_(p)
            elif name.endswith(("W_a.weight", "U_a.weight")):
                nn.init.normal_(p, 0.0, attention_std)
            else:
                nn.init.normal_(p, 0.0, std)
        for module in self.modules():
            if isinstance(module, nn.Embedding) and module.padding_idx is not None:
                module.weight[module.padding_idx].zero_()
