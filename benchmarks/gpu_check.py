"""The GPU check (``make gpu-check``): the GPU tests, then training images/s, on one CUDA GPU.

    python benchmarks/gpu_check.py [--out gpu_check.md] [--skip-tests] [--quick]

1. ``pytest tests/test_gpu.py tests/test_dali.py``: 16-mixed (grad-scaler resume) and bf16,
   channels_last, compile + SyncBatchNorm under DDP on one GPU, the GPU defaults (uint8
   batches normalised on the GPU, EMA), DALI decoding on the GPU.
2. ImageNet-sized JPEGs written for the run (500x375, about ImageNet's mean file size; no
   download), 100 classes.
3. Training images/s through the real train task (Throughput callback, warm-up steps left
   out), global batch 256, 16-mixed, channels_last, each model at its paper's input size:
   every model on synthetic input (no input pipeline: what the GPU can do); ResNet-50 on the
   JPEGs through the worker pipeline and through ``data.loader=dali``; ResNet-50 compiled.
   "data wait" is the share of step time spent waiting for the next batch.
4. A cost table derived from those figures: each paper recipe's GPU-hours on one GPU and wall
   time on 8 (epochs x 1,281,167 images / images/s; 8 GPUs assumed to scale linearly).

Prints the tables and writes them to ``--out`` (markdown), with the GPU and versions.
"""

import argparse
import importlib.util
import io
import json
import platform
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_dir

from cnnzoo.tasks.resolvers import register_resolvers

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
IMAGENET_TRAIN = 1_281_167
MODELS = ("resnet50", "resnet18", "vgg16", "densenet121", "inception_v3", "alexnet", "googlenet")
RECIPES = (
    "alexnet_krizhevsky2012",
    "vgg16_simonyan2014",
    "googlenet_szegedy2014",
    "inception_v3_szegedy2016",
    "resnet50_he2016",
    "resnet50_torchvision",
    "densenet121_huang2017",
)
COMMON = [
    "trainer=gpu",
    "trainer.precision=16-mixed",
    "model.channels_last=true",
    "logger=none",
    "callbacks.progress_bar=null",
    "callbacks.prediction_grid=null",
    "trainer.enable_model_summary=false",
]


def compose_cfg(overrides: list[str], out: Path | None = None):
    paths = [f"paths.output_dir={out}", f"paths.log_dir={out}"] if out else []
    register_resolvers()  # (what the entry points do: conf/ uses them)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=[*paths, *overrides])


def train_run(overrides: list[str], out: Path) -> dict:
    """One short run of the real train task; its results.json."""
    from cnnzoo.tasks.train import train

    started = time.perf_counter()
    train(compose_cfg(overrides, out))
    results = json.loads((out / "results.json").read_text())
    results["check_wall_s"] = time.perf_counter() - started
    return results


def gpu_tests() -> str:
    """Run the GPU and DALI tests; their pytest summary line."""
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfs",
         "tests/test_gpu.py", "tests/test_dali.py"],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    print(proc.stdout[-6000:], proc.stderr[-3000:], sep="\n", flush=True)
    lines = [line for line in proc.stdout.splitlines() if re.search(r"\d+ (passed|failed)", line)]
    return lines[-1].strip("= ") if lines else f"pytest exited {proc.returncode} (no summary)"


def _write_class(args: tuple[Path, int, int, int]) -> int:
    folder, seed, count, first = args
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    total = 0
    for i in range(count):
        low = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)  # smooth colour fields
        pixels = np.asarray(Image.fromarray(low).resize((500, 375), Image.BICUBIC), np.float32)
        pixels += rng.normal(0, 16, pixels.shape)  # detail: ImageNet-like file sizes
        buffer = io.BytesIO()
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=90)
        (folder / f"img_{first + i:06d}.JPEG").write_bytes(buffer.getvalue())
        total += buffer.tell()
    return total


def write_jpegs(root: Path, classes: int, train_per_class: int, val_per_class: int) -> float:
    """An ImageFolder tree of 500x375 JPEGs; their mean size in kB."""
    jobs = [
        (root / split / f"class{c:03d}", 1000 * c + (split == "val"), n, 0)
        for split, n in (("train", train_per_class), ("val", val_per_class))
        for c in range(classes)
    ]
    with ProcessPoolExecutor() as pool:
        total = sum(pool.map(_write_class, jobs))
    return total / (classes * (train_per_class + val_per_class)) / 1e3


def measure(label: str, model: str, data: str, overrides: list[str], out: Path) -> dict:
    """One short run; its row (an error is a row too: one failing run must not hide the
    others)."""
    row = {"model": model, "input": data, "variant": label}
    try:
        results = train_run([f"model={model}", *overrides], out)
        if not results.get("throughput"):
            raise RuntimeError("no training step past the warm-up: raise --steps or the JPEGs")
        row.update(results["throughput"], wall_s=results["check_wall_s"])
    except Exception as e:
        row["error"] = repr(e)[:200]
    print(json.dumps(row), flush=True)
    return row


def synthetic_rows(args, common: list[str], tmp: Path) -> list[dict]:
    """Each model on one fixed random batch (what the GPU can do), and the first compiled."""
    synthetic = [
        *common,
        "data=synthetic",
        f"data.batch_size={args.batch_size}",
        f"data.steps_per_epoch={args.steps}",
        "data.val_steps=1",
        "trainer.max_epochs=1",
        f"callbacks.throughput.warmup_steps={args.warmup}",
    ]
    rows = [measure("eager", m, "synthetic", synthetic, tmp / f"eager-{m}") for m in args.models]
    if args.compile:
        first = args.models[0]
        compiled = [*synthetic, "model.compile=true"]
        rows.append(measure("compiled", first, "synthetic", compiled, tmp / f"compiled-{first}"))
    return rows


def jpeg_rows(args, common: list[str], tmp: Path) -> list[dict]:
    """ResNet-50 on generated ImageNet-sized JPEGs through the worker pipeline and DALI."""
    jpegs = tmp / "jpegs"
    started = time.perf_counter()
    kb = write_jpegs(jpegs, args.classes, args.train_per_class, 2)
    facts = {"facts": "jpeg", "jpeg_kb": kb, "jpegs": args.classes * args.train_per_class,
             "jpeg_write_s": time.perf_counter() - started}  # fmt: skip
    print(json.dumps(facts), flush=True)
    folder = [
        *common,
        "data=imagefolder",
        f"data.root={jpegs}",
        f"data.num_classes={args.classes}",
        "data.index_cache=null",
        f"data.batch_size={args.batch_size}",
        "trainer.max_epochs=2",
        "trainer.limit_val_batches=1",
        f"callbacks.throughput.warmup_steps={args.warmup}",
    ]
    rows = [facts, measure("workers (auto)", "resnet50", "JPEG", [*folder, "data.loader=workers"],
                           tmp / "workers")]  # fmt: skip
    if importlib.util.find_spec("nvidia") and importlib.util.find_spec("nvidia.dali"):
        dali = [*folder, "data.loader=dali"]
        rows.append(measure("dali", "resnet50", "JPEG", dali, tmp / "dali"))
    else:
        rows.append({"model": "resnet50", "input": "JPEG", "variant": "dali",
                     "error": "not run: NVIDIA DALI is not installed"})  # fmt: skip
    return rows


def cost_rows(rows: list[dict]) -> list[str]:
    """Each recipe's GPU-hours from the synthetic images/s of its model."""
    eager = [r for r in rows if (r["input"], r["variant"]) == ("synthetic", "eager")]
    speed = {r["model"]: r["images_per_s"] for r in eager if "images_per_s" in r}
    lines = []
    for recipe in RECIPES:
        cfg = compose_cfg([f"experiment={recipe}"])
        model, epochs = cfg.model.name, int(cfg.trainer.max_epochs)
        if model not in speed:
            continue
        hours = epochs * IMAGENET_TRAIN / speed[model] / 3600
        lines.append(f"| {recipe} | {model} | {epochs} | {speed[model]:,.0f} | {hours:,.1f} | "
                     f"{hours / 8:,.1f} h |")  # fmt: skip
    return lines


def key(row: dict) -> tuple:
    if "tests" in row or "facts" in row:
        return (row.get("facts", "tests"),)
    return row["model"], row["input"], row["variant"]


def merged(rows: list[dict]) -> list[dict]:
    """The rows of every stage run so far, the latest of each (model, input, variant)."""
    latest = {}
    for row in rows:
        latest.pop(key(row), None)  # (a re-run row moves to the end)
        latest[key(row)] = row
    return list(latest.values())


def device_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return f"CPU ({platform.processor() or platform.machine()})"


def report(rows: list[dict], common: list[str]) -> str:
    import pytorch_lightning as pl

    try:
        from nvidia.dali import __version__ as dali_version
    except ImportError:
        dali_version = "not installed"
    tests = next((r["tests"] for r in rows if "tests" in r), "not run")
    facts = next((r for r in rows if r.get("facts") == "jpeg"), {})
    runs = [r for r in rows if "model" in r]
    lines = [
        f"{time.strftime('%Y-%m-%d')}, {device_name()}, torch {torch.__version__} "
        f"(CUDA {torch.version.cuda}), Lightning {pl.__version__}, DALI {dali_version}, "
        f"Python {platform.python_version()}; `python benchmarks/gpu_check.py`",
        "",
        f"GPU tests: {tests}",
        "",
        f"Each run: {' '.join(common)}. JPEG: {facts.get('jpegs', 0):,} generated 500x375 JPEGs "
        f"(mean {facts.get('jpeg_kb', 0):.0f} kB), 2 epochs from the page cache.",
        "",
        "| model | input | variant | images/s | ms/step | data wait | run wall s |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in runs:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['input']} | {r['variant']} | {r['error']} | | | |")
            continue
        lines.append(
            f"| {r['model']} | {r['input']} | {r['variant']} | {r['images_per_s']:,.0f} "
            f"| {r['step_ms']:.1f} | {100 * r['data_wait']:.0f}% | {r['wall_s']:.0f} |"
        )
    lines += [
        "",
        "Derived (not measured): epochs x 1,281,167 / synthetic images/s; 8 GPUs assumed linear.",
        "",
        "| recipe | model | epochs | images/s | GPU-hours (1 GPU) | wall on 8 GPUs |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
        *cost_rows(runs),
    ]
    return "\n".join(lines) + "\n"


def with_overrides(base: list[str], extra: list[str]) -> list[str]:
    """``base`` with each of ``extra`` replacing the override of the same key."""
    keys = {o.split("=")[0] for o in extra}
    return [o for o in base if o.split("=")[0] not in keys] + extra


STAGES = ("tests", "synthetic", "jpeg")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("gpu_check.md"))
    parser.add_argument("--rows", type=Path, help="the runs' rows, kept across calls "
                        "(default: --out with .jsonl; delete it to start over)")  # fmt: skip
    parser.add_argument("--only", default=",".join(STAGES), help="stages: tests,synthetic,jpeg")
    parser.add_argument("--models", default=",".join(MODELS), help="for the synthetic stage")
    parser.add_argument("--quick", action="store_true", help="resnet50 and resnet18 only")
    parser.add_argument("--no-compile", dest="compile", action="store_false")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=50, help="synthetic steps per run")
    parser.add_argument("--warmup", type=int, default=10, help="first steps left out")
    parser.add_argument("--classes", type=int, default=100, help="JPEG classes")
    parser.add_argument("--train-per-class", type=int, default=64, help="JPEGs per class")
    parser.add_argument("--set", action="append", default=[], metavar="OVERRIDE",
                        help="a Hydra override for every run (replaces its key's)")  # fmt: skip
    args = parser.parse_args(argv)
    stages = args.only.split(",")
    if unknown := set(stages) - set(STAGES):
        parser.error(f"unknown stage {sorted(unknown)}; the stages are {','.join(STAGES)}")
    args.models = args.models.split(",")[: 2 if args.quick else None]
    common = with_overrides(COMMON, args.set)
    if not torch.cuda.is_available() and "trainer=gpu" in common:
        print("error: the GPU check needs a CUDA GPU (torch.cuda.is_available() is False); "
              "to try the script elsewhere, --set trainer=cpu --set trainer.precision=32",
              file=sys.stderr)  # fmt: skip
        return 1
    rows_path = args.rows or args.out.with_suffix(".jsonl")
    kept = rows_path.read_text().splitlines() if rows_path.exists() else []
    rows = [json.loads(line) for line in kept]

    def keep(new: list[dict]) -> None:
        rows.extend(new)
        with rows_path.open("a") as f:
            f.writelines(json.dumps(row) + "\n" for row in new)
        args.out.write_text(report(merged(rows), common))

    failed = []
    if "tests" in stages:
        summary = gpu_tests()
        keep([{"tests": summary}])
        failed += ["tests"] if "failed" in summary or "passed" not in summary else []
    with tempfile.TemporaryDirectory() as tmp:
        for stage, rows_of in (("synthetic", synthetic_rows), ("jpeg", jpeg_rows)):
            if stage in stages:
                new = rows_of(args, common, Path(tmp))
                keep(new)
                failed += [f"{r['model']} {r['variant']}" for r in new if "error" in r]
    print(args.out.read_text() if args.out.exists() else "", end="")
    print(f"rows: {rows_path}; failed: {', '.join(failed) or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
