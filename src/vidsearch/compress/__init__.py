"""compress: OPQ and a learned, differentiable PQ, with FAISS inside.

scikit-learn style: ``fit`` then ``transform``/``inverse_transform``; learned attributes end in
``_``; use before ``fit`` raises :class:`vidsearch.errors.NotFittedError`. Every quantizer
exposes ``rotation_`` ((d, d) float32 or None) and ``codebooks_`` ((M, 2**nbits, d/M) float32),
and ``to_faiss()`` gives the FAISS index that searches its codes (asymmetric distances).

``LearnedPQ`` trains with PyTorch (``pip install 'vidsearch[train]'``); torch is imported only when
it is fitted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vidsearch.compress.pq import OPQ, load_codebooks_into_faiss_pq

if TYPE_CHECKING:
    from vidsearch.compress.learned_pq import LearnedPQ, LearnedPQConfig

__all__ = ["OPQ", "LearnedPQ", "LearnedPQConfig", "load_codebooks_into_faiss_pq"]

_MOVED = {"ProductQuantizer": "bench/_compress_estimators.py (only the benchmarks used it)",
          "PCA": "nothing: no code used it (the index projects with faiss.PCAMatrix)"}


def __getattr__(name: str) -> Any:  # learned_pq's module is light, but keep it off the import path
    if name in ("LearnedPQ", "LearnedPQConfig"):
        from vidsearch.compress import learned_pq

        return getattr(learned_pq, name)
    if name in _MOVED:
        raise AttributeError(f"vidsearch.compress.{name} moved to {_MOVED[name]}")
    raise AttributeError(f"module 'vidsearch.compress' has no attribute {name!r}")
