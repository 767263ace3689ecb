"""Learning parity (``make bench-parity ROOT=DIR``): does cnnzoo train as well as a plain loop?

One recipe, trained from scratch over several seeds by

- ``plain``: a plain PyTorch loop over torchvision's ``ImageFolder`` with PIL transforms as
  torchvision's reference presets write them (RandomResizedCrop + flip; Resize + CenterCrop),
  ``torchvision.models.resnet18``, SGD with momentum and weight decay, cosine per epoch;
- ``torchvision``, ``pil``: ``python train.py`` with the same recipe and ``data.decoder=<arm>``,

on a folder of real photos in the ImageFolder layout (``ROOT/train/<class>/*``,
``ROOT/val/<class>/*``). Each run's score is its best val top-1 over the epochs. The report
gives each arm's mean and standard deviation, and each cnnzoo arm's difference from the plain
loop with a 95% interval (Welch's t); the decoders, which share seeds and batch order, are also
compared pair by pair (paired t).

Runs this short are chaotic (a twentieth of a grey level of input noise moves one run by
several points), so only the seeds' spread tells a real gap from noise: give enough seeds.
Each finished run is appended to ``--results`` (JSON lines) and skipped when the benchmark is
run again with the same recipe, so an interrupted benchmark continues where it stopped.
"""

import argparse
import json
import math
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torchvision
from scipy import stats
from torch.utils.data import DataLoader
from torchvision.datasets import ImageFolder
from torchvision.transforms import v2

from cnnzoo.data.transforms import IMAGENET_MEAN, IMAGENET_STD

REPO = Path(__file__).resolve().parents[1]
ARMS = ("plain", "torchvision", "pil")


def recipe_of(args: argparse.Namespace) -> dict:
    """What makes two runs comparable (a stored run counts only under the same recipe)."""
    return {
        "root": str(Path(args.root).resolve()),
        "epochs": args.epochs,
        "size": args.size,
        "resize": args.resize,
        "lr": args.lr,
        "batch": args.batch,
        "workers": args.workers,
    }


def plain_run(recipe: dict, seed: int) -> float:
    """Best val top-1 of a plain PyTorch loop, torchvision's reference recipe."""
    torch.manual_seed(seed)
    tail = [v2.PILToTensor(), v2.ToDtype(torch.float32, scale=True)]
    tail.append(v2.Normalize(IMAGENET_MEAN, IMAGENET_STD))
    train_tf = v2.Compose([v2.RandomResizedCrop(recipe["size"]), v2.RandomHorizontalFlip(), *tail])
    eval_tf = v2.Compose([v2.Resize(recipe["resize"]), v2.CenterCrop(recipe["size"]), *tail])
    root = Path(recipe["root"])
    train_set, val_set = ImageFolder(root / "train", train_tf), ImageFolder(root / "val", eval_tf)
    workers = recipe["workers"]
    generator = torch.Generator().manual_seed(seed)
    train = DataLoader(
        train_set, recipe["batch"], shuffle=True, drop_last=True, num_workers=workers,
        generator=generator, persistent_workers=workers > 0,
    )  # fmt: skip
    val = DataLoader(val_set, recipe["batch"], num_workers=workers)
    model = torchvision.models.resnet18(num_classes=len(train_set.classes))
    optimizer = torch.optim.SGD(model.parameters(), recipe["lr"], momentum=0.9, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=recipe["epochs"])
    best = 0.0
    for _ in range(recipe["epochs"]):
        model.train()
        for images, labels in train:
            loss = torch.nn.functional.cross_entropy(model(images), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        schedule.step()
        model.eval()
        correct = 0
        with torch.no_grad():
            for images, labels in val:
                correct += int((model(images).argmax(1) == labels).sum())
        best = max(best, correct / len(val_set))
    return best


def cnnzoo_run(recipe: dict, seed: int, decoder: str, scratch: Path) -> float:
    """Best val top-1 of ``python train.py`` with the same recipe and ``data.decoder``."""
    out = scratch / f"{decoder}-{seed}"
    overrides = [
        "data=imagefolder", f"data.root={recipe['root']}", "model=resnet18",
        f"model.input_size={recipe['size']}", f"model.eval_resize={recipe['resize']}",
        "optim=sgd_momentum", f"model.lr={recipe['lr']}", "scheduler=cosine", "trainer=cpu",
        f"trainer.max_epochs={recipe['epochs']}", f"data.batch_size={recipe['batch']}",
        f"data.num_workers={recipe['workers']}", f"data.decoder={decoder}", f"seed={seed}",
        "logger=none", f"hydra.run.dir={out}",
    ]  # fmt: skip
    done = subprocess.run(
        [sys.executable, str(REPO / "train.py"), *overrides],
        cwd=REPO, capture_output=True, text=True, check=False,
    )  # fmt: skip
    try:
        if done.returncode != 0:
            raise SystemExit(f"train.py failed ({decoder}, seed {seed}):\n{done.stderr[-3000:]}")
        results = json.loads((out / "results.json").read_text())
        return float(results["optimized_metric_value"])
    finally:
        shutil.rmtree(out, ignore_errors=True)  # checkpoints: ~45 MB a run


def load_done(path: Path, recipe: dict) -> dict[tuple[str, int], float]:
    """The runs already measured with this recipe: (arm, seed) -> best val top-1."""
    done = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            row = json.loads(line)
            if row["recipe"] == recipe:
                done[(row["arm"], row["seed"])] = row["top1"]
    return done


def interval(a: list[float], b: list[float], paired: bool) -> tuple[float, float, float]:
    """mean(a) - mean(b) and its 95% interval (paired t, or Welch's t)."""
    if paired:
        diffs = [x - y for x, y in zip(a, b, strict=True)]
        mean, se = statistics.mean(diffs), statistics.stdev(diffs) / math.sqrt(len(diffs))
        dof = len(diffs) - 1
    else:
        va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
        mean, se = statistics.mean(a) - statistics.mean(b), math.sqrt(va + vb)
        dof = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1)) if se else 1
    half = stats.t.ppf(0.975, dof) * se
    return mean, mean - half, mean + half


def pct(value: float) -> str:
    return f"{100 * value:+.1f}"


def report(recipe: dict, scores: dict[str, list[float]], seeds: list[int]) -> str:
    lines = [
        f"# Learning parity ({time.strftime('%Y-%m-%d')}, torch {torch.__version__}, "
        f"torchvision {torchvision.__version__}, {platform.processor() or platform.machine()})",
        "",
        f"Recipe: {json.dumps(recipe)}; seeds {seeds[0]}..{seeds[-1]} ({len(seeds)}).",
        "Score: best val top-1 over the epochs.",
        "",
        "| arm | runs | mean | sd | min | max | vs plain (95% CI, Welch) |",
        "|---|---|---|---|---|---|---|",
    ]
    for arm, values in scores.items():
        versus = "-"
        if arm != "plain" and "plain" in scores and len(values) > 1:
            mean, low, high = interval(values, scores["plain"], paired=False)
            versus = f"{pct(mean)} points [{pct(low)}, {pct(high)}]"
        sd = statistics.stdev(values) if len(values) > 1 else float("nan")
        lines.append(
            f"| {arm} | {len(values)} | {statistics.mean(values):.3f} | {sd:.3f} | "
            f"{min(values):.3f} | {max(values):.3f} | {versus} |"
        )
    if {"torchvision", "pil"} <= set(scores) and len(seeds) > 1:
        mean, low, high = interval(scores["torchvision"], scores["pil"], paired=True)
        lines += [
            "",
            f"torchvision - pil, paired by seed: {pct(mean)} points, 95% CI "
            f"[{pct(low)}, {pct(high)}].",
        ]
    lines += ["", "Per seed:", "", "| seed | " + " | ".join(scores) + " |"]
    lines.append("|---" * (len(scores) + 1) + "|")
    for i, seed in enumerate(seeds):
        lines.append(f"| {seed} | " + " | ".join(f"{v[i]:.3f}" for v in scores.values()) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", required=True, help="ImageFolder tree: ROOT/{train,val}/<class>")
    parser.add_argument("--seeds", type=int, default=10, help="runs per arm (seeds 0..N-1)")
    parser.add_argument("--arms", default=",".join(ARMS), help=f"of {','.join(ARMS)}")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--size", type=int, default=64, help="train and eval crop, px")
    parser.add_argument("--resize", type=int, default=73, help="eval short side, px")
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1, help="DataLoader workers")
    parser.add_argument("--results", default="parity_runs.jsonl", help="one line per run")
    parser.add_argument("--out", default="parity.md", help="the report")
    args = parser.parse_args()
    for folder in ("train", "val"):
        if not (Path(args.root) / folder).is_dir():
            raise SystemExit(f"--root {args.root}: no {folder}/ folder (ROOT/{folder}/<class>/*)")
    arms = args.arms.split(",")
    if unknown := set(arms) - set(ARMS):
        raise SystemExit(f"--arms: unknown {sorted(unknown)}; choose from {list(ARMS)}")
    recipe, results = recipe_of(args), Path(args.results)
    done = load_done(results, recipe)
    seeds = list(range(args.seeds))
    with tempfile.TemporaryDirectory(prefix="cnnzoo-parity-") as scratch:
        for seed in seeds:
            for arm in arms:
                if (arm, seed) in done:
                    continue
                start = time.perf_counter()
                if arm == "plain":
                    top1 = plain_run(recipe, seed)
                else:
                    top1 = cnnzoo_run(recipe, seed, arm, Path(scratch))
                seconds = time.perf_counter() - start
                done[(arm, seed)] = top1
                row = {"recipe": recipe, "arm": arm, "seed": seed, "top1": top1, "s": seconds}
                with results.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                print(f"{arm:12s} seed {seed:3d}: best val top-1 {top1:.3f} ({seconds:.0f} s)")
    scores = {arm: [done[(arm, seed)] for seed in seeds] for arm in arms}
    text = report(recipe, scores, seeds)
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
