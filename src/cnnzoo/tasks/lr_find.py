"""``python train.py ... tune=lr_find``: the learning-rate range test (Smith 2017) on the run as
composed, with Lightning's ``Tuner.lr_find``, instead of training: the lr rises exponentially
from ``lr_find.min_lr`` to ``lr_find.max_lr`` over ``lr_find.steps`` training steps (stopping
early when the loss explodes), and the suggestion is where the loss falls fastest. The plot
(``lr_find.png``) and the figures (``lr_find.json``) go to the run folder; the command prints
the override to train with. The weights are left as they were (Lightning restores them)."""

import json
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig

from cnnzoo.build import effective_lr


def lr_range_test(
    cfg: DictConfig, trainer: pl.Trainer, module: pl.LightningModule, datamodule, out: Path
) -> dict[str, Any]:
    from pytorch_lightning.tuner import Tuner

    options = cfg.get("lr_find") or {}
    steps = int(options.get("steps", 100))
    max_epochs = trainer.fit_loop.max_epochs
    trainer.fit_loop.max_epochs = steps  # the steps decide, over as many epochs as they take
    try:
        finder = Tuner(trainer).lr_find(
            module,
            datamodule=datamodule,
            min_lr=float(options.get("min_lr", 1e-6)),
            max_lr=float(options.get("max_lr", 1.0)),
            num_training=steps,
            update_attr=False,
        )
    finally:
        trainer.fit_loop.max_epochs = max_epochs
    suggested = finder.suggestion() if finder is not None else None
    scale = effective_lr(cfg) / float(cfg.optim.lr)  # optim.lr_scaling=linear: batch / 256
    record = {
        "suggested_lr": suggested,
        "suggested_model_lr": None if suggested is None else suggested / scale,
        "lr": finder.results["lr"] if finder is not None else [],
        "loss": finder.results["loss"] if finder is not None else [],
    }
    if trainer.is_global_zero and finder is not None:
        figure = finder.plot(suggest=suggested is not None)
        figure.savefig(out / "lr_find.png", dpi=110)
        (out / "lr_find.json").write_text(json.dumps(record, indent=2) + "\n")
        if suggested is None:
            print(f"lr range test: too few steps for a suggestion; see {out / 'lr_find.png'}")
        else:
            print(f"lr range test: suggested lr {suggested:.3g} (the steepest fall of the loss); "
                  f"train with model.lr={record['suggested_model_lr']:.3g}. Plot: "
                  f"{out / 'lr_find.png'}")  # fmt: skip
    return record
