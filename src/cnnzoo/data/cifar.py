"""CIFAR-10 / CIFAR-100 (32 px) through torchvision, with cnnzoo's seeded, resumable loading.

Downloaded into ``root`` when online; offline, the archive (or its extracted folder) has to be
put there by hand, and the error says which file and where. The test stage scores CIFAR's test
set; val is the test set too unless ``val_from_train`` holds out training images per class.
Pair with ``model.small_input=true`` (with ``data=cifar10`` the model takes it and the 32 px
sizes from the config's ``input`` node).
"""

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import datasets
from torchvision.transforms import v2

from cnnzoo.data.datamodule import ImageDataModule
from cnnzoo.data.loading import seeded
from cnnzoo.data.options import DataOptions, choice
from cnnzoo.data.tree import pick_per_class
from cnnzoo.errors import ConfigError, DataError

VARIANTS = {
    "cifar10": (datasets.CIFAR10, 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": (datasets.CIFAR100, 100, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}


class SeededDataset(Dataset):
    """``base[i]`` = (PIL image, target) transformed with a private RNG per ``(i, seed)`` key;
    ``indices`` picks a subset of ``base`` (``None``: all of it)."""

    def __init__(self, base, transform, indices: np.ndarray | None = None) -> None:
        self.base, self.transform = base, transform
        self.indices = np.arange(len(base)) if indices is None else indices
        self.classes = tuple(base.classes)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, key: tuple[int, int] | int):
        index, seed = key if isinstance(key, tuple) else (key, key)
        image, target = self.base[int(self.indices[index])]
        with seeded(seed):
            return self.transform(image), target


class CIFARDataModule(ImageDataModule):
    """CIFAR-10/100: train with random 32 px crops of the 4-px zero-padded image and flips (He
    et al. 2016, sec. 4.2), evaluate on the plain image; normalised with the set's own mean/std.
    """

    def __init__(
        self,
        root: str,
        *,
        variant: str = "cifar10",
        num_classes: int | None = None,
        image_size: int = 32,
        download: bool = True,
        batch_size: int = 128,
        **settings,
    ) -> None:
        choice("variant", variant, tuple(VARIANTS))
        if settings.get("loader", "workers") != "workers":
            raise ConfigError(
                f"data.loader={settings['loader']}: {variant} comes as arrays in memory, with "
                "no image files for DALI to decode; use data.loader=workers (DALI reads "
                "data=imagenet, imagefolder, sample and the shards)."
            )
        self.variant = variant
        self.dataset_class, classes, mean, std = VARIANTS[variant]
        if image_size != 32:
            raise ConfigError(
                f"data.image_size={image_size}: CIFAR images are 32 px; set model.input_size=32."
            )
        if num_classes not in (None, classes):
            raise ConfigError(f"data.num_classes={num_classes}: {variant} has {classes} classes.")
        options = DataOptions.parse(
            root=root, num_classes=classes, batch_size=batch_size, image_size=32,
            eval_resize=32, normalize_on_device=False, root_setting="data.root", **settings,
        )  # fmt: skip
        super().__init__(options)
        self.root, self.download = options.tree.root, download
        tail = [v2.PILToTensor(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]
        self.cifar_train_tf = v2.Compose(
            [v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip(), *tail]
        )
        self.cifar_eval_tf = v2.Compose(tail)

    def decoding(self) -> None:
        return None  # (arrays in memory: nothing is decoded)

    def _missing(self, error: Exception) -> DataError:
        cls = self.dataset_class
        return DataError(
            f"{self.variant} is not in {self.root} ({type(error).__name__}: {error}). Online, "
            f"data.download=true fetches it. Offline, put {cls.filename} (from {cls.url}) or its "
            f"extracted folder {cls.base_folder}/ into {self.root}."
        )

    def _open(self, train: bool):
        try:
            return self.dataset_class(str(self.root), train=train, download=False)
        except RuntimeError as e:
            raise self._missing(e) from None

    def prepare_data(self) -> None:
        if self.download:
            self.root.mkdir(parents=True, exist_ok=True)
            try:
                self.dataset_class(str(self.root), train=True, download=True)
            except Exception as e:  # no network: URLError, timeouts, ...
                raise self._missing(e) from None

    def setup(self, stage: str | None = None) -> None:
        if self.is_set_up():
            return
        train_base, test_base = self._open(train=True), self._open(train=False)
        train_idx, held_idx = np.arange(len(train_base)), None
        tree = self.options.tree
        if tree.val_from_train:
            held = pick_per_class(train_base.targets, self.num_classes, tree.val_from_train,
                                  tree.split_seed)  # fmt: skip
            train_idx, held_idx = np.flatnonzero(~held), np.flatnonzero(held)
        test = SeededDataset(test_base, self.cifar_eval_tf)
        self.datasets = {
            "train": SeededDataset(train_base, self.cifar_train_tf, train_idx),
            "val": test
            if held_idx is None
            else SeededDataset(train_base, self.cifar_eval_tf, held_idx),
            "test": test,
        }

    def device_transforms(self):
        """CIFAR's own (train, eval) transforms: normalised with CIFAR's statistics on the CPU."""
        return self.cifar_train_tf, self.cifar_eval_tf

    def class_names(self) -> list[str]:
        self.setup()
        return list(self.datasets["train"].classes)

    def class_ids(self) -> list[str]:
        return self.class_names()
