"""ImageNet as WebDataset shards: for file systems that cannot keep up with one open per image.

    python -m cnnzoo.data.shards --src /data/imagenet --dst /data/imagenet-shards
    python train.py data=imagenet_shards data.root=/data/imagenet-shards

A shared file system (NFS, Lustre, GPFS) serves a training job's 1.28M small JPEGs (110 kB
each) with one metadata lookup and one open per image; a few thousand images/s per node is
where that stops keeping up (README, "Data at scale"). Shards hold the same bytes in about a
thousand 100 MB tar files that each reader streams sequentially: one open per thousand images.

Format (WebDataset: any tar tool, ``webdataset``, timm and OpenCLIP read it):
``DST/train/train-000000.tar``, ..., ``DST/val/val-000000.tar``, ...; each sample is
``<key>.jpg`` (the original file's bytes, unchanged; ``.png`` etc. for other files),
``<key>.cls`` (the class index, in the tree's sorted order) and ``<key>.path`` (its path in the
tree); the key is the image's index in the split (ImageFolder order). Train images are shuffled
across the shards (``--seed``), val images stay in order. ``DST/cnnzoo-shards.json`` lists the
classes and each shard with its image count. It is written last: a folder without it is an
unfinished write, and running the same command again finishes it (finished shards are kept).

Reading (``ShardStream``): every DataLoader worker of every rank is one *reader* with its own
shards. Evaluation gives each val shard to exactly one reader, so every image is scored once
whatever the world size. Training shuffles the shard order every epoch (seed, epoch), reader
``j`` of ``R`` reads shards ``j, j + R, ...`` through a shuffle buffer and yields exactly its
share of the epoch's ``N // global_batch`` steps, so all ranks take the same number of steps
(the folder tree's count). That reads each image exactly once per epoch when every reader's
shards hold its share (the shard count divides by ``R`` and the steps by the workers);
otherwise a reader that runs short reads on into its first shard again and one with more
leaves its tail (at most a batch and a shard per reader), which the next epoch's shard order
deals out differently. The order and each image's augmentation follow from (seed, epoch,
rank, worker, image), and the loader saves how many batches it gave, so a resumed run
continues the epoch exactly (with the same number of ranks and workers; otherwise it warns and
the rest of the epoch is a fresh draw).
"""

import argparse
import itertools
import json
import logging
import os
import random
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import Progress
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from cnnzoo.data.classes import imagenet_name_of, imagenet_wnids
from cnnzoo.data.datamodule import ImageFolderDataModule
from cnnzoo.data.images import BadImageError, decode_bytes, skip_bad_collate, skip_or_raise
from cnnzoo.data.index import IMAGE_EXTENSIONS
from cnnzoo.data.loading import sample_seed, seeded
from cnnzoo.data.sample import build_in_place, ensure_sample_dataset
from cnnzoo.errors import ConfigError, DataError

log = logging.getLogger(__name__)

META = "cnnzoo-shards.json"
PLAN = ".cnnzoo-shards-plan.json"  # what an unfinished write is writing
FORMAT = "cnnzoo-shards/1"
IMAGE_KEYS = tuple(e.lstrip(".") for e in IMAGE_EXTENSIONS)  # a sample's image, by extension
WRITE_COMMAND = "python -m cnnzoo.data.shards --src IMAGENET_ROOT --dst {dst}"


# -- writing -----------------------------------------------------------------------------------


def write_shards(
    src: Path, dst: Path, *, shard_size: int = 1000, seed: int = 0, workers: int = 1
) -> dict:
    """Write the train and val splits of the ImageNet-layout tree ``src`` as shards in ``dst``
    and return the metadata (also ``dst/cnnzoo-shards.json``). Resumable; never overwrites a
    finished set of shards or a folder holding anything else."""
    src, dst = Path(src).expanduser().resolve(), Path(dst).expanduser().resolve()
    if shard_size < 1:
        raise ConfigError(f"--shard-size {shard_size}: give the images per shard (1000 is usual).")
    if dst == src or src in dst.parents:
        raise DataError(f"--dst {dst}: choose a folder outside the source tree {src}.")
    if (dst / META).exists():
        raise DataError(
            f"{dst} already holds shards ({META}). Choose another --dst, or delete that folder "
            "to write them again."
        )
    train, val = ImageFolderDataModule(
        str(src), num_classes=1, root_setting="--src"
    ).checked_indexes()
    plan = {
        "format": FORMAT,
        "source": str(src),
        "seed": seed,
        "shard_size": shard_size,
        "images": {"train": len(train), "val": len(val)},
    }
    _start_or_resume(dst, plan)
    jobs, shards = [], {}
    for split, index in (("train", train), ("val", val)):
        shuffled = split == "train"
        order = (
            np.random.default_rng(seed).permutation(len(index)) if shuffled else range(len(index))
        )
        (dst / split).mkdir(exist_ok=True)
        shards[split] = []
        for number, start in enumerate(range(0, len(order), shard_size)):
            keys = list(order[start : start + shard_size])
            name = f"{split}/{split}-{number:06d}.tar"
            shards[split].append({"name": name, "images": len(keys)})
            if not (dst / name).is_file():  # finished shards are renamed into place
                members = [(k, index.relpath(k), int(index.targets[k])) for k in keys]
                jobs.append((index.folder, members, str(dst / name)))
    total = sum(plan["images"].values())
    with Progress(console=Console(stderr=True)) as progress:
        task = progress.add_task("writing shards", total=total)
        progress.update(task, completed=total - sum(len(job[1]) for job in jobs))
        if workers > 1 and len(jobs) > 1:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                for future in as_completed([pool.submit(_write_shard, *job) for job in jobs]):
                    progress.advance(task, future.result())
        else:
            for job in jobs:
                progress.advance(task, _write_shard(*job))
    meta = {
        "format": FORMAT,
        "classes": list(train.classes),
        "source": str(src),
        "seed": seed,
        "shard_size": shard_size,
        "splits": {s: {"images": plan["images"][s], "shards": shards[s]} for s in shards},
    }
    _write_json(dst / META, meta)
    (dst / PLAN).unlink()
    return meta


def _start_or_resume(dst: Path, plan: dict) -> None:
    """Record what this write is writing; a non-empty ``dst`` must hold the same unfinished
    write (then its finished shards are kept)."""
    if dst.is_dir() and any(dst.iterdir()):
        try:
            previous = json.loads((dst / PLAN).read_text())
        except (OSError, ValueError):
            raise DataError(f"--dst {dst} is not empty. Give an empty or new folder.") from None
        if previous != plan:
            raise DataError(
                f"--dst {dst} holds an unfinished write with other settings ({previous}). "
                "Run it again with those settings to finish it, or give an empty or new folder."
            )
        log.info("finishing the unfinished write in %s", dst)
    dst.mkdir(parents=True, exist_ok=True)
    _write_json(dst / PLAN, plan)


def _write_shard(folder: str, members: list[tuple[int, str, int]], path: str) -> int:
    """One tar file: each image's bytes unchanged, its class and its path; written to a hidden
    temporary name and renamed when complete. Returns the number of images."""
    import webdataset as wds

    tmp = Path(path).with_name(f".{Path(path).name}.partial")
    with tmp.open("wb") as stream:
        writer = wds.TarWriter(stream, encoder=False, mtime=0, user="cnnzoo", group="cnnzoo")
        for key, relpath, target in members:
            ext = Path(relpath).suffix.lower().lstrip(".")
            writer.write(
                {
                    "__key__": f"{key:08d}",
                    "jpg" if ext in ("jpg", "jpeg") else ext: Path(folder, relpath).read_bytes(),
                    "cls": str(target).encode(),
                    "path": relpath.encode(),
                }
            )
        writer.close()
    os.replace(tmp, path)
    return len(members)


def _write_json(path: Path, value: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(value, indent=1) + "\n")
    os.replace(tmp, path)


def load_meta(root: Path | None, setting: str) -> dict:
    """The shard folder's metadata, checked: ``DataError`` saying what is missing and what to do."""
    if root is None:
        command = WRITE_COMMAND.format(dst="DIR")
        raise DataError(f"no shard folder given. Set {setting}; write one with {command}.")
    if not root.is_dir():
        raise DataError(
            f"shard folder {root} does not exist. Set {setting} to the --dst of "
            f"{WRITE_COMMAND.format(dst='DIR')}."
        )
    try:
        meta = json.loads((root / META).read_text())
    except FileNotFoundError:
        if (root / PLAN).is_file():
            hint = "it is an unfinished write: run the same command again to finish it"
        else:
            hint = f"write shards there with {WRITE_COMMAND.format(dst=root)}"
        raise DataError(f"{root} has no {META}; {hint}.") from None
    except ValueError as e:
        raise DataError(f"{root / META} is not valid JSON ({e}); write the shards again.") from None
    if meta.get("format") != FORMAT:
        raise DataError(
            f"{root / META} is format {meta.get('format')!r}, not {FORMAT!r}: "
            "written by another version; write the shards again."
        )
    listed = [s["name"] for split in meta["splits"].values() for s in split["shards"]]
    missing = [name for name in listed if not (root / name).is_file()]
    if missing:
        raise DataError(
            f"{root}: {len(missing)} of the {len(listed)} shards listed in {META} are missing, "
            f"e.g. {missing[:3]}. Copy them back, or write the shards again."
        )
    return meta


# -- reading -----------------------------------------------------------------------------------


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

    return wds.tarfile_samples({"url": url} for url in urls)


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
        super().__init__(stream, batch_size=None, **kwargs)
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
        from cnnzoo.data.dali import Encoded

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


# -- the DataModule ----------------------------------------------------------------------------


class ShardDataModule(ImageFolderDataModule):
    """ImageNet (or any classes) from the WebDataset shards of ``python -m cnnzoo.data.shards``:
    the same batch semantics, recipes, device-side normalisation and mixing, bad-file policy
    and exact resume as ``data=imagenet``; the test stage scores the val shards.

    Args (beyond ``ImageFolderDataModule``'s):
        root: the shards folder (holding ``cnnzoo-shards.json``).
        shuffle_buffer: images each reader draws its next one from at random (raw bytes: about
            110 MB per reader for ImageNet at 1000); the shards are also shuffled when written
            and their order every epoch.
    """

    def __init__(self, root: str | None, *, shuffle_buffer: int = 1000, **kwargs) -> None:
        kwargs.setdefault("root_setting", "data.root (or the IMAGENET_SHARDS environment variable)")
        super().__init__(root, **kwargs)
        if self.val_from_train or self.samples_per_class:
            raise ConfigError(
                "data.val_from_train and data.samples_per_class choose images from the folder "
                "tree (data=imagenet); shards hold the splits they were written with."
            )
        if shuffle_buffer < 0:
            raise ConfigError(f"data.shuffle_buffer={shuffle_buffer}: give a count >= 0.")
        self.shuffle_buffer = shuffle_buffer
        self.meta: dict | None = None
        self.streams: dict[str, ShardStream] = {}

    def prepare_data(self) -> None:
        pass  # nothing to index: the metadata lists every shard

    def setup(self, stage: str | None = None) -> None:
        if self.meta is not None:
            return
        meta = load_meta(self.root, self.root_setting)
        classes = tuple(meta["classes"])
        if self.wnids == "imagenet":
            stray = sorted(set(classes) - set(imagenet_wnids()))
            if stray:
                raise DataError(
                    f"{self.root} holds classes that are not ILSVRC-2012 wnids "
                    f"({stray[:5]}); use data.wnids=null for other classes."
                )
        if len(classes) != self.num_classes:
            raise DataError(
                f"{self.root} holds {len(classes)} classes but data.num_classes="
                f"{self.num_classes}. Set data.num_classes={len(classes)}, or write shards of a "
                "tree with those classes."
            )
        self._open_skip_log()
        self.meta = meta
        train, val = (meta["splits"][s] for s in ("train", "val"))
        log.info(
            "%s: train %s images in %d shards, val/test %s in %d shards, %d classes",
            self.root,
            f"{train['images']:,}",
            len(train["shards"]),
            f"{val['images']:,}",
            len(val["shards"]),
            len(classes),
        )

    def stream(
        self, split: str, transform=None, batch_size: int | None = None, workers: int | None = None
    ) -> ShardStream:
        """The ``split`` stream of this rank (``train``, ``val`` or ``test``: the val shards)."""
        self.setup()
        trainer = self.trainer
        train = split == "train"
        shards = self.meta["splits"]["train" if train else "val"]["shards"]
        world = trainer.world_size if trainer is not None else 1
        workers = self.workers() if workers is None else workers
        if train:
            if len(shards) < world:
                raise DataError(
                    f"{self.root} has {len(shards)} train shards for {world} ranks: "
                    "write smaller shards (--shard-size) so each rank has one."
                )
            usable = max(1, len(shards) // world)
            if workers > usable:
                log.warning(
                    "data.num_workers=%d but %d train shards over %d ranks: %d workers "
                    "per rank read them (write smaller shards for more)",
                    workers,
                    len(shards),
                    world,
                    usable,
                )
                workers = usable
        batch = batch_size or self.pass_batch_size(train)
        return ShardStream(
            self.root,
            shards,
            train=train,
            batch_size=batch,
            transform=transform or self.device_transforms()[0 if train else 1],
            seed=self.shuffle_seed,
            rank=trainer.global_rank if trainer is not None else 0,
            world_size=world,
            workers=workers,
            shuffle_buffer=self.shuffle_buffer,
            decoder=self.decoder,
            on_bad_file=self.on_bad_file,
            skip_log=self.skip_log,
        )

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        if self.loader == "dali":  # one reader per rank, in this process: DALI decodes
            feed = ShardFeed(self.stream(split, workers=0), self._epoch)
            return self._dali_loader(feed, shuffle, REMEDY)
        stream = self.stream(split)
        return ShardLoader(
            stream,
            epoch=self._epoch,
            num_workers=stream.workers,
            pin_memory=self.pin_memory and torch.cuda.is_available(),
            persistent_workers=stream.workers > 0,
        )

    def _epoch(self) -> int:
        return self.trainer.current_epoch if self.trainer is not None else 0

    def eval_loader(self, split: str, transform, batch_size: int) -> DataLoader:
        if split not in ("val", "test"):
            raise ConfigError(f"eval.split={split!r}: choose val or test (the val shards).")
        stream = self.stream(split, transform, batch_size)
        return ShardLoader(stream, epoch=lambda: 0, num_workers=stream.workers)

    def preview_items(self, count: int, seed: int) -> list[tuple[torch.Tensor, int]]:
        return self.stream("val", workers=0).first_items(count)

    def class_ids(self) -> list[str]:
        self.setup()
        return list(self.meta["classes"])

    def class_names(self) -> list[str]:
        """The shards' class names; away from the shards, ImageNet's (as ``data=imagenet``)."""
        if self.meta is None and not (self.root is not None and (self.root / META).is_file()):
            return super().class_names()  # its wnid path needs no data; else setup() says why
        self.setup()
        name_of = imagenet_name_of()
        return [name_of.get(c, c) for c in self.meta["classes"]]


class SampleShardDataModule(ShardDataModule):
    """The built-in sample set written as shards on first use: the sharded path, offline."""

    def __init__(
        self,
        root: str,
        *,
        source: str,
        shard_size: int = 100,
        train_per_class: int = 100,
        val_per_class: int = 30,
        seed: int = 0,
        **kwargs,
    ) -> None:
        super().__init__(root, root_setting="data.root", **kwargs)
        self.source, self.shard_size = Path(source).expanduser(), shard_size
        self.generation = {
            "train_per_class": train_per_class,
            "val_per_class": val_per_class,
            "seed": seed,
        }

    def prepare_data(self) -> None:
        """Write the shards into a temporary sibling folder renamed into place (as the sample
        set itself): every rank calls this, and a crash never leaves a partial set."""
        if (self.root / META).is_file():
            return
        if self.root.exists():
            raise DataError(f"{self.root} exists but holds no finished sample shards ({META}). "
                            "It is a cache folder: delete it to write them again.")  # fmt: skip
        ensure_sample_dataset(self.source, **self.generation)
        build_in_place(
            self.root,
            lambda tmp: write_shards(self.source, tmp, shard_size=self.shard_size),
            (self.root / META).is_file,
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cnnzoo.data.shards",
        description="Write the train and val splits of an ImageNet-layout tree as WebDataset "
        "shards (read with data=imagenet_shards).",
    )
    parser.add_argument("--src", type=Path, required=True, help="ROOT with train/ and val/")
    parser.add_argument("--dst", type=Path, required=True, help="an empty or new folder")
    parser.add_argument("--shard-size", type=int, default=1000, help="images per shard")
    parser.add_argument("--seed", type=int, default=0, help="the train images' shuffle")
    parser.add_argument(
        "--workers",
        type=int,
        default=min(8, os.cpu_count() or 1),
        help="shards written in parallel",
    )
    args = parser.parse_args(argv)
    try:
        meta = write_shards(
            args.src, args.dst, shard_size=args.shard_size, seed=args.seed, workers=args.workers
        )
    except (DataError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for split, info in meta["splits"].items():
        print(f"{split}: {info['images']:,} images in {len(info['shards']):,} shards")
    classes = meta["classes"]
    extra = "" if len(classes) == 1000 else f" data.num_classes={len(classes)}"
    if not set(classes) <= set(imagenet_wnids()):
        extra += " data.wnids=null"
    print(f"Train with: python train.py data=imagenet_shards data.root={args.dst}{extra}")
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sys.exit(main())
