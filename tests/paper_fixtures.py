"""Builders of the paper datasets in their real on-disk layouts, and of tiny
randomly initialised Hugging Face models, for the tests.

``make_*_fixture(root)`` write a few fake patients each, exactly as MIMIC-CXR(-JPG),
the RSNA Pneumonia challenge, VinDr-CXR and CheXpert-small lay them out, with
edge cases (missing files, uncertain labels, reader disagreement) for the loader
tests; ``make_all_fixtures(root)`` writes all four under one data_root.
``make_study_fixtures(root)`` writes larger MIMIC-CXR and RSNA fixtures whose
reports and images carry their labels, for running the notebooks on them.
``make_tiny_bert`` / ``make_tiny_vit`` / ``make_tiny_clip`` save tiny random
models with ``save_pretrained``. Nothing here is real patient data.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

CHEXPERT_14 = [
    "Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Enlarged Cardiomediastinum", "Fracture",
    "Lung Lesion", "Lung Opacity", "No Finding", "Pleural Effusion", "Pleural Other", "Pneumonia",
    "Pneumothorax", "Support Devices",
]

# MIMIC: (subject, study, split, report kind, {label: value}, [(dicom_id, view, write jpg?)])
MIMIC_STUDIES = [
    ("10000032", "50414267", "train", "both", {"Cardiomegaly": "1.0", "Edema": "-1.0"},
     [("02aa804e-bde0afdd-112c0b34-7bc16630-4e384014", "PA", True),
      ("174413ec-4ec4c1f7-34ea26b7-c5f994f8-79ef1962", "LATERAL", True)]),
    ("10000032", "53189527", "train", "impression", {"No Finding": "1.0", "Cardiomegaly": "0.0"},
     [("2a2277a9-b0ded155-c0de8eb9-c124d10e-82c5caab", "AP", True)]),
    ("11000011", "51000001", "validate", "findings", {"Pleural Effusion": "1.0", "Atelectasis": "0.0"},
     [("68b5c4b1-227d0485-9cc38c3f-7b84ab51-4b472714", "PA", True)]),
    ("12000022", "52000002", "test", "neither", {"Cardiomegaly": "1.0"},
     [("7a2b1c3d-11111111-22222222-33333333-44444444", "PA", True)]),
    ("19999987", "53000003", "test", "both", {"Atelectasis": "1.0", "Consolidation": "-1.0"},
     [("8b3c2d4e-55555555-66666666-77777777-88888888", "PA", False)]),  # label row, JPG missing
    ("19999987", "54000004", "test", None, {"Edema": "1.0"},  # no report file
     [("9c4d3e5f-99999999-aaaaaaaa-bbbbbbbb-cccccccc", "PA", True)]),
]
# an image (and split row) whose study has no CheXpert label row
MIMIC_UNLABELLED = ("15000005", "55000005", "train", "d0e1f2a3-dddddddd-eeeeeeee-ffffffff-00000000")

FINDINGS = "There is no focal consolidation. The heart is enlarged. Mild pulmonary vascular congestion."
IMPRESSION = "Cardiomegaly with mild congestion."


def _report(kind: str) -> str:
    head = (
        "                                 FINAL REPORT\n"
        " EXAMINATION:  CHEST (PA AND LAT)\n \n"
        " INDICATION:  ___F with cough  // eval for pneumonia\n \n"
        " TECHNIQUE:  Chest PA and lateral\n \n"
        " COMPARISON:  None.\n \n"
    )
    first, rest = FINDINGS.split(" The ", 1)  # wrapped over two lines, as MIMIC reports are
    findings = f" FINDINGS: \n \n {first}\n The {rest}\n \n"
    impression = f" IMPRESSION: \n \n {IMPRESSION}\n"
    body = {"both": findings + impression, "findings": findings, "impression": impression, "neither": " NOTIFICATION:  Dr. ___ was paged.\n"}
    return head + body[kind]


def _to_csv_gz(frame: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False, compression="gzip")


def write_jpeg(path: Path, value: int = 128, pixels: np.ndarray | None = None) -> None:
    """A gray JPEG: ``pixels`` (uint8), or a 16x16 ramp."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    if pixels is None:
        pixels = (np.add.outer(np.arange(16), np.arange(16)) * 4 + value // 4).clip(0, 255).astype(np.uint8)
    Image.fromarray(pixels, mode="L").save(path, format="JPEG", quality=95)


def write_dicom(path: Path, patient_id: str = "anon", value: int = 1000, pixels: np.ndarray | None = None) -> None:
    """A MONOCHROME2 DICOM (CR) of ``pixels`` (uint16, or uint8 as RSNA's are), or a
    16x16 uint16 ramp, written with pydicom."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    sop_class = "1.2.840.10008.5.1.4.1.1.1"  # Computed Radiography Image Storage
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientID, ds.ViewPosition = "CR", patient_id, "PA"
    if pixels is None:
        pixels = (np.add.outer(np.arange(16), np.arange(16)) * 50 + value).astype(np.uint16)
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    bits = 8 if pixels.dtype == np.uint8 else 16
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits, bits - 1, 0
    ds.PixelData = np.ascontiguousarray(pixels, dtype=np.uint8 if bits == 8 else np.uint16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def make_mimic_fixture(root, *, reports: str = "zip", jpg_root: str = "mimic-cxr-jpg", reports_root: str = "mimic-cxr") -> Path:
    """MIMIC-CXR-JPG tables and JPEGs under ``root/jpg_root`` and the MIMIC-CXR
    reports under ``root/reports_root``, as ``mimic-cxr-reports.zip``
    (``reports="zip"``) or extracted (``reports="dir"``). Returns the JPG root."""
    root = Path(root)
    jpg, rep = root / jpg_root, root / reports_root
    labels, split, meta, texts = [], [], [], {}
    for subject, study, split_name, kind, values, images in MIMIC_STUDIES:
        labels.append({"subject_id": subject, "study_id": study, **{c: values.get(c, "") for c in CHEXPERT_14}})
        if kind is not None:
            texts[f"files/p{subject[:2]}/p{subject}/s{study}.txt"] = _report(kind)
        for dicom, view, write in images:
            split.append({"dicom_id": dicom, "study_id": study, "subject_id": subject, "split": split_name})
            meta.append({"dicom_id": dicom, "subject_id": subject, "study_id": study,
                         "PerformedProcedureStepDescription": "CHEST (PA AND LAT)", "ViewPosition": view,
                         "Rows": 16, "Columns": 16, "StudyDate": 21800506, "StudyTime": 213014.531})
            if write:
                write_jpeg(jpg / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}" / f"{dicom}.jpg")
    subject, study, split_name, dicom = MIMIC_UNLABELLED
    split.append({"dicom_id": dicom, "study_id": study, "subject_id": subject, "split": split_name})
    meta.append({"dicom_id": dicom, "subject_id": subject, "study_id": study,
                 "PerformedProcedureStepDescription": "CHEST", "ViewPosition": "PA",
                 "Rows": 16, "Columns": 16, "StudyDate": 21800506, "StudyTime": 1.0})
    write_jpeg(jpg / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}" / f"{dicom}.jpg")
    _to_csv_gz(pd.DataFrame(labels), jpg / "mimic-cxr-2.0.0-chexpert.csv.gz")
    _to_csv_gz(pd.DataFrame(split), jpg / "mimic-cxr-2.0.0-split.csv.gz")
    _to_csv_gz(pd.DataFrame(meta), jpg / "mimic-cxr-2.0.0-metadata.csv.gz")
    rep.mkdir(parents=True, exist_ok=True)
    if reports == "zip":
        with zipfile.ZipFile(rep / "mimic-cxr-reports.zip", "w", zipfile.ZIP_DEFLATED) as archive:
            for name, text in texts.items():
                archive.writestr(name, text)
    else:
        for name, text in texts.items():
            (rep / name).parent.mkdir(parents=True, exist_ok=True)
            (rep / name).write_text(text)
    return jpg


RSNA_P = [
    "0004cfab-14fd-4e49-80ba-63a80b6bddd6",  # two boxes, Target 1
    "00313ee0-9eaa-42f4-b0ab-c148ed3241cd",  # Normal
    "00322d4d-1c29-4943-afc9-b6754be640eb",  # No Lung Opacity / Not Normal
    "003d8fa0-6bf1-40ed-b54c-ac657f8495c5",  # Target 1, DICOM missing
]


def make_rsna_fixture(root) -> Path:
    folder = Path(root) / "rsna-pneumonia-detection-challenge"
    folder.mkdir(parents=True, exist_ok=True)
    rows = [
        (RSNA_P[0], "264.0", "152.0", "213.0", "379.0", 1),
        (RSNA_P[0], "562.0", "152.0", "256.0", "453.0", 1),
        (RSNA_P[1], "", "", "", "", 0),
        (RSNA_P[2], "", "", "", "", 0),
        (RSNA_P[3], "316.0", "318.0", "170.0", "478.0", 1),
    ]
    pd.DataFrame(rows, columns=["patientId", "x", "y", "width", "height", "Target"]).to_csv(
        folder / "stage_2_train_labels.csv", index=False
    )
    classes = [(RSNA_P[0], "Lung Opacity"), (RSNA_P[0], "Lung Opacity"), (RSNA_P[1], "Normal"),
               (RSNA_P[2], "No Lung Opacity / Not Normal"), (RSNA_P[3], "Lung Opacity")]
    pd.DataFrame(classes, columns=["patientId", "class"]).to_csv(folder / "stage_2_detailed_class_info.csv", index=False)
    for k, patient in enumerate(RSNA_P[:3]):
        write_dicom(folder / "stage_2_train_images" / f"{patient}.dcm", patient, 500 + 100 * k)
    return folder


VINDR_LABELS = [
    "Aortic enlargement", "Atelectasis", "Calcification", "Cardiomegaly", "Consolidation", "ILD", "Infiltration",
    "Lung Opacity", "Nodule/Mass", "Other lesion", "Pleural effusion", "Pleural thickening", "Pneumothorax",
    "Pulmonary fibrosis", "COPD", "Lung tumor", "Pneumonia", "Tuberculosis", "No finding",
]
VINDR_A = "9a5094b2563a1ef3ff50dc5c7ff71345"  # 3 readers disagree
VINDR_B = "051132a778e61a86eb147c7c6f564dfe"  # 3 readers: No finding
VINDR_D = "1c32170b4af4ce1a3030eb8167753b06"  # in the train table, DICOM missing
VINDR_C = "002a34c58c5b758217ed1f584ccbcfe9"  # test, consensus


def make_vindr_fixture(root, *, layout: str = "vindr-cxr") -> Path:
    folder = Path(root) / layout
    (folder / "annotations").mkdir(parents=True, exist_ok=True)

    def row(image, rad=None, **positive):
        values = {label: 0 for label in VINDR_LABELS}
        values.update({k.replace("_", " "): v for k, v in positive.items()})
        if values["No finding"] == 0 and sum(values.values()) == 0:
            values["No finding"] = 1
        return {"image_id": image, **({"rad_id": rad} if rad else {}), **values}

    train = [
        row(VINDR_A, "R8", Cardiomegaly=1, Pleural_effusion=1),
        row(VINDR_A, "R9", Cardiomegaly=1),
        row(VINDR_A, "R10"),  # No finding
        row(VINDR_B, "R8"), row(VINDR_B, "R9"), row(VINDR_B, "R10"),
        row(VINDR_D, "R1", Cardiomegaly=1), row(VINDR_D, "R2", Cardiomegaly=1), row(VINDR_D, "R3", Cardiomegaly=1),
    ]
    pd.DataFrame(train).to_csv(folder / "annotations" / "image_labels_train.csv", index=False)
    pd.DataFrame([row(VINDR_C, Pneumothorax=1)]).to_csv(folder / "annotations" / "image_labels_test.csv", index=False)
    write_dicom(folder / "train" / f"{VINDR_A}.dicom", VINDR_A)
    write_dicom(folder / "train" / f"{VINDR_B}.dicom", VINDR_B)
    write_dicom(folder / "test" / f"{VINDR_C}.dicom", VINDR_C)
    return folder


CHEXPERT_COLUMNS = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", "No Finding", "Enlarged Cardiomediastinum",
                    "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema", "Consolidation", "Pneumonia",
                    "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other", "Fracture", "Support Devices"]
CX = "CheXpert-v1.0-small/"
CHEXPERT_TRAIN = [
    (CX + "train/patient00001/study1/view1_frontal.jpg", "Frontal", "PA", {"Cardiomegaly": "1.0"}, True),
    (CX + "train/patient00001/study1/view2_lateral.jpg", "Lateral", "", {"Cardiomegaly": "1.0"}, True),
    (CX + "train/patient00002/study1/view1_frontal.jpg", "Frontal", "AP", {"Edema": "-1.0", "Atelectasis": "1.0"}, True),
    (CX + "train/patient00003/study1/view1_frontal.jpg", "Frontal", "AP", {"No Finding": "1.0"}, False),  # JPG missing
    (CX + "train/patient00004/study2/view1_frontal.jpg", "Frontal", "AP",
     {"Pleural Effusion": "0.0", "Consolidation": "-1.0"}, True),
]
CHEXPERT_VALID = [
    (CX + "valid/patient64541/study1/view1_frontal.jpg", "Frontal", "PA", {"Cardiomegaly": "1.0"}, True),
]


def make_chexpert_fixture(root) -> Path:
    root = Path(root)
    folder = root / "CheXpert-v1.0-small"
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows, fill in (("train.csv", CHEXPERT_TRAIN, ""), ("valid.csv", CHEXPERT_VALID, "0.0")):
        table = [
            {"Path": path, "Sex": "Female", "Age": 68, "Frontal/Lateral": view, "AP/PA": appa,
             **{c: values.get(c, fill) for c in CHEXPERT_COLUMNS[5:]}}
            for path, view, appa, values, _ in rows
        ]
        pd.DataFrame(table, columns=CHEXPERT_COLUMNS).to_csv(folder / name, index=False)
        for path, _, _, _, write in rows:
            if write:
                write_jpeg(root / path)
    return folder


def make_all_fixtures(root) -> Path:
    """All four datasets under one data_root; returns it."""
    root = Path(root)
    make_mimic_fixture(root)
    make_rsna_fixture(root)
    make_vindr_fixture(root)
    make_chexpert_fixture(root)
    return root


# ============================================================================ study fixtures
# Larger MIMIC-CXR and RSNA fixtures for running the notebooks: each report and
# image carries its labels, so stitching and zero-shot have something to find.
# The sentences are made up and phrased so that none occurs in any notebook,
# prompt or book page: the privacy test searches for them.
STUDY_LABELS = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion"]
STUDY_SENTENCES = {  # label: (positive sentences, negative sentence)
    "Atelectasis": (["Streaky bibasilar atelectasis persists.", "Plate-like atelectasis at the left base."],
                    "Lung bases show no atelectasis today."),
    "Cardiomegaly": (["The cardiac silhouette is markedly enlarged.", "Moderate cardiomegaly persists."],
                     "Cardiac silhouette within normal size today."),
    "Consolidation": (["Dense right lower lobe consolidation.", "Patchy consolidation in the lingula."],
                      "Lungs show no consolidation today."),
    "Edema": (["Interstitial edema with cephalization.", "Moderate pulmonary edema persists."],
              "Vasculature shows no edema today."),
    "Pleural Effusion": (["Layering right pleural effusion.", "Small left pleural effusion persists."],
                         "Costophrenic angles show no effusion today."),
}
UNCERTAIN_SENTENCE = "Possible subtle {} cannot be excluded."


def _study_report(study: str, values: dict[str, str], rng: np.random.Generator) -> tuple[str, list[str]]:
    """A MIMIC-style report and the sentences of its FINDINGS and IMPRESSION."""
    findings = []
    for label in rng.permutation(STUDY_LABELS):
        positive, negative = STUDY_SENTENCES[label]
        value = values[label]
        findings.append(positive[rng.integers(len(positive))] if value == "1.0"
                        else UNCERTAIN_SENTENCE.format(label.lower()) if value == "-1.0" else negative)
    impression = f"Follow-up advised for fixture study {study}."
    text = (" FINAL REPORT\n EXAMINATION:  CHEST (PA AND LAT)\n \n INDICATION:  ___ with dyspnea\n \n"
            f" FINDINGS: \n \n {' '.join(findings)}\n \n IMPRESSION: \n \n {impression}\n")
    return text, [*findings, impression]


def _labelled_pixels(positive: list[bool], rng: np.random.Generator, shape: tuple[int, int] = (32, 32)) -> np.ndarray:
    """Noise with a bright square in one place per positive label, drawn at 32x32
    and scaled to ``shape`` (rows, columns), e.g. a full-size radiograph's."""
    pixels = rng.normal(90, 12, (32, 32))
    for k, on in enumerate(positive):
        if on:
            row, col = divmod(k, 3)
            pixels[4 + 9 * row : 10 + 9 * row, 3 + 9 * col : 9 + 9 * col] += 120
    pixels = pixels.clip(0, 255).astype(np.uint8)
    if tuple(shape) != (32, 32):
        from PIL import Image

        pixels = np.asarray(Image.fromarray(pixels).resize(shape[::-1], Image.Resampling.BILINEAR))
    return pixels


def make_mimic_study_fixture(root, n_subjects: int = 36, seed: int = 0, shape: tuple[int, int] = (32, 32),
                             max_jpegs: int | None = None) -> tuple[Path, list[str]]:
    """MIMIC-CXR(-JPG) with ``n_subjects`` patients of two studies each (one PA
    JPEG per study, every fifth study also a lateral): official split by
    patient (two thirds train, a few validate, the rest test), reports in
    ``mimic-cxr-reports.zip``. Images are ``shape`` (rows, columns) pixels; with
    ``max_jpegs`` only the first ones are written (the rest are listed, as
    missing files are in a partial download). Returns the data_root and every
    report sentence."""
    root = Path(root)
    jpg, rng = root / "mimic-cxr-jpg", np.random.default_rng(seed)
    labels, split, meta, texts, sentences = [], [], [], {}, []
    for k in range(n_subjects):
        subject = str(10000000 + 7919 * k)
        split_name = "train" if k < 2 * n_subjects // 3 else "validate" if k < 3 * n_subjects // 4 else "test"
        for j in range(2):
            study = str(50000000 + 2 * k + j)
            draw = rng.random(len(STUDY_LABELS))
            values = {c: "1.0" if x < 0.35 else "-1.0" if x > 0.96 else "0.0" for c, x in zip(STUDY_LABELS, draw)}
            labels.append({"subject_id": subject, "study_id": study, **{c: values.get(c, "") for c in CHEXPERT_14}})
            texts[f"files/p{subject[:2]}/p{subject}/s{study}.txt"], said = _study_report(study, values, rng)
            sentences += said
            views = [("PA", True)] + ([("LATERAL", False)] if (2 * k + j) % 5 == 0 else [])
            for v, (view, frontal) in enumerate(views):
                dicom = f"{study}-{v:08x}-fixture"
                split.append({"dicom_id": dicom, "study_id": study, "subject_id": subject, "split": split_name})
                meta.append({"dicom_id": dicom, "subject_id": subject, "study_id": study,
                             "PerformedProcedureStepDescription": "CHEST (PA AND LAT)", "ViewPosition": view,
                             "Rows": shape[0], "Columns": shape[1], "StudyDate": 21800506, "StudyTime": 1.0})
                pixels = _labelled_pixels([values[c] == "1.0" and frontal for c in STUDY_LABELS], rng, shape)
                if max_jpegs is not None and len(split) > max_jpegs:
                    continue
                write_jpeg(jpg / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}" / f"{dicom}.jpg", pixels=pixels)
    _to_csv_gz(pd.DataFrame(labels), jpg / "mimic-cxr-2.0.0-chexpert.csv.gz")
    _to_csv_gz(pd.DataFrame(split), jpg / "mimic-cxr-2.0.0-split.csv.gz")
    _to_csv_gz(pd.DataFrame(meta), jpg / "mimic-cxr-2.0.0-metadata.csv.gz")
    (root / "mimic-cxr").mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(root / "mimic-cxr" / "mimic-cxr-reports.zip", "w", zipfile.ZIP_DEFLATED) as archive:
        for name, text in texts.items():
            archive.writestr(name, text)
    return root, sorted(set(sentences))


def make_rsna_study_fixture(root, n_patients: int = 48, seed: int = 1, shape: tuple[int, int] = (32, 32),
                            bits: int = 16) -> Path:
    """RSNA pneumonia with ``n_patients`` DICOMs of ``shape`` pixels and ``bits``
    (8 or 16) bits, about 40% with pneumonia (one or two boxes each, and a
    bright square in the image)."""
    folder, rng = Path(root) / "rsna-pneumonia-detection-challenge", np.random.default_rng(seed)
    rows, classes = [], []
    for k in range(n_patients):
        patient = f"{k:08x}-0000-4000-8000-fixture{k:05d}"
        sick = rng.random() < 0.4
        for _ in range(1 + int(rng.random() < 0.5) if sick else 1):
            box = ("264.0", "152.0", "213.0", "379.0") if sick else ("", "", "", "")
            rows.append((patient, *box, int(sick)))
            classes.append((patient, "Lung Opacity" if sick else ("Normal", "No Lung Opacity / Not Normal")[k % 2]))
        pixels = _labelled_pixels([sick], rng, shape)
        pixels = pixels if bits == 8 else pixels.astype(np.uint16) * 16
        write_dicom(folder / "stage_2_train_images" / f"{patient}.dcm", patient, pixels=pixels)
    pd.DataFrame(rows, columns=["patientId", "x", "y", "width", "height", "Target"]).to_csv(
        folder / "stage_2_train_labels.csv", index=False)
    pd.DataFrame(classes, columns=["patientId", "class"]).to_csv(folder / "stage_2_detailed_class_info.csv", index=False)
    return folder


def make_study_fixtures(root) -> tuple[Path, list[str]]:
    """MIMIC-CXR and RSNA study fixtures under one data_root; returns it and
    every MIMIC report sentence."""
    root, sentences = make_mimic_study_fixture(root)
    make_rsna_study_fixture(root)
    return root, sentences


# ============================================================================ tiny models
TINY_WORDS = sorted({w for s in [*[x for p, n in STUDY_SENTENCES.values() for x in [*p, n]], UNCERTAIN_SENTENCE]
                     for w in s.lower().replace(".", " ").replace("-", " - ").split()}
                    | set("lungs are clear no effusion heart size normal the is pleural small left right".split()))


def make_tiny_bert(folder, seed: int = 0, hidden: int = 32):
    """A randomly initialised 2-layer BERT with a word-level vocabulary."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *TINY_WORDS, ".", ",", "-", "{", "}", *"0123456789"]
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True, model_max_length=64)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=37, max_position_embeddings=64)
    BertModel(config).eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def make_tiny_vit(folder, seed: int = 0, hidden: int = 32):
    """A randomly initialised 2-layer ViT on 32x32 images, patch 8."""
    import torch
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    torch.manual_seed(seed)
    config = ViTConfig(hidden_size=hidden, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
                       image_size=32, patch_size=8)
    ViTModel(config, add_pooling_layer=False).eval().save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return Path(folder)


def make_tiny_clip(folder, seed: int = 0):
    """A randomly initialised CLIP (two 2-layer towers, projection 16) with a
    character-level BPE tokenizer and a 32-pixel image processor."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

    chars = list("abcdefghijklmnopqrstuvwxyz0123456789.,-")
    tokens = ["<|startoftext|>", "<|endoftext|>", *chars, *[f"{c}</w>" for c in chars], "th", "the</w>"]
    vocab = {token: i for i, token in enumerate(tokens)}
    merges = [("t", "h"), ("th", "e</w>")]
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=48)
    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=48, bos_token_id=0, eos_token_id=1, pad_token_id=1),
        vision_config=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=16,
    )
    CLIPModel(config).eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return Path(folder)
