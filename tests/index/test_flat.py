"""The flat index's search (a matrix product over FAISS's storage, or FAISS's own search past
MATMUL_MAX_ROWS) against FAISS and plain numpy: neighbours, order, ties, padding, adds and removes."""

from __future__ import annotations

import numpy as np
import pytest

import vidsearch.index.flat as flat_module
from vidsearch.errors import ShapeError
from vidsearch.index.flat import FlatIndex, top_k_inner


def _unit(rows: int, d: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((rows, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _index(xb: np.ndarray, ids: np.ndarray) -> FlatIndex:
    index = FlatIndex(xb.shape[1])
    index.add(ids, xb)
    return index


def test_search_equals_faiss_and_numpy_on_random_data():
    xb, xq = _unit(1500, 64, 0), _unit(37, 64, 1)
    ids = np.arange(len(xb), dtype=np.int64) * 7 + 3  # ids are not row numbers
    index = _index(xb, ids)
    hits = index.search(xq, 100)
    scores, labels = index._index.search(xq, 100)  # FAISS's own search of the same vectors
    assert hits.ids.dtype == np.int64 and hits.scores.dtype == np.float32 and hits.ids.shape == (37, 100)
    assert np.array_equal(hits.ids, labels)
    np.testing.assert_allclose(hits.scores, scores, atol=1e-5)
    want = ids[np.argsort(-(xq @ xb.T), axis=1, kind="stable")[:, :100]]
    assert np.array_equal(hits.ids, want)


def test_ties_are_ordered_by_row_and_k_past_the_rows_pads():
    xb = np.array([[1, 0], [0, 1], [1, 0], [0.6, 0.8], [1, 0]], np.float32)
    index = _index(xb, np.array([50, 40, 30, 20, 10], np.int64))
    hits = index.search(np.array([[1, 0]], np.float32), 7)
    assert hits.ids.tolist() == [[50, 30, 10, 20, 40, -1, -1]]  # the three tied at 1.0 in row order
    assert hits.scores[0, :5].tolist() == pytest.approx([1, 1, 1, 0.6, 0])
    assert np.all(np.isneginf(hits.scores[0, 5:]))
    rows, scores = top_k_inner(np.array([[1, 0]], np.float32), xb, 2)
    # two of the three rows tied at the k-th score (which two is unspecified), in row order
    assert set(rows[0].tolist()) <= {0, 2, 4} and rows[0, 0] < rows[0, 1] and scores.tolist() == [[1, 1]]


def test_search_follows_adds_and_removes():
    xb = _unit(300, 16, 2)
    index = _index(xb[:200], np.arange(200, dtype=np.int64))
    first = index.search(xb[250:251], 1).ids[0, 0]
    assert first != 250
    index.add(np.arange(200, 300, dtype=np.int64), xb[200:])  # the cached view of the rows must follow
    assert index.search(xb[250:251], 1).ids[0, 0] == 250
    assert index.remove(np.array([250, 251], np.int64)) == 2
    found = index.search(xb[250:252], 300)
    assert not np.isin([250, 251], found.ids).any()
    assert np.count_nonzero(found.ids >= 0, axis=1).tolist() == [298, 298]


def test_query_chunks_and_the_faiss_path_agree(monkeypatch):
    xb, xq = _unit(800, 32, 3), _unit(25, 32, 4)
    index = _index(xb, np.arange(800, dtype=np.int64))
    whole = index.search(xq, 20)
    monkeypatch.setattr(flat_module, "SCORE_BLOCK", 800 * 3)  # three queries per product
    chunked = index.search(xq, 20)
    monkeypatch.setattr(flat_module, "MATMUL_MAX_ROWS", 100)  # FAISS's search
    by_faiss = index.search(xq, 20)
    assert np.array_equal(whole.ids, chunked.ids) and np.array_equal(whole.ids, by_faiss.ids)
    np.testing.assert_allclose(whole.scores, by_faiss.scores, atol=1e-5)


def test_empty_index_and_wrong_width():
    index = FlatIndex(8)
    hits = index.search(np.ones((2, 8), np.float32), 3)
    assert (hits.ids == -1).all() and np.isneginf(hits.scores).all()
    index.add(np.array([1], np.int64), np.ones((1, 8), np.float32))
    with pytest.raises(ShapeError, match=r"\(N, 8\)"):
        index.search(np.ones((2, 4), np.float32), 3)
