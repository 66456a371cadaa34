"""A padded training batch, the collate function that builds it from token-id rows, and the padding that every
batch of ids goes through (training, validation, translation, scoring, embedding)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from itertools import chain

import numpy as np
import torch
from torch import Tensor

from nmt.data.tokenizer import BOS, EOS, PAD

__all__ = ["Batch", "collate", "pad_rows"]


@dataclass
class Batch:
    """Sentence pairs padded for teacher forcing. All fields are tensors, so Lightning moves it to the device.

    Args:
        src: (B, S) long source ids, each row ``x_1..x_m EOS`` then PAD.
        src_lengths: (B,) long source lengths, EOS included.
        tgt_in: (B, T) long decoder input ``BOS y_1..y_n`` then PAD.
        tgt_out: (B, T) long decoder target ``y_1..y_n EOS`` then PAD (`tgt_in` shifted left by one).
        indices: (B,) long row of each pair in its dataset (to put outputs back in corpus order).
    """

    src: Tensor
    src_lengths: Tensor
    tgt_in: Tensor
    tgt_out: Tensor
    indices: Tensor

    @property
    def num_tgt_tokens(self) -> int:
        """Target tokens to predict: the non-PAD entries of `tgt_out` (EOS included)."""
        return int(self.tgt_out.ne(PAD).sum())

    def pin_memory(self) -> Batch:
        """Page-locked copy, called by DataLoader(pin_memory=True) for faster host-to-GPU copies."""
        return Batch(**{f.name: getattr(self, f.name).pin_memory() for f in fields(self)})


def collate(rows: Sequence[tuple[Sequence[int], Sequence[int]]], indices: Sequence[int], *, pad_id: int = PAD) -> Batch:
    """Pad `rows` of ``(src_ids, tgt_ids)`` into a `Batch`.

    Args:
        rows: per pair, the source ids ending in EOS (`nmt.data.encoding.source_ids`) and the target ids without
            BOS/EOS (`nmt.data.encoding.target_ids`).
        indices: (B,) dataset row of each pair.
        pad_id: id filling the positions after each sentence.
    """
    if not rows:
        raise ValueError("cannot collate an empty batch")
    if len(rows) != len(indices):
        raise ValueError(f"{len(rows)} rows but {len(indices)} indices")
    src, src_lengths = pad_rows([s for s, _ in rows], pad_id=pad_id, extra=0)  # (B, S)
    y, tgt_lengths = pad_rows([t for _, t in rows], pad_id=pad_id, extra=1)  # (B, n_max + 1), last column PAD
    batch_size = y.shape[0]
    tgt_in = np.empty_like(y)
    tgt_in[:, 0] = BOS
    tgt_in[:, 1:] = y[:, :-1]  # BOS y_1..y_n
    tgt_out = y  # y_1..y_n, with EOS written into the first padded slot of each row below
    tgt_out[np.arange(batch_size), tgt_lengths] = EOS
    return Batch(
        src=torch.from_numpy(src),
        src_lengths=torch.from_numpy(src_lengths),
        tgt_in=torch.from_numpy(tgt_in),
        tgt_out=torch.from_numpy(tgt_out),
        indices=torch.as_tensor(np.asarray(indices, dtype=np.int64)),
    )


def pad_rows(seqs: Sequence[Sequence[int]], *, pad_id: int, extra: int) -> tuple[np.ndarray, np.ndarray]:
    """Left-aligned (B, max_len + extra) int64 matrix of `seqs` filled with `pad_id`, and the (B,) lengths."""
    lengths = np.fromiter(map(len, seqs), dtype=np.int64, count=len(seqs))  # (B,)
    flat = np.fromiter(chain.from_iterable(seqs), dtype=np.int64, count=int(lengths.sum()))  # (sum,)
    out = np.full((len(seqs), int(lengths.max()) + extra), pad_id, dtype=np.int64)
    # Scatter every token at once: row r's k-th token goes to (r, k).
    row = np.repeat(np.arange(len(seqs)), lengths)
    starts = np.cumsum(lengths) - lengths  # (B,) offset of each row in `flat`
    col = np.arange(len(flat)) - np.repeat(starts, lengths)
    out[row, col] = flat
    return out, lengths
