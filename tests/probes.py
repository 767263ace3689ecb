"""Callbacks that tests put into real runs (``+callbacks.NAME._target_=probes.X``)."""

import time

import pytorch_lightning as pl
import torch


class SlowSteps(pl.Callback):
    """Prints ``STEP <global step>`` after every training batch and slows each one down, so a
    test can interrupt a run in the middle of an epoch."""

    def __init__(self, seconds: float = 0.3) -> None:
        self.seconds = seconds

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        print(f"STEP {trainer.global_step}", flush=True)
        time.sleep(self.seconds)


class PoisonWeights(pl.Callback):
    """Fills the first weight with NaN before training batch ``batch`` of epoch ``epoch``."""

    def __init__(self, epoch: int = 1, batch: int = 1) -> None:
        self.epoch, self.batch = epoch, batch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            with torch.no_grad():
                next(pl_module.parameters()).fill_(float("nan"))


class BatchRecorder(pl.Callback):
    """Records what each stage's steps receive (after the device-transfer hooks): images seen,
    image shapes and dtypes, whether labels were class indices or probabilities; written as
    JSON to ``path`` at the end of testing."""

    def __init__(self, path: str) -> None:
        self.path, self.seen = path, {}

    def _record(self, trainer, stage: str, batch) -> None:
        if trainer.sanity_checking:
            return
        images, labels = batch
        entry = self.seen.setdefault(stage, {"images": 0, "shapes": [], "dtypes": [], "soft": []})
        entry["images"] += len(images)
        for key, value in (
            ("shapes", list(images.shape[1:])),
            ("dtypes", str(images.dtype)),
            ("soft", labels.is_floating_point()),
        ):
            if value not in entry[key]:
                entry[key].append(value)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._record(trainer, "train", batch)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, *args) -> None:
        self._record(trainer, "val", batch)

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, *args) -> None:
        self._record(trainer, "test", batch)

    def on_test_end(self, trainer, pl_module) -> None:
        import json

        with open(self.path, "w") as f:
            json.dump(self.seen, f)


class WrappingProbe(pl.Callback):
    """Writes to ``path`` (JSON) how the net runs once training starts: the strategy's wrapper,
    its BatchNorm classes, whether it is compiled, and the first conv's output dtype and memory
    format in the first step."""

    def __init__(self, path: str) -> None:
        self.path, self.seen = path, {}

    def on_train_start(self, trainer, pl_module) -> None:
        net = pl_module.net
        self.seen["wrapper"] = type(trainer.strategy.model).__name__
        self.seen["norms"] = sorted(
            {type(m).__name__ for m in net.modules() if "Norm" in type(m).__name__}
        )
        self.seen["compiled"] = getattr(net, "_compiled_call_impl", None) is not None
        conv = next(m for m in net.modules() if isinstance(m, torch.nn.Conv2d))
        self.handle = conv.register_forward_hook(self._record)

    def _record(self, module, inputs, output) -> None:
        self.seen["dtype"] = str(output.dtype)
        self.seen["channels_last"] = output.is_contiguous(memory_format=torch.channels_last)
        self.handle.remove()

    def on_train_end(self, trainer, pl_module) -> None:
        import json

        if trainer.is_global_zero:
            with open(self.path, "w") as f:
                json.dump(self.seen, f)


class TrainBatches(pl.Callback):
    """Writes to ``path`` (JSON) each training batch's epoch, index, labels and pixel sum."""

    def __init__(self, path: str) -> None:
        self.path, self.batches = path, []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        images, labels = batch
        self.batches.append([trainer.current_epoch, batch_idx, labels.tolist(),
                             round(float(images.double().sum()), 3)])  # fmt: skip

    def on_train_end(self, trainer, pl_module) -> None:
        import json

        with open(self.path, "w") as f:
            json.dump(self.batches, f)


class ExitAfterJobs(pl.Callback):
    """Ends the whole process (as a crash or a kill would) when a job of a sweep starts
    after ``jobs`` jobs of its sweep folder finished."""

    def __init__(self, jobs: int) -> None:
        self.jobs = jobs

    def on_fit_start(self, trainer, pl_module) -> None:
        import json
        import os
        from pathlib import Path

        sweep = Path(trainer.default_root_dir).parent
        done = [p for p in sweep.glob("*/results.json")
                if json.loads(p.read_text()).get("status") == "finished"]  # fmt: skip
        if len(done) >= self.jobs:
            os._exit(3)


class CtrlCWhileTesting(pl.Callback):
    """Raises KeyboardInterrupt (what Ctrl-C raises) at the first test batch: the final test of
    the best checkpoint, after training ended."""

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, *args) -> None:
        raise KeyboardInterrupt


class LrRecorder(pl.Callback):
    """Appends ``epoch lr`` (the first param group's, at the epoch's first step) to ``path``:
    a run and its resumes write one sequence."""

    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == 0:
            lr = trainer.optimizers[0].param_groups[0]["lr"]
            with open(self.path, "a") as f:
                f.write(f"{trainer.current_epoch} {lr:.10g}\n")
