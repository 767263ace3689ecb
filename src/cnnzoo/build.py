"""The one door from a composed config to a run's network and LightningModule.

Every task builds through here (train, eval, predict, export, visualize, the lr range test).
The config says what to build: ``cfg.module`` (conf/module/classification.yaml) is the
``ClassificationModule`` with its ``net`` (the model config's ``net``: the builder and its
arguments), its partial ``optimizer`` (the optim config's ``optimizer``) and its ``scheduler``,
all by interpolation, so ``instantiate(cfg.module)`` builds the whole module. The one value
computed here is the effective learning rate (``optim.lr_scaling``).
"""

from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from cnnzoo.errors import ConfigError
from cnnzoo.module import ClassificationModule

BASE_BATCH_SIZE = 256  # the batch the models' and papers' learning rates are given for


def build_net(model_cfg: DictConfig, **overrides: Any) -> nn.Module:
    """The architecture of a model config (``model.net``: the builder and its arguments;
    ``overrides`` replace some of them)."""
    if "net" not in model_cfg:
        raise ConfigError(
            f"the model config of {model_cfg.get('name', '?')!r} has no `net` (the builder's "
            "arguments): it was written by a cnnzoo before 0.2. Score such a run with "
            "ckpt_path=<run>/checkpoints/best.ckpt model=<its model> data=<its data> instead "
            "of run=."
        )
    return instantiate(model_cfg.net, **overrides)


def build_module(cfg: DictConfig, **overrides: Any) -> ClassificationModule:
    """The run's LightningModule, from ``cfg.module`` with the effective lr (``overrides``
    replace module arguments, e.g. ``net=`` an already built network)."""
    if "module" not in cfg:
        raise ConfigError(
            "the config has no `module` section: a run folder written by a cnnzoo before 0.2. "
            "Score it with ckpt_path=<run>/checkpoints/best.ckpt model=<its model> "
            "data=<its data> instead of run=."
        )
    build_net(cfg.model)  # (a clear error for a model config without `net`)
    arguments = {"lr": effective_lr(cfg), **overrides}
    return instantiate(cfg.module, **arguments, _convert_="all")


def effective_lr(cfg: DictConfig) -> float:
    """``optim.lr``, times global batch / 256 with ``optim.lr_scaling=linear`` (Goyal et al.)."""
    scaling = cfg.optim.get("lr_scaling", "none")
    try:
        lr = float(cfg.optim.lr)
    except ValueError:
        raise ConfigError(
            f"optim.lr={cfg.optim.lr!r} (model.lr unless set): give a number, e.g. model.lr=0.1."
        ) from None
    if scaling == "none":
        return lr
    if scaling == "linear":
        return lr * cfg.data.batch_size / BASE_BATCH_SIZE
    raise ConfigError(f"optim.lr_scaling={scaling!r}: choose none or linear.")


def check_input_size(model_cfg: DictConfig) -> None:
    """Fail early, with the fix, when the architecture cannot take ``model.input_size`` px.

    A forward pass on the meta device (shapes only, no arithmetic) in training mode, so that
    auxiliary heads are checked too.
    """
    size = model_cfg.input_size
    with torch.device("meta"):
        net = _meta_net(model_cfg).train()
        try:
            net(torch.empty(2, 3, size, size))
        except RuntimeError as e:
            raise ConfigError(
                f"model {model_cfg.name!r} cannot take {size} px input "
                f"(model.input_size={size}): {e}. Use a larger model.input_size (the model's "
                "default is its paper's), model.small_input=true for 32-64 px data, or "
                "model.aux_logits=false where auxiliary heads need the larger input."
            ) from None


def model_gmacs(model_cfg: DictConfig) -> float:
    """Multiply-adds of one eval forward pass of one ``model.input_size`` image, in billions
    (counted on the meta device: no memory, no arithmetic)."""
    size = model_cfg.input_size
    with torch.device("meta"):
        net = _meta_net(model_cfg).eval()
        with FlopCounterMode(display=False) as counter:
            net(torch.empty(1, 3, size, size))
    return counter.get_total_flops() / 2e9  # the counter counts a multiply-add as 2 FLOPs


def _meta_net(model_cfg: DictConfig) -> nn.Module:
    """The architecture without weight files (call under ``torch.device("meta")``)."""
    return build_net(model_cfg, weights=None, pretrained=False)  # no file I/O
