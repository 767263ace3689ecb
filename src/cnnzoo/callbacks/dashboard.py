"""What a W&B dashboard compares runs by: the best epoch's figures in the runs table, and the
test split's per-class accuracy and confusion matrix at the end of a run."""

from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import WandbLogger
from torchmetrics.classification import MulticlassConfusionMatrix

from cnnzoo.callbacks.record import RunRecord, callback_of

# The runs table shows a metric's summary: its best value, not its last epoch's.
SUMMARIES = {
    "val/acc_top1": "max",
    "val/acc_top5": "max",
    "val/err_top1": "min",
    "val/err_top5": "min",
    "val/loss": "min",
}


class WandbDashboard(pl.Callback):
    """With a W&B logger (nothing without one):

    - each ``val/*`` metric's summary is its best value (accuracies the max, errors and loss
      the min), and ``best/epoch`` with ``best/val_*`` are the figures of the run's best epoch
      (``RunRecord``'s ``best_val``: by ``optimized_metric``, val top-1 by default), so the runs
      table sorts by what a run reached, not where it ended;
    - when the test stage ends, the test split's per-class accuracy (a W&B Table:
      ``test/per_class``) and confusion matrix (W&B's confusion-matrix chart:
      ``test/confusion_matrix``), from torchmetrics' ``MulticlassConfusionMatrix`` over every
      rank's images, scored as the test metrics are.

    Args:
        chart_classes: above this many classes the chart gets only the cells that are not
            zero (ImageNet's full 1000 x 1000 would be a million rows).
    """

    def __init__(self, chart_classes: int = 100) -> None:
        self.chart_classes = chart_classes
        self.counting = False  # in a test stage with a W&B logger
        self.confusion: MulticlassConfusionMatrix | None = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        run = wandb_run(trainer)
        if run is None:
            return
        for name, best in SUMMARIES.items():
            run.define_metric(name, summary=best)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """The run record's best epoch (its history, kept in checkpoints, so a resumed run's
        best is the whole run's); the record's hook runs first (it is the first callback)."""
        run = wandb_run(trainer)
        record = callback_of(trainer, RunRecord)
        best = record.best() if record is not None else None
        if run is None or trainer.sanity_checking or best is None:
            return
        val = {f"best/{k.replace('/', '_')}": v for k, v in best.items() if k.startswith("val/")}
        run.summary.update({"best/epoch": best["epoch"], **val})

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.counting = any(isinstance(logger, WandbLogger) for logger in trainer.loggers)
        self.confusion = None  # (made at the first batch, which gives the class count)

    def on_test_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not self.counting or not isinstance(outputs, torch.Tensor):
            return
        if self.confusion is None:
            self.confusion = MulticlassConfusionMatrix(outputs.shape[1]).to(outputs.device)
        self.confusion.update(outputs, batch[1])

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.confusion is None:
            return
        matrix = self.confusion.compute().cpu()  # (on every rank: torchmetrics gathers them)
        self.confusion, self.counting = None, False
        run = wandb_run(trainer)
        if run is None:
            return
        names = class_names(trainer.datamodule, len(matrix))
        run.log(
            {
                "test/per_class": per_class_table(matrix, names),
                "test/confusion_matrix": confusion_chart(matrix, names, self.chart_classes),
            }
        )


def wandb_run(trainer: pl.Trainer):
    """The W&B run on rank zero; None elsewhere and without a W&B logger."""
    if not trainer.is_global_zero:
        return None
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            return logger.experiment
    return None


def class_names(datamodule, count: int) -> list[str]:
    """The classes' names by index, as the data names them (their indices where it cannot)."""
    try:
        names = list(datamodule.class_names())
    except Exception:  # (a DataModule without names: synthetic data)
        names = []
    return names if len(names) == count else [str(i) for i in range(count)]


def per_class_table(matrix: torch.Tensor, names: list[str]):
    """One row per class: its test images, how many were right, the accuracy and the class it
    was most often taken for."""
    import wandb

    images = matrix.sum(dim=1)
    right = matrix.diagonal()
    wrong = matrix.clone().fill_diagonal_(0)
    table = wandb.Table(
        columns=["class", "name", "images", "correct", "accuracy", "most confused with"]
    )
    for i, name in enumerate(names):
        n = int(images[i])
        confused = int(wrong[i].argmax()) if int(wrong[i].max()) > 0 else None
        accuracy = float(right[i]) / n if n else None
        other = "" if confused is None else names[confused]
        table.add_data(i, name, n, int(right[i]), accuracy, other)
    return table


def confusion_chart(matrix: torch.Tensor, names: list[str], chart_classes: int):
    """W&B's confusion-matrix chart (the table ``wandb.plot.confusion_matrix`` builds, made from
    the counts instead of per-image lists)."""
    import wandb

    every = len(names) <= chart_classes
    rows = [
        [names[i], names[j], int(matrix[i, j])]
        for i in range(len(names))
        for j in range(len(names))
        if every or matrix[i, j] > 0
    ]
    table = wandb.Table(columns=["Actual", "Predicted", "nPredictions"], data=rows)
    fields = {"Actual": "Actual", "Predicted": "Predicted", "nPredictions": "nPredictions"}
    return wandb.plot_table(
        "wandb/confusion_matrix/v1", table, fields, {"title": "Test confusion matrix"}
    )
