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
`RELEASE_EVERY_N_STEPS` training steps; each call takes a few milliseconds. Elsewhere than glibc (macOS, musl)
it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

__all__ = ["RELEASE_EVERY_N_STEPS", "release_free_memory"]

RELEASE_EVERY_N_STEPS = 50


@functools.cache
def _malloc_trim():  # noqa: ANN202 (a ctypes function, or None)
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        trim = libc.malloc_trim  # glibc only
    except (OSError, AttributeError, TypeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def release_free_memory() -> bool:
    """Return the memory malloc holds free to the operating system; whether it could be asked to (glibc)."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
