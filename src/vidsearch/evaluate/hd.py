"""HD footage (720p, 1080p H.264) made once from the packaged real sample videos, for the ingest benchmarks.

Users index phone, broadcast and upload footage at 720p and 1080p, where decoding costs far more than
on the small sample videos. No HD video ships in a package, so :func:`hd_footage` makes one: every frame
of the sample videos that are 24-30 fps and at least 640 px wide (plus vtest.avi), each cropped to 16:9
around its centre, scaled up (bicubic) and re-encoded with libx264 at 30 fps with a key frame every
2 s (``gop`` 60, no scene-cut key frames), ``preset`` veryfast, ``crf`` 20, yuv420p, in mp4. Each source
frame becomes one output frame (24-25 fps sources play a little fast), so the motion is real, never a
repeated frame. All the sources give about 83 s; ``seconds`` cuts (or loops) to a length.

The file is cached under ``$VIDSEARCH_CACHE/hd`` (default ``~/.cache/vidsearch/hd``) by a key over the
settings, the sources' bytes and the PyAV version, written beside its name and moved into place whole,
so a rerun (or another process) reuses it and an interrupted run leaves nothing that looks finished.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from vidsearch.errors import ConfigError
from vidsearch.evaluate import samples
from vidsearch.evaluate.edits import x264_options

log = logging.getLogger(__name__)

HD_SOURCES = ("bigbuckbunny.mp4", "rgb.m4v", "Megamind.avi", "box.mp4", "cup.mp4", "bikes.mp4",
              "extra_channel_attached_pic.mp4", "vtest.avi")
"""The sample videos HD footage is made of, in this order (the largest and 24-30 fps ones first)."""

HEIGHTS = {720: 1280, 1080: 1920}
"""Supported heights and their 16:9 widths."""


@dataclass(frozen=True)
class HDSpec:
    """What :func:`hd_footage` makes: ``height`` 720 or 1080 (16:9), ``seconds`` of it (None: every source frame)."""

    height: int = 720
    seconds: float | None = None
    fps: int = 30
    gop: int = 60
    preset: str = "veryfast"
    crf: int = 20

    def __post_init__(self) -> None:
        if self.height not in HEIGHTS:
            raise ConfigError(f"HD footage is made at heights {sorted(HEIGHTS)}, got {self.height}; pass 720 or 1080")
        if self.seconds is not None and not (0 < self.seconds <= 3600):
            raise ConfigError(f"seconds must be in (0, 3600] or None (every source frame), got {self.seconds}")

    @property
    def width(self) -> int:
        return HEIGHTS[self.height]


def hd_cache_dir() -> Path:
    """``$VIDSEARCH_CACHE/hd`` or ``~/.cache/vidsearch/hd`` (created)."""
    root = os.environ.get("VIDSEARCH_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "vidsearch")
    path = Path(root) / "hd"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _sources() -> list[Path]:
    found = {p.name: p for p in samples.reference_footage()}
    missing = {n: samples.install_hint(n) for n in HD_SOURCES if n not in found}
    if len(missing) == len(HD_SOURCES):
        raise samples.MissingDataError(f"none of the sample videos HD footage is made of is installed ({missing}); "
                                       "run 'make install'")
    return [found[n] for n in HD_SOURCES if n in found]


def _key(spec: HDSpec, sources: list[Path]) -> str:
    import av

    h = hashlib.sha256(json.dumps({"spec": asdict(spec), "av": av.__version__, "format": 1}, sort_keys=True).encode())
    for src in sources:
        h.update(src.name.encode())
        h.update(hashlib.sha256(src.read_bytes()).digest())
    return h.hexdigest()[:12]


def hd_path(spec: HDSpec) -> Path:
    """Where the cached file for ``spec`` lives (it may not exist yet)."""
    length = "all" if spec.seconds is None else f"{spec.seconds:g}s"
    return hd_cache_dir() / f"hd-{spec.height}p-{length}-{_key(spec, _sources())}.mp4"


def hd_footage(height: int = 720, seconds: float | None = None, spec: HDSpec | None = None) -> Path:
    """The HD file for ``spec`` (or ``height`` and ``seconds``), made on first use and cached.

    Raises:
        MissingDataError: no source sample video is installed.
        ConfigError: an unsupported height or length.
    """
    spec = spec or HDSpec(height=height, seconds=seconds)
    target = hd_path(spec)
    if target.is_file():
        return target
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp.mp4")
    try:
        _write(spec, _sources(), tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def _frames(spec: HDSpec, sources: list[Path]) -> Iterator[np.ndarray]:
    """Every source frame as (H, W, 3) RGB cropped to 16:9 around the centre, at the source's size."""
    import av

    for src in sources:
        with av.open(str(src)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                rgb = frame.to_ndarray(format="rgb24")
                h, w = rgb.shape[:2]
                if w * 9 > h * 16:  # wider than 16:9: cut the sides
                    cw = h * 16 // 9
                    rgb = rgb[:, (w - cw) // 2 : (w - cw) // 2 + cw]
                else:  # taller: cut top and bottom
                    ch = w * 9 // 16
                    rgb = rgb[(h - ch) // 2 : (h - ch) // 2 + ch]
                yield rgb


def _write(spec: HDSpec, sources: list[Path], path: Path) -> None:
    import av

    total = None if spec.seconds is None else int(round(spec.seconds * spec.fps))
    t0 = time.perf_counter()
    with av.open(str(path), mode="w") as out:
        stream = out.add_stream("libx264", rate=spec.fps)
        stream.width, stream.height, stream.pix_fmt = spec.width, spec.height, "yuv420p"
        stream.options = dict(x264_options({"preset": spec.preset, "crf": str(spec.crf),
                                            "x264-params": f"keyint={spec.gop}:min-keyint={spec.gop}:scenecut=0"}))
        n = 0
        while total is None or n < total:
            before = n
            for rgb in _frames(spec, sources):
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
                frame = frame.reformat(width=spec.width, height=spec.height, format="yuv420p", interpolation="BICUBIC")
                frame.pts, frame.time_base = n, Fraction(1, spec.fps)
                for packet in stream.encode(frame):
                    out.mux(packet)
                n += 1
                if total is not None and n >= total:
                    break
            if total is None or n == before:
                break
        for packet in stream.encode(None):
            out.mux(packet)
    log.info("made %s: %d frames in %.1f s", path.name, n, time.perf_counter() - t0)
