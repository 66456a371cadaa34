"""Token-bucket sampler: the token budget, a full and disjoint cover of the data across ranks, epochs, resume."""

from __future__ import annotations

import itertools
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lightning.fabric.utilities.data import _set_sampler_epoch
from torch.utils.data import DataLoader

from nmt.data.sampler import TokenBucketSampler


def lengths(n: int, seed: int = 0, high: int = 40) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(1, high, n).astype(np.int32), rng.integers(0, high, n).astype(np.int32)


def cost(batch: list[int], src: np.ndarray, tgt: np.ndarray) -> int:
    """The padded size, transcribed from the definition: sentences x the longest of src and tgt + BOS/EOS."""
    return len(batch) * max(max(int(src[i]), int(tgt[i]) + 1) for i in batch)


def shards(src: np.ndarray, tgt: np.ndarray, replicas: int, epoch: int = 0, **kwargs: object) -> list[list[list[int]]]:
    """Each rank's batches for one epoch."""
    out = []
    for rank in range(replicas):
        sampler = TokenBucketSampler(src_lengths=src, tgt_lengths=tgt, num_replicas=replicas, rank=rank, **kwargs)
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == len(sampler)
        out.append(batches)
    return out


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 300),
    max_tokens=st.integers(1, 300),
    replicas=st.integers(1, 4),
    shuffle=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_budget_cover_and_equal_shares(n: int, max_tokens: int, replicas: int, shuffle: bool, seed: int) -> None:
    src, tgt = lengths(n, seed)
    per_rank = shards(src, tgt, replicas, max_tokens=max_tokens, shuffle=shuffle, seed=seed)
    assert len({len(batches) for batches in per_rank}) == 1  # every rank steps the same number of times
    for batches in per_rank:
        for batch in batches:
            assert batch  # never empty
            assert cost(batch, src, tgt) <= max_tokens or len(batch) == 1  # only a lone over-long pair exceeds
    counts = Counter(i for batches in per_rank for batch in batches for i in batch)
    assert set(counts) == set(range(n))  # nothing dropped
    # Duplicates come only from the batches repeated to even out the ranks: fewer than `replicas` of them.
    distinct = {tuple(batch) for batches in per_rank for batch in batches}
    assert sum(len(b) for b in distinct) == n
    assert sum(map(len, per_rank)) - len(distinct) < replicas


def test_shards_are_disjoint_when_batches_divide_evenly() -> None:
    src, tgt = lengths(1000)
    total = len(TokenBucketSampler(src_lengths=src, tgt_lengths=tgt, max_tokens=400, shuffle=True))
    replicas = next(r for r in (4, 3, 2) if total % r == 0)
    per_rank = shards(src, tgt, replicas, max_tokens=400, shuffle=True)
    seen = [{i for batch in batches for i in batch} for batches in per_rank]
    assert sum(map(len, seen)) == 1000 and set().union(*seen) == set(range(1000))


@settings(max_examples=40, deadline=None)
@given(n=st.integers(4, 300), max_tokens=st.integers(1, 300), replicas=st.integers(1, 4), seed=st.integers(0, 99))
def test_evaluation_shards_decode_every_sentence_exactly_once(
    n: int, max_tokens: int, replicas: int, seed: int
) -> None:
    src, tgt = lengths(n, seed)
    per_rank = shards(src, tgt, replicas, max_tokens=max_tokens, shuffle=False, shard="sentences")
    flat = [i for batches in per_rank for batch in batches for i in batch]
    assert sorted(flat) == list(range(n))  # disjoint and covering: no repeated batch, nothing dropped
    assert all(batches for batches in per_rank)  # every rank has work (Lightning refuses an empty rank)
    for batches in per_rank:
        assert all(cost(batch, src, tgt) <= max_tokens or len(batch) == 1 for batch in batches)
    shares = sorted(len([i for batch in batches for i in batch]) for batches in per_rank)
    assert shares[-1] - shares[0] <= 1  # every R-th sentence: shares differ by one sentence at most


def test_drop_last_trims_to_a_multiple_of_the_ranks() -> None:
    src, tgt = lengths(500)
    total = len(TokenBucketSampler(src_lengths=src, tgt_lengths=tgt, max_tokens=300, shuffle=False))
    per_rank = shards(src, tgt, 3, max_tokens=300, shuffle=True, drop_last=True)
    assert [len(b) for b in per_rank] == [total // 3] * 3
    assert len({tuple(batch) for batches in per_rank for batch in batches}) == 3 * (total // 3)


def test_similar_lengths_share_a_batch_and_unshuffled_order_is_sorted() -> None:
    src, tgt = lengths(2000)
    width = np.maximum(src, tgt + 1)
    batches = list(TokenBucketSampler(src_lengths=src, tgt_lengths=tgt, max_tokens=500, shuffle=False))
    flat = [i for batch in batches for i in batch]
    assert flat == sorted(range(2000), key=lambda i: (width[i], i))  # stable length order
    shuffled = list(TokenBucketSampler(src_lengths=src, tgt_lengths=tgt, max_tokens=500, shuffle=True))
    # Shuffled batches are still runs of the width-sorted order: their width ranges do not interleave.
    ranges = sorted((int(width[b].min()), int(width[b].max())) for b in shuffled)
    assert all(high <= next_low for (_, high), (next_low, _) in itertools.pairwise(ranges))


def test_over_long_pairs_form_their_own_batch() -> None:
    src = np.array([5, 500, 5, 5], dtype=np.int32)
    tgt = np.array([5, 5, 700, 5], dtype=np.int32)
    batches = list(TokenBucketSampler(src_lengths=src, tgt_lengths=tgt, max_tokens=100, shuffle=False))
    assert batches == [[0, 3], [1], [2]]


def test_max_sentences_caps_batches() -> None:
    src, tgt = lengths(300, high=3)
    batches = list(
        TokenBucketSampler(src_lengths=src, tgt_lengths=tgt, max_tokens=10_000, max_sentences=32, shuffle=True)
    )
    assert max(map(len, batches)) == 32 and sum(map(len, batches)) == 300


def test_epochs_differ_and_the_seed_makes_them_reproducible() -> None:
    src, tgt = lengths(1000)

    def epoch(e: int, seed: int = 7) -> list[list[int]]:
        sampler = TokenBucketSampler(src_lengths=src, tgt_lengths=tgt, max_tokens=400, shuffle=True, seed=seed)
        sampler.set_epoch(e)
        return list(sampler)

    assert epoch(0) == epoch(0)
    assert epoch(0) != epoch(1)
    assert epoch(0, seed=8) != epoch(0)
    # Not only the batch order changes: ties in length are broken anew, so batches hold new neighbours.
    assert {tuple(sorted(b)) for b in epoch(0)} != {tuple(sorted(b)) for b in epoch(1)}


def test_mid_epoch_resume_yields_the_remaining_batches() -> None:
    src, tgt = lengths(1000)

    def make() -> TokenBucketSampler:
        return TokenBucketSampler(
            src_lengths=src, tgt_lengths=tgt, max_tokens=400, shuffle=True, num_replicas=2, rank=1
        )

    first = make()
    first.set_epoch(3)
    full = list(first)
    it = iter(first)
    consumed = [next(it) for _ in range(5)]
    state = first.state_dict()
    assert state == {"epoch": 3, "batches_yielded": 5}

    resumed = make()
    resumed.load_state_dict(state)
    resumed.set_epoch(3)  # what Lightning calls at the start of the resumed epoch: keeps the position
    assert len(resumed) == len(full)  # the epoch's length, which Lightning counts from the restored position
    assert consumed + list(resumed) == full
    assert resumed.state_dict() == {"epoch": 3, "batches_yielded": len(full)}
    resumed.set_epoch(4)  # the next epoch starts from its beginning
    assert resumed.state_dict() == {"epoch": 4, "batches_yielded": 0}
    assert len(list(resumed)) == len(full)


def test_lightning_sets_the_epoch_of_a_batch_sampler() -> None:
    src, tgt = lengths(100)
    sampler = TokenBucketSampler(src_lengths=src, tgt_lengths=tgt, max_tokens=200, shuffle=True)
    loader = DataLoader(range(100), batch_sampler=sampler)
    _set_sampler_epoch(loader, 5)  # Lightning's per-epoch hook
    assert sampler.epoch == 5


def test_invalid_arguments() -> None:
    src, tgt = lengths(10)
    with pytest.raises(ValueError, match="max_tokens"):
        TokenBucketSampler(src_lengths=src, tgt_lengths=tgt, max_tokens=0, shuffle=False)
    with pytest.raises(ValueError, match="1-D"):
        TokenBucketSampler(src_lengths=src, tgt_lengths=tgt[:5], max_tokens=10, shuffle=False)
    with pytest.raises(ValueError, match="shard"):
        TokenBucketSampler(src_lengths=src, tgt_lengths=tgt, max_tokens=10, shuffle=False, shard="pairs")
    with pytest.raises(ValueError, match="rank"):
        TokenBucketSampler(src_lengths=src, tgt_lengths=tgt, max_tokens=10, shuffle=False, num_replicas=2, rank=2)
    empty = np.zeros(0, dtype=np.int32)
    assert list(TokenBucketSampler(src_lengths=empty, tgt_lengths=empty, max_tokens=10, shuffle=True)) == []
