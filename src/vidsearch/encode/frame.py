"""Frame encoders run in ONNX Runtime, and :func:`load_encoder`, which loads any registered encoder by name.

Every encoder takes uint8 RGB images (N, H, W, 3) at its ``input_size`` and returns (N, dim)
float32 L2-normalised vectors. Normalisation of pixel values happens inside the ONNX graph, so
the decoder hands over the bytes swscale produced and nothing else touches them.
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from vidsearch.encode.onnx_session import default_threads, open_session
from vidsearch.encode.registry import ENCODERS, EncoderSpec, FrameEncoder, get
from vidsearch.encode.temporal import l2_normalize
from vidsearch.errors import EncoderError

log = logging.getLogger(__name__)

__all__ = ["SPECS", "FrameEncoder", "OnnxFrameEncoder", "default_threads", "load_encoder", "resolve_loader"]

# The registry is the one table of encoders; ``SPECS`` is its old name, kept for existing imports.
SPECS = ENCODERS


class OnnxFrameEncoder:
    """Runs an ONNX image model whose input is uint8 NHWC and whose output is (N, dim)."""

    def __init__(self, spec: EncoderSpec, model_path: Path, threads: int | None = None) -> None:
        self.name = spec.name
        self.dim = spec.dim
        self.input_size = spec.input_size
        self.model_path = Path(model_path)
        self._session = open_session(model_path, threads, fix="reinstall the package that ships it")
        self._input = self._session.get_inputs()[0].name
        self._lock = threading.Lock()

    def encode(self, images: NDArray[np.uint8]) -> NDArray[np.float32]:
        """Encode (N, H, W, 3) uint8 RGB images at ``input_size``; returns (N, dim) float32, L2-normalised."""
        w, h = self.input_size
        if images.ndim != 4 or images.shape[1:] != (h, w, 3) or images.dtype != np.uint8:
            raise EncoderError(
                f"{self.name} expects uint8 images of shape (N, {h}, {w}, 3), got {images.dtype} {images.shape}"
            )
        if len(images) == 0:
            return np.zeros((0, self.dim), np.float32)
        with self._lock:  # an InferenceSession is thread-safe, but two runs would fight for 2 cores
            out = self._session.run(None, {self._input: np.ascontiguousarray(images)})[0]
        return l2_normalize(np.asarray(out, dtype=np.float32).reshape(len(images), -1))


_CACHE: dict[tuple[str, str], FrameEncoder] = {}
_CACHE_LOCK = threading.Lock()


def load_encoder(name: str, variant: str | None = None) -> FrameEncoder:
    """Load (once per process) the named frame encoder, through the registry.

    Args:
        name: a registered encoder (:func:`vidsearch.encode.registry.encoder_names`: ``sscd``,
            ``sscd-distilled``, ``effnet-lite0``, ``effnet-lite0-pwa``).
        variant: the runtime, one of the spec's ``variants`` (None: its default, the first). For
            ``effnet-lite0`` the default is ``onnx-int8`` (static int8 with bias correction and a float stem:
            cosine to fp32 >= 0.99 on held-out real frames, ~2x fp32's images/s here; ``encode/effnet.py``),
            ``onnx`` the fp32 model. A collection records the variant it was made with
            (:class:`vidsearch.config.EncodeConfig`).

    Raises:
        ConfigError: unknown encoder or variant.
        EncoderError: the model cannot be loaded; when an optional dependency is missing the
            message names the pip extra that provides it.
    """
    spec = get(name)
    variant = spec.check_variant(variant)
    key = (name, variant)
    with _CACHE_LOCK:
        if key not in _CACHE:
            _CACHE[key] = resolve_loader(spec)(spec, variant)
        return _CACHE[key]


def resolve_loader(spec: EncoderSpec) -> Callable[[EncoderSpec, str], FrameEncoder]:
    """Import the encoder's module and return its loader (``spec.loader``, ``"module:function"``); loads no model."""
    module, _, function = spec.loader.partition(":")
    try:
        loader: Callable[[EncoderSpec, str], FrameEncoder] = getattr(importlib.import_module(module), function)
    except (ImportError, AttributeError) as exc:
        raise EncoderError(f"encoder {spec.name!r}: its loader {spec.loader!r} cannot be imported ({exc}); "
                           f"fix the registry line in vidsearch/encode/registry.py") from exc
    return loader
