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


def throughput_rows(args, tmp: Path) -> tuple[list[dict], dict]:
    rows = []

    def measure(label: str, model: str, data: str, overrides: list[str]) -> None:
        out = tmp / f"run{len(rows)}"
        try:
            results = train_run([*COMMON, f"model={model}", *overrides], out)
            perf = results["throughput"] or {}
            row = {"model": model, "input": data, "variant": label, **perf,
                   "wall_s": results["check_wall_s"]}  # fmt: skip
        except Exception as e:  # one failing row must not hide the others
            row = {"model": model, "input": data, "variant": label, "error": repr(e)[:200]}
        rows.append(row)
        print(json.dumps(row), flush=True)

    batch = f"data.batch_size={args.batch_size}"
    synthetic = [
        "data=synthetic",
        batch,
        f"data.steps_per_epoch={args.steps}",
        "data.val_steps=1",
        "trainer.max_epochs=1",
        "callbacks.throughput.warmup_steps=10",
    ]
    models = MODELS[:2] if args.quick else MODELS
    for model in models:
        measure("eager", model, "synthetic", synthetic)
    measure("compiled", "resnet50", "synthetic", [*synthetic, "model.compile=true"])
    jpegs = tmp / "jpegs"
    started = time.perf_counter()
    kb = write_jpegs(jpegs, 100, args.train_per_class, 2)
    facts = {"jpeg_kb": kb, "jpegs": 100 * args.train_per_class,
             "jpeg_write_s": time.perf_counter() - started}  # fmt: skip
    print(json.dumps(facts), flush=True)
    folder = [
        "data=imagefolder",
        f"data.root={jpegs}",
        "data.num_classes=100",
        "data.index_cache=null",
        batch,
        "trainer.max_epochs=2",
        "trainer.limit_val_batches=1",
        "callbacks.throughput.warmup_steps=5",
    ]
    measure("workers (auto)", "resnet50", "JPEG", [*folder, "data.loader=workers"])
    measure("dali (GPU)", "resnet50", "JPEG", [*folder, "data.loader=dali"])
    return rows, facts


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


def report(rows: list[dict], facts: dict, tests: str, args) -> str:
    import pytorch_lightning as pl

    try:
        from nvidia.dali import __version__ as dali_version
    except ImportError:
        dali_version = "not installed"
    lines = [
        f"{time.strftime('%Y-%m-%d')}, {torch.cuda.get_device_name()}, torch {torch.__version__} "
        f"(CUDA {torch.version.cuda}), Lightning {pl.__version__}, DALI {dali_version}, "
        f"Python {platform.python_version()}; `python benchmarks/gpu_check.py`",
        "",
        f"GPU tests: {tests}",
        "",
        f"Global batch {args.batch_size}, 16-mixed, channels_last. JPEG: "
        f"{facts.get('jpegs', 0):,} generated 500x375 JPEGs (mean {facts.get('jpeg_kb', 0):.0f} "
        "kB), 2 epochs from the page cache.",
        "",
        "| model | input | variant | images/s | ms/step | data wait | run wall s |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['input']} | {r['variant']} | failed: "
                         f"{r['error']} | | | |")  # fmt: skip
            continue
        lines.append(
            f"| {r['model']} | {r['input']} | {r['variant']} | {r.get('images_per_s', 0):,.0f} "
            f"| {r.get('step_ms', 0):.1f} | {100 * r.get('data_wait', 0):.0f}% | "
            f"{r['wall_s']:.0f} |"
        )
    lines += [
        "",
        "Derived (not measured): epochs x 1,281,167 / synthetic images/s; 8 GPUs assumed linear.",
        "",
        "| recipe | model | epochs | images/s | GPU-hours (1 GPU) | wall on 8 GPUs |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
        *cost_rows(rows),
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("gpu_check.md"))
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=50, help="synthetic steps per run")
    parser.add_argument("--train-per-class", type=int, default=64, help="JPEGs per class (x100)")
    parser.add_argument("--skip-tests", action="store_true")
    parser.add_argument("--quick", action="store_true", help="resnet50 and resnet18 only")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("error: the GPU check needs a CUDA GPU (torch.cuda.is_available() is False).",
              file=sys.stderr)  # fmt: skip
        return 1
    tests = "not run (--skip-tests)" if args.skip_tests else gpu_tests()
    with tempfile.TemporaryDirectory() as tmp:
        rows, facts = throughput_rows(args, Path(tmp))
    text = report(rows, facts, tests, args)
    args.out.write_text(text)
    print(text)
    return 0 if "failed" not in tests and all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
