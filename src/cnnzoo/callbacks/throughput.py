"""Training throughput you can see: global images/s, step time and the share spent waiting for data.

Host wall-clock timing, no device synchronisation per step (which would itself slow the run):
over an epoch the host cannot run more than a few steps ahead of the GPU, so the totals are
the real rates. "Data wait" is the time the training loop spent in the DataLoader's ``next()``
(Lightning reports each fetch to the trainer's profiler as ``train_dataloader_next``; this
callback listens there), as a share of the step time: near zero means the model and the
accelerator set the pace; a large share means decoding and augmentation do (more workers,
faster decoding, or a sharded format help).
"""

import time
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback

FETCH = "train_dataloader_next"  # Lightning's profiler action around each training fetch


class Throughput(Callback):
    """Logs ``perf/images_per_s`` (global, all ranks), ``perf/step_ms`` and ``perf/data_wait``
    (fraction of step time) per training epoch; ``summary()`` gives the whole run's figures.

    Args:
        warmup_steps: the first steps of the run left out of the figures (worker start-up,
            cuDNN autotuning, compilation).
    """

    def __init__(self, warmup_steps: int = 5) -> None:
        self.warmup_steps = warmup_steps
        self._steps_seen = 0
        self._last_end: float | None = None
        self._fetch_started = 0.0
        self._fetch_time = 0.0  # since the last step ended
        self.run = _Totals()
        self.epoch = _Totals()

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        profiler = trainer.profiler
        if getattr(profiler, "_cnnzoo_timed", False):  # setup runs for fit and for test
            return
        profiler._cnnzoo_timed = True
        start, stop = profiler.start, profiler.stop

        def timed_start(action: str) -> None:
            if action.endswith(FETCH):
                self._fetch_started = time.perf_counter()
            start(action)

        def timed_stop(action: str) -> None:
            stop(action)
            if action.endswith(FETCH):
                self._fetch_time += time.perf_counter() - self._fetch_started

        profiler.start, profiler.stop = timed_start, timed_stop

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.epoch = _Totals()
        self._last_end = time.perf_counter()
        self._fetch_time = 0.0

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        end = time.perf_counter()
        self._steps_seen += 1
        if self._last_end is not None and self._steps_seen > self.warmup_steps:
            images = _batch_len(batch) * trainer.world_size
            for totals in (self.run, self.epoch):
                totals.add(images, self._fetch_time, end - self._last_end)
        self._last_end = end
        self._fetch_time = 0.0

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.epoch.steps:
            for name, value in self.epoch.figures().items():
                pl_module.log(f"perf/{name}", value, rank_zero_only=True)
        self._last_end = None  # validation time is not training time

    def summary(self) -> dict[str, float] | None:
        """The run's figures (``None`` when no step was past the warm-up)."""
        return self.run.figures() if self.run.steps else None


class _Totals:
    def __init__(self) -> None:
        self.steps = 0
        self.images = 0
        self.wait = 0.0
        self.total = 0.0

    def add(self, images: int, wait: float, total: float) -> None:
        self.steps += 1
        self.images += images
        self.wait += wait
        self.total += total

    def figures(self) -> dict[str, float]:
        return {
            "images_per_s": self.images / self.total,
            "step_ms": 1000 * self.total / self.steps,
            "data_wait": self.wait / self.total,
        }


def _batch_len(batch: Any) -> int:
    images = batch[0] if isinstance(batch, list | tuple) else batch
    return len(images)
