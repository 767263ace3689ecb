"""DDP on the CPU with real processes (gloo): one folder per run, exact validation counts,
global batch semantics, and a Hydra multirun that runs each job once with its ranks."""

import json
import subprocess
import sys

import pytest
from helpers import CONF, ROOT, compose_train, run_train, tiny_overrides
from omegaconf import OmegaConf

from cnnzoo.tasks.evaluate import run_eval


def ddp(cache_dir, out, ranks: int, global_batch: int) -> list[str]:
    cpu = ("trainer=", "data.batch_size")
    base = [o for o in tiny_overrides(cache_dir, out) if not o.startswith(cpu)]
    return [*base, "trainer=ddp_cpu", f"trainer.devices={ranks}", f"data.batch_size={global_batch}"]


@pytest.mark.slow
def test_three_ranks_count_every_val_image_once(cache_dir, tmp_path, offline_env):
    args = [*ddp(cache_dir, tmp_path, ranks=3, global_batch=24), "logger=none"]
    proc = run_train(args, offline_env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = (tmp_path / "outputs" / "train").iterdir()  # one folder for the three ranks
    results = json.loads((run / "results.json").read_text())
    assert results["world_size"] == 3
    assert results["global_batch_size"] == 24 and results["per_device_batch_size"] == 8
    assert results["lr"] == 0.1  # the global batch decides the lr, not the number of ranks
    assert (run / "train_rank1.log").is_file() and (run / "train_rank2.log").is_file()
    # 40 val images over 3 ranks (14 + 13 + 13): the same figures as one process on the same
    # checkpoint, with no padded duplicates
    single = run_eval(compose_train([f"run={run}"], out=tmp_path / "eval", config="eval"))
    assert single["images"] == 40
    assert results["metrics"]["test/acc_top1"] == single["acc_top1"]
    assert results["metrics"]["test/acc_top5"] == single["acc_top5"]


@pytest.mark.slow
def test_multirun_with_ddp_runs_each_job_once(cache_dir, tmp_path, offline_env):
    sweep = ["-m", "model=resnet18,alexnet", "model.small_input=true"]
    args = [*sweep, *ddp(cache_dir, tmp_path, ranks=2, global_batch=16)]
    proc = run_train([*args, "logger=wandb"], offline_env, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (sweep,) = (tmp_path / "outputs" / "train").iterdir()  # no stray folders from child ranks
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert jobs == ["0_resnet18", "1_alexnet"]
    ids = set()
    for job in jobs:
        results = json.loads((sweep / job / "results.json").read_text())
        assert results["world_size"] == 2 and results["model"] == job.split("_")[1]
        (wandb_run,) = (sweep / job / "wandb").glob("offline-run-*")  # one W&B run per job
        ids.add(wandb_run.name.rsplit("-", 1)[1])
    assert len(ids) == 2


@pytest.mark.slow
def test_torchrun_ranks_share_one_run_folder_reading_shards(cache_dir, tmp_path, offline_env):
    """torchrun's two ranks write one run folder; on WebDataset shards (data=sample_shards, 4 val
    shards of 10) each rank validates and tests its own shards and the test figures equal one
    process's eval of the same checkpoint: every image counted once, no rank waiting."""
    args = [*ddp(cache_dir, tmp_path, ranks=2, global_batch=16), "logger=none",
            "data=sample_shards", "data.shard_size=10",
            f"data.root={tmp_path / 'shards'}"]  # fmt: skip
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    proc = subprocess.run(
        [*torchrun, str(ROOT / "train.py"), *args],
        cwd=tmp_path, env=offline_env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = (tmp_path / "outputs" / "train").iterdir()  # one folder, not one per rank
    assert run.name.startswith("torchrun-")
    results = json.loads((run / "results.json").read_text())
    assert results["world_size"] == 2
    assert (run / "train_rank1.log").is_file() and (run / ".hydra" / "config.yaml").is_file()
    single = run_eval(compose_train([f"run={run}"], out=tmp_path / "eval", config="eval"))
    assert single["images"] == 40
    assert results["metrics"]["test/acc_top1"] == single["acc_top1"]
    assert results["metrics"]["test/acc_top5"] == single["acc_top5"]


def test_sync_batchnorm_on_the_cpu_is_refused_before_training(cache_dir, tmp_path):
    from cnnzoo.errors import ConfigError
    from cnnzoo.trainer import build_trainer

    cfg = compose_train([*ddp(cache_dir, tmp_path, 2, 16), "trainer.sync_batchnorm=true"], tmp_path)
    with pytest.raises(ConfigError, match="sync_batchnorm=true needs GPUs"):
        build_trainer(cfg)


def test_several_nodes_with_nothing_to_start_them_are_refused(cache_dir, tmp_path, monkeypatch):
    """trainer.num_nodes=2 on one machine, outside SLURM and torchrun: Lightning waited for the
    other node for ever ("Initializing distributed: GLOBAL_RANK: 0, MEMBER: 1/2")."""
    from cnnzoo.errors import ConfigError
    from cnnzoo.trainer import build_trainer

    for key in ("SLURM_JOB_ID", "SLURM_NTASKS", "TORCHELASTIC_RUN_ID", "MASTER_ADDR", "NODE_RANK"):
        monkeypatch.delenv(key, raising=False)
    cfg = compose_train([*ddp(cache_dir, tmp_path, 1, 16), "trainer.num_nodes=2"], tmp_path)
    with pytest.raises(ConfigError, match=r"num_nodes=2, but nothing starts the other nodes.*"
                       r"srun.*torchrun --nnodes=2.*trainer.num_nodes=1\.$"):  # fmt: skip
        build_trainer(cfg)
    monkeypatch.setenv("MASTER_ADDR", "10.0.0.1")  # the nodes started by hand, each with its rank
    monkeypatch.setenv("NODE_RANK", "0")  # (1 would make this process rank 1 for Lightning's
    assert build_trainer(cfg).num_nodes == 2  # rank_zero_only, a global: no later test logs)


def test_slurm_launcher_asks_for_the_trainers_nodes_tasks_and_gpus(tmp_path):
    from hydra import compose, initialize_config_dir

    overrides = ["hydra/launcher=slurm", "trainer=ddp", "trainer.devices=8",
                 "trainer.num_nodes=2", f"paths.log_dir={tmp_path}"]  # fmt: skip
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == (2, 8, 8)
    assert launcher.signal_delay_s > 0  # SIGUSR2 ahead of the limit: SlurmRequeue's cue
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cpu = compose(
            "train",
            overrides=["hydra/launcher=slurm", "trainer=ddp_cpu", f"paths.log_dir={tmp_path}"],
            return_hydra_config=True,
        )
        every = compose(
            "train",
            overrides=["hydra/launcher=slurm", "trainer=ddp", f"paths.log_dir={tmp_path}"],
            return_hydra_config=True,
        )
    assert (cpu.hydra.launcher.tasks_per_node, cpu.hydra.launcher.gpus_per_node) == (2, None)
    with pytest.raises(Exception, match=r"trainer.devices=-1 with hydra/launcher=slurm"):
        OmegaConf.to_container(every.hydra.launcher, resolve=True)  # trainer=ddp: devices -1


def test_the_slurm_launcher_where_slurm_does_not_answer_is_one_line(tmp_path, monkeypatch):
    """A laptop, a node outside the cluster: no sbatch, or a controller that does not answer
    (submitit's error was a traceback, after Hydra had made the sweep folder)."""
    from cnnzoo.errors import ConfigError
    from cnnzoo.tasks.launch import prepare_argv

    argv = ["train.py", "-m", "hydra/launcher=slurm", "model=alexnet,resnet18"]
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch here
    with pytest.raises(ConfigError, match="submits with sbatch, not installed here. Start"):
        prepare_argv(argv)
    fatal = "scontrol: fatal: Could not establish a configuration source"
    for name, script in (("sbatch", "exit 0"), ("scontrol", f"echo '{fatal}' >&2; exit 1")):
        (tmp_path / name).write_text(f"#!/bin/sh\n{script}\n")
        (tmp_path / name).chmod(0o755)
    with pytest.raises(ConfigError, match=f"does not answer \\(`scontrol ping`: {fatal}\\)"):
        prepare_argv(argv)
    (tmp_path / "scontrol").write_text("#!/bin/sh\necho 'Slurmctld(primary) at c1 is UP'\n")
    assert prepare_argv(argv) == argv


RUN_DIR = "hydra.run.dir=${paths.log_dir}/train"


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"SLURM_JOB_ID": "7", "SLURM_PROCID": "0"}, [f"{RUN_DIR}/slurm-7"]),
        ({"SLURM_JOB_ID": "7", "SLURM_PROCID": "3"}, [f"{RUN_DIR}/slurm-7",
          "hydra.output_subdir=null", "hydra.job.name=train_rank3"]),
        ({"SLURM_JOB_ID": "7", "SLURM_ARRAY_JOB_ID": "5", "SLURM_ARRAY_TASK_ID": "2"},
         [f"{RUN_DIR}/slurm-5_2"]),
        ({"SLURM_JOB_ID": "7", "SLURM_JOB_NAME": "interactive"}, []),  # salloc: a normal run
        ({}, []),
    ],
)  # fmt: skip
def test_tasks_of_a_slurm_job_share_one_folder(env, expected, monkeypatch, tmp_path):
    from cnnzoo.tasks.launch import slurm_args

    for key in ("SLURM_JOB_ID", "SLURM_PROCID", "SLURM_JOB_NAME", "SLURM_ARRAY_JOB_ID",
                "SLURM_ARRAY_TASK_ID", "SLURM_RESTART_COUNT", "TORCHELASTIC_RUN_ID"):  # fmt: skip
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    assert slurm_args(["model=resnet18"]) == ["model=resnet18", *expected]


@pytest.mark.parametrize("rank", ["0", "1"])
def test_a_requeued_job_with_its_own_run_dir_continues_its_run(rank, monkeypatch, tmp_path):
    """An sbatch script giving hydra.run.dir=...: when SLURM ran the job again after a requeue,
    the run was refused ("already holds a run") instead of continued from last.ckpt."""
    from cnnzoo.tasks.launch import prepare_argv, slurm_args

    run = tmp_path / "r50"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text(f"- model=resnet50\n- hydra.run.dir={run}\n")
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "last.ckpt").write_bytes(b"")
    for key in ("SLURM_ARRAY_JOB_ID", "TORCHELASTIC_RUN_ID", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    job = {"SLURM_JOB_ID": "7", "SLURM_JOB_NAME": "r50", "SLURM_PROCID": rank}
    for key, value in job.items():
        monkeypatch.setenv(key, value)
    given = ["model=resnet50", f"hydra.run.dir={run}"]
    monkeypatch.setenv("SLURM_RESTART_COUNT", "0")  # its first start: as given
    assert slurm_args(given)[:2] == given
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    args = prepare_argv(["train.py", *given])[1:]
    assert args[:3] == ["model=resnet50", f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}",
                        f"hydra.run.dir={run}"]  # fmt: skip
    assert [a.split("=")[0] for a in args].count("hydra.run.dir") == 1
    assert any(a.startswith("hydra.output_subdir=.hydra/resumed_") for a in args) == (rank == "0")


def test_a_strategy_without_its_trainer_config_names_the_ddp_configs():
    """trainer.strategy=ddp got Hydra's "+trainer.strategy=ddp" hint, which leaves out the
    devices and accelerator DDP needs; the one line names trainer=ddp and trainer=ddp_cpu."""
    from cnnzoo.errors import ConfigError
    from cnnzoo.tasks.launch import prepare_argv

    for given in (["trainer.strategy=ddp"], ["trainer=gpu", "trainer.strategy=ddp"]):
        with pytest.raises(
            ConfigError, match="trainer=ddp \\(every GPU of a node\\), trainer=ddp_cpu"
        ):
            prepare_argv(["train.py", *given])
    for fine in (["trainer=ddp_cpu", "trainer.strategy=ddp_spawn"], ["+trainer.strategy=ddp"]):
        assert prepare_argv(["train.py", *fine]) == ["train.py", *fine]
