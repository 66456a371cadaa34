"""Giving freed memory back to the operating system during training.

A training step allocates and frees tensors whose sizes follow the batch's shape, which changes from batch to
batch (token buckets of every length), and validation's beam search adds shapes of its own. glibc's malloc
keeps what is freed for reuse, in several arenas, and returns it to the system only from the top of each heap:
the resident memory of a run climbs epoch after epoch although the tensors alive stay the same. Measured on
`multi30k_en_fr_attention.yaml` in bf16-mixed (epochs of 60 batches, 300 validation sentences): resident
1,587, 1,742, 1,823, 1,872, 2,097 MiB after the validations of epochs 0-4, and 950, 1,099, 1,121, 1,132,
1,106 MiB once the free memory was handed back, with the same 179 tensors alive each time: retention, not a
leak.

`release_free_memory` asks malloc to return every free page (``malloc_trim``: whole free pages inside the
heaps too, not only their tops). The LightningModule calls it after each validation and every
`RELEASE_EVERY_N_STEPS` training steps; each call takes a few milliseconds.

That bounds what stays after each epoch, not the peak within one: between two trims the heaps grow again by
fragments that fit no new tensor. glibc serves an allocation from ``mmap`` (returned to the system as soon as
it is freed) only above its *mmap threshold*, and it raises that threshold (up to 32 MiB) every time a large
block is freed, so after the first steps almost every tensor of a step lives in the heaps. `bound_heap_growth`
fixes the threshold at `MMAP_THRESHOLD` (which also stops it from moving): tensors of 4 MiB and more come from
``mmap`` and go back at once. Measured over three epochs of 100 steps of the RNNsearch config in bf16-mixed,
the peak within each epoch went from 1,796 / 2,278 / 2,414 MiB to 1,642 / 1,926 / 1,954 MiB at no cost in
speed; 1 MiB bounds it further (1,263 / 1,609 / 1,600 MiB) but costs about 15 % of the training speed (every
mid-size tensor of a step is then a fresh mmap to fault in). The LightningModule applies it when training
starts. Elsewhere than glibc (macOS, musl) both do nothing.

What was left was a slow climb of about 2.4 MiB per epoch in float32 (+4.9 % over 15 epochs), with the tensors
alive constant but some 4,000 more Python objects after each epoch. They were sacrebleu's: its tokenizers keep
every line they tokenize in an `lru_cache` on the tokenizer class (2^16 entries, keyed by the tokenizer object
and the line), and each validation scores new hypotheses with new BLEU objects, so about 2,000 entries (and two
tokenizer objects) stayed after every Multi30k validation, for as long as a run lasts. `forget_tokenized_lines`
empties those caches; the LightningModule calls it once each validation's BLEU is computed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

__all__ = [
    "MMAP_THRESHOLD",
    "RELEASE_EVERY_N_STEPS",
    "bound_heap_growth",
    "forget_tokenized_lines",
    "release_free_memory",
]

RELEASE_EVERY_N_STEPS = 50
MMAP_THRESHOLD = 4 << 20
"""Allocations of at least this many bytes bypass malloc's heaps (see the module docstring)."""
_M_MMAP_THRESHOLD = -3  # mallopt's parameter number (glibc's malloc.h)


@functools.cache
def _glibc(name: str):
    try:
        return getattr(ctypes.CDLL(ctypes.util.find_library("c")), name)  # glibc only
    except (OSError, AttributeError, TypeError):
        return None


def _malloc_trim():
    trim = _glibc("malloc_trim")
    if trim is not None:
        trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def bound_heap_growth(threshold: int = MMAP_THRESHOLD) -> bool:
    """Serve allocations of `threshold` bytes and more from mmap, for the rest of the process (see the module
    docstring); whether malloc accepted it (glibc)."""
    mallopt = _glibc("mallopt")
    if mallopt is None:
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt(_M_MMAP_THRESHOLD, threshold) == 1


def release_free_memory() -> bool:
    """Return the memory malloc holds free to the operating system; whether it could be asked to (glibc)."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


def forget_tokenized_lines() -> int:
    """Empty the line caches of sacrebleu's tokenizers (see the module docstring); how many lines they held."""
    from sacrebleu.tokenizers.tokenizer_base import BaseTokenizer

    held = 0
    pending, seen = [BaseTokenizer], set()
    while pending:  # every tokenizer class imported so far (13a wraps a regexp tokenizer, each cached)
        cls = pending.pop()
        if cls in seen:
            continue
        seen.add(cls)
        pending += cls.__subclasses__()
        cache = cls.__dict__.get("__call__")
        if hasattr(cache, "cache_clear"):
            held += cache.cache_info().currsize
            cache.cache_clear()
    return held
