"""A checkpoint written by an earlier nmt keeps working: it translates and scores as it did, and `nmt fit
--ckpt_path` resumes from it exactly.

``tests/data/nmt-0.1.0-last.ckpt`` is the ``last.ckpt`` of one epoch (7 updates) of `nmt fit` as nmt 0.1.0 wrote
it, before training moved into ``nmt.training``: ``configs/tiny.yaml`` as it then was (its callbacks then named
``nmt.resume.ResumeCheckpoint``, ``nmt.callbacks.*``; Adam at 0.003, validation on the val split) with
``max_epochs: 1``, ``log_every_n_steps: 1``, the network of `NETWORK`, 200 training and 20 validation pairs and no
test set, and for size a 120-piece SentencePiece model trained with ``normalization_rule_name=identity`` (1.5 KB
instead of 240 KB; it is stored in the checkpoint).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import yaml
from test_training import TINY, metrics, run_nmt

from nmt.cli import main
from nmt.inference import Translator
from nmt.training.resume import ResumeCheckpoint

OLD_CHECKPOINT = Path(__file__).parent / "data" / "nmt-0.1.0-last.ckpt"
NETWORK = {"emb_dim": 8, "encoder_dim": 8, "decoder_dim": 8, "attention_dim": 8, "maxout_units": 8, "dropout": 0.1}
SOURCES = ["A man sleeping in a green room on a couch.", "Two dogs play in the snow."]
BATCHES = 7  # a training epoch of the checkpoint's run


def test_old_checkpoint_translates_as_it_did(tmp_path: Path, capsys) -> None:
    source = tmp_path / "in.txt"
    source.write_text("\n".join(SOURCES) + "\n")
    args = ["--checkpoint", str(OLD_CHECKPOINT), "--input", str(source), "--beam-size", "3", "--scores"]
    status = main(["translate", "--no-progress", *args, "--max-length-a", "0", "--max-length-b", "8"])
    # What nmt 0.1.0 printed for this checkpoint (an untrained model: one piece repeated).
    assert (status, capsys.readouterr().out) == (0, "aaoooooo\t-38.0160\naaoooooo\t-38.0163\n")


def test_old_checkpoint_scores_as_it_did() -> None:
    scores = Translator.load(OLD_CHECKPOINT).score(SOURCES, ["Un homme dort.", "Deux chiens jouent dans la neige."])
    assert scores.n_tokens.tolist() == [9, 21]
    assert scores.logprob.tolist() == pytest.approx([-42.82505608, -100.13390017], rel=1e-6)


def test_resume_checkpoint_finds_its_state_in_an_old_checkpoint() -> None:
    callbacks = torch.load(OLD_CHECKPOINT, weights_only=True)["callbacks"]
    # The run's checkpoint directory: the state is the callback's of the run that wrote it, and of none other.
    assert ResumeCheckpoint(dirpath="/tmp/legacy/run/checkpoints").state_key in callbacks
    assert ResumeCheckpoint(dirpath="/tmp/legacy/run/checkpoints", every_n_train_steps=5).state_key not in callbacks


def run_config(directory: Path) -> Path:
    """The configuration of the checkpoint's run (see the module docstring), for 2 epochs, in `directory`."""
    spm_model = directory / "spm.model"
    spm_model.write_bytes(torch.load(OLD_CHECKPOINT, weights_only=True)["nmt"]["tokenizer"]["src"])
    config = yaml.safe_load(TINY.read_text())
    config["trainer"] |= {"max_epochs": 2, "log_every_n_steps": 1, "enable_progress_bar": False}
    config["trainer"]["default_root_dir"] = str(directory / "run")
    config["model"]["network"] |= NETWORK
    config["optimizer"]["init_args"]["lr"] = 0.003
    data = config["data"]
    data["data_dir"] = os.fspath(TINY.parents[1] / "data" / "multi30k")
    data["train"]["limit"] = 200
    data["val"] = {"src": "val.en.gz", "tgt": "val.fr.gz", "limit": 20}
    del data["test"]
    data["tokenizer"] = {"model": str(spm_model)}
    data["cache_dir"] = str(directory / "cache")
    path = directory / "old.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.slow
def test_fit_resumes_an_old_checkpoint_exactly(tmp_path: Path) -> None:
    """Resumed for its second epoch, the old checkpoint's run retraces the run that was never interrupted: the same
    steps, the same losses (to float32 rounding: the checkpoint was computed on another machine)."""
    resumed, whole = tmp_path / "resumed", tmp_path / "whole"
    for directory in (resumed, whole):
        directory.mkdir()
    result = run_nmt(["fit", "--config", str(run_config(resumed)), "--ckpt_path", str(OLD_CHECKPOINT)], cwd=resumed)
    assert result.returncode == 0, result.stderr[-3000:]
    last = torch.load(resumed / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert (last["epoch"], last["global_step"]) == (2, 2 * BATCHES)

    result = run_nmt(["fit", "--config", str(run_config(whole))], cwd=whole)
    assert result.returncode == 0, result.stderr[-3000:]

    def losses(directory: Path) -> dict[int, float]:
        return {int(row["step"]): float(row["train/loss"]) for row in metrics(directory / "run") if row["train/loss"]}

    expected = {step: loss for step, loss in losses(whole).items() if step >= BATCHES}
    assert sorted(losses(resumed)) == sorted(expected) == list(range(BATCHES, 2 * BATCHES))
    assert losses(resumed) == pytest.approx(expected, rel=1e-5)
