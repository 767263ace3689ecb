"""The shard DataModules: ``data=imagenet_shards`` and ``data=sample_shards``."""

import logging
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from cnnzoo.data import pipelines
from cnnzoo.data.classes import imagenet_wnids
from cnnzoo.data.datamodule import ImageDataModule
from cnnzoo.data.options import DataOptions
from cnnzoo.data.sample import build_in_place, ensure_sample_dataset
from cnnzoo.data.shards.stream import REMEDY, ShardFeed, ShardLoader, ShardStream
from cnnzoo.data.shards.write import META, load_meta, write_shards
from cnnzoo.data.transforms import CROPS
from cnnzoo.data.tree import ImageTree
from cnnzoo.errors import ConfigError, DataError

log = logging.getLogger(__name__)


class ShardDataModule(ImageDataModule):
    """ImageNet (or any classes) from the WebDataset shards of ``python -m cnnzoo.data.shards``:
    the same batch semantics, recipes, device-side normalisation and mixing, bad-file policy
    and exact resume as ``data=imagenet``; the test stage scores the val shards.

    Args (beyond the data settings of ``cnnzoo.data.options``):
        root: the shards folder (holding ``cnnzoo-shards.json``).
        shuffle_buffer: images each reader draws its next one from at random (raw bytes: about
            110 MB per reader for ImageNet at 1000); the shards are also shuffled when written
            and their order every epoch.
    """

    def __init__(self, root: str | None, *, shuffle_buffer: int = 1000, **settings) -> None:
        settings.setdefault(
            "root_setting", "data.root (or the IMAGENET_SHARDS environment variable)"
        )
        super().__init__(DataOptions.parse(root=root, **settings))
        tree = self.options.tree
        if tree.val_from_train or tree.samples_per_class:
            raise ConfigError(
                "data.val_from_train and data.samples_per_class choose images from the folder "
                "tree (data=imagenet); shards hold the splits they were written with."
            )
        if shuffle_buffer < 0:
            raise ConfigError(f"data.shuffle_buffer={shuffle_buffer}: give a count >= 0.")
        self.root, self.root_setting = tree.root, tree.root_setting
        self.shuffle_buffer = shuffle_buffer
        self.meta: dict | None = None
        self.streams: dict[str, ShardStream] = {}

    def prepare_data(self) -> None:
        pass  # nothing to index: the metadata lists every shard

    def is_set_up(self) -> bool:
        return self.meta is not None

    def setup(self, stage: str | None = None) -> None:
        if self.is_set_up():
            return
        meta = load_meta(self.root, self.root_setting)
        classes = tuple(meta["classes"])
        if self.options.tree.wnids == "imagenet":
            stray = sorted(set(classes) - set(imagenet_wnids()))
            if stray:
                raise DataError(
                    f"{self.root} holds classes that are not ILSVRC-2012 wnids "
                    f"({stray[:5]}); use data.wnids=null for other classes."
                )
        if len(classes) != self.num_classes:
            raise DataError(
                f"{self.root} holds {len(classes)} classes but data.num_classes="
                f"{self.num_classes}. Set data.num_classes={len(classes)}, or write shards of a "
                "tree with those classes."
            )
        self.meta = meta
        train, val = (meta["splits"][s] for s in ("train", "val"))
        log.info(
            "%s: train %s images in %d shards, val/test %s in %d shards, %d classes",
            self.root,
            f"{train['images']:,}",
            len(train["shards"]),
            f"{val['images']:,}",
            len(val["shards"]),
            len(classes),
        )

    def stream(
        self, split: str, transform=None, batch_size: int | None = None, workers: int | None = None
    ) -> ShardStream:
        """The ``split`` stream of this rank (``train``, ``val`` or ``test``: the val shards)."""
        self.setup()
        placement, loading = self.placement, self.loading
        train = split == "train"
        shards = self.meta["splits"]["train" if train else "val"]["shards"]
        world = placement.world_size
        workers = placement.workers(loading.num_workers) if workers is None else workers
        if train:
            if len(shards) < world:
                raise DataError(
                    f"{self.root} has {len(shards)} train shards for {world} ranks: "
                    "write smaller shards (--shard-size) so each rank has one."
                )
            usable = max(1, len(shards) // world)
            if workers > usable:
                log.warning(
                    "data.num_workers=%d but %d train shards over %d ranks: %d workers "
                    "per rank read them (write smaller shards for more)",
                    workers,
                    len(shards),
                    world,
                    usable,
                )
                workers = usable
        batch = batch_size or placement.pass_batch_size(loading.batch_size, train, self.eval_crop)
        return ShardStream(
            self.root,
            shards,
            train=train,
            batch_size=batch,
            transform=transform or self.device_transforms()[0 if train else 1],
            seed=loading.shuffle_seed,
            rank=placement.rank,
            world_size=world,
            workers=workers,
            shuffle_buffer=self.shuffle_buffer,
            decoder=loading.decoder,
            on_bad_file=loading.on_bad_file,
            skip_log=skipped.path if (skipped := self.skip_log(split)) is not None else None,
        )

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        dali = self.loading.loader == "dali"  # one reader per rank, in this process: DALI decodes
        stream = self.stream(split, workers=0) if dali else self.stream(split)
        if shuffle:
            pipelines.refuse_no_steps(sum(stream.counts), len(stream), f"{self.root}'s train "
                                      "shards", self.loading, stream.batch_size)  # fmt: skip
        if dali:
            feed = ShardFeed(stream, self._epoch)
            return pipelines.dali_loader(
                feed, shuffle, self.recipe, self.loading, self.placement, self.skip_log(split),
                REMEDY,
                self.normalizes_on_device(),
            )  # fmt: skip
        return ShardLoader(
            stream,
            epoch=self._epoch,
            num_workers=stream.workers,
            pin_memory=self.loading.pin_memory and torch.cuda.is_available(),
            persistent_workers=stream.workers > 0,
        )

    def _epoch(self) -> int:
        return self.placement.epoch

    def eval_loader(self, split: str, crop: str = "center") -> DataLoader:
        if split not in ("val", "test"):
            raise ConfigError(f"eval.split={split!r}: choose val or test (the val shards).")
        transform = self.view_transform(crop)
        batch = max(1, self.batch_size // CROPS[crop])
        stream = self.stream(split, transform, batch)
        return ShardLoader(stream, epoch=lambda: 0, num_workers=stream.workers)

    def preview_items(self, count: int, seed: int) -> list[tuple[torch.Tensor, int]]:
        return self.stream("val", workers=0).first_items(count)

    def class_ids(self) -> list[str]:
        self.setup()
        return list(self.meta["classes"])

    def class_names(self) -> list[str]:
        """The shards' class names; away from the shards, ImageNet's (as ``data=imagenet``)."""
        if self.meta is None and not (self.root is not None and (self.root / META).is_file()):
            names = ImageTree(self.options.tree).known_names()
            if names is not None:
                return names  # its wnid path needs no data; else setup() says why
        self.setup()
        return ImageTree.names(tuple(self.meta["classes"]))


class SampleShardDataModule(ShardDataModule):
    """The built-in sample set written as shards on first use: the sharded path, offline."""

    def __init__(
        self,
        root: str,
        *,
        source: str,
        shard_size: int = 100,
        train_per_class: int = 100,
        val_per_class: int = 30,
        seed: int = 0,
        **kwargs,
    ) -> None:
        super().__init__(root, root_setting="data.root", **kwargs)
        self.source, self.shard_size = Path(source).expanduser(), shard_size
        self.generation = {
            "train_per_class": train_per_class,
            "val_per_class": val_per_class,
            "seed": seed,
        }

    def prepare_data(self) -> None:
        """Write the shards into a temporary sibling folder renamed into place (as the sample
        set itself): every rank calls this, and a crash never leaves a partial set."""
        if (self.root / META).is_file():
            return
        if self.root.exists():
            raise DataError(f"{self.root} exists but holds no finished sample shards ({META}). "
                            "It is a cache folder: delete it to write them again.")  # fmt: skip
        ensure_sample_dataset(self.source, **self.generation)
        build_in_place(
            self.root,
            lambda tmp: write_shards(self.source, tmp, shard_size=self.shard_size),
            (self.root / META).is_file,
        )
