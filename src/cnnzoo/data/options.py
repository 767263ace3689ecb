"""The data settings as typed options, each key checked here and nowhere else.

A data config is flat (``data.batch_size``, ``data.train_crop``, ...): command lines,
experiments and old run folders keep it so. ``DataOptions.parse`` sorts its keys into three
objects, one concern each, and each object checks its own keys when it is made:

- ``TreeOptions``: which images (the folder, the classes, the splits, the file index);
- ``RecipeOptions``: what is done to them (sizes, train crop, augmentation, mixing, eval views);
- ``LoadingOptions``: how they are read (batch, workers or DALI, decoder, bad files).

A key no object has is named, with the keys there are. Dataclasses, not pydantic: the checks
are a few lines each and their messages are this project's one-line form (the key, the value,
the fix); pydantic's validation errors would have to be caught and rewritten into it.
"""

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnzoo.data.batching import check_batch_size
from cnnzoo.data.transforms import CROPS, TRAIN_CROPS, train_transform
from cnnzoo.errors import ConfigError, check_switch, is_number, is_whole

LOADERS = ("workers", "dali")
DALI_DEVICES = ("auto", "gpu", "cpu")
DECODERS = ("torchcodec", "torchvision", "pil")
BAD_FILE_POLICIES = ("error", "skip")
SIZES = {  # key: the model key it follows, and the papers' usual value
    "image_size": ("input_size", "224, the crop the network sees"),
    "eval_resize": ("eval_resize", "256, the short side before the centre crop"),
}
DEFAULT_DECODER = "torchcodec"  # (what eval, predict and visualize use for a run without one)


def choice(key: str, value: Any, choices: tuple) -> None:
    """``data.<key>`` must be one of ``choices``."""
    if value not in choices:
        raise ConfigError(f"data.{key}={value!r}: choose one of {list(choices)}.")


def number_pair(key: str, value: Any, kind: type) -> tuple:
    """``data.<key>`` as a (low, high) pair of ``kind`` (a range: [0.08, 1.0], [256, 512])."""
    try:
        low, high = (kind(v) for v in value) if not isinstance(value, str) else (None, None)
    except (TypeError, ValueError):
        low = high = None
    if low is None or low > high:
        raise ConfigError(
            f"data.{key}={value!r}: give a range of two numbers, low then high "
            f"(data.{key}=[low,high])."
        )
    return low, high


@dataclass(frozen=True)
class TreeOptions:
    """Which images: an ImageNet-layout tree, its classes and its splits.

    num_classes: classes to train on; fewer than the tree holds is the fixed subset of every
        k-th class in sorted order; None: one class per class folder.
    wnids: ``"imagenet"``: every class folder must be an ILSVRC-2012 wnid; None: any names.
    val_from_train: hold out this many training images per class as the val split (chosen with
        ``split_seed``); the official val set becomes the test split.
    samples_per_class: train on at most this many images per class (``split_seed``).
    index_cache: folder for each split's file index (None: walk the tree each start);
        ``reindex`` rebuilds it.
    root_setting: how the user sets ``root``, for messages.
    """

    root: Path | None = None
    num_classes: int | None = None
    wnids: str | None = None
    val_from_train: int = 0
    samples_per_class: int | None = None
    split_seed: int = 0
    index_cache: Path | None = None
    reindex: bool = False
    root_setting: str = "data.root (or the IMAGENET_ROOT environment variable)"

    def __post_init__(self) -> None:
        for key in ("root", "index_cache"):
            value = getattr(self, key)
            if value is not None and not isinstance(value, Path):
                object.__setattr__(self, key, Path(value).expanduser() if value else None)
        choice("wnids", self.wnids, ("imagenet", None))
        for key, least in (("val_from_train", 0), ("samples_per_class", 1)):
            value = getattr(self, key)
            if value is not None and not is_whole(value, least):
                raise ConfigError(
                    f"data.{key}={value!r}: give a whole number of images per class, at least "
                    f"{least}" + (" (or null: all of them)." if least else ".")
                )


@dataclass(frozen=True)
class RecipeOptions:
    """What is done to each image (sizes in px); see ``cnnzoo.data.transforms``.

    normalize_on_device: send uint8 images and normalise on the device (None: on CUDA).
    eval_crop: val and test views: ``center``, ``flip`` or ``ten`` (softmax averaged).
    """

    image_size: int = 224
    eval_resize: int = 256
    train_crop: str = "rrc"
    train_crop_scale: tuple[float, float] = (0.08, 1.0)
    scale_jitter: tuple[int, int] = (256, 512)
    hflip: bool = True
    color_jitter: float = 0.0
    auto_augment: str | None = None
    lighting: float = 0.0
    random_erasing: float = 0.0
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    eval_crop: str = "center"
    normalize_on_device: bool | None = None

    def __post_init__(self) -> None:
        for key, (model_key, usual) in SIZES.items():  # (null, text: a TypeError traceback)
            if not is_whole(getattr(self, key)):
                raise ConfigError(
                    f"data.{key}={getattr(self, key)!r} (model.{model_key} unless set): give a "
                    f"size in pixels (usually {usual})."
                )
        if self.eval_resize < self.image_size:
            raise ConfigError(
                f"data.eval_resize={self.eval_resize} is smaller than data.image_size="
                f"{self.image_size}: the centre crop would not fit. Set eval_resize >= "
                "image_size (224/256 is usual)."
            )
        choice("train_crop", self.train_crop, TRAIN_CROPS)
        choice("eval_crop", self.eval_crop, tuple(CROPS))
        pairs = (("train_crop_scale", float), ("scale_jitter", int))
        for key, kind in pairs:
            object.__setattr__(self, key, number_pair(key, getattr(self, key), kind))
        if not 0 < self.train_crop_scale[0] <= self.train_crop_scale[1] <= 1:  # ([0, 0] gave
            raise ConfigError(  # torchvision's fallback, the centre crop, silently)
                f"data.train_crop_scale={list(self.train_crop_scale)}: give the crop's share of "
                "the image's area, 0 < low <= high <= 1 ([0.08, 1.0] in the papers)."
            )
        check_switch("data.normalize_on_device", self.normalize_on_device, null=True)
        check_switch("data.hflip", self.hflip)
        for key in ("mixup_alpha", "cutmix_alpha", "lighting"):  # (lighting=-1: silently off)
            if not is_number(getattr(self, key)):
                raise ConfigError(f"data.{key}={getattr(self, key)!r}: give 0 (off) or a "
                                  "positive number.")  # fmt: skip
        try:  # what the transforms check (auto_augment) and torchvision (jitter, erasing, ...)
            train_transform(self.image_size, **self.train_options())
        except ValueError as e:
            raise ConfigError(f"data: {e}.") from None

    def train_options(self) -> dict[str, Any]:
        """The keyword arguments of ``train_transform`` (after the size)."""
        return {
            "crop_scale": self.train_crop_scale,
            "hflip": self.hflip,
            "crop": self.train_crop,
            "resize": self.eval_resize,
            "scale_jitter": self.scale_jitter,
            "color_jitter": self.color_jitter,
            "auto_augment": self.auto_augment,
            "lighting": self.lighting,
            "random_erasing": self.random_erasing,
        }


@dataclass(frozen=True)
class LoadingOptions:
    """How images are read: ``batch_size`` is the global batch of one optimiser step.

    num_workers: DataLoader processes per device, or ``"auto"`` (``batching.auto_workers``);
        with ``loader=dali``, DALI's CPU threads per device.
    loader: ``workers`` (DataLoader worker processes) or ``dali`` (``cnnzoo.data.dali``).
    dali_device: where DALI decodes: ``auto`` (the trainer's GPU, else DALI's CPU backend),
        ``gpu`` or ``cpu``.
    dali_hw_decoder_load: the share of JPEGs DALI's GPU decoder gives the GPU's hardware JPEG
        decoder (A100, H100, H200, ...), 0 to 1; None: DALI's default (0.65).
    decoder: ``torchcodec`` or ``torchvision`` (decode_image into uint8 tensors), or ``pil``.
    on_bad_file: ``error`` or ``skip`` (skipped files are listed at the end of each epoch).
    shuffle_seed: with the epoch and the image, the order and each image's augmentation.
    """

    batch_size: int = 256
    num_workers: int | str = 8
    pin_memory: bool = True
    shuffle_seed: int = 0
    loader: str = "workers"
    dali_device: str = "auto"
    dali_hw_decoder_load: float | None = None
    decoder: str = DEFAULT_DECODER
    on_bad_file: str = "error"

    def __post_init__(self) -> None:
        check_batch_size(self.batch_size)
        check_switch("data.pin_memory", self.pin_memory)
        seed = self.shuffle_seed  # ("abc": torch's RuntimeError, a traceback)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ConfigError(f"data.shuffle_seed={self.shuffle_seed!r}: give a whole number.")
        if not (self.num_workers == "auto" or is_whole(self.num_workers, 0)):
            raise ConfigError(f"data.num_workers={self.num_workers!r}: give a count >= 0 or auto.")
        choice("loader", self.loader, LOADERS)
        choice("dali_device", self.dali_device, DALI_DEVICES)
        load = self.dali_hw_decoder_load
        if load is not None and not (is_number(load) and 0 <= load <= 1):
            raise ConfigError(
                f"data.dali_hw_decoder_load={load!r}: give a share from 0 to 1 (1: every JPEG to "
                "the GPU's hardware decoder), or null for DALI's default."
            )
        choice("decoder", self.decoder, DECODERS)
        choice("on_bad_file", self.on_bad_file, BAD_FILE_POLICIES)


GROUPS = (TreeOptions, RecipeOptions, LoadingOptions)


@dataclass(frozen=True)
class DataOptions:
    """A data config's settings, sorted and checked (``parse``)."""

    tree: TreeOptions
    recipe: RecipeOptions
    loading: LoadingOptions

    @classmethod
    def parse(cls, where: str = "data", **settings: Any) -> "DataOptions":
        """The options of flat ``settings``; a ``ConfigError`` names keys no option has
        (``where``: the config the keys came from, for that message)."""
        known = {f.name: group for group in GROUPS for f in dataclasses.fields(group)}
        unknown = sorted(set(settings) - set(known))
        if unknown:
            raise ConfigError(
                f"{where} does not take {', '.join(f'data.{k}' for k in unknown)}. Drop them "
                f"with {' '.join(f'~data.{k}' for k in unknown)}; it takes: "
                f"{', '.join(sorted(known))}."
            )
        parts = {group: {} for group in GROUPS}
        for key, value in settings.items():
            parts[known[key]][key] = value
        return cls(*(group(**parts[group]) for group in GROUPS))

    def __post_init__(self) -> None:
        if self.loading.loader == "dali":  # before any work: the package, and the options it has
            from cnnzoo.data import dali

            dali.import_dali()
            dali.check_options(self.recipe.train_options())
