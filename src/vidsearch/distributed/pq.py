"""Product quantization trained over data partitioned across workers (issue #17, the distributed-PQ "hash" model).

The model, as the Spark distributed-retrieval paper sets it up (its section 3.2, in our words): the data X is split
into partitions X_1..X_P held by different workers; a vector x of D dimensions is cut into M sub-vectors u_m(x) of
D/M dimensions, each quantized to the nearest of K codewords of its sub-codebook C_m, and the codebooks minimise the
quantization loss summed over every partition:

    L(C) = sum_p sum_{x in X_p} sum_m || u_m(x) - c_m(i_m(x)) ||^2,   i_m(x) = argmin_k || u_m(x) - c_m(k) ||.

Training is k-means in each subspace, run where the data is:

1. **Per-partition k-means** (the initialisation): each partition runs k-means on its own sub-vectors (FAISS,
   a few iterations) and returns its K codewords per subspace with their counts.
2. **Codebooks combined**: the driver clusters the P*K partition codewords of each subspace into K, weighted by
   their counts (a partition's codeword stands for the points assigned to it).
3. **Distributed Lloyd steps on the summed loss**: each partition assigns its sub-vectors to the current
   codewords and returns, per codeword, the sum and the count of its points and its share of L; the driver adds
   them up (a reduce) and moves each codeword to the mean of its points. L never increases; stop when it falls by
   less than ``tol`` (relative) or after ``iterations`` steps. An empty codeword takes a point of the partition
   sums' largest cluster (split), as FAISS does.

Then each partition encodes its own vectors (codes added where the data is) and the driver concatenates the codes.

The same algorithm runs over in-process arrays (:class:`LocalPartitions`, a test and a baseline without Spark's
overhead) or over a Spark RDD of row ranges of a ``.npy`` file every executor can read
(:class:`SparkPartitions`). FAISS's own PQ training (k-means on a sample of at most 256 points per codeword
gathered from the partitions) is the peer in ``bench/dist_pq.py``.

Written here because neither FAISS nor PySpark has it: FAISS trains on one machine's sample; Spark MLlib's KMeans
clusters whole vectors, not M sub-vector spaces at once, and would need M jobs per step.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import numpy as np
from numpy.typing import NDArray

from vidsearch.errors import ConfigError, ShapeError

__all__ = ["DistributedPQConfig", "PQStats", "LocalPartitions", "SparkPartitions", "train_distributed_pq",
           "encode_partitions", "pq_stats", "quantization_loss"]

T = TypeVar("T")


@dataclass(frozen=True)
class DistributedPQConfig:
    """What is trained: ``m`` sub-quantizers of ``2**nbits`` codewords (``m`` bytes a vector at 8 bits).

    Attributes:
        m: sub-quantizers (must divide the dimension).
        nbits: bits per code (K = 2**nbits codewords per sub-quantizer).
        iterations: at most this many distributed Lloyd steps after the combined initialisation.
        local_iterations: k-means iterations of each partition's own initialisation.
        tol: stop when the summed loss falls by less than this fraction in a step.
        seed: seeds every k-means.
    """

    m: int = 32
    nbits: int = 8
    iterations: int = 10
    local_iterations: int = 10
    tol: float = 1e-3
    seed: int = 0

    def __post_init__(self) -> None:
        if self.m < 1 or not 1 <= self.nbits <= 12 or self.iterations < 0 or self.local_iterations < 1:
            raise ConfigError(f"expected m >= 1, 1 <= nbits <= 12, iterations >= 0, local_iterations >= 1; got {self}")

    @property
    def k(self) -> int:
        return 1 << self.nbits


@dataclass
class PQStats:
    """What one partition tells the driver in a Lloyd step: per codeword the sum and count of the sub-vectors
    assigned to it, and the partition's share of the loss. Adding two is the reduce."""

    sums: NDArray[np.float64]  # (M, K, dsub)
    counts: NDArray[np.int64]  # (M, K)
    loss: float

    def __add__(self, other: "PQStats") -> "PQStats":
        return PQStats(self.sums + other.sums, self.counts + other.counts, self.loss + other.loss)


class Partitions(Protocol):
    """Where the data lives: ``map`` runs a function on every partition's (rows, D) float32 block, where it is,
    and returns the results in partition order."""

    def map(self, fn: Callable[[NDArray[np.float32]], T]) -> list[T]: ...


@dataclass
class LocalPartitions:
    """Partitions held in this process (a list of (rows, D) blocks): the algorithm without Spark."""

    blocks: Sequence[NDArray[np.float32]]

    def map(self, fn: Callable[[NDArray[np.float32]], T]) -> list[T]:
        return [fn(np.asarray(b, np.float32)) for b in self.blocks]


@dataclass
class SparkPartitions:
    """Row ranges of a ``.npy`` file (N, D) float32 on storage every executor can read, one Spark partition each;
    a task memory-maps its own range, so the data never passes through the driver."""

    spark: Any  # a SparkSession
    path: str
    partitions: int
    rows: int = field(init=False)

    def __post_init__(self) -> None:
        shape = np.load(self.path, mmap_mode="r").shape
        if len(shape) != 2:
            raise ShapeError(f"{self.path}: expected (N, D) vectors, got shape {shape}")
        self.rows = int(shape[0])
        if not 1 <= self.partitions <= self.rows:
            raise ConfigError(f"partitions must be between 1 and the {self.rows} rows, got {self.partitions}")

    def map(self, fn: Callable[[NDArray[np.float32]], T]) -> list[T]:
        bounds = np.linspace(0, self.rows, self.partitions + 1).astype(int)
        ranges = [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]
        path = self.path

        def run(it: Any) -> Any:
            import faiss
            import numpy as np

            faiss.omp_set_num_threads(1)  # a task is one of the executor's task slots (one core)
            for lo, hi in it:
                yield fn(np.asarray(np.load(path, mmap_mode="r")[lo:hi], np.float32))

        sc = self.spark.sparkContext
        return list(sc.parallelize(ranges, len(ranges)).mapPartitions(run).collect())


def _subspaces(x: NDArray[np.float32], m: int) -> NDArray[np.float32]:
    """(N, D) -> (M, N, D/M)."""
    n, d = x.shape
    return np.ascontiguousarray(x.reshape(n, m, d // m).transpose(1, 0, 2))


def _assign(sub: NDArray[np.float32], codebook: NDArray[np.float32]) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Nearest codeword of each sub-vector (N, dsub) in (K, dsub), and its squared distance."""
    import faiss

    dist, idx = faiss.knn(np.ascontiguousarray(sub), np.ascontiguousarray(codebook), 1)
    return idx[:, 0].astype(np.int64), np.maximum(dist[:, 0].astype(np.float64), 0.0)


def pq_stats(x: NDArray[np.float32], codebooks: NDArray[np.float32]) -> PQStats:
    """One partition's share of a Lloyd step (module docstring, step 3)."""
    m, k, dsub = codebooks.shape
    sums = np.zeros((m, k, dsub), np.float64)
    counts = np.zeros((m, k), np.int64)
    loss = 0.0
    for j, sub in enumerate(_subspaces(x, m)):
        idx, dist = _assign(sub, codebooks[j])
        for c in range(dsub):  # per-codeword sums, one bincount a coordinate (np.add.at is ~20x slower)
            sums[j, :, c] = np.bincount(idx, weights=sub[:, c], minlength=k)
        counts[j] = np.bincount(idx, minlength=k)
        loss += float(dist.sum())
    return PQStats(sums, counts, loss)


def quantization_loss(x: NDArray[np.float32], codebooks: NDArray[np.float32]) -> float:
    """The loss L of the module docstring on ``x`` (sum of squared sub-vector errors)."""
    return pq_stats(x, codebooks).loss


def _local_kmeans(x: NDArray[np.float32], cfg: DistributedPQConfig) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """Per-partition k-means (step 1): (M, K, dsub) codewords of this partition and (M, K) their counts."""
    import faiss

    subs = _subspaces(x, cfg.m)
    k = min(cfg.k, len(x))
    out = np.zeros((cfg.m, cfg.k, subs.shape[2]), np.float32)
    counts = np.zeros((cfg.m, cfg.k), np.int64)
    for j, sub in enumerate(subs):
        km = faiss.Kmeans(sub.shape[1], k, niter=cfg.local_iterations, seed=cfg.seed + j, verbose=False,
                          max_points_per_centroid=1 << 30, min_points_per_centroid=1)  # every point: no sampling
        km.train(sub)
        centroids = np.asarray(km.centroids, np.float32)
        out[j, :k] = centroids
        idx, _ = _assign(sub, centroids)
        counts[j, :k] = np.bincount(idx, minlength=k)
    return out, counts


def _combine(local: list[tuple[NDArray[np.float32], NDArray[np.int64]]], cfg: DistributedPQConfig) -> NDArray[np.float32]:
    """Codebooks combined (step 2): per subspace, the partitions' codewords clustered into K, weighted by count."""
    import faiss

    m, _, dsub = local[0][0].shape
    out = np.zeros((m, cfg.k, dsub), np.float32)
    for j in range(m):
        points = np.concatenate([c[j] for c, _ in local])
        weights = np.concatenate([n[j] for _, n in local]).astype(np.float32)
        keep = weights > 0
        points, weights = np.ascontiguousarray(points[keep]), weights[keep]
        if len(points) <= cfg.k:  # fewer distinct codewords than K: keep them all, pad by repeating
            out[j] = points[np.arange(cfg.k) % len(points)]
            continue
        km = faiss.Kmeans(dsub, cfg.k, niter=20, seed=cfg.seed + 1000 + j, verbose=False,
                          max_points_per_centroid=1 << 30, min_points_per_centroid=1)
        km.train(points, weights=weights)
        out[j] = km.centroids
    return out


def _update(codebooks: NDArray[np.float32], stats: PQStats, rng: np.random.Generator) -> NDArray[np.float32]:
    """Each codeword to the mean of its points; an empty one splits the largest cluster of its subspace."""
    new = codebooks.copy()
    m, k, _ = codebooks.shape
    for j in range(m):
        filled = stats.counts[j] > 0
        new[j, filled] = np.asarray(stats.sums[j, filled] / stats.counts[j, filled, None], np.float32)
        for e in np.flatnonzero(~filled):
            big = int(np.argmax(stats.counts[j]))
            eps = 1e-4 * rng.standard_normal(codebooks.shape[2], dtype=np.float32)
            new[j, e], new[j, big] = new[j, big] + eps, new[j, big] - eps
    return new


@dataclass
class DistributedPQResult:
    """Trained codebooks (M, K, dsub), the summed loss after initialisation and after each Lloyd step, and times."""

    codebooks: NDArray[np.float32]
    losses: list[float]
    seconds: dict[str, float]
    rows: int


def train_distributed_pq(parts: Partitions, cfg: DistributedPQConfig = DistributedPQConfig(),
                         progress: Callable[[str], None] | None = None) -> DistributedPQResult:
    """Train PQ codebooks over ``parts`` (module docstring: per-partition k-means, combined, then Lloyd steps on
    the loss summed over partitions).

    Raises:
        ShapeError: the dimension is not a multiple of ``cfg.m``.
    """
    t0 = time.perf_counter()
    shapes = parts.map(lambda b: b.shape)
    rows, dims = sum(s[0] for s in shapes), {s[1] for s in shapes}
    if len(dims) != 1 or next(iter(dims)) % cfg.m:
        raise ShapeError(f"expected partitions of one width divisible by m={cfg.m}, got widths {sorted(dims)}")
    local = parts.map(lambda b: _local_kmeans(b, cfg))
    t_local = time.perf_counter()
    codebooks = _combine(local, cfg)
    t_init = time.perf_counter()
    rng = np.random.default_rng(cfg.seed)
    losses: list[float] = []
    for step in range(cfg.iterations + 1):
        books = codebooks  # the closure sent to the workers
        parts_stats = parts.map(lambda b: pq_stats(b, books))
        stats = parts_stats[0]
        for s in parts_stats[1:]:
            stats = stats + s
        losses.append(stats.loss)
        if progress is not None:
            progress(f"step {step}: loss {stats.loss:.6g}")
        if step == cfg.iterations or (len(losses) > 1 and losses[-2] - losses[-1] < cfg.tol * losses[-2]):
            break
        codebooks = _update(codebooks, stats, rng)
    t_end = time.perf_counter()
    return DistributedPQResult(codebooks, losses, {"local_kmeans": t_local - t0, "combine": t_init - t_local,
                                                   "lloyd": t_end - t_init, "total": t_end - t0}, rows)


def faiss_pq(codebooks: NDArray[np.float32]) -> Any:
    """A FAISS ``ProductQuantizer`` holding these codebooks (to encode, decode and search with FAISS's kernels)."""
    import faiss

    m, k, dsub = codebooks.shape
    pq = faiss.ProductQuantizer(m * dsub, m, int(np.log2(k)))
    faiss.copy_array_to_vector(np.ascontiguousarray(codebooks, np.float32).ravel(), pq.centroids)
    return pq


def encode_partitions(parts: Partitions, codebooks: NDArray[np.float32]) -> NDArray[np.uint8]:
    """Each partition encodes its own rows (codes added where the data is); (N, code bytes) in row order."""
    books = np.ascontiguousarray(codebooks, np.float32)
    return np.concatenate(parts.map(lambda b: faiss_pq(books).compute_codes(np.ascontiguousarray(b))))
