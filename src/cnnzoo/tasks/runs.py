"""Run folders: unique names, ``resume=RUN``, and never writing over a finished run.

Hydra creates the run folder and writes ``.hydra/`` into it before the task starts, so these
checks run on the command line first (``prepare_argv``), before Hydra sees it.
"""

import contextlib
import fcntl
import hashlib
import json
import os
import socket
import sys
from datetime import datetime
from pathlib import Path

from omegaconf import OmegaConf

from cnnzoo.errors import ConfigError, UserError

_claimed: dict[str, str] = {}


def unique_sweep_dir(path: str) -> str:
    """``unique_dir`` for a sweep folder, whose claim also goes to the processes this one
    starts: the jobs that the submitit launcher submits compose the sweep's config again in
    their own process (SLURM passes the environment on), and would each claim a folder."""
    return unique_dir(path, share=True)


def unique_dir(path: str, share: bool = False) -> str:
    """``path``, or ``path-2``, ``path-3``, ... : the first that did not exist, created now.

    ``mkdir`` is atomic, so two runs started in the same second (or two sweeps) never share
    a folder. Hydra resolves the sweep folder more than once per process: the same path
    always gives the same answer within one process.
    """
    if path in _claimed:
        return _claimed[path]
    inherited = os.environ.get(_claim_variable(path)) if share else None
    if inherited and Path(inherited).is_dir():  # the launcher's claim (a SLURM sweep's job)
        _claimed[path] = inherited
        return inherited
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    candidate, n = path, 1
    while True:
        try:
            os.mkdir(candidate)
            break
        except FileExistsError:
            n += 1
            candidate = f"{path}-{n}"
    _claimed[path] = candidate
    if share:
        os.environ[_claim_variable(path)] = candidate  # for the processes this one starts
    return candidate


def _claim_variable(path: str) -> str:
    """The environment variable that passes a sweep folder's claim on to child processes."""
    where = os.path.abspath(path)
    return "CNNZOO_CLAIMED_" + hashlib.sha1(where.encode()).hexdigest()[:16]


def claimed_folders() -> list[str]:
    """The run and sweep folders this process claimed (``unique_dir``) that exist."""
    return [folder for folder in _claimed.values() if Path(folder).is_dir()]


def release_unused_claims(keep: str | os.PathLike) -> None:
    """Remove the empty folders ``unique_dir`` claimed that this run does not use: in a
    multirun Hydra also resolves the single-run folder's name while composing each job."""
    keep = Path(keep).resolve()
    for claimed in _claimed.values():
        path = Path(claimed).resolve()
        if path == keep or path in keep.parents:
            continue
        with contextlib.suppress(OSError):
            path.rmdir()  # only when empty


OWNER_FILE = ".cnnzoo-owner"
_owned: dict[Path, int] = {}  # run folder -> the open, locked owner file


def own_folder(folder: str | os.PathLike) -> None:
    """Make this process the owner of run folder ``folder`` until it exits (or
    ``release_folder``): a second run in the folder, or a resume of a run still running, is
    refused naming the owner, before it changes anything. The lock is the kernel's (flock on
    ``.cnnzoo-owner``): it goes with the process, so a killed run can be resumed at once."""
    folder = Path(folder).resolve()
    if folder in _owned:
        return
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / OWNER_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        owner = os.read(fd, 500).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise ConfigError(
            f"{folder} is in use by a run that is still going ({owner}); nothing was changed. "
            "Wait for it to end (or stop it) to resume it, or choose another folder."
        ) from None
    os.ftruncate(fd, 0)
    stamp = datetime.now().strftime("%Y-%m-%d %H:%M:%S")
    os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}, since {stamp}\n".encode())
    _owned[folder] = fd


def release_folder(folder: str | os.PathLike) -> None:
    """Give up ownership of ``folder`` (a sweep's job that ended)."""
    fd = _owned.pop(Path(folder).resolve(), None)
    if fd is not None:
        os.close(fd)  # (closing drops the flock)


def is_first_rank() -> bool:
    """False in the processes that only join a run: DDP ranks Lightning, torchrun or SLURM
    started besides the first."""
    return all(int(os.environ.get(k) or 0) == 0 for k in ("RANK", "SLURM_PROCID", "LOCAL_RANK"))


def sweep_group() -> str | None:
    """In a job of a multirun: the sweep folder's name (W&B groups a sweep's runs by it)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    return Path(HydraConfig.get().runtime.output_dir).parent.name


def slurm_tasks_per_node(devices) -> int:
    """The launcher's tasks per node: the trainer's devices, which SLURM must be told."""
    if isinstance(devices, int) and devices > 0:
        return devices
    raise ConfigError(
        f"trainer.devices={devices!r} with hydra/launcher=slurm: SLURM allocates what it is "
        "asked for, so give the processes per node, e.g. trainer.devices=8 (one per GPU)."
    )


def slurm_gpus_per_node(accelerator: str, devices) -> int | None:
    """GPUs per node for the launcher: one per task on a GPU trainer, none on the CPU."""
    return None if accelerator == "cpu" else slurm_tasks_per_node(devices)


RESOLVERS = {
    "unique_dir": unique_dir,
    "unique_sweep_dir": unique_sweep_dir,
    "sweep_group": sweep_group,
    "slurm_tasks": slurm_tasks_per_node,
    "slurm_gpus": slurm_gpus_per_node,
}


def register_resolvers() -> None:
    for name, resolver in RESOLVERS.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)


def _value(args: list[str], key: str) -> str | None:
    for arg in args:
        if arg.split("=", 1)[0].lstrip("+~") == key and "=" in arg:
            return arg.split("=", 1)[1]
    return None


def _holds_a_run(folder: Path) -> bool:
    return (folder / "checkpoints").is_dir() or (folder / "results.json").is_file()


def resume_args(run: Path, args: list[str]) -> list[str]:
    """The overrides that continue ``run`` in its own folder from its last checkpoint: the run's
    own overrides, then the ones given now (which win), then where to write."""
    overrides_file = run / ".hydra" / "overrides.yaml"
    if not overrides_file.is_file():
        raise ConfigError(
            f"resume={run}: not a cnnzoo run folder (no {overrides_file}). Give the folder "
            "printed at the end of a run, e.g. resume=outputs/train/2026-01-01_12-00-00_resnet18."
        )
    last = run / "checkpoints" / "last.ckpt"
    if not last.is_file():
        raise ConfigError(
            f"resume={run}: the run has no checkpoint to continue from ({last} is missing); "
            "start a new run instead."
        )
    given = {a.split("=", 1)[0].lstrip("+~") for a in args if "=" in a}
    original = [
        o
        for o in OmegaConf.load(overrides_file)
        if o.split("=", 1)[0].lstrip("+~") not in given | {"ckpt_path", "hydra.run.dir"}
    ]
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    return [
        *original,
        *args,
        f"ckpt_path={last}",
        f"hydra.run.dir={run}",
        f"hydra.output_subdir=.hydra/resumed_{stamp}",  # the run's own .hydra/ stays as it was
    ]


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
    limit: ``SlurmRequeue``), the folder holds the run and it is resumed from its last
    checkpoint. The submitit launcher (``hydra/launcher=slurm``) does not come through here."""
    job = os.environ.get("SLURM_JOB_ID")
    interactive = os.environ.get("SLURM_JOB_NAME") in ("bash", "interactive")  # salloc, srun --pty
    if job is None or interactive or "-m" in args or "--multirun" in args:
        return args
    if "TORCHELASTIC_RUN_ID" in os.environ:  # torchrun inside the job starts the ranks
        return args
    rank = int(os.environ.get("SLURM_PROCID", "0"))
    extra = [] if rank == 0 else ["hydra.output_subdir=null", f"hydra.job.name=train_rank{rank}"]
    if _value(args, "hydra.run.dir") is not None or _value(args, "resume") is not None:
        return [*args, *extra]
    from cnnzoo.callbacks.requeue import slurm_job_id

    folder = f"slurm-{slurm_job_id()}"
    log_dir = Path(_value(args, "paths.log_dir") or "outputs")
    run = log_dir / "train" / folder
    restarts = int(os.environ.get("SLURM_RESTART_COUNT") or 0)
    if _holds_a_run(run) and (restarts or rank == 0):  # (other ranks join rank 0's run)
        if not restarts:  # a second train.py in the same job: a folder of its own
            if int(os.environ.get("SLURM_NTASKS") or 1) == 1:
                return args
            raise ConfigError(
                f"{run} already holds a run of SLURM job {job}; give each multi-task train.py "
                "of one job its own hydra.run.dir=...."
            )
        if rank == 0:
            return resume_args(run, args)
        rest = [a for a in resume_args(run, args) if not a.startswith("hydra.output_subdir=")]
        return [*rest, *extra]
    return [*args, f"hydra.run.dir=${{paths.log_dir}}/train/{folder}", *extra]


def prepare_argv(argv: list[str]) -> list[str]:
    """Expand ``resume=RUN``; refuse ``hydra.run.dir`` pointing at an existing run (unless
    continuing it with ``ckpt_path``); one run folder for all ranks under torchrun or SLURM."""
    args = slurm_args(torchrun_args(argv[1:]))
    argv = [argv[0], *args]
    resume = _value(args, "resume")
    if resume is not None:
        if "-m" in args or "--multirun" in args:
            raise ConfigError("resume= continues one run; it cannot be combined with -m.")
        rest = [a for a in args if a.split("=", 1)[0].lstrip("+~") != "resume"]
        if is_first_rank() and Path(resume).is_dir():
            own_folder(resume)  # before Hydra writes anything into it
        return [argv[0], *resume_args(Path(resume), rest)]
    run_dir = _value(args, "hydra.run.dir")
    if run_dir and is_first_rank() and "$" not in run_dir:
        own_folder(run_dir)  # two runs started into one folder at once: one goes on
        if _holds_a_run(Path(run_dir)) and not _value(args, "ckpt_path"):
            raise ConfigError(
                f"hydra.run.dir={run_dir} already holds a run; a new run never writes over one. "
                f"Continue it with resume={run_dir}, or choose another folder."
            )
    return argv


def job_overrides() -> list[str] | None:
    """The command-line overrides of the running Hydra job (None outside a Hydra app)."""
    from hydra.core.hydra_config import HydraConfig

    try:
        return list(HydraConfig.get().overrides.task)
    except ValueError:  # HydraConfig not set: called in-process, e.g. by tests
        return None


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
