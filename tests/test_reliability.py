"""Runs survive interruption, resume exactly, and never lose work (real processes, CPU)."""

import errno
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import ROOT, compose_train, run_train, tiny_overrides
from wandb_records import read_run

from cnnzoo.checkpointing import AtomicCheckpointIO
from cnnzoo.errors import ConfigError, UserError
from cnnzoo.tasks.folders import OWNER_FILE, unique_dir
from cnnzoo.tasks.train import train

# AlexNet has dropout; two workers with persistent workers, random crops and flips, shuffling.
EXACT = ["model=alexnet", "model.small_input=true", "data.num_workers=2", "seed=5"]


def weights(ckpt: Path) -> dict[str, torch.Tensor]:
    return torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]


def assert_identical(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    different = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not different, different


def only_run(outputs: Path) -> Path:
    (run,) = (outputs / "outputs" / "train").iterdir()
    return run


def wandb_ids(run: Path) -> set[str]:
    return {p.name.rsplit("-", 1)[1] for p in (run / "wandb").glob("offline-run-*")}


def exact_args(cache_dir: Path) -> list[str]:
    """4 steps per epoch, W&B offline."""
    return [
        *tiny_overrides(cache_dir, None),
        *EXACT,
        "logger=wandb",
        "trainer.limit_train_batches=4",
    ]


@pytest.fixture(scope="session")
def straight(cache_dir, tmp_path_factory) -> Path:
    """The uninterrupted 2-epoch run that every interrupted and resumed run must match (made once:
    with module scope, make test's worker made it again for the second test, 30 s)."""
    cwd = tmp_path_factory.mktemp("straight")
    env = {k: v for k, v in os.environ.items() if k not in ("WANDB_API_KEY", "WANDB_MODE")}
    env |= {"NETRC": str(cwd / "no-netrc"), "WANDB_CONFIG_DIR": str(cwd / "wandb-config")}
    proc = run_train([*exact_args(cache_dir), "trainer.max_epochs=2"], env, cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return only_run(cwd)


@pytest.mark.slow
@pytest.mark.xdist_group("straight")  # (the fixture they share is made once)
def test_resume_at_an_epoch_boundary_is_exact(cache_dir, tmp_path, offline_env, straight):
    args = exact_args(cache_dir)
    split = tmp_path / "split"
    split.mkdir()
    proc = run_train([*args, "trainer.max_epochs=1"], offline_env, cwd=split)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = only_run(split)
    config_before = (run / ".hydra" / "config.yaml").read_text()
    # a resume that is refused, or that finds the run finished, leaves the folder as it was
    # (not even a .hydra/resumed_<time>/ of the attempt)
    recorded = files_of(run)
    refused = run_train([f"resume={run}", "model=vgg11"], offline_env, cwd=split)
    assert refused.returncode == 1 and "nothing was changed" in refused.stderr, refused.stderr
    done = run_train([f"resume={run}"], offline_env, cwd=split)
    assert done.returncode == 0 and "finished its 1 epochs" in done.stdout, done.stderr[-3000:]
    assert files_of(run) == recorded
    proc = run_train([f"resume={run}", "trainer.max_epochs=2"], offline_env, cwd=split)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert only_run(split) == run  # continued in the same folder

    assert_identical(straight / "checkpoints" / "last.ckpt", run / "checkpoints" / "last.ckpt")
    a, b = (json.loads((r / "results.json").read_text()) for r in (straight, run))
    assert a["epochs"] == b["epochs"] == 2 and a["global_step"] == b["global_step"] == 8
    for name in ("val/acc_top1", "val/loss", "train/loss", "test/acc_top1", "test/acc_top5"):
        assert a["metrics"][name] == b["metrics"][name], name
    # the run's own config stays; the resumed run's is kept beside it
    assert (run / ".hydra" / "config.yaml").read_text() == config_before
    assert list((run / ".hydra").glob("resumed_*/config.yaml"))
    assert len(wandb_ids(run)) == 1  # the same W&B run, continued
    assert len(list((run / "wandb").glob("offline-run-*"))) == 2


def files_of(run: Path) -> dict[str, bytes]:
    """Every file of a run folder and its bytes (the owner lock aside: it names the last pid)."""
    return {
        str(p.relative_to(run)): p.read_bytes()
        for p in run.rglob("*")
        if p.is_file() and p.name != OWNER_FILE
    }


def _run_until_step(args, env, cwd, step: int, new_session: bool = False) -> subprocess.Popen:
    env = {**env, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT / "tests")}
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=new_session,  # (its own process group, to signal as a whole)
    )
    for line in proc.stdout:
        if line.strip() == f"STEP {step}":
            return proc
    raise AssertionError(f"the run ended before step {step}")


@pytest.mark.slow
@pytest.mark.xdist_group("straight")
def test_sigterm_mid_epoch_saves_and_the_resumed_run_matches_an_uninterrupted_one(
    cache_dir, tmp_path, offline_env, straight
):
    args = [*exact_args(cache_dir), "trainer.max_epochs=2"]
    split = tmp_path / "split"
    split.mkdir()

    slow = [*args, "+callbacks.slow._target_=probes.SlowSteps"]
    proc = _run_until_step(slow, offline_env, split, step=2)  # epoch 0, batch 2 of 4
    proc.send_signal(signal.SIGTERM)
    output = proc.stdout.read()
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    run = only_run(split)
    assert f"Resume with: python train.py resume={run}" in output, output[-2000:]
    assert "`weights_only` was not set" not in output  # (Lightning's log line when unset)
    assert "LeafSpec" not in output  # (Lightning 2.6 under torch 2.14 warns on every run)
    assert "litlogger" not in output  # (Lightning 2.6's "💡 Tip" on every Trainer)
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    assert 2 <= ckpt["global_step"] < 4  # saved mid-epoch
    record = json.loads((run / "results.json").read_text())
    assert record["status"] == "interrupted"  # and where, not Lightning's "SystemExit: 1"
    stopped = f"epoch 0, step {ckpt['global_step']}; saved last.ckpt"
    assert record["error"] == f"Interrupted: SIGTERM at {stopped}"
    (offline,) = (run / "wandb").glob("offline-run-*")  # W&B says so too
    wandb = read_run(offline)
    assert wandb.exit_code == 128 + signal.SIGTERM and wandb.summary["status"] == "interrupted"
    assert wandb.summary["error"] == record["error"]

    probes = {**offline_env, "PYTHONPATH": str(ROOT / "tests")}  # the run's probe callback
    proc = run_train([f"resume={run}"], probes, cwd=split)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((run / "results.json").read_text())
    assert results["global_step"] == 8
    assert_identical(straight / "checkpoints" / "last.ckpt", run / "checkpoints" / "last.ckpt")


@pytest.mark.slow
def test_sigterm_to_the_process_group_is_an_interruption_too(cache_dir, tmp_path, offline_env):
    """``kill -TERM -PGID`` (a scheduler ending a job, ``pkill -f train.py``, a closed terminal)
    reaches the DataLoader's workers as well as the trainer: the run stopped on "DataLoader worker
    killed by signal: Terminated", recorded as failed, with no last.ckpt to resume from."""
    args = [*tiny_overrides(cache_dir, None), "logger=csv", "trainer.limit_train_batches=4",
            "data.num_workers=2", "+callbacks.slow._target_=probes.SlowSteps"]  # fmt: skip
    proc = _run_until_step(args, offline_env, tmp_path, step=2, new_session=True)
    os.killpg(proc.pid, signal.SIGTERM)
    output = proc.stdout.read()
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM, output[-3000:]
    run = only_run(tmp_path)
    assert f"Resume with: python train.py resume={run}" in output, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    record = json.loads((run / "results.json").read_text())
    assert record["status"] == "interrupted"
    assert record["error"] == f"Interrupted: SIGTERM at epoch 0, step {ckpt['global_step']}; " \
        "saved last.ckpt"  # fmt: skip


@pytest.mark.slow
def test_ctrl_c_while_testing_says_how_to_finish_and_resume_does(cache_dir, tmp_path, offline_env):
    """Ctrl-C in the final test pass (training had ended): Lightning exited 1 without a word on
    what to do, and the record said "SystemExit: 1"."""
    probes = {**offline_env, "PYTHONPATH": str(ROOT / "tests")}
    args = [*tiny_overrides(cache_dir, None), "logger=csv"]
    proc = run_train([*args, "+callbacks.stop._target_=probes.CtrlCWhileTesting"], probes,
                     cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 1
    run = only_run(tmp_path)
    assert "stopped while testing the best checkpoint; training had ended (epoch 1, step 3)" in (
        proc.stdout + proc.stderr
    )
    assert (
        f"finish the run's record with: python train.py resume={run}" in proc.stdout + proc.stderr
    )
    record = json.loads((run / "results.json").read_text())
    assert record["status"] == "interrupted"
    assert record["error"] == "Interrupted: Ctrl-C at epoch 1, step 3, while testing"
    proc = run_train([f"resume={run}", "callbacks.stop=null"], probes, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    record = json.loads((run / "results.json").read_text())
    assert record["status"] == "finished" and "test/acc_top1" in record["metrics"]
    assert record["global_step"] == 3  # tested, not trained again


@pytest.mark.slow
def test_slurm_signal_requeues_and_the_requeued_job_resumes_its_folder(
    cache_dir, tmp_path, offline_env
):
    """Inside a SLURM job (a fake scontrol on PATH): SIGUSR1 ahead of the time limit saves
    last.ckpt mid-epoch, requeues the job and exits; SLURM runs the same command again (with
    SLURM_RESTART_COUNT=1), which continues from that checkpoint in the job's folder. (That a
    mid-epoch resume is exact is the SIGTERM test's; this one runs a cheap model.)"""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text('#!/bin/sh\necho "$@" >> "$SCONTROL_LOG"\n')
    (bin_dir / "scontrol").chmod(0o755)
    log = tmp_path / "scontrol.log"
    job = {**offline_env, "SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "train",
           "SCONTROL_LOG": str(log), "PATH": f"{bin_dir}:{offline_env['PATH']}"}  # fmt: skip
    args = [*tiny_overrides(cache_dir, tmp_path), "logger=none", "trainer.limit_train_batches=6",
            "+callbacks.slow._target_=probes.SlowSteps"]  # fmt: skip
    proc = _run_until_step(args, job, tmp_path, step=2)
    proc.send_signal(signal.SIGUSR1)
    proc.stdout.read()
    assert proc.wait(timeout=60) == 0
    run = tmp_path / "outputs" / "train" / "slurm-4242"
    assert json.loads((run / "results.json").read_text())["status"] == "requeued"
    assert log.read_text() == "requeue 4242\n"
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    assert 2 <= ckpt["global_step"] < 6  # saved mid-epoch
    probes = {**job, "PYTHONPATH": str(ROOT / "tests"), "SLURM_RESTART_COUNT": "1"}
    proc = run_train(args, probes, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [p.name for p in (tmp_path / "outputs" / "train").iterdir()] == ["slurm-4242"]
    results = json.loads((run / "results.json").read_text())
    assert results["status"] == "finished" and results["global_step"] == 6
    assert list((run / ".hydra").glob("resumed_*/config.yaml"))


@pytest.mark.parametrize(
    ("error", "reason"),
    [(OSError(errno.ENOSPC, "No space left on device"), "No space left on device"),
     (RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 60682688 vs "
                   "60682576"), r"the file system refused the write \(full, or over a quota\?\)")],
)  # fmt: skip
def test_a_failed_save_leaves_the_previous_checkpoint(tmp_path, monkeypatch, error, reason):
    """(The RuntimeError is torch.save's own report of a full disk, seen on a full tmpfs.)"""
    io = AtomicCheckpointIO()
    path = tmp_path / "run" / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"step": 1, "w": torch.ones(3)}, path)

    def broken_save(obj, f, *args, **kwargs):
        f.write(b"partial bytes")
        raise error

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(UserError) as e:
        io.save_checkpoint({"step": 2, "w": torch.zeros(3)}, path)
    expected = f"could not write the checkpoint {path}: {reason} \\([0-9,]+ MiB free "
    assert re.search(expected, str(e.value)), str(e.value)
    assert str(e.value).endswith(f"continue it with: python train.py resume={tmp_path / 'run'}")
    monkeypatch.undo()
    loaded = io.load_checkpoint(path)
    assert loaded["step"] == 1 and torch.equal(loaded["w"], torch.ones(3))
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]  # no partial file left
    monkeypatch.setattr(torch, "save", lambda *a, **k: (_ for _ in ()).throw(TypeError("pickle")))
    with pytest.raises(TypeError, match="pickle"):  # not the file system: as it was raised
        io.save_checkpoint({"step": 3}, path)


@pytest.fixture
def small_disk(tmp_path):
    """A 40 MiB file system (tmpfs; needs root, as CI has), for a run that fills it."""
    folder = tmp_path / "small-disk"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=40m", "tmpfs", str(folder)],
                             capture_output=True, text=True)  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=False)


def test_a_full_disk_is_named_with_the_way_to_continue(cache_dir, small_disk, offline_env, capsys):
    """resnet18's checkpoint (weights and momentum, ~90 MB) on a 40 MiB disk: one line, the
    run marked failed with it, no partial file (torch.save said "unexpected pos 60682688 vs
    60682576" under a traceback before)."""
    out = small_disk / "run"
    overrides = [*tiny_overrides(cache_dir, out), "model=resnet18", "logger=csv",
                 "trainer.max_epochs=1", "trainer.limit_train_batches=1"]  # fmt: skip
    with pytest.raises(SystemExit):
        train(compose_train(overrides, out=out))
    err = capsys.readouterr().err
    assert f"error: could not write the checkpoint {out}/checkpoints/" in err, err[-2000:]
    assert "Traceback" not in err and f"python train.py resume={out}" in err
    results = json.loads((out / "results.json").read_text())
    assert results["status"] == "failed" and "could not write the checkpoint" in results["error"]
    assert list((out / "checkpoints").iterdir()) == []


def test_nan_loss_stops_with_step_lr_and_hint(cache_dir, tmp_path, offline_env, capsys):
    overrides = [
        *tiny_overrides(cache_dir, tmp_path),
        "trainer.max_epochs=2",
        "logger=none",
        "+callbacks.poison._target_=probes.PoisonWeights",
    ]
    with pytest.raises(SystemExit) as e:
        train(compose_train(overrides, out=tmp_path))
    assert e.value.code == 1
    message = capsys.readouterr().err
    assert "training loss is nan at step 4 (epoch 1, batch 1) with lr 0.1" in message
    assert "optim.lr" in message and "warmup" in message
    last = tmp_path / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, weights_only=True, map_location="cpu")
    assert ckpt["epoch"] == 0  # the last good checkpoint, from the first epoch
    assert all(
        torch.isfinite(t).all() for t in ckpt["state_dict"].values() if t.is_floating_point()
    )


@pytest.mark.slow  # two whole runs with two workers each (about 15 s)
def test_two_seeded_deterministic_runs_give_identical_weights(cache_dir, tmp_path, offline_env):
    paths = []
    for name in ("a", "b"):
        out = tmp_path / name
        overrides = [
            *tiny_overrides(cache_dir, out),
            *EXACT,
            "logger=none",
            "trainer.deterministic=true",
        ]
        train(compose_train(overrides, out=out))
        paths.append(out / "checkpoints" / "last.ckpt")
    assert_identical(*paths)


def test_run_folders_never_collide(tmp_path, monkeypatch):
    from cnnzoo.tasks import folders

    base = str(tmp_path / "train" / "2026-01-01_12-00-00_resnet18")
    first = unique_dir(base)
    assert unique_dir(base) == first  # Hydra resolves a sweep folder several times
    monkeypatch.setattr(folders, "_claimed", {})  # another process, the same second
    second = unique_dir(base)
    assert first == base and second == base + "-2"
    assert Path(first).is_dir() and Path(second).is_dir()


@pytest.mark.slow
def test_an_existing_run_is_never_written_over(cache_dir, tmp_path, offline_env):
    run = tmp_path / "old-run"
    (run / "checkpoints").mkdir(parents=True)
    (run / ".hydra").mkdir()
    (run / ".hydra" / "config.yaml").write_text("the old run's config\n")
    proc = run_train(
        [*tiny_overrides(cache_dir, tmp_path), f"hydra.run.dir={run}"], offline_env, cwd=tmp_path
    )
    assert proc.returncode == 1
    assert f"hydra.run.dir={run} already holds a run" in proc.stderr
    assert f"resume={run}" in proc.stderr
    assert (run / ".hydra" / "config.yaml").read_text() == "the old run's config\n"


def test_sweeps_and_evaluations_are_never_written_over(tmp_path):
    """A second sweep given the same hydra.sweep.dir wrote its jobs over the first's (an
    interrupted job's record and checkpoints went); an eval folder was not seen as a record."""
    from cnnzoo.tasks.launch import prepare_argv

    sweep = tmp_path / "sweep"
    (sweep / "0_resnet18").mkdir(parents=True)
    (sweep / "0_resnet18" / "results.json").write_text('{"status": "interrupted"}\n')
    again = ["train.py", "-m", "model=resnet18,alexnet", f"hydra.sweep.dir={sweep}"]
    with pytest.raises(ConfigError, match=f"hydra.sweep.dir={sweep} already holds a sweep; .*"
                       f"resume={sweep}/<job>"):  # fmt: skip
        prepare_argv(again)
    fresh = tmp_path / "empty-sweep"
    fresh.mkdir()
    assert prepare_argv([*again[:-1], f"hydra.sweep.dir={fresh}"])[1:] == [
        *again[1:-1],
        f"hydra.sweep.dir={fresh}",
    ]
    evaluated = tmp_path / "eval"
    evaluated.mkdir()
    (evaluated / "eval.json").write_text("{}\n")
    for script in ("eval.py", "train.py"):
        with pytest.raises(ConfigError, match="already holds a run; .* Choose another folder.$"):
            prepare_argv([script, f"hydra.run.dir={evaluated}"])
    assert (evaluated / "eval.json").read_text() == "{}\n"
    assert (sweep / "0_resnet18" / "results.json").read_text() == '{"status": "interrupted"}\n'


@pytest.mark.slow
def test_paths_output_dir_cannot_send_a_run_into_another_folder(cache_dir, tmp_path, offline_env):
    """paths.output_dir follows Hydra's folder; set by hand it used to put checkpoints and
    results.json beside no .hydra/, and a second run with the same value wrote over the first's."""
    old = tmp_path / "old-run"
    old.mkdir()
    (old / "results.json").write_text('{"status": "finished"}\n')
    proc = run_train(
        [*tiny_overrides(cache_dir, tmp_path), f"paths.output_dir={old}"], offline_env, cwd=tmp_path
    )
    assert proc.returncode == 1
    assert f"paths.output_dir={old}: this setting follows the run's folder" in proc.stderr
    assert "hydra.run.dir=..." in proc.stderr
    assert sorted(p.name for p in old.iterdir()) == ["results.json"]
    assert (old / "results.json").read_text() == '{"status": "finished"}\n'


@pytest.mark.slow
@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda run: None, "not a cnnzoo run folder"),
        (lambda run: run.mkdir(), "not a cnnzoo run folder"),
        (
            lambda run: (  # a run that failed before its first checkpoint
                (run / ".hydra").mkdir(parents=True),
                (run / ".hydra" / "overrides.yaml").write_text("[]\n"),
                (run / OWNER_FILE).write_text(""),
            ),
            "has no checkpoint to continue from",
        ),
        (lambda run: None, "resume= is empty"),  # (resume=$RUN with RUN unset)
    ],
)
def test_resume_of_a_folder_that_cannot_be_resumed(tmp_path, monkeypatch, capsys, make, message):
    from cnnzoo.tasks.launch import main_argv

    run = tmp_path / "run"
    make(run)
    given = "" if "empty" in message else run
    monkeypatch.chdir(tmp_path)
    before = sorted(tmp_path.rglob("*"))
    monkeypatch.setattr(sys, "argv", ["train.py", f"resume={given}"])  # what train.py does first
    with pytest.raises(SystemExit) as exit_:
        main_argv()
    assert exit_.value.code == 1
    assert message in capsys.readouterr().err
    assert sorted(tmp_path.rglob("*")) == before  # (a lock file was left in the folder, or cwd)


def test_a_folder_near_a_run_is_named_for_what_it_is(tmp_path):
    """``resume=RUN/checkpoints``, ``resume=<a sweep folder>``, ``run=outputs/train``: each was
    "not a cnnzoo run folder" and a generic example; now the run folder(s) meant."""
    from cnnzoo.tasks.launch import resume_args
    from cnnzoo.tasks.restore import run_config

    def run_at(path: Path) -> Path:
        (path / ".hydra").mkdir(parents=True)
        (path / ".hydra" / "config.yaml").write_text("{}\n")
        return path

    train, sweep = tmp_path / "train", tmp_path / "train" / "multirun_x"
    run = run_at(train / "2026-01-01_00-00-00_resnet18")
    run_at(train / "2026-01-02_00-00-00_alexnet")
    (run / "checkpoints").mkdir()
    for job in ("0_resnet18", "1_alexnet"):
        run_at(sweep / job)
    (sweep / "multirun.yaml").write_text("{}\n")
    with pytest.raises(ConfigError, match=rf"inside the run folder {run}: resume={run}\.$"):
        resume_args(run / "checkpoints", [])
    with pytest.raises(ConfigError, match=r"sweep folder \(2 jobs: 0_resnet18, 1_alexnet\): "
                       rf"give one, e.g. resume={sweep / '0_resnet18'}\.$"):  # fmt: skip
        resume_args(sweep, [])
    with pytest.raises(ConfigError, match=r"a folder of 2 runs: give one, e.g. "
                       rf"run={train / '2026-01-02_00-00-00_alexnet'}\.$"):  # fmt: skip
        run_config(compose_train([f"run={train}"], config="eval"))
    with pytest.raises(ConfigError, match=r"no .*config.yaml\); give a folder under outputs"):
        run_config(compose_train([f"run={tmp_path}"], config="eval"))  # (none near)


def test_a_checkpoint_file_given_for_its_run_folder_names_the_folder(tmp_path, monkeypatch, capsys):
    """resume=RUN/checkpoints/last.ckpt and eval's run=RUN/checkpoints/best.ckpt said "not a
    cnnzoo run folder"; now they name the folder to give."""
    from omegaconf import OmegaConf

    from cnnzoo.errors import ConfigError
    from cnnzoo.tasks.launch import main_argv
    from cnnzoo.tasks.restore import run_config

    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text("[]\n")
    (run / "checkpoints").mkdir()
    for name in ("best", "last"):
        (run / "checkpoints" / f"{name}.ckpt").write_bytes(b"PK")
    with pytest.raises(ConfigError, match=f"takes its run folder: run={run} ckpt=best$"):
        run_config(OmegaConf.create({"run": str(run / "checkpoints" / "best.ckpt")}))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["train.py", f"resume={run}/checkpoints/last.ckpt"])
    with pytest.raises(SystemExit) as exit_:
        main_argv()
    assert exit_.value.code == 1
    assert f"takes its run folder: resume={run} (it continues" in capsys.readouterr().err


@pytest.mark.slow
def test_a_run_folder_has_one_owner(cache_dir, tmp_path, offline_env):
    """While a run trains, a second run into its folder and a resume of it are refused with one
    line and change nothing; the first finishes with one best checkpoint. A killed run's folder
    is free at once (the lock is the kernel's)."""
    folder = tmp_path / "shared"
    args = [*tiny_overrides(cache_dir, None), "logger=csv", f"hydra.run.dir={folder}"]
    slow = [
        "+callbacks.slow._target_=probes.SlowSteps",
        "+callbacks.slow.seconds=5",
        "trainer.limit_train_batches=5",
    ]  # ~20 s after step 1: time for two refusals
    first = _run_until_step([*args, *slow], offline_env, tmp_path, step=1)  # fmt: skip
    for attempt in (args, [f"resume={folder}"]):
        proc = run_train(attempt, offline_env, cwd=tmp_path)
        assert proc.returncode == 1
        assert f"{folder} is in use by a run that is still going (pid {first.pid}" in proc.stderr
    rest, _ = first.communicate(timeout=120)
    assert first.returncode == 0, rest[-3000:]
    assert sorted(p.name for p in (folder / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    assert json.loads((folder / "results.json").read_text())["status"] == "finished"
    assert not list(folder.glob(".hydra/resumed_*"))

    from cnnzoo.tasks.folders import own_folder, release_folder

    code = f"from cnnzoo.tasks.folders import own_folder; own_folder({str(folder)!r})"
    hold = f"{code}; print('owned', flush=True); import time; time.sleep(60)"
    holder = subprocess.Popen([sys.executable, "-c", hold], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "owned"
    holder.kill()
    holder.wait()
    own_folder(folder)  # the killed owner's lock went with it
    release_folder(folder)


@pytest.mark.parametrize("where", ["proc", "file"])
def test_a_run_folder_that_cannot_be_made_is_one_line(tmp_path, where):
    """hydra.run.dir=/proc/x, or a file in the way: one line naming the folder and the fix (it
    was a FileNotFoundError / NotADirectoryError traceback)."""
    from cnnzoo.errors import ConfigError
    from cnnzoo.tasks.folders import own_folder

    if where == "file":
        (tmp_path / "notes.txt").write_text("mine")
    folder = "/proc/cnnzoo-x" if where == "proc" else str(tmp_path / "notes.txt" / "run")
    said = rf"cannot make or write the run folder {folder} \(\w+Error: .*\)\. Choose a folder"
    with pytest.raises(ConfigError, match=said + r" you may write \(hydra.run.dir=\.\.\.\)"):
        own_folder(folder)
    if where == "file":
        assert (tmp_path / "notes.txt").read_text() == "mine"
