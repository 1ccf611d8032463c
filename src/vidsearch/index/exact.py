"""Exact inner-product k-NN over rows that may live on disk (memory-mapped): the one exact scan.

Used as ground truth by the benchmarks and by readers whose index is stale or missing (they scan
the rows the index does not cover instead of training one: readers never train). Each chunk of rows
is converted to float32 and searched by :func:`~vidsearch.index.flat.top_k_inner` (one BLAS product and
a partial sort, as the flat index searches), so a memory-mapped base is read once and never copied whole.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from vidsearch.errors import ShapeError
from vidsearch.index.flat import top_k_inner
from vidsearch.index.hits import IndexHits, empty_hits, merge_hits

CHUNK_ROWS = 262_144


def exact_knn(queries: NDArray[np.float32], base: NDArray[np.floating], k: int, chunk: int = CHUNK_ROWS,
              keep: NDArray[np.bool_] | None = None) -> IndexHits:
    """Exact top-``k`` by inner product of (Q, d) queries over (N, d) rows (float32 or float16, possibly a memmap).

    Args:
        queries: (Q, d) float32.
        base: (N, d) rows; ids are row numbers.
        k: neighbours per query.
        chunk: rows converted to float32 at a time.
        keep: optional (N,) bool mask; rows where it is False are never returned.

    Returns:
        IndexHits with (Q, k) ids (row numbers, -1 padded) and scores (-inf padded).
    """
    q = np.ascontiguousarray(queries, dtype=np.float32)
    if q.ndim != 2 or base.ndim != 2 or q.shape[1] != base.shape[1]:
        raise ShapeError(f"exact k-NN needs (Q, d) queries and (N, d) rows, got {q.shape} and {base.shape}")
    k = max(1, int(k))
    best = empty_hits(len(q), k)
    if len(q) == 0:
        return best
    for s in range(0, len(base), chunk):
        part = np.ascontiguousarray(base[s : s + chunk], dtype=np.float32)
        if not len(part):
            continue
        if keep is not None:
            mask = keep[s : s + len(part)]
            if not mask.all():  # dropped rows may fill the top k: search the kept ones only
                rows = np.flatnonzero(mask)
                if not len(rows):
                    continue
                sub, scores = top_k_inner(q, np.ascontiguousarray(part[rows]), min(k, len(rows)))
                ids = rows[sub] + s
                best = merge_hits([best, IndexHits(ids, scores)], k)
                continue
        ids, scores = top_k_inner(q, part, min(k, len(part)))
        best = merge_hits([best, IndexHits(ids + s, scores)], k)
    return best


class ExactScan:
    """Search-only view of rows ``[first, first + N)`` of a vector file, scanned exactly.

    What a reader searches where its index does not reach: the rows committed after the index
    was saved, or every row when the index file is missing or damaged.
    """

    def __init__(self, rows: NDArray[np.floating], first: int = 0, keep: NDArray[np.bool_] | None = None) -> None:
        self.rows = rows
        self.first = first
        self.keep = keep
        self.dim = int(rows.shape[1])
        self._n = int(len(rows) if keep is None else np.count_nonzero(keep))

    def __len__(self) -> int:
        return self._n

    def search(self, queries: NDArray[np.float32], k: int, params: object = None) -> IndexHits:
        """Exact top-k; ``params`` is ignored (nothing to tune)."""
        hits = exact_knn(queries, self.rows, k, keep=self.keep)
        return IndexHits(np.where(hits.ids >= 0, hits.ids + self.first, -1), hits.scores)

    def memory_bytes(self) -> int:
        return 0  # reads the memory-mapped file; holds nothing of its own
