"""Batches of similar-length sentences under a padded-token budget, sharded over distributed ranks."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from typing import Literal

import numpy as np
import torch.distributed as dist
from torch.utils.data import Sampler

__all__ = ["TokenBucketSampler"]


class TokenBucketSampler(Sampler[list[int]]):
    """Yields lists of dataset indices whose padded size fits `max_tokens`.

    A sentence pair's width is ``max(src_len, tgt_len + 1)``: the padded length of its longest tensor
    (`src_lengths` already count the source EOS; the decoder input/output add one BOS or EOS to the
    target). A batch costs ``n_sentences * max(width)`` and never exceeds `max_tokens`, except a lone
    sentence wider than the budget, which forms its own batch rather than being dropped.

    Each epoch: sort by width (ties broken at random when shuffling, so equal-length sentences meet new
    neighbours), cut greedily into batches, shuffle the batch order with ``seed + epoch``, then deal the
    batches out to the ranks. Every rank gets the same number of batches: the list is padded by repeating
    batches from its start (or truncated with `drop_last`), as `DistributedSampler` does. Without shuffling,
    the order is the deterministic length-sorted one (for validation and test).

    Evaluation shards sentences instead (``shard="sentences"``): rank r takes every R-th sentence of the
    width-sorted order and cuts its own share into batches, so every sentence is decoded exactly once across
    the ranks (no repeated batch counted twice in the loss) and each rank gets a similar amount of work;
    batch counts may differ by a few between ranks, which evaluation (no collective per step) allows.

    Call `set_epoch` before each epoch, as with `DistributedSampler`. `state_dict` / `load_state_dict`
    hold the epoch and the batches already yielded in it, so a resumed run skips them.
    """

    def __init__(
        self,
        *,
        src_lengths: np.ndarray,
        tgt_lengths: np.ndarray,
        max_tokens: int,
        shuffle: bool,
        max_sentences: int | None = None,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
        drop_last: bool = False,
        shard: Literal["batches", "sentences"] = "batches",
    ) -> None:
        """
        Args:
            src_lengths: (N,) source length of each pair in tokens, EOS included.
            tgt_lengths: (N,) target length of each pair in pieces, without BOS/EOS.
            max_tokens: padded-token budget of a batch.
            shuffle: randomise the batches each epoch (training) or keep the length-sorted order.
            max_sentences: also cap a batch at this many sentences (None: no cap).
            seed: base seed, shared by all ranks; epoch e uses ``seed + e``.
            num_replicas: number of ranks (default: the torch.distributed world size, or 1).
            rank: this process's rank (default: the torch.distributed rank, or 0).
            drop_last: drop the tail batches that do not divide evenly among ranks instead of repeating some.
            shard: what is dealt out to the ranks: "batches" (training: equal counts per rank) or
                "sentences" (evaluation: each sentence exactly once).
        """
        src_lengths, tgt_lengths = np.asarray(src_lengths), np.asarray(tgt_lengths)
        if src_lengths.ndim != 1 or src_lengths.shape != tgt_lengths.shape:
            raise ValueError(
                f"src_lengths {src_lengths.shape} and tgt_lengths {tgt_lengths.shape} must be 1-D arrays of one length"
            )
        if len(tgt_lengths) and min(src_lengths.min(), tgt_lengths.min()) < 0:
            raise ValueError("lengths must be non-negative")
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be positive, got {max_tokens}")
        if shard not in ("batches", "sentences"):
            raise ValueError(f"shard must be 'batches' or 'sentences', got {shard!r}")
        if max_sentences is not None and max_sentences < 1:
            raise ValueError(f"max_sentences must be positive (or None), got {max_sentences}")
        if num_replicas is None:
            num_replicas = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        if rank is None:
            rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is outside [0, {num_replicas})")
        self.max_tokens = max_tokens
        self.max_sentences = max_sentences
        self.shuffle = shuffle
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.drop_last = drop_last
        self.shard = shard
        self.epoch = 0
        widths = np.maximum(src_lengths, tgt_lengths + 1)  # (N,) padded length of each pair
        self._sorted = np.argsort(widths, kind="stable").astype(np.int32)  # (N,) indices by width
        sorted_widths = widths[self._sorted]
        # Runs of equal width in `_sorted`, as (G + 1,) boundaries: shuffling reorders only within a run.
        change = np.flatnonzero(np.diff(sorted_widths)) + 1
        self._runs = np.concatenate([[0], change, [len(widths)]]).astype(np.int64)
        # Reordering within runs leaves the sorted widths -- and so the cut points -- the same every epoch
        # (also of a rank's every-R-th share of them).
        if shard == "sentences":
            self._bounds = _cut(sorted_widths[rank::num_replicas], max_tokens, max_sentences)
            self._per_rank = len(self._bounds) - 1
        else:
            self._bounds = _cut(sorted_widths, max_tokens, max_sentences)  # (num_batches + 1,)
            num_batches = len(self._bounds) - 1
            self._per_rank = num_batches // num_replicas if drop_last else math.ceil(num_batches / num_replicas)
        self._skip = 0  # batches of `epoch` to skip on the next iteration (resume)
        self._yielded = 0  # batches of `epoch` handed out so far, skipped ones included

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose permutation the next iteration yields."""
        if epoch != self.epoch:
            self._skip = self._yielded = 0
        self.epoch = epoch

    @property
    def sampler(self) -> TokenBucketSampler:
        """This sampler itself, for Lightning.

        Used as a DataLoader's `batch_sampler`, it is found by Lightning's per-epoch `set_epoch` call, which
        looks only at `loader.sampler` and `loader.batch_sampler.sampler`.
        """
        return self

    @property
    def pending_skip(self) -> int:
        """Batches of the current epoch the next iteration skips (set by `load_state_dict`)."""
        return self._skip

    def __len__(self) -> int:
        """Batches of an epoch on this rank.

        A resumed epoch yields fewer (those after its restored position), but its length stays the whole
        epoch's: Lightning counts the batches of a resumed epoch from the restored position, and ends the
        epoch early if the length shrinks.
        """
        return self._per_rank

    def __iter__(self) -> Iterator[list[int]]:
        order, batch_ids = self._plan(self.epoch)
        skip, self._skip = self._skip, 0
        self._yielded = min(skip, len(batch_ids))
        return self._yield(order, batch_ids[skip:])

    def state_dict(self) -> dict[str, int]:
        """The epoch and how many of its batches this rank has yielded (skipped ones included)."""
        return {"epoch": self.epoch, "batches_yielded": self._yielded}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Resume: the next iteration yields `state["epoch"]`'s batches after the first `batches_yielded`."""
        self.epoch = int(state["epoch"])
        self._skip = self._yielded = int(state["batches_yielded"])

    def _yield(self, order: np.ndarray, batch_ids: np.ndarray) -> Iterator[list[int]]:
        for b in batch_ids:
            self._yielded += 1
            yield order[self._bounds[b] : self._bounds[b + 1]].tolist()

    def _plan(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """Indices ordered by width, (N,) or this rank's (N / R,) share of them, and the ids of this rank's
        batches in yield order (per_rank,), both cut by `_bounds`."""
        num_batches = len(self._bounds) - 1
        rng = np.random.default_rng(self.seed + epoch)
        order = self._sorted
        if self.shuffle:
            # Equal-width pairs are shuffled among themselves, so each epoch they meet new neighbours.
            order = order.copy()
            for start, end in itertools.pairwise(self._runs.tolist()):
                rng.shuffle(order[start:end])  # in place, through the view
        batch_order = rng.permutation(num_batches) if self.shuffle else np.arange(num_batches)
        if self.shard == "sentences":
            return order[self.rank :: self.num_replicas], batch_order
        total = self._per_rank * self.num_replicas
        # np.resize repeats the array from its start to fill `total` (or truncates it, for drop_last).
        batch_order = np.resize(batch_order, total) if num_batches else batch_order
        return order, batch_order[self.rank : total : self.num_replicas]


def _cut(sorted_widths: np.ndarray, max_tokens: int, max_sentences: int | None) -> np.ndarray:
    """Greedy cut points of ascending widths: each batch as long as its cost stays within `max_tokens`
    (and its size within `max_sentences`).

    Widths ascend, so batch ``[start, end)`` costs ``(end - start) * sorted_widths[end - 1]``, which grows
    with `end`: binary search finds the largest batch, one Python step per batch rather than per sentence.

    Returns:
        (num_batches + 1,) int64 boundaries, starting at 0 and ending at N.
    """
    n = len(sorted_widths)
    bounds = [0]
    start = 0
    while start < n:
        lo = 1  # a batch always holds at least one sentence, however wide
        hi = min(n - start, max(1, max_tokens // int(sorted_widths[start])), max_sentences or n)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if mid * int(sorted_widths[start + mid - 1]) <= max_tokens:
                lo = mid
            else:
                hi = mid - 1
        start += lo
        bounds.append(start)
    return np.asarray(bounds, dtype=np.int64)
