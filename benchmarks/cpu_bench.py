"""CPU benchmarks (``make bench``): framework overhead and data-pipeline speed, side by side.

1. Framework overhead: training images/s of the real train task (our LightningModule,
   torchmetrics, the default callbacks incl. the progress bar, CSV logger) against a plain
   PyTorch loop over the same model, batch, optimiser and fixed in-memory batch (resnet18 at
   64 px, batch 32, SGD momentum). Runs alternate between the two sides; medians of repeats.
   Both sides leave the same first steps out (warm-up).
2. Data pipeline: images/s in one process of our train and eval transforms (decode included)
   on real-size JPEGs (500x375), against torchvision's reference recipe
   (references/classification/presets.py, written out here since the package does not ship it).
   Then what decoding options buy against our default: uint8 output (normalising on the
   accelerator), torchvision.io.decode_jpeg instead of PIL, PIL's draft mode for eval resizes.
3. Dataset items: a train sample as our dataset gives it (file read, decode_image, the train
   transform under its own seed) against torchvision's ImageFolder with the reference preset
   (PIL, no per-image seed); and what seeding only the CPU generator buys over
   ``torch.manual_seed`` per image.
"""

import argparse
import json
import platform
import statistics
import tempfile
import time
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import numpy as np
import pytorch_lightning
import torch
import torch.nn.functional as F
import torchvision
from hydra import compose, initialize_config_dir
from PIL import Image
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from cnnzoo.data import images
from cnnzoo.data.images import IndexedImages, load_image
from cnnzoo.data.index import scan
from cnnzoo.data.loading import seeded
from cnnzoo.data.options import DECODERS
from cnnzoo.data.transforms import IMAGENET_MEAN, IMAGENET_STD, eval_transform, train_transform
from cnnzoo.models import create_model
from cnnzoo.tasks.train import train

CONF = Path(__file__).resolve().parents[1] / "conf"
SIZE, BATCH, CLASSES, WARMUP = 64, 32, 10, 5


def ours(steps: int, out: Path) -> float:
    overrides = [
        f"paths.output_dir={out}", f"paths.log_dir={out}", "model=resnet18",
        f"model.input_size={SIZE}", f"model.eval_resize={SIZE}", "data=synthetic",
        f"data.num_classes={CLASSES}", f"data.batch_size={BATCH}", f"data.steps_per_epoch={steps}",
        "data.val_steps=1", "trainer=cpu", "trainer.max_epochs=1", "logger=csv",
        f"callbacks.throughput.warmup_steps={WARMUP}", "trainer.enable_model_summary=false",
        "optim=sgd_momentum", "scheduler=none",
    ]  # fmt: skip
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    train(cfg)
    return json.loads((out / "results.json").read_text())["throughput"]["images_per_s"]


def plain(steps: int) -> float:
    torch.manual_seed(0)
    net = create_model("resnet18", num_classes=CLASSES).train()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(BATCH, 3, SIZE, SIZE, generator=generator)
    labels = torch.randint(CLASSES, (BATCH,), generator=generator)
    start = 0.0
    for step in range(steps):
        if step == WARMUP:
            start = time.perf_counter()
        loss = F.cross_entropy(net(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return BATCH * (steps - WARMUP) / (time.perf_counter() - start)


def reference_presets(crop: int = 224, resize: int = 256) -> tuple[v2.Compose, v2.Compose]:
    """torchvision references/classification/presets.py, default options, PIL backend."""
    tail = [v2.PILToTensor(), v2.ToDtype(torch.float, scale=True),
            v2.Normalize(IMAGENET_MEAN, IMAGENET_STD), v2.ToPureTensor()]  # fmt: skip
    train_tf = v2.Compose([v2.RandomResizedCrop(crop, antialias=True),
                           v2.RandomHorizontalFlip(0.5), *tail])  # fmt: skip
    eval_tf = v2.Compose([v2.Resize(resize, antialias=True), v2.CenterCrop(crop), *tail])
    return train_tf, eval_tf


def jpegs(folder: Path, n: int) -> list[Path]:
    rng = np.random.default_rng(0)
    files = []
    for i in range(n):  # smooth random images compress like photos, not like noise
        small = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
        image = Image.fromarray(small).resize((500, 375), Image.BICUBIC)
        path = folder / f"{i}.JPEG"
        image.save(path, quality=90)
        files.append(path)
    return files


def pipeline_rate(transform, files: list[Path], draft: int | None = None) -> float:
    """Images/s of decoding with PIL (as the DataModule does) and transforming; with ``draft``,
    PIL's JPEG decoder may scale by 1/2, 1/4, 1/8 as long as both sides stay >= ``draft``."""
    start = time.perf_counter()
    for path in files:
        with Image.open(path) as image:
            if draft:
                image.draft("RGB", (draft, draft))
            transform(image.convert("RGB"))
    return len(files) / (time.perf_counter() - start)


def tensor_rate(transform, files: list[Path]) -> float:
    """Images/s of decoding with torchvision.io.decode_jpeg (libjpeg-turbo) into uint8 tensors."""
    start = time.perf_counter()
    for path in files:
        transform(torchvision.io.decode_jpeg(torchvision.io.read_file(str(path))))
    return len(files) / (time.perf_counter() - start)


def decoder_rate(transform, files: list[Path], decoder: str) -> float:
    """Images/s of ``load_image(path, decoder)`` (what the DataModule does: read, decode, the
    fallbacks) and ``transform``."""
    start = time.perf_counter()
    for path in files:
        transform(load_image(str(path), decoder))
    return len(files) / (time.perf_counter() - start)


def decoder_rows(files: list[Path], repeats: int) -> list[str]:
    """Each ``data.decoder`` side by side on the same JPEGs (alternating, medians), train and
    eval transforms (uint8 out: on a GPU, the default)."""
    rows = ["", "| transform (uint8 out, 1 process) | " + " | ".join(DECODERS) + " |",
            "| --- |" + " ---: |" * len(DECODERS)]  # fmt: skip
    transforms = (("train 224 px", train_transform(224, normalize=False)),
                  ("eval 256 -> 224 px", eval_transform(224, 256, normalize=False)))  # fmt: skip
    for name, transform in transforms:
        rates: dict[str, list[float]] = {d: [] for d in DECODERS}
        for _ in range(repeats):
            for decoder in DECODERS:
                rates[decoder].append(decoder_rate(transform, files, decoder))
        cells = " | ".join(f"{statistics.median(rates[d]):.0f}" for d in DECODERS)
        rows.append(f"| {name} (images/s, median of {repeats}) | {cells} |")
    return rows


def medians(first, second, repeats: int) -> tuple[float, float]:
    """Median images/s of two measurements, taken alternately ``repeats`` times."""
    a, b = [], []
    for _ in range(repeats):
        a.append(first())
        b.append(second())
    return statistics.median(a), statistics.median(b)


def items_rate(dataset) -> float:
    """Images/s of ``dataset[key]`` over the whole dataset (``(index, seed)`` keys for ours)."""
    keys = [(i, i) if isinstance(dataset, IndexedImages) else i for i in range(len(dataset))]
    start = time.perf_counter()
    for key in keys:
        dataset[key]
    return len(keys) / (time.perf_counter() - start)


@contextmanager
def manual_seeded(seed: int):
    """Per-image seeding with ``torch.manual_seed`` (what ``seeded`` replaced)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def loader_rate(tree: Path, seeding) -> float:
    """Images/s of our train dataset through a DataLoader with one worker process (where
    training reads it), each image seeded by ``seeding``."""
    images.seeded = seeding  # the worker is forked after this
    try:
        dataset = IndexedImages(scan(tree), train_transform(224))
        sampler = [(i, i) for i in range(len(dataset))]
        loader = DataLoader(dataset, batch_size=50, sampler=sampler, num_workers=1)
        start = time.perf_counter()
        for _ in loader:
            pass
        return len(dataset) / (time.perf_counter() - start)
    finally:
        images.seeded = seeded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--out", type=Path, default=Path("cpu_bench.md"))
    args = parser.parse_args()
    lines = [
        f"CPU: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads; "
        f"torch {torch.__version__}, torchvision {torchvision.__version__}, "
        f"pytorch-lightning {pytorch_lightning.__version__}, Python {platform.python_version()}",
        "",
        "| benchmark | ours | reference | ratio |",
        "| --- | ---: | ---: | ---: |",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        ours_rates, plain_rates = [], []
        for i in range(args.repeats):  # alternate the two sides
            ours_rates.append(ours(args.steps, Path(tmp) / f"ours{i}"))
            plain_rates.append(plain(args.steps))
            print(f"repeat {i}: ours {ours_rates[-1]:.1f}, plain {plain_rates[-1]:.1f} images/s")
        a, b = statistics.median(ours_rates), statistics.median(plain_rates)
        lines.append(
            f"| training, resnet18 {SIZE} px, batch {BATCH} (images/s, median of {args.repeats}) "
            f"| {a:.1f} | {b:.1f} (plain loop) | {a / b:.3f} |"
        )
        files = jpegs(Path(tmp), args.images)
        ref_train, ref_eval = reference_presets()
        for name, mine, ref in [
            ("train transform 224 px, decode included (images/s, 1 process)",
             train_transform(224), ref_train),
            ("eval transform 256 -> 224 px, decode included (images/s, 1 process)",
             eval_transform(224, 256), ref_eval),
        ]:  # fmt: skip
            a, b = medians(partial(pipeline_rate, mine, files), partial(pipeline_rate, ref, files),
                           args.repeats)  # fmt: skip
            lines.append(f"| {name} | {a:.0f} | {b:.0f} (torchvision preset) | {a / b:.3f} |")
        # What faster decoding options buy, each against our default (PIL decode, float out).
        for name, option, default in [
            ("train, uint8 out (normalised on the accelerator) vs float out",
             lambda: pipeline_rate(train_transform(224, normalize=False), files),
             lambda: pipeline_rate(train_transform(224), files)),
            ("train, torchvision.io.decode_jpeg vs PIL decode",
             lambda: tensor_rate(train_transform(224), files),
             lambda: pipeline_rate(train_transform(224), files)),
            ("eval, PIL draft mode (JPEG DCT scaling) vs full decode",
             lambda: pipeline_rate(eval_transform(224, 256), files, draft=256),
             lambda: pipeline_rate(eval_transform(224, 256), files)),
        ]:  # fmt: skip
            a, b = medians(option, default, args.repeats)
            lines.append(f"| {name} (images/s, 1 process) | {a:.0f} | {b:.0f} | {a / b:.3f} |")
        decoders = decoder_rows(files, args.repeats)
        tree = Path(tmp) / "tree"
        (tree / "c0").mkdir(parents=True)
        for path in files:
            path.rename(tree / "c0" / path.name)
        for name, option, default, reference in [
            ("train sample, 1 process: our dataset vs torchvision ImageFolder + preset",
             lambda: items_rate(IndexedImages(scan(tree), train_transform(224))),
             lambda: items_rate(torchvision.datasets.ImageFolder(str(tree), ref_train)),
             "ImageFolder"),
            ("train loader, 1 worker: seeding the CPU generator vs torch.manual_seed per image",
             lambda: loader_rate(tree, seeded), lambda: loader_rate(tree, manual_seeded),
             "manual_seed"),
        ]:  # fmt: skip
            a, b = medians(option, default, args.repeats)
            lines.append(f"| {name} (images/s) | {a:.0f} | {b:.0f} ({reference}) "
                         f"| {a / b:.3f} |")  # fmt: skip
    lines += decoders
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
