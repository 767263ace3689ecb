"""Writing shards (``python -m cnnzoo.data.shards``) and reading their metadata."""

import argparse
import json
import logging
import os
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import Progress

from cnnzoo.data.classes import imagenet_wnids
from cnnzoo.data.options import TreeOptions
from cnnzoo.data.tree import ImageTree
from cnnzoo.errors import ConfigError, DataError
from cnnzoo.files import replaced_atomically

log = logging.getLogger(__name__)

META = "cnnzoo-shards.json"
PLAN = ".cnnzoo-shards-plan.json"  # what an unfinished write is writing
FORMAT = "cnnzoo-shards/1"
WRITE_COMMAND = "python -m cnnzoo.data.shards --src IMAGENET_ROOT --dst {dst}"


def write_shards(
    src: Path, dst: Path, *, shard_size: int = 1000, seed: int = 0, workers: int = 1
) -> dict:
    """Write the train and val splits of the ImageNet-layout tree ``src`` as shards in ``dst``
    and return the metadata (also ``dst/cnnzoo-shards.json``). Resumable; never overwrites a
    finished set of shards or a folder holding anything else."""
    src, dst = Path(src).expanduser().resolve(), Path(dst).expanduser().resolve()
    if shard_size < 1:
        raise ConfigError(f"--shard-size {shard_size}: give the images per shard (1000 is usual).")
    if dst == src or src in dst.parents:
        raise DataError(f"--dst {dst}: choose a folder outside the source tree {src}.")
    if dst.exists() and not dst.is_dir():  # (os.mkdir's FileExistsError traceback)
        raise DataError(f"--dst {dst} is a file, not a folder. Give an empty or new folder.")
    if (dst / META).exists():
        raise DataError(
            f"{dst} already holds shards ({META}). Choose another --dst, or delete that folder "
            "to write them again."
        )
    train, val = ImageTree(TreeOptions(src, num_classes=1, root_setting="--src")).checked_indexes()
    plan = {
        "format": FORMAT,
        "source": str(src),
        "seed": seed,
        "shard_size": shard_size,
        "images": {"train": len(train), "val": len(val)},
    }
    _start_or_resume(dst, plan)
    jobs, shards = [], {}
    for split, index in (("train", train), ("val", val)):
        shuffled = split == "train"
        order = (
            np.random.default_rng(seed).permutation(len(index)) if shuffled else range(len(index))
        )
        (dst / split).mkdir(exist_ok=True)
        shards[split] = []
        for number, start in enumerate(range(0, len(order), shard_size)):
            keys = list(order[start : start + shard_size])
            name = f"{split}/{split}-{number:06d}.tar"
            shards[split].append({"name": name, "images": len(keys)})
            if not (dst / name).is_file():  # finished shards are renamed into place
                members = [(k, index.relpath(k), int(index.targets[k])) for k in keys]
                jobs.append((index.folder, members, str(dst / name)))
    total = sum(plan["images"].values())
    with Progress(console=Console(stderr=True)) as progress:
        task = progress.add_task("writing shards", total=total)
        progress.update(task, completed=total - sum(len(job[1]) for job in jobs))
        if workers > 1 and len(jobs) > 1:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                for future in as_completed([pool.submit(_write_shard, *job) for job in jobs]):
                    progress.advance(task, future.result())
        else:
            for job in jobs:
                progress.advance(task, _write_shard(*job))
    for split_shards in shards.values():  # (its size tells a copy cut short: load_meta)
        for shard in split_shards:
            shard["bytes"] = (dst / shard["name"]).stat().st_size
    meta = {
        "format": FORMAT,
        "classes": list(train.classes),
        "source": str(src),
        "seed": seed,
        "shard_size": shard_size,
        "splits": {s: {"images": plan["images"][s], "shards": shards[s]} for s in shards},
    }
    _write_json(dst / META, meta)
    (dst / PLAN).unlink()
    return meta


def _start_or_resume(dst: Path, plan: dict) -> None:
    """Record what this write is writing; a non-empty ``dst`` must hold the same unfinished
    write (then its finished shards are kept)."""
    if dst.is_dir() and any(dst.iterdir()):
        try:
            previous = json.loads((dst / PLAN).read_text())
        except (OSError, ValueError):
            raise DataError(f"--dst {dst} is not empty. Give an empty or new folder.") from None
        if previous != plan:
            raise DataError(
                f"--dst {dst} holds an unfinished write with other settings ({previous}). "
                "Run it again with those settings to finish it, or give an empty or new folder."
            )
        log.info("finishing the unfinished write in %s", dst)
    try:
        dst.mkdir(parents=True, exist_ok=True)
        _write_json(dst / PLAN, plan)
    except OSError as e:  # (a read-only or missing parent: one line, not a traceback)
        raise DataError(
            f"--dst {dst} cannot be written ({e.strerror}). Give a folder you can write to."
        ) from None


def _write_shard(folder: str, members: list[tuple[int, str, int]], path: str) -> int:
    """One tar file: each image's bytes unchanged, its class and its path; written to a hidden
    temporary name and renamed when complete. Returns the number of images."""
    import webdataset as wds

    with replaced_atomically(path) as tmp, tmp.open("wb") as stream:
        writer = wds.TarWriter(stream, encoder=False, mtime=0, user="cnnzoo", group="cnnzoo")
        for key, relpath, target in members:
            ext = Path(relpath).suffix.lower().lstrip(".")
            writer.write(
                {
                    "__key__": f"{key:08d}",
                    "jpg" if ext in ("jpg", "jpeg") else ext: Path(folder, relpath).read_bytes(),
                    "cls": str(target).encode(),
                    "path": relpath.encode(),
                }
            )
        writer.close()
    return len(members)


def _write_json(path: Path, value: dict) -> None:
    with replaced_atomically(path) as tmp:
        tmp.write_text(json.dumps(value, indent=1) + "\n")


def load_meta(root: Path | None, setting: str) -> dict:
    """The shard folder's metadata, checked: ``DataError`` saying what is missing and what to do."""
    if root is None:
        command = WRITE_COMMAND.format(dst="DIR")
        raise DataError(f"no shard folder given. Set {setting}; write one with {command}.")
    if not root.is_dir():
        raise DataError(
            f"shard folder {root} does not exist. Set {setting} to the --dst of "
            f"{WRITE_COMMAND.format(dst='DIR')}."
        )
    try:
        meta = json.loads((root / META).read_text())
    except FileNotFoundError:
        if (root / PLAN).is_file():
            hint = "it is an unfinished write: run the same command again to finish it"
        elif any(p.is_dir() for p in (root / "train").glob("*")):  # class folders: images
            hint = (
                "it is a folder of images (train/, val/): read it as it is with data=imagenet "
                "(or data=imagefolder), or write shards from it with "
                f"python -m cnnzoo.data.shards --src {root} --dst ANOTHER_FOLDER"
            )
        else:
            hint = f"write shards there with {WRITE_COMMAND.format(dst=root)}"
        raise DataError(f"{root} has no {META}; {hint}.") from None
    except ValueError as e:
        raise DataError(f"{root / META} is not valid JSON ({e}); write the shards again.") from None
    if meta.get("format") != FORMAT:
        raise DataError(
            f"{root / META} is format {meta.get('format')!r}, not {FORMAT!r}: "
            "written by another version; write the shards again."
        )
    listed = [s for split in meta["splits"].values() for s in split["shards"]]
    missing = [s["name"] for s in listed if not (root / s["name"]).is_file()]
    if missing:
        raise DataError(
            f"{root}: {len(missing)} of the {len(listed)} shards listed in {META} are missing, "
            f"e.g. {missing[:3]}. Copy them back, or write the shards again."
        )
    # A copy cut at a tar header reads as a shorter shard without an error: sizes tell it.
    # (Shards written before cnnzoo recorded sizes are not checked.)
    size = {s["name"]: (root / s["name"]).stat().st_size for s in listed}
    changed = [s for s in listed if "bytes" in s and s["bytes"] != size[s["name"]]]
    if changed:
        first = changed[0]
        raise DataError(
            f"{root}: {len(changed)} of the {len(listed)} shards are not the size {META} "
            f"records, e.g. {first['name']} is {size[first['name']]:,} bytes, "
            f"written as {first['bytes']:,} (a copy that stopped, or a changed file). Copy them "
            f"again, or write the shards again: {WRITE_COMMAND.format(dst=root)}."
        )
    return meta


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cnnzoo.data.shards",
        description="Write the train and val splits of an ImageNet-layout tree as WebDataset "
        "shards (read with data=imagenet_shards).",
    )
    parser.add_argument("--src", type=Path, required=True, help="ROOT with train/ and val/")
    parser.add_argument("--dst", type=Path, required=True, help="an empty or new folder")
    parser.add_argument("--shard-size", type=int, default=1000, help="images per shard")
    parser.add_argument("--seed", type=int, default=0, help="the train images' shuffle")
    parser.add_argument(
        "--workers",
        type=int,
        default=min(8, os.cpu_count() or 1),
        help="shards written in parallel",
    )
    args = parser.parse_args(argv)
    try:
        meta = write_shards(
            args.src, args.dst, shard_size=args.shard_size, seed=args.seed, workers=args.workers
        )
    except (DataError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for split, info in meta["splits"].items():
        print(f"{split}: {info['images']:,} images in {len(info['shards']):,} shards")
    classes = meta["classes"]
    extra = "" if len(classes) == 1000 else f" data.num_classes={len(classes)}"
    if not set(classes) <= set(imagenet_wnids()):
        extra += " data.wnids=null"
    print(f"Train with: python train.py data=imagenet_shards data.root={args.dst}{extra}")
    return 0
