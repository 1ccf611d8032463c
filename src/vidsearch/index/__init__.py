"""index: the ``VectorIndex`` interface, its FAISS implementations, and the factory that picks one."""

from vidsearch.index.base import VectorIndex, build_index, load_index, uses_ivf
from vidsearch.index.exact import ExactScan, exact_knn
from vidsearch.index.flat import FlatIndex
from vidsearch.index.hits import IndexHits
from vidsearch.index.ivf import IVFPQConfig, IVFPQIndex, IVFSearchParams, MemmapStore

__all__ = ["ExactScan", "FlatIndex", "IVFPQConfig", "IVFPQIndex", "IVFSearchParams", "IndexHits", "MemmapStore",
           "VectorIndex", "build_index", "exact_knn", "load_index", "uses_ivf"]
