"""`nmt.training.memory`: the allocator settings that keep a training run's memory bounded."""

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
from nmt.training.memory import MMAP_THRESHOLD, bound_heap_growth, release_free_memory

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


def _tokenized_lines_held() -> int:
    """Lines sacrebleu's tokenizer caches hold now (class-level lru_caches, shared by every BLEU object)."""
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a
    from sacrebleu.tokenizers.tokenizer_re import TokenizerRegexp

    return sum(cls.__call__.cache_info().currsize for cls in (Tokenizer13a, TokenizerRegexp))


def test_validation_leaves_no_tokenized_lines_behind(tmp_path: Path) -> None:
    """Each validation's BLEU used to leave its hypotheses and references in sacrebleu's caches (about 2,000
    lines per Multi30k validation, kept all run long: the slow climb of a run's memory)."""
    import lightning as L
    from factories import MULTI30K
    from test_training import TINY

    from nmt.training.cli import train_cli

    held_after: list[int] = []

    class AfterValidation(L.Callback):
        def on_validation_end(self, trainer, pl_module) -> None:
            held_after.append(_tokenized_lines_held())

    options = (
        f"--config {TINY} --data.data_dir {MULTI30K} --data.cache_dir {tmp_path / 'cache'} "
        "--data.train.limit 100 --data.val.limit 30 --trainer.max_steps 5 --trainer.val_check_interval 2 "
        "--trainer.num_sanity_val_steps 0 --trainer.logger false --trainer.enable_checkpointing false "
        f"--trainer.callbacks=[] --trainer.enable_progress_bar false --trainer.default_root_dir {tmp_path}"
    )
    cli = train_cli(options.split(), run=False)
    cli.trainer.callbacks.append(AfterValidation())
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)

    assert len(held_after) == 2  # validated twice, each time computing BLEU over 30 sentences
    assert held_after == [0, 0]
