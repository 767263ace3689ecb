"""Mixed precision and multi-GPU runs: only where CUDA is present (never in CI)."""

import json
import os
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from helpers import compose_train, run_train, tiny_overrides

from cnnzoo.tasks.train import train

TESTS = Path(__file__).parent
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def gpu_overrides(cache_dir, out, *extra: str, trainer: str = "gpu") -> list[str]:
    """The tiny run on ``trainer`` (1 epoch unless ``extra`` says otherwise)."""
    given = tuple(o.split("=")[0] + "=" for o in extra)
    base = [o for o in tiny_overrides(cache_dir, out) if not o.startswith(("trainer=", *given))]
    return [*base, f"trainer={trainer}", "logger=none", *extra]


class Probe(pl.Callback):
    """Records the grad scaler's scale when fitting starts and the dtype the first conv gives."""

    seen: dict = {}  # noqa: RUF012 (class-level on purpose: instantiated by Hydra in train())

    def on_train_start(self, trainer, pl_module) -> None:
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        Probe.seen["scale"] = None if scaler is None else scaler.get_scale()
        conv = next(m for m in pl_module.net.modules() if isinstance(m, torch.nn.Conv2d))
        conv.register_forward_hook(lambda m, i, o: Probe.seen.__setitem__("dtype", o.dtype))


PROBE = "+callbacks.probe._target_=test_gpu.Probe"


def test_16_mixed_resume_restores_the_grad_scaler(cache_dir, tmp_path):
    first = tmp_path / "first"
    cfg = compose_train(gpu_overrides(cache_dir, first, "trainer.max_epochs=1"), out=first)
    train(cfg)
    last = first / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, weights_only=False)
    assert "MixedPrecision" in ckpt, sorted(ckpt)
    ckpt["MixedPrecision"]["scale"] = 1234.0  # a value no fresh scaler has
    torch.save(ckpt, last)

    second = tmp_path / "second"
    overrides = gpu_overrides(cache_dir, second, "trainer.max_epochs=2", f"ckpt_path={last}")
    Probe.seen.clear()
    train(compose_train([*overrides, PROBE], out=second))
    assert Probe.seen["scale"] == 1234.0
    assert Probe.seen["dtype"] == torch.float16


def test_bf16_mixed_runs_in_bfloat16(cache_dir, tmp_path):
    overrides = gpu_overrides(cache_dir, tmp_path, "trainer.precision=bf16-mixed", PROBE)
    Probe.seen.clear()
    train(compose_train(overrides, out=tmp_path))
    assert Probe.seen["scale"] is None  # bf16 needs no loss scaling
    assert Probe.seen["dtype"] == torch.bfloat16
    results = json.loads((tmp_path / "results.json").read_text())
    assert 0.0 <= results["metrics"]["test/acc_top1"] <= 1.0


def test_channels_last_16_mixed_on_synthetic_input_reports_throughput(cache_dir, tmp_path):
    base = [o for o in gpu_overrides(cache_dir, tmp_path) if not o.startswith("data.")]
    overrides = [
        *base,
        "data=synthetic",
        "data.batch_size=32",
        "data.steps_per_epoch=12",
        "model.channels_last=true",
        "callbacks.throughput.warmup_steps=2",
        "trainer.limit_train_batches=null",
        "+callbacks.probe._target_=probes.WrappingProbe",
        f"+callbacks.probe.path={tmp_path / 'wrapping.json'}",
    ]
    train(compose_train(overrides, out=tmp_path))
    seen = json.loads((tmp_path / "wrapping.json").read_text())
    assert seen["dtype"] == "torch.float16" and seen["channels_last"] is True  # as asked
    perf = json.loads((tmp_path / "results.json").read_text())["throughput"]
    assert perf["images_per_s"] > 0 and 0 <= perf["data_wait"] < 1


def test_ddp_with_sync_batchnorm_compile_and_channels_last(cache_dir, tmp_path, offline_env):
    """trainer=ddp on one GPU (a real process group): BatchNorm becomes SyncBatchNorm (this
    proves the conversion; that statistics are synchronised needs two GPUs), the net is
    compiled inside DDP, runs in float16 and channels_last, and the checkpoint (plain state
    dict keys) is scored by eval.py as the run's test stage did (eval in float32, the test
    stage in 16-mixed: a prediction near a tie may flip, so within two of the images)."""
    from cnnzoo.tasks.evaluate import run_eval

    record = tmp_path / "wrapping.json"
    overrides = gpu_overrides(cache_dir, tmp_path, "trainer.devices=1",
                              "trainer.sync_batchnorm=true", "model.compile=true",
                              "model.channels_last=true",
                              "+callbacks.probe._target_=probes.WrappingProbe",
                              f"+callbacks.probe.path={record}", trainer="ddp")  # fmt: skip
    env = {
        **offline_env,
        "PYTHONPATH": os.pathsep.join([str(TESTS), offline_env.get("PYTHONPATH", "")]),
    }
    proc = run_train(overrides, env, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(record.read_text())
    assert seen == {"wrapper": "DistributedDataParallel", "norms": ["SyncBatchNorm"],
                    "compiled": True, "dtype": "torch.float16", "channels_last": True}  # fmt: skip
    (run,) = (tmp_path / "outputs" / "train").iterdir()
    results = json.loads((run / "results.json").read_text())
    assert results["status"] == "finished" and results["world_size"] == 1
    evaluated = run_eval(compose_train([f"run={run}"], out=tmp_path / "eval", config="eval"))
    tested = results["metrics"]["test/acc_top1"]
    assert abs(evaluated["acc_top1"] - tested) <= 2 / evaluated["images"] + 1e-9


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_two_gpu_ddp(cache_dir, tmp_path, offline_env):
    overrides = gpu_overrides(cache_dir, tmp_path, "trainer.devices=2", trainer="ddp")
    proc = run_train(overrides, offline_env, cwd=tmp_path)  # DDP starts its ranks as processes
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = (tmp_path / "outputs" / "train").iterdir()
    assert json.loads((run / "results.json").read_text())["world_size"] == 2


class LoaderProbe(pl.Callback):
    """Records the dtype of the first training batch as the loader gives it (before the
    device-transfer hooks) and the module's memory format."""

    seen: dict = {}  # noqa: RUF012 (class-level on purpose: instantiated by Hydra in train())

    def on_train_start(self, trainer, pl_module) -> None:
        images, _ = next(iter(trainer.train_dataloader))
        LoaderProbe.seen.update(dtype=images.dtype, memory_format=pl_module.memory_format)


def test_gpu_defaults_switch_on_and_ema_scores_the_device_batches(cache_dir, tmp_path):
    """On a CUDA trainer the loaders send uint8 images (normalised on the GPU) without any
    setting, channels_last is on, and the EMA (the GoogLeNet recipe's) scores those batches."""
    overrides = gpu_overrides(cache_dir, tmp_path, "callbacks=ema", "logger=csv",
                              "+callbacks.loader_probe._target_=test_gpu.LoaderProbe")  # fmt: skip
    LoaderProbe.seen.clear()
    train(compose_train(overrides, out=tmp_path))
    assert LoaderProbe.seen == {"dtype": torch.uint8, "memory_format": torch.channels_last}
    header = (tmp_path / "metrics.csv").read_text().splitlines()[0]
    assert "val_ema/acc_top1" in header


def test_dali_decodes_on_the_gpu_as_the_workers_do(cache_dir):
    """data.loader=dali on a CUDA trainer: nvJPEG ("mixed") decoding, batches on the GPU,
    normalised; the same labels as the workers, centre crops within DALI's resize filter."""
    pytest.importorskip("nvidia.dali", reason="NVIDIA DALI is not installed")
    from helpers import place

    from cnnzoo.data import SampleDataModule

    def loaders(**kwargs):
        options = {"num_classes": 10, "batch_size": 8, "num_workers": 2, "image_size": 32,
                   "eval_resize": 36, **kwargs}  # fmt: skip
        dm = SampleDataModule(str(next(cache_dir.glob("sample_*"))), **options)
        dm.setup("fit")
        place(dm, device="cuda:0")
        return dm.train_dataloader(), dm.val_dataloader()

    workers, dali = loaders(normalize_on_device=False), loaders(loader="dali")
    images, _ = next(iter(dali[0]))
    assert images.is_cuda and images.dtype == torch.float32 and images.shape == (8, 3, 32, 32)
    assert [y.tolist() for _, y in workers[0]] == [y.tolist() for _, y in dali[0]]
    a, b = next(iter(workers[1]))[0], next(iter(dali[1]))[0].cpu()
    assert (a - b).abs().mean() < 0.15 * a.abs().mean()


def test_dali_hands_batches_out_on_the_training_stream(cache_dir, monkeypatch):
    """``TUNING.stream``: DALI's GPU batches are bound to the loop's current CUDA stream
    (``pipe.run(stream)``, no host wait) and are the same batches as host-synchronous ones."""
    pytest.importorskip("nvidia.dali", reason="NVIDIA DALI is not installed")
    from helpers import place
    from nvidia.dali import Pipeline

    from cnnzoo.data import SampleDataModule, dali

    def batches(stream: bool) -> list:
        monkeypatch.setattr(dali, "TUNING", dali.Tuning(stream=stream))
        options = {"num_classes": 10, "batch_size": 8, "num_workers": 2, "image_size": 32}
        dm = SampleDataModule(str(next(cache_dir.glob("sample_*"))), loader="dali", **options)
        dm.setup("fit")
        place(dm, device="cuda:0")
        side = torch.cuda.Stream()
        with torch.cuda.stream(side):  # the loop's stream is not the default one
            out = [(x.clone(), y) for x, y in dm.val_dataloader()]
        side.synchronize()
        return out, side

    given, run = [], Pipeline.run
    monkeypatch.setattr(Pipeline, "run", lambda pipe, *a: given.append(a) or run(pipe, *a))
    synchronous, _ = batches(stream=False)
    assert given and all(a == () for a in given)
    given.clear()
    bound, side = batches(stream=True)
    assert given and all(a == (side,) for a in given)
    assert len(bound) == len(synchronous)
    for (a, y), (b, z) in zip(synchronous, bound, strict=True):  # (nvJPEG may split the
        assert torch.equal(y, z)  # images between its decoders differently: not bit-exact)
        assert (a - b).abs().mean() < 0.01 * a.abs().mean()


def test_a_dali_run_on_the_gpu(cache_dir, tmp_path):
    pytest.importorskip("nvidia.dali", reason="NVIDIA DALI is not installed")
    overrides = gpu_overrides(cache_dir, tmp_path, "data.loader=dali", "data.dali_device=gpu",
                              "data.lighting=0.1", "trainer.max_epochs=2")  # fmt: skip
    train(compose_train(overrides, out=tmp_path))
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["status"] == "finished" and results["epochs"] == 2
