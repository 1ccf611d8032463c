"""The vector index interface (modelled on ann-benchmarks' BaseANN and FAISS's id maps) and the
one factory that decides which index a collection holds (:func:`build_index`, :func:`load_index`)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from vidsearch.config import IndexConfig
from vidsearch.errors import CollectionError
from vidsearch.index.flat import FlatIndex
from vidsearch.index.hits import IndexHits
from vidsearch.index.ivf import IVFPQConfig, IVFPQIndex, IVFSearchParams, VectorStore, choose_nlist
from vidsearch.index.persist import is_index_file, read_index_file


class VectorIndex(Protocol):
    """Vectors with int64 ids: add, remove, search, save, load."""

    dim: int
    info: dict[str, Any]  # saved with the index: what the collection knows it covers

    def add(self, ids: NDArray[np.int64], vectors: NDArray[np.float32]) -> None: ...

    def remove(self, ids: NDArray[np.int64]) -> int: ...

    def search(self, queries: NDArray[np.float32], k: int, params: IVFSearchParams | None = None) -> IndexHits: ...

    def save(self, path: Path) -> None: ...  # atomic

    def __len__(self) -> int: ...

    def memory_bytes(self) -> int: ...


def uses_ivf(config: IndexConfig, n_vectors: int) -> bool:
    """Whether a collection of ``n_vectors`` segments should hold the compressed index."""
    return config.kind == "ivfpq" or (config.kind == "auto" and n_vectors >= config.train_min)


def outgrown(config: IndexConfig, index: "VectorIndex", n_vectors: int) -> bool:
    """Whether a compressed index with automatic lists (``nlist=0``) was trained for a collection at
    least 16x smaller than ``n_vectors`` (its list count a quarter of what it would be now: lists of
    16x the vectors, each probe scanning 16x the codes); the collection then retrains it."""
    if config.nlist or not isinstance(index, IVFPQIndex) or index._ivf is None:
        return False
    return choose_nlist(n_vectors, index.code_dim, index.config.list_padding_bytes()) >= 4 * int(index._ivf.nlist)


def ivfpq_config(config: IndexConfig) -> IVFPQConfig:
    """The compressed index a collection's ``config`` asks for: codes of ``config.pq_m`` bytes, each
    byte two 4-bit sub-quantizers scanned by FAISS's fast-scan kernels (``index/ivf.py`` says why)."""
    return IVFPQConfig(pq_m=2 * config.pq_m, nbits=4, quantizer=config.quantizer, reduce=config.reduce)


TRAIN_SAMPLE = 200_000  # vectors the compressed index is trained on (k-means, PCA, codebooks)


def build_index(
    config: IndexConfig, dim: int, ids: NDArray[np.int64], vectors: NDArray[np.float32],
    store: VectorStore | None = None, base: Path | None = None, fields: dict[str, NDArray[Any]] | None = None,
) -> VectorIndex:
    """A new index holding ``vectors`` (N, dim) under ``ids``; trains the compressed index when due.

    ``store`` gives exact vectors by id for the compressed index's re-rank; ``base`` is the collection folder (a
    relative Milvus Lite path is taken from it); ``fields``: per-row ``video``, ``start``, ``end`` that a Milvus
    store keeps beside the vectors (the other indexes do not).
    """
    if config.kind == "milvus":  # Milvus builds its own index (replacing the collection's vectors there)
        from vidsearch.index.milvus import MilvusIndex

        index: VectorIndex = MilvusIndex(dim, config.milvus_uri, index_type=config.milvus_index, base=base,
                                         collection=config.milvus_collection or MilvusIndex.DEFAULT_COLLECTION)
    elif not uses_ivf(config, len(ids)) or len(ids) < 256:
        index = FlatIndex(dim)
    else:
        cfg = ivfpq_config(config)
        # lists for the vectors the index will hold, not for the training sample drawn from them
        nlist = config.nlist or choose_nlist(len(ids), cfg.code_dim(dim), cfg.list_padding_bytes())
        ivf = IVFPQIndex(dim, dataclasses.replace(cfg, nlist=nlist), store)
        rng = np.random.default_rng(config.seed)
        # FAISS's k-means wants >= 39 points per list: past ~5K lists the sample grows with them
        size = min(len(vectors), max(TRAIN_SAMPLE, 50 * nlist))
        sample = np.sort(rng.choice(len(vectors), size=size, replace=False))
        ivf.train(vectors[sample], seed=config.seed)
        index = ivf
    if config.kind == "milvus" and fields:
        index.add(ids, vectors, **fields)  # MilvusIndex.add keeps the rows' fields
    else:
        index.add(ids, vectors)
    return index


def load_index(path: Path, store: VectorStore | None = None) -> VectorIndex:
    """Load an index file, whichever kind it holds.

    Raises:
        CollectionError: unreadable or damaged (the caller scans the vectors exactly instead).
    """
    if not is_index_file(path):
        return FlatIndex.load(path)  # a bare FAISS file, from before the container
    meta, blob = read_index_file(path)
    kind = meta.get("kind", "ivfpq")  # files from before the flat container held IVF-PQ only
    if kind == "ivfpq":
        return IVFPQIndex.from_container(path, meta, blob, store)
    if kind == "flat":
        return FlatIndex.from_container(path, meta, blob)
    if kind == "milvus":  # the vectors are in Milvus; the file says where
        from vidsearch.index.milvus import MilvusIndex

        return MilvusIndex.from_container(path, meta, blob)
    raise CollectionError(f"{path}: unknown index kind {kind!r}; expected 'flat', 'ivfpq' or 'milvus'")
