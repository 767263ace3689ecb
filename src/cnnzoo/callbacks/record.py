"""A run's record, ``results.json``: one owner writes it, whole and atomically, at each change."""

import json
from pathlib import Path
from typing import Any

import pytorch_lightning as pl

from cnnzoo.callbacks.requeue import Requeued
from cnnzoo.files import replaced_atomically


class Interrupted(KeyboardInterrupt):
    """A run stopped by Ctrl-C or SIGTERM, as its record names it ("Interrupted: Ctrl-C at
    epoch 3, step 120; saved last.ckpt"): Lightning ends a Ctrl-C with ``sys.exit(1)`` once the
    callbacks ran, which the record showed as "SystemExit: 1"."""


class RunRecord(pl.Callback):
    """The one writer of a run folder's ``results.json``.

    ``update`` merges fields and writes the whole record (a temporary file renamed over the
    old one: a reader never sees half a file); ``end`` records how a run stopped. As a
    callback it keeps the ``val/*`` metrics of every validation (not the sanity check) with
    the epoch and step, and writes them as ``val_history`` (and ``best_val``) at once, so a
    running run's record shows its progress. The history is kept in checkpoints, so a resumed
    run's record holds the whole run.

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
        status = "failed"
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

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        metrics = {
            k: float(v) for k, v in sorted(trainer.callback_metrics.items()) if k.startswith("val/")
        }
        if metrics:
            self.entries.append(
                {"epoch": trainer.current_epoch, "step": trainer.global_step, **metrics}
            )
            self.update()

    def state_dict(self) -> dict:
        return {"entries": self.entries}

    def load_state_dict(self, state: dict) -> None:
        """A resume's history; never a shorter one over what this run recorded (the test
        stage reloads the best checkpoint, whose copy of the history may be older)."""
        if len(state["entries"]) >= len(self.entries):
            self.entries = list(state["entries"])
