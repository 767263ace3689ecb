"""Polyak averaging: an exponential moving average (EMA) of the network's weights, evaluated
alongside the raw weights.

GoogLeNet's final model was a Polyak average (Szegedy et al. 2014, sec. 6). After every
optimiser step ``ema <- decay * ema + (1 - decay) * weights`` (the first step copies the
weights), BatchNorm statistics included. At the end of each validation and test epoch the
averaged network is scored on the same loader and logged as ``val_ema/...`` / ``test_ema/...``
(one extra eval pass). The average is saved in checkpoints (the callback's state) and
``cnnzoo.models.weights.net_state_dict(ckpt, ema=True)`` returns it for eval and export.
"""

from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from cnnzoo.errors import ConfigError, is_number, is_whole
from cnnzoo.module import topk_metrics


class EMA(Callback):
    def __init__(self, decay: float = 0.9998, every_n_steps: int = 1) -> None:
        if not is_number(decay) or not 0.0 < decay < 1.0:
            raise ConfigError(f"callbacks.ema.decay={decay!r}: choose a value between 0 and 1.")
        if not is_whole(every_n_steps):
            raise ConfigError(
                f"callbacks.ema.every_n_steps={every_n_steps!r}: give a whole number, 1 or more."
            )
        self.decay = decay
        self.every_n_steps = every_n_steps
        self.average: AveragedModel | None = None
        self._pending: dict[str, Any] | None = None
        self._last_step = -1  # with gradient accumulation, several batches share one step

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.average is None:
            self.average = AveragedModel(
                pl_module.net, multi_avg_fn=get_ema_multi_avg_fn(self.decay), use_buffers=True
            )
        if self._pending is not None:
            self.average.load_state_dict(self._pending)
            self._pending = None

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step > self._last_step and step % self.every_n_steps == 0:
            self.average.update_parameters(pl_module.net)
            self._last_step = step

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self._score(trainer, pl_module, trainer.val_dataloaders, "val_ema")

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module) -> None:
        self._score(trainer, pl_module, trainer.test_dataloaders, "test_ema")

    @torch.no_grad()
    def _score(self, trainer: pl.Trainer, pl_module, loader, prefix: str) -> None:
        """Score the average on ``loader`` through the module's own path: the DataModule's
        device transfer (uint8 -> normalised floats on the device), the same view averaging
        and loss as ``val/...``, under the run's precision."""
        if self.average is None or loader is None:
            return
        net = self.average.module.to(pl_module.device).eval()
        metrics = topk_metrics(pl_module.hparams.num_classes).clone(prefix=f"{prefix}/")
        metrics = metrics.to(pl_module.device)
        loss_sum = torch.zeros((), device=pl_module.device)
        count = torch.zeros((), device=pl_module.device)
        for batch in loader:
            images, labels = pl_module._apply_batch_transfer_handler(batch, pl_module.device)
            with trainer.precision_plugin.val_step_context():
                scores, loss = pl_module.score(images, labels, net)
            loss_sum += loss.float() * labels.numel()
            count += labels.numel()
            metrics.update(scores, labels)
        loss = trainer.strategy.reduce(loss_sum, reduce_op="sum") / trainer.strategy.reduce(
            count, reduce_op="sum"
        )
        pl_module.log(f"{prefix}/loss", loss)
        pl_module.log_accuracy_and_error(metrics)

    def state_dict(self) -> dict[str, Any]:
        return {} if self.average is None else {"average": self.average.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if "average" in state_dict:
            if self.average is None:
                self._pending = state_dict["average"]
            else:
                self.average.load_state_dict(state_dict["average"])
