"""Throughput of our encoders against the plain reference implementations.

Text: IU chest X-ray reports (findings + impression, read from the NLMCXR tarball
shipped in the torchxrayvision wheel, without importing torchxrayvision), encoded by

* ``SentenceTransformer(folder).encode(texts, batch_size=32)`` in fp32 — the reference;
* ours in fp32 (``load_encoder(name, precision="fp32")``), with the max abs difference;
* ours in bf16 (weights cast to bfloat16 on CPU), with the min cosine to the reference.

Images: 256 random 256×256 uint8 RGB images through EfficientNet-Lite0 — a plain
per-batch fp32 forward of the packaged model (resize, (x−127)/128,
``extract_features``, global average pool) in batches of 32 as the reference,
against ours in fp32 and bf16 at our default batch (8). The plain forward in
batches of 8 is shown too, without a target: it tells how much of the gain is
the batch size alone.

Methods are timed in interleaved rounds and the best round is reported (the
machine may be shared), with the process CPU time of that round alongside. Each
row is judged against the targets (fp32: ≥ 1.0× the reference with max |Δ| ≤ 1e-5;
bf16: ≥ 2.5× with min cosine ≥ 0.999), and the rows are written to
``<work>/benchmarks/embed.json`` for the book's appendix (not with ``--quick``).

Each bf16 row also carries the *floor* of its cosine: the reference model with
every parameter (and BatchNorm statistic) rounded to bfloat16 and everything
computed in fp32, once, untimed. It is what storing the weights in bf16 costs
on its own, before any bf16 arithmetic; where it is already below 0.999, only a
path that keeps some weights in higher precision can meet the cosine target.

``--device cuda`` runs every method on the GPU (the reference too) and writes
``embed-cuda.json``: ratios, plus each of our rows' distance to our CPU embeddings
at the same precision (what the study's caches hold), without verdicts — the targets are
the CPU's.

    python benchmarks/bench_embed.py [--models minilm,mpnet] [--quick] [--device cuda]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import re
import sys
import tarfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from semalign.models import encoders, weights  # noqa: E402

from semalign.study import pages  # noqa: E402
from semalign.core.cache import atomic_write_json  # noqa: E402
from semalign.core.paths import work_dir  # noqa: E402


def iu_reports(n: int) -> list[str]:
    """Findings + impression of the first ``n`` IU X-ray reports that have either."""
    spec = importlib.util.find_spec("torchxrayvision")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("torchxrayvision (for its NLMCXR_reports.tgz) is not installed")
    tgz = Path(list(spec.submodule_search_locations)[0]) / "data" / "NLMCXR_reports.tgz"
    texts: list[str] = []
    with tarfile.open(tgz) as tar:
        members = [m for m in tar.getmembers() if m.name.endswith(".xml")]
        members.sort(key=lambda m: int(re.sub(r"\D", "", Path(m.name).stem) or 0))
        for member in members:
            root = ET.fromstring(tar.extractfile(member).read())
            parts = {a.get("Label"): (a.text or "").strip() for a in root.iter("AbstractText")}
            text = " ".join(p for p in (parts.get("FINDINGS"), parts.get("IMPRESSION")) if p)
            if text:
                texts.append(text)
            if len(texts) == n:
                break
    return texts


def timed_rounds(methods: dict, rounds: int) -> dict:
    """Run every method ``rounds`` times, interleaved; keep the fastest round of each."""
    best = {k: (float("inf"), 0.0, None) for k in methods}
    for _ in range(rounds):
        for name, fn in methods.items():
            wall0, cpu0 = time.perf_counter(), time.process_time()
            out = fn()
            wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
            if wall < best[name][0]:
                best[name] = (wall, cpu, out)
    return best


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity."""
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def cosine_min(a: np.ndarray, b: np.ndarray) -> float:
    return float(cosines(a, b).min())


def cosine_summary(a: np.ndarray, reference: np.ndarray, target: float) -> tuple[float, int]:
    """Lowest row-wise cosine of ``a`` to ``reference``, and how many rows fall below ``target``."""
    agreement = cosines(a, reference)
    return float(agreement.min()), int((agreement < target).sum())


# fp32: at least as fast as the reference with the same embeddings; bf16: 2.5x with cosine >= 0.999
TARGETS = {"fp32": {"ratio": 1.0, "max_abs_diff": 1e-5}, "bf16": {"ratio": 2.5, "min_cosine": 0.999}}


def rounded_to_bf16(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` with every floating parameter and buffer rounded to bfloat16 and kept in fp32, in place."""
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            if tensor.is_floating_point():
                tensor.copy_(tensor.to(torch.bfloat16).to(tensor.dtype))
    return model


def judged(best: dict, reference: str, workload: str, n: int, unit: str, context: tuple[str, ...] = (),
           floor: np.ndarray | None = None) -> list[dict]:
    """One row per method: throughput, ratio to the reference, agreement, and the target's verdict.

    ``context`` names methods shown for comparison only (no target): e.g. the
    reference run at our batch size, to show what batching alone gives.
    ``floor`` is the reference model's output with its weights rounded to bf16
    (:func:`rounded_to_bf16`); bf16 rows then record its min cosine, how many
    items it leaves below the target, and whether the cosine target is within
    reach of a path that stores every weight in bf16.
    """
    ref_wall, _, ref = best[reference]
    rows = []
    for name, (wall, cpu, out) in best.items():
        row = {"workload": workload, "method": name, "throughput": round(n / wall, 1), "unit": unit,
               "ratio": round(ref_wall / wall, 3), "cpu_s": round(cpu, 1)}
        if name == reference:
            row["check"] = "reference"
        elif "fp32" in name:
            target = TARGETS["fp32"]
            row["max_abs_diff"] = float(np.abs(out - ref).max())
            row["check"] = f"max|Δ| {row['max_abs_diff']:.1e}"
            if name not in context:
                row["target_met"] = row["ratio"] >= target["ratio"] and row["max_abs_diff"] <= target["max_abs_diff"]
        else:
            target = TARGETS["bf16"]
            row["min_cosine"], row["below_target"] = cosine_summary(out, ref, target["min_cosine"])
            row["check"] = f"min cos {row['min_cosine']:.5f} ({row['below_target']} of {len(ref)} < {target['min_cosine']})"
            if floor is not None:
                row["floor_min_cosine"], row["floor_below_target"] = cosine_summary(floor, ref, target["min_cosine"])
                row["cosine_reachable"] = row["floor_below_target"] == 0
                row["check"] += f"; floor {row['floor_min_cosine']:.5f} ({row['floor_below_target']} < {target['min_cosine']})"
            row["target_met"] = row["ratio"] >= target["ratio"] and row["min_cosine"] >= target["min_cosine"]
        rows.append(row)
    return rows


def bench_text(model: str, texts: list[str], rounds: int, batch_size: int | None, device: str = "cpu") -> list[dict]:
    from sentence_transformers import SentenceTransformer

    spec = encoders.resolve_encoder(model)
    folder = weights.locate(spec).folder
    if spec.family == "sentence-transformer" and (folder.parent / "modules.json").is_file():
        folder = folder.parent
    st = SentenceTransformer(str(folder), device=device)
    fp32 = encoders.load_encoder(model, device=device, precision="fp32")
    bf16 = encoders.load_encoder(model, device=device, precision="bf16")
    warm = texts[:64]
    st.encode(warm, batch_size=32)
    fp32.encode(warm)
    bf16.encode(warm)
    best = timed_rounds(
        {
            "sentence-transformers fp32": lambda: st.encode(texts, batch_size=32),
            f"ours fp32 (batch {batch_size or fp32.default_batch_size})": lambda: fp32.encode(texts, batch_size=batch_size),
            f"ours bf16 (batch {batch_size or bf16.default_batch_size})": lambda: bf16.encode(texts, batch_size=batch_size),
        },
        rounds,
    )
    floor = rounded_to_bf16(st).encode(texts, batch_size=32)
    rows = judged(best, "sentence-transformers fp32", f"{model} ({len(texts)} reports)", len(texts), "reports/s",
                  floor=floor)
    del st, fp32, bf16
    if device != "cpu":
        _against_cpu(rows, best, model, texts)
    return rows


def _against_cpu(rows: list[dict], best: dict, model: str, items) -> None:
    """On a GPU: no verdicts (the targets are the CPU's); instead, how far each of
    our rows is from our CPU embeddings at the same precision."""
    for row in rows:
        row.pop("target_met", None)
        row.pop("cosine_reachable", None)
        if row["method"].startswith("ours"):
            precision = "bf16" if "bf16" in row["method"] else "fp32"
            cpu = encoders.load_encoder(model, device="cpu", precision=precision).encode(items)
            out = best[row["method"]][2]
            row["cpu_max_abs_diff"] = float(np.abs(out - cpu).max())
            row["cpu_min_cosine"] = cosine_min(out, cpu)
            row["check"] += f"; vs CPU max|Δ| {row['cpu_max_abs_diff']:.1e} min cos {row['cpu_min_cosine']:.5f}"


def bench_images(n: int, rounds: int, batch_size: int, device: str = "cpu") -> list[dict]:
    from efficientnet_lite_pytorch import EfficientNet

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n, 256, 256, 3), dtype=np.uint8)
    located = weights.locate(encoders.resolve_encoder("effnet-lite0"))

    def packaged() -> torch.nn.Module:
        model = EfficientNet.from_name("efficientnet-lite0")
        model.load_state_dict(torch.load(str(located.weights[0]), map_location="cpu", weights_only=True))
        return model.eval().to(device)

    plain = packaged()

    def reference(size: int, model: torch.nn.Module = plain) -> np.ndarray:
        out = []
        with torch.no_grad():
            for start in range(0, n, size):
                x = torch.from_numpy(images[start : start + size]).to(device).permute(0, 3, 1, 2).float()
                x = F.interpolate(x, size=(224, 224), mode="bilinear", antialias=True, align_corners=False)
                out.append(model.extract_features((x - 127.0) / 128.0).mean(dim=(2, 3)).cpu().numpy())
        return np.concatenate(out)

    fp32 = encoders.load_encoder("effnet-lite0", device=device, precision="fp32")
    bf16 = encoders.load_encoder("effnet-lite0", device=device, precision="bf16")
    ours = fp32.default_batch_size
    reference(batch_size)
    fp32.encode(images[:ours])
    bf16.encode(images[:ours])
    ref_name, same_batch = f"plain forward fp32 (batch {batch_size})", f"plain forward fp32 (batch {ours})"
    best = timed_rounds(
        {
            ref_name: lambda: reference(batch_size),
            same_batch: lambda: reference(ours),
            f"ours fp32 (batch {ours})": lambda: fp32.encode(images),
            f"ours bf16 (batch {ours})": lambda: bf16.encode(images),
        },
        rounds,
    )
    floor = reference(batch_size, rounded_to_bf16(packaged()))
    rows = judged(best, ref_name, f"effnet-lite0 ({n} images 256²)", n, "images/s", context=(same_batch,),
                  floor=floor)
    if device != "cpu":
        _against_cpu(rows, best, "effnet-lite0", images)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="minilm,mpnet", help="comma-separated text encoders (default: %(default)s)")
    parser.add_argument("--texts", type=int, default=1000, help="number of reports (default: %(default)s)")
    parser.add_argument("--images", type=int, default=256, help="number of images (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per method (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=None, help="our text batch size (default: the encoder's)")
    parser.add_argument("--no-images", action="store_true", help="skip the image benchmark")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="where every method runs (default: %(default)s); the targets are the CPU's, so a GPU "
                             "run reports ratios and each row's distance to our CPU embeddings instead of verdicts")
    parser.add_argument("--quick", action="store_true", help="200 reports, 64 images, 2 rounds")
    args = parser.parse_args(argv)
    if args.quick:
        args.texts, args.images, args.rounds = min(args.texts, 200), min(args.images, 64), min(args.rounds, 2)

    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    load0 = os.getloadavg()[0]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
          f"oneDNN bf16: {torch.ops.mkldnn._is_mkldnn_bf16_supported()}, load average {load0:.1f}")
    if args.device == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("--device cuda: torch sees no CUDA GPU; run without --device")
        torch.backends.cudnn.allow_tf32 = False  # the plain reference in true fp32, as ours (on by default)
        print(f"device: {torch.cuda.get_device_name()} (CUDA {torch.version.cuda}); TF32 off")
    texts = iu_reports(args.texts)
    print(f"{len(texts)} IU X-ray reports, mean {np.mean([len(t) for t in texts]):.0f} characters")
    widths = (30, 28, 10, 9, 7, 7, 16, 12)
    head = ("workload", "method", "throughput", "", "× ref", "CPU s", "check", "target")

    def show(row: tuple) -> None:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip(), flush=True)

    show(head)
    show(tuple("-" * w for w in widths))
    workloads = [lambda m=m: bench_text(m, texts, args.rounds, args.batch_size, args.device)
                 for m in (m.strip() for m in args.models.split(",")) if m]
    if not args.no_images:
        workloads.append(lambda: bench_images(args.images, args.rounds, 32, args.device))
    rows: list[dict] = []
    for run in workloads:
        for row in run():
            rows.append(row)
            verdict = pages.embed_verdict(row).replace("not met", "NOT MET")
            show((row["workload"], row["method"], f"{row['throughput']:8.1f}", row["unit"], f"{row['ratio']:5.2f}×",
                  f"{row['cpu_s']:6.1f}", row["check"], verdict))
    load1 = os.getloadavg()[0]
    print(f"load average at the end: {load1:.1f} (best of {args.rounds} interleaved rounds); targets: fp32 "
          f">= {TARGETS['fp32']['ratio']}x with max|Δ| <= {TARGETS['fp32']['max_abs_diff']:g}, bf16 >= "
          f"{TARGETS['bf16']['ratio']}x with min cos >= {TARGETS['bf16']['min_cosine']}")
    if args.quick:
        print("--quick: not recorded")
        return 0
    report = {
        "date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "command": "python benchmarks/bench_embed.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "torch": torch.__version__, "threads": torch.get_num_threads(), "rounds": args.rounds, "device": args.device,
        "load_average": [round(load0, 1), round(load1, 1)], "targets": TARGETS, "rows": rows,
    }
    if args.device == "cuda":
        report["machine"] += f", {torch.cuda.get_device_name()}"
    out = work_dir() / "benchmarks" / ("embed.json" if args.device == "cpu" else f"embed-{args.device}.json")
    atomic_write_json(out, report)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
