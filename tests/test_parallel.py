"""semalign.experiments.parallel: a sweep's fits several at a time, each on one thread."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_info

from semalign.core.errors import SemalignError
from semalign.experiments.parallel import resolve_jobs, sweep_map


def test_results_come_back_in_order_and_each_item_runs_single_threaded():
    before = torch.get_num_threads()
    seen = []

    def work(i):
        seen.append(threading.current_thread().name)
        return i, torch.get_num_threads(), max(pool["num_threads"] for pool in threadpool_info())

    out = sweep_map(work, range(12), jobs=2)
    assert [i for i, _, _ in out] == list(range(12))
    assert {(torch_threads, blas) for _, torch_threads, blas in out} == {(1, 1)}, (out, threadpool_info())
    assert all(name.startswith("semalign-sweep") for name in seen)
    assert torch.get_num_threads() == before  # restored


def test_the_number_of_jobs_does_not_change_an_alignment_sweep():
    from semalign.method.align import Aligner

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 64)), rng.normal(size=(40, 48))
    points = [(kind, n) for kind in ("affine", "ortho", "l-ortho") for n in (8, 40)]

    def fit(point):
        kind, n = point
        return Aligner(kind, steps=20).fit(x[:n], y[:n]).transform(x)

    one, two = sweep_map(fit, points, jobs=1), sweep_map(fit, points, jobs=2)
    for a, b in zip(one, two, strict=True):
        np.testing.assert_array_equal(a, b)


def test_an_error_stops_the_sweep_and_reaches_the_caller():
    started = []

    def work(i):
        started.append(i)
        if i == 0:
            raise ValueError("item 0 is bad")
        time.sleep(0.02)  # the others take a while, as fits do
        return i

    with pytest.raises(ValueError, match="item 0 is bad"):
        sweep_map(work, range(200), jobs=2)
    assert len(started) < 200  # the items not yet started were dropped


@pytest.mark.parametrize("jobs", [-1, 1.5, "two", True])
def test_a_bad_job_count_is_refused_with_the_fix(jobs):
    with pytest.raises(SemalignError, match=r"jobs=.*whole number ≥ 0.*-p jobs=2"):
        resolve_jobs(jobs)


def test_zero_jobs_means_one_per_core_at_most_eight():
    assert 1 <= resolve_jobs(0) <= 8
    assert resolve_jobs(3) == 3
