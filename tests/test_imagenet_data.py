"""The ImageNet DataModule on small fake ImageNet trees: preparing the official archives, the
file index and its cache, tree checks, class names and subsets, odd and broken files, held-out
val, recipes, on-device normalisation, mixup, multi-view eval, CIFAR."""

import hashlib
import io
import os
import pickle
import shutil
import tarfile
from pathlib import Path
from types import SimpleNamespace
from unittest.mock import ANY

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.datasets import ImageFolder

import cnnzoo.data.index as index_module
from cnnzoo.data import CIFARDataModule, ImageFolderDataModule
from cnnzoo.data.batching import auto_workers
from cnnzoo.data.classes import imagenet_class_names, imagenet_wnids
from cnnzoo.data.images import skip_bad_collate
from cnnzoo.data.index import load_index, scan
from cnnzoo.data.options import DECODERS
from cnnzoo.data.prepare_imagenet import main as prepare_main
from cnnzoo.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Lighting,
    normalize_batch,
    train_transform,
)
from cnnzoo.data.verify import main as verify_main
from cnnzoo.errors import ConfigError, DataError

WNIDS = imagenet_wnids()[:6:2]  # three real wnids: n01440764 tench, n01484850, n01494475


def jpeg_bytes(seed: int, size=(14, 10), mode="RGB", fmt="JPEG") -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buffer, fmt)
    return buffer.getvalue()


def make_tree(root: Path, wnids=WNIDS, train=5, val=3) -> Path:
    for split, n in (("train", train), ("val", val)):
        for c, wnid in enumerate(wnids):
            folder = root / split / wnid
            folder.mkdir(parents=True)
            for i in range(n):
                (folder / f"{wnid}_{i}.JPEG").write_bytes(jpeg_bytes(100 * c + i))
    return root


def datamodule(root, **kwargs) -> ImageFolderDataModule:
    options = {"num_classes": 3, "batch_size": 4, "num_workers": 0, "image_size": 8}
    return ImageFolderDataModule(str(root), **(options | {"eval_resize": 10} | kwargs))


# -- prepare_imagenet -------------------------------------------------------------------------


def add_to_tar(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def fake_devkit(path: Path, val_wnids: list[str]) -> None:
    """A devkit whose meta.mat numbers the classes in another order than sorted, with a
    WordNet ancestor (num_children > 0) that must be ignored."""
    from scipy.io import savemat

    ids = {wnid: i for i, wnid in enumerate(reversed(WNIDS), start=1)}
    fields = [("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O"), ("num_children", "O")]
    rows = [(i, w, f"words of {w}", 0) for w, i in ids.items()] + [(1001, "n00000001", "x", 3)]
    synsets = np.array(rows, dtype=fields)
    meta = io.BytesIO()
    savemat(meta, {"synsets": synsets})
    truth = "".join(f"{ids[w]}\n" for w in val_wnids).encode()
    with tarfile.open(path, "w:gz") as tar:
        add_to_tar(tar, "ILSVRC2012_devkit_t12/data/meta.mat", meta.getvalue())
        add_to_tar(tar, "ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt", truth)


@pytest.fixture
def downloads(tmp_path) -> tuple[Path, list[str]]:
    """The three official archives for WNIDS: 4 train images per class, 6 val images."""
    src = tmp_path / "downloads"
    src.mkdir()
    with tarfile.open(src / "ILSVRC2012_img_train.tar", "w") as outer:
        for c, wnid in enumerate(WNIDS):
            inner = io.BytesIO()
            with tarfile.open(fileobj=inner, mode="w") as tar:
                for i in range(4):
                    add_to_tar(tar, f"{wnid}_{i}.JPEG", jpeg_bytes(10 * c + i))
            add_to_tar(outer, f"{wnid}.tar", inner.getvalue())
    val_wnids = [WNIDS[i % 3] for i in (2, 0, 1, 1, 0, 2)]
    with tarfile.open(src / "ILSVRC2012_img_val.tar", "w") as tar:
        for i in range(1, 7):
            add_to_tar(tar, f"ILSVRC2012_val_{i:08d}.JPEG", jpeg_bytes(1000 + i))
    fake_devkit(src / "ILSVRC2012_devkit_t12.tar.gz", val_wnids)
    return src, val_wnids


def snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    return {
        str(p.relative_to(folder)): (hashlib.md5(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_prepare_official_archives_resumes_and_leaves_sources_alone(downloads, tmp_path, capsys):
    src, val_wnids = downloads
    before = snapshot(src)
    dst = tmp_path / "imagenet"
    assert prepare_main(["--src", str(src), "--dst", str(dst)]) == 0
    out = capsys.readouterr().out
    assert "train: 3 classes, 12 images" in out and "val: 3 classes, 6 images" in out
    assert "ILSVRC-2012: 1,000 and 1,281,167" in out  # said, since this tree is not the whole
    for c, wnid in enumerate(WNIDS):
        files = sorted(p.name for p in (dst / "train" / wnid).iterdir())
        assert files == [f"{wnid}_{i}.JPEG" for i in range(4)]
        assert (dst / "train" / wnid / f"{wnid}_1.JPEG").read_bytes() == jpeg_bytes(10 * c + 1)
    for i, wnid in enumerate(val_wnids, start=1):  # the devkit's IDs mapped through meta.mat
        assert (dst / "val" / wnid / f"ILSVRC2012_val_{i:08d}.JPEG").read_bytes() == jpeg_bytes(
            1000 + i
        )
    # Interrupted: one class half done (our hidden folder), one class and one val image absent.
    tree = snapshot(dst)
    (dst / "train" / WNIDS[1]).rename(dst / "train" / f".partial-{WNIDS[1]}")
    (dst / "train" / f".partial-{WNIDS[1]}" / f"{WNIDS[1]}_0.JPEG").unlink()
    (dst / "val" / val_wnids[0] / "ILSVRC2012_val_00000001.JPEG").unlink()
    assert prepare_main(["--src", str(src), "--dst", str(dst)]) == 0
    assert snapshot(dst).keys() == tree.keys()
    assert not list(dst.rglob(".partial*"))
    assert snapshot(src) == before  # sources unchanged, bytes and times


def test_prepare_kaggle_layout_links_and_reads_the_csv(tmp_path, capsys):
    src = make_tree(tmp_path / "kaggle" / "ILSVRC" / "Data" / "CLS-LOC", train=2, val=0)
    src = tmp_path / "kaggle"
    val = src / "ILSVRC/Data/CLS-LOC/val"
    for w in WNIDS:
        (val / w).rmdir()
    rows = ["ImageId,PredictionString"]
    for i, wnid in enumerate(WNIDS):
        (val / f"ILSVRC2012_val_{i:08d}.JPEG").write_bytes(jpeg_bytes(i))
        rows.append(f"ILSVRC2012_val_{i:08d},{wnid} 1 2 3 4 {wnid} 5 6 7 8")
    (src / "LOC_val_solution.csv").write_text("\n".join(rows) + "\n")
    dst = tmp_path / "root"
    assert prepare_main(["--src", str(src), "--dst", str(dst)]) == 0
    assert (dst / "train" / WNIDS[0]).is_symlink()
    assert (dst / "val" / WNIDS[2] / "ILSVRC2012_val_00000002.JPEG").read_bytes() == jpeg_bytes(2)
    dm = datamodule(dst)
    dm.setup()
    assert len(dm.datasets["train"]) == 6 and len(dm.datasets["val"]) == 3


def test_prepare_names_what_is_missing(tmp_path, capsys):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "ILSVRC2012_img_val.tar").write_bytes(b"")
    assert prepare_main(["--src", str(tmp_path / "src"), "--dst", str(tmp_path / "d")]) == 1
    err = capsys.readouterr().err
    assert "ILSVRC2012_img_train.tar" in err and "devkit" in err
    assert "found: ['ILSVRC2012_img_val.tar']" in err


# -- the index and its cache ------------------------------------------------------------------


def test_index_matches_imagefolder_and_is_compact(tmp_path):
    root = make_tree(tmp_path / "t")
    (root / "train" / WNIDS[0] / "notes.txt").write_text("not an image")
    (root / "train" / ".ipynb_checkpoints").mkdir()
    index = scan(root / "train")
    reference = ImageFolder(str(root / "train"), allow_empty=True)
    reference.classes.remove(".ipynb_checkpoints")  # torchvision counts hidden folders
    assert index.classes == tuple(reference.classes)
    assert [(index.path(i), int(index.targets[i])) for i in range(len(index))] == [
        (p, t - 1)
        for p, t in reference.samples  # its hidden class 0 shifted the others
    ]
    assert index.other_files == 1
    assert isinstance(index.targets, np.ndarray) and isinstance(index.blob, np.ndarray)


def test_cached_index_is_reused_without_a_walk_and_rebuilt_on_change(tmp_path, monkeypatch):
    root = make_tree(tmp_path / "t")
    cache = tmp_path / "cache"
    first = load_index(root / "train", cache)
    assert len(list(cache.glob("*.npz"))) == 1

    def no_walk(folder):
        raise AssertionError(f"walked {folder}")

    monkeypatch.setattr(index_module, "scan", no_walk)
    again = load_index(root / "train", cache)  # no walk: scan would raise
    assert [again.path(i) for i in range(len(again))] == [first.path(i) for i in range(15)]
    monkeypatch.undo()
    (root / "train" / WNIDS[1] / "new.JPEG").write_bytes(jpeg_bytes(7))
    changed = load_index(root / "train", cache)
    assert len(changed) == 16 and changed.counts().tolist() == [5, 6, 5]
    next(cache.glob("*.npz")).write_bytes(b"garbage")  # a corrupt cache is rebuilt, not fatal
    assert len(load_index(root / "train", cache)) == 16


def test_files_left_out_by_their_name_are_named(tmp_path, caplog, monkeypatch):
    """A .gif among the photos, a Thumbs.db: left out, and said once (they were left out
    silently), from a fresh walk and from the cached index alike."""
    from cnnzoo.data import tree as tree_module

    root = make_tree(tmp_path / "t")
    (root / "train" / WNIDS[1] / "cat.gif").write_bytes(jpeg_bytes(1, fmt="GIF"))
    (root / "train" / WNIDS[2] / "Thumbs.db").write_bytes(b"\0" * 10)
    said = (
        f"{root / 'train'}: 2 files are not images by their name and were left out, e.g. "
        f"{WNIDS[1]}/cat.gif, {WNIDS[2]}/Thumbs.db (read: .jpg .jpeg .png"
    )
    for _ in range(2):  # the second from the cache, as in a new process
        monkeypatch.setattr(tree_module, "_SAID_LEFT_OUT", set())
        caplog.clear()
        dm = datamodule(root, index_cache=str(tmp_path / "cache"))
        dm.prepare_data()
        dm.setup("fit")
        datamodule(root, index_cache=str(tmp_path / "cache")).setup("fit")
        assert len(dm.datasets["train"]) == 15
        assert caplog.text.count(said) == 1
        assert "val: " not in caplog.text


def test_prepare_data_fills_the_cache_that_setup_reads(tmp_path, monkeypatch):
    root = make_tree(tmp_path / "t")
    dm = datamodule(root, index_cache=str(tmp_path / "cache"))
    dm.prepare_data()  # rank zero of each node
    monkeypatch.setattr(index_module, "scan", lambda folder: pytest.fail(f"walked {folder}"))
    other_rank = datamodule(root, index_cache=str(tmp_path / "cache"))
    other_rank.setup()
    assert len(other_rank.datasets["train"]) == 15


# -- tree checks, class names, subsets --------------------------------------------------------


def test_tree_problems_are_named(tmp_path):
    root = make_tree(tmp_path / "t")
    (root / "train" / "holiday_photos").mkdir()
    (root / "train" / "holiday_photos" / "a.jpg").write_bytes(jpeg_bytes(0))
    with pytest.raises(DataError, match=r"not ILSVRC-2012 wnids: \['holiday_photos'\]"):
        datamodule(root, wnids="imagenet").setup()
    datamodule(root, wnids=None, num_classes=4)  # any names with data=imagefolder ...
    with pytest.raises(DataError, match="different class folders.*holiday_photos"):
        datamodule(root, wnids=None, num_classes=4).setup()  # ... but both splits alike
    (root / "train" / "holiday_photos" / "a.jpg").unlink()
    with pytest.raises(DataError, match=r"1 class folders without images, e.g. \['holiday_photos"):
        datamodule(root).setup()
    val = root / "val"  # ImageNet's val archive unpacked as it is: 50,000 files, no folders
    for wnid in WNIDS:
        for image in (val / wnid).iterdir():
            image.rename(val / f"ILSVRC2012_val_{wnid}_{image.name}")
        (val / wnid).rmdir()
    with pytest.raises(DataError, match=r"val holds no class folders.*It holds 9 files directly"
                       r".*cnnzoo.data.prepare_imagenet sorts them"):  # fmt: skip
        datamodule(root).setup()
    train = make_tree(tmp_path / "t2") / "train"  # the train tar unpacked, its class tars not
    for wnid in WNIDS:
        shutil.rmtree(train / wnid)
        (train / f"{wnid}.tar").write_bytes(b"")
    with pytest.raises(DataError, match=r"train holds no class folders.*It holds 3 .tar files: "
                       r"ILSVRC2012_img_train.tar's per-class archives, not unpacked"):  # fmt: skip
        datamodule(train.parent).setup()


def test_partial_imagenet_tree_names_missing_wnids(tmp_path):
    root = make_tree(tmp_path / "t")
    with pytest.raises(DataError, match=r"has 3 class folders but data.num_classes=1000 \(a "
                       r"partial tree: missing 997, e.g. \['n01443537'"):  # fmt: skip
        datamodule(root, num_classes=1000, wnids="imagenet").setup()


def test_class_names_come_from_the_wnids(tmp_path):
    full = datamodule(None, num_classes=1000, wnids="imagenet")
    assert full.class_names()[281] == "tabby"  # no tree needed for the 1000 names
    assert len(full.class_names()) == 1000 and full.class_names() == list(imagenet_class_names())
    subset = datamodule(None, num_classes=100, wnids="imagenet")  # e.g. predict.py elsewhere
    assert subset.class_names()[:2] == ["tench", "brambling"]  # classes 0 and 10
    root = make_tree(tmp_path / "t")
    assert datamodule(root).class_names() == [
        "tench",
        "great white shark",
        "hammerhead",
    ]  # imagenet_wnids()[0], [2], [4]
    other = make_tree(tmp_path / "o", wnids=("daisy", "rose", "tulip"))
    assert datamodule(other).class_names() == ["daisy", "rose", "tulip"]


def test_class_subset_is_every_kth_class(tmp_path):
    wnids = imagenet_wnids()[:6]
    root = make_tree(tmp_path / "t", wnids=wnids, train=2, val=1)
    dm = datamodule(root, num_classes=3)
    dm.setup()
    train = dm.datasets["train"]
    assert train.classes == wnids[::2]
    assert sorted(set(train.index.targets.tolist())) == [0, 1, 2]
    assert all(Path(train.index.path(i)).parent.name in wnids[::2] for i in range(len(train)))
    with pytest.raises(DataError, match="num_classes=4 with 6 class folders.*must divide 6"):
        datamodule(root, num_classes=4).setup()


def test_val_from_train_and_samples_per_class(tmp_path):
    root = make_tree(tmp_path / "t", train=6, val=3)
    dm = datamodule(root, val_from_train=2, samples_per_class=3)
    dm.setup()
    train, val, test = (dm.datasets[s] for s in ("train", "val", "test"))
    files = {s: {d.index.path(i) for i in range(len(d))} for s, d in dm.datasets.items()}
    assert train.index.counts().tolist() == [3, 3, 3]
    assert val.index.counts().tolist() == [2, 2, 2]
    assert all(Path(p).parts[-3] == "train" for p in files["val"])  # held out from train
    assert not files["val"] & files["train"]
    assert test.index.counts().tolist() == [3, 3, 3] and test is not val  # official val
    again = datamodule(root, val_from_train=2, samples_per_class=3)
    again.setup()
    assert {again.datasets["val"].index.path(i) for i in range(6)} == files["val"]
    with pytest.raises(ConfigError, match="val_from_train=6: class n01440764 has only 6"):
        datamodule(root, val_from_train=6).setup()


# -- odd and broken files ---------------------------------------------------------------------


def broken_tree(tmp_path) -> tuple[Path, list[Path]]:
    root = make_tree(tmp_path / "t", train=4, val=2)
    truncated = root / "train" / WNIDS[1] / f"{WNIDS[1]}_2.JPEG"
    truncated.write_bytes(jpeg_bytes(5, size=(64, 48))[:300])
    text = root / "val" / WNIDS[0] / f"{WNIDS[0]}_1.JPEG"
    text.write_text("<html>404 not found</html>")
    (root / "train" / WNIDS[2] / "cmyk.JPEG").write_bytes(jpeg_bytes(3, mode="CMYK"))
    (root / "train" / WNIDS[2] / "gray.JPEG").write_bytes(jpeg_bytes(4, mode="L"))
    (root / "train" / WNIDS[2] / "png.JPEG").write_bytes(jpeg_bytes(6, fmt="PNG"))
    return root, [truncated, text]


@pytest.mark.parametrize("decoder", DECODERS)
def test_16_bit_grey_images_keep_their_greys(tmp_path, decoder):
    """PIL's convert("RGB") clips a 16-bit grey PNG at 255: a white image."""
    from cnnzoo.data.images import load_image

    grey = np.linspace(0, 65535, 64 * 32).astype(np.uint16).reshape(32, 64)
    path = tmp_path / "scan.png"
    Image.fromarray(grey).save(path)
    decoded = load_image(str(path), decoder)
    channel = decoded[0] if decoder != "pil" else torch.from_numpy(np.array(decoded)[..., 0])
    assert torch.equal(channel, torch.from_numpy((grey >> 8).astype(np.uint8)))


def camera_jpeg(path: Path, orientation: int) -> np.ndarray:
    """A 64x32 JPEG, red top half and blue bottom, stored with an EXIF Orientation tag (a phone
    held upright stores its landscape sensor's pixels and tag 6, "rotate 90 clockwise")."""
    pixels = np.zeros((32, 64, 3), np.uint8)
    pixels[:16, :, 0] = pixels[16:, :, 2] = 255
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(pixels).save(path, quality=95, exif=exif)
    return pixels


@pytest.mark.parametrize("decoder", DECODERS)
def test_a_broken_heic_photo_is_named_as_one(tmp_path, decoder):
    from cnnzoo.data.images import BadImageError, load_image

    path = tmp_path / "IMG_0001.jpg"  # (renamed, or exported as it is)
    path.write_bytes(b"\x00\x00\x00\x24ftypheic\x00\x00\x00\x00mif1heic" + bytes(64))
    read = "a HEIC/HEIF or AVIF image \\(brand 'heic'\\) that neither TorchCodec nor PIL could"
    with pytest.raises(BadImageError, match=read + " read here: install pillow-heif"):
        load_image(str(path), decoder)


@pytest.mark.parametrize("decoder", DECODERS)
def test_camera_orientation_is_applied(tmp_path, decoder):
    """As a viewer shows the photo, and as DALI's decoder gives it (adjust_orientation)."""
    from cnnzoo.data.images import load_image

    for orientation, turned in ((1, 0), (6, -1), (3, 2), (8, 1)):
        path = tmp_path / f"photo_{orientation}.jpg"
        stored = camera_jpeg(path, orientation)
        decoded = load_image(str(path), decoder)
        pixels = decoded.permute(1, 2, 0).numpy() if decoder != "pil" else decoded
        expected = np.rot90(stored, turned)  # np.rot90 turns anticlockwise; -1: clockwise
        assert np.asarray(pixels).shape == expected.shape, orientation
        assert np.abs(np.asarray(pixels, np.int16) - expected).mean() < 8, orientation


def test_torchcodec_turns_each_exif_orientation_as_pil_does(tmp_path):
    """The eight EXIF orientations, turned by TorchCodec itself, as PIL turns them."""
    from cnnzoo.data.images import load_image

    pixels = np.random.default_rng(0).integers(0, 256, (24, 40, 3), dtype=np.uint8)
    for orientation in range(1, 9):
        path = tmp_path / f"photo_{orientation}.jpg"
        exif = Image.Exif()
        exif[0x0112] = orientation
        Image.fromarray(pixels).save(path, quality=95, exif=exif)
        codec = load_image(str(path), "torchcodec")
        pil = torch.from_numpy(np.asarray(load_image(str(path), "pil"))).permute(2, 0, 1)
        assert torch.equal(codec, pil), orientation


@pytest.mark.parametrize("decoder", DECODERS)
def test_bad_file_fails_naming_it_by_default(tmp_path, decoder):
    from cnnzoo.data.images import load_image

    root, (truncated, _) = broken_tree(tmp_path)
    good = root / "train" / WNIDS[0] / f"{WNIDS[0]}_0.JPEG"
    decoded = load_image(str(good), decoder)
    assert isinstance(decoded, torch.Tensor if decoder != "pil" else Image.Image)
    dm = datamodule(root, decoder=decoder)
    dm.setup()
    train = dm.datasets["train"]
    position = next(i for i in range(len(train)) if train.index.path(i) == str(truncated))
    with pytest.raises(DataError, match=f"cannot read image {truncated}.*on_bad_file=skip"):
        train[position]
    for i in range(len(train)):  # the CMYK, grayscale and PNG-named-.JPEG files decode to RGB
        if i != position:
            assert train[i][0].shape == (3, 8, 8)


def test_a_bad_file_met_in_a_worker_is_still_one_line(tmp_path):
    """PyTorch raises a worker's error again with the worker's traceback as its message; the
    user reads (and results.json records) the file and the fix, not the traceback."""
    root, (truncated, _) = broken_tree(tmp_path)
    dm = datamodule(root, num_workers=1, batch_size=2)
    dm.setup()
    with pytest.raises(DataError) as e:
        list(dm.train_dataloader())
    assert str(e.value).startswith(f"cannot read image {truncated}")
    assert "Traceback" not in str(e.value) and "\n" not in str(e.value)


def test_skip_policy_drops_and_lists_bad_files(tmp_path, caplog):
    from cnnzoo.callbacks import BadFileReport

    root, bad = broken_tree(tmp_path)
    dm = datamodule(root, on_bad_file="skip", batch_size=len(WNIDS) * 7)
    dm.setup()
    train = dm.datasets["train"]
    items = [train[i] for i in range(len(train))]
    assert sum(item is None for item in items) == 1
    images, labels = skip_bad_collate(items)
    assert len(images) == len(items) - 1 == len(labels)
    dm.datasets["val"][1]  # the text file named .JPEG
    report = BadFileReport()
    trainer = SimpleNamespace(datamodule=dm, current_epoch=0, sanity_checking=True)
    report.on_train_epoch_end(trainer, None)  # (Lightning: after the epoch's val)
    assert [(split, path) for split, path, _ in report.skipped] == [("train", str(bad[0]))]
    assert f"train epoch 0 skipped 1 unreadable image(s) (data.on_bad_file=skip):\n  {bad[0]}" in (
        caplog.text
    )
    report.on_validation_epoch_end(trainer, None)
    assert report.skipped[1][:2] == ("val", str(bad[1])) and len(report.skipped) == 2
    assert f"val (sanity check) epoch 0 skipped 1 unreadable image(s) (data.on_bad_file=skip)" \
           f":\n  {bad[1]}" in caplog.text  # fmt: skip
    dm.datasets["val"][1]  # read again by epoch 0's val, then by the test stage
    trainer.sanity_checking = False
    report.on_validation_epoch_end(trainer, None)
    assert len(report.skipped) == 2 and caplog.text.count(f"  {bad[1]}  (") == 1  # once a run
    dm.datasets["test"][1]
    report.on_test_epoch_end(trainer, None)
    assert report.record()[2] == {"split": "test", "path": str(bad[1]), "reason": ANY}
    assert f"test skipped 1 unreadable image(s) (data.on_bad_file=skip):\n  {bad[1]}" in (
        caplog.text
    )
    with pytest.raises(DataError, match="all 1 images of a batch were unreadable"):
        skip_bad_collate([None])


def test_verify_lists_unreadable_files(tmp_path, capsys):
    root, bad = broken_tree(tmp_path)
    assert verify_main([str(root), "--workers", "2"]) == 1
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert [line.split("\t")[0] for line in lines] == sorted(str(p) for p in bad)
    reasons = " ".join(lines).lower()
    assert "truncated" in reasons and "not an image; it begins b'<html>404 not fo'" in reasons
    assert f"{3 * 6 + 3} images checked, 2 unreadable" in err
    assert verify_main([str(make_tree(tmp_path / "good"))]) == 0


# -- transforms, on-device normalisation, mixup, multi-view eval ------------------------------


@pytest.mark.parametrize(
    ("options", "size"),
    [({"crop": "alexnet", "resize": 12}, 8), ({"crop": "vgg", "scale_jitter": (9, 16)}, 8)],
)
def test_paper_crops_give_the_crop_size(options, size):
    image = Image.fromarray(np.zeros((30, 40, 3), dtype=np.uint8))
    assert train_transform(size, **options)(image).shape == (3, size, size)


def test_vgg_scale_jitter_draws_the_short_side_in_range():
    transform = train_transform(8, crop="vgg", scale_jitter=(9, 16), hflip=False)
    rescale = transform.transforms[0]  # the step before the random crop
    image = Image.fromarray(np.zeros((30, 40, 3), dtype=np.uint8))
    torch.manual_seed(0)
    shorts = {min(rescale(image).size) for _ in range(40)}
    assert shorts <= set(range(9, 17)) and len(shorts) > 4


def test_lighting_shifts_each_channel_along_the_pca_axes():
    from cnnzoo.data.transforms import PCA_EIGVAL, PCA_EIGVEC

    torch.manual_seed(0)
    image = torch.rand(3, 4, 4)
    shifted = Lighting(0.1)(image)
    torch.manual_seed(0)
    torch.rand(3, 4, 4)
    alpha = torch.randn(3) * 0.1  # the draw Lighting made
    shift = torch.tensor(PCA_EIGVEC) @ (alpha * torch.tensor(PCA_EIGVAL))
    assert shift.abs().max() > 1e-3
    assert torch.allclose(shifted - image, shift.view(3, 1, 1).expand(3, 4, 4), atol=1e-6)


def test_uint8_batches_are_normalised_on_the_device(tmp_path):
    root = make_tree(tmp_path / "t")
    on_cpu, on_device = datamodule(root), datamodule(root, normalize_on_device=True)
    for dm in (on_cpu, on_device):
        dm.setup()
    raw = next(iter(on_device.val_dataloader()))
    assert raw[0].dtype == torch.uint8
    images, labels = on_device.on_after_batch_transfer(raw, 0)
    expected = next(iter(on_cpu.val_dataloader()))
    assert torch.allclose(images, expected[0], atol=1e-5) and torch.equal(labels, expected[1])
    mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
    white = normalize_batch(torch.full((1, 3, 1, 1), 255, dtype=torch.uint8))
    assert torch.allclose(white.flatten(), (1 - mean) / std)


def test_mixup_gives_soft_targets_the_module_trains_on(tmp_path):
    from cnnzoo.module import ClassificationModule

    root = make_tree(tmp_path / "t")
    dm = datamodule(root, mixup_alpha=0.2, cutmix_alpha=1.0)
    dm.setup()
    batch, val_batch = next(iter(dm.train_dataloader())), next(iter(dm.val_dataloader()))
    from helpers import place

    place(dm, training=True)
    images, labels = dm.on_after_batch_transfer(batch, 0)
    assert labels.shape == (4, 3) and torch.allclose(labels.sum(1), torch.ones(4))
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 3))
    module = ClassificationModule(net, optimizer=torch.optim.SGD, num_classes=3)
    module.log = lambda *args, **kwargs: None
    loss = module.training_step((images, labels), 0)
    expected = -(labels * net(images).log_softmax(1)).sum(1).mean()
    assert torch.allclose(loss, expected)
    place(dm, training=False)  # never on val/test batches
    assert torch.equal(dm.on_after_batch_transfer(val_batch, 0)[1], val_batch[1])


def test_ten_crop_val_batches_are_averaged_by_the_module(tmp_path):
    from cnnzoo.module import ClassificationModule

    root = make_tree(tmp_path / "t")
    dm = datamodule(root, eval_crop="ten", batch_size=20)
    dm.setup()
    views, labels = next(iter(dm.val_dataloader()))
    assert views.shape == (2, 10, 3, 8, 8)  # 20 images per pass / 10 views
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 3))
    module = ClassificationModule(net, optimizer=torch.optim.SGD, num_classes=3)
    module.log = lambda *args, **kwargs: None
    module.validation_step((views, labels), 0)
    expected = net(views.flatten(0, 1)).softmax(1).view(2, 10, 3).mean(1)
    hits = (expected.argmax(1) == labels).float().mean()
    assert module.val_metrics["acc_top1"].compute() == pytest.approx(hits.item())


def test_bad_options_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="train_crop='random'"):
        datamodule(tmp_path, train_crop="random")
    with pytest.raises(ConfigError, match="auto_augment 'autoaug'"):
        datamodule(tmp_path, auto_augment="autoaug")
    with pytest.raises(ConfigError, match="on_bad_file='ignore'"):
        datamodule(tmp_path, on_bad_file="ignore")


def test_auto_workers_share_the_cpus_among_devices():
    assert auto_workers(cpus=2, devices=1) == 1
    assert auto_workers(cpus=16, devices=1) == 15  # one GPU: every other core decodes
    assert auto_workers(cpus=64, devices=8) == 7
    assert auto_workers(cpus=224, devices=8) == 16
    assert auto_workers(cpus=8, devices=8) == 1


# -- CIFAR ------------------------------------------------------------------------------------


def fake_cifar10(root: Path) -> None:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {
            "data": rng.integers(0, 256, (4, 3072), dtype=np.uint8),
            "labels": [0, 1, 2, 3],
        }
        (folder / name).write_bytes(pickle.dumps(batch))
    names = [f"class{i}" for i in range(10)]
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": names}))


def test_cifar_reads_local_files_and_explains_offline(tmp_path, monkeypatch):
    import torchvision.datasets.cifar as cifar

    monkeypatch.setattr(cifar, "check_integrity", lambda path, md5=None: os.path.isfile(path))

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(cifar, "download_and_extract_archive", offline)
    empty = CIFARDataModule(str(tmp_path / "none"), batch_size=4, num_workers=0)
    with pytest.raises(DataError, match="cifar10 is not in .*put cifar-10-python.tar.gz"):
        empty.prepare_data()
    fake_cifar10(tmp_path / "c")
    dm = CIFARDataModule(str(tmp_path / "c"), batch_size=4, num_workers=0, val_from_train=1)
    dm.prepare_data()
    dm.setup()
    assert len(dm.datasets["train"]) == 16 and len(dm.datasets["val"]) == 4
    assert len(dm.datasets["test"]) == 4 and dm.class_names()[3] == "class3"
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (4, 3, 32, 32) and images.dtype == torch.float32
    assert set(labels.tolist()) <= {0, 1, 2, 3}


def test_data_options_reach_the_training_steps(cache_dir, tmp_path, offline_env):
    """One real run: held-out val, flip views for val/test, uint8 batches normalised by the
    DataModule's hook, mixup'd soft targets in training only."""
    import json

    from helpers import compose_train, tiny_overrides

    from cnnzoo.tasks.train import train

    record = tmp_path / "batches.json"
    overrides = [*tiny_overrides(cache_dir, tmp_path), "logger=csv",
                 "data.val_from_train=2", "data.eval_crop=flip", "data.normalize_on_device=true",
                 "data.mixup_alpha=0.4", "trainer.limit_train_batches=2",
                 "+callbacks.record._target_=probes.BatchRecorder",
                 f"+callbacks.record.path={record}"]  # fmt: skip
    train(compose_train(overrides, out=tmp_path))
    seen = json.loads(record.read_text())
    assert seen["train"] == {"images": 16, "shapes": [[3, 32, 32]], "dtypes": ["torch.float32"],
                             "soft": [True]}  # fmt: skip
    assert seen["val"]["images"] == 2 * 10  # 2 held out per class, scored once per epoch
    assert seen["test"]["images"] == 4 * 10  # the official val split, untouched by training
    for stage in ("val", "test"):
        assert seen[stage]["shapes"] == [[2, 3, 32, 32]] and seen[stage]["soft"] == [False]
        assert seen[stage]["dtypes"] == ["torch.float32"]  # uint8 in the loader (hook test)


def short_png() -> bytes:
    """A 100x100 PNG whose image data holds one row (libpng: "Not enough image data")."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", 100, 100, 8, 2, 0, 0, 0)
    rows = zlib.compress(b"\x00" + bytes(300))
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")
    )


@pytest.mark.slow
def test_a_png_with_too_little_image_data_never_kills_the_process(tmp_path):
    """torchvision's PNG decoder segfaults on it (so that decoder gives PNGs to PIL); the default
    one, TorchCodec's, raises; verify checks with the decoder training uses (a process, so a
    crash is a failure here)."""
    import subprocess
    import sys

    root = make_tree(tmp_path / "t", train=2, val=1)
    bad = root / "train" / WNIDS[0] / "short.png"
    bad.write_bytes(short_png())
    code = (f"from cnnzoo.data.images import load_image; load_image({str(bad)!r}); "
            "from cnnzoo.data.verify import main; "
            f"main([{str(root)!r}, '--workers', '1'])")  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "10 images checked" in proc.stderr  # 3 classes x (2 + 1), and short.png


def test_links_are_followed_once_never_in_a_cycle_or_into_another_class(tmp_path, caplog):
    """``ln -s .. train/<class>/loop`` was followed ~40 levels deep (1,464 images for 24), and
    a link into another class folder labelled its images twice."""
    root = make_tree(tmp_path / "t", train=4, val=2)
    elsewhere = make_tree(tmp_path / "elsewhere", wnids=WNIDS[:1], train=3, val=1)
    first, second = (root / "train" / w for w in WNIDS[:2])
    (first / "loop").symlink_to("..")  # a cycle
    (first / "other_class").symlink_to(second)  # another class's images
    (first / "extra").symlink_to(elsewhere / "train" / WNIDS[0])  # a folder kept elsewhere
    (second / "again.JPEG").symlink_to(second / f"{WNIDS[1]}_0.JPEG")  # one image twice
    dm = datamodule(root)
    dm.setup()
    train = dm.datasets["train"]
    assert len(train) == 3 * 4 + 3  # each image once, with the folder linked from elsewhere
    assert list(train.index.counts()) == [4 + 3, 4, 4]
    assert "links lead to folders or images already indexed" in caplog.text
    assert "loop" in caplog.text


def test_a_runs_record_lists_each_skipped_file_under_its_split(tmp_path, offline_env):
    """results.json lists the unreadable files a run left out (on_bad_file=skip), each once,
    under the split that read it: the val file under val and under test, not under train."""
    import json

    from helpers import compose_train, tiny_overrides

    from cnnzoo.tasks.train import train

    root, (truncated, text) = broken_tree(tmp_path)
    overrides = [o for o in tiny_overrides(tmp_path / "cache", tmp_path) if "per_class" not in o]
    overrides += ["data=imagefolder", f"data.root={root}", "data.on_bad_file=skip",
                  "data.batch_size=15", "logger=csv", "trainer.max_epochs=2"]  # fmt: skip
    train(compose_train(overrides, out=tmp_path / "run"))
    skipped = json.loads((tmp_path / "run" / "results.json").read_text())["skipped_files"]
    assert [(s["split"], s["path"]) for s in skipped] == [
        ("val", str(text)), ("train", str(truncated)), ("test", str(text)),
    ]  # fmt: skip
    assert skipped[1]["reason"].startswith("OSError")


def test_an_unreadable_class_folder_is_named_and_never_cached(tmp_path, monkeypatch):
    """A class folder it may not list is named as unreadable (it was 'without images'), and
    the failed walk is not cached: once readable, the next start reads it, no reindex asked."""
    root = make_tree(tmp_path / "t")
    locked = root / "train" / WNIDS[1]
    real_scandir = os.scandir

    def scandir(path="."):
        if os.fspath(path) == str(locked):
            raise PermissionError(13, "Permission denied", str(locked))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match=rf"{locked} cannot be read \(PermissionError: Permission "
                       r"denied\).*chmod -R u\+rX.*Nothing was cached"):  # fmt: skip
        datamodule(root, index_cache=str(cache)).setup("fit")
    assert not list(cache.glob("train-*"))
    monkeypatch.setattr(os, "scandir", real_scandir)  # (chmod: the folder's time is unchanged)
    dm = datamodule(root, index_cache=str(cache))
    dm.setup("fit")
    assert len(dm.datasets["train"]) == 15


def test_a_cached_index_is_named_where_it_could_be_the_cause(tmp_path):
    root = make_tree(tmp_path / "t")
    for image in (root / "val" / WNIDS[2]).iterdir():
        image.unlink()
    with pytest.raises(DataError, match="without images.*cached in .*data.reindex=true walks"):
        datamodule(root, index_cache=str(tmp_path / "cache")).setup("fit")
