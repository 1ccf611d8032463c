"""compress: OPQ (FAISS) and LearnedPQ on small deterministic synthetic data.

The data is a fixed-seed Gaussian mixture in a correlated space (like bench/compress.py's
``synthetic``, smaller), so every figure below is reproducible. The plain ``ProductQuantizer``
(a benchmark baseline) is tested in tests/bench/test_compress_estimators.py.
"""

from __future__ import annotations

import numpy as np
import pytest

import vidsearch  # noqa: F401  (sets OPENBLAS_CORETYPE before FAISS loads)
from vidsearch.compress import OPQ, LearnedPQ, LearnedPQConfig, load_codebooks_into_faiss_pq
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


@pytest.fixture(scope="module", autouse=True)
def one_faiss_thread():
    """FAISS on one OpenMP thread here: at these sizes a second thread mostly spins (and on a busy
    2-core machine it made OPQ several times slower)."""
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    """10000 base and 1000 query vectors, 32-d (enough points for 256 centroids per sub-space)."""
    x = mixture(11000, 32, 100, seed=0)
    return x[:10000], x[10000:]


@pytest.fixture(scope="module")
def data64() -> tuple[np.ndarray, np.ndarray]:
    """The same kind of mixture in 64-d: 8 bytes per vector is then a real compression."""
    x = mixture(11000, 64, 100, seed=0)
    return x[:10000], x[10000:]


@pytest.fixture(scope="module")
def opq64(data64) -> OPQ:
    return OPQ(8, niter=10).fit(data64[0])


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


# ----------------------------------------------------------------------------- not fitted


@pytest.mark.parametrize("make", [lambda: OPQ(4), lambda: LearnedPQ(4)])
def test_not_fitted(make, data):
    xb, _ = data
    model = make()
    for call in (lambda: model.transform(xb), lambda: model.inverse_transform(np.zeros((1, 4), np.uint8)),
                 lambda: model.to_faiss()):
        with pytest.raises(NotFittedError, match="not fitted yet"):
            call()
    with pytest.raises(ValueError):  # NotFittedError is also a ValueError
        model.transform(xb)
    assert model.rotation_ is None and model.codebooks_ is None
    with pytest.raises(NotFittedError):
        model.encode(xb)


# ----------------------------------------------------------------------------- OPQ


def test_opq_reconstructs_correlated_data_better_than_pq():
    # strongly correlated components: PQ's fixed sub-spaces split them badly, OPQ rotates first
    x = mixture(10000, 32, 40, seed=1, decay=1.0)
    opq = OPQ(4, niter=10).fit(x)
    assert opq.rotation_.shape == (32, 32)
    np.testing.assert_allclose(opq.rotation_ @ opq.rotation_.T, np.eye(32), atol=1e-4)
    assert opq.reconstruction_error(x) <= faiss_pq_error(x, 4)


def test_opq_errors(data):
    """The input checks every quantizer shares (compress.pq), through OPQ."""
    xb, _ = data
    with pytest.raises(ConfigError, match="not divisible by M=5"):
        OPQ(5, niter=2).fit(xb)
    with pytest.raises(ConfigError, match="at least 256"):
        OPQ(4, niter=2).fit(xb[:100])
    with pytest.raises(ConfigError, match="NaN"):
        OPQ(4, niter=2).fit(np.full((300, 32), np.nan, np.float32))
    opq = OPQ(4, niter=2).fit(xb[:3000])
    with pytest.raises(ConfigError, match="uint8"):
        opq.decode(np.zeros((3, 5), np.uint8))
    with pytest.raises(ConfigError, match="32 features"):
        opq.encode(np.zeros((3, 16), np.float32))


def faiss_pq_error(x: np.ndarray, M: int) -> float:
    """Reconstruction error of plain PQ (faiss.ProductQuantizer, 8 bits, as the index trains it)."""
    import faiss

    pq = faiss.ProductQuantizer(x.shape[1], M, 8)
    pq.train(x)
    return float(((x - pq.decode(pq.compute_codes(x))) ** 2).sum(1).mean())


def test_faiss_export_same_codes_and_distances(data64, opq64):
    import faiss

    check_export(opq64, *data64)
    assert isinstance(opq64.to_faiss(), faiss.IndexPreTransform)


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
    source = faiss.ProductQuantizer(32, 4, 8)
    source.train(xb)
    codebooks = faiss.vector_to_array(source.centroids).reshape(4, 256, 8)
    target = faiss.ProductQuantizer(32, 4, 8)
    load_codebooks_into_faiss_pq(target, codebooks, sample=xb[:500])
    np.testing.assert_array_equal(target.compute_codes(xb), source.compute_codes(xb))
    load_codebooks_into_faiss_pq(target, codebooks)  # synthetic check sample
    with pytest.raises(ConfigError, match=r"\(M, ksub, dsub\) = \(4, 256, 8\)"):
        load_codebooks_into_faiss_pq(target, codebooks.reshape(8, 256, 4))
    # an IVF-PQ index takes the same codebooks (what vidsearch.index does with them)
    ivf = faiss.IndexIVFPQ(faiss.IndexFlatL2(32), 32, 4, 4, 8)
    load_codebooks_into_faiss_pq(ivf.pq, codebooks)
    np.testing.assert_array_equal(ivf.pq.compute_codes(xb[:100]), source.compute_codes(xb[:100]))


# ----------------------------------------------------------------------------- LearnedPQ

LEARNED = LearnedPQConfig(epochs=4, n_anchors=2000, seed=0, n_threads=1)  # ~40 s here: the quality check
TINY = LearnedPQConfig.quick(seed=0)  # about a second: shapes, export, determinism, options


@pytest.fixture(scope="module")
def learned(data64, opq64) -> LearnedPQ:
    return LearnedPQ(8, config=TINY).fit(data64[0], init=opq64)


def test_learned_pq_attributes(learned, data64):
    xb, _ = data64
    assert learned.rotation_.shape == (64, 64) and learned.rotation_.dtype == np.float32
    assert learned.codebooks_.shape == (8, 256, 8) and learned.codebooks_.dtype == np.float32
    np.testing.assert_allclose(learned.rotation_ @ learned.rotation_.T, np.eye(64), atol=1e-4)
    assert len(learned.history_) == TINY.epochs and learned.config == TINY
    assert set(learned.fit_seconds_) == {"init", "train", "total"}
    assert learned.transform(xb[:5]).shape == (5, 8)
    assert learned.inverse_transform(learned.transform(xb[:5])).shape == (5, 64)


def test_learned_pq_faiss_export(learned, data64):
    xb, xq = data64
    check_export(learned, xb, xq)


@pytest.mark.slow
def test_learned_pq_recall_not_below_opq(opq64, data64):
    xb, xq = data64
    learned = LearnedPQ(8, config=LEARNED).fit(xb, init=opq64)
    r_opq, r_learned = adc_recall(opq64, xb, xq), adc_recall(learned, xb, xq)
    print(f"ADC recall@10, 64-d mixture, 8 bytes, 1000 queries: OPQ {r_opq:.4f}, LearnedPQ {r_learned:.4f} "
          f"({'strictly above' if r_learned > r_opq else 'not above'}, {r_learned - r_opq:+.4f})")
    assert r_learned >= r_opq - 0.005


def test_learned_pq_is_deterministic(opq64, data64):
    xb, _ = data64
    first = LearnedPQ(8, config=TINY).fit(xb, init=opq64)
    again = LearnedPQ(8, config=TINY).fit(xb, init=opq64)
    np.testing.assert_array_equal(again.rotation_, first.rotation_)
    np.testing.assert_array_equal(again.codebooks_, first.codebooks_)
    np.testing.assert_array_equal(again.encode(xb[:100]), first.encode(xb[:100]))
    other = LearnedPQ(8, config=TINY, seed=1).fit(xb, init=opq64)  # the index passes its seed this way
    assert other.config.seed == 1 and TINY.seed == 0
    assert not np.array_equal(other.codebooks_, first.codebooks_)


@pytest.mark.parametrize("options", [
    {"assignment": "soft"}, {"orthogonal": False}, {"nbr_loss": "distortion"}, {"noise": 0.3},
    {"lambda_nbr": 0.0}, {"mine_every": 0},
])
def test_learned_pq_options_train(options, opq64, data64):
    xb, _ = data64
    model = LearnedPQ(8, config=LearnedPQConfig.quick(**options)).fit(xb, init=opq64)
    assert np.isfinite(model.codebooks_).all() and np.isfinite(model.rotation_).all()
    assert model.reconstruction_error(xb) < 1.5 * opq64.reconstruction_error(xb)


def test_learned_pq_fits_its_own_opq(data):
    xb, _ = data
    model = LearnedPQ(4, config=LearnedPQConfig.quick(init_niter=1)).fit(xb[:3000])
    assert isinstance(model.init_, OPQ) and model.init_.niter == 1
    assert model.codebooks_.shape == (4, 256, 8)


def test_learned_pq_errors(data, opq64, data64):
    xb, _ = data
    with pytest.raises(ConfigError, match="assignment must be one of 'straight_through', 'soft'"):
        LearnedPQConfig(assignment="gumbel")
    with pytest.raises(ConfigError, match="nbr_loss"):
        LearnedPQConfig(nbr_loss="contrastive")
    with pytest.raises(ConfigError, match="n_neighbors < n_candidates"):
        LearnedPQConfig(n_candidates=5)
    with pytest.raises(ConfigError, match="temperature"):
        LearnedPQConfig(temperature=(1.0, 0.0))
    with pytest.raises(ConfigError, match="both 0"):
        LearnedPQConfig(lambda_rec=0, lambda_nbr=0)
    with pytest.raises(ConfigError, match="must be a LearnedPQConfig"):
        LearnedPQ(8, config={"epochs": 1})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="init has codebooks"):
        LearnedPQ(4, config=TINY).fit(data64[0], init=opq64)
    with pytest.raises(ConfigError, match="n_neighbors < n_candidates < n_vectors"):
        LearnedPQ(8, config=LearnedPQConfig.quick(n_candidates=400)).fit(data64[0][:300], init=opq64)
    with pytest.raises(ConfigError, match="not divisible by M=5"):
        LearnedPQ(5, config=TINY).fit(xb)


def test_learned_pq_config_is_frozen_and_round_trips_through_json():
    import dataclasses
    import json

    config = LearnedPQConfig.quick(assignment="soft", nbr_loss="distortion", temperature=[2.0, 0.1])
    assert config.assignment == "soft" and config.temperature == (2.0, 0.1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.epochs = 3  # type: ignore[misc]
    assert LearnedPQConfig(**json.loads(json.dumps(config.to_dict()))) == config
    assert json.loads(json.dumps(config.to_dict()))["nbr_loss"] == "distortion"


def test_learned_pq_without_torch_names_the_extra(monkeypatch, data):
    import sys

    monkeypatch.setitem(sys.modules, "torch", None)  # as if torch were not installed
    with pytest.raises(ConfigError, match=r"pip install 'vidsearch\[train\]'"):
        LearnedPQ(4, config=TINY).fit(data[0])
