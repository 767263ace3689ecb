"""Polyak averaging: the EMA follows its formula, is scored alongside, and is saved."""

import csv

import pytest
import pytorch_lightning as pl
import torch
import torchvision
from helpers import compose_train, tiny_overrides
from pytorch_lightning.callbacks import Callback
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from cnnzoo.callbacks import EMA
from cnnzoo.models.weights import net_state_dict
from cnnzoo.module import ClassificationModule
from cnnzoo.tasks.train import train


class RecordWeights(Callback):
    def __init__(self) -> None:
        self.weights: list[torch.Tensor] = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.weights.append(module.net.weight.detach().clone())


def test_ema_follows_its_formula():
    torch.manual_seed(0)
    sgd = lambda params: torch.optim.SGD(params, lr=0.5)  # noqa: E731
    module = ClassificationModule(net=nn.Linear(4, 3), num_classes=3, optimizer=sgd)
    ema, record = EMA(decay=0.9), RecordWeights()
    data = TensorDataset(torch.randn(12, 4), torch.randint(0, 3, (12,)))
    trainer = pl.Trainer(max_steps=3, accelerator="cpu", logger=False, callbacks=[ema, record],
                         enable_progress_bar=False, enable_model_summary=False,
                         enable_checkpointing=False)  # fmt: skip
    trainer.fit(module, train_dataloaders=DataLoader(data, batch_size=4))
    w1, w2, w3 = record.weights
    expected = 0.9 * (0.9 * w1 + 0.1 * w2) + 0.1 * w3  # the first update copies
    torch.testing.assert_close(ema.average.module.weight, expected)
    assert not torch.allclose(expected, w3)


def test_ema_is_scored_alongside_and_saved(cache_dir, tmp_path, offline_env):
    overrides = [*tiny_overrides(cache_dir, tmp_path), "callbacks=ema", "callbacks.ema.decay=0.5",
                 "logger=csv", "callbacks.progress_bar=null"]  # fmt: skip
    train(compose_train(overrides, out=tmp_path))
    header = (tmp_path / "metrics.csv").read_text().splitlines()[0].split(",")
    for stage in ("val", "val_ema", "test", "test_ema"):
        assert {f"{stage}/acc_top1", f"{stage}/err_top5", f"{stage}/loss"} <= set(header)
    best = tmp_path / "checkpoints" / "best.ckpt"
    raw, averaged = net_state_dict(best), net_state_dict(best, ema=True)
    assert raw.keys() == averaged.keys()
    assert not torch.equal(raw["fc.weight"], averaged["fc.weight"])
    torchvision.models.resnet18(num_classes=10).load_state_dict(averaged)  # exportable as is


def test_checkpoint_without_ema_says_how_to_get_one(cache_dir, tmp_path, offline_env):
    from cnnzoo.errors import ConfigError

    train(compose_train([*tiny_overrides(cache_dir, tmp_path), "logger=none"], out=tmp_path))
    with pytest.raises(ConfigError, match="no EMA weights: train with callbacks=ema"):
        net_state_dict(tmp_path / "checkpoints" / "best.ckpt", ema=True)


@pytest.mark.parametrize("eval_crop", ["center", "ten"])
def test_ema_scores_what_validation_scores(cache_dir, tmp_path, offline_env, eval_crop):
    """uint8 batches normalised on the device, and (N, 10, 3, H, W) ten-crop batches, reach the
    averaged network as they reach the trained one: with a decay of ~0 the average is the
    trained network, so val_ema equals val (the EMA's own loop crashed on uint8 batches)."""
    overrides = [*tiny_overrides(cache_dir, tmp_path), "callbacks=ema", "logger=csv",
                 "callbacks.ema.decay=1e-9", "data.normalize_on_device=true",
                 f"data.eval_crop={eval_crop}"]  # fmt: skip
    train(compose_train(overrides, out=tmp_path))
    rows = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    val = {k: float(v) for row in rows for k, v in row.items() if k.startswith("val/") and v}
    ema = {k: float(v) for row in rows for k, v in row.items() if k.startswith("val_ema/") and v}
    assert {"val_ema/acc_top1", "val_ema/acc_top5", "val_ema/loss"} <= ema.keys()
    assert ema == pytest.approx({k.replace("val/", "val_ema/"): v for k, v in val.items()},
                                rel=1e-4)  # fmt: skip
