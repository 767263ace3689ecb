"""A grid of validation images with their top-5 predicted classes, a few times per run."""

import logging
import math
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger, WandbLogger

from cnnzoo.data.transforms import IMAGENET_MEAN, IMAGENET_STD

log = logging.getLogger(__name__)


class PredictionGrid(pl.Callback):
    """Draws the same ``images`` validation images (picked with ``seed``), each with its true
    class and the network's top-5 class names and probabilities, after the validations of
    ``times`` epochs spread over the run (first, middle, last for 3). Saved as
    ``predictions/epoch_NNN.png`` in the run folder and logged to W&B (``val/predictions``) and
    TensorBoard when those loggers are on. Rank zero only."""

    def __init__(self, images: int = 16, times: int = 3, seed: int = 0, columns: int = 4) -> None:
        self.images, self.times, self.seed, self.columns = images, times, seed, columns

    def epochs(self, max_epochs: int | None) -> set[int]:
        last = max(0, (max_epochs or 1) - 1)
        return {round(float(e)) for e in np.linspace(0, last, max(1, self.times))}

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        if trainer.current_epoch not in self.epochs(trainer.max_epochs):
            return
        datamodule = trainer.datamodule  # (cnnzoo.data.protocol.RunData)
        items = datamodule.preview_items(self.images, self.seed) if datamodule is not None else []
        if not items:
            return
        images = torch.stack([image for image, _ in items])
        labels = [int(label) for _, label in items]
        probabilities = self._predict(pl_module, images, torch.tensor(labels))
        path = (
            Path(trainer.default_root_dir)
            / "predictions"
            / f"epoch_{trainer.current_epoch:03d}.png"
        )
        figure = draw(images, labels, probabilities, datamodule.class_names(), self.columns)
        figure.suptitle(
            f"epoch {trainer.current_epoch}: true class above (green: top-1 right), top-5 below",
            fontsize=9,
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=100, bbox_inches="tight", pad_inches=0.1)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image("val/predictions", [str(path)], step=trainer.global_step)
            elif isinstance(logger, TensorBoardLogger):
                logger.experiment.add_figure("val/predictions", figure, trainer.global_step)

    @torch.no_grad()
    def _predict(self, pl_module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Probabilities of the val items, scored as validation scores them (the DataModule's
        device transfer, view averaging)."""
        was_training = pl_module.training
        pl_module.eval()
        try:
            x, y = pl_module._apply_batch_transfer_handler((images, labels), pl_module.device)
            scores, _ = pl_module.score(x, y)
            return (scores if x.ndim == 5 else scores.float().softmax(dim=1)).cpu()
        finally:
            pl_module.train(was_training)


def displayable(images: torch.Tensor) -> np.ndarray:
    """(N, [V,] 3, H, W) uint8 or normalised float -> (N, H, W, 3) floats in [0, 1]."""
    if images.ndim == 5:
        images = images[:, 0]  # the first view
    if images.dtype == torch.uint8:
        pixels = images.float() / 255
    else:
        mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
        pixels = images.float() * std + mean
    return pixels.clamp(0, 1).permute(0, 2, 3, 1).numpy()


def draw(images, labels, probabilities, names, columns: int = 4):
    """A matplotlib Figure: one panel per image, its true class as the title (green when the
    top-1 guess is right, red otherwise), the top-5 guesses with probabilities below."""
    from matplotlib.figure import Figure

    pixels = displayable(images)
    rows = math.ceil(len(pixels) / columns)
    figure = Figure(figsize=(2.6 * columns, 3.2 * rows), layout="constrained")
    k = min(5, probabilities.shape[1])
    for i, (image, label, probs) in enumerate(zip(pixels, labels, probabilities, strict=True)):
        ax = figure.add_subplot(rows, columns, i + 1)
        ax.imshow(image)
        ax.set_xticks([])
        ax.set_yticks([])
        top = probs.topk(k)
        right = int(top.indices[0]) == label
        ax.set_title(names[label][:28], fontsize=8, color="green" if right else "red")
        lines = [
            f"{p:.2f} {names[int(c)][:24]}" for p, c in zip(top.values, top.indices, strict=True)
        ]
        ax.set_xlabel("\n".join(lines), fontsize=7, loc="left")
    return figure
