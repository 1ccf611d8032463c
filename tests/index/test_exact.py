"""The one exact k-NN, the exact tail scan, hit merging and the float32 re-rank kernel, against plain numpy."""

from __future__ import annotations

import numpy as np
import pytest

from vidsearch.errors import ShapeError
from vidsearch.index import ExactScan, IndexHits, MemmapStore, exact_knn
from vidsearch.index.hits import merge_hits
from vidsearch.index.kernels import gather_dot_f32_batch


def _data(n: int = 3000, d: int = 32, q: int = 20, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    xb = rng.standard_normal((n, d)).astype(np.float32)
    return xb, rng.standard_normal((q, d)).astype(np.float32)


def _numpy_topk(xq: np.ndarray, xb: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-(xq @ xb.T), axis=1, kind="stable")[:, :k]


def test_exact_knn_matches_numpy_across_chunks_and_on_a_memmap(tmp_path):
    xb, xq = _data()
    path = tmp_path / "xb.npy"
    np.save(path, xb)
    for base, chunk in ((xb, 700), (np.load(path, mmap_mode="r"), 1000), (xb.astype(np.float16), 512)):
        hits = exact_knn(xq, base, 10, chunk=chunk)
        want = _numpy_topk(xq, np.asarray(base, np.float32), 10)
        assert (hits.ids == want).mean() > 0.99  # float16/chunk ties aside, the same neighbours
        assert np.all(np.diff(hits.scores, axis=1) <= 1e-6)


def test_exact_knn_never_returns_dropped_rows_and_pads():
    xb, xq = _data(n=50)
    keep = np.ones(50, bool)
    keep[::2] = False  # half the rows removed
    hits = exact_knn(xq, xb, 40, chunk=16, keep=keep)
    got = hits.ids[hits.ids >= 0]
    assert keep[got].all()
    assert (hits.ids >= 0).sum(axis=1).tolist() == [25] * len(xq)  # only 25 rows kept: the rest is padding
    assert np.isneginf(hits.scores[hits.ids < 0]).all()
    kept = np.flatnonzero(keep)
    assert (hits.ids[:, :25] == kept[_numpy_topk(xq, xb[kept], 25)]).all()
    with pytest.raises(ShapeError):
        exact_knn(xq[:, :5], xb, 3)


def test_exact_scan_offsets_ids_and_merge_keeps_the_best():
    xb, xq = _data(n=400)
    tail = ExactScan(xb[300:], first=300)
    assert len(tail) == 100 and tail.memory_bytes() == 0
    head = exact_knn(xq, xb[:300], 10)
    merged = merge_hits([head, tail.search(xq, 10)], 10)
    assert (merged.ids == _numpy_topk(xq, xb, 10)).all()
    # padded parts (-1, -inf) never win over real hits
    empty = IndexHits(np.full((len(xq), 10), -1), np.full((len(xq), 10), -np.inf, np.float32))
    assert (merge_hits([empty, head], 10).ids == head.ids).all()
    assert merge_hits([head], 15).ids.shape == (len(xq), 15)


@pytest.mark.parametrize("threads", [1, 2])
def test_float32_rerank_kernel_equals_numpy(threads: int, tmp_path):
    xb, xq = _data(n=2000, d=512, q=40)
    path = tmp_path / "rows.npy"
    np.save(path, xb)
    rows = np.load(path, mmap_mode="r")
    ids = np.random.default_rng(1).integers(0, 2000, (40, 64))
    want = np.einsum("qrd,qd->qr", xb[ids], xq)
    np.testing.assert_allclose(gather_dot_f32_batch(rows, ids, xq, threads=threads), want, rtol=1e-4, atol=1e-3)
    store = MemmapStore(rows)
    np.testing.assert_allclose(store.dot_batch(ids, xq, threads=threads), want, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(store.dot_batch(ids[:1], xq[:1]), want[:1], rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(store.dot_batch(ids[:3], xq[:3]), want[:3], rtol=1e-4, atol=1e-3)  # numpy path
    assert store.dot_batch(ids[:0], xq[:0]).shape == (0, 64)  # no queries: an empty (0, R) block
