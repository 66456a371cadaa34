"""`nmt.memory`: the allocator settings that keep a training run's memory bounded."""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # starts a Python subprocess: not in the fast tier

ROOT = Path(__file__).resolve().parents[1]
glibc = pytest.mark.skipif(
    not hasattr(ctypes.CDLL(ctypes.util.find_library("c")), "mallinfo2"), reason="glibc's malloc only"
)

# In a fresh process (mallopt is for the whole process): how many bytes a tensor just above MMAP_THRESHOLD adds
# to malloc's mmapped blocks, once glibc has raised its dynamic threshold by the free of a larger block, before
# and after bound_heap_growth().
PROBE = """
import ctypes, ctypes.util, json, torch
from nmt.memory import MMAP_THRESHOLD, bound_heap_growth, release_free_memory

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]

libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.mallinfo2.restype = MallInfo2

def mapped_by(size):
    before = libc.mallinfo2().hblkhd
    tensor = torch.empty(size, dtype=torch.uint8)
    return libc.mallinfo2().hblkhd - before, tensor

big = torch.empty(4 * MMAP_THRESHOLD, dtype=torch.uint8)
del big  # glibc raises its mmap threshold to that size
large = MMAP_THRESHOLD + (1 << 20)
default, kept = mapped_by(large)
accepted = bound_heap_growth()
bounded, kept2 = mapped_by(large)
small, kept3 = mapped_by(MMAP_THRESHOLD // 2)
print(json.dumps({"default": default, "accepted": accepted, "bounded": bounded, "small": small, "large": large,
                  "trimmed": release_free_memory()}))
"""


@glibc
def test_large_tensors_bypass_the_heaps_once_heap_growth_is_bounded():
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    result = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120, env=env, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr[-2000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["default"] == 0, found  # glibc's own rule: served from a heap, kept there when freed
    assert found["accepted"] is True and found["trimmed"] is True
    assert found["bounded"] >= found["large"], found  # now an mmap of its own, handed back on free
    assert found["small"] == 0, found  # below the threshold: the heaps, as before
