"""Views of a trained run, written into its ``visualize/`` folder (``visualize.py``).

- ``filters``: the first convolution's kernels, each scaled to its own range, as a colour grid
  (AlexNet's Fig. 3: 96 kernels of 11x11x3 in the paper, 64 in torchvision's one-GPU AlexNet;
  ResNet's 64 of 7x7), with the checkpoint's epoch.
- ``neighbours images=[...]``: for each query image, the ``visualize.k`` training images
  nearest to it in the penultimate layer's feature space (Euclidean), as one grid (AlexNet's
  Fig. 4). The training set's features are computed once per checkpoint and kept in
  ``visualize/.neighbours-<checkpoint>-<hash>.pt``, so later queries take seconds.
- ``gradcam images=[...]``: Grad-CAM (Selvaraju et al. 2017, with the maintained ``grad-cam``
  package) of the top-1 class, or ``visualize.class_index``, over each image, at the family's
  last convolutional block with a map to show (``gradcam.py``; ``visualize.layer=`` another).
- ``confusion``: the val split scored as ``eval.py`` scores it, torchmetrics'
  ``MulticlassConfusionMatrix`` drawn by its own ``plot`` (above
  ``visualize.confusion_classes`` classes, the sub-matrix of the most confused ones), and every
  class's top-1 as a sorted bar chart.

The network, the data and the preprocessing come from the run's config, as for eval.py. A
picture never replaces an earlier one: ``filters.png``, then ``filters-2.png``, ... When the run
has a W&B run, the pictures are logged to it too (``visualize/<name>``, the same run id).
"""

import logging
import math
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from cnnzoo.data.options import DEFAULT_DECODER
from cnnzoo.errors import ConfigError, is_whole
from cnnzoo.files import replaced_atomically
from cnnzoo.tasks.evaluate import evaluate
from cnnzoo.tasks.gradcam import gradcam_layer, gradcam_maps
from cnnzoo.tasks.restore import class_names, device, image_datamodule, load_module, run_config

log = logging.getLogger(__name__)

VIEWS = ("filters", "confusion", "neighbours", "gradcam")
NO_TREE = "what=neighbours shows training images from a folder tree; {data} has none to show."


def run_visualize(cfg: DictConfig) -> list[Path]:
    if not cfg.get("run"):
        raise ConfigError("give the run to look at: visualize.py run=outputs/train/<run>.")
    if cfg.what not in VIEWS:
        raise ConfigError(f"what={cfg.what!r}: choose one of {list(VIEWS)}.")
    check_counts(cfg.visualize)
    cfg = run_config(cfg)
    module, trained = load_module(cfg, ema=cfg.visualize.get("ema", False))
    out = Path(cfg.run).expanduser() / "visualize"
    if cfg.what == "filters":
        out.mkdir(exist_ok=True)
        paths = [draw_filters(module.net, cfg.model.name, trained.epoch, out)]
    else:
        datamodule = image_datamodule(
            cfg, module.hparams.num_classes
        )  # the run's data: its sizes, views and class names
        out.mkdir(exist_ok=True)
        if cfg.what == "confusion":
            paths = draw_confusion(cfg, module, datamodule, out)
        elif cfg.what == "neighbours":
            paths = draw_neighbours(cfg, module, datamodule, trained.path, out)
        else:
            names = class_names(datamodule, trained)
            paths = draw_gradcam(cfg, module, names, datamodule, out)
    for path in paths:
        print(f"wrote {path}")
    log_to_wandb(Path(cfg.run).expanduser(), paths, cfg)
    return paths


MAX_NEIGHBOURS = 20  # pictures beside each query: a row of 21 is 3,700 px wide
NEIGHBOUR_ROWS = 8  # query images per neighbours picture
GRADCAM_COLUMNS = 4  # a Grad-CAM picture holds up to 4 x 4 images


def check_counts(options: DictConfig) -> None:
    """``visualize.k`` and ``visualize.confusion_classes`` are whole numbers in range, before
    anything is read (k=5000 drew a 1000-picture row for minutes; -3 failed in torch)."""
    for key, low, high, what in [
        ("k", 1, MAX_NEIGHBOURS, "the training images shown beside each query"),
        ("confusion_classes", 2, None, "the classes of the confusion matrix drawn"),
    ]:
        value = options.get(key)
        if not is_whole(value, low, high):
            span = f"{low} to {high}" if high is not None else f"{low} or more"
            raise ConfigError(f"visualize.{key}={value!r}: give {span} ({what}).")


def log_to_wandb(run: Path, paths: list[Path], cfg: DictConfig) -> None:
    """The pictures, logged to the run's own W&B run (same id: online with credentials, else
    a new offline chunk in the run folder, for ``wandb sync``), when the run has one."""
    from cnnzoo.tracking import existing_run_id, finish_wandb, wandb_logger

    if existing_run_id(str(run)) is None:
        return
    project = OmegaConf.select(cfg, "logger.wandb.project", default=None) or "cnnzoo"
    logger = wandb_logger(save_dir=str(run), project=project)
    try:
        for path in paths:
            logger.log_image(f"visualize/{path.stem}", [str(path)])
    finally:
        finish_wandb()


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


def confusion_matrix(module, datamodule) -> tuple[Tensor, list[str]]:
    """(the confusion matrix of the val split, the class names), scored with the run's eval
    views by eval.py's loop (``evaluate``)."""
    datamodule.prepare_data()
    loader = datamodule.eval_loader("val", datamodule.eval_crop)
    names = datamodule.class_names()
    return evaluate(module, loader, len(names))["confusion"], names


def most_confused_classes(confusion: Tensor, n: int) -> Tensor:
    """The ``n`` classes most involved in errors (as the true or the predicted class)."""
    errors = confusion.clone()
    errors.fill_diagonal_(0)
    return (errors.sum(dim=0) + errors.sum(dim=1)).topk(min(n, len(errors))).indices.sort().values


def draw_confusion(cfg: DictConfig, module, datamodule, out: Path) -> list[Path]:
    from matplotlib.figure import Figure
    from torchmetrics.classification import MulticlassConfusionMatrix

    confusion, names = confusion_matrix(module, datamodule)
    limit = int(cfg.visualize.confusion_classes)
    shown = (
        torch.arange(len(names)) if len(names) <= limit else most_confused_classes(confusion, limit)
    )
    sub = confusion[shown][:, shown]
    labels = [names[i][:18] for i in shown.tolist()]
    figure, ax = MulticlassConfusionMatrix(len(names)).plot(val=sub, labels=labels)
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


def penultimate_features(module, images: Tensor) -> Tensor:
    """The input of the network's last linear layer (the classifier) for ``images``."""
    last = [m for m in module.net.modules() if isinstance(m, nn.Linear)][-1]
    seen: list[Tensor] = []
    hook = last.register_forward_hook(lambda m, inputs, output: seen.append(inputs[0]))
    try:
        with torch.no_grad():
            module(images)
    finally:
        hook.remove()
    return seen[-1].flatten(1).float()


def train_index(cfg: DictConfig, module, datamodule, checkpoint: Path, out: Path):
    """(features (N, D) of every training image, their paths): computed once per checkpoint,
    then read from the cache file named by the checkpoint and its size and time."""
    import hashlib

    stat = checkpoint.stat()
    key = hashlib.sha1(f"{checkpoint.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    cache = out / f".neighbours-{checkpoint.stem}-{key.hexdigest()[:12]}.pt"
    if cache.is_file():
        try:
            saved = torch.load(cache, weights_only=True)
            return saved["features"].float() * saved["scale"], saved["paths"]
        except Exception as e:  # damaged (a disk that filled up): computed again
            log.warning("the feature cache %s is unreadable (%s); computing it again", cache, e)
    datamodule.prepare_data()
    index = datamodule.train_files()
    if index is None:  # CIFAR's arrays, shards: no files to show
        raise ConfigError(NO_TREE.format(data=cfg.data._target_))
    loader = datamodule.eval_loader("train")  # centre crops: (N, 1, 3, H, W)
    target = device()
    module.to(target)
    features = [penultimate_features(module, views[:, 0].to(target)).cpu() for views, _ in loader]
    paths = [index.path(i) for i in range(len(index))]
    features = torch.cat(features)
    scale = features.abs().max().clamp_min(1e-12)  # float16 (half the disk) without overflow
    with replaced_atomically(cache) as tmp:  # (two queries at once: a file each, then renamed)
        torch.save({"features": (features / scale).half(), "scale": scale, "paths": paths}, tmp)
    return features, paths


def nearest(query: Tensor, features: Tensor, k: int) -> Tensor:
    """Indices of the ``k`` rows of ``features`` nearest to each row of ``query``."""
    return torch.cdist(query, features).topk(min(k, len(features)), largest=False).indices


def pages(count: int, size: int) -> list[slice]:
    """The query images drawn per picture, ``size`` at a time: a figure (and a Grad-CAM pass)
    holds one page of images, never the whole folder."""
    return [slice(start, min(start + size, count)) for start in range(0, count, size)]


def draw_neighbours(cfg: DictConfig, module, datamodule, checkpoint: Path, out: Path) -> list[Path]:
    from matplotlib.figure import Figure

    from cnnzoo.data.images import load_image

    queries, pictures = read_queries(cfg, datamodule)
    features, paths = train_index(cfg, module, datamodule, checkpoint, out)
    shown = datamodule.view_transform("center", normalize=False)
    decoder = cfg.data.get("decoder", DEFAULT_DECODER)
    name_of = dict(zip(datamodule.class_ids(), datamodule.class_names(), strict=True))

    def class_of(path: str) -> str:  # (the readable name of the class folder it is in)
        return next((name_of[p] for p in reversed(Path(path).parts[:-1]) if p in name_of), "?")

    module.to(device())
    drawn = []
    for page in pages(len(pictures), NEIGHBOUR_ROWS):
        found = nearest(penultimate_features(module, queries[page].to(device())).cpu(),
                        features, int(cfg.visualize.k))  # fmt: skip
        rows, k = found.shape
        figure = Figure(figsize=(1.6 * (k + 1), 1.8 * rows), layout="constrained")
        for row, ((file, picture), hits) in enumerate(
            zip(pictures[page], found.tolist(), strict=True)
        ):
            cells = [(picture, Path(file).name)]
            cells += [(shown(load_image(paths[i], decoder))[0], class_of(paths[i])) for i in hits]
            for col, (image, title) in enumerate(cells):
                ax = figure.add_subplot(rows, k + 1, row * (k + 1) + col + 1)
                ax.imshow(image.permute(1, 2, 0).numpy())
                ax.set_title(title[:16], fontsize=6, color="blue" if col == 0 else "black")
                ax.set_axis_off()
        figure.suptitle(
            f"{cfg.model.name}: query (left) and its {k} nearest training images", fontsize=8
        )
        drawn.append(fresh_path(out, "neighbours.png"))
        figure.savefig(drawn[-1], dpi=110)
    return drawn


def draw_gradcam(cfg: DictConfig, module, names: list[str], datamodule, out: Path) -> list[Path]:
    from matplotlib.figure import Figure
    from pytorch_grad_cam.utils.image import show_cam_on_image

    chosen = cfg.visualize.get("class_index")
    if chosen is not None and not 0 <= int(chosen) < len(names):
        raise ConfigError(f"visualize.class_index={chosen}: give 0..{len(names) - 1}.")
    images, pictures = read_queries(cfg, datamodule)
    name, layer = gradcam_layer(module.net, cfg.model.name, cfg.visualize.get("layer"),
                                cfg.model.input_size)  # fmt: skip
    module.to("cpu").eval()
    drawn = []
    for page in pages(len(pictures), GRADCAM_COLUMNS * GRADCAM_COLUMNS):
        with torch.no_grad():
            probabilities = module(images[page]).float().softmax(dim=1)
        classes = [int(chosen) if chosen is not None else int(p.argmax()) for p in probabilities]
        maps = gradcam_maps(module, images[page], layer, classes)
        columns = min(GRADCAM_COLUMNS, len(classes))
        rows = math.ceil(len(classes) / columns)
        figure = Figure(figsize=(2.6 * columns, 2.9 * rows), layout="constrained")
        for i, ((file, picture), heat, c) in enumerate(
            zip(pictures[page], maps, classes, strict=True)
        ):
            overlay = show_cam_on_image(picture.permute(1, 2, 0).numpy() / 255, heat.numpy(),
                                        use_rgb=True)  # fmt: skip
            ax = figure.add_subplot(rows, columns, i + 1)
            ax.imshow(overlay)
            ax.set_axis_off()
            ax.set_title(
                f"{Path(file).name[:18]}\n{names[c][:20]} {probabilities[i, c]:.2f}", fontsize=7
            )
        figure.suptitle(f"{cfg.model.name}: Grad-CAM at {name}", fontsize=8)
        drawn.append(fresh_path(out, "gradcam.png"))
        figure.savefig(drawn[-1], dpi=110)
    return drawn


def read_queries(cfg: DictConfig, datamodule) -> tuple[Tensor, list[tuple[Path, Tensor]]]:
    """The ``images`` as the network takes them (normalised centre crops) and as they are shown
    (uint8 crops); files that are not images are named and left out."""
    from cnnzoo.tasks.predict import image_files, readable_images

    transform = datamodule.view_transform("center")
    shown = datamodule.view_transform("center", normalize=False)
    inputs, pictures = [], []
    files = image_files(cfg.get("images"))
    for file, image in readable_images(files, cfg.data.get("decoder", DEFAULT_DECODER)):
        inputs.append(transform(image)[0])
        pictures.append((file, shown(image)[0]))
    if not inputs:
        raise ConfigError(f"images={[str(f) for f in files]}: none is a readable image.")
    return torch.stack(inputs), pictures
