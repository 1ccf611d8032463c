"""Fixed windows (segments) over sampled frame times."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from vidsearch.errors import ConfigError


@dataclass(frozen=True)
class Segment:
    """A window [start, end) in seconds covering frames ``frame_start:frame_end`` of the video."""

    start: float
    end: float
    frame_start: int
    frame_end: int


def make_segments(times: NDArray[np.float64], duration: float, window: float, stride: float) -> list[Segment]:
    """Cut windows of ``window`` seconds every ``stride`` seconds over sorted frame ``times``.

    Every frame belongs to at least one segment; a video shorter than one window (or an image)
    is one segment. Windows that would hold no frame are dropped.

    Args:
        times: (F,) float64 sorted frame times in seconds.
        duration: the video's duration in seconds (0 for an image).
        window: window length in seconds.
        stride: step between window starts in seconds.
    """
    if not (math.isfinite(window) and math.isfinite(stride) and window > 0 and stride > 0):
        raise ConfigError(f"window and stride must be finite and > 0 seconds, got window={window}, stride={stride}")
    if not math.isfinite(duration):
        raise ConfigError(f"duration must be a finite number of seconds, got {duration}")
    n = len(times)
    if n == 0:
        return []
    if n == 1 and duration <= 0:  # a still image: one instant
        return [Segment(0.0, 0.0, 0, 1)]
    end_of_video = max(float(duration), float(times[-1]) + 1e-3)
    if end_of_video <= window:
        return [Segment(0.0, round(end_of_video, 3), 0, n)]
    segments: list[Segment] = []
    start = 0.0
    while True:
        end = min(start + window, end_of_video)
        lo = int(np.searchsorted(times, start - 1e-6, side="left"))
        hi = int(np.searchsorted(times, end - 1e-6, side="left"))
        if hi > lo:
            segments.append(Segment(round(start, 3), round(end, 3), lo, hi))
        if start + window >= end_of_video - 1e-6:  # this window reaches the end: every frame is covered
            break
        start += stride
    return segments
