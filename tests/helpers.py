"""What the tests share besides fixtures: the repo's paths, the tiny sample set, the real Hydra
config composed for tiny CPU runs, a subprocess run as a user types it, a fake trainer."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from cnnzoo.data.pipelines import Placement
from cnnzoo.tasks.resolvers import register_resolvers

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
# One architecture per builder path; a check over the whole zoo runs the other thirteen in
# `make test` only (marked zoo; `make test-fast` leaves them out).
FAMILY_FIRSTS = ("alexnet", "vgg11", "vgg11_bn", "googlenet", "inception_v3", "resnet18",
                 "densenet121")  # fmt: skip


def zoo(names: list[str]) -> list:
    """``names`` as parameters: those of ``FAMILY_FIRSTS`` plain, the rest marked ``zoo``."""
    return [n if n in FAMILY_FIRSTS else pytest.param(n, marks=pytest.mark.zoo) for n in names]


# A small sample set (same generator, fewer images) so runs take seconds.
TINY_SAMPLE = {"train_per_class": 8, "val_per_class": 4}


def tiny_datamodule(root, **kwargs):
    """An ImageFolderDataModule at 32 px over ``root`` (setup not yet called)."""
    from cnnzoo.data import ImageFolderDataModule

    options = {"num_classes": 10, "batch_size": 8, "num_workers": 0, "image_size": 32}
    return ImageFolderDataModule(root, **(options | {"eval_resize": 36} | kwargs))


def place(
    datamodule,
    world_size: int = 1,
    rank: int = 0,
    epoch: int = 0,
    accumulate: int = 1,
    device: str = "cpu",
    devices: int = 1,
    training: bool = False,
) -> Placement:
    """Load for this placement instead of an attached trainer's (rank, world, device, ...);
    ``device`` may be one this machine does not have (a CUDA run's decisions, on the CPU)."""
    datamodule.placement_override = Placement(
        rank, world_size, torch.device(device), devices, accumulate, epoch, training
    )
    return datamodule.placement_override


def tiny_overrides(cache_dir: Path, out: Path) -> list[str]:
    """Overrides that turn the real config into a seconds-long CPU run on the tiny sample set."""
    return [
        f"paths.cache_dir={cache_dir}",
        f"data.train_per_class={TINY_SAMPLE['train_per_class']}",
        f"data.val_per_class={TINY_SAMPLE['val_per_class']}",
        "data.batch_size=8",
        "data.num_workers=0",
        "model.input_size=32",
        "model.eval_resize=36",
        "trainer=cpu",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=3",
        "trainer.log_every_n_steps=1",
        "trainer.enable_model_summary=false",
        "callbacks.progress_bar=null",
        "callbacks.prediction_grid=null",  # drawn in the tests that check it
    ]


def compose_train(
    overrides: list[str], out: Path | None = None, config: str = "train"
) -> DictConfig:
    """The real train (or eval, predict) config, with paths that need no running Hydra app."""
    register_resolvers()  # (what the entry points do: conf/ uses cnnzoo's resolvers)
    paths = [f"paths.output_dir={out}", f"paths.log_dir={out}"] if out else []
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config, overrides=paths + overrides)


def run_train(
    args: list[str], env: dict[str, str], cwd: Path, timeout: int = 300, script: str = "train.py"
):
    """``python train.py ARGS`` (or another script) as a user runs it, from ``cwd``."""
    env = {**env, "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "0"}
    return subprocess.run(
        [sys.executable, str(ROOT / script), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
