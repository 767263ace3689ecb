"""The test suite's own set-up: what ``make test`` relies on; and the Makefile's other targets
that touch the project's folders."""

import shutil
import subprocess

import pytest
from helpers import ROOT


@pytest.mark.xdist_group("canary")
def test_make_test_keeps_each_group_on_one_worker(request):
    """``make test`` runs two workers with ``--dist loadgroup``: the SLURM tests share one local
    cluster and several modules make expensive fixtures once, so each ``xdist_group`` must stay
    on one worker. xdist marks a grouped test by its id (``...@group``); under pytest 9.2 that
    stopped working and the groups were silently spread over both workers."""
    if not getattr(request.config.option, "loadgroup", False):
        pytest.skip("not a worker of pytest -n N --dist loadgroup")
    assert request.node.nodeid.endswith("@canary"), request.node.nodeid


def test_make_clean_removes_caches_and_never_a_run(tmp_path):
    """``make clean`` deleted every run folder under outputs/ (and any wandb/, multirun/ or
    lightning_logs/ at the top): one careless command lost every record. Now caches only."""
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    run = tmp_path / "outputs" / "train" / "2026-01-01_00-00-00_resnet18"
    for kept in (run / "results.json", run / "wandb" / "run.wandb", tmp_path / "wandb" / "x"):
        kept.parent.mkdir(parents=True, exist_ok=True)
        kept.write_text("a record\n")
    for cache in (".pytest_cache", ".ruff_cache", "src/cnnzoo/__pycache__"):
        (tmp_path / cache).mkdir(parents=True)
    proc = subprocess.run(["make", "clean"], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert (run / "results.json").read_text() == (tmp_path / "wandb" / "x").read_text()
    assert (run / "wandb" / "run.wandb").is_file()
    assert not any((tmp_path / c).exists() for c in (".pytest_cache", ".ruff_cache"))
    assert not (tmp_path / "src" / "cnnzoo" / "__pycache__").exists()
