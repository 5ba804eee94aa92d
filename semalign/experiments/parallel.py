"""Independent fits of a sweep, several at once, each on one thread.

A sweep is hundreds of independent fits (an alignment, a decoder, a scoring).
Run one at a time, most of them cannot use two cores: the small affine fits are
a burst of small kernels that a second thread slows down
(:func:`semalign.method.align.threads_for`), and LAPACK's SVD gains little from one.
:func:`sweep_map` instead runs ``jobs`` fits at once in Python threads (torch,
numpy and scipy release the GIL inside their kernels), each with one torch and
one BLAS thread.

Every fit then runs single-threaded whatever ``jobs`` is and whatever the
machine's core count, so the results do not depend on either. That matters
beyond speed: where the best map is not unique (``ortho`` and ``l-ortho`` from
fewer anchors than dimensions), the completion LAPACK returns depends on its
thread count, and two thread counts can give maps that differ by O(1).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor

import torch

from semalign.core.errors import SemalignError
from semalign.models.base import available_cores

#: The most fits at once that ``jobs=0`` picks.
MAX_JOBS = 8


def resolve_jobs(jobs: int) -> int:
    """``jobs`` fits at once; 0 means one per CPU core available to this process, at most :data:`MAX_JOBS`."""
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 0:
        raise SemalignError(f"jobs={jobs!r}: expected a whole number ≥ 0 (0 means one per CPU core), e.g. -p jobs=2")
    if jobs:
        return jobs
    return max(1, min(available_cores(), MAX_JOBS))


@contextlib.contextmanager
def single_threaded_kernels() -> Iterator[None]:
    """One torch intra-op thread and one BLAS/OpenMP thread (threadpoolctl) inside; restored after."""
    import scipy.linalg  # noqa: F401  (loads scipy's own BLAS, so that the limit reaches it too)
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            yield
    finally:
        torch.set_num_threads(before)


def sweep_map(fn: Callable, items: Iterable, *, jobs: int = 0, desc: str = "", progress: bool = False) -> list:
    """``[fn(item) for item in items]``, ``jobs`` items at a time, each on one thread.

    Results come back in the order of ``items`` and are identical for every
    ``jobs`` (each call runs single-threaded either way). ``progress`` shows a
    bar named ``desc`` that advances as items finish. The first exception raised
    by ``fn`` propagates once the items already started have finished; the
    others are not started.
    """
    from semalign.core.progress import progress_bar

    items = list(items)
    jobs = min(resolve_jobs(jobs), max(1, len(items)))
    with progress_bar(total=len(items), desc=desc, disable=not progress) as bar, single_threaded_kernels():
        if jobs == 1:
            return [_advanced(bar, fn(item)) for item in items]
        pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="semalign-sweep", initializer=_one_openmp_thread)
        try:
            return [_advanced(bar, result) for result in pool.map(fn, items)]
        finally:  # on an error or Ctrl-C, items not yet started are dropped
            pool.shutdown(wait=True, cancel_futures=True)


def _one_openmp_thread() -> None:
    """OpenMP's thread count is per calling thread, so a worker does not inherit the
    main thread's limit (scikit-learn's loss kernels would use every core): set it
    in each worker, for its lifetime. torch and OpenBLAS keep process-wide counts."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="openmp")


def _advanced(bar, result):
    bar.update()
    return result
