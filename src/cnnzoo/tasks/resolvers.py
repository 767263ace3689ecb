"""The resolvers conf/ uses: run and sweep folders, the sweep's W&B group, and the SLURM
launcher's tasks and GPUs per node from the trainer. ``cnnzoo.tasks`` registers them."""

from pathlib import Path

from omegaconf import OmegaConf

from cnnzoo.errors import ConfigError
from cnnzoo.tasks.folders import unique_dir, unique_sweep_dir


def sweep_group() -> str | None:
    """In a job of a multirun: the sweep folder's name (W&B groups a sweep's runs by it)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    return Path(HydraConfig.get().runtime.output_dir).parent.name


def slurm_tasks_per_node(devices) -> int:
    """The launcher's tasks per node: the trainer's devices, which SLURM must be told."""
    if isinstance(devices, int) and devices > 0:
        return devices
    raise ConfigError(
        f"trainer.devices={devices!r} with hydra/launcher=slurm: SLURM allocates what it is "
        "asked for, so give the processes per node, e.g. trainer.devices=8 (one per GPU)."
    )


def slurm_gpus_per_node(accelerator: str, devices) -> int | None:
    """GPUs per node for the launcher: one per task on a GPU trainer, none on the CPU."""
    return None if accelerator == "cpu" else slurm_tasks_per_node(devices)


RESOLVERS = {
    "unique_dir": unique_dir,
    "unique_sweep_dir": unique_sweep_dir,
    "sweep_group": sweep_group,
    "slurm_tasks": slurm_tasks_per_node,
    "slurm_gpus": slurm_gpus_per_node,
}


def register_resolvers() -> None:
    for name, resolver in RESOLVERS.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)
