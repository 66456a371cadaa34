"""configs/multi30k_en_fr_best.yaml trains from a clone with the README's command shape, keeps the N best
checkpoints it promises, and `nmt average --run DIR --best N` turns them into one model with the recipe's options."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from test_training import ROOT, run_nmt

from nmt.decoding import SearchConfig
from nmt.inference import Translator

pytestmark = pytest.mark.slow  # trains and starts `nmt` subprocesses

BEST = ROOT / "configs" / "multi30k_en_fr_best.yaml"
# The recipe's shape at a size that trains in seconds: widths shrunk together, so that the tied embedding still
# has the output matrix's width (emb_dim = maxout_units).
SMALL = {"emb_dim": 16, "encoder_dim": 16, "decoder_dim": 16, "attention_dim": 16, "maxout_units": 16}


def test_the_best_recipe_trains_keeps_its_best_checkpoints_and_averages_them(tmp_path: Path) -> None:
    recipe = yaml.safe_load(BEST.read_text())
    network = recipe["model"]["network"]
    assert (network["layer_norm"], network["tie_embeddings"]) == ("encoder", True)
    assert network["context_dropout"] > 0
    kept = next(c["init_args"]["save_top_k"] for c in recipe["trainer"]["callbacks"]
                if c["class_path"].endswith("ModelCheckpoint"))  # fmt: skip
    assert kept == 5

    run = tmp_path / "run"
    shrink = [arg for name, width in SMALL.items() for arg in (f"--model.network.{name}", str(width))]
    fit = run_nmt(
        ["fit", "--config", "configs/multi30k_en_fr_best.yaml", "--trainer.default_root_dir", str(run),
         "--data.cache_dir", str(tmp_path / "cache"), "--data.train.limit", "300", "--data.val.limit", "20",
         "--data.test.limit", "20", "--data.tokenizer.vocab_size", "300", "--trainer.max_epochs", "3",
         "--trainer.enable_progress_bar", "false", *shrink],
        cwd=ROOT,
    )  # fmt: skip
    assert fit.returncode == 0, fit.stderr[-3000:]
    written = sorted(p.name for p in (run / "checkpoints").glob("best-*.ckpt"))
    assert written == ["best-epoch=000.ckpt", "best-epoch=001.ckpt", "best-epoch=002.ckpt"]

    averaged = tmp_path / "best3.ckpt"
    average = run_nmt(["average", "--run", str(run), "--best", "3", "--output", str(averaged)], cwd=tmp_path)
    assert average.returncode == 0, average.stderr[-3000:]
    translator = Translator.load(averaged, device="cpu")
    assert (translator.network.layer_norm, translator.network.tie_embeddings) == ("encoder", True)
    assert translator.network.context_dropout == network["context_dropout"]
    weights = [torch.load(run / "checkpoints" / name, weights_only=True)["state_dict"] for name in written]
    norms = [name for name in weights[0] if name.startswith("model.encoder.") and ".norm." in name]
    assert norms, "no layer-norm weights in the encoder"  # they exist only with the option on
    name = norms[0]
    mean = sum(w[name].double() for w in weights) / len(weights)
    assert torch.allclose(translator.model.state_dict()[name.removeprefix("model.")].double(), mean, atol=1e-7)
    assert len(list(translator.translate(["A man is sleeping."], SearchConfig(beam_size=2)))) == 1
