"""Every validation's metrics, kept in checkpoints: the report's best-epoch figures."""

import pytorch_lightning as pl


class MetricHistory(pl.Callback):
    """Records ``val/*`` metrics after each validation (not the sanity check), with the epoch
    and step; ``best(metric)`` is the entry where ``metric`` was highest."""

    def __init__(self) -> None:
        self.entries: list[dict[str, float]] = []

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

    def best(self, metric: str = "val/acc_top1", mode: str = "max") -> dict[str, float] | None:
        scored = [e for e in self.entries if metric in e]
        if not scored:
            return None
        pick = max if mode == "max" else min
        return pick(scored, key=lambda e: e[metric])

    def state_dict(self) -> dict:
        return {"entries": self.entries}

    def load_state_dict(self, state: dict) -> None:
        """A resume's history; never a shorter one over what this run recorded (the test
        stage reloads the best checkpoint, whose copy of the history may be older)."""
        if len(state["entries"]) >= len(self.entries):
            self.entries = list(state["entries"])
