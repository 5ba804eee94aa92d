"""What each image shows: the spec, and the draws of findings, their attributes and the pose.

Image ``k`` of seed ``s`` is drawn from ``numpy.random.SeedSequence([s, k])``
alone, so it does not depend on ``n_images``.

Nuisance (per image; ``PhantomSpec.nuisance`` scales every range, 0 disables it):
in-plane rotation +-4 deg, per-axis scaling (habitus, x 0.92-1.08, y 0.95-1.05),
magnification 0.94-1.08, translation +-4 % of the field, exposure (0.92-1.08 on
the line integral), window ends +-5 %, gamma 0.95 x (0.82-1.22), quantum noise
(1e4-1e5 photons per pixel), yaw +-4 deg and pitch +-3 deg.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from semalign.core.errors import SemalignError
from semalign.phantom.findings import (
    ATELECTASIS_SEVERITIES,
    CARDIOMEGALY_SEVERITIES,
    DEFAULT_PREVALENCE,
    EFFUSION_SIZES,
    FINDINGS,
    LOBE_NAMES,
    LOBES,
    OPACITY_FRACTIONS,
    PNEUMOTHORAX_SIZES,
    SIDES,
)
from semalign.phantom.precompute import Model
from semalign.phantom.reports import REPORT_FORMATS

GAMMA = 0.95  # display gamma before jitter
_EFFUSION_SIDES = ("right", "left", "bilateral")
_LOBE_WEIGHTS_OPACITY = (0.15, 0.12, 0.28, 0.17, 0.28)
_LOBE_WEIGHTS_ATELECTASIS = (0.15, 0.15, 0.27, 0.16, 0.27)


@dataclass(frozen=True)
class PhantomSpec:
    """What to render.

    ``n_images``: number of images (default 1000). ``seed``: non-negative int; image
    ``k`` depends only on ``(seed, k)``. ``image_size``: side of the square uint8
    images in pixels (default 256, 32-1024). ``prevalence``: marginal fraction of
    images with each finding, over all images; keys from :data:`FINDINGS`, missing
    keys take :data:`DEFAULT_PREVALENCE`. ``normal_fraction``: fraction of images
    with no finding (default 0.3); the other images have at least one finding, so
    ``sum(prevalence) >= 1 - normal_fraction`` is required and each prevalence must
    be at most ``1 - normal_fraction``. ``nuisance``: scale of every nuisance range
    (1 = documented ranges, 0 = none: same anatomy pose, no noise). ``report_format``:
    ``"sections"`` (``"FINDINGS: ... IMPRESSION: ..."``), ``"findings"`` or
    ``"impression"``. ``chunk_size``: images per progress-bar step.
    """

    n_images: int = 1000
    seed: int = 0
    image_size: int = 256
    prevalence: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_PREVALENCE))
    normal_fraction: float = 0.3
    nuisance: float = 1.0
    report_format: str = "sections"
    chunk_size: int = 250

    def resolved_prevalence(self) -> dict[str, float]:
        unknown = sorted(set(self.prevalence) - set(FINDINGS))
        if unknown:
            raise SemalignError(
                f"PhantomSpec.prevalence has unknown findings {unknown}; use keys from {list(FINDINGS)}"
            )
        out = dict(DEFAULT_PREVALENCE)
        for key, value in self.prevalence.items():
            try:
                value = float(value)
            except (TypeError, ValueError):
                raise SemalignError(f"PhantomSpec.prevalence[{key!r}] = {value!r} is not a number in [0, 1]") from None
            if not 0.0 <= value <= 1.0:  # NaN fails this too
                raise SemalignError(f"PhantomSpec.prevalence[{key!r}] = {value} is not in [0, 1]")
            out[key] = value
        return out

    def validate(self) -> None:
        for name in ("n_images", "seed", "image_size", "chunk_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise SemalignError(f"PhantomSpec.{name} = {value!r} must be an integer")
        if self.n_images < 0:
            raise SemalignError(f"PhantomSpec.n_images = {self.n_images} must be >= 0")
        if self.seed < 0:
            raise SemalignError(f"PhantomSpec.seed = {self.seed} must be >= 0")
        if not 32 <= self.image_size <= 1024:
            raise SemalignError(f"PhantomSpec.image_size = {self.image_size} must be between 32 and 1024 pixels")
        if self.chunk_size < 1:
            raise SemalignError(f"PhantomSpec.chunk_size = {self.chunk_size} must be >= 1")
        if not 0.0 <= float(self.normal_fraction) < 1.0:
            raise SemalignError(f"PhantomSpec.normal_fraction = {self.normal_fraction} must be in [0, 1)")
        if not 0.0 <= float(self.nuisance) <= 2.0:
            raise SemalignError(f"PhantomSpec.nuisance = {self.nuisance} must be in [0, 2]")
        if self.report_format not in REPORT_FORMATS:
            raise SemalignError(
                f"PhantomSpec.report_format = {self.report_format!r}; use one of {list(REPORT_FORMATS)}"
            )
        finding_probabilities(self.resolved_prevalence(), float(self.normal_fraction))


@functools.lru_cache(maxsize=64)
def _solve_q(targets: tuple[float, ...]) -> tuple[float, ...]:
    """Per-finding draw probabilities q with q_f / P(at least one) = targets_f."""

    def gap(zeta: float) -> float:
        return 1.0 - float(np.prod([1.0 - t * zeta for t in targets])) - zeta

    lo, hi = 1e-9, 1.0
    if gap(hi) > 0:  # only when some target is 1: every abnormal image has that finding
        return tuple(min(1.0, t) for t in targets)
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if gap(mid) > 0:
            lo = mid
        else:
            hi = mid
    zeta = 0.5 * (lo + hi)
    return tuple(t * zeta for t in targets)


def finding_probabilities(prevalence: dict[str, float], normal_fraction: float) -> tuple[str, tuple[float, ...]]:
    """('independent', q) or ('single', t): how to draw the findings of an abnormal image."""
    abnormal = 1.0 - normal_fraction
    targets = tuple(prevalence[f] / abnormal for f in FINDINGS)
    too_high = [f for f, t in zip(FINDINGS, targets) if t > 1.0 + 1e-9]
    if too_high:
        raise SemalignError(
            f"PhantomSpec.prevalence of {too_high} exceeds 1 - normal_fraction = {abnormal:.3f}; "
            "lower those prevalences or normal_fraction"
        )
    total = sum(targets)
    if total < 1.0 - 1e-9:
        raise SemalignError(
            f"PhantomSpec.prevalence sums to {sum(prevalence.values()):.3f}, but the "
            f"{abnormal:.3f} abnormal images (1 - normal_fraction) each need at least one finding; "
            f"raise the prevalences or set normal_fraction >= {1 - sum(prevalence.values()):.3f}"
        )
    if total <= 1.0 + 1e-6:
        return "single", tuple(t / total for t in targets)
    return "independent", _solve_q(targets)


def image_rngs(seed: int, index: int) -> tuple[np.random.Generator, ...]:
    """Independent streams for (findings, nuisance, report, normal anatomy) of one image."""
    children = np.random.SeedSequence([int(seed), int(index)]).spawn(4)
    return tuple(np.random.default_rng(c) for c in children)


def _attribute(
    rng: np.random.Generator, o: Mapping[str, Any], finding: str, key: str, options: tuple, p: tuple | None = None
):
    """``o[key]`` when set (checked to be one of ``options``), else a draw from ``options``."""
    value = o.get(key) or options[int(rng.choice(len(options), p=p))]
    if value not in options:
        raise SemalignError(f"{finding} {key} = {value!r}; use one of {list(options)}")
    return value


def draw_findings(rng: np.random.Generator, mode: str, probs: tuple[float, ...], normal_fraction: float) -> list[str]:
    """The findings of one image (none for a normal one)."""
    if rng.random() < normal_fraction:
        return []
    if mode == "single":
        return [FINDINGS[int(rng.choice(len(FINDINGS), p=probs))]]
    q = np.asarray(probs)
    while True:  # an abnormal image has at least one finding (some q is positive)
        hits = rng.random(len(FINDINGS)) < q
        if hits.any():
            return [f for f, h in zip(FINDINGS, hits) if h]


def _draw_effusion(rng: np.random.Generator, o: Mapping[str, Any], case: dict, model: Model) -> dict[str, Any]:
    side = _attribute(rng, o, "effusion", "side", _EFFUSION_SIDES, (0.4, 0.35, 0.25))
    size = _attribute(rng, o, "effusion", "size", EFFUSION_SIZES, (0.45, 0.35, 0.2))
    return {"side": side, "size": size, "levels": {s: int(rng.integers(2)) for s in SIDES}}


def _draw_opacity(rng: np.random.Generator, o: Mapping[str, Any], case: dict, model: Model) -> dict[str, Any]:
    lobe = _attribute(rng, o, "opacity", "lobe", LOBE_NAMES, _LOBE_WEIGHTS_OPACITY)
    severity = float(o.get("severity", rng.uniform(0.55, 1.0)))
    if not 0.0 < severity <= 1.0:
        raise SemalignError(f"opacity severity = {severity} must be in (0, 1]")
    variant = int(o.get("variant", rng.integers(len(OPACITY_FRACTIONS))))
    if not 0 <= variant < len(OPACITY_FRACTIONS):
        raise SemalignError(f"opacity variant = {variant} must be in 0..{len(OPACITY_FRACTIONS) - 1}")
    return {"lobe": lobe, "side": LOBES[lobe][1], "zone": LOBES[lobe][2], "severity": severity, "variant": variant}


def _draw_nodule(rng: np.random.Generator, o: Mapping[str, Any], case: dict, model: Model) -> dict[str, Any]:
    side = _attribute(rng, o, "nodule", "side", SIDES, (0.52, 0.48))
    size_mm = int(o.get("size_mm", int(round(5 + 25 * rng.random() ** 1.6))))
    if not 5 <= size_mm <= 30:
        raise SemalignError(f"nodule size_mm = {size_mm} must be between 5 and 30")
    cand = model.anatomy.nodule_candidates[side]
    n_ok = int(np.searchsorted(-cand["edt_mm"], -(size_mm / 2.0 + 2.0), side="right"))
    pick = int(rng.integers(max(n_ok, 1)))
    z_mm, x_mm = float(cand["z_mm"][pick]), float(cand["x_mm"][pick])
    lobe = LOBE_NAMES[int(cand["lobe"][pick])]
    top, bottom = model.anatomy.lung_z_extent_mm[side]
    third = (z_mm - top) / max(bottom - top, 1.0)
    zone = "upper" if third < 1 / 3 else ("mid" if third < 2 / 3 else "lower")
    return {"side": side, "size_mm": float(size_mm), "z_mm": z_mm, "x_mm": x_mm, "lobe": lobe, "zone": zone}


def _draw_cardiomegaly(rng: np.random.Generator, o: Mapping[str, Any], case: dict, model: Model) -> dict[str, Any]:
    """The severity, and ``heart``: the index of one of its hearts in ``model.heart``."""
    sev = _attribute(rng, o, "cardiomegaly", "severity", CARDIOMEGALY_SEVERITIES, (0.5, 0.33, 0.17))
    options = [i for i, v in enumerate(model.heart) if v["kind"] == sev]
    return {"severity": sev, "heart": options[int(rng.integers(len(options)))]}


def _draw_pneumothorax(rng: np.random.Generator, o: Mapping[str, Any], case: dict, model: Model) -> dict[str, Any]:
    side = _attribute(rng, o, "pneumothorax", "side", SIDES)
    return {"side": side, "size": _attribute(rng, o, "pneumothorax", "size", PNEUMOTHORAX_SIZES, (0.5, 0.3, 0.2))}


def _draw_atelectasis(rng: np.random.Generator, o: Mapping[str, Any], case: dict, model: Model) -> dict[str, Any]:
    weights = np.array(_LOBE_WEIGHTS_ATELECTASIS)
    if "opacity" in case:  # keep the two in different lobes
        weights[LOBE_NAMES.index(case["opacity"]["lobe"])] = 0.0
    lobe = _attribute(rng, o, "atelectasis", "lobe", LOBE_NAMES, tuple(weights / weights.sum()))
    sev = _attribute(rng, o, "atelectasis", "severity", ATELECTASIS_SEVERITIES, (0.65, 0.35))
    return {"lobe": lobe, "side": LOBES[lobe][1], "zone": LOBES[lobe][2], "severity": sev}


#: One drawer per finding, called in the order of FINDINGS (the order fixes the random stream).
_DRAWERS = {
    "effusion": _draw_effusion,
    "opacity": _draw_opacity,
    "nodule": _draw_nodule,
    "cardiomegaly": _draw_cardiomegaly,
    "pneumothorax": _draw_pneumothorax,
    "atelectasis": _draw_atelectasis,
}


def draw_attributes(
    rng: np.random.Generator,
    anatomy_rng: np.random.Generator,
    present: Iterable[str],
    model: Model,
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Ground-truth attributes of the present findings (``overrides`` fix some),
    the index of the image's heart in ``model.heart`` and its ``ctr``."""
    present = list(present)
    ov = {k: dict(v) if isinstance(v, Mapping) else {} for k, v in (overrides or {}).items()}
    case: dict[str, Any] = {"present": present}
    for finding in FINDINGS:
        if finding in present:
            case[finding] = _DRAWERS[finding](rng, ov.get(finding, {}), case, model)
    if "cardiomegaly" in case:
        case["heart"] = case["cardiomegaly"].pop("heart")
    else:
        options = [i for i, v in enumerate(model.heart) if v["kind"] == "normal"]
        case["heart"] = options[int(anatomy_rng.integers(len(options)))]
    case["ctr"] = float(model.heart[case["heart"]]["ctr"])
    return case


def draw_nuisance(rng: np.random.Generator, strength: float) -> dict[str, float]:
    """Pose, exposure, display and noise of one image, each range scaled by ``strength``."""
    u = rng.uniform(-1.0, 1.0, size=10)
    s = float(strength)
    return {
        "rotation_deg": 4.0 * s * u[0],
        "yaw_deg": 4.0 * s * u[1],
        "pitch_deg": 3.0 * s * u[2],
        "scale_x": 1.0 + 0.08 * s * u[3],
        "scale_y": 1.0 + 0.05 * s * u[4],
        "magnification": 1.01 + 0.07 * s * u[5],
        "shift_row": 0.04 * s * u[6],  # fraction of the field
        "shift_col": 0.04 * s * u[7],
        "exposure": 1.0 + 0.08 * s * u[8],
        "gamma": GAMMA * float(np.exp(0.2 * s * u[9])),
        "photons": float(10 ** rng.uniform(4.0, 5.0)) if s > 0 else math.inf,
        "window_lo": float(rng.uniform(-1.0, 1.0)) * 0.05 * s,
        "window_hi": float(rng.uniform(-1.0, 1.0)) * 0.05 * s,
    }
