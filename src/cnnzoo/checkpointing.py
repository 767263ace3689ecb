"""Checkpoints that survive crashes and interruptions, and resume exactly.

- ``AtomicCheckpointIO``: every checkpoint is written to a temporary file in the same folder,
  flushed to disk, then renamed over the target: a crash during a save leaves the previous
  ``last.ckpt`` intact, and no reader ever sees a partial file.
- ``RunCheckpoint``: ModelCheckpoint whose saved paths follow a moved run folder.
- ``ResumeState``: saves the random number generators' states in every checkpoint (Lightning
  does not) and restores them on resume, so dropout draws the same masks as an uninterrupted
  run; on SIGTERM or Ctrl-C it saves ``last.ckpt`` before the process exits and prints the
  command that continues the run.
"""

import logging
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities.exceptions import SIGTERMException
from pytorch_lightning.utilities.rank_zero import rank_zero_info

from cnnzoo.errors import UserError

log = logging.getLogger(__name__)


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` to a temporary sibling, fsync, then ``os.replace`` onto the path."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException as e:
            Path(tmp).unlink(missing_ok=True)
            if is_write_failure(e):  # (a full disk: torch says "unexpected pos 60682688 vs ...")
                raise CheckpointWriteError(write_failure(path, e)) from e
            raise


class CheckpointWriteError(UserError):
    """A checkpoint the file system would not take (full, over a quota, gone)."""


# How torch.save's zip writer reports a write the file system refused (it hides the errno).
_TORCH_WRITE_FAILURES = ("inline_container", "file write failed", "unexpected pos")


def is_write_failure(error: BaseException) -> bool:
    return isinstance(error, OSError) or (
        isinstance(error, RuntimeError) and any(s in str(error) for s in _TORCH_WRITE_FAILURES)
    )


def write_failure(path: Path, error: BaseException) -> str:
    """What went wrong, what was kept, and how to go on."""
    reason = error.strerror if isinstance(error, OSError) and error.strerror else None
    reason = reason or "the file system refused the write (full, or over a quota?)"
    try:
        free = f"{shutil.disk_usage(path.parent).free / 2**20:,.0f} MiB free there"
    except OSError:
        free = "its folder cannot be read"
    run = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    return (
        f"could not write the checkpoint {path}: {reason} ({free}). The run's earlier "
        "checkpoints are as they were. Free some space, or give the run a larger disk, then "
        f"continue it with: python train.py resume={run}"
    )


class RunCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint whose saved paths follow the run folder. Resumed from a run
    folder that was moved or copied, Lightning's forgets the best score (its paths name the old
    folder), so the first validation after the resume became a new best, ``best-v1.ckpt``, and
    the test scored it. Here the paths are mapped to the folder the checkpoints are in now when
    the files are there (a checkpoint of another run leaves Lightning's behaviour as it is).
    Its state keeps ModelCheckpoint's key, so checkpoints saved before load as they did."""

    @property
    def state_key(self) -> str:
        return super().state_key.replace(type(self).__qualname__, ModelCheckpoint.__qualname__, 1)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        old = state_dict.get("dirpath")
        if old and self.dirpath and os.path.normpath(old) != os.path.normpath(self.dirpath):
            state_dict = _moved_paths(state_dict, old, self.dirpath)
        super().load_state_dict(state_dict)


def _moved_paths(state: dict[str, Any], old: str, new: str) -> dict[str, Any]:
    """``state`` with its paths under ``old`` under ``new`` instead, when ``new`` holds them."""

    def moved(path: str) -> str:
        if isinstance(path, str) and path.startswith(old.rstrip(os.sep) + os.sep):
            candidate = os.path.join(new, os.path.relpath(path, old))
            return candidate if os.path.exists(candidate) else path
        return path

    keys = ("best_model_path", "kth_best_model_path", "last_model_path")
    paths = [p for p in (*(state.get(k) for k in keys), *(state.get("best_k_models") or {})) if p]
    if any(moved(p) == p for p in paths):  # not all in the new place: another run's checkpoint
        return state
    return {
        **state,
        **{key: moved(state.get(key) or "") for key in keys},
        "best_k_models": {moved(k): v for k, v in (state.get("best_k_models") or {}).items()},
        "dirpath": new,
    }


LAST = "last.ckpt"  # written after every epoch (callbacks.last_checkpoint) and on interruption


def datamodule_state(checkpoint: dict) -> dict[str, Any]:
    """What the run's DataModule saved in a checkpoint (Lightning keys it by the class name):
    its ``global_batch_size`` and, from cnnzoo 0.2.1, its ``class_names``; {} if none."""
    for value in checkpoint.values():
        if isinstance(value, dict) and "global_batch_size" in value:
            return value
    return {}


def last_checkpoint_path(trainer: pl.Trainer) -> Path | None:
    """``checkpoints/last.ckpt`` of this run (whether or not it exists yet)."""
    checkpoint = trainer.checkpoint_callback
    if checkpoint is None or checkpoint.dirpath is None:
        return None
    return Path(checkpoint.dirpath) / LAST


def rng_states() -> dict[str, Any]:
    """The generators' states as tensors and numbers (loadable with ``weights_only=True``)."""
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    states = {
        "torch": torch.get_rng_state(),
        "numpy": [
            np_name,
            torch.from_numpy(np_keys.astype(np.int64)),
            np_pos,
            np_has_gauss,
            np_gauss,
        ],
        "python": [py_version, torch.tensor(py_internal, dtype=torch.int64), py_gauss],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = states["numpy"]
    np.random.set_state(
        (np_name, np_keys.numpy().astype(np.uint32), np_pos, np_has_gauss, np_gauss)
    )
    py_version, py_internal, py_gauss = states["python"]
    random.setstate((py_version, tuple(py_internal.tolist()), py_gauss))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


class ResumeState(Callback):
    """RNG states in checkpoints; a checkpoint and a resume command on SIGTERM / Ctrl-C."""

    def __init__(self) -> None:
        self.interrupted: str | None = None  # "Ctrl-C at epoch 3, step 120; saved last.ckpt"

    def state_dict(self) -> dict[str, Any]:
        return {"rng": rng_states()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        set_rng_states(state_dict["rng"])

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        if not isinstance(exception, SIGTERMException | KeyboardInterrupt):
            return  # a failure: the last good checkpoint stays as it is
        kind = "SIGTERM" if isinstance(exception, SIGTERMException) else "Ctrl-C"
        where = f"epoch {trainer.current_epoch}, step {trainer.global_step}"
        self.interrupted = f"{kind} at {where}"
        checkpoint = trainer.checkpoint_callback
        if checkpoint is None or checkpoint.dirpath is None:
            return
        run_dir = Path(trainer.default_root_dir)
        if trainer.state.fn != TrainerFn.FITTING:  # the test of the best checkpoint, after fit
            self.interrupted += ", while testing"
            rank_zero_info(
                f"\n{kind}: stopped while testing the best checkpoint; training had ended "
                f"({where}). Test it and finish the run's record with: python train.py "
                f"resume={run_dir}"
            )
            return
        path = Path(checkpoint.dirpath) / f"{checkpoint.CHECKPOINT_NAME_LAST}.ckpt"
        trainer.save_checkpoint(path, weights_only=False)  # (unset: Lightning logs that)
        self.interrupted += f"; saved {path.name}"
        rank_zero_info(
            f"\n{kind}: training stopped at {where}; saved {path}.\nResume with: python "
            f"train.py resume={run_dir}"
        )
