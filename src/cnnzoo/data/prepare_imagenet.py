"""Turn the ILSVRC-2012 downloads into the layout cnnzoo reads: ``DST/{train,val}/<wnid>/*.JPEG``.

    python -m cnnzoo.data.prepare_imagenet --src ~/Downloads/imagenet --dst /data/imagenet

SRC may hold the official archives (image-net.org):

    ILSVRC2012_img_train.tar        1000 inner tars, one per class (<wnid>.tar)
    ILSVRC2012_img_val.tar          50,000 images in one flat folder
    ILSVRC2012_devkit_t12.tar.gz    data/meta.mat + data/ILSVRC2012_validation_ground_truth.txt

or Kaggle's "ImageNet Object Localization Challenge" download (already extracted):

    ILSVRC/Data/CLS-LOC/train/<wnid>/*.JPEG, ILSVRC/Data/CLS-LOC/val/*.JPEG, LOC_val_solution.csv

(any mix: e.g. the val tar with LOC_val_solution.csv). Archives are extracted; extracted Kaggle
folders are linked (``--copy`` copies them). The source files are only read, never changed or
deleted. The work is resumable: each train class appears in DST only when complete (extracted
into a hidden folder, then renamed), each val image is written to a temporary name then renamed,
and a re-run skips what is done. A progress bar shows each stage; the counts are printed at the
end, and compared with ILSVRC-2012's 1,000 classes, 1,281,167 train and 50,000 val images.
"""

import argparse
import csv
import io
import os
import shutil
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import Progress

from cnnzoo.errors import DataError
from cnnzoo.files import replaced_atomically

TRAIN_TAR = "ILSVRC2012_img_train.tar"
VAL_TAR = "ILSVRC2012_img_val.tar"
DEVKIT = "ILSVRC2012_devkit_t12.tar.gz"
KAGGLE = Path("ILSVRC/Data/CLS-LOC")
KAGGLE_VAL_CSV = "LOC_val_solution.csv"
EXPECTED = {"classes": 1000, "train": 1_281_167, "val": 50_000}

console = Console(stderr=True, emoji=False)


# -- val labels -----------------------------------------------------------------------------


def devkit_val_labels(devkit: Path) -> dict[str, str]:
    """Val file name -> wnid, from the devkit: the ground-truth file's line i holds the
    ILSVRC2012_ID of ``ILSVRC2012_val_{i:08d}.JPEG``; meta.mat maps IDs to wnids."""
    from scipy.io import loadmat  # only this command needs scipy

    with tarfile.open(devkit) as tar:
        meta, truth = None, None
        for member in tar:
            if member.name.endswith("data/meta.mat"):
                meta = loadmat(io.BytesIO(tar.extractfile(member).read()), squeeze_me=True)
            elif member.name.endswith("data/ILSVRC2012_validation_ground_truth.txt"):
                truth = tar.extractfile(member).read().decode().split()
    if meta is None or truth is None:
        raise DataError(
            f"{devkit} lacks data/meta.mat or data/ILSVRC2012_validation_ground_truth.txt; "
            "is it the ILSVRC2012 devkit (task 1 & 2)?"
        )
    synsets = meta["synsets"]
    wnid_of = {
        int(i): str(w)
        for i, w, children in zip(
            synsets["ILSVRC2012_ID"], synsets["WNID"], synsets["num_children"], strict=True
        )
        if int(children) == 0  # the 1000 leaf classes; the rest are WordNet ancestors
    }
    return {f"ILSVRC2012_val_{i:08d}.JPEG": wnid_of[int(c)] for i, c in enumerate(truth, 1)}


def kaggle_val_labels(csv_path: Path) -> dict[str, str]:
    """Val file name -> wnid from Kaggle's LOC_val_solution.csv (ImageId, PredictionString
    whose first word is the wnid)."""
    with open(csv_path, newline="") as f:
        return {
            f"{row['ImageId']}.JPEG": row["PredictionString"].split()[0]
            for row in csv.DictReader(f)
        }


# -- sources ----------------------------------------------------------------------------------


def find(src: Path) -> dict[str, Path]:
    """The sources present in ``src`` (official archives first, then Kaggle's folders)."""
    candidates = {
        "train_tar": src / TRAIN_TAR,
        "val_tar": src / VAL_TAR,
        "devkit": src / DEVKIT,
        "train_dir": src / KAGGLE / "train",
        "val_dir": src / KAGGLE / "val",
        "val_csv": src / KAGGLE_VAL_CSV,
    }
    found = {key: path for key, path in candidates.items() if path.exists()}
    missing = []
    if "train_tar" not in found and "train_dir" not in found:
        missing.append(f"{TRAIN_TAR} (or Kaggle's {KAGGLE / 'train'})")
    if "val_tar" not in found and "val_dir" not in found:
        missing.append(f"{VAL_TAR} (or Kaggle's {KAGGLE / 'val'})")
    if "devkit" not in found and "val_csv" not in found:
        missing.append(f"{DEVKIT} (or Kaggle's {KAGGLE_VAL_CSV}) for the val labels")
    if missing:
        present = sorted(p.name for p in src.iterdir()) if src.is_dir() else "no such folder"
        raise DataError(
            f"{src} lacks {'; '.join(missing)} (found: {present}). Download them from "
            "https://image-net.org/download-images (or Kaggle's imagenet-object-localization-"
            "challenge) into one folder and pass it as --src."
        )
    return found


def _safe_name(name: str) -> str | None:
    base = os.path.basename(name)
    return base if base and not base.startswith(".") and base not in ("..", ".") else None


def _write_atomic(data: io.BufferedReader, target: Path) -> None:
    with replaced_atomically(target) as tmp, open(tmp, "wb") as f:
        shutil.copyfileobj(data, f)


# -- train ------------------------------------------------------------------------------------


def _extract_class_tar(fileobj, final: Path) -> int:
    """Extract one class's inner tar into a hidden folder, then rename it to ``final``."""
    partial = final.with_name(f".partial-{final.name}")
    if partial.exists():  # our own leftover from an interrupted run
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    count = 0
    with tarfile.open(fileobj=fileobj, mode="r|*") as inner:
        for member in inner:
            name = _safe_name(member.name)
            if member.isfile() and name:
                with open(partial / name, "wb") as f:
                    shutil.copyfileobj(inner.extractfile(member), f)
                count += 1
    os.rename(partial, final)
    return count


def train_from_tar(train_tar: Path, dst: Path, progress: Progress) -> None:
    with tarfile.open(train_tar) as outer:
        members = [m for m in outer.getmembers() if m.isfile() and m.name.endswith(".tar")]
        task = progress.add_task("train classes", total=len(members))
        for member in members:
            final = dst / "train" / os.path.basename(member.name)[: -len(".tar")]
            if not final.is_dir():
                _extract_class_tar(outer.extractfile(member), final)
            progress.advance(task)


def train_from_dir(train_dir: Path, dst: Path, progress: Progress, copy: bool) -> None:
    classes = sorted(p for p in train_dir.iterdir() if p.is_dir())
    task = progress.add_task("train classes", total=len(classes))
    for folder in classes:
        final = dst / "train" / folder.name
        if not final.exists():
            if copy:
                partial = final.with_name(f".partial-{folder.name}")
                shutil.rmtree(partial, ignore_errors=True)
                shutil.copytree(folder, partial)
                os.rename(partial, final)
            else:
                final.symlink_to(folder.resolve(), target_is_directory=True)
        progress.advance(task)


# -- val --------------------------------------------------------------------------------------


def _val_files(found: dict[str, Path]) -> Iterator[tuple[str, object]]:
    """(file name, opener) of every val image; the opener returns a readable binary file."""
    if "val_tar" in found:
        with tarfile.open(found["val_tar"]) as tar:
            for member in tar:
                name = _safe_name(member.name)
                if member.isfile() and name:
                    yield name, lambda m=member: tar.extractfile(m)
    else:
        for path in sorted(found["val_dir"].iterdir()):
            if path.is_file():
                yield path.name, path


def val_images(found: dict[str, Path], labels: dict[str, str], dst: Path, progress, copy: bool):
    task = progress.add_task("val images", total=len(labels))
    unlabelled = []
    for name, source in _val_files(found):
        wnid = labels.get(name)
        if wnid is None:
            unlabelled.append(name)
            continue
        target = dst / "val" / wnid / name
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(source, Path):
                if copy:
                    with open(source, "rb") as f:
                        _write_atomic(f, target)
                else:
                    target.symlink_to(source.resolve())
            else:
                _write_atomic(source(), target)
        progress.advance(task)
    if unlabelled:
        console.print(
            f"[yellow]{len(unlabelled)} val files have no label and were left out, e.g. "
            f"{escape(str(unlabelled[:3]))}[/yellow]"
        )


# -- main -------------------------------------------------------------------------------------


def count(dst: Path) -> dict[str, tuple[int, int]]:
    """split -> (class folders, images)."""
    result = {}
    for split in ("train", "val"):
        folders = [p for p in (dst / split).iterdir() if p.is_dir() and not p.name.startswith(".")]
        images = sum(
            1 for folder in folders for f in os.scandir(folder) if not f.name.startswith(".")
        )
        result[split] = (len(folders), images)
    return result


def prepare(src: Path, dst: Path, copy: bool = False) -> dict[str, tuple[int, int]]:
    src, dst = src.expanduser().resolve(), dst.expanduser().resolve()
    if dst == src or src / "ILSVRC" in (dst, *dst.parents):
        raise DataError(f"--dst {dst}: choose a folder outside the source and its ILSVRC/ tree.")
    found = find(src)
    labels = (
        devkit_val_labels(found["devkit"])
        if "devkit" in found
        else kaggle_val_labels(found["val_csv"])
    )
    (dst / "train").mkdir(parents=True, exist_ok=True)
    (dst / "val").mkdir(parents=True, exist_ok=True)
    with Progress(console=console) as progress:
        if "train_tar" in found:
            train_from_tar(found["train_tar"], dst, progress)
        else:
            train_from_dir(found["train_dir"], dst, progress, copy)
        val_images(found, labels, dst, progress, copy)
    return count(dst)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cnnzoo.data.prepare_imagenet",
        description="Build DST/{train,val}/<wnid>/ from the ILSVRC-2012 downloads in SRC.",
    )
    parser.add_argument("--src", type=Path, required=True, help="the folder of the downloads")
    parser.add_argument("--dst", type=Path, required=True, help="the dataset root to build")
    parser.add_argument(
        "--copy", action="store_true", help="copy extracted Kaggle folders instead of linking"
    )
    args = parser.parse_args(argv)
    try:
        counts = prepare(args.src, args.dst, copy=args.copy)
    except DataError as e:
        console.print(f"error: {e}", markup=False)
        return 1
    for split, (classes, images) in counts.items():
        expected = f"ILSVRC-2012: {EXPECTED['classes']:,} and {EXPECTED[split]:,}"
        mark = "" if (classes, images) == (EXPECTED["classes"], EXPECTED[split]) else "  <- "
        print(f"{split}: {classes:,} classes, {images:,} images{mark and mark + expected}")
    print(f"Train with: IMAGENET_ROOT={args.dst} python train.py data=imagenet")
    return 0


if __name__ == "__main__":
    sys.exit(main())
