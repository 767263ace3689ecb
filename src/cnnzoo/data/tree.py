"""An ImageNet-layout tree, ``ROOT/{train,val}/<class>/<image>``: its file index, its classes,
its splits, and what is wrong with it when it is not such a tree. No Lightning here.

The class index is the position of the class folder in sorted order (torchvision's ImageFolder
and the ILSVRC convention). ImageNet's test labels are not public, so the test split is the
val folder, as the papers' reported results are; with ``val_from_train=N`` the val split is N
held-out training images per class and the official val set stays untouched until test.
"""

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnnzoo.data.classes import imagenet_name_of, imagenet_wnids
from cnnzoo.data.index import IMAGE_EXTENSIONS, SplitIndex, load_index
from cnnzoo.data.options import TreeOptions
from cnnzoo.errors import ConfigError, DataError

log = logging.getLogger(__name__)

LAYOUT = "ROOT/train/<wnid>/*.JPEG and ROOT/val/<wnid>/*.JPEG"
CLASS_LAYOUT = "ROOT/train/<class>/* and ROOT/val/<class>/*"  # (data=imagefolder: any names)
PREPARE = (
    "For the official ILSVRC-2012 archives run "
    "python -m cnnzoo.data.prepare_imagenet --src DOWNLOADS --dst ROOT."
)
SPLITS = ("train", "val")
# ILSVRC-2012's official image counts, checked when the tree is the whole of it.
IMAGENET_IMAGES = {"train": 1_281_167, "val": 50_000}
_SAID_LEFT_OUT: set[str] = set()  # the splits whose files left out by name were named


@dataclass(frozen=True)
class Splits:
    """The images of each stage: ``val`` is ``test`` unless images were held out of train."""

    train: SplitIndex
    val: SplitIndex
    test: SplitIndex

    @property
    def classes(self) -> tuple[str, ...]:
        return self.train.classes


class ImageTree:
    """The tree ``options.root`` names, read as ``options`` say (see ``TreeOptions``)."""

    def __init__(self, options: TreeOptions) -> None:
        self.options = options
        self.root = options.root
        self._num_classes = options.num_classes  # (None until counted)
        self._reindex = options.reindex

    def layout(self) -> str:
        """The tree this reads, for messages."""
        return LAYOUT if self.options.wnids == "imagenet" else CLASS_LAYOUT

    def indexes(self) -> dict[str, SplitIndex]:
        """Each split's file index (from the cache when the tree is unchanged)."""
        root = self.checked_root()
        indexes = {}
        for split in SPLITS:
            indexes[split] = load_index(root / split, self.options.index_cache, self._reindex)
            if not indexes[split].classes:
                raise DataError(
                    f"{root / split} holds no class folders. Expected {self.layout()}."
                    + _unpacked_how(root / split)
                    + self._reindex_hint()
                )
            self._name_left_out(indexes[split])
        self._reindex = False  # rebuild once, not on every call
        return indexes

    def _reindex_hint(self) -> str:
        """Where a cached file index could be behind what a message says, how to walk again."""
        if self.options.index_cache is None:
            return ""
        return (
            f" (The file index cached in {self.options.index_cache} is reused while the "
            "folders' modification times are unchanged; data.reindex=true walks the tree "
            "again.)"
        )

    def _name_left_out(self, index: SplitIndex) -> None:
        if index.other_files and index.folder not in _SAID_LEFT_OUT:
            _SAID_LEFT_OUT.add(index.folder)  # (a warning, like Python's: once a process)
            log.warning(
                "%s: %d files are not images by their name and were left out, e.g. %s (read: %s)",
                index.folder,
                index.other_files,
                ", ".join(index.other_examples),
                " ".join(IMAGE_EXTENSIONS),
            )

    def checked_indexes(self) -> tuple[SplitIndex, SplitIndex]:
        """The train and val indexes of the whole tree, checked (``DataError`` naming what is
        wrong: empty class folders, stray folders, splits that disagree, too few classes)."""
        indexes = self.indexes()
        self._check_classes(indexes["train"], indexes["val"])
        return indexes["train"], indexes["val"]

    def num_classes(self, train: SplitIndex | None = None) -> int:
        """``options.num_classes``; when None, the number of class folders the tree holds
        (checked; ``train``: its train index, already checked)."""
        if self._num_classes is None:
            train = train if train is not None else self.checked_indexes()[0]
            self._num_classes = len(train.classes)
            log.info(
                "data.num_classes=%d: the class folders of %s", self._num_classes, train.folder
            )
        return self._num_classes

    def splits(self) -> Splits:
        """Check the tree, choose the classes, then the images of each split."""
        train, official_val = self.checked_indexes()
        classes = self._chosen_classes(train.classes, self.num_classes(train))
        train = _only_classes(train, classes)
        official_val = _only_classes(official_val, classes)
        held_out, options = None, self.options
        if options.val_from_train:
            held_out, train = _split_per_class(train, options.val_from_train, options.split_seed)
        if options.samples_per_class:
            train, _ = _split_per_class(
                train, options.samples_per_class, options.split_seed + 1, at_most=True
            )
        self._report_counts(train, held_out, official_val)
        val = held_out if held_out is not None else official_val
        return Splits(train=train, val=val, test=official_val)

    def known_names(self) -> list[str] | None:
        """ImageNet's class names by index when the tree need not be read for them: the whole
        set, or away from the data its every-k-th subset; else None."""
        wnids, count = imagenet_wnids(), self._num_classes
        if self.options.wnids != "imagenet" or count is None or len(wnids) % count:
            return None
        present = self.root is not None and (self.root / "train").is_dir()
        if count != len(wnids) and present:
            return None
        name_of = imagenet_name_of()
        return [name_of[w] for w in wnids[:: len(wnids) // count]]

    @staticmethod
    def names(classes: tuple[str, ...]) -> list[str]:
        """Readable names of class folders: ImageNet's for wnids, else the folders' names."""
        name_of = imagenet_name_of()
        return [name_of.get(c, c) for c in classes]

    def _check_classes(self, train: SplitIndex, val: SplitIndex) -> None:
        root, wnids = self.root, self.options.wnids
        for index in (train, val):
            empty = [c for c, n in zip(index.classes, index.counts(), strict=True) if n == 0]
            if empty:
                raise DataError(
                    f"{index.folder} has {len(empty)} class folders without images, e.g. "
                    f"{empty[:5]} (images are .JPEG/.jpg/.png/... files). Expected "
                    f"{self.layout()}.{self._reindex_hint()}"
                )
        if wnids == "imagenet":
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
        found, wanted = len(train.classes), self._num_classes
        if wanted is not None and found < wanted:
            missing, fix = "", f"set data.num_classes={found}"
            if wnids == "imagenet" and wanted == len(imagenet_wnids()):
                absent = sorted(set(imagenet_wnids()) - set(train.classes))
                missing = f" (a partial tree: missing {len(absent)}, e.g. {absent[:3]})"
            if wnids is None:  # data=imagefolder: any classes, as many as it holds
                fix = f"set data.num_classes=null (one class per folder) or {found}"
            raise DataError(
                f"{root / 'train'} has {found} class folders but data.num_classes={wanted}"
                f"{missing}. Point {self.options.root_setting} at the full tree, or {fix}."
            )

    def _chosen_classes(self, classes: tuple[str, ...], count: int) -> tuple[str, ...]:
        """All classes, or the documented fixed subset: every k-th in sorted order."""
        if len(classes) == count:
            return classes
        if len(classes) % count:
            raise DataError(
                f"data.num_classes={count} with {len(classes)} class folders in "
                f"{self.root / 'train'}: a subset takes every k-th class, so num_classes must "
                f"divide {len(classes)} (e.g. {len(classes) // 10} or {len(classes)})."
            )
        step = len(classes) // count
        log.info(
            "class subset: %d of %d classes, every %d-th in sorted order from %s",
            count,
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
        options = self.options
        whole = (
            options.wnids == "imagenet"
            and len(train.classes) == len(imagenet_wnids())
            and not (options.val_from_train or options.samples_per_class)
        )
        for split, index in (("train", train), ("val", val)) if whole else ():
            if len(index) != IMAGENET_IMAGES[split]:
                log.warning(
                    "%s has %s images; ILSVRC-2012's %s split has %s. An interrupted "
                    "extraction? Re-run python -m cnnzoo.data.prepare_imagenet.",
                    index.folder,
                    f"{len(index):,}",
                    split,
                    f"{IMAGENET_IMAGES[split]:,}",
                )

    def checked_root(self) -> Path:
        """``root``, or a ``DataError`` saying what it is instead of such a tree."""
        layout, setting, root = self.layout(), self.options.root_setting, self.root
        if root is None:
            raise DataError(f"no data folder given. Set {setting}; expected {layout}.")
        fix = f"Expected {layout}; set {setting} to such a folder."
        prepare = f" {PREPARE}" if self.options.wnids == "imagenet" else ""
        if root.is_file():  # e.g. ILSVRC2012_img_train.tar itself
            raise DataError(f"data folder {root} is a file, not a folder. {fix}{prepare}")
        if not root.is_dir():
            raise DataError(f"data folder {root} does not exist. {fix}")
        if (root / "cnnzoo-shards.json").is_file():  # (shards.META; the shards import us)
            raise DataError(
                f"{root} holds WebDataset shards, not class folders of images: read them "
                f"with data=imagenet_shards data.root={root}."
            )
        missing = [s for s in SPLITS if not (root / s).is_dir()]
        if missing:
            names = sorted(p.name for p in root.iterdir())
            found = ", ".join(names[:4]) + (f", ... ({len(names)} in all)" if names[4:] else "")
            raise DataError(
                f"data folder {root} has no {' or '.join(missing)} folder "
                f"(found: {found or 'nothing'}). {fix}{_how_to_split(root, missing, setting)}"
                f"{prepare}"
            )
        return root


def _how_to_split(root: Path, missing: list[str], setting: str) -> str:
    """What to do with a folder that lacks train/ or val/ (after the sentence naming it)."""
    parent = root.parent
    if all((parent / s).is_dir() for s in SPLITS):  # data.root=photos/train
        return f" It is a split of {parent}: set {setting.split()[0]}={parent}."
    if "val" in missing and _holds_class_folders(root if "train" in missing else root / "train"):
        share, held = "some images of each class (one in five, say)", f"{root}/val/<class>/"
        if "train" in missing:
            return (
                f" To split it, move the class folders into {root}/train/ and {share} into {held}."
            )
        return f" Hold out {share} in {held}."
    return ""


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
