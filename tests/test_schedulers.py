"""Each schedule produces the learning-rate sequence it promises, stepped at its interval."""

import math

import pytest
import pytorch_lightning as pl
import torch
from helpers import compose_train
from pytorch_lightning.callbacks import Callback
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from cnnzoo.build import build_module

LR, STEPS_PER_EPOCH, EPOCHS = 0.1, 4, 6


class ConstantLogits(nn.Module):
    """Logits that never change (so val error never improves) but do reach a parameter."""

    def __init__(self) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.zeros(10))  # the sample set's 10 classes

    def forward(self, x):
        return x[:, :1] * 0 + (self.p - self.p.detach())


class RecordLR(Callback):
    def __init__(self) -> None:
        self.lrs: list[float] = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])


def lr_sequence(scheduler: str, overrides: list[str], tmp_path) -> list[float]:
    cfg = compose_train([f"scheduler={scheduler}", "optim=sgd", f"model.lr={LR}",
                         f"trainer.max_epochs={EPOCHS}", *overrides], out=tmp_path)  # fmt: skip
    module = build_module(cfg)
    module.net = ConstantLogits()
    data = TensorDataset(torch.randn(4 * STEPS_PER_EPOCH, 4), torch.randint(0, 10, (16,)))
    record = RecordLR()
    trainer = pl.Trainer(max_epochs=EPOCHS, accelerator="cpu", logger=False, callbacks=[record],
                         enable_progress_bar=False, enable_model_summary=False,
                         enable_checkpointing=False, num_sanity_val_steps=0)  # fmt: skip
    loader = DataLoader(data, batch_size=4)
    trainer.fit(module, train_dataloaders=loader, val_dataloaders=loader)
    return record.lrs


def per_step(epoch_lrs: list[float]) -> list[float]:
    return [lr for lr in epoch_lrs for _ in range(STEPS_PER_EPOCH)]


CASES = {
    "none": ([], per_step([LR] * EPOCHS)),
    "step": (["scheduler.scheduler.step_size=2"],
             per_step([LR * 0.1 ** (e // 2) for e in range(6)])),
    "multistep": (["scheduler.scheduler.milestones=[1,4]"],
                  per_step([LR, LR * 0.1, LR * 0.1, LR * 0.1, LR * 0.01, LR * 0.01])),
    "exponential": (["scheduler.scheduler.step_size=2", "scheduler.scheduler.gamma=0.94"],
                    per_step([LR * 0.94 ** (e // 2) for e in range(6)])),
    "cosine": ([], per_step([LR * (1 + math.cos(math.pi * e / EPOCHS)) / 2 for e in range(6)])),
    # val error is constant: epoch 0 sets the best, every later epoch is "bad"; with patience 1
    # the lr drops once 2 bad epochs have passed (after epochs 2 and 4), then the count restarts
    "plateau": (["scheduler.scheduler.patience=1"],
                per_step([LR, LR, LR, LR * 0.1, LR * 0.1, LR * 0.01])),
}  # fmt: skip


@pytest.mark.parametrize("scheduler", list(CASES))
def test_schedule_lr_sequence(scheduler, tmp_path):
    overrides, expected = CASES[scheduler]
    assert lr_sequence(scheduler, overrides, tmp_path) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("scheduler", ["none", "step", "cosine"])
def test_linear_warmup_per_step_in_front_of_the_schedule(scheduler, tmp_path):
    overrides, expected = CASES[scheduler]
    warm = ["scheduler.warmup_epochs=1.5", "scheduler.warmup_start_factor=0.1"]
    lrs = lr_sequence(scheduler, [*overrides, *warm], tmp_path)
    n = round(1.5 * STEPS_PER_EPOCH)  # 6 warm-up steps
    factors = [0.1 + 0.9 * min(i, n) / n for i in range(len(expected))]
    assert lrs == pytest.approx([f * lr for f, lr in zip(factors, expected, strict=True)], rel=1e-6)
    assert lrs[0] == pytest.approx(0.1 * LR) and lrs[n] == pytest.approx(expected[n])


def test_a_plateau_is_given_only_the_finished_epochs_it_missed(caplog):
    """``catch_up_plateaus`` after a resume: from an epoch's end (the plateau saw epochs 0-1,
    the run starts epoch 3) it gets epoch 2's monitored value; mid-epoch (it saw every finished
    epoch) nothing; an epoch without that value in the history stops it there."""
    from types import SimpleNamespace

    from pytorch_lightning.utilities.types import LRSchedulerConfig

    from cnnzoo.schedules import catch_up_plateaus

    def plateau_after(values: list[float], epoch: int, history: list[dict], rank=0) -> list:
        optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=LR)
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, patience=0)
        for value in values:  # what it saw before the checkpoint
            plateau.step(value)
        config = LRSchedulerConfig(plateau, interval="epoch", monitor="val/loss",
                                   reduce_on_plateau=True)  # fmt: skip
        trainer = SimpleNamespace(lr_scheduler_configs=[config], current_epoch=epoch,
                                  is_global_zero=rank == 0)  # fmt: skip
        catch_up_plateaus(trainer, history)
        return [plateau.last_epoch, optimizer.param_groups[0]["lr"]]

    history = [{"epoch": e, "val/loss": loss} for e, loss in enumerate([3.0, 2.0, 2.5])]
    assert plateau_after([3.0, 2.0], 3, history) == [3, pytest.approx(LR * 0.1)]  # 2.5: worse
    assert plateau_after([3.0, 2.0], 2, history) == [2, LR]  # (resumed mid-epoch 2)
    assert plateau_after([3.0, 2.0], 3, history[:2]) == [2, LR]  # (no value for epoch 2)
    assert plateau_after([3.0, 2.0], 3, [{**h, "val/loss": 1.0} for h in history]) == [3, LR]
    caplog.set_level("INFO", logger="cnnzoo.schedules")
    caplog.clear()
    assert plateau_after([3.0, 2.0], 3, history, rank=1) == [3, pytest.approx(LR * 0.1)]
    assert not caplog.records  # said once, by the first rank
    plateau_after([3.0, 2.0], 3, history, rank=0)
    assert [r.getMessage() for r in caplog.records] == [
        "plateau schedule given epoch 2's val/loss (2.5)"
    ]
