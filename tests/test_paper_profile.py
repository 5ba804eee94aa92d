"""The paper profile, offline: the paper's datasets in their real layouts (small
fixtures) and tiny randomly initialised Hugging Face models saved to folders,
run through the same notebooks and the runner as the offline profile.

The fast tests cover the dataset switching in :mod:`semalign.experiments.inputs`; the
slow ones execute text stitching (MIMIC-CXR reports), vision stitching (RSNA
DICOMs) and zero-shot (RSNA, with MIMIC-CXR image-report anchors and a CLIP)
with ``semalign run ... --profile paper`` and check the recorded results, and
that no fixture report sentence reaches an executed notebook or a results file.
"""

from __future__ import annotations

import importlib.util
import json
import types

import numpy as np
import pandas as pd
import pytest

from semalign.data import reports as data

from semalign.experiments import inputs as experiments

from semalign.data import paper as paper_data
from semalign.core.errors import SemalignError
from semalign.data.images import load_image

from conftest import semalign_cli  # tests/ is on sys.path
from paper_fixtures import (
    STUDY_LABELS, make_all_fixtures, make_study_fixtures, make_tiny_bert, make_tiny_clip, make_tiny_vit,
)

HAS_OPEN_CLIP = importlib.util.find_spec("open_clip") is not None
BIOMEDCLIP = "microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224"


@pytest.fixture(scope="module")
def study_root(tmp_path_factory):
    """MIMIC-CXR (36 patients, 72 studies) and RSNA (48 DICOMs) under one data_root."""
    return make_study_fixtures(tmp_path_factory.mktemp("paper-study"))


# ============================================================================ datasets by parameter
def test_mimic_reports_split_by_patient_official_or_seeded(study_root):
    root, _ = study_root
    reports, train, test = experiments.report_dataset("mimic_cxr", data_root=root, split="official")
    assert len(reports) == 72 and list(reports.labels.columns) == STUDY_LABELS
    official = reports.extra["split"].to_numpy()
    assert set(official[test]) == {"test"} and set(official[train]) == {"train", "validate"}
    subjects = reports.extra["subject_id"].to_numpy()
    for split in ("official", "seeded"):
        train, test = experiments.report_dataset("mimic_cxr", data_root=root, split=split, test_fraction=0.3, split_seed=1)[1:]
        assert len(train) + len(test) == 72 and not set(subjects[train]) & set(subjects[test])
    ignored = experiments.report_dataset("mimic_cxr", data_root=root, uncertain="ignore", max_reports=30)[0]
    assert len(ignored) == 30 and ignored.dropped[paper_data.UNCERTAIN] > 0


def test_table_datasets_keep_the_offline_rule(tmp_path):
    table = pd.DataFrame({"text": [f"report {k}" for k in range(40)], "y": [k % 2 for k in range(40)]})
    table.to_csv(tmp_path / "r.csv", index=False)
    reports, train, test = experiments.report_dataset(str(tmp_path / "r.csv"), label_columns=["y"], max_reports=30, split_seed=2)
    expected = data.subsample(data.load_reports(str(tmp_path / "r.csv"), "text", ["y"]), 30, 2)
    assert reports.ids == expected.ids
    assert all(np.array_equal(a, b) for a, b in zip((train, test), data.split_indices(30, 0.3, 2)))


def test_rsna_images_stream_lazily_with_patient_split(study_root):
    root, _ = study_root
    images = experiments.image_dataset("rsna_pneumonia", data_root=root, image_size=24, split="official", workers=3)
    assert len(images) == 48 and list(images.items.labels.columns) == ["Pneumonia"]
    assert isinstance(images.images, experiments.LazyImages) and images.items.task_labels("binary").shape == (48, 1)
    assert len(images.train) + len(images.test) == 48 and not set(images.train) & set(images.test)  # no official split
    table = paper_data.load_images("rsna_pneumonia", root)
    order = [5, 6, 7, 0, 1, 47, 2]  # forwards, backwards, the end: read-ahead never returns the wrong image
    for i in order:
        got = images.images[i]
        assert got.shape == (24, 24) and got.dtype == np.uint8
        assert np.array_equal(got, load_image(table.paths[i], 24))
    sick = images.items.labels["Pneumonia"].to_numpy() == 1
    brightness = np.array([images.images[i][4:8, 3:7].mean() for i in range(48)])
    assert 0 < sick.sum() < 48 and brightness[sick].min() > brightness[~sick].max()  # the label is in the pixels


def test_images_in_files_are_decoded_once_cold_and_never_warm(study_root, tmp_path, monkeypatch):
    """Images in files are identified by their bytes, not their decoded pixels,
    so the hashing pass that names a cache entry decodes nothing; a changed file
    (or read size) is another entry."""
    from semalign.models.embed import embed

    root, _ = study_root
    monkeypatch.setenv("SEMALIGN_CACHE", str(tmp_path / "cache"))
    decoded = []
    real_load = experiments.load_image
    monkeypatch.setattr(experiments, "load_image", lambda path, size: decoded.append(path) or real_load(path, size))
    images = experiments.image_dataset("rsna_pneumonia", data_root=root, image_size=32, split="official", workers=1)
    vit = f"hf-vision:{make_tiny_vit(tmp_path / 'vit')}"
    cold = embed(vit, images.items.ids, images.images, progress=False)
    assert sorted(decoded) == sorted(images.images.paths)  # each image once
    decoded.clear()
    assert np.array_equal(embed(vit, images.items.ids, images.images, progress=False), cold)
    assert decoded == []  # warm: nothing decoded
    first = images.images.item_digest(0)
    assert experiments.LazyImages(images.images.paths, 24).item_digest(0) != first
    changed = tmp_path / "changed.dcm"
    changed.write_bytes(images.images.paths[0].read_bytes()[:-2] + b"\x01\x02")
    assert experiments.LazyImages([changed], 32).item_digest(0) != first


def test_mimic_images_pair_with_their_reports_and_vindr_normal(study_root, tmp_path):
    root, sentences = study_root
    paired = experiments.image_dataset("mimic_cxr", data_root=root, with_reports=True, split="official")
    reports = paper_data.load_reports("mimic_cxr", root)
    by_study = dict(zip(reports.ids, reports.texts))
    table = paper_data.load_images("mimic_cxr", root)
    assert paired.items.texts == [by_study[s] for s in table.studies] and len(paired) == 72  # frontal only
    pool = paired.training_pairs(max_items=20, seed=0)
    assert len(pool) == 20 and list(pool.train) == list(range(20)) and len(pool.test) == 0
    assert set(pool.items.ids) <= {paired.items.ids[i] for i in paired.train}
    vindr = experiments.image_dataset("vindr_cxr", data_root=make_all_fixtures(tmp_path), split="official")
    assert "normal" in vindr.items.labels and "No finding" not in vindr.items.labels
    assert vindr.items.task_labels("binary").columns.tolist() == ["abnormal"]


def test_zero_shot_anchors_come_from_another_dataset(study_root):
    root, _ = study_root
    evaluation, anchors = experiments.zero_shot_datasets("rsna_pneumonia", "mimic_cxr", max_anchor_pairs=25,
                                                         data_root=root, label_columns=["Pneumonia"], split="official")
    assert len(evaluation) == 48 and len(anchors) == 25 and all(anchors.items.texts)
    assert anchors.items.name == "MIMIC-CXR-JPG" and evaluation.items.name == "RSNA Pneumonia"
    same, none = experiments.zero_shot_datasets("mimic_cxr", "", data_root=root)
    assert none is None and all(same.items.texts)


@pytest.mark.parametrize("call, message", [
    (lambda root: experiments.zero_shot_datasets("rsna_pneumonia", data_root=root), r"no reports.*anchor_dataset=mimic_cxr"),
    (lambda root: experiments.report_dataset("rsna_pneumonia", data_root=root), r"has images but no reports"),
    (lambda root: experiments.image_dataset("nih", data_root=root), r"unknown image dataset 'nih'; use phantom or one of"),
    (lambda root: experiments.image_dataset("rsna_pneumonia", data_root=root, split="random"), r"split='random'.*seeded, official"),
    (lambda root: experiments.report_dataset("mimic_cxr", data_root=""), r"data_root is not set"),
    (lambda root: experiments.report_dataset("mimic_cxr", data_root=root / "nowhere"), r"paper dataset 'mimic_cxr' .* is missing"),
    (lambda root: experiments.image_embeddings(experiments.image_dataset("rsna_pneumonia", data_root=root),
                                               ["phantom-ssl"]), r"phantom-ssl is trained on the phantom"),
])
def test_dataset_errors_are_one_line(study_root, call, message):
    with pytest.raises(SemalignError, match=message) as info:
        call(study_root[0])
    assert "\n" not in str(info.value)


# ============================================================================ notebooks, paper profile
@pytest.fixture(scope="module")
def paper_run(study_root, tmp_path_factory):
    """text_stitching, vision_stitching and zero_shot executed with --profile paper
    on the fixtures and tiny models, in an isolated work folder and cache."""
    root, sentences = study_root
    models = tmp_path_factory.mktemp("models")
    bert = [make_tiny_bert(models / f"bert{k}", seed=k, hidden=32 - 8 * k) for k in range(2)]
    vit = [make_tiny_vit(models / f"vit{k}", seed=k, hidden=32 - 8 * k) for k in range(2)]
    clip = make_tiny_clip(models / "clip")
    work = tmp_path_factory.mktemp("work-paper")
    text_refs = [f"hf-text:{m}" for m in bert]
    vision_refs = [f"hf-vision:{m}" for m in vit]
    multimodal = [f"hf-clip:{clip}"] + ([] if HAS_OPEN_CLIP else [BIOMEDCLIP])

    def listing(refs):
        return "[" + ",".join(refs) + "]"

    common = ["--profile", "paper", "--quiet", "-p", f"data_root={root}", "-p", "seeds=[0]"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SEMALIGN_CACHE", str(work / "cache"))
        semalign_cli(work, "run", "text_stitching", *common, "-p", "transform=ortho", "-p", f"encoders={listing(text_refs)}",
                     "-p", "targets=[]", "-p", "anchor_counts=[8,16,32]")
        semalign_cli(work, "run", "vision_stitching", *common, "-p", "transform=ortho", "-p", f"encoders={listing(vision_refs)}",
                     "-p", "anchor_counts=[8,16]", "-p", "image_size=32")  # 27 training images
        zero_shot = [*common, "-p", f"vision_encoders={listing(vision_refs)}", "-p", f"text_encoders={listing(text_refs)}",
                     "-p", f"multimodal_encoders={listing(multimodal)}", "-p", "anchor_counts=[8,16]",
                     "-p", "transforms=[ortho,affine]", "-p", "image_size=32"]
        semalign_cli(work, "embed", "zero_shot", *zero_shot)  # ahead of the run, as on a cluster
        embedded = _cache_entries(work / "cache")
        semalign_cli(work, "run", "zero_shot", *zero_shot)
        records = pd.DataFrame(json.loads(semalign_cli(work, "results", "--profile", "paper", "--json").stdout))
    return types.SimpleNamespace(root=root, sentences=sentences, work=work, records=records, text=text_refs,
                                 vision=vision_refs, clip=f"hf-clip:{clip}", embedded=embedded,
                                 entries=_cache_entries(work / "cache"))


def _cache_entries(cache) -> dict[str, tuple[str, str, int]]:
    """Embedding cache entries by folder: (encoder, modality, rows)."""
    out = {}
    for manifest in (cache / "embeddings").glob("*/manifest.json"):
        m = json.loads(manifest.read_text())
        out[manifest.parent.name] = (m["encoder"], m["modality"], m["n"])
    return out


def _stdout(work, run: str) -> str:
    """Printed output of ``run``, or of its run of its own name when a data parameter (image_size) was set."""
    folder = work / "executed" / "paper"
    (path,) = [*folder.glob(f"{run}.ipynb"), *folder.glob(f"{run}__data-*.ipynb")]
    nb = json.loads(path.read_text())
    return "".join("".join(o.get("text", "")) for c in nb["cells"] for o in c.get("outputs", []) if o.get("name") == "stdout")


@pytest.mark.slow
def test_semalign_embed_leaves_the_zero_shot_run_only_its_prompts_to_embed(paper_run):
    """Every image the run embeds (its vision encoders' and the CLIP image tower's)
    and every report was in the cache `semalign embed zero_shot` filled; the run
    adds only the prompts, a few dozen texts, and the 16 real pediatric images of
    its anecdote (when their package is installed)."""
    from semalign.data.images import missing_sample_package, real_sample_images

    anecdote = 0 if missing_sample_package("pediatric") else len(real_sample_images(("pediatric",)))
    added = {key: entry for key, entry in paper_run.entries.items() if key not in paper_run.embedded}
    assert added and all(modality == "text" or rows == anecdote for _, modality, rows in added.values()), added
    assert any(encoder == f"{paper_run.clip} (image)" for encoder, _, _ in paper_run.embedded.values())
    prompts = {encoder for encoder, modality, _ in added.values() if modality == "text"}
    assert prompts <= {*paper_run.text, f"{paper_run.clip} (text)", f"{BIOMEDCLIP} (text)"}


@pytest.mark.slow
def test_text_stitching_runs_on_mimic_reports(paper_run):
    rows = paper_run.records[paper_run.records["experiment"] == "text_stitching"]
    assert "decoder" in set(rows["method"])  # the decoder's strength, chosen on validation
    rows = rows[rows["split"] == "test"]
    assert set(rows["method"]) == {"upper_bound", "naive", "aligned", "few_shot", "similarity"}
    assert set(rows["source"]) == set(paper_run.text) and set(rows["task"]) == {"multilabel"}
    aligned = rows[(rows["method"] == "aligned") & (rows["metric"] == "macro_auroc")]
    assert sorted(aligned["n_anchors"].unique()) == [8, 16, 32] and aligned["value"].between(0, 1).all()
    # the profile's official patient-level split: 27 train+validate patients, 9 test patients, 2 studies each;
    # a fifth of the training reports is held out for validation
    assert "72 reports (43 fit / 11 validation / 18 test), task 'multilabel'" in _stdout(paper_run.work, "text_stitching__transform-ortho")
    saved = json.loads((paper_run.work / "results" / "paper" / "text_stitching__transform-ortho.json").read_text())
    assert saved["parameters"]["dataset"] == "mimic_cxr"
    # what ran where: the run's settings (the profile's, else the notebook's defaults) and each encoder's identity
    facts = paper_run.records[paper_run.records["run"] == "text_stitching__transform-ortho"]["provenance"].iloc[0]
    assert (facts["device"], facts["precision"], facts["batch_size"]) == ("auto", "bf16", 256)
    assert facts["data"]["dataset"] == "mimic_cxr" and facts["data"]["test_fraction"] == 0.3  # a notebook default
    used = facts["encoders_used"]
    assert len(used) == len(paper_run.text)
    assert all(u["device"] in ("cpu", "cuda") and u["precision"] == "bf16" and u["fingerprint"] for u in used.values())


@pytest.mark.slow
def test_vision_stitching_runs_on_rsna_dicoms(paper_run):
    rows = paper_run.records[(paper_run.records["experiment"] == "vision_stitching") & (paper_run.records["metric"] == "macro_auroc")
                             & (paper_run.records["split"] == "test")]
    assert set(rows["source"]) == set(paper_run.vision)
    upper = rows[rows["method"] == "upper_bound"]
    assert len(upper) == 2 and upper["value"].min() > 0.9  # the pneumonia square is in the pixels
    assert len(rows[rows["method"] == "aligned"]) == 2 * 2  # two ordered pairs, two anchor counts, one seed
    assert "48 images of RSNA Pneumonia" in _stdout(paper_run.work, "vision_stitching__transform-ortho")


@pytest.mark.slow
def test_zero_shot_runs_on_rsna_with_mimic_anchors_and_a_clip(paper_run):
    rows = paper_run.records[paper_run.records["experiment"] == "zero_shot"]
    assert set(rows["method"]) == {"unimodal_zero_shot", "asif", "clip_style", "linear_probe", "pretrained_multimodal",
                                   "real_pediatric_anecdote", "split"}
    # with a general CLIP in the records, "beats general multimodal models" is judged, not "not testable here"
    records = paper_run.records
    judged = records[(records["experiment"] == "claims") & records["run"].str.startswith("zero_shot")]  # a data variant
    general = judged[judged["metric"] == "zero_shot_vs_general_multimodal"]
    assert len(general) and set(general["target"]) == {paper_run.clip}
    assert set(general["verdict"]) <= {"holds", "fails", "inconclusive"}
    clip = rows[rows["method"] == "pretrained_multimodal"]
    assert set(clip["source"]) == {paper_run.clip} and set(clip["task"]) == {"Pneumonia", "macro"}
    unimodal = rows[(rows["method"] == "unimodal_zero_shot") & (rows["split"] == "test")]
    assert len(unimodal) == 2 * 2 * 2 * 2 * 2  # vision x text pairs, transforms, anchor counts, Pneumonia + macro
    assert unimodal[["ci_low", "ci_high"]].notna().all().all() and (unimodal["ci_low"] <= unimodal["ci_high"]).all()
    assert rows[rows["method"] == "real_pediatric_anecdote"]["task"].tolist() == ["Pneumonia"]
    out = _stdout(paper_run.work, "zero_shot")
    assert "48 images of RSNA Pneumonia" in out and "image-report pairs of MIMIC-CXR-JPG" in out
    if not HAS_OPEN_CLIP:
        assert f"skipped {BIOMEDCLIP}: " in out and "pip install -e '.[paper]'" in out


@pytest.mark.slow
def test_no_report_text_reaches_executed_notebooks_or_results(paper_run):
    reports = " ".join(paper_data.load_reports("mimic_cxr", paper_run.root).texts)
    assert len(paper_run.sentences) > 50 and all(s in reports for s in paper_run.sentences)  # the search can hit
    files = sorted((paper_run.work / "executed" / "paper").glob("*.ipynb")) + sorted((paper_run.work / "results").rglob("*.json"))
    assert len(files) == 6
    for path in files:
        text = path.read_text()
        leaked = [s for s in paper_run.sentences if s in text]
        assert not leaked, f"{path.name} shows report text: {leaked[:2]}"
