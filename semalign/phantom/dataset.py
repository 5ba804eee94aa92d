"""The phantom's public entry points: a data set of images, one chosen case, the base film.

Each is a pure function of its arguments (seed -> arrays); nothing is cached on
disk. The first call in a process builds the precomputed maps
(:mod:`.precompute`); later calls reuse them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from semalign.core.errors import SemalignError
from semalign.phantom.findings import FINDINGS
from semalign.phantom.labels import LABEL_COLUMNS, label_row
from semalign.phantom.precompute import Model, model
from semalign.phantom.render import render
from semalign.phantom.reports import make_report
from semalign.phantom.sampling import (
    PhantomSpec,
    draw_attributes,
    draw_findings,
    draw_nuisance,
    finding_probabilities,
    image_rngs,
)


@dataclass
class PhantomDataset:
    """Rendered phantom: ``images`` uint8 ``(N, H, W)``, ``reports``, ``labels``
    (one row per image, columns :data:`LABEL_COLUMNS`, conventions in
    :mod:`.labels`), ``ids`` and the ``spec``."""

    images: np.ndarray
    reports: list[str]
    labels: pd.DataFrame
    ids: list[str]
    spec: PhantomSpec

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class PhantomCase:
    """One rendered image with its report and its label row (a dict)."""

    image: np.ndarray
    report: str
    labels: dict[str, Any]


def _image_id(seed: int, index: int) -> str:
    return f"phantom-s{int(seed)}-{int(index):06d}"


def _render_one(
    maps: Model,
    spec: PhantomSpec,
    index: int,
    choose_findings: Callable[[np.random.Generator], list[str]],
    overrides: Mapping[str, Any] | None = None,
) -> tuple[np.ndarray, str, dict[str, Any]]:
    """(image, report, label row) of image ``index`` of ``spec``; ``choose_findings``
    gets the image's findings stream and returns the findings present."""
    rf, rn, rr, ra = image_rngs(spec.seed, index)
    case = draw_attributes(rf, ra, choose_findings(rf), maps, overrides)
    nuis = draw_nuisance(rn, spec.nuisance)
    image, info = render(maps, case, nuis, rn)
    row = label_row(_image_id(spec.seed, index), case, nuis, info)
    return image, make_report(row, rng=rr, report_format=spec.report_format), row


def render_phantom(spec: PhantomSpec | None = None, progress: bool = False) -> PhantomDataset:
    """Render ``spec.n_images`` phantom radiographs with reports and labels.

    The same spec gives byte-identical images and reports, and image ``k`` does
    not depend on ``n_images``. ``progress`` shows a tqdm bar advanced chunk by chunk.
    """
    spec = spec or PhantomSpec()
    spec.validate()
    mode, probs = finding_probabilities(spec.resolved_prevalence(), float(spec.normal_fraction))

    def draw(rng: np.random.Generator) -> list[str]:
        return draw_findings(rng, mode, probs, float(spec.normal_fraction))

    maps = model(int(spec.image_size))
    n = int(spec.n_images)
    images = np.zeros((n, spec.image_size, spec.image_size), np.uint8)
    reports: list[str] = []
    rows: list[dict[str, Any]] = []
    from semalign.core.progress import progress_bar

    with progress_bar(total=n, desc="phantom", unit="img", disable=not progress) as bar:
        for start in range(0, n, spec.chunk_size):
            stop = min(start + spec.chunk_size, n)
            for k in range(start, stop):
                images[k], report, row = _render_one(maps, spec, k, draw)
                reports.append(report)
                rows.append(row)
            bar.update(stop - start)
    labels = pd.DataFrame(rows, columns=list(LABEL_COLUMNS))
    for f in (*FINDINGS, "normal"):
        labels[f] = labels[f].astype(bool)
    ids = [_image_id(spec.seed, k) for k in range(n)]
    return PhantomDataset(images=images, reports=reports, labels=labels, ids=ids, spec=spec)


def render_case(
    findings: Mapping[str, Any] | Iterable[str] = (),
    *,
    seed: int = 0,
    index: int = 0,
    image_size: int = 256,
    nuisance: float = 1.0,
) -> PhantomCase:
    """Render one image with chosen findings (for tests, figures and examples).

    ``findings``: names from :data:`FINDINGS`, or a mapping name -> attribute
    overrides, e.g. ``{"effusion": {"side": "right", "size": "large"},
    "nodule": {"side": "left", "size_mm": 20}}`` (keys: effusion side/size;
    opacity lobe/severity/variant; nodule side/size_mm; cardiomegaly severity;
    pneumothorax side/size; atelectasis lobe/severity). Unspecified attributes are
    drawn from ``(seed, index)``; ``nuisance=0`` gives the canonical pose without noise.
    """
    spec = PhantomSpec(n_images=1, seed=seed, image_size=image_size, nuisance=nuisance)
    spec.validate()
    overrides = dict(findings) if isinstance(findings, Mapping) else {f: {} for f in findings}
    unknown = sorted(set(overrides) - set(FINDINGS))
    if unknown:
        raise SemalignError(f"unknown findings {unknown}; use names from {list(FINDINGS)}")
    present = [f for f in FINDINGS if f in overrides]
    image, report, row = _render_one(model(int(image_size)), spec, index, lambda rng: present, overrides)
    return PhantomCase(image=image, report=report, labels=row)


def base_projection(image_size: int = 256) -> dict[str, Any]:
    """The canonical normal projection and its masks on the output grid.

    Returns ``{"image": uint8 (B, B) without nuisance or noise, "line_integral":
    float32 water-cm (after the unsharp mask, before the display window),
    "lung_right", "lung_left", "heart": bool masks (projected label maps), "ctr":
    cardiothoracic ratio of this heart}``; the patient's right is on the image left.
    All use the middle one of the three normal heart sizes.
    """
    maps = model(int(image_size))
    index = maps.default_heart
    case = {"present": [], "heart": index, "ctr": float(maps.heart[index]["ctr"])}
    image, _ = render(maps, case, draw_nuisance(np.random.default_rng(0), 0.0), np.random.default_rng(0))
    m, B = maps.margin, maps.size
    inner = (slice(m, m + B), slice(m, m + B))
    return {
        "image": image,
        "line_integral": (maps.base_ant + maps.base_post + maps.heart[index]["map"])[inner].copy(),
        "lung_right": maps.lung["right"][inner].copy(),
        "lung_left": maps.lung["left"][inner].copy(),
        "heart": maps.heart[index]["mask"][inner].copy(),
        "ctr": case["ctr"],
    }
