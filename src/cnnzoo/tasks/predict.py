"""Name what is in photos (``predict.py``): the top-k classes of a trained network, with
their probabilities, for image files and folders."""

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import Tensor

from cnnzoo.data.images import BadImageError, load_image
from cnnzoo.data.options import DEFAULT_DECODER
from cnnzoo.errors import ConfigError, is_whole
from cnnzoo.module import ClassificationModule, view_probabilities
from cnnzoo.summary import plain_console
from cnnzoo.tasks.restore import class_names, device, image_datamodule, load_module, run_config


@torch.no_grad()
def predict_probabilities(module: ClassificationModule, views: Tensor) -> Tensor:
    """Class probabilities of (N, V, 3, H, W) images, averaged over the V views."""
    return view_probabilities(module, views)


def image_files(given_images) -> list[Path]:
    """The files given (``images=``: a list, or one path), and the files under the folders
    given (sorted); a path that does not exist is an error naming it."""
    if isinstance(given_images, str):  # images=cat.jpg (not a list: one path, not its letters)
        given_images = [given_images]
    paths = [str(p) for p in given_images or []]
    files: list[Path] = []
    for given in paths:
        path = Path(given).expanduser()
        if path.is_dir():
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
    reported on stderr and skipped."""
    check_predict_options(cfg.predict)
    cfg = run_config(cfg)
    files = image_files(cfg.images)
    module, trained = load_module(cfg, ema=cfg.predict.get("ema", False))
    module.to(device())
    datamodule = image_datamodule(cfg, module.hparams.num_classes)
    names = class_names(datamodule, trained)
    transform = datamodule.view_transform(cfg.predict.crop)
    k = min(cfg.predict.topk, len(names))
    console = plain_console()
    predictions = []
    for file, image in readable_images(files, cfg.data.get("decoder", DEFAULT_DECODER)):
        views = transform(image)
        probs = predict_probabilities(module, views[None].to(device()))[0]
        top = probs.topk(k)
        predictions.append(
            {
                "image": str(file),
                "top": [
                    {"class": int(i), "name": names[i], "probability": round(float(p), 4)}
                    for p, i in zip(top.values.tolist(), top.indices.tolist(), strict=True)
                ],
            }
        )
        if cfg.predict.format == "text":
            shown = " | ".join(
                f"{t['name']} {t['probability']:.2f}" for t in predictions[-1]["top"]
            )
            console.print(f"{file}: {shown}", highlight=False)
    if cfg.predict.format == "json":
        print(json.dumps(predictions, indent=2))
    return predictions


def check_predict_options(options: DictConfig) -> None:
    """``predict.format`` and ``predict.topk``, before any image is read (a wrong format was
    named after every image had been scored; topk=-1 failed in torch, 0 printed nothing)."""
    if options.format not in ("text", "json"):
        raise ConfigError(f"predict.format={options.format!r}: choose text or json.")
    topk = options.topk
    if not is_whole(topk):
        raise ConfigError(f"predict.topk={topk!r}: give the number of classes shown, 1 or more.")
