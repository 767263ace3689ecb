"""Shared fixtures: the tiny sample set, offline W&B, a local SLURM (helpers.py: the rest)."""

import os
import subprocess
from pathlib import Path

import pytest
import torch
from helpers import ROOT, TINY_SAMPLE

from cnnzoo.data.sample import ensure_sample_dataset

# Under pytest-xdist (make test: two workers), each process gets its share of the cores as
# compute threads (unless the caller set OMP_NUM_THREADS): the workers, and the training
# subprocesses they start, each took PyTorch's default of a thread per core, which
# oversubscribed the cores, and waiting threads spin. Measured on the 2-core machine:
# test_run_records.py + test_reliability.py with -n 2 took 3m42s (5m34s user CPU), 2m54s
# (3m47s) with one thread each. Subprocesses inherit it through the environment.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, len(os.sched_getaffinity(0)) // _WORKERS)))
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cache")
    ensure_sample_dataset(
        path / "sample_v1_{train_per_class}+{val_per_class}_seed0".format(**TINY_SAMPLE),
        **TINY_SAMPLE,
    )
    return path


@pytest.fixture(scope="session")
def slurm(tmp_path_factory) -> dict[str, str]:
    """A one-node SLURM cluster on this machine (tests/slurm/start.sh: Debian's packages,
    installed when missing), stopped at the end; the environment that reaches it. Skips,
    saying why, where it cannot start (no root, no apt, no network for the packages)."""
    folder = tmp_path_factory.mktemp("slurm")
    start = subprocess.run(["bash", str(ROOT / "tests" / "slurm" / "start.sh"), str(folder)],
                           capture_output=True, text=True, timeout=600)  # fmt: skip
    if start.returncode != 0:
        pytest.skip(f"no local SLURM cluster: {start.stderr.strip()[-500:]}")
    yield {"SLURM_CONF": start.stdout.strip().splitlines()[-1]}
    subprocess.run(["bash", str(ROOT / "tests" / "slurm" / "stop.sh"), str(folder)], timeout=120)


@pytest.fixture
def offline_env(monkeypatch, tmp_path) -> dict[str, str]:
    """No W&B credentials anywhere: the default logger must go offline on its own."""
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    return dict(os.environ)


@pytest.fixture(autouse=True)
def rank_zero_stays_zero():
    """A Trainer built with another global rank (NODE_RANK=1, RANK=3) sets Lightning's
    ``rank_zero_only.rank`` for the whole process: every later test's loggers, checkpoints and
    summaries would silently do nothing. The test that does it fails here instead."""
    from lightning_utilities.core.rank_zero import rank_zero_only as utils_rank_zero_only
    from pytorch_lightning.utilities.rank_zero import rank_zero_only

    yield
    ranks = {rank_zero_only.rank, utils_rank_zero_only.rank}
    rank_zero_only.rank = utils_rank_zero_only.rank = 0
    assert ranks == {0}, f"this test left Lightning's rank_zero_only.rank at {ranks}"
