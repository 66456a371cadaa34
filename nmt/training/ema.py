"""An exponential moving average of the weights during training: Lightning's own ``EMAWeightAveraging``
(lightning>=2.6), a line in a config's ``trainer.callbacks``:

    - class_path: nmt.training.ema.EMAWeightAveraging
      init_args:
        decay: 0.999

After every update the average becomes ``decay · average + (1 − decay) · weights``
(``torch.optim.swa_utils.get_ema_avg_fn``). Validation runs with the average (swapped in for each validation and
out after it); every checkpoint holds the average under ``state_dict`` (what validate/test, ``nmt export``,
``nmt average`` and inference read) and the trained weights and the average's update count beside it for resuming.

Lightning's class copies the average over the trained weights in ``on_train_end``, and Lightning calls the
checkpoint callbacks' ``on_train_end`` after the others: `nmt.training.resume.ResumeCheckpoint`, which writes the
run's last resume point there (a run stopped at an epoch end, by ``max_time`` or early stopping, or finished),
would then save the average as the trained weights too, and a run resumed from it would train on from the average.
This subclass makes the same copy when fit ends instead, after that checkpoint is written.
"""

from __future__ import annotations

import lightning as L
from lightning.pytorch import callbacks


class EMAWeightAveraging(callbacks.EMAWeightAveraging):
    """Lightning's ``EMAWeightAveraging`` (same arguments: ``decay``, ``update_every_n_steps``,
    ``update_starting_at_step``, ``update_starting_at_epoch``, ``device``, ``use_buffers``), the model given the
    average when fit ends rather than when training ends (see the module's docstring)."""

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pass  # the end-of-run resume point is written after this hook, with the trained weights

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)  # the average into the model, as Lightning's class does
