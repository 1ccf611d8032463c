"""decode: read any common container/codec with PyAV (FFmpeg inside the wheel), sample frames
uniformly in time or key frames only, straight to the encoder's input size, and cut fixed
windows (segments). An image is a one-frame video."""

from vidsearch.decode.media import (
    IMAGE_EXTENSIONS,
    MediaInfo,
    SampledFrame,
    is_image_path,
    iter_frames,
    probe,
)
from vidsearch.decode.windows import Segment, make_segments

__all__ = [
    "IMAGE_EXTENSIONS",
    "MediaInfo",
    "SampledFrame",
    "Segment",
    "is_image_path",
    "iter_frames",
    "make_segments",
    "probe",
]
