"""What a resume may do, decided before anything in the run folder changes.

A resume (``resume=RUN``, or ``ckpt_path=`` of a run's checkpoint) is checked against the
checkpoint first: another architecture or class count, or another global batch in the middle
of an epoch, is refused with the fix, and the folder stays as it was. A run that finished the
epochs asked for is reported, not re-run. A run resumed in its own folder keeps its record:
results.json's history and facts stay until the resumed run replaces them with the whole run's.
"""

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from cnnzoo.build import effective_lr, trained_class_count
from cnnzoo.checkpointing import datamodule_state
from cnnzoo.errors import ConfigError
from cnnzoo.models.weights import read_torch_file


@dataclass
class Resume:
    """The facts of the checkpoint a run continues from."""

    path: Path
    epoch: int  # the epoch the checkpoint was saved in
    global_step: int
    mid_epoch: bool  # saved before its epoch ended (SIGTERM, pre-emption, a step checkpoint)
    global_batch_size: int | None  # None: a checkpoint from before cnnzoo recorded it
    num_classes: int | None  # what it was trained with (None: an old checkpoint that does not say)
    previous: dict[str, Any] = field(default_factory=dict)  # the run folder's results.json


def read_resume(cfg: DictConfig) -> Resume | None:
    """The checkpoint ``ckpt_path`` names, read (tensors memory-mapped) and checked against
    this run's config; None without ``ckpt_path``."""
    if not cfg.get("ckpt_path"):
        return None
    path = Path(cfg.ckpt_path).expanduser()
    if not path.is_file():
        raise ConfigError(f"ckpt_path={path}: no such checkpoint file.")
    checkpoint = read_torch_file(path, f"ckpt_path={path}", mmap=True)
    hparams = checkpoint.get("hyper_parameters", {})
    for key, value in (("arch", cfg.model.name), ("num_classes", cfg.data.num_classes)):
        if key in hparams and value is not None and hparams[key] != value:  # (null: as many)
            raise ConfigError(
                f"{path} is a checkpoint of {key} {hparams[key]!r} but this run has {value!r}: "
                "nothing was changed. Resume it with its own model and data (leave out "
                "model= and data.num_classes=), or choose another checkpoint."
            )
    _check_lr(path, hparams.get("lr"), effective_lr(cfg))
    _check_optimisation(path, cfg)
    progress = checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_loop.batch_progress")
    mid_epoch = bool(progress) and not progress.get("is_last_batch", True)
    resume = Resume(
        path=path,
        epoch=int(checkpoint.get("epoch", 0)),
        global_step=int(checkpoint.get("global_step", 0)),
        mid_epoch=mid_epoch,
        global_batch_size=datamodule_state(checkpoint).get("global_batch_size"),
        num_classes=trained_class_count(checkpoint),
    )
    _check_batch_size(resume, cfg.data.batch_size)
    return resume


def _check_lr(path: Path, trained: float | None, asked: float) -> None:
    """A resume continues the optimiser and its schedule as they were saved: another lr would
    be recorded but not used, so it is refused (a new run from the weights takes one)."""
    if trained is not None and not math.isclose(trained, asked, rel_tol=1e-9):
        run = path.parent.parent
        raise ConfigError(
            f"{path} trained with lr {trained:g}, and a resume continues its optimiser and "
            f"schedule as they were saved: lr {asked:g} would not be used. Nothing was changed. "
            "Leave model.lr / optim.lr (and optim.lr_scaling) as the run had them to train it "
            f"further, or start a new run from its weights: model.weights={run}/checkpoints/"
            f"best.ckpt model.lr={asked:g}."
        )


KEPT_ON_RESUME = ("optim", "scheduler")  # restored from the checkpoint, whatever is asked
FOLLOWS_ON_RESUME = {  # what a resume applies (or _check_lr checks)
    "optim.lr", "optim.lr_scaling", "optim.optimizer.lr", "scheduler.scheduler.T_max",
}  # fmt: skip


def _check_optimisation(path: Path, cfg: DictConfig) -> None:
    """Lightning restores the optimiser's and the schedulers' settings with their states: an
    ``optim.*`` or ``scheduler.*`` value other than the run's would be recorded but not used
    (another optimiser or parameter grouping fails inside Lightning), so it is refused, naming
    each. The run's settings are those of its folder's ``.hydra/config.yaml``; the cosine's
    horizon follows (``cnnzoo.schedules``)."""
    saved_path = path.parent.parent / ".hydra" / "config.yaml"
    if not saved_path.is_file():
        return  # (a checkpoint outside a run folder: its lr is still checked)
    try:
        saved = OmegaConf.load(saved_path)
        trained = {s: _flat(OmegaConf.select(saved, s), s) for s in KEPT_ON_RESUME}
    except (OSError, ValueError, OmegaConfBaseException):
        return  # (a run folder's config it cannot read: Lightning's own checks remain)
    changed = []
    for section in KEPT_ON_RESUME:
        asked = _flat(cfg.get(section), section)
        keys = set(trained[section]) | set(asked)
        replaced = [  # another optimiser or schedule: named by its class, not its arguments
            k.removesuffix("._target_") for k in keys
            if k.endswith("._target_") and trained[section].get(k) != asked.get(k)
        ]  # fmt: skip
        for node in replaced:
            old, new = (
                _class(values.get(f"{node}._target_")) for values in (trained[section], asked)
            )
            changed.append((f"{section} {old}", f"{section} {new}"))
        for key in sorted(keys):
            old, new = trained[section].get(key), asked.get(key)
            inside = any(key.startswith(f"{node}.") for node in replaced)
            if old != new and not (
                key in FOLLOWS_ON_RESUME or inside or _mirrored(key, trained[section], asked)
            ):
                changed.append((f"{key}={_plain(old)}", f"{key}={_plain(new)}"))
    if changed:
        run = path.parent.parent
        had = ", ".join(old for old, _ in changed)
        asked = ", ".join(new for _, new in changed)
        raise ConfigError(
            f"{run} trained with {had}; a resume continues its optimiser and schedule as they "
            f"were saved, so {asked} would not be used. Nothing was changed. Leave optim and "
            "scheduler as the run had them to train it further, or start a new run from its "
            f"weights with the settings you want: model.weights={run}/checkpoints/best.ckpt."
        )


def _mirrored(key: str, trained: dict[str, Any], asked: dict[str, Any]) -> bool:
    """``optim.optimizer.momentum`` follows ``optim.momentum`` by interpolation: a change of the
    knob is named once, by the knob; the optimiser's argument changed on its own is named."""
    if not key.startswith("optim.optimizer."):
        return False
    knob = "optim." + key.rsplit(".", 1)[1]
    return knob in trained and trained.get(knob) != asked.get(knob)


def _class(target: Any) -> str:
    return "none" if target is None else str(target).rsplit(".", 1)[-1]


def _flat(node: Any, prefix: str) -> dict[str, Any]:
    """A config section's resolved values by dotted key (an absent section: none)."""
    if node is None:
        return {}
    values = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node
    if not isinstance(values, dict):
        return {prefix: values}
    flat: dict[str, Any] = {}
    for key, value in values.items():
        flat |= (
            _flat(value, f"{prefix}.{key}")
            if isinstance(value, dict)
            else {f"{prefix}.{key}": value}
        )
    return flat


def _plain(value: Any) -> str:
    return (
        "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
    )


def _check_batch_size(resume: Resume, batch_size: int) -> None:
    """Mid-epoch, the position in the epoch counts batches of the old size: refuse another."""
    old = resume.global_batch_size
    if old is not None and old != batch_size and resume.mid_epoch:
        raise ConfigError(
            f"{resume.path} was saved in the middle of epoch {resume.epoch} with global batch "
            f"{old}; resuming there with data.batch_size={batch_size} would train some images "
            f"twice and skip others. Resume with data.batch_size={old} (you may change it at "
            "an epoch boundary: from a checkpoint saved at an epoch's end)."
        )


def previous_results(out: Path, resume: Resume | None) -> dict[str, Any]:
    """The results.json of the run folder a resume continues in (its own folder), else {}."""
    if resume is None or resume.path.resolve().parent.parent != out.resolve():
        return {}
    try:
        return json.loads((out / "results.json").read_text())
    except (OSError, ValueError):
        return {}


def already_finished(resume: Resume | None, max_epochs: int | None) -> bool:
    """True when the run finished and no more epochs are asked for than it trained."""
    if resume is None or resume.previous.get("status") != "finished":
        return False
    trained = int(resume.previous.get("epochs") or 0)
    return max_epochs is not None and 0 <= max_epochs <= trained


def batch_size_history(resume: Resume | None, batch_size: int) -> list[dict[str, int]]:
    """The run's global batch sizes by the epoch they began (results.json's record)."""
    history = list((resume.previous if resume else {}).get("batch_sizes") or [])
    if resume is None:
        return [{"from_epoch": 0, "global_batch_size": batch_size}]
    if not history and resume.global_batch_size is not None:
        history = [{"from_epoch": 0, "global_batch_size": resume.global_batch_size}]
    if not history or history[-1]["global_batch_size"] != batch_size:
        start = resume.epoch + (0 if resume.mid_epoch else 1)
        history.append({"from_epoch": start, "global_batch_size": batch_size})
    return history
