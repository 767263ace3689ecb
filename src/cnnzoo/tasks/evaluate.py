"""Score a trained network the ILSVRC way (``eval.py``): top-1/top-5 over a split, one or
several views per image, the confusion pairs and per-class accuracy (``cnnzoo.tasks.restore``
finds the network and the data)."""

import csv
import json
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table
from torch import Tensor
from torch.utils.data import DataLoader
from torchmetrics.classification import MulticlassConfusionMatrix

from cnnzoo.data.transforms import CROPS
from cnnzoo.errors import ConfigError
from cnnzoo.module import ClassificationModule, topk_metrics
from cnnzoo.summary import pct, plain_console
from cnnzoo.tasks.folders import check_output_dir, release_unused_claims
from cnnzoo.tasks.restore import device, image_datamodule, load_module, run_config


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
    datamodule = image_datamodule(cfg, module.hparams.num_classes)
    datamodule.prepare_data()
    loader = datamodule.eval_loader(split, crop)
    scores = evaluate(module, loader, module.hparams.num_classes)
    names = datamodule.class_names()
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    confusion, top5_hits = scores.pop("confusion"), scores.pop("top5_hits")
    images = int(confusion.sum())
    result = {
        "model": cfg.model.name,
        "run": str(cfg.run) if cfg.get("run") else None,
        "checkpoint": str(trained.path) if trained else None,
        "weights": None  # (a checkpoint's weights replace the ones the model config names)
        if trained
        else cfg.model.get("weights") or ("torchvision" if cfg.model.get("pretrained") else None),
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
