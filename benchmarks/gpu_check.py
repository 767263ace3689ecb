"""The GPU check (``make gpu-check``): the GPU tests, then training images/s, on one CUDA GPU.

    python benchmarks/gpu_check.py [--out gpu_check.md] [--only STAGES] [--quick] [--set K=V]

Its stages (``--only``, all by default), in this order:

- ``tests``: ``pytest tests/test_gpu.py tests/test_dali.py`` (``--tests-k`` picks some):
  16-mixed (grad-scaler resume) and bf16, channels_last, compile + SyncBatchNorm under DDP on
  one GPU, the GPU defaults (uint8 batches normalised on the GPU, EMA), DALI on the GPU.
- ``synthetic``: training images/s of each model (``--models``) on one fixed random batch (no
  input pipeline: what the GPU can do), through the real train task (Throughput callback,
  warm-up steps left out), global batch 256, 16-mixed, channels_last, each model at its
  paper's input size; ``compiled``: the first model with ``model.compile=true``.
- ``loader``: each input pipeline alone (workers, then DALI), no training: the images/s it
  supplies, each batch on the GPU and waited for, over the same JPEGs as the next stages, and
  its pass start (the seconds to the first batch); ``--dali-variants``: DALI with other
  settings too (``cnnzoo.data.dali.Tuning``; ``reader``: fed by DALI's own file reader). With
  the ``dali`` stage's figure it tells a loader too slow to feed the GPU from one whose work on
  the GPU slows the training step.
- ``workers`` and ``dali``: ResNet-50 on generated ImageNet-sized JPEGs (500x375, about
  ImageNet's mean file size, 100 classes; no download; ``--jpegs DIR`` keeps them for the next
  call) through the worker pipeline (``num_workers=auto``) and ``data.loader=dali``. "data
  wait" is the share of step time spent waiting for the next batch.

Each stage's rows are appended to ``--rows`` (default: ``--out`` with ``.jsonl``), so stages
can run in separate calls (a lease with short calls, a kit carried in parts: see
``gpu_kit.py``); ``--out`` (markdown) is written after each stage from all rows so far, the
latest of each: the GPU, the versions, the images/s table and the cost table derived from it
(each paper recipe's GPU-hours on one GPU and wall time on 8: epochs x 1,281,167 images /
synthetic images/s, 8 GPUs assumed to scale linearly). A run that fails is a row saying why.
Exits 1 if a test or a run failed.
"""

import argparse
import contextlib
import functools
import io
import json
import platform
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_dir

from cnnzoo.tasks.resolvers import register_resolvers

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
IMAGENET_TRAIN = 1_281_167
MODELS = ("resnet50", "resnet18", "vgg16", "densenet121", "inception_v3", "alexnet", "googlenet",
          "alexnet2012")  # fmt: skip
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


def gpu_tests(selection: str, on_gpu: bool | None = None) -> dict:
    """Run the GPU and DALI tests (those ``-k selection`` picks); a row with pytest's summary.
    On a GPU (``on_gpu``: where torch sees one) a skipped test fails the stage, naming it."""
    pick = ["-k", selection] if selection else []
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", "-rfs", *pick,
         "tests/test_gpu.py", "tests/test_dali.py"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    output = []
    for line in proc.stdout:  # as it comes: a call cut off at its time limit still shows it
        print(line, end="", flush=True)
        output.append(line.rstrip("\n"))
    returncode = proc.wait()
    summary = r"\d+ (passed|failed|skipped|deselected|errors?)\b.* in [\d.]+s"
    lines = [line for line in output if re.search(summary, line)]
    summary = lines[-1].strip("= ") if lines else f"pytest exited {returncode} (no summary)"
    skipped = [line for line in output if line.startswith("SKIPPED")]
    if on_gpu is None:
        on_gpu = torch.cuda.is_available()
    unexpected = [line for line in skipped if not any(r in line for r in SKIPS_ON_ONE_GPU)]
    unexpected = unexpected if on_gpu else []  # (on the CPU the GPU tests skip, as they should)
    if unexpected:  # (on a GPU with the kit, a skipped test is a check that did not happen)
        summary += "; skipped on a GPU: " + "; ".join(unexpected)
    return {"tests": summary, "k": selection, "failed": returncode != 0 or bool(unexpected)}


SKIPS_ON_ONE_GPU = ("needs two GPUs",)  # the one skip a single lent GPU may show


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


def synthetic_runs(args, common: list[str]) -> list[str]:
    return [
        *common,
        "data=synthetic",
        f"data.batch_size={args.batch_size}",
        f"data.steps_per_epoch={args.steps}",
        "data.val_steps=1",
        "trainer.max_epochs=1",
        f"callbacks.throughput.warmup_steps={args.warmup}",
    ]


def synthetic_rows(args, common: list[str], tmp: Path) -> list[dict]:
    """Each model on one fixed random batch: what the GPU can do without an input pipeline."""
    runs = synthetic_runs(args, common)
    return [measure("eager", m, "synthetic", runs, tmp / f"eager-{m}") for m in args.models]


def compiled_rows(args, common: list[str], tmp: Path) -> list[dict]:
    """The first model compiled (``model.compile=true``), on the same synthetic batch."""
    runs = [*synthetic_runs(args, common), "model.compile=true"]
    return [measure("compiled", args.models[0], "synthetic", runs, tmp / "compiled")]


def jpeg_tree(args, tmp: Path) -> tuple[Path, dict]:
    """The generated JPEGs (in ``--jpegs``, reused while complete) and their facts."""
    root = args.jpegs or tmp / "jpegs"
    done = root / "facts.json"  # written once the tree is complete
    facts = {"facts": "jpeg", "classes": args.classes, "jpegs": args.classes * args.train_per_class}
    if done.exists() and (written := json.loads(done.read_text())).items() >= facts.items():
        return root, written
    started = time.perf_counter()
    facts["jpeg_kb"] = write_jpegs(root, args.classes, args.train_per_class, 2)
    facts["jpeg_write_s"] = time.perf_counter() - started
    done.write_text(json.dumps(facts))
    print(json.dumps(facts), flush=True)
    return root, facts


def jpeg_rows(loader: str, label: str):
    def rows(args, common: list[str], tmp: Path) -> list[dict]:
        """ResNet-50 on generated ImageNet-sized JPEGs through one input pipeline."""
        if loader == "dali" and not (find_spec("nvidia") and find_spec("nvidia.dali")):
            return [{"model": "resnet50", "input": "JPEG", "variant": label,
                     "error": "not run: NVIDIA DALI is not installed"}]  # fmt: skip
        root, facts = jpeg_tree(args, tmp)
        runs = [
            *jpeg_data(root, args, loader),
            "trainer.max_epochs=2",
            "trainer.limit_val_batches=1",
            f"callbacks.throughput.warmup_steps={args.warmup}",
        ]
        runs = with_overrides(runs, common)  # (--set trainer.max_epochs=1 replaces the 2)
        tuning = args.dali_tuning if loader == "dali" else ""
        with dali_tuned(tuning):
            row = measure(label + (f" ({tuning})" if tuning else ""), "resnet50", "JPEG", runs,
                          tmp / loader)  # fmt: skip
        return [facts, row]

    return rows


def supply(loader: str, root: Path, args, common: list[str], tuning: str = "") -> dict:
    """Images/s of one input pipeline alone: ``--loader-batches`` training batches after the
    warm-up, each moved to the device, normalised there (what the DataModule's batch hook does
    in training) and waited for. DALI runs with ``tuning`` (see ``dali_tuned``)."""
    from cnnzoo.build import build_datamodule
    from cnnzoo.data.pipelines import Placement

    label = f"{loader} alone (no training)" + (f", {tuning}" if tuning else "")
    row = {"model": "-", "input": "JPEG", "variant": label}
    if loader == "dali" and not (find_spec("nvidia") and find_spec("nvidia.dali")):
        return {**row, "error": "not run: NVIDIA DALI is not installed"}
    try:
        cfg = compose_cfg([*common, *jpeg_data(root, args, loader)])
        gpu = torch.cuda.is_available() and cfg.trainer.accelerator != "cpu"
        device = torch.device("cuda", 0) if gpu else torch.device("cpu")
        datamodule = build_datamodule(cfg)
        datamodule.placement_override = Placement(device=device, training=True)
        datamodule.setup("fit")
        with dali_tuned(tuning):  # (DALI builds its pipeline when the first batch is asked)
            source = datamodule.train_dataloader()
            source = dali_reader(source) if "reader" in tuning.split(",") else source
            images, batches, seconds, first = timed(source, datamodule, device, args)
        if not images:
            raise RuntimeError(f"{batches} batches, none past the warm-up: more --train-per-class")
        row.update(images_per_s=images / seconds, step_ms=1000 * seconds / (batches - args.warmup),
                   data_wait=None, wall_s=seconds, pass_start_s=first)  # fmt: skip
    except Exception as e:
        row["error"] = repr(e)[:200]
    print(json.dumps(row), flush=True)
    return row


def timed(source, datamodule, device: torch.device, args) -> tuple[int, int, float, float]:
    """Images and batches taken from ``source`` after the warm-up, the seconds they took, and
    the seconds to the first batch (the pass's start: DALI builds a pipeline for each pass)."""
    started, images, batches = time.perf_counter(), 0, 0
    for batches, (x, y) in enumerate(source, 1):
        x = datamodule.on_after_batch_transfer((x.to(device), y.to(device)), 0)[0]
        if device.type == "cuda":
            torch.cuda.synchronize()
        if batches == 1:
            first = time.perf_counter() - started
        if batches == args.warmup:
            started, images = time.perf_counter(), 0
        elif batches > args.warmup:
            images += len(x)
        if batches == args.warmup + args.loader_batches:
            break
    return images, batches, time.perf_counter() - started, first


def loader_rows(args, common: list[str], tmp: Path) -> list[dict]:
    """Each input pipeline alone on the generated JPEGs (see ``supply``): the workers, DALI
    as it ships (or with ``--dali-tuning``), then DALI with each of ``--dali-variants``."""
    root, facts = jpeg_tree(args, tmp)
    dali = [args.dali_tuning, *filter(None, args.dali_variants.split(";"))]
    return [facts, supply("workers", root, args, common),
            *(supply("dali", root, args, common, tuning) for tuning in dali)]  # fmt: skip


def tuning_of(spec: str):
    """A ``cnnzoo.data.dali.Tuning`` from ``key=value,...``: ``read_ahead``, ``queue`` and
    ``stream``, any other key an argument of DALI's decoders (``hw_decoder_load=1.0``,
    ``affine=false``, ...); ``reader`` (no value) is for ``dali_reader``."""
    from cnnzoo.data import dali

    fields, decoder = {}, {}
    for item in filter(None, spec.split(",")):
        name, _, value = item.partition("=")
        if name != "reader":
            where = fields if name in ("read_ahead", "queue", "stream") else decoder
            where[name] = json.loads(value.lower())  # (1.0, 4, true)
    return dali.Tuning(**fields, decoder=decoder)


@contextlib.contextmanager
def dali_tuned(spec: str):
    """DALI pipelines built inside run with the ``spec``'s tuning (none: as they ship)."""
    from cnnzoo.data import dali

    shipped = dali.TUNING
    dali.TUNING = tuning_of(spec) if spec else shipped
    try:
        yield
    finally:
        dali.TUNING = shipped


def dali_reader(loader):
    """``loader``'s DALI graph fed by DALI's own file reader (its C++ threads read the epoch's
    files in the same order) instead of our Python feed: what DALI supplies on this machine
    when Python does not hand it the files (no bad-file policy, no resume: a yardstick)."""
    from nvidia.dali import fn, pipeline_def
    from nvidia.dali.plugin.pytorch import feed_ndarray

    from cnnzoo.data import dali
    from cnnzoo.data.dali_graph import graph

    feed, tuning = loader.feed, dali.TUNING
    order = [i for i, _ in feed.sampler]

    files = [feed.index.path(i) for i in order]
    labels = [int(feed.index.targets[i]) for i in order]
    threads, device_id = loader.num_threads, loader.device_id

    @pipeline_def(batch_size=feed.batch_size, num_threads=threads, device_id=device_id, seed=1,
                  prefetch_queue_depth=tuning.queue)  # fmt: skip
    def pipeline():
        encoded, label = fn.readers.file(files=files, labels=labels)
        decode = "cpu" if device_id is None else "mixed"
        return graph(loader.recipe, encoded, decode, tuning.decoder), label

    pipe = pipeline()
    pipe.build()
    stream = None if device_id is None else torch.cuda.current_stream(device_id)
    try:
        while True:  # (the reader wraps around at the end of the files)
            images, label = pipe.run()
            out = dali._to_torch(images, loader.recipe.normalize, feed_ndarray, stream, device_id)
            yield out, dali._labels(label)
    finally:
        pipe._shutdown()


def jpeg_data(root: Path, args, loader: str) -> list[str]:
    return [
        "data=imagefolder",
        f"data.root={root}",
        f"data.num_classes={args.classes}",
        "data.index_cache=null",
        f"data.batch_size={args.batch_size}",
        f"data.loader={loader}",
    ]


STAGES = {
    "synthetic": synthetic_rows,
    "compiled": compiled_rows,
    "loader": loader_rows,
    "workers": jpeg_rows("workers", "workers (auto)"),
    "dali": jpeg_rows("dali", "dali"),
}


@functools.cache
def recipe_plans() -> list[tuple[str, str, int]]:
    """(recipe, model, epochs) of each paper recipe, from its experiment config."""
    plans = []
    for recipe in RECIPES:
        cfg = compose_cfg([f"experiment={recipe}"])
        plans.append((recipe, cfg.model.name, int(cfg.trainer.max_epochs)))
    return plans


def cost_rows(rows: list[dict]) -> list[str]:
    """Each recipe's GPU-hours from the synthetic images/s of its model."""
    eager = [r for r in rows if (r["input"], r["variant"]) == ("synthetic", "eager")]
    speed = {r["model"]: r["images_per_s"] for r in eager if "images_per_s" in r}
    lines = []
    for recipe, model, epochs in recipe_plans():
        if model not in speed:
            continue
        hours = epochs * IMAGENET_TRAIN / speed[model] / 3600
        lines.append(f"| {recipe} | {model} | {epochs} | {speed[model]:,.0f} | {hours:,.1f} | "
                     f"{hours / 8:,.1f} h |")  # fmt: skip
    return lines


def key(row: dict) -> tuple:
    if "tests" in row:
        return "tests", row["k"]
    if "facts" in row:
        return ("facts",)
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
    tests = [f"{r['tests']}" + (f" (-k {r['k']})" if r["k"] else "") for r in rows if "tests" in r]
    facts = next((r for r in rows if r.get("facts") == "jpeg"), {})
    runs = [r for r in rows if "model" in r]
    lines = [
        f"{time.strftime('%Y-%m-%d')}, {device_name()}, torch {torch.__version__} "
        f"(CUDA {torch.version.cuda}), Lightning {pl.__version__}, DALI {dali_version}, "
        f"Python {platform.python_version()}; `python benchmarks/gpu_check.py`",
        "",
        f"GPU tests: {'; '.join(tests) or 'not run'}",
        "",
        f"Each run: {' '.join(common)}. JPEG: {facts.get('jpegs', 0):,} generated 500x375 JPEGs "
        f"(mean {facts.get('jpeg_kb', 0):.0f} kB), 2 epochs from the page cache.",
        "",
        "| model | input | variant | images/s | ms/step | data wait | run wall s | pass start s |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in runs:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['input']} | {r['variant']} | {r['error']} | | | | |")
            continue
        start = f"{r['pass_start_s']:.2f}" if "pass_start_s" in r else "-"
        lines.append(
            f"| {r['model']} | {r['input']} | {r['variant']} | {r['images_per_s']:,.0f} "
            f"| {r['step_ms']:.1f} | {wait(r['data_wait'])} | {r['wall_s']:.0f} | {start} |"
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


def wait(share: float | None) -> str:
    return "-" if share is None else f"{100 * share:.0f}%"  # (-: a loader alone, no step)


def read_rows(path: Path) -> list[dict]:
    """The rows kept so far; a line cut short (a call killed while writing) is left out."""
    rows = []
    for number, line in enumerate(path.read_text().splitlines() if path.exists() else [], 1):
        try:
            rows.extend([json.loads(line)] if line.strip() else [])
        except json.JSONDecodeError:
            print(f"warning: {path}:{number} is not a whole row; left out", file=sys.stderr)
    return rows


def with_overrides(base: list[str], extra: list[str]) -> list[str]:
    """``base`` with each of ``extra`` replacing the override of the same key."""
    keys = {o.split("=")[0] for o in extra}
    return [o for o in base if o.split("=")[0] not in keys] + extra


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("gpu_check.md"))
    parser.add_argument("--rows", type=Path, help="the runs' rows, kept across calls "
                        "(default: --out with .jsonl; delete it to start over)")  # fmt: skip
    every = ",".join(["tests", *STAGES])
    parser.add_argument("--only", default=every, help=f"stages, of {every}")
    parser.add_argument("--tests-k", default="", help="the tests stage: pytest -k EXPRESSION")
    parser.add_argument("--models", default=",".join(MODELS), help="for the synthetic stage")
    parser.add_argument("--quick", action="store_true", help="resnet50 and resnet18 only")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=50, help="synthetic steps per run")
    parser.add_argument("--warmup", type=int, default=10, help="first steps left out")
    parser.add_argument("--loader-batches", type=int, default=50,
                        help="the loader stage: batches timed after the warm-up")  # fmt: skip
    parser.add_argument("--dali-tuning", default="", metavar="K=V,...",
                        help="DALI's tuning for the dali stages (see tuning_of)")  # fmt: skip
    parser.add_argument("--dali-variants", default="", metavar="K=V,...;K=V,...",
                        help="the loader stage: DALI alone with each of these tunings too; "
                        "'reader': fed by DALI's own file reader")  # fmt: skip
    parser.add_argument("--jpegs", type=Path, help="where the JPEGs go (reused while complete)")
    parser.add_argument("--classes", type=int, default=100, help="JPEG classes")
    parser.add_argument("--train-per-class", type=int, default=64, help="JPEGs per class")
    parser.add_argument("--set", action="append", default=[], metavar="OVERRIDE",
                        help="a Hydra override for every run (replaces its key's)")  # fmt: skip
    args = parser.parse_args(argv)
    stages = args.only.split(",")
    if unknown := set(stages) - {"tests", *STAGES}:
        parser.error(f"unknown stage {sorted(unknown)}; the stages are {every}")
    args.models = args.models.split(",")[: 2 if args.quick else None]
    common = with_overrides(COMMON, args.set)
    if not torch.cuda.is_available() and "trainer=gpu" in common:
        print("error: the GPU check needs a CUDA GPU (torch.cuda.is_available() is False); "
              "to try the script elsewhere, --set trainer=cpu --set trainer.precision=32",
              file=sys.stderr)  # fmt: skip
        return 1
    rows_path = args.rows or args.out.with_suffix(".jsonl")
    rows = read_rows(rows_path)
    # a killed call's last line, cut short: the next row starts on a line of its own
    cut = rows_path.exists() and rows_path.read_bytes()[-1:] not in (b"", b"\n")

    def keep(new: list[dict]) -> None:
        nonlocal cut
        rows.extend(new)
        with rows_path.open("a") as f:
            f.writelines(["\n"] * cut + [json.dumps(row) + "\n" for row in new])
        cut = False
        args.out.write_text(report(merged(rows), common))

    failed = []
    if "tests" in stages:
        keep([tests := gpu_tests(args.tests_k)])
        failed += ["tests"] if tests["failed"] else []
    with tempfile.TemporaryDirectory() as tmp:
        for stage, rows_of in STAGES.items():
            if stage in stages:
                new = rows_of(args, common, Path(tmp))
                keep(new)
                failed += [f"{r['model']} {r['variant']}" for r in new if "error" in r]
    print(args.out.read_text(), end="")
    print(f"rows: {rows_path}; failed: {', '.join(failed) or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
