"""A run's record is never lost: refused and finished resumes change nothing, a resume keeps the
history and metrics.csv whole, a batch size change is refused mid-epoch and recorded at an epoch
boundary (in-process runs, CPU)."""

import csv
import hashlib
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from helpers import compose_train, tiny_overrides
from omegaconf import OmegaConf

from cnnzoo.callbacks import RunRecord
from cnnzoo.tasks.folders import OWNER_FILE
from cnnzoo.tasks.launch import resume_args
from cnnzoo.tasks.train import train


def snapshot(run: Path) -> dict[str, str]:
    """Every file of a run folder with its content hash (a resume's own .hydra/ and the owner
    lock aside)."""
    return {
        str(p.relative_to(run)): hashlib.md5(p.read_bytes()).hexdigest()
        for p in sorted(run.rglob("*"))
        if p.is_file() and "resumed_" not in str(p) and p.name != OWNER_FILE
    }


def first_run(cache_dir, run: Path, *extra: str) -> None:
    overrides = [*tiny_overrides(cache_dir, run), "logger=csv", "trainer.max_epochs=2", *extra]
    cfg = compose_train(overrides, out=run)
    train(cfg)
    (run / ".hydra").mkdir(exist_ok=True)  # what train.py's Hydra keeps of a run
    OmegaConf.save(cfg, run / ".hydra" / "config.yaml")
    (run / ".hydra" / "overrides.yaml").write_text(
        "\n".join(f"- {o}" for o in overrides if not o.startswith("paths.")) + "\n"
    )


def resume(run: Path, *args: str) -> float | None:
    """``train.py resume=RUN ARGS`` in this process."""
    overrides = [o for o in resume_args(run, list(args)) if not o.startswith("hydra.")]
    return train(compose_train(overrides, out=run))


def csv_rows(run: Path) -> list[dict[str, str]]:
    return list(csv.DictReader((run / "metrics.csv").open()))


@pytest.fixture
def finished(cache_dir, tmp_path, offline_env) -> Path:
    run = tmp_path / "run"
    first_run(cache_dir, run)
    return run


def test_a_refused_resume_changes_nothing(finished, capsys):
    before = snapshot(finished)
    for wrong in (["model=alexnet"], ["data.num_classes=5"]):
        with pytest.raises(SystemExit) as e:
            resume(finished, *wrong)
        assert e.value.code == 1
        assert "nothing was changed" in capsys.readouterr().err
    assert snapshot(finished) == before


def test_resuming_a_finished_run_says_so_and_more_epochs_keep_the_record(finished, capsys):
    before = snapshot(finished)
    results = json.loads((finished / "results.json").read_text())
    assert [h["epoch"] for h in results["val_history"]] == [0, 1]  # every epoch, not to the best
    assert resume(finished) == results["optimized_metric_value"]
    assert "finished its 2 epochs" in capsys.readouterr().out
    assert snapshot(finished) == before

    resume(finished, "trainer.max_epochs=3")
    longer = json.loads((finished / "results.json").read_text())
    assert longer["status"] == "finished" and longer["epochs"] == 3
    assert [h["epoch"] for h in longer["val_history"]] == [0, 1, 2]
    assert longer["wall_time_s"] > results["wall_time_s"]
    rows = csv_rows(finished)
    val_epochs = [r["epoch"] for r in rows if r.get("val/acc_top1")]
    assert val_epochs == ["0", "1", "2"]  # the whole run, once (Lightning's logger kept epoch 2)
    assert len([r for r in rows if r.get("test/acc_top1")]) == 1


def test_a_requeued_sweep_job_keeps_the_record(finished, cache_dir, monkeypatch, recwarn):
    """A sweep job that SLURM runs again after a requeue (submitit re-runs it in its own folder,
    without resume=) continues as resume= does: metrics.csv and results.json keep the run."""
    from cnnzoo.tasks import train as train_task

    results = json.loads((finished / "results.json").read_text())
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    monkeypatch.setattr(train_task, "in_sweep", lambda: True)  # (as tasks.sweep.in_sweep)
    overrides = [*tiny_overrides(cache_dir, finished), "logger=csv", "trainer.max_epochs=3"]
    train(compose_train(overrides, out=finished))
    longer = json.loads((finished / "results.json").read_text())
    assert longer["status"] == "finished" and longer["epochs"] == 3
    assert [h["epoch"] for h in longer["val_history"]] == [0, 1, 2]
    assert longer["wall_time_s"] > results["wall_time_s"]
    assert [r["epoch"] for r in csv_rows(finished) if r.get("val/acc_top1")] == ["0", "1", "2"]
    assert not [w for w in recwarn if "will be deleted" in str(w.message)]


def test_a_new_run_is_not_warned_that_its_logs_will_be_deleted(cache_dir, tmp_path, recwarn):
    """Lightning's CSV logger warns that "previous log files will be deleted" of any folder that
    holds files; a new run's folder holds Hydra's (.hydra/, train.log), and no metrics.csv."""
    (tmp_path / "train.log").write_text("Hydra's log\n")
    first_run(cache_dir, tmp_path, "trainer.max_epochs=1")
    assert (tmp_path / "train.log").read_text() == "Hydra's log\n"
    assert not [str(w.message) for w in recwarn if "will be deleted" in str(w.message)]


def test_history_never_shrinks_to_an_older_checkpoints_copy(tmp_path):
    history = RunRecord(tmp_path, write=False)
    history.load_state_dict({"entries": [{"epoch": 0}, {"epoch": 1}]})
    history.load_state_dict({"entries": [{"epoch": 0}]})  # the best checkpoint, reloaded to test
    assert [e["epoch"] for e in history.entries] == [0, 1]
    assert not (tmp_path / "results.json").exists()  # (a rank that does not write)


def test_the_record_shows_each_validation_as_it_happens(tmp_path):
    """results.json gets every validation's metrics (and the best so far) when it ends, not only
    when the run finishes: a running run's progress is readable (report.py, a user's cat)."""
    record = RunRecord(tmp_path / "run", {"status": "running", "model": "resnet18"})
    metrics = {"val/acc_top1": 0.25, "train/loss": 2.0}
    trainer = SimpleNamespace(
        sanity_checking=False, current_epoch=0, global_step=3, callback_metrics=metrics
    )
    record.on_validation_end(trainer, None)
    trainer.current_epoch, trainer.global_step = 1, 6
    trainer.callback_metrics = {"val/acc_top1": 0.125}
    record.on_validation_end(trainer, None)
    written = json.loads((tmp_path / "run" / "results.json").read_text())
    assert written["status"] == "running" and written["model"] == "resnet18"
    assert [(h["epoch"], h["step"], h["val/acc_top1"]) for h in written["val_history"]] == [
        (0, 3, 0.25), (1, 6, 0.125)
    ]  # fmt: skip
    assert written["best_val"]["epoch"] == 0 and "train/loss" not in written["best_val"]
    assert not list((tmp_path / "run").glob(".results.json.*"))  # no temporary file left
    trainer.sanity_checking = True  # the sanity check before training is no validation epoch
    record.on_validation_end(trainer, None)
    assert len(json.loads((tmp_path / "run" / "results.json").read_text())["val_history"]) == 2


def test_each_checkpoint_holds_the_history_up_to_its_own_validation(finished):
    """The history travels in checkpoints under the key it always had: the last.ckpt of a
    2-epoch run holds both epochs, so a resume from it (also of a checkpoint written before
    RunRecord) keeps the whole history."""
    last = torch.load(finished / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert [e["epoch"] for e in last["callbacks"]["MetricHistory"]["entries"]] == [0, 1]


def test_another_batch_size_is_refused_mid_epoch_and_recorded_at_a_boundary(
    cache_dir, tmp_path, offline_env, capsys
):
    run, steps = tmp_path / "run", tmp_path / "steps"
    first_run(cache_dir, run, "+callbacks.mid._target_=pytorch_lightning.callbacks.ModelCheckpoint",
              f"+callbacks.mid.dirpath={steps}", "+callbacks.mid.every_n_train_steps=2",
              "+callbacks.mid.save_top_k=-1")  # fmt: skip
    before = snapshot(run)
    mid = compose_train([*tiny_overrides(cache_dir, run), "logger=csv", "data.batch_size=16",
                         f"ckpt_path='{steps / 'epoch=0-step=2.ckpt'}'"], out=run)  # fmt: skip
    with pytest.raises(SystemExit):
        train(mid)
    assert "saved in the middle of epoch 0 with global batch 8" in capsys.readouterr().err
    assert snapshot(run) == before
    resume(run, "data.batch_size=16", "trainer.max_epochs=3")  # from last.ckpt: epoch 1's end
    results = json.loads((run / "results.json").read_text())
    assert results["batch_sizes"] == [{"from_epoch": 0, "global_batch_size": 8},
                                      {"from_epoch": 2, "global_batch_size": 16}]  # fmt: skip
    assert results["global_batch_size"] == 16


def test_a_moved_run_resumes_with_its_best_checkpoint(cache_dir, tmp_path, offline_env, recwarn):
    """Paths inside a run follow the folder: resumed after a move, the run keeps its best score
    and files (Lightning's forgot them: a 'best-v1.ckpt' was tested instead of best.ckpt)."""
    old, new = tmp_path / "old", tmp_path / "moved"
    first_run(cache_dir, old, "trainer.max_epochs=1")
    old.rename(new)
    resume(new, "trainer.max_epochs=2")
    assert sorted(p.name for p in (new / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    results = json.loads((new / "results.json").read_text())
    assert results["best_checkpoint"] == str(new / "checkpoints" / "best.ckpt")
    best = max(results["val_history"], key=lambda h: h["val/acc_top1"])
    assert results["best_val"]["val/acc_top1"] == best["val/acc_top1"]
    assert not [str(w.message) for w in recwarn if "dirpath has changed" in str(w.message)]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.batch_size=0", "data.batch_size=0: give the global batch as a positive whole"),
        ("model.lr=fast", "optim.lr='fast' (model.lr unless set): give a number"),
        ("trainer.max_epochs=0", "trainer.max_epochs=0: give the number of epochs to train"),
        ("trainer.max_epochs=-1", "trainer.max_epochs=-1: give the number of epochs to train"),
        ("trainer.max_epochs=null", "trainer.max_epochs=null: give the number of epochs"),
        ("trainer.limit_train_batches=abc", "trainer.limit_train_batches='abc': give a number"),
        ("trainer.limit_val_batches=1.5", "trainer.limit_val_batches=1.5: give a number of"),
        ("trainer.accumulate_grad_batches=0", "trainer.accumulate_grad_batches=0: give the"),
        ("trainer.gradient_clip_val=-1", "trainer.gradient_clip_val=-1: give the largest"),
        ("data.mixup_alpha=-1", "data.mixup_alpha=-1: give 0 (off) or a positive number"),
        ("callbacks=ema callbacks.ema.decay=2", "callbacks.ema.decay=2: choose a value between"),
        ("callbacks=ema callbacks.ema.every_n_steps=0", "callbacks.ema.every_n_steps=0: give a"),
        ("scheduler=step scheduler.scheduler.step_size=0", "scheduler.scheduler.step_size=0: give"),
        ("scheduler=step scheduler.scheduler.gamma=-1", "scheduler.scheduler.gamma=-1: give the"),
        ("scheduler=cosine scheduler.scheduler.T_max=0", "scheduler.scheduler.T_max=0: give the"),
        ("scheduler.warmup_epochs=-1", "scheduler.warmup_epochs=-1: give 0 (none) or a number"),
        ("scheduler.interval=batch", "scheduler.interval='batch': choose epoch or step"),
        (
            "scheduler=plateau scheduler.monitor=val/acc",
            "scheduler.monitor='val/acc': not a metric",
        ),
        ("optim.head_lr_mult=-1", "optim.head_lr_mult=-1: give 0 or a positive number"),
        ("model.lr=0", "optim.lr=0 (model.lr unless set): give a positive learning rate"),
        ("++label_smoothing=2", "label_smoothing=2: give a number in [0, 1)"),
        ("data.hflip=maybe", "data.hflip='maybe': choose true or false"),
        ("model.small_input=maybe", "model.small_input='maybe': choose true or false"),
        ("optim.no_decay_norm_bias=maybe", "optim.no_decay_norm_bias='maybe': choose true or"),
        ("data.pin_memory=maybe", "data.pin_memory='maybe': choose true or false"),
        ("data.normalize_on_device=1", "data.normalize_on_device=1: choose true, false or null"),
        ("data.shuffle_seed=abc", "data.shuffle_seed='abc': give a whole number"),
        ("data.train_crop_scale=[0,0]", "data.train_crop_scale=[0.0, 0.0]: give the crop's share"),
        ("data.lighting=-1", "data.lighting=-1: give 0 (off) or a positive number"),
        ("model=alexnet model.dropout=2", "model.dropout=2: give the probability of dropping"),
        ("model=densenet121 model.drop_rate=-1", "model.drop_rate=-1: give the probability"),
        ("model.eval_resize=null", "data.eval_resize=None (model.eval_resize unless set): give"),
        ("model.input_size=abc", "data.image_size='abc' (model.input_size unless set): give a"),
        ("data.num_classes=7", "data.num_classes=7 with 10 class folders"),
        ("data.train_crop_scale=0.5", "data.train_crop_scale=0.5: give a range of two numbers"),
        ("data.scale_jitter=[512,256]", "data.scale_jitter=[512, 256]: give a range of two"),
        ("model.aux_weights=0.3", "model.aux_weights=0.3: give one loss weight per auxiliary"),
        ("optim.momentum=-1", "optim: SGD refused its settings (Invalid momentum value: -1)"),
        ("trainer.precision=17", "trainer: Precision 17 is invalid. Allowed precision values"),
        ("trainer.devices=-1", "trainer: `devices` selected with `CPUAccelerator` should be"),
        ("seed=abc", "seed='abc': give a whole number"),
        ("seed=-3", "seed=-3: give a whole number from 0 to 2^32 - 1"),
        ("data.samples_per_class=0", "data.samples_per_class=0: give a whole number of images"),
        pytest.param(
            "trainer=gpu",
            "trainer.accelerator=gpu asks for a CUDA GPU, but PyTorch sees none",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is here"),
        ),
    ],
)
def test_bad_values_are_one_line_and_no_traceback(cache_dir, tmp_path, capsys, override, message):
    given = override.split(" ")
    cfg = compose_train([*tiny_overrides(cache_dir, tmp_path), "logger=none", *given], tmp_path)
    with pytest.raises(SystemExit) as e:
        train(cfg)
    assert e.value.code == 1
    err = capsys.readouterr().err
    assert f"error: {message}" in err and "Traceback" not in err
    recorded = json.loads((tmp_path / "results.json").read_text())["error"]
    assert message in recorded and "\n" not in recorded  # (not Hydra's 3-line wrapper of it)


def test_ctrl_c_before_training_is_one_line_and_recorded(cache_dir, tmp_path, capsys, monkeypatch):
    """Ctrl-C while the data is read or the network built (before Lightning's own handling)
    printed the traceback of whatever ran and left the folder without results.json."""
    import cnnzoo.tasks.train as train_task

    def interrupted(cfg):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_task, "build_module", interrupted)
    cfg = compose_train([*tiny_overrides(cache_dir, tmp_path), "logger=none"], tmp_path)
    with pytest.raises(SystemExit) as e:
        train(cfg)
    assert e.value.code == 130
    err = capsys.readouterr().err
    assert "interrupted (Ctrl-C): before training began; nothing was trained" in err
    assert "Traceback" not in err
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["status"] == "interrupted" and "before training began" in results["error"]
    assert not (tmp_path / "checkpoints").exists()


def test_ctrl_c_in_eval_and_predict_is_one_line(capsys):
    from cnnzoo.tasks.cli import exit_on_user_error

    def scoring():
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as e:
        exit_on_user_error(scoring)()
    assert e.value.code == 130 and capsys.readouterr().err == "\ninterrupted (Ctrl-C)\n"


def test_the_summary_prints_paths_as_they_are(capsys):
    """Folder names may hold rich markup ([...]) or emoji codes (:x:); the summary printed
    them as styles and emoji (or failed on a stray [/...])."""
    out = "runs/[bold]a[/bold]:x:b[/z]"
    from cnnzoo.summary import print_summary

    print_summary(
        {
            "model": "resnet18",
            "metrics": {"val/acc_top1": 0.5},
            "wall_time_s": 61.0,
            "epochs": 1,
            "global_step": 3,
            "global_batch_size": 8,
            "lr": 0.1,
            "best_checkpoint": f"{out}/checkpoints/best.ckpt",
            "config": f"{out}/.hydra/config.yaml",
            "output_dir": out,
            "wandb": None,
        }
    )
    printed = capsys.readouterr().out
    assert f"best checkpoint: {out}/checkpoints/best.ckpt" in printed
    assert f"results:         {out}/results.json" in printed


SCHEDULES = {
    "cosine": ["scheduler=cosine"],
    "cosine_warmup": ["scheduler=cosine", "scheduler.warmup_epochs=1"],
    "step": ["scheduler=step", "scheduler.scheduler.step_size=1", "scheduler.scheduler.gamma=0.5"],
    "multistep": ["scheduler=multistep", "scheduler.scheduler.milestones=[1,2]"],
    "exponential": ["scheduler=exponential", "scheduler.scheduler.step_size=1"],
    "plateau": ["scheduler=plateau", "scheduler.scheduler.patience=0"],
    "none": ["scheduler=none"],
}


@pytest.mark.slow
@pytest.mark.parametrize("schedule", list(SCHEDULES.values()), ids=list(SCHEDULES))
def test_training_a_run_longer_follows_the_schedule_it_would_have_had(
    schedule, cache_dir, tmp_path, offline_env
):
    """resume=RUN trainer.max_epochs=3 after 1 epoch trains at the lr of each epoch of a
    straight 3-epoch run (the cosine restarted from its peak after reaching 0)."""
    lrs = {}
    for way in ("straight", "resumed"):
        run, record = tmp_path / way, tmp_path / f"{way}.txt"
        probe = ["+callbacks.lrs._target_=probes.LrRecorder", f"+callbacks.lrs.path={record}"]
        epochs = "trainer.max_epochs=" + ("3" if way == "straight" else "1")
        overrides = [*tiny_overrides(cache_dir, run), "logger=csv", "optim=sgd_momentum",
                     *schedule, *probe, epochs]  # fmt: skip
        train(compose_train(overrides, out=run))
        if way == "resumed":  # (what train.py's Hydra keeps of a run, as first_run writes it)
            (run / ".hydra").mkdir(exist_ok=True)
            kept = [o for o in overrides if not o.startswith("paths.")]
            (run / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in kept))
            resume(run, "trainer.max_epochs=3")
        lrs[way] = dict(map(str.split, record.read_text().splitlines()))
        history = json.loads((run / "results.json").read_text())["val_history"]
        recorded = [h["lr"] for h in history]  # the record's lr per epoch is the one used
        assert recorded == pytest.approx([float(lr) for lr in lrs[way].values()], rel=1e-6)
    assert list(lrs["resumed"]) == ["0", "1", "2"]
    straight = [float(lr) for lr in lrs["straight"].values()]
    assert [float(lr) for lr in lrs["resumed"].values()] == pytest.approx(straight, rel=1e-6)


ASKED_ON_RESUME = [
    ["optim.momentum=0.5"],
    ["optim.weight_decay=0", "optim.no_decay_norm_bias=true"],
    ["optim=nesterov"],
    ["scheduler=cosine"],
    ["scheduler.warmup_epochs=1"],
    ["optim.optimizer.momentum=0.5"],  # (the optimiser's own argument, past optim.momentum)
]


def test_other_optimiser_or_schedule_settings_on_a_resume_are_refused(finished, capsys):
    """Lightning restores the optimiser's and schedulers' settings with their states: a new
    momentum, weight decay or schedule was recorded and not used (or failed in Lightning)."""
    before = snapshot(finished)
    for asked in ASKED_ON_RESUME:
        with pytest.raises(SystemExit):
            resume(finished, "trainer.max_epochs=3", *asked)
        err = capsys.readouterr().err
        assert "would not be used. Nothing was changed" in err, asked
        assert f"model.weights={finished}/checkpoints/best.ckpt." in err
        for override in asked:
            if "." in override.split("=")[0]:  # (a group choice is named by what it changes)
                assert override in err
        if asked == ["scheduler=cosine"]:
            assert "trained with scheduler StepLR; " in err
            assert "so scheduler CosineAnnealingLR " in err
        if asked == ["optim=nesterov"]:
            assert "trained with optim.nesterov=false; " in err
        assert snapshot(finished) == before


def test_a_new_lr_on_a_resume_is_refused_naming_a_new_run_from_its_weights(finished, capsys):
    before = snapshot(finished)
    with pytest.raises(SystemExit):
        resume(finished, "trainer.max_epochs=3", "model.lr=0.5")
    err = capsys.readouterr().err
    assert "lr 0.5 would not be used. Nothing was changed" in err
    assert f"model.weights={finished}/checkpoints/best.ckpt model.lr=0.5" in err
    assert snapshot(finished) == before
