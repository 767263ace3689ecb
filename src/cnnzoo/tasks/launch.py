"""The command line before Hydra sees it: ``resume=RUN``, and one run folder for all ranks
under torchrun, SLURM (``srun``) and Lightning's own DDP launcher.

Hydra creates the run folder and writes ``.hydra/`` into it before the task starts, so these
checks run on the command line first (``main_argv``), before Hydra sees it; a run folder that
holds a run is never written over."""

import json
import os
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from cnnzoo.errors import ConfigError, UserError
from cnnzoo.tasks.folders import (
    is_first_rank,
    own_folder,
    refuse_a_checkpoint_as_run,
    run_checkpoint,
    run_folder_hint,
    where_it_ran,
)
from cnnzoo.tasks.resolvers import register_resolvers


def _key(arg: str) -> str:
    """The key an override sets (``+a.b=1``, ``~a.b``: ``a.b``)."""
    return arg.split("=", 1)[0].lstrip("+~")


def _value(args: list[str], key: str) -> str | None:
    for arg in args:
        if _key(arg) == key and "=" in arg:
            return arg.split("=", 1)[1]
    return None


def _without(args: list[str], key: str) -> list[str]:
    return [a for a in args if _key(a) != key]


def _folder(args: list[str], key: str) -> Path | None:
    """The folder an override names literally (one with ``${...}`` is Hydra's to resolve)."""
    value = _value(args, key)
    return Path(value) if value and "$" not in value else None


def _holds_a_run(folder: Path) -> bool:
    return (folder / "checkpoints").is_dir() or (folder / "results.json").is_file()


def _holds_a_record(folder: Path) -> bool:
    """What a run, an evaluation or a start that failed left: never to be written over."""
    return (
        _holds_a_run(folder)
        or (folder / "eval.json").is_file()
        or (folder / ".hydra" / "config.yaml").is_file()
    )


def _holds_a_sweep(folder: Path) -> bool:
    return (folder / "multirun.yaml").is_file() or (
        folder.is_dir() and any(_holds_a_record(job) for job in folder.iterdir() if job.is_dir())
    )


RESUMED = "resumed_"  # .hydra/resumed_<time>/: the config of one resume of the run


def resume_args(run: Path, args: list[str]) -> list[str]:
    """The overrides that continue ``run`` in its own folder from its last checkpoint: the run's
    own overrides, then the ones given now (which win), then where to write."""
    refuse_a_checkpoint_as_run("resume", run, " (it continues from checkpoints/last.ckpt)")
    overrides_file = run / ".hydra" / "overrides.yaml"
    if not overrides_file.is_file():
        hint = run_folder_hint("resume", run) or (
            "give the folder printed at the end of a run, e.g. "
            "resume=outputs/train/2026-01-01_12-00-00_resnet18"
        )
        raise ConfigError(f"resume={run}: not a cnnzoo run folder (no {overrides_file}); {hint}.")
    last = run_checkpoint(run)
    if not last.is_file():
        raise ConfigError(
            f"resume={run}: the run has no checkpoint to continue from ({last} is missing); "
            "start a new run instead."
        )
    given = {_key(a) for a in args if "=" in a}
    original = [
        o
        for o in OmegaConf.load(overrides_file)
        if _key(o) not in given | {"ckpt_path", "hydra.run.dir"}
    ]
    for i, override in enumerate(original):  # data.root=photos, resumed from another folder
        key, _, value = override.partition("=")
        if key.lstrip("+") == "data.root" and (found := where_it_ran(run, value)):
            original[i] = f"{key}={found}"
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    return [
        *original,
        *args,
        f"ckpt_path={last}",
        f"hydra.run.dir={run}",
        f"hydra.output_subdir=.hydra/{RESUMED}{stamp}",  # the run's own .hydra/ stays as it was
    ]


def forget_resume_config(run: Path) -> None:
    """Remove the ``.hydra/resumed_<time>/`` Hydra wrote for this process's resume, when the
    resume does not happen (refused, or the run had already finished): a run folder records
    the resumes that ran, not the attempts."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return
    subdir = HydraConfig.get().output_subdir
    if subdir and Path(subdir).name.startswith(RESUMED):
        shutil.rmtree(run / subdir, ignore_errors=True)


def torchrun_args(args: list[str]) -> list[str]:
    """Under ``torchrun`` every rank runs ``train.py`` itself: all ranks share one run folder
    named by torchrun's run id (unless ``hydra.run.dir`` is given); ranks other than 0 write no
    ``.hydra/`` and log to ``train_rank<N>.log``."""
    run_id = os.environ.get("TORCHELASTIC_RUN_ID")
    if run_id is None:
        return args
    if "-m" in args or "--multirun" in args:
        raise ConfigError(
            "under torchrun, run one job at a time (no -m): torchrun starts the ranks."
        )
    extra = []
    if _value(args, "hydra.run.dir") is None:
        if run_id == "none":
            raise ConfigError(
                "torchrun without --standalone or --rdzv-id: give every rank the same folder with "
                "hydra.run.dir=outputs/train/<name>."
            )
        extra.append(f"hydra.run.dir=${{paths.log_dir}}/train/torchrun-{run_id}")
    rank = int(os.environ.get("RANK", "0"))
    if rank > 0:
        extra += ["hydra.output_subdir=null", f"hydra.job.name=train_rank{rank}"]
    return [*args, *extra]


def slurm_args(args: list[str]) -> list[str]:
    """``python train.py`` inside a SLURM job (an sbatch script, or ``srun`` starting one task
    per GPU): all tasks share one run folder named by the job id, ``slurm-<jobid>`` (unless
    ``hydra.run.dir`` is given); tasks other than 0 write no ``.hydra/`` and log to
    ``train_rank<N>.log``. When SLURM runs the job again after a requeue (pre-emption, time
    limit: ``SlurmRequeue``), the folder (either) holds the run and it is resumed from its last
    checkpoint. The submitit launcher (``hydra/launcher=slurm``) does not come through here."""
    job = os.environ.get("SLURM_JOB_ID")
    interactive = os.environ.get("SLURM_JOB_NAME") in ("bash", "interactive")  # salloc, srun --pty
    if job is None or interactive or "-m" in args or "--multirun" in args:
        return args
    if "TORCHELASTIC_RUN_ID" in os.environ:  # torchrun inside the job starts the ranks
        return args
    rank = int(os.environ.get("SLURM_PROCID", "0"))
    extra = [] if rank == 0 else ["hydra.output_subdir=null", f"hydra.job.name=train_rank{rank}"]
    if _value(args, "resume") is not None:
        return [*args, *extra]
    restarts = int(os.environ.get("SLURM_RESTART_COUNT") or 0)
    if _value(args, "hydra.run.dir") is not None:  # the job's own folder
        given = _folder(args, "hydra.run.dir")
        if not restarts or given is None or not _holds_a_run(given):
            return [*args, *extra]
        return _continued(given, _without(args, "hydra.run.dir"), rank, extra)  # requeued
    from cnnzoo.callbacks.requeue import slurm_job_id

    folder = f"slurm-{slurm_job_id()}"
    log_dir = Path(_value(args, "paths.log_dir") or "outputs")
    run = log_dir / "train" / folder
    if _holds_a_run(run) and (restarts or rank == 0):  # (other ranks join rank 0's run)
        if not restarts:  # a second train.py in the same job: a folder of its own
            if int(os.environ.get("SLURM_NTASKS") or 1) == 1:
                return args
            raise ConfigError(
                f"{run} already holds a run of SLURM job {job}; give each multi-task train.py "
                "of one job its own hydra.run.dir=...."
            )
        return _continued(run, args, rank, extra)
    return [*args, f"hydra.run.dir=${{paths.log_dir}}/train/{folder}", *extra]


def _continued(run: Path, args: list[str], rank: int, extra: list[str]) -> list[str]:
    """``resume_args`` for a task of a requeued job (only rank 0 writes the resume's .hydra/)."""
    if rank == 0:
        return resume_args(run, args)
    rest = [a for a in resume_args(run, args) if not a.startswith("hydra.output_subdir=")]
    return [*rest, *extra]


def prepare_argv(argv: list[str]) -> list[str]:
    """Expand ``resume=RUN``; refuse ``hydra.run.dir`` pointing at an existing run or
    evaluation (unless continuing it with ``ckpt_path``) and ``hydra.sweep.dir`` at an existing
    sweep, before Hydra writes into them; one run folder for all ranks under torchrun or SLURM."""
    args = slurm_args(torchrun_args(argv[1:]))
    argv = [argv[0], *args]
    multirun = "-m" in args or "--multirun" in args
    resume = _value(args, "resume")
    if resume is not None:
        if multirun:
            raise ConfigError("resume= continues one run; it cannot be combined with -m.")
        rest = _without(args, "resume")
        if not resume.strip():
            raise ConfigError("resume= is empty: give a run folder (resume=outputs/train/<run>).")
        if is_first_rank() and (Path(resume) / ".hydra" / "overrides.yaml").is_file():
            own_folder(resume)  # before Hydra writes anything into it
        return [argv[0], *resume_args(Path(resume), rest)]
    if _value(args, "hydra/launcher") == "slurm":
        check_slurm_answers()
    _check_strategy(args)
    run_dir = _folder(args, "hydra.run.dir")
    if run_dir and not multirun and is_first_rank():
        own_folder(run_dir)  # two runs started into one folder at once: one goes on
        if _holds_a_record(run_dir) and not _value(args, "ckpt_path"):
            if Path(argv[0]).name == "train.py" and _holds_a_run(run_dir):
                fix = f"Continue it with resume={run_dir}, or choose another folder."
            else:
                fix = "Choose another folder."
            raise ConfigError(
                f"hydra.run.dir={run_dir} already holds a run; a new run never writes over one. "
                + fix
            )
    sweep_dir = _folder(args, "hydra.sweep.dir")
    if multirun and sweep_dir and is_first_rank() and _holds_a_sweep(sweep_dir):
        raise ConfigError(
            f"hydra.sweep.dir={sweep_dir} already holds a sweep; a new sweep never writes over "
            f"one. Choose another folder (a job of it continues with resume={sweep_dir}/<job>)."
        )
    return argv


STRATEGY_TRAINERS = ("ddp", "ddp_cpu")  # the trainer configs that set trainer.strategy


def _check_strategy(args: list[str]) -> None:
    """``trainer.strategy=ddp`` with a trainer config that has no strategy: Hydra's error hints
    ``+trainer.strategy=ddp``, which leaves out what DDP needs (devices, accelerator); name the
    trainer configs that set it up."""
    strategy = [a for a in args if a.startswith("trainer.strategy=")]
    if strategy and _value(args, "trainer") not in STRATEGY_TRAINERS:
        raise ConfigError(
            f"{strategy[0]}: choose the trainer config that sets up the strategy: trainer=ddp "
            "(every GPU of a node), trainer=ddp_cpu (2 CPU processes; trainer.devices=N), or "
            "trainer=gpu for one GPU; +trainer.strategy=... passes another Lightning strategy "
            "as it is."
        )


def check_slurm_answers() -> None:
    """``hydra/launcher=slurm`` submits every job with ``sbatch``: where SLURM is not installed
    or its controller does not answer (a laptop, a node outside the cluster), say so in one
    line before the sweep starts (submitit's error came as a traceback)."""
    fix = (
        "Start the sweep on the cluster's login node, or leave out hydra/launcher=slurm to run "
        "its jobs on this machine."
    )
    if shutil.which("sbatch") is None:
        raise ConfigError(f"hydra/launcher=slurm submits with sbatch, not installed here. {fix}")
    try:
        ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ConfigError(f"hydra/launcher=slurm: `scontrol ping` failed ({e}). {fix}") from None
    if ping.returncode != 0:
        said = (ping.stderr or ping.stdout).strip().splitlines() or ["no answer"]
        raise ConfigError(
            f"hydra/launcher=slurm: the SLURM controller does not answer (`scontrol ping`: "
            f"{said[-1]}). {fix}"
        )


def job_overrides() -> list[str] | None:
    """The command-line overrides of the running Hydra job (None outside a Hydra app)."""
    from hydra.core.hydra_config import HydraConfig

    try:
        return list(HydraConfig.get().overrides.task)
    except ValueError:  # HydraConfig not set: called in-process, e.g. by tests
        return None


def parsed_override(text: str) -> tuple[str, Any]:
    """``key=value`` as Hydra reads it: ``320`` a number, ``false`` False, ``[1,2]`` a list,
    ``null`` None (``+key=`` and ``++key=`` give the key alone)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    override = OverridesParser.create().parse_override(text)
    return override.key_or_group, override.value()


JOB_ENV = "CNNZOO_DDP_JOB"  # the job's overrides and folder, for the DDP ranks Lightning starts
LAUNCHER_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")


def share_job_with_ranks(overrides: list[str], run_dir: str) -> None:
    """Tell the DDP ranks that Lightning starts (as ``python train.py <argv>``) which job they
    belong to. Lightning re-runs the parent's command line, which under ``-m`` is the whole
    sweep: the ranks would run every job of it, in other folders. ``child_argv`` reads this."""
    os.environ[JOB_ENV] = json.dumps({"overrides": overrides, "run_dir": run_dir})


class LauncherEnvironment:
    """Undo what Lightning's process launcher sets in this process's environment, at the end
    of a job: with ``LOCAL_RANK`` left behind, the next job of a sweep would believe another
    tool started its ranks and wait for them forever."""

    def __enter__(self) -> "LauncherEnvironment":
        self.before = {k: os.environ.get(k) for k in (*LAUNCHER_ENV, JOB_ENV)}
        return self

    def __exit__(self, *exc) -> None:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
        for key, value in self.before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def child_argv(argv: list[str]) -> list[str] | None:
    """A DDP rank started by Lightning for a job: that job's overrides and folder, in place of
    the command line it was given (None when this process is not such a rank)."""
    job = os.environ.get(JOB_ENV)
    if job is None or "LOCAL_RANK" not in os.environ:
        return None
    job = json.loads(job)
    rank = os.environ["LOCAL_RANK"]
    return [
        argv[0],
        *job["overrides"],
        f"hydra.run.dir={job['run_dir']}",
        "hydra.output_subdir=null",  # rank 0 wrote the job's .hydra/
        f"hydra.job.name=train_rank{rank}",  # its own log file: train_rank1.log
    ]


def main_argv() -> None:
    """Rewrite ``sys.argv`` for Hydra; a bad ``resume=`` prints one error line and exits 1."""
    register_resolvers()
    if (argv := child_argv(sys.argv)) is not None:
        sys.argv = argv
        return
    try:
        sys.argv = prepare_argv(sys.argv)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(1) from None
