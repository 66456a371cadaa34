"""Shared test setup: Hugging Face offline, where the real Multi30k corpus lies, and the tiny checkpoints."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from factories import tiny_checkpoint

# Tests must never reach the network (CI has none); set before anything imports `datasets`.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# Test models are tiny: one thread avoids thread start-up and oversubscription costs (also in subprocesses).
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

# The English and French text of Multi30k ships with the repository (data/multi30k); tests.factories reads the
# first lines of its German from tests/data/multi30k.
MULTI30K = Path(__file__).resolve().parents[1] / "data" / "multi30k"


@pytest.fixture(scope="session")
def multi30k() -> Path:
    """The repository's Multi30k directory ({train,val,test_2016_flickr}.{en,fr}.gz)."""
    assert MULTI30K.is_dir(), f"Multi30k not found at {MULTI30K} (data/multi30k of the repository)"
    return MULTI30K


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models gain nothing from threads, and on a busy machine 2 threads can be many times slower. Commands
    run in-process set their own thread count (--threads): restore it after each test module."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory) -> Callable[..., Path]:
    """`factories.tiny_checkpoint(**options)`, made once a session for each set of options: the tests only read
    them (a test that changes a checkpoint makes its own)."""
    directory = tmp_path_factory.mktemp("checkpoints")
    made: dict[tuple, Path] = {}

    def checkpoint(**options) -> Path:
        key = tuple(sorted(options.items()))
        if key not in made:  # a directory each: the file name says the architecture, cell, languages and seed only
            (where := directory / str(len(made))).mkdir()
            made[key] = tiny_checkpoint(where, **options)
        return made[key]

    return checkpoint


@pytest.fixture(scope="session")
def checkpoint(tiny_checkpoints) -> Path:
    """The tiny RNNsearch (seed 0, English to French) the commands' tests run."""
    return tiny_checkpoints(architecture="rnnsearch")
