"""Quantizers that only the benchmarks use, kept out of the package (``vidsearch.compress``).

``ProductQuantizer``: plain PQ (``faiss.ProductQuantizer``) with the package's scikit-learn-style
interface (``fit``/``encode``/``decode``/``to_faiss``, ``rotation_`` = None, ``codebooks_``), the
``pq`` baseline of bench/compress.py and bench/segments.py next to OPQ and LearnedPQ. The index
itself trains its plain PQ inside FAISS's IVF-PQ (``vidsearch.index.ivf``), so the package needs no
stand-alone PQ estimator.
"""

from __future__ import annotations

from typing import Any

import vidsearch  # noqa: F401  (sets OPENBLAS_CORETYPE before FAISS loads)
from vidsearch.compress.pq import _FaissCodes, as_matrix, check_enough, check_pq_shape


class ProductQuantizer(_FaissCodes):
    """Product quantization (``faiss.ProductQuantizer``): M sub-spaces, 2**nbits centroids each.

    Args:
        M: number of sub-quantizers; must divide the vector dimension.
        nbits: bits per sub-quantizer code (8: one byte each).
        niter: k-means iterations per sub-space.
        seed: k-means seed.

    Attributes:
        rotation_: always None (no rotation).
        codebooks_: (M, 2**nbits, d / M) float32 centroids.
        n_features_in_: d.
    """

    def __init__(self, M: int, nbits: int = 8, niter: int = 25, seed: int = 1234) -> None:
        self.M = M
        self.nbits = nbits
        self.niter = niter
        self.seed = seed
        self.rotation_ = None
        self.codebooks_ = None

    def fit(self, X: Any, y: Any = None) -> ProductQuantizer:
        """Train the sub-space k-means on (N, d) float32 vectors (N >= 2**nbits)."""
        import faiss

        x = as_matrix(X)
        check_pq_shape(x.shape[1], self.M, self.nbits)
        check_enough(len(x), 2**self.nbits)
        pq = faiss.ProductQuantizer(x.shape[1], self.M, self.nbits)
        pq.cp.niter = int(self.niter)
        pq.cp.seed = int(self.seed)
        pq.train(x)
        self.n_features_in_ = x.shape[1]
        self._set_fitted(None, faiss.vector_to_array(pq.centroids).reshape(self.M, pq.ksub, pq.dsub))
        return self
