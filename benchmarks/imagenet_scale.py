"""Start-up and worker memory at ImageNet scale (a benchmark, not a test): ``make bench-index``.

Builds (once, reused) a tree of 1,281,167 files in 1000 wnid folders plus a 50,000-file val
split, every one a file of its own (a copy of one small real JPEG: 1.33M inodes, about 5 GB of
4 KiB blocks; hard links would be indexed once per inode), then measures,
each in a fresh process so no file-system cache of ours is warm:

1. time to the first index (the DataModule's ``setup()``: walking the tree and writing the
   index cache, or reading it) and to the first training batch, without and with the cache,
   and torchvision's ``ImageFolder`` for reference;
2. DataLoader worker memory over one epoch of index reads (each item returns its path's
   length; nothing is decoded): private memory of each worker after the epoch minus at its
   start, for our array-backed index and for a Python list of (path, target) tuples as
   ``ImageFolder.samples`` keeps them. Copy-on-access shows up in the latter.

The page cache is the kernel's: "first" means our cache file is absent, not a cold disk.
"""

import argparse
import io
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TRAIN, CLASSES, VAL = 1_281_167, 1000, 50_000


def build_tree(root: Path) -> None:
    done = root / ".complete"
    if done.exists():
        return
    from cnnzoo.data.classes import imagenet_wnids

    wnids = imagenet_wnids()
    start = time.perf_counter()
    root.mkdir(parents=True, exist_ok=True)
    from PIL import Image

    # A smooth 128x96 picture saves to one small JPEG (about 2 KB: one disk block per file).
    gradient = Image.linear_gradient("L").resize((128, 96)).convert("RGB")
    buffer = io.BytesIO()
    gradient.save(buffer, format="JPEG", quality=85)
    data = buffer.getvalue()
    for split, total in (("train", TRAIN), ("val", VAL)):
        per, extra = divmod(total, CLASSES)
        for c, wnid in enumerate(wnids):
            folder = root / split / wnid
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per + (c < extra)):
                (folder / f"{wnid}_{i}.JPEG").write_bytes(data)  # a file of its own each
    done.touch()
    print(f"built the tree in {time.perf_counter() - start:.0f} s", file=sys.stderr)


def child(mode: str, root: str, cache: str) -> None:
    """One measurement, printed as 'mode seconds [extra]' (run in a fresh process)."""
    import numpy as np
    from torchvision.datasets import ImageFolder

    from cnnzoo.data import ImageFolderDataModule

    start = time.perf_counter()  # after the imports (about 6 s here), the same for every side
    if mode in ("first", "cached"):
        dm = ImageFolderDataModule(
            root, num_classes=1000, wnids="imagenet", num_workers=2, index_cache=cache
        )
        dm.prepare_data()
        dm.setup()
        indexed = time.perf_counter() - start
        images, _ = next(iter(dm.train_dataloader()))  # 256 images, 224 px, 2 workers
        assert images.shape == (256, 3, 224, 224)
        files = len(dm.datasets["train"]) + len(dm.datasets["val"])
        print(mode, f"{indexed:.2f}", f"{time.perf_counter() - start:.2f}", files)
    elif mode == "imagefolder":
        n = sum(len(ImageFolder(os.path.join(root, s)).samples) for s in ("train", "val"))
        print(mode, f"{time.perf_counter() - start:.2f}", n)
    elif mode in ("memory_index", "memory_list"):
        import torch
        from torch.utils.data import DataLoader, Dataset

        from cnnzoo.data.index import load_index

        index = load_index(Path(root) / "train", Path(cache))
        if mode == "memory_list":
            samples = [(index.path(i), int(index.targets[i])) for i in range(len(index))]

            class Items(Dataset):
                def __len__(self):
                    return len(samples)

                def __getitem__(self, i):
                    path, target = samples[i]
                    return len(path) + target

        else:

            class Items(Dataset):
                def __len__(self):
                    return len(index)

                def __getitem__(self, i):
                    return len(index.path(i)) + int(index.targets[i])

        loader = DataLoader(Items(), batch_size=4096, num_workers=2, shuffle=True,
                            persistent_workers=True,  # alive after the epoch, to be measured
                            generator=torch.Generator().manual_seed(0))  # fmt: skip
        iterator = iter(loader)
        next(iterator)
        pids = [w.pid for w in iterator._workers]
        before = [private_mib(p) for p in pids]
        for _ in iterator:
            pass
        after = [private_mib(p) for p in pids]
        growth = np.mean([a - b for a, b in zip(after, before, strict=True)])
        print(mode, f"{time.perf_counter() - start:.2f}", f"{growth:.0f}", f"{max(after):.0f}")


def private_mib(pid: int) -> float:
    """Private (unshared) memory of a process: pages it wrote, incl. copied-on-write ones."""
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, value = line.split(":")
        fields[key] = int(value.split()[0])
    return (fields["Private_Clean"] + fields["Private_Dirty"]) / 1024


def run(mode: str, root: Path, cache: Path) -> list[str]:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", mode, str(root), str(cache)],
        capture_output=True,
        text=True,
    )
    if proc.returncode:
        sys.exit(f"{mode} failed:\n{proc.stderr[-3000:]}")
    return proc.stdout.split()[1:]


def main() -> None:
    parser = argparse.ArgumentParser()
    default = Path(tempfile.gettempdir()) / "cnnzoo-1.28M-files"  # (-1.28M: hard links, stale)
    parser.add_argument("--root", type=Path, default=default)
    parser.add_argument("--child", nargs=3)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    build_tree(args.root)
    cache = args.root.with_name(args.root.name + "-index")
    for f in cache.glob("*.npz") if cache.exists() else []:
        f.unlink()
    rows = []
    first = run("first", args.root, cache)
    cached = run("cached", args.root, cache)
    reference = run("imagefolder", args.root, cache)
    for name, counted in (
        ("first", first[2]),
        ("cached", cached[2]),
        ("ImageFolder", reference[1]),
    ):
        if int(counted) != TRAIN + VAL:  # (a benchmark of fewer files than it says is void)
            sys.exit(f"{name} indexed {counted} files, not {TRAIN + VAL:,}")
    rows.append(("first start: setup() (walk + write the index)", f"{first[0]} s"))
    rows.append(("first start: to the first batch of 256 (2 workers)", f"{first[1]} s"))
    rows.append(("cached start: setup() (fingerprint + read the index)", f"{cached[0]} s"))
    rows.append(("cached start: to the first batch of 256 (2 workers)", f"{cached[1]} s"))
    rows.append(("torchvision ImageFolder(train) + ImageFolder(val)", f"{reference[0]} s"))
    mem_index = run("memory_index", args.root, cache)
    mem_list = run("memory_list", args.root, cache)
    rows.append(("worker private memory growth over an epoch, array index",
                 f"{mem_index[1]} MiB (max {mem_index[2]} MiB)"))  # fmt: skip
    rows.append(("worker private memory growth over an epoch, list of tuples",
                 f"{mem_list[1]} MiB (max {mem_list[2]} MiB)"))  # fmt: skip
    print(f"\nImageNet-scale start-up: {TRAIN:,} + {VAL:,} files in {CLASSES} folders, "
          f"{os.cpu_count()} CPUs, 2 DataLoader workers\n")  # fmt: skip
    print("| measurement | value |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
