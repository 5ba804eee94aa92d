"""The report grammar: the phrases of each finding and how a report is put together.

Each image gets a report ``"FINDINGS: <sentences> IMPRESSION: <sentences>"``
(``report_format="sections"``, default), or only the findings sentences
(``"findings"``) or the impression (``"impression"``). Present findings are
stated (sometimes hedged) with side and size words matching the ground truth;
absent findings are either not mentioned or negated; sentence order varies.
Normal studies get normal phrasings.

The phrases are data: templates whose ``{word}`` fields are filled from the label
row. ``{Word}`` is the word with a capital first letter, ``{a_word}`` its
indefinite article and ``{A_word}`` that article capitalised.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

from semalign.core.errors import SemalignError
from semalign.phantom.findings import FINDINGS

REPORT_FORMATS = ("sections", "findings", "impression")


class Phrases(NamedTuple):
    """Templates for a present finding: stated plainly, hedged, and in the impression."""

    positive: tuple[str, ...]
    hedged: tuple[str, ...]
    impression: tuple[str, ...]


#: (finding, variant) -> phrases; the variant is chosen by :func:`_words`.
STATEMENTS: dict[tuple[str, str], Phrases] = {
    ("effusion", "bilateral"): Phrases(
        positive=(
            "There are {size} bilateral pleural effusions.",
            "{Size} bilateral pleural effusions.",
            "{Size} bilateral pleural effusions are present.",
            "{Size} bilateral pleural effusions with blunting of both costophrenic angles.",
            "Bilateral pleural effusions, {size} in size.",
            "Blunting of both costophrenic angles with menisci, consistent with {size} bilateral pleural effusions.",
            "{Size} amount of pleural fluid bilaterally (bilateral effusions).",
        ),
        hedged=(
            "Probable {size} bilateral pleural effusions.",
            "Possible {size} bilateral pleural effusions.",
            "Likely {size} bilateral pleural effusions.",
            "Suspected {size} bilateral pleural effusions.",
        ),
        impression=("{Size} bilateral pleural effusions.", "Bilateral pleural effusions, {size}."),
    ),
    ("effusion", "one side"): Phrases(
        positive=(
            "There is {a_size} {size} {side} pleural effusion.",
            "{Size} {side} pleural effusion.",
            "{A_size} {size} {side} pleural effusion is present.",
            "{Size} {side} pleural effusion with blunting of the {side} costophrenic angle.",
            "{Side} pleural effusion, {size} in size.",
            "Blunting of the {side} costophrenic angle with a meniscus, "
            "consistent with {a_size} {size} {side} pleural effusion.",
            "{Size} amount of {side} pleural fluid.",
        ),
        hedged=(
            "Probable {size} {side} pleural effusion.",
            "Possible {size} {side} pleural effusion.",
            "Likely {size} {side} pleural effusion.",
            "Suspected {size} {side} pleural effusion.",
            "There may be {a_size} {size} {side} pleural effusion.",
        ),
        impression=("{Size} {side} pleural effusion.", "{Side} pleural effusion, {size}."),
    ),
    ("opacity", ""): Phrases(
        positive=(
            "There is {dens} consolidation in the {lobe}.",
            "{Dens} {lobe} consolidation.",
            "{Dens} airspace opacity in the {lobe}.",
            "Focal airspace disease in the {side} {zone} zone.",
            "{Dens} opacity is noted in the {side} {zone} lung zone.",
            "Consolidation of the {lobe} with air bronchograms.",
            "There is {a_dens} {dens} {side} {zone} zone airspace opacity.",
            "{Lobe} airspace consolidation.",
        ),
        hedged=(
            "{Dens} opacity in the {lobe} may represent pneumonia.",
            "Possible consolidation in the {lobe}.",
            "{Side} {zone} zone opacity, likely pneumonia.",
            "Airspace opacity in the {lobe}, concerning for pneumonia.",
        ),
        impression=(
            "{Lobe} consolidation.",
            "{Lobe} consolidation, likely pneumonia.",
            "{Side} {zone} zone airspace disease.",
        ),
    ),
    ("nodule", ""): Phrases(
        positive=(
            "There is {a_size} {size} nodule in the {side} {zone} lung zone.",
            "{A_size} {size} {side} {zone} zone pulmonary nodule is noted.",
            "{Size} nodule projecting over the {side} {zone} lung.",
            "Rounded {size} density in the {side} {zone} zone, compatible with a pulmonary nodule.",
            "Solitary pulmonary nodule in the {lobe}, measuring {size}.",
            "{Side} {zone} zone nodule measuring {size}.",
            "A well-circumscribed {size} nodule is seen in the {lobe}.",
        ),
        hedged=(
            "Possible {size} nodule in the {side} {zone} zone.",
            "{Size} nodular density in the {lobe}, likely a pulmonary nodule.",
        ),
        impression=(
            "{Size} {side} {zone} zone pulmonary nodule; CT recommended.",
            "{Side} lung nodule ({size}).",
            "{Size} nodule in the {lobe}.",
        ),
    ),
    ("cardiomegaly", ""): Phrases(
        positive=(
            "The heart is {adv} enlarged.",
            "{Adj} cardiomegaly.",
            "Cardiomegaly, {adj}.",
            "The cardiac silhouette is {adv} enlarged (cardiothoracic ratio about {ctr:.2f}).",
            "{Adv} enlarged cardiac silhouette, consistent with {adj} cardiomegaly.",
            "There is {adj} enlargement of the cardiac silhouette.",
            "{Adj} cardiomegaly with a cardiothoracic ratio of {ctr:.2f}.",
        ),
        hedged=("The heart appears {adv} enlarged.", "{Adj} cardiomegaly is suspected."),
        impression=("{Adj} cardiomegaly.", "Cardiomegaly ({adj})."),
    ),
    ("pneumothorax", ""): Phrases(
        positive=(
            "There is {a_size} {size} {side} pneumothorax.",
            "{Size} {side} apical pneumothorax.",
            "{A_size} {size} {side}-sided pneumothorax is present, "
            "with the visceral pleural line displaced from the chest wall.",
            "{Side} pneumothorax, {size} in size.",
            "{Size} {side} pneumothorax with absent lung markings peripherally.",
            "Visceral pleural line at the {side} apex, consistent with {a_size} {size} {side} pneumothorax.",
        ),
        hedged=("Probable {size} {side} pneumothorax.", "Suspected {size} {side} pneumothorax."),
        impression=("{Size} {side} pneumothorax.", "{Side} pneumothorax ({size})."),
    ),
    ("atelectasis", "severe"): Phrases(
        positive=(
            "Collapse of the {lobe}.",
            "{Lobe} collapse with volume loss.",
            "There is complete atelectasis of the {lobe}, with shift of the mediastinum to the {side}.",
            "{Lobe} atelectasis with marked volume loss.",
            "Lobar collapse of the {lobe}.",
        ),
        hedged=("Probable {lobe} atelectasis.", "Findings likely represent {lobe} atelectasis."),
        impression=("{Lobe} collapse.", "Atelectasis of the {lobe} (lobar collapse)."),
    ),
    ("atelectasis", "mild"): Phrases(
        positive=(
            "{Lobe} atelectasis.",
            "There is atelectasis of the {lobe} with mild volume loss.",
            "Volume loss in the {lobe}, consistent with atelectasis.",
            "Partial atelectasis of the {lobe}.",
            "Mild volume loss of the {lobe}.",
        ),
        hedged=("Probable {lobe} atelectasis.", "Findings likely represent {lobe} atelectasis."),
        impression=("{Lobe} atelectasis.", "Partial {lobe} atelectasis."),
    ),
}

#: Sentences that state a finding is absent.
NEGATIONS: dict[str, tuple[str, ...]] = {
    "effusion": (
        "No pleural effusion.",
        "There is no pleural effusion.",
        "No pleural effusion is seen.",
        "No evidence of pleural effusion.",
        "Negative for pleural effusion.",
        "No pleural effusions.",
    ),
    "opacity": (
        "No focal consolidation.",
        "There is no focal airspace consolidation.",
        "No consolidation is seen.",
        "No focal airspace opacity.",
        "No airspace consolidation.",
        "There is no consolidation.",
    ),
    "nodule": (
        "No pulmonary nodules.",
        "No suspicious pulmonary nodule is identified.",
        "No nodules are seen.",
        "There is no pulmonary nodule.",
        "No focal nodule.",
    ),
    "cardiomegaly": (
        "Heart size is normal.",
        "The heart is not enlarged.",
        "Normal heart size.",
        "The cardiac silhouette is normal in size.",
        "No cardiomegaly.",
        "The cardiomediastinal silhouette is within normal limits.",
    ),
    "pneumothorax": (
        "No pneumothorax.",
        "There is no pneumothorax.",
        "No pneumothorax is seen.",
        "No evidence of pneumothorax.",
        "Negative for pneumothorax.",
    ),
    "atelectasis": ("No atelectasis.", "There is no atelectasis.", "No lobar collapse.", "No focal atelectasis."),
}
_LUNGS_CLEAR = ("The lungs are clear.", "Lungs are clear bilaterally.", "The lungs are well expanded and clear.")
_MISC_NORMAL = (
    "The osseous structures are unremarkable.",
    "No acute osseous abnormality.",
    "The visualized bones are intact.",
    "The mediastinal contours are normal.",
    "The trachea is midline.",
)
_IMPRESSION_NORMAL = (
    "No acute cardiopulmonary abnormality.",
    "No acute cardiopulmonary process.",
    "Normal chest radiograph.",
    "No radiographic evidence of acute disease.",
)
_IMPRESSION_TAIL = ("No other acute abnormality.", "No other acute cardiopulmonary finding.")
_LUNG_FINDINGS = {"effusion", "opacity", "nodule", "pneumothorax", "atelectasis"}
_SEVERITY_ADJECTIVE = {"mild": "mild", "moderate": "moderate", "severe": "marked"}
_SEVERITY_ADVERB = {"mild": "mildly", "moderate": "moderately", "severe": "markedly"}


#: finding -> the label attributes its templates name as they are (``{side}`` is ``<finding>_side``).
_NAMED = {
    "effusion": ("side", "size"),
    "opacity": ("lobe", "side", "zone"),
    "nodule": ("side", "zone", "lobe"),
    "cardiomegaly": (),
    "pneumothorax": ("side", "size"),
    "atelectasis": ("lobe", "side"),
}


def _words(finding: str, r: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """(the variant of ``finding``'s phrases, the words for their fields) from the label row ``r``."""
    words = {key: r[f"{finding}_{key}"] for key in _NAMED[finding]}
    variant = ""
    if finding == "effusion":
        variant = "bilateral" if r["effusion_side"] == "bilateral" else "one side"
    elif finding == "opacity":
        severity = float(r["opacity_severity"])
        words["dens"] = "dense" if severity >= 0.8 else ("patchy" if severity >= 0.65 else "hazy")
    elif finding == "nodule":
        n = int(round(float(r["nodule_size_mm"])))
        words["size"] = f"{n} mm" if (n < 10 or n % 10 == 5 or n % 2) else f"{n / 10:.1f} cm"
    elif finding == "cardiomegaly":
        severity = r["cardiomegaly_severity"]
        words.update(adj=_SEVERITY_ADJECTIVE[severity], adv=_SEVERITY_ADVERB[severity], ctr=float(r["ctr"]))
    elif finding == "atelectasis":
        variant = "severe" if r["atelectasis_severity"] == "severe" else "mild"
    return variant, words


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def _fields(words: Mapping[str, Any]) -> dict[str, Any]:
    """The template fields of ``words``: each word, capitalised, and with its article."""
    out = dict(words)
    for key, word in words.items():
        if isinstance(word, str):
            out[_cap(key)] = _cap(word)
            out[f"a_{key}"] = _article(word)
            out[f"A_{key}"] = _cap(_article(word))
    return out


def phrases_for(finding: str, labels: Mapping[str, Any]) -> Phrases:
    """The phrases stating a present ``finding``, filled in from the label row ``labels``."""
    variant, words = _words(finding, labels)
    fields = _fields(words)
    return Phrases(*(tuple(t.format(**fields) for t in templates) for templates in STATEMENTS[(finding, variant)]))


def _pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def _sentences(labels: Mapping[str, Any], present: list[str], rng: np.random.Generator) -> tuple[list[str], list[str]]:
    """(findings sentences, impression sentences) of the findings, before the normal phrases."""
    findings: list[str] = []
    impression: list[str] = []
    for f in FINDINGS:
        if f in present:
            phrases = phrases_for(f, labels)
            findings.append(_pick(rng, phrases.hedged) if rng.random() < 0.2 else _pick(rng, phrases.positive))
            impression.append(_pick(rng, phrases.impression))
        elif rng.random() < 0.6:
            findings.append(_pick(rng, NEGATIONS[f]))
    return findings, impression


def make_report(
    labels: Mapping[str, Any], *, rng: np.random.Generator | int = 0, report_format: str = "sections"
) -> str:
    """A free-text report for one label row (a dict or a ``labels`` DataFrame row).

    Present findings are stated with their side/size words (hedged ~20 % of the
    time); an absent finding is negated with probability 0.6, otherwise not
    mentioned. ``rng`` is a Generator or an int seed; sentence order is shuffled.
    """
    if report_format not in REPORT_FORMATS:
        raise SemalignError(f"report_format = {report_format!r}; use one of {list(REPORT_FORMATS)}")
    if not isinstance(rng, np.random.Generator):
        rng = np.random.default_rng(int(rng))
    present = [f for f in FINDINGS if bool(labels.get(f, False))]
    findings, impression = _sentences(labels, present, rng)
    if not _LUNG_FINDINGS & set(present) and rng.random() < 0.8:
        findings.append(_pick(rng, _LUNGS_CLEAR))
    shifted = "atelectasis" in present  # the mediastinum may be displaced
    misc = tuple(m for m in _MISC_NORMAL if not (shifted and ("mediastin" in m or "trachea" in m)))
    if rng.random() < 0.5:
        findings.append(_pick(rng, misc))
    if not findings:  # only possible for a normal study
        findings.append(_pick(rng, _LUNGS_CLEAR))
    findings = [findings[i] for i in rng.permutation(len(findings))]
    if present:
        impression = [impression[i] for i in rng.permutation(len(impression))]
        if rng.random() < 0.3:
            impression.append(_pick(rng, _IMPRESSION_TAIL))
    else:
        impression = [_pick(rng, _IMPRESSION_NORMAL)]
    if report_format == "findings":
        return " ".join(findings)
    if report_format == "impression":
        return " ".join(impression)
    return "FINDINGS: " + " ".join(findings) + " IMPRESSION: " + " ".join(impression)
