"""The target positions a teacher-forced pass computes, time-major.

Without lengths, all B·T positions of a (B, T) batch. With each row's length (rows sorted longest first), only each
row's first `length` positions, as torch packs a sequence (``PackedSequence``): step t runs over its
``batch_sizes[t]`` leading rows, the rows still inside their target, so the recurrence skips the padding instead of
computing it and throwing it away (what that saves scoring a phrase table, whose ``nmt.scoring.scorer`` runs blocks
of 32 rows: docs/benchmarks.md, Teacher forcing skips the padding).
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence


class TimeSteps:
    """The positions of a (B, T) target batch a teacher-forced pass computes; ``lengths`` (B,), non-increasing,
    at most T and at least 1: each row's positions (None: all T)."""

    def __init__(self, B: int, T: int, lengths: Tensor | None = None) -> None:
        self.B, self.T = B, T
        self.lengths = None if lengths is None else lengths.cpu()  # torch's packing wants them on the CPU
        if self.lengths is None:
            self.batch_sizes = [B] * T
        else:
            lengths = self.lengths
            if lengths.shape != (B,) or B and (lengths[0] > T or lengths[-1] < 1 or (lengths.diff() > 0).any()):
                raise ValueError(f"lengths must be ({B},), non-increasing, within 1..{T}: {lengths.tolist()}")
            counts = (lengths.unsqueeze(0) > torch.arange(T).unsqueeze(1)).sum(1).tolist()
            self.batch_sizes = [n for n in counts if n]  # no step past the longest row

    def pack(self, x: Tensor) -> Tensor:
        """(B, T, …) -> (P, …): the computed positions, time-major (step 0's rows, then step 1's, …)."""
        if self.lengths is None:
            return x.transpose(0, 1).reshape(-1, *x.shape[2:])
        return pack_padded_sequence(x, self.lengths, batch_first=True).data

    @functools.cached_property
    def rows(self) -> Tensor:
        """(P,) the batch row of each computed position."""
        return torch.cat([torch.arange(n) for n in self.batch_sizes])

    def per_position(self, x: Tensor) -> Tensor:
        """(B, …) one value per row -> (P, …) that value at each of the row's positions."""
        return x.index_select(0, self.rows.to(x.device))

    def split(self, packed: Tensor) -> tuple[Tensor, ...]:
        """(P, …) -> each step's (batch_sizes[t], …)."""
        return packed.split(self.batch_sizes)

    def sequence(self, packed: Tensor) -> PackedSequence:
        """(P, …) as torch's PackedSequence (the input of ``nn.GRU``)."""
        return PackedSequence(packed, torch.tensor(self.batch_sizes, dtype=torch.long))

    def unpack(self, packed: Tensor) -> Tensor:
        """(P, …) -> (B, T, …), zeros at the positions not computed."""
        if self.lengths is None:
            return packed.view(self.T, self.B, *packed.shape[1:]).transpose(0, 1)
        return pad_packed_sequence(self.sequence(packed), batch_first=True, total_length=self.T)[0]
