"""encode: pretrained frame encoders run in ONNX Runtime, and temporal aggregators that turn the
frame vectors of a window into one segment vector.

Encoders are chosen by name from one table, :mod:`vidsearch.encode.registry`. Names are imported on
first use, so ``import vidsearch.encode.registry`` (which ``vidsearch.config`` does) stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the same names, for type checkers (at run time they load on first use)
    from vidsearch.encode.frame import OnnxFrameEncoder, load_encoder
    from vidsearch.encode.registry import EncoderSpec, FrameEncoder, encoder_names
    from vidsearch.encode.temporal import MeanPool, TemporalAggregator, load_aggregator

__all__ = [
    "EncoderSpec",
    "FrameEncoder",
    "MeanPool",
    "OnnxFrameEncoder",
    "TemporalAggregator",
    "encoder_names",
    "load_aggregator",
    "load_encoder",
]

_WHERE = {
    "EncoderSpec": "vidsearch.encode.registry",
    "encoder_names": "vidsearch.encode.registry",
    "FrameEncoder": "vidsearch.encode.registry",
    "OnnxFrameEncoder": "vidsearch.encode.frame",
    "load_encoder": "vidsearch.encode.frame",
    "MeanPool": "vidsearch.encode.temporal",
    "TemporalAggregator": "vidsearch.encode.temporal",
    "load_aggregator": "vidsearch.encode.temporal",
}


def __getattr__(name: str) -> Any:  # lazy: importing the registry must not pull numpy or ONNX Runtime
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'vidsearch.encode' has no attribute {name!r}")
