"""``nmt export``: an inference-only checkpoint that every inference command reads as it reads the original."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nmt.cli import main
from nmt.decoding import SearchConfig
from nmt.inference import Translator
from tests.factories import multi30k_lines, tiny_checkpoint

LINES = multi30k_lines("test_2016_flickr", "en", 6)


@pytest.fixture(scope="module")
def training_checkpoint(tmp_path_factory) -> Path:
    """A tiny checkpoint with what `nmt fit` adds besides the weights: Adam's moments, loops, counters."""
    path = tiny_checkpoint(tmp_path_factory.mktemp("ckpt"), architecture="rnnsearch", seed=5)
    ckpt = torch.load(path, weights_only=True)
    moments = {i: {"exp_avg": torch.randn_like(t), "exp_avg_sq": torch.rand_like(t)} for i, t in
               enumerate(ckpt["state_dict"].values())}  # fmt: skip
    ckpt |= {"optimizer_states": [{"state": moments}], "loops": {"fit_loop": {}}, "epoch": 3, "global_step": 120}
    torch.save(ckpt, path)
    return path


def translations(path: Path, dtype: str = "float32") -> list[str]:
    translator = Translator.load(path, device="cpu", dtype=dtype)
    return [t.text for t in translator.translate(LINES, SearchConfig(beam_size=3))]


def test_an_exported_checkpoint_translates_as_the_original_without_the_training_state(training_checkpoint, tmp_path):
    lean = tmp_path / "lean.ckpt"
    assert main(["export", str(training_checkpoint), str(lean)]) == 0
    assert translations(lean) == translations(training_checkpoint)
    exported = torch.load(lean, weights_only=True)
    assert set(exported) == {"state_dict", "nmt"}  # no optimizer_states, loops or callbacks
    assert exported["nmt"]["exported"] == {"dtype": "float32", "from": training_checkpoint.name, "epoch": 3,
                                           "global_step": 120}  # fmt: skip
    weight_bytes = sum(t.numel() * t.element_size() for t in exported["state_dict"].values())
    # Adam's two moments (twice the weights) are gone; the SentencePiece models are what else a tiny file holds.
    assert lean.stat().st_size < training_checkpoint.stat().st_size - 1.9 * weight_bytes
    scores = [Translator.load(p, device="cpu").score(LINES, LINES).logprob for p in (lean, training_checkpoint)]
    assert scores[0].tolist() == scores[1].tolist()


def test_a_bfloat16_export_is_half_the_size_and_loads_in_either_dtype(training_checkpoint, tmp_path):
    full, half = tmp_path / "full.ckpt", tmp_path / "half.ckpt"
    assert main(["export", str(training_checkpoint), str(full)]) == 0
    assert main(["export", str(training_checkpoint), str(half), "--dtype", "bfloat16"]) == 0
    weights = torch.load(half, weights_only=True)["state_dict"]
    assert {t.dtype for t in weights.values() if t.is_floating_point()} == {torch.bfloat16}
    weight_bytes = sum(t.numel() * t.element_size() for t in weights.values())
    assert half.stat().st_size < full.stat().st_size - 0.9 * weight_bytes  # each weight in 2 bytes instead of 4
    assert translations(half, "bfloat16") == translations(full, "bfloat16")  # bf16 weights either way
    assert len(translations(half)) == len(LINES)  # float32 inference from bfloat16-rounded weights


def test_training_refuses_an_exported_checkpoint_in_one_line(training_checkpoint, tmp_path, capsys):
    lean = tmp_path / "lean.ckpt"
    assert main(["export", str(training_checkpoint), str(lean)]) == 0
    capsys.readouterr()
    assert main(["fit", "--config", "configs/tiny.yaml", "--ckpt_path", str(lean)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"nmt fit: error: {lean}: an inference-only file written by nmt export (weights and vocabularies, no training "
        "state): the inference commands read it; give --ckpt_path the training checkpoint it was exported from"
    )


def test_a_bad_checkpoint_or_output_writes_nothing(training_checkpoint, tmp_path, capsys):
    broken = tmp_path / "broken.ckpt"
    broken.write_bytes(b"not a checkpoint")
    out = tmp_path / "out.ckpt"
    assert main(["export", str(broken), str(out)]) == 2
    assert capsys.readouterr().err.startswith(f"nmt export: error: {broken}: not a readable checkpoint")
    assert list(tmp_path.iterdir()) == [broken]  # no output, no partial file
    before = training_checkpoint.read_bytes()
    assert main(["export", str(training_checkpoint), str(training_checkpoint)]) == 2
    assert "writing it would destroy that input" in capsys.readouterr().err
    assert training_checkpoint.read_bytes() == before
    assert main(["export", str(training_checkpoint), str(tmp_path / "no" / "such" / "dir.ckpt")]) == 2
    assert main(["export", str(training_checkpoint), str(out), "--dtype", "int4"]) == 2
    assert "--dtype" in capsys.readouterr().err
