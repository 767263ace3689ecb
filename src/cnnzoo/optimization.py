"""The optimiser and schedule of a run: parameter groups (no weight decay for norms and biases,
the classifier's lr multiplier), the warm-up composed with the configured schedule, and the
checks of the schedule's settings. ``ClassificationModule.configure_optimizers`` calls
``configure``; nothing here holds state."""

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn
from torch.optim.lr_scheduler import LinearLR

from cnnzoo.errors import ConfigError, is_number, is_whole
from cnnzoo.schedules import horizons

OptimizerFactory = Callable[..., torch.optim.Optimizer]
MONITORED = re.compile(r"(train|val|val_ema)/(loss|(acc|err)_top[15])")  # what a run logs


def head_parameters(net: nn.Module) -> list[nn.Parameter]:
    """The classifier's parameters: those of the network's last linear layer (torchvision's
    ``fc`` or ``classifier[-1]``: what ``model.weights`` re-initialises for a new class count)."""
    linear = [m for m in net.modules() if isinstance(m, nn.Linear)]
    if not linear:
        raise ConfigError("the network has no linear classifier to single out.")
    return list(linear[-1].parameters())


def construct(group: str, factory: Callable, *args, **kwargs):
    """``factory(*args, **kwargs)`` (a partial optimiser or scheduler of the config), with the
    value it refuses (``Invalid momentum value: -1``) as a ConfigError naming the group."""
    try:
        return factory(*args, **kwargs)
    except (TypeError, ValueError) as e:
        name = getattr(getattr(factory, "func", factory), "__name__", str(factory))
        raise ConfigError(f"{group}: {name} refused its settings ({e}); check {group}.*.") from None


COUNTS = {  # the schedule settings that count epochs: what each counts
    "step_size": "the epochs between decays",
    "T_max": "the epochs of the cosine (trainer.max_epochs unless set)",
}


def check_schedule(scheduler: dict[str, Any] | None, head_lr_mult: float) -> None:
    """The schedule's settings, refused before training where Lightning or torch would stop
    later with a traceback (``interval=batch`` at fit start, ``monitor=val/acc`` after the first
    epoch, StepLR's ``step_size=0`` at its first step) or take them silently (a negative
    warm-up; a negative ``head_lr_mult`` climbs the loss)."""
    if not is_number(head_lr_mult):
        raise ConfigError(f"optim.head_lr_mult={head_lr_mult!r}: give 0 or a positive number.")
    config = scheduler or {}
    if not is_number(config.get("warmup_epochs", 0)):
        raise ConfigError(
            f"scheduler.warmup_epochs={config['warmup_epochs']!r}: give 0 (none) or a number of "
            "epochs."
        )
    factor = config.get("warmup_start_factor", 1e-3)
    if not is_number(factor) or not 0 < factor <= 1:
        raise ConfigError(f"scheduler.warmup_start_factor={factor!r}: give a number in (0, 1].")
    if not config.get("scheduler"):
        return
    if config.get("interval", "epoch") not in ("epoch", "step"):
        raise ConfigError(f"scheduler.interval={config['interval']!r}: choose epoch or step.")
    monitor = config.get("monitor")
    if monitor is not None and not MONITORED.fullmatch(str(monitor)):
        raise ConfigError(
            f"scheduler.monitor={monitor!r}: not a metric the run logs; choose val/loss, "
            "val/err_top1, val/acc_top1, val/err_top5, val/acc_top5 (or train/loss)."
        )
    keywords = getattr(config["scheduler"], "keywords", {}) or {}
    for key, what in COUNTS.items():
        if key in keywords and not is_whole(keywords[key]):  # (T_max=0: ZeroDivisionError)
            raise ConfigError(
                f"scheduler.scheduler.{key}={keywords[key]!r}: give {what}, a whole number of 1 "
                "or more."
            )
    gamma = keywords.get("gamma", 0.1)
    if not is_number(gamma) or gamma == 0:  # (-1: a negative lr, training climbing the loss)
        raise ConfigError(
            f"scheduler.scheduler.gamma={gamma!r}: give the factor the lr is multiplied by at "
            "each decay, a positive number (0.1 in the papers' step schedules)."
        )


def parameter_groups(
    module: nn.Module, net: nn.Module, lr: float | None, no_decay_norm_bias: bool, head_mult: float
) -> list[dict[str, Any]]:
    """The trainable parameters in optimiser groups: without weight decay for BatchNorm
    parameters and biases (``no_decay_norm_bias``); the classifier's (``net``'s last linear
    layer) with ``lr`` times ``head_mult`` when that is not 1."""
    trainable = [p for p in module.parameters() if p.requires_grad]
    head = set(map(id, head_parameters(net))) if head_mult != 1.0 else set()
    parts = [trainable] if head_mult == 1.0 else [
        [p for p in trainable if id(p) not in head],
        [p for p in trainable if id(p) in head],
    ]  # fmt: skip
    groups = []
    for i, params in enumerate(parts):
        extra = {"lr": lr * head_mult} if i == 1 and lr is not None else {}
        if no_decay_norm_bias:
            groups.append({"params": [p for p in params if p.ndim > 1], **extra})
            groups.append({"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0,
                           **extra})  # fmt: skip
        else:
            groups.append({"params": params, **extra})
    return [g for g in groups if g["params"]]


@dataclass
class Optimisation:
    lightning: Any  # what configure_optimizers returns
    horizons: dict  # each cosine's configured horizon, by cosine (cnnzoo.schedules)


def configure(
    module: pl.LightningModule, factory: OptimizerFactory, scheduler: dict[str, Any] | None
) -> Optimisation:
    """The optimiser over ``module``'s parameter groups at its lr (``hparams.lr``, else the one
    ``factory`` carries), the warm-up (per step, for ``scheduler.warmup_epochs``; it composes
    with the schedule: both are multiplicative) and the configured schedule."""
    hparams = module.hparams
    base_lr = hparams.lr if hparams.lr is not None else _factory_lr(factory)
    groups = parameter_groups(
        module,
        module.net,
        None if base_lr is None else float(base_lr),
        hparams.no_decay_norm_bias,
        float(hparams.get("head_lr_mult", 1.0)),
    )
    lr = {} if hparams.lr is None else {"lr": hparams.lr}
    optimizer = construct("optim", factory, groups, **lr)
    config = dict(scheduler or {})
    warmup_epochs = config.pop("warmup_epochs", 0)
    start_factor = config.pop("warmup_start_factor", 1e-3)
    schedulers = []
    if warmup_epochs:
        steps = max(1, round(warmup_epochs * _steps_per_epoch(module.trainer)))
        warmup = LinearLR(optimizer, start_factor=start_factor, total_iters=steps)
        schedulers.append({"scheduler": warmup, "interval": "step"})
    if config.get("scheduler"):
        config["scheduler"] = construct("scheduler", config["scheduler"], optimizer)
        schedulers.append(config)
    configured = horizons([entry["scheduler"] for entry in schedulers])
    if not schedulers:
        return Optimisation(optimizer, configured)
    if len(schedulers) == 1:
        return Optimisation({"optimizer": optimizer, "lr_scheduler": schedulers[0]}, configured)
    return Optimisation(([optimizer], schedulers), configured)


def _factory_lr(factory: OptimizerFactory) -> float | None:
    keywords = getattr(factory, "keywords", {}) or {}
    return keywords.get("lr")


def _steps_per_epoch(trainer: pl.Trainer) -> float:
    if not trainer.max_epochs or trainer.max_epochs < 0:
        raise ConfigError("scheduler.warmup_epochs needs trainer.max_epochs to be set.")
    return trainer.estimated_stepping_batches / trainer.max_epochs
