"""Training images/s on one GPU through the real train task (our module, metrics, callbacks).

    python benchmarks/gpu_throughput.py --out gpu_throughput.md

Each row is one short run composed from the real config (``logger=none``, no progress bar),
the figure the Throughput callback reports (warm-up steps left out): synthetic input (one
fixed batch, no input pipeline) and the sample set's real JPEGs through the DataLoader.
"""

import argparse
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from cnnzoo.tasks.train import train

CONF = Path(__file__).resolve().parents[1] / "conf"


def run(overrides: list[str], out: Path) -> dict:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            "train", overrides=[f"paths.output_dir={out}", f"paths.log_dir={out}", *overrides]
        )
    train(cfg)
    return json.loads((out / "results.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("gpu_throughput.md"))
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=60, help="synthetic steps per run")
    parser.add_argument("--workers", type=int, default=min(12, os.cpu_count() or 1))
    parser.add_argument("--models", default="resnet50,resnet18,vgg16,densenet121,inception_v3")
    parser.add_argument("--skip-sample", action="store_true")
    parser.add_argument(
        "--normalize-ab",
        action="store_true",
        help="only: the first model on the sample set, 16-mixed, channels_last, normalising in "
        "the workers (float32 batches) vs on the GPU (uint8 batches), alternating, 2 repeats",
    )
    args = parser.parse_args()

    common = [
        "trainer=gpu",
        "logger=none",
        "callbacks.progress_bar=null",
        "callbacks.prediction_grid=null",
        "callbacks.throughput.warmup_steps=10",
        "trainer.enable_model_summary=false",
        f"data.batch_size={args.batch_size}",
    ]
    synthetic = [
        "data=synthetic",
        f"data.steps_per_epoch={args.steps}",
        "data.val_steps=1",
        "trainer.max_epochs=1",
    ]
    sample = [
        "data=sample",
        "data.train_per_class=400",
        f"data.num_workers={args.workers}",
        "trainer.max_epochs=4",
        "callbacks.throughput.warmup_steps=3",
    ]
    grid = []  # (model, input, precision, channels_last, normalise on the device)
    first, *others = args.models.split(",")
    if args.normalize_ab:
        for _ in range(2):
            for on_device in ("false", "true"):
                grid.append((first, "sample", "16-mixed", "true", on_device))
    else:
        for precision in ("16-mixed", "bf16-mixed"):
            for cl in ("false", "true"):
                grid.append((first, "synthetic", precision, cl, "null"))
        grid.append((first, "synthetic", "32-true", "false", "null"))
        if not args.skip_sample:
            for precision in ("16-mixed", "bf16-mixed"):
                for cl in ("false", "true"):
                    grid.append((first, "sample", precision, cl, "null"))
        for model in others:
            for precision in ("16-mixed", "bf16-mixed"):
                grid.append((model, "synthetic", precision, "true", "null"))

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (model, data, precision, cl, on_device) in enumerate(grid):
            overrides = [
                *common,
                *(synthetic if data == "synthetic" else sample),
                f"model={model}",
                f"trainer.precision={precision}",
                f"model.channels_last={cl}",
            ]
            if data == "sample":
                overrides.append(f"data.normalize_on_device={on_device}")
            perf = run(overrides, Path(tmp) / str(i))["throughput"]
            rows.append((model, data, precision, cl, on_device, perf))
            print(f"{model} {data} {precision} cl={cl} on_device={on_device}: {perf}", flush=True)

    device = torch.cuda.get_device_name()
    lines = [
        f"GPU: {device}; torch {torch.__version__}; Python {platform.python_version()}; "
        f"global batch {args.batch_size}; {args.workers} DataLoader workers for the sample set",
        "",
        "| model | input | precision | channels_last | normalise on GPU | images/s | ms/step "
        "| data wait |",
        "| --- | --- | --- | --- | --- | ---: | ---: | ---: |",
    ]
    for model, data, precision, cl, on_device, perf in rows:
        on_device = {"null": "auto (yes)"}.get(on_device, on_device) if data == "sample" else "-"
        lines.append(
            f"| {model} | {data} | {precision} | {cl} | {on_device} | {perf['images_per_s']:.0f} | "
            f"{perf['step_ms']:.1f} | {100 * perf['data_wait']:.0f}% |"
        )
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
