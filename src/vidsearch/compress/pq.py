"""Product quantization helpers (FAISS inside) and OPQ (rotation + PQ), scikit-learn style.

OPQ is the starting point of :class:`vidsearch.compress.LearnedPQ`. (The plain
``ProductQuantizer`` estimator, a baseline only the benchmarks used, lives in
``bench/_compress_estimators.py``; the index trains its plain PQ inside FAISS's IVF-PQ.)

Every quantizer exposes the same two learned attributes, which is all an index needs to rebuild
it in FAISS:

- ``rotation_``: (d, d) float32 matrix applied as ``y = x @ rotation_.T`` before quantization,
  or ``None`` for the identity (plain PQ);
- ``codebooks_``: (M, 2**nbits, d / M) float32 centroids, sub-space ``m`` covering the
  components ``y[:, m * dsub : (m + 1) * dsub]`` (FAISS ``ProductQuantizer.centroids`` layout).

Codes are FAISS's: (N, code_size) uint8, one byte per sub-quantizer when ``nbits == 8``.
Distances are squared L2; for L2-normalised vectors the ranking equals the inner-product one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Self, cast

import numpy as np
from numpy.typing import NDArray

from vidsearch.errors import ConfigError, NotFittedError

# ----------------------------------------------------------------------------- shared checks


def check_is_fitted(estimator: Any, attribute: str = "codebooks_", action: str = "transform") -> None:
    """Raise :class:`NotFittedError` when ``estimator`` has no ``attribute`` yet (sklearn style)."""
    if getattr(estimator, attribute, None) is None:
        name = type(estimator).__name__
        raise NotFittedError(
            f"This {name} instance is not fitted yet; call {name}.fit(X) with training vectors before {action}."
        )


def as_matrix(x: Any, name: str = "X", n_features: int | None = None) -> NDArray[np.float32]:
    """``x`` as a C-contiguous float32 (N, d) array, with a readable error when it is not one."""
    a = np.asarray(x)
    if a.ndim != 2:
        raise ConfigError(f"{name} must be a 2-d array (n_vectors, n_features), got shape {a.shape}; "
                          f"reshape a single vector with x.reshape(1, -1)")
    if n_features is not None and a.shape[1] != n_features:
        raise ConfigError(f"{name} has {a.shape[1]} features, but this compressor was fitted on vectors with "
                          f"{n_features} features; pass vectors of the same dimension as in fit")
    a = np.ascontiguousarray(a, dtype=np.float32)
    if not np.isfinite(a).all():
        raise ConfigError(f"{name} contains NaN or infinite values; remove or fix those rows first")
    return a


def check_pq_shape(d: int, M: int, nbits: int) -> None:
    """Validate a (d, M, nbits) product-quantizer layout."""
    if not isinstance(M, (int, np.integer)) or M < 1:
        raise ConfigError(f"M (number of sub-quantizers) must be a positive integer, got {M!r}")
    if not isinstance(nbits, (int, np.integer)) or not 1 <= nbits <= 16:
        raise ConfigError(f"nbits must be an integer in [1, 16], got {nbits!r}; 8 gives one byte per sub-quantizer")
    if d % M:
        divisors = [m for m in range(1, d + 1) if d % m == 0]
        raise ConfigError(f"the vector dimension {d} is not divisible by M={M}; choose M among {divisors}")


def _check_codes(codes: Any, code_size: int) -> NDArray[np.uint8]:
    c = np.asarray(codes)
    if c.ndim != 2 or c.shape[1] != code_size or c.dtype != np.uint8:
        raise ConfigError(f"codes must be a uint8 array of shape (N, {code_size}), got {c.dtype} {c.shape}; "
                          f"pass the output of encode()")
    return np.ascontiguousarray(c)


# ----------------------------------------------------------------------------- FAISS helpers


def assign_codes(y: NDArray[np.float32], codebooks: NDArray[np.float32]) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """Nearest centroid per sub-space, in numpy (the reference for FAISS's ``compute_codes``).

    Args:
        y: (N, d) float32 vectors, already rotated.
        codebooks: (M, ksub, dsub) float32.

    Returns:
        (N, M) int64 centroid indices and (N, M) float32 squared distances to them.
    """
    M, ksub, dsub = codebooks.shape
    ys = y.reshape(len(y), M, dsub).astype(np.float32)
    idx = np.empty((len(y), M), np.int64)
    dist = np.empty((len(y), M), np.float32)
    for m in range(M):
        c = codebooks[m]
        d2 = (ys[:, m] ** 2).sum(1, keepdims=True) - 2 * ys[:, m] @ c.T + (c**2).sum(1)[None, :]
        idx[:, m] = d2.argmin(1)
        dist[:, m] = np.maximum(d2[np.arange(len(y)), idx[:, m]], 0)
    return idx, dist


def unpack_codes(pq: Any, codes: NDArray[np.uint8]) -> NDArray[np.int64]:
    """(N, code_size) FAISS codes -> (N, M) int64 centroid indices (any ``nbits``)."""
    if pq.nbits == 8:
        return codes.astype(np.int64)
    import faiss

    return faiss.unpack_bitstrings(np.ascontiguousarray(codes), pq.M, pq.nbits).astype(np.int64)


def load_codebooks_into_faiss_pq(
    pq: Any,
    codebooks: NDArray[np.float32],
    sample: NDArray[np.float32] | None = None,
    seed: int = 0,
) -> Any:
    """Copy ``codebooks`` into a ``faiss.ProductQuantizer`` and check FAISS encodes as numpy does.

    The check encodes ``sample`` (or, when None, 256 synthetic points: random centroid
    combinations plus a little noise) with ``pq.compute_codes`` and with :func:`assign_codes`, and
    requires each FAISS code to be at the numpy minimum distance (ties may pick either centroid).

    Args:
        pq: a ``faiss.ProductQuantizer`` (e.g. ``IndexPQ.pq`` or ``IndexIVFPQ.pq``); modified in place.
        codebooks: (M, ksub, dsub) float32, with M, ksub and dsub equal to ``pq``'s.
        sample: optional (n, d) float32 vectors in the quantizer's input space (after any rotation).
        seed: seed of the synthetic sample.

    Returns:
        ``pq`` itself.

    Raises:
        ConfigError: the shapes disagree, or FAISS's codes differ from the numpy argmin.
    """
    import faiss

    cb = np.ascontiguousarray(codebooks, dtype=np.float32)
    expected = (int(pq.M), int(pq.ksub), int(pq.dsub))
    if cb.ndim != 3 or cb.shape != expected:
        raise ConfigError(f"codebooks have shape {cb.shape}, but this faiss.ProductQuantizer expects "
                          f"(M, ksub, dsub) = {expected}; build the FAISS quantizer with the same d, M and nbits")
    if not np.isfinite(cb).all():
        raise ConfigError("codebooks contain NaN or infinite values; the quantizer was not trained properly")
    faiss.copy_array_to_vector(cb.ravel(), pq.centroids)
    if pq.transposed_centroids.size() > 0:  # a cache some FAISS kernels keep beside the centroids
        pq.sync_transposed_centroids()
    if sample is None:
        rng = np.random.default_rng(seed)
        M, ksub, dsub = expected
        picks = rng.integers(0, ksub, size=(256, M))
        base = cb[np.arange(M)[None, :], picks]  # (256, M, dsub)
        scale = float(np.sqrt(((cb - cb.mean(1, keepdims=True)) ** 2).sum(2).mean()) + 1e-12)
        sample = (base + 0.05 * scale / np.sqrt(dsub) * rng.standard_normal(base.shape)).reshape(256, -1)
    y = as_matrix(sample, "sample", int(pq.d))
    codes = unpack_codes(pq, pq.compute_codes(y))
    ref_idx, ref_dist = assign_codes(y, cb)
    M, _, dsub = cb.shape
    ys = y.reshape(len(y), M, dsub)
    got_dist = ((ys - cb[np.arange(M)[None, :], codes]) ** 2).sum(2)
    tol = 1e-4 * np.maximum(1.0, np.abs(ref_dist)) + 1e-5 * float((cb**2).sum(2).max() + (ys**2).sum(2).max())
    bad = (codes != ref_idx) & (got_dist > ref_dist + tol)
    if bad.any():
        raise ConfigError(f"FAISS encoded {int(bad.any(1).sum())}/{len(y)} sample vectors differently from the "
                          f"nearest-centroid rule after loading the codebooks; check the (M, ksub, dsub) layout "
                          f"(sub-space m must hold components m*dsub:(m+1)*dsub)")
    return pq


def make_faiss_pq(d: int, codebooks: NDArray[np.float32], nbits: int) -> Any:
    """A new ``faiss.ProductQuantizer`` holding ``codebooks`` (checked with :func:`load_codebooks_into_faiss_pq`)."""
    import faiss

    M = codebooks.shape[0]
    pq = faiss.ProductQuantizer(d, M, nbits)
    return load_codebooks_into_faiss_pq(pq, codebooks)


def make_linear_transform(rotation: NDArray[np.float32]) -> Any:
    """``faiss.LinearTransform`` computing ``y = x @ rotation.T`` (A stored row-major, d_out x d_in)."""
    import faiss

    d_out, d_in = rotation.shape
    lt = faiss.LinearTransform(d_in, d_out, False)
    faiss.copy_array_to_vector(np.ascontiguousarray(rotation, dtype=np.float32).ravel(), lt.A)
    lt.is_trained = True
    return lt


# ----------------------------------------------------------------------------- quantizers


class _FaissCodes:
    """Shared encode/decode/to_faiss over ``rotation_`` and ``codebooks_`` (FAISS kernels)."""

    M: int
    nbits: int
    rotation_: NDArray[np.float32] | None
    codebooks_: NDArray[np.float32] | None
    n_features_in_: int

    if TYPE_CHECKING:  # each quantizer defines its own fit (OPQ, LearnedPQ); fit_transform calls it

        def fit(self, X: Any, y: Any = None) -> Self: ...

    def _set_fitted(self, rotation: NDArray[np.float32] | None, codebooks: NDArray[np.float32]) -> None:
        self.rotation_ = None if rotation is None else np.ascontiguousarray(rotation, dtype=np.float32)
        self.codebooks_ = np.ascontiguousarray(codebooks, dtype=np.float32)
        d = self.codebooks_.shape[0] * self.codebooks_.shape[2]
        self._pq = make_faiss_pq(d, self.codebooks_, self.nbits)
        self._transform = None if self.rotation_ is None else make_linear_transform(self.rotation_)
        self._inverse = None if self.rotation_ is None else np.linalg.pinv(self.rotation_.astype(np.float64)).astype(np.float32)

    @property
    def code_size(self) -> int:
        """Bytes per encoded vector: ceil(M * nbits / 8)."""
        return (self.M * self.nbits + 7) // 8

    def rotate(self, X: Any) -> NDArray[np.float32]:
        """(N, d) float32 vectors -> (N, d) float32 ``X @ rotation_.T`` (FAISS's transform; copy when None)."""
        check_is_fitted(self, action="rotate")
        x = as_matrix(X, n_features=self.n_features_in_)
        return x.copy() if self._transform is None else self._transform.apply(x)

    def encode(self, X: Any) -> NDArray[np.uint8]:
        """Encode (N, d) float32 vectors into (N, code_size) uint8 codes with FAISS."""
        check_is_fitted(self, action="encode")
        return self._pq.compute_codes(self.rotate(X))

    def decode(self, codes: Any) -> NDArray[np.float32]:
        """(N, code_size) uint8 codes -> (N, d) float32 reconstructions in the input space."""
        check_is_fitted(self, action="decode")
        y = self._pq.decode(_check_codes(codes, self._pq.code_size))
        return y if self._inverse is None else np.ascontiguousarray(y @ self._inverse.T)

    def transform(self, X: Any) -> NDArray[np.uint8]:
        """Same as :meth:`encode`."""
        return self.encode(X)

    def inverse_transform(self, codes: Any) -> NDArray[np.float32]:
        """Same as :meth:`decode`."""
        return self.decode(codes)

    def fit_transform(self, X: Any, y: Any = None) -> NDArray[np.uint8]:
        return self.fit(X).encode(X)

    def reconstruction_error(self, X: Any) -> float:
        """Mean squared L2 error per vector, ``mean(||x - decode(encode(x))||^2)``."""
        x = as_matrix(X, n_features=getattr(self, "n_features_in_", None))
        return float(((x - self.decode(self.encode(x))) ** 2).sum(1).mean())

    def to_faiss(self) -> Any:
        """A FAISS index doing asymmetric-distance (ADC) search over these codes.

        ``IndexPQ`` (squared L2) holding ``codebooks_``, behind ``IndexPreTransform`` with a
        ``LinearTransform`` of ``rotation_`` when there is one. The index is trained and empty:
        ``add`` encodes with the same kernels as :meth:`encode`. Distances are approximate.
        """
        check_is_fitted(self, action="to_faiss")
        codebooks = cast("NDArray[np.float32]", self.codebooks_)  # not None: check_is_fitted passed
        return make_adc_index(self.rotation_, codebooks, self.nbits)


def make_adc_index(rotation: NDArray[np.float32] | None, codebooks: NDArray[np.float32], nbits: int) -> Any:
    """Trained, empty ``IndexPQ`` (squared L2) with ``codebooks``, behind ``LinearTransform(rotation)`` if any."""
    import faiss

    M, _, dsub = codebooks.shape
    index = faiss.IndexPQ(M * dsub, M, nbits, faiss.METRIC_L2)
    load_codebooks_into_faiss_pq(index.pq, codebooks)
    index.is_trained = True
    if rotation is None:
        return index
    return faiss.IndexPreTransform(make_linear_transform(rotation), index)  # keeps references to both


class OPQ(_FaissCodes):
    """Optimized product quantization: a learned rotation (``faiss.OPQMatrix``) then PQ.

    The rotation minimises the PQ reconstruction error (Ge et al. 2013, non-parametric
    alternating optimisation); the PQ codebooks are then trained on the rotated vectors, as
    ``faiss.index_factory(d, "OPQ{M},PQ{M}")`` does.

    Args:
        M: number of sub-quantizers; must divide the vector dimension.
        nbits: bits per sub-quantizer code.
        niter: alternating rotation/codebook iterations of the OPQ training.
        niter_pq: k-means iterations of the final PQ.
        seed: k-means seed of the final PQ (FAISS's OPQ training uses its own fixed seeds).

    Attributes:
        rotation_: (d, d) float32 orthogonal matrix, ``y = x @ rotation_.T``.
        codebooks_: (M, 2**nbits, d / M) float32 centroids in the rotated space.
        n_features_in_: d.
    """

    def __init__(self, M: int, nbits: int = 8, niter: int = 50, niter_pq: int = 25, seed: int = 1234) -> None:
        self.M = M
        self.nbits = nbits
        self.niter = niter
        self.niter_pq = niter_pq
        self.seed = seed
        self.rotation_ = None
        self.codebooks_ = None

    def fit(self, X: Any, y: Any = None) -> OPQ:
        """Train the rotation and the codebooks on (N, d) float32 vectors (N >= 2**nbits)."""
        import faiss

        x = as_matrix(X)
        d = x.shape[1]
        check_pq_shape(d, self.M, self.nbits)
        check_enough(len(x), 2**self.nbits)
        opq = faiss.OPQMatrix(d, self.M)
        opq.niter = int(self.niter)
        opq.train(x)
        rotation = faiss.vector_to_array(opq.A).reshape(d, d)
        pq = faiss.ProductQuantizer(d, self.M, self.nbits)
        pq.cp.niter = int(self.niter_pq)
        pq.cp.seed = int(self.seed)
        pq.train(opq.apply(x))
        self.n_features_in_ = d
        self._set_fitted(rotation, faiss.vector_to_array(pq.centroids).reshape(self.M, pq.ksub, pq.dsub))
        return self


def check_enough(n: int, ksub: int) -> None:
    """At least ``ksub`` training vectors for ``ksub`` centroids per sub-space."""
    if n < ksub:
        raise ConfigError(f"got {n} training vectors, but {ksub} centroids per sub-space need at least {ksub} "
                          f"(FAISS recommends 39 * {ksub}); pass more vectors or lower nbits")
