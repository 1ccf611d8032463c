"""index: the ``VectorIndex`` interface and its FAISS implementations."""

from vidsearch.index.base import IndexHits, VectorIndex, build_index, load_index, make_index, uses_ivf
from vidsearch.index.flat import FlatIndex
from vidsearch.index.ivf import IVFPQConfig, IVFPQIndex, IVFSearchParams

__all__ = ["FlatIndex", "IVFPQConfig", "IVFPQIndex", "IVFSearchParams", "IndexHits", "VectorIndex", "build_index",
           "load_index", "make_index", "uses_ivf"]
