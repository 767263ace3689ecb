"""The input pipelines: where this process loads for (``Placement``), the batch it loads, the
file of images it skipped (``SkipLog``), and the loaders that read a split: DataLoader worker
processes (``worker_loader``) or NVIDIA DALI (``dali_loader``)."""

import os
import shutil
import tempfile
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from cnnzoo.data import dali
from cnnzoo.data.batching import auto_workers, per_device_batch_size
from cnnzoo.data.images import read_skipped, skip_bad_collate
from cnnzoo.data.loading import ResumableDataLoader, SeededSampler, ignore_sigterm
from cnnzoo.data.options import LoadingOptions, RecipeOptions
from cnnzoo.data.transforms import CROPS
from cnnzoo.errors import DataError


@dataclass(frozen=True)
class Placement:
    """What loading needs of the trainer, read from it in one place (``of``): this process's
    rank among ``world_size``, the device it trains on and the node's device count, gradient
    accumulation, the epoch and whether it is training. Without a trainer: one CPU process."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    devices: int = 1
    accumulate: int = 1
    epoch: int = 0
    training: bool = False

    @classmethod
    def of(cls, trainer) -> "Placement":
        if trainer is None:
            return cls()
        return cls(
            rank=trainer.global_rank,
            world_size=trainer.world_size,
            device=trainer.strategy.root_device,
            devices=trainer.num_devices,
            accumulate=trainer.accumulate_grad_batches,
            epoch=trainer.current_epoch,
            training=trainer.training,
        )

    def workers(self, setting: int | str) -> int:
        """``data.num_workers``: a count, or ``auto``: this process's CPUs over the node's
        devices (``batching.auto_workers``)."""
        if setting != "auto":
            return setting
        return auto_workers(len(os.sched_getaffinity(0)), self.devices)

    def pass_batch_size(self, global_batch: int, train: bool, eval_crop: str) -> int:
        """Images per loader batch on this device: the per-device batch; for evaluation divided
        by the views per image, so that a forward pass holds the same number of images."""
        batch = per_device_batch_size(global_batch, self.world_size, self.accumulate)
        return batch if train else max(1, batch // CROPS[eval_crop])


class SkipLog:
    """The file of unreadable images this process skipped (``data.on_bad_file=skip``): the
    loaders' workers append to it, and ``new`` reads what was added since the last call."""

    def __init__(self) -> None:
        folder = tempfile.mkdtemp(prefix="cnnzoo-skipped-")
        self.path = Path(folder) / "skipped.tsv"
        self._seen = 0
        weakref.finalize(self, shutil.rmtree, folder, True)  # scratch: gone with it, or at exit

    def new(self) -> list[tuple[str, str]]:
        """(path, reason) of the files skipped since the last call."""
        entries = read_skipped(self.path, self._seen)
        self._seen += len(entries)
        return entries


def sampler(size: int, shuffle: bool, seed: int, placement: Placement) -> SeededSampler:
    """This rank's share of a split of ``size`` images in the order of the placement's epoch."""
    chosen = SeededSampler(
        size, shuffle=shuffle, seed=seed, rank=placement.rank, world_size=placement.world_size
    )
    chosen.set_epoch(placement.epoch)  # (the order of the epoch a resumed run starts in)
    return chosen


def refuse_no_steps(images: int, steps: int, where, loading: LoadingOptions, batch: int) -> None:
    """Training drops the last partial batch: ``images`` fewer than one batch would train no
    step at all (Lightning: "No training batches"), then test a random network."""
    if steps == 0:
        at_most = 1 << (max(images, 1).bit_length() - 1)  # the largest power of two it holds
        raise DataError(
            f"training has {images} images ({where}), fewer than one batch "
            f"(data.batch_size={loading.batch_size}, {batch} per device), so no training step "
            f"would run. Set data.batch_size={at_most} or less."
        )


def worker_loader(
    dataset: Dataset, chosen: SeededSampler, batch: int, train: bool, loading: LoadingOptions,
    placement: Placement,
) -> ResumableDataLoader:  # fmt: skip
    """DataLoader worker processes decode and transform ``dataset``'s images."""
    workers = placement.workers(loading.num_workers)
    return ResumableDataLoader(
        dataset,
        batch_size=batch,
        sampler=chosen,
        drop_last=train,
        num_workers=workers,
        collate_fn=skip_bad_collate,
        pin_memory=loading.pin_memory and torch.cuda.is_available(),
        persistent_workers=workers > 0,
        worker_init_fn=ignore_sigterm,
        generator=torch.Generator().manual_seed(loading.shuffle_seed),  # global RNG untouched
    )


def dali_loader(
    feed, train: bool, recipe: RecipeOptions, loading: LoadingOptions, placement: Placement,
    skip_log: SkipLog | None, remedy: str, normalizes_on_device: bool,
) -> "dali.DaliLoader":  # fmt: skip
    """DALI decodes and transforms ``feed``'s batches with the recipe, on the device."""
    device_id = dali.dali_device_id(loading.dali_device, placement.device)
    lighting = train and bool(recipe.lighting)  # a torch op on the device batch
    uint8 = lighting or (device_id is None and normalizes_on_device)
    steps = dali.Recipe(
        train=train,
        image_size=recipe.image_size,
        resize=recipe.eval_resize,
        crop=recipe.train_crop,
        crop_scale=recipe.train_crop_scale,
        scale_jitter=recipe.scale_jitter,
        hflip=recipe.hflip,
        eval_crop=recipe.eval_crop,
        normalize=not uint8,
    )
    return dali.DaliLoader(
        feed,
        steps,
        device_id=device_id,
        seed=loading.shuffle_seed,
        rank=placement.rank,
        num_threads=placement.workers(loading.num_workers),
        hw_decoder_load=loading.dali_hw_decoder_load,
        on_bad_file=loading.on_bad_file,
        skip_log=skip_log.path if skip_log is not None else None,
        remedy=remedy,
    )


def eval_loader(dataset: Dataset, batch: int, workers: int) -> DataLoader:
    """One process's loader over all of ``dataset`` in order (eval.py, visualize.py)."""
    return DataLoader(dataset, batch_size=batch, num_workers=workers, collate_fn=skip_bad_collate,
                      worker_init_fn=ignore_sigterm)  # fmt: skip
