"""What every task needs: building parts from config, user-facing errors, rank-zero output."""

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from cnnzoo.errors import ConfigError, UserError

T = TypeVar("T")

# Keys of a model config that the rest of the run reads (by interpolation or in code); the
# remaining keys are the arguments of its ``_target_`` builder.
MODEL_RUN_KEYS = ("input_size", "eval_resize", "lr", "aux_weights", "channels_last", "compile")


def build_net(model_cfg: DictConfig) -> nn.Module:
    """Instantiate the architecture from a model config (its builder keys only)."""
    builder = {k: v for k, v in model_cfg.items() if k not in MODEL_RUN_KEYS}
    return instantiate(OmegaConf.create(builder))


def check_input_size(model_cfg: DictConfig) -> None:
    """Fail early, with the fix, when the architecture cannot take ``model.input_size`` px.

    A forward pass on the meta device (shapes only, no arithmetic) in training mode, so that
    auxiliary heads are checked too.
    """
    probe_cfg = OmegaConf.merge(model_cfg, {"weights": None, "pretrained": False})
    size = model_cfg.input_size
    with torch.device("meta"):
        net = build_net(probe_cfg).train()
        try:
            net(torch.empty(2, 3, size, size))
        except RuntimeError as e:
            raise ConfigError(
                f"model {model_cfg.name!r} cannot take {size} px input "
                f"(model.input_size={size}): {e}. Use a larger model.input_size (the model's "
                "default is its paper's), model.small_input=true for 32-64 px data, or "
                "model.aux_logits=false where auxiliary heads need the larger input."
            ) from None


def instantiate_group(group_cfg: DictConfig | None) -> list[Any]:
    """Instantiate every entry of a dict-of-targets group (callbacks, logger); skip nulls."""
    if not group_cfg:
        return []
    return [instantiate(entry) for entry in group_cfg.values() if entry and "_target_" in entry]


def exit_on_user_error(task: Callable[..., T]) -> Callable[..., T]:
    """Print a ``UserError`` as one clear line and exit 1, instead of a traceback wall."""

    @functools.wraps(task)
    def run(*args, **kwargs) -> T:
        try:
            return task(*args, **kwargs)
        except UserError as e:
            print(f"\nerror: {e}", file=sys.stderr)
            raise SystemExit(1) from None

    return run
