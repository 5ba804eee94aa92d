"""Benchmark the chest-radiograph phantom and draw a contact sheet for a realism check.

Usage::

    python benchmarks/bench_phantom.py [--n 2000] [--size 256] [--out /tmp/semalign_bench]

Prints the one-off precomputation time (the anatomy, then the maps for one image
size) and the rendering speed in images per second for ``--n`` images of
``--size`` pixels, then writes a PNG contact sheet to ``--out`` (outside the
repository): 16 phantom images (normal, each finding, a few combinations;
labelled) next to two real paediatric radiographs (one normal, one pneumonia)
and the adult ``RG1_UNCR.dcm``.
Nothing is written into the repository.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.dont_write_bytecode = True  # write nothing into the repository, not even __pycache__
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from semalign import phantom  # noqa: E402
from semalign.phantom import precompute  # noqa: E402
from semalign.data.images import load_image, real_sample_images  # noqa: E402

SHEET_CASES: list[tuple[str, dict]] = [
    ("normal", {}),
    ("normal (pose/noise)", {}),
    ("effusion R large", {"effusion": {"side": "right", "size": "large"}}),
    ("effusion L moderate", {"effusion": {"side": "left", "size": "moderate"}}),
    ("effusion bilat small", {"effusion": {"side": "bilateral", "size": "small"}}),
    ("consolidation RLL", {"opacity": {"lobe": "right lower lobe", "severity": 0.95}}),
    ("consolidation LUL", {"opacity": {"lobe": "left upper lobe", "severity": 0.8}}),
    ("nodule L 22 mm", {"nodule": {"side": "left", "size_mm": 22}}),
    ("nodule R 14 mm", {"nodule": {"side": "right", "size_mm": 14}}),
    ("cardiomegaly moderate", {"cardiomegaly": {"severity": "moderate"}}),
    ("cardiomegaly severe", {"cardiomegaly": {"severity": "severe"}}),
    ("pneumothorax R large", {"pneumothorax": {"side": "right", "size": "large"}}),
    ("pneumothorax L moderate", {"pneumothorax": {"side": "left", "size": "moderate"}}),
    ("atelectasis RUL", {"atelectasis": {"lobe": "right upper lobe", "severity": "severe"}}),
    ("atelectasis LLL", {"atelectasis": {"lobe": "left lower lobe", "severity": "severe"}}),
    (
        "effusion+cardiomegaly+RUL",
        {
            "effusion": {"side": "bilateral", "size": "moderate"},
            "cardiomegaly": {"severity": "moderate"},
            "opacity": {"lobe": "right upper lobe"},
        },
    ),
]


def _contact_sheet(size: int, out_dir: Path) -> Path:
    from PIL import Image, ImageDraw

    tiles: list[tuple[str, np.ndarray]] = []
    for k, (name, findings) in enumerate(SHEET_CASES):
        nuisance = 0.0 if k == 0 else 1.0
        case = phantom.render_case(findings, seed=11, index=k, image_size=size, nuisance=nuisance)
        tiles.append((f"phantom: {name}", case.image))
    samples = real_sample_images()
    normal = next(s for s in samples if s.label == "normal")
    pneumonia = next(s for s in samples if s.label == "pneumonia")
    adult = next(s for s in samples if s.cohort == "adult")
    tiles.append((f"real child normal {normal.name[:14]}", load_image(normal.path, size=size)))
    tiles.append((f"real child pneumonia {pneumonia.name[:12]}", load_image(pneumonia.path, size=size)))
    tiles.append(("real adult RG1_UNCR (file VOI)", load_image(adult.path, size=size)))
    tiles.append(("real adult RG1_UNCR (percentile)", load_image(adult.path, size=size, voi="percentile")))

    cols = 5
    label_h = 14
    rows = (len(tiles) + cols - 1) // cols
    sheet = Image.new("L", (cols * size, rows * (size + label_h)), 0)
    draw = ImageDraw.Draw(sheet)
    for i, (name, image) in enumerate(tiles):
        x, y = (i % cols) * size, (i // cols) * (size + label_h)
        sheet.paste(Image.fromarray(image), (x, y + label_h))
        draw.text((x + 3, y + 1), name, fill=255)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "phantom_contact_sheet.png"
    sheet.save(path)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="images to render (default 2000)")
    parser.add_argument("--size", type=int, default=256, help="image side in pixels (default 256)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out", type=Path, default=Path(tempfile.gettempdir()) / "semalign_bench", help="folder for the contact sheet"
    )
    parser.add_argument("--no-sheet", action="store_true", help="skip the contact sheet")
    args = parser.parse_args(argv)

    print("precompute (once per process):")
    for stage, build in (
        ("anatomy (CT -> projections, finding maps)", precompute.anatomy),
        (f"maps on the {args.size} px output grid", lambda: precompute.model(args.size)),
    ):
        t0, c0 = time.perf_counter(), time.process_time()
        build()
        print(f"  {stage:<45s} {time.perf_counter() - t0:6.2f} s wall, {time.process_time() - c0:6.2f} s CPU")

    spec = phantom.PhantomSpec(n_images=args.n, seed=args.seed, image_size=args.size)
    t0, c0 = time.perf_counter(), time.process_time()
    ds = phantom.render_phantom(spec)
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(
        f"rendered {len(ds)} images of {args.size}x{args.size} px (+ reports, labels) in {elapsed:.2f} s wall "
        f"({cpu:.2f} s CPU, one thread): {len(ds) / elapsed:.0f} images/s "
        f"({1000 * elapsed / max(len(ds), 1):.2f} ms/image)"
    )
    present = ds.labels[list(phantom.FINDINGS)].mean().round(3).to_dict()
    print(f"prevalence: {present}; normal: {ds.labels['normal'].mean():.3f}")
    print(f"example report: {ds.reports[1]}")

    if not args.no_sheet:
        path = _contact_sheet(args.size, args.out)
        print(f"contact sheet: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
