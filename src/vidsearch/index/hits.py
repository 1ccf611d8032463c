"""Search output and thread control shared by every index (below the factory, so no cycles)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray


@contextlib.contextmanager
def faiss_threads_for(n_queries: int, small: int = 16) -> Iterator[None]:
    """One OpenMP thread for a small query batch, restored afterwards.

    A handful of queries is microseconds of work; waking FAISS's thread team right after ONNX
    Runtime used the cores cost 12-35 ms per search here (bench/latency.py), 0.3 ms with one thread.
    """
    import faiss

    if n_queries > small:
        yield
        return
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


@dataclass(frozen=True)
class IndexHits:
    """Search output for Q queries and k neighbours.

    Attributes:
        ids: (Q, k) int64 segment ids, padded with -1 where fewer than k exist.
        scores: (Q, k) float32 inner products (cosine for L2-normalised vectors), -inf where padded.
    """

    ids: NDArray[np.int64]
    scores: NDArray[np.float32]


def empty_hits(n_queries: int, k: int) -> IndexHits:
    """(n_queries, k) hits with nothing found: ids -1, scores -inf."""
    return IndexHits(np.full((n_queries, k), -1, np.int64), np.full((n_queries, k), -np.inf, np.float32))


def merge_hits(parts: list[IndexHits], k: int) -> IndexHits:
    """The best ``k`` per query over several (Q, k_i) hit sets of the same queries (ties: earlier part first)."""
    ids = np.concatenate([p.ids for p in parts], axis=1)
    scores = np.concatenate([p.scores for p in parts], axis=1)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    ids, scores = np.take_along_axis(ids, order, 1), np.take_along_axis(scores, order, 1)
    if ids.shape[1] < k:
        pad = ((0, 0), (0, k - ids.shape[1]))
        ids, scores = np.pad(ids, pad, constant_values=-1), np.pad(scores, pad, constant_values=-np.inf)
    return IndexHits(np.where(np.isfinite(scores), ids, -1).astype(np.int64), scores.astype(np.float32))
