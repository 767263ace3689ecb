"""Top-k accuracy is the ILSVRC's: fraction of images whose label is in the top k (micro)."""

import pytest
import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from cnnzoo.module import ClassificationModule, topk_metrics

# 6 classes, 5 images; each row's scores rank the classes. Labels are imbalanced (three 0s),
# so macro (mean over classes) and micro (over images) averages differ.
LOGITS = torch.tensor(
    [
        [9.0, 5, 4, 3, 2, 1],  # label 0: top-1 hit
        [9.0, 5, 4, 3, 2, 1],  # label 0: top-1 hit
        [1.0, 9, 5, 4, 3, 2],  # label 0: rank 6 -> top-5 miss
        [9.0, 5, 4, 3, 2, 1],  # label 1: rank 2 -> top-5 hit
        [9.0, 1, 2, 3, 4, 5],  # label 5: rank 2 -> top-5 hit
    ]
)
LABELS = torch.tensor([0, 0, 0, 1, 5])
# By hand: top-1 hits 2 of 5 images; top-5 hits 4 of 5 images.
TOP1, TOP5 = 2 / 5, 4 / 5
# Macro top-1 for comparison: class 0: 2/3, class 1: 0, class 5: 0 -> (2/3)/3 = 0.222...
MACRO_TOP1 = (2 / 3 + 0 + 0) / 3


def test_topk_metrics_are_micro_averaged():
    metrics = topk_metrics(num_classes=6)
    metrics.update(LOGITS, LABELS)
    values = metrics.compute()
    assert values["acc_top1"].item() == pytest.approx(TOP1)
    assert values["acc_top5"].item() == pytest.approx(TOP5)
    assert values["acc_top1"].item() != pytest.approx(MACRO_TOP1)


def test_small_class_count_has_no_top5():
    assert set(topk_metrics(num_classes=3)) == {"acc_top1"}


def test_module_logs_accuracy_and_error_over_all_batches():
    """Through a real Trainer: batches of 2 accumulate to the whole-set figures."""
    module = ClassificationModule(
        net=nn.Identity(),  # the "images" are the logits themselves
        optimizer=lambda params: torch.optim.SGD(params, lr=0.1),
        num_classes=6,
    )
    trainer = pl.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False
    )
    loader = DataLoader(TensorDataset(LOGITS, LABELS), batch_size=2)
    (val,) = trainer.validate(module, dataloaders=loader, verbose=False)
    assert val["val/acc_top1"] == pytest.approx(TOP1)
    assert val["val/err_top1"] == pytest.approx(1 - TOP1)
    assert val["val/acc_top5"] == pytest.approx(TOP5)
    assert val["val/err_top5"] == pytest.approx(1 - TOP5)
    assert val["val/loss"] == pytest.approx(
        nn.functional.cross_entropy(LOGITS, LABELS).item(), rel=1e-3
    )
