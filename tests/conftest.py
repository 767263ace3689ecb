"""Shared fixtures: the real Hydra config composed for tiny CPU runs, offline W&B, a sample set."""

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from cnnzoo.data.sample import ensure_sample_dataset

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
# A small sample set (same generator, fewer images) so runs take seconds.
TINY_SAMPLE = {"train_per_class": 8, "val_per_class": 4}


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cache")
    ensure_sample_dataset(
        path / "sample_v1_{train_per_class}+{val_per_class}_seed0".format(**TINY_SAMPLE),
        **TINY_SAMPLE,
    )
    return path


def tiny_datamodule(root, **kwargs):
    """An ImageFolderDataModule at 32 px over ``root`` (setup not yet called)."""
    from cnnzoo.data import ImageFolderDataModule

    options = {"num_classes": 10, "batch_size": 8, "num_workers": 0, "image_size": 32}
    return ImageFolderDataModule(root, **(options | {"eval_resize": 36} | kwargs))


def fake_trainer(
    world_size: int = 1,
    rank: int = 0,
    epoch: int = 0,
    accumulate: int = 1,
    device: str = "cpu",
    devices: int = 1,
) -> SimpleNamespace:
    """What a DataModule asks of its trainer, without one; ``device`` may be one this machine
    does not have (a CUDA trainer's decisions are checked on the CPU)."""
    return SimpleNamespace(
        world_size=world_size,
        global_rank=rank,
        accumulate_grad_batches=accumulate,
        current_epoch=epoch,
        num_devices=devices,
        training=False,
        strategy=SimpleNamespace(root_device=torch.device(device)),
    )


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


@pytest.fixture(scope="session")
def slurm(tmp_path_factory) -> dict[str, str]:
    """A one-node SLURM cluster on this machine (tests/slurm/start.sh: Debian's packages,
    installed when missing), stopped at the end; the environment that reaches it. Skips,
    saying why, where it cannot start (no root, no apt, no network for the packages)."""
    folder = tmp_path_factory.mktemp("slurm")
    start = subprocess.run(["bash", str(ROOT / "tests" / "slurm" / "start.sh"), str(folder)],
                           capture_output=True, text=True, timeout=600)  # fmt: skip
    if start.returncode != 0:
        pytest.skip(f"no local SLURM cluster: {start.stderr.strip()[-500:]}")
    yield {"SLURM_CONF": start.stdout.strip().splitlines()[-1]}
    subprocess.run(["bash", str(ROOT / "tests" / "slurm" / "stop.sh"), str(folder)], timeout=120)


@pytest.fixture
def offline_env(monkeypatch, tmp_path) -> dict[str, str]:
    """No W&B credentials anywhere: the default logger must go offline on its own."""
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    return dict(os.environ)


def compose_train(
    overrides: list[str], out: Path | None = None, config: str = "train"
) -> DictConfig:
    """The real train (or eval, predict) config, with paths that need no running Hydra app."""
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
