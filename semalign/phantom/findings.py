"""The findings the phantom can show: their names, prevalence, grades and the lobes.

Every other module of the phantom reads its vocabulary from here, so a grade
added here (a size, a severity) is drawn, rendered, labelled and reported alike.
"""

from __future__ import annotations

FINDINGS: tuple[str, ...] = ("effusion", "opacity", "nodule", "cardiomegaly", "pneumothorax", "atelectasis")

#: Marginal prevalence of each finding over all images (normal ones included).
DEFAULT_PREVALENCE: dict[str, float] = {
    "effusion": 0.20,
    "opacity": 0.20,
    "nodule": 0.15,
    "cardiomegaly": 0.20,
    "pneumothorax": 0.10,
    "atelectasis": 0.15,
}

LOBES: dict[str, tuple[str, str, str]] = {
    # key: (structure name in structures.csv, side, zone)
    "right upper lobe": ("lung_upper_lobe_right", "right", "upper"),
    "right middle lobe": ("lung_middle_lobe_right", "right", "mid"),
    "right lower lobe": ("lung_lower_lobe_right", "right", "lower"),
    "left upper lobe": ("lung_upper_lobe_left", "left", "upper"),
    "left lower lobe": ("lung_lower_lobe_left", "left", "lower"),
}
LOBE_NAMES = tuple(LOBES)
SIDES = ("right", "left")

#: Fluid level above the lowest lung point, two heights per size.
EFFUSION_HEIGHTS_MM = {"small": (20.0, 28.0), "moderate": (45.0, 60.0), "large": (85.0, 110.0)}
EFFUSION_SIZES = tuple(EFFUSION_HEIGHTS_MM)
#: Linear scale of the collapsed lung.
PNEUMOTHORAX_SCALE = {"small": 0.88, "moderate": 0.76, "large": 0.62}
PNEUMOTHORAX_SIZES = tuple(PNEUMOTHORAX_SCALE)
#: Linear scale of the collapsed lobe and the mediastinal shift towards it.
ATELECTASIS_SCALE = {"mild": 0.72, "severe": 0.5}
ATELECTASIS_SHIFT_MM = {"mild": 3.0, "severe": 6.0}
ATELECTASIS_SEVERITIES = tuple(ATELECTASIS_SCALE)
#: Cardiothoracic ratios aimed at, two hearts per severity.
CARDIOMEGALY_TARGETS = {"mild": (0.53, 0.56), "moderate": (0.59, 0.62), "severe": (0.66, 0.70)}
CARDIOMEGALY_SEVERITIES = tuple(CARDIOMEGALY_TARGETS)
#: Cardiothoracic ratios of the reduced hearts that normal studies get; the middle one is the default.
NORMAL_HEART_TARGETS = (0.42, 0.45, 0.48)
#: Fraction of its lobe that one consolidation patch covers.
OPACITY_FRACTIONS = (0.4, 0.6, 0.85)
