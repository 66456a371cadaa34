"""Several models of the same vocabulary decoded as one.

``Ensemble`` is a ``SearchModel`` (``nmt.model.base``: ``encode``, ``initial_state``, ``step``, ``pad_id``) made of
``SearchModel``s, so ``search`` treats it like any model. Its encoder output and state are tuples with one entry
per member (each the member's own tuple of (B, …) tensors); ``search.select_rows`` reorders such nestings.

Combination: the ensemble's log p(y | ·) is the *mean of the members' log-probabilities*
(1/M Σ_m log p_m(y | ·), the log of the geometric mean, not renormalised), as in Marian. It is not a
normalised distribution (Σ_y exp ≤ 1), which does not change the ranking of words within a step. The
attention weights, when every member has them, are the members' mean.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from nmt.errors import InputError
from nmt.model.base import SearchModel, StepOutput


class Ensemble(nn.Module):
    def __init__(self, members: Sequence[SearchModel]) -> None:
        """members: ``SearchModel``s that are ``nn.Module``s (a ``Seq2Seq``), so that the ensemble moves to a device
        and switches to eval mode with them."""
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)  # type: ignore[arg-type]
        self.pad_id = members[0].pad_id

    @property
    def has_attention(self) -> bool:
        """Whether every member has attention (the ensemble's α is then their mean)."""
        return all(m.has_attention for m in self.members)

    def encode(self, src: Tensor, src_lengths: Tensor, for_steps: bool = True) -> tuple:
        """src (B, S), src_lengths (B,) -> one encoder output per member."""
        return tuple(m.encode(src, src_lengths, for_steps) for m in self.members)

    def initial_state(self, enc: tuple) -> tuple:
        return tuple(m.initial_state(e) for m, e in zip(self.members, enc, strict=True))

    def step_weights(self, ids: Tensor | None = None, normalised: bool = True) -> tuple:
        """The members' (unnormalised: their mean is then renormalised by the search, which removes each member's
        constant per row)."""
        return tuple(m.step_weights(ids, normalised) for m in self.members)

    def step(self, y_prev: Tensor, state: tuple, enc: tuple, weights: tuple | None = None) -> StepOutput:
        """y_prev (B,) -> mean of the members' log-probs (B, V), their states, mean α (B, S) or None."""
        member_weights = weights if weights is not None else (None,) * len(self.members)
        outs = [m.step(y_prev, s, e, w) for m, s, e, w in zip(self.members, state, enc, member_weights, strict=True)]
        log_probs = torch.stack([o.log_probs for o in outs]).mean(dim=0)
        alphas = [o.alpha for o in outs]
        alpha = None if any(a is None for a in alphas) else torch.stack(alphas).mean(dim=0)
        return StepOutput(log_probs, tuple(o.state for o in outs), alpha)


def check_same_vocabulary(members: Sequence) -> None:
    """Refuse to ensemble checkpoints whose SentencePiece models differ (``LoadedModel``s from
    ``nmt.checkpoint.load_model``): word ids would mean different words in different members."""
    first = members[0]
    reference = first.tokenizer.to_bytes()
    for other in members[1:]:
        if other.tokenizer.to_bytes() != reference:
            raise InputError(
                path=other.path,
                message=f"its SentencePiece model differs from that of {first.path}; "
                "ensemble members must share the vocabulary",
            )
