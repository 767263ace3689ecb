"""What ``data.loader=dali`` gives DALI (``cnnzoo.data.dali``): each batch's images, checked
under the bad-file policy.

Files on disk go to DALI as their paths, and DALI's own threads read them (``fn.io.file.read``):
Python only looks at each file's first and last bytes once per run. Reading the files in
Python held the interpreter that the training loop needs to launch its GPU work, and supplied
at most about 4,600 images/s on an H200 machine's 16 cores (DALI's own reading: 20,000).
Images that come as bytes (``cnnzoo.data.shards``) go to DALI as bytes.

DALI (2.4) crashes the process shutting down a pipeline whose JPEG parser met a broken header,
so only whole-looking JPEGs and PNGs go to it as they are; anything else is decoded here first
(a bad file under the policy; a GIF, BMP or a JPEG without its end marker that decodes, as a
lossless PNG of what the worker pipeline would see).
"""

import logging
import os
import shutil
import tempfile
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from cnnzoo.data.images import BadImageError, decode_bytes, printable, skip_or_raise
from cnnzoo.data.index import SplitIndex
from cnnzoo.data.loading import SeededSampler
from cnnzoo.errors import DataError

log = logging.getLogger(__name__)

JPEG_START, JPEG_END = b"\xff\xd8\xff", b"\xff\xd9"
PNG_START, PNG_END = b"\x89PNG\r\n\x1a\n", b"IEND"
HEAD, TAIL = 8, 64  # the bytes ``looks_whole`` looks at


@dataclass(frozen=True)
class Encoded:
    """One image for DALI: ``name`` says where it came from (and keys the skip list); ``path``:
    a file DALI may read itself."""

    name: str
    label: int
    read: Callable[[], np.ndarray]  # its encoded bytes
    path: str | None = None


class FolderFeed:
    """A rank's batches of files of a ``SplitIndex`` in a ``SeededSampler``'s order, and the
    position in the epoch (as ``ResumableDataLoader`` keeps it)."""

    gives_paths = True  # each image a file DALI reads itself

    def __init__(
        self, index: SplitIndex, sampler: SeededSampler, batch_size: int, drop_last: bool
    ) -> None:
        self.index, self.sampler = index, sampler
        self.batch_size, self.drop_last = batch_size, drop_last
        self.consumed = 0  # batches of the current pass handed out

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    @property
    def epoch(self) -> int:
        return self.sampler.epoch

    def batches(self) -> Iterator[list[Encoded]]:
        """This pass's batches (after a resume's skip); ``consumed`` is set at once."""
        self.consumed = self.sampler.pending_skip() // self.batch_size
        order = [index for index, _ in self.sampler]
        size = self.batch_size
        starts = range(0, len(order) - size + 1 if self.drop_last else len(order), size)
        return ([self._item(i) for i in order[start : start + size]] for start in starts)

    def _item(self, i: int) -> Encoded:
        path = self.index.path(i)
        return Encoded(path, int(self.index.targets[i]), lambda: np.fromfile(path, np.uint8), path)

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.sampler.epoch, "batches": self.consumed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.sampler.resume_at(state["epoch"], state["batches"] * self.batch_size)


class Inputs:
    """Each batch's images as DALI takes them, under the bad-file policy: ``on_bad_file=error``
    stops the run naming the file; ``skip`` leaves it out of its batch from now on and appends
    it to ``skip_log``."""

    def __init__(self, on_bad_file: str = "error", skip_log=None, remedy: str = "") -> None:
        self.on_bad_file, self.skip_log, self.remedy = on_bad_file, skip_log, remedy
        self.skipped: set[str] = set()  # names left out (on_bad_file=skip)
        self.converted: dict[str, str] = {}  # name: the PNG file DALI reads instead
        self._folder: str | None = None  # (made when first needed, removed with this object)

    def prepare(self, batch: list[Encoded]) -> list[tuple[Encoded, np.ndarray]]:
        """The images of ``batch`` kept, each with what DALI is given: its path (as bytes) for
        a file, else its bytes."""
        return [(item, data) for item in batch if (data := self._prepare(item)) is not None]

    def _prepare(self, item: Encoded) -> np.ndarray | None:
        if item.name in self.skipped:
            return None
        if item.name in self.converted:
            return encoded_path(self.converted[item.name])
        try:
            if item.path is not None:
                if looks_whole(*peek(item.path)):
                    return encoded_path(item.path)
                data = item.read()
            else:
                data = item.read()
                if looks_whole(data[:HEAD].tobytes(), data[-TAIL:].tobytes()):
                    return data
            image = decode_bytes(data.tobytes(), item.name, "torchvision")
        except OSError as e:
            self.bad(item, BadImageError.raised(item.name, e))
            return None
        except BadImageError as e:
            self.bad(item, e)
            return None
        png = as_png(image)
        return png if item.path is None else encoded_path(self._convert(item.name, png))

    def _convert(self, name: str, png: np.ndarray) -> str:
        """A PNG file of ``png`` for DALI to read instead of ``name``'s file."""
        if self._folder is None:
            self._folder = tempfile.mkdtemp(prefix="cnnzoo-dali-")
            weakref.finalize(self, shutil.rmtree, self._folder, True)
        fd, path = tempfile.mkstemp(suffix=".png", dir=self._folder)  # (a name of its own)
        with os.fdopen(fd, "wb") as f:
            f.write(png.tobytes())
        self.converted[name] = path
        return path

    def bad(self, item: Encoded, error: BadImageError) -> None:
        skip_or_raise(error, self.on_bad_file, self.skip_log, self.remedy)
        self.skipped.add(item.name)
        log.warning("skipped %s (%s)", error.path, error.reason)

    def find_bad(self, error: Exception, suspects: list[Encoded]) -> None:
        """Find the images DALI could not decode among those it was given: refuse them
        (``error``) naming them, or leave them out from now on (``skip``). None found: the
        DALI error, with some of those files to check."""
        bad = []
        for item in suspects:
            try:
                decode_bytes(item.read().tobytes(), item.name, "torchvision")
            except BadImageError as e:
                bad.append((item, e))
            except OSError as e:
                bad.append((item, BadImageError.raised(item.name, e)))
        if not bad:
            names = [printable(item.name) for item in suspects]
            raise DataError(
                f"DALI failed on a batch of {names[:3]}... ({len(names)} images; "
                f"{' '.join(str(error).split())[:300]}). Check them with `python -m "
                "cnnzoo.data.verify`, or use data.loader=workers."
            ) from None
        for item, e in bad:
            self.bad(item, e)


def peek(path: str) -> tuple[bytes, bytes]:
    """The first ``HEAD`` and last ``TAIL`` bytes of a file."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        return os.pread(fd, HEAD, 0), os.pread(fd, TAIL, max(0, size - TAIL))
    finally:
        os.close(fd)


def looks_whole(head: bytes, tail: bytes) -> bool:
    """Whether a file that starts with ``head`` and ends with ``tail`` is a JPEG or PNG with its
    start and end markers (a truncated file, an HTML page or an empty file is not)."""
    if head.startswith(JPEG_START):
        return JPEG_END in tail
    return head == PNG_START and PNG_END in tail


def encoded_path(path: str) -> np.ndarray:
    """A path as ``fn.io.file.read`` takes it."""
    return np.frombuffer(os.fsencode(path), dtype=np.uint8)


def as_png(image) -> np.ndarray:
    """A decoded image (uint8 tensor or PIL image) as PNG bytes for DALI."""
    from torchvision.io import encode_png
    from torchvision.transforms.v2.functional import pil_to_tensor

    tensor = image if isinstance(image, torch.Tensor) else pil_to_tensor(image)
    return encode_png(tensor).numpy()
