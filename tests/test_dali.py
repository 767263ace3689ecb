"""data.loader=dali on DALI's CPU backend: the worker pipeline's files, labels, order, shares
and counts; the papers' crops; the bad-file policy; resume; clear errors."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import TINY_SAMPLE, compose_train, place, run_train, tiny_overrides
from omegaconf import OmegaConf

from cnnzoo.data import SampleDataModule
from cnnzoo.errors import ConfigError, DataError

pytest.importorskip("nvidia.dali", reason="NVIDIA DALI is not installed (pip install -e '.[dali]')")


def sample(cache_dir, **kwargs) -> SampleDataModule:
    options = {"num_classes": 10, "batch_size": 8, "num_workers": 0, "image_size": 32,
               "eval_resize": 36, "shuffle_seed": 3, **TINY_SAMPLE}  # fmt: skip
    root = kwargs.pop("root", str(next(cache_dir.glob("sample_*"))))
    dm = SampleDataModule(root, **(options | kwargs))
    dm.setup("fit")
    place(dm)
    return dm


def labels_of(loader) -> list[list[int]]:
    return [labels.tolist() for _, labels in loader]


def test_same_labels_order_and_counts_as_the_workers(cache_dir):
    workers, dali = sample(cache_dir), sample(cache_dir, loader="dali")
    for split in ("train", "val"):
        a, b = (getattr(dm, f"{split}_dataloader")() for dm in (workers, dali))
        assert len(a) == len(b) and labels_of(a) == labels_of(b)
    images, _ = next(iter(dali.train_dataloader()))
    assert images.shape == (8, 3, 32, 32) and images.dtype == torch.float32
    assert -3 < images.mean() < 3 and 0.3 < images.std() < 3  # normalised, not [0, 255]
    # val: the same centre crops up to DALI's own resize filter (a shift would be far off)
    a, b = (next(iter(dm.val_dataloader()))[0] for dm in (workers, dali))
    assert (a - b).abs().mean() < 0.15 * a.abs().mean()


def test_the_seed_and_epoch_decide_order_and_draws(cache_dir):
    def first_batch(seed, epoch):
        dm = sample(cache_dir, loader="dali", shuffle_seed=seed)
        loader = dm.train_dataloader()
        loader.sampler.set_epoch(epoch)
        return next(iter(loader))

    images, labels = first_batch(3, 0)
    again_images, again_labels = first_batch(3, 0)
    assert torch.equal(images, again_images) and torch.equal(labels, again_labels)
    other = [first_batch(3, 1), first_batch(4, 0)]
    assert all(not torch.equal(images, o[0]) for o in other)


@pytest.mark.parametrize(("crop", "views"), [("flip", 2), ("ten", 10)])
def test_eval_views_in_multicrop_order(cache_dir, crop, views):
    workers = sample(cache_dir, eval_crop=crop, batch_size=20)
    dali = sample(cache_dir, eval_crop=crop, batch_size=20, loader="dali")
    a, b = (next(iter(dm.val_dataloader()))[0] for dm in (workers, dali))
    assert a.shape == b.shape == (20 // views, views, 3, 32, 32)
    same = (a - b).abs().mean(dim=(0, 2, 3, 4))  # each view against its own
    assert (same < 0.15 * a.abs().mean()).all()
    assert (a[:, 0] - b[:, -1]).abs().mean() > same.max()  # a view order mix-up would show


def test_vgg_scale_jitter_crops_the_scale_it_is_given(cache_dir):
    """train_crop=vgg on DALI (Simonyan & Zisserman: shorter side rescaled to S drawn from
    scale_jitter, a random 224 crop; here 32 of S): at S=32 the crop spans the shorter side
    as the worker pipeline's does for the same images (one sampler order), at S=96 it zooms."""

    def first_batch(**settings):
        return next(iter(sample(cache_dir, train_crop="vgg", hflip=False, **settings)
                         .train_dataloader()))[0]  # fmt: skip

    workers, dali = first_batch(scale_jitter=[32, 32]), first_batch(scale_jitter=[32, 32],
                                                                     loader="dali")  # fmt: skip
    zoomed = first_batch(scale_jitter=[96, 96], loader="dali")
    assert dali.shape == zoomed.shape == workers.shape == (8, 3, 32, 32)
    near, far = (dali - workers).abs().mean(), (zoomed - workers).abs().mean()
    assert near < 0.3 * far  # (measured: 0.17 against 0.75; a scale ignored would be ~equal)


@pytest.mark.parametrize("world_size", [2, 3])
def test_ranks_score_every_val_image_once(cache_dir, world_size):
    """Each rank its own share: every val image on exactly one rank, none padded."""
    whole = sample(cache_dir, loader="dali", batch_size=6 * world_size)
    seen = []
    for rank in range(world_size):
        place(whole, world_size=world_size, rank=rank)
        loader = whole.val_dataloader()
        batches = list(loader)
        assert len(batches) == len(loader)
        seen += [i for i, _ in loader.sampler]
        assert sum(len(labels) for _, labels in batches) == len(loader.sampler)
    assert sorted(seen) == list(range(40))


def test_resume_continues_with_the_next_batches(cache_dir):
    straight = labels_of(sample(cache_dir, loader="dali").train_dataloader())
    interrupted = sample(cache_dir, loader="dali").train_dataloader()
    batches = iter(interrupted)
    for _ in range(3):
        next(batches)
    state = interrupted.state_dict()
    assert state == {"epoch": 0, "batches": 3}
    resumed = sample(cache_dir, loader="dali").train_dataloader()
    resumed.load_state_dict(state)
    assert labels_of(resumed) == straight[3:]


def broken(tmp_path, cache_dir):
    """A copy of the tiny sample set with a truncated JPEG and a text file named .JPEG."""
    import shutil

    root = tmp_path / "tree"
    shutil.copytree(next(cache_dir.glob("sample_*")), root)
    folder = sorted((root / "train").iterdir())[1]
    truncated, text = sorted(folder.iterdir())[:2]
    truncated.write_bytes(truncated.read_bytes()[:200])
    text.write_text("<html>404 not found</html>")
    return root, {str(truncated), str(text)}


@pytest.mark.parametrize("looks_whole", [False, True])
def test_a_file_dali_cannot_decode_is_named(tmp_path, cache_dir, looks_whole):
    """A truncated or foreign file is caught before DALI sees it; one with a JPEG's start and
    end markers but garbage between them fails DALI's pipeline, which is then searched for it."""
    root, bad = broken(tmp_path, cache_dir)
    if looks_whole:
        for path in bad:
            Path(path).write_bytes(b"\xff\xd8\xff" + b"garbage " * 40 + b"\xff\xd9")
    dm = sample(cache_dir, loader="dali", root=str(root), batch_size=16)
    with pytest.raises(DataError, match="cannot read image .*on_bad_file=skip") as e:
        list(dm.train_dataloader())
    assert any(path in str(e.value) for path in bad)
    skipping = sample(cache_dir, loader="dali", root=str(root), on_bad_file="skip", batch_size=16)
    assert sum(len(labels) for _, labels in skipping.train_dataloader()) == 78
    assert {path for path, _ in skipping.new_skipped("train")} == bad


def test_camera_orientation_as_the_workers_apply_it(tmp_path, cache_dir):
    """DALI's decoder turns a photo by its EXIF Orientation tag; so do the workers."""
    import shutil

    from PIL import Image

    root = tmp_path / "tree"
    shutil.copytree(next(cache_dir.glob("sample_*")), root)
    for path in (root / "val").rglob("*"):
        if path.is_file():
            with Image.open(path) as image:
                pixels = image.convert("RGB")
            exif = Image.Exif()
            exif[0x0112] = 6  # stored sideways: "rotate 90 clockwise to view"
            pixels.save(path, format="JPEG", quality=95, exif=exif)
    workers, dali = (sample(cache_dir, root=str(root), loader=way) for way in ("workers", "dali"))
    a, b = (next(iter(dm.val_dataloader()))[0] for dm in (workers, dali))
    assert (a - b).abs().mean() < 0.15 * a.abs().mean()


def test_skip_leaves_bad_files_out_and_lists_them(tmp_path, cache_dir):
    root, bad = broken(tmp_path, cache_dir)
    dm = sample(cache_dir, loader="dali", root=str(root), on_bad_file="skip", batch_size=16)
    loader = dm.train_dataloader()
    batches = list(loader)
    assert len(batches) == len(loader) == 5
    assert sum(len(labels) for _, labels in batches) == 80 - 2
    assert {path for path, _ in dm.new_skipped("train")} == bad
    assert sum(len(labels) for _, labels in loader) == 78  # the next epoch skips them at once
    assert dm.new_skipped("train") == []


def test_the_next_batch_is_prepared_while_dali_works_on_one(cache_dir, monkeypatch):
    """Batch k+1 goes to the preparing thread before batch k is handed to DALI, so the training
    loop's thread does not wait for it; ``TUNING.read_ahead`` batches are prepared ahead."""
    from cnnzoo.data import dali

    def events_of(read_ahead: int) -> list[str]:
        monkeypatch.setattr(dali, "TUNING", dali.Tuning(read_ahead=read_ahead))
        loader = sample(cache_dir, loader="dali", batch_size=16).train_dataloader()
        events = []
        batches, give = loader.feed.batches, loader._give

        def taken():
            for i, batch in enumerate(batches()):
                events.append(f"read {i}")
                yield batch

        def given(*args):
            events.append(f"give {sum(e.startswith('give') for e in events)}")
            return give(*args)

        monkeypatch.setattr(loader.feed, "batches", taken)
        monkeypatch.setattr(loader, "_give", given)
        assert sum(len(labels) for _, labels in loader) == 80
        return events

    assert events_of(1) == ["read 0", "read 1", "give 0", "read 2", "give 1", "read 3", "give 2",
                            "read 4", "give 3", "give 4"]  # fmt: skip
    assert events_of(2)[:5] == ["read 0", "read 1", "read 2", "give 0", "read 3"]


def test_dali_reads_the_files_python_only_looks_at_their_ends(cache_dir, monkeypatch):
    """Reading each file in Python held the interpreter the training loop needs and supplied at
    most ~4,600 images/s on an H200 machine (DALI's own reading: ~20,000): DALI is given the
    paths, and Python reads no whole file of a clean tree."""
    from cnnzoo.data import dali_feed

    def whole_read(*args, **kwargs):
        raise AssertionError("a whole file was read in Python")

    monkeypatch.setattr(dali_feed.np, "fromfile", whole_read)
    peeked, peek = [], dali_feed.peek
    monkeypatch.setattr(dali_feed, "peek", lambda path: peeked.append(path) or peek(path))
    dm = sample(cache_dir, loader="dali", batch_size=16)
    images = torch.cat([x for x, _ in dm.train_dataloader()])
    assert images.shape == (80, 3, 32, 32) and len(set(peeked)) == 80
    workers = sample(cache_dir, batch_size=16)
    order = [labels.tolist() for _, labels in workers.train_dataloader()]
    assert labels_of(dm.train_dataloader()) == order  # (the same files, in the same order)


def test_photos_dali_cannot_decode_are_converted_once(tmp_path, cache_dir, monkeypatch):
    """A file that is not a whole JPEG or PNG but decodes (a GIF, BMP or TIFF here; a phone's
    HEIC or AVIF photo) goes to DALI as a PNG file made once per run, in a folder removed with
    the loader."""
    import gc
    import shutil

    from PIL import Image

    root = tmp_path / "tree"
    shutil.copytree(next(cache_dir.glob("sample_*")), root)
    photos = sorted(sorted((root / "train").iterdir())[2].iterdir())[:3]
    pixels = {}
    for path, kind in zip(photos, ("GIF", "BMP", "TIFF"), strict=True):
        with Image.open(path) as image:
            pixels[path.name] = np.asarray(image.convert("RGB"))
        Image.fromarray(pixels[path.name]).save(path, kind)  # (the name still says .JPEG)
    from cnnzoo.data import dali_feed

    decoded, decode = [], dali_feed.decode_bytes
    monkeypatch.setattr(dali_feed, "decode_bytes", lambda *a: decoded.append(a[1]) or decode(*a))
    dm = sample(cache_dir, loader="dali", root=str(root), batch_size=16)
    loader = dm.train_dataloader()
    for _ in range(2):  # (the second epoch decodes none of them again)
        assert sum(len(labels) for _, labels in loader) == 80
        assert sorted(Path(name).name for name in decoded) == sorted(pixels)
    converted = loader.inputs.converted
    assert sorted(Path(name).name for name in converted) == sorted(pixels)
    for name, png in converted.items():
        with Image.open(png) as image:
            assert image.format == "PNG" and image.size == Image.open(name).size
    folder = Path(next(iter(converted.values()))).parent
    del dm, loader
    gc.collect()
    assert not folder.exists()


def test_a_decoder_argument_reaches_dali(cache_dir, monkeypatch):
    from cnnzoo.data import dali

    monkeypatch.setattr(dali, "TUNING", dali.Tuning(decoder={"no_such_argument": 1}))
    with pytest.raises(Exception, match="no_such_argument"):
        list(sample(cache_dir, loader="dali").train_dataloader())


def test_the_hardware_decoder_share_is_a_setting(cache_dir, monkeypatch):
    """DALI says to find ``hw_decoder_load`` by measuring (1.0 supplied 21% more than its
    default 0.65 on an H200): ``data.dali_hw_decoder_load`` sets it; null leaves DALI's."""
    from cnnzoo.data import dali

    given, graph = [], dali.graph
    monkeypatch.setattr(dali, "graph", lambda *a: given.append(a[3]) or graph(*a))
    for load in (1.0, None):
        loader = sample(cache_dir, loader="dali", dali_hw_decoder_load=load).train_dataloader()
        next(iter(loader))
    assert given == [{"hw_decoder_load": 1.0}, {}]


def test_bad_settings_are_one_clear_error(cache_dir, monkeypatch):
    with pytest.raises(ConfigError, match="data.auto_augment='randaugment'.*data.loader=workers"):
        sample(cache_dir, loader="dali", auto_augment="randaugment")
    with pytest.raises(ConfigError, match="data.loader='threads': choose one of"):
        sample(cache_dir, loader="threads")
    dm = sample(cache_dir, loader="dali", dali_device="gpu")
    with pytest.raises(ConfigError, match="dali_device=gpu decodes on a CUDA GPU.*trains on cpu"):
        dm.train_dataloader()
    monkeypatch.setitem(sys.modules, "nvidia.dali", None)  # as if not installed
    with pytest.raises(ConfigError, match=r"needs NVIDIA DALI.*pip install -e '\.\[dali\]'"):
        sample(cache_dir, loader="dali")


def test_lighting_runs_on_the_device_batch_in_training_only(cache_dir):
    dm = sample(cache_dir, loader="dali", lighting=0.1)
    images, labels = next(iter(dm.train_dataloader()))
    assert images.dtype == torch.uint8  # lighting needs [0, 1] floats: done after the transfer
    place(dm, training=True)
    torch.manual_seed(0)
    lit, _ = dm.on_after_batch_transfer((images, labels), 0)
    place(dm, training=False)
    plain, _ = dm.on_after_batch_transfer((images, labels), 0)
    shift = (lit - plain).mean(dim=(2, 3))  # one colour shift per image, constant over pixels
    assert shift.abs().max() > 1e-3
    assert torch.allclose(lit - plain, shift[:, :, None, None].expand_as(lit), atol=1e-4)
    assert not torch.allclose(shift[0], shift[1])


def test_a_run_trains_tests_and_records_with_dali(cache_dir, tmp_path, offline_env):
    from cnnzoo.tasks.train import train

    overrides = [*tiny_overrides(cache_dir, tmp_path), "logger=csv", "data.loader=dali",
                 "data.train_crop=alexnet", "data.eval_crop=flip",
                 "trainer.max_epochs=2"]  # fmt: skip
    cfg = compose_train(overrides, out=tmp_path)
    train(cfg)
    (tmp_path / ".hydra").mkdir()  # what train.py's Hydra writes
    OmegaConf.save(cfg, tmp_path / ".hydra" / "config.yaml")

    results = json.loads((tmp_path / "results.json").read_text())
    assert results["status"] == "finished" and results["epochs"] == 2
    assert results["decoding"] == "dali"
    assert {"test/acc_top1", "val/acc_top5", "train/loss"} <= results["metrics"].keys()
    assert results["val_history"][0]["epoch"] == 0
    from cnnzoo.tasks.evaluate import run_eval  # scores with the worker pipeline

    scored = run_eval(compose_train([f"run={tmp_path}"], out=tmp_path / "eval", config="eval"))
    assert scored["images"] == 40 and scored["crop"] == "center"


def test_an_option_dali_lacks_stops_the_run_in_one_line(cache_dir, tmp_path, capsys):
    from cnnzoo.tasks.train import train

    overrides = [*tiny_overrides(cache_dir, tmp_path), "logger=none", "data.loader=dali",
                 "data.random_erasing=0.25"]  # fmt: skip
    with pytest.raises(SystemExit) as e:
        train(compose_train(overrides, out=tmp_path))
    assert e.value.code == 1
    assert "error: data.random_erasing=0.25: not available with data.loader=dali" in (
        capsys.readouterr().err
    )


@pytest.mark.slow
def test_ddp_ranks_with_dali_count_every_val_image_once(cache_dir, tmp_path, offline_env):
    """Two ddp_cpu ranks, each its own DALI pipeline: the test figures equal one process's
    test of the same checkpoint (every image counted once, none padded)."""
    import pytorch_lightning as pl

    from cnnzoo.tasks.restore import load_module, run_config

    cpu = ("trainer=", "data.batch_size")
    base = [o for o in tiny_overrides(cache_dir, tmp_path) if not o.startswith(cpu)]
    args = [*base, "trainer=ddp_cpu", "trainer.devices=2", "data.batch_size=12",
            "data.loader=dali", "logger=none"]  # fmt: skip
    proc = run_train(args, offline_env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = (tmp_path / "outputs" / "train").iterdir()
    results = json.loads((run / "results.json").read_text())
    assert results["world_size"] == 2
    module, _ = load_module(run_config(compose_train([f"run={run}"], config="eval")))
    dm = sample(cache_dir, loader="dali", batch_size=12)
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
    single = trainer.test(module, datamodule=dm, verbose=False)[0]
    assert results["metrics"]["test/acc_top1"] == pytest.approx(single["test/acc_top1"])
    assert results["metrics"]["test/loss"] == pytest.approx(single["test/loss"], rel=1e-5)


def test_resume_through_lightning_restores_the_position(cache_dir, tmp_path, offline_env):
    """Lightning keeps the DALI loader's position in its checkpoints: resumed after step 2 of
    epoch 0, the run trains on the same images as the uninterrupted one from batch 3 on (other
    crop draws: DALI's generators); resumed at the epoch boundary, on the very same batches."""
    from cnnzoo.tasks.train import train

    def run(name: str, *extra: str) -> list:
        out, batches = tmp_path / name, tmp_path / f"{name}.json"
        overrides = [*tiny_overrides(cache_dir, out), "data.loader=dali", "logger=none",
                     "trainer.limit_train_batches=4", "trainer.max_epochs=2",
                     "+callbacks.batches._target_=probes.TrainBatches",
                     f"+callbacks.batches.path={batches}", *extra]  # fmt: skip
        train(compose_train(overrides, out=out))
        return json.loads(batches.read_text())

    mid = tmp_path / "mid"
    checkpoint = "+callbacks.mid._target_=pytorch_lightning.callbacks.ModelCheckpoint"
    every_2 = [checkpoint, f"+callbacks.mid.dirpath={mid}", "+callbacks.mid.save_top_k=-1",
               "+callbacks.mid.every_n_train_steps=2"]  # fmt: skip
    straight = run("straight", *every_2)
    assert [b[:2] for b in straight] == [[e, i] for e in (0, 1) for i in range(4)]
    resumed = run("resumed", f"ckpt_path='{mid / 'epoch=0-step=2.ckpt'}'")
    assert [b[:3] for b in resumed] == [b[:3] for b in straight[2:]]  # epoch, index, labels
    boundary = run("boundary", f"ckpt_path='{mid / 'epoch=0-step=4.ckpt'}'")
    assert boundary == straight[4:]  # pixel sums too
