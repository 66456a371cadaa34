"""Training: Lightning drives the networks of `nmt.model` on the data of `nmt.data`.

* `cli` — `nmt fit|validate|test`, Lightning's CLI over the two classes below (imported by `nmt.cli` only for
  those commands: Lightning takes seconds to import);
* `module` — `TranslationModule`, the LightningModule: loss (`loss`), validation BLEU, the NaN policy and what a
  checkpoint carries;
* `callbacks` — tracking: samples, attention images, throughput, memory, learning rate, config, W&B artifact;
* `resume` — exact resume: ``last.ckpt`` at resume points, atomic checkpoint writes, random states;
* `ema` — Lightning's moving average of the weights, its end-of-fit copy after the last resume point;
* `checkpoint` — a ``--ckpt_path`` file read safely and compared with the configured network;
* `memory` — memory handed back to the system during a run;
* `lightning_internals` — the few Lightning internals exact resume relies on, each tested.

This module itself imports nothing, so that the dispatcher of every command can read `LIGHTNING_COMMANDS`.
"""

LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")
"""The commands `nmt.cli` hands to Lightning's CLI (`nmt.training.cli.train_cli`)."""
