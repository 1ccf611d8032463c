"""compress: PCA, PQ/OPQ (FAISS) and LearnedPQ on small deterministic synthetic data.

The data is a fixed-seed Gaussian mixture in a correlated space (like bench/compress.py's
``synthetic``, smaller), so every figure below is reproducible.
"""

from __future__ import annotations

import numpy as np
import pytest

import vidsearch  # noqa: F401  (sets OPENBLAS_CORETYPE before FAISS loads)
from vidsearch.compress import OPQ, PCA, LearnedPQ, ProductQuantizer, load_codebooks_into_faiss_pq
from vidsearch.errors import ConfigError, NotFittedError


def mixture(n: int, d: int, n_clusters: int, seed: int, decay: float = 4.0) -> np.ndarray:
    """(n, d) float32 L2-normalised Gaussian mixture with correlated, decaying-variance components."""
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.standard_normal((d, d)))
    mix = (basis / np.sqrt(1 + np.arange(d) / decay)).T
    centers = rng.standard_normal((n_clusters, d))
    scales = np.exp(rng.normal(np.log(0.6), 0.4, n_clusters))
    label = rng.integers(0, n_clusters, n)
    x = (centers[label] + scales[label, None] * rng.standard_normal((n, d))) @ mix
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    x = mixture(6200, 32, 60, seed=0)
    return x[:6000], x[6000:]


def exact_knn(xb: np.ndarray, xq: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    d = (xq**2).sum(1)[:, None] - 2 * xq @ xb.T + (xb**2).sum(1)[None, :]
    idx = np.argsort(d, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(d, idx, 1), idx


def adc_recall(quantizer, xb: np.ndarray, xq: np.ndarray, k: int = 10) -> float:
    from vidsearch.evaluate.metrics import knn_recall

    gt_d, gt_i = exact_knn(xb, xq, k)
    index = quantizer.to_faiss()
    index.add(xb)
    _, found = index.search(xq, k)
    found_d = ((xq[:, None, :] - xb[found]) ** 2).sum(2)  # exact distances of what ADC returned
    return knn_recall(found, gt_i, k, found_d, gt_d)


# ----------------------------------------------------------------------------- PCA


def test_pca_shapes_variance_and_inverse(data):
    xb, _ = data
    pca = PCA(8).fit(xb)
    y = pca.transform(xb)
    assert y.shape == (len(xb), 8) and y.dtype == np.float32
    assert pca.components_.shape == (8, 32) and pca.mean_.shape == (32,)
    np.testing.assert_allclose(pca.components_ @ pca.components_.T, np.eye(8), atol=1e-4)
    cov = np.cov(xb.astype(np.float64), rowvar=False, bias=True)
    top = np.sort(np.linalg.eigvalsh(cov))[::-1][:8]
    np.testing.assert_allclose(pca.explained_variance_, top, rtol=1e-3)
    np.testing.assert_allclose(y.var(0), top, rtol=1e-3)
    back = pca.inverse_transform(y)
    assert back.shape == xb.shape
    full = PCA(32).fit(xb)
    np.testing.assert_allclose(full.inverse_transform(full.transform(xb)), xb, atol=1e-4)
    # fewer components, larger error
    err = [((xb - p.inverse_transform(p.transform(xb))) ** 2).sum(1).mean() for p in (PCA(4).fit(xb), pca, PCA(16).fit(xb))]
    assert err[0] > err[1] > err[2]


def test_pca_whitening(data):
    xb, _ = data
    pca = PCA(8, whiten=True).fit(xb)
    y = pca.transform(xb)
    np.testing.assert_allclose(np.cov(y.astype(np.float64), rowvar=False, bias=True), np.eye(8), atol=2e-3)
    plain = PCA(8).fit(xb)
    np.testing.assert_allclose(pca.inverse_transform(y), plain.inverse_transform(plain.transform(xb)), atol=1e-4)


def test_pca_errors(data):
    xb, _ = data
    with pytest.raises(ConfigError, match="n_components"):
        PCA(33).fit(xb)
    pca = PCA(4).fit(xb)
    with pytest.raises(ConfigError, match="32 features"):
        pca.transform(xb[:, :16])
    with pytest.raises(ConfigError, match="2-d"):
        pca.transform(xb[0])


# ----------------------------------------------------------------------------- not fitted


@pytest.mark.parametrize("make", [lambda: PCA(4), lambda: ProductQuantizer(4), lambda: OPQ(4), lambda: LearnedPQ(4)])
def test_not_fitted(make, data):
    xb, _ = data
    model = make()
    for call in (lambda: model.transform(xb), lambda: model.inverse_transform(np.zeros((1, 4), np.uint8)),
                 lambda: model.to_faiss()):
        with pytest.raises(NotFittedError, match="not fitted yet"):
            call()
    with pytest.raises(ValueError):  # NotFittedError is also a ValueError
        model.transform(xb)
    if not isinstance(model, PCA):
        assert model.rotation_ is None and model.codebooks_ is None
        with pytest.raises(NotFittedError):
            model.encode(xb)


# ----------------------------------------------------------------------------- PQ / OPQ


def test_pq_shapes_and_error_decreasing_with_M(data):
    xb, _ = data
    errors = []
    for M in (2, 4, 8, 16):
        pq = ProductQuantizer(M).fit(xb)
        codes = pq.transform(xb)
        assert codes.shape == (len(xb), M) and codes.dtype == np.uint8
        assert pq.codebooks_.shape == (M, 256, 32 // M) and pq.codebooks_.dtype == np.float32
        assert pq.rotation_ is None and pq.code_size == M
        back = pq.inverse_transform(codes)
        assert back.shape == xb.shape and back.dtype == np.float32
        errors.append(pq.reconstruction_error(xb))
    assert all(a > b for a, b in zip(errors, errors[1:])), errors


def test_pq_fewer_bits_packs_codes(data):
    xb, _ = data
    pq = ProductQuantizer(8, nbits=4).fit(xb)
    codes = pq.encode(xb)
    assert codes.shape == (len(xb), 4) and pq.codebooks_.shape == (8, 16, 4)
    assert pq.reconstruction_error(xb) > ProductQuantizer(8).fit(xb).reconstruction_error(xb)


def test_pq_errors(data):
    xb, _ = data
    with pytest.raises(ConfigError, match="not divisible by M=5"):
        ProductQuantizer(5).fit(xb)
    with pytest.raises(ConfigError, match="at least 256"):
        ProductQuantizer(4).fit(xb[:100])
    with pytest.raises(ConfigError, match="NaN"):
        ProductQuantizer(4).fit(np.full((300, 32), np.nan, np.float32))
    pq = ProductQuantizer(4).fit(xb)
    with pytest.raises(ConfigError, match="uint8"):
        pq.decode(np.zeros((3, 5), np.uint8))
    with pytest.raises(ConfigError, match="32 features"):
        pq.encode(np.zeros((3, 16), np.float32))


def test_opq_reconstructs_correlated_data_better_than_pq():
    # strongly correlated components: PQ's fixed sub-spaces split them badly, OPQ rotates first
    x = mixture(5000, 32, 40, seed=1, decay=1.0)
    pq, opq = ProductQuantizer(4).fit(x), OPQ(4).fit(x)
    assert opq.rotation_.shape == (32, 32)
    np.testing.assert_allclose(opq.rotation_ @ opq.rotation_.T, np.eye(32), atol=1e-4)
    assert opq.reconstruction_error(x) <= pq.reconstruction_error(x)


@pytest.mark.parametrize("kind", ["pq", "opq"])
def test_faiss_export_same_codes_and_distances(kind, data):
    import faiss

    xb, xq = data
    model = (ProductQuantizer(8) if kind == "pq" else OPQ(8)).fit(xb)
    check_export(model, xb, xq)
    if kind == "opq":
        assert isinstance(model.to_faiss(), faiss.IndexPreTransform)


def check_export(model, xb: np.ndarray, xq: np.ndarray) -> None:
    """FAISS's stored codes equal encode(); its ADC distances equal numpy's over decoded codes."""
    import faiss

    index = model.to_faiss()
    index.add(xb)
    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexPreTransform) else index
    stored = faiss.vector_to_array(inner.codes).reshape(len(xb), -1)
    codes = model.encode(xb)
    np.testing.assert_array_equal(stored, codes)
    D, I = index.search(xq, 10)
    R = np.eye(xb.shape[1], dtype=np.float32) if model.rotation_ is None else model.rotation_
    M, _, dsub = model.codebooks_.shape
    recon_rotated = model.codebooks_[np.arange(M)[None, :], codes[I.ravel()].astype(np.int64)].reshape(len(I.ravel()), -1)
    expected = (((xq @ R.T)[:, None, :] - recon_rotated.reshape(*I.shape, -1)) ** 2).sum(2)
    np.testing.assert_allclose(D, expected, rtol=1e-4, atol=1e-5)
    # decode() maps back to the input space: the rotated reconstruction, un-rotated
    np.testing.assert_allclose(model.decode(codes[:50]) @ R.T,
                               model.codebooks_[np.arange(M)[None, :], codes[:50].astype(np.int64)].reshape(50, -1),
                               atol=1e-5)


def test_load_codebooks_into_faiss_pq(data):
    import faiss

    xb, _ = data
    pq = ProductQuantizer(4).fit(xb)
    target = faiss.ProductQuantizer(32, 4, 8)
    load_codebooks_into_faiss_pq(target, pq.codebooks_, sample=xb[:500])
    np.testing.assert_array_equal(target.compute_codes(xb), pq.encode(xb))
    load_codebooks_into_faiss_pq(target, pq.codebooks_)  # synthetic check sample
    with pytest.raises(ConfigError, match=r"\(M, ksub, dsub\) = \(4, 256, 8\)"):
        load_codebooks_into_faiss_pq(target, pq.codebooks_.reshape(8, 256, 4))
    # an IVF-PQ index takes the same codebooks (what vidsearch.index does with them)
    ivf = faiss.IndexIVFPQ(faiss.IndexFlatL2(32), 32, 4, 4, 8)
    load_codebooks_into_faiss_pq(ivf.pq, pq.codebooks_)
    np.testing.assert_array_equal(ivf.pq.compute_codes(xb[:100]), pq.encode(xb[:100]))


# ----------------------------------------------------------------------------- LearnedPQ

LEARNED = dict(epochs=3, n_anchors=3000, batch_size=64, n_candidates=50, lr=5e-4, seed=0, n_threads=1)


@pytest.fixture(scope="module")
def learned(data):
    xb, _ = data
    opq = OPQ(8).fit(xb)
    return opq, LearnedPQ(8, **LEARNED).fit(xb, init=opq)


def test_learned_pq_attributes(learned, data):
    xb, _ = data
    _, model = learned
    assert model.rotation_.shape == (32, 32) and model.rotation_.dtype == np.float32
    assert model.codebooks_.shape == (8, 256, 4) and model.codebooks_.dtype == np.float32
    np.testing.assert_allclose(model.rotation_ @ model.rotation_.T, np.eye(32), atol=1e-4)
    assert len(model.history_) == LEARNED["epochs"]
    assert set(model.fit_seconds_) == {"init", "train", "total"}
    assert model.transform(xb[:5]).shape == (5, 8)


def test_learned_pq_faiss_export(learned, data):
    xb, xq = data
    check_export(learned[1], xb, xq)


def test_learned_pq_recall_not_below_opq(learned, data):
    xb, xq = data
    opq, model = learned
    r_opq, r_learned = adc_recall(opq, xb, xq), adc_recall(model, xb, xq)
    print(f"ADC recall@10 on the test mixture (8 bytes): OPQ {r_opq:.4f}, LearnedPQ {r_learned:.4f}, "
          f"{'strictly above' if r_learned > r_opq else 'not above'} by {r_learned - r_opq:+.4f}")
    assert r_learned >= r_opq - 0.01


def test_learned_pq_is_deterministic(learned, data):
    xb, _ = data
    opq, model = learned
    again = LearnedPQ(8, **LEARNED).fit(xb, init=opq)
    np.testing.assert_array_equal(again.rotation_, model.rotation_)
    np.testing.assert_array_equal(again.codebooks_, model.codebooks_)
    other = LearnedPQ(8, **{**LEARNED, "seed": 1}).fit(xb, init=opq)
    assert not np.array_equal(other.codebooks_, model.codebooks_)


@pytest.mark.parametrize("options", [
    {"assignment": "soft"}, {"orthogonal": False}, {"nbr_loss": "ranking"}, {"noise": 0.3, "mine_every": 1},
    {"lambda_nbr": 0.0},
])
def test_learned_pq_options_train(options, learned, data):
    xb, _ = data
    opq, _ = learned
    model = LearnedPQ(8, **{**LEARNED, "epochs": 2, "n_anchors": 500, **options}).fit(xb, init=opq)
    assert np.isfinite(model.codebooks_).all()
    assert model.reconstruction_error(xb) < 1.5 * opq.reconstruction_error(xb)


def test_learned_pq_errors(data):
    xb, _ = data
    with pytest.raises(ConfigError, match="assignment"):
        LearnedPQ(8, assignment="gumbel").fit(xb)
    with pytest.raises(ConfigError, match="init has codebooks"):
        LearnedPQ(8).fit(xb, init=ProductQuantizer(4).fit(xb))
    with pytest.raises(ConfigError, match="n_candidates"):
        LearnedPQ(8, n_candidates=5).fit(xb, init=OPQ(8).fit(xb))
