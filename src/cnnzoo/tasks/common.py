"""What every task needs: building parts from config, checking them, user-facing errors."""

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning_fabric.utilities.exceptions import MisconfigurationException
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from cnnzoo.errors import ConfigError, UserError

T = TypeVar("T")

# Keys of a model / optim config that the rest of the run reads (by interpolation or in code);
# the remaining keys are the arguments of the config's ``_target_``.
MODEL_RUN_KEYS = (
    "input_size", "eval_resize", "lr", "aux_weights", "channels_last", "compile", "freeze"
)  # fmt: skip
OPTIM_RUN_KEYS = ("no_decay_norm_bias", "lr_scaling", "head_lr_mult")
BASE_BATCH_SIZE = 256  # the batch the models' and papers' learning rates are given for


def instantiate_target(cfg: DictConfig, run_keys: tuple[str, ...]) -> Any:
    """Instantiate ``cfg``'s ``_target_`` with every key but ``run_keys``."""
    return instantiate(OmegaConf.create({k: v for k, v in cfg.items() if k not in run_keys}))


def build_net(model_cfg: DictConfig) -> nn.Module:
    """Instantiate the architecture from a model config (its builder keys only)."""
    return instantiate_target(model_cfg, MODEL_RUN_KEYS)


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


def _meta_net(model_cfg: DictConfig) -> nn.Module:
    """The architecture without weight files (call under ``torch.device("meta")``)."""
    no_weights = {k: None for k in ("weights", "pretrained") if k in model_cfg}  # no file I/O
    return build_net(OmegaConf.merge(model_cfg, no_weights))


def model_gmacs(model_cfg: DictConfig) -> float:
    """Multiply-adds of one eval forward pass of one ``model.input_size`` image, in billions
    (counted on the meta device: no memory, no arithmetic)."""
    size = model_cfg.input_size
    with torch.device("meta"):
        net = _meta_net(model_cfg).eval()
        with FlopCounterMode(display=False) as counter:
            net(torch.empty(1, 3, size, size))
    return counter.get_total_flops() / 2e9  # the counter counts a multiply-add as 2 FLOPs


def instantiate_group(group_cfg: DictConfig | None) -> list[Any]:
    """Instantiate every entry of a dict-of-targets group (callbacks, logger); skip nulls."""
    if not group_cfg:
        return []
    return [instantiate(entry) for entry in group_cfg.values() if entry and "_target_" in entry]


def exit_on_user_error(task: Callable[..., T]) -> Callable[..., T]:
    """Print a ``UserError`` as one clear line and exit 1, instead of a traceback wall (also
    one raised by a constructor that Hydra's ``instantiate`` called, and Lightning's
    ``MisconfigurationException`` of a trainer setting, e.g. ``trainer.max_epochs=-2``)."""

    @functools.wraps(task)
    def run(*args, **kwargs) -> T:
        try:
            return task(*args, **kwargs)
        except (UserError, InstantiationException) as e:
            cause = e if isinstance(e, UserError) else e.__cause__
            if not isinstance(cause, UserError | MisconfigurationException):  # a bug's traceback
                raise
            print(f"\nerror: {cause}", file=sys.stderr)
            raise SystemExit(1) from None

    return run
