"""Exact inner-product search (FAISS ``IndexFlatIP`` behind ``IndexIDMap2``): the ground truth."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from vidsearch.errors import CollectionError, ShapeError
from vidsearch.index.hits import IndexHits, faiss_threads_for
from vidsearch.index.persist import field, is_index_file, read_index_file, write_index_file


class FlatIndex:
    """Exact search over float32 vectors with int64 ids."""

    def __init__(self, dim: int, index=None) -> None:  # type: ignore[no-untyped-def]
        import faiss

        self.dim = dim
        self._index = index if index is not None else faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        self.info: dict[str, Any] = {}  # saved with the index (the collection records what it covers)

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def _check(self, vectors: NDArray[np.float32]) -> NDArray[np.float32]:
        x = np.ascontiguousarray(vectors, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ShapeError(
                f"the provided vectors have shape {x.shape}, but this index expects (N, {self.dim}) vectors"
            )
        return x

    def add(self, ids: NDArray[np.int64], vectors: NDArray[np.float32]) -> None:
        x = self._check(vectors)
        if len(ids) != len(x):
            raise ShapeError(f"got {len(ids)} ids for {len(x)} vectors; expected one id per vector")
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
        """Atomic, checksummed (``index/persist.py``)."""
        import faiss

        blob = faiss.serialize_index(self._index).tobytes()
        write_index_file(path, "flat", {"dim": self.dim, "info": self.info}, blob)

    @classmethod
    def load(cls, path: Path) -> "FlatIndex":
        """Load a flat index (the container, or a bare FAISS file from before it).

        Raises:
            CollectionError: unreadable or damaged.
        """
        import faiss

        if not is_index_file(path):  # a bare FAISS file: no checksum, FAISS's reader checks what it can
            try:
                index = faiss.read_index(str(path))
            except (RuntimeError, MemoryError) as exc:
                raise CollectionError(f"{path}: unreadable FAISS index ({exc}); it is rebuilt from the vector files") from exc
            info: dict[str, Any] = {}
        else:
            meta, blob = read_index_file(path)
            return cls.from_container(path, meta, blob)
        return cls._checked(path, index, info)

    @classmethod
    def from_container(cls, path: Path, meta: dict[str, Any], blob: np.ndarray) -> "FlatIndex":
        """The index held by a container already read and checksummed (:func:`read_index_file`)."""
        import faiss

        if meta.get("kind") != "flat":
            raise CollectionError(f"{path}: expected a flat index, found kind {meta.get('kind')!r}")
        dim = field(path, meta, "dim", int)
        info = field(path, meta, "info", dict, {})
        try:
            index = faiss.deserialize_index(blob.copy())
        except (RuntimeError, MemoryError) as exc:
            raise CollectionError(f"{path}: damaged FAISS blob ({exc}); it is rebuilt from the vector files") from exc
        if index.d != dim:
            raise CollectionError(f"{path}: the header says {dim}-d, the FAISS blob holds {index.d}-d; damaged")
        return cls._checked(path, index, info)

    @classmethod
    def _checked(cls, path: Path, index: Any, info: dict[str, Any]) -> "FlatIndex":
        import faiss

        # no downcast_index here: its new wrapper does not own the C++ object, which the caller's
        # wrapper would free when it goes out of scope (FAISS's readers return the concrete type already)
        if not isinstance(index, faiss.IndexIDMap2) or index.d < 1:
            raise CollectionError(f"{path}: expected an id-mapped flat FAISS index, found {type(index).__name__}")
        obj = cls(index.d, index)
        obj.info = info
        return obj
