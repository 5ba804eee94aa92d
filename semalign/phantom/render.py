"""One image from a drawn case: sum the maps, add the nodule, pose, expose, display.

A sample is a sum of a few precomputed 2-D maps plus an analytic nodule, then 2-D
nuisance and noise; no 3-D work per image.

Yaw and pitch are approximated by shifting the projections of the anterior and
the posterior halves of the body in opposite directions by ``depth * tan(angle)``
(a first-order parallel-beam approximation; foreshortening is ignored); the
findings move with the body's mid-plane. Rotation, scaling, magnification and
translation are one 2-D affine warp of the summed projection: for the small
angles used this equals the projection of the rotated volume to first order.

A Beer-Lambert transmission ``I = I0 exp(-0.2 L)`` is log-transformed by the
detector, so dense is bright; quantum noise is the Gaussian approximation of
Poisson noise on that log signal. The window and gamma map the line integral to
8-bit grayscale.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from semalign.phantom.findings import SIDES
from semalign.phantom.precompute import Model

_MU_WATER_PER_CM = 0.2  # effective linear attenuation of water at ~60 keV
_MU_NODULE_DELTA = 0.90  # soft tissue minus aerated lung
_LUT_SIZE = 4096


def render(
    model: Model, case: dict[str, Any], nuis: dict[str, float], rng: np.random.Generator
) -> tuple[np.ndarray, dict]:
    """(uint8 image, ``{"nodule_rc": nodule centre in output pixels or None}``);
    ``rng`` draws the quantum noise."""
    extra, nodule_rc = _findings(model, case)
    warped, to_output = _pose(model, extra, nuis)
    image = _display(model, warped, nuis, rng)
    if nodule_rc is None:
        return image, {"nodule_rc": None}
    row, col = to_output(nodule_rc)
    return image, {"nodule_rc": (float(row), float(col))}


def _findings(model: Model, case: dict[str, Any]) -> tuple[np.ndarray, tuple[float, float] | None]:
    """(the sum of the heart's and the findings' maps with the nodule, nodule centre on the grid)."""
    extra = model.heart[case["heart"]]["map"].copy()
    if "effusion" in case:
        e = case["effusion"]
        for s in SIDES if e["side"] == "bilateral" else (e["side"],):
            extra += model.findings["effusion", s, e["size"], e["levels"][s]]
    if "opacity" in case:
        o = case["opacity"]
        extra += np.float32(o["severity"]) * model.findings["opacity", o["lobe"], o["variant"]]
    for finding, attributes in (("pneumothorax", ("side", "size")), ("atelectasis", ("lobe", "severity"))):
        if finding in case:
            extra += model.findings[(finding, *(case[finding][a] for a in attributes))]
    nodule_rc = None
    if "nodule" in case:
        n = case["nodule"]
        row = (n["z_mm"] - model.origin_mm[0]) / model.pix_mm - 0.5
        col = (n["x_mm"] - model.origin_mm[1]) / model.pix_mm - 0.5
        _add_nodule(model, extra, row, col, n["size_mm"])
        nodule_rc = (row, col)
    return extra, nodule_rc


def _add_nodule(model: Model, target: np.ndarray, row: float, col: float, size_mm: float) -> None:
    """Add the projected sphere (with the same unsharp mask as the other maps)."""
    amount, sigma_px = model.usm
    radius_px = 0.5 * size_mm / model.pix_mm
    reach = radius_px + 3.0 * sigma_px + 2
    r0, r1 = max(math.floor(row - reach), 0), min(math.ceil(row + reach), target.shape[0])
    c0, c1 = max(math.floor(col - reach), 0), min(math.ceil(col + reach), target.shape[1])
    if r1 <= r0 or c1 <= c0:
        return
    rr = np.arange(r0, r1)[:, None] - row
    cc = np.arange(c0, c1)[None, :] - col
    rho2 = (rr**2 + cc**2) * model.pix_mm**2
    chord_cm = 2.0 * np.sqrt(np.maximum((size_mm / 2.0) ** 2 - rho2, 0.0)) / 10.0
    blob = (_MU_NODULE_DELTA * chord_cm).astype(np.float32)
    blob = blob + amount * (blob - ndi.gaussian_filter(blob, sigma_px, mode="constant"))
    target[r0:r1, c0:c1] += blob


def _pose(
    model: Model, extra: np.ndarray, nuis: dict[str, float]
) -> tuple[np.ndarray, Callable[[tuple[float, float]], np.ndarray]]:
    """(the posed line integral on the output grid, the map from a point of the
    precomputed grid to output pixels)."""
    B = model.size
    # yaw / pitch: opposite shifts of the anterior and posterior slabs
    ty = math.tan(math.radians(nuis["yaw_deg"]))
    tp = math.tan(math.radians(nuis["pitch_deg"]))
    da, dp = model.slab_shift_px
    total = _shift(model.base_ant, da * tp, da * ty) + _shift(model.base_post, dp * tp, dp * ty) + extra

    # in-plane rotation, habitus scaling, magnification, translation: one affine warp
    theta = math.radians(nuis["rotation_deg"])
    sy = nuis["scale_y"] * nuis["magnification"]
    sx = nuis["scale_x"] * nuis["magnification"]
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    forward = rot @ np.diag([sy, sx])  # grid offset from centre -> output offset from centre
    inverse = np.linalg.inv(forward)
    centre_out = np.array([(B - 1) / 2.0, (B - 1) / 2.0])
    centre_in = centre_out + model.margin
    shift = np.array([nuis["shift_row"], nuis["shift_col"]]) * B
    offset = centre_in - inverse @ (centre_out + shift)

    def to_output(point: tuple[float, float]) -> np.ndarray:
        return forward @ (np.asarray(point) - centre_in) + centre_out + shift

    if np.allclose(inverse, np.eye(2)) and np.allclose(shift, 0.0):
        m = model.margin
        return total[m : m + B, m : m + B], to_output
    return _affine_bilinear(total, inverse, offset, B), to_output


def _display(model: Model, line_integral: np.ndarray, nuis: dict[str, float], rng: np.random.Generator) -> np.ndarray:
    """Exposure, quantum noise, window and gamma: the uint8 film."""
    line = line_integral * np.float32(nuis["exposure"])
    if math.isfinite(nuis["photons"]):
        # Poisson counts N0 exp(-mu L) -> std of the log-transformed signal, in water-cm
        scale = np.float32(1.0 / (math.sqrt(nuis["photons"]) * _MU_WATER_PER_CM))
        sigma = np.exp(np.float32(0.5 * _MU_WATER_PER_CM) * line) * scale
        line += sigma * rng.standard_normal(line.shape, dtype=np.float32)
    lo, hi = model.window
    width = hi - lo
    lo = lo + nuis["window_lo"] * width
    hi = hi + nuis["window_hi"] * width
    # window + gamma through a look-up table
    lut = np.rint(np.linspace(0.0, 1.0, _LUT_SIZE) ** nuis["gamma"] * 255.0).astype(np.uint8)
    q = (line - np.float32(lo)) * np.float32((_LUT_SIZE - 1) / (hi - lo))
    np.clip(q, 0, _LUT_SIZE - 1, out=q)
    return lut[(q + np.float32(0.5)).astype(np.int32)]


def _shift(image: np.ndarray, dr: float, dc: float) -> np.ndarray:
    """Bilinear sub-pixel translation (content moves by +dr, +dc), edges replicated."""
    if dr == 0.0 and dc == 0.0:
        return image
    n, m = image.shape
    ir, ic = math.floor(dr), math.floor(dc)
    fr, fc = np.float32(dr - ir), np.float32(dc - ic)
    rows, cols = np.arange(n), np.arange(m)
    out = image.take(np.clip(rows - ir, 0, n - 1), axis=0)
    if fr:
        nxt = image.take(np.clip(rows - ir - 1, 0, n - 1), axis=0)
        out = out + fr * (nxt - out)
    first = out.take(np.clip(cols - ic, 0, m - 1), axis=1)
    if fc:
        nxt = out.take(np.clip(cols - ic - 1, 0, m - 1), axis=1)
        first = first + fc * (nxt - first)
    return first


def _affine_bilinear(image: np.ndarray, inverse: np.ndarray, offset: np.ndarray, size: int) -> np.ndarray:
    """``out[o] = image[inverse @ o + offset]`` with bilinear interpolation and edges
    replicated (as ``scipy.ndimage.affine_transform(order=1, mode="nearest")``, with
    the index arithmetic in float32)."""
    n, m = image.shape
    o = np.arange(size, dtype=np.float32)
    rr = np.float32(inverse[0, 0]) * o[:, None] + (np.float32(inverse[0, 1]) * o[None, :] + np.float32(offset[0]))
    cc = np.float32(inverse[1, 0]) * o[:, None] + (np.float32(inverse[1, 1]) * o[None, :] + np.float32(offset[1]))
    np.clip(rr, 0.0, n - 1.0001, out=rr)
    np.clip(cc, 0.0, m - 1.0001, out=cc)
    r0 = rr.astype(np.int32)
    c0 = cc.astype(np.int32)
    rr -= r0
    cc -= c0
    idx = r0 * m + c0
    flat = image.ravel()
    a, b = flat.take(idx), flat.take(idx + 1)
    c, d = flat.take(idx + m), flat.take(idx + m + 1)
    top = a + cc * (b - a)
    bottom = c + cc * (d - c)
    return top + rr * (bottom - top)
