"""Reproducible, resumable loading: order and augmentation from (seed, epoch, image) alone."""

from collections import Counter

import pytest
import torch
from helpers import place, tiny_datamodule

from cnnzoo.data import ImageFolderDataModule
from cnnzoo.data.loading import SeededSampler


def sample_root(cache_dir) -> str:
    return str(next(cache_dir.glob("sample_*")))


def datamodule(cache_dir, **kwargs) -> ImageFolderDataModule:
    dm = tiny_datamodule(sample_root(cache_dir), **({"shuffle_seed": 3} | kwargs))
    dm.setup()
    return dm


def test_order_depends_on_seed_and_epoch_only():
    def order(seed, epoch):
        sampler = SeededSampler(50, shuffle=True, seed=seed)
        sampler.set_epoch(epoch)
        return list(sampler)

    torch.manual_seed(0)
    first = order(1, 0)
    torch.manual_seed(123)  # the global RNG plays no part
    assert order(1, 0) == first
    assert order(1, 1) != first and order(2, 0) != first
    assert sorted(i for i, _ in first) == list(range(50))
    assert len({s for _, s in first}) == 50  # a seed per image


def test_ranks_share_the_data_without_overlap():
    eval_shares = [
        list(SeededSampler(50, shuffle=False, seed=0, rank=r, world_size=3)) for r in range(3)
    ]
    counts = Counter(i for share in eval_shares for i, _ in share)
    assert sorted(counts) == list(range(50)) and set(counts.values()) == {1}  # each image once
    assert [len(s) for s in eval_shares] == [17, 17, 16]
    train_shares = [
        list(SeededSampler(50, shuffle=True, seed=0, rank=r, world_size=3)) for r in range(3)
    ]
    assert [len(s) for s in train_shares] == [16, 16, 16]  # equal steps on every rank
    seen = [i for share in train_shares for i, _ in share]
    assert len(seen) == len(set(seen)) == 48


def batches(loader) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(images.clone(), labels.clone()) for images, labels in loader]


def assert_same(a, b) -> None:
    assert len(a) == len(b)
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_augmented_batches_do_not_depend_on_workers(cache_dir):
    single = datamodule(cache_dir, num_workers=0)
    place(single)
    workers = datamodule(cache_dir, num_workers=2)
    place(workers)
    assert_same(batches(single.train_dataloader()), batches(workers.train_dataloader()))
    # a second epoch with persistent workers: new order and augmentation, still identical
    loaders = [single.train_dataloader(), workers.train_dataloader()]
    for loader in loaders:
        loader.sampler.set_epoch(1)
    epoch1 = [batches(loader) for loader in loaders]
    assert_same(*epoch1)
    place(single)
    epoch0 = batches(single.train_dataloader())
    assert not torch.equal(epoch0[0][0], epoch1[0][0][0])


def test_mid_epoch_resume_continues_with_the_next_unseen_batch(cache_dir):
    dm = datamodule(cache_dir, num_workers=2)
    place(dm, epoch=2)
    loader = dm.train_dataloader()
    full = batches(loader)
    iterator = iter(loader)
    for _ in range(3):
        next(iterator)
    state = loader.state_dict()
    assert state == {"epoch": 2, "batches": 3}

    fresh = datamodule(cache_dir, num_workers=2)
    place(fresh, epoch=0)  # a new process, before Lightning restores the loop
    resumed = fresh.train_dataloader()
    resumed.load_state_dict(state)
    assert_same(batches(resumed), full[3:])
    assert len(batches(resumed)) == len(full)  # the skip applies to the resumed pass only
    assert resumed.state_dict() == {"epoch": 2, "batches": len(full)}


def test_eval_batches_are_unshuffled_and_deterministic(cache_dir):
    dm = datamodule(cache_dir)
    place(dm)
    a, b = batches(dm.val_dataloader()), batches(dm.val_dataloader())
    assert_same(a, b)
    labels = torch.cat([y for _, y in a])
    assert labels.tolist() == sorted(labels.tolist())  # dataset order: class by class
    assert len(labels) == 40


@pytest.mark.parametrize("world_size", [2, 3])
def test_eval_loaders_of_all_ranks_hold_every_image_once(cache_dir, world_size):
    counts = Counter()
    for rank in range(world_size):
        dm = datamodule(cache_dir, batch_size=world_size * 2)
        place(dm, world_size=world_size, rank=rank)
        for index, _ in dm.val_dataloader().sampler:
            counts[index] += 1
    assert sorted(counts) == list(range(40)) and set(counts.values()) == {1}


def test_each_image_seeds_only_the_cpu_generator(cache_dir, monkeypatch):
    """torch.manual_seed would also queue CUDA/XPU/MTIA seedings with a stack trace each (2 ms
    per image in a worker); the per-image seed goes to the CPU generator alone, and the global
    RNG is as before afterwards."""
    dm = datamodule(cache_dir, num_workers=0)
    dm.setup()
    calls = []
    for accelerator in (torch.cuda, torch.xpu, torch.mtia):
        monkeypatch.setattr(accelerator, "manual_seed_all", calls.append, raising=False)
    state = torch.random.get_rng_state()
    first = dm.datasets["train"][(3, 99)][0]
    assert torch.equal(dm.datasets["train"][(3, 99)][0], first)  # the seed decides
    assert not torch.equal(dm.datasets["train"][(3, 98)][0], first)
    assert calls == [] and torch.equal(torch.random.get_rng_state(), state)


@pytest.mark.slow
def test_a_process_leaving_with_workers_alive_exits():
    """Workers ignore SIGTERM (``ignore_sigterm``: a signal to the process group is the
    trainer's); multiprocessing's exit handler stops them with SIGTERM and waits, so a process
    leaving mid-epoch (an error raised with the workers running) waited forever."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent("""
        from torch.utils.data import DataLoader
        from cnnzoo.data.loading import ignore_sigterm
        loader = DataLoader(list(range(64)), batch_size=4, num_workers=2,
                            worker_init_fn=ignore_sigterm, persistent_workers=True)
        batches = iter(loader)
        next(batches)
        raise SystemExit(3)  # (the workers still running)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert "killed by signal" not in proc.stderr
