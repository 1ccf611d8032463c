"""Temporal aggregators: a window of frame vectors -> one segment vector.

Later work adds learned models (LSTM, temporal attention, seq2seq) behind the same interface.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from vidsearch.errors import ConfigError, ShapeError


class TemporalAggregator(Protocol):
    """Maps (F, D) frame vectors of one window to a (D',) L2-normalised segment vector."""

    name: str

    def output_dim(self, frame_dim: int) -> int: ...

    def aggregate(self, frames: NDArray[np.float32]) -> NDArray[np.float32]: ...


def l2_normalize(x: NDArray[np.float32], axis: int = -1) -> NDArray[np.float32]:
    """Divide by the L2 norm along ``axis`` (zero vectors stay zero)."""
    norm = np.linalg.norm(x, axis=axis, keepdims=True)
    return (x / np.maximum(norm, 1e-12)).astype(np.float32, copy=False)


class MeanPool:
    """Mean of the window's frame vectors, L2-normalised."""

    name = "mean"

    def output_dim(self, frame_dim: int) -> int:
        return frame_dim

    def aggregate(self, frames: NDArray[np.float32]) -> NDArray[np.float32]:
        if frames.ndim != 2 or len(frames) == 0:
            raise ShapeError(f"expected (F, D) frame vectors with F >= 1, got shape {frames.shape}")
        return l2_normalize(frames.astype(np.float32).mean(axis=0))


def load_aggregator(name: str) -> TemporalAggregator:
    if name == "mean":
        return MeanPool()
    raise ConfigError(f"unknown temporal aggregator {name!r}; expected 'mean'")
