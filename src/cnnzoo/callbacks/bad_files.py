"""List the unreadable images skipped (``data.on_bad_file=skip``), each once, under its split."""

import logging

import pytorch_lightning as pl

log = logging.getLogger(__name__)


class BadFileReport(pl.Callback):
    """Warns with the files each split skipped since its last report, one per line, each file
    once a run (the sanity check and every epoch's val read the same files), and keeps the list
    for the run's record (``skipped``: split, path, reason). Each rank reports what it read."""

    def __init__(self) -> None:
        self.skipped: list[tuple[str, str, str]] = []

    def _report(self, trainer: pl.Trainer, split: str, when: str) -> None:
        data = trainer.datamodule  # (cnnzoo.data.protocol.RunData)
        if data is None:
            return
        known = {(s, path) for s, path, _ in self.skipped}
        entries = []
        for path, reason in data.new_skipped(split):
            if (split, path) not in known:
                known.add((split, path))
                entries.append((path, reason))
        if entries:
            self.skipped += [(split, path, reason) for path, reason in entries]
            lines = "\n".join(f"  {path}  ({reason})" for path, reason in entries)
            log.warning(
                "%s skipped %d unreadable image(s) (data.on_bad_file=skip):\n%s",
                when,
                len(entries),
                lines,
            )

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._report(trainer, "train", f"train epoch {trainer.current_epoch}")

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        when = "val (sanity check)" if trainer.sanity_checking else "val"
        self._report(trainer, "val", f"{when} epoch {trainer.current_epoch}")

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        self._report(trainer, "test", "test")

    def record(self) -> list[dict[str, str]]:
        """The run's skipped files, for results.json."""
        return [{"split": s, "path": p, "reason": r} for s, p, r in self.skipped]
