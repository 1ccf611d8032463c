"""Distributed PQ (``vidsearch.distributed.pq``): per-partition k-means, combined codebooks, Lloyd steps on the
loss summed over partitions; the same result in process and on Spark; codes encoded where the data is."""

from __future__ import annotations

import numpy as np
import pytest

from vidsearch.distributed.pq import (
    DistributedPQConfig,
    LocalPartitions,
    encode_partitions,
    faiss_pq,
    pq_stats,
    quantization_loss,
    train_distributed_pq,
)
from vidsearch.errors import ShapeError

@pytest.fixture(autouse=True, scope="module")
def _one_faiss_thread():
    """FAISS's OpenMP team spins badly on a shared 2-core machine (6x slower under load); small inputs need 1."""
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


CFG = DistributedPQConfig(m=8, nbits=5, iterations=8, local_iterations=8, seed=0)


def _data(n: int = 6_000, d: int = 32, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((60, d))
    x = centres[rng.integers(0, 60, n)] + 0.5 * rng.standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _blocks(x: np.ndarray, p: int) -> list[np.ndarray]:
    return np.array_split(x, p)


def test_the_summed_loss_falls_every_step_and_matches_a_direct_evaluation():
    x = _data()
    res = train_distributed_pq(LocalPartitions(_blocks(x, 4)), CFG)
    assert res.rows == len(x) and res.codebooks.shape == (8, 32, 4)
    assert all(b <= a * (1 + 1e-9) for a, b in zip(res.losses, res.losses[1:])), res.losses
    assert res.losses[-1] < res.losses[0]  # the Lloyd steps improve on the combined initialisation
    # the loss the workers summed is the loss of the last step's codebooks... evaluated on all the data at once
    # is within float rounding of the per-partition sums (the reduce adds the right things)
    stats = [pq_stats(b, res.codebooks) for b in _blocks(x, 4)]
    assert sum(s.loss for s in stats) == pytest.approx(quantization_loss(x, res.codebooks), rel=1e-6)
    assert int(sum(s.counts for s in stats).sum()) == len(x) * CFG.m


def test_partitioned_training_is_as_good_as_faiss_on_all_the_data_and_does_not_depend_on_the_split():
    import faiss

    x = _data()
    pq = faiss.ProductQuantizer(x.shape[1], CFG.m, CFG.nbits)
    pq.train(x)
    faiss_loss = quantization_loss(x, faiss.vector_to_array(pq.centroids).reshape(CFG.m, CFG.k, -1))
    losses = {}
    for p in (1, 4):
        res = train_distributed_pq(LocalPartitions(_blocks(x, p)), CFG)
        losses[p] = quantization_loss(x, res.codebooks)
    assert max(losses.values()) <= 1.03 * faiss_loss, (losses, faiss_loss)
    assert max(losses.values()) <= 1.03 * min(losses.values()), losses


def test_codes_made_per_partition_equal_faiss_encoding_of_everything():
    x = _data(3000)
    res = train_distributed_pq(LocalPartitions(_blocks(x, 3)), CFG)
    codes = encode_partitions(LocalPartitions(_blocks(x, 5)), res.codebooks)
    np.testing.assert_array_equal(codes, faiss_pq(res.codebooks).compute_codes(x))
    # and they decode near the data (the codebooks are not arbitrary)
    err = ((faiss_pq(res.codebooks).decode(codes) - x) ** 2).sum()
    assert err == pytest.approx(quantization_loss(x, res.codebooks), rel=1e-4)


def test_a_width_that_m_does_not_divide_is_refused():
    with pytest.raises(ShapeError, match="divisible by m=8"):
        train_distributed_pq(LocalPartitions([np.zeros((100, 30), np.float32)]), CFG)
