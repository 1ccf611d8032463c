"""The learned sequence comparator (ViSiL-style): a small CNN over a query-by-reference similarity matrix.

ViSiL (Kordopatis-Zilos et al., ICCV 2019) refines the frame-to-frame similarity matrix of two videos
with a few convolutions, so that the diagonal bands a copy draws are kept and the scattered bright
cells of look-alike footage are not, then scores the pair by Chamfer similarity (the mean of the row
maxima of the refined map). Here:

- the rows and columns are the query's and the reference's **segments** (the engine's re-rank stage
  holds segment vectors: 2 s windows every second by default, so one row per second, as ViSiL's
  1 fps frames); each query segment's similarity is its best over the whole frame and the detected
  insets or crops (as ``rerank="exact"``; blank regions excluded);
- the CNN sees three channels per cell (:func:`pair_features`): the raw cosine; the cosine minus the
  query segment's background (its ``background_rank``-th best cosine over the segments of *all* the
  candidates, a CSLS-style correction as the engine's score normalisation, taken among the
  look-alikes the vote found); and the cosine minus the reference segment's mean over the query's
  segments (a reference segment that resembles everything, a dark or static shot, stands out less);
- its output is a map of probabilities in [0, 1] (cell = "these two segments show the same
  content"), trained on the engine's own candidates of a training set (``vidsearch.train.comparator``);
- a pair's score is the mean of its ``top_rows`` largest row maxima (Chamfer over the rows that hold
  the copy: a copy fills 2-15 s of a query of 10-45 s, so a mean over every row would rank by copy
  length); a matched range's score is the same reading inside the range's rows and columns.

The model is an ONNX file run by ONNX Runtime (a core install needs no PyTorch); it describes itself in
its metadata (key :data:`METADATA_KEY`: format, channels, background rank, top rows, the SHA-256 of its
weights, its training record), as the temporal models do (``encode/temporal.py``).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from vidsearch.encode.onnx_session import open_session, read_description
from vidsearch.errors import ConfigError, EncoderError, ShapeError

METADATA_KEY = "vidsearch.comparator"
"""ONNX ``metadata_props`` key of a comparator's description (JSON, see :class:`ComparatorInfo`)."""
MODEL_FORMAT = "vidsearch-comparator"
MODEL_FORMAT_VERSION = 1
CHANNELS = 3
"""Input channels per cell (:func:`pair_features`)."""
INPUT_NAME = "features"
OUTPUT_NAME = "map"


def default_path() -> Path:
    """Where ``rerank="learned"`` finds its model when none is named: ``$VIDSEARCH_COMPARATOR``, else
    ``$VIDSEARCH_CACHE/models/comparator.onnx`` (default cache ``~/.cache/vidsearch``)."""
    named = os.environ.get("VIDSEARCH_COMPARATOR")
    if named:
        return Path(named)
    root = os.environ.get("VIDSEARCH_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "vidsearch")
    return Path(root) / "models" / "comparator.onnx"


def similarity_matrix(query: NDArray[np.float32], reference: NDArray[np.float32],
                      regions: Sequence[NDArray[np.float32]] = (),
                      region_blank: Sequence[NDArray[np.bool_]] | None = None,
                      background: Sequence[NDArray[np.float32]] | None = None) -> NDArray[np.float32]:
    """(n, m) cosine of every query segment with every reference segment, each query segment at its best
    over the whole frame and its ``regions`` (blank ones, ``region_blank``, left out). The one place for this
    map: the comparator, its training and the re-ranks (``exact``, ``tn``) use it.

    Args:
        query: (n, d) L2-normalised query segment vectors.
        reference: (m, d) L2-normalised reference segment vectors.
        regions: each (n, d): the same segments' vectors of one crop or inset slot.
        region_blank: each (n,) bool: the region is blank in that segment.
        background: (n,) for the whole frame, then one per region: subtracted from each row before the best is
            taken (score normalisation, as the votes get it); None: raw cosines.
    """
    if query.ndim != 2 or reference.ndim != 2 or query.shape[1] != reference.shape[1]:
        raise ShapeError(f"expected (n, d) query and (m, d) reference vectors of one width, got {query.shape} and "
                         f"{reference.shape}")
    sims = np.asarray(query @ reference.T, np.float32)
    if background is not None:
        sims -= background[0][:, None]
    for r, region in enumerate(regions):
        rs = np.asarray(region @ reference.T, np.float32)
        if background is not None:
            rs -= background[r + 1][:, None]
        if region_blank is not None:
            rs[region_blank[r]] = -np.inf
        np.maximum(sims, rs, out=sims)
    return sims


def pair_features(sims: Sequence[NDArray[np.float32]], background_rank: int = 30) -> list[NDArray[np.float32]]:
    """The comparator's input for each candidate of one query: (3, n, m_i) float32 per (n, m_i) matrix.

    Channels: raw cosine; cosine minus the query segment's background (its ``background_rank``-th best
    cosine over the columns of *all* the matrices: the candidates together); cosine minus the
    reference segment's mean cosine over the query's segments.

    Raises:
        ShapeError: no matrix, or matrices with different row counts.
    """
    if not len(sims) or any(s.ndim != 2 or s.shape[0] != sims[0].shape[0] or s.shape[0] == 0 for s in sims):
        raise ShapeError(f"expected (n, m_i) matrices with one n >= 1, got shapes {[s.shape for s in sims]}")
    every = np.concatenate(sims, axis=1)
    k = min(max(1, background_rank), every.shape[1])
    background = np.partition(every, every.shape[1] - k, axis=1)[:, every.shape[1] - k]
    out = []
    for s in sims:
        x = np.empty((CHANNELS, *s.shape), np.float32)
        x[0] = s
        x[1] = s - background[:, None]
        x[2] = s - s.mean(axis=0, keepdims=True)
        out.append(x)
    return out


def top_rows_score(prob: NDArray[np.float32], top_rows: int) -> float:
    """A pair's score from its (n, m) refined map: the mean of the ``top_rows`` largest row maxima (all rows
    when fewer). 0.0 for an empty map."""
    if prob.size == 0:
        return 0.0
    rows = prob.max(axis=1)
    k = min(max(1, top_rows), len(rows))
    return float(np.partition(rows, len(rows) - k)[len(rows) - k :].mean())


@dataclass(frozen=True)
class ComparatorInfo:
    """What a comparator file says about itself.

    Attributes:
        path: the ONNX file.
        channels: input channels (:data:`CHANNELS`).
        background_rank: the rank of the background cosine of :func:`pair_features`.
        top_rows: rows a pair's score averages (:func:`top_rows_score`).
        weights_hash: SHA-256 (hex) of its weights (names, shapes and float32 values, in name order).
        meta: the whole description (training configuration, data, loss history).
    """

    path: Path
    channels: int
    background_rank: int
    top_rows: int
    weights_hash: str
    meta: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def name(self) -> str:
        """``comparator@hash12``."""
        return f"comparator@{self.weights_hash[:12]}"


def _session(path: Path) -> Any:
    if not path.is_file():
        raise ConfigError(f"{path}: no such comparator model file; train one (`vidsearch train --model comparator`, "
                          "which writes it here by default) or name an existing one (--comparator, "
                          "$VIDSEARCH_COMPARATOR, or SearchParams.comparator)")
    return open_session(path, 1, fix="expected a comparator written by vidsearch.train.comparator.export_comparator")


def _info(path: Path, session: Any) -> ComparatorInfo:
    fix = "expected a comparator written by vidsearch.train.comparator.export_comparator"
    meta = read_description(path, session, key=METADATA_KEY, model_format=MODEL_FORMAT,
                            max_version=MODEL_FORMAT_VERSION, what="comparator", fix=fix)
    channels, rank, top, digest = (meta.get("channels"), meta.get("background_rank"), meta.get("top_rows"),
                                   meta.get("weights_sha256"))
    if not (channels == CHANNELS and type(rank) is int and rank > 0 and type(top) is int and top > 0
            and isinstance(digest, str) and len(digest) == 64):
        raise EncoderError(f"{path}: expected channels {CHANNELS}, positive background_rank and top_rows and a "
                           f"64-hex weights_sha256 in the metadata, found {channels!r}, {rank!r}, {top!r}, {digest!r}; "
                           f"{fix}")
    inputs = session.get_inputs()
    if len(inputs) != 1 or inputs[0].name != INPUT_NAME or len(inputs[0].shape) != 4 or inputs[0].shape[1] != CHANNELS:
        raise EncoderError(f"{path}: expected one input {INPUT_NAME!r} of shape (1, {CHANNELS}, n, m), found "
                           f"{[(i.name, tuple(i.shape)) for i in inputs]}; {fix}")
    return ComparatorInfo(path, channels, rank, top, digest, meta)


class OnnxComparator:
    """A trained comparator run by ONNX Runtime (one intra-op thread: the model is small).

    Args:
        path: the ONNX file.

    Raises:
        ConfigError: no such file.
        EncoderError: not a comparator written by ``vidsearch.train.comparator.export_comparator``.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._session = _session(self.path)
        self.info = _info(self.path, self._session)
        self.name = self.info.name
        self._lock = threading.Lock()

    def refine(self, features: NDArray[np.float32]) -> NDArray[np.float32]:
        """(3, n, m) features of one pair (:func:`pair_features`) -> (n, m) float32 map of probabilities."""
        if features.ndim != 3 or features.shape[0] != CHANNELS or 0 in features.shape:
            raise ShapeError(f"expected ({CHANNELS}, n, m) features with n, m >= 1, got {features.shape}")
        x = np.ascontiguousarray(features[None], np.float32)
        with self._lock:  # one run at a time per session, as the encoders do
            out = self._session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]
        return np.asarray(out[0], np.float32)

    def compare(self, query: NDArray[np.float32], references: Sequence[NDArray[np.float32]],
                regions: Sequence[NDArray[np.float32]] = (),
                region_blank: Sequence[NDArray[np.bool_]] | None = None) -> list[NDArray[np.float32]]:
        """The refined (n, m_i) map of ``query`` (n, d) against each reference's (m_i, d) segment vectors (the
        candidates of one query together: the background channel is taken over all of them)."""
        sims = [similarity_matrix(query, r, regions, region_blank) for r in references]
        return [self.refine(x) for x in pair_features(sims, self.info.background_rank)]


_LOADED: dict[tuple[str, int, int], OnnxComparator] = {}
_LOADED_LOCK = threading.Lock()


def load_comparator(path: str | os.PathLike[str] | None = None) -> OnnxComparator:
    """The comparator at ``path`` (None: :func:`default_path`), loaded once per process and file version
    (path, size, modification time): a search does not reload it.

    Raises:
        ConfigError: no such file.
        EncoderError: not a comparator.
    """
    target = Path(path) if path is not None else default_path()
    try:
        st = target.stat()
    except OSError:
        return OnnxComparator(target)  # raises the ConfigError that says what to do
    key = (str(target.resolve()), st.st_size, st.st_mtime_ns)
    with _LOADED_LOCK:
        model = _LOADED.get(key)
        if model is None:
            model = OnnxComparator(target)
            if len(_LOADED) >= 8:
                _LOADED.clear()
            _LOADED[key] = model
    return model
