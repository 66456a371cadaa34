"""DDP on this CPU: a real 2-process `nmt fit` (gloo) of tiny.yaml trains and validates; each rank trains on
its own share of the epoch, the same number of batches; validation decodes every sentence exactly once across
the ranks, and BLEU and loss are the same on every rank and equal to those of one process.

The runs are subprocesses: Lightning's "ddp" strategy starts the other ranks by re-running the command line,
which under pytest would be pytest itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
from factories import MULTI30K
from test_training import TINY

ROOT = Path(__file__).resolve().parents[1]
PROBE_DIR = "NMT_TEST_PROBE_DIR"
pytestmark = pytest.mark.slow
VAL_LINES = 60


class RankProbe(L.Callback):
    """Writes what this rank trained on and what its validation saw to ``$NMT_TEST_PROBE_DIR/rank<R>.json``."""

    def __init__(self) -> None:
        self.train: list[list[int]] = []
        self.val: list[int] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.train.append(batch.indices.tolist())

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self.val = []

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self.val.extend(batch.indices.tolist())

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        record = {
            "world_size": trainer.world_size,
            "train_batches": self.train,
            "val_indices": self.val,
            "hypotheses": dict(pl_module._hyps),  # what this rank decoded: {row: text}
            "val_bleu": float(trainer.callback_metrics["val/bleu"]),
            "val_chrf": float(trainer.callback_metrics["val/chrf"]),
            "val_loss": float(trainer.callback_metrics["val/loss"]),
        }
        Path(os.environ[PROBE_DIR], f"rank{trainer.global_rank}.json").write_text(json.dumps(record))


def run(args: list[str], cwd: Path, probe: Path, *, devices: int) -> list[dict]:
    """`nmt` on `devices` CPU processes; the probe records of its ranks."""
    probe.mkdir(parents=True)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests")]), **{PROBE_DIR: str(probe)})
    env["NMT_ALLOW_ANY_CLASS_PATH"] = "1"  # the probe callback lives in the tests
    ddp = ["--trainer.strategy", "ddp"] if devices > 1 else []
    result = subprocess.run(
        [sys.executable, "-m", "nmt", *args, "--trainer.accelerator", "cpu", "--trainer.devices", str(devices), *ddp,
         "--trainer.callbacks+=test_distributed.RankProbe", "--trainer.enable_progress_bar", "false"],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    (probe / "stderr.txt").write_text(result.stderr)
    records = [json.loads((probe / f"rank{r}.json").read_text()) for r in range(devices)]
    assert all(r["world_size"] == devices for r in records)
    return records


@pytest.fixture(scope="module")
def ddp_fit(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str], list[dict]]:
    """One epoch of tiny.yaml on 400 training pairs, on 2 processes."""
    work = tmp_path_factory.mktemp("ddp")
    common = [
        "--config", str(TINY), "--data.data_dir", str(MULTI30K), "--data.cache_dir", str(work / "cache"),
        "--data.train.limit", "400", "--data.val.limit", str(VAL_LINES),
    ]  # fmt: skip
    # A small learning rate keeps the model near its random initialisation: it decodes long, varied
    # hypotheses (after one epoch at tiny.yaml's rate it learns to stop at once), a strict test of decoding.
    fit = ["fit", *common, "--trainer.max_epochs", "1", "--optimizer.init_args.lr", "1e-5"]
    records = run(fit, work, work / "probe-fit", devices=2)
    return work, common, records


def test_two_processes_train_on_distinct_equal_shares_and_validate(ddp_fit) -> None:
    work, _, (rank0, rank1) = ddp_fit
    assert len(rank0["train_batches"]) == len(rank1["train_batches"]) > 1  # the same number of steps
    seen0 = [i for batch in rank0["train_batches"] for i in batch]
    seen1 = [i for batch in rank1["train_batches"] for i in batch]
    # Distinct shares: only a batch repeated to even out the count may appear on both ranks.
    shared = set(seen0) & set(seen1)
    assert len(shared) <= max(map(len, rank0["train_batches"] + rank1["train_batches"]))
    assert len(set(seen0) | set(seen1)) > 300  # together they cover the (length-filtered) 400 pairs
    # Validation: each sentence decoded exactly once across the ranks, the same scores on both.
    assert sorted(rank0["val_indices"] + rank1["val_indices"]) == list(range(VAL_LINES))
    assert rank0["val_bleu"] == rank1["val_bleu"] and rank0["val_loss"] == rank1["val_loss"]
    assert (work / "runs" / "tiny" / "checkpoints" / "last.ckpt").is_file()


def test_two_processes_validate_like_one(ddp_fit) -> None:
    work, common, _ = ddp_fit
    checkpoint = ["--ckpt_path", str(work / "runs" / "tiny" / "checkpoints" / "last.ckpt")]
    (alone,) = run(["validate", *common, *checkpoint], work, work / "probe-1", devices=1)
    pair = run(["validate", *common, *checkpoint], work, work / "probe-2", devices=2)
    assert sorted(alone["val_indices"]) == list(range(VAL_LINES))
    # Each sentence decoded the same in its half of the data as in the whole (padding differs, not results).
    assert pair[0]["hypotheses"] | pair[1]["hypotheses"] == alone["hypotheses"]
    assert len(set(alone["hypotheses"].values())) > 1  # real translations, not one repeated string
    for record in pair:
        assert (record["val_bleu"], record["val_chrf"]) == (alone["val_bleu"], alone["val_chrf"])
        assert record["val_loss"] == pytest.approx(alone["val_loss"], rel=1e-6)


def test_partial_validation_scores_what_was_decoded_alike_on_every_rank(ddp_fit) -> None:
    """`limit_val_batches` decodes a subset: BLEU over those sentences (said in the log), the same on every
    rank, so early stopping and the best checkpoint decide alike; before, a RuntimeError ended the run."""
    work, common, _ = ddp_fit
    checkpoint = ["--ckpt_path", str(work / "runs" / "tiny" / "checkpoints" / "last.ckpt")]
    small = ["--data.val_batch_tokens", "300", "--trainer.limit_val_batches", "1"]  # one batch of several per rank
    pair = run(["validate", *common, *checkpoint, *small], work, work / "probe-p", devices=2)
    decoded = sorted(pair[0]["val_indices"] + pair[1]["val_indices"])
    assert 0 < len(decoded) < VAL_LINES and len(set(decoded)) == len(decoded)
    assert {int(i) for record in pair for i in record["hypotheses"]} == set(decoded)
    assert (pair[0]["val_bleu"], pair[0]["val_chrf"]) == (pair[1]["val_bleu"], pair[1]["val_chrf"])
    assert f"over {len(decoded)} of {VAL_LINES} sentences" in (work / "probe-p" / "stderr.txt").read_text()
