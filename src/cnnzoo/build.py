"""The one door from a composed config to a run's network and LightningModule.

Every task builds through here (train, eval, predict, export, visualize, the lr range test).
The config says what to build: ``cfg.module`` (conf/module/classification.yaml) is the
``ClassificationModule`` with its ``net`` (the model config's ``net``: the builder and its
arguments), its partial ``optimizer`` (the optim config's ``optimizer``) and its ``scheduler``,
all by interpolation, so ``instantiate(cfg.module)`` builds the whole module. The one value
computed here is the effective learning rate (``optim.lr_scaling``).
"""

import inspect
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from cnnzoo.errors import ConfigError
from cnnzoo.module import ClassificationModule

BASE_BATCH_SIZE = 256  # the batch the models' and papers' learning rates are given for


CONF_DIR = Path(__file__).resolve().parents[2] / "conf"  # (the checkout's, beside train.py)
# The keys of a cnnzoo 0.1 run's flat model and optim configs that were not the builder's
# arguments; read only to upgrade such a run's config (``upgrade_run_config``).
V01_MODEL_RUN_KEYS = ("input_size", "eval_resize", "lr", "aux_weights", "channels_last",
                      "compile", "freeze")  # fmt: skip
V01_OPTIM_RUN_KEYS = ("no_decay_norm_bias", "lr_scaling", "head_lr_mult")
V01_DEFAULTS = {  # what conf/module reads that a 0.1 config may lack
    "model": {"aux_weights": [], "channels_last": None, "compile": False, "freeze": "none"},
    "optim": {"no_decay_norm_bias": False, "head_lr_mult": 1.0},
}


def upgrade_run_config(run_cfg: DictConfig) -> DictConfig:
    """A run folder's saved config as this version's build door reads it: a run trained by
    cnnzoo 0.1 (flat model and optim configs, no ``module`` section) gets ``model.net``,
    ``optim.optimizer`` and ``module``, so its runs still evaluate, predict, visualize and
    export. A current run's config is returned as it is."""
    upgraded = run_cfg.copy()
    with open_dict(upgraded):
        for section, run_keys, node in (
            ("model", V01_MODEL_RUN_KEYS, "net"),
            ("optim", V01_OPTIM_RUN_KEYS, "optimizer"),
        ):
            flat = upgraded.get(section)
            if flat is not None and node not in flat and "_target_" in flat:
                raw = OmegaConf.to_container(flat, resolve=False)
                flat[node] = {k: v for k, v in raw.items() if k not in run_keys}
                for key, value in V01_DEFAULTS[section].items():
                    flat.setdefault(key, value)
        if "module" not in upgraded and (CONF_DIR / "module").is_dir():
            upgraded.module = OmegaConf.load(CONF_DIR / "module" / "classification.yaml")
    return upgraded


def net_config(model_cfg: DictConfig) -> DictConfig:
    """``model.net``, the builder and its arguments; a clear error where there is none."""
    if "net" not in model_cfg:
        raise ConfigError(
            f"the model config of {model_cfg.get('name', '?')!r} has no `net` (the builder's "
            "arguments). Give a model config of conf/model/ (model=<name>)."
        )
    return model_cfg.net


def build_net(model_cfg: DictConfig, **overrides: Any) -> nn.Module:
    """The architecture of a model config (``overrides`` replace some builder arguments)."""
    return instantiate(net_config(model_cfg), **overrides)


def classes_to_count(cfg: DictConfig) -> bool:
    """``data.num_classes=null`` (``data=imagefolder``'s default): as many classes as the tree
    has class folders, or as the run's checkpoint was trained with."""
    data = cfg.get("data")
    return data is not None and "num_classes" in data and data.num_classes is None


def trained_class_count(checkpoint: dict[str, Any]) -> int | None:
    """The class count a run's checkpoint was trained with, when it says."""
    return checkpoint.get("hyper_parameters", {}).get("num_classes")


def with_class_count(cfg: DictConfig, count: int | None) -> DictConfig:
    """The config a run goes on with: ``cfg`` itself where ``data.num_classes`` is set (or
    ``count`` is not known yet), else a copy with ``count``, found by the caller from what it
    has read (its DataModule's tree, a checkpoint). The model's head follows by interpolation
    (``model.num_classes=${data.num_classes}``); ``cfg`` is not changed."""
    if count is None or not classes_to_count(cfg):
        return cfg
    resolved = cfg.copy()
    with open_dict(resolved):
        resolved.data.num_classes = int(count)
    return resolved


def build_module(cfg: DictConfig, **overrides: Any) -> ClassificationModule:
    """The run's LightningModule, from ``cfg.module`` with the effective lr (``overrides``
    replace module arguments, e.g. ``net=`` an already built network). ``cfg`` is not changed;
    with ``data.num_classes=null`` give ``with_class_count(cfg, N)``, or the data's class
    folders are counted here."""
    if "module" not in cfg:
        raise ConfigError(
            "the config has no `module` section (conf/module/classification.yaml): give a "
            "config composed from conf/, or a run folder's."
        )
    net_config(cfg.model)  # (checked, not built: a build would draw from the seeded RNG)
    if classes_to_count(cfg):  # (the tasks give counted configs; this serves direct callers)
        cfg = with_class_count(cfg, build_datamodule(cfg).settle_num_classes())
    arguments = {"lr": effective_lr(cfg), **overrides}
    return instantiate(cfg.module, **arguments, _convert_="all")


def build_datamodule(cfg: DictConfig) -> pl.LightningDataModule:
    """``cfg.data``'s DataModule; an option its class does not take is named first, with the
    way to drop it (an ``experiment=`` sets options for its own data group, e.g. quickstart's
    ``data.num_workers``, which ``data=synthetic`` does not have). With
    ``data.num_classes=null`` the DataModule counts the class folders of its tree
    (``settle_num_classes``; ``with_class_count`` gives the config that count)."""
    check_options(cfg.data, "data")
    return instantiate(cfg.data)


def check_options(node: DictConfig, group: str) -> None:
    """A ``ConfigError`` naming the keys of ``node`` that its ``_target_`` does not take
    (Hydra's error is the constructor's TypeError, one key at a time)."""
    target = node.get("_target_")
    if target is None:
        return
    try:
        parameters = inspect.signature(get_class(target)).parameters
    except (ImportError, ValueError, TypeError):
        return  # instantiate names a target it cannot find
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    unknown = [k for k in node if not str(k).startswith("_") and k not in parameters]
    if unknown:
        choice = f"{group}={_choice(group, target)}"
        options = ", ".join(sorted(k for k in parameters if k != "self"))
        raise ConfigError(
            f"{choice} does not take {', '.join(f'{group}.{k}' for k in unknown)} (an "
            f"experiment= may set such options for another {group} choice). Drop them with "
            f"{' '.join(f'~{group}.{k}' for k in unknown)}; {choice} takes: {options}."
        )


def _choice(group: str, target: str) -> str:
    """The config group's chosen option (``synthetic``), else the target's class name."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        choice = HydraConfig.get().runtime.choices.get(group)
        if choice:
            return choice
    return target.rsplit(".", 1)[-1]


def effective_lr(cfg: DictConfig) -> float:
    """``optim.lr``, times global batch / 256 with ``optim.lr_scaling=linear`` (Goyal et al.)."""
    scaling = cfg.optim.get("lr_scaling", "none")
    try:
        lr = float(cfg.optim.lr)
    except ValueError:
        raise ConfigError(
            f"optim.lr={cfg.optim.lr!r} (model.lr unless set): give a number, e.g. model.lr=0.1."
        ) from None
    if not lr > 0:  # (0 trained a run that learned nothing; a negative one climbed the loss)
        raise ConfigError(
            f"optim.lr={cfg.optim.lr!r} (model.lr unless set): give a positive learning rate, "
            "e.g. model.lr=0.1."
        )
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


def starts_trained(model_cfg: DictConfig) -> bool:
    """Whether the network starts from trained weights: a file (``model.weights``) or
    torchvision's published ones (``model.pretrained``)."""
    return bool(model_cfg.get("weights") or model_cfg.get("pretrained"))


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
