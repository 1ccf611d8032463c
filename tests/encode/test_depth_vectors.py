"""Depth vectors: distance and layout kept, missing readings ignored; fusion keeps both parts."""

from __future__ import annotations

import numpy as np
import pytest

from vidsearch.encode.depth import depth_dim, depth_vectors, fuse
from vidsearch.errors import ShapeError


def test_depth_vectors_keep_the_distance_and_the_layout() -> None:
    near = np.full((1, 32, 32), 1000, np.uint16)
    far = np.full((1, 32, 32), 3000, np.uint16)
    v_near, v_far = depth_vectors(near), depth_vectors(far)
    assert v_near.shape == (1, depth_dim()) and np.isclose(np.linalg.norm(v_near), 1.0)
    assert float((v_near @ v_far.T)[0, 0]) < 0.9  # a flat wall at 1 m and at 3 m: not the same vector
    left = far.copy()
    left[:, :, :16] = 1000  # something near on the left only
    right = far.copy()
    right[:, :, 16:] = 1000
    assert float((depth_vectors(left) @ depth_vectors(right).T)[0, 0]) < 0.9
    holes = near.copy()
    holes[:, ::3, ::3] = 0  # missing readings do not count as far or near
    assert np.allclose(depth_vectors(holes), v_near, atol=1e-6)
    with pytest.raises(ShapeError):
        depth_vectors(np.zeros((2, 4, 4), np.uint16))


def test_fuse_weighs_each_part_as_a_unit_vector() -> None:
    rng = np.random.default_rng(0)
    c, d = rng.normal(size=(5, 512)), rng.normal(size=(5, 65))
    f = fuse(c, d)
    assert f.shape == (5, 577) and np.allclose(np.linalg.norm(f, axis=1), 1.0)
    assert np.allclose(np.linalg.norm(f[:, :512], axis=1), np.linalg.norm(f[:, 512:], axis=1), atol=1e-6)
    with pytest.raises(ShapeError):
        fuse(c, d[:3])
