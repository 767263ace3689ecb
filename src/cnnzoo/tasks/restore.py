"""Restore a trained network and its data for eval, predict, visualize and export.

A run folder is enough: its ``.hydra/config.yaml`` says the architecture and the data, its
``checkpoints/`` hold the weights. Without a run, ``ckpt_path=`` (a cnnzoo checkpoint) or
``model.weights=`` (a torchvision-format state dict) with ``model=``/``data=`` choose them.
"""

from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from cnnzoo.build import (
    build_datamodule,
    build_module,
    starts_trained,
    trained_class_count,
    upgrade_run_config,
    with_class_count,
)
from cnnzoo.checkpointing import datamodule_state
from cnnzoo.data.protocol import RunData
from cnnzoo.errors import ConfigError
from cnnzoo.models.weights import net_state_dict, read_torch_file
from cnnzoo.module import ClassificationModule
from cnnzoo.tasks.folders import (
    refuse_a_checkpoint_as_run,
    run_checkpoint,
    run_choices,
    run_folder_hint,
    where_it_ran,
)
from cnnzoo.tasks.launch import job_overrides, parsed_override

CKPTS = ("best", "last")  # ckpt=best|last: the run's checkpoints by name
RUN_SECTIONS = ("model", "data", "input", "optim", "scheduler", "module", "trainer")  # a run's


def run_config(cfg: DictConfig) -> DictConfig:
    """``cfg`` with the model and data of ``cfg.run`` (a training run folder), when given; the
    command line's ``model.*``/``data.*`` values still apply (e.g. ``data.root=``)."""
    if not cfg.get("run"):
        return cfg
    run = Path(cfg.run).expanduser()
    saved = run / ".hydra" / "config.yaml"
    refuse_a_checkpoint_as_run("run", run, f" ckpt={run.stem if run.stem in CKPTS else run}")
    if not saved.is_file():
        hint = run_folder_hint("run", run) or (
            "give a folder under outputs/train/, or use ckpt_path= with model= and data="
        )
        raise ConfigError(f"run={run}: not a cnnzoo run folder (no {saved}); {hint}.")
    trained = upgrade_run_config(OmegaConf.load(saved))  # (also a cnnzoo 0.1 run's)
    merged = cfg.copy()
    with open_dict(merged):
        for section in RUN_SECTIONS:
            if section in trained:
                merged[section] = trained[section]
        merged.seed = trained.get("seed", cfg.seed)
        cache_dir = OmegaConf.select(trained, "paths.cache_dir", throw_on_resolution_failure=False)
        if cache_dir is not None and "paths" in merged:  # where its generated data lives
            merged.paths.cache_dir = cache_dir
        if "loader" in merged.data:  # eval and predict read with the worker pipeline
            merged.data.loader = "workers"
        root = OmegaConf.select(merged, "data.root", throw_on_resolution_failure=False)
        if isinstance(root, str) and (found := where_it_ran(run, root)) is not None:
            merged.data.root = found  # (data.root=photos, and this command runs elsewhere)
    for override in job_overrides() or []:
        key, value = parsed_override(override)
        if key in ("model", "data"):
            refuse_another_group(run, key, value)
        elif key.split(".")[0] in ("model", "data"):
            OmegaConf.update(merged, key, value, force_add=True)
    return merged


def refuse_another_group(run: Path, group: str, option) -> None:
    """``model=vgg11`` beside ``run=`` of a resnet18 was ignored: the run's own network was
    scored under the name the user did not ask for. Its own option again is fine."""
    ran = run_choices(run).get(group)
    if str(option) == ran:
        return
    raise ConfigError(
        f"{group}={option}: run={run} trained with {group}={ran or '(unknown)'}, and a run is "
        f"restored with its own {group}. Drop {group}= (single values still change: "
        f"{group}.KEY=VALUE), or score a checkpoint of your choosing with ckpt_path=FILE.ckpt "
        f"{group}={option} in place of run=."
    )


def checkpoint_path(cfg: DictConfig) -> Path | None:
    """The checkpoint to score: ``ckpt_path``, else the run's ``ckpt`` (best or last), else
    None (the model's own weights: ``model.weights`` / ``model.pretrained``)."""
    if cfg.get("ckpt_path"):
        path = Path(cfg.ckpt_path).expanduser()
        if not path.is_file():
            raise ConfigError(f"ckpt_path={path}: no checkpoint at {path}.")
        return path
    if not cfg.get("run"):
        return None
    choice = str(cfg.get("ckpt", "best"))
    run = Path(cfg.run).expanduser()
    path = run_checkpoint(run, choice) if choice in CKPTS else Path(choice).expanduser()
    if not path.is_file():
        folder = run_checkpoint(run).parent
        held = sorted(p.name for p in folder.glob("*.ckpt"))
        raise ConfigError(
            f"ckpt={choice}: no checkpoint at {path} ({folder} holds "
            f"{', '.join(held) or 'none: a run that stopped before its first epoch ended has none'}"
            "). Choose ckpt=best, ckpt=last or ckpt=/path/to/file.ckpt, or another run."
        )
    return path


@dataclass(frozen=True)
class Trained:
    """What ``load_module`` read from the checkpoint besides the weights."""

    path: Path
    epoch: int
    class_names: list[str] | None  # by class index (checkpoints of cnnzoo >= 0.2.1)


def load_module(cfg: DictConfig, ema: bool = False) -> tuple[ClassificationModule, Trained | None]:
    """The network in eval mode with the chosen weights, and what its checkpoint says (None
    without one); a checkpoint of another architecture or class count is refused naming both."""
    path = checkpoint_path(cfg)
    checkpoint = read_torch_file(path) if path is not None else None
    if checkpoint is not None:
        if "state_dict" not in checkpoint:
            raise ConfigError(
                f"{path} is not a training checkpoint; for a torchvision-format state dict use "
                "model.weights=... instead of ckpt_path=."
            )
        cfg = cfg.copy()  # (the caller's config stays as given)
        with open_dict(cfg):  # the checkpoint's weights replace any the model config names
            cfg.model.weights = None
            if "pretrained" in cfg.model:
                cfg.model.pretrained = False
        cfg = with_class_count(cfg, trained_class_count(checkpoint))
    module = build_module(cfg)  # (model.weights with data.num_classes=null: the tree counts)
    if checkpoint is not None:
        module.on_load_checkpoint(checkpoint)
        module.net.load_state_dict(net_state_dict(checkpoint, ema=ema, source=str(path)))
        names = datamodule_state(checkpoint).get("class_names")
        trained = Trained(path, int(checkpoint.get("epoch", 0)), list(names) if names else None)
        return module.eval(), trained
    if ema:
        raise ConfigError("eval.ema=true needs a checkpoint (run= or ckpt_path=).")
    if not starts_trained(cfg.model):
        raise ConfigError(  # (a forgotten run= scored a random network, and recorded it)
            f"no trained weights named, so {cfg.model.name} would have random ones: give "
            "run=outputs/train/<run>, ckpt_path=FILE.ckpt with model= and data=, "
            "model.weights=FILE.pth, or model.pretrained=true."
        )
    return module.eval(), None


def image_datamodule(cfg: DictConfig, num_classes: int | None = None) -> RunData:
    """The run's DataModule, for scoring or showing images (``num_classes``: the network's,
    for ``data.num_classes=null``): a ``data=synthetic`` run (random noise with random labels,
    for measuring speed) has neither images nor class names."""
    datamodule: RunData = build_datamodule(with_class_count(cfg, num_classes))
    if not datamodule.has_images:
        datamodule.eval_loader("val")  # (refuses, saying why)
    return datamodule


def class_names(datamodule, trained: Trained | None) -> list[str]:
    """The names of the classes the network learned: those its checkpoint recorded (so a run
    folder copied away from its data still names its predictions), else the DataModule's
    (checkpoints of cnnzoo before 0.2.1, or no checkpoint)."""
    if trained is not None and trained.class_names:
        return trained.class_names
    return datamodule.class_names()


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
