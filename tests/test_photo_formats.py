"""A phone's photos as they come (HEIC, an iPhone's default; AVIF; WebP) train, evaluate and
predict like JPEGs, with every decoder."""

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import run_train, tiny_datamodule
from PIL import Image

from cnnzoo.data.images import load_image
from cnnzoo.data.options import DECODERS

FORMATS = {".heic": "HEIF", ".avif": "AVIF", ".webp": "WEBP"}
ENV = {**os.environ, "WANDB_MODE": "disabled"}


def phone_photos(root: Path) -> dict[Path, np.ndarray]:
    """Two classes of photo-like pictures, one of each format per class and split (two train
    images of each), saved with Pillow (pillow-heif for HEIC, which ``cnnzoo.data.images``
    registers); the pixels each was made from."""
    made = {}
    rng = np.random.default_rng(0)
    for split, copies in (("train", 2), ("val", 1)):
        for label, cls in enumerate(("cat", "dog")):
            (root / split / cls).mkdir(parents=True)
            for suffix, kind in FORMATS.items():
                for i in range(copies):
                    y, x = np.mgrid[0:48, 0:64] / 64
                    base = 100 + 80 * np.sin((3 + 4 * label) * x + rng.uniform(0, 6) + 5 * y)
                    pixels = np.stack([base, base[::-1], 255 - base], -1)
                    pixels = (pixels + rng.normal(0, 4, pixels.shape)).clip(0, 255)
                    path = root / split / cls / f"IMG_{i}{suffix}"
                    Image.fromarray(pixels.astype(np.uint8)).save(path, kind, quality=90)
                    made[path] = pixels
    return made


@pytest.mark.parametrize("decoder", DECODERS)
def test_heic_avif_and_webp_decode_with_every_decoder(tmp_path, decoder):
    for path, pixels in phone_photos(tmp_path).items():
        image = load_image(str(path), decoder)
        array = np.asarray(image.permute(1, 2, 0) if decoder != "pil" else image, np.float64)
        assert array.shape == pixels.shape, path.name
        assert np.abs(array - pixels).mean() < 6, path.name  # (lossy at quality 90)
    dm = tiny_datamodule(tmp_path, num_classes=None, wnids=None, decoder=decoder)
    dm.setup()
    assert dm.num_classes == 2 and len(dm.datasets["train"]) == 12  # every format indexed
    images, _ = next(iter(dm.train_dataloader()))
    assert images.shape == (8, 3, 32, 32) and torch.isfinite(images).all()


@pytest.mark.slow
def test_phone_photos_train_evaluate_and_predict(tmp_path):
    photos = tmp_path / "photos"
    phone_photos(photos)
    args = ["data=imagefolder", f"data.root={photos}", "data.num_classes=null",
            "data.batch_size=4", "data.num_workers=0", "model=resnet18", "model.input_size=32",
            "model.eval_resize=36", "trainer=cpu", "trainer.max_epochs=1", "logger=none",
            "callbacks.progress_bar=null", "callbacks.prediction_grid=null"]  # fmt: skip
    proc = run_train(args, ENV, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = (tmp_path / "outputs" / "train").iterdir()
    results = json.loads((run / "results.json").read_text())
    assert results["status"] == "finished" and results["skipped_files"] == []

    proc = run_train([f"run={run}"], ENV, cwd=tmp_path, script="eval.py")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (scored,) = (tmp_path / "outputs" / "eval").rglob("eval.json")
    assert json.loads(scored.read_text())["images"] == 6  # 3 formats x 2 classes

    heic = photos / "val" / "cat" / "IMG_0.heic"
    proc = run_train([f"run={run}", f"images=[{heic}]"], ENV, cwd=tmp_path, script="predict.py")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (line,) = [line for line in proc.stdout.splitlines() if "IMG_0.heic" in line]
    assert "cat" in line and "dog" in line


def test_where_torchcodec_does_not_load_torchvision_decodes(tmp_path, monkeypatch, caplog):
    """TorchCodec's library is built for one torch release: on another (a cluster's image) it
    may not load, and ``data.decoder=torchcodec`` then decodes as ``torchvision`` did."""
    import sys

    from cnnzoo.data import images

    calls = []

    def torchvision_decode(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    import torchvision.io

    real = torchvision.io.decode_image
    monkeypatch.setattr(torchvision.io, "decode_image", torchvision_decode)
    monkeypatch.setitem(sys.modules, "torchcodec.decoders", None)  # (import fails)
    images.torchcodec_loads.cache_clear()
    try:
        assert not images.torchcodec_loads()
        photos = phone_photos(tmp_path)
        jpeg = tmp_path / "photo.jpg"
        Image.fromarray(next(iter(photos.values())).astype(np.uint8)).save(jpeg, quality=95)
        decoded = load_image(str(jpeg), "torchcodec")
        assert len(calls) == 1 and isinstance(decoded, torch.Tensor)  # torchvision's decoder
        heic = next(p for p in photos if p.suffix == ".heic")
        assert load_image(str(heic), "torchcodec").shape == (3, 48, 64)  # (then PIL's)
        with caplog.at_level(logging.WARNING, logger="cnnzoo.data.datamodule"):
            dm = tiny_datamodule(tmp_path, num_classes=None, wnids=None, decoder="torchcodec")
        assert dm.decoding() == "torchvision"  # (and the run's record says so)
        assert "TorchCodec's library does not load" in caplog.text
    finally:
        monkeypatch.undo()
        images.torchcodec_loads.cache_clear()
