"""The float16 gather-dot kernel against numpy, over every kind of half value."""

import numpy as np
import pytest

from vidsearch.index.kernels import _gather_dot_py, gather_dot_f16


@pytest.mark.parametrize("seed", [0, 1])
def test_gather_dot_matches_numpy_over_random_half_bits(seed: int) -> None:
    rng = np.random.default_rng(seed)
    bits = rng.integers(0, 65536, (500, 96), dtype=np.uint16)
    bits[(bits & 0x7C00) == 0x7C00] &= 0x83FF  # inf/nan would make every sum inf/nan: test them apart
    rows = bits.view(np.float16)
    q = rng.standard_normal(96).astype(np.float32)
    ids = rng.choice(500, 77)
    got = gather_dot_f16(rows, ids, q)
    want = rows[ids].astype(np.float64) @ q.astype(np.float64)
    assert got.dtype == np.float32 and got.shape == (77,)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    np.testing.assert_allclose(_gather_dot_py(bits, ids, q), want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_subnormals_signed_zero_and_inf_convert_exactly() -> None:
    vals = np.array([[6e-8, -6e-8, 3.1e-5, -3.1e-5, 0.0, -0.0, 6.1e-5, 65504.0]], np.float16)
    for j in range(vals.shape[1]):  # one element at a time: each product is exact in float32
        q = np.zeros(vals.shape[1], np.float32)
        q[j] = 1.0
        assert gather_dot_f16(vals, np.array([0]), q)[0] == np.float32(vals[0, j])
    inf = np.array([[np.inf, 1.0]], np.float16)
    assert gather_dot_f16(inf, np.array([0]), np.array([1.0, 0.0], np.float32))[0] == np.inf


def test_memory_mapped_rows(tmp_path) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(3)
    x = rng.standard_normal((200, 64)).astype(np.float16)
    np.save(tmp_path / "v.npy", x)
    mm = np.load(tmp_path / "v.npy", mmap_mode="r")
    ids = np.array([5, 0, 199, 5])
    q = rng.standard_normal(64).astype(np.float32)
    np.testing.assert_allclose(gather_dot_f16(np.asarray(mm), ids, q), x[ids].astype(np.float32) @ q, rtol=1e-5, atol=1e-5)


def test_batch_gather_dot_matches_numpy() -> None:
    from vidsearch.index.kernels import gather_dot_f16_batch

    rng = np.random.default_rng(5)
    rows = rng.standard_normal((300, 48)).astype(np.float16)
    ids = rng.integers(0, 300, (7, 11))
    q = rng.standard_normal((7, 48)).astype(np.float32)
    want = np.einsum("qrd,qd->qr", rows[ids].astype(np.float64), q.astype(np.float64))
    got = gather_dot_f16_batch(rows, ids, q)
    assert got.shape == (7, 11) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_parallel_batch_gather_dot_matches_numpy_on_a_memory_map(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from vidsearch.index import kernels

    rng = np.random.default_rng(6)
    x = rng.standard_normal((500, 40)).astype(np.float16)
    mm = np.lib.format.open_memmap(tmp_path / "v.npy", mode="w+", dtype=np.float16, shape=x.shape)
    mm[:] = x
    n_q = kernels.PARALLEL_MIN_QUERIES + 5
    ids = rng.integers(0, 500, (n_q, 13))
    q = rng.standard_normal((n_q, 40)).astype(np.float32)
    want = np.einsum("qrd,qd->qr", x[ids].astype(np.float64), q.astype(np.float64))
    serial = kernels.gather_dot_f16_batch(np.load(tmp_path / "v.npy", mmap_mode="r"), ids, q, threads=1)
    par = kernels.gather_dot_f16_batch(np.load(tmp_path / "v.npy", mmap_mode="r"), ids, q, threads=2)
    np.testing.assert_allclose(par, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(par, serial)  # same kernel per row: bit-identical


@pytest.mark.parametrize("scale", [1e-30, 1e-3, 3e4, 1e6, 1e30])
def test_queries_of_any_magnitude_score_like_numpy(scale: float) -> None:
    # the kernel carries a 2**112 factor in the query; large queries must not overflow, tiny ones not flush
    rng = np.random.default_rng(7)
    rows = rng.standard_normal((50, 32)).astype(np.float16)
    q = (rng.standard_normal(32) * scale).astype(np.float32)
    ids = np.arange(50)
    want = rows.astype(np.float64) @ q.astype(np.float64)
    got = gather_dot_f16(rows, ids, q)
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_nan_and_negative_inf_rows_stay_non_finite() -> None:
    rows = np.array([[np.nan, 1.0], [-np.inf, 1.0], [1.0, 2.0]], np.float16)
    got = gather_dot_f16(rows, np.array([0, 1, 2]), np.array([1.0, 1.0], np.float32))
    assert np.isnan(got[0]) and got[1] == -np.inf and got[2] == 3.0
