"""Real SLURM (a one-node cluster on this machine, tests/slurm/start.sh): a sweep through the
submitit launcher, DDP ranks started by srun, and pre-emption with requeue and exact resume."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import ROOT, compose_train, run_train, tiny_overrides

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.xdist_group("slurm")]  # one cluster
PYTHON = sys.executable


def cluster_env(slurm, offline_env) -> dict[str, str]:
    env = {**offline_env, **slurm, "PYTHONPATH": str(ROOT / "tests")}
    return {k: v for k, v in env.items() if not k.startswith("SLURM_") or k == "SLURM_CONF"}


def sbatch(command: str, env: dict[str, str], cwd: Path, *options: str) -> str:
    """Submit ``command`` as a batch job (output in cwd/slurm-<id>.out); its job id."""
    proc = subprocess.run(
        ["sbatch", "--parsable", "--cpus-per-task=1", "-o", "slurm-%j.out", "--open-mode=append",
         *options, "--wrap", command], env=env, cwd=cwd, capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().split(";")[0]


DONE = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY")


def wait_for(job: str, env: dict[str, str], timeout: float = 180) -> None:
    """Until ``job`` has ended for good (not merely left the queue while being requeued). A
    requeued job starts again after SLURM's requeue delay (start.sh sets it to 6 s); releasing
    it sooner (``scontrol update StartTime=now``) made slurmd refuse it: "Job credential
    revoked", and the job failed."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        show = subprocess.run(["scontrol", "show", "job", job, "-o"], env=env,
                              capture_output=True, text=True)  # fmt: skip
        state = next((w.split("=", 1)[1] for w in show.stdout.split() if w.startswith("JobState=")),
                     None)  # fmt: skip
        if show.returncode != 0 or state in DONE:  # (no record: purged after it ended)
            return
        time.sleep(0.5)
    raise AssertionError(f"SLURM job {job} still queued or running after {timeout} s")


def train_command(args: list[str]) -> str:
    return " ".join(["srun", PYTHON, "-u", str(ROOT / "train.py"), *args])


def test_a_sweep_through_the_slurm_launcher_records_every_job(
    slurm, cache_dir, tmp_path, offline_env
):
    """Two jobs submitted by submitit, one of them failing: both recorded in one sweep folder
    (each job composes the sweep again in its own process; it used to claim a folder of its
    own), the command exits 1 naming the failed job, the report lists both."""
    env = cluster_env(slurm, offline_env)
    args = ["-m", "hydra/launcher=slurm", "hydra.launcher.cpus_per_task=1",
            "hydra.launcher.timeout_min=10", *tiny_overrides(cache_dir, None), "logger=csv",
            "model.lr=0.1,fast"]  # fmt: skip
    proc = run_train(args, env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 1, proc.stderr[-3000:]
    (sweep,) = (tmp_path / "outputs" / "train").iterdir()
    assert (
        "error: 1 sweep job(s) failed" in proc.stderr and f"{sweep.name}/1_resnet18" in proc.stderr
    )
    status = {
        p.parent.name: json.loads(p.read_text())["status"] for p in sweep.glob("*/results.json")
    }
    assert status == {"0_resnet18": "finished", "1_resnet18": "failed"}
    report = run_train([str(sweep)], env, cwd=tmp_path, script="report.py")
    assert report.returncode == 0, report.stderr[-2000:]
    table = (sweep / "report.md").read_text()
    assert "0_resnet18" in table and "failed: ConfigError: optim.lr='fast'" in table


def test_srun_starts_the_ddp_ranks_of_one_run(slurm, cache_dir, tmp_path, offline_env):
    """trainer=ddp_cpu, 2 tasks in one job, started by srun, Lightning reading SLURM's
    environment: one run folder (slurm-<job>), and the test figures of one process's eval of
    the same checkpoint (every val image counted once)."""
    from cnnzoo.tasks.evaluate import run_eval

    env = cluster_env(slurm, offline_env)
    cpu = ("trainer=", "data.batch_size")
    args = [o for o in tiny_overrides(cache_dir, None) if not o.startswith(cpu)]
    args += ["trainer=ddp_cpu", "trainer.devices=2", "data.batch_size=16", "logger=none"]
    job = sbatch(train_command(args), env, tmp_path, "--ntasks-per-node=2")
    wait_for(job, env)
    (run,) = (tmp_path / "outputs" / "train").iterdir()
    assert run.name == f"slurm-{job}", (tmp_path / f"slurm-{job}.out").read_text()[-3000:]
    results = json.loads((run / "results.json").read_text())
    assert results["status"] == "finished" and results["world_size"] == 2
    assert (run / "train_rank1.log").is_file()
    single = run_eval(compose_train([f"run={run}"], out=tmp_path / "eval", config="eval"))
    assert single["images"] == 40
    assert results["metrics"]["test/acc_top1"] == single["acc_top1"]


def test_preemption_requeues_and_resumes_to_the_same_weights(
    slurm, cache_dir, tmp_path, offline_env
):
    """scancel --signal=USR1 on a running job (what --signal=USR1@T sends before a time limit):
    last.ckpt saved mid-epoch, scontrol requeue, the job runs again (SLURM_RESTART_COUNT=1),
    resumes in its folder (here one its script names with hydra.run.dir=), and ends with the
    weights of an uninterrupted job of the seed."""
    env = cluster_env(slurm, offline_env)
    args = [*tiny_overrides(cache_dir, None), "logger=none", "trainer.limit_train_batches=6",
            "model=alexnet", "model.small_input=true", "seed=5",
            "+callbacks.slow._target_=probes.SlowSteps", "+callbacks.slow.seconds=1"]  # fmt: skip
    straight_dir, split_dir = tmp_path / "straight", tmp_path / "split"
    straight_dir.mkdir(), split_dir.mkdir()
    straight = sbatch(train_command(args), env, straight_dir)
    run = split_dir / "own-run"  # the script names it (slurm-<job>: test_reliability)
    job = sbatch(train_command([*args, f"hydra.run.dir={run}"]), env, split_dir)
    out = split_dir / f"slurm-{job}.out"
    end = time.monotonic() + 120
    while "STEP 2" not in (out.read_text() if out.exists() else ""):
        assert time.monotonic() < end, "the job did not reach step 2"
        time.sleep(0.3)
    subprocess.run(["scancel", "--signal=USR1", job], env=env, check=True)
    wait_for(job, env)
    wait_for(straight, env)
    log = out.read_text()
    assert "requeued job" in log, log[-3000:]
    assert not (split_dir / "outputs").exists()
    results = json.loads((run / "results.json").read_text())
    assert results["status"] == "finished" and results["global_step"] == 6
    assert list((run / ".hydra").glob("resumed_*/config.yaml"))  # the second start resumed
    a = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    reference = straight_dir / "outputs" / "train" / f"slurm-{straight}" / "checkpoints"
    b = torch.load(reference / "last.ckpt", map_location="cpu", weights_only=True)
    different = [
        k for k in a["state_dict"] if not torch.equal(a["state_dict"][k], b["state_dict"][k])
    ]
    assert not different, different


def test_a_test_cluster_left_running_is_stopped_not_reused(slurm, tmp_path):
    """A pytest run killed before its teardown leaves its cluster's daemons answering on the
    ports: the next start.sh stopped nothing and its sinfo talked to the old controller, with the
    old config (a 1-CPU node once, and every 2-task job pending). start.sh stops it now (by the
    pid files of the folder the old controller names) and starts its own. Other ports than the
    session's cluster, so that one runs on."""
    script = ROOT / "tests" / "slurm"
    env = {**os.environ, "SLURMCTLD_PORT": "6917", "SLURMD_PORT": "6918"}
    env.pop("SLURM_CONF", None)
    old, new = tmp_path / "old", tmp_path / "new"
    pids = []
    try:
        for folder in (old, new):
            proc = subprocess.run(["bash", str(script / "start.sh"), str(folder)], env=env,
                                  capture_output=True, text=True, timeout=120)  # fmt: skip
            assert proc.returncode == 0, proc.stderr
            pids.append(int((folder / "slurmctld.pid").read_text()))
        assert f"stopping the test cluster an earlier run left: {old}" in proc.stderr
        assert not Path(f"/proc/{pids[0]}").exists()  # the old controller is gone
        show = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True,
                              env={**env, "SLURM_CONF": str(new / "slurm.conf")})  # fmt: skip
        assert f"SLURM_CONF              = {new / 'slurm.conf'}" in show.stdout
    finally:
        for folder in (new, old):
            subprocess.run(["bash", str(script / "stop.sh"), str(folder)], timeout=120)
