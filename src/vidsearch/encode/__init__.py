"""encode: pretrained frame encoders run in ONNX Runtime, and temporal aggregators that turn the
frame vectors of a window into one segment vector."""

from vidsearch.encode.frame import FrameEncoder, OnnxFrameEncoder, load_encoder
from vidsearch.encode.temporal import MeanPool, TemporalAggregator, load_aggregator

__all__ = ["FrameEncoder", "MeanPool", "OnnxFrameEncoder", "TemporalAggregator", "load_aggregator", "load_encoder"]
