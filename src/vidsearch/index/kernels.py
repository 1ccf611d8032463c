"""Gather-and-dot over float16 rows, the inner loop of exact re-rank.

Hand-written because numpy converts float16 to float32 at about 1 ns per element with no SIMD:
re-scoring 100 candidates of 256 dimensions spent 25 us in ``astype(float32)`` alone, about as
long as FAISS's whole IVF-PQ scan at 1M vectors. Here the rows are gathered by numpy (memcpy per
row: the misses of scattered rows overlap; converting element by element straight from the
mapping was 2.5x slower right after a FAISS scan had flushed the caches), then converted with
integer bit operations (exact, subnormals and inf/nan included) fused with the dot product. A 65,536-entry
lookup table was no faster once FAISS's scan had evicted it from L2; FAISS's fp16 ScalarQuantizer
decode measured no faster than numpy; torch (6 us) would put a 1 s import in the query path.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

try:
    from numba import njit, prange
except ImportError:  # pragma: no cover - numba is a dependency; keep numpy working without it
    njit = None  # type: ignore[assignment]  # numba missing: the numpy paths below run instead

# From this many queries on, a batch re-rank runs on every thread (gather and dot per query in
# parallel); below it one thread, since waking a thread team costs more than a few queries' work.
PARALLEL_MIN_QUERIES = 32


def _gather_dot_py(rows: NDArray[np.uint16], ids: NDArray[np.int64], q: NDArray[np.float32]) -> NDArray[np.float32]:
    """Plain numpy reference of ``gather_dot_f16`` over half bits (the kernel is tested against it)."""
    return (rows[ids].view(np.float16).astype(np.float32) @ q).astype(np.float32)


if njit is not None:

    @njit(cache=True, fastmath=True, nogil=True)
    def _half_rows_dot(rows: NDArray[np.uint16], q: NDArray[np.float32]) -> NDArray[np.float32]:
        """(n, d) uint16 half bits, contiguous, and a float32 query -> (n,) float32 dot products.

        A half's exponent and mantissa shifted left by 13 are the float32 bits of its value times
        2**-112 (subnormals included), so no per-element rescale or branch is needed: the query
        carries the 2**112 (2**(112-k) and a final 2**k for a query with elements of 2**15 or more,
        so it stays finite; powers of two, so exact). Exponent 31 (inf/nan) also gets float32's
        all-ones exponent. Branch-free, so LLVM vectorises it: 4x faster than the per-field
        conversion it replaced (500 rows of 256-d, 70 -> 18 us)."""
        n, d = rows.shape
        top = 0.0
        for j in range(d):
            top = max(top, abs(q[j]))
        k = math.frexp(top)[1] - 15 if top >= 32768.0 else 0
        qs = np.empty(d, np.float32)
        scale = np.float32(math.ldexp(1.0, 112 - k))
        for j in range(d):
            qs[j] = q[j] * scale
        post = np.float32(math.ldexp(1.0, k))
        out = np.empty(n, np.float32)
        buf = np.empty(d, np.uint32)
        fbuf = buf.view(np.float32)
        for r in range(n):
            row = rows[r]
            for j in range(d):
                h = np.uint32(row[j])
                b = ((h & np.uint32(0x8000)) << np.uint32(16)) | ((h & np.uint32(0x7FFF)) << np.uint32(13))
                # exponent 31: (0x7C00 + 0x400) >> 15 == 1, any other exponent gives 0
                buf[j] = b | ((((h & np.uint32(0x7C00)) + np.uint32(0x400)) >> np.uint32(15)) * np.uint32(0x7F800000))
            s = np.float32(0.0)
            for j in range(d):
                s += fbuf[j] * qs[j]
            out[r] = s * post
        return out

    @njit(cache=True, fastmath=True, nogil=True)
    def _half_rows_dot_batch(rows: NDArray[np.uint16], queries: NDArray[np.float32], per_query: int) -> NDArray[np.float32]:
        """(Q * R, d) uint16 half bits (query i's candidates at rows i*R .. i*R+R-1), (Q, d) float32
        -> (Q, R) float32 dot products."""
        n_q = queries.shape[0]
        out = np.empty((n_q, per_query), np.float32)
        for i in range(n_q):
            out[i] = _half_rows_dot(rows[i * per_query : (i + 1) * per_query], queries[i])
        return out


    @njit(cache=True, fastmath=True, nogil=True, parallel=True)
    def _gather_rows_dot_parallel(rows: NDArray[np.uint16], ids: NDArray[np.int64], queries: NDArray[np.float32]) -> NDArray[np.float32]:
        """(N, d) uint16 half bits (e.g. a memory map), (Q, R) ids, (Q, d) float32 -> (Q, R): each
        query gathers its own rows into a small block and scores it, queries spread over threads."""
        n_q, per_query = ids.shape
        d = rows.shape[1]
        out = np.empty((n_q, per_query), np.float32)
        for i in prange(n_q):
            block = np.empty((per_query, d), np.uint16)
            for j in range(per_query):
                block[j] = rows[ids[i, j]]
            out[i] = _half_rows_dot(block, queries[i])
        return out


if njit is not None:

    @njit(cache=True, fastmath=True, nogil=True, parallel=True)
    def _gather_f32_dot_parallel(rows: NDArray[np.float32], ids: NDArray[np.int64], queries: NDArray[np.float32]) -> NDArray[np.float32]:
        """(N, d) float32 rows (e.g. a memory map), (Q, R) ids, (Q, d) -> (Q, R): each query reads its
        candidate rows in place (no (Q, R, d) gathered copy) and scores them; queries over threads."""
        n_q, per_query = ids.shape
        d = rows.shape[1]
        out = np.empty((n_q, per_query), np.float32)
        for i in prange(n_q):
            q = queries[i]
            for j in range(per_query):
                row = rows[ids[i, j]]
                s = np.float32(0.0)
                for t in range(d):
                    s += row[t] * q[t]
                out[i, j] = s
        return out


def gather_dot_f32_batch(rows: NDArray[np.float32], ids: NDArray[np.int64], queries: NDArray[np.float32],
                         threads: int = 1) -> NDArray[np.float32]:
    """(Q, R) ``ids`` (all valid) -> (Q, R) float32 ``rows[ids[i]] @ queries[i]`` for float32 ``rows``.

    Hand-written because numpy's way (gather a (Q, R, d) block, then einsum) copies every candidate row
    first: a batch of 2,000 queries re-ranking 64 candidates of 512-d gathered 262 MB out of the memory
    map before the first multiply. Queries are spread over ``threads`` from ``PARALLEL_MIN_QUERIES`` on."""
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    q = np.ascontiguousarray(queries, dtype=np.float32)
    if njit is None:  # pragma: no cover
        return np.einsum("qrd,qd->qr", np.asarray(rows[ids.ravel()], np.float32).reshape(*ids.shape, -1), q)
    import numba

    before = numba.get_num_threads()
    most = numba.config.NUMBA_NUM_THREADS  # type: ignore[attr-defined]  # set from the environment at import
    numba.set_num_threads(max(1, min(threads if len(q) >= PARALLEL_MIN_QUERIES else 1, most)))
    try:
        return _gather_f32_dot_parallel(np.asarray(rows), ids, q)
    finally:
        numba.set_num_threads(before)


def gather_dot_f16_batch(rows: NDArray[np.float16], ids: NDArray[np.int64], queries: NDArray[np.float32],
                         threads: int = 1) -> NDArray[np.float32]:
    """(Q, R) ``ids`` (all valid) -> (Q, R) float32 ``rows[ids[i]] @ queries[i]``; with ``threads`` > 1
    and at least ``PARALLEL_MIN_QUERIES`` queries the queries are spread over that many threads."""
    ids = np.asarray(ids, dtype=np.int64)
    q = np.ascontiguousarray(queries, dtype=np.float32)
    if njit is not None and threads > 1 and len(q) >= PARALLEL_MIN_QUERIES:
        import numba

        before = numba.get_num_threads()
        most = numba.config.NUMBA_NUM_THREADS  # type: ignore[attr-defined]  # set from the environment at import
        numba.set_num_threads(min(threads, most))
        try:
            return _gather_rows_dot_parallel(np.asarray(rows).view(np.uint16), np.ascontiguousarray(ids), q)
        finally:
            numba.set_num_threads(before)
    # numpy's take copies whole rows (memcpy, which overlaps the cache misses of scattered rows);
    # the conversion then runs on a small, cache-hot block
    block = rows.view(np.uint16).take(ids.ravel(), axis=0)
    if njit is None:  # pragma: no cover
        return np.einsum("qrd,qd->qr", block.view(np.float16).astype(np.float32).reshape(*ids.shape, -1), q)
    return _half_rows_dot_batch(block, q, ids.shape[1])


def gather_dot_f16(rows: NDArray[np.float16], ids: NDArray[np.int64], q: NDArray[np.float32]) -> NDArray[np.float32]:
    """``rows[ids].astype(float32) @ q`` for (N, d) float16 ``rows`` (memory-mapped or not)."""
    return gather_dot_f16_batch(rows, np.asarray(ids, dtype=np.int64)[None], np.asarray(q, dtype=np.float32)[None])[0]
