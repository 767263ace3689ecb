"""WebDataset shards: writing them from a tree (resumably, nothing lost), reading them as streams
that count every image once per epoch on any number of ranks and workers, resume exactly, and
train, validate and evaluate like the folder tree."""

import json
import shutil
import tarfile
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from helpers import TINY_SAMPLE, compose_train, place, tiny_overrides
from omegaconf import DictConfig, OmegaConf

from cnnzoo.data import ImageFolderDataModule
from cnnzoo.data.index import scan
from cnnzoo.data.shards import META, ShardDataModule, ShardLoader, load_meta, write_shards
from cnnzoo.errors import ConfigError, DataError

pytestmark = pytest.mark.xdist_group("shards")  # its module fixtures are made once

SAMPLE = "sample_v1_{train_per_class}+{val_per_class}_seed0".format(**TINY_SAMPLE)


@pytest.fixture(scope="module")
def shards(cache_dir, tmp_path_factory) -> Path:
    """The tiny sample set (80 train, 40 val images) in shards of 10."""
    dst = tmp_path_factory.mktemp("shards") / "sample"
    write_shards(cache_dir / SAMPLE, dst, shard_size=10, seed=3)
    return dst


def fingerprint(image: torch.Tensor) -> torch.Tensor:
    """Tells the sample set's images apart (sizes and pixel sums differ)."""
    return torch.tensor([*image.shape, int(image.sum())])


def datamodule(root, **kwargs) -> ShardDataModule:
    options = {"num_classes": 10, "batch_size": 8, "num_workers": 0, "image_size": 32,
               "eval_resize": 36, "wnids": "imagenet"}  # fmt: skip
    return ShardDataModule(str(root), **(options | kwargs))


def loader(root, split: str, rank=0, world_size=1, workers=0, epoch=0, transform=None,
           **kwargs) -> ShardLoader:  # fmt: skip
    """This rank's loader of ``split``; with ``transform``, that instead of the recipe's."""
    dm = datamodule(root, num_workers=workers, **kwargs)
    place(dm, world_size, rank, epoch, devices=world_size)
    if transform is None:
        return dm.train_dataloader() if split == "train" else dm._loader(split, shuffle=False)
    stream = dm.stream(split, transform=transform)
    return ShardLoader(stream, epoch=lambda: epoch, num_workers=stream.workers)


def contents(batches) -> list[tuple[tuple, int]]:
    """(fingerprint, label) of each image of batches made with ``transform=fingerprint``."""
    return [(tuple(x.tolist()), int(y)) for prints, labels in batches
            for x, y in zip(prints, labels, strict=True)]  # fmt: skip


def tree_contents(root: Path, split: str) -> Counter:
    from cnnzoo.data.images import load_image

    index = scan(root / split)
    return Counter((tuple(fingerprint(load_image(index.path(i))).tolist()), int(index.targets[i]))
                   for i in range(len(index)))  # fmt: skip


def test_shards_hold_every_image_once_with_its_bytes_class_and_path(cache_dir, shards):
    tree = cache_dir / SAMPLE
    meta = load_meta(shards, "data.root")
    assert meta["classes"] == list(scan(tree / "train").classes)
    for split, images in (("train", 80), ("val", 40)):
        index = scan(tree / split)
        info = meta["splits"][split]
        assert info["images"] == images
        assert [s["images"] for s in info["shards"]] == [10] * (images // 10)
        keys = []
        for shard in info["shards"]:
            with tarfile.open(shards / shard["name"]) as tar:
                members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
            for name, data in members.items():
                key, ext = name.split(".", 1)
                if ext in ("jpg", "png"):
                    i = int(key)
                    keys.append(i)
                    assert members[f"{key}.path"].decode() == index.relpath(i)
                    assert int(members[f"{key}.cls"]) == index.targets[i]
                    assert data == Path(index.path(i)).read_bytes()  # the file, unchanged
        assert sorted(keys) == list(range(images))
        shuffled = keys != sorted(keys)
        assert shuffled == (split == "train")  # train mixed across shards, val in order


def test_an_unfinished_write_is_finished_and_nothing_is_overwritten(
    cache_dir, tmp_path, monkeypatch
):
    import cnnzoo.data.shards.write as module

    tree, dst = cache_dir / SAMPLE, tmp_path / "shards"
    real, written = module._write_shard, []

    def crash_after_three(*job):
        if len(written) == 3:
            raise KeyboardInterrupt
        written.append(job[2])
        return real(*job)

    monkeypatch.setattr(module, "_write_shard", crash_after_three)
    with pytest.raises(KeyboardInterrupt):
        write_shards(tree, dst, shard_size=10)
    with pytest.raises(DataError, match="unfinished write: run the same command again"):
        load_meta(dst, "data.root")
    with pytest.raises(DataError, match="unfinished write with other settings"):
        write_shards(tree, dst, shard_size=20)
    monkeypatch.setattr(module, "_write_shard", real)
    kept = {p: Path(p).stat().st_mtime_ns for p in written}
    write_shards(tree, dst, shard_size=10)
    assert {p: Path(p).stat().st_mtime_ns for p in written} == kept  # finished shards kept
    assert len(load_meta(dst, "data.root")["splits"]["train"]["shards"]) == 8
    assert not list(dst.rglob(".*partial"))
    before = (dst / META).read_text()
    with pytest.raises(DataError, match="already holds shards"):
        write_shards(tree, dst, shard_size=10)
    assert (dst / META).read_text() == before
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="is not empty"):
        write_shards(tree, other)
    assert [p.name for p in other.iterdir()] == ["notes.txt"]


def test_the_command_writes_in_parallel_and_prints_how_to_train(cache_dir, tmp_path, capsys):
    from cnnzoo.data.shards import main

    args = ["--src", str(cache_dir / SAMPLE), "--dst", str(tmp_path / "s"), "--shard-size", "20"]
    assert main([*args, "--workers", "2"]) == 0
    out = capsys.readouterr().out
    assert "train: 80 images in 4 shards" in out and "val: 40 images in 2 shards" in out
    assert f"data=imagenet_shards data.root={tmp_path / 's'} data.num_classes=10\n" in out
    assert main(args) == 1  # a finished set is not written over
    assert "already holds shards" in capsys.readouterr().err
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    assert main(["--src", str(cache_dir / SAMPLE), "--dst", str(a_file)]) == 1
    assert f"--dst {a_file} is a file, not a folder" in capsys.readouterr().err
    assert a_file.read_text() == "mine"


def test_problems_are_named(shards, tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_meta(tmp_path / "nowhere", "data.root")
    with pytest.raises(DataError, match="no cnnzoo-shards.json; write shards there with python"):
        load_meta(tmp_path, "data.root")
    with pytest.raises(
        DataError, match=f"shards, not class folders .*data=imagenet_shards data.root={shards}"
    ):
        ImageFolderDataModule(str(shards), num_classes=10).setup()  # shards given as an image tree
    images = tmp_path / "images"  # an image tree given as the shard folder
    for split in ("train", "val"):
        (images / split / "n01440764").mkdir(parents=True)
    with pytest.raises(DataError, match=f"a folder of images .* --src {images} --dst ANOTHER"):
        load_meta(images, "data.root")
    with pytest.raises(DataError, match="holds 10 classes but data.num_classes=5"):
        datamodule(shards, num_classes=5).setup()
    with pytest.raises(ConfigError, match="val_from_train"):
        datamodule(shards, val_from_train=2)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / META).write_text((shards / META).read_text())
    with pytest.raises(DataError, match="12 of the 12 shards listed .* are missing"):
        load_meta(broken, "data.root")
    with pytest.raises(DataError, match="no shard folder given. Set data.root; write one"):
        load_meta(None, "data.root")
    foreign = tmp_path / "foreign"  # a tar of other contents under cnnzoo's metadata
    (foreign / "val").mkdir(parents=True)
    (foreign / "train").symlink_to(shards / "train", target_is_directory=True)
    (foreign / META).write_text((shards / META).read_text())
    without_sizes(foreign)  # (else their sizes tell it first)
    for i in range(4):
        with tarfile.open(foreign / "val" / f"val-{i:06d}.tar", "w") as tar:
            tar.add(shards / META, arcname="00000000.txt")
    with pytest.raises(DataError, match=r"has fields \['txt'\].*not a shard of cnnzoo's format"):
        list(loader(foreign, "val"))


@pytest.mark.parametrize(("world_size", "workers"), [(1, 2), (3, 0)])
def test_evaluation_reads_every_val_image_exactly_once(cache_dir, shards, world_size, workers):
    seen = []
    for rank in range(world_size):
        val = loader(
            shards,
            "val",
            rank,
            world_size,
            workers,
            transform=fingerprint,
            batch_size=6 * world_size,
        )
        batches = list(val)
        assert len(batches) == len(val)  # the length Lightning plans with is exact
        seen += contents(batches)
    assert Counter(seen) == tree_contents(cache_dir / SAMPLE, "val")


def test_a_training_epoch_reads_each_image_once_on_every_rank_alike(cache_dir, shards):
    """8 shards, 2 ranks x 2 workers, global batch 10: every rank takes the same 8 steps
    (80 // 10), each worker 4 batches of 5 = its 2 shards, so the epoch covers the 80 images
    once; the next epoch is another order of the same images."""

    def epoch(number: int) -> list:
        seen = []
        for rank in range(2):
            train = loader(shards, "train", rank, 2, workers=2, epoch=number,
                           transform=fingerprint, batch_size=10)  # fmt: skip
            batches = list(train)
            assert len(batches) == len(train) == 8
            seen += contents(batches)
        return seen

    first, second = epoch(0), epoch(1)
    assert Counter(first) == Counter(second) == tree_contents(cache_dir / SAMPLE, "train")
    assert first != second


@pytest.mark.parametrize("reader", ["workers", "dali"])
def test_fewer_train_images_than_one_batch_are_refused(shards, reader):
    """80 images, global batch 128: no step would run (as with class folders)."""
    if reader == "dali":
        pytest.importorskip("nvidia.dali")
    with pytest.raises(DataError, match=r"training has 80 images \(.*'s train shards\), fewer "
                       r"than one batch \(data.batch_size=128, 128 per device\).*"
                       r"Set data.batch_size=64 or less\."):  # fmt: skip
        loader(shards, "train", batch_size=128, loader=reader)
    assert len(loader(shards, "train", batch_size=64, loader=reader)) == 1


def test_persistent_workers_learn_each_new_epoch(shards):
    """Lightning keeps one loader (and its worker processes) for the whole run: the epoch the
    trainer is in reaches the workers, so epoch 1 is epoch 1's order, not epoch 0's again."""
    dm = datamodule(shards, num_workers=2)
    place(dm, epoch=0)
    train = dm.train_dataloader()
    assert train.persistent_workers
    first = [labels.tolist() for _, labels in train]
    place(dm, epoch=1)
    second = [labels.tolist() for _, labels in train]
    fresh = [labels.tolist() for _, labels in loader(shards, "train", workers=2, epoch=1)]
    assert first != second == fresh


def test_resuming_mid_epoch_continues_the_same_batches(shards):
    """3 of 10 batches, saved; a new loader restored from that state gives batches 4 to 10 of
    the uninterrupted epoch, augmentation included (2 workers: the order rotates)."""
    whole = list(loader(shards, "train", workers=2, epoch=1))
    first = loader(shards, "train", workers=2, epoch=1)
    taken = []
    for batch in first:
        taken.append(batch)
        if len(taken) == 3:
            break
    state = first.state_dict()
    assert state["epoch"] == 1 and state["batches"] == 3
    resumed = loader(shards, "train", workers=2, epoch=1)
    resumed.load_state_dict(json.loads(json.dumps(state)))  # as stored in a checkpoint
    rest = list(resumed)
    assert len(rest) == 7
    for (a, la), (b, lb) in zip(taken + rest, whole, strict=True):
        assert torch.equal(a, b) and torch.equal(la, lb)
    assert len(list(resumed)) == 10  # the next pass is a whole epoch


@pytest.mark.parametrize("reader", ["workers", "dali"])
def test_bad_images_are_named_or_skipped(cache_dir, tmp_path, reader):
    from cnnzoo.callbacks import BadFileReport

    if reader == "dali":
        pytest.importorskip("nvidia.dali", reason="NVIDIA DALI is not installed")

    tree = tmp_path / "tree"
    for split in ("train", "val"):
        for folder in sorted((cache_dir / SAMPLE / split).iterdir()):
            (tree / split / folder.name).mkdir(parents=True)
            for f in sorted(folder.iterdir())[:2]:
                (tree / split / folder.name / f.name).write_bytes(f.read_bytes())
    bad = sorted((tree / "val").rglob("*.JPEG"))[5]
    bad.write_bytes(bad.read_bytes()[:300])  # truncated
    write_shards(tree, tmp_path / "shards", shard_size=5)
    relpath = bad.relative_to(tree / "val").as_posix()
    with pytest.raises(DataError, match=rf"val-000001.tar: 00000005 \({relpath}\).*on_bad_file"):
        list(loader(tmp_path / "shards", "val", loader=reader))
    dm = datamodule(tmp_path / "shards", on_bad_file="skip", batch_size=20, loader=reader)
    place(dm)
    (images, _), = list(dm._loader("val", shuffle=False))  # fmt: skip
    assert len(images) == 19
    report = BadFileReport()
    trainer = SimpleNamespace(datamodule=dm, current_epoch=0, sanity_checking=False)
    report.on_validation_epoch_end(trainer, None)
    assert [path for _, path, _ in report.skipped] == [f"{dm.root}/val/val-000001.tar: 00000005 "
                                                       f"({relpath})"]  # fmt: skip


@pytest.mark.parametrize("reader", ["workers", "dali"])
def test_a_shard_cut_short_is_named(shards, tmp_path, reader):
    """A copy to the cluster's file system that stopped, read: one line naming the shard and
    what to do (it was tarfile's ReadError, with webdataset's tracebacks). (Its size tells it
    on setup since the sizes are recorded; shards written before are found as they are read.)"""
    if reader == "dali":
        pytest.importorskip("nvidia.dali", reason="NVIDIA DALI is not installed")
    copy = tmp_path / "copied"
    shutil.copytree(shards, copy)
    without_sizes(copy)
    cut = sorted((copy / "val").glob("*.tar"))[1]
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    with pytest.raises(
        DataError,
        match=rf"^cannot read shard {cut} \(ReadError: unexpected end of data\): it is damaged or "
        rf"cut short .* --dst {copy}\.$",
    ):
        list(loader(copy, "val", loader=reader, workers=1 if reader == "workers" else 0))


def test_a_shard_cut_at_a_tar_header_is_named_before_reading(shards, tmp_path):
    """A copy that stopped inside a member's header reads as a shorter shard, with no error:
    a run trained on what was left (two of the shard's images gone, one without its path) and
    said nothing. The shards' sizes, recorded when written, tell it on setup. Old shard
    folders, written without sizes, are read as before."""
    copy = tmp_path / "copied"
    shutil.copytree(shards, copy)
    cut = sorted((copy / "train").glob("*.tar"))[1]
    with tarfile.open(cut) as tar:
        second = tar.getmembers()[3]  # (the second image's first member)
    cut.write_bytes(cut.read_bytes()[: second.offset + 100])  # 100 bytes into its header
    with tarfile.open(cut) as tar:  # (what tarfile makes of it: a shorter archive)
        assert len(tar.getmembers()) == 3
    meta = json.loads((copy / META).read_text())
    written = {s["name"]: s["bytes"] for split in meta["splits"].values() for s in split["shards"]}
    size = written[f"train/{cut.name}"]
    assert size == (shards / "train" / cut.name).stat().st_size
    with pytest.raises(
        DataError,
        match=rf"1 of the 12 shards are not the size {META} records, e.g. train/{cut.name} is "
        rf"{second.offset + 100:,} bytes, written as {size:,} .* --dst {copy}\.$",
    ):
        datamodule(copy).setup()
    assert load_meta(without_sizes(copy), "data.root")["splits"]  # read as before


def without_sizes(root: Path) -> Path:
    """``root``'s shards as cnnzoo wrote them before it recorded their sizes."""
    meta = json.loads((root / META).read_text())
    for split in meta["splits"].values():
        for shard in split["shards"]:
            del shard["bytes"]
    (root / META).write_text(json.dumps(meta))
    return root


def test_training_resuming_and_evaluating_from_shards(cache_dir, tmp_path):
    """A real run on data=sample_shards (written on first use): its train/val/test counts and
    the prediction grid from the shards; eval.py reproduces its test figures; and the run
    resumed from a checkpoint taken after step 2 of 4 (Lightning stores the loader's position
    in it) trains on exactly batches 3 and 4 of the uninterrupted run."""
    from cnnzoo.tasks.evaluate import run_eval
    from cnnzoo.tasks.train import train

    def run(name: str, *extra: str) -> tuple[list, DictConfig]:
        out, batches = tmp_path / name, tmp_path / f"{name}.json"
        overrides = [*tiny_overrides(cache_dir, out), "data=sample_shards", "data.shard_size=10",
                     f"data.root={tmp_path / 'shards'}", "data.num_workers=2", "logger=none",
                     "trainer.limit_train_batches=4",
                     "+callbacks.batches._target_=probes.TrainBatches",
                     f"+callbacks.batches.path={batches}", *extra]  # fmt: skip
        if any(o.startswith("callbacks.prediction_grid.") for o in extra):
            overrides.remove("callbacks.prediction_grid=null")
        cfg = compose_train(overrides, out=out)
        train(cfg)
        return json.loads(batches.read_text()), cfg

    out, mid, record = tmp_path / "straight", tmp_path / "mid", tmp_path / "record.json"
    straight, cfg = run("straight", "callbacks.prediction_grid.times=1",
                        "callbacks.prediction_grid.images=4",
                        "+callbacks.record._target_=probes.BatchRecorder",
                        f"+callbacks.record.path={record}",
                        "+callbacks.mid._target_=pytorch_lightning.callbacks.ModelCheckpoint",
                        f"+callbacks.mid.dirpath={mid}", "+callbacks.mid.every_n_train_steps=2",
                        "+callbacks.mid.save_top_k=-1")  # fmt: skip
    seen = json.loads(record.read_text())
    assert seen["train"]["images"] == 4 * 8  # limit_train_batches=4
    assert seen["val"]["images"] == seen["test"]["images"] == 40
    assert (out / "predictions" / "epoch_000.png").stat().st_size > 5000
    results = json.loads((out / "results.json").read_text())
    (out / ".hydra").mkdir()
    OmegaConf.save(cfg, out / ".hydra" / "config.yaml")  # what Hydra keeps of a run
    evaluated = run_eval(compose_train([f"run={out}"], out=tmp_path / "eval", config="eval"))
    assert evaluated["images"] == 40
    assert evaluated["acc_top1"] == results["metrics"]["test/acc_top1"]
    rows = Path(evaluated["per_class_csv"]).read_text().splitlines()
    assert rows[1].startswith("0,n01440764,tench,4,")  # wnids from the shards' metadata

    assert [b[:2] for b in straight] == [[0, 0], [0, 1], [0, 2], [0, 3]]
    resumed, _ = run("resumed", f"ckpt_path='{mid / 'epoch=0-step=2.ckpt'}'")  # quoted: has '='
    assert resumed == straight[2:]


def test_dali_reads_shards_with_the_same_shares_counts_and_resume(shards):
    """data.loader=dali on shards (DALI's CPU backend here): each rank reads its own shards;
    val counts every image once on 1 and 3 ranks; training ranks take equal steps; a resume
    mid-epoch continues with the same batches."""
    pytest.importorskip("nvidia.dali", reason="NVIDIA DALI is not installed")
    from cnnzoo.data.dali import DaliLoader

    def labels(batches) -> list[int]:
        return [int(y) for _, ys in batches for y in ys]

    val = Counter(labels(loader(shards, "val")))
    for world in (1, 3):
        ranks = [loader(shards, "val", rank, world, batch_size=6, loader="dali")
                 for rank in range(world)]  # fmt: skip
        batches = [list(r) for r in ranks]
        assert [len(b) for b in batches] == [len(r) for r in ranks]  # exact per rank
        assert Counter(labels(b for rank in batches for b in rank)) == val  # 40, once each
    train = [loader(shards, "train", rank, 2, batch_size=16, loader="dali") for rank in (0, 1)]
    assert all(isinstance(t, DaliLoader) for t in train)
    steps = [list(t) for t in train]
    assert [len(s) for s in steps] == [len(t) for t in train] == [5, 5]
    assert all(images.shape == (8, 3, 32, 32) for s in steps for images, _ in s)
    straight = labels(steps[0])
    interrupted = loader(shards, "train", 0, 2, batch_size=16, loader="dali")
    batches = iter(interrupted)
    next(batches), next(batches)
    state = interrupted.state_dict()
    assert (state["epoch"], state["batches"]) == (0, 2)
    resumed = loader(shards, "train", 0, 2, batch_size=16, loader="dali")
    resumed.load_state_dict(state)
    assert labels(resumed) == straight[16:]
