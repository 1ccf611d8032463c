"""index: the ``VectorIndex`` interface and its FAISS implementations."""

from vidsearch.index.base import IndexHits, VectorIndex, make_index
from vidsearch.index.flat import FlatIndex

__all__ = ["FlatIndex", "IndexHits", "VectorIndex", "make_index"]
