"""Compare runs from their folders alone (no network, no W&B unless ``--wandb``):

    python report.py outputs/train/multirun_2026-11-25_10-00-00      # a sweep
    python report.py outputs/train/*  --out reports/all              # any runs and sweeps

writes ``report.md`` and ``report.csv`` (one row per run, sorted by best val top-1 error; runs
that failed or are still running last) and ``report.png`` (top-1 error against GFLOPs, marker
area by parameters, a label per run: the chart of the ILSVRC lectures, for your runs) and
``curves.png`` (training and val top-1 error by epoch, a colour per run labelled by what the
runs vary, with what they show in numbers at the end of report.md: ``cnnzoo.curves``). A folder
is a run when it has ``.hydra/config.yaml`` or ``results.json``; other folders are searched
below for runs. Missing or corrupt results never stop the report: the row says so.
"""

import argparse
import contextlib
import csv
import json
import math
import sys
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from cnnzoo.curves import findings, learning_curves, write_curves
from cnnzoo.errors import ConfigError
from cnnzoo.tasks.folders import held_by_a_process

COLUMNS = [
    ("run", "run"),
    ("model", "model"),
    ("optimizer", "optimiser"),
    ("lr", "lr"),
    ("epochs", "epochs"),
    ("params_m", "params (M)"),
    ("gflops", "GFLOPs"),
    ("val_err_top1", "best val top-1 err"),
    ("val_err_top5", "val top-5 err (that epoch)"),
    ("test_err_top1", "test top-1 err"),
    ("test_err_top5", "test top-5 err"),
    ("images_per_s", "images/s"),
    ("wall_time_min", "wall time (min)"),
    ("status", "status"),
]


def find_runs(folders: list[Path]) -> list[Path]:
    runs: list[Path] = []
    for folder in folders:
        if _is_run(folder):
            runs.append(folder)
        elif folder.is_dir():
            runs += sorted({p.parent.parent for p in folder.rglob(".hydra/config.yaml")} |
                           {p.parent for p in folder.rglob("results.json")})  # fmt: skip
    return list(dict.fromkeys(runs))


def _is_run(folder: Path) -> bool:
    return (folder / ".hydra" / "config.yaml").is_file() or (folder / "results.json").is_file()


def read_run(folder: Path, base: Path | None = None) -> dict[str, Any]:
    """One report row; every value that cannot be read is left empty."""
    row: dict[str, Any] = {key: None for key, _ in COLUMNS}
    row["run"] = (
        str(folder.relative_to(base)) if base and folder.is_relative_to(base) else str(folder)
    )
    config = None
    with contextlib.suppress(Exception):  # absent or unreadable: the results may say enough
        config = OmegaConf.load(folder / ".hydra" / "config.yaml")
    results: dict[str, Any] | None = None
    path = folder / "results.json"
    if path.is_file():
        try:
            results = json.loads(path.read_text())
            row["status"] = results.get("status", "finished")
        except (OSError, ValueError):
            row["status"] = "corrupt results.json"
    else:
        row["status"] = "no results.json (running, or stopped before training)"
    if row["status"] == "running" and held_by_a_process(folder) is False:
        row["status"] = "stopped while running (killed, or its machine went down)"
    if config is not None:
        row["model"] = OmegaConf.select(config, "model.name")
        target = (OmegaConf.select(config, "optim.optimizer._target_")
                  or OmegaConf.select(config, "optim._target_") or "")  # fmt: skip
        momentum = OmegaConf.select(config, "optim.momentum", default=None)
        row["optimizer"] = target.rsplit(".", 1)[-1] + (f" m={momentum}" if momentum else "")
        row["lr"] = OmegaConf.select(config, "optim.lr", default=None)
    if isinstance(results, dict):
        metrics = results.get("metrics") or {}
        best = results.get("best_val") or {}
        row["model"] = results.get("model", row["model"])
        row["lr"] = results.get("lr", row["lr"])
        row["epochs"] = results.get("epochs")
        row["params_m"] = _scaled(results.get("num_params"), 1e-6)
        row["gflops"] = results.get("gmacs")  # multiply-adds, as the papers count FLOPs
        row["val_err_top1"] = _err(best.get("val/acc_top1", results.get("optimized_metric_value")))
        row["val_err_top5"] = _err(best.get("val/acc_top5"))
        row["test_err_top1"] = metrics.get("test/err_top1")
        row["test_err_top5"] = metrics.get("test/err_top5")
        row["images_per_s"] = (results.get("throughput") or {}).get("images_per_s")
        row["wall_time_min"] = _scaled(results.get("wall_time_s"), 1 / 60)
        if results.get("error"):
            row["status"] += f": {results['error'][:120]}"
    return row


def _scaled(value, factor: float):
    return value * factor if isinstance(value, int | float) else None


def _err(accuracy):
    return 1.0 - accuracy if isinstance(accuracy, int | float) else None


def sort_key(row: dict[str, Any]):
    finished = str(row["status"]).startswith("finished")
    err = row["val_err_top1"]
    return (not finished, err if isinstance(err, float) and not math.isnan(err) else math.inf)


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([key for key, _ in COLUMNS])
        for row in rows:
            writer.writerow(["" if row[k] is None else row[k] for k, _ in COLUMNS])


def write_markdown(rows: list[dict[str, Any]], path: Path) -> None:
    lines = [
        f"# Runs compared ({len(rows)})",
        "",
        "Sorted by best val top-1 error. Errors are fractions (0.25 = 25%); GFLOPs are "
        "multiply-adds per image at the model's input size, as the papers count them.",
        "",
        "| " + " | ".join(title for _, title in COLUMNS) + " |",
        "|" + "|".join("---" for _ in COLUMNS) + "|",
    ]
    for row in rows:
        cells = [_cell(row[k]).replace("|", "\\|").replace("\n", " ") for k, _ in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    path.write_text("\n".join(lines) + "\n")


def write_chart(rows: list[dict[str, Any]], path: Path) -> int:
    """Top-1 error (test, else best val) against GFLOPs; marker area by parameters. Returns
    the number of runs drawn."""
    from matplotlib.figure import Figure

    points = []
    for row in rows:
        err = row["test_err_top1"] if row["test_err_top1"] is not None else row["val_err_top1"]
        if isinstance(err, float) and isinstance(row["gflops"], float) and not math.isnan(err):
            points.append((row["gflops"], 100 * err, row["params_m"] or 1.0, row))
    figure = Figure(figsize=(7, 5), layout="constrained")
    ax = figure.add_subplot()
    for gflops, err, params, row in points:
        ax.scatter(gflops, err, s=20 + 8 * params, alpha=0.5)
        label = ", ".join(str(v) for v in (row["model"], row["optimizer"]) if v)
        ax.annotate(label, (gflops, err), fontsize=7, xytext=(4, 4), textcoords="offset points")
    ax.set_xlabel("GFLOPs per image (multiply-adds)")
    ax.set_ylabel("top-1 error (%)")
    ax.set_title("top-1 error against compute; marker area by parameters")
    compute = [gflops for gflops, *_ in points if gflops > 0]
    if compute and max(compute) / min(compute) > 10:  # the zoo spans 0.7 to 20 GFLOPs
        ax.set_xscale("log")
    ax.grid(alpha=0.3)
    figure.savefig(path, dpi=110)
    return len(points)


def report(folders: list[Path], out: Path, to_wandb: bool = False) -> list[dict[str, Any]]:
    runs = find_runs(folders)
    base = folders[0] if len(folders) == 1 and not _is_run(folders[0]) else None
    rows = sorted((read_run(run, base) for run in runs), key=sort_key)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(rows, out / "report.csv")
    write_markdown(rows, out / "report.md")
    write_chart(rows, out / "report.png")
    curves = learning_curves(runs)
    write_curves(curves, out / "curves.png")
    found = findings(curves)
    if found:
        with open(out / "report.md", "a") as f:
            f.write("\n## What the curves show (curves.png)\n\n")
            f.write("".join(f"- {line}\n" for line in found))
    if to_wandb and rows:
        from cnnzoo.tracking import log_report

        print(f"W&B: {log_report(out, runs, found)}")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python report.py", description="Compare training runs from their folders."
    )
    parser.add_argument("folders", nargs="+", type=Path, help="run or sweep folders")
    parser.add_argument(
        "--out", type=Path, help="where report.md/.csv/.png go (default: the one folder given, "
        "else ./report)"
    )  # fmt: skip
    parser.add_argument(
        "--wandb", action="store_true", help="also log the figures and the table to the "
        "sweep's W&B group (a run of job type report; offline without credentials)"
    )  # fmt: skip
    args = parser.parse_args(argv)
    missing = [str(f) for f in args.folders if not f.is_dir()]
    if missing:
        print(f"error: not a folder: {', '.join(missing)}", file=sys.stderr)
        return 2
    out = args.out or (args.folders[0] if len(args.folders) == 1 else Path("report"))
    if out.exists() and not out.is_dir():  # (FileExistsError's traceback)
        print(f"error: --out {out} is a file; give a folder for report.md, report.csv and the "
              "figures.", file=sys.stderr)  # fmt: skip
        return 2
    try:
        rows = report(args.folders, out, args.wandb)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # (a folder it may not write to)
        print(f"error: cannot write the report into {out} ({e.strerror}).", file=sys.stderr)
        return 2
    if not rows:
        print(f"error: no runs found in {', '.join(map(str, args.folders))} (a run folder has "
              ".hydra/config.yaml or results.json)", file=sys.stderr)  # fmt: skip
        return 1
    print((out / "report.md").read_text())
    written = ", ".join(str(out / name) for name in ("report.md", "report.csv", "report.png"))
    print(f"wrote {written}, {out / 'curves.png'}")
    return 0
