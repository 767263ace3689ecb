"""``data.loader=dali``: NVIDIA DALI decodes and augments the images, on the GPU.

The CPU only reads files; DALI decodes them with nvJPEG ("mixed" device) and crops, resizes,
flips and normalises on the GPU in one fused pipeline, as NVIDIA's and MLPerf's ImageNet
trainers do. On a machine without a CUDA GPU the same pipeline runs on DALI's CPU backend.

What stays as with the worker pipeline (``data.loader=workers``), because the same parts decide
it: the files, labels and class order (the same checked index), the global batch, each rank's
share of every epoch and its order (``SeededSampler``: the seed and the epoch decide it; val and
test give every image to exactly one rank, nothing padded, so metrics count each image once),
the bad-file policy (a file DALI cannot decode is named, or with ``on_bad_file=skip`` left out
and listed), and the position in the epoch saved in checkpoints.

What differs: the random crop, resize and flip draws come from DALI's generators, seeded from
(seed, epoch, rank, first batch of the pass). A resume at an epoch boundary therefore repeats
exactly what an uninterrupted run does; a resume mid-epoch continues with the very images of
the interrupted epoch in the same order, with other augmentation draws. DALI resizes with its
own antialiased filter, so pixels differ slightly from torchvision's.

Recipes: ``rrc`` (``decoders.image_random_crop``, fused with decoding), ``alexnet`` and ``vgg``
(resize, random crop), ``hflip``; AlexNet's ``lighting`` runs as a torch op on the device batch
(``lighting_batch``); mixup/cutmix as with workers. Colour jitter, auto-augment and random
erasing have no DALI recipe here: the DataModule refuses them with ``data.loader=dali``.
Evaluation: ``center``, ``flip`` and ``ten`` crops, as (N, V, 3, H, W) for several views.
"""

import ctypes
import itertools
import logging
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch

from cnnzoo.data.dali_graph import Recipe, graph
from cnnzoo.data.images import BadImageError, decode_bytes, skip_or_raise
from cnnzoo.data.index import SplitIndex
from cnnzoo.data.loading import SeededSampler, sample_seed
from cnnzoo.errors import ConfigError, DataError

log = logging.getLogger(__name__)

INSTALL = "pip install -e '.[dali]' (NVIDIA's nvidia-dali-cuda130 wheel)"
# Options of the worker pipeline without a DALI recipe here, with the value that means "off".
UNSUPPORTED = {"color_jitter": 0.0, "auto_augment": None, "random_erasing": 0.0}


def import_dali():
    """The ``nvidia.dali`` package, or a ConfigError naming the extra to install."""
    try:
        import nvidia.dali as dali
        import nvidia.dali.plugin.pytorch  # noqa: F401  (what _run needs)
    except ImportError as e:
        raise ConfigError(
            f"data.loader=dali needs NVIDIA DALI, which is not installed ({e}): {INSTALL}, "
            "or use data.loader=workers."
        ) from None
    return dali


def check_options(options: dict) -> None:
    """Refuse, naming them, the train options the DALI pipeline does not implement."""
    on = [f"data.{k}={options[k]!r}" for k, off in UNSUPPORTED.items() if options[k] != off]
    if on:
        raise ConfigError(
            f"{', '.join(on)}: not available with data.loader=dali (DALI runs rrc, alexnet, vgg "
            "and center crops, hflip, lighting, mixup and cutmix). Turn them off, or use "
            "data.loader=workers."
        )


def dali_device_id(setting: str, device: torch.device) -> int | None:
    """The CUDA device DALI decodes on (``mixed``), or None for DALI's CPU backend."""
    if setting == "cpu":
        return None
    if device.type == "cuda":
        return device.index if device.index is not None else torch.cuda.current_device()
    if setting == "gpu":
        raise ConfigError(
            f"data.dali_device=gpu decodes on a CUDA GPU, but this run trains on {device.type}. "
            "Use trainer=gpu on a machine with one, or data.dali_device=auto (DALI's CPU "
            "backend off the GPU)."
        )
    return None


@dataclass(frozen=True)
class Tuning:
    """How the DALI pipeline runs, not what it computes: the same images come out either way.

    ``read_ahead``: batches whose files are being read while DALI works; ``queue``: DALI's
    ``prefetch_queue_depth``; ``decoder``: keyword arguments for DALI's image decoders (their
    nvJPEG buffers, ``hw_decoder_load``, ``affine``). ``benchmarks/gpu_check.py --dali-variants``
    measures alternatives."""

    read_ahead: int = 1
    queue: int = 2
    decoder: dict = field(default_factory=dict)


TUNING = Tuning()  # what every DaliLoader uses


@dataclass(frozen=True)
class Encoded:
    """One image for DALI: ``name`` says where it came from (and keys the skip list)."""

    name: str
    label: int
    read: Callable[[], np.ndarray]  # its encoded bytes


class FolderFeed:
    """A rank's batches of files of a ``SplitIndex`` in a ``SeededSampler``'s order, and the
    position in the epoch (as ``ResumableDataLoader`` keeps it)."""

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
        return Encoded(path, int(self.index.targets[i]), lambda: np.fromfile(path, np.uint8))

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.sampler.epoch, "batches": self.consumed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.sampler.resume_at(state["epoch"], state["batches"] * self.batch_size)


class DaliLoader:
    """Batches of (images, labels) decoded and augmented by DALI, for one rank and split.

    An iterable like a DataLoader: ``len`` batches per epoch, ``sampler`` (Lightning sets its
    epoch), and the position in the epoch through ``state_dict``/``load_state_dict`` (saved in
    Lightning's checkpoints), all the ``feed``'s, which says which images each batch holds
    (``FolderFeed``; ``cnnzoo.data.shards.ShardFeed``). Each pass builds its own pipeline; the
    images come out on the decoding GPU (or the CPU).

    Args:
        device_id: the CUDA device to decode on, or None for DALI's CPU backend.
        num_threads: DALI's CPU threads (and the file readers').
        on_bad_file: ``error``: a file DALI cannot decode stops the run, naming it; ``skip``:
            it is left out of its batch and appended to ``skip_log``.
        seed: with the epoch, the rank and the batch a pass starts at, seeds DALI's draws.
    """

    def __init__(
        self,
        feed,
        recipe: Recipe,
        *,
        device_id: int | None,
        seed: int,
        rank: int = 0,
        num_threads: int = 4,
        on_bad_file: str = "error",
        skip_log=None,
        remedy: str = "",
    ) -> None:
        self.feed, self.recipe = feed, recipe
        self.device_id, self.seed, self.rank = device_id, seed, rank
        self.num_threads = max(1, num_threads)
        self.on_bad_file, self.skip_log, self.remedy = on_bad_file, skip_log, remedy
        self.sampler = getattr(feed, "sampler", None)  # Lightning sets its epoch
        self.batch_sampler = None  # (what Lightning asks of a DataLoader-like iterable)
        self.skipped: set[str] = set()  # names left out (on_bad_file=skip)

    def __len__(self) -> int:
        return len(self.feed)

    def state_dict(self) -> dict[str, int]:
        return self.feed.state_dict()

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.feed.load_state_dict(state)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        batches = self.feed.batches()  # (sets the feed's position: a resume's skip)
        epoch, first, done = self.feed.epoch, self.feed.consumed, 0
        pending: deque[list[Encoded]] = deque()  # given to DALI, not yet handed out
        ahead: deque[tuple[list[Encoded], list[Future]]] = deque()  # being read, not yet given
        while True:
            seed = sample_seed(self.seed, epoch, -2 - self.rank) + first + done
            source = itertools.chain(list(pending), [batch for batch, _ in ahead], batches)
            pending.clear()
            ahead.clear()
            try:
                for images, labels in self._run(source, pending, ahead, seed % (2**31)):
                    pending.popleft()
                    done += 1
                    self.feed.consumed += 1
                    yield images, labels
                return
            except DataError:
                raise
            except Exception as e:  # DALI's error for a file it cannot decode names no file
                self._handle_failure(e, list(itertools.chain.from_iterable(pending)))
                # then a new pipeline goes on with the batches not handed out

    def _run(self, batches: Iterator[list[Encoded]], pending: deque, ahead: deque, seed: int):
        """Run one pipeline over ``batches``; ``pending`` collects the batches given to it,
        ``ahead`` the one being read before it is given (with its reads)."""
        from nvidia.dali.plugin.pytorch import feed_ndarray

        pipe = self._pipeline(self._feed(batches, pending, ahead), seed)
        failed = False
        try:
            pipe.build()
            gpu = self.device_id is not None
            stream = torch.cuda.current_stream(self.device_id) if gpu else None
            while True:
                try:
                    images, labels = pipe.run()
                except StopIteration:
                    break
                out = _to_torch(images, self.recipe.normalize, feed_ndarray, stream, self.device_id)
                yield out, _labels(labels)
        except Exception:
            failed = True
            _park(pipe)
            raise
        finally:  # done, or the consumer stopped early (limit_*_batches): its threads stop now
            if not failed:
                pipe._shutdown()

    def _feed(self, batches: Iterator[list[Encoded]], pending: deque, ahead: deque):
        """The encoded images and labels of each batch, read by a pool of threads while DALI
        works on the batch before (the training loop's thread only hands them over); files
        that cannot be read, or that DALI could not decode before, under the bad-file policy."""
        with ThreadPoolExecutor(self.num_threads) as pool:
            for batch in batches:
                ahead.append((batch, [pool.submit(self._read, item) for item in batch]))
                if len(ahead) > TUNING.read_ahead:
                    yield self._give(*ahead.popleft(), pending)
            while ahead:
                yield self._give(*ahead.popleft(), pending)

    def _give(self, batch: list[Encoded], reads: list[Future], pending: deque) -> tuple:
        kept = [(item, data) for item, read in zip(batch, reads, strict=True)
                if (data := read.result()) is not None]  # fmt: skip
        if not kept:
            raise DataError(
                f"all {len(batch)} images of a batch were unreadable (e.g. "
                f"{batch[0].name}); {self.remedy}"
            )
        pending.append([item for item, _ in kept])
        labels = [np.array([item.label], dtype=np.int64) for item, _ in kept]
        return [data for _, data in kept], labels

    def _read(self, item: Encoded) -> np.ndarray | None:
        """The image's bytes as DALI may take them; None for one left out (``skip``).

        DALI (2.4) crashes the process shutting down a pipeline whose JPEG parser met a broken
        header, so only whole-looking JPEGs and PNGs go to it as they are; anything else is
        decoded here first (a bad file under the policy; a GIF, BMP or a JPEG without its end
        marker that decodes, as a lossless PNG of what the worker pipeline would see)."""
        if item.name in self.skipped:
            return None
        try:
            data = item.read()
            if looks_whole(data):
                return data
            image = decode_bytes(data.tobytes(), item.name, "torchvision")
        except OSError as e:
            self._bad(item, BadImageError(item.name, f"{type(e).__name__}: {e}"))
            return None
        except BadImageError as e:
            self._bad(item, e)
            return None
        return as_png(image)

    def _bad(self, item: Encoded, error: BadImageError) -> None:
        skip_or_raise(error, self.on_bad_file, self.skip_log, self.remedy)
        self.skipped.add(item.name)
        log.warning("skipped %s (%s)", error.path, error.reason)

    def _pipeline(self, source, seed: int):
        dali = import_dali()
        from nvidia.dali import fn, types

        decode_device = "cpu" if self.device_id is None else "mixed"

        @dali.pipeline_def(
            batch_size=self.feed.batch_size,
            num_threads=self.num_threads,
            device_id=self.device_id,
            seed=seed,
            prefetch_queue_depth=TUNING.queue,
        )
        def pipeline():
            encoded, labels = fn.external_source(
                source=source, num_outputs=2, batch=True, dtype=[types.UINT8, types.INT64]
            )
            return graph(self.recipe, encoded, decode_device, TUNING.decoder), labels

        return pipeline()

    def _handle_failure(self, error: Exception, suspects: list[Encoded]) -> None:
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
                bad.append((item, BadImageError(item.name, f"{type(e).__name__}: {e}")))
        if not bad:
            names = [item.name for item in suspects]
            raise DataError(
                f"DALI failed on a batch of {names[:3]}... ({len(names)} images; "
                f"{' '.join(str(error).split())[:300]}). Check them with `python -m "
                "cnnzoo.data.verify`, or use data.loader=workers."
            ) from None
        for item, e in bad:
            self._bad(item, e)


JPEG_START, JPEG_END = b"\xff\xd8\xff", b"\xff\xd9"
PNG_START, PNG_END = b"\x89PNG\r\n\x1a\n", b"IEND"


def looks_whole(data: np.ndarray) -> bool:
    """Whether the bytes are a JPEG or PNG with its start and end markers (a truncated file, an
    HTML page or an empty file is not)."""
    head, tail = data[:8].tobytes(), data[-64:].tobytes()
    if head.startswith(JPEG_START):
        return JPEG_END in tail
    return head == PNG_START and PNG_END in tail


def as_png(image) -> np.ndarray:
    """A decoded image (uint8 tensor or PIL image) as PNG bytes for DALI."""
    from torchvision.io import encode_png
    from torchvision.transforms.v2.functional import pil_to_tensor

    tensor = image if isinstance(image, torch.Tensor) else pil_to_tensor(image)
    return encode_png(tensor).numpy()


_PARKED: list = []  # failed DALI pipelines, never shut down (see ``_park``)


def _park(pipe) -> None:
    """Keep a failed pipeline's native part alive for the life of the process: DALI (2.4) can
    crash the process shutting down a pipeline whose decoder failed, at once or at exit. Its
    threads sit idle; a failure is rare (files that look whole but are not)."""
    native, pipe._pipe = pipe._pipe, None
    if native is not None:
        _PARKED.append(native)
        ctypes.pythonapi.Py_IncRef(ctypes.py_object(native))  # not freed even at exit


def _to_torch(images, normalized: bool, feed_ndarray, stream, device_id) -> torch.Tensor:
    """A DALI batch (on GPU ``device_id``, or the CPU) copied into a new torch tensor there."""
    images = images.as_tensor()
    device = "cpu" if device_id is None else torch.device("cuda", device_id)
    dtype = torch.float32 if normalized else torch.uint8
    out = torch.empty(images.shape(), dtype=dtype, device=device)
    feed_ndarray(images, out, cuda_stream=stream)
    return out


def _labels(labels) -> torch.Tensor:
    return torch.from_numpy(np.array(labels.as_tensor())).view(-1)


def lighting_batch(images: torch.Tensor, std: float) -> torch.Tensor:
    """AlexNet's PCA lighting noise on a batch of (N, 3, H, W) floats in [0, 1], one draw per
    image (as ``transforms.Lighting`` does per image in the workers)."""
    from cnnzoo.data.transforms import PCA_EIGVAL, PCA_EIGVEC

    eigval = torch.tensor(PCA_EIGVAL, device=images.device)
    eigvec = torch.tensor(PCA_EIGVEC, device=images.device)
    alpha = torch.randn(images.shape[0], 3, device=images.device) * std
    shift = (alpha * eigval) @ eigvec.T  # (N, 3): eigvec @ (alpha * eigval) per image
    return images + shift.view(-1, 3, 1, 1).to(images.dtype)
