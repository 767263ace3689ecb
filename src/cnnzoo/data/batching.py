"""The batch arithmetic, in one place: ``data.batch_size`` is the global batch of one optimiser
step; each device loads global / (world size x gradient accumulation) per pass (evaluation:
divided again by the views per image, ``pipelines.Placement.pass_batch_size``); and how many
loader workers ``data.num_workers=auto`` means."""

from cnnzoo.errors import ConfigError, is_whole


def auto_workers(cpus: int, devices: int) -> int:
    """DataLoader workers per device: the node's CPUs shared by its devices, one left for each
    device's main process, at least 1 and at most 16 (torchvision's reference scripts' default).
    A fast GPU needs every core decoding (BENCHMARKS.md); a worker costs little memory, as the
    file index is shared, not copied."""
    return max(1, min(16, cpus // max(1, devices) - 1))


def check_batch_size(batch_size) -> None:
    """A global batch is a whole number of images, at least one."""
    if not is_whole(batch_size):
        raise ConfigError(
            f"data.batch_size={batch_size!r}: give the global batch as a positive whole number "
            "of images (256 in the papers)."
        )


def per_device_batch_size(batch_size: int, world: int = 1, accumulate: int = 1) -> int:
    """The images per forward pass on one of ``world`` devices for a global ``batch_size``
    (``accumulate``: trainer.accumulate_grad_batches)."""
    if batch_size % (world * accumulate):
        raise ConfigError(
            f"data.batch_size={batch_size} is the global batch and must divide by the "
            f"world size {world} (devices x nodes) times trainer.accumulate_grad_batches="
            f"{accumulate}; choose a multiple of {world * accumulate}."
        )
    return batch_size // (world * accumulate)
