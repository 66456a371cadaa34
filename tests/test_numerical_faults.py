"""NaN and infinity: a non-finite training loss is caught at its step (skipped with a warning, or the run stops),
no checkpoint with non-finite weights is ever written, and a model whose output overflows is an error at
inference, never lines of garbage."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from factories import multi30k_lines, tiny_checkpoint, tiny_network, tiny_tokenizer
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader

import nmt.training.module
from nmt import cli
from nmt.checkpoint import load_model
from nmt.data.batch import collate
from nmt.errors import TrainingDiverged
from nmt.training import cli as training_cli
from nmt.training.module import TranslationModule

POISONED = 2  # the batch whose loss is made NaN


class Module(TranslationModule):
    """The LightningModule with an optimizer (LightningCLI gives it one from the config) and a loss that is
    NaN on the batches listed in `poisoned`."""

    poisoned: frozenset[int] = frozenset({POISONED})

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=0.01)

    def token_loss(self, batch, *, label_smoothing: float = 0.0):
        loss, n = super().token_loss(batch, label_smoothing=label_smoothing)
        if self.training and int(batch.indices[0]) // 8 in self.poisoned:
            loss = loss * float("nan")  # still in the graph: a backward pass would spread NaN to every weight
        return loss, n


@pytest.fixture(scope="module")
def batches() -> list:
    tokenizer = tiny_tokenizer()
    src, tgt = multi30k_lines("train", "en", 48), multi30k_lines("train", "fr", 48)
    rows = list(zip(tokenizer.encode_src(src), tokenizer.encode_tgt(tgt), strict=True))
    return [collate(rows[i : i + 8], range(i, i + 8)) for i in range(0, 48, 8)]  # batch k holds rows 8k…8k+7


class WeightWatcher(L.Callback):
    """The weights before and after every training batch."""

    def __init__(self) -> None:
        self.before: dict[int, list[torch.Tensor]] = {}
        self.after: dict[int, list[torch.Tensor]] = {}

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        self.before[batch_idx] = [p.detach().clone() for p in module.parameters()]

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.after[batch_idx] = [p.detach().clone() for p in module.parameters()]


def train(
    batches, directory: Path, *, nan_policy: str = "skip", callbacks=(), module_class=None
) -> tuple[Module, Path]:
    tokenizer = tiny_tokenizer()
    module = (module_class or Module)(
        network=tiny_network(),
        src_vocab_size=tokenizer.src_vocab_size,
        tgt_vocab_size=tokenizer.tgt_vocab_size,
        nan_policy=nan_policy,
        data=SimpleNamespace(tokenizer=tokenizer),  # the datamodule in `nmt fit`: here only what a checkpoint saves
    )
    last = ModelCheckpoint(dirpath=directory, filename="last", every_n_train_steps=1, enable_version_counter=False)
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[*callbacks, last],
    )
    torch.manual_seed(0)
    trainer.fit(module, train_dataloaders=DataLoader(batches, batch_size=None, collate_fn=lambda batch: batch))
    return module, directory / "last.ckpt"


def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_a_nan_loss_skips_its_step_and_nothing_else(batches, tmp_path):
    watcher = WeightWatcher()
    with pytest.warns(UserWarning, match=rf"loss nan at step {POISONED} \(epoch 0, batch {POISONED}\): step skipped"):
        module, last = train(batches, tmp_path, callbacks=[watcher])
    assert same(watcher.before[POISONED], watcher.after[POISONED]), "the NaN step changed the weights"
    for k in set(range(len(batches))) - {POISONED}:
        assert not same(watcher.before[k], watcher.after[k]), f"batch {k} should have been a normal step"
    assert module.skipped_steps == 1
    assert all(torch.isfinite(p).all() for p in module.parameters())
    saved = torch.load(last, weights_only=True)
    assert all(torch.isfinite(t).all() for t in saved["state_dict"].values())
    load_model(last)  # the checkpoint is usable


def test_nan_policy_stop_ends_the_run_and_keeps_the_last_good_checkpoint(batches, tmp_path):
    with pytest.raises(TrainingDiverged, match=rf"loss nan at step {POISONED} .*\(model\.nan_policy: stop\)"):
        train(batches, tmp_path, nan_policy="stop")
    saved = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert saved["global_step"] == POISONED  # written after the last good step, not overwritten since
    assert all(torch.isfinite(t).all() for t in saved["state_dict"].values())


def test_a_loss_that_stays_nan_stops_the_run(batches, tmp_path, monkeypatch):
    monkeypatch.setattr(nmt.training.module, "MAX_SKIPPED_IN_A_ROW", 2)
    monkeypatch.setattr(Module, "poisoned", frozenset(range(1, 6)))
    with pytest.warns(UserWarning, match="step skipped"):
        with pytest.raises(
            TrainingDiverged,
            match=r"not finite for 3 steps in a row, the last: loss nan at step 3 \(epoch 0, batch 3\)",
        ):
            train(batches, tmp_path)


class _OverflowInBackward(torch.autograd.Function):
    """Identity forward, infinite gradient: a finite loss whose backward pass overflows."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("inf")


class GradientOverflowModule(Module):
    def token_loss(self, batch, *, label_smoothing: float = 0.0):
        loss, n = TranslationModule.token_loss(self, batch, label_smoothing=label_smoothing)  # finite
        if self.training and int(batch.indices[0]) // 8 in self.poisoned:
            loss = _OverflowInBackward.apply(loss)
        return loss, n


@pytest.mark.parametrize("nan_policy", ["skip", "stop"])
def test_a_finite_loss_with_an_overflowing_gradient_is_caught_at_its_step(batches, tmp_path, nan_policy):
    if nan_policy == "stop":
        with pytest.raises(TrainingDiverged, match=rf"gradient norm (inf|nan) at step {POISONED} .*nan_policy: stop"):
            train(batches, tmp_path, nan_policy="stop", module_class=GradientOverflowModule)
        assert torch.load(tmp_path / "last.ckpt", weights_only=True)["global_step"] == POISONED
        return
    watcher = WeightWatcher()
    with pytest.warns(UserWarning, match=rf"gradient norm (inf|nan) at step {POISONED} \(epoch 0\): step skipped"):
        module, last = train(batches, tmp_path, callbacks=[watcher], module_class=GradientOverflowModule)
    assert same(watcher.before[POISONED], watcher.after[POISONED]), "the overflowing step changed the weights"
    assert not same(watcher.before[POISONED + 1], watcher.after[POISONED + 1])
    assert module.skipped_steps == 1
    assert all(torch.isfinite(p).all() for p in module.parameters())


class BreakWeightsAfter(L.Callback):
    """Makes a weight NaN after a batch, as a step with a finite loss but an overflowing gradient would."""

    def __init__(self, batch_idx: int) -> None:
        self.batch_idx = batch_idx

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if batch_idx == self.batch_idx:
            with torch.no_grad():
                next(module.parameters()).view(-1)[0] = float("nan")


def test_no_checkpoint_with_non_finite_weights_is_written(batches, tmp_path, monkeypatch):
    monkeypatch.setattr(Module, "poisoned", frozenset())
    with pytest.raises(TrainingDiverged, match=r"step 2: weight [\w.]+ is NaN or infinite; not writing a checkpoint"):
        train(batches, tmp_path, callbacks=[BreakWeightsAfter(1)])
    saved = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert saved["global_step"] == 1 and all(torch.isfinite(t).all() for t in saved["state_dict"].values())


def test_the_cli_prints_a_diverged_run_as_one_line(monkeypatch, capsys):
    def diverge(args):
        raise TrainingDiverged("loss nan at step 7 (epoch 0, batch 7) (model.nan_policy: stop)")

    monkeypatch.setattr(training_cli, "train_cli", diverge)
    assert cli.main(["fit", "--config", "x.yaml"]) == 1
    assert capsys.readouterr().err == "nmt fit: error: loss nan at step 7 (epoch 0, batch 7) (model.nan_policy: stop)\n"


# -- inference with a model that overflows ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def overflowing(tmp_path_factory) -> Path:
    """A checkpoint whose weights are all finite but whose output layer overflows float32 (logits ±inf)."""
    path = tiny_checkpoint(tmp_path_factory.mktemp("ckpt"), architecture="rnnsearch")
    ckpt = torch.load(path, weights_only=True)
    output_layer = [name for name in ckpt["state_dict"] if ".output." in name]
    assert output_layer, "the model's output layer is not named '…output…' any more"
    for name in output_layer:
        ckpt["state_dict"][name] = ckpt["state_dict"][name] * 1e20
    assert all(torch.isfinite(t).all() for t in ckpt["state_dict"].values())
    torch.save(ckpt, path)
    return path


COMMANDS = {
    "translate": lambda ckpt, text, out: ["translate", "--checkpoint", ckpt, "--input", text, "--output", out],
    "evaluate": lambda ckpt, text, out: [
        "evaluate",
        "--checkpoint",
        ckpt,
        "--src",
        text,
        "--ref",
        text,
        "--output",
        out,
    ],  # fmt: skip
    "score": lambda ckpt, text, out: ["score", "--checkpoint", ckpt, "--src", text, "--tgt", text, "--output", out],
}


@pytest.mark.parametrize("command", COMMANDS)
def test_a_model_that_outputs_nan_is_an_error_not_garbage(command, overflowing, tmp_path, capsys):
    text, out = tmp_path / "in.txt", tmp_path / "out.txt"
    text.write_text("\na man rides a bike\n")  # line 1 is blank: not translated (but scored, as p(EOS | EOS))
    line = 1 if command == "score" else 2
    argv = COMMANDS[command](str(overflowing), str(text), str(out))
    assert cli.main(argv + (["--no-progress"] if command == "translate" else [])) == 2
    err = capsys.readouterr().err
    assert re.fullmatch(
        rf"nmt {command}: error: {re.escape(str(text))}:{line}: the model (scores its translation of this line|gives "
        r"this pair log p =) (-?inf|nan) \(its network overflows or its weights are broken\); stopping rather than "
        r"writing it\n",
        err,
    ), err
    assert not out.exists() and list(tmp_path.iterdir()) == [text]
