"""Depth as an input of the temporal model (RGB-D): a vector per depth frame, and its fusion with the colour vector.

No pretrained depth network ships offline, and the frame encoders take RGB only, so depth enters after them:

- :func:`depth_vectors`: a depth frame becomes its inverse depth (1/metres, 0 where the sensor had no reading)
  averaged over a ``grid`` x ``grid`` layout of cells, plus one constant component (as large as the cells of a
  flat scene 2 m away), L2-normalised. Inverse depth
  weighs near things most (where a sensor is precise) and keeps the scene's layout; the constant component
  keeps the absolute scale through the normalisation (a scene twice as far is not the same vector), so both
  how far things are and how that changes over the frames reach the temporal model.
- **early fusion** (:func:`fuse`): each frame's colour vector and depth vector, each unit length, concatenated and
  normalised again: the temporal model sees both from its first layer (the "extra input channel" of the
  frame-vector sequence: the encoders' pixels stay RGB).
- **late fusion**: a temporal model over the depth vectors alone, its segment vector concatenated with the colour
  segment vector (``fuse`` of the two segment vectors): each stream is modelled apart and joined at the end.

A file without depth is encoded exactly as before: fusion happens only where depth exists.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from vidsearch.encode.temporal import l2_normalize
from vidsearch.errors import ShapeError

DEPTH_GRID = 8
"""Cells a side of :func:`depth_vectors` (64 cells + 1 scale component = 65-d)."""
SCALE_M = 2.0
"""The scale component of :func:`depth_vectors` is the cells' norm for a flat scene this far (metres)."""
MIN_DEPTH_M = 0.25
"""Readings nearer than this count as this near (inverse depth at most 4 per metre)."""


def depth_dim(grid: int = DEPTH_GRID) -> int:
    """Length of a :func:`depth_vectors` row."""
    return grid * grid + 1


def cell_means(values: NDArray[np.floating], grid: int,
               valid: NDArray[np.bool_] | None = None) -> NDArray[np.float32]:
    """(T, H, W) values -> (T, grid * grid): the mean of each cell of a ``grid`` x ``grid`` layout (every pixel in
    exactly one cell, cells within one pixel of each other in size), over the ``valid`` pixels only when given
    (0 for a cell with none)."""
    v = np.asarray(values, np.float32)
    t, h, w = v.shape
    ys, xs = (np.arange(h) * grid) // h, (np.arange(w) * grid) // w
    member = np.zeros((h * w, grid * grid), np.float32)  # pixel -> its cell, as a product (BLAS sums the cells)
    member[np.arange(h * w), (ys[:, None] * grid + xs[None, :]).ravel()] = 1.0
    mask = np.ones((t, h * w), np.float32) if valid is None else valid.reshape(t, -1).astype(np.float32)
    sums = (v.reshape(t, -1) * mask) @ member
    counts = mask @ member
    return np.where(counts > 0, sums / np.maximum(counts, 1.0), 0.0).astype(np.float32)


def depth_vectors(depth: NDArray[np.integer], grid: int = DEPTH_GRID) -> NDArray[np.float32]:
    """(T, H, W) depth in millimetres (0 = no reading) -> (T, grid * grid + 1) float32, rows L2-normalised:
    the mean inverse depth (1/m) of the valid pixels of each cell (0 for a cell with none), then the scale
    component ``grid / SCALE_M``.

    Raises:
        ShapeError: not (T, H, W) with H and W >= ``grid``.
    """
    d = np.asarray(depth)
    if d.ndim != 3 or d.shape[1] < grid or d.shape[2] < grid or grid < 1:
        raise ShapeError(f"expected depth frames (T, H >= {grid}, W >= {grid}), got {d.shape}")
    t = d.shape[0]
    metres = d.astype(np.float32) / 1000.0
    valid = d > 0
    inverse = np.where(valid, 1.0 / np.maximum(metres, MIN_DEPTH_M), 0.0).astype(np.float32)
    means = cell_means(inverse, grid, valid)
    # the scale component: the norm of the cells of a flat scene at SCALE_M, so that near and far weigh alike
    scale = np.full((t, 1), grid / SCALE_M, np.float32)
    out = np.concatenate([means, scale], axis=1)
    return l2_normalize(out.astype(np.float32))


def fuse(colour: NDArray[np.floating], depth: NDArray[np.floating], depth_weight: float = 1.0) -> NDArray[np.float32]:
    """(N, Dc) colour and (N, Dd) depth vectors -> (N, Dc + Dd): each part unit length (depth scaled by
    ``depth_weight``), concatenated, normalised again. Frames (early fusion) or segment vectors (late fusion).

    Raises:
        ShapeError: not two 2-D arrays with the same number of rows.
    """
    c, d = np.asarray(colour, np.float32), np.asarray(depth, np.float32)
    if c.ndim != 2 or d.ndim != 2 or len(c) != len(d):
        raise ShapeError(f"expected (N, Dc) colour and (N, Dd) depth vectors, got {c.shape} and {d.shape}")
    return l2_normalize(np.concatenate([l2_normalize(c), depth_weight * l2_normalize(d)], axis=1))
