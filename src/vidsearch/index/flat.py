"""Exact inner-product search (FAISS ``IndexFlatIP`` behind ``IndexIDMap2``): the ground truth.

FAISS holds the vectors (add, remove, save, load); a search of up to :data:`MATMUL_MAX_ROWS` rows is one
BLAS matrix product over a zero-copy view of them and a partial sort (:func:`top_k_inner`), which was 2-3x
faster than ``IndexFlatIP.search`` for the server's queries (9-36 query segments, k = 100, 1,337 rows:
0.25-0.5 ms against 0.7-3.3 ms on one thread; FAISS's own path for fewer than 20 queries is a SIMD loop
with a heap per query, and its BLAS path selects the top k through heaps too).
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from vidsearch.errors import CollectionError, ShapeError
from vidsearch.index.hits import IndexHits, faiss_threads_for
from vidsearch.index.persist import REBUILT, field, is_index_file, read_index_file, write_index_file


MATMUL_MAX_ROWS = 262_144
"""Largest index searched by :func:`top_k_inner` (one matrix product); larger ones go to FAISS's search.
Measured on this 2-core machine with one BLAS thread (d = 512, k = 100): 9 queries over 16,384 rows
14 ms against FAISS's 21 ms, over 262,144 rows 250 ms against 345 ms."""

SCORE_BLOCK = 1 << 22
"""Scores held at once by :func:`top_k_inner` (16 MiB of float32): queries are taken in chunks below it."""


SMALL_BLOCK = 16
"""Up to this many query rows, :func:`top_k_inner` multiplies the base by the queries (``base @ q.T``, then
transposes the small result), not the queries by the base: OpenBLAS (SkylakeX kernels, one thread, d = 512) did
that 1.3-1.9x faster for 4-9 rows over 1,337-200,000 rows (1,337 x 9: 0.40 against 0.65 ms); at 36 rows 1.22x /
1.04x / 0.75x over 1,337 / 20,000 / 200,000 rows, at 256 rows 0.46-0.83x (``/tmp`` microbenchmark, 2026-12-02,
Intel VM)."""


def top_k_inner(queries: NDArray[np.float32], base: NDArray[np.float32], k: int) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """Exact top-``k`` rows of ``base`` by inner product with each query: a matrix product and a partial sort.

    Args:
        queries: (Q, d) float32, C-contiguous.
        base: (N, d) float32 rows, N >= 1.
        k: neighbours per query, 1 <= k <= N.

    Returns:
        (Q, k) int64 row numbers and (Q, k) float32 scores, best first; equal scores in row order (which
        of several rows tied at the k-th score is kept is unspecified, as with FAISS).
    """
    n = len(base)
    rows = np.empty((len(queries), k), np.int64)
    scores = np.empty((len(queries), k), np.float32)
    step = max(1, SCORE_BLOCK // n)
    for s in range(0, len(queries), step):
        block = queries[s : s + step]
        if len(block) <= SMALL_BLOCK:  # (N, d) @ (d, q), then (q, N) contiguous: see SMALL_BLOCK
            sim = np.ascontiguousarray((base @ block.T).T)
        else:
            sim = block @ base.T  # (q, N)
        at = np.arange(len(sim))[:, None]  # row indices for fancy indexing (3x faster than take_along_axis here)
        if k < n:
            part = np.argpartition(sim, n - k, axis=1)[:, n - k :]
            part.sort(axis=1)  # rows ascending, so that the stable sort below leaves ties in row order
            top = sim[at, part]
        else:
            part = np.broadcast_to(np.arange(n, dtype=np.int64), sim.shape)
            top = sim
        # by score, descending; ties by row (np.lexsort((part, -top)) gave the same at 1.35x the cost of
        # the row sort and this: 0.60 against 0.44 ms for 62 x 100 of 1,337)
        order = np.argsort(-top, axis=1, kind="stable")
        rows[s : s + step] = part[at, order]
        scores[s : s + step] = top[at, order]
    return rows, scores


class FlatIndex:
    """Exact search over float32 vectors with int64 ids."""

    def __init__(self, dim: int, index: Any = None) -> None:
        import faiss

        self.dim = dim
        self._index = index if index is not None else faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        self.info: dict[str, Any] = {}  # saved with the index (the collection records what it covers)
        self._view: tuple[NDArray[np.float32], NDArray[np.int64]] | None = None  # see _rows()

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def _check(self, vectors: NDArray[np.float32]) -> NDArray[np.float32]:
        x = np.ascontiguousarray(vectors, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ShapeError(
                f"the provided vectors have shape {x.shape}, but this index expects (N, {self.dim}) vectors"
            )
        return x

    def add(self, ids: NDArray[np.int64], vectors: NDArray[np.float32]) -> None:
        x = self._check(vectors)
        if len(ids) != len(x):
            raise ShapeError(f"got {len(ids)} ids for {len(x)} vectors; expected one id per vector")
        if len(x):
            self._view = None  # FAISS may move its storage
            self._index.add_with_ids(x, np.ascontiguousarray(ids, dtype=np.int64))

    def remove(self, ids: NDArray[np.int64]) -> int:
        import faiss

        if len(ids) == 0:
            return 0
        self._view = None
        return int(self._index.remove_ids(faiss.IDSelectorBatch(np.ascontiguousarray(ids, dtype=np.int64))))

    def search(self, queries: NDArray[np.float32], k: int, params: object = None) -> IndexHits:
        """Exact top-k by inner product; ``params`` is accepted for interface symmetry and ignored."""
        q = self._check(queries)
        k = max(1, int(k))
        if len(self) == 0:
            return IndexHits(np.full((len(q), k), -1, np.int64), np.full((len(q), k), -np.inf, np.float32))
        if len(self) <= MATMUL_MAX_ROWS:
            base, labels = self._rows()
            rows, scores = top_k_inner(q, base, min(k, len(base)))
            ids = labels[rows]
        else:
            with faiss_threads_for(len(q)):
                scores, ids = self._index.search(q, min(k, len(self)))
        if ids.shape[1] < k:
            pad = k - ids.shape[1]
            ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
            scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
        scores = np.where(ids < 0, -np.inf, scores).astype(np.float32)
        return IndexHits(ids.astype(np.int64), scores)

    def _rows(self) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """(N, d) float32 vectors (a read-only view of FAISS's storage, no copy) and their (N,) int64 ids;
        made at the first search after a change."""
        view = self._view
        if view is None or len(view[0]) != len(self):
            import faiss

            n = len(self)
            flat: Any = faiss.downcast_index(self._index.index)  # owned by self._index, which outlives the view
            base = faiss.rev_swig_ptr(flat.get_xb(), n * self.dim).reshape(n, self.dim)
            base.flags.writeable = False
            view = self._view = (base, faiss.vector_to_array(self._index.id_map).astype(np.int64, copy=False))
        return view

    def memory_bytes(self) -> int:
        return len(self) * (self.dim * 4 + 8)

    def save(self, path: Path) -> None:
        """Atomic, checksummed (``index/persist.py``)."""
        import faiss

        blob = faiss.serialize_index(self._index).tobytes()
        write_index_file(path, "flat", {"dim": self.dim, "info": self.info}, blob)

    @classmethod
    def load(cls, path: Path) -> "FlatIndex":
        """Load a flat index (the container, or a bare FAISS file from before it).

        Raises:
            CollectionError: unreadable or damaged.
        """
        if is_index_file(path):
            meta, blob = read_index_file(path)
            return cls.from_container(path, meta, blob)
        try:  # a bare FAISS file: no checksum, so its layout is checked before FAISS's reader trusts its sizes
            data = path.read_bytes()
        except OSError as exc:
            raise CollectionError(f"{path}: cannot read the index ({exc}); {REBUILT}") from exc
        return cls._checked(path, _deserialize(path, np.frombuffer(data, np.uint8)), {})

    @classmethod
    def from_container(cls, path: Path, meta: dict[str, Any], blob: np.ndarray) -> "FlatIndex":
        """The index held by a container already read and checksummed (:func:`read_index_file`)."""
        if meta.get("kind") != "flat":
            raise CollectionError(f"{path}: expected a flat index, found kind {meta.get('kind')!r}; {REBUILT}")
        dim = field(path, meta, "dim", int)
        info = field(path, meta, "info", dict, {})
        index = _deserialize(path, blob)
        if index.d != dim:
            raise CollectionError(f"{path}: the header says {dim}-d, the FAISS blob holds {index.d}-d; damaged ({REBUILT})")
        return cls._checked(path, index, info)

    @classmethod
    def _checked(cls, path: Path, index: Any, info: dict[str, Any]) -> "FlatIndex":
        import faiss

        # no downcast_index here: its new wrapper does not own the C++ object, which the caller's
        # wrapper would free when it goes out of scope (FAISS's readers return the concrete type already)
        if not isinstance(index, faiss.IndexIDMap2) or index.d < 1:
            raise CollectionError(f"{path}: expected an id-mapped flat FAISS index, found {type(index).__name__}; {REBUILT}")
        obj = cls(index.d, index)
        obj.info = info
        return obj


# An IndexIDMap2(IndexFlatIP) as FAISS serialises it: "IxM2", the index header (d i32, ntotal i64, two
# unused i64, is_trained u8, metric i32), "IxFI" and the same header, the float count (u64) and the
# floats, the id count (u64) and the int64 ids.
_INDEX_HEADER = struct.Struct("<4siqqqBi")
_COUNT = struct.Struct("<Q")


def _flat_layout(data: NDArray[np.uint8]) -> str | None:
    """Why ``data`` is not a serialised ``IndexIDMap2(IndexFlatIP)`` (None when it is one, every size
    consistent with the others and with its length)."""
    size = 2 * _INDEX_HEADER.size + _COUNT.size
    buf = data[:size].tobytes()
    if len(buf) < size:
        return f"expected at least {size} bytes of FAISS headers, found {len(buf)}"
    outer = _INDEX_HEADER.unpack_from(buf, 0)
    inner = _INDEX_HEADER.unpack_from(buf, _INDEX_HEADER.size)
    if (outer[0], inner[0]) != (b"IxM2", b"IxFI"):
        return f"expected FAISS types IxM2 then IxFI (an id-mapped inner-product flat index), found {outer[0]!r} then {inner[0]!r}"
    (d, n), (d_inner, n_inner) = outer[1:3], inner[1:3]
    if d < 1 or n < 0 or (d, n) != (d_inner, n_inner):
        return f"expected one positive dimension and vector count in both FAISS headers, found {d}-d x {n} and {d_inner}-d x {n_inner}"
    if outer[6] != 0 or inner[6] != 0:  # faiss.METRIC_INNER_PRODUCT
        return f"expected the inner-product metric (0), found metrics {outer[6]} and {inner[6]}"
    floats = _COUNT.unpack_from(buf, 2 * _INDEX_HEADER.size)[0]
    at = size + 4 * floats
    if floats != n * d or at + _COUNT.size > len(data):
        return f"expected {n} x {d} floats, the file holds {floats} (of {len(data)} bytes in all)"
    ids = _COUNT.unpack_from(data[at : at + _COUNT.size].tobytes())[0]
    if ids != n or at + _COUNT.size + 8 * n != len(data):
        return (f"expected {n} ids ending the file at byte {at + _COUNT.size + 8 * n}, "
                f"found {ids} ids and {len(data)} bytes")
    return None


def _deserialize(path: Path, blob: NDArray[np.uint8]) -> Any:
    """The FAISS index of a checked flat layout (FAISS's reader trusts the sizes it reads: a damaged
    count would have it allocate and zero gigabytes before failing, or read past its data)."""
    import faiss

    problem = _flat_layout(blob)
    if problem is not None:
        raise CollectionError(f"{path}: not a vidsearch flat index ({problem}); damaged ({REBUILT})")
    try:
        return faiss.deserialize_index(blob.copy())
    except (RuntimeError, MemoryError) as exc:
        raise CollectionError(f"{path}: damaged FAISS blob ({exc}); {REBUILT}") from exc
