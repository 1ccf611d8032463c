"""compress: PCA/whitening, product quantizers (PQ, OPQ) and a learned, differentiable PQ.

scikit-learn style: ``fit`` then ``transform``/``inverse_transform``; learned attributes end in
``_``; use before ``fit`` raises :class:`vidsearch.errors.NotFittedError`. Every quantizer
exposes ``rotation_`` ((d, d) float32 or None) and ``codebooks_`` ((M, 2**nbits, d/M) float32),
and ``to_faiss()`` gives the FAISS index that searches its codes (asymmetric distances).
"""

from vidsearch.compress.pca import PCA
from vidsearch.compress.pq import OPQ, ProductQuantizer, load_codebooks_into_faiss_pq

__all__ = ["OPQ", "PCA", "LearnedPQ", "ProductQuantizer", "load_codebooks_into_faiss_pq"]


def __getattr__(name: str):  # torch is imported only when LearnedPQ is used
    if name == "LearnedPQ":
        from vidsearch.compress.learned_pq import LearnedPQ

        return LearnedPQ
    raise AttributeError(f"module 'vidsearch.compress' has no attribute {name!r}")
