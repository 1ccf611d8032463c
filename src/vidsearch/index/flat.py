"""Exact inner-product search (FAISS ``IndexFlatIP`` behind ``IndexIDMap2``): the ground truth."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from vidsearch.errors import CollectionError
from vidsearch.index.base import IndexHits, faiss_threads_for


class FlatIndex:
    """Exact search over float32 vectors with int64 ids."""

    def __init__(self, dim: int, index=None) -> None:  # type: ignore[no-untyped-def]
        import faiss

        self.dim = dim
        self._index = index if index is not None else faiss.IndexIDMap2(faiss.IndexFlatIP(dim))

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def _check(self, vectors: NDArray[np.float32]) -> NDArray[np.float32]:
        x = np.ascontiguousarray(vectors, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(
                f"the provided vectors have shape {x.shape}, but this index expects (N, {self.dim}) vectors"
            )
        return x

    def add(self, ids: NDArray[np.int64], vectors: NDArray[np.float32]) -> None:
        x = self._check(vectors)
        if len(ids) != len(x):
            raise ValueError(f"got {len(ids)} ids for {len(x)} vectors; expected one id per vector")
        if len(x):
            self._index.add_with_ids(x, np.ascontiguousarray(ids, dtype=np.int64))

    def remove(self, ids: NDArray[np.int64]) -> int:
        import faiss

        if len(ids) == 0:
            return 0
        return int(self._index.remove_ids(faiss.IDSelectorBatch(np.ascontiguousarray(ids, dtype=np.int64))))

    def search(self, queries: NDArray[np.float32], k: int, params=None) -> IndexHits:  # type: ignore[no-untyped-def]
        """Exact top-k by inner product; ``params`` is accepted for interface symmetry and ignored."""
        q = self._check(queries)
        k = max(1, int(k))
        if len(self) == 0:
            return IndexHits(np.full((len(q), k), -1, np.int64), np.full((len(q), k), -np.inf, np.float32))
        with faiss_threads_for(len(q)):
            scores, ids = self._index.search(q, min(k, len(self)))
        if ids.shape[1] < k:
            pad = k - ids.shape[1]
            ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
            scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
        scores = np.where(ids < 0, -np.inf, scores).astype(np.float32)
        return IndexHits(ids.astype(np.int64), scores)

    def memory_bytes(self) -> int:
        return len(self) * (self.dim * 4 + 8)

    def save(self, path: Path) -> None:
        """Atomic: write beside the target, then ``os.replace``."""
        import faiss

        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
        os.close(fd)
        try:
            faiss.write_index(self._index, tmp)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)

    @classmethod
    def load(cls, path: Path) -> "FlatIndex":
        import faiss

        try:
            index = faiss.read_index(str(path))
        except RuntimeError as exc:
            raise CollectionError(f"{path}: unreadable FAISS index ({exc}); it will be rebuilt if you delete it") from exc
        return cls(index.d, index)
