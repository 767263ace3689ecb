"""Run folders: unique names claimed atomically (``${unique_dir:...}``), and one owner per
folder at a time (a lock that goes with its process)."""

import contextlib
import fcntl
import hashlib
import os
import socket
from datetime import datetime
from pathlib import Path

from cnnzoo.errors import ConfigError

_claimed: dict[str, str] = {}


def run_checkpoint(run: Path, name: str = "last") -> Path:
    """A run folder's ``checkpoints/<name>.ckpt`` (``best`` or ``last``: conf/callbacks)."""
    return Path(run) / "checkpoints" / f"{name}.ckpt"


def refuse_a_checkpoint_as_run(setting: str, given: Path, then: str) -> None:
    """``run=RUN/checkpoints/best.ckpt`` (a checkpoint file where its run folder is asked for):
    a ConfigError naming the folder; ``then`` follows it (e.g. `` ckpt=best``)."""
    folder = given.parent.parent
    if given.is_file() and (folder / ".hydra").is_dir():
        raise ConfigError(
            f"{setting}={given} is a checkpoint file; {setting}= takes its run folder: "
            f"{setting}={folder}{then}"
        )


def run_folder_hint(setting: str, given: Path) -> str | None:
    """Which run folder ``given`` (not one) probably means: the run it is inside (its
    ``checkpoints/``), or the runs it holds (a sweep's jobs, ``outputs/train/``); None when
    neither."""
    if (given.parent / ".hydra" / "config.yaml").is_file():
        return f"it is inside the run folder {given.parent}: {setting}={given.parent}"
    runs = sorted(p.parent.parent.name for p in given.glob("*/.hydra/config.yaml"))
    if not runs:
        return None
    sweep = (given / "multirun.yaml").is_file()
    example = given / (runs[0] if sweep else runs[-1])  # (a sweep's first job; the newest run)
    jobs = f": {', '.join(runs[:4])}{', ...' if len(runs) > 4 else ''}" if sweep else ""
    kind = f"a sweep folder ({len(runs)} jobs{jobs})" if sweep else f"a folder of {len(runs)} runs"
    return f"it is {kind}: give one, e.g. {setting}={example}"


def where_it_ran(run: Path, path: str) -> str | None:
    """A run's relative ``path`` (``data.root=photos``) from the folder the run was started
    in (Hydra's ``runtime.cwd``), when it is there: so the run can be evaluated, predicted
    with or resumed from any folder. None for an absolute path, or one not found there."""
    if not path or Path(path).expanduser().is_absolute():
        return None
    from omegaconf import OmegaConf

    try:
        cwd = OmegaConf.select(OmegaConf.load(run / ".hydra" / "hydra.yaml"), "hydra.runtime.cwd")
    except OSError:
        return None
    there = Path(str(cwd)) / path
    return str(there) if cwd and there.exists() else None


def run_choices(run: Path) -> dict[str, str]:
    """The config group options a run was composed with (``{"model": "resnet18", ...}``, from
    Hydra's ``runtime.choices``); empty when its ``hydra.yaml`` is missing or unreadable."""
    from omegaconf import OmegaConf

    try:
        choices = OmegaConf.select(
            OmegaConf.load(run / ".hydra" / "hydra.yaml"), "hydra.runtime.choices"
        )
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in (choices or {}).items()}


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


def check_output_dir(output_dir: str | os.PathLike) -> None:
    """``paths.output_dir`` must be the folder Hydra made for this run: it is where the
    run's checkpoints, logs and ``results.json`` go, beside Hydra's ``.hydra/``. Set to
    another folder it would split the record in two, and a second run given the same value
    would write over the first's, so it is refused, naming ``hydra.run.dir`` (the setting
    that chooses the folder, and refuses one that holds a run)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():  # composed in-process (tests, benchmarks)
        return
    hydra = HydraConfig.get()
    made = Path(hydra.runtime.output_dir).resolve()
    if Path(output_dir).resolve() != made:
        choose = "hydra.sweep.dir" if hydra.mode.name == "MULTIRUN" else "hydra.run.dir"
        raise ConfigError(
            f"paths.output_dir={output_dir}: this setting follows the run's folder ({made}) "
            f"and cannot be set; choose the folder with {choose}=... instead."
        )


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
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / OWNER_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:  # /proc/x, a read-only folder, a file in the way
        raise ConfigError(
            f"cannot make or write the run folder {folder} ({type(e).__name__}: "
            f"{e.strerror}). Choose a folder you may write (hydra.run.dir=...), or give write "
            "access to it."
        ) from None
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


def held_by_a_process(folder: Path) -> bool | None:
    """Whether a live process owns run folder ``folder`` (holds its ``.cnnzoo-owner`` lock); None
    when that cannot be told (no owner file: a run of an older cnnzoo; a file system without
    locks). Only reads: the shared lock it tries is let go at once."""
    try:
        fd = os.open(folder / OWNER_FILE, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return None
    finally:
        os.close(fd)
    return False


def release_folder(folder: str | os.PathLike) -> None:
    """Give up ownership of ``folder`` (a sweep's job that ended)."""
    fd = _owned.pop(Path(folder).resolve(), None)
    if fd is not None:
        os.close(fd)  # (closing drops the flock)


def is_first_rank() -> bool:
    """False in the processes that only join a run: DDP ranks Lightning, torchrun or SLURM
    started besides the first."""
    return all(int(os.environ.get(k) or 0) == 0 for k in ("RANK", "SLURM_PROCID", "LOCAL_RANK"))
