"""Motion from the decoded pixels: optical flow as a per-frame vector, the motion stream of a dual-stream model.

The frame encoders' vectors change little when a picture shifts by a few pixels, so the difference of two frame
vectors (what :class:`vidsearch.train.models.DualStreamTemporal` takes as motion) carries little of *where*
things move. This stream measures it on the pixels: OpenCV's pyramidal Lucas-Kanade optical flow (a well-kept
library; ``opencv-contrib-python-headless``, in the ``eval`` extra) of :data:`FLOW_POINTS` x :data:`FLOW_POINTS`
points a cell between a frame and the one before it (the dense flows used before, OpenCV's DIS and Farneback, cost
3.7x and ~6x as much on a 64 px pair, Intel VM: 0.56 and ~0.9 against 0.15 ms), averaged over a ``grid`` x ``grid``
layout of cells, in units of the frame's width, plus one constant component, L2-normalised:
the direction of motion in each region and, through the constant component, how large it is (still frames give
the constant alone). :func:`vidsearch.encode.depth.fuse` joins it with the frame vectors (the two streams fused at
the input of the temporal model).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from vidsearch.encode.temporal import l2_normalize
from vidsearch.errors import ConfigError, ShapeError

FLOW_GRID = 4
"""Cells a side of :func:`flow_vectors` (2 x 16 cells + 1 = 33-d)."""
FLOW_POINTS = 2
"""Tracked points a side of each cell (4 a cell)."""
FLOW_WINDOW = 9
"""Side in pixels of the window Lucas-Kanade matches around each point (at each of 3 pyramid levels)."""
FLOW_SCALE = 0.02
"""The constant component: a motion of 2 % of the frame's width a frame weighs as much as stillness."""


def flow_dim(grid: int = FLOW_GRID) -> int:
    """Length of a :func:`flow_vectors` row."""
    return 2 * grid * grid + 1


def _grey(frames: NDArray[np.uint8]) -> NDArray[np.uint8]:
    f = np.asarray(frames)
    if f.ndim == 4 and f.shape[-1] == 3:
        f = (f[..., 0] * 0.299 + f[..., 1] * 0.587 + f[..., 2] * 0.114).astype(np.uint8)
    if f.ndim != 3 or f.dtype != np.uint8:
        raise ShapeError(f"expected frames (T, H, W) or (T, H, W, 3) uint8, got {np.asarray(frames).shape} "
                         f"{np.asarray(frames).dtype}")
    return f


FLOW_SIZE = (64, 64)
"""(width, height) a collection's frames are taken at (grey) for their flow (``EncodeConfig.motion``): the size
Moving Fashion-MNIST's clips, which the flow models are trained on, have."""


def flow_vectors(frames: NDArray[np.uint8], picks: Sequence[int] | NDArray[np.integer] | None = None,
                 grid: int = FLOW_GRID) -> NDArray[np.float32]:
    """(T, H, W[, 3]) uint8 frames -> (len(picks), 2 * grid * grid + 1) float32, rows L2-normalised: for each
    picked frame the flow from the frame before it (the first frame: the flow to the next, so every row has one).

    Raises:
        ShapeError: fewer than 2 frames, frames smaller than ``grid``, or a pick outside them.
        ConfigError: OpenCV is not installed.
    """
    grey = _grey(frames)
    t, h, w = grey.shape
    if t < 2 or h < grid or w < grid:
        raise ShapeError(f"expected at least 2 frames of at least {grid} x {grid} pixels, got {grey.shape}")
    rows = np.arange(t) if picks is None else np.asarray(picks, np.int64)
    if rows.size and (rows.min() < 0 or rows.max() >= t):
        raise ShapeError(f"picks must be frame indices in 0..{t - 1}, got {rows.tolist()}")
    before = np.where(rows > 0, rows - 1, 0)
    after = np.where(rows > 0, rows, 1)
    return pair_flow(np.stack([grey[before], grey[after]], axis=1), grid)


def pair_flow(pairs: NDArray[np.uint8], grid: int = FLOW_GRID) -> NDArray[np.float32]:
    """(N, 2, H, W) uint8 grey pairs (a frame, the frame after it) -> (N, 2 * grid * grid + 1) float32, rows
    L2-normalised: the flow from the first of each pair to the second (a pair of one frame twice: the constant
    alone). The one computation behind :func:`flow_vectors` (clips) and a collection's motion stream (the pairs
    ``decode.iter_frames(pair_size=FLOW_SIZE)`` gives).

    Raises:
        ShapeError: not (N, 2, H >= grid, W >= grid) uint8.
        ConfigError: OpenCV is not installed.
    """
    try:
        import cv2
    except ImportError as exc:  # the eval extra installs it
        raise ConfigError("the pixel-motion stream needs OpenCV: pip install 'vidsearch[eval]'") from exc
    p = np.asarray(pairs)
    if p.ndim != 4 or p.shape[1] != 2 or p.shape[2] < grid or p.shape[3] < grid or p.dtype != np.uint8:
        raise ShapeError(f"expected (N, 2, H >= {grid}, W >= {grid}) uint8 grey pairs, got {p.shape} {p.dtype}")
    n, _, h, w = p.shape
    per = FLOW_POINTS
    ys = ((np.arange(grid)[:, None] + (np.arange(per)[None, :] + 0.5) / per) * h / grid).ravel()
    xs = ((np.arange(grid)[:, None] + (np.arange(per)[None, :] + 0.5) / per) * w / grid).ravel()
    gy, gx = np.meshgrid(ys, xs, indexing="ij")  # row-major: cell row, point row, cell column, point column
    points = np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.float32).reshape(-1, 1, 2)
    moved = np.empty((n, grid * per, grid * per, 2), np.float32)
    for i in range(n):
        # nextPts None (no initial guess), as OpenCV documents it; its stubs want an array there
        found, status, _ = cv2.calcOpticalFlowPyrLK(  # type: ignore[call-overload]
            np.ascontiguousarray(p[i, 0]), np.ascontiguousarray(p[i, 1]), points, None,
            winSize=(FLOW_WINDOW, FLOW_WINDOW), maxLevel=2)
        d = (np.asarray(found) - points).reshape(-1, 2) * np.asarray(status).reshape(-1, 1)  # lost points: still
        moved[i] = d.reshape(grid * per, grid * per, 2)
    cells = moved.reshape(n, grid, per, grid, per, 2).mean(axis=(2, 4)).reshape(n, grid * grid, 2)
    scale = np.full((n, 1), FLOW_SCALE, np.float32)
    out = np.concatenate([cells[..., 0] / w, cells[..., 1] / w, scale], axis=1)
    return l2_normalize(out)
