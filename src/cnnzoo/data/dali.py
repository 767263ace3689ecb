"""``data.loader=dali``: NVIDIA DALI decodes and augments the images, on the GPU.

DALI's CPU threads read the files (``cnnzoo.data.dali_feed`` gives it their paths, checked);
DALI decodes them with nvJPEG ("mixed" device) and crops, resizes, flips and normalises on the
GPU in one fused pipeline, as NVIDIA's and MLPerf's ImageNet trainers do. On a machine
without a CUDA GPU the same pipeline runs on DALI's CPU backend.

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
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch

from cnnzoo.data.dali_feed import Encoded, Inputs
from cnnzoo.data.dali_graph import Recipe, graph
from cnnzoo.data.loading import sample_seed
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

    ``read_ahead``: batches being prepared (``dali_feed.Inputs``) while DALI works; ``queue``:
    DALI's ``prefetch_queue_depth``; ``decoder``: keyword arguments for DALI's image decoders
    (their nvJPEG buffers, ``hw_decoder_load``, ``affine``); ``stream``: a GPU batch is handed
    out on the training loop's CUDA stream (``pipe.run(stream)``: the loop's thread goes on
    while DALI finishes it, and the stream waits) instead of when DALI has finished it (DALI's
    default, host-synchronous). ``benchmarks/gpu_check.py --dali-variants`` and
    ``--dali-tuning`` measure alternatives (on an H200, 2026-12-04: ``hw_decoder_load=1.0``
    supplied 21% more than DALI's default 0.65 alone, 2% more in training, and is a setting,
    ``data.dali_hw_decoder_load``; the others were within noise; ``stream`` and ``queue`` in
    training are not measured yet: BENCHMARKS.md, "Third run")."""

    read_ahead: int = 1
    queue: int = 2
    decoder: dict = field(default_factory=dict)
    stream: bool = False


TUNING = Tuning()  # what every DaliLoader uses


class DaliLoader:
    """Batches of (images, labels) decoded and augmented by DALI, for one rank and split.

    An iterable like a DataLoader: ``len`` batches per epoch, ``sampler`` (Lightning sets its
    epoch), and the position in the epoch through ``state_dict``/``load_state_dict`` (saved in
    Lightning's checkpoints), all the ``feed``'s, which says which images each batch holds
    (``cnnzoo.data.dali_feed.FolderFeed``, ``cnnzoo.data.shards.ShardFeed``). Each pass builds
    its own pipeline; the images come out on the decoding GPU (or the CPU).

    Args:
        device_id: the CUDA device to decode on, or None for DALI's CPU backend.
        num_threads: DALI's CPU threads (they read the files too).
        on_bad_file: ``error``: a file DALI cannot decode stops the run, naming it; ``skip``:
            it is left out of its batch and appended to ``skip_log``.
        hw_decoder_load: DALI's ``hw_decoder_load`` (None: ``TUNING``'s, else DALI's default).
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
        hw_decoder_load: float | None = None,
        on_bad_file: str = "error",
        skip_log=None,
        remedy: str = "",
    ) -> None:
        self.feed, self.recipe = feed, recipe
        self.device_id, self.seed, self.rank = device_id, seed, rank
        self.num_threads = max(1, num_threads)
        self.hw_decoder_load = hw_decoder_load
        self.inputs = Inputs(on_bad_file, skip_log, remedy)
        self._pool: ThreadPoolExecutor | None = None  # (made at the first pass)
        self.paths = getattr(feed, "gives_paths", False)  # DALI reads the files itself
        self.sampler = getattr(feed, "sampler", None)  # Lightning sets its epoch
        self.batch_sampler = None  # (what Lightning asks of a DataLoader-like iterable)

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
        ahead: deque[tuple[list[Encoded], Future]] = deque()  # being prepared, not yet given
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
                self.inputs.find_bad(e, list(itertools.chain.from_iterable(pending)))
                # then a new pipeline goes on with the batches not handed out

    def _run(self, batches: Iterator[list[Encoded]], pending: deque, ahead: deque, seed: int):
        """Run one pipeline over ``batches``; ``pending`` collects the batches given to it,
        ``ahead`` those being prepared before they are given."""
        from nvidia.dali.plugin.pytorch import feed_ndarray

        feed = self._feed(batches, pending, ahead)
        pipe = self._pipeline(feed, seed)
        failed = False
        try:
            pipe.build()
            gpu = self.device_id is not None
            stream = torch.cuda.current_stream(self.device_id) if gpu else None
            bound = (stream,) if stream is not None and TUNING.stream else ()
            while True:
                try:
                    images, labels = pipe.run(*bound)
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
            feed.close()  # (here, in the consumer's thread: see _feed)

    def _feed(self, batches: Iterator[list[Encoded]], pending: deque, ahead: deque):
        """What DALI is given of each batch (``Inputs.prepare``), made in a thread while DALI
        works on the batch before (the training loop's thread only hands it over).

        The threads are the loader's, not this generator's: a pass given up early (a consumer
        that takes one batch) leaves this generator to the garbage collector, which may close
        it in any thread, a DALI thread too; joining threads there deadlocked a test run."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(TUNING.read_ahead, "cnnzoo-dali-feed")
        for batch in batches:
            ahead.append((batch, self._pool.submit(self.inputs.prepare, batch)))
            if len(ahead) > TUNING.read_ahead:
                yield self._give(*ahead.popleft(), pending)
        while ahead:
            yield self._give(*ahead.popleft(), pending)

    def _give(self, batch: list[Encoded], prepared: Future, pending: deque) -> tuple:
        kept = prepared.result()
        if not kept:
            raise DataError(
                f"all {len(batch)} images of a batch were unreadable (e.g. "
                f"{batch[0].name}); {self.inputs.remedy}"
            )
        pending.append([item for item, _ in kept])
        labels = [np.array([item.label], dtype=np.int64) for item, _ in kept]
        return [data for _, data in kept], labels

    def _pipeline(self, source, seed: int):
        dali = import_dali()
        from nvidia.dali import fn, types

        decode_device = "cpu" if self.device_id is None else "mixed"
        decoder = dict(TUNING.decoder)
        if self.hw_decoder_load is not None:
            decoder["hw_decoder_load"] = float(self.hw_decoder_load)

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
            if self.paths:
                encoded = fn.io.file.read(encoded)
            return graph(self.recipe, encoded, decode_device, decoder), labels

        return pipeline()


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
