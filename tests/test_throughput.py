"""The throughput callback and synthetic input: images/s, step time, share waiting for data."""

import json
from types import SimpleNamespace

import pytest
import torch
from helpers import compose_train, tiny_overrides

from cnnzoo.callbacks import throughput
from cnnzoo.callbacks.throughput import Throughput
from cnnzoo.tasks.train import train


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Profiler:
    def start(self, action: str) -> None:
        pass

    def stop(self, action: str) -> None:
        pass


FETCH = "[_TrainingEpochLoop].train_dataloader_next"  # as Lightning names each training fetch


def fake_trainer(world_size: int) -> SimpleNamespace:
    return SimpleNamespace(world_size=world_size, profiler=Profiler())


def fetch(trainer, clock: Clock, seconds: float, action: str = FETCH) -> None:
    trainer.profiler.start(action)
    clock.now += seconds
    trainer.profiler.stop(action)


class Module:
    def __init__(self) -> None:
        self.logged: dict[str, float] = {}

    def log(self, name, value, **kwargs) -> None:
        self.logged[name] = value


def test_rates_from_a_controlled_clock(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(throughput.time, "perf_counter", clock)
    callback, module, trainer = Throughput(warmup_steps=1), Module(), fake_trainer(2)
    callback.setup(trainer, module, "fit")
    callback.setup(trainer, module, "test")  # wraps the profiler once only
    batch = (torch.zeros(4, 3, 2, 2), torch.zeros(4))
    callback.on_train_epoch_start(trainer, module)
    for step in range(4):  # each step: 0.1 s waiting for the batch, 0.3 s computing
        fetch(trainer, clock, 0.1)
        compute = 0.3 + (10.0 if step == 0 else 0.0)  # a slow first step: left out
        fetch(trainer, clock, compute, "[Strategy]training_step")  # not data wait
        callback.on_train_batch_end(trainer, module, None, batch, step)
    callback.on_train_epoch_end(trainer, module)
    summary = callback.summary()
    assert summary["images_per_s"] == pytest.approx(8 / 0.4)  # 4 images x 2 ranks per 0.4 s
    assert summary["step_ms"] == pytest.approx(400.0)
    assert summary["data_wait"] == pytest.approx(0.25)
    assert module.logged == {f"perf/{k}": v for k, v in summary.items()}


def test_validation_time_is_not_counted(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(throughput.time, "perf_counter", clock)
    callback, module, trainer = Throughput(warmup_steps=0), Module(), fake_trainer(1)
    callback.setup(trainer, module, "fit")
    batch = [torch.zeros(2, 1)]
    for _ in range(2):
        callback.on_train_epoch_start(trainer, module)
        clock.now += 1.0
        callback.on_train_batch_end(trainer, module, None, batch, 0)
        callback.on_train_epoch_end(trainer, module)
        fetch(trainer, clock, 100.0, "[_EvaluationLoop].val_next")  # validation
    assert callback.summary() == {"images_per_s": 2.0, "step_ms": 1000.0, "data_wait": 0.0}


def test_nothing_past_warmup_gives_no_figures():
    assert Throughput(warmup_steps=5).summary() is None


def test_synthetic_run_reports_throughput(cache_dir, tmp_path, offline_env, capsys):
    overrides = [
        *(o for o in tiny_overrides(cache_dir, tmp_path) if not o.startswith("data.")),
        "data=synthetic",
        "data.num_classes=10",
        "data.batch_size=4",
        "data.steps_per_epoch=4",
        "data.val_steps=1",
        "callbacks.throughput.warmup_steps=1",
        "logger=none",
    ]
    cfg = compose_train(overrides, out=tmp_path)
    train(cfg)
    results = json.loads((tmp_path / "results.json").read_text())
    perf = results["throughput"]
    assert perf["images_per_s"] > 0 and perf["step_ms"] > 0 and 0 <= perf["data_wait"] < 1
    assert results["global_step"] == 3  # limit_train_batches=3 of the 4 synthetic steps
    assert "images/s (all devices)" in capsys.readouterr().out
