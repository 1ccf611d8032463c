"""The vector index interface (modelled on ann-benchmarks' BaseANN and FAISS's id maps)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from vidsearch.config import IndexConfig
from vidsearch.errors import ConfigError


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

    def search(self, queries: NDArray[np.float32], k: int) -> IndexHits: ...

    def save(self, path: Path) -> None: ...

    def __len__(self) -> int: ...

    def memory_bytes(self) -> int: ...


def make_index(config: IndexConfig, dim: int) -> VectorIndex:
    from vidsearch.index.flat import FlatIndex

    if config.kind == "flat":
        return FlatIndex(dim)
    raise ConfigError(f"unknown index kind {config.kind!r}; expected 'flat'")


def load_index(config: IndexConfig, path: Path) -> VectorIndex:
    from vidsearch.index.flat import FlatIndex

    if config.kind == "flat":
        return FlatIndex.load(path)
    raise ConfigError(f"unknown index kind {config.kind!r}; expected 'flat'")
