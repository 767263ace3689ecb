"""LightningDataModules over an ImageNet-layout tree: ``ROOT/{train,val}/<wnid>/*.JPEG``.

The class index is the position of the wnid in sorted order (torchvision's ImageFolder and the
ILSVRC convention). ImageNet's test labels are not public, so the test stage scores the val
split, as the papers' reported results do; with ``val_from_train=N`` the val stage scores N
held-out training images per class instead and the official val set stays untouched until test.
"""

import logging
import os
import shutil
import tempfile
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from cnnzoo.data import dali
from cnnzoo.data.batching import auto_workers, check_batch_size, per_device_batch_size
from cnnzoo.data.classes import imagenet_name_of, imagenet_wnids
from cnnzoo.data.images import DECODERS, IndexedImages, read_skipped, skip_bad_collate
from cnnzoo.data.index import IMAGE_EXTENSIONS, SplitIndex, load_index
from cnnzoo.data.loading import ResumableDataLoader, SeededSampler
from cnnzoo.data.sample import ensure_sample_dataset, sample_class_names
from cnnzoo.data.transforms import (
    CROPS,
    TRAIN_CROPS,
    batch_mix,
    eval_transform,
    multi_crop_transform,
    normalize_batch,
    train_transform,
)
from cnnzoo.errors import ConfigError, DataError, is_number

log = logging.getLogger(__name__)

LOADERS = ("workers", "dali")
LAYOUT = "ROOT/train/<wnid>/*.JPEG and ROOT/val/<wnid>/*.JPEG"
CLASS_LAYOUT = "ROOT/train/<class>/* and ROOT/val/<class>/*"  # (data=imagefolder: any names)
PREPARE = (
    "For the official ILSVRC-2012 archives run "
    "python -m cnnzoo.data.prepare_imagenet --src DOWNLOADS --dst ROOT."
)
SPLITS = ("train", "val")
# ILSVRC-2012's official image counts, checked when the tree is the whole of it.
IMAGENET_IMAGES = {"train": 1_281_167, "val": 50_000}


def _unpacked_how(split: Path) -> str:
    """What a split folder without class folders holds instead, as ImageNet's archives leave
    it: the train archive's per-class .tar files, or the val archive's loose images."""
    loose = [e.name for e in os.scandir(split) if e.is_file()]
    tars = sum(name.endswith(".tar") for name in loose)
    if tars > len(loose) // 2:
        return (
            f" It holds {tars} .tar files: ILSVRC2012_img_train.tar's per-class archives, not "
            "unpacked? python -m cnnzoo.data.prepare_imagenet --src <folder of "
            "ILSVRC2012_img_train.tar> unpacks each into its class folder."
        )
    if loose:
        return (
            f" It holds {len(loose)} files directly: ImageNet's val archive unpacked as it is? "
            "python -m cnnzoo.data.prepare_imagenet sorts them into class folders."
        )
    return ""


def _has_images(folder: Path) -> bool:
    return any(p.suffix.lower() in IMAGE_EXTENSIONS for p in folder.iterdir())


def _holds_class_folders(folder: Path) -> bool:
    """Whether ``folder``'s first folders hold images (class folders: train/'s, or those of a
    tree not yet split into train/ and val/)."""
    try:
        for entry in sorted(folder.iterdir())[:5]:
            if entry.is_dir() and _has_images(entry):
                return True
    except OSError:  # (a folder it may not read: no hint, the error above still stands)
        pass
    return False


_SAID_LEFT_OUT: set[str] = set()  # the splits whose files left out by name were named


class ImageFolderDataModule(pl.LightningDataModule):
    """Train/val/test loaders over an ImageNet-layout folder tree.

    ``batch_size`` is the global batch, the images behind one optimiser step: each of the
    ``world_size`` processes loads ``batch_size // (world_size * accumulate_grad_batches)``
    images per forward pass. Loading is reproducible and resumable (``cnnzoo.data.loading``):
    the order and each image's augmentation follow from ``shuffle_seed``, the epoch and the
    image; each DDP rank reads its own share (trainer ``use_distributed_sampler: false``).

    Args (beyond the sizes and the loader's):
        num_classes: classes to train on. Fewer than the tree holds, when they divide, is the
            fixed subset of every k-th class in sorted order (``num_classes=100`` on ImageNet:
            every 10th wnid from n01440764); more is an error. None (``data=imagefolder``'s
            default): one class per class folder, counted by ``settle_num_classes``.
        wnids: ``"imagenet"``: every class folder must be an ILSVRC-2012 wnid (names a stray
            folder); None: any folder names (``data=imagefolder``).
        val_from_train: hold out this many training images per class (chosen with
            ``split_seed``) as the val split; the official val set becomes the test split.
        samples_per_class: train on at most this many images per class (chosen with
            ``split_seed``); evaluation keeps every image.
        train_crop, scale_jitter, color_jitter, auto_augment, lighting, random_erasing:
            the train recipe (``cnnzoo.data.transforms``). mixup_alpha, cutmix_alpha: batch
            mixing on the device (soft targets).
        eval_crop: val and test views: ``center``, ``flip`` or ``ten`` (softmax averaged).
        normalize_on_device: send uint8 images and normalise on the device (None: on CUDA).
        on_bad_file: ``error`` or ``skip`` (skipped files are listed at the end of each epoch).
        decoder: ``torchvision`` (decode_image into uint8 tensors, the faster) or ``pil``.
        index_cache: folder for the file index of each split (None: walk the tree each start);
            ``reindex`` rebuilds it.
        num_workers: DataLoader processes per device, or ``"auto"``: the CPUs this process may
            use divided by the devices of this node, minus one for the main process, at most 16.
            With ``loader=dali``, DALI's CPU threads per device (``auto``: the same count).
        loader: ``workers`` (DataLoader worker processes decode and augment) or ``dali``
            (NVIDIA DALI decodes and augments on the GPU; ``cnnzoo.data.dali``).
        dali_device: where DALI decodes: ``auto`` (the trainer's CUDA GPU, else DALI's CPU
            backend), ``gpu`` (an error off a GPU) or ``cpu``.
    """

    def __init__(
        self,
        root: str | None,
        *,
        num_classes: int | None,
        batch_size: int = 256,
        num_workers: int | str = 8,
        image_size: int = 224,
        eval_resize: int = 256,
        train_crop_scale: tuple[float, float] = (0.08, 1.0),
        hflip: bool = True,
        pin_memory: bool = True,
        shuffle_seed: int = 0,
        wnids: str | None = None,
        val_from_train: int = 0,
        samples_per_class: int | None = None,
        split_seed: int = 0,
        train_crop: str = "rrc",
        scale_jitter: tuple[int, int] = (256, 512),
        color_jitter: float = 0.0,
        auto_augment: str | None = None,
        lighting: float = 0.0,
        random_erasing: float = 0.0,
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        eval_crop: str = "center",
        normalize_on_device: bool | None = None,
        on_bad_file: str = "error",
        decoder: str = "torchvision",
        index_cache: str | None = None,
        reindex: bool = False,
        loader: str = "workers",
        dali_device: str = "auto",
        root_setting: str = "data.root (or the IMAGENET_ROOT environment variable)",
    ) -> None:
        super().__init__()
        check_batch_size(batch_size)
        if eval_resize < image_size:
            raise ConfigError(
                f"data.eval_resize={eval_resize} is smaller than data.image_size={image_size}: "
                "the centre crop would not fit. Set eval_resize >= image_size (224/256 is usual)."
            )
        _choice("train_crop", train_crop, TRAIN_CROPS)
        _choice("eval_crop", eval_crop, tuple(CROPS))
        _choice("on_bad_file", on_bad_file, ("error", "skip"))
        _choice("decoder", decoder, DECODERS)
        self.decoder = decoder
        _choice("wnids", wnids, ("imagenet", None))
        if not (num_workers == "auto" or (isinstance(num_workers, int) and num_workers >= 0)):
            raise ConfigError(f"data.num_workers={num_workers!r}: give a count >= 0 or auto.")
        self.root = Path(root).expanduser() if root else None
        self.root_setting = root_setting
        self.num_classes = num_classes
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.shuffle_seed = shuffle_seed
        self.wnids = wnids
        for name, value, least in (("val_from_train", val_from_train, 0),
                                   ("samples_per_class", samples_per_class, 1)):  # fmt: skip
            if value is not None and (not isinstance(value, int) or value < least):
                raise ConfigError(
                    f"data.{name}={value!r}: give a whole number of images per class, at least "
                    f"{least}" + (" (or null: all of them)." if least else ".")
                )
        self.val_from_train, self.samples_per_class = val_from_train, samples_per_class
        self.split_seed = split_seed
        self.eval_crop = eval_crop
        self.normalize_on_device = normalize_on_device
        self.on_bad_file = on_bad_file
        self.index_cache = Path(index_cache).expanduser() if index_cache else None
        self.reindex = reindex
        self.sizes = (image_size, eval_resize)
        self.train_options = {
            "crop_scale": number_pair("train_crop_scale", train_crop_scale, float),
            "hflip": hflip,
            "crop": train_crop,
            "resize": eval_resize,
            "scale_jitter": number_pair("scale_jitter", scale_jitter, int),
            "color_jitter": color_jitter,
            "auto_augment": auto_augment,
            "lighting": lighting,
            "random_erasing": random_erasing,
        }
        try:  # a bad option fails here, not in a DataLoader worker
            train_transform(image_size, **self.train_options)
        except ValueError as e:
            raise ConfigError(f"data: {e}.") from None
        if not isinstance(hflip, bool):  # ("maybe" was true, silently)
            raise ConfigError(f"data.hflip={hflip!r}: choose true or false.")
        for name, alpha in (("mixup_alpha", mixup_alpha), ("cutmix_alpha", cutmix_alpha)):
            if not is_number(alpha):
                raise ConfigError(f"data.{name}={alpha!r}: give 0 (off) or a positive number.")
        self.mixup_alpha, self.cutmix_alpha = mixup_alpha, cutmix_alpha
        self.mix = batch_mix(mixup_alpha, cutmix_alpha, num_classes) if num_classes else None
        _choice("loader", loader, LOADERS)
        _choice("dali_device", dali_device, dali.DEVICES)
        self.loader, self.dali_device = loader, dali_device
        if loader == "dali":  # before any work: the package, and the options it has
            dali.import_dali()
            dali.check_options(self.train_options)
        self.datasets: dict[str, IndexedImages] = {}
        self.skip_log: Path | None = None
        self._skipped_seen = 0

    # -- the tree ------------------------------------------------------------------------------

    def prepare_data(self) -> None:
        """Once per node (Lightning's local rank 0): index the splits into the cache, so the
        other ranks' ``setup`` read the cache instead of walking the tree at the same time."""
        if self.index_cache is not None:
            self._indexes()

    def _indexes(self) -> dict[str, SplitIndex]:
        root = self._checked_root()
        indexes = {}
        for split in SPLITS:
            indexes[split] = load_index(root / split, self.index_cache, rebuild=self.reindex)
            if not indexes[split].classes:
                raise DataError(
                    f"{root / split} holds no class folders. Expected {self.layout()}."
                    + _unpacked_how(root / split)
                )
            if indexes[split].other_files and str(root / split) not in _SAID_LEFT_OUT:
                _SAID_LEFT_OUT.add(str(root / split))  # (once a process: setup runs again)
                log.warning(
                    "%s: %d files are not images by their name and were left out, e.g. %s "
                    "(read: %s)",
                    root / split,
                    indexes[split].other_files,
                    ", ".join(indexes[split].other_examples),
                    " ".join(IMAGE_EXTENSIONS),
                )
        self.reindex = False  # rebuild once, not on every call
        return indexes

    def settle_num_classes(self, train: SplitIndex | None = None) -> int:
        """``num_classes``; when None, the number of class folders the tree holds (checked as
        ``setup`` checks them; ``train``: its train index, already checked), then kept."""
        if self.num_classes is None:
            train = train if train is not None else self.checked_indexes()[0]
            self.num_classes = len(train.classes)
            self.mix = batch_mix(self.mixup_alpha, self.cutmix_alpha, self.num_classes)
            log.info("data.num_classes=%d: the class folders of %s", self.num_classes, train.folder)
        return self.num_classes

    def checked_indexes(self) -> tuple[SplitIndex, SplitIndex]:
        """The train and val indexes of the whole tree, checked (``DataError`` naming what is
        wrong: empty class folders, stray folders, splits that disagree, too few classes)."""
        indexes = self._indexes()
        self._check_classes(indexes["train"], indexes["val"])
        return indexes["train"], indexes["val"]

    def is_set_up(self) -> bool:
        """Whether ``setup`` has chosen the splits' images (its later calls reuse them)."""
        return bool(self.datasets)

    def setup(self, stage: str | None = None) -> None:
        """Check the tree, choose the classes and images of each split (once; later calls reuse
        them), and build the transforms for the device the trainer runs on."""
        if self.is_set_up():
            return
        train, official_val = self.checked_indexes()
        self.settle_num_classes(train)
        classes = self._chosen_classes(train.classes)
        train = _only_classes(train, classes)
        official_val = _only_classes(official_val, classes)
        held_out = None
        if self.val_from_train:
            held_out, train = _split_per_class(train, self.val_from_train, self.split_seed)
        if self.samples_per_class:
            train, _ = _split_per_class(
                train, self.samples_per_class, self.split_seed + 1, at_most=True
            )
        self._report_counts(train, held_out, official_val)
        self._open_skip_log()
        train_tf, eval_tf = self.device_transforms()

        def dataset(index: SplitIndex, transform) -> IndexedImages:
            return IndexedImages(index, transform, self.on_bad_file, self.skip_log, self.decoder)

        test = dataset(official_val, eval_tf)
        self.datasets = {
            "train": dataset(train, train_tf),
            "val": dataset(held_out, eval_tf) if held_out is not None else test,
            "test": test,
        }

    def _open_skip_log(self) -> None:
        """A fresh file for the unreadable files this process skips (``on_bad_file=skip``)."""
        if self.on_bad_file == "skip" and self.skip_log is None:
            folder = tempfile.mkdtemp(prefix="cnnzoo-skipped-")
            self.skip_log = Path(folder) / "skipped.tsv"
            # scratch shared with the workers: gone with this DataModule, or at exit
            weakref.finalize(self, shutil.rmtree, folder, True)

    def _use_device_transforms(self) -> None:
        """Give the datasets the transforms for the device the trainer runs on now. Called as
        each loader is built: ``setup`` may have run before a trainer was attached (the train
        task checks the data first), when the device was not yet known."""
        train_tf, eval_tf = self.device_transforms()
        self.datasets["train"].transform = train_tf
        for split in ("val", "test"):
            self.datasets[split].transform = eval_tf

    def device_transforms(self):
        """(train, eval) transforms for the device the trainer runs on: uint8 out when the
        device normalises (``normalize_on_device``), normalised floats otherwise."""
        on_device = self.normalizes_on_device()
        image_size, resize = self.sizes
        train_tf = train_transform(image_size, **self.train_options, normalize=not on_device)
        if self.eval_crop == "center":
            eval_tf = eval_transform(image_size, resize, normalize=not on_device)
        else:
            eval_tf = multi_crop_transform(image_size, resize, self.eval_crop, not on_device)
        return train_tf, eval_tf

    def _check_classes(self, train: SplitIndex, val: SplitIndex) -> None:
        root = self.root
        for index in (train, val):
            empty = [c for c, n in zip(index.classes, index.counts(), strict=True) if n == 0]
            if empty:
                raise DataError(
                    f"{index.folder} has {len(empty)} class folders without images, e.g. "
                    f"{empty[:5]} (images are .JPEG/.jpg/.png/... files). Expected "
                    f"{self.layout()}."
                )
        if self.wnids == "imagenet":
            known = set(imagenet_wnids())
            stray = [c for c in train.classes + val.classes if c not in known]
            if stray:
                raise DataError(
                    f"{root} holds folders that are not ILSVRC-2012 wnids: {sorted(set(stray))[:5]}"
                    f". Move them out of {root / 'train'} and {root / 'val'}, or use "
                    "data=imagefolder for a tree of other classes."
                )
        if val.classes != train.classes:
            only = sorted(set(train.classes) ^ set(val.classes))[:5]
            raise DataError(
                f"{root / 'train'} and {root / 'val'} hold different class folders "
                f"(e.g. {only}); both splits need the same class folders ({self.layout()})."
            )
        found = len(train.classes)
        if self.num_classes is not None and found < self.num_classes:
            missing, fix = "", f"set data.num_classes={found}"
            if self.wnids == "imagenet" and self.num_classes == len(imagenet_wnids()):
                absent = sorted(set(imagenet_wnids()) - set(train.classes))
                missing = f" (a partial tree: missing {len(absent)}, e.g. {absent[:3]})"
            if self.wnids is None:  # data=imagefolder: any classes, as many as it holds
                fix = f"set data.num_classes=null (one class per folder) or {found}"
            raise DataError(
                f"{root / 'train'} has {found} class folders but data.num_classes="
                f"{self.num_classes}{missing}. Point {self.root_setting} at the full tree, "
                f"or {fix}."
            )

    def _chosen_classes(self, classes: tuple[str, ...]) -> tuple[str, ...]:
        """All classes, or the documented fixed subset: every k-th in sorted order."""
        if len(classes) == self.num_classes:
            return classes
        if len(classes) % self.num_classes:
            raise DataError(
                f"data.num_classes={self.num_classes} with {len(classes)} class folders in "
                f"{self.root / 'train'}: a subset takes every k-th class, so num_classes must "
                f"divide {len(classes)} (e.g. {len(classes) // 10} or {len(classes)})."
            )
        step = len(classes) // self.num_classes
        log.info(
            "class subset: %d of %d classes, every %d-th in sorted order from %s",
            self.num_classes,
            len(classes),
            step,
            classes[0],
        )
        return classes[::step]

    def _report_counts(self, train, held_out, val) -> None:
        parts = [f"train {len(train):,}"]
        if held_out is not None:
            parts.append(f"val (held out from train) {len(held_out):,}")
        parts.append(f"{'test' if held_out is not None else 'val/test'} {len(val):,}")
        log.info("%s: %s images in %d classes", self.root, ", ".join(parts), len(train.classes))
        whole = (
            self.wnids == "imagenet"
            and len(train.classes) == len(imagenet_wnids())
            and not (self.val_from_train or self.samples_per_class)
        )
        if whole:
            for split, index in (("train", train), ("val", val)):
                if len(index) != IMAGENET_IMAGES[split]:
                    log.warning(
                        "%s has %s images; ILSVRC-2012's %s split has %s. An interrupted "
                        "extraction? Re-run python -m cnnzoo.data.prepare_imagenet.",
                        index.folder,
                        f"{len(index):,}",
                        split,
                        f"{IMAGENET_IMAGES[split]:,}",
                    )

    def class_names(self) -> list[str]:
        """Readable names by class index: ImageNet's names for wnid folders, else the class
        folders' names. The full set (and, without a tree, its every-k-th subset) needs no tree."""
        wnids = imagenet_wnids()
        tree = self.root is not None and (self.root / "train").is_dir()
        known = self.wnids == "imagenet" and not self.datasets
        if known and len(wnids) % self.num_classes == 0 and (self.num_classes == 1000 or not tree):
            name_of = imagenet_name_of()  # the whole set, or (away from the data) its subset
            return [name_of[w] for w in wnids[:: len(wnids) // self.num_classes]]
        self.setup()
        name_of = imagenet_name_of()
        return [name_of.get(c, c) for c in self.datasets["train"].classes]

    def class_ids(self) -> list[str]:
        """The class folders' names (wnids for ImageNet) by class index."""
        self.setup()
        return list(self.datasets["train"].classes)

    def layout(self) -> str:
        """The tree this DataModule reads, for messages."""
        return LAYOUT if self.wnids == "imagenet" else CLASS_LAYOUT

    def _checked_root(self) -> Path:
        layout = self.layout()
        if self.root is None:
            raise DataError(f"no data folder given. Set {self.root_setting}; expected {layout}.")
        fix = f"Expected {layout}; set {self.root_setting} to such a folder."
        prepare = f" {PREPARE}" if self.wnids == "imagenet" else ""
        if self.root.is_file():  # e.g. ILSVRC2012_img_train.tar itself
            raise DataError(f"data folder {self.root} is a file, not a folder. {fix}{prepare}")
        if not self.root.is_dir():
            raise DataError(f"data folder {self.root} does not exist. {fix}")
        if (self.root / "cnnzoo-shards.json").is_file():  # (shards.META; the shards import us)
            raise DataError(
                f"{self.root} holds WebDataset shards, not class folders of images: read them "
                f"with data=imagenet_shards data.root={self.root}."
            )
        missing = [s for s in SPLITS if not (self.root / s).is_dir()]
        if missing:
            names = sorted(p.name for p in self.root.iterdir())
            found = ", ".join(names[:4]) + (f", ... ({len(names)} in all)" if names[4:] else "")
            parent = self.root.parent
            if all((parent / s).is_dir() for s in SPLITS):  # data.root=photos/train
                fix = f"It is a split of {parent}: set {self.root_setting.split()[0]}={parent}."
            elif "val" in missing and _holds_class_folders(
                self.root if "train" in missing else self.root / "train"
            ):
                share = "some images of each class (one in five, say)"
                held = f"{self.root}/val/<class>/"
                if "train" in missing:
                    move = f"move the class folders into {self.root}/train/"
                    fix += f" To split it, {move} and {share} into {held}."
                else:
                    fix += f" Hold out {share} in {held}."
            raise DataError(
                f"data folder {self.root} has no {' or '.join(missing)} folder "
                f"(found: {found or 'nothing'}). {fix}{prepare}"
            )
        return self.root

    # -- loading -------------------------------------------------------------------------------

    def normalizes_on_device(self) -> bool:
        """``normalize_on_device``, or (null) whether the trainer's device is a CUDA GPU."""
        if self.normalize_on_device is not None:
            return self.normalize_on_device
        return self.device().type == "cuda"

    def device(self) -> torch.device:
        """The device this process trains on: the attached trainer's (CPU without one)."""
        trainer = self.trainer
        return trainer.strategy.root_device if trainer is not None else torch.device("cpu")

    def workers(self) -> int:
        if self.num_workers != "auto":
            return self.num_workers
        devices = self.trainer.num_devices if self.trainer is not None else 1
        return auto_workers(len(os.sched_getaffinity(0)), devices)

    def per_device_batch_size(self) -> int:
        return per_device_batch_size(self.batch_size, self.trainer)

    def pass_batch_size(self, train: bool) -> int:
        """Images per loader batch on this device: the per-device batch; for evaluation divided
        by the views per image, so a forward pass holds the same number of images."""
        batch = self.per_device_batch_size()
        return batch if train else max(1, batch // CROPS[self.eval_crop])

    def _sampler(self, split: str, shuffle: bool) -> SeededSampler:
        """This rank's share of ``split`` in the order of the trainer's epoch."""
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
        return sampler

    def _dali_loader(self, feed, train: bool, remedy: str) -> "dali.DaliLoader":
        """A DALI loader of ``feed``'s batches with this DataModule's recipe, on the device."""
        device_id = dali.dali_device_id(self.dali_device, self.device())
        options = self.train_options
        lighting = train and bool(options["lighting"])  # a torch op on the device batch
        uint8 = lighting or (device_id is None and self.normalizes_on_device())
        recipe = dali.Recipe(
            train=train,
            image_size=self.sizes[0],
            resize=self.sizes[1],
            crop=options["crop"],
            crop_scale=options["crop_scale"],
            scale_jitter=options["scale_jitter"],
            hflip=options["hflip"],
            eval_crop=self.eval_crop,
            normalize=not uint8,
        )
        trainer = self.trainer
        return dali.DaliLoader(
            feed,
            recipe,
            device_id=device_id,
            seed=self.shuffle_seed,
            rank=trainer.global_rank if trainer is not None else 0,
            num_threads=self.workers(),
            on_bad_file=self.on_bad_file,
            skip_log=self.skip_log,
            remedy=remedy,
        )

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        sampler, batch = self._sampler(split, shuffle), self.pass_batch_size(train=shuffle)
        if shuffle:  # (a rank's share in whole per-device batches)
            steps = len(sampler) // batch
            self._refuse_no_steps(len(self.datasets[split]), steps, self.root / "train")
        if self.loader == "dali":
            feed = dali.FolderFeed(self.datasets[split].index, sampler, batch, drop_last=shuffle)
            return self._dali_loader(feed, shuffle, self.datasets[split].remedy())
        self._use_device_transforms()
        workers = self.workers()
        return ResumableDataLoader(
            self.datasets[split],
            batch_size=batch,
            sampler=sampler,
            drop_last=shuffle,
            num_workers=workers,
            collate_fn=skip_bad_collate,
            pin_memory=self.pin_memory and torch.cuda.is_available(),
            persistent_workers=workers > 0,
            generator=torch.Generator().manual_seed(self.shuffle_seed),  # global RNG untouched
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def _refuse_no_steps(self, images: int, steps: int, where: str | Path) -> None:
        """Training drops the last partial batch: ``images`` fewer than one batch would train
        no step at all (Lightning: "No training batches"), then test a random network."""
        if steps == 0:
            raise DataError(
                f"training has {images} images ({where}), fewer than one batch "
                f"(data.batch_size={self.batch_size}, {self.pass_batch_size(train=True)} per "
                f"device), so no training step would run. Set data.batch_size="
                f"{_at_most(images)} or less."
            )

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def view_transform(self, crop: str = "center", normalize: bool = True):
        """One image's eval views, (views, 3, size, size), at this data's sizes: ``center``,
        ``flip`` or ``ten`` (what eval.py, predict.py and visualize.py feed the network; with
        ``normalize=False`` the uint8 crops they show)."""
        if crop not in CROPS:
            raise ConfigError(f"crop={crop!r}: choose one of {sorted(CROPS)}.")
        return multi_crop_transform(*self.sizes, crop, normalize)

    def eval_batch_size(self, crop: str) -> int:
        """Images per batch of one process's eval loader: the global batch's worth of views."""
        return max(1, self.batch_size // CROPS[crop])

    def eval_loader(self, split: str, crop: str = "center") -> DataLoader:
        """One process's loader over all of ``split`` in batches of (N, views, 3, H, W): as many
        images per forward pass as ``data.batch_size`` (divided by the views per image)."""
        transform = self.view_transform(crop)
        self.setup("validate")
        if split not in self.datasets:
            raise ConfigError(f"eval.split={split!r}: choose one of {sorted(self.datasets)}.")
        dataset = self.datasets[split]
        dataset.transform = transform
        return DataLoader(
            dataset,
            batch_size=self.eval_batch_size(crop),
            num_workers=self.workers(),
            collate_fn=skip_bad_collate,
        )

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
        training = self.trainer is not None and self.trainer.training
        if images.dtype == torch.uint8:
            lighting = self.train_options["lighting"]
            if self.loader == "dali" and lighting and training:  # on [0, 1], then normalised
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

    def new_skipped(self) -> list[tuple[str, str]]:
        """(path, reason) of the unreadable files skipped since the last call (this process)."""
        entries = read_skipped(self.skip_log, self._skipped_seen)
        self._skipped_seen += len(entries)
        return entries


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
        super().prepare_data()

    def class_names(self) -> list[str]:
        names = sample_class_names()
        if self.num_classes == len(names):
            return names
        return super().class_names()


def number_pair(name: str, value, kind: type) -> tuple:
    """``data.<name>`` as a (low, high) pair of ``kind`` (a range: [0.08, 1.0], [256, 512])."""
    try:
        low, high = (kind(v) for v in value) if not isinstance(value, str) else (None, None)
    except (TypeError, ValueError):
        low = high = None
    if low is None or low > high:
        raise ConfigError(
            f"data.{name}={value!r}: give a range of two numbers, low then high "
            f"(data.{name}=[low,high])."
        )
    return low, high


def _choice(name: str, value, choices: tuple) -> None:
    if value not in choices:
        raise ConfigError(f"data.{name}={value!r}: choose one of {list(choices)}.")


def _only_classes(index: SplitIndex, classes: tuple[str, ...]) -> SplitIndex:
    if classes == index.classes:
        return index
    wanted = np.isin(np.array(index.classes), np.array(classes))
    return index.select(np.flatnonzero(wanted[index.targets]), classes)


def _split_per_class(
    index: SplitIndex, n: int, seed: int, at_most: bool = False
) -> tuple[SplitIndex, SplitIndex]:
    """(n images of each class chosen at random with ``seed``, the rest), both in index order.
    A class with n or fewer images is an error, or with ``at_most`` goes wholly to the first."""
    counts = index.counts()
    if not at_most and counts.min() <= n:
        poorest = index.classes[int(counts.argmin())]
        raise ConfigError(
            f"data.val_from_train={n}: class {poorest} has only {counts.min()} training images; "
            "hold out fewer per class."
        )
    picked = pick_per_class(index.targets, len(index.classes), n, seed)
    return index.select(np.flatnonzero(picked)), index.select(np.flatnonzero(~picked))


def _at_most(images: int) -> int:
    """A batch size for a training split of ``images``: the largest power of two it holds."""
    return 1 << (max(images, 1).bit_length() - 1)


def pick_per_class(targets: np.ndarray, num_classes: int, n: int, seed: int) -> np.ndarray:
    """A mask of up to ``n`` positions of each class, chosen at random with ``seed``."""
    targets = np.asarray(targets)
    counts = np.bincount(targets, minlength=num_classes)
    rng = np.random.default_rng(seed)
    order = np.argsort(targets, kind="stable")  # positions grouped by class
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    chosen = [
        rng.permutation(order[start : start + count])[:n]
        for start, count in zip(starts, counts, strict=True)
    ]
    picked = np.zeros(len(targets), dtype=bool)
    picked[np.concatenate(chosen).astype(np.int64)] = True
    return picked
