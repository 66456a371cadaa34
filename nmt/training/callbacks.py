"""Lightning callbacks for tracking a run; each is a line in a config's ``trainer.callbacks``.

* ``ValidationSamples`` — a few fixed validation sentences (source, reference, hypothesis) every validation,
  and the attention heatmaps of some of them;
* ``ThroughputLogger`` — training speed in target tokens per second;
* ``MemoryMonitor`` — CPU and GPU memory of the training process;
* ``LRMonitor`` — Lightning's ``LearningRateMonitor``, plus the learning rate on the progress bar;
* ``LoggedConfig`` — the resolved configuration as every logger's hyper-parameters (W&B's run config);
* ``BestCheckpointArtifact`` — the best checkpoint uploaded to W&B as a model artifact when training ends.

Where things land depends on the logger: W&B gets tables and images, TensorBoard text and images, and a
logger with a directory of its own (the CSVLogger) gets files in it.
"""

from __future__ import annotations

import csv
import os
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

import lightning as L
import torch
import yaml
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_warn
from matplotlib.figure import Figure

from nmt.data.batch import Batch
from nmt.data.tokenizer import EOS_PIECE, Tokenizer
from nmt.decoding import Hypothesis
from nmt.plotting import attention_heatmap, figure_to_rgb, save_figure
from nmt.textio import atomic_output
from nmt.training.module import TranslationModule

COLUMNS = ["index", "source", "reference", "hypothesis"]
HEATMAP_SIZE = (8.0, 8.0)  # inches; one size for all, as W&B shows a step's images side by side


class Sample(NamedTuple):
    """One validation sentence as the last validation decoded it."""

    index: int  # its row in the validation corpus
    src_ids: list[int]  # (S) source pieces, EOS included
    hypothesis: Hypothesis  # the best one; ``.alpha`` (T, S) for the attention model


class ValidationSamples(L.Callback):
    """Shows how the model translates a few fixed validation sentences, after every validation.

    The sentences are spread evenly over the validation corpus and stay the same all run, so one can watch
    them improve. Their translations are the ones validation BLEU was computed from (no extra decoding).
    Logged under ``val/samples`` (a table: index, source, reference, hypothesis) and, for an attention model,
    ``val/attention`` (heatmaps of the first ``attention`` of them, as in Bahdanau et al. 2015, Fig. 3):

    * W&B: a ``wandb.Table`` and a list of images, at the trainer's global step;
    * TensorBoard: a Markdown table (text tab) and one image per sentence (images tab);
    * other loggers with a ``log_dir`` (CSV): ``samples/step_N.tsv`` and ``attention/step_N_INDEX.png`` there.

    Under DDP, each rank validates a shard; the sentences shown are those of rank 0.
    """

    def __init__(self, *, sentences: int = 8, attention: int = 3) -> None:
        """
        Args:
            sentences: validation sentences in the table.
            attention: how many of them (the first ones) also get a heatmap; 0 for none.
        """
        self.sentences, self.attention = sentences, attention
        self._references: dict[int, str] = {}  # the chosen sentences: row -> reference
        self._samples: dict[int, Sample] = {}  # those this rank decoded in the current validation

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: TranslationModule) -> None:
        self._samples = {}
        if self._references or self.sentences <= 0 or trainer.datamodule is None:
            return  # chosen already, none wanted, or no TranslationDataModule to take references from
        references = trainer.datamodule.references("val")
        n, k = len(references), min(self.sentences, len(references))
        self._references = {i: references[i] for i in sorted({i * n // k for i in range(k)})}

    def on_validation_batch_end(
        self, trainer: L.Trainer, pl_module: TranslationModule, outputs, batch: Batch, batch_idx: int, dataloader_idx=0
    ) -> None:
        # `outputs`: the best hypothesis of each sentence of the batch, from the search that BLEU needs anyway.
        if outputs is None:
            return
        for row, index in enumerate(batch.indices.tolist()):
            if index in self._references:
                src_ids = batch.src[row, : int(batch.src_lengths[row])].tolist()
                self._samples[index] = Sample(index, src_ids, outputs[row])

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: TranslationModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero or not self._samples:
            return
        samples = [self._samples[i] for i in sorted(self._samples)]
        tokenizer = pl_module.tokenizer
        hypotheses = tokenizer.decode_tgt([s.hypothesis.tokens for s in samples])
        rows = [
            [s.index, tokenizer.decode_src(s.src_ids), self._references.get(s.index, ""), hyp]
            for s, hyp in zip(samples, hypotheses, strict=True)
        ]
        step = trainer.global_step
        with_attention = [s for s in samples if s.hypothesis.alpha is not None][: self.attention]
        figures = [heatmap(tokenizer, s, title=f"val {s.index}, step {step}") for s in with_attention]
        images = [figure_to_rgb(fig) for fig in figures]
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_table(key="val/samples", columns=COLUMNS, data=rows, step=step)
                if images:
                    captions = [f"val {s.index}" for s in with_attention]
                    logger.log_image(key="val/attention", images=images, step=step, caption=captions)
            elif isinstance(logger, TensorBoardLogger):
                logger.experiment.add_text("val/samples", markdown_table(rows), step)
                for s, image in zip(with_attention, images, strict=True):
                    logger.experiment.add_image(f"val/attention/{s.index}", image, step, dataformats="HWC")
            elif getattr(logger, "log_dir", None):
                write_files(Path(logger.log_dir), step, rows, zip(with_attention, figures, strict=True))


def heatmap(tokenizer: Tokenizer, sample: Sample, *, title: str) -> Figure:
    """The attention heatmap of one decoded sample (rows: output pieces and EOS when it ended)."""
    hyp = sample.hypothesis
    tgt = [*tokenizer.tgt_pieces(hyp.tokens), *([EOS_PIECE] if hyp.complete else [])]
    src = tokenizer.src_pieces(sample.src_ids)
    return attention_heatmap(hyp.alpha.float().numpy(), src, tgt, title=title, size=HEATMAP_SIZE)


def markdown_table(rows: list[list]) -> str:
    cells = [COLUMNS, ["---"] * len(COLUMNS), *rows]
    return "\n".join("| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in cells)


def write_files(log_dir: Path, step: int, rows: list[list], attention: Iterable[tuple[Sample, Figure]]) -> None:
    """samples/step_N.tsv and attention/step_N_INDEX.png under a logger's directory."""
    (log_dir / "samples").mkdir(parents=True, exist_ok=True)
    with atomic_output(log_dir / "samples" / f"step_{step}.tsv") as f:  # the one writer: complete or absent
        writer = csv.writer(f, delimiter="\t", lineterminator="\n")
        writer.writerows([COLUMNS, *rows])
    for sample, fig in attention:
        (log_dir / "attention").mkdir(exist_ok=True)
        save_figure(fig, log_dir / "attention" / f"step_{step}_{sample.index}.png")


class ThroughputLogger(L.Callback):
    """Logs target tokens per second of training (``train/tgt_tokens_per_s``), averaged per logging interval."""

    def __init__(self) -> None:
        self._t0: float | None = None
        self._tokens = 0

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Batch, idx: int) -> None:
        if self._t0 is None:
            self._t0 = time.perf_counter()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch: Batch, idx: int
    ) -> None:
        self._tokens += batch.num_tgt_tokens
        if (trainer.global_step % trainer.log_every_n_steps) == 0 and self._t0 is not None:
            elapsed = time.perf_counter() - self._t0
            if elapsed > 0:
                pl_module.log("train/tgt_tokens_per_s", self._tokens * trainer.world_size / elapsed, prog_bar=True)
            self._t0, self._tokens = time.perf_counter(), 0


class MemoryMonitor(L.Callback):
    """Logs the memory of the training process at every training step Lightning logs (GiB):
    ``memory/cpu_rss`` (resident set size now; its peak where /proc is missing) and, on a GPU,
    ``memory/gpu_allocated`` and ``memory/gpu_peak`` (tensors held by torch's allocator, now and at most).
    DataLoader worker processes are not counted."""

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, idx: int) -> None:
        stats = {"memory/cpu_rss": rss_bytes() / 2**30}
        if pl_module.device.type == "cuda":
            stats["memory/gpu_allocated"] = torch.cuda.memory_allocated(pl_module.device) / 2**30
            stats["memory/gpu_peak"] = torch.cuda.max_memory_allocated(pl_module.device) / 2**30
        pl_module.log_dict(stats)


def rss_bytes() -> int:
    """Resident set size of this process: current from /proc (Linux), else the peak from getrusage."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB elsewhere


class LRMonitor(LearningRateMonitor):
    """Lightning's ``LearningRateMonitor`` (logs ``lr-<Optimizer>``), and the learning rate of the first
    parameter group on the progress bar as ``lr`` (not logged twice)."""

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, idx: int) -> None:
        if trainer.optimizers:
            pl_module.log("lr", trainer.optimizers[0].param_groups[0]["lr"], prog_bar=True, logger=False)


class LoggedConfig(L.Callback):
    """Gives every logger the resolved configuration (what ``nmt fit … --print_config`` prints) as its
    hyper-parameters: W&B's run config, TensorBoard's hparams. The CSVLogger is skipped: LightningCLI already
    writes the same configuration to config.yaml in its directory. Does nothing outside LightningCLI."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # LightningCLI hands its parser and parsed config to SaveConfigCallback, which it adds to the Trainer.
        saver = next((c for c in trainer.callbacks if isinstance(c, SaveConfigCallback)), None)
        if saver is None or not trainer.is_global_zero:
            return
        config = yaml.safe_load(saver.parser.dump(saver.config, skip_none=False))
        for logger in trainer.loggers:
            if not isinstance(logger, CSVLogger):
                logger.log_hyperparams(config)


class BestCheckpointArtifact(L.Callback):
    """When training ends, uploads the best checkpoint to every W&B logger as a model artifact
    ``model-<run id>`` (file ``model.ckpt``, aliases ``best`` and ``latest``, the score in its metadata).

    "Best" is the file of the first ModelCheckpoint that monitors a metric (``best.ckpt`` in our configs).
    Prefer this to ``WandbLogger(log_model=True)`` with our configs: that uploads ``last.ckpt`` too, under the
    same name, and moves the ``best`` alias onto it.
    """

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        loggers = [logger for logger in trainer.loggers if isinstance(logger, WandbLogger)]
        best = next((c for c in trainer.checkpoint_callbacks if c.monitor and c.best_model_path), None)
        if not loggers or best is None:
            rank_zero_warn("BestCheckpointArtifact: no W&B logger or no best checkpoint; nothing uploaded")
            return
        import wandb

        score = None if best.best_model_score is None else float(best.best_model_score)
        metadata = {"monitor": best.monitor, "score": score, "original_filename": Path(best.best_model_path).name}
        for logger in loggers:
            artifact = wandb.Artifact(f"model-{logger.experiment.id}", type="model", metadata=metadata)
            artifact.add_file(best.best_model_path, name="model.ckpt")
            logger.experiment.log_artifact(artifact, aliases=["best", "latest"])
