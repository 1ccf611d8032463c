"""decode: read any common container/codec with PyAV (FFmpeg inside the wheel), sample frames
uniformly in time or key frames only (decoding only the frames the sampler takes and those they are
predicted from), straight to the encoder's input size, and cut fixed windows (segments); ``prefetch``
decodes in a thread ahead of the encoder. An image is a one-frame video."""

from vidsearch.decode.media import (
    IMAGE_EXTENSIONS,
    LOOP_FILTER_SKIPS,
    DecodeStats,
    MediaInfo,
    SampledFrame,
    is_image_path,
    iter_frames,
    probe,
)
from vidsearch.decode.windows import Segment, make_segments

__all__ = [
    "IMAGE_EXTENSIONS",
    "LOOP_FILTER_SKIPS",
    "DecodeStats",
    "MediaInfo",
    "SampledFrame",
    "Segment",
    "is_image_path",
    "iter_frames",
    "make_segments",
    "probe",
]
