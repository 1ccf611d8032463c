"""Depth alongside colour (RGB-D recordings): read and write the depth frames of a clip.

Two layouts, as RGB-D recorders and data sets store them:

- **a folder of 16-bit PNG files**, one depth frame per file in name order, values in millimetres, 0 where the
  sensor had no reading (the TUM RGB-D and NYU Depth conventions); the frame rate is given (``fps``), or the file
  names carry the times in seconds (``1305031102.160407.png``, TUM's), which are then used.
- **a video file with a separate depth stream**: a video stream whose title or handler names it depth, or whose
  pixel format is 16-bit grey (``gray16le`` / ``gray16be``): FFV1 lossless as :func:`write_rgbd` writes it, or the
  raw ``b16g`` track of Azure Kinect's recorder (MKV, titled ``DEPTH``). The colour stream of such a file is the
  first other video stream; :mod:`vidsearch.decode.media` never takes a depth stream for colour.

PyAV (FFmpeg) reads and writes both streams and Pillow the PNG files; only the choice of stream and the pairing
of depth frames with colour frames by time are written here.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from vidsearch.errors import DecodeError, ShapeError

DEPTH_PIX_FMTS = frozenset({"gray16le", "gray16be"})
"""Pixel formats taken for depth: 16-bit grey (millimetres)."""

_DEPTH_TITLE = re.compile(r"depth", re.IGNORECASE)
_TIME_NAME = re.compile(r"^(\d+(?:\.\d+)?)$")


@dataclass(frozen=True)
class DepthFrames:
    """Depth frames of a clip.

    Attributes:
        times: (T,) float64 seconds of each frame, increasing.
        depth: (T, H, W) uint16 millimetres; 0 = no reading.
        source: where they were read from (a folder or ``FILE#stream N``).
    """

    times: NDArray[np.float64]
    depth: NDArray[np.uint16]
    source: str

    def __len__(self) -> int:
        return len(self.times)

    def at(self, times: Sequence[float] | NDArray[np.floating]) -> NDArray[np.uint16]:
        """(len(times), H, W): for each time the depth frame nearest to it (colour and depth frames of a
        recorder are not captured at exactly the same instants)."""
        t = np.asarray(times, np.float64)
        right = np.clip(np.searchsorted(self.times, t), 0, len(self.times) - 1)
        left = np.clip(right - 1, 0, len(self.times) - 1)
        nearest = np.where(np.abs(self.times[left] - t) <= np.abs(self.times[right] - t), left, right)
        return self.depth[nearest]


def is_depth_stream(stream: Any) -> bool:
    """Whether a PyAV video stream carries depth: titled or handled as depth, or 16-bit grey."""
    meta = dict(getattr(stream, "metadata", {}) or {})
    names = " ".join(str(meta.get(k, "")) for k in ("title", "handler_name", "TITLE", "HANDLER_NAME"))
    if _DEPTH_TITLE.search(names):
        return True
    ctx = getattr(stream, "codec_context", None)
    return ctx is not None and getattr(ctx, "pix_fmt", None) in DEPTH_PIX_FMTS


def _depth_stream(container: Any) -> Any | None:
    return next((s for s in container.streams.video if is_depth_stream(s)), None)


def has_depth(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` has depth: a folder holding PNG files, or a media file with a depth stream."""
    p = Path(path)
    if p.is_dir():
        return any(f.suffix.lower() == ".png" for f in p.iterdir())
    import av

    try:
        with av.open(str(p), metadata_errors="ignore") as container:
            return _depth_stream(container) is not None
    except (av.error.FFmpegError, OSError):
        return False


def read_depth(path: str | os.PathLike[str], fps: float | None = None) -> DepthFrames:
    """The depth frames of ``path``: a folder of 16-bit PNG files or a file with a depth stream (module doc).

    Args:
        fps: frame rate of a PNG folder whose file names are not times (ignored for a media file).

    Raises:
        DecodeError: no depth there (a colour-only file, an empty folder), a PNG that is not 16-bit single
            channel, frames of different sizes, or a folder without times and without ``fps``.
    """
    p = Path(path)
    if p.is_dir():
        return _read_png_folder(p, fps)
    import av

    try:
        container = av.open(str(p), metadata_errors="ignore")
    except (av.error.FFmpegError, OSError) as exc:
        raise DecodeError(f"{p}: not a readable media file ({exc}); expected a video with a depth stream "
                          "or a folder of 16-bit PNG depth frames") from exc
    with container:
        stream = _depth_stream(container)
        if stream is None:
            found = ", ".join(f"#{s.index} {s.codec_context.pix_fmt if s.codec_context else '?'}"
                              for s in container.streams.video) or "no video stream"
            raise DecodeError(f"{p}: no depth stream (found {found}); expected a video stream titled 'depth' or "
                              "of pixel format gray16le/gray16be, as RGB-D recorders write it")
        times: list[float] = []
        frames: list[NDArray[np.uint16]] = []
        try:
            for frame in container.decode(stream):
                arr = frame.to_ndarray(format="gray16le") if frame.format.name != "gray16le" else frame.to_ndarray()
                frames.append(np.ascontiguousarray(arr, np.uint16))
                times.append(float(frame.time) if frame.time is not None else len(times) / float(stream.average_rate or 30))
        except av.error.FFmpegError as exc:
            raise DecodeError(f"{p}: the depth stream could not be decoded after {len(frames)} frames ({exc})") from exc
    if not frames:
        raise DecodeError(f"{p}: the depth stream has no frame")
    return DepthFrames(np.asarray(times, np.float64), np.stack(frames), f"{p}#stream {stream.index}")


def depth_near(path: str | os.PathLike[str], times: Sequence[float] | NDArray[np.floating],
               reduce: Callable[[NDArray[np.uint16]], NDArray[np.float32]]) -> NDArray[np.float32] | None:
    """For each of ``times`` (seconds from the colour stream's start, as ``iter_frames`` gives them), ``reduce`` of
    the frame of ``path``'s depth stream nearest to it in the container's time (colour and depth streams may start
    at different times: a recorder's depth track starting later), streaming: each depth frame is compared with the
    samples around it and only the chosen ones are reduced, so an hour of depth is never held in memory nor reduced
    whole (what a collection with ``EncodeConfig.depth`` stores beside each sampled colour frame). Ties go to the
    earlier frame, as :meth:`DepthFrames.at`.

    Args:
        reduce: (H, W) uint16 millimetres -> (M,) float32 (``encode.depth.depth_vectors`` of one frame).

    Returns:
        (len(times), M) float32, or None when the file has no depth stream (a colour-only file).

    Raises:
        DecodeError: the file cannot be opened, or its depth stream has no decodable frame.
    """
    import logging

    import av

    t = np.asarray(times, np.float64)
    order = np.argsort(t, kind="stable")
    p = Path(path)
    try:
        container = av.open(str(p), metadata_errors="ignore")
    except (av.error.FFmpegError, OSError) as exc:
        raise DecodeError(f"{p}: not a readable media file ({exc})") from exc
    with container:
        stream = _depth_stream(container)
        if stream is None:
            return None
        colour = next((s for s in container.streams.video if not is_depth_stream(s)), None)
        colour_start = (float(colour.start_time * colour.time_base)
                        if colour is not None and colour.start_time is not None and colour.time_base else None)
        out: NDArray[np.float32] | None = None
        reduced: dict[int, NDArray[np.float32]] = {}  # frame number -> its row, for the frames chosen

        def row(number: int, frame: Any) -> NDArray[np.float32]:
            if number not in reduced:
                arr = frame.to_ndarray(format="gray16le") if frame.format.name != "gray16le" else frame.to_ndarray()
                reduced.clear()  # only the frame before and this one are ever chosen again
                reduced[number] = np.asarray(reduce(np.ascontiguousarray(arr, np.uint16)), np.float32)
            return reduced[number]

        def place(i: int, value: NDArray[np.float32]) -> None:
            nonlocal out
            if out is None:
                out = np.zeros((len(t), len(value)), np.float32)
            out[order[i]] = value

        prev: tuple[int, Any, float] | None = None  # (number, frame, time) of the frame before
        i, count = 0, 0
        try:
            for frame in container.decode(stream):
                ft = float(frame.time) if frame.time is not None else count / float(stream.average_rate or 30)
                if count == 0 and colour_start is None:
                    colour_start = ft  # no start time to align on: the streams' first frames taken together
                assert colour_start is not None
                ft -= colour_start
                current = (count, frame, ft)
                count += 1
                while i < len(t) and t[order[i]] <= ft:  # the samples between the frame before and this one
                    ti = t[order[i]]
                    pick = prev if prev is not None and ti - prev[2] <= ft - ti else current
                    place(i, row(pick[0], pick[1]))
                    i += 1
                if i >= len(t):
                    break
                prev = current
        except av.error.FFmpegError as exc:
            if prev is None:
                raise DecodeError(f"{p}: the depth stream could not be decoded ({exc})") from exc
            logging.getLogger(__name__).warning("%s: the depth stream failed after %d frames (%s); later samples "
                                                "take its last good frame", p, count, exc)
        while i < len(t) and prev is not None:  # samples after the last depth frame
            place(i, row(prev[0], prev[1]))
            i += 1
    if out is None:
        raise DecodeError(f"{p}: the depth stream has no frame")
    return out


def _read_png_folder(folder: Path, fps: float | None) -> DepthFrames:
    from PIL import Image

    files = sorted(f for f in folder.iterdir() if f.suffix.lower() == ".png")
    if not files:
        raise DecodeError(f"{folder}: no PNG file; expected 16-bit PNG depth frames (millimetres), one per frame")
    named = [_TIME_NAME.match(f.stem) for f in files]
    if fps is not None:
        if not fps > 0:
            raise DecodeError(f"fps must be > 0 for the depth frames of {folder}, got {fps}")
        times = np.arange(len(files), dtype=np.float64) / fps
    elif all(m is not None and "." in f.stem for m, f in zip(named, files)):
        times = np.asarray([float(f.stem) for f in files])
        times -= times[0]
    else:
        raise DecodeError(f"{folder}: the file names are not times in seconds (e.g. 1305031102.160407.png); "
                          "give the frame rate (fps)")
    frames: list[NDArray[np.uint16]] = []
    for f in files:
        with Image.open(f) as im:
            if im.mode not in ("I;16", "I;16B", "I;16L", "I"):
                raise DecodeError(f"{f}: a {im.mode} image; expected a 16-bit single-channel PNG (millimetres)")
            arr = np.asarray(im)
        if arr.dtype != np.uint16:
            if arr.min() < 0 or arr.max() > 65535:
                raise DecodeError(f"{f}: values outside 0-65535; expected 16-bit depth in millimetres")
            arr = arr.astype(np.uint16)
        if frames and arr.shape != frames[0].shape:
            raise DecodeError(f"{f}: {arr.shape[1]}x{arr.shape[0]}, the first frame is "
                              f"{frames[0].shape[1]}x{frames[0].shape[0]}; expected one size")
        frames.append(arr)
    order = np.argsort(times, kind="stable")
    return DepthFrames(times[order], np.stack(frames)[order], str(folder))


def _check(colour: NDArray[np.uint8], depth: NDArray[np.uint16]) -> None:
    if colour.ndim != 4 or colour.shape[-1] != 3 or colour.dtype != np.uint8:
        raise ShapeError(f"expected colour frames (T, H, W, 3) uint8, got {colour.shape} {colour.dtype}")
    if depth.shape != colour.shape[:3] or depth.dtype != np.uint16:
        raise ShapeError(f"expected depth frames {colour.shape[:3]} uint16 (millimetres), got {depth.shape} {depth.dtype}")


def write_rgbd(colour: NDArray[np.uint8], depth: NDArray[np.uint16], fps: int, path: str | os.PathLike[str],
               bitrate: int = 1_000_000) -> Path:
    """An MKV with the colour frames (H.264) and the depth frames (FFV1 ``gray16le``, lossless, titled
    ``depth``): the layout :func:`read_depth` reads and :mod:`vidsearch.decode.media` decodes the colour of.
    Frame sizes must be even (H.264's 4:2:0)."""
    import av

    colour, depth = np.asarray(colour), np.asarray(depth)
    _check(colour, depth)
    h, w = colour.shape[1:3]
    target = Path(path)
    with av.open(str(target), "w", format="matroska") as out:
        c = out.add_stream("libx264", rate=fps, options={"preset": "veryfast"})
        c.width, c.height, c.pix_fmt, c.bit_rate = w, h, "yuv420p", bitrate
        d = out.add_stream("ffv1", rate=fps)
        d.width, d.height, d.pix_fmt = w, h, "gray16le"
        d.metadata["title"] = "depth"
        for rgb, dep in zip(colour, depth):
            out.mux(c.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")))
            out.mux(d.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(dep), format="gray16le")))
        out.mux(c.encode())
        out.mux(d.encode())
    return target


def write_depth_pngs(depth: NDArray[np.uint16], folder: str | os.PathLike[str], fps: float | None = None) -> Path:
    """Depth frames as 16-bit PNG files in ``folder``: ``000000.png``... (``fps`` None), or named by their time
    in seconds (``0.000000.png``, TUM's convention) at ``fps``."""
    from PIL import Image

    depth = np.asarray(depth)
    if depth.ndim != 3 or depth.dtype != np.uint16:
        raise ShapeError(f"expected depth frames (T, H, W) uint16, got {depth.shape} {depth.dtype}")
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(depth):
        name = f"{i:06d}.png" if fps is None else f"{i / fps:.6f}.png"
        Image.fromarray(np.ascontiguousarray(frame)).save(out / name)
    return out
