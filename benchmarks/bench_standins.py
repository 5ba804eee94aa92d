"""Do the study-made medical text encoder's training steps buy it a domain
advantage? Builds ``radiology-bert`` with its training steps multiplied (the
offline profile's IU reports, its split and training reports), and scores each
with its own decoder on the validation reports, beside the general encoders
(MiniLM, MPNet) scored the same way in the same run. Writes
``<work>/benchmarks/standins.json``, which the book's appendix renders.

    python benchmarks/bench_standins.py [--multipliers 1 2 4]

A multiplier of 1 is the default encoder (found in the cache when the study has
run); each other one trains a new encoder (cached too). The printed ratio is
radiology-bert's chance-corrected validation score over the best general
encoder's: above 1 means the stand-in knows the task better.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from semalign.data import reports as data  # noqa: E402
from semalign.experiments import inputs  # noqa: E402
from semalign.experiments.stitching import StitchingSetup, score, trained_decoder  # noqa: E402
from semalign.models.radiology_bert import RadiologyBertConfig, radiology_bert_spec  # noqa: E402
from semalign.core.paths import work_dir  # noqa: E402

GENERAL = ("minilm", "mpnet")


def decoder_scores(embeddings: dict, labels, fit, validation, test) -> dict[str, dict[str, float]]:
    """Each encoder's macro-AUROC with its own decoder (strength chosen on validation), as the sweeps train it."""
    setup = StitchingSetup(embeddings=embeddings, labels=labels, train=fit, validation=validation, test=test,
                           transform="ortho", anchor_counts=[1], seeds=[0])
    out = {}
    for name, x in embeddings.items():
        decoder = trained_decoder(setup, name)
        out[name] = {split: score(labels[rows], decoder.predict_proba(x[rows]))["macro_auroc"]
                     for split, rows in (("validation", validation), ("test", test))}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--multipliers", type=float, nargs="+", default=[1.0, 2.0, 4.0])
    args = parser.parse_args()
    reports, train, test = inputs.report_dataset("iu_xray", data_root="", uncertain="zeros", text_column="text",
                                                 label_columns=[], max_reports=0, test_fraction=0.3, split_seed=0,
                                                 split="seeded")
    fit, validation = data.validation_split(train, 0.2, 0)
    labels = reports.task_labels("multilabel").to_numpy()
    general = inputs.encode_all(reports.ids, reports.texts, list(GENERAL), progress=False)
    rows = [{"encoder": name, **scores} for name, scores in decoder_scores(general, labels, fit, validation,
                                                                               test).items()]
    training = inputs.medical_training_reports(reports, test)
    default = RadiologyBertConfig()
    for multiplier in args.multipliers:
        config = dataclasses.replace(default, mlm_steps=round(default.mlm_steps * multiplier),
                                     contrastive_steps=round(default.contrastive_steps * multiplier))
        start = time.perf_counter()
        spec = radiology_bert_spec(training, config, progress=False)
        embedded = inputs.encode_all(reports.ids, reports.texts, [spec], progress=False)
        built = time.perf_counter() - start
        scores = decoder_scores(embedded, labels, fit, validation, test)["radiology-bert"]
        rows.append({"encoder": f"radiology-bert, steps ×{multiplier:g}", **scores, "build_s": round(built, 1),
                     "mlm_steps": config.mlm_steps, "contrastive_steps": config.contrastive_steps})
    best = max(r["validation"] for r in rows if r["encoder"] in GENERAL)
    for row in rows:
        row["ratio_to_best_general"] = round((row["validation"] - 0.5) / (best - 0.5), 4)
    report = {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
              "rows": rows}
    out = work_dir() / "benchmarks" / "standins.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    for row in rows:
        print(f"{row['encoder']:32} validation {row['validation']:.4f}  test {row['test']:.4f}  "
              f"ratio to the best general encoder {row['ratio_to_best_general']:.3f}"
              + (f"  built in {row['build_s']:.0f} s" if "build_s" in row else ""))


if __name__ == "__main__":
    main()
