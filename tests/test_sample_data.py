"""The built-in sample set: ImageNet layout, deterministic, with ImageNet's odd files."""

import hashlib
from pathlib import Path

import pytest
from PIL import Image

from cnnzoo.data import SampleDataModule
from cnnzoo.data.sample import CLASSES, ensure_sample_dataset, sample_class_names
from cnnzoo.errors import DataError

SMALL = {"train_per_class": 3, "val_per_class": 2}


def digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_generation_is_deterministic(tmp_path):
    a = ensure_sample_dataset(tmp_path / "a", **SMALL)
    b = ensure_sample_dataset(tmp_path / "b", **SMALL)
    assert digest(a) == digest(b)
    c = ensure_sample_dataset(tmp_path / "c", **SMALL, seed=1)
    assert digest(c) != digest(a)


def test_imagenet_layout_with_real_wnids(tmp_path):
    root = ensure_sample_dataset(tmp_path / "s", **SMALL)
    wnids = sorted(wnid for wnid, _, _ in CLASSES)
    for split, n in (("train", 3), ("val", 2)):
        assert sorted(p.name for p in (root / split).iterdir()) == wnids
        for wnid in wnids:
            names = sorted(p.name for p in (root / split / wnid).iterdir())
            assert names == sorted(f"{wnid}_{i}.JPEG" for i in range(n))
    assert sample_class_names()[:3] == ["tench", "English springer", "cassette player"]


def test_images_vary_in_size_and_aspect_ratio(tmp_path):
    root = ensure_sample_dataset(tmp_path / "s", **SMALL)
    sizes = {Image.open(p).size for p in root.rglob("*.JPEG")}
    assert len(sizes) > 20
    assert any(w > h for w, h in sizes) and any(h > w for w, h in sizes)


def test_odd_files_are_there_and_decode_to_three_channels(tmp_path):
    root = ensure_sample_dataset(tmp_path / "s", **SMALL)
    train = root / "train"
    odd = {
        "L": train / "n01440764" / "n01440764_0.JPEG",
        "CMYK": train / "n02102040" / "n02102040_0.JPEG",
        "PNG": train / "n02979186" / "n02979186_0.JPEG",
    }
    assert Image.open(odd["L"]).mode == "L" and Image.open(odd["L"]).format == "JPEG"
    assert Image.open(odd["CMYK"]).mode == "CMYK"
    assert Image.open(odd["PNG"]).format == "PNG"
    dm = SampleDataModule(root, num_classes=10, image_size=32, eval_resize=36, **SMALL)
    dm.setup()
    dataset = dm.datasets["train"]
    index = {Path(dataset.index.path(i)): i for i in range(len(dataset))}
    for path in odd.values():
        image, label = dataset[index[path]]
        assert image.shape == (3, 32, 32)
        assert dataset.classes[label] == path.parent.name


def test_a_foreign_folder_at_the_root_is_not_overwritten(tmp_path):
    root = tmp_path / "mine"
    root.mkdir()
    (root / "precious.txt").write_text("keep me")
    with pytest.raises(DataError, match="not a complete cnnzoo sample set"):
        ensure_sample_dataset(root, **SMALL)
    assert (root / "precious.txt").read_text() == "keep me"


def test_a_cache_folder_it_cannot_make_is_one_line(tmp_path):
    """``paths.cache_dir`` naming a file (or a folder under one, or in /proc): an OSError's
    traceback from mkdir; now what is wrong and the setting to change. The file is kept."""
    notes = tmp_path / "notes.txt"
    notes.write_text("mine\n")
    for cache in (notes, notes / "sub"):
        with pytest.raises(DataError, match=rf"cannot make sample_x in {cache} \(\w+Error: .*"
                           r"set paths.cache_dir \(or the CNNZOO_CACHE"):  # fmt: skip
            ensure_sample_dataset(cache / "sample_x", train_per_class=1, val_per_class=1)
    assert notes.read_text() == "mine\n"


def test_a_killed_generation_leaves_nothing_behind_for_long(tmp_path):
    """A generation killed with SIGKILL (or SIGTERM) left its hidden temporary folder for ever;
    the next one removes it once its builder is gone, and leaves a live builder's alone."""
    import fcntl
    import os
    import signal
    import subprocess
    import sys

    root = tmp_path / "sample"
    code = (
        "import sys, time; from cnnzoo.data import sample\n"
        "def slow(root, **kw): open(root / 'first.jpg', 'w').close(); print('busy', flush=True); "
        "time.sleep(60)\n"
        "sample.generate = slow\n"
        f"sample.ensure_sample_dataset({str(root)!r})\n"
    )
    killed = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert killed.stdout.readline() == "busy\n"
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    (left,) = tmp_path.glob(".sample.*")
    live = tmp_path / ".sample.live"  # another process building now: its lock is held
    live.mkdir()
    held = os.open(live, os.O_RDONLY)
    fcntl.flock(held, fcntl.LOCK_EX)
    young = tmp_path / ".sample.young"  # just made: its builder may not hold the lock yet
    young.mkdir()
    for folder in (left, live):
        os.utime(folder, (0, 0))
    ensure_sample_dataset(root, **SMALL)
    os.close(held)
    assert not left.exists()
    assert live.is_dir() and young.is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".sample.live", ".sample.young", "sample"]
