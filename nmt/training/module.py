"""The LightningModule: owns the loss, validation BLEU, logging and what a checkpoint carries.

The network itself is plain PyTorch (``nmt.model``); the optimizer and LR schedule come from the config
(LightningCLI's ``optimizer:`` / ``lr_scheduler:`` sections), not from here.
"""

from __future__ import annotations

import math
from typing import Literal

import lightning as L
import sacrebleu
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from nmt.checkpoint import checkpoint_metadata
from nmt.data.batch import Batch
from nmt.data.datamodule import TranslationDataModule
from nmt.data.tokenizer import BOS, EOS, PAD, Tokenizer
from nmt.decoding import Hypothesis, SearchConfig, search
from nmt.errors import TrainingDiverged
from nmt.model import NetworkConfig, build_model
from nmt.training.loss import smoothed_cross_entropy
from nmt.training.memory import RELEASE_EVERY_N_STEPS, bound_heap_growth, forget_tokenized_lines, release_free_memory
from nmt.training.resume import collect_rng_states, restore_rng_states

# A run whose loss stays non-finite this long will not recover by skipping batches: stop it.
MAX_SKIPPED_IN_A_ROW = 100


class TranslationModule(L.LightningModule):
    def __init__(
        self,
        *,
        network: NetworkConfig | None = None,
        src_vocab_size: int,
        tgt_vocab_size: int,
        label_smoothing: float = 0.0,
        search: SearchConfig | None = None,
        nan_policy: Literal["skip", "stop"] = "skip",
        data: TranslationDataModule | None = None,
    ) -> None:
        """
        Args:
            network: shape of the network (architecture, cell, sizes, initialisation).
            src_vocab_size: source vocabulary size (linked from the data section).
            tgt_vocab_size: target vocabulary size (linked from the data section).
            label_smoothing: label smoothing of the token-level cross-entropy (0 = the papers' loss).
            search: how validation and test BLEU decode (beam size, length penalty, length limits).
            nan_policy: a training step whose loss is NaN or infinite is skipped (no update, a warning), or
                stops the run ("stop"); either way no checkpoint with non-finite weights is ever written.
            data: where the module reads its tokenizer (once the data is set up; saved into every checkpoint) and
                the references of validation and test (linked from the data section: not a config option).
        """
        super().__init__()
        self.network_config = network or NetworkConfig()
        self.search = search or SearchConfig(beam_size=1)
        self.label_smoothing = label_smoothing
        self.nan_policy = nan_policy
        self.skipped_steps = 0  # training steps skipped for a non-finite loss
        self._skipped_in_a_row = 0
        self.src_vocab_size, self.tgt_vocab_size = src_vocab_size, tgt_vocab_size
        self.model = build_model(
            self.network_config, src_vocab_size=src_vocab_size, tgt_vocab_size=tgt_vocab_size, pad_id=PAD
        )
        self.data = data
        self._hyps: list[tuple[int, str]] = []  # (dataset index, detokenized hypothesis) of this evaluation
        self._loss_and_tokens = torch.zeros(2, dtype=torch.float64)
        self._rng_states_to_restore: list[dict] | None = None  # from a checkpoint being resumed

    # -- lifecycle -----------------------------------------------------------------------------------------
    @property
    def tokenizer(self) -> Tokenizer | None:
        """The data's SentencePiece models; None without data, or before the data is set up."""
        return getattr(self.data, "tokenizer", None)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        broken = self._non_finite_parameter()
        if broken is not None:  # never overwrite a good checkpoint with a diverged model
            raise TrainingDiverged(
                f"step {self.global_step}: weight {broken} is NaN or infinite; not writing a checkpoint "
                "(the last one written is the last good state)"
            )
        # Plain data only, so inference can load with torch.load(weights_only=True).
        if self.tokenizer is None:
            raise RuntimeError("no tokenizer to save: the module was built without data, or before its set-up")
        checkpoint["nmt"] = checkpoint_metadata(
            self.network_config, self.src_vocab_size, self.tgt_vocab_size, self.tokenizer
        )
        checkpoint["rng_states"] = collect_rng_states(self.trainer)  # for an exact resume (nmt.training.resume)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # Applied when training starts rather than now: the sanity check and loader set-up come in between.
        self._rng_states_to_restore = checkpoint.get("rng_states")

    def on_train_start(self) -> None:
        bound_heap_growth()  # the peak memory of a run stays that of its first epochs (nmt.training.memory)
        if self._rng_states_to_restore is not None:
            restore_rng_states(self._rng_states_to_restore, rank=self.global_rank)
            self._rng_states_to_restore = None

    # -- training ------------------------------------------------------------------------------------------
    def token_loss(self, batch: Batch, *, label_smoothing: float = 0.0) -> tuple[torch.Tensor, int]:
        """Summed cross-entropy over the non-padding target tokens, and their number."""
        enc = self.model.encode(batch.src, batch.src_lengths, for_steps=False)
        features = self.model.teacher_forced(enc, batch.tgt_in).features  # (B, T, units)
        mask = batch.tgt_out != PAD
        logits = self.model.logits(features[mask])  # project only real tokens: (N, V)
        loss = smoothed_cross_entropy(logits.float(), batch.tgt_out[mask], label_smoothing)
        return loss, int(mask.sum())

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor | None:
        loss_sum, n_tokens = self.token_loss(batch, label_smoothing=self.label_smoothing)
        loss = loss_sum / n_tokens
        if not self._loss_is_usable(loss, batch_idx):
            return None  # no backward: Lightning's optimizer step then finds no gradient and changes nothing
        self.log("train/loss", loss, prog_bar=True, batch_size=n_tokens)
        self.log("train/ppl", torch.exp(loss.detach()), batch_size=n_tokens)
        return loss

    def on_train_batch_end(self, outputs: object, batch: Batch, batch_idx: int) -> None:
        # Without this, freed memory stays with malloc and the resident size climbs all run long (nmt.training.memory).
        if self.global_step % RELEASE_EVERY_N_STEPS == 0:
            release_free_memory()

    def _loss_is_usable(self, loss: torch.Tensor, batch_idx: int) -> bool:
        """False for a NaN/inf loss that `nan_policy` says to skip; raises TrainingDiverged when it says stop,
        when the weights themselves are no longer finite, or after MAX_SKIPPED_IN_A_ROW skips in a row."""
        # Every rank must decide alike: under DDP a rank skipping backward leaves the others waiting for it.
        if self.trainer.strategy.reduce_boolean_decision(bool(torch.isfinite(loss.detach())), all=True):
            self._skipped_in_a_row = 0
            return True
        where = f"step {self.global_step} (epoch {self.current_epoch}, batch {batch_idx})"
        broken = self._non_finite_parameter()
        if broken is not None:
            raise TrainingDiverged(f"loss {loss.item()} at {where}: weight {broken} is itself NaN or infinite")
        self._skip_step(f"loss {loss.item()}", where)
        return False

    def _skip_step(self, what: str, where: str) -> None:
        """Apply `nan_policy` to a step whose loss or gradient is not finite: raise, or count and warn."""
        if self.nan_policy == "stop":
            raise TrainingDiverged(f"{what} at {where} (model.nan_policy: stop)")
        self.skipped_steps += 1
        self._skipped_in_a_row += 1
        if self._skipped_in_a_row > MAX_SKIPPED_IN_A_ROW:
            raise TrainingDiverged(
                f"not finite for {self._skipped_in_a_row} steps in a row, the last: {what} at {where}"
            )
        rank_zero_warn(f"{what} at {where}: step skipped, weights unchanged (model.nan_policy: skip)")
        self.log("train/skipped_steps", float(self.skipped_steps))

    def _non_finite_parameter(self) -> str | None:
        """The name of the first weight holding a NaN or infinity, if any."""
        return next((name for name, p in self.model.named_parameters() if not torch.isfinite(p).all()), None)

    def configure_gradient_clipping(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        # Clipping by norm computes the gradient norm anyway: log that one instead of a second pass over
        # every gradient. Called by Lightning after unscaling (16-mixed) and only when a step is taken.
        if gradient_clip_val and gradient_clip_algorithm in (None, "norm"):
            norm = torch.nn.utils.clip_grad_norm_(self.parameters(), gradient_clip_val)
        else:
            self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)
            norm = torch.nn.utils.get_total_norm([p.grad for p in self.parameters() if p.grad is not None])
        if not torch.isfinite(norm) and getattr(self.trainer.precision_plugin, "scaler", None) is None:
            # A finite loss can still overflow in the backward pass. Without a GradScaler (which skips such
            # steps itself) the update would write NaN into every weight: drop the gradients, so the optimizer
            # step changes nothing. Gradients are all-reduced, so every rank decides alike.
            optimizer.zero_grad(set_to_none=True)
            self._skip_step(f"gradient norm {norm.item()}", f"step {self.global_step} (epoch {self.current_epoch})")
            return
        self.log("train/grad_norm", norm)

    # -- validation and test: loss, then BLEU/chrF of the decoded sentences ------------------------------------
    def on_validation_epoch_start(self) -> None:
        self._start_evaluation()

    def on_test_epoch_start(self) -> None:
        self._start_evaluation()

    def validation_step(self, batch: Batch, batch_idx: int) -> list[Hypothesis] | None:
        return self._evaluation_step(batch)

    def test_step(self, batch: Batch, batch_idx: int) -> list[Hypothesis] | None:
        return self._evaluation_step(batch)

    def on_validation_epoch_end(self) -> None:
        self._end_evaluation("val")
        release_free_memory()  # beam search's shapes differ from training's: hand back what it freed (.memory)

    def on_test_epoch_end(self) -> None:
        self._end_evaluation("test")

    def _start_evaluation(self) -> None:
        self._hyps = []
        self._loss_and_tokens = torch.zeros(2, dtype=torch.float64, device=self.device)

    def _evaluation_step(self, batch: Batch) -> list[Hypothesis] | None:
        """Adds the batch's loss and its decoded hypotheses to this evaluation's; returns each sentence's best
        hypothesis (what callbacks see in ``on_validation_batch_end``), or None when nothing was decoded."""
        loss_sum, n_tokens = self.token_loss(batch)  # plain cross-entropy: val/ppl is a true perplexity
        self._loss_and_tokens += torch.stack([loss_sum.detach().double(), loss_sum.new_tensor(n_tokens).double()])
        tokenizer = self.tokenizer
        if tokenizer is None or self.trainer.sanity_checking:
            return None
        best = [h[0] for h in search(self.model, batch.src, batch.src_lengths, self.search, bos_id=BOS, eos_id=EOS)]
        texts = tokenizer.decode_tgt([h.tokens for h in best])
        self._hyps.extend(zip(batch.indices.tolist(), texts, strict=True))
        return best

    def _end_evaluation(self, stage: str) -> None:
        loss_sum, n_tokens = self.trainer.strategy.reduce(self._loss_and_tokens, reduce_op="sum").tolist()
        loss = loss_sum / max(n_tokens, 1)
        self.log(f"{stage}/loss", loss, sync_dist=False)
        self.log(f"{stage}/ppl", math.exp(min(loss, 50.0)), sync_dist=False)
        if self.tokenizer is None or self.trainer.sanity_checking:
            return
        # Every rank has every rank's hypotheses, so BLEU (and what early stopping and the best checkpoint
        # decide from it) is the same on all of them.
        decoded = self._gather_hypotheses()
        all_refs = self.data.references(stage)
        # `limit_val_batches`, `fast_dev_run` and the like decode a subset: score what was decoded, and say so.
        indices = sorted(decoded)
        if not indices:
            rank_zero_warn(f"{stage}: no sentence was decoded (limit_{stage}_batches?); no BLEU")
            return
        hypotheses, refs = [decoded[i] for i in indices], [all_refs[i] for i in indices]
        bleu, chrf = sacrebleu.metrics.BLEU(), sacrebleu.metrics.CHRF()
        bleu_score, chrf_score = bleu.corpus_score(hypotheses, [refs]), chrf.corpus_score(hypotheses, [refs])
        forget_tokenized_lines()  # sacrebleu would keep every line of every validation (nmt.training.memory)
        self.log(f"{stage}/bleu", bleu_score.score, prog_bar=True, sync_dist=False)
        self.log(f"{stage}/chrf", chrf_score.score, sync_dist=False)
        subset = "" if len(indices) == len(all_refs) else f" over {len(indices)} of {len(all_refs)} sentences"
        rank_zero_info(
            f"{stage} epoch {self.current_epoch} step {self.global_step}: loss {loss:.4f}, "
            f"BLEU {bleu_score.score:.2f} ({bleu.get_signature()}), "
            f"chrF {chrf_score.score:.2f} ({chrf.get_signature()}){subset}"
        )

    def _gather_hypotheses(self) -> dict[int, str]:
        """Every rank's (index, hypothesis) pairs, merged: each validation sentence once, on every rank."""
        local = self._hyps
        if self.trainer.world_size > 1 and torch.distributed.is_initialized():
            gathered: list[list[tuple[int, str]]] = [None] * self.trainer.world_size  # type: ignore[list-item]
            torch.distributed.all_gather_object(gathered, local)
            local = [pair for part in gathered for pair in part]
        return dict(local)
