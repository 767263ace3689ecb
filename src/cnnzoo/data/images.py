"""Reading images robustly, and the dataset over a ``SplitIndex``.

Real ImageNet holds a PNG named ``.JPEG``, CMYK JPEGs and grayscale JPEGs: PIL opens each by its
content, not its name, and ``convert("RGB")`` gives three channels. A truncated or unreadable
file is an error naming the file, or, with ``on_bad_file="skip"``, is left out of its batch and
recorded so the epoch's end can list it.
"""

import contextlib
import functools
import io
import os
import warnings
from pathlib import Path

import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch.utils.data import Dataset, default_collate

from cnnzoo.data.index import SplitIndex
from cnnzoo.data.loading import seeded
from cnnzoo.data.options import DEFAULT_DECODER
from cnnzoo.errors import DataError


class BadImageError(DataError):
    def __init__(self, path: str, reason: str) -> None:
        path = printable(path)
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason

    @classmethod
    def raised(cls, path: str, error: BaseException) -> "BadImageError":
        """``path`` named with what reading it raised (an OSError, PIL's SyntaxError, ...)."""
        return cls(path, f"{type(error).__name__}: {error}")


def printable(path: str) -> str:
    """A path as text any log, JSON file or W&B takes: a name's bytes that are not UTF-8
    (``os.fsdecode``'s surrogates) written as ``\\xff``."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def load_rgb(path: str) -> Image.Image:
    """The image at ``path`` fully decoded, as RGB; ``BadImageError`` with the reason if not."""
    return _pil_rgb(path, path)


def _first_bytes(source) -> bytes:
    if isinstance(source, io.BytesIO):
        return source.getvalue()[:16]
    with open(source, "rb") as f:
        return f.read(16)


# ISO base media files (HEIC/HEIF: an iPhone's photos by default; AVIF): "....ftyp<brand>"
_HEIF_BRANDS = (b"heic", b"heix", b"hevc", b"heim", b"heis", b"mif1", b"msf1", b"avif", b"avis")


def _unreadable_kind(start: bytes) -> str:
    """Why PIL found no image in a file that begins with ``start``."""
    if start[4:8] == b"ftyp" and start[8:12] in _HEIF_BRANDS:
        brand = start[8:12].decode()
        return (
            f"a HEIC/HEIF or AVIF image (brand {brand!r}) that neither TorchCodec nor PIL could "
            "read here: install pillow-heif (pip install pillow-heif; make install does), or "
            "convert it to JPEG"
        )
    return f"not an image; it begins {start!r}"


with contextlib.suppress(ImportError):  # HEIC/HEIF photos (an iPhone's) for PIL: libheif
    from pillow_heif import register_heif_opener

    register_heif_opener()


def _pil_rgb(source, name: str) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PIL's "Corrupt EXIF data" and friends
            with Image.open(source) as image:
                image.load()  # decodes the whole file: a broken one fails here
                upright(image)
                if image.mode.startswith("I;16"):  # 16-bit grey (PNG, TIFF): PIL's convert
                    image = image.point(lambda v: v * (1 / 256)).convert("L")  # clips to 255
                return image.convert("RGB")
    except UnidentifiedImageError:  # (its message names a BytesIO object, not the file)
        raise BadImageError(name, _unreadable_kind(_first_bytes(source))) from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise BadImageError.raised(name, e) from None


def upright(image: Image.Image) -> None:
    """Turn a loaded photo by its EXIF Orientation tag (a phone held upright stores its sensor's
    landscape pixels and "rotate 90"), as image viewers, torchvision's
    ``apply_exif_orientation`` and DALI's decoder (``adjust_orientation``, its default) do. An
    EXIF block PIL cannot parse leaves the pixels as stored: it is metadata, not the image."""
    with contextlib.suppress(Exception):  # malformed EXIF raises anything, struct to KeyError
        ImageOps.exif_transpose(image, in_place=True)


def load_image(path: str, decoder: str = DEFAULT_DECODER):
    """The decoded image as the transforms take it: with ``torchcodec``, a uint8 (3, H, W)
    tensor from TorchCodec's ``decode_image`` (JPEG, PNG, WebP, GIF, AVIF, HEIC); with
    ``torchvision``, from ``torchvision.io.decode_image`` (JPEGs only; deprecated in
    torchvision 0.29); each falls back to PIL for what it cannot read (1.5x to 1.9x the images/s
    of the PIL path per worker, BENCHMARKS.md); with ``pil``, an RGB PIL image. Unreadable:
    ``BadImageError``."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise BadImageError.raised(path, e) from None
    return decode_bytes(data, path, decoder)


JPEG_MAGIC = b"\xff\xd8\xff"


def decode_bytes(data: bytes, name: str, decoder: str = DEFAULT_DECODER):
    """``load_image`` for an image already in memory (a file's bytes, a sample of a shard);
    ``name`` says where it came from in a ``BadImageError``. With ``torchvision`` only JPEGs
    (by their first bytes) go to torchvision's decoder; its PNG decoder kills the process on
    a PNG whose image data ends early (libpng's error, then a segmentation fault), so PNGs and
    every other format are PIL's, which raises instead (and gives a uint8 tensor too)."""
    decoder = decoder_in_use(decoder)
    if decoder == "torchcodec" and (image := _torchcodec_rgb(data)) is not None:
        return image
    if decoder == "torchvision" and data[:3] == JPEG_MAGIC:
        try:
            with warnings.catch_warnings():
                # torchvision 0.29 deprecates its decoders for TorchCodec's (see the note in
                # BENCHMARKS.md); when they are gone this falls back to PIL.
                warnings.simplefilter("ignore", DeprecationWarning)
                from torchvision.io import ImageReadMode, decode_image

                buffer = torch.frombuffer(bytearray(data), dtype=torch.uint8)
                return decode_image(buffer, mode=ImageReadMode.RGB, apply_exif_orientation=True)
        except (ImportError, RuntimeError, ValueError):
            pass  # PIL decides (and names the reason when it cannot read it either)
    image = _pil_rgb(io.BytesIO(data), name)
    if decoder != "pil":  # the same type whichever library decoded it
        from torchvision.transforms.v2.functional import pil_to_tensor

        return pil_to_tensor(image)
    return image


def _torchcodec_rgb(data: bytes) -> torch.Tensor | None:
    """TorchCodec's RGB decode of ``data`` (upright by its EXIF Orientation, as TorchCodec
    turns JPEGs itself), the first frame of an animation (as PIL reads one); None when it
    cannot read it (not installed, a format it lacks, a broken file: PIL decides and names the
    reason) and for 16-bit PNGs, which PIL's conversion keeps the same whichever decoder is
    chosen (TorchCodec rounds where PIL truncates). A truncated PNG raises here, where
    torchvision's PNG decoder killed the process."""
    if data[:8] == PNG_SIGNATURE and data[24:25] == b"\x10":  # (IHDR's bit depth)
        return None
    from torchcodec.decoders import decode_image

    try:
        image = decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode="RGB")
    except (RuntimeError, ValueError):
        return None
    # (its pixels stay in the decoder's (H, W, C) memory: the transforms read that layout
    # faster than a copy into (C, H, W) costs, and collating makes the batch contiguous)
    return image[0] if image.ndim == 4 else image


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@functools.cache
def torchcodec_loads() -> bool:
    """Whether TorchCodec's image decoders import here: its native library is built for one
    torch release (0.17 for torch 2.14), so another torch (a cluster's image) may not load it;
    ``data.decoder=torchcodec`` then decodes with torchvision's decoder, as before."""
    try:
        from torchcodec.decoders import decode_image  # noqa: F401
    except Exception:  # ImportError, OSError (undefined symbols), RuntimeError
        return False
    return True


def decoder_in_use(decoder: str) -> str:
    """The decoder that decodes for ``data.decoder=decoder``: torchvision's where TorchCodec's
    library does not load (``torchcodec_loads``)."""
    return "torchvision" if decoder == "torchcodec" and not torchcodec_loads() else decoder


def skip_or_raise(error: BadImageError, on_bad_file: str, skip_log: Path | None, remedy: str):
    """The ``on_bad_file`` policy for an unreadable image: ``"error"`` raises a DataError naming
    it and ``remedy``; ``"skip"`` appends it to ``skip_log`` (the caller leaves it out)."""
    if on_bad_file == "error":
        raise DataError(f"cannot read image {error.path} ({error.reason}). {remedy}") from None
    record_skipped(skip_log, error.path, error.reason)


class IndexedImages(Dataset):
    """The images of a ``SplitIndex``, keyed by ``(index, sample_seed)`` (``SeededSampler``):
    each image's random transforms draw from a private RNG seeded with its sample seed.

    Args:
        decoder: ``torchvision`` (uint8 tensors) or ``pil`` (PIL images); see ``load_image``.
        on_bad_file: ``"error"``: an unreadable file stops the run, naming the file;
            ``"skip"``: the item is ``None`` (``skip_bad_collate`` drops it) and the file and
            reason are appended to ``skip_log``.
    """

    def __init__(
        self,
        index: SplitIndex,
        transform,
        on_bad_file: str = "error",
        skip_log: Path | None = None,
        decoder: str = DEFAULT_DECODER,
    ) -> None:
        self.decoder = decoder
        if on_bad_file == "skip" and skip_log is None:
            raise ValueError("on_bad_file='skip' needs a skip_log file")
        self.index, self.transform = index, transform
        self.on_bad_file, self.skip_log = on_bad_file, skip_log

    @property
    def classes(self) -> tuple[str, ...]:
        return self.index.classes

    def __len__(self) -> int:
        return len(self.index)

    def remedy(self) -> str:
        """What to do about an unreadable file of this split."""
        return (
            f"List every unreadable file with `python -m cnnzoo.data.verify "
            f"{self.index.folder}`, or set data.on_bad_file=skip to leave such files out "
            "(they are listed at the end of each epoch)."
        )

    def __getitem__(self, key: tuple[int, int] | int) -> tuple[torch.Tensor, int] | None:
        index, seed = key if isinstance(key, tuple) else (key, key)
        path = self.index.path(index)
        try:
            image = load_image(path, self.decoder)
        except BadImageError as e:
            skip_or_raise(e, self.on_bad_file, self.skip_log, self.remedy())
            return None
        with seeded(seed):
            return self.transform(image), int(self.index.targets[index])


def skip_bad_collate(items: list):
    """``default_collate`` of the items that are not ``None`` (skipped unreadable files)."""
    kept = [item for item in items if item is not None]
    if not kept:
        raise DataError(
            f"all {len(items)} images of a batch were unreadable; see the skipped files listed "
            "by `python -m cnnzoo.data.verify ROOT`."
        )
    return default_collate(kept)


def record_skipped(log: Path, path: str, reason: str) -> None:
    """Append one line; O_APPEND keeps lines from several DataLoader workers whole."""
    line = f"{path}\t{' '.join(reason.split())}\n".encode()  # (a BadImageError's: printable)
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def read_skipped(log: Path | None, seen: int = 0) -> list[tuple[str, str]]:
    """(path, reason) of the files skipped so far, after the first ``seen``."""
    if log is None or not log.is_file():
        return []
    lines = log.read_text().splitlines()[seen:]
    return [tuple(line.split("\t", 1)) for line in lines]
