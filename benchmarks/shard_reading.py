"""Training input images/s from the folder tree vs WebDataset shards, on this machine.

    python benchmarks/shard_reading.py [--workers 2] [--repeats 3]

Reads the built-in sample set (1,000 train JPEGs, 10 classes) through the real DataModules,
``data=sample`` vs ``data=sample_shards`` (shards of 100), with the ImageNet train recipe at
224 px, one epoch per measurement, sides alternating; prints the median images/s of each. On a
local disk both are bound by decoding and cropping, so this shows what the shard path costs or
saves in the reading itself; the case shards are for (a network file system serving one open
per image) is not reproduced here.
"""

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from cnnzoo.tasks.resolvers import register_resolvers

CONF = Path(__file__).resolve().parents[1] / "conf"


def datamodule(data: str, cache: Path, workers: int):
    register_resolvers()  # (what the entry points do: conf/ uses them)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                f"data={data}",
                f"paths.cache_dir={cache}",
                f"data.num_workers={workers}",
                "data.batch_size=50",
            ],
        )
    dm = instantiate(cfg.data)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def epoch_rate(dm) -> float:
    loader = dm.train_dataloader()
    started, images = time.perf_counter(), 0
    for batch, _ in loader:
        images += len(batch)
    return images / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "cnnzoo-bench")
    args = parser.parse_args()
    sides = {
        name: datamodule(name, args.cache, args.workers) for name in ("sample", "sample_shards")
    }
    for dm in sides.values():
        epoch_rate(dm)  # warm-up: page cache, worker start
    rates = {name: [] for name in sides}
    for _ in range(args.repeats):
        for name, dm in sides.items():
            rates[name].append(epoch_rate(dm))
    for name, values in rates.items():
        runs = ", ".join(f"{v:.0f}" for v in values)
        print(f"data={name:14s} {statistics.median(values):7.0f} images/s  ({runs})")
    ratio = statistics.median(rates["sample_shards"]) / statistics.median(rates["sample"])
    print(f"shards / folder: {ratio:.2f} ({args.workers} workers, 224 px train recipe)")


if __name__ == "__main__":
    main()
