"""Probing and frame sampling with PyAV; images through Pillow.

Frames are converted to RGB only when sampled, and straight to the encoder's input size in one
swscale call (``VideoFrame.reformat``), so a 4K or 8K video never holds more than the decoder's
own current frame at full size.
"""

from __future__ import annotations

import logging
import math
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np
from numpy.typing import NDArray

from vidsearch.errors import ConfigError, DecodeError

if TYPE_CHECKING:  # PyAV is imported when a file is read
    from av.container import InputContainer
    from av.video.stream import VideoStream

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".psd", ".jfif"})
"""File endings read as still images (one-frame videos). Animated GIFs are read as videos."""

# Give up on a file when this many packets in a row fail to decode (corrupt data).
_MAX_CONSECUTIVE_PACKET_ERRORS = 200


@dataclass(frozen=True)
class MediaInfo:
    """What :func:`probe` learns about a file without decoding it.

    ``duration`` is in seconds (0 for an image); ``fps`` is the stream's average frame rate
    (0 when unknown or for an image).
    """

    path: str
    duration: float
    fps: float
    width: int
    height: int
    codec: str
    container: str
    is_image: bool


@dataclass(frozen=True)
class SampledFrame:
    """One sampled frame: ``time`` in seconds from the start, ``image`` uint8 RGB (H, W, 3)."""

    time: float
    image: NDArray[np.uint8]


def is_image_path(path: str | os.PathLike[str]) -> bool:
    """True when the file ending says still image."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def _check_file(path: Path) -> None:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise DecodeError(f"{path}: no such file; check the path") from None
    except OSError as exc:  # name too long, permission denied on a folder, a loop of links...
        raise DecodeError(f"{path}: cannot read the file ({exc.strerror or exc}); check the path and its permissions") from exc
    if not stat.S_ISREG(st.st_mode):
        kind = "directory" if stat.S_ISDIR(st.st_mode) else "special file"
        raise DecodeError(f"{path}: expected a regular file (a video or an image), found a {kind}")
    if st.st_size == 0:
        raise DecodeError(f"{path}: the file is empty (0 bytes); expected a video or an image")


def _open_container(path: Path) -> InputContainer:
    import av

    try:
        return av.open(str(path), mode="r", metadata_errors="ignore")
    except av.error.FFmpegError as exc:
        raise DecodeError(
            f"{path}: not a readable video or image ({exc.__class__.__name__}: {exc}); "
            "expected a common container such as mp4, mkv, avi, webm, mov"
        ) from exc


def _video_stream(container: InputContainer, path: Path) -> VideoStream:
    streams = [s for s in container.streams.video]
    # Cover art is a video stream with one attached picture; prefer real video streams.
    real = [s for s in streams if not (s.disposition & 0x400)] if streams else []  # AV_DISPOSITION_ATTACHED_PIC
    chosen = real or streams
    if not chosen:
        kinds: list[str] = sorted({s.type for s in container.streams}) or ["none"]
        raise DecodeError(f"{path}: no video stream (found stream types: {', '.join(kinds)}); expected a video file")
    # A damaged header can leave a video stream without a codec (PyAV gives no codec context).
    decodable = [s for s in chosen if s.codec_context is not None]
    if not decodable:
        raise DecodeError(
            f"{path}: the video stream has no known codec (found none); the file may be corrupt, "
            "expected a video with a common codec such as h264, hevc, vp9, mpeg4"
        )
    return decodable[0]


def probe(path: str | os.PathLike[str]) -> MediaInfo:
    """Read duration, frame rate, size and codec from the container headers.

    Raises:
        DecodeError: the file is missing, empty, unreadable or has no video stream.
    """
    p = Path(path)
    _check_file(p)
    if is_image_path(p):
        width, height = _image_size(p)
        return MediaInfo(str(p), 0.0, 0.0, width, height, "image", p.suffix.lower().lstrip("."), True)
    with _open_container(p) as container:
        stream = _video_stream(container, p)
        duration = 0.0
        if container.duration:
            duration = container.duration / 1_000_000
        elif stream.duration and stream.time_base:
            duration = float(stream.duration * stream.time_base)
        rate = stream.average_rate or stream.base_rate or 0
        return MediaInfo(
            path=str(p),
            duration=float(duration),
            fps=float(rate),
            width=int(stream.codec_context.width),
            height=int(stream.codec_context.height),
            codec=stream.codec_context.name,
            container=container.format.name,
            is_image=False,
        )


def _image_size(path: Path) -> tuple[int, int]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return int(img.width), int(img.height)
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise DecodeError(f"{path}: not a readable image ({exc}); expected jpg, png, webp, bmp or tiff") from exc


def _read_image(path: Path, size: tuple[int, int]) -> NDArray[np.uint8]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            # JPEG draft mode decodes at 1/2, 1/4 or 1/8 scale: a huge photo is never fully decoded.
            img.draft("RGB", (size[0] * 2, size[1] * 2))
            rgb = img.convert("RGB").resize(size, Image.Resampling.BILINEAR)
            return np.asarray(rgb, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise DecodeError(f"{path}: not a readable image ({exc}); expected jpg, png, webp, bmp or tiff") from exc


def iter_frames(
    path: str | os.PathLike[str],
    size: tuple[int, int],
    fps: float = 1.0,
    keyframes_only: bool = False,
) -> Iterator[SampledFrame]:
    """Yield frames sampled uniformly at ``fps`` (by presentation time), resized to ``size``.

    Args:
        path: a video or image file.
        size: (width, height) of the images yielded, normally the encoder's input size.
        fps: frames per second to keep; the first frame at or after each multiple of 1/fps is kept.
        keyframes_only: decode key frames only (much faster, coarser); ``fps`` still caps the rate.

    Yields:
        SampledFrame with ``time`` in seconds from the first frame and a (H, W, 3) uint8 image.

    Raises:
        DecodeError: the file cannot be opened, has no video stream, or yields no decodable frame.
    """
    import av

    if not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
        raise ConfigError(f"fps must be a finite number of frames per second > 0, got {fps!r}; e.g. fps=1")
    if len(size) != 2 or min(size) < 1:
        raise ConfigError(f"size must be (width, height) in pixels, both >= 1, got {size!r}")
    p = Path(path)
    _check_file(p)
    if is_image_path(p):
        yield SampledFrame(0.0, _read_image(p, size))
        return
    width, height = size
    period = 1.0 / fps
    with _open_container(p) as container:
        stream = _video_stream(container, p)
        stream.thread_type = "AUTO"
        if keyframes_only:
            stream.codec_context.skip_frame = "NONKEY"
        rate = float(stream.average_rate or stream.base_rate or 25.0)
        next_time = 0.0
        origin: float | None = None
        index = 0
        produced = 0
        failures = consecutive = 0
        last_error: Exception | None = None
        try:
            packets = container.demux(stream)
            for packet in packets:
                try:
                    frames = packet.decode()
                    consecutive = 0
                except av.error.FFmpegError as exc:  # corrupt packet: skip it, keep decoding
                    failures += 1
                    consecutive += 1
                    last_error = exc
                    if consecutive >= _MAX_CONSECUTIVE_PACKET_ERRORS:
                        break
                    continue
                for frame in frames:
                    t = frame.time
                    if t is None:  # raw elementary streams carry no timestamps
                        t = index / rate
                    index += 1
                    if origin is None:
                        origin = t
                    t -= origin
                    if t + 1e-6 < next_time:
                        continue
                    rgb = frame.reformat(width=width, height=height, format="rgb24")
                    image = cast("NDArray[np.uint8]", rgb.to_ndarray())  # rgb24: uint8
                    produced += 1
                    yield SampledFrame(float(t), image)
                    next_time = max(next_time + period, t + period * 0.5)
        except av.error.FFmpegError as exc:
            failures += 1
            last_error = exc
        if failures:
            log.warning("%s: %d packet(s) failed to decode (last: %s)", p, failures, last_error)
        if produced == 0:
            detail = f" ({failures} packet errors, last: {last_error})" if failures else ""
            raise DecodeError(f"{p}: no decodable video frame{detail}; the file may be truncated or corrupt")
