"""Reproducible, resumable data loading.

Every sample's augmentation is a pure function of (run seed, epoch, image index): the sampler
hands the dataset ``(index, sample_seed)`` pairs and the dataset seeds a private RNG for that
image's transforms. So the images a step sees do not depend on the number of DataLoader
workers, on persistent workers keeping their RNG across epochs, or on whether the run was
interrupted and resumed; and the shuffle order comes from (seed, epoch) alone, not from the
global RNG that dropout also draws from.

The sampler also shards across DDP ranks itself: train drops the tail so every rank gets the
same number of batches; val and test give each image to exactly one rank, with no padded
duplicates, so metrics count every image once whatever the world size.

``ResumableDataLoader`` saves how many batches of the current epoch were consumed (Lightning
stores it in the checkpoint's loop state); resuming mid-epoch continues with the next unseen
batch of the same order, neither repeating nor skipping any.
"""

import atexit
import multiprocessing
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch.utils.data import DataLoader, Sampler

_MIX = 0x9E3779B97F4A7C15  # 2^64 / golden ratio: spreads consecutive seeds apart


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed for one image in one epoch."""
    value = (seed * _MIX + epoch) * _MIX + index
    return value % (2**63 - 1)


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Inside, the global CPU generator (which the random transforms draw from) is seeded with
    ``seed``; after, it is as before. Only the CPU generator: ``torch.manual_seed`` also queues a
    CUDA, XPU and MTIA seeding, each capturing a stack trace while those are not initialised (as
    in DataLoader workers): about 2 ms per image, a quarter of a 224 px train sample's time."""
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        yield


class SeededSampler(Sampler[tuple[int, int]]):
    """Yields ``(index, sample_seed)`` for this rank's share of a dataset of ``size`` images.

    Args:
        shuffle: a new order every epoch (from ``seed`` and the epoch), else dataset order.
        rank, world_size: this process's share: every ``world_size``-th image from ``rank``.
            With ``shuffle`` (training) the order is cut to a multiple of ``world_size`` so all
            ranks take the same number of steps; without it (evaluation) nothing is dropped.
    """

    def __init__(
        self, size: int, *, shuffle: bool, seed: int, rank: int = 0, world_size: int = 1
    ) -> None:
        self.size, self.shuffle, self.seed = size, shuffle, seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self._resume: tuple[int, int] | None = None  # (epoch, samples already seen in it)

    def set_epoch(self, epoch: int) -> None:  # Lightning calls this before every epoch
        self.epoch = epoch

    def resume_at(self, epoch: int, samples: int) -> None:
        """Continue ``epoch`` after its first ``samples`` samples (on the next pass only)."""
        self.epoch = epoch
        self._resume = (epoch, samples)

    def pending_skip(self) -> int:
        """Samples the next pass leaves out (0 unless resuming within this epoch)."""
        if self._resume is not None and self._resume[0] == self.epoch:
            return self._resume[1]
        return 0

    def _indices(self) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.size)[self.rank :: self.world_size]
        generator = torch.Generator().manual_seed(sample_seed(self.seed, self.epoch, -1))
        order = torch.randperm(self.size, generator=generator)
        usable = self.size - self.size % self.world_size
        return order[:usable][self.rank :: self.world_size]

    def __len__(self) -> int:
        if self.shuffle:
            return self.size // self.world_size
        return len(range(self.rank, self.size, self.world_size))

    def __iter__(self) -> Iterator[tuple[int, int]]:
        indices = self._indices()[self.pending_skip() :].tolist()
        self._resume = None
        for index in indices:
            yield index, sample_seed(self.seed, self.epoch, index)


def ignore_sigterm(worker_id: int) -> None:
    """A DataLoader worker's ``worker_init_fn``: SIGTERM is the trainer's to handle. A signal to
    the whole process group (a scheduler ending a job, ``pkill -f train.py``) reached the
    workers too; a worker it killed made the trainer fail ("DataLoader worker killed by signal")
    before it could stop at a step and save ``last.ckpt``. A worker whose trainer is gone exits
    by itself (PyTorch's watchdog)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _kill_workers_at_exit() -> None:
    """At the interpreter's exit, multiprocessing stops daemonic children with SIGTERM and
    waits for them: a process leaving with DataLoader workers alive (an error raised mid-epoch)
    waited forever for the workers that ``ignore_sigterm``, which waited for it. Those still
    there a second after SIGTERM are killed (this runs before multiprocessing's own handler,
    registered earlier; PyTorch's SIGCHLD check, which would call a killed worker an error, is
    put back to the default first: the process is ending)."""
    children = [child for child in multiprocessing.active_children() if child.daemon]
    if not children:
        return
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    for child in children:
        child.terminate()
    deadline = time.monotonic() + 1.0
    for child in children:
        child.join(max(0.0, deadline - time.monotonic()))
        if child.is_alive():
            child.kill()
            child.join()


atexit.register(_kill_workers_at_exit)


class ResumableDataLoader(DataLoader):
    """A DataLoader over a ``SeededSampler`` whose position in the epoch is saved and restored
    through Lightning's stateful-dataloader protocol (``state_dict``/``load_state_dict``)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if not isinstance(self.sampler, SeededSampler):
            raise TypeError("ResumableDataLoader needs a SeededSampler")
        self._consumed = 0  # batches handed out in the current pass

    def __iter__(self) -> Iterator[Any]:
        self._consumed = self.sampler.pending_skip() // self.batch_size
        for batch in super().__iter__():
            self._consumed += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.sampler.epoch, "batches": self._consumed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.sampler.resume_at(state["epoch"], state["batches"] * self.batch_size)
