"""The run's Lightning Trainer: its settings checked (``check_trainer``, before any data is
read) and the Trainer built with the run's loggers and callbacks (``build_trainer``), next to
the build door that makes its network and module (``cnnzoo.build``)."""

import os
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig
from pytorch_lightning.accelerators import CPUAccelerator
from pytorch_lightning.callbacks import LearningRateMonitor, RichModelSummary
from pytorch_lightning.plugins.environments import LightningEnvironment

from cnnzoo.build import model_gmacs
from cnnzoo.callbacks import NetworkSummary
from cnnzoo.errors import ConfigError, is_number, is_whole


def instantiate_group(group_cfg: DictConfig | None) -> list[Any]:
    """Instantiate every entry of a dict-of-targets group (callbacks, logger); skip nulls."""
    if not group_cfg:
        return []
    return [instantiate(entry) for entry in group_cfg.values() if entry and "_target_" in entry]


def check_trainer(trainer_cfg: DictConfig) -> None:
    """Trainer settings Lightning would take and then misuse, refused before any data is read:
    ``max_epochs`` a whole number of 1 or more, ``accumulate_grad_batches`` a whole number,
    ``gradient_clip_val`` not negative, ``limit_*_batches`` a count, a share or null, and a GPU
    accelerator only where torch sees a CUDA GPU."""
    accumulate = trainer_cfg.get("accumulate_grad_batches", 1)
    if not is_whole(accumulate):
        raise ConfigError(  # (0 failed with a ZeroDivisionError in the batch arithmetic)
            f"trainer.accumulate_grad_batches={accumulate!r}: give the batches per optimiser "
            "step, a whole number of 1 or more (1: no accumulation)."
        )
    clip = trainer_cfg.get("gradient_clip_val")
    if clip is not None and not is_number(clip):
        raise ConfigError(  # (Lightning took a negative one silently as no clipping)
            f"trainer.gradient_clip_val={clip!r}: give the largest gradient norm, a positive "
            "number, or null for no clipping."
        )
    for split in ("train", "val", "test"):  # ("abc": a TypeError of Lightning's comparison)
        limit = trainer_cfg.get(f"limit_{split}_batches")
        if not (
            limit is None or is_whole(limit, 0) or (isinstance(limit, float) and 0 <= limit <= 1)
        ):
            raise ConfigError(
                f"trainer.limit_{split}_batches={limit!r}: give a number of batches (a whole "
                "number), a share of them (0.0 to 1.0), or null for all."
            )
    epochs = trainer_cfg.get("max_epochs")
    if not is_whole(epochs):
        shown = "null" if epochs is None else epochs
        raise ConfigError(
            f"trainer.max_epochs={shown}: give the number of epochs to train, a whole number of "
            "1 or more (90 in the ResNet and AlexNet papers); the learning-rate schedule is laid "
            "out over them. To score a network without training it: python eval.py run=RUN "
            "(or model.weights=FILE)."
        )
    if str(trainer_cfg.get("accelerator")) in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"trainer.accelerator={trainer_cfg.accelerator} asks for a CUDA GPU, but PyTorch "
            f"sees none here (torch {torch.__version__}, torch.cuda.is_available() is False). "
            "Train on the CPU with trainer=cpu (or trainer=ddp_cpu), or check the GPU driver "
            "and CUDA_VISIBLE_DEVICES."
        )


def build_trainer(cfg: DictConfig, gmacs: float | None = None) -> pl.Trainer:
    """The run's Trainer with its loggers and callbacks; the model summary shows ``gmacs``
    (the network's multiply-adds per image, counted here when not given)."""
    loggers = instantiate_group(cfg.get("logger"))
    callbacks = instantiate_group(cfg.get("callbacks"))
    if not loggers:  # nothing to report a learning rate to
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    try:
        trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    except InstantiationException as e:  # a value Lightning refuses: trainer.precision=17,
        if not isinstance(e.__cause__, ValueError | TypeError):  # trainer.devices=-1 on a CPU
            raise
        raise ConfigError(f"trainer: {e.__cause__}") from None
    check_other_nodes_start(trainer)
    for i, callback in enumerate(trainer.callbacks):  # Lightning's own, from enable_model_summary
        if type(callback) is RichModelSummary:
            gmacs = model_gmacs(cfg.model) if gmacs is None else gmacs
            trainer.callbacks[i] = NetworkSummary(flops=2e9 * gmacs)
    if cfg.trainer.get("sync_batchnorm") and isinstance(trainer.accelerator, CPUAccelerator):
        raise ConfigError(
            "trainer.sync_batchnorm=true needs GPUs: PyTorch's SyncBatchNorm has no CPU "
            "implementation. Set trainer.sync_batchnorm=false for CPU runs (trainer=ddp_cpu)."
        )
    return trainer


def check_other_nodes_start(trainer: pl.Trainer) -> None:
    """``trainer.num_nodes`` > 1 where nothing starts the other nodes (no SLURM job, no
    torchrun, no MASTER_ADDR/NODE_RANK of one's own): Lightning would wait for them for ever at
    "Initializing distributed: GLOBAL_RANK: 0, MEMBER: 1/N"."""
    environment = getattr(trainer.strategy, "cluster_environment", None)
    if (
        trainer.num_nodes > 1
        and isinstance(environment, LightningEnvironment)
        and not ("MASTER_ADDR" in os.environ and "NODE_RANK" in os.environ)
    ):
        raise ConfigError(
            f"trainer.num_nodes={trainer.num_nodes}, but nothing starts the other nodes here, "
            "so training would wait for them for ever. Under SLURM start it with srun in an "
            f"sbatch script (--nodes={trainer.num_nodes}: README, Clusters); elsewhere run "
            f"torchrun --nnodes={trainer.num_nodes} ... train.py on each node, or set "
            "MASTER_ADDR, MASTER_PORT and NODE_RANK on each; on one machine: trainer.num_nodes=1."
        )
