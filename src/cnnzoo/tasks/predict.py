"""Name what is in photos (``predict.py``): the top-k classes of a trained network, with
their probabilities, for image files and folders."""

import glob
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import Tensor

from cnnzoo.data.images import BadImageError, load_image
from cnnzoo.data.options import DEFAULT_DECODER
from cnnzoo.errors import ConfigError, UserError, is_whole
from cnnzoo.module import ClassificationModule, view_probabilities
from cnnzoo.summary import plain_console
from cnnzoo.tasks.restore import class_names, device, image_datamodule, load_module, run_config


@torch.no_grad()
def predict_probabilities(module: ClassificationModule, views: Tensor) -> Tensor:
    """Class probabilities of (N, V, 3, H, W) images, averaged over the V views."""
    return view_probabilities(module, views)


def image_files(given_images) -> list[Path]:
    """The files given (``images=``: a list, or one path), the files under the folders given
    (sorted), and what a pattern the shell left alone matches (``'images=photos/*.jpg'``,
    quoted; ``**`` for any depth); a path that does not exist is an error naming it."""
    if isinstance(given_images, str):  # images=cat.jpg (not a list: one path, not its letters)
        given_images = [given_images]
    paths = [str(p) for p in given_images or []]
    files: list[Path] = []
    for given in paths:
        path = Path(given).expanduser()
        if not path.exists() and any(c in given for c in "*?["):
            if not (matched := sorted(glob.glob(str(path), recursive=True))):
                raise ConfigError(f"images: {given} matches no file or folder.")
            files += image_files(matched)
        elif path.is_dir():
            files += sorted(
                p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")
            )
        elif path.is_file():
            files.append(path)
        elif "://" in given:
            raise ConfigError(
                f"images: {given} is a web address; images are read from files here (nothing "
                f"is downloaded at run time). Download it first (curl -LO '{given}') and give "
                "the file."
            )
        else:
            raise ConfigError(f"images: {given} does not exist (give image files or folders).")
    if not files:
        raise ConfigError(f"images={paths}: no image files given (images=[a.jpg,folder/]).")
    return files


def readable_images(files: list[Path], decoder: str) -> Iterator[tuple[Path, Any]]:
    """Each of ``files`` decoded (as the run's val images were: ``data.decoder``); a file that
    is not a readable image is named on stderr and left out."""
    errors = plain_console(stderr=True)
    for file in files:
        try:
            yield file, load_image(str(file), decoder)
        except BadImageError as e:
            errors.print(f"{file}: skipped, not a readable image ({e.reason})")


def run_predict(cfg: DictConfig) -> list[dict[str, Any]]:
    """Top-k class names with probabilities for each image; files that are not images are
    reported on stderr and skipped. Where an image's class is known (``label=``, or its
    folder), where the true class ranks and the top-1/top-5 error, per image and in total."""
    check_predict_options(cfg.predict)
    cfg = run_config(cfg)
    files = image_files(cfg.images)
    module, trained = load_module(cfg, ema=cfg.predict.get("ema", False))
    module.to(device())
    datamodule = image_datamodule(cfg, module.hparams.num_classes)
    names = class_names(datamodule, trained)
    transform = datamodule.view_transform(cfg.predict.crop)
    k = min(cfg.predict.topk, len(names))
    known = KnownClasses(names, lambda: _class_ids(datamodule), cfg.get("label"))
    console = plain_console()
    predictions = []
    for file, image in readable_images(files, cfg.data.get("decoder", DEFAULT_DECODER)):
        views = transform(image)
        probs = predict_probabilities(module, views[None].to(device()))[0]
        order = probs.argsort(descending=True, stable=True)  # (ties: the lower class first)
        prediction: dict[str, Any] = {
            "image": str(file),
            "top": [
                {"class": int(i), "name": names[i], "probability": round(float(probs[i]), 4)}
                for i in order[:k].tolist()
            ],
        }
        if (truth := known.of(file)) is not None:
            prediction["true"] = ranked(order, probs, truth, names)
        predictions.append(prediction)
        if cfg.predict.format == "text":
            shown = " | ".join(f"{t['name']} {t['probability']:.2f}" for t in prediction["top"])
            console.print(f"{file}: {shown}", highlight=False)
            if "true" in prediction:
                console.print(f"    {_verdict(prediction['true'])}", highlight=False)
    if cfg.predict.format == "json":
        print(json.dumps(predictions, indent=2))
    elif totals := top_k_totals(predictions):
        console.print(totals, highlight=False)
    return predictions


class KnownClasses:
    """The class an image is known to be: ``label=`` (a class name, folder name or index) for
    every image given, else the name of the folder it is in when that is a class's folder name
    (``val/n01440764/x.JPEG``) or name (``photos/bees/x.jpg``)."""

    def __init__(self, names: list[str], ids: Callable[[], list[str] | None], label: Any = None):
        self.by_name = {n: i for i, n in enumerate(names)}
        self.ids = ids  # the class folders' names, read (from the data) only when a name misses
        self.by_id: dict[str, int] | None = None
        self.label = None if label is None else self._given(str(label), len(names))

    def _lookup(self, name: str) -> int | None:
        if name in self.by_name:
            return self.by_name[name]
        if self.by_id is None:
            self.by_id = {c: i for i, c in enumerate(self.ids() or [])}
        return self.by_id.get(name)

    def _given(self, label: str, count: int) -> int:
        if (found := self._lookup(label)) is not None:
            return found
        if label.isdigit() and int(label) < count:
            return int(label)
        examples = ", ".join([*list(self.by_id or {})[:3], *list(self.by_name)[:2]])
        raise ConfigError(
            f"label={label}: not a class of this run; give a class name or folder name (e.g. "
            f"{examples}) or an index below {count}."
        )

    def of(self, file: Path) -> int | None:
        return self.label if self.label is not None else self._lookup(file.parent.name)


def ranked(order: Tensor, probs: Tensor, truth: int, names: list[str]) -> dict[str, Any]:
    """Where the true class sits in the ranking ``order`` of ``probs`` (1: the top class)."""
    rank = int((order == truth).nonzero()[0, 0]) + 1
    return {"class": truth, "name": names[truth], "rank": rank,
            "probability": round(float(probs[truth]), 4),
            "top1_error": rank > 1, "top5_error": rank > 5}  # fmt: skip


def _verdict(true: dict[str, Any]) -> str:
    errors = ", ".join(f"top-{k} {'error' if true[f'top{k}_error'] else 'correct'}" for k in (1, 5))
    return f"true label: {true['name']}, rank {true['rank']} ({true['probability']:.2f}): {errors}"


def top_k_totals(predictions: list[dict[str, Any]]) -> str | None:
    """The top-1 and top-5 error over the images whose class is known, as ILSVRC counts it."""
    known = [p["true"] for p in predictions if "true" in p]
    if not known:
        return None
    n = len(known)
    top1, top5 = (sum(t[f"top{k}_error"] for t in known) for k in (1, 5))
    return (f"{n} images of known class: top-1 error {top1}/{n} ({100 * top1 / n:.1f}%), "
            f"top-5 error {top5}/{n} ({100 * top5 / n:.1f}%)")  # fmt: skip


def _class_ids(datamodule) -> list[str] | None:
    """The class folders' names, where the run's data is at hand (a run folder copied away
    from its data has the names its checkpoint recorded, not the folders)."""
    try:
        return datamodule.class_ids()
    except UserError:
        return None


def check_predict_options(options: DictConfig) -> None:
    """``predict.format`` and ``predict.topk``, before any image is read (a wrong format was
    named after every image had been scored; topk=-1 failed in torch, 0 printed nothing)."""
    if options.format not in ("text", "json"):
        raise ConfigError(f"predict.format={options.format!r}: choose text or json.")
    topk = options.topk
    if not is_whole(topk):
        raise ConfigError(f"predict.topk={topk!r}: give the number of classes shown, 1 or more.")
