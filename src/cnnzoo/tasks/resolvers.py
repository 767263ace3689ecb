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


def sweep_job_type(single: str = "train") -> str:
    """W&B's job type: in a multirun, the values this job was given of what the sweep varies
    (``model=alexnet,optim=sgd``: the runs table and the group's charts tell the jobs apart by
    it; the overrides every job shares are left out); ``single`` otherwise. W&B takes at most
    64 characters."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return single
    hydra = HydraConfig.get()
    parser = OverridesParser.create()
    varied = set(OmegaConf.select(hydra, "sweeper.params") or {})  # (an experiment's sweep)
    sweep = Path(hydra.sweep.dir) / "multirun.yaml"  # (the command line, as the launcher saved it)
    if sweep.is_file():
        given = OmegaConf.select(OmegaConf.load(sweep), "hydra.overrides.task") or []
        varied |= {o.key_or_group for o in parser.parse_overrides(list(given))
                   if o.is_sweep_override()}  # fmt: skip
    mine = [
        o for o in parser.parse_overrides(list(hydra.overrides.task)) if o.key_or_group in varied
    ]
    text = ",".join(f"{o.key_or_group}={o.get_value_element_as_str()}" for o in mine)
    return (text or f"job {hydra.job.num}")[:64]


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
    "sweep_job_type": sweep_job_type,
    "slurm_tasks": slurm_tasks_per_node,
    "slurm_gpus": slurm_gpus_per_node,
}


def register_resolvers() -> None:
    for name, resolver in RESOLVERS.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)
