"""Temporal alignment of embedding sequences: DTW, subsequence DTW and their reversal-aware variants.

Used to re-rank candidate videos by how their sequences of segment (or frame) vectors line up with
the query's, which voting on fixed offsets cannot do for speed changes, cuts and reversed playback.

Inputs are L2-normalised float32 sequences ``a`` (n, d) and ``b`` (m, d). For unit vectors the
squared Euclidean distance is ``||a_i - b_j||^2 = 2 - 2 cos(a_i, b_j)``, so the whole cost matrix is
one matrix product ``C = max(0, 2 - 2 a @ b.T)`` (clipped: rounding can make it slightly negative),
and every cell lies in [0, 4].

Definitions (``D`` the accumulated cost, ``C`` the cost matrix, indices from 0):

* DTW: ``D[i, j] = C[i, j] + min(D[i-1, j], D[i, j-1], D[i-1, j-1])``, path from (0, 0) to (n-1, m-1).
* subsequence DTW (open begin and end in the reference ``b``): ``D[0, j] = C[0, j]`` (start anywhere),
  end at ``argmin_j D[n-1, j]`` (the first one on ties).
* ``cost`` is the sum of ``C`` along the path; ``normalized_cost = cost / len(path)`` and
  ``score = 1 - normalized_cost / 2`` is the mean cosine similarity along the path, in [-1, 1].
  Normalising by the path length (not n + m) is what makes the score a mean cosine, so long and short
  videos and full and subsequence alignments compare on one scale. The path itself is the minimum-cost
  path (not the one of minimum mean cost).
* The path is traced back preferring the diagonal step, then ``(i-1, j)``, then ``(i, j-1)``.

Reversal. A warping path read backwards is a warping path of the two reversed sequences with the same
cells, so with this symmetric step pattern ``DTW(reverse(a), reverse(b)) == DTW(a, b)``: reversing both
sides tells nothing new. ``bidtw`` therefore reverses ONE side, the query. The same holds for
subsequence DTW (a cheapest path never starts or ends with a horizontal run, as costs are >= 0), so
"reverse both" equals ``subsequence_dtw`` and cannot find reversed playback (tests/search/test_align.py
shows it); ``sub_bidtw_one_side`` (reverse the query only) is the useful reading.

Speed. The cost matrices come from BLAS (one product for all candidates in ``rerank``); the dynamic
programme runs in numba (``@njit(cache=True)``). numba installs from PyPI as a wheel for Python 3.11
with numpy 2.4, compiles once per machine into ``__pycache__`` (later processes load it in ~0.1 s),
and lets a whole batch (every candidate, both directions, the top-k bookkeeping, the early abandon
and the trace-back) run in one compiled call without per-candidate Python overhead, at ~1.5-3 ns per
cell. dtaidistance, the second choice, has a C DTW for (n, d) series with ``max_dist``, and a
subsequence alignment, but it computes the distances itself per pair in scalar C (O(n m d), no BLAS:
that dominates at d = 256-1280), returns the cost only (the path needs the full matrix and a Python
trace-back), and reversing one side or pruning on our normalised bound would be Python loops around
per-pair calls; bench/align.py measures it as a peer. A numpy anti-diagonal wavefront vectorises only
min(n, m) cells per step, so for 60x60 it is dominated by per-step overhead (also in the bench).
Without numba the same kernels run as plain Python (correct, some hundreds of times slower).

Pruning. ``rerank`` with ``top`` orders the candidates by a lower bound of their normalised cost and
stops at the first whose bound exceeds the current k-th best (exact: it returns what the unpruned
search returns); a DP is also abandoned as soon as a whole row exceeds what the k-th best allows.
Lower bound of the path cost: every path visits each query row at least once, so
``cost >= R = sum_i min_j C[i, j]`` (and, for full DTW, also ``>= sum_j min_i C[i, j]``). The other
``L - n`` cells cost at least ``c_min = min C``, and ``L <= n + m - 1``, so
``normalized_cost >= c_min + (R - n c_min) / (n + m - 1)``.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from vidsearch.errors import AlignmentError, VidsearchError  # noqa: F401

try:  # numba is a dependency; the fallback keeps the module importable (and correct) without it.
    from numba import njit

    NUMBA_AVAILABLE = True
except ImportError:  # pragma: no cover - exercised only where numba is missing
    NUMBA_AVAILABLE = False

    def njit(*args, **kwargs):  # type: ignore[no-redef]  # stands in for numba's njit when numba is missing
        if len(args) == 1 and callable(args[0]) and not kwargs:
            return args[0]
        return lambda f: f

__all__ = [
    "AlignMethod",
    "AlignmentError",
    "AlignmentResult",
    "RerankResult",
    "bidtw",
    "cost_matrix",
    "dtw",
    "lower_bound",
    "rerank",
    "sub_bidtw_one_side",
    "subsequence_dtw",
]

UNIT_NORM_TOLERANCE = 1e-3
_EMPTY_PATH = np.zeros((0, 2), np.int64)


class AlignMethod(str, enum.Enum):
    """Which alignment ``rerank`` scores candidates with."""

    DTW = "dtw"  # full-sequence DTW
    BIDTW = "bidtw"  # min(DTW(a, b), DTW(reverse(a), b))
    SUBDTW = "subdtw"  # subsequence DTW: the query is a part of the candidate
    SUB_BIDTW = "sub_bidtw"  # min(subDTW(a, b), subDTW(reverse(a), b)): reversed playback of a part


# (reverse query rows, reverse reference columns) of each variant tried, and whether open-ended.
_VARIANTS: dict[AlignMethod, tuple[tuple[tuple[bool, bool], ...], bool]] = {
    AlignMethod.DTW: (((False, False),), False),
    AlignMethod.BIDTW: (((False, False), (True, False)), False),
    AlignMethod.SUBDTW: (((False, False),), True),
    AlignMethod.SUB_BIDTW: (((False, False), (True, False)), True),
}


@dataclass(frozen=True)
class AlignmentResult:
    """The best alignment of a query sequence ``a`` (n, d) with a reference sequence ``b`` (m, d).

    Attributes:
        cost: sum of squared distances ``||a_i - b_j||^2`` along the path; ``inf`` when abandoned
            (the cost exceeds ``max_cost``).
        normalized_cost: ``cost / len(path)``, in [0, 4]; ``inf`` when abandoned.
        score: ``1 - normalized_cost / 2``, the mean cosine similarity along the path, in [-1, 1]
            (1: every aligned pair identical); ``-inf`` when abandoned.
        path: (L, 2) int64 pairs ``(i, j)``: query element i aligned with reference element j, in the
            indices of the ORIGINAL (not reversed) sequences, ordered by j (then by the order of the
            steps). When the reversed query won, i decreases along the path. (0, 2) when abandoned.
        query_range: half-open ``(start, stop)`` of the query elements on the path (``(0, n)`` unless
            abandoned, when it is ``(0, 0)``).
        reference_range: half-open ``(start, stop)``: ``b[start:stop]`` is the matched part of the
            reference (``(0, m)`` for full DTW, ``(0, 0)`` when abandoned).
        reversed: True when the reversed query won.
        method: the alignment that produced this result.
    """

    cost: float
    normalized_cost: float
    score: float
    path: NDArray[np.int64]
    query_range: tuple[int, int]
    reference_range: tuple[int, int]
    reversed: bool
    method: AlignMethod

    @property
    def abandoned(self) -> bool:
        """True when the alignment was given up because its cost exceeds the bound."""
        return not np.isfinite(self.cost)


@dataclass(frozen=True)
class RerankResult:
    """Candidates re-ranked by alignment score, best first.

    Attributes:
        indices: (k,) int64 positions in ``candidate_seqs``, best first (ties: lower position first).
            k = min(top, K) with ``top``, else K; candidates whose alignment was abandoned are left out.
        scores: (k,) float64 ``AlignmentResult.score`` of each, non-increasing.
        alignments: k ``AlignmentResult``, in the same order.
        lower_bounds: (K,) float64 lower bound of every candidate's ``normalized_cost``.
        status: (K,) int8 per candidate: 0 skipped by the lower bound, 1 aligned, 2 abandoned in the DP.
    """

    indices: NDArray[np.int64]
    scores: NDArray[np.float64]
    alignments: list[AlignmentResult]
    lower_bounds: NDArray[np.float64]
    status: NDArray[np.int8]

    @property
    def n_pruned(self) -> int:
        """Candidates never aligned because their lower bound could not beat the k-th best."""
        return int(np.count_nonzero(self.status == _PRUNED))

    @property
    def n_abandoned(self) -> int:
        """Candidates whose DP stopped early (a whole row already beyond the k-th best)."""
        return int(np.count_nonzero(self.status == _ABANDONED))


_PRUNED, _ALIGNED, _ABANDONED = 0, 1, 2
_INF = np.inf


# --------------------------------------------------------------------------------------------------
# numeric kernels. C: (n, M) float32 cost matrix of the query against all candidates side by side;
# a candidate is the column block [s, s + m). D: (n, >= m) float64 accumulated cost (scratch).
# --------------------------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def _align_one(C, s, m, rev_rows, rev_cols, subsequence, bound, D, path):  # pragma: no cover - numba
    """DP + trace-back of one candidate block in one direction.

    Returns (cost, L); L == 0 and cost inf when some row's minimum, or the final cost, exceeds ``bound``.
    ``path[:L]`` receives the (i, j) cells in DP coordinates (reversed sides counted from their end),
    from the last cell back to the first.
    """
    n = C.shape[0]
    if rev_cols:
        c0 = s + m - 1
        dj = -1
    else:
        c0 = s
        dj = 1
    for i in range(n):
        r = n - 1 - i if rev_rows else i
        if i == 0:
            v = np.float64(C[r, c0])
            D[0, 0] = v
            row_min = v
            for j in range(1, m):
                c = np.float64(C[r, c0 + dj * j])
                v = c if subsequence else c + D[0, j - 1]
                D[0, j] = v
                if v < row_min:
                    row_min = v
        else:
            v = np.float64(C[r, c0]) + D[i - 1, 0]
            D[i, 0] = v
            row_min = v
            for j in range(1, m):
                best = D[i - 1, j - 1]
                up = D[i - 1, j]
                if up < best:
                    best = up
                left = D[i, j - 1]
                if left < best:
                    best = left
                v = np.float64(C[r, c0 + dj * j]) + best
                D[i, j] = v
                if v < row_min:
                    row_min = v
        if row_min > bound:
            return _INF, 0
    j = m - 1
    if subsequence:  # end at the first minimum of the last row
        j = 0
        for jj in range(1, m):
            if D[n - 1, jj] < D[n - 1, j]:
                j = jj
    cost = D[n - 1, j]
    if cost > bound:
        return _INF, 0
    i = n - 1
    L = 0
    path[L, 0] = i
    path[L, 1] = j
    L += 1
    while i > 0 or (j > 0 and not subsequence):
        if i == 0:
            j -= 1
        elif j == 0:
            i -= 1
        else:
            diag = D[i - 1, j - 1]
            up = D[i - 1, j]
            left = D[i, j - 1]
            if diag <= up and diag <= left:
                i -= 1
                j -= 1
            elif up <= left:
                i -= 1
            else:
                j -= 1
        path[L, 0] = i
        path[L, 1] = j
        L += 1
    return cost, L


@njit(cache=True, nogil=True)
def _align_batch(C, offsets, order, lower, subsequence, variants, max_cost, top, prune,
                 out_cost, out_len, out_variant, out_status,
                 slot_cand, slot_norm, slot_len, slot_path):  # pragma: no cover - numba
    """Align every candidate (in ``order``), keep the best ``len(slot_cand)`` in the slots.

    ``top`` > 0: keep the top-``top`` (slots hold the current best, worst replaced) and, with
    ``prune``, skip candidates whose ``lower`` bound (of the normalised cost, ``order`` sorted by it)
    exceeds the k-th best, and abandon a DP once it cannot beat the k-th best. ``top`` == 0: slot k
    is candidate k. Paths in the slots are in original indices, ordered by reference index j.
    """
    n = C.shape[0]
    K = offsets.shape[0] - 1
    V = variants.shape[0]
    S = slot_cand.shape[0]
    mmax = 1
    for k in range(K):
        mk = offsets[k + 1] - offsets[k]
        if mk > mmax:
            mmax = mk
    D = np.empty((n, mmax), np.float64)
    scratch = np.empty((n + mmax, 2), np.int64)
    best_path = np.empty((n + mmax, 2), np.int64)
    filled = 0
    for t in range(K):
        k = order[t]
        kth = _INF
        worst = -1
        if top > 0:
            if filled == S:
                # worst slot: highest normalised cost, then highest candidate position
                worst = 0
                for q in range(1, S):
                    if slot_norm[q] > slot_norm[worst] or (
                            slot_norm[q] == slot_norm[worst] and slot_cand[q] > slot_cand[worst]):
                        worst = q
                kth = slot_norm[worst]
            else:
                worst = filled
        if prune and lower[k] > kth:
            for u in range(t, K):
                out_status[order[u]] = 0
            break
        s = offsets[k]
        m = offsets[k + 1] - s
        Lmax = n + m - 1
        bound = max_cost
        if prune and kth < _INF:
            # cost > kth * Lmax  =>  cost / L > kth for every possible path length L
            kb = kth * Lmax * (1.0 + 1e-9) + 1e-12
            if kb < bound:
                bound = kb
        best_norm = _INF
        best_cost = _INF
        best_v = -1
        best_len = 0
        for v in range(V):
            b = bound
            if best_v >= 0:
                kb = best_norm * Lmax * (1.0 + 1e-9) + 1e-12
                if kb < b:
                    b = kb
            cost, L = _align_one(C, s, m, variants[v, 0], variants[v, 1], subsequence, b, D, scratch)
            if L > 0:
                norm = cost / L
                # a later variant must win by more than float rounding (equal costs summed in another
                # order), so exact ties, e.g. reversing both sides, stay with the forward direction
                if best_v < 0 or norm < best_norm - 1e-9 * best_norm - 1e-12:
                    best_norm = norm
                    best_cost = cost
                    best_v = v
                    best_len = L
                    for q in range(L):
                        best_path[q, 0] = scratch[q, 0]
                        best_path[q, 1] = scratch[q, 1]
        out_cost[k] = best_cost
        out_len[k] = best_len
        out_variant[k] = best_v
        if best_v < 0:
            out_status[k] = 2
            continue
        out_status[k] = 1
        if top > 0:
            if filled == S and not (best_norm < kth or (best_norm == kth and k < slot_cand[worst])):
                continue
            slot = worst
            if filled < S:
                filled += 1
        else:
            slot = k
        slot_cand[slot] = k
        slot_norm[slot] = best_norm
        slot_len[slot] = best_len
        rr = variants[best_v, 0]
        rc = variants[best_v, 1]
        for q in range(best_len):
            # best_path runs from the last DP cell back to the first: with the reference reversed
            # that is already increasing original j, otherwise read it backwards.
            src = q if rc else best_len - 1 - q
            i = best_path[src, 0]
            j = best_path[src, 1]
            slot_path[slot, q, 0] = n - 1 - i if rr else i
            slot_path[slot, q, 1] = m - 1 - j if rc else j
    return filled


# --------------------------------------------------------------------------------------------------
# input checks and cost matrix
# --------------------------------------------------------------------------------------------------


def _as_sequence(x: ArrayLike, name: str, dim: int | None = None) -> NDArray[np.float32]:
    arr = np.asarray(x)
    if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise AlignmentError(
            f"{name} must be a 2-d array of shape (length >= 1, dims), got shape {arr.shape}; "
            "pass one vector per row (a single vector v as v[None, :])"
        )
    if not np.issubdtype(arr.dtype, np.floating):
        raise AlignmentError(f"{name} must hold floating-point vectors, got dtype {arr.dtype}")
    if dim is not None and arr.shape[1] != dim:
        raise AlignmentError(
            f"{name} has vectors of {arr.shape[1]} dimensions, but the query has {dim}; "
            "align sequences made by the same encoder"
        )
    return np.ascontiguousarray(arr, dtype=np.float32)


def _check_unit(x: NDArray[np.float32], name: str) -> None:
    norms = np.sqrt(np.einsum("ij,ij->i", x, x))  # float32 sums: ~1e-6 relative, far below the tolerance
    bad = ~(np.abs(norms - 1.0) <= UNIT_NORM_TOLERANCE)  # NaN counts as bad
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise AlignmentError(
            f"{name} must be L2-normalised (norm 1 +- {UNIT_NORM_TOLERANCE}), but row {row} has norm "
            f"{norms[row]:.6g}; normalise with x / np.linalg.norm(x, axis=1, keepdims=True)"
        )


def cost_matrix(a: ArrayLike, b: ArrayLike) -> NDArray[np.float32]:
    """Squared Euclidean distances of unit vectors, ``max(0, 2 - 2 a @ b.T)``.

    Args:
        a: (n, d) L2-normalised vectors.
        b: (m, d) L2-normalised vectors.

    Returns:
        (n, m) float32, values in [0, 4].
    """
    xa = _as_sequence(a, "a")
    xb = _as_sequence(b, "b", xa.shape[1])
    _check_unit(xa, "a")
    _check_unit(xb, "b")
    return _cost(xa, xb)


def _cost(xa: NDArray[np.float32], xb: NDArray[np.float32]) -> NDArray[np.float32]:
    C = xa @ xb.T
    C *= -2.0
    C += 2.0
    np.maximum(C, 0.0, out=C)
    return np.ascontiguousarray(C)


def _method(method: AlignMethod | str) -> AlignMethod:
    try:
        return AlignMethod(method)
    except ValueError:
        choices = ", ".join(repr(m.value) for m in AlignMethod)
        raise AlignmentError(f"unknown alignment method {method!r}; expected one of {choices}") from None


def _lower_bounds(C: NDArray[np.float32], offsets: NDArray[np.int64], subsequence: bool,
                  ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """(raw cost, normalised cost) lower bounds of each column block of C."""
    n = C.shape[0]
    starts = offsets[:-1]
    lengths = np.diff(offsets).astype(np.float64)
    row_min = np.minimum.reduceat(C, starts, axis=1).astype(np.float64)  # (n, K)
    rows = row_min.sum(axis=0)
    c_min = row_min.min(axis=0)
    lmax = n + lengths - 1
    if subsequence:
        raw = rows
        excess = rows - n * c_min
    else:
        cols = np.add.reduceat(C.min(axis=0).astype(np.float64), starts)
        raw = np.maximum(rows, cols)
        excess = np.maximum(rows - n * c_min, cols - lengths * c_min)
    norm = c_min + np.maximum(excess, 0.0) / lmax
    return raw, norm


# --------------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------------


def _run(C: NDArray[np.float32], offsets: NDArray[np.int64], method: AlignMethod, max_cost: float,
         top: int, prune: bool, lower: NDArray[np.float64] | None,
         ) -> tuple[NDArray[np.int64], list[AlignmentResult], NDArray[np.int8]]:
    variants_t, subsequence = _VARIANTS[method]
    variants = np.array(variants_t, dtype=np.bool_)
    K = len(offsets) - 1
    n = C.shape[0]
    mmax = int(np.diff(offsets).max())
    if lower is None:
        lower = np.zeros(K)
        order = np.arange(K, dtype=np.int64)
    else:
        order = np.argsort(lower, kind="stable").astype(np.int64)
    S = min(top, K) if top > 0 else K
    out_cost = np.full(K, np.inf)
    out_len = np.zeros(K, np.int64)
    out_variant = np.full(K, -1, np.int64)
    out_status = np.zeros(K, np.int8)
    slot_cand = np.full(S, -1, np.int64)
    slot_norm = np.full(S, np.inf)
    slot_len = np.zeros(S, np.int64)
    slot_path = np.zeros((S, n + mmax - 1, 2), np.int64)
    # the bound is compared with sums of float32 cells accumulated in float64: keep a hair of slack
    lower_slack = lower - 1e-9 * (1.0 + np.abs(lower))
    _align_batch(C, offsets, order, lower_slack, subsequence, variants, float(max_cost), int(top), bool(prune),
                 out_cost, out_len, out_variant, out_status, slot_cand, slot_norm, slot_len, slot_path)
    slots = np.flatnonzero(slot_cand >= 0)
    slots = slots[np.lexsort((slot_cand[slots], slot_norm[slots]))]
    cands = slot_cand[slots]
    lengths = slot_len[slots]
    # paths are ordered by j, with i monotone (increasing, or decreasing when the query was reversed)
    first = slot_path[slots, 0]
    last = slot_path[slots, np.maximum(lengths - 1, 0)]
    i_lo, i_hi = np.minimum(first[:, 0], last[:, 0]), np.maximum(first[:, 0], last[:, 0]) + 1
    costs = out_cost[cands]
    norms = costs / np.maximum(lengths, 1)
    results = [
        AlignmentResult(cost=cost, normalized_cost=norm, score=1.0 - norm / 2.0, path=slot_path[q, :L].copy(),
                        query_range=(lo, hi), reference_range=(j0, j1 + 1), reversed=variant > 0, method=method)
        for q, L, cost, norm, lo, hi, j0, j1, variant in zip(
            slots.tolist(), lengths.tolist(), costs.tolist(), norms.tolist(), i_lo.tolist(), i_hi.tolist(),
            first[:, 1].tolist(), last[:, 1].tolist(), out_variant[cands].tolist())
    ]
    return cands, results, out_status


def _align_pair(a: ArrayLike, b: ArrayLike, method: AlignMethod, max_cost: float) -> AlignmentResult:
    if not (max_cost > 0 or max_cost == 0):  # NaN
        raise AlignmentError(f"max_cost must be a number >= 0 (or inf), got {max_cost}")
    C = cost_matrix(a, b)
    offsets = np.array([0, C.shape[1]], np.int64)
    _, results, _ = _run(C, offsets, method, max_cost, top=0, prune=False, lower=None)
    if not results:
        return AlignmentResult(np.inf, np.inf, -np.inf, _EMPTY_PATH.copy(), (0, 0), (0, 0), False, method)
    return results[0]


def dtw(a: ArrayLike, b: ArrayLike, *, max_cost: float = np.inf) -> AlignmentResult:
    """Full-sequence DTW of ``a`` against ``b`` (both ends aligned).

    Args:
        a: (n, d) L2-normalised query vectors (float32; other floats are converted).
        b: (m, d) L2-normalised reference vectors.
        max_cost: early abandon: give up as soon as every cell of a DP row exceeds it, and report
            ``inf`` whenever the cost exceeds it (so ``cost`` is exact when <= ``max_cost``).

    Returns:
        AlignmentResult; ``reference_range`` is ``(0, m)``.

    Raises:
        AlignmentError: not 2-d, different dimensions, not unit-norm, or ``max_cost`` is NaN.
    """
    return _align_pair(a, b, AlignMethod.DTW, max_cost)


def subsequence_dtw(a: ArrayLike, b: ArrayLike, *, max_cost: float = np.inf) -> AlignmentResult:
    """Subsequence DTW: where inside the longer reference ``b`` does the query ``a`` fit best.

    Open begin and end in ``b`` (the path starts at any (0, j) and ends at the cheapest (n-1, j)).

    Args:
        a: (n, d) L2-normalised query vectors.
        b: (m, d) L2-normalised reference vectors.
        max_cost: early abandon, as in ``dtw``.

    Returns:
        AlignmentResult; ``b[reference_range[0]:reference_range[1]]`` is the matched part.
    """
    return _align_pair(a, b, AlignMethod.SUBDTW, max_cost)


def bidtw(a: ArrayLike, b: ArrayLike, *, max_cost: float = np.inf) -> AlignmentResult:
    """Bidirectional DTW: the better of ``DTW(a, b)`` and ``DTW(reverse(a), b)``.

    "Better" is the lower normalised cost (higher score); ties (within 1e-9 relative, i.e. float
    rounding of equal sums) go to the forward direction.
    ``reversed`` says which won; the path is in original indices either way (i decreasing when
    reversed). Only one side is reversed on purpose: ``DTW(reverse(a), reverse(b)) == DTW(a, b)``
    (a warping path read backwards is a warping path over the same cells), so reversing both would
    never find reversed playback.

    Args:
        a: (n, d) L2-normalised query vectors.
        b: (m, d) L2-normalised reference vectors.
        max_cost: early abandon, as in ``dtw``, applied to each direction.
    """
    return _align_pair(a, b, AlignMethod.BIDTW, max_cost)


def sub_bidtw_one_side(a: ArrayLike, b: ArrayLike, *, max_cost: float = np.inf) -> AlignmentResult:
    """``min(subDTW(a, b), subDTW(reverse(a), b))``: finds a part of ``b`` played forwards or backwards.

    Args:
        a: (n, d) L2-normalised query vectors.
        b: (m, d) L2-normalised reference vectors.
        max_cost: early abandon, as in ``dtw``.
    """
    return _align_pair(a, b, AlignMethod.SUB_BIDTW, max_cost)


def lower_bound(a: ArrayLike, b: ArrayLike, method: AlignMethod | str = AlignMethod.DTW, *,
                normalized: bool = False) -> float:
    """A cheap lower bound of the alignment's ``cost`` (or ``normalized_cost``), from the cost matrix.

    ``cost >= sum_i min_j C[i, j]`` (every path visits each query row), and for full DTW also
    ``>= sum_j min_i C[i, j]``; normalised: ``c_min + (R - n c_min) / (n + m - 1)`` (see module doc).
    The same bound holds for either direction of the bidirectional methods.

    Args:
        a: (n, d) L2-normalised query vectors.
        b: (m, d) L2-normalised reference vectors.
        method: which alignment the bound is for.
        normalized: bound ``normalized_cost`` instead of ``cost``.
    """
    m = _method(method)
    C = cost_matrix(a, b)
    raw, norm = _lower_bounds(C, np.array([0, C.shape[1]], np.int64), _VARIANTS[m][1])
    return float(norm[0] if normalized else raw[0])


def rerank(query_seq: ArrayLike, candidate_seqs: Sequence[ArrayLike] | NDArray[np.floating],
           method: AlignMethod | str = AlignMethod.DTW, top: int | None = None, *,
           prune: bool = True) -> RerankResult:
    """Score many candidate sequences against one query and rank them by alignment score.

    The cost matrices of all candidates come from one matrix product, and all alignments run in one
    compiled call. With ``top``, candidates are visited in order of their lower bound and the search
    stops at the first that cannot beat the current k-th best (``prune``); the result is the same as
    without pruning.

    Args:
        query_seq: (n, d) L2-normalised query vectors.
        candidate_seqs: K arrays (m_k, d), or one (K, m, d) array, of L2-normalised vectors.
        method: ``dtw``, ``bidtw``, ``subdtw`` or ``sub_bidtw`` (query reversed).
        top: keep the best ``top`` only (enables pruning); None keeps every candidate.
        prune: use the lower bound and early abandon when ``top`` is given.

    Returns:
        RerankResult, best first.

    Raises:
        AlignmentError: bad shapes, dimensions, norms, method or ``top``.
    """
    m = _method(method)
    q = _as_sequence(query_seq, "query_seq")
    _check_unit(q, "query_seq")
    if top is not None and (isinstance(top, bool) or not isinstance(top, (int, np.integer)) or top < 1):
        raise AlignmentError(f"top must be a positive int or None, got {top!r}")
    if isinstance(candidate_seqs, np.ndarray) and candidate_seqs.ndim == 3:
        K, mk, d = candidate_seqs.shape
        if K == 0 or mk == 0:
            raise AlignmentError(f"candidate_seqs of shape {candidate_seqs.shape} holds no vectors")
        X = _as_sequence(candidate_seqs.reshape(K * mk, d), "candidate_seqs", q.shape[1])
        offsets = np.arange(K + 1, dtype=np.int64) * mk
    else:
        seqs = [_as_sequence(c, f"candidate_seqs[{k}]", q.shape[1]) for k, c in enumerate(candidate_seqs)]
        if not seqs:
            raise AlignmentError("candidate_seqs is empty; pass at least one (m, d) sequence")
        X = np.concatenate(seqs) if len(seqs) > 1 else seqs[0]
        offsets = np.zeros(len(seqs) + 1, np.int64)
        np.cumsum([len(s) for s in seqs], out=offsets[1:])
    _check_unit(X, "candidate_seqs")
    C = _cost(q, X)
    _, lower = _lower_bounds(C, offsets, _VARIANTS[m][1])
    use_top = int(top) if top is not None else 0
    do_prune = bool(prune) and use_top > 0
    indices, results, status = _run(C, offsets, m, np.inf, use_top, do_prune, lower if do_prune else None)
    return RerankResult(
        indices=indices.astype(np.int64),
        scores=np.array([r.score for r in results], np.float64),
        alignments=results,
        lower_bounds=lower,
        status=status,
    )
