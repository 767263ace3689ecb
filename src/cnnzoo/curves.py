"""Learning curves as the papers drew them, and the finding they show, from run folders.

Each run's ``results.json`` history gives, per epoch, the training error (of the epoch's own
batches, augmented, as Krizhevsky et al. 2012's Figure 1 and He et al. 2016's Figure 4 plot
it) and the validation top-1 error. ``curves.png`` draws one colour per run, thin dashed for
training and bold for validation, labelled by what the runs differ in (a sweep's overrides).
``findings`` states what the figure shows in numbers: which run reached a training error first
and how much sooner, how far apart the runs ended, and each run's gap between validation and
training error. It reports what was measured; it does not judge whether a paper's effect
showed (short CPU runs often do not).
"""

import contextlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

STUCK_POINTS = 2  # a run whose training error never fell this far below its first epoch's


@dataclass
class Curve:
    label: str
    epochs: list[int]
    val_err: list[float]  # top-1, %
    train_err: list[float | None]  # top-1 of the epoch's training batches, % (None: not kept)


def learning_curves(runs: list[Path]) -> list[Curve]:
    """The curves of every run with a ``val_history``, labelled by the overrides the runs
    differ in (what a sweep varied; the folder name if nothing)."""
    found, overrides = [], []
    for run in runs:
        with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
            history = json.loads((run / "results.json").read_text()).get("val_history") or []
            if history:
                found.append((run, history))
                overrides.append(_overrides(run))
    varied = sorted(
        {k for o in overrides for k in o if len({str(p.get(k)) for p in overrides}) > 1}
    )
    curves = []
    for (run, history), o in zip(found, overrides, strict=True):
        label = ", ".join(f"{k}={o.get(k)}" for k in varied) or run.name
        train = [h.get("train/err_top1") for h in history]
        curves.append(
            Curve(
                label,
                [h["epoch"] for h in history],
                [100 * (1 - h["val/acc_top1"]) for h in history],
                [None if t is None else 100 * t for t in train],
            )
        )
    return curves


def _overrides(run: Path) -> dict[str, str]:
    """The command-line overrides of a run (``.hydra/overrides.yaml``), as key -> value."""
    with contextlib.suppress(Exception):
        items = OmegaConf.to_container(OmegaConf.load(run / ".hydra" / "overrides.yaml"))
        return dict(str(item).split("=", 1) for item in items if "=" in str(item))
    return {}


def write_curves(curves: list[Curve], path: Path) -> int:
    """Training (thin, dashed) and validation (bold) top-1 error by epoch, one colour per run.
    Returns the number of runs drawn."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 5), layout="constrained")
    ax = figure.add_subplot()
    for i, curve in enumerate(curves):
        colour = f"C{i % 10}"
        val, train = lines_of(curve)
        ax.plot(*val, color=colour, lw=2, marker="o", ms=3, label=f"{curve.label} (val)")
        if train[0]:
            ax.plot(*train, color=colour, lw=1, ls="--", label=f"{curve.label} (train)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("top-1 error (%)")
    ax.set_title("learning curves: training (dashed) and validation (bold) error")
    if curves:
        ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    figure.savefig(path, dpi=110)
    return len(curves)


def lines_of(curve: Curve) -> tuple[tuple[list, list], tuple[list, list]]:
    """(epochs, val error) and (epochs, train error) as drawn: epochs counted from 1, as the
    findings count them; epochs without a training error left out of that line."""
    epochs = [e + 1 for e in curve.epochs]
    trained = [(e, t) for e, t in zip(epochs, curve.train_err, strict=True) if t is not None]
    return (epochs, curve.val_err), (
        [e for e, _ in trained],
        [t for _, t in trained],
    )


def findings(curves: list[Curve]) -> list[str]:
    """What the curves show, in measured numbers (lines for report.md)."""
    if len(curves) < 2:
        return []
    lines = []
    trained = [c for c in curves if all(t is not None for t in c.train_err)]
    stuck = [c for c in trained if min(c.train_err) > c.train_err[0] - STUCK_POINTS]
    for c in stuck:
        lines.append(
            f"{c.label} did not learn: its training error stayed within {STUCK_POINTS} points "
            f"of its first epoch's ({min(c.train_err):.1f}-{max(c.train_err):.1f}%)."
        )
    learning = [c for c in trained if c not in stuck]
    if len(trained) == len(curves) and len(learning) >= 2:
        # a training error every learning run reached: the worst one's best, rounded up
        level = math.ceil(max(min(c.train_err) for c in learning))
        reached = sorted(((_first_epoch(c, level), c.label) for c in learning), key=lambda r: r[0])
        (first, fast), (last, slow) = reached[0], reached[-1]
        speed = f" ({(last + 1) / (first + 1):.1f}x the epochs)" if last > first else ""
        every = ", ".join(f"{label}: epoch {epoch + 1}" for epoch, label in reached)
        lines.append(
            f"Training error {level}%: reached at epoch {first + 1} by {fast}, at epoch "
            f"{last + 1} by {slow}{speed}" + (f"; {every}." if len(learning) > 2 else ".")
        )
    ended = sorted(curves, key=lambda c: c.val_err[-1])
    best, worst = ended[0], ended[-1]
    every = ", ".join(f"{c.label}: {c.val_err[-1]:.1f}%" for c in ended)
    lines.append(
        f"Final validation error: {best.label} {best.val_err[-1]:.1f}%, {worst.label} "
        f"{worst.val_err[-1]:.1f}% ({worst.val_err[-1] - best.val_err[-1]:.1f} points apart)"
        + (f"; {every}." if len(curves) > 2 else ".")
    )
    if len(trained) == len(curves):
        gaps = ", ".join(f"{c.label}: {c.val_err[-1] - c.train_err[-1]:+.1f}" for c in curves)
        lines.append(f"Validation minus training error at the last epoch (points): {gaps}.")
    return lines


def _first_epoch(curve: Curve, level: float) -> int:
    return next(e for e, t in zip(curve.epochs, curve.train_err, strict=True) if t <= level)
