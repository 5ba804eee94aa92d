"""Speed of semalign.method.align next to plain numpy / scipy / autograd doing the same work.

    python benchmarks/bench_align.py [--quick] [--threads N]

Part 1 times fit + transform of each kind on 2,000 anchors, 768 -> 384 dims,
against a reference written directly with numpy / scipy / torch autograd
(standardise, fit, transform, de-standardise), and prints the largest difference
between the two outputs. Part 2 times a sweep over kinds, anchor counts and
seeds, as the study runs it. Times are wall-clock (best of a few repeats), with
the CPU time of the same run: on a shared machine, run with ``--threads 1`` and
read the CPU column.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import scipy.linalg
import torch
from threadpoolctl import threadpool_limits
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from semalign.method.align import Aligner, select_anchors  # noqa: E402

N_ANCHORS, D_X, D_Y, N_TEST = 2000, 768, 384, 2000
SWEEP_KINDS = ("affine", "linear", "l-ortho", "ortho")


def make_data(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Anchors of two related spaces (y a noisy linear image of x) and held-out x."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N_ANCHORS + N_TEST, D_X)) * rng.uniform(0.5, 2, D_X) + rng.normal(0, 1, D_X)
    y = x[:N_ANCHORS] @ (rng.standard_normal((D_X, D_Y)) / np.sqrt(D_X)) + 0.1 * rng.standard_normal((N_ANCHORS, D_Y))
    return x[:N_ANCHORS], y, x[N_ANCHORS:]


def best_time(work, repeats: int) -> tuple[float, float, np.ndarray]:
    """Wall-clock and CPU seconds of the fastest of ``repeats`` runs of ``work()``, and the
    (deterministic) result.

    CPU time of a one-thread run is what contention on a shared machine does not inflate.
    """
    best = (np.inf, np.inf)
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        result = work()
        best = min(best, (time.perf_counter() - wall, time.process_time() - cpu))
    return *best, result


# --------------------------------------------------------------------------- references


def standardised_fit(fit_scaled):
    """Reference pipeline: standardise with anchor stats, fit, transform, de-standardise."""
    def work(x, y, test):
        xs, ys = (x - x.mean(0)) / x.std(0), (y - y.mean(0)) / y.std(0)
        weight, bias = fit_scaled(xs, ys)
        return (((test - x.mean(0)) / x.std(0)) @ weight + bias) * y.std(0) + y.mean(0)
    return work


def reference_procrustes(xs, ys):
    d = max(xs.shape[1], ys.shape[1])
    pad = lambda a: np.hstack([a, np.zeros((len(a), d - a.shape[1]))])  # noqa: E731
    rotation, _ = scipy.linalg.orthogonal_procrustes(pad(xs), pad(ys))
    return rotation[: xs.shape[1], : ys.shape[1]], 0.0


def reference_linear(xs, ys):
    return np.linalg.lstsq(xs, ys, rcond=None)[0], 0.0


def reference_l_ortho(xs, ys):
    u, _, vt = np.linalg.svd(np.linalg.lstsq(xs, ys, rcond=None)[0], full_matrices=False)
    return u @ vt, 0.0


def reference_affine_gd(xs, ys, steps=300, lr=1e-3, seed=0):
    """The plain loop: nn.Linear + nn.MSELoss + Adam with autograd, full batch."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        layer = nn.Linear(xs.shape[1], ys.shape[1])
    inputs, targets = torch.tensor(xs, dtype=torch.float32), torch.tensor(ys, dtype=torch.float32)
    optimizer, loss_fn = torch.optim.Adam(layer.parameters(), lr=lr), nn.MSELoss()
    for _ in range(steps):
        optimizer.zero_grad()
        loss_fn(layer(inputs), targets).backward()
        optimizer.step()
    return layer.weight.detach().T.double().numpy(), layer.bias.detach().double().numpy()


HEAD_TO_HEAD = [
    ("ortho", {}, reference_procrustes, "scipy.linalg.orthogonal_procrustes, padded"),
    ("linear", {}, reference_linear, "np.linalg.lstsq"),
    ("l-ortho", {}, reference_l_ortho, "np.linalg.lstsq + np.linalg.svd"),
    ("affine", {"affine_fit": "lstsq"}, reference_linear, "np.linalg.lstsq (b = 0 when standardised)"),
    ("affine", {}, reference_affine_gd, "nn.Linear + MSELoss + Adam, autograd"),
]


def head_to_head(repeats: int, reference_repeats: int) -> None:
    x, y, test = make_data()
    print(f"fit + transform, {N_ANCHORS} anchors, {D_X} -> {D_Y} dims, {N_TEST} test points; "
          f"best of {repeats} (autograd reference: best of {reference_repeats})")
    print(f"{'kind':<14}{'ours s':>8}{'(cpu)':>8}{'ref s':>8}{'(cpu)':>8}{'ref/ours':>10}{'max|diff|':>11}  reference")
    for kind, options, reference, label in HEAD_TO_HEAD:
        ours_s, ours_cpu, ours = best_time(lambda: Aligner(kind, **options).fit(x, y).transform(test), repeats)
        slow = reference is reference_affine_gd
        ref_s, ref_cpu, ref = best_time(lambda: standardised_fit(reference)(x, y, test),
                                        reference_repeats if slow else repeats)
        name = kind + {"gd": "-gd", "lstsq": "-lstsq"}[options.get("affine_fit", "gd")] if kind == "affine" else kind
        print(f"{name:<14}{ours_s:>8.3f}{ours_cpu:>8.3f}{ref_s:>8.3f}{ref_cpu:>8.3f}{ref_s / ours_s:>10.2f}"
              f"{np.abs(ours - ref).max():>11.1e}  {label}")


def sweep(counts: np.ndarray, seeds: int) -> None:
    x, y, test = make_data()
    per_kind = {}
    for kind in SWEEP_KINDS:
        wall, cpu = time.perf_counter(), time.process_time()
        for seed in range(seeds):
            for n in counts:
                chosen = select_anchors(int(n), seed=seed, pool_size=N_ANCHORS)
                Aligner(kind, seed=seed).fit(x[chosen], y[chosen]).transform(test)
        per_kind[kind] = (time.perf_counter() - wall, time.process_time() - cpu)
    fits = len(SWEEP_KINDS) * len(counts) * seeds
    total, total_cpu = np.sum(list(per_kind.values()), axis=0)
    print(f"\nsweep: {len(SWEEP_KINDS)} kinds x {len(counts)} anchor counts ({', '.join(map(str, counts))}) "
          f"x {seeds} seeds = {fits} fits + transforms")
    print(f"total {total:.1f} s (cpu {total_cpu:.1f} s), {total / fits:.3f} s per fit")
    for kind, (seconds, cpu_seconds) in per_kind.items():
        print(f"  {kind:<8} {seconds:7.1f} s (cpu {cpu_seconds:6.1f} s)  {seconds / (len(counts) * seeds):.3f} s per fit")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, anchor counts and seeds")
    parser.add_argument("--threads", type=int, help="limit torch and BLAS to this many threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
        threadpool_limits(args.threads)
    # Wall-clock times mean little on a shared machine: say how busy it was.
    print(f"torch {torch.__version__}, numpy {np.__version__}, {torch.get_num_threads()} torch threads, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    head_to_head(repeats=2 if args.quick else 3, reference_repeats=1 if args.quick else 2)
    counts = np.unique(np.geomspace(10, N_ANCHORS, 5 if args.quick else 10).round().astype(int))
    sweep(counts, seeds=2 if args.quick else 10)
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
