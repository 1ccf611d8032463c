"""The compressed index: IVF lists (found by a flat scan of the centroids, or an HNSW graph over them
past 4096 lists), 4-bit PQ codes in RAM scanned with FAISS's SIMD fast-scan kernels
(``IndexIVFPQFastScan``; 8-bit ``IndexIVFPQ`` with ``nbits=8``), and exact re-rank from vectors
memory-mapped from disk.

Why this shape (issue #4): an HNSW graph over *every* vector costs >= 8*M bytes per vector for its
bottom-layer links alone (128 B at M=16), which blows a 48 B/vector budget before any code is
stored. Putting the graph over the IVF centroids (FAISS's IVF_HNSW) keeps the navigable graph --
the paper's "hierarchical navigable graph over compressed codes" -- but pays for links per list,
not per vector. Per vector in RAM: PQ code (M/2 bytes at 4 bits, M at 8) + 8-byte id + its share of
the centroids (and graph) + the fast-scan lists' padding to blocks of 32 codes. Candidates from the
codes are re-scored exactly from the stored vectors (memory-mapped), so the codes only need to get
the true neighbours into the top ``rerank``.

Why 4-bit fast-scan codes by default (issue #13): the codes are of residuals (vector minus its
list's centroid), and the L2 lookup table of a residual depends on the list, so 8-bit IVF-PQ
computes one table of pq_m * 256 entries per query and list probed -- 0.88 s of 1.2 s per 10K
queries at 1M -- unless FAISS keeps a precomputed table of nlist * pq_m * 256 floats (134 B/vector
at 1M, over the budget; ``_no_precomputed_table``). A 4-bit table has 16 entries per sub-quantizer,
16x cheaper per list, and FAISS scans 4-bit codes with SIMD shuffles. The same 32 bytes as 64 4-bit
sub-quantizers rank a little less precisely than 32 8-bit ones, which the exact re-rank makes up.
Measured at 1M (bench/engine.py's collection, 10K queries in one call, CPU time per query on one
thread): nprobe 1, re-rank 48: 8-bit (4096 lists) 68 us at recall@10 0.9956, 4-bit (2048 lists)
33 us at 0.9942; nprobe 2, re-rank 64: 84 us at 0.9996 vs 48 us at 0.9990. On the ANN benchmark's
Gaussian mixture (300K x 256-d) 4-bit codes re-ranking 128 candidates reached recall@10 0.999 at
~2x the QPS of 8-bit ones re-ranking 64. Tried and dropped (same data): scanning the same codes by
inner product (one table per query; 2x faster, but the projected vectors' norms differ, so recall@10
fell to 0.90 at re-rank 48); 4-bit codes of the vectors themselves (FAISS's fast-scan default, one
table per query): 0.987 instead of 0.994 at re-rank 48, no faster at nprobe 1; FAISS's own layout
(512-d codes, inner product, 2048 lists): 0.91 at re-rank 48.

Wider inputs (512-d SSCD, 1280-d EfficientNet) are projected onto their top ``max(256, 8 * code bytes)``
PCA components before the centroids and codes: full-width centroids cost 8-21 B/vector at 1M, and
wider sub-vectors made the per-list lookup tables slower to compute.

Deletes are tombstones filtered inside FAISS's scan (``IDSelectorNot(IDSelectorBatch)``) and are
compacted away (``remove_ids``) once they pass ``compact_fraction`` of the index.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from vidsearch.errors import CollectionError, ConfigError, NotFittedError, ShapeError
from vidsearch.index.hits import IndexHits, empty_hits, faiss_threads_for
from vidsearch.index.persist import MAGIC, REBUILT, dataclass_field, field, read_index_file, write_index_file


class VectorStore(Protocol):
    """Exact vectors by id, for re-ranking (memory-mapped float16 or float32 rows)."""

    def get(self, ids: NDArray[np.int64]) -> NDArray[np.float32]: ...


class MemmapStore:
    """Rows of a (N, d) float32 or float16 array (usually memory-mapped from disk); row i is id i.

    The one re-rank store: a collection wraps its ``segments.f32`` in it, the ANN benchmark the
    same vector file (``bench/ann.py``), so both re-rank through the same code."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = array

    def get(self, ids: NDArray[np.int64]) -> NDArray[np.float32]:
        return np.asarray(self.array[ids], dtype=np.float32)

    def dot_batch(self, ids: NDArray[np.int64], queries: NDArray[np.float32], threads: int = 1) -> NDArray[np.float32]:
        """(Q, R) ids, (Q, d) queries -> (Q, R) ``get(ids[i]) @ queries[i]``."""
        if self.array.dtype == np.float16:
            from vidsearch.index.kernels import gather_dot_f16_batch

            return gather_dot_f16_batch(np.asarray(self.array), ids, queries, threads=threads)
        if len(queries) == 1:  # the latency-bound case: one gather (memcpy per row) and one BLAS matvec
            return (self.array[ids[0]] @ queries[0])[None].astype(np.float32, copy=False)
        from vidsearch.index.kernels import PARALLEL_MIN_QUERIES, gather_dot_f32_batch

        if len(queries) < PARALLEL_MIN_QUERIES:  # a few queries (one clip's segments): numpy, no numba import/JIT
            rows = np.asarray(self.array[ids.ravel()], dtype=np.float32).reshape(*ids.shape, self.array.shape[1])
            return np.einsum("qrd,qd->qr", rows, queries).astype(np.float32, copy=False)

        return gather_dot_f32_batch(self.array, ids, queries, threads=threads)


@dataclass(frozen=True)
class IVFPQConfig:
    """Build-time parameters of :class:`IVFPQIndex`.

    Attributes:
        nlist: IVF lists (0: chosen from the training size, about 4*sqrt(N), a power of two).
        pq_m: PQ sub-quantizers; a code is ``pq_m * nbits / 8`` bytes (the default: 64 x 4 bits = 32 B).
        hnsw_m: links per node of the HNSW graph over the centroids.
        quantizer: ``pq`` (FAISS k-means codebooks), ``opq`` (learned rotation + PQ) or
            ``learned`` (differentiable PQ, codebooks loaded into FAISS).
        nbits: bits per sub-quantizer code: 4 (``IndexIVFPQFastScan``: 16-entry lookup tables, SIMD
            scan; lists stored in blocks of 32 codes) or 8 (``IndexIVFPQ``: 256-entry tables).
        coarse: how lists are found: ``hnsw`` (a graph over the centroids), ``flat`` (every centroid
            compared), or ``auto``: flat up to ``FLAT_COARSE_MAX`` lists, where a graph walk computes
            about as many distances as a flat scan and, unlike it, can miss the nearest list.
        reduce: dimensions the centroids and codes live in: ``-1`` (auto) projects by PCA onto the
            top ``max(256, 8 * code bytes)`` components when the input has more; ``0`` keeps every
            dimension; another value projects onto that many. Re-rank is exact on the full vectors either way.
    """

    nlist: int = 0
    pq_m: int = 64
    hnsw_m: int = 32
    quantizer: str = "pq"
    compact_fraction: float = 0.1
    nbits: int = 4
    coarse: str = "auto"
    reduce: int = -1

    @property
    def code_bytes(self) -> int:
        """Bytes of one vector's PQ code."""
        return (self.pq_m * self.nbits + 7) // 8

    def list_padding_bytes(self) -> int:
        """Code bytes a list may hold beyond its vectors': fast-scan lists are stored in blocks of 32
        codes (FAISS's ``bbs``), so up to a block is padding (measured at 1M: 0.65-0.75 of a block
        per list, with the list sizes serialised); 8-bit lists hold exactly their codes."""
        return 32 * self.code_bytes if self.nbits == 4 else 0

    def code_dim(self, dim: int) -> int:
        """The dimension centroids and PQ codes live in for ``dim``-dimensional input."""
        if self.reduce == 0:
            return dim
        if self.reduce == -1:
            # 256 for 32-byte codes: 8-dim sub-vectors of 8-bit codes (FAISS's fast lookup-table kernel,
            # measured), 4-dim ones of 4-bit codes; smaller codes are not projected further (not
            # measured: on the near-duplicate benchmark the quantizers are compared on the full vectors, reduce=0)
            code = min(dim, max(256, 8 * self.code_bytes))
            return code if code % self.pq_m == 0 else dim  # a pq_m that does not divide it: full width
        return min(dim, self.reduce)

    def __post_init__(self) -> None:
        if self.reduce < -1:
            raise ConfigError(f"reduce must be -1 (auto), 0 (none) or a dimension, got {self.reduce}")
        if self.coarse not in ("auto", "hnsw", "flat"):
            raise ConfigError(f"coarse must be 'auto', 'hnsw' or 'flat', got {self.coarse!r}")
        if self.quantizer not in ("pq", "opq", "learned"):
            raise ConfigError(f"quantizer must be 'pq', 'opq' or 'learned', got {self.quantizer!r}")
        if self.pq_m < 1:
            raise ConfigError(f"pq_m must be >= 1, got {self.pq_m}")
        if self.nbits not in (4, 8):
            raise ConfigError(f"nbits must be 4 (fast-scan codes) or 8, got {self.nbits}")


@dataclass(frozen=True)
class IVFSearchParams:
    """Search-time parameters: lists probed, centroid-graph breadth, candidates re-ranked exactly."""

    nprobe: int = 16
    ef_search: int = 64
    rerank: int = 64


# Up to this many lists the coarse quantizer is flat. Measured here (one query, 256-d, top 32 of
# random centroids): flat 30 / 59 / 152 us at 1024 / 2048 / 4096 lists, the HNSW graph at efSearch 64
# 50 / 79 / 135 us; and a flat quantizer finds every vector's nearest list, which the graph does not.
# 4096 (the list count at 1M vectors) is flat although one query's graph walk is ~17 us cheaper there:
# with the graph, adding 1M vectors is 1M graph searches at efSearch 256 (a 1M build took 721 s under
# load, FAISS's IVF-PQ 34 s quiet), while a flat quantizer assigns them, and batches of queries, by BLAS.
FLAT_COARSE_MAX = 4096


def connect_graph(quantizer: Any) -> int:
    """Make every node of a FAISS ``IndexHNSWFlat`` reachable from its entry point over level-0 links;
    returns the links written.

    Hand-written because FAISS has no such repair: its neighbour pruning keeps a node's out-links but
    can drop every in-link to it, and on clustered centroids some nodes are then never returned by
    any search (bench/centroid_graph.py: 111 of 1,024 at 100K), so their lists stay empty and vectors
    are filed under a farther list. Each unreachable node is linked from its nearest reachable node,
    into a free slot or in place of the link to the most linked-to neighbour of that node; repeated
    until nothing is unreachable (or no progress)."""
    import faiss

    hnsw = quantizer.hnsw
    n = int(quantizer.ntotal)
    if n == 0:
        return 0
    width = int(hnsw.nb_neighbors(0))
    starts = faiss.vector_to_array(hnsw.offsets)[:n].astype(np.int64)
    table = faiss.rev_swig_ptr(hnsw.neighbors.data(), hnsw.neighbors.size())  # writable view of the links
    slots = starts[:, None] + np.arange(width)  # level 0 comes first in each node's block
    vectors = quantizer.reconstruct_n(0, n)
    written = 0
    for _ in range(n):
        links = table[slots]
        reached = np.zeros(n, bool)
        reached[hnsw.entry_point] = True
        frontier = np.array([hnsw.entry_point])
        while len(frontier):
            nxt = links[frontier].ravel()
            nxt = np.unique(nxt[nxt >= 0])
            frontier = nxt[~reached[nxt]]
            reached[frontier] = True
        lost = np.flatnonzero(~reached)
        if not len(lost):
            break
        home = np.flatnonzero(reached)
        flat = faiss.IndexFlatL2(quantizer.d)
        flat.add(vectors[home])
        nearest = home[flat.search(vectors[lost], 1)[1][:, 0]]
        indegree = np.bincount(links[links >= 0], minlength=n)
        progress = False
        for u, v in zip(lost, nearest):
            row = table[slots[v]]
            if u in row:
                continue
            free = np.flatnonzero(row < 0)
            j = free[0] if len(free) else int(np.argmax(indegree[row]))
            if len(free) == 0 and indegree[row[j]] < 2:
                continue  # every neighbour of v has v as its only in-link: do not cut one off
            if row[j] >= 0:
                indegree[row[j]] -= 1
            table[slots[v, j]] = u
            indegree[u] += 1
            written += 1
            progress = True
        if not progress:
            break
    return written


# RAM per vector the centroids and their graph may take when the list count is chosen: with 32-byte
# codes and 8-byte ids this keeps the whole index under the 48 B/vector budget of issue #4.
CENTROID_BUDGET = 6.0


def choose_nlist(n: int, dim: int = 0, padding: int = 0) -> int:
    """About 4*sqrt(n), a power of two between 16 and 65536; with ``dim`` (the code dimension,
    ``IVFPQConfig.code_dim``) halved until the float32 centroids, ``padding`` bytes per list (fast-scan
    blocks, ``IVFPQConfig.list_padding_bytes``) and, past ``FLAT_COARSE_MAX``, the centroids' graph
    (~264 B per node at M=32) take at most ``CENTROID_BUDGET`` bytes per vector.

    At 1M vectors of 256-d with 32-byte fast-scan codes this gives 2048 lists (4096 would take
    47.8 B/vector in all, measured, against 44.0); the 4x fewer distances of 2048 centroids also make
    the coarse search, a third of a batch query's CPU time at 1M, cheaper."""
    target = 4 * np.sqrt(max(n, 1))
    nlist = int(min(65536, max(16, 2 ** int(np.round(np.log2(target))))))
    while dim and nlist > 16:
        per_list = 4 * dim + padding + (264 if nlist > FLAT_COARSE_MAX else 0)
        if nlist * per_list <= CENTROID_BUDGET * n:
            break
        nlist //= 2
    return nlist


def _no_precomputed_table(ivf: Any) -> None:
    """Keep FAISS from holding its IVF-PQ precomputed table (nlist * pq_m * 256 float32: 134 MB at
    4096 lists, 134 B/vector at 1M, counted nowhere in a serialised index). It only pays off when
    the per-list lookup tables are slow to compute; with 8-dim sub-vectors (``reduce`` auto) FAISS's
    specialised kernel computes them as fast as the table is read (measured at 1M x 256-d)."""
    if hasattr(ivf, "use_precomputed_table"):
        ivf.use_precomputed_table = -1
        ivf.precomputed_table.resize(0)


def faiss_ram_bytes(index: Any) -> int:
    """RAM of a FAISS index: its serialised size plus an IVF-PQ precomputed table, which FAISS builds
    by default (nlist * M * 256 floats: 134 B/vector at 1M with 4096 lists) and never serialises."""
    import faiss

    try:
        ivf = faiss.downcast_index(faiss.extract_index_ivf(index))
    except RuntimeError:  # not an IVF index
        ivf = None
    table = getattr(ivf, "precomputed_table", None)
    return int(faiss.serialize_index(index).nbytes) + (0 if table is None else 4 * int(table.size()))


class IVFPQIndex:
    """IVF lists found by a flat scan of the centroids (an HNSW graph over them past ``FLAT_COARSE_MAX``) +
    PQ codes (4-bit fast-scan by default) + exact re-rank from vectors on disk. Approximate:
    results may miss true neighbours; ``rerank`` and ``nprobe`` trade speed for recall."""

    def __init__(self, dim: int, config: IVFPQConfig | None = None, store: VectorStore | None = None,
                 learned: Any = None) -> None:
        """``learned``: the ``LearnedPQConfig`` of the ``learned`` quantizer (training settings; tests use
        ``LearnedPQConfig.quick()``); None uses its defaults."""
        self.dim = dim
        self.learned = learned
        self.config = config or IVFPQConfig()
        self.code_dim = self.config.code_dim(dim)
        if self.code_dim % self.config.pq_m:
            raise ConfigError(f"pq_m={self.config.pq_m} must divide the code dimension {self.code_dim} "
                              f"(input {dim}, reduce={self.config.reduce}); choose pq_m or reduce to fit")
        self.store = store
        self.params = IVFSearchParams()
        self.info: dict[str, Any] = {}  # saved with the index (the collection records what it covers)
        self._index: Any = None  # faiss index (IndexPreTransform or IndexIVFPQFastScan)
        self._ivf: Any = None
        self._tombstones: set[int] = set()
        self._selector: Any = None
        self._params_cache: dict[tuple[int, int], tuple[Any, ...]] = {}  # emptied whenever the tombstones change
        self.graph_links_repaired = 0  # links connect_graph() wrote into the centroid graph (train() or load())

    # -------------------------------------------------------------- training
    @property
    def is_trained(self) -> bool:
        return self._index is not None

    def train(self, vectors: NDArray[np.float32], seed: int = 0) -> None:
        """Learn centroids, (rotation) and codebooks from representative vectors (N, dim)."""
        import faiss

        x = np.ascontiguousarray(vectors, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ShapeError(f"the training vectors have shape {x.shape}, but this index expects (N, {self.dim})")
        dim = self.code_dim
        pca = None
        if dim < self.dim:
            # Centroids, codes and lookup tables in the top PCA components: at 512-d (SSCD) or 1280-d
            # (EfficientNet) full-width float32 centroids alone took 8-21 B/vector at 1M, and 16-dim
            # PQ sub-vectors made FAISS's per-list tables 2.3x slower to compute (or a 134 MB table).
            from vidsearch.compress.pq import make_linear_transform

            fitted = faiss.PCAMatrix(self.dim, dim)
            fitted.train(np.ascontiguousarray(x[:: max(1, len(x) // 200_000)]))  # spread over the whole set
            # only the projection A is kept: FAISS's PCAMatrix also serialises every eigenvector
            # (1280^2 floats, 6.5 B/vector at 1M) and its mean offset cancels in every L2 distance
            pca = make_linear_transform(faiss.vector_to_array(fitted.A).reshape(dim, self.dim))
            x = pca.apply(x)
        nlist = self.config.nlist or choose_nlist(len(x), dim, self.config.list_padding_bytes())
        if len(x) < nlist:
            raise ConfigError(f"need at least nlist={nlist} training vectors, got {len(x)}")
        coarse = self.config.coarse
        if coarse == "auto":
            coarse = "flat" if nlist <= FLAT_COARSE_MAX else "hnsw"
        quantizer: Any
        if coarse == "flat":
            quantizer = faiss.IndexFlatL2(dim)
        else:
            quantizer = faiss.IndexHNSWFlat(dim, self.config.hnsw_m)
            # Assignment of added vectors to lists goes through this graph: with FAISS's default
            # efSearch=16 a share of vectors lands in a non-nearest list and is never probed again
            # (recall@10 0.82 instead of 0.99 at 1M). Searches override it per call.
            quantizer.hnsw.efSearch = 256
            quantizer.hnsw.efConstruction = 200
        # k-means assigns with an exact index; the graph is built once over the final centroids
        # (clustering through the HNSW itself rebuilt it every iteration and gave worse centroids).
        self._clustering_index = faiss.IndexFlatL2(dim)
        ivf: Any
        if self.config.nbits == 4:
            ivf = faiss.IndexIVFPQFastScan(quantizer, dim, nlist, self.config.pq_m, 4)
            # FAISS codes the vectors themselves by default here; codes of residuals (as 8-bit IVF-PQ)
            # kept more true neighbours among the candidates at 1M (recall@10 0.994 vs 0.987 at
            # re-rank 48) for a per-list table of only 16 entries per sub-quantizer
            ivf.by_residual = True
        else:
            ivf = faiss.IndexIVFPQ(quantizer, dim, nlist, self.config.pq_m, 8)
        ivf.cp.seed = seed
        ivf.clustering_index = self._clustering_index
        if hasattr(ivf.pq, "cp"):
            ivf.pq.cp.seed = seed
        index: Any = ivf
        if self.config.quantizer == "opq":
            opq = faiss.OPQMatrix(dim, self.config.pq_m)
            opq.niter = 20  # FAISS's 50 costs 2.5x the time for <0.5 point of recall here
            opq.max_train_points = 100_000
            index = faiss.IndexPreTransform(opq, ivf)
        elif self.config.quantizer == "learned":
            index = self._learned(ivf, x, seed)
        _no_precomputed_table(ivf)
        if not index.is_trained:
            index.train(x)
        if coarse == "hnsw":
            self.graph_links_repaired = connect_graph(faiss.downcast_index(ivf.quantizer))
        if pca is not None:
            if isinstance(index, faiss.IndexPreTransform):
                index.prepend_transform(pca)
            else:
                index = faiss.IndexPreTransform(pca, ivf)
        self._keep = pca  # the C++ chain holds a raw pointer to it
        self._index, self._ivf = index, ivf

    def _learned(self, ivf: Any, x: NDArray[np.float32], seed: int) -> Any:
        """IVF centroids by k-means, then a differentiable PQ (with its learned orthogonal projection R)
        trained on the residuals. FAISS then runs the whole index in the projected space:
        ``IndexPreTransform(LinearTransform(R), IVF-PQ)`` with centroids ``R c`` and the learned
        codebooks, since ``R x - R c = R (x - c)`` is exactly the projected residual the codebooks
        were trained on; R is orthogonal, so distances (and results) are those of the input space."""
        import faiss

        from vidsearch.compress import LearnedPQ, load_codebooks_into_faiss_pq
        from vidsearch.compress.pq import make_linear_transform

        clus = faiss.Clustering(self.code_dim, ivf.nlist)
        clus.seed = seed
        flat = faiss.IndexFlatL2(self.code_dim)
        clus.train(x, flat)
        centroids = faiss.vector_to_array(clus.centroids).reshape(ivf.nlist, self.code_dim)
        _, assign = flat.search(x, 1)
        residuals = x - centroids[assign[:, 0]]
        lpq = LearnedPQ(self.config.pq_m, nbits=self.config.nbits, config=self.learned, seed=seed).fit(residuals)
        rotation = np.eye(self.code_dim, dtype=np.float32) if lpq.rotation_ is None else lpq.rotation_
        ivf.quantizer.add(np.ascontiguousarray(centroids @ rotation.T, dtype=np.float32))
        if lpq.codebooks_ is None:
            raise NotFittedError("LearnedPQ.fit() left no codebooks")
        load_codebooks_into_faiss_pq(ivf.pq, lpq.codebooks_)
        ivf.is_trained = True
        index = faiss.IndexPreTransform(make_linear_transform(rotation), ivf)
        index.is_trained = True
        self._learned_pq = lpq  # training history, for reports
        return index

    # -------------------------------------------------------------- updates
    def __len__(self) -> int:
        return 0 if self._index is None else int(self._index.ntotal) - len(self._tombstones)

    def add(self, ids: NDArray[np.int64], vectors: NDArray[np.float32]) -> None:
        if self._index is None:
            raise NotFittedError("train() the IVF-PQ index before adding vectors")
        x = np.ascontiguousarray(vectors, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ShapeError(f"the provided vectors have shape {x.shape}, but this index expects (N, {self.dim})")
        if len(x):
            # Lists are assigned through the same HNSW graph over the centroids that searches walk
            # (efSearch 256). Assigning by an exact BLAS search instead was 8x faster at 1M, but at
            # 100K it filed vectors under centroids the graph never returns (recall@10 0.75 instead
            # of 0.98): a vector must sit in a list that search can reach.
            self._index.add_with_ids(x, np.ascontiguousarray(ids, dtype=np.int64))

    def remove(self, ids: NDArray[np.int64]) -> int:
        """Tombstone ``ids`` (filtered at search time); compact when they pass ``compact_fraction``."""
        import faiss

        if self._index is None:
            return 0
        new = {int(i) for i in ids} - self._tombstones
        self._tombstones |= new
        self._selector = None
        self._params_cache = {}
        if len(self._tombstones) > self.config.compact_fraction * max(int(self._index.ntotal), 1):
            self.compact()
        return len(new)

    def compact(self) -> None:
        """Drop tombstoned vectors from the inverted lists for good."""
        import faiss

        if self._index is not None and self._tombstones:
            dead = np.fromiter(self._tombstones, np.int64, len(self._tombstones))
            self._index.remove_ids(faiss.IDSelectorBatch(dead))
        self._tombstones.clear()
        self._selector = None
        self._params_cache = {}

    # -------------------------------------------------------------- search
    def set_query_arguments(self, params: IVFSearchParams) -> None:
        self.params = params

    def _faiss_params(self, nprobe: int, ef: int) -> Any:
        """FAISS search parameters, cached per (nprobe, ef) until the tombstones change (building them
        costs ~6 us, a few % of a 1M-vector query)."""
        import faiss

        hit = self._params_cache.get((nprobe, ef))
        if hit is not None:
            return hit[0]
        p = faiss.SearchParametersIVF()
        p.nprobe = nprobe
        hp: Any = None
        if isinstance(faiss.downcast_index(self._ivf.quantizer), faiss.IndexHNSW):
            hp = faiss.SearchParametersHNSW()  # type: ignore[attr-defined]  # in FAISS, not in its type stubs
            hp.efSearch = max(ef, nprobe)
            p.quantizer_params = hp
        if self._tombstones:
            if self._selector is None:
                dead = np.fromiter(self._tombstones, np.int64, len(self._tombstones))
                batch = faiss.IDSelectorBatch(dead)
                self._selector = (faiss.IDSelectorNot(batch), batch)
            p.sel = self._selector[0]
        # the C++ side holds raw pointers: keep the Python objects (and the selector they use) alive
        self._params_cache[(nprobe, ef)] = (p, hp, self._selector)
        return p

    def search(self, queries: NDArray[np.float32], k: int, params: IVFSearchParams | None = None) -> IndexHits:
        """Top-k by inner product (vectors are L2-normalised, so L2 order = cosine order)."""
        q = np.ascontiguousarray(queries, dtype=np.float32)
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise ShapeError(f"the provided queries have shape {q.shape}, but this index expects (Q, {self.dim})")
        k = max(1, int(k))
        if self._index is None or len(self) == 0:
            return empty_hits(len(q), k)
        p = params or self.params
        depth = max(k, p.rerank) if self.store is not None else k
        with faiss_threads_for(len(q)):
            dist, ids = self._index.search(q, depth, params=self._faiss_params(p.nprobe, p.ef_search))
        if self.store is None or p.rerank <= 0:
            # from the codes: approximate, and with a projection (code_dim < dim) an upper bound on the
            # cosine (the distance left out of the projection is not counted)
            scores = np.where(ids >= 0, 1.0 - dist / 2.0, -np.inf).astype(np.float32)
            return IndexHits(ids[:, :k].astype(np.int64), scores[:, :k])
        return self._rerank(q, ids, k)

    def _rerank(self, q: NDArray[np.float32], cand: NDArray[np.int64], k: int) -> IndexHits:
        """Exact inner products of every query with its candidates, one gather and one einsum."""
        assert self.store is not None
        if len(q) == 1 and cand[0, -1] >= 0:  # one query, full candidate list: the common, latency-bound case
            dot_batch = getattr(self.store, "dot_batch", None)
            scores1 = dot_batch(cand, q)[0] if dot_batch is not None else self.store.get(cand[0]) @ q[0]
            top_k = min(k, len(scores1))
            part = np.argpartition(-scores1, top_k - 1)[:top_k] if top_k < len(scores1) else np.arange(len(scores1))
            part = part[np.argsort(-scores1[part], kind="stable")]
            ids1, top1 = cand[0, part], scores1[part].astype(np.float32)
            if top_k < k:
                ids1 = np.pad(ids1, (0, k - top_k), constant_values=-1)
                top1 = np.pad(top1, (0, k - top_k), constant_values=-np.inf)
            return IndexHits(ids1[None].astype(np.int64), top1[None])
        valid = cand >= 0
        safe = np.where(valid, cand, cand.max(initial=0))
        dot_batch = getattr(self.store, "dot_batch", None)
        if dot_batch is not None:  # float16 rows: the numba kernel, no float32 copy (index/kernels.py)
            import faiss

            # a large batch uses the threads FAISS may use (kernels.PARALLEL_MIN_QUERIES decides what is large)
            scores = dot_batch(safe, q, threads=faiss.omp_get_max_threads())
        else:
            vectors = self.store.get(safe.ravel()).reshape(*cand.shape, self.dim)
            scores = np.einsum("qrd,qd->qr", vectors, q)
        scores[~valid] = -np.inf
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        ids = np.take_along_axis(cand, order, axis=1)
        top = np.take_along_axis(scores, order, axis=1).astype(np.float32)
        ids = np.where(np.isfinite(top), ids, -1)
        if ids.shape[1] < k:
            pad = k - ids.shape[1]
            ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
            top = np.pad(top, ((0, 0), (0, pad)), constant_values=-np.inf)
        return IndexHits(ids.astype(np.int64), top)

    # -------------------------------------------------------------- memory and persistence
    def memory_bytes(self) -> int:
        """RAM held by FAISS structures (codes, ids, centroids, graph, projection), measured as
        serialised size, plus any precomputed IVF-PQ table (not serialised; see _no_precomputed_table)."""
        return 0 if self._index is None else faiss_ram_bytes(self._index)

    def save(self, path: Path) -> None:
        """Atomic, checksummed container (``index/persist.py``): JSON header + FAISS blob."""
        import faiss

        if self._index is None:
            raise NotFittedError("nothing to save: the index is not trained")
        blob = faiss.serialize_index(self._index).tobytes()
        write_index_file(path, "ivfpq", {"dim": self.dim, "config": asdict(self.config), "params": asdict(self.params),
                                         "tombstones": sorted(self._tombstones), "info": self.info}, blob)

    @classmethod
    def load(cls, path: Path, store: VectorStore | None = None) -> "IVFPQIndex":
        """Load a saved index.

        Raises:
            CollectionError: unreadable, damaged anywhere (checksum, header fields, FAISS blob), or newer.
        """
        meta, blob = read_index_file(path)
        return cls.from_container(path, meta, blob, store)

    @classmethod
    def from_container(cls, path: Path, meta: dict[str, Any], blob: np.ndarray,
                       store: VectorStore | None = None) -> "IVFPQIndex":
        """The index held by a container already read and checksummed (:func:`read_index_file`)."""
        import faiss

        if meta.get("kind", "ivfpq") != "ivfpq":
            raise CollectionError(f"{path}: expected an IVF-PQ index, found kind {meta.get('kind')!r}")
        dim = field(path, meta, "dim", int)
        config = dataclass_field(path, meta, "config", IVFPQConfig, {"nlist": (0, 2**31 - 1), "hnsw_m": (1, 2**16),
                                                                      "compact_fraction": (0, math.inf)})
        config.setdefault("reduce", 0)  # files from before the PCA projection keep every dimension
        # search-time defaults: FAISS takes nprobe past nlist as nlist, but allocates per ef_search and rerank
        params = dataclass_field(path, meta, "params", IVFSearchParams,
                                 {"nprobe": (1, 2**31 - 1), "ef_search": (1, 2**20), "rerank": (0, 2**20)})
        tombstones = field(path, meta, "tombstones", list)
        bad = [t for t in tombstones if type(t) is not int or not 0 <= t < 2**63]
        if bad:
            raise CollectionError(f"{path}: expected the tombstones as ids (integers from 0 to 2^63 - 1), found "
                                  f"{bad[0]!r}; damaged ({REBUILT})")
        try:
            # without FAISS building its precomputed table on read (537 MB at 10M) only to be dropped
            index = faiss.deserialize_index(blob.copy(), faiss.IO_FLAG_SKIP_PRECOMPUTE_TABLE)
            ivf = faiss.downcast_index(faiss.extract_index_ivf(index))  # the concrete IVF type, as train() leaves it
            pq = getattr(ivf, "pq", None)
            if pq is not None:
                # a header without the code layout (from before a field existed) holds the codes its blob holds,
                # not today's defaults (8-bit PQ32 until 4-bit fast-scan became the default)
                config.setdefault("pq_m", int(pq.M))
                config.setdefault("nbits", int(pq.nbits))
            obj = cls(dim, IVFPQConfig(**config), store)
            obj.params = IVFSearchParams(**params)
            obj._tombstones = set(tombstones)
        except (TypeError, ValueError, RuntimeError, MemoryError, ConfigError) as exc:
            raise CollectionError(f"{path}: damaged index ({type(exc).__name__}: {exc}); "
                                  "it is rebuilt from the vector files") from exc
        if index.d != dim:
            raise CollectionError(f"{path}: the header says {dim}-d input, the FAISS blob takes {index.d}-d; damaged")
        pq, cfg = getattr(ivf, "pq", None), obj.config
        found = None if pq is None else (int(getattr(ivf, "nlist")), int(pq.M), int(pq.nbits))
        if found is None or found[1:] != (cfg.pq_m, cfg.nbits) or cfg.nlist not in (0, found[0]):
            raise CollectionError(f"{path}: the header says nlist={cfg.nlist or 'auto'}, pq_m={cfg.pq_m}, "
                                  f"nbits={cfg.nbits}, the FAISS blob holds {type(ivf).__name__} "
                                  f"(nlist, pq_m, nbits)={found}; damaged ({REBUILT})")
        obj.info = field(path, meta, "info", dict, {})
        obj._index, obj._ivf = index, ivf
        _no_precomputed_table(obj._ivf)  # FAISS rebuilds it on every read
        quantizer = faiss.downcast_index(obj._ivf.quantizer)
        obj.code_dim = int(quantizer.d)  # what the file holds, whatever rule "reduce" follows today
        if isinstance(quantizer, faiss.IndexHNSW):  # files saved before connect_graph existed: repair on load
            obj.graph_links_repaired = connect_graph(quantizer)
        return obj
