"""Mixed precision and gradient accumulation through the real Lightning CLI, for both architectures, on CPU.

On CPU, Lightning runs ``precision=16-mixed`` as bf16-mixed (it says so in a warning), so bf16-mixed is the
CPU case of both; float16 with its gradient scaler needs a GPU.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest
import sacrebleu
import torch
from factories import MULTI30K, multi30k_lines
from test_training import TINY

from nmt.data.tokenizer import BOS, EOS
from nmt.decoding import search
from nmt.training.cli import train_cli

pytestmark = pytest.mark.slow  # trains or starts `nmt` subprocesses: not in the fast tier


@pytest.mark.parametrize("architecture", ["rnnsearch", "rnnencdec"])
def test_bf16_mixed_with_gradient_accumulation_trains_and_validates(architecture: str, tmp_path: Path) -> None:
    losses: list[float] = []
    options = (
        f"--config {TINY} --data.data_dir {MULTI30K} --data.cache_dir {tmp_path / 'cache'} "
        f"--data.train.limit 200 --data.val.limit 20 --model.network.architecture {architecture} "
        "--data.val.src val.en.gz --data.val.tgt val.fr.gz "  # the references read below
        "--trainer.precision bf16-mixed --trainer.accumulate_grad_batches 2 --trainer.max_steps 2 "
        # validate (greedy decoding under autocast) once, after the 2nd update
        "--trainer.val_check_interval 4 --trainer.limit_val_batches 1 --trainer.num_sanity_val_steps 0 "
        "--trainer.logger false --trainer.enable_checkpointing false --trainer.callbacks=[] "
        f"--trainer.enable_progress_bar false --trainer.default_root_dir {tmp_path}"
    )
    cli = train_cli(options.split(), run=False)
    before = {name: p.detach().clone() for name, p in cli.model.named_parameters()}
    trainer = cli.trainer
    module_step = cli.model.training_step

    def recording_step(batch, batch_idx):
        loss = module_step(batch, batch_idx)
        assert loss.dtype == torch.float32  # the loss is computed in float32 from bf16 logits
        losses.append(float(loss))
        return loss

    cli.model.training_step = recording_step  # type: ignore[method-assign]
    trainer.fit(cli.model, datamodule=cli.datamodule)

    assert str(trainer.precision) == "bf16-mixed"
    assert trainer.global_step == 2 and len(losses) == 4  # 2 updates of 2 accumulated batches each
    assert all(math.isfinite(loss) for loss in losses)
    for name, p in cli.model.named_parameters():
        assert p.dtype == torch.float32, name  # master weights stay float32
    unchanged = {name for name, p in cli.model.named_parameters() if torch.equal(p.detach(), before[name])}
    # W_a s_{i-1} is the same for every source position, and the softmax ignores what all scores share: W_a's
    # gradient comes only through the curvature of tanh, with v_a starting at 0, so in the first updates it is
    # below bf16's resolution (exactly 0 with the float32 attention softmax). Every other weight must move.
    assert unchanged <= {"model.attention.W_a.weight"}, sorted(unchanged)
    assert math.isfinite(float(trainer.callback_metrics["val/loss"]))
    # val/bleu and val/chrf: sacrebleu's corpus scores of the greedy translations of the validated sentences (the one
    # batch, decoded again here as validation decodes it, under bf16 autocast) against their lines of the corpus file.
    # After two updates RNNsearch still ends every translation at once (BLEU 0); the Encoder–Decoder writes words.
    (batch,) = itertools.islice(cli.datamodule.val_dataloader(), 1)
    with torch.no_grad(), trainer.precision_plugin.forward_context():
        found = search(cli.model.model.eval(), batch.src, batch.src_lengths, cli.model.search, bos_id=BOS, eos_id=EOS)
    hypotheses = cli.datamodule.tokenizer.decode_tgt([hyps[0].tokens for hyps in found])
    corpus = multi30k_lines("val", "fr", 20)
    references = [[corpus[i] for i in batch.indices.tolist()]]
    metrics = trainer.callback_metrics
    assert float(metrics["val/bleu"]) == pytest.approx(sacrebleu.corpus_bleu(hypotheses, references).score)
    assert float(metrics["val/chrf"]) == pytest.approx(sacrebleu.corpus_chrf(hypotheses, references).score)
