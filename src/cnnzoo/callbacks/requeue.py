"""Pre-emption and time limits on SLURM: checkpoint, requeue, and continue exactly."""

import logging
import os
import signal
import subprocess

import pytorch_lightning as pl

from cnnzoo.checkpointing import last_checkpoint_path

log = logging.getLogger(__name__)

# SIGUSR1 is what `#SBATCH --signal=USR1@120` sends; SIGUSR2 is what submitit (the
# hydra/launcher=slurm plugin) asks SLURM for.
SIGNALS = (signal.SIGUSR1, signal.SIGUSR2)


def slurm_job_id() -> str | None:
    """The job id ``scontrol requeue`` takes (``<array job>_<task>`` for array jobs)."""
    array_job, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array_job and task:
        return f"{array_job}_{task}"
    return os.environ.get("SLURM_JOB_ID")


class Requeued(SystemExit):
    """The run stopped after saving its checkpoint because SLURM will run the job again."""


class SlurmRequeue(pl.Callback):
    """Inside a SLURM job, SIGUSR1 or SIGUSR2 (sent ahead of the time limit or a pre-emption)
    makes training stop after the current step: ``checkpoints/last.ckpt`` is saved (weights,
    optimiser, RNG states, position in the epoch), rank zero runs ``scontrol requeue JOBID``,
    and the process exits. The requeued job resumes that checkpoint in the same run folder
    (``slurm-<jobid>``: ``cnnzoo.tasks.launch.slurm_args``; or the sweep job's own folder under
    submitit), continuing exactly where it stopped. Outside SLURM it does nothing.

    The ranks agree on stopping at the same step (one boolean all-reduce per step, only in
    multi-process SLURM runs), since a signal may reach them at different steps.
    """

    def __init__(self) -> None:
        self.requested = False
        self.previous: dict[int, object] = {}

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit" or slurm_job_id() is None:
            return
        for sig in SIGNALS:  # before Lightning's own SLURM handler, which then stands aside
            self.previous[sig] = signal.signal(sig, self._request)

    def _request(self, signum, frame) -> None:
        self.requested = True

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not self.previous:
            return
        requested = self.requested
        if trainer.world_size > 1:
            requested = trainer.strategy.reduce_boolean_decision(requested, all=False)
        if not requested:
            return
        path = last_checkpoint_path(trainer)
        if path is not None:
            trainer.save_checkpoint(path, weights_only=False)  # (unset: Lightning logs that)
        job = slurm_job_id()
        if trainer.is_global_zero:
            result = subprocess.run(
                ["scontrol", "requeue", job], capture_output=True, text=True, check=False
            )
            if result.returncode:
                log.error("scontrol requeue %s failed: %s", job, result.stderr.strip())
            else:
                log.info(
                    "SLURM signal: saved %s at step %d and requeued job %s; it resumes there.",
                    path,
                    trainer.global_step,
                    job,
                )
        raise Requeued(0)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.previous = {}
