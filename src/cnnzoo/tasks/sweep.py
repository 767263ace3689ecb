"""A sweep's (Hydra multirun's) bookkeeping: which of its jobs failed, and the exit status.

``train.py`` owns one ``SweepJobs`` for its process and hands it to each job; a job that fails
in a sweep is noted there (its record says ``failed`` too), and the sweep goes on."""

import json
import os
import sys
from pathlib import Path

from cnnzoo.tasks.folders import claimed_folders


def in_sweep() -> bool:
    """True inside a job of a Hydra multirun (grid or Optuna sweep)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


class SweepJobs:
    """The failed jobs of this process's sweeps."""

    def __init__(self) -> None:
        self.failed: list[str] = []  # the run folders of the jobs that failed here

    def note_failed(self, folder: str | os.PathLike) -> None:
        self.failed.append(str(folder))

    def exit_status(self) -> int:
        """After a sweep: 1 and the list of failed jobs on stderr if any failed, else 0. The
        jobs of a launcher that runs them elsewhere (SLURM) are read from their results.json."""
        failed: list[str] = []
        for folder in [*self.failed, *_failed_in_sweep_folders()]:  # each once, however named
            if os.path.abspath(folder) not in map(os.path.abspath, failed):
                failed.append(folder)
        if not failed:
            return 0
        print(f"\nerror: {len(failed)} sweep job(s) failed (status and error in each "
              "results.json, traceback in its train.log):", file=sys.stderr)  # fmt: skip
        for folder in failed:
            print(f"  {folder}", file=sys.stderr)
        return 1


def _failed_in_sweep_folders() -> list[str]:
    """The job folders of this process's sweep folders whose results.json says failed."""
    failed = []
    for folder in claimed_folders():
        for results in sorted(Path(folder).glob("*/results.json")):
            try:
                if json.loads(results.read_text()).get("status") == "failed":
                    failed.append(str(results.parent))
            except (OSError, ValueError):
                continue
    return failed
