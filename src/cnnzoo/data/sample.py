"""The built-in sample set: a small, learnable ImageNet look-alike generated on first use.

Ten classes named by real ILSVRC-2012 wnids (those of Imagenette), each drawn as one kind of
shape of random size, position and rotation over a noisy background of random colour with a
distractor stroke. A class's shape colour is drawn around a hue of its own, with neighbouring
classes' hues overlapping: colour is a quick, partial cue (like a goldfish's orange) and the
shape decides the rest. The images are saved as real JPEGs of varied sizes and aspect ratios
in the exact ImageNet layout (``train/<wnid>/<wnid>_<n>.JPEG``, ``val/<wnid>/...``). Like real
ImageNet it holds a grayscale JPEG, a CMYK JPEG and a PNG file named ``.JPEG``.

Generation is deterministic: each image has its own RNG seeded from (seed, split, class, index),
so the same version and seed give byte-identical files.
"""

import colorsys
import fcntl
import glob
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from cnnzoo.data.classes import imagenet_class_names
from cnnzoo.errors import DataError

VERSION = 1
MARKER = "SAMPLE_SET.json"
log = logging.getLogger(__name__)

# (wnid, ILSVRC class index) of Imagenette's ten classes; the shape each one is drawn as.
CLASSES = (
    ("n01440764", 0, "disc"),
    ("n02102040", 217, "square"),
    ("n02979186", 482, "triangle"),
    ("n03000684", 491, "ring"),
    ("n03028079", 497, "cross"),
    ("n03394916", 566, "stripes"),
    ("n03417042", 569, "star"),
    ("n03425413", 571, "frame"),
    ("n03445777", 574, "checker"),
    ("n03888605", 701, "half_disc"),
)
# The odd files of real ImageNet, placed at (split, class position, image index).
ODD_FILES = {("train", 0, 0): "grayscale", ("train", 1, 0): "cmyk", ("train", 2, 0): "png"}
SPLITS = {"train": 0, "val": 1}


def sample_class_names() -> list[str]:
    """Human-readable names of the sample classes, in class-index order."""
    names = imagenet_class_names()
    return [names[index] for _, index, _ in CLASSES]


def _random_colour(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(c) for c in rng.integers(0, 256, size=3))


def _polygon(cx: float, cy: float, radii: list[float], angle: float) -> list[tuple[float, float]]:
    """Vertices at equal angular steps around (cx, cy), starting at ``angle`` radians."""
    steps = np.arange(len(radii)) * 2 * np.pi / len(radii) + angle
    return [(cx + r * np.cos(a), cy + r * np.sin(a)) for r, a in zip(radii, steps, strict=True)]


def _class_colour(hue: float, rng: np.random.Generator) -> tuple[int, int, int]:
    """A colour around ``hue`` (0-1); the spread overlaps the neighbouring classes' hues."""
    h = (hue + rng.normal(0, 0.05)) % 1.0
    rgb = colorsys.hsv_to_rgb(h, rng.uniform(0.45, 1.0), rng.uniform(0.5, 1.0))
    return tuple(int(255 * c) for c in rgb)


def _draw_shape(
    draw: ImageDraw.ImageDraw, shape: str, hue: float, cx: float, cy: float, r: float, rng
) -> None:
    colour, angle = _class_colour(hue, rng), float(rng.uniform(0, 2 * np.pi))
    box = (cx - r, cy - r, cx + r, cy + r)
    if shape == "disc":
        draw.ellipse(box, fill=colour)
    elif shape == "ring":
        draw.ellipse(box, outline=colour, width=max(2, int(r / 3)))
    elif shape == "half_disc":
        start = float(rng.uniform(0, 360))
        draw.pieslice(box, start, start + 180, fill=colour)
    elif shape == "square":
        draw.polygon(_polygon(cx, cy, [r] * 4, angle), fill=colour)
    elif shape == "frame":
        draw.polygon(_polygon(cx, cy, [r] * 4, angle), outline=colour, width=max(2, int(r / 4)))
    elif shape == "triangle":
        draw.polygon(_polygon(cx, cy, [r] * 3, angle), fill=colour)
    elif shape == "star":
        draw.polygon(_polygon(cx, cy, [r, r * 0.4] * 5, angle), fill=colour)
    elif shape == "cross":
        w = max(2, int(r / 2.5))
        draw.line(_polygon(cx, cy, [r, r], angle), fill=colour, width=w)
        draw.line(_polygon(cx, cy, [r, r], angle + np.pi / 2), fill=colour, width=w)
    elif shape == "stripes":
        other = _random_colour(rng)
        for i, y in enumerate(np.linspace(cy - r, cy + r, 7)[:-1]):
            draw.rectangle((cx - r, y, cx + r, y + 2 * r / 6), fill=colour if i % 2 else other)
    elif shape == "checker":
        other, step = _random_colour(rng), 2 * r / 4
        for i in range(4):
            for j in range(4):
                x0, y0 = cx - r + i * step, cy - r + j * step
                draw.rectangle(
                    (x0, y0, x0 + step, y0 + step), fill=colour if (i + j) % 2 else other
                )
    else:
        raise ValueError(f"unknown shape {shape!r}")


def render_image(shape: str, hue: float, rng: np.random.Generator) -> Image.Image:
    """One RGB image of ``shape``: varied size and aspect ratio, noisy background, a distractor."""
    short = int(rng.integers(64, 113))
    aspect = float(rng.uniform(0.75, 1.33))
    w, h = (int(short * aspect), short) if aspect >= 1 else (short, int(short / aspect))
    base = np.array(_random_colour(rng), dtype=np.float32)
    noise = rng.normal(0, 20, size=(h, w, 3))
    image = Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    # A distractor stroke common to every class, so "anything drawn" is not the cue.
    draw.line([tuple(rng.uniform(0, [w, h])) for _ in range(3)], fill=_random_colour(rng), width=3)
    r = float(rng.uniform(0.22, 0.4)) * min(w, h)
    cx, cy = rng.uniform(r, w - r), rng.uniform(r, h - r)
    _draw_shape(draw, shape, hue, cx, cy, r, rng)
    return image


def _save(image: Image.Image, path: Path, odd: str | None) -> None:
    if odd == "grayscale":
        image.convert("L").save(path, format="JPEG", quality=90)
    elif odd == "cmyk":
        image.convert("CMYK").save(path, format="JPEG", quality=90)
    elif odd == "png":
        image.save(path, format="PNG")
    else:
        image.save(path, format="JPEG", quality=90)


def _settings(train_per_class: int, val_per_class: int, seed: int) -> dict:
    """What the marker file records, and what a cached set must match to be reused."""
    counts = {"train": train_per_class, "val": val_per_class}
    return {"version": VERSION, "seed": seed, "per_class": counts, "classes": len(CLASSES)}


def generate(root: Path, *, train_per_class: int, val_per_class: int, seed: int) -> None:
    """Write the sample set into ``root`` (which must not exist yet)."""
    settings = _settings(train_per_class, val_per_class, seed)
    for split, n in settings["per_class"].items():
        for position, (wnid, _, shape) in enumerate(CLASSES):
            folder = root / split / wnid
            folder.mkdir(parents=True)
            for i in range(n):
                rng = np.random.default_rng([seed, SPLITS[split], position, i])
                odd = ODD_FILES.get((split, position, i))
                image = render_image(shape, position / len(CLASSES), rng)
                _save(image, folder / f"{wnid}_{i}.JPEG", odd)
    (root / MARKER).write_text(json.dumps(settings, indent=2) + "\n")


def ensure_sample_dataset(
    root: str | os.PathLike, *, train_per_class: int = 100, val_per_class: int = 30, seed: int = 0
) -> Path:
    """Generate the sample set at ``root`` unless a complete one with these settings is there.

    Generation goes to a temporary sibling folder that is renamed into place, so an interrupted
    run never leaves a partial set and concurrent processes (DDP ranks) do not clash.
    """
    root = Path(root).expanduser()
    wanted = _settings(train_per_class, val_per_class, seed)
    if _marker(root) == wanted:
        return root
    if root.exists():
        raise DataError(
            f"{root} exists but is not a complete cnnzoo sample set with settings {wanted} "
            f"(found {_marker(root) or 'no ' + MARKER}). It is a cache folder: delete it to "
            "regenerate, or point data.root (or paths.cache_dir) somewhere else."
        )
    build_in_place(
        root,
        partial(generate, train_per_class=train_per_class, val_per_class=val_per_class, seed=seed),
        lambda: _marker(root) == wanted,
    )
    return root


def build_in_place(root: Path, build: Callable[[Path], object], done: Callable[[], bool]) -> None:
    """``build(tmp)`` in a temporary sibling folder, then renamed to ``root``: an interrupted
    build never leaves a partial folder, and when several processes (DDP ranks) build at once
    the first rename wins and the others, finding ``done()``, use it. The builder holds a lock
    on its folder; a killed one's folder (SIGKILL, and SIGTERM under Python's default handler,
    skip the clean-up) is removed by the next build, once nobody holds its lock."""
    try:
        root.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    except OSError as e:  # (a file in the way, a read-only or system folder: a traceback)
        raise DataError(
            f"cannot make {root.name} in {root.parent} ({type(e).__name__}: {e.strerror}): set "
            "paths.cache_dir (or the CNNZOO_CACHE environment variable) to a folder you can write."
        ) from None
    lock = os.open(tmp, os.O_RDONLY)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)  # (new: nobody else holds it)
        _remove_abandoned(root, keep=tmp)
        build(tmp)
        try:
            tmp.rename(root)
        except OSError:
            if not done():  # not another process finishing the same job first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        os.close(lock)


ABANDONED_AFTER_S = 60  # (a folder younger than this may not be locked by its builder yet)


def _remove_abandoned(root: Path, keep: Path) -> None:
    """Remove the temporary build folders of ``root`` whose builders are gone: unlocked, and
    older than a minute."""
    for folder in root.parent.glob(f".{glob.escape(root.name)}.*"):
        if folder == keep or not folder.is_dir():
            continue
        try:
            if time.time() - folder.stat().st_mtime < ABANDONED_AFTER_S:
                continue
            fd = os.open(folder, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue  # its builder is still at work
        finally:
            os.close(fd)  # (closing drops the lock if it was taken)
        log.info("removing %s, left by a build that was killed", folder)
        shutil.rmtree(folder, ignore_errors=True)


def _marker(root: Path) -> dict | None:
    try:
        return json.loads((root / MARKER).read_text())
    except (OSError, ValueError):
        return None
