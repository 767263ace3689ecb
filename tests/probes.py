"""Callbacks that tests put into real runs (``+callbacks.NAME._target_=probes.X``)."""

import time

import pytorch_lightning as pl
import torch


class SlowSteps(pl.Callback):
    """Prints ``STEP <global step>`` after every training batch and slows each one down, so a
    test can interrupt a run in the middle of an epoch."""

    def __init__(self, seconds: float = 0.3) -> None:
        self.seconds = seconds

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        print(f"STEP {trainer.global_step}", flush=True)
        time.sleep(self.seconds)


class PoisonWeights(pl.Callback):
    """Fills the first weight with NaN before training batch ``batch`` of epoch ``epoch``."""

    def __init__(self, epoch: int = 1, batch: int = 1) -> None:
        self.epoch, self.batch = epoch, batch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            with torch.no_grad():
                next(pl_module.parameters()).fill_(float("nan"))
