"""The extra streams a collection fuses with each frame vector: pixel motion (``EncodeConfig.motion``) and depth
(``EncodeConfig.depth``), the one place that decides their widths and how they join the frame vectors.

Fusion is :func:`vidsearch.encode.depth.fuse`'s, generalised to several parts: each part unit length (a stream's
rows already are; a missing one, e.g. no depth in a colour-only file, is zero), concatenated in the order frame
vector, flow, depth, normalised again. With one stream it is ``fuse(frames, stream)`` exactly, how the ``+flow``
(Moving Fashion-MNIST) and ``rgbd-early`` (synthetic RGB-D) models were trained.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from vidsearch.encode.temporal import l2_normalize
from vidsearch.errors import ConfigError, ShapeError

if TYPE_CHECKING:
    from vidsearch.config import EncodeConfig


def stream_dim(encode: EncodeConfig) -> int:
    """Width of the streams ``encode`` fuses with each frame vector (0 without any)."""
    from vidsearch.encode.depth import depth_dim
    from vidsearch.encode.motion import flow_dim

    return (flow_dim() if encode.motion == "flow" else 0) + (depth_dim() if encode.depth == "early" else 0)


def frame_dim(encode: EncodeConfig) -> int:
    """Width of a collection's stored frame vectors: the encoder's, plus its streams'."""
    from vidsearch.encode import registry

    return registry.get(encode.encoder).dim + stream_dim(encode)


def describe(encode: EncodeConfig) -> str:
    """``flow``, ``depth``, ``flow+depth`` or "" (none): what a temporal model records and a collection checks."""
    return "+".join(name for name, on in (("flow", encode.motion == "flow"), ("depth", encode.depth == "early")) if on)


def fields(streams: str) -> dict[str, str]:
    """The ``EncodeConfig`` fields (``motion``, ``depth``) that compute ``streams`` (:func:`describe`'s inverse)."""
    parts = set(streams.split("+"))
    return {"motion": "flow" if "flow" in parts else "", "depth": "early" if "depth" in parts else ""}


def check_streams(encode: EncodeConfig, model_streams: str | None = None, model: str = "the temporal model") -> None:
    """Fail early, before any file is decoded: the flow needs OpenCV; a temporal model (``model`` names it in the
    message) must have been trained on the streams ``encode`` computes (``model_streams``: what its file records).

    Raises:
        ConfigError: OpenCV missing for ``motion="flow"``, or the model's streams differ.
    """
    if encode.motion == "flow":
        try:
            import cv2  # noqa: F401
        except ImportError as exc:
            raise ConfigError("motion 'flow' needs OpenCV (the pixel-motion stream): pip install 'vidsearch[eval]'") \
                from exc
    if model_streams is not None and model_streams != describe(encode):
        raise ConfigError(f"{model} was trained on frame vectors fused with {model_streams or 'no'} stream(s), not "
                          f"{describe(encode) or 'none'}; index with the model's streams (vidsearch index --temporal "
                          "sets them: drop --motion/--depth) or train a model on a collection made with them")


def fuse_streams(vectors: NDArray[np.float32], streams: NDArray[np.float32] | None) -> NDArray[np.float32]:
    """(F, D) frame (or region) vectors joined with the (F, M) rows of their frames' streams (unit-length parts,
    or zero), normalised again; an all-zero row of ``vectors`` (a region slot with no inset) stays zero.
    ``streams`` None: ``vectors`` unchanged. A crop or inset region gets its whole frame's streams.

    Raises:
        ShapeError: not one stream row per vector.
    """
    if streams is None:
        return vectors
    if len(vectors) != len(streams):
        raise ShapeError(f"expected one row of streams per frame vector, got {len(streams)} for {len(vectors)}")
    fused = l2_normalize(np.concatenate([l2_normalize(np.asarray(vectors, np.float32)), streams], axis=1))
    fused[~np.any(vectors != 0, axis=1)] = 0.0
    return fused
