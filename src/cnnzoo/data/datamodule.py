"""The LightningDataModules: ``ImageDataModule`` keeps Lightning's hooks over a source of
split datasets; ``ImageFolderDataModule`` reads an ImageNet-layout tree (``tree.ImageTree``);
CIFAR (``cifar``) and the shards (``shards``) are other sources.

The parts they compose, one concern each: the settings (``options``: each key checked once),
the tree (``tree``), the recipe (``transforms``) and the input pipelines (``pipelines``: the
placement from the trainer, worker processes or DALI, the bad-file log).
"""

import copy
import logging
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from cnnzoo.data import dali, dali_feed, pipelines
from cnnzoo.data.images import IndexedImages, decoder_in_use
from cnnzoo.data.index import SplitIndex
from cnnzoo.data.options import DataOptions
from cnnzoo.data.pipelines import Placement, SkipLog
from cnnzoo.data.sample import ensure_sample_dataset, sample_class_names
from cnnzoo.data.transforms import (
    CROPS,
    batch_mix,
    eval_transform,
    multi_crop_transform,
    normalize_batch,
    train_transform,
)
from cnnzoo.data.tree import ImageTree, Splits
from cnnzoo.errors import ConfigError

log = logging.getLogger(__name__)


class ImageDataModule(pl.LightningDataModule):
    """Train/val/test loaders over the ``datasets`` a subclass's ``setup`` makes.

    ``batch_size`` is the global batch, the images behind one optimiser step: each of the
    world's processes loads ``batch_size // (world_size * accumulate_grad_batches)`` images per
    forward pass. Loading is reproducible and resumable (``cnnzoo.data.loading``): the order
    and each image's augmentation follow from ``shuffle_seed``, the epoch and the image; each
    DDP rank reads its own share (trainer ``use_distributed_sampler: false``). Implements
    ``protocol.RunData``.
    """

    has_images = True

    def __init__(self, options: DataOptions) -> None:
        super().__init__()
        self.options = options
        self.recipe, self.loading = options.recipe, options.loading
        self.num_classes = options.tree.num_classes  # (None until a source counts them)
        self.mix = self._mix()
        self.datasets: dict[str, Any] = {}
        self.skip_logs: dict[str, SkipLog] = {}  # per split (on_bad_file=skip)
        self.placement_override: Placement | None = None  # (tests: a placement, no trainer)
        if self.decoding() not in (self.loading.decoder, "dali", None):
            log.warning(
                "data.decoder=%s: TorchCodec's library does not load with torch %s here; "
                "torchvision's decoder decodes instead (the same pixels on every JPEG tried)",
                self.loading.decoder, torch.__version__,
            )  # fmt: skip

    def decoding(self) -> str | None:
        """What decodes this run's images (its record says): ``dali``, or the decoder in use
        (``data.decoder``, or torchvision's where TorchCodec does not load); None: no files."""
        return "dali" if self.loading.loader == "dali" else decoder_in_use(self.loading.decoder)

    # -- what the source provides ----------------------------------------------------------------

    def setup(self, stage: str | None = None) -> None:
        raise NotImplementedError

    def class_ids(self) -> list[str]:
        """The class folders' names (wnids for ImageNet) by class index."""
        raise NotImplementedError

    def class_names(self) -> list[str]:
        """Readable names by class index."""
        raise NotImplementedError

    def train_files(self) -> SplitIndex | None:
        """The training images' files (None: CIFAR's arrays, shards)."""
        return None

    def _feed(self, split: str, sampler, batch: int, train: bool):
        """What DALI reads of ``split`` (the sources with files)."""
        raise ConfigError(f"data.loader=dali: {type(self).__name__} has no files for DALI.")

    # -- settings the tasks read ------------------------------------------------------------------

    @property
    def batch_size(self) -> int:
        return self.loading.batch_size

    @property
    def eval_crop(self) -> str:
        return self.recipe.eval_crop

    def is_set_up(self) -> bool:
        """Whether ``setup`` has chosen the splits' images (its later calls reuse them)."""
        return bool(self.datasets)

    def _mix(self):
        if self.num_classes is None:
            return None
        return batch_mix(self.recipe.mixup_alpha, self.recipe.cutmix_alpha, self.num_classes)

    def skip_log(self, split: str) -> SkipLog | None:
        """Where ``split``'s readers list the files they skip (None: on_bad_file=error)."""
        if self.loading.on_bad_file != "skip":
            return None
        if split not in self.skip_logs:  # (a SkipLog makes a temporary folder: one a split)
            self.skip_logs[split] = SkipLog()
        return self.skip_logs[split]

    def new_skipped(self, split: str) -> list[tuple[str, str]]:
        """(path, reason) of ``split``'s unreadable files skipped since the last call."""
        log = self.skip_logs.get(split)
        return log.new() if log is not None else []

    # -- the recipe on this device ----------------------------------------------------------------

    @property
    def placement(self) -> Placement:
        """Where this process loads for: the attached trainer's (one CPU process without)."""
        return self.placement_override or Placement.of(self.trainer)

    def normalizes_on_device(self) -> bool:
        """``normalize_on_device``, or (null) whether the trainer's device is a CUDA GPU."""
        if self.recipe.normalize_on_device is not None:
            return self.recipe.normalize_on_device
        return self.placement.device.type == "cuda"

    def device_transforms(self):
        """(train, eval) transforms for the device the trainer runs on: uint8 out when the
        device normalises (``normalize_on_device``), normalised floats otherwise."""
        normalize, recipe = not self.normalizes_on_device(), self.recipe
        size, resize = recipe.image_size, recipe.eval_resize
        train_tf = train_transform(size, **recipe.train_options(), normalize=normalize)
        if recipe.eval_crop == "center":
            return train_tf, eval_transform(size, resize, normalize=normalize)
        return train_tf, multi_crop_transform(size, resize, recipe.eval_crop, normalize)

    def view_transform(self, crop: str = "center", normalize: bool = True):
        """One image's eval views, (views, 3, size, size), at this data's sizes: ``center``,
        ``flip`` or ``ten`` (what eval.py, predict.py and visualize.py feed the network; with
        ``normalize=False`` the uint8 crops they show)."""
        if crop not in CROPS:
            raise ConfigError(f"crop={crop!r}: choose one of {sorted(CROPS)}.")
        return multi_crop_transform(self.recipe.image_size, self.recipe.eval_resize, crop,
                                    normalize)  # fmt: skip

    # -- loaders ----------------------------------------------------------------------------------

    def _loader(self, split: str, shuffle: bool):
        placement, loading = self.placement, self.loading
        batch = placement.pass_batch_size(loading.batch_size, shuffle, self.recipe.eval_crop)
        dataset = self.datasets[split]
        sampler = pipelines.sampler(len(dataset), shuffle, loading.shuffle_seed, placement)
        if shuffle:  # (a rank's share in whole per-device batches)
            where = self.options.tree.root / "train"
            pipelines.refuse_no_steps(len(dataset), len(sampler) // batch, where, loading, batch)
        if loading.loader == "dali":
            feed = self._feed(split, sampler, batch, shuffle)
            return pipelines.dali_loader(
                feed, shuffle, self.recipe, loading, placement, self.skip_log(split),
                dataset.remedy(), self.normalizes_on_device(),
            )  # fmt: skip
        train_tf, eval_tf = self.device_transforms()  # (the device is known only now)
        dataset.transform = train_tf if split == "train" else eval_tf
        return pipelines.worker_loader(dataset, sampler, batch, shuffle, loading, placement)

    def train_dataloader(self):
        return self._loader("train", shuffle=True)

    def val_dataloader(self):
        return self._loader("val", shuffle=False)

    def test_dataloader(self):
        return self._loader("test", shuffle=False)

    def eval_loader(self, split: str, crop: str = "center") -> DataLoader:
        """One process's loader over all of ``split`` in batches of (N, views, 3, H, W): as many
        images per forward pass as ``data.batch_size`` (divided by the views per image)."""
        transform = self.view_transform(crop)
        self.setup("validate")
        if split not in self.datasets:
            raise ConfigError(f"eval.split={split!r}: choose one of {sorted(self.datasets)}.")
        views = copy.copy(self.datasets[split])  # (the training loaders keep theirs)
        views.transform = transform
        workers = self.placement.workers(self.loading.num_workers)
        return pipelines.eval_loader(views, max(1, self.batch_size // CROPS[crop]), workers)

    def preview_items(self, count: int, seed: int) -> list[tuple[torch.Tensor, int]]:
        """``count`` val images (picked at random with ``seed``) as the val loader gives them,
        with their labels: the images the prediction grid draws."""
        dataset = self.datasets.get("val")
        if not dataset:
            return []
        picks = np.random.default_rng(seed).permutation(len(dataset))[:count]
        return [item for i in picks if (item := dataset[(int(i), int(i))]) is not None]

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """On the device: uint8 images to normalised floats; mixup/cutmix of training batches."""
        images, labels = batch
        training = self.placement.training
        if images.dtype == torch.uint8:
            lighting = self.recipe.lighting
            if self.loading.loader == "dali" and lighting and training:  # on [0, 1], normalised
                images = 255 * dali.lighting_batch(images.float() / 255, lighting)
            images = normalize_batch(images)
        if self.mix is not None and training:
            images, labels = self.mix(images, labels)
        return images, labels

    def state_dict(self) -> dict[str, Any]:
        """Kept in checkpoints: the global batch the position in an epoch is counted in, and
        the class names by index (what predict.py shows, also away from the data)."""
        state: dict[str, Any] = {"global_batch_size": self.batch_size}
        if self.is_set_up():
            state["class_names"] = self.class_names()
        return state

    def load_state_dict(self, state: dict[str, int]) -> None:
        pass  # (checked before a resume starts: cnnzoo.tasks.resume)


class ImageFolderDataModule(ImageDataModule):
    """Train/val/test loaders over an ImageNet-layout folder tree (``tree.ImageTree``); the
    settings are ``data.*``'s keys, each described in ``cnnzoo.data.options``."""

    def __init__(self, root: str | None = None, **settings: Any) -> None:
        super().__init__(DataOptions.parse(root=root, **settings))
        self.tree = ImageTree(self.options.tree)
        self.root = self.tree.root

    def prepare_data(self) -> None:
        """Once per node (Lightning's local rank 0): index the splits into the cache, so the
        other ranks' ``setup`` read the cache instead of walking the tree at the same time."""
        if self.options.tree.index_cache is not None:
            self.tree.indexes()

    def settle_num_classes(self) -> int:
        """``num_classes``; when None, the number of class folders the tree holds."""
        if self.num_classes is None:
            self.num_classes = self.tree.num_classes()
            self.mix = self._mix()
        return self.num_classes

    def setup(self, stage: str | None = None) -> None:
        """Check the tree, choose the classes and images of each split (once; later calls reuse
        them)."""
        if self.is_set_up():
            return
        splits: Splits = self.tree.splits()
        self.settle_num_classes()
        train_tf, eval_tf = self.device_transforms()
        loading = self.loading

        def dataset(split: str, index, transform) -> IndexedImages:
            log = self.skip_log(split)
            path = log.path if log is not None else None
            return IndexedImages(index, transform, loading.on_bad_file, path, loading.decoder)

        self.datasets = {  # (val and test: each its own skipped-files log)
            "train": dataset("train", splits.train, train_tf),
            "val": dataset("val", splits.val, eval_tf),
            "test": dataset("test", splits.test, eval_tf),
        }

    def _feed(self, split: str, sampler, batch: int, train: bool):
        return dali_feed.FolderFeed(self.datasets[split].index, sampler, batch, drop_last=train)

    def class_names(self) -> list[str]:
        if not self.is_set_up() and (names := self.tree.known_names()) is not None:
            return names
        self.setup()
        return self.tree.names(self.datasets["train"].classes)

    def class_ids(self) -> list[str]:
        self.setup()
        return list(self.datasets["train"].classes)

    def train_files(self) -> SplitIndex:
        self.setup()
        return self.datasets["train"].index


class SampleDataModule(ImageFolderDataModule):
    """The built-in sample set, generated on first use into ``root``, then read like ImageNet."""

    def __init__(
        self,
        root: str,
        *,
        train_per_class: int = 100,
        val_per_class: int = 30,
        seed: int = 0,
        **settings: Any,
    ) -> None:
        super().__init__(root, root_setting="data.root", **settings)
        self.generation = {
            "train_per_class": train_per_class,
            "val_per_class": val_per_class,
            "seed": seed,
        }

    def prepare_data(self) -> None:
        ensure_sample_dataset(self.root, **self.generation)
        super().prepare_data()

    def class_names(self) -> list[str]:
        names = sample_class_names()
        if self.num_classes == len(names):
            return names
        return super().class_names()
