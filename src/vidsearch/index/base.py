"""The vector index interface (modelled on ann-benchmarks' BaseANN and FAISS's id maps)."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from vidsearch.config import IndexConfig
from vidsearch.errors import ConfigError


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


class VectorIndex(Protocol):
    """Vectors with int64 ids: add, remove, search, save, load."""

    dim: int

    def add(self, ids: NDArray[np.int64], vectors: NDArray[np.float32]) -> None: ...

    def remove(self, ids: NDArray[np.int64]) -> int: ...

    def search(self, queries: NDArray[np.float32], k: int, params=None) -> IndexHits: ...  # type: ignore[no-untyped-def]

    def save(self, path: Path) -> None: ...

    def __len__(self) -> int: ...

    def memory_bytes(self) -> int: ...


def uses_ivf(config: IndexConfig, n_vectors: int) -> bool:
    """Whether a collection of ``n_vectors`` segments should hold the compressed index."""
    return config.kind == "ivfpq" or (config.kind == "auto" and n_vectors >= config.train_min)


def outgrown(config: IndexConfig, index: "VectorIndex", n_vectors: int) -> bool:
    """Whether a compressed index with automatic lists (``nlist=0``) was trained for a collection at
    least 16x smaller than ``n_vectors`` (its list count a quarter of what it would be now: lists of
    16x the vectors, each probe scanning 16x the codes); the collection then retrains it."""
    from vidsearch.index.ivf import IVFPQIndex, choose_nlist

    if config.nlist or not isinstance(index, IVFPQIndex) or index._ivf is None:
        return False
    return choose_nlist(n_vectors, index.code_dim) >= 4 * int(index._ivf.nlist)


TRAIN_SAMPLE = 200_000  # vectors the compressed index is trained on (k-means, PCA, codebooks)


def build_index(
    config: IndexConfig, dim: int, ids: NDArray[np.int64], vectors: NDArray[np.float32], store=None  # type: ignore[no-untyped-def]
) -> VectorIndex:
    """A new index holding ``vectors`` (N, dim) under ``ids``; trains the compressed index when due.

    ``store`` gives exact vectors by id for the compressed index's re-rank.
    """
    from vidsearch.index.flat import FlatIndex
    from vidsearch.index.ivf import IVFPQConfig, IVFPQIndex

    if not uses_ivf(config, len(ids)) or len(ids) < 256:
        index: VectorIndex = FlatIndex(dim)
    else:
        from vidsearch.index.ivf import choose_nlist

        cfg = IVFPQConfig(pq_m=config.pq_m, quantizer=config.quantizer, reduce=config.reduce)
        # lists for the vectors the index will hold, not for the training sample drawn from them
        nlist = config.nlist or choose_nlist(len(ids), cfg.code_dim(dim))
        ivf = IVFPQIndex(dim, dataclasses.replace(cfg, nlist=nlist), store)
        rng = np.random.default_rng(config.seed)
        # FAISS's k-means wants >= 39 points per list: past ~5K lists the sample grows with them
        size = min(len(vectors), max(TRAIN_SAMPLE, 50 * nlist))
        sample = np.sort(rng.choice(len(vectors), size=size, replace=False))
        ivf.train(vectors[sample], seed=config.seed)
        index = ivf  # type: ignore[assignment]
    index.add(ids, vectors)
    return index


def make_index(config: IndexConfig, dim: int) -> VectorIndex:
    """An empty index (exact until the compressed one is trained by :func:`build_index`)."""
    from vidsearch.index.flat import FlatIndex

    return FlatIndex(dim)


def load_index(config: IndexConfig, path: Path, store=None) -> VectorIndex:  # type: ignore[no-untyped-def]
    """Load an index file, whichever kind it holds (the compressed index starts with its magic tag)."""
    from vidsearch.index.flat import FlatIndex
    from vidsearch.index.ivf import MAGIC, IVFPQIndex

    with open(path, "rb") as f:
        head = f.read(len(MAGIC))
    if head == MAGIC:
        return IVFPQIndex.load(path, store)  # type: ignore[return-value]
    return FlatIndex.load(path)
