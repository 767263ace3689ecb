"""What a longer run means for its learning-rate schedule.

``python train.py resume=RUN trainer.max_epochs=N`` trains a run further. Lightning restores
each scheduler's state from the checkpoint, and with it the horizon the run was started with:
a cosine over the old ``max_epochs`` has reached 0 and would climb back to the peak. Decided
here, per schedule:

- cosine (``CosineAnnealingLR``): its horizon is the configured ``T_max`` (``max_epochs`` by
  default): the lr continues from where the run stands on the cosine it would have followed
  had it been started with that horizon, as if the run had never stopped;
- step, multistep, exponential, plateau, and the warm-up: they have no horizon (their steps are
  counted from the start), so they continue as they were.

A run resumed from an epoch's end (``last.ckpt`` of a finished or stopped run) would also lose
one step of a plateau schedule: Lightning saves the checkpoint when validation ends and steps
the epoch's schedulers after it; on a restart it steps the others again but not a
``ReduceLROnPlateau`` (it has no monitored value then). ``catch_up_plateaus`` gives it that
epoch's value from the run's history.
"""

import logging
import math

import pytorch_lightning as pl
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR

log = logging.getLogger(__name__)


def horizons(schedulers: list) -> dict[CosineAnnealingLR, int]:
    """The configured horizon of each cosine among ``schedulers`` (before a checkpoint's state
    replaces it)."""
    return {s: s.T_max for s in schedulers if isinstance(s, CosineAnnealingLR)}


def follow_horizons(trainer: pl.Trainer, configured: dict[CosineAnnealingLR, int]) -> None:
    """After a resume: give each cosine its configured horizon back, and its param groups the
    lr of that cosine at the epoch the run stands at (times the warm-up's factor, if any).
    A cosine the trainer does not step is left alone: under ``tune=lr_find`` Lightning's range
    test puts its own schedule in place of the run's (by position, this met a wrong one)."""
    schedulers = [c.scheduler for c in trainer.lr_scheduler_configs]
    say = _once(trainer)
    warmup = next((s for s in schedulers if isinstance(s, LinearLR)), None)
    for cosine, horizon in configured.items():
        if cosine.T_max == horizon or not any(s is cosine for s in schedulers):
            continue
        old, cosine.T_max = cosine.T_max, horizon
        epoch = cosine.last_epoch
        factor = _warmup_factor(warmup)
        share = (1 + math.cos(math.pi * epoch / horizon)) / 2  # of the way from eta_min to base
        for group, base in zip(cosine.optimizer.param_groups, cosine.base_lrs, strict=True):
            group["lr"] = factor * (cosine.eta_min + (base - cosine.eta_min) * share)
        lrs = ", ".join(f"{group['lr']:.4g}" for group in cosine.optimizer.param_groups)
        say(
            "cosine now spans %d epochs (it spanned %d); lr at epoch %d: %s",
            horizon,
            old,
            epoch,
            lrs,
        )


def _once(trainer: pl.Trainer):
    """``log.info`` on the first rank: every DDP rank changes its own schedulers alike, and
    said each change once per rank; the others say it at debug level."""
    return log.info if trainer.is_global_zero else log.debug


def _warmup_factor(warmup: LinearLR | None) -> float:
    if warmup is None:
        return 1.0
    done = min(warmup.last_epoch, warmup.total_iters) / warmup.total_iters
    return warmup.start_factor + (warmup.end_factor - warmup.start_factor) * done


def catch_up_plateaus(trainer: pl.Trainer, history: list[dict]) -> None:
    """After a resume: step each epoch-wise ``ReduceLROnPlateau`` with the monitored value of
    each finished epoch it has not seen (``history``: the run record's ``val_history``)."""
    say = _once(trainer)
    for config in trainer.lr_scheduler_configs:
        # (one stepped per batch or every n epochs is left as Lightning restores it)
        if not config.reduce_on_plateau or (config.interval, config.frequency) != ("epoch", 1):
            continue
        plateau, monitor = config.scheduler, config.monitor
        seen = {entry["epoch"]: entry[monitor] for entry in history if monitor in entry}
        while plateau.last_epoch < trainer.current_epoch and plateau.last_epoch in seen:
            epoch = plateau.last_epoch
            plateau.step(seen[epoch])
            say("plateau schedule given epoch %d's %s (%.4g)", epoch, monitor, seen[epoch])
