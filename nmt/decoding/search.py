"""Greedy search (placeholder until the batched beam search lands)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from nmt.model.base import Seq2Seq


@dataclass
class SearchConfig:
    beam_size: int = 5
    """Beam width k (1 = greedy)."""
    max_length_a: float = 1.5
    """Hypotheses stop at max_length_a · |src| + max_length_b tokens."""
    max_length_b: int = 10


class Hypothesis(NamedTuple):
    tokens: list[int]
    score: float
    alpha: Tensor | None = None


@torch.no_grad()
def search(model: Seq2Seq, src: Tensor, src_lengths: Tensor, config: SearchConfig, *, bos_id: int, eos_id: int) -> list[list[Hypothesis]]:
    B = src.shape[0]
    enc = model.encode(src, src_lengths)
    state = model.initial_state(enc)
    y = torch.full((B,), bos_id, dtype=torch.long, device=src.device)
    max_len = int(config.max_length_a * int(src_lengths.max()) + config.max_length_b)
    tokens = [[] for _ in range(B)]
    scores = [0.0] * B
    done = [False] * B
    for _ in range(max_len):
        out = model.step(y, state, enc)
        lp, y = out.log_probs.max(-1)
        state = out.state
        for b in range(B):
            if not done[b]:
                scores[b] += float(lp[b])
                if int(y[b]) == eos_id:
                    done[b] = True
                else:
                    tokens[b].append(int(y[b]))
        if all(done):
            break
    return [[Hypothesis(tokens[b], scores[b])] for b in range(B)]
