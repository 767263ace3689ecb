"""The batch arithmetic, in one place: ``data.batch_size`` is the global batch of one optimiser
step; each device loads global / (world size x gradient accumulation) per pass (evaluation:
divided again by the views per image, ``ImageFolderDataModule.pass_batch_size``); and how many
loader workers ``data.num_workers=auto`` means."""

import pytorch_lightning as pl

from cnnzoo.errors import ConfigError, is_whole


def auto_workers(cpus: int, devices: int) -> int:
    """DataLoader workers per device: the node's CPUs shared by its devices, one left for each
    device's main process, at least 1 and at most 16 (torchvision's reference scripts' default).
    A GPU that takes 3,000+ images/s needs every core decoding: 12 workers on a 16-core H100
    and H200 still left ResNet-50 waiting for data 39-57% of the time (BENCHMARKS.md). A worker
    costs little memory here: the file index is shared, not copied (2 MiB private per worker)."""
    return max(1, min(16, cpus // max(1, devices) - 1))


def check_batch_size(batch_size) -> None:
    """A global batch is a whole number of images, at least one."""
    if not is_whole(batch_size):
        raise ConfigError(
            f"data.batch_size={batch_size!r}: give the global batch as a positive whole number "
            "of images (256 in the papers)."
        )


def per_device_batch_size(batch_size: int, trainer: pl.Trainer | None) -> int:
    """The images per forward pass on one device for a global ``batch_size``."""
    world = trainer.world_size if trainer is not None else 1
    accumulate = trainer.accumulate_grad_batches if trainer is not None else 1
    if batch_size % (world * accumulate):
        raise ConfigError(
            f"data.batch_size={batch_size} is the global batch and must divide by the "
            f"world size {world} (devices x nodes) times trainer.accumulate_grad_batches="
            f"{accumulate}; choose a multiple of {world * accumulate}."
        )
    return batch_size // (world * accumulate)
