"""Score a trained network the ILSVRC way (``eval.py``) and name what is in photos
(``predict.py``).

A run folder is enough: its ``.hydra/config.yaml`` says the architecture and the data, its
``checkpoints/`` hold the weights. Without a run, ``ckpt_path=`` (a cnnzoo checkpoint) or
``model.weights=`` (a torchvision-format state dict) with ``model=``/``data=`` choose them.
"""

import csv
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from rich.console import Console
from rich.table import Table
from torch import Tensor
from torch.utils.data import DataLoader
from torchmetrics.classification import MulticlassConfusionMatrix

from cnnzoo.build import (
    build_datamodule,
    build_module,
    classes_of_checkpoint,
    starts_trained,
    upgrade_run_config,
)
from cnnzoo.checkpointing import datamodule_state
from cnnzoo.data.images import BadImageError, load_image
from cnnzoo.data.options import DEFAULT_DECODER
from cnnzoo.data.protocol import RunData
from cnnzoo.data.transforms import CROPS
from cnnzoo.errors import ConfigError, is_whole
from cnnzoo.models.weights import net_state_dict, read_torch_file
from cnnzoo.module import ClassificationModule, topk_metrics, view_probabilities
from cnnzoo.summary import pct, plain_console
from cnnzoo.tasks.folders import (
    check_output_dir,
    refuse_a_checkpoint_as_run,
    release_unused_claims,
    run_checkpoint,
    where_it_ran,
)
from cnnzoo.tasks.launch import job_overrides, parsed_override

log = logging.getLogger(__name__)
CKPTS = ("best", "last")  # ckpt=best|last: the run's checkpoints by name
RUN_SECTIONS = ("model", "data", "optim", "scheduler", "module", "trainer")  # what a run decided


def run_config(cfg: DictConfig) -> DictConfig:
    """``cfg`` with the model and data of ``cfg.run`` (a training run folder), when given; the
    command line's ``model.*``/``data.*`` values still apply (e.g. ``data.root=``)."""
    if not cfg.get("run"):
        return cfg
    run = Path(cfg.run).expanduser()
    saved = run / ".hydra" / "config.yaml"
    refuse_a_checkpoint_as_run("run", run, f" ckpt={run.stem if run.stem in CKPTS else run}")
    if not saved.is_file():
        raise ConfigError(
            f"run={run}: not a cnnzoo run folder (no {saved}). Give a folder under "
            "outputs/train/, or use ckpt_path= with model= and data=."
        )
    trained = upgrade_run_config(OmegaConf.load(saved))  # (also a cnnzoo 0.1 run's)
    merged = cfg.copy()
    with open_dict(merged):
        for section in RUN_SECTIONS:
            if section in trained:
                merged[section] = trained[section]
        merged.seed = trained.get("seed", cfg.seed)
        cache_dir = OmegaConf.select(trained, "paths.cache_dir", throw_on_resolution_failure=False)
        if cache_dir is not None and "paths" in merged:  # where its generated data lives
            merged.paths.cache_dir = cache_dir
        if "loader" in merged.data:  # eval and predict read with the worker pipeline
            merged.data.loader = "workers"
        root = OmegaConf.select(merged, "data.root", throw_on_resolution_failure=False)
        if isinstance(root, str) and (found := where_it_ran(run, root)) is not None:
            merged.data.root = found  # (data.root=photos, and this command runs elsewhere)
    for override in job_overrides() or []:
        key, value = parsed_override(override)
        if key.split(".")[0] in ("model", "data") and "." in key:
            OmegaConf.update(merged, key, value, force_add=True)
    return merged


def checkpoint_path(cfg: DictConfig) -> Path | None:
    """The checkpoint to score: ``ckpt_path``, else the run's ``ckpt`` (best or last), else
    None (the model's own weights: ``model.weights`` / ``model.pretrained``)."""
    if cfg.get("ckpt_path"):
        path = Path(cfg.ckpt_path).expanduser()
        if not path.is_file():
            raise ConfigError(f"ckpt_path={path}: no checkpoint at {path}.")
        return path
    if not cfg.get("run"):
        return None
    choice = str(cfg.get("ckpt", "best"))
    run = Path(cfg.run).expanduser()
    path = run_checkpoint(run, choice) if choice in CKPTS else Path(choice).expanduser()
    if not path.is_file():
        folder = run_checkpoint(run).parent
        held = sorted(p.name for p in folder.glob("*.ckpt"))
        raise ConfigError(
            f"ckpt={choice}: no checkpoint at {path} ({folder} holds "
            f"{', '.join(held) or 'none: a run that stopped before its first epoch ended has none'}"
            "). Choose ckpt=best, ckpt=last or ckpt=/path/to/file.ckpt, or another run."
        )
    return path


@dataclass(frozen=True)
class Trained:
    """What ``load_module`` read from the checkpoint besides the weights."""

    path: Path
    epoch: int
    class_names: list[str] | None  # by class index (checkpoints of cnnzoo >= 0.2.1)


def load_module(cfg: DictConfig, ema: bool = False) -> tuple[ClassificationModule, Trained | None]:
    """The network in eval mode with the chosen weights, and what its checkpoint says (None
    without one); a checkpoint of another architecture or class count is refused naming both."""
    path = checkpoint_path(cfg)
    checkpoint = read_torch_file(path) if path is not None else None
    if checkpoint is not None:
        if "state_dict" not in checkpoint:
            raise ConfigError(
                f"{path} is not a training checkpoint; for a torchvision-format state dict use "
                "model.weights=... instead of ckpt_path=."
            )
        with open_dict(cfg):  # the checkpoint's weights replace any the model config names
            cfg.model.weights = None
            if "pretrained" in cfg.model:
                cfg.model.pretrained = False
        classes_of_checkpoint(cfg, checkpoint)
    module = build_module(cfg)
    if checkpoint is not None:
        module.on_load_checkpoint(checkpoint)
        module.net.load_state_dict(net_state_dict(checkpoint, ema=ema, source=str(path)))
        names = datamodule_state(checkpoint).get("class_names")
        trained = Trained(path, int(checkpoint.get("epoch", 0)), list(names) if names else None)
        return module.eval(), trained
    if ema:
        raise ConfigError("eval.ema=true needs a checkpoint (run= or ckpt_path=).")
    if not starts_trained(cfg.model):
        raise ConfigError(  # (a forgotten run= scored a random network, and recorded it)
            f"no trained weights named, so {cfg.model.name} would have random ones: give "
            "run=outputs/train/<run>, ckpt_path=FILE.ckpt with model= and data=, "
            "model.weights=FILE.pth, or model.pretrained=true."
        )
    return module.eval(), None


def image_datamodule(cfg: DictConfig) -> RunData:
    """The run's DataModule, for scoring or showing images: a ``data=synthetic`` run (random
    noise with random labels, for measuring speed) has neither images nor class names."""
    datamodule: RunData = build_datamodule(cfg)
    if not datamodule.has_images:
        datamodule.eval_loader("val")  # (refuses, saying why)
    return datamodule


def class_names(datamodule, trained: Trained | None) -> list[str]:
    """The names of the classes the network learned: those its checkpoint recorded (so a run
    folder copied away from its data still names its predictions), else the DataModule's
    (checkpoints of cnnzoo before 0.2.1, or no checkpoint)."""
    if trained is not None and trained.class_names:
        return trained.class_names
    return datamodule.class_names()


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@torch.no_grad()
def predict_probabilities(module: ClassificationModule, views: Tensor) -> Tensor:
    """Class probabilities of (N, V, 3, H, W) images, averaged over the V views."""
    return view_probabilities(module, views)


@torch.no_grad()
def evaluate(module: ClassificationModule, loader: DataLoader, num_classes: int) -> dict[str, Any]:
    """Top-1/top-5 (torchmetrics, as training computes them), the confusion matrix and per-class
    top-5 hits over every image of ``loader`` (batches of (N, V, 3, H, W) views). Each batch is
    scored by ``ClassificationModule.score``, as validation, test and the EMA scores are (one
    view: the logits; several: the averaged probabilities). eval.py and visualize.py use this."""
    target = device()
    module.to(target)
    metrics = topk_metrics(num_classes).to(target)
    confusion = MulticlassConfusionMatrix(num_classes).to(target)
    top5_hits = torch.zeros(num_classes, dtype=torch.long, device=target)
    for views, labels in loader:
        views, labels = views.to(target), labels.to(target)
        scores, _ = module.score(views if views.shape[1] > 1 else views[:, 0], labels)
        metrics.update(scores, labels)
        confusion.update(scores.argmax(dim=1), labels)
        k = min(5, num_classes)
        hit = (scores.topk(k, dim=1).indices == labels[:, None]).any(dim=1)
        top5_hits.index_add_(0, labels, hit.long())
    return {
        **{name: float(value) for name, value in metrics.compute().items()},
        "confusion": confusion.compute().cpu(),
        "top5_hits": top5_hits.cpu(),
    }


def run_eval(cfg: DictConfig) -> dict[str, Any]:
    check_output_dir(cfg.paths.output_dir)
    release_unused_claims(cfg.paths.output_dir)
    cfg = run_config(cfg)
    crop, split, ema = cfg.eval.crop, cfg.eval.split, cfg.eval.ema
    if crop not in CROPS:
        raise ConfigError(f"eval.crop={crop!r}: choose one of {sorted(CROPS)}.")
    module, trained = load_module(cfg, ema=ema)
    datamodule = image_datamodule(cfg)
    datamodule.prepare_data()
    loader = datamodule.eval_loader(split, crop)
    scores = evaluate(module, loader, cfg.data.num_classes)
    names = datamodule.class_names()
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    confusion, top5_hits = scores.pop("confusion"), scores.pop("top5_hits")
    images = int(confusion.sum())
    result = {
        "model": cfg.model.name,
        "run": str(cfg.run) if cfg.get("run") else None,
        "checkpoint": str(trained.path) if trained else None,
        "weights": cfg.model.get("weights")
        or ("torchvision" if cfg.model.get("pretrained") else None),
        "ema": ema,
        "split": split,
        "crop": crop,
        "views": CROPS[crop],
        "images": images,
        "acc_top1": scores["acc_top1"],
        "err_top1": 1.0 - scores["acc_top1"],
        "acc_top5": scores.get("acc_top5"),
        "err_top5": None if "acc_top5" not in scores else 1.0 - scores["acc_top5"],
        "most_confused": most_confused(confusion, names),
        "per_class_csv": str(out / "per_class.csv"),
    }
    write_per_class(out / "per_class.csv", confusion, top5_hits, names, datamodule)
    (out / "eval.json").write_text(json.dumps(result, indent=2) + "\n")
    print_eval(result, out)
    return result


def most_confused(confusion: Tensor, names: list[str], n: int = 10) -> list[dict[str, Any]]:
    off = confusion.clone()
    off.fill_diagonal_(0)
    counts, flat = off.flatten().topk(min(n, off.numel()))
    k = confusion.shape[0]
    return [
        {"true": names[i // k], "predicted": names[i % k], "images": int(c)}
        for c, i in zip(counts.tolist(), flat.tolist(), strict=True)
        if c > 0
    ]


def write_per_class(path: Path, confusion: Tensor, top5_hits: Tensor, names, datamodule) -> None:
    folders = datamodule.class_ids()
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["class", "wnid", "name", "images", "acc_top1", "acc_top5"])
        for c, name in enumerate(names):
            total = int(confusion[c].sum())
            acc1 = int(confusion[c, c]) / total if total else None
            acc5 = int(top5_hits[c]) / total if total else None
            writer.writerow([c, folders[c], name, total, acc1, acc5])


def print_eval(result: dict[str, Any], out: Path, console: Console | None = None) -> None:
    console = console or plain_console()
    table = Table(title=f"cnnzoo eval: {result['model']}", title_justify="left")
    for column in ("split", "crop", "images", "top-1 acc", "top-1 err", "top-5 acc", "top-5 err"):
        table.add_column(column, justify="right")
    table.add_row(
        result["split"],
        f"{result['crop']} ({result['views']} views)",
        str(result["images"]),
        pct(result["acc_top1"]),
        pct(result["err_top1"]),
        pct(result["acc_top5"]),
        pct(result["err_top5"]),
    )
    console.print(table)
    for pair in result["most_confused"][:5]:
        console.print(f"  {pair['true']} -> {pair['predicted']}: {pair['images']} images")
    console.print(f"eval.json and per_class.csv in {out}")


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
    datamodule = image_datamodule(cfg)
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
