"""Embedding extraction ahead of a run: what ``semalign embed`` computes.

For a planned run of ``text_stitching``, ``vision_stitching`` or ``zero_shot``,
:func:`embed_run` loads the data and embeds it with the run's encoders through
the same calls, with the same arguments, as the notebook, so the notebook later
finds every embedding in the content-keyed cache. With ``share=(rank, world)``
it is one of ``world`` processes (``accelerate launch``), each computing its
own blocks (:func:`semalign.models.embed.embed`).
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable
from typing import Any

from semalign.core.errors import SemalignError
from semalign.experiments import inputs
from semalign.models.encoders import OptionalDependencyMissing

EXTRACTED = ("text_stitching", "vision_stitching", "zero_shot")


def _arguments(function: Callable, p: dict) -> dict:
    """The run's parameters that ``function`` takes: the data entries' keywords are the notebooks' parameter names."""
    return {name: p[name] for name in inspect.signature(function).parameters if name in p}


def _text_stitching(p: dict, options: dict, first: Callable) -> None:
    reports, _, test = inputs.report_dataset(**_arguments(inputs.report_dataset, p))
    with first():  # the study-made encoders are trained once, by the first process
        encoders = inputs.text_encoders(p["encoders"], reports, test, medical_scale=p["medical_scale"],
                                        progress=options["progress"])
    inputs.encode_all(reports.ids, reports.texts, encoders, precision=p["precision"],
                      batch_size=p["batch_size"], device=p["device"], allow_remote_code=p["allow_remote_code"],
                      **options)


def _images(p: dict, options: dict, first: Callable, zero_shot: bool = False) -> tuple[Any, Any]:
    data = _arguments(inputs.image_dataset, p)
    if zero_shot:
        evaluation, anchor_pairs = inputs.zero_shot_datasets(anchor_dataset=p["anchor_dataset"],
                                                             max_anchor_pairs=p["max_anchor_pairs"], **data)
    else:
        evaluation, anchor_pairs = inputs.image_dataset(**data), None
    with first():  # the study-made phantom encoders are trained once, by the first process
        encoders = inputs.vision_encoders(evaluation, p["vision_encoders" if zero_shot else "encoders"],
                                          medical_scale=p["medical_scale"], progress=options["progress"])
    settings = dict(precision=p["precision"], batch_size=p["batch_size"], device=p["device"], **options)
    for images in [evaluation] if anchor_pairs is None else [evaluation, anchor_pairs]:
        inputs.encode_all(images.items.ids, images.images, encoders, **settings)
    return evaluation, anchor_pairs


def _zero_shot(p: dict, options: dict, first: Callable) -> None:
    evaluation, anchor_pairs = _images(p, options, first, zero_shot=True)
    pairs = evaluation if anchor_pairs is None else anchor_pairs
    with first():
        text_encoders = inputs.text_encoders(p["text_encoders"], medical_scale=p["medical_scale"],
                                             progress=options["progress"])
    inputs.encode_all(pairs.items.ids, pairs.items.texts, text_encoders, precision=p["precision"],
                      device=p["device"], allow_remote_code=p["allow_remote_code"], **options)
    # The CLIP-style models' image towers on every evaluation image, as the notebook embeds them
    # (inputs.multimodal_embeddings); their prompts are a few dozen texts, left to the notebook.
    for ref in p["multimodal_encoders"]:
        try:
            inputs.multimodal_image_embeddings(evaluation, ref, precision=p["precision"], batch_size=p["batch_size"],
                                               device=p["device"], **options)
        except OptionalDependencyMissing as exc:
            print(f"skipped {ref}: {exc}")


def embed_run(notebook: str, parameters: dict, *, share: tuple[int, int] = (0, 1), progress: bool = True,
              first: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext) -> None:
    """Embed what the run of ``notebook`` with ``parameters`` (as planned by
    :func:`semalign.study.runner.plan`) will embed. ``first()`` is a context in
    which the first process works while the others wait (accelerate's
    ``main_process_first``), for the study-made encoders' training."""
    steps = {"text_stitching": _text_stitching, "vision_stitching": _images, "zero_shot": _zero_shot}
    if notebook not in steps:
        raise SemalignError(f"semalign embed extracts the embeddings of {', '.join(EXTRACTED)}, not {notebook!r}; "
                            "the other notebooks embed nothing worth sharing out")
    steps[notebook](parameters, dict(share=share, progress=progress), first)
