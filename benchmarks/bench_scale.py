"""Embedding extraction at scale: memory stays flat and throughput steady.

Streams ``--n`` (default 50,000) short synthetic texts — one to three sentences
drawn, with a seed, from the sentences of the IU X-ray reports — through
:func:`semalign.models.embed.embed` with MiniLM into a fresh temporary cache, in shards
of ``--shard-size`` rows. Texts are produced on demand (a callable), so the
input never sits in memory. A sampler thread reads the process's resident
memory every 0.2 s.

Printed per shard: items/s and resident memory at its end. The summary gives
the ratios against the first shard, measured in the same run: last-quarter
throughput / first-quarter throughput, and peak resident memory after the last
shard / after the first. The returned ``n×384`` float32 array (77 MB at 50,000)
is the only thing that grows with ``n``; it is reported separately. Writes
``<work>/benchmarks/scale.json``.

    python benchmarks/bench_scale.py [--n 50000] [--shard-size 4096] [--model minilm]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class Sampler(threading.Thread):
    """Peak resident memory since the last :meth:`take`."""

    def __init__(self, every: float = 0.2):
        super().__init__(daemon=True)
        self.every, self.peak, self.stop = every, rss_mb(), threading.Event()

    def run(self) -> None:
        while not self.stop.wait(self.every):
            self.peak = max(self.peak, rss_mb())

    def take(self) -> float:
        peak, self.peak = max(self.peak, rss_mb()), rss_mb()
        return peak


def sentence_pool() -> list[str]:
    from semalign.data.reports import load_iu_reports

    sentences = {s.strip() + "." for text in load_iu_reports().texts for s in re.split(r"\.\s+", text) if len(s) > 15}
    return sorted(sentences)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50_000, help="number of texts (default: %(default)s)")
    parser.add_argument("--shard-size", type=int, default=4096, help="rows per cache shard (default: %(default)s)")
    parser.add_argument("--model", default="minilm", help="text encoder (default: %(default)s)")
    parser.add_argument("--precision", default="bf16", choices=["fp32", "bf16"])
    args = parser.parse_args()

    from semalign.core.paths import work_dir

    pool = sentence_pool()
    rng = np.random.default_rng(0)
    picks = [rng.choice(len(pool), size=rng.integers(1, 4), replace=False) for _ in range(args.n)]
    ids = [f"synthetic-{i:06d}" for i in range(args.n)]
    n_shards = -(-args.n // args.shard_size)
    marks: dict[int, list[float]] = {k: [] for k in range(n_shards)}
    shard_rss: list[float] = []
    sampler = Sampler()

    def text(i: int) -> str:
        # embed() reads every text once to hash the content, then shard by shard;
        # the second read of a shard's first text marks that shard's start
        if i % args.shard_size == 0:
            k = i // args.shard_size
            marks[k].append(time.perf_counter())
            if len(marks[k]) == 2 and k > 0:
                shard_rss.append(sampler.take())  # peak while the previous shard ran
        return " ".join(pool[j] for j in picks[i])

    sampler.start()
    with tempfile.TemporaryDirectory(prefix="semalign-scale-cache-") as tmp:
        os.environ["SEMALIGN_CACHE"] = tmp
        from semalign.models.embed import embed

        base = rss_mb()
        start = time.perf_counter()
        out = embed(args.model, ids, text, shard_size=args.shard_size, precision=args.precision, progress=True)
        end = time.perf_counter()
        shard_rss.append(sampler.take())
        sampler.stop.set()
    total = end - start
    hashing = marks[0][1] - start

    starts = [marks[k][1] for k in range(n_shards)] + [end]
    sizes = [min(args.shard_size, args.n - k * args.shard_size) for k in range(n_shards)]
    rates = [s / (b - a) for s, a, b in zip(sizes, starts[:-1], starts[1:])]
    q = max(1, len(rates) // 4)
    report = {
        "n_texts": args.n, "model": args.model, "precision": args.precision, "shard_size": args.shard_size,
        "wall_s": round(total, 1), "hashing_s": round(hashing, 1), "items_per_s": round(args.n / total, 1),
        "rss_before_mb": round(base), "rss_after_first_shard_mb": round(shard_rss[0]),
        "rss_peak_after_last_shard_mb": round(shard_rss[-1]), "rss_peak_mb": round(max(shard_rss)),
        "rss_growth_ratio": round(max(shard_rss) / shard_rss[0], 3),
        "returned_array_mb": round(out.nbytes / 2**20, 1),
        "throughput_first_quarter": round(float(np.mean(rates[:q])), 1),
        "throughput_last_quarter": round(float(np.mean(rates[-q:])), 1),
        "throughput_ratio_last_vs_first": round(float(np.mean(rates[-q:]) / np.mean(rates[:q])), 3),
        "per_shard": [{"shard": k, "items_per_s": round(r, 1), "rss_mb": round(m)}
                      for k, (r, m) in enumerate(zip(rates, shard_rss))],
    }
    print(f"{'shard':>5} {'items/s':>8} {'RSS MB':>7}")
    for row in report["per_shard"]:
        print(f"{row['shard']:>5} {row['items_per_s']:>8} {row['rss_mb']:>7}")
    print(f"{args.n:,} texts in {total:.0f} s ({report['items_per_s']} items/s); "
          f"throughput last/first quarter {report['throughput_ratio_last_vs_first']}x; "
          f"peak RSS {report['rss_peak_mb']} MB, {report['rss_growth_ratio']}x the first shard's "
          f"(returned array {report['returned_array_mb']} MB)")
    path = work_dir() / "benchmarks" / "scale.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
