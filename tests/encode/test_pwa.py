"""PWA features (``vidsearch.encode.pwa``) on real frames and the real EfficientNet-Lite0 weights: the two-output
export, the aggregation against hand-computed values, statistics that merge across partitions, the whitening,
the cached statistics file, and the registered encoder."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("efficientnet_lite_pytorch", reason="the [effnet] extra is not installed")

from vidsearch.decode import iter_frames  # noqa: E402
from vidsearch.encode import load_encoder, pwa, registry  # noqa: E402
from vidsearch.errors import ConfigError, EncoderError, ShapeError  # noqa: E402
from vidsearch.evaluate import samples  # noqa: E402


def _frames(path, n: int) -> np.ndarray:
    return np.stack([f.image for f in iter_frames(path, (224, 224), fps=1.0)][:n])


@pytest.fixture(scope="session")
def pwa_frames() -> np.ndarray:
    """20 real frames of footage the statistics are not fitted on: 10 of opencv-doc's vtest.avi, 10 of tree.avi."""
    by_name = {p.name: p for p in samples.opencv_videos()}
    return np.concatenate([_frames(by_name["vtest.avi"], 10), _frames(by_name["tree.avi"], 10)])


@pytest.fixture(scope="session")
def pwa_encoder() -> pwa.PWAEncoder:
    """The registered encoder (exported and fitted on the sample footage on first use, then cached)."""
    enc = load_encoder("effnet-lite0-pwa")
    assert isinstance(enc, pwa.PWAEncoder)
    return enc


@pytest.fixture(scope="session")
def pwa_model():
    """The two-output export alone (the registered encoder also fits its statistics: two passes over the
    flipped sample footage, 90-100 s on a cold cache, so the tests that need them are marked slow)."""
    return pwa.pwa_onnx_path()


@pytest.fixture(scope="session")
def pwa_maps(pwa_model, pwa_frames) -> np.ndarray:
    return pwa.feature_maps(pwa_model, pwa_frames)


def test_the_export_gives_the_global_feature_and_the_map_it_pools(pwa_model, pwa_frames, pwa_maps):
    session = pwa._session(str(pwa_model))
    embedding, fmap = session.run(["embedding", "feature_map"], {"image": pwa_frames[:4]})
    assert fmap.shape == (4, 1280, 7, 7) and fmap.min() >= 0.0 and fmap.max() <= 6.0  # after ReLU6
    np.testing.assert_allclose(fmap, pwa_maps[:4], atol=1e-5)
    np.testing.assert_allclose(embedding, fmap.mean(axis=(2, 3)), atol=1e-5)
    effnet = load_encoder("effnet-lite0", "onnx").encode(pwa_frames[:4])  # the global-pooling encoder, fp32
    cosine = (effnet * (embedding / np.linalg.norm(embedding, axis=1, keepdims=True))).sum(axis=1)
    assert cosine.min() > 0.9999, cosine


def test_part_weights_and_regional_vectors_match_hand_computed_values():
    # one frame, 3 channels on a 2x2 map; channel 2 is the part detector
    f = np.zeros((1, 3, 2, 2), np.float32)
    f[0, 0] = [[1, 2], [3, 4]]
    f[0, 1] = [[0, 1], [0, 1]]
    f[0, 2] = [[3, 0], [0, 4]]  # ||.||_2 = 5 -> weights sqrt(3/5), 0, 0, sqrt(4/5)
    w = pwa.part_weights(f, np.array([2]))
    np.testing.assert_allclose(w[0, 0], np.sqrt([0.6, 0, 0, 0.8]), rtol=1e-6)
    r = np.array([np.sqrt(0.6) * 1 + np.sqrt(0.8) * 4, np.sqrt(0.8) * 1, np.sqrt(0.6) * 3 + np.sqrt(0.8) * 4])
    got = pwa.regional_vectors(f, np.array([2]))
    np.testing.assert_allclose(got[0], r / np.linalg.norm(r), rtol=1e-6)
    # two parts: the vectors are concatenated part by part, then normalised together
    two = pwa.regional_vectors(f, np.array([2, 0]), alpha=1.0, beta=1.0)
    w0 = np.array([1, 2, 3, 4]) / 10.0  # alpha = beta = 1: the map over its sum
    r0 = f[0].reshape(3, 4) @ w0
    r2 = f[0].reshape(3, 4) @ (np.array([3, 0, 0, 4]) / 7.0)
    both = np.concatenate([r2, r0])
    np.testing.assert_allclose(two[0], both / np.linalg.norm(both), rtol=1e-6)
    # a part channel that is zero everywhere weighs nothing (no division by zero)
    assert not np.isnan(pwa.regional_vectors(np.zeros((1, 3, 2, 2), np.float32), np.array([1]))).any()


def test_statistics_of_partitions_merge_to_those_of_the_whole(pwa_model, pwa_frames, pwa_maps):
    model = str(pwa_model)
    blocks = [pwa_frames[:3], pwa_frames[3:12], pwa_frames[12:]]  # uneven partitions
    task = pwa.ChannelMomentsTask(model)
    merged, whole = pwa.FrameBlocks(blocks).reduce(task), task(pwa_frames)
    assert merged.count == whole.count == len(pwa_frames)
    np.testing.assert_allclose(merged.total, whole.total, rtol=1e-6)
    np.testing.assert_allclose(merged.outer, whole.outer, rtol=1e-6, atol=1e-6 * np.abs(whole.outer).max())
    # the statistics are the plain ones: mean and variance of the sum-pooled responses over the frames
    pooled = pwa_maps.astype(np.float64).sum(axis=(2, 3))
    np.testing.assert_allclose(merged.mean, pooled.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(merged.variance(), pooled.var(axis=0), rtol=1e-4, atol=1e-6 * pooled.var().max())
    channels = pwa.select_parts(merged, 4)
    assert channels.tolist() == np.argsort(-pooled.var(axis=0), kind="stable")[:4].tolist()
    # pass 2: the regional vectors' moments, merged, equal the whole's
    region = pwa.RegionMomentsTask(model, tuple(channels[:2].tolist()), 2.0, 2.0)  # 2 parts: 2560-d
    merged2, whole2 = pwa.FrameBlocks(blocks).reduce(region), region(pwa_frames)
    np.testing.assert_allclose(merged2.outer, whole2.outer, rtol=1e-6, atol=1e-9)
    with pytest.raises(ShapeError, match="cannot merge moments of 1280-d and 2560-d"):
        merged + merged2


def test_whitening_whitens_the_vectors_it_was_fitted_on(pwa_maps):
    x = pwa.regional_vectors(pwa_maps[:, :64], np.array([0, 1]))  # 64 channels, 2 parts: 128-d, a fast eigh
    moments = pwa.Moments.of(x)
    w = pwa.fit_whitening(moments, 8, shrink=0.0)
    y = (x - w.mean).astype(np.float64) @ w.projection
    np.testing.assert_allclose(np.cov(y.T, bias=True), np.eye(8), atol=2e-3)
    assert np.all(np.diff(w.eigenvalues) <= 0)  # largest first
    np.testing.assert_allclose(np.linalg.norm(w.transform(x), axis=1), 1.0, atol=1e-5)
    shrunk = pwa.fit_whitening(moments, 8, shrink=0.1)  # damps component i to sqrt(l_i / (l_i + 0.1 mean(l)))
    damped = np.sqrt(w.eigenvalues / (w.eigenvalues + 0.1 * w.eigenvalues.mean()))
    np.testing.assert_allclose(((x - w.mean) @ shrunk.projection).std(axis=0), damped, rtol=2e-3)
    with pytest.raises(ConfigError, match="needs more than 20 fitting vectors"):
        pwa.fit_whitening(moments, 20)


@pytest.mark.slow  # fits the statistics (pwa_model's docstring)
def test_the_encoder_is_registered_deterministic_and_batch_invariant(pwa_encoder, pwa_frames):
    spec = registry.get("effnet-lite0-pwa")
    assert (pwa_encoder.dim, pwa_encoder.input_size) == (spec.dim, spec.input_size) == (256, (224, 224))
    a = pwa_encoder.encode(pwa_frames)
    assert a.shape == (20, 256) and a.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    one_by_one = np.concatenate([pwa_encoder.encode(pwa_frames[i : i + 1]) for i in range(5)])
    np.testing.assert_allclose(one_by_one, a[:5], atol=1e-5)
    # frames of one held-out video are closer to each other than to the other video's
    sim = a @ a.T
    within = (sim[:10, :10].sum() - 10) / 90
    assert within > sim[:10, 10:].max() and within > sim[:10, 10:].mean() + 0.3, (within, sim[:10, 10:])
    with pytest.raises(EncoderError, match=r"expects uint8 images of shape \(N, 224, 224, 3\)"):
        pwa_encoder.encode(np.zeros((1, 32, 32, 3), np.uint8))
    assert pwa_encoder.encode(np.zeros((0, 224, 224, 3), np.uint8)).shape == (0, 256)
    with pytest.raises(ConfigError, match="runs only as fp32 ONNX"):
        pwa.load(spec, "onnx-int8")


@pytest.mark.slow  # fits the statistics (pwa_model's docstring)
def test_statistics_are_fitted_on_the_sample_footage_only_and_cached(pwa_encoder):
    st = pwa_encoder.statistics
    from vidsearch.encode.effnet import calibration_sources

    assert list(st.sources) == [p.name for p in calibration_sources()]
    held_out = {p.name for p in samples.opencv_videos()}  # footage the tests and benchmarks evaluate on
    assert held_out and not held_out & set(st.sources)
    assert st.frames > st.config.dim and st.channels.shape == (st.config.parts,)
    path = pwa.statistics_path()
    assert path.exists()
    again = pwa.PWAStatistics.load(path)
    np.testing.assert_array_equal(again.channels, st.channels)
    np.testing.assert_array_equal(again.whitening.projection, st.whitening.projection)
    assert pwa.statistics_path(pwa.PWAConfig(parts=2)) != path  # another configuration, another file


@pytest.mark.slow  # fits the statistics (pwa_model's docstring)
def test_statistics_files_round_trip_and_damaged_ones_raise(pwa_encoder, tmp_path):
    st = pwa_encoder.statistics
    good = tmp_path / "stats.npz"
    st.save(good)
    again = pwa.PWAStatistics.load(good)
    assert again.config == st.config and again.frames == st.frames
    np.testing.assert_array_equal(again.whitening.mean, st.whitening.mean)
    assert not list(tmp_path.glob("*.tmp"))  # written through a temp file
    data = good.read_bytes()
    rng = np.random.default_rng(0)
    for i, bad in enumerate([b"", data[: len(data) // 2], rng.bytes(4096), b"PK\x03\x04" + rng.bytes(200)]):
        path = tmp_path / f"bad{i}.npz"
        path.write_bytes(bad)
        with pytest.raises(EncoderError, match="not a PWA statistics file|do not match"):
            pwa.PWAStatistics.load(path)
    other = pwa.PWAStatistics(pwa.PWAConfig(dim=128), st.channels, st.whitening, st.frames, st.sources)
    other.save(tmp_path / "mismatch.npz")
    with pytest.raises(EncoderError, match="do not match its configuration"):
        pwa.PWAStatistics.load(tmp_path / "mismatch.npz")
    with pytest.raises(ConfigError, match="registered with 256 dimensions but its PWA statistics whiten to 128"):
        pwa.PWAEncoder(registry.get("effnet-lite0-pwa"), pwa_encoder.model_path, other)
