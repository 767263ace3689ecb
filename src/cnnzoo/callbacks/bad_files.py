"""List the unreadable images skipped (``data.on_bad_file=skip``) at the end of each epoch."""

import logging

import pytorch_lightning as pl

log = logging.getLogger(__name__)


class BadFileReport(pl.Callback):
    """Warns with every file the DataModule skipped since the last report, one per line, and
    keeps the whole list for the run (``skipped``). Each rank reports the files it read."""

    def __init__(self) -> None:
        self.skipped: list[tuple[str, str]] = []

    def _report(self, trainer: pl.Trainer, stage: str) -> None:
        data = trainer.datamodule  # (cnnzoo.data.protocol.RunData)
        entries = data.new_skipped() if data is not None else []
        if entries:
            self.skipped += entries
            lines = "\n".join(f"  {path}  ({reason})" for path, reason in entries)
            log.warning(
                "%s epoch %d skipped %d unreadable image(s) (data.on_bad_file=skip):\n%s",
                stage,
                trainer.current_epoch,
                len(entries),
                lines,
            )

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._report(trainer, "train")

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        self._report(trainer, "val")

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        self._report(trainer, "test")
