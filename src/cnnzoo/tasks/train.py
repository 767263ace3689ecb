"""The train task: seed, build data/model/trainer from config, fit, test the best checkpoint,
write ``results.json`` and print a summary. Returns the metric a sweep optimises."""

import logging
import os
import signal
import time
from pathlib import Path
from typing import Any, TypeVar

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf, open_dict
from pytorch_lightning.utilities.exceptions import SIGTERMException

from cnnzoo.build import (
    build_datamodule,
    build_module,
    check_input_size,
    effective_lr,
    model_gmacs,
    starts_trained,
    with_class_count,
)
from cnnzoo.callbacks.record import (
    Interrupted,
    RunRecord,
    checkpoint_mode,
    finished_fields,
    floats,
    run_facts,
)
from cnnzoo.callbacks.requeue import Requeued, slurm_job_id
from cnnzoo.checkpointing import ResumeState
from cnnzoo.csv_log import ResumableCSVLogger
from cnnzoo.errors import ConfigError, UserError, is_whole, unwrapped
from cnnzoo.summary import print_summary
from cnnzoo.tasks.cli import exit_on_user_error
from cnnzoo.tasks.folders import (
    check_output_dir,
    is_first_rank,
    own_folder,
    release_folder,
    release_unused_claims,
    run_checkpoint,
)
from cnnzoo.tasks.launch import (
    LauncherEnvironment,
    forget_resume_config,
    job_overrides,
    share_job_with_ranks,
)
from cnnzoo.tasks.lr_find import lr_range_test
from cnnzoo.tasks.resume import (
    already_finished,
    batch_size_history,
    previous_results,
    read_resume,
)
from cnnzoo.tasks.sweep import SweepJobs, in_sweep
from cnnzoo.tracking import finish_wandb
from cnnzoo.trainer import build_trainer, check_trainer

log = logging.getLogger(__name__)
T = TypeVar("T")


def log_hyperparameters(
    trainer: pl.Trainer, cfg: DictConfig, facts: dict[str, Any], global_batch: int
) -> None:
    """Send the whole resolved config, the run's facts (parameters, GMACs, git commit, package
    versions), the global batch and the lr to every logger."""
    hparams = OmegaConf.to_container(cfg, resolve=True)
    hparams |= facts
    hparams["global_batch_size"] = global_batch
    hparams["effective_lr"] = effective_lr(cfg)
    hparams["world_size"] = trainer.world_size
    for logger in trainer.loggers:
        logger.log_hyperparams(hparams)


@exit_on_user_error
def train(cfg: DictConfig, sweep: SweepJobs | None = None) -> float | None:
    """Train one run. In a sweep (``-m``) a job that fails is recorded (``results.json``
    status ``failed`` with the error; the traceback in its log), its W&B run is finished, and
    the sweep goes on: the job returns ``failed_job_value`` to the sweeper (Optuna records it)
    and ``train.py`` exits 1 at the end, naming the failed jobs (``sweep``: the process's
    bookkeeping of its sweep jobs)."""
    check_output_dir(cfg.paths.output_dir)
    release_unused_claims(cfg.paths.output_dir)
    owner = is_first_rank()
    if owner:  # one run per folder: a second one is refused here, writing nothing
        own_folder(cfg.paths.output_dir)
    try:
        with LauncherEnvironment():
            if (overrides := job_overrides()) is not None:
                share_job_with_ranks(overrides, cfg.paths.output_dir)
            return _train(cfg)
    except KeyboardInterrupt:  # (Ctrl-C during fit is Lightning's: checkpoint, exit 1)
        if record_failed_start(cfg, KeyboardInterrupt("before training began")):
            raise KeyboardInterrupt(
                f"before training began; nothing was trained ({cfg.paths.output_dir})"
            ) from None
        raise
    except Exception as e:
        record_failed_start(cfg, e)
        if not in_sweep():
            raise
        out = cfg.paths.output_dir
        e = unwrapped(e)
        log.error("sweep job %s failed: %s", out, e, exc_info=not isinstance(e, UserError))
        if sweep is not None:
            sweep.note_failed(out)
        return float(cfg.get("failed_job_value", 0.0))
    finally:  # (Hydra may resolve the names again while a sweep's job runs)
        release_unused_claims(cfg.paths.output_dir)
        if owner:
            release_folder(cfg.paths.output_dir)


def record_failed_start(cfg: DictConfig, error: BaseException) -> bool:
    """Write results.json for a run that stopped before training began (data, config, Ctrl-C):
    its status and error. False where the run's own record exists (training began)."""
    out = Path(cfg.paths.output_dir)
    if (out / "results.json").is_file():
        return False
    RunRecord(out, {"model": cfg.model.name, "output_dir": str(out)}).end(error)
    return True


def _train(cfg: DictConfig) -> float | None:
    started = time.perf_counter()
    out = Path(cfg.paths.output_dir)
    _continue_requeued_sweep_job(cfg, out)
    try:  # a resume this config cannot continue stops here, nothing touched
        resume = read_resume(cfg)
    except ConfigError:
        forget_resume_config(out)
        raise
    if resume is not None:
        resume.previous = previous_results(out, resume)
        if already_finished(resume, cfg.trainer.get("max_epochs")):
            forget_resume_config(out)
            _say_finished(out, resume.previous)
            return resume.previous.get("optimized_metric_value")
    check_trainer(cfg.trainer)
    if cfg.get("requires_weights") and not starts_trained(cfg.model):
        raise ConfigError(  # (without, a fine-tuning recipe trained from random weights)
            "this recipe fine-tunes trained weights: give model.weights=FILE.pth (torchvision's "
            "format, e.g. resnet18-f37072fd.pth, or a run's export) or model.pretrained=true "
            "(torchvision's, from the torch hub cache); requires_weights=false trains it from "
            "random weights."
        )
    if not is_whole(cfg.seed, 0, 2**32 - 1):  # (-3: a ValueError traceback from the seeding)
        raise ConfigError(
            f"seed={cfg.seed!r}: give a whole number from 0 to 2^32 - 1 (42 by default)."
        )
    pl.seed_everything(cfg.seed, workers=True)
    cfg = with_class_count(cfg, resume.num_classes if resume is not None else None)
    datamodule = build_datamodule(cfg)
    datamodule.prepare_data()
    datamodule.setup("fit")  # a missing or malformed data tree fails here, before any work
    cfg = with_class_count(cfg, datamodule.num_classes)  # (data.num_classes=null: as counted)
    check_input_size(cfg.model)
    module = build_module(cfg)
    gmacs = model_gmacs(cfg.model)  # (counted once: the model summary and the record)
    trainer = build_trainer(cfg, gmacs)
    for logger in trainer.loggers:
        if isinstance(logger, ResumableCSVLogger) and resume is not None:
            logger.resume_step = resume.global_step  # metrics.csv goes on from there
    exit_code = 1  # (W&B's: what the process ends with)
    previous = resume.previous if resume is not None else {}
    ckpt = trainer.checkpoint_callback
    record = RunRecord(
        out, previous, cfg.optimized_metric, checkpoint_mode(ckpt), trainer.is_global_zero
    )
    # The one writer of results.json. First, so that a checkpoint saved when a validation ends
    # (ModelCheckpoint's hooks run last; with validation inside an epoch it saves there) holds
    # that validation in its copy of the history.
    trainer.callbacks.insert(0, record)
    started_fields = {
        "status": "running",
        "model": cfg.model.name,
        "output_dir": str(out),
        "batch_sizes": batch_size_history(resume, datamodule.batch_size),
    }
    if job := slurm_job_id():
        started_fields["slurm_job_id"] = job
    try:
        facts = run_facts(module, gmacs)
        record.update(**started_fields, **facts)  # readable while it runs (report.py)
        log_hyperparameters(trainer, cfg, facts, datamodule.batch_size)
        if cfg.get("tune") is not None:
            if cfg.tune != "lr_find":
                raise ConfigError(f"tune={cfg.tune!r}: the one tuning run is tune=lr_find.")
            found = lr_range_test(cfg, trainer, module, datamodule, out)
            record.update(status="lr_find", **found)
            exit_code = 0
            return found["suggested_lr"]
        try:
            trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
        except SIGTERMException:  # checkpoint saved (ResumeState); a SystemExit with code 0
            raise SystemExit(128 + signal.SIGTERM) from None
        fit_metrics = floats(trainer.callback_metrics)  # (before the test stage adds its own)
        best = ckpt.best_model_path if ckpt else ""
        test_metrics = trainer.test(module, datamodule=datamodule, ckpt_path=best or None)[0]
        wall_time = time.perf_counter() - started + float(previous.get("wall_time_s") or 0)
        results = finished_fields(
            cfg, trainer, datamodule.batch_size, fit_metrics, test_metrics, wall_time
        )
        results = record.finish(**results)
        if trainer.is_global_zero:
            print_summary(results)
        exit_code = 0
        return results["optimized_metric_value"]
    except BaseException as e:
        record.end(_interruption(trainer, e) or e)
        exit_code = _exit_code(e)
        raise
    finally:
        upload = any(getattr(logger, "upload_best", False) for logger in trainer.loggers)
        finish_wandb(record.record() if trainer.is_global_zero else None, exit_code, upload)


def _exit_code(error: BaseException) -> int:
    """The exit status ``error`` ends the process with (SIGTERM: 143, Ctrl-C: 130)."""
    if isinstance(error, SystemExit):
        return error.code if isinstance(error.code, int) else 1
    return 130 if isinstance(error, KeyboardInterrupt) else 1


def _interruption(trainer: pl.Trainer, error: BaseException) -> Interrupted | None:
    """What stopped the run, where the exit that ends it does not say (Lightning's exit 1
    after Ctrl-C, ours of 143 after SIGTERM): the interruption ``ResumeState`` handled."""
    if not isinstance(error, SystemExit) or isinstance(error, Requeued):
        return None
    for callback in trainer.callbacks:
        if isinstance(callback, ResumeState) and callback.interrupted:
            return Interrupted(callback.interrupted)
    return None


def _say_finished(out: Path, results: dict[str, Any]) -> None:
    """A resume of a finished run changes nothing: say so, and how to train longer."""
    epochs = results.get("epochs")
    print(
        f"{out} finished its {epochs} epochs (test top-1 "
        f"{results.get('metrics', {}).get('test/acc_top1', float('nan')):.2%}); nothing to do, "
        f"nothing changed. To train longer: resume={out} trainer.max_epochs=<more than {epochs}>."
    )


def _continue_requeued_sweep_job(cfg: DictConfig, out: Path) -> None:
    """A sweep job that SLURM runs again after requeueing it (the submitit launcher re-runs the
    job in its own folder, without ``resume=``) continues from that folder's last checkpoint,
    through the same checks and record keeping as ``resume=`` (``ckpt_path`` set here)."""
    last = run_checkpoint(out)
    restarts = int(os.environ.get("SLURM_RESTART_COUNT") or 0)
    if cfg.get("ckpt_path") is None and restarts and in_sweep() and last.is_file():
        log.info("requeued SLURM job (restart %d): resuming from %s", restarts, last)
        with open_dict(cfg):
            cfg.ckpt_path = str(last)
