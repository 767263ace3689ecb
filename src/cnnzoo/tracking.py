"""Weights & Biases without surprises: online with credentials, offline without, never a prompt."""

import csv
import logging
import netrc
import os
import socket
import sys
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import getproxies

from lightning_fabric.utilities.rank_zero import rank_zero_only
from pytorch_lightning.loggers import Logger, WandbLogger

log = logging.getLogger(__name__)


def wandb_credentials_present() -> bool:
    """True when ``WANDB_API_KEY`` is set or the netrc file has an entry for the W&B host that
    wandb logs in to (``WANDB_BASE_URL``, else the installed wandb's default: with wandb 0.31
    ``api.forge.coreweave.com``, where its ``wandb login`` writes the key; ``api.wandb.ai``
    before). wandb's own netrc reader decides where it has one; without it (older wandb), the
    netrc file is read here."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        from wandb.sdk.lib.wbauth import read_netrc_auth
    except ImportError:
        read_netrc_auth = None  # (older wandb)
    url = wandb_base_url()
    if read_netrc_auth is not None:
        try:
            return read_netrc_auth(host=url) is not None
        except Exception:  # a key it finds malformed: online, where wandb.init names the error
            return True
    path = Path(os.environ.get("NETRC") or Path.home() / ".netrc")
    try:
        return netrc.netrc(os.fspath(path)).authenticators(urlparse(url).hostname) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def wandb_base_url() -> str:
    """The W&B server this process logs to: ``WANDB_BASE_URL``, else the installed wandb's."""
    try:
        from wandb.sdk.lib.urls import DEFAULT_BASE_URL
    except ImportError:
        DEFAULT_BASE_URL = "https://api.wandb.ai"  # (older wandb)
    return os.environ.get("WANDB_BASE_URL") or DEFAULT_BASE_URL


def unreachable(url: str, timeout: float = 5.0) -> str | None:
    """Why ``url``'s server cannot be reached from here (a cluster's compute node without a
    route out, no DNS), or None when a TCP connection opens, or when a proxy is set (wandb
    goes through it; only wandb.init can tell). A few seconds instead of wandb.init's 90 s of
    retries before its timeout."""
    if any(getproxies().get(scheme) for scheme in ("https", "http", "all")):  # (*_proxy)
        return None
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        socket.create_connection((parsed.hostname, port), timeout=timeout).close()
    except OSError as e:
        return f"{parsed.hostname}:{port}: {e.strerror or type(e).__name__}"
    return None


def wandb_mode() -> str:
    """``WANDB_MODE`` when the user set it; else online with credentials and offline without."""
    if mode := os.environ.get("WANDB_MODE"):
        if mode == "online" and not wandb_credentials_present():
            log.warning("WANDB_MODE=online but no W&B credentials found: logging offline instead.")
            return "offline"
        return mode
    return "online" if wandb_credentials_present() else "offline"


def wandb_logger(
    *, save_dir: str, project: str = "cnnzoo", log_model: bool = False, **init_kwargs
) -> WandbLogger:
    """A ``WandbLogger`` writing under ``save_dir/wandb``, in the mode ``wandb_mode()`` picks.

    ``init_kwargs`` (entity, group, tags, job_type, notes, name, ...) go to ``wandb.init``.
    A run folder that already has a W&B run (a resumed run) logs to that run again.
    ``log_model``: a finished run uploads ``best.ckpt`` with its config (``finish_wandb``;
    Lightning's own ``log_model`` would upload every checkpoint, without the config).
    """
    if init_kwargs.get("id") is None and (previous := existing_run_id(save_dir)):
        init_kwargs |= {"id": previous, "resume": "allow"}
        log.info("W&B: continuing run %s of this run folder.", previous)
    mode = wandb_mode()
    if mode == "offline" and not wandb_credentials_present():
        log.info("W&B: no credentials (WANDB_API_KEY or `wandb login`), logging offline.")
    settings = {"silent": True}
    logger = FallbackWandbLogger(
        save_dir=save_dir, project=project, mode=mode, settings=settings, **init_kwargs
    )
    logger.upload_best = bool(log_model)
    return logger


class FallbackWandbLogger(WandbLogger):
    """A ``WandbLogger`` whose online run, when ``wandb.init`` fails (no network, the server
    down, a rejected key), becomes an offline run in the run folder with a warning, instead of
    ending the training run. Upload it later with ``wandb sync``."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        if self._wandb_init.get("anonymous") is None:  # Lightning passes anonymous=None, and
            del self._wandb_init["anonymous"]  # wandb 0.31 warns "has no effect" on every run

    @property
    def experiment(self):
        start = WandbLogger.experiment.fget  # Lightning's: rank zero creates, others get a dummy
        if self._experiment is None and self._wandb_init.get("mode") == "online":
            if rank_zero_only.rank == 0 and (why := unreachable(wandb_base_url())) is not None:
                log.warning(
                    "W&B: the server cannot be reached from this machine (%s); logging offline "
                    "into the run folder instead (upload later with `wandb sync`).",
                    why,
                )
                self._go_offline()
                return start(self)
            try:
                return start(self)
            except Exception as e:  # wandb's CommError, UsageError, timeouts, ...
                log.warning(
                    "W&B: could not start the online run (%s: %s); logging offline into the run "
                    "folder instead (upload later with `wandb sync`).",
                    type(e).__name__,
                    str(e).splitlines()[0] if str(e) else "",
                )
                self._go_offline()
        return start(self)

    def _go_offline(self) -> None:
        self._wandb_init["mode"] = "offline"
        os.environ["WANDB_MODE"] = "offline"  # this process only


def existing_run_id(save_dir: str) -> str | None:
    """The id of the newest W&B run under ``save_dir/wandb`` (``[offline-]run-<time>-<id>``)."""
    runs = sorted(Path(save_dir, "wandb").glob("*run-*-*"), key=lambda p: p.name.split("run-")[1])
    return runs[-1].name.rsplit("-", 1)[1] if runs else None


def wandb_run_location(loggers: list[Logger]) -> str | None:
    """The W&B run's URL when online; the offline run folder plus the sync command otherwise."""
    for logger in loggers:
        if isinstance(logger, WandbLogger) and logger._experiment is not None:
            run = logger.experiment
            if not getattr(run, "offline", True):
                return run.url
            if getattr(run, "dir", None):  # a disabled run has none
                folder = Path(run.dir).parent
                return f"{folder} (offline; upload with: wandb sync {folder})"
    return None


def finish_wandb(record: dict | None = None, exit_code: int = 0, upload_best: bool = False):
    """Close the W&B run (if any), so a failed job in a sweep does not leak into the next one;
    first the run's record (``results.json``) goes into its summary (``run_summary``: the runs
    table then shows each run's facts, status and error), and with ``upload_best`` a finished
    run's ``best.ckpt`` and config become a model artifact. ``exit_code``: the process's (not
    0 marks the run failed in W&B; the summary's ``status`` says failed or interrupted)."""
    wandb = sys.modules.get("wandb")  # not imported: no run was made (and no import cost)
    if wandb is None or wandb.run is None:
        return
    if record:
        wandb.run.summary.update(run_summary(record))
        if upload_best and exit_code == 0 and record.get("best_checkpoint"):
            model_artifact(wandb, record)
    wandb.finish(exit_code=exit_code)


SUMMARY_FIELDS = ("status", "model", "num_params", "gmacs", "global_batch_size", "world_size",
                  "epochs", "global_step", "wall_time_s")  # fmt: skip


def run_summary(record: dict) -> dict:
    """What the runs table sorts and filters by, from a run's record: its facts, status, the
    effective lr, images/s and data wait, the final test metrics, the one-line error."""
    summary = {k: record[k] for k in SUMMARY_FIELDS if record.get(k) is not None}
    if record.get("lr") is not None:
        summary["effective_lr"] = record["lr"]
    speed = record.get("throughput") or {}
    summary |= {f"perf/run_{k}": v for k, v in speed.items()}
    metrics = record.get("metrics") or {}
    summary |= {k: v for k, v in metrics.items() if k.startswith("test/")}
    error = str(record.get("error") or "").strip()
    summary["error"] = error.splitlines()[0][:500] if error else ""
    return summary


def model_artifact(wandb, record: dict) -> None:
    """``best.ckpt`` and the run's config as the run's ``model`` artifact (alias ``best``)."""
    artifact = wandb.Artifact(
        f"model-{wandb.run.id}",
        type="model",
        metadata={
            k: record.get(k) for k in ("model", "optimized_metric", "optimized_metric_value")
        },
    )
    artifact.add_file(record["best_checkpoint"], name="best.ckpt")
    if record.get("config") and Path(record["config"]).is_file():
        artifact.add_file(record["config"], name="config.yaml")
    wandb.run.log_artifact(artifact, aliases=["best"])


def log_report(out: Path, runs: list[Path], findings: list[str]) -> str:
    """``report.py --wandb``: the report's figures (``curves.png``, ``report.png``), its table
    and findings as one W&B run of job type ``report`` in the runs' group (the sweep folder's
    name, as ``${sweep_group:}`` gives each job), in their project; online with credentials,
    offline into ``out/wandb`` otherwise. Where it went, as the train task says it."""
    import wandb
    from omegaconf import OmegaConf

    from cnnzoo.errors import ConfigError

    sweeps = sorted({run.parent for run in runs})
    if len(sweeps) != 1:
        raise ConfigError(
            f"--wandb posts to one sweep's W&B group, and these runs are in {len(sweeps)} "
            "folders; give one sweep folder (outputs/train/multirun_<time>)."
        )
    if not (sweeps[0] / "multirun.yaml").is_file():
        raise ConfigError(
            f"--wandb posts a sweep's report to the sweep's W&B group, and {runs[0]} is not in "
            "a sweep (a run of its own has no group); give a sweep folder "
            "(outputs/train/multirun_<time>)."
        )
    config = OmegaConf.load(runs[0] / ".hydra" / "config.yaml")
    where = {k: OmegaConf.select(config, f"logger.wandb.{k}", default=None)
             for k in ("project", "entity")}  # fmt: skip
    mode = wandb_mode()
    if mode == "online" and (why := unreachable(wandb_base_url())) is not None:
        log.warning("W&B: the server cannot be reached (%s); logging offline.", why)
        mode = "offline"
    run = wandb.init(
        project=where["project"] or "cnnzoo",
        entity=where["entity"],
        group=sweeps[0].name,
        job_type="report",
        name=f"report {sweeps[0].name}",
        dir=str(out),
        mode=mode,
        settings=wandb.Settings(silent=True),
    )
    with open(out / "report.csv", newline="") as f:
        table = list(csv.reader(f))
    run.log(
        {
            "report/curves": wandb.Image(str(out / "curves.png")),
            "report/error_vs_gflops": wandb.Image(str(out / "report.png")),
            "report/runs": wandb.Table(columns=table[0], data=table[1:]),
        }
    )
    run.summary["findings"] = "\n".join(findings)
    location = run.url if mode == "online" else f"{Path(run.dir).parent} (offline; upload " \
        f"with: wandb sync {Path(run.dir).parent})"  # fmt: skip
    run.finish()
    return location


def code_version() -> dict[str, object]:
    """The git commit of the cnnzoo checkout and whether it had uncommitted changes (None
    outside a git checkout), and the versions of the packages that decide the results."""
    import importlib
    import subprocess

    root = Path(__file__).resolve().parents[2]
    git: dict[str, object] | None = None
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
        )
        status = subprocess.run(
            ["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True, timeout=10
        )
        if commit.returncode == 0:
            git = {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        pass
    modules = ("cnnzoo", "torch", "torchvision", "pytorch_lightning", "torchmetrics", "hydra")
    versions = {}
    for name in modules:  # __version__ carries the build (2.14.1+cu130), metadata does not
        try:
            versions[name] = str(importlib.import_module(name).__version__)
        except (ImportError, AttributeError):
            versions[name] = None
    return {"git": git, "versions": versions}
