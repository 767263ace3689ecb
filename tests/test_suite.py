"""The test suite's own set-up: what ``make test`` relies on."""

import pytest


@pytest.mark.xdist_group("canary")
def test_make_test_keeps_each_group_on_one_worker(request):
    """``make test`` runs two workers with ``--dist loadgroup``: the SLURM tests share one local
    cluster and several modules make expensive fixtures once, so each ``xdist_group`` must stay
    on one worker. xdist marks a grouped test by its id (``...@group``); under pytest 9.2 that
    stopped working and the groups were silently spread over both workers."""
    if not getattr(request.config.option, "loadgroup", False):
        pytest.skip("not a worker of pytest -n N --dist loadgroup")
    assert request.node.nodeid.endswith("@canary"), request.node.nodeid
