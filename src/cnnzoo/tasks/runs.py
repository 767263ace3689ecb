"""Run folders: unique names, ``resume=RUN``, and never writing over a finished run.

Hydra creates the run folder and writes ``.hydra/`` into it before the task starts, so these
checks run on the command line first (``prepare_argv``), before Hydra sees it.
"""

import os
import sys
from datetime import datetime
from pathlib import Path

from omegaconf import OmegaConf

from cnnzoo.errors import ConfigError, UserError

_claimed: dict[str, str] = {}


def unique_dir(path: str) -> str:
    """``path``, or ``path-2``, ``path-3``, ... : the first that did not exist, created now.

    ``mkdir`` is atomic, so two runs started in the same second (or two sweeps) never share
    a folder. Hydra resolves the sweep folder more than once per process: the same path
    always gives the same answer within one process.
    """
    if path in _claimed:
        return _claimed[path]
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
    return candidate


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("unique_dir"):
        OmegaConf.register_new_resolver("unique_dir", unique_dir)


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


def prepare_argv(argv: list[str]) -> list[str]:
    """Expand ``resume=RUN``; refuse ``hydra.run.dir`` pointing at an existing run (unless
    continuing it with ``ckpt_path``)."""
    args = argv[1:]
    resume = _value(args, "resume")
    if resume is not None:
        if "-m" in args or "--multirun" in args:
            raise ConfigError("resume= continues one run; it cannot be combined with -m.")
        rest = [a for a in args if a.split("=", 1)[0].lstrip("+~") != "resume"]
        return [argv[0], *resume_args(Path(resume), rest)]
    run_dir = _value(args, "hydra.run.dir")
    child_rank = "LOCAL_RANK" in os.environ  # a DDP rank Lightning started in rank 0's folder
    if run_dir and not child_rank and _holds_a_run(Path(run_dir)) and not _value(args, "ckpt_path"):
        raise ConfigError(
            f"hydra.run.dir={run_dir} already holds a run; a new run never writes over one. "
            f"Continue it with resume={run_dir}, or choose another folder."
        )
    return argv


def main_argv() -> None:
    """Rewrite ``sys.argv`` for Hydra; a bad ``resume=`` prints one error line and exits 1."""
    register_resolvers()
    try:
        sys.argv = prepare_argv(sys.argv)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(1) from None
