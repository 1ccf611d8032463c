"""The pixel-motion stream: optical flow vectors tell the direction of motion that frame vectors barely see."""

from __future__ import annotations

import numpy as np
import pytest

from vidsearch.encode.motion import flow_dim, flow_vectors
from vidsearch.errors import ShapeError
from vidsearch.evaluate import fashion as fm


@pytest.fixture(scope="module")
def item() -> np.ndarray:
    images, _ = fm.load_fashion_mnist("test")  # real garments (Debian dataset-fashion-mnist)
    return images[0]


pytestmark = pytest.mark.skipif(not (fm.FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz").is_file(),
                                reason="Debian dataset-fashion-mnist is not installed (make samples)")


def test_opposite_motions_give_opposite_flow_and_stillness_the_constant_alone(item) -> None:
    right = fm.render_motion(item, "right", frames=8, size=64)
    left = fm.render_motion(item, "left", frames=8, size=64)  # the same frames, reversed
    r, lft = flow_vectors(right), flow_vectors(left)
    assert r.shape == (8, flow_dim()) and np.allclose(np.linalg.norm(r, axis=1), 1.0, atol=1e-5)
    cells = flow_dim() // 2
    dx_right, dx_left = r[:, :cells].sum(axis=1), lft[:, :cells].sum(axis=1)
    assert np.all(dx_right > 0) and np.all(dx_left < 0)  # x grows to the right
    assert float((r[3] @ lft[3])) < 0.5  # a frame moving right and the same frame moving left: different vectors
    still = np.repeat(right[:1], 4, axis=0)
    s = flow_vectors(still)
    assert np.allclose(s[:, :-1], 0, atol=1e-3) and np.allclose(s[:, -1], 1, atol=1e-3)
    assert np.allclose(flow_vectors(right, picks=[0, 5]), r[[0, 5]])
    with pytest.raises(ShapeError):
        flow_vectors(right[:1])
    with pytest.raises(ShapeError):
        flow_vectors(right, picks=[8])
