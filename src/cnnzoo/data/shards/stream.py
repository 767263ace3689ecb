"""Reading shards: each DataLoader worker of each rank one reader (``ShardStream``), and
the loader that saves its position (``ShardLoader``, ``ShardFeed`` for DALI)."""

import itertools
import logging
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from cnnzoo.data.images import BadImageError, decode_bytes, skip_bad_collate, skip_or_raise
from cnnzoo.data.index import IMAGE_EXTENSIONS
from cnnzoo.data.loading import ignore_sigterm, sample_seed, seeded
from cnnzoo.data.shards.write import WRITE_COMMAND
from cnnzoo.errors import DataError

log = logging.getLogger(__name__)

IMAGE_KEYS = tuple(e.lstrip(".") for e in IMAGE_EXTENSIONS)  # a sample's image, by extension


class ShardStream(IterableDataset):
    """Batches of one rank's share of a split's shards (see the module's docstring).

    Args:
        shards: ``[{"name", "images"}]`` from the metadata, relative to ``root``.
        train: shuffle, augment, and give every rank ``steps`` batches; else each image once.
        workers: this rank's DataLoader workers (0: read in the main process).
        transform: image (uint8 tensor or PIL) -> tensor; seeded per image.
        on_bad_file, skip_log, decoder: as ``IndexedImages``.
    """

    def __init__(
        self,
        root: Path,
        shards: list[dict],
        *,
        train: bool,
        batch_size: int,
        transform: Callable,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        workers: int = 0,
        shuffle_buffer: int = 1000,
        decoder: str = "torchvision",
        on_bad_file: str = "error",
        skip_log: Path | None = None,
    ) -> None:
        self.urls = [str(root / s["name"]) for s in shards]
        self.counts = [int(s["images"]) for s in shards]
        self.train, self.batch_size, self.transform = train, batch_size, transform
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.workers = workers
        self.shuffle_buffer = shuffle_buffer
        self.decoder, self.on_bad_file, self.skip_log = decoder, on_bad_file, skip_log
        # (epoch, batches of it already given): written by the loader, read by the workers;
        # in shared memory so that persistent workers see each epoch's values.
        self.position = torch.zeros(2, dtype=torch.int64).share_memory_()
        self.steps = sum(self.counts) // (world_size * batch_size) if train else None

    @property
    def readers_per_rank(self) -> int:
        return max(1, self.workers)  # 0 workers: the main process reads

    def readers(self) -> int:
        return self.world_size * self.readers_per_rank

    def _reader_shards(self, reader: int, epoch: int) -> list[int]:
        order = list(range(len(self.urls)))
        if self.train:
            random.Random(sample_seed(self.seed, epoch, -2)).shuffle(order)
        return order[reader :: self.readers()]

    def _quota(self, worker: int) -> int:
        """Training batches worker ``worker`` gives in a whole epoch (batch i is worker
        i % workers's, the order in which a DataLoader collects them)."""
        per, extra = divmod(self.steps, self.readers_per_rank)
        return per + (worker < extra)

    def __len__(self) -> int:
        """Batches this rank gives in an epoch: exact (Lightning's progress and schedules)."""
        if self.train:
            return self.steps
        return sum(
            -(
                -sum(self.counts[s] for s in self._reader_shards(self._reader(w), 0))
                // self.batch_size
            )
            for w in range(self.readers_per_rank)
        )

    def _reader(self, worker: int) -> int:
        return self.rank * self.readers_per_rank + worker

    def start(self, epoch: int, batches_given: int) -> None:
        self.position[0], self.position[1] = epoch, batches_given

    def __iter__(self) -> Iterator:
        info = get_worker_info()
        worker = info.id if info is not None else 0
        epoch, given = (int(v) for v in self.position)
        if self.train:
            yield from self._train_batches(worker, epoch, given)
        else:
            yield from self._eval_batches(worker)

    def _train_batches(self, worker: int, epoch: int, given: int) -> Iterator:
        yield from self._batches(self.train_samples(worker, epoch, given), epoch)

    def train_samples(self, worker: int, epoch: int, given: int) -> Iterator[dict]:
        """The samples worker ``worker`` of this rank batches in ``epoch`` after ``given``
        batches of it."""
        k = self.readers_per_rank
        # Resuming after `given` batches: the next batch is worker (given % k)'s, so worker w
        # plays the role of worker (w + given) % k, less the batches that one gave.
        role = (worker + given) % k
        gave = max(0, -(-(given - role) // k))
        reader = self._reader(role)
        urls = [self.urls[s] for s in self._reader_shards(reader, epoch)]
        rng = random.Random(sample_seed(self.seed, epoch, -3 - reader))
        passes = (
            _shuffled(_samples(iter(urls)), self.shuffle_buffer, rng) for _ in itertools.count()
        )
        samples = itertools.chain.from_iterable(passes)  # a short reader reads its shards again
        b = self.batch_size
        return itertools.islice(samples, gave * b, self._quota(role) * b)

    def _eval_batches(self, worker: int) -> Iterator:
        yield from self._batches(self.eval_samples(worker), 0)

    def eval_samples(self, worker: int) -> Iterator[dict]:
        """Every sample of the shards worker ``worker`` of this rank reads."""
        return _samples(iter([self.urls[s] for s in self._reader_shards(self._reader(worker), 0)]))

    def _batches(self, samples: Iterator[dict], epoch: int) -> Iterator:
        while batch := list(itertools.islice(samples, self.batch_size)):
            yield skip_bad_collate([self._item(s, epoch) for s in batch])

    def _item(self, sample: dict, epoch: int) -> tuple[torch.Tensor, int] | None:
        name, data = image_of(sample)
        try:
            image = decode_bytes(data, name, self.decoder)
        except BadImageError as e:
            skip_or_raise(e, self.on_bad_file, self.skip_log, REMEDY)
            return None
        key = int(sample["__key__"])
        with seeded(sample_seed(self.seed, epoch, key) if self.train else key):
            return self.transform(image), int(sample["cls"])

    def first_items(self, count: int) -> list[tuple[torch.Tensor, int]]:
        """The first images of ``count`` shards spread over the split (a few from each when
        there are fewer shards): cheap to read, and from many classes."""
        picks = np.linspace(0, len(self.urls) - 1, min(count, len(self.urls))).round()
        per = -(-count // len(picks))
        items = []
        for s in dict.fromkeys(int(p) for p in picks):
            for sample in itertools.islice(_samples(iter([self.urls[s]])), per):
                if (item := self._item(sample, 0)) is not None:
                    items.append(item)
        return items[:count]


REMEDY = (
    "Set data.on_bad_file=skip to leave such images out (listed at the end of each epoch), or "
    "write the shards again from a tree that `python -m cnnzoo.data.verify` passes."
)


def image_of(sample: dict) -> tuple[str, bytes]:
    """(where it is: shard, key and original path, its encoded image) of a shard's sample."""
    name = f"{sample['__url__']}: {sample['__key__']}"
    image_key = next((k for k in IMAGE_KEYS if k in sample), None)
    if image_key is None or "cls" not in sample:
        fields = sorted(k for k in sample if not k.startswith("__"))
        raise DataError(
            f"{name} has fields {fields}, not an image and a .cls: not a shard "
            f"of cnnzoo's format; write it with {WRITE_COMMAND.format(dst='DIR')}."
        )
    if "path" in sample:
        name += f" ({sample['path'].decode()})"
    return name, sample[image_key]


def _samples(urls: Iterator[str]) -> Iterator[dict]:
    import webdataset as wds

    return wds.tarfile_samples(({"url": url} for url in urls), handler=_damaged_shard)


def _damaged_shard(error: Exception) -> bool:
    """webdataset's handler for a shard it cannot read (a copy cut short, a damaged file):
    a DataError naming the shard (it was tarfile's ReadError, several tracebacks long)."""
    args = getattr(error, "args", ())
    if isinstance(error, DataError) or len(args) < 2 or not isinstance(args[-1], str):
        raise error  # (the reader of one tar file: the shard's loop adds its name, and asks again)
    shard = args[-1]
    reason = str(args[0]).split(" @ ")[0]
    root = Path(shard).parent.parent
    raise DataError(
        f"cannot read shard {shard} ({type(error).__name__}: {reason}): it is damaged or cut "
        "short (a copy that stopped?). Copy it again, or write the shards again: "
        f"{WRITE_COMMAND.format(dst=root)}."
    ) from None


def _shuffled(samples: Iterator[dict], size: int, rng: random.Random) -> Iterator[dict]:
    if size <= 1:
        return samples
    import webdataset as wds

    return wds.filters.shuffle(size, min(size, 100), rng=rng)(samples)


class ShardPosition:
    """The position in the epoch of a rank's shard stream, saved and restored through
    Lightning's stateful-dataloader protocol (``state_dict``/``load_state_dict``); ``epoch()``
    says the trainer's epoch before each pass."""

    def __init__(self, stream: ShardStream, epoch: Callable[[], int]) -> None:
        self.stream, self.epoch_of = stream, epoch
        self._resume: dict | None = None
        self._given = (0, 0)  # (epoch, batches given in it)

    def start_pass(self) -> tuple[int, int]:
        """(epoch, batches of it already given) of the pass about to start."""
        epoch, given = self.epoch_of(), 0
        if self._resume is not None and self._resume["epoch"] == epoch:
            given = self._resume["batches"]
        self._resume = None
        self._given = (epoch, given)
        return epoch, given

    def gave_one(self) -> None:
        self._given = (self._given[0], self._given[1] + 1)

    def state_dict(self) -> dict[str, int]:
        stream = self.stream
        return {
            "epoch": self._given[0],
            "batches": self._given[1],
            "readers": stream.readers(),
            "world_size": stream.world_size,
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        stream = self.stream
        if (state.get("readers"), state.get("world_size")) != (stream.readers(), stream.world_size):
            log.warning(
                "resuming sharded data with %s readers over %s ranks (the checkpoint had %s over "
                "%s): the rest of epoch %s is a fresh draw of its remaining steps, not the "
                "interrupted order.",
                stream.readers(),
                stream.world_size,
                state.get("readers"),
                state.get("world_size"),
                state["epoch"],
            )
        self._resume = dict(state)


class ShardLoader(DataLoader):
    """The DataLoader of a ``ShardStream`` (batches come made): tells it the epoch before each
    pass and keeps its position in the epoch (``ShardPosition``), as ``ResumableDataLoader``
    does for the tree."""

    def __init__(self, stream: ShardStream, epoch: Callable[[], int], **kwargs) -> None:
        super().__init__(stream, batch_size=None, worker_init_fn=ignore_sigterm, **kwargs)
        self.position = ShardPosition(stream, epoch)

    def __iter__(self) -> Iterator[Any]:
        self.dataset.start(*self.position.start_pass())
        for batch in super().__iter__():
            self.position.gave_one()
            yield batch

    def state_dict(self) -> dict[str, int]:
        return self.position.state_dict()

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.position.load_state_dict(state)


class ShardFeed(ShardPosition):
    """A rank's batches of undecoded shard samples for ``data.loader=dali`` (one reader per
    rank, in this process: reading tar members costs little; DALI decodes)."""

    def __init__(self, stream: ShardStream, epoch: Callable[[], int]) -> None:
        super().__init__(stream, epoch)
        self.batch_size = stream.batch_size

    def __len__(self) -> int:
        return len(self.stream)

    @property
    def epoch(self) -> int:
        return self._given[0]

    @property
    def consumed(self) -> int:
        return self._given[1]

    @consumed.setter
    def consumed(self, batches: int) -> None:
        self._given = (self._given[0], batches)

    def batches(self) -> Iterator[list]:
        """This pass's batches (after a resume's skip); the position is set at once."""
        from cnnzoo.data.dali_feed import Encoded

        epoch, given = self.start_pass()
        stream = self.stream
        samples = stream.train_samples(0, epoch, given) if stream.train else stream.eval_samples(0)

        def encoded(sample: dict) -> Encoded:
            name, data = image_of(sample)
            array = np.frombuffer(data, dtype=np.uint8)
            return Encoded(name, int(sample["cls"]), lambda: array)

        def chunks() -> Iterator[list[Encoded]]:
            while batch := list(itertools.islice(samples, self.batch_size)):
                yield [encoded(s) for s in batch]

        return chunks()  # (the position above is set now, not at the first batch)
