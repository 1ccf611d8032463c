"""Temporal-network localisation (Tan et al. 2009, "Scalable detection of partial near-duplicate videos by
visual-temporal consistency"; the TN aligner VCSL compares with DTW, DP and Hough voting).

The nodes are the candidate matches (query segment i, reference segment j): the ``top_k`` reference segments
most similar to each query segment, at least ``min_sim``. An edge joins (i, j) to (i', j') when both move forward
by fewer than ``max_step`` segments (a copy may skip, slow down or speed up); a path's weight is the sum of its
nodes' similarities. The heaviest path is a copied run; its nodes are removed and the next heaviest path found,
up to ``max_paths``; a path becomes a match (query and reference ranges, mean similarity) when it spans at least
``min_length`` segments on both sides and overlaps no kept match by ``max_iou`` or more.

The heaviest path of this DAG is found by dynamic programming over the nodes in query order (numba, as
``align.py``'s DTW), which is what VCSL's networkx ``dag_longest_path`` computes; its edge pruning ("no
intermediate match", their C3) only shrinks the graph and is not needed here. Forward in time only: reversed
copies are Bi-DTW's case.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit
from numpy.typing import NDArray

from vidsearch.errors import ConfigError


@dataclass(frozen=True)
class TNParams:
    """How the temporal network is built and read (segments, cosines). ``min_sim`` 0.1 is for the normalised
    similarities the re-rank gives it (each less half its background; 0.3 / 0.2 / 0.1 measured on the VSC-style
    small size: segment micro-AP 0.517 / 0.582 / 0.593); raw cosines want about 0.3."""

    top_k: int = 5
    max_step: int = 5
    min_sim: float = 0.1
    min_length: int = 1
    max_paths: int = 10
    max_iou: float = 0.3

    def __post_init__(self) -> None:
        if self.top_k < 1 or self.max_step < 2 or self.min_length < 0 or self.max_paths < 1 or not 0 < self.max_iou <= 1:
            raise ConfigError(f"expected top_k >= 1, max_step >= 2, min_length >= 0, max_paths >= 1, 0 < max_iou <= 1; "
                              f"got {self}")


@dataclass(frozen=True)
class TNMatch:
    """A localised copy: query segments ``q0..q1`` and reference segments ``r0..r1`` (inclusive), the mean
    similarity of its path, and the path's length in nodes."""

    q0: int
    q1: int
    r0: int
    r1: int
    score: float
    nodes: int


@njit(cache=True, nogil=True)
def _heaviest_path(q: NDArray[np.int64], r: NDArray[np.int64], s: NDArray[np.float32], alive: NDArray[np.bool_],
                   top_k: int, max_step: int) -> NDArray[np.int64]:
    """Node indices of the heaviest forward path among the alive nodes (node a is row q[a] // rank; rows of
    ``top_k`` nodes in query order); empty when no node is alive."""
    n = len(q)
    best = np.full(n, -np.inf)
    prev = np.full(n, -1, np.int64)
    for a in range(n):
        if not alive[a]:
            continue
        best[a] = s[a]
        lo = max(0, (q[a] - max_step + 1) * top_k)
        for b in range(lo, q[a] * top_k):  # the nodes of the max_step - 1 rows before
            if alive[b] and 0 < r[a] - r[b] < max_step and best[b] + s[a] > best[a]:
                best[a] = best[b] + s[a]
                prev[a] = b
    end = -1
    for a in range(n):
        if alive[a] and (end < 0 or best[a] > best[end]):
            end = a
    if end < 0:
        return np.zeros(0, np.int64)
    path = []
    while end >= 0:
        path.append(end)
        end = prev[end]
    out = np.empty(len(path), np.int64)
    for i in range(len(path)):
        out[i] = path[len(path) - 1 - i]
    return out


def _iou(a: TNMatch, b: TNMatch) -> float:
    """Overlap of two matches as boxes in the (query, reference) plane."""
    w = min(a.q1, b.q1) - max(a.q0, b.q0) + 1
    h = min(a.r1, b.r1) - max(a.r0, b.r0) + 1
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    area = (a.q1 - a.q0 + 1) * (a.r1 - a.r0 + 1) + (b.q1 - b.q0 + 1) * (b.r1 - b.r0 + 1) - inter
    return inter / area


def temporal_network(sims: NDArray[np.floating], params: TNParams = TNParams()) -> list[TNMatch]:
    """The copies a (query segments x reference segments) similarity matrix shows, best first.

    Raises:
        ConfigError: ``sims`` is not 2-D.
    """
    m = np.asarray(sims, np.float32)
    if m.ndim != 2:
        raise ConfigError(f"expected a (query, reference) similarity matrix, got shape {m.shape}")
    if m.size == 0:
        return []
    k, n_rows = min(params.top_k, m.shape[1]), m.shape[0]
    top = np.argsort(-m, axis=1, kind="stable")[:, :k]
    # top_k nodes a row (dead padding where the reference is shorter), so that node // top_k is its row
    pad = params.top_k - k
    q = np.repeat(np.arange(n_rows, dtype=np.int64), params.top_k)
    r = np.concatenate([top, np.zeros((n_rows, pad), np.int64)], axis=1).ravel().astype(np.int64)
    s = np.concatenate([np.take_along_axis(m, top, axis=1), np.full((n_rows, pad), -np.inf, np.float32)],
                       axis=1).ravel()
    alive = s >= params.min_sim
    kept: list[TNMatch] = []
    for _ in range(params.max_paths):
        if not alive.any():
            break
        path = _heaviest_path(q, r, s, alive, params.top_k, params.max_step)
        if len(path) == 0:
            break
        alive[path] = False
        qs, rs = q[path], r[path]
        found = TNMatch(int(qs.min()), int(qs.max()), int(rs.min()), int(rs.max()), float(s[path].mean()), len(path))
        if (found.q1 - found.q0 >= params.min_length and found.r1 - found.r0 >= params.min_length
                and all(_iou(found, other) < params.max_iou for other in kept)):
            kept.append(found)
    kept.sort(key=lambda t: (-t.score, t.q0, t.r0))
    return kept
