"""Views of a trained run, written into its ``visualize/`` folder (``visualize.py``).

- ``filters``: the first convolution's kernels, each scaled to its own range, as a colour grid
  (AlexNet's Fig. 3: 96 kernels of 11x11x3 in the paper, 64 in torchvision's one-GPU AlexNet;
  ResNet's 64 of 7x7), with the checkpoint's epoch.
- ``confusion``: the val split scored as ``eval.py`` scores it, torchmetrics'
  ``MulticlassConfusionMatrix`` drawn by its own ``plot`` (above
  ``visualize.confusion_classes`` classes, the sub-matrix of the most confused ones), and every
  class's top-1 as a sorted bar chart.

The network, the data and the preprocessing come from the run's config, as for eval.py. A
picture never replaces an earlier one: ``filters.png``, then ``filters-2.png``, ...
"""

import math
from pathlib import Path

import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from cnnzoo.errors import ConfigError
from cnnzoo.tasks.evaluate import device, eval_loader, load_module, run_config

VIEWS = ("filters", "confusion")


def run_visualize(cfg: DictConfig) -> list[Path]:
    if not cfg.get("run"):
        raise ConfigError("give the run to look at: visualize.py run=outputs/train/<run>.")
    if cfg.what not in VIEWS:
        raise ConfigError(f"what={cfg.what!r}: choose one of {list(VIEWS)}.")
    cfg = run_config(cfg)
    module, checkpoint = load_module(cfg, ema=cfg.visualize.get("ema", False))
    out = Path(cfg.run).expanduser() / "visualize"
    out.mkdir(exist_ok=True)
    if cfg.what == "filters":
        epoch = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)["epoch"]
        paths = [draw_filters(module.net, cfg.model.name, epoch, out)]
    else:
        paths = draw_confusion(cfg, module, out)
    for path in paths:
        print(f"wrote {path}")
    return paths


def fresh_path(folder: Path, name: str) -> Path:
    """``folder/name``, or ``name-2``, ``name-3``, ...: the first that does not exist."""
    stem, suffix = Path(name).stem, Path(name).suffix
    path, n = folder / name, 1
    while path.exists():
        n += 1
        path = folder / f"{stem}-{n}{suffix}"
    return path


def first_conv(net: nn.Module) -> nn.Conv2d:
    conv = next((m for m in net.modules() if isinstance(m, nn.Conv2d)), None)
    if conv is None:
        raise ConfigError("the network has no 2-d convolution whose filters could be drawn.")
    return conv


def filter_grid(weight: Tensor) -> Tensor:
    """(out, in, k, k) kernels -> (3, H, W) image in [0, 1]: each kernel scaled to its own
    min..max (RGB for 3 input channels, else the channel mean as grey), one pixel apart."""
    from torchvision.utils import make_grid

    kernels = weight.detach().float().cpu()
    if kernels.shape[1] != 3:
        kernels = kernels.mean(dim=1, keepdim=True).expand(-1, 3, -1, -1)
    low = kernels.amin(dim=(1, 2, 3), keepdim=True)
    high = kernels.amax(dim=(1, 2, 3), keepdim=True)
    kernels = (kernels - low) / (high - low).clamp_min(1e-12)
    rows = math.ceil(math.sqrt(len(kernels)))
    return make_grid(kernels, nrow=rows, padding=1, pad_value=1.0)


def draw_filters(net: nn.Module, arch: str, epoch: int, out: Path) -> Path:
    from matplotlib.figure import Figure

    conv = first_conv(net)
    grid = filter_grid(conv.weight)
    count, _, kh, kw = conv.weight.shape
    figure = Figure(figsize=(6, 6.4), layout="constrained")
    ax = figure.add_subplot()
    ax.imshow(grid.permute(1, 2, 0).numpy(), interpolation="nearest")
    ax.set_axis_off()
    ax.set_title(f"{arch}: the first layer's {count} filters, {kh}x{kw}, epoch {epoch}")
    path = fresh_path(out, "filters.png")
    figure.savefig(path, dpi=120)
    return path


def confusion_matrix(cfg: DictConfig, module):
    """(torchmetrics' confusion matrix of the val split, filled; the class names), scored with
    the run's eval views as eval.py scores them."""
    from hydra.utils import instantiate
    from torchmetrics.classification import MulticlassConfusionMatrix

    datamodule = instantiate(cfg.data)
    loader = eval_loader(cfg, datamodule, datamodule.eval_crop, "val")
    target = device()
    module.to(target)
    metric = MulticlassConfusionMatrix(cfg.data.num_classes).to(target)
    with torch.no_grad():
        for views, labels in loader:
            views, labels = views.to(target), labels.to(target)
            scores, _ = module.score(views if views.shape[1] > 1 else views[:, 0], labels)
            metric.update(scores.argmax(dim=1), labels)
    return metric, datamodule.class_names()


def most_confused_classes(confusion: Tensor, n: int) -> Tensor:
    """The ``n`` classes most involved in errors (as the true or the predicted class)."""
    errors = confusion.clone()
    errors.fill_diagonal_(0)
    return (errors.sum(dim=0) + errors.sum(dim=1)).topk(min(n, len(errors))).indices.sort().values


def draw_confusion(cfg: DictConfig, module, out: Path) -> list[Path]:
    from matplotlib.figure import Figure

    metric, names = confusion_matrix(cfg, module)
    confusion = metric.compute().cpu()
    limit = int(cfg.visualize.confusion_classes)
    shown = (
        torch.arange(len(names)) if len(names) <= limit else most_confused_classes(confusion, limit)
    )
    sub = confusion[shown][:, shown]
    figure, ax = metric.plot(val=sub, labels=[names[i][:18] for i in shown.tolist()])
    title = "val confusion" + (
        "" if len(shown) == len(names) else f": the {len(shown)} most confused classes"
    )
    ax.set_title(f"{cfg.model.name} {title} ({int(confusion.sum())} images)")
    matrix_path = fresh_path(out, "confusion.png")
    figure.savefig(matrix_path, dpi=110, bbox_inches="tight")

    per_class = confusion.diagonal() / confusion.sum(dim=1).clamp_min(1)
    order = per_class.argsort(descending=True)
    bars = Figure(figsize=(8, max(3, 0.18 * len(order))), layout="constrained")
    ax = bars.add_subplot()
    ax.barh(range(len(order)), 100 * per_class[order].numpy())
    ax.set_yticks(range(len(order)), [names[i][:24] for i in order.tolist()], fontsize=6)
    ax.invert_yaxis()
    ax.set_xlabel("top-1 accuracy (%)")
    ax.set_title(f"{cfg.model.name}: val top-1 by class, best first")
    bars_path = fresh_path(out, "per_class_top1.png")
    bars.savefig(bars_path, dpi=110)
    return [matrix_path, bars_path]
