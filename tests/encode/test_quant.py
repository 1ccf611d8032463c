"""int8 EfficientNet-Lite0 keeps its vectors: cosine to fp32 on held-out real frames (never calibrated on),
with the recipe, calibration set and cache key that make it (bench/quant.py measures the alternatives)."""

from __future__ import annotations

import numpy as np
import pytest

from vidsearch.encode import effnet, load_encoder, registry
from vidsearch.encode.effnet import Calibration, Int8Recipe, IntType
from vidsearch.errors import ConfigError
from vidsearch.evaluate import samples
from vidsearch.evaluate.vsc_data import OPENCV_PHOTOS


def _heldout_files():
    """opencv-doc's videos and photographs: real footage the int8 model is never calibrated on."""
    videos = [p for p in samples.opencv_videos() if p.name != "Megamind_bugy.avi"]
    data = samples.OPENCV_DOC / "examples" / "data"
    photos = [data / n for n in OPENCV_PHOTOS if (data / n).is_file()]
    assert len(videos) >= 5 and len(photos) >= 20, "opencv-doc is not installed: apt-get install opencv-doc"
    return videos + photos


@pytest.fixture(scope="session")
def heldout_frames() -> np.ndarray:
    """(N, 224, 224, 3) uint8: up to 12 frames (1 fps, spread over time) of each opencv-doc video, and its photos."""
    return effnet.sample_images(_heldout_files(), 12)


@pytest.fixture(scope="session")
def effnet_vectors(heldout_frames):
    fp32 = load_encoder("effnet-lite0", "onnx").encode(heldout_frames)
    int8 = load_encoder("effnet-lite0", "onnx-int8").encode(heldout_frames)
    return fp32, int8


def test_int8_is_the_default_variant_of_effnet():
    spec = registry.get("effnet-lite0")
    assert spec.check_variant(None) == spec.variants[0] == "onnx-int8"
    assert "onnx" in spec.variants  # fp32 stays available


def test_int8_vectors_stay_within_cosine_0_98_of_fp32_on_heldout_real_frames(heldout_frames, effnet_vectors):
    """Measured (session 12, 80 frames: 12 per opencv-doc video, 1 per photo): min 0.9921, 1st percentile 0.9925,
    mean 0.9970. With the stem conv quantised too p1 was 0.982; without bias correction 0.938; at 293bebc 0.81."""
    fp32, int8 = effnet_vectors
    assert len(heldout_frames) >= 60
    cos = (fp32 * int8).sum(axis=1)
    assert np.percentile(cos, 1) >= 0.99, np.sort(cos)[:5]  # issue #18 asks for >= 0.98
    assert cos.min() >= 0.985, np.sort(cos)[:5]
    assert cos.mean() >= 0.995, cos.mean()
    # the int8 model is not a copy of fp32: it does move the vectors a little
    assert cos.mean() < 0.9999


def test_int8_retrieval_finds_the_fp32_vector_of_the_same_frame(effnet_vectors):
    """An int8 query against an fp32-built collection: the same frame is the nearest neighbour."""
    fp32, int8 = effnet_vectors
    sims = int8 @ fp32.T
    # frames of one static-camera video can be near-identical: count a hit when the best is as good as the truth
    assert (sims.max(axis=1) <= np.diag(sims) + 1e-6).mean() >= 0.98  # measured 1.0 (80 of 80)


def test_calibration_never_sees_the_heldout_footage():
    calib = {p.name for p in effnet.calibration_sources()}
    assert {"demo.mp4", "demo.jpg"} <= calib
    assert not calib & {p.name for p in _heldout_files()}


def test_the_int8_cache_key_follows_the_recipe_the_files_and_the_version(monkeypatch):
    files = effnet.calibration_sources()
    key = effnet.int8_key(effnet.DEFAULT_INT8, files)
    assert effnet.int8_key(Int8Recipe(exclude=[effnet.STEM_CONV]), files) == key  # deterministic, lists as tuples
    assert effnet.int8_key(effnet.DEFAULT_INT8.replace(reduce_range=True), files) != key
    assert effnet.int8_key(effnet.DEFAULT_INT8.replace(bias_correction=False), files) != key
    assert effnet.int8_key(effnet.DEFAULT_INT8.replace(exclude=()), files) != key
    assert effnet.int8_key(effnet.DEFAULT_INT8, files[:2]) != key
    assert effnet.effnet_onnx_path(True).name.endswith(f"-int8-{key}.onnx")  # the model the variant loads
    monkeypatch.setattr(effnet, "_INT8_VERSION", effnet._INT8_VERSION + "-next")  # a bumped version: a new file
    assert effnet.int8_key(effnet.DEFAULT_INT8, files) != key


def test_natural_frames_leave_out_flat_frames_and_test_patterns(heldout_frames):
    keep = effnet.natural_frames(heldout_frames)
    flat = heldout_frames.reshape(len(heldout_frames), -1).std(axis=1) < 2
    assert keep.tolist() == (~flat).tolist()  # every held-out frame with content is camera footage
    bars = np.zeros((224, 224, 3), np.uint8)  # seven colour bars, like perception's test clip
    for i, colour in enumerate([(255, 255, 255), (255, 255, 0), (0, 255, 255), (0, 255, 0), (255, 0, 255),
                                (255, 0, 0), (0, 0, 255)]):
        bars[:, i * 32 : (i + 1) * 32] = colour
    # white is not a saturated colour; the six others are: 6/7 of the pixels
    red = np.zeros((224, 224, 3), np.uint8)
    red[..., 0] = 253
    grey = np.full((224, 224, 3), 128, np.uint8)
    assert effnet.natural_frames(np.stack([bars, red, grey, heldout_frames[1]])).tolist() == [False, False, False, True]


def test_the_default_recipe_corrects_biases_with_8_bit_weights_and_a_float_stem():
    recipe = effnet.DEFAULT_INT8
    assert recipe.bias_correction and not recipe.reduce_range and recipe.per_channel and recipe.natural_frames_only
    assert recipe.exclude == (effnet.STEM_CONV,)
    import onnx

    int8 = onnx.load(str(effnet.effnet_onnx_path(True)))
    stem = next(n for n in int8.graph.node if n.name == effnet.STEM_CONV)
    weights = {t.name: t for t in int8.graph.initializer}
    assert weights[stem.input[1]].data_type == onnx.TensorProto.FLOAT  # an initializer, not a DequantizeLinear
    assert sum(n.op_type == "DequantizeLinear" for n in int8.graph.node) > 100  # the rest is quantised


def test_recipe_values_are_checked_and_named():
    assert Int8Recipe(calibration="entropy", activations="int8").calibration is Calibration.ENTROPY
    assert Int8Recipe(activations="int8").activations is IntType.INT8
    with pytest.raises(ConfigError, match="calibration must be one of minmax, entropy, percentile, got 'kl'"):
        Int8Recipe(calibration="kl")
    with pytest.raises(ConfigError, match="frames_per_source must be >= 1"):
        Int8Recipe(frames_per_source=0)
    assert Int8Recipe().to_dict()["calibration"] == "minmax"


def test_every_session_asks_for_exact_int8_products_on_x86_without_vnni():
    """Without it an AVX2-only CPU (an AMD EPYC here, 2026-12-01) saturates the default int8 model's 16-bit sums:
    held-out cosine to fp32 p1 0.896 instead of 0.9925 (the test above failed there). A no-op on VNNI CPUs."""
    from vidsearch.encode.onnx_session import session_options

    options = session_options(1)
    assert options.get_session_config_entry("session.x64quantprecision") == "1"
    assert options.intra_op_num_threads == 1 and options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    session = load_encoder("effnet-lite0", "onnx-int8")._session  # the encoder opens its model with them
    assert session.get_session_options().get_session_config_entry("session.x64quantprecision") == "1"
