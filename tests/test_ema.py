"""An exponential moving average of the weights through Lightning's ``EMAWeightAveraging`` callback
(`nmt.training.ema.EMAWeightAveraging`, a line in a config's ``trainer.callbacks``): the checkpoints hold the
averaged weights (what validation, ``nmt export``, ``nmt average`` and every inference command use), and a run
stopped and resumed with ``--ckpt_path last`` ends with the same moving average, weights and update count as the
run that was never interrupted."""

from __future__ import annotations

from pathlib import Path

import lightning
import pytest
import torch
import yaml
from factories import MULTI30K
from lightning.pytorch import callbacks
from test_resume import BATCHES, EPOCHS, resume_config
from test_training import run_nmt

from nmt.cli import main
from nmt.inference import Translator

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not hasattr(callbacks, "EMAWeightAveraging"),
        reason=f"EMAWeightAveraging needs lightning>=2.6; this is lightning {lightning.__version__}",
    ),
]
EMA = {"class_path": "nmt.training.ema.EMAWeightAveraging", "init_args": {"decay": 0.9}}


def ema_config(directory: Path) -> Path:
    """The resume test's run (EPOCHS epochs of BATCHES batches, last.ckpt every few steps, an LR schedule on
    validation BLEU) with the moving average, and the two best checkpoints kept by validation BLEU."""
    path = resume_config(directory)
    config = yaml.safe_load(path.read_text())
    for callback in config["trainer"]["callbacks"]:
        if callback["class_path"] == "lightning.pytorch.callbacks.ModelCheckpoint":
            callback["init_args"] |= {"filename": "best-{epoch:03d}", "save_top_k": 2}
    config["trainer"]["callbacks"].append(EMA)
    path.write_text(yaml.safe_dump(config))
    return path


def test_the_moving_average_is_saved_used_and_resumed_exactly(tmp_path: Path) -> None:
    config = ema_config(tmp_path)
    common = ["fit", "--config", str(config), "--data.data_dir", str(MULTI30K), "--data.cache_dir", str(tmp_path / "c")]
    straight_dir, stops_dir = tmp_path / "straight", tmp_path / "stops"
    straight_dir.mkdir()
    stops_dir.mkdir()
    straight = run_nmt(common, cwd=straight_dir)
    assert straight.returncode == 0, straight.stderr[-3000:]
    # Stopped mid-epoch, at an epoch end (the resume point written when training ends), across an epoch end (its
    # validation and LR step), then run to the end.
    resume = ["--ckpt_path", "last", "--trainer.max_steps"]
    for args in (["--trainer.max_steps", "5"], [*resume, str(BATCHES)], [*resume, str(BATCHES + 2)],
                 ["--ckpt_path", "last"]):  # fmt: skip
        done = run_nmt([*common, *args], cwd=stops_dir)
        assert done.returncode == 0, done.stderr[-3000:]

    checkpoints = straight_dir / "runs" / "tiny" / "checkpoints"
    straight_final = torch.load(checkpoints / "last.ckpt", weights_only=True)
    resumed_final = torch.load(stops_dir / "runs" / "tiny" / "checkpoints" / "last.ckpt", weights_only=True)
    assert straight_final["global_step"] == resumed_final["global_step"] == EPOCHS * BATCHES
    for part in ("state_dict", "current_model_state", "averaging_state"):  # the average, the weights, its count
        assert straight_final[part].keys() == resumed_final[part].keys(), part
        for name, tensor in straight_final[part].items():
            torch.testing.assert_close(resumed_final[part][name], tensor, rtol=1e-6, atol=1e-7, msg=f"{part} {name}")
    assert int(straight_final["averaging_state"]["n_averaged"]) == EPOCHS * BATCHES
    name = "model.output.W_o.weight"  # the run's last checkpoint holds the trained weights beside their average
    assert not torch.equal(straight_final["state_dict"][name], straight_final["current_model_state"][name])

    # What inference reads of a checkpoint is the average: through nmt export and nmt average too.
    best = sorted(checkpoints.glob("best-*.ckpt"))
    assert len(best) == 2
    saved = torch.load(best[0], weights_only=True)
    assert "current_model_state" in saved
    for command in (["export", str(best[0]), str(tmp_path / "ema.ckpt")],
                    ["average", str(best[0]), str(best[0]), "--output", str(tmp_path / "ema.ckpt")]):  # fmt: skip
        assert main(command) == 0
        written = torch.load(tmp_path / "ema.ckpt", weights_only=True)["state_dict"]
        assert all(torch.equal(written[k], saved["state_dict"][k]) for k in written)
    loaded = Translator.load(best[0], device="cpu")
    assert torch.equal(loaded.model.output.W_o.weight, saved["state_dict"][name])
    # The two best checkpoints of a real run, as ModelCheckpoint recorded them.
    assert main(["average", "--run", str(checkpoints.parent), "--best", "2", "--output", str(tmp_path / "b.ckpt")]) == 0
    averaged = torch.load(tmp_path / "b.ckpt", weights_only=True)["nmt"]["exported"]["averaged"]
    assert sorted(origin["from"] for origin in averaged) == [path.name for path in best]
