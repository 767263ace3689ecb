"""Synthetic input: one fixed random batch served again and again, for throughput measurements.

It takes the input pipeline out of the measurement (what the accelerator and the framework can
do); compare with the same run on real images to see what decoding and augmentation cost.
"""

import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from cnnzoo.data.batching import check_batch_size, per_device_batch_size
from cnnzoo.errors import ConfigError


class _RepeatedBatch(Dataset):
    def __init__(self, images: Tensor, labels: Tensor, length: int) -> None:
        self.images, self.labels, self.length = images, labels, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.images, self.labels


class SyntheticDataModule(pl.LightningDataModule):
    """``steps_per_epoch`` training batches (``val_steps`` for val/test) of normal noise with
    random labels, made once per process; ``batch_size`` is the global batch, as for ImageNet.
    Implements ``protocol.RunData``: no images, no class names (what needs them is refused)."""

    has_images = False
    eval_crop = "center"

    def __init__(
        self,
        *,
        num_classes: int = 1000,
        batch_size: int = 256,
        image_size: int = 224,
        steps_per_epoch: int = 100,
        val_steps: int = 4,
        pin_memory: bool = True,
        seed: int = 0,
        loader: str = "workers",
    ) -> None:
        super().__init__()
        check_batch_size(batch_size)
        if loader != "workers":
            raise ConfigError(
                f"data.loader={loader}: data=synthetic has no input pipeline (one batch made "
                "in memory, to measure the model alone); leave data.loader out, or measure "
                "DALI with data=imagenet or data=sample."
            )
        self.num_classes = num_classes
        self.batch_size = batch_size
        self.image_size = image_size
        self.steps = {"train": steps_per_epoch, "val": val_steps}
        self.pin_memory = pin_memory
        self.seed = seed

    def _loader(self, split: str) -> DataLoader:
        trainer = self.trainer
        world, accumulate = (
            (trainer.world_size, trainer.accumulate_grad_batches) if trainer else (1, 1)
        )
        n = per_device_batch_size(self.batch_size, world, accumulate)
        generator = torch.Generator().manual_seed(self.seed)
        images = torch.randn(n, 3, self.image_size, self.image_size, generator=generator)
        labels = torch.randint(self.num_classes, (n,), generator=generator)
        pin = self.pin_memory and torch.cuda.is_available()
        if pin:
            images, labels = images.pin_memory(), labels.pin_memory()
        # batch_size=None: the dataset's items are whole batches, no collation cost.
        return DataLoader(_RepeatedBatch(images, labels, self.steps[split]), batch_size=None)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("val")

    def _no_images(self) -> ConfigError:
        return ConfigError(
            "this run trained on SyntheticDataModule (random noise with random labels, to "
            "measure speed): it has no images to score and no class names. Evaluate, predict "
            "and visualize runs trained on images (visualize.py what=filters works for any run)."
        )

    def eval_loader(self, split: str, crop: str = "center") -> DataLoader:
        raise self._no_images()

    def view_transform(self, crop: str = "center", normalize: bool = True):
        raise self._no_images()

    def class_names(self) -> list[str]:
        raise self._no_images()

    def class_ids(self) -> list[str]:
        raise self._no_images()

    def train_files(self) -> None:
        return None

    def preview_items(self, count: int, seed: int) -> list:
        return []

    def new_skipped(self, split: str) -> list[tuple[str, str]]:
        return []
