"""A paper-scale rehearsal that needs no credentials: synthetic MIMIC-CXR and
RSNA data in their real on-disk layouts, encoders with the paper models'
architectures (random weights, configs written here), and the paper profile's
notebooks run on them through the runner. Each stage is judged against a
limit measured in the same run. Writes ``<work>/benchmarks/paper-scale-<scale>.json``.

    python benchmarks/bench_paper_scale.py --scale small   # 2 CPU cores, a few minutes
    python benchmarks/bench_paper_scale.py --scale full    # a GPU machine: 227k reports, 27k + 20k images

Stages and their limits:

* ``decode``: the study's image loader (`semalign.data.images.load_image`) on
  every core at once, nothing else running: the images per second no pipeline
  on this machine can beat, for full-size JPEGs (MIMIC-CXR-JPG) and DICOMs (RSNA).
* ``embed``: `semalign embed` (data loading, decoding, hashing, the encoders,
  the cache) per encoder, against that encoder's bare forward on pre-decoded,
  pre-tokenised tensors at the same batch size (the forward limit) and, for
  images, the decode limit.
* ``memory``: `semalign embed` with 2-layer models on a quarter, a half and all
  of the images: peak resident memory should stay flat as the data grows.
* ``sweep``: the stitching notebooks (one transform) reading the filled cache;
  wall time and peak memory (at ``full``, the affine transform up to 4,096
  anchors, fitted on the GPU when there is one). The summaries and the book need
  every run of the paper profile (zero-shot with a CLIP model included) and are
  not timed here.

On a GPU each stage also reports the GPU's mean utilisation and peak memory
(NVML, sampled every 0.2 s while the stage runs).

Images are loaded at the paper profile's 518 pixels; each encoder reads its
own size. Scales: ``tiny`` (the slow test: 2-layer models reading 32 pixels,
small images), ``small`` (BERT-base, RoBERTa-base, ViT-B/16 and DINOv2-B/14
shapes reading 224 pixels; 400 reports, 96 DICOMs and 480 JPEGs of 1,024 x 896
pixels) and ``full``, sized for a GPU check of about six minutes: the paper's
227,000 reports, 4,000 RSNA DICOMs at their real 1,024 x 1,024 x 8 bits (of
26,684: the rates, not the count, are what is measured), the vision models
reading 518 pixels, 500 MIMIC-CXR JPEGs of 3,000 x 2,500 pixels for the decode
limit, and the text sweep on a 20,000-report subset (its decoders are trained
on the CPU). ``full`` writes about 5 GB.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import platform
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_study import timed  # noqa: E402

from semalign.core.paths import work_dir  # noqa: E402

# subjects (two MIMIC studies, so two reports, each), MIMIC JPEGs written (None: all) and their pixels,
# RSNA patients (one DICOM each) and their pixels and bits, model shapes, the size the vision models read
# and the sweep: its transform, anchor counts (text, vision) and report subset (0: all)
SWEEP = dict(sweep_transform="ortho", text_anchors=[8, 16, 32], vision_anchors=[8, 16, 32], sweep_reports=0)
SCALES = {
    "tiny": dict(subjects=40, jpegs=None, shape=(64, 48), rsna=80, rsna_shape=(64, 48), rsna_bits=16,
                 models="tiny", image_size=32, batch_text=32, batch_image=16, **SWEEP),
    "small": dict(subjects=200, jpegs=None, shape=(1024, 896), rsna=96, rsna_shape=(1024, 896), rsna_bits=16,
                  models="base", image_size=224, batch_text=32, batch_image=16, **SWEEP),
    # the paper's 227k reports; RSNA images at their real 1,024 x 1,024 x 8 bits but 4,000 of 26,684 (a rate is
    # measured, and the check must fit in minutes); MIMIC-CXR-JPG's full-size JPEGs only for the decode limit
    "full": dict(subjects=113_500, jpegs=500, shape=(3000, 2500), rsna=4_000, rsna_shape=(1024, 1024), rsna_bits=8,
                 models="base", image_size=518, batch_text=256, batch_image=128, sweep_transform="affine",
                 text_anchors=[256, 4096], vision_anchors=[256, 1024], sweep_reports=20_000),
}
PROFILE_IMAGE_SIZE = 518  # the paper profile loads images at this size, then each encoder resizes to its own
TEXT_MODELS = {"bert-base": "bert", "roberta-base": "roberta"}
VISION_MODELS = {"vit-b16": "vit", "dinov2-b14": "dinov2"}


# ---------------------------------------------------------------------------- data and models
def write_data(root: Path, scale: dict) -> dict:
    from tests.paper_fixtures import make_mimic_study_fixture, make_rsna_study_fixture

    start = time.perf_counter()
    make_mimic_study_fixture(root, n_subjects=scale["subjects"], shape=scale["shape"], max_jpegs=scale["jpegs"])
    make_rsna_study_fixture(root, n_patients=scale["rsna"], shape=scale["rsna_shape"], bits=scale["rsna_bits"])
    jpegs = sorted((root / "mimic-cxr-jpg" / "files").rglob("*.jpg"))
    dicoms = sorted((root / "rsna-pneumonia-detection-challenge" / "stage_2_train_images").glob("*.dcm"))
    return {"seconds": round(time.perf_counter() - start, 1), "reports": 2 * scale["subjects"], "jpegs": jpegs,
            "dicoms": dicoms, "image_pixels": list(scale["shape"]), "dicom_pixels": list(scale["rsna_shape"])}


def _vocabulary() -> list[str]:
    from tests.paper_fixtures import TINY_WORDS
    return ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *TINY_WORDS, ".", ",", "-", "_", "(", ")", ":",
            *"0123456789", *(f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz0123456789")]


def make_text_model(folder: Path, kind: str, tiny: bool) -> Path:
    """BERT-base or RoBERTa-base shapes (or 2-layer ones), random weights, a word-piece vocabulary."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast, RobertaConfig, RobertaModel

    folder.mkdir(parents=True, exist_ok=True)
    vocab = _vocabulary()
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True, model_max_length=512).save_pretrained(folder)
    shape = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37) if tiny else {}
    torch.manual_seed(0)
    if kind == "bert":
        BertModel(BertConfig(vocab_size=len(vocab), **shape)).eval().save_pretrained(folder)
    else:  # RoBERTa's positions count from its padding id, here the vocabulary's [PAD]
        config = RobertaConfig(vocab_size=len(vocab), pad_token_id=0, max_position_embeddings=514, **shape)
        RobertaModel(config, add_pooling_layer=False).eval().save_pretrained(folder)
    return folder


def make_vision_model(folder: Path, kind: str, tiny: bool, image_size: int) -> Path:
    """ViT-B/16 or DINOv2-B/14 shapes (or 2-layer ones) reading ``image_size`` pixels, random weights."""
    import torch
    from transformers import Dinov2Config, Dinov2Model, ViTConfig, ViTImageProcessor, ViTModel

    shape = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37) if tiny else {}
    torch.manual_seed(0)
    if kind == "vit":
        model = ViTModel(ViTConfig(image_size=image_size, patch_size=8 if tiny else 16, **shape), add_pooling_layer=False)
    else:
        model = Dinov2Model(Dinov2Config(image_size=image_size, patch_size=8 if tiny else 14, **shape))
    model.eval().save_pretrained(folder)
    ViTImageProcessor(size={"height": image_size, "width": image_size}).save_pretrained(folder)
    return folder


# ---------------------------------------------------------------------------- limits
def _decode(job: tuple[str, int]) -> int:
    from semalign.data.images import load_image
    return int(load_image(job[0], size=job[1]).shape[0])


def decode_limit(paths: list[Path], size: int) -> dict:
    """Images per second of the study's loader on every core at once."""
    workers = os.cpu_count() or 1
    jobs = [(str(p), size) for p in paths]
    # spawned, not forked: this process holds torch's thread pools, which a fork can leave locked
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        list(pool.map(_decode, jobs[:workers]))  # start the workers and import first
        start = time.perf_counter()
        list(pool.map(_decode, jobs, chunksize=4))
        seconds = time.perf_counter() - start
    return {"images": len(paths), "workers": workers, "seconds": round(seconds, 2),
            "per_s": round(len(paths) / seconds, 1)}


def forward_limit(ref: str, items: list, batch_size: int, device: str, precision: str) -> dict:
    """Items per second of the encoder's bare forward on pre-decoded, pre-tokenised
    (or pre-normalised) tensors at ``batch_size``: the work the GPU/CPU must do."""
    import torch

    from semalign.models.encoders import load_encoder

    encoder = load_encoder(ref, device=device, precision=precision)
    if encoder.modality == "text":
        ids = encoder.tokenize(items)
        order = np.argsort([-len(x) for x in ids], kind="stable")
        batches = []
        for start in range(0, len(order), batch_size):
            rows = [ids[i] for i in order[start : start + batch_size]]
            width = len(rows[0])
            input_ids = torch.full((len(rows), width), encoder.pad_id, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for r, row in enumerate(rows):
                input_ids[r, : len(row)], mask[r, : len(row)] = torch.tensor(row), 1
            batches.append(dict(input_ids=input_ids.to(encoder.device), attention_mask=mask.to(encoder.device)))
    else:
        batches = [dict(pixel_values=encoder.preprocess(np.stack(items[s : s + batch_size])))
                   for s in range(0, len(items), batch_size)]
    with torch.inference_mode():
        encoder.model(**batches[0])  # warm-up
        _sync(device)
        start = time.perf_counter()
        for batch in batches:
            encoder.model(**batch)
        _sync(device)
        seconds = time.perf_counter() - start
    return {"items": len(items), "seconds": round(seconds, 2), "per_s": round(len(items) / seconds, 1)}


@contextlib.contextmanager
def gpu_sampled(stage: dict, device: str):
    """Adds the GPU's mean utilisation (%) and peak memory in use (GB) while the
    block runs to ``stage``, sampled by NVML every 0.2 s (nothing without a GPU)."""
    if device != "cuda":
        yield
        return
    import pynvml

    pynvml.nvmlInit()
    handle = pynvml.nvmlDeviceGetHandleByIndex(0)
    samples, done = [], threading.Event()

    def sample() -> None:
        while not done.wait(0.2):
            samples.append((pynvml.nvmlDeviceGetUtilizationRates(handle).gpu,
                            pynvml.nvmlDeviceGetMemoryInfo(handle).used))

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        if samples:
            stage["gpu_util_pct"] = round(float(np.mean([u for u, _ in samples])), 1)
            stage["gpu_peak_gb"] = round(max(m for _, m in samples) / 1e9, 2)


def _sync(device: str) -> None:
    import torch
    if device == "cuda":
        torch.cuda.synchronize()


# ---------------------------------------------------------------------------- the pipeline
def _semalign(*args: str) -> list[str]:
    return [sys.executable, "-m", "semalign", *args]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=list(SCALES), default="small")
    parser.add_argument("--workdir", type=Path, help="where data, models and the study's work go (default: a temporary folder)")
    args = parser.parse_args(argv)
    scale = SCALES[args.scale]
    tiny = scale["models"] == "tiny"
    import torch
    device = "cuda" if torch.cuda.is_available() else "cpu"
    precision = "bf16" if device == "cuda" else "fp32"
    base = args.workdir or Path(tempfile.mkdtemp(prefix="semalign-paper-scale-"))
    data_root, models, work = base / "data", base / "models", base / "work"
    env = {**os.environ, "SEMALIGN_WORKDIR": str(work), "SEMALIGN_CACHE": str(work / "cache"),
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    vendor = work_dir() / "vendor"
    work.mkdir(parents=True, exist_ok=True)
    if vendor.is_dir() and not (work / "vendor").exists():
        (work / "vendor").symlink_to(vendor, target_is_directory=True)  # MathJax for the book, no download

    print(f"== writing synthetic data ({args.scale}) under {data_root}", flush=True)
    data = write_data(data_root, scale)
    text_refs = {name: f"hf-text:{make_text_model(models / name, kind, tiny)}" for name, kind in TEXT_MODELS.items()}
    vision_refs = {name: f"hf-vision:{make_vision_model(models / name, kind, tiny, scale['image_size'])}"
                   for name, kind in VISION_MODELS.items()}
    listing = lambda refs: "[" + ",".join(refs.values()) + "]"  # noqa: E731
    common = ["--profile", "paper", "--quiet", "-p", f"data_root={data_root}", "-p", f"device={device}",
              "-p", f"precision={precision}"]
    text_params = [*common, "-p", f"encoders={listing(text_refs)}", "-p", "targets=[]",
                   "-p", f"batch_size={scale['batch_text']}"]
    # images are loaded at the profile's 518 pixels (so the runs keep the profile's names) and resized to the model's size
    vision_params = [*common, "-p", f"encoders={listing(vision_refs)}", "-p", f"batch_size={scale['batch_image']}"]

    print("== limits: decode on every core, bare forwards", flush=True)
    from semalign.data.images import load_image
    from semalign.experiments.inputs import report_dataset
    reports = report_dataset("mimic_cxr", data_root=str(data_root), split="official")[0].texts  # what the text run embeds
    sample = data["dicoms"][: max(8, min(len(data["dicoms"]), 256))]
    pixels = [load_image(p, size=PROFILE_IMAGE_SIZE) for p in sample]
    limits = {"decode_jpeg": decode_limit(data["jpegs"], PROFILE_IMAGE_SIZE),
              "decode_dicom": decode_limit(data["dicoms"], PROFILE_IMAGE_SIZE)}
    for name, ref in text_refs.items():
        limits[f"forward_{name}"] = forward_limit(ref, reports, scale["batch_text"], device, precision)
    for name, ref in vision_refs.items():
        limits[f"forward_{name}"] = forward_limit(ref, pixels, scale["batch_image"], device, precision)

    stages = {}

    def stage(name: str, command: list[str]) -> None:
        sampled: dict = {}
        with gpu_sampled(sampled, device):
            stages[name] = timed(command, env)
        stages[name].update(sampled)

    print("== embed: semalign embed (text, then vision)", flush=True)
    stage("embed_text", _semalign("embed", "text_stitching", *text_params))
    stage("embed_vision", _semalign("embed", "vision_stitching", *vision_params))
    print(f"== sweep: the notebooks on the filled cache ({scale['sweep_transform']})", flush=True)
    sweep = ["-p", f"transform={scale['sweep_transform']}", "-p", "seeds=[0]"]
    listed = lambda counts: "[" + ",".join(map(str, counts)) + "]"  # noqa: E731
    stage("sweep_text", _semalign("run", "text_stitching", *text_params, *sweep, "-p", f"max_reports={scale['sweep_reports']}",
                                  "-p", f"anchor_counts={listed(scale['text_anchors'])}"))
    stage("sweep_vision", _semalign("run", "vision_stitching", *vision_params, *sweep,
                                    "-p", f"anchor_counts={listed(scale['vision_anchors'])}"))

    print("== memory: semalign embed on a quarter, a half and all of the images (2-layer models)", flush=True)
    tiny_refs = [f"hf-vision:{make_vision_model(models / f'tiny-{kind}', kind, True, 32)}" for kind in ("vit", "dinov2")]
    curve = []
    for share in (4, 2, 1):
        n = len(data["dicoms"]) // share
        stage(f"memory_{n}", _semalign("embed", "vision_stitching", *common, "-p", f"encoders=[{','.join(tiny_refs)}]",
                                       "-p", f"max_images={n}", "-p", f"batch_size={scale['batch_image']}"))
        curve.append({"images": n, **stages.pop(f"memory_{n}")})
    n_text, n_images = len(reports), len(data["dicoms"])
    text_forward = 1 / sum(1 / limits[f"forward_{n}"]["per_s"] for n in text_refs)  # all encoders, one after another
    vision_forward = 1 / sum(1 / limits[f"forward_{n}"]["per_s"] for n in vision_refs)
    embed_text_rate = n_text / stages["embed_text"]["wall_s"]
    embed_vision_rate = n_images / stages["embed_vision"]["wall_s"]
    vision_limit = min(vision_forward, limits["decode_dicom"]["per_s"])
    ratios = {"embed_text_vs_forward": float(f"{embed_text_rate / text_forward:.3g}"),
              "embed_vision_vs_limit": float(f"{embed_vision_rate / vision_limit:.3g}")}
    result = {
        "benchmark": "paper_scale", "scale": args.scale, "date": time.strftime("%Y-%m-%d"),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "device": device,
                    "gpu": torch.cuda.get_device_name() if device == "cuda" else None, "precision": precision},
        "data": {"reports": n_text, "rsna_dicoms": n_images, "mimic_jpegs": len(data["jpegs"]),
                 "image_pixels": data["image_pixels"], "dicom_pixels": data["dicom_pixels"],
                 "written_s": data["seconds"]},
        "encoders": {**{n: "BERT-base" if k == "bert" else "RoBERTa-base" for n, k in TEXT_MODELS.items()},
                     **{n: "ViT-B/16" if k == "vit" else "DINOv2-B/14" for n, k in VISION_MODELS.items()}}
        if not tiny else "2-layer, hidden 32 (tiny scale)",
        "image_size": scale["image_size"], "limits": limits, "stages": stages,
        "sweep": {"transform": scale["sweep_transform"], "text_anchor_counts": scale["text_anchors"],
                  "vision_anchor_counts": scale["vision_anchors"], "text_reports": scale["sweep_reports"] or n_text},
        "rates": {"embed_text_per_s": round(embed_text_rate, 1), "text_forward_limit_per_s": round(text_forward, 1),
                  "embed_vision_per_s": round(embed_vision_rate, 1), "vision_limit_per_s": round(vision_limit, 1)},
        "ratios": ratios, "target_ratio": 0.5,
        "memory_curve": curve, "memory_growth": round(curve[-1]["peak_rss_gb"] / curve[0]["peak_rss_gb"], 2),
    }
    out = work_dir() / "benchmarks" / f"paper-scale-{args.scale}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"\n{'stage':<14} {'wall s':>8} {'peak GB':>8}" + (f" {'GPU %':>6} {'GPU GB':>7}" if device == "cuda" else ""))
    for name, timing in stages.items():
        gpu = f" {timing.get('gpu_util_pct', '-'):>6} {timing.get('gpu_peak_gb', '-'):>7}" if device == "cuda" else ""
        print(f"{name:<14} {timing['wall_s']:>8} {timing['peak_rss_gb']:>8}{gpu}")
    print(f"\ntext:   {embed_text_rate:,.1f} reports/s through semalign embed (all {len(text_refs)} encoders) vs "
          f"{text_forward:,.1f} bare forward: ratio {ratios['embed_text_vs_forward']} (target >= 0.5)")
    print(f"images: {embed_vision_rate:,.1f} images/s through semalign embed (all {len(vision_refs)} encoders) vs "
          f"limit {vision_limit:,.1f} (forward {vision_forward:,.1f}, DICOM decode on {limits['decode_dicom']['workers']} "
          f"cores {limits['decode_dicom']['per_s']:,.1f}, JPEG {limits['decode_jpeg']['per_s']:,.1f}): "
          f"ratio {ratios['embed_vision_vs_limit']} (target >= 0.5)")
    print("images embedded  peak GB: " + ", ".join(f"{c['images']:,}: {c['peak_rss_gb']}" for c in curve)
          + f" (x{result['memory_growth']} for x{curve[-1]['images'] / max(1, curve[0]['images']):.0f} the images)")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
