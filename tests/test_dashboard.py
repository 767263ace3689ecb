"""What a W&B dashboard shows of cnnzoo's runs, read back where W&B reads it: the offline run's
``.wandb`` record file (what ``wandb sync`` uploads; ``wandb_records``)."""

import json
from pathlib import Path

import pytest
from helpers import TINY_SAMPLE, run_train, tiny_overrides
from wandb_records import read_run

from cnnzoo import report

pytestmark = pytest.mark.slow


def one_run(folder: Path) -> Path:
    (run,) = (folder / "outputs" / "train").iterdir()
    return run


def wandb_run(run: Path):
    (offline,) = (run / "wandb").glob("offline-run-*")
    return offline, read_run(offline)


def test_the_runs_table_shows_the_best_epoch_the_facts_and_the_test_split(
    cache_dir, tmp_path, offline_env
):
    args = [*tiny_overrides(cache_dir, None), "logger=wandb", "trainer.max_epochs=3",
            "optim.no_decay_norm_bias=true", "logger.wandb.log_model=true"]  # fmt: skip
    proc = run_train(args, offline_env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = one_run(tmp_path)
    record = json.loads((run / "results.json").read_text())
    folder, wandb = wandb_run(run)
    summary, history = wandb.summary, wandb.history
    assert wandb.exit_code == 0 and wandb.run.job_type == "train" and wandb.run.run_group == ""

    # each val metric's best, not its last; and the epoch of the best top-1 with its figures
    val = [row for row in history if "val/acc_top1" in row]
    assert len(val) == 3
    for name, best in (("acc_top1", max), ("acc_top5", max), ("err_top1", min), ("loss", min)):
        wanted = "max" if best is max else "min"
        assert summary[f"val/{name}"] == {wanted: best(row[f"val/{name}"] for row in val)}
    assert summary["best/epoch"] == record["best_val"]["epoch"]
    assert summary["best/val_acc_top1"] == pytest.approx(record["best_val"]["val/acc_top1"])

    # the run's facts, status and final test metrics, as its record has them
    for key in ("model", "num_params", "gmacs", "global_batch_size", "epochs", "wall_time_s"):
        assert summary[key] == record[key], key
    assert summary["status"] == "finished" and summary["error"] == ""
    assert summary["effective_lr"] == record["lr"]
    assert summary["perf/run_images_per_s"] == record["throughput"]["images_per_s"] > 0
    assert summary["test/acc_top1"] == pytest.approx(record["metrics"]["test/acc_top1"])

    # the learning rate of each parameter group (decayed weights, and norms and biases)
    lrs = {key for row in history for key in row if key.startswith("lr-")}
    assert lrs == {"lr-SGD/pg1", "lr-SGD/pg2"}

    # per-class accuracy as a table: its counts give Lightning's test top-1 (its own metric)
    table = json.loads((folder / "files" / summary["test/per_class"]["path"]).read_text())
    assert table["columns"][:5] == ["class", "name", "images", "correct", "accuracy"]
    names = [row[1] for row in table["data"]]
    assert len(names) == 10 and names[0] != "0"  # the sample set's class names
    images = sum(row[2] for row in table["data"])
    correct = sum(row[3] for row in table["data"])
    assert images == 10 * TINY_SAMPLE["val_per_class"]  # the test split: the val images
    assert correct / images == pytest.approx(summary["test/acc_top1"])
    # the confusion matrix as W&B's chart, every cell of the 10 x 10
    chart = wandb.config["_wandb"]["visualize"]["test/confusion_matrix"]
    assert chart["panel_config"]["panelDefId"] == "wandb/confusion_matrix/v1"
    cells = json.loads(
        (folder / "files" / summary["test/confusion_matrix_table"]["path"]).read_text()
    )
    assert len(cells["data"]) == 100 and sum(row[2] for row in cells["data"]) == images
    assert sum(row[2] for row in cells["data"] if row[0] == row[1]) == correct

    # logger.wandb.log_model=true: best.ckpt and the config as the run's model artifact
    (artifact,) = [a for a in wandb.artifacts if a.type == "model"]  # (tables are artifacts too)
    assert "best" in artifact.aliases
    files = {entry.path for entry in artifact.manifest.contents}
    assert files == {"best.ckpt", "config.yaml"}


def test_a_failed_run_says_so_in_w_and_b(cache_dir, tmp_path, offline_env):
    probes = {**offline_env, "PYTHONPATH": str(Path(__file__).parent)}
    args = [*tiny_overrides(cache_dir, None), "logger=wandb", "trainer.max_epochs=2",
            "+callbacks.poison._target_=probes.PoisonWeights"]  # fmt: skip
    proc = run_train(args, probes, cwd=tmp_path)
    assert proc.returncode == 1
    run = one_run(tmp_path)
    _, wandb = wandb_run(run)
    assert wandb.exit_code == 1 and wandb.summary["status"] == "failed"
    record = json.loads((run / "results.json").read_text())
    assert wandb.summary["error"] == record["error"].splitlines()[0]
    assert wandb.summary["error"].startswith("NonFiniteLossError: the training loss is nan")
    assert not [a for a in wandb.artifacts if a.type == "model"]  # (nothing to upload)


def test_a_sweep_is_one_group_its_jobs_say_what_they_vary_and_the_report_joins_it(
    cache_dir, tmp_path, offline_env
):
    args = ["-m", "seed=1,2", *tiny_overrides(cache_dir, None), "logger=wandb",
            "trainer.limit_train_batches=2"]  # fmt: skip
    proc = run_train(args, offline_env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep = one_run(tmp_path)
    jobs = sorted(p for p in sweep.iterdir() if (p / "results.json").is_file())
    runs = [wandb_run(job)[1].run for job in jobs]
    assert [r.run_group for r in runs] == [sweep.name] * 2
    assert [r.job_type for r in runs] == ["seed=1", "seed=2"]  # (not the shared overrides)

    posting = run_train([str(sweep), "--wandb"], offline_env, cwd=tmp_path, script="report.py")
    assert posting.returncode == 0, posting.stderr[-3000:]
    assert f"W&B: {sweep / 'wandb'}/offline-run-" in posting.stdout
    (offline,) = (sweep / "wandb").glob("offline-run-*")
    posted = read_run(offline)
    assert posted.run.run_group == sweep.name and posted.run.job_type == "report"
    assert posted.exit_code == 0
    (row,) = [row for row in posted.history if "report/curves" in row]
    assert row["report/curves"]["_type"] == "image-file"
    assert row["report/runs"]["nrows"] == 2
    assert "Final validation error" in posted.summary["findings"]
    # runs of two sweeps have no one group to go to
    other = tmp_path / "other"
    other.mkdir()
    (other / "0_x").mkdir()
    (other / "0_x" / "results.json").write_text("{}")
    assert report.main([str(sweep / jobs[0].name), str(other), "--wandb", "--out",
                        str(tmp_path / "r")]) == 2  # fmt: skip
    # nor has a run of its own
    assert report.main([str(other), "--wandb", "--out", str(tmp_path / "r")]) == 2
    assert not (tmp_path / "r" / "wandb").exists()
