"""LightningDataModules over an ImageNet-layout tree: ``ROOT/{train,val}/<wnid>/*.JPEG``.

The class index is the position of the wnid in sorted order (torchvision's ImageFolder and the
ILSVRC convention). ImageNet's test labels are not public, so the test stage scores the val
split, as the papers' reported results do.
"""

import os
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader
from torchvision.datasets import ImageFolder

from cnnzoo.data.classes import imagenet_class_names
from cnnzoo.data.loading import ResumableDataLoader, SeededSampler
from cnnzoo.data.sample import ensure_sample_dataset, sample_class_names
from cnnzoo.data.transforms import eval_transform, train_transform
from cnnzoo.errors import ConfigError, DataError

LAYOUT = "ROOT/train/<wnid>/*.JPEG and ROOT/val/<wnid>/*.JPEG"
SPLITS = ("train", "val")


class ImageFolderDataModule(pl.LightningDataModule):
    """Train/val/test loaders over an ImageNet-layout folder tree.

    ``batch_size`` is the global batch, the images behind one optimiser step: each of the
    ``world_size`` processes loads ``batch_size // (world_size * accumulate_grad_batches)``
    images per forward pass. Loading is reproducible and resumable (``cnnzoo.data.loading``):
    the order and each image's augmentation follow from ``shuffle_seed``, the epoch and the
    image; each DDP rank reads its own share (trainer ``use_distributed_sampler: false``).
    """

    def __init__(
        self,
        root: str | None,
        *,
        num_classes: int,
        batch_size: int = 256,
        num_workers: int = 8,
        image_size: int = 224,
        eval_resize: int = 256,
        train_crop_scale: tuple[float, float] = (0.08, 1.0),
        hflip: bool = True,
        pin_memory: bool = True,
        shuffle_seed: int = 0,
        root_setting: str = "data.root (or the IMAGENET_ROOT environment variable)",
    ) -> None:
        super().__init__()
        if eval_resize < image_size:
            raise ConfigError(
                f"data.eval_resize={eval_resize} is smaller than data.image_size={image_size}: "
                "the centre crop would not fit. Set eval_resize >= image_size (224/256 is usual)."
            )
        self.root = Path(root).expanduser() if root else None
        self.root_setting = root_setting
        self.num_classes = num_classes
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.shuffle_seed = shuffle_seed
        self.train_tf = train_transform(image_size, tuple(train_crop_scale), hflip)
        self.eval_tf = eval_transform(image_size, eval_resize)
        self.datasets: dict[str, ImageFolder] = {}

    def setup(self, stage: str | None = None) -> None:
        """Check the tree and index both splits (once; later calls reuse the index)."""
        if self.datasets:
            return
        root = self._checked_root()
        for split in SPLITS:
            tf = self.train_tf if split == "train" else self.eval_tf
            self.datasets[split] = _image_folder(root / split, tf)
        train_classes, val_classes = (self.datasets[s].classes for s in SPLITS)
        if len(train_classes) != self.num_classes:
            raise DataError(
                f"{root / 'train'} has {len(train_classes)} class folders but "
                f"data.num_classes={self.num_classes}. Point {self.root_setting} at the full tree, "
                "or set data.num_classes to match."
            )
        if val_classes != train_classes:
            only = sorted(set(train_classes) ^ set(val_classes))[:5]
            raise DataError(
                f"{root / 'train'} and {root / 'val'} hold different class folders "
                f"(e.g. {only}); both splits need the same wnid folders ({LAYOUT})."
            )

    def class_names(self) -> list[str]:
        """Readable names by class index: ImageNet's 1000 names for the full set, else the
        class folders' names (``setup`` reads them)."""
        if self.num_classes == len(imagenet_class_names()):
            return list(imagenet_class_names())
        self.setup()
        return list(self.datasets["train"].classes)

    def _checked_root(self) -> Path:
        if self.root is None:
            raise DataError(f"no data folder given. Set {self.root_setting}; expected {LAYOUT}.")
        fix = f"Expected {LAYOUT}; set {self.root_setting} to such a folder."
        if not self.root.is_dir():
            raise DataError(f"data folder {self.root} does not exist. {fix}")
        missing = [s for s in SPLITS if not (self.root / s).is_dir()]
        if missing:
            found = sorted(p.name for p in self.root.iterdir()) or "nothing"
            raise DataError(
                f"data folder {self.root} has no {' or '.join(missing)} folder "
                f"(found: {found}). {fix}"
            )
        return self.root

    def per_device_batch_size(self) -> int:
        return per_device_batch_size(self.batch_size, self.trainer)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        trainer = self.trainer
        sampler = SeededSampler(
            len(self.datasets[split]),
            shuffle=shuffle,
            seed=self.shuffle_seed,
            rank=trainer.global_rank if trainer is not None else 0,
            world_size=trainer.world_size if trainer is not None else 1,
        )
        if trainer is not None:  # the order of the epoch a resumed run starts in
            sampler.set_epoch(trainer.current_epoch)
        return ResumableDataLoader(
            self.datasets[split],
            batch_size=self.per_device_batch_size(),
            sampler=sampler,
            drop_last=shuffle,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory and torch.cuda.is_available(),
            persistent_workers=self.num_workers > 0,
            generator=torch.Generator().manual_seed(
                self.shuffle_seed
            ),  # leaves the global RNG alone
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)


class SampleDataModule(ImageFolderDataModule):
    """The built-in sample set, generated on first use into ``root``, then read like ImageNet."""

    def __init__(
        self,
        root: str,
        *,
        train_per_class: int = 100,
        val_per_class: int = 30,
        seed: int = 0,
        **kwargs,
    ) -> None:
        super().__init__(root, root_setting="data.root", **kwargs)
        self.generation = {
            "train_per_class": train_per_class,
            "val_per_class": val_per_class,
            "seed": seed,
        }

    def prepare_data(self) -> None:
        ensure_sample_dataset(self.root, **self.generation)

    def class_names(self) -> list[str]:
        return sample_class_names()


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


class SeededImageFolder(ImageFolder):
    """ImageFolder whose items are keyed by ``(index, sample_seed)`` (see ``SeededSampler``):
    each image's random transforms draw from a private RNG seeded with its sample seed."""

    def __getitem__(self, key: tuple[int, int] | int) -> tuple[torch.Tensor, int]:
        index, seed = key if isinstance(key, tuple) else (key, key)
        path, target = self.samples[index]
        image = self.loader(path)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.transform(image), target


def _image_folder(folder: Path, transform) -> ImageFolder:
    try:
        return SeededImageFolder(os.fspath(folder), transform=transform)
    except FileNotFoundError as e:  # no class folders, or a class folder without images
        raise DataError(f"{folder}: {e}. Expected {LAYOUT}.") from None
