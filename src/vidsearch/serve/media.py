"""Serving indexed media: a JPEG of the frame nearest a time (thumbnails), and checks of HTTP Range
headers before Starlette's ``FileResponse`` serves the bytes (so a malformed one is a JSON 400, not text)."""

from __future__ import annotations

import io
import mimetypes
import re
from pathlib import Path
from typing import TYPE_CHECKING

from vidsearch.errors import DecodeError
from vidsearch.serve.security import HTTPProblem

if TYPE_CHECKING:  # Pillow is imported when a thumbnail is made
    from PIL import Image

# Decoding stops after this many frames past the seek point (a file with very long GOPs gets the
# nearest frame found so far rather than a minute of decoding).
MAX_FRAMES_AFTER_SEEK = 1500
_RANGE_PART = re.compile(r"^\s*(\d*)\s*-\s*(\d*)\s*$")


def content_type(path: Path) -> str:
    """The Content-Type a browser player needs (``video/mp4`` for .mp4/.m4v, ...)."""
    extra = {".m4v": "video/mp4", ".mkv": "video/x-matroska", ".webm": "video/webm", ".ts": "video/mp2t",
             ".y4m": "video/x-yuv4mpeg", ".ogv": "video/ogg"}
    suffix = path.suffix.lower()
    return extra.get(suffix) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"


def check_range(header: str | None, size: int) -> None:
    """Refuse a Range header Starlette would answer with plain text: 400 when malformed, 416 when no
    range lies within the file.

    Raises:
        HTTPProblem: 400 or 416 (with ``Content-Range: bytes */SIZE``).
    """
    if header is None:
        return
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or not spec.strip():
        raise HTTPProblem(400, "BadRequest", f"malformed Range header {header[:100]!r}; expected e.g. 'bytes=0-1023'")
    satisfiable = False
    for part in spec.split(","):
        m = _RANGE_PART.match(part)
        if m is None or (not m.group(1) and not m.group(2)):
            raise HTTPProblem(400, "BadRequest", f"malformed Range header {header[:100]!r}; expected e.g. 'bytes=0-1023'")
        start, end = m.group(1), m.group(2)
        if start and end and int(start) > int(end):
            raise HTTPProblem(400, "BadRequest", f"Range {part.strip()!r}: the start is after the end")
        if (start and int(start) < size) or (not start and int(end) > 0 and size > 0):
            satisfiable = True
    if not satisfiable:
        raise HTTPProblem(416, "RangeNotSatisfiable", f"Range {header[:100]!r} lies outside the file ({size} bytes)",
                          {"Content-Range": f"bytes */{size}"})


def thumbnail_jpeg(path: Path, t: float, width: int, is_image: bool, quality: int = 82) -> bytes:
    """A JPEG, ``width`` pixels wide (never enlarged), of the frame nearest ``t`` seconds from the first
    frame (the time base of search results), or of the image.

    Raises:
        DecodeError: the file cannot be read.
    """
    from PIL import Image

    if is_image:
        try:
            with Image.open(path) as img:
                img.draft("RGB", (width, width))
                picture = img.convert("RGB")
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise DecodeError(f"{path}: not a readable image ({exc})") from exc
    else:
        picture = _frame_near(path, t)
    if picture.width > width:
        picture = picture.resize((width, max(1, round(picture.height * width / picture.width))),
                                 Image.Resampling.BILINEAR)
    out = io.BytesIO()
    picture.save(out, format="JPEG", quality=quality)
    return out.getvalue()


def _frame_near(path: Path, t: float) -> Image.Image:
    import av

    try:
        with av.open(str(path), mode="r", metadata_errors="ignore") as container:
            streams = [s for s in container.streams.video if not (s.disposition & 0x400)] or list(container.streams.video)
            if not streams:
                raise DecodeError(f"{path}: no video stream")
            stream = streams[0]
            stream.thread_type = "AUTO"
            base = stream.time_base
            origin = float(stream.start_time * base) if stream.start_time is not None and base else 0.0
            if t > 0 and base:
                container.seek(int((origin + t) / base), stream=stream, backward=True, any_frame=False)
            best, best_gap, first = None, float("inf"), None
            for n, frame in enumerate(container.decode(stream)):
                if frame.time is None:
                    continue
                if first is None:
                    first = frame.time
                    if t == 0:  # the first frame is the time base's 0
                        origin = first
                gap = abs(frame.time - origin - t)
                if gap < best_gap:
                    best, best_gap = frame, gap
                elif frame.time - origin > t or n > MAX_FRAMES_AFTER_SEEK:
                    break
            if best is None:
                raise DecodeError(f"{path}: no decodable frame near {t:g} s")
            return best.to_image()
    except av.error.FFmpegError as exc:
        raise DecodeError(f"{path}: cannot decode ({type(exc).__name__}: {exc})") from exc
