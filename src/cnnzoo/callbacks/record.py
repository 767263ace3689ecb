"""A run's record, ``results.json``: one owner writes it, whole and atomically, at each change."""

import json
from pathlib import Path
from typing import Any, TypeVar

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf

from cnnzoo.build import effective_lr
from cnnzoo.callbacks.bad_files import BadFileReport
from cnnzoo.callbacks.requeue import Requeued
from cnnzoo.callbacks.throughput import Throughput
from cnnzoo.checkpointing import last_checkpoint_path
from cnnzoo.data.batching import per_device_batch_size
from cnnzoo.errors import unwrapped
from cnnzoo.files import replaced_atomically
from cnnzoo.tracking import code_version, wandb_run_location

T = TypeVar("T")


class Interrupted(KeyboardInterrupt):
    """A run stopped by Ctrl-C or SIGTERM, as its record names it ("Interrupted: Ctrl-C at
    epoch 3, step 120; saved last.ckpt"): Lightning ends a Ctrl-C with ``sys.exit(1)`` once the
    callbacks ran, which the record showed as "SystemExit: 1"."""


class RunRecord(pl.Callback):
    """The one writer of a run folder's ``results.json``.

    ``update`` merges fields and writes the whole record (a temporary file renamed over the
    old one: a reader never sees half a file); ``end`` records how a run stopped. As a
    callback it keeps the ``val/*`` metrics of every validation (not the sanity check) with
    the epoch, the step, the lr the epoch began at and the epoch's training accuracy and error,
    and writes them as ``val_history`` (and ``best_val``) at once, so a running run's record
    shows its progress. The history is kept in checkpoints, so a resumed run's record holds
    the whole run.

    Args:
        folder: the run folder.
        fields: the record to start from (a resumed run's own record).
        metric, mode: what ``best_val`` picks (``optimized_metric``; ``max`` or ``min``).
        write: False on the ranks that are not rank zero (they keep the history only).
    """

    def __init__(
        self,
        folder: str | Path,
        fields: dict[str, Any] | None = None,
        metric: str = "val/acc_top1",
        mode: str = "max",
        write: bool = True,
    ) -> None:
        self.folder, self.fields = Path(folder), dict(fields or {})
        self.metric, self.mode, self.writes = metric, mode, write
        self.entries: list[dict[str, float]] = []
        self.epoch_lr: float | None = None

    @property
    def state_key(self) -> str:
        return "MetricHistory"  # (the history's key in checkpoints since before this class)

    @property
    def path(self) -> Path:
        return self.folder / "results.json"

    def record(self) -> dict[str, Any]:
        """The fields, with ``val_history`` and ``best_val`` from the history once there is one
        (until then, a resumed run's record keeps the ones it had)."""
        if not self.entries:
            return dict(self.fields)
        return self.fields | {"val_history": self.entries, "best_val": self.best()}

    def update(self, **fields: Any) -> dict[str, Any]:
        """Merge ``fields`` into the record and write it; the record."""
        self.fields |= fields
        record = self.record()
        if self.writes:
            self.folder.mkdir(parents=True, exist_ok=True)
            with replaced_atomically(self.path) as tmp:
                tmp.write_text(json.dumps(record, indent=2) + "\n")
        return record

    def finish(self, **results: Any) -> dict[str, Any]:
        """Record a finished run (no ``error`` left from a start it resumed); the record."""
        self.fields.pop("error", None)
        return self.update(status="finished", **results)

    def end(self, error: BaseException) -> None:
        """Record how the run stopped: requeued (SLURM pre-emption), interrupted (SIGTERM,
        Ctrl-C) or failed, with the error."""
        error, status = unwrapped(error), "failed"
        if isinstance(error, Requeued):
            status = "requeued"
        elif isinstance(error, KeyboardInterrupt | SystemExit):
            status = "interrupted"
        self.update(status=status, error=f"{type(error).__name__}: {error}")

    def best(self) -> dict[str, float] | None:
        """The history entry where ``metric`` was best."""
        scored = [e for e in self.entries if self.metric in e]
        if not scored:
            return None
        pick = max if self.mode == "max" else min
        return pick(scored, key=lambda e: e[self.metric])

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Note the lr the epoch starts at (the first param group's: the base one); Lightning
        steps epoch schedules before the epoch's validation ends."""
        if trainer.optimizers:
            self.epoch_lr = float(trainer.optimizers[0].param_groups[0]["lr"])

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        metrics = {
            k: float(v) for k, v in sorted(trainer.callback_metrics.items()) if k.startswith("val/")
        }
        if metrics:
            entry = {"epoch": trainer.current_epoch, "step": trainer.global_step, **metrics}
            if self.epoch_lr is not None:
                entry["lr"] = self.epoch_lr
            entry |= _train_so_far(pl_module)
            self.entries.append(entry)
            self.update()

    def state_dict(self) -> dict:
        return {"entries": self.entries}

    def load_state_dict(self, state: dict) -> None:
        """A resume's history; never a shorter one over what this run recorded (the test
        stage reloads the best checkpoint, whose copy of the history may be older)."""
        if len(state["entries"]) >= len(self.entries):
            self.entries = list(state["entries"])


def _train_so_far(module: pl.LightningModule) -> dict[str, float]:
    """The training accuracy and error of the epoch so far (all of it at an epoch's end), from
    the module's running metrics (not reset: the module logs them when the epoch ends)."""
    metrics = getattr(module, "train_metrics", None)
    if metrics is None or not any(m.update_count for m in metrics.values()):
        return {}
    figures = {}
    for name, acc in metrics.compute().items():
        figures[name] = float(acc)
        figures[name.replace("/acc_", "/err_")] = 1.0 - float(acc)
    return figures


def run_facts(module: pl.LightningModule, gmacs: float) -> dict[str, Any]:
    """What a comparison of runs needs beyond the config: size, cost (``gmacs``: multiply-adds
    per image at model.input_size) and code version."""
    return {
        "num_params": sum(p.numel() for p in module.parameters()),
        "gmacs": gmacs,
        **code_version(),
    }


def floats(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in sorted(metrics.items())}


def finished_fields(
    cfg: DictConfig,
    trainer: pl.Trainer,
    global_batch: int,
    fit: dict,
    test: dict,
    wall_time: float,
) -> dict[str, Any]:
    """What a finished run adds to its record (``fit`` and ``test``: the metrics after each)."""
    ckpt = trainer.checkpoint_callback
    best_score = ckpt.best_model_score if ckpt is not None else None
    optimised = cfg.optimized_metric
    value = float(best_score) if best_score is not None else fit.get(optimised)
    return {
        "optim": OmegaConf.to_container(cfg.optim, resolve=True),
        "lr": effective_lr(cfg),  # after optim.lr_scaling
        "global_batch_size": global_batch,
        "per_device_batch_size": per_device_batch_size(
            global_batch, trainer.world_size, trainer.accumulate_grad_batches
        ),
        "world_size": trainer.world_size,
        "decoding": getattr(trainer.datamodule, "decoding", lambda: None)(),  # (what decoded)
        "epochs": trainer.current_epoch,
        "global_step": trainer.global_step,
        "wall_time_s": round(wall_time, 2),
        "throughput": _throughput(trainer),
        "skipped_files": report.record() if (report := callback_of(trainer, BadFileReport)) else [],
        "metrics": {**fit, **floats(test)},
        "optimized_metric": optimised,
        "optimized_metric_value": value,
        "best_checkpoint": ckpt.best_model_path if ckpt is not None else None,
        "last_checkpoint": str(last) if (last := last_checkpoint_path(trainer)) else None,
        "config": str(Path(cfg.paths.output_dir) / ".hydra" / "config.yaml"),
        "wandb": wandb_run_location(trainer.loggers),
    }


def callback_of(trainer: pl.Trainer, kind: type[T]) -> T | None:
    """The trainer's callback of type ``kind``, or None."""
    return next((c for c in trainer.callbacks if isinstance(c, kind)), None)


def checkpoint_mode(ckpt) -> str:
    """Whether the run's checkpoint keeps the highest (``max``) or lowest value."""
    return getattr(ckpt, "mode", None) or "max"


def _throughput(trainer: pl.Trainer) -> dict[str, float] | None:
    throughput = callback_of(trainer, Throughput)
    return throughput.summary() if throughput is not None else None
