"""The train task end to end: in-process through the real config, and as the user runs it."""

import json
from pathlib import Path

import pytest
from helpers import ROOT, compose_train, run_train, tiny_overrides
from omegaconf import OmegaConf

from cnnzoo.data import images
from cnnzoo.tasks.train import train

METRICS = [
    "val/acc_top1",
    "val/acc_top5",
    "val/err_top1",
    "val/err_top5",
    "val/loss",
    "test/acc_top1",
    "test/acc_top5",
    "test/err_top1",
    "test/err_top5",
    "train/loss",
]


def test_fast_dev_run_through_the_real_config(cache_dir, tmp_path, offline_env):
    cfg = compose_train(tiny_overrides(cache_dir, tmp_path) + ["debug=fast"], out=tmp_path)
    value = train(cfg)
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["model"] == "resnet18"
    assert results["decoding"] == images.decoder_in_use("torchcodec")  # (what really decoded)
    assert set(METRICS) <= set(results["metrics"])
    assert value == results["metrics"]["val/acc_top1"] == results["optimized_metric_value"]
    assert 0.0 <= value <= 1.0


def tiny_run(extra: list[str], cache_dir: Path, tmp_path: Path, env: dict):
    """Run ``train.py`` on the tiny sample set; return its output and its run folder."""
    proc = run_train([*tiny_overrides(cache_dir, tmp_path), *extra], env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = (tmp_path / "outputs" / "train").iterdir()
    return proc, run


@pytest.mark.slow
def test_train_py_writes_a_self_describing_run_folder(cache_dir, tmp_path, offline_env):
    """One run as a user starts it, logging to W&B (offline: no credentials) and CSV together,
    with the prediction grid on."""
    grid = "callbacks.prediction_grid={_target_:cnnzoo.callbacks.PredictionGrid,images:4,times:1}"
    proc, run = tiny_run(["logger=[wandb,csv]", grid], cache_dir, tmp_path, offline_env)
    results = json.loads((run / "results.json").read_text())
    assert set(METRICS) <= set(results["metrics"])
    for stage in ("val", "test"):  # every one of the 40 val images counted once (micro average)
        metrics = results["metrics"]
        top1, top5 = metrics[f"{stage}/acc_top1"], metrics[f"{stage}/acc_top5"]
        assert top1 <= top5 and metrics[f"{stage}/err_top5"] == pytest.approx(1 - top5)
        assert round(40 * top1) == pytest.approx(40 * top1, abs=1e-4)
    assert Path(results["best_checkpoint"]) == run / "checkpoints" / "best.ckpt"
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert results["global_batch_size"] == 8 and results["lr"] == 0.1
    assert results["epochs"] == 1 and results["wall_time_s"] > 0
    assert (run / ".hydra" / "config.yaml").is_file()
    # The summary names the architecture, the metrics and where everything is.
    for text in ("resnet18", "top-1 acc", "top-5 err", "best.ckpt", "wandb sync"):
        assert text in proc.stdout

    # W&B: the offline run holds the config, the run's facts and the prediction grid.
    (wandb_run,) = (run / "wandb").glob("offline-run-*")
    (image,) = (wandb_run / "files" / "media" / "images" / "val").glob("predictions_*.png")
    assert image.stat().st_size > 5_000
    (record,) = wandb_run.glob("*.wandb")
    data = record.read_bytes()  # the run's records: config keys with their JSON values
    for key, value in [
        (b"optimized_metric", b'"val/acc_top1"'),
        (b"num_params", b"11181642"),
        (b"global_batch_size", b"8"),
    ]:
        at = data.find(key)
        assert at >= 0 and value in data[at : at + 40], key
    # CSV beside it
    header = (run / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"epoch", "val/acc_top1", "val/err_top5", "train/loss"} <= set(header)


@pytest.mark.slow
def test_sweep_with_a_failing_job_tracks_reports_and_goes_on(cache_dir, tmp_path, offline_env):
    """A 3-job grid sweep whose middle job fails (momentum -1 is refused after W&B started):
    one folder and one offline W&B run per job (distinct ids, one group), the failure recorded
    and the last job still run, exit status 1; report.py over the sweep equals the results."""
    import csv

    from cnnzoo.report import main as report_main

    args = ["-m", "optim.momentum=0.0,-1.0,0.9", "experiment=quickstart",
            *tiny_overrides(cache_dir, tmp_path), "logger=wandb"]  # fmt: skip
    proc = run_train(args, offline_env, cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr[-3000:]
    (sweep,) = (tmp_path / "outputs" / "train").glob("multirun_*")
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert [p.name for p in jobs] == ["0_resnet18", "1_resnet18", "2_resnet18"]
    assert "1 sweep job(s) failed" in proc.stderr and str(jobs[1]) in proc.stderr
    results = [json.loads((j / "results.json").read_text()) for j in jobs]
    assert [r["status"] for r in results] == ["finished", "failed", "finished"]
    assert "Invalid momentum value: -1.0" in results[1]["error"]
    assert [results[0]["optim"]["momentum"], results[2]["optim"]["momentum"]] == [0.0, 0.9]
    runs = [next((j / "wandb").glob("offline-run-*")) for j in jobs]
    ids = {run.name.rsplit("-", 1)[1] for run in runs}
    assert len(ids) == 3  # the failed job's run was finished, not reused by the next job
    for run in runs:  # grouped by the sweep folder's name
        assert sweep.name.encode() in next(run.glob("*.wandb")).read_bytes()

    assert report_main([str(sweep)]) == 0
    with open(sweep / "report.csv") as f:
        rows = {row["run"]: row for row in csv.DictReader(f)}
    assert set(rows) == {j.name for j in jobs}
    for job, result in zip(jobs, results, strict=True):
        row = rows[job.name]
        assert row["status"].startswith(result["status"])
        if result["status"] == "finished":
            assert float(row["test_err_top1"]) == result["metrics"]["test/err_top1"]
            assert float(row["val_err_top1"]) == 1 - result["best_val"]["val/acc_top1"]
            assert float(row["gflops"]) == result["gmacs"]
            speed = (result["throughput"] or {}).get("images_per_s")  # None: all in warm-up
            assert row["images_per_s"] == ("" if speed is None else str(speed))
    assert list(rows)[-1] == "1_resnet18"  # sorted by error, the failed job last
    assert (sweep / "report.png").stat().st_size > 10_000
    assert "| 1_resnet18 |" in (sweep / "report.md").read_text()


@pytest.mark.slow
def test_optuna_search_runs_its_trials_and_keeps_the_best(cache_dir, tmp_path, offline_env):
    args = ["hparams_search=optuna", "hydra.sweeper.n_trials=3", "experiment=quickstart",
            *tiny_overrides(cache_dir, tmp_path), "logger=none"]  # fmt: skip
    proc = run_train(args, offline_env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (sweep,) = (tmp_path / "outputs" / "train").glob("multirun_*")
    values = [json.loads(p.read_text())["optimized_metric_value"]
              for p in sorted(sweep.glob("*/results.json"))]  # fmt: skip
    lrs = {json.loads(p.read_text())["lr"] for p in sweep.glob("*/results.json")}
    assert len(values) == 3 and len(lrs) == 3  # three trials, three sampled learning rates
    best = OmegaConf.load(sweep / "optimization_results.yaml")
    assert best.best_value == max(values)
    assert set(best.best_params) == {"model.lr", "optim.weight_decay", "optim.momentum"}


@pytest.mark.slow
def test_missing_imagenet_root_fails_at_once_without_a_traceback(tmp_path, offline_env):
    missing = tmp_path / "imagenet"
    proc = run_train(["data=imagenet", f"data.root={missing}"], offline_env, cwd=tmp_path)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert str(missing) in proc.stderr and "ROOT/train/<wnid>/*.JPEG" in proc.stderr
    assert "IMAGENET_ROOT" in proc.stderr


@pytest.mark.slow
def test_unknown_model_lists_choices_on_the_command_line(tmp_path, offline_env):
    proc = run_train(["model=resnet9"], offline_env, cwd=tmp_path)
    assert proc.returncode != 0
    assert "resnet9" in proc.stderr and "resnet18" in proc.stderr


def test_wandb_run_is_finished_when_training_fails(cache_dir, tmp_path, offline_env, capsys):
    import wandb

    cfg = compose_train([*tiny_overrides(cache_dir, tmp_path), "optim.momentum=-1"], tmp_path)
    with pytest.raises(SystemExit):
        train(cfg)  # fails in configure_optimizers, after the W&B run has started
    assert "optim: SGD refused its settings (Invalid momentum value: -1" in capsys.readouterr().err
    assert (tmp_path / "wandb").is_dir()
    assert wandb.run is None


def test_trained_weights_load_into_torchvision_and_refuse_another_arch(
    cache_dir, tmp_path, offline_env, capsys
):
    import torch
    import torchvision

    from cnnzoo.models import create_model
    from cnnzoo.models.weights import net_state_dict
    from cnnzoo.module import ClassificationModule

    cfg = compose_train([*tiny_overrides(cache_dir, tmp_path), "logger=none"], out=tmp_path)
    train(cfg)
    best = tmp_path / "checkpoints" / "best.ckpt"
    plain = torchvision.models.resnet18(num_classes=10).eval()
    plain.load_state_dict(net_state_dict(best))  # strict: same keys, same shapes
    ours = ClassificationModule.load_from_checkpoint(
        best, net=create_model("resnet18", num_classes=10), optimizer=None
    ).eval()
    images = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(plain(images), ours(images))

    other = compose_train(
        [*tiny_overrides(cache_dir, tmp_path), "logger=none", "model=resnet34",
         f"ckpt_path={best}"],
        out=tmp_path / "other",
    )  # fmt: skip
    with pytest.raises(SystemExit):
        train(other)
    assert "checkpoint of arch 'resnet18' but this run has 'resnet34'" in capsys.readouterr().err


@pytest.mark.parametrize(("name", "heads"), [("googlenet", 2), ("inception_v3", 1)])
def test_inception_family_trains_and_logs_aux_losses(name, heads, cache_dir, tmp_path):
    overrides = [*tiny_overrides(cache_dir, tmp_path), f"model={name}", "model.small_input=true",
                 "model.input_size=32", "model.eval_resize=36", "logger=csv",
                 "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
                 "trainer.limit_test_batches=1"]  # fmt: skip
    train(compose_train(overrides, out=tmp_path))
    header = (tmp_path / "metrics.csv").read_text().splitlines()[0].split(",")
    expected = {"train/loss", "train/loss_main"} | {
        f"train/loss_aux{i}" for i in range(1, heads + 1)
    }
    assert expected <= set(header)
    assert f"train/loss_aux{heads + 1}" not in header


@pytest.mark.slow
def test_runs_record_size_cost_and_code_version(cache_dir, tmp_path, offline_env, capsys):
    """results.json and the loggers hold the parameters, multiply-adds and code version; the
    model summary at the start shows the network's FLOPs (Lightning's said 0 for every one)."""
    import subprocess

    import torch
    import yaml
    from pytorch_lightning.utilities.model_summary import get_human_readable_count

    from cnnzoo.models.stats import count_gmacs

    summary = "trainer.enable_model_summary=true"
    cfg = compose_train([*tiny_overrides(cache_dir, tmp_path), "logger=csv", summary], tmp_path)
    train(cfg)
    gmacs = count_gmacs("resnet18", 32, num_classes=10)
    flops = get_human_readable_count(int(2e9 * gmacs))
    assert flops != "0" and f"Total FLOPs: {flops}" in capsys.readouterr().out
    results = json.loads((tmp_path / "results.json").read_text())
    hparams = yaml.safe_load((tmp_path / "hparams.yaml").read_text())
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    for record in (results, hparams):
        assert record["num_params"] == 11_181_642
        assert record["gmacs"] == pytest.approx(gmacs)
        assert record["versions"]["torch"] == torch.__version__
        if commit.returncode == 0:  # a git checkout (CI's clean clone is one)
            assert record["git"]["commit"] == commit.stdout.strip()
            assert isinstance(record["git"]["dirty"], bool)


def test_prediction_grid_with_csv_and_tensorboard_together(cache_dir, tmp_path, offline_env):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    grid = "{_target_:cnnzoo.callbacks.PredictionGrid,images:6,times:2,columns:3}"
    overrides = [*tiny_overrides(cache_dir, tmp_path), "logger=[csv,tensorboard]",
                 f"callbacks.prediction_grid={grid}", "trainer.max_epochs=3",
                 "trainer.limit_train_batches=1"]  # fmt: skip
    train(compose_train(overrides, out=tmp_path))
    pngs = sorted((tmp_path / "predictions").glob("*.png"))
    assert [p.name for p in pngs] == ["epoch_000.png", "epoch_002.png"]  # first and last
    import numpy as np
    from PIL import Image

    with Image.open(pngs[-1]) as image:  # 2 rows x 3 columns of panels, not an empty canvas
        pixels = np.asarray(image.convert("L"))
        assert image.size[0] > 600 and len(np.unique(pixels)) > 50
    assert "val/acc_top1" in (tmp_path / "metrics.csv").read_text().splitlines()[0]
    assert not (tmp_path / "wandb").exists()  # no W&B unless asked for
    tags = EventAccumulator(str(tmp_path / "tensorboard")).Reload().Tags()
    assert "val/acc_top1" in tags["scalars"] and "val/predictions" in tags["images"]


@pytest.mark.slow
def test_an_interrupted_optuna_study_continues_in_its_database(cache_dir, tmp_path, offline_env):
    """hparams_search=optuna with sqlite storage: killed when its 3rd of 4 trials starts, the
    same command runs the 2 trials left in the same database (n_trials is the study's size)."""
    import optuna

    db = tmp_path / "optuna.db"
    args = ["hparams_search=optuna", "hydra.sweeper.n_trials=4", f"hydra.sweeper.storage=sqlite:///{db}",
            "experiment=quickstart", *tiny_overrides(cache_dir, None), "logger=none"]  # fmt: skip
    env = {**offline_env, "PYTHONPATH": str(ROOT / "tests")}
    crash = ["+callbacks.crash._target_=probes.ExitAfterJobs", "+callbacks.crash.jobs=2"]
    assert run_train([*args, *crash], env, cwd=tmp_path).returncode == 3
    proc = run_train(args, env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    study = optuna.load_study(study_name="resnet18_lr_wd", storage=f"sqlite:///{db}")
    states = [t.state.name for t in study.trials]
    assert states.count("COMPLETE") == 4 and states.count("RUNNING") == 1  # the killed one
    second = max((tmp_path / "outputs" / "train").glob("multirun_*"))
    assert len(list(second.glob("*/results.json"))) == 2


def test_lr_range_test_saves_its_plot_and_suggestion_and_trains_nothing(
    cache_dir, tmp_path, offline_env, capsys
):
    """With a warmed-up cosine schedule (quickstart's cosine: AttributeError; with a warm-up:
    IndexError): the range test replaces the run's schedulers with its own, where the cosine's
    horizon was looked for by position."""
    overrides = [*tiny_overrides(cache_dir, tmp_path), "scheduler=cosine",
                 "scheduler.warmup_epochs=1", "logger=none",
                 "tune=lr_find", "lr_find.steps=30", "trainer.limit_train_batches=null",
                 "optim.lr_scaling=linear"]  # fmt: skip
    suggested = train(compose_train(overrides, out=tmp_path))
    record = json.loads((tmp_path / "lr_find.json").read_text())
    assert len(record["lr"]) == len(record["loss"]) > 5
    assert record["lr"] == sorted(record["lr"])  # an increasing range
    assert suggested == record["suggested_lr"] and 1e-6 <= suggested <= 1.0
    # lr_scaling=linear: the optimiser's lr is model.lr x batch 8 / 256, so model.lr = lr x 32
    assert record["suggested_model_lr"] == pytest.approx(suggested * 256 / 8)
    assert f"model.lr={record['suggested_model_lr']:.3g}" in capsys.readouterr().out
    assert (tmp_path / "lr_find.png").stat().st_size > 10_000
    assert json.loads((tmp_path / "results.json").read_text())["status"] == "lr_find"
    assert not list((tmp_path / "checkpoints").glob("*.ckpt"))  # no training
    with pytest.raises(SystemExit):
        train(compose_train([*overrides[:-3], "tune=batch_size"], out=tmp_path / "other"))
    assert "tune='batch_size': the one tuning run is tune=lr_find" in capsys.readouterr().err
