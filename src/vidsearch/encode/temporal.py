"""Temporal aggregators: a window of frame vectors -> one segment vector.

- :class:`MeanPool` (the default): the mean of the frame vectors; blind to their order.
- :class:`OnnxTemporalModel`: a learned model (LSTM, hierarchical windowed attention) trained by
  ``vidsearch train`` (:mod:`vidsearch.train`, PyTorch) and exported to ONNX; run here with ONNX Runtime
  alone, so a core install (no PyTorch) indexes and searches with it. A window's frames are resampled to
  the model's fixed count (16) first (:func:`resample_frames`). The file records its kind, widths and
  the SHA-256 of its weights in the ONNX metadata (key :data:`METADATA_KEY`); a collection records the
  model's path and that hash (``EncodeConfig.temporal_model``, ``temporal_hash``) and refuses another model.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from numpy.typing import NDArray

from vidsearch.encode.onnx_session import open_session, read_description
from vidsearch.errors import ConfigError, EncoderError, ShapeError

if TYPE_CHECKING:
    from vidsearch.config import EncodeConfig

METADATA_KEY = "vidsearch.temporal"
"""ONNX ``metadata_props`` key of a temporal model's description (JSON, see :class:`TemporalModelInfo`)."""
MODEL_FORMAT = "vidsearch-temporal"
MODEL_FORMAT_VERSION = 1


class TemporalAggregator(Protocol):
    """Maps (F, D) frame vectors of one window to a (D',) L2-normalised segment vector."""

    name: str

    def output_dim(self, frame_dim: int) -> int: ...

    def aggregate(self, frames: NDArray[np.float32]) -> NDArray[np.float32]: ...


def l2_normalize(x: NDArray[np.float32], axis: int = -1) -> NDArray[np.float32]:
    """Divide by the L2 norm along ``axis`` (zero vectors stay zero)."""
    norm = np.linalg.norm(x, axis=axis, keepdims=True)
    return (x / np.maximum(norm, 1e-12)).astype(np.float32, copy=False)


def resample_frames(frames: NDArray[np.floating], count: int) -> NDArray[np.float32]:
    """(F, D) -> (count, D) float32: the frames nearest ``count`` evenly spaced times (frame centres), so
    longer windows are subsampled and shorter ones have frames repeated, order kept.

    Raises:
        ShapeError: not (F >= 1, D).
    """
    if frames.ndim != 2 or len(frames) == 0:
        raise ShapeError(f"expected (F, D) frame vectors with F >= 1, got shape {frames.shape}")
    n = len(frames)
    index = np.minimum(((np.arange(count) + 0.5) * n / count).astype(np.int64), n - 1)
    return np.asarray(frames[index], np.float32)


class MeanPool:
    """Mean of the window's frame vectors, L2-normalised."""

    name = "mean"

    def output_dim(self, frame_dim: int) -> int:
        return frame_dim

    def aggregate(self, frames: NDArray[np.float32]) -> NDArray[np.float32]:
        if frames.ndim != 2 or len(frames) == 0:
            raise ShapeError(f"expected (F, D) frame vectors with F >= 1, got shape {frames.shape}")
        return l2_normalize(frames.astype(np.float32).mean(axis=0))


@dataclass(frozen=True)
class TemporalModelInfo:
    """What a temporal model file says about itself.

    Attributes:
        path: the ONNX file.
        kind: ``lstm`` or ``attention``.
        dim: width of the frame vectors it takes and of the segment vectors it returns.
        frames: frames per window it takes (windows are resampled to this).
        weights_hash: SHA-256 (hex) of its weights (names, shapes and float32 values, in name order).
        meta: the whole description (training configuration, data, loss history).
        streams: the streams its frame vectors were fused with (:func:`vidsearch.encode.streams.describe`: ""
            none, ``flow``, ``depth``, ``flow+depth``): a collection indexed with the model computes the same.
    """

    path: Path
    kind: str
    dim: int
    frames: int
    weights_hash: str
    meta: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    streams: str = ""

    @property
    def name(self) -> str:
        """``kind@hash12``: names the model in results and in ``info``."""
        return f"{self.kind}@{self.weights_hash[:12]}"


def _session(path: Path, threads: int = 1) -> Any:
    if not path.is_file():
        raise ConfigError(f"{path}: no such temporal model file; train one with `vidsearch train --out {path}` "
                          "(or give the path of an existing one)")
    return open_session(path, threads, fix="expected a temporal model written by `vidsearch train`")


def _info_from_session(path: Path, session: Any) -> TemporalModelInfo:
    fix = "expected a temporal model written by `vidsearch train`"
    meta = read_description(path, session, key=METADATA_KEY, model_format=MODEL_FORMAT,
                            max_version=MODEL_FORMAT_VERSION, what="temporal model", fix=fix)
    kind, dim, frames, digest = meta.get("kind"), meta.get("dim"), meta.get("frames"), meta.get("weights_sha256")
    if not (isinstance(kind, str) and type(dim) is int and dim > 0 and type(frames) is int and frames > 0
            and isinstance(digest, str) and len(digest) == 64):
        raise EncoderError(f"{path}: expected kind, positive dim and frames and a 64-hex weights_sha256 in the "
                           f"metadata, found {kind!r}, {dim!r}, {frames!r}, {digest!r}; {fix}")
    inputs = session.get_inputs()
    if len(inputs) != 1 or list(inputs[0].shape[1:]) != [frames, dim]:
        raise EncoderError(f"{path}: expected one input of shape (batch, {frames}, {dim}), found "
                           f"{[tuple(i.shape) for i in inputs]}; {fix}")
    streams = meta.get("streams", "")
    if streams not in ("", "flow", "depth", "flow+depth"):
        raise EncoderError(f"{path}: expected streams '', 'flow', 'depth' or 'flow+depth' in the metadata, found "
                           f"{streams!r}; {fix}")
    return TemporalModelInfo(path, kind, dim, frames, digest, meta, streams)


def read_model_info(path: str | Path) -> TemporalModelInfo:
    """The description a temporal model file carries (kind, widths, weights hash, training record).

    Raises:
        ConfigError: no such file.
        EncoderError: not an ONNX temporal model written by ``vidsearch train``.
    """
    target = Path(path)
    return _info_from_session(target, _session(target))


class OnnxTemporalModel:
    """A learned temporal model run by ONNX Runtime (one intra-op thread: the model is small).

    Args:
        path: the ONNX file.
        expected_hash: the weights hash the collection was built with; another model is refused.

    Raises:
        ConfigError: missing file, or its weights are not the ones ``expected_hash`` names.
        EncoderError: not a temporal model written by ``vidsearch train``.
    """

    batch = 256  # windows per ONNX Runtime call

    def __init__(self, path: str | Path, expected_hash: str | None = None) -> None:
        self.path = Path(path)
        self._session = _session(self.path)
        self.info = _info_from_session(self.path, self._session)
        if expected_hash is not None and expected_hash != self.info.weights_hash:
            raise ConfigError(
                f"{self.path}: this temporal model's weights hash is {self.info.weights_hash[:16]}..., but the collection "
                f"was built with {expected_hash[:16]}... (another model, or one retrained since); put back the model "
                "the collection was built with, or index into a new collection with this one")
        self.name = self.info.name
        self._input = self._session.get_inputs()[0].name
        self._lock = threading.Lock()

    def output_dim(self, frame_dim: int) -> int:
        if frame_dim != self.info.dim:
            raise ShapeError(f"{self.path}: the temporal model takes {self.info.dim}-d frame vectors, the frame encoder "
                             f"gives {frame_dim}-d; train a model on frames of this encoder")
        return self.info.dim

    def aggregate(self, frames: NDArray[np.float32]) -> NDArray[np.float32]:
        """(F, D) frame vectors of one window -> (D,) float32 segment vector, L2-normalised."""
        return self.aggregate_many([frames])[0]

    def aggregate_many(self, windows: Sequence[NDArray[np.floating]]) -> NDArray[np.float32]:
        """Several windows, each (F_i, D), -> (N, D) float32, in ONNX Runtime calls of up to :attr:`batch` windows."""
        if not len(windows):
            return np.zeros((0, self.info.dim), np.float32)
        stacked = np.stack([resample_frames(np.asarray(w), self.info.frames) for w in windows])
        if stacked.shape[2] != self.info.dim:
            raise ShapeError(f"expected ({self.info.frames}, {self.info.dim}) windows for {self.path}, got frame "
                             f"vectors of width {stacked.shape[2]}")
        parts = []
        for i in range(0, len(stacked), self.batch):
            with self._lock:  # one run at a time per session, as the frame encoders do
                parts.append(self._session.run(None, {self._input: stacked[i : i + self.batch]})[0])
        return l2_normalize(np.concatenate(parts).astype(np.float32, copy=False))


def load_aggregator(name: str) -> TemporalAggregator:
    """A built-in aggregator by name (``mean``); learned models load with :func:`load_temporal`."""
    if name == "mean":
        return MeanPool()
    raise ConfigError(f"unknown temporal aggregator {name!r}; expected 'mean'")


def load_temporal(encode: EncodeConfig) -> TemporalAggregator:
    """The aggregator an encode configuration names: its learned model (``temporal_model``, checked against
    ``temporal_hash``) when it has one, else its built-in ``aggregator``."""
    if encode.temporal_model:
        return OnnxTemporalModel(encode.temporal_model, expected_hash=encode.temporal_hash)
    return load_aggregator(encode.aggregator)
