"""bench/_compress_estimators.py: the plain ProductQuantizer baseline of bench/compress.py (moved out of
the package, which trains its plain PQ inside FAISS's IVF-PQ), on small deterministic synthetic data."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import vidsearch  # noqa: F401  (sets OPENBLAS_CORETYPE before FAISS loads)
from vidsearch.errors import ConfigError, NotFittedError

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from _compress_estimators import ProductQuantizer  # noqa: E402


def mixture(n: int, d: int, n_clusters: int, seed: int) -> np.ndarray:
    """(n, d) float32 L2-normalised Gaussian mixture with correlated components (as tests/compress)."""
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.standard_normal((d, d)))
    mix = (basis / np.sqrt(1 + np.arange(d) / 4.0)).T
    centers = rng.standard_normal((n_clusters, d))
    label = rng.integers(0, n_clusters, n)
    x = (centers[label] + 0.6 * rng.standard_normal((n, d))) @ mix
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module", autouse=True)
def one_faiss_thread():
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    x = mixture(11000, 32, 100, seed=0)
    return x[:10000], x[10000:]


def test_not_fitted(data):
    xb, _ = data
    pq = ProductQuantizer(4)
    assert pq.rotation_ is None and pq.codebooks_ is None
    for call in (lambda: pq.transform(xb), lambda: pq.encode(xb), lambda: pq.to_faiss(),
                 lambda: pq.inverse_transform(np.zeros((1, 4), np.uint8))):
        with pytest.raises(NotFittedError, match="not fitted yet"):
            call()


def test_pq_shapes_and_error_decreasing_with_M(data):
    xb, _ = data
    errors = []
    for M in (2, 4, 8, 16):
        pq = ProductQuantizer(M, niter=10).fit(xb)
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




def test_faiss_export_same_codes_and_distances(data):
    import faiss

    xb, xq = data
    pq = ProductQuantizer(8).fit(xb)
    index = pq.to_faiss()
    assert isinstance(index, faiss.IndexPQ)
    index.add(xb)
    np.testing.assert_array_equal(faiss.vector_to_array(index.codes).reshape(len(xb), -1), pq.encode(xb))
    D, I = index.search(xq, 10)
    recon = pq.decode(pq.encode(xb))
    np.testing.assert_allclose(D, ((xq[:, None, :] - recon[I]) ** 2).sum(2), rtol=1e-4, atol=1e-5)


def test_bench_compress_fits_every_method_at_equal_bytes(data):
    """bench/compress.py's fit_quantizers on a toy set: every method codes M bytes, learned from the OPQ."""
    import compress

    from vidsearch.compress import OPQ, LearnedPQ

    xb, _ = data
    got = {m: (model, extra) for m, model, _, extra in
           compress.fit_quantizers(xb[:3000], 4, ["pq", "opq", "learned"], torch_threads=1,
                                   config=compress.LearnedPQConfig.quick())}
    assert isinstance(got["pq"][0], ProductQuantizer) and isinstance(got["opq"][0], OPQ)
    learned, extra = got["learned"]
    assert isinstance(learned, LearnedPQ) and learned.init_ is got["opq"][0]
    assert {m.code_size for m, _ in got.values()} == {4}
    assert extra["params"]["epochs"] == 1 and extra["params"]["nbr_loss"] == "ranking"
