"""Video edits for the near-duplicate benchmark, on decoded RGB frames (numpy + Pillow), written
back with PyAV. Each edit maps (frames, fps) -> (frames, fps); ``render`` decodes an excerpt of a
real video, applies edits, and encodes the result."""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np
from numpy.typing import NDArray

from vidsearch.errors import ConfigError

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

Frames = list[NDArray[np.uint8]]
Edit = Callable[[Frames, float], tuple[Frames, float]]


def decode_rgb(path: str | os.PathLike[str], start: float = 0.0, end: float | None = None,
               max_width: int = 480, max_fps: float = 15.0) -> tuple[Frames, float]:
    """Frames of ``[start, end)`` seconds as RGB, at most ``max_width`` wide and ``max_fps``."""
    import av

    with av.open(str(path)) as c:
        s = c.streams.video[0]
        s.thread_type = "AUTO"
        src_fps = float(s.average_rate or 25.0)
        fps = min(src_fps, max_fps)
        w, h = s.codec_context.width, s.codec_context.height
        scale = min(1.0, max_width / w)
        ow, oh = max(2, int(w * scale) // 2 * 2), max(2, int(h * scale) // 2 * 2)
        origin = float(s.start_time * s.time_base) if s.start_time is not None and s.time_base else 0.0
        if start > 2.0 and s.time_base:  # jump to the key frame before ``start`` instead of decoding from 0
            c.seek(int((start + origin - 1.0) / s.time_base), stream=s, backward=True)
        frames: Frames = []
        next_t = start
        idx = 0
        for frame in c.decode(s):
            t = frame.time - origin if frame.time is not None else idx / src_fps
            idx += 1
            if t + 1e-6 < next_t:
                continue
            if end is not None and t >= end - 1e-6:
                break
            frames.append(cast(NDArray[np.uint8], frame.reformat(width=ow, height=oh, format="rgb24").to_ndarray()))
            next_t += 1.0 / fps
    return frames, fps


@functools.cache
def _avx512() -> bool:
    try:
        return re.search(r"\bavx512", Path("/proc/cpuinfo").read_text()) is not None
    except OSError:  # not Linux: no cap (see x264_options)
        return False


def x264_options(options: dict[str, str] | None = None, codec: str = "libx264") -> dict[str, str]:
    """``options`` for an encoder, plus what makes libx264 give the same bytes on every run: on a CPU with
    AVX-512, x264's assembly capped at AVX2 (merged into ``x264-params``).

    Measured on a Xeon with AVX-512 (PyAV 18.1, libavcodec 62): the same 40 frames encoded 5 times with one
    thread gave 4 different files (so the VSC-style data set's videos differed between two builds of one
    config, by up to 8 grey levels); capped at AVX2, 5 equal files, equal to one of the uncapped ones. Nothing
    is added on a CPU without AVX-512 (x264's ``asm`` overrides its CPU detection: naming AVX2 where it is
    missing would crash), nor for another codec.
    """
    out = dict(options or {})
    if codec == "libx264" and _avx512():
        params = out.get("x264-params", "")
        out["x264-params"] = f"{params}:asm=AVX2" if params else "asm=AVX2"
    return out


def encode_rgb(frames: Frames, fps: float, dst: str | os.PathLike[str], bitrate: int = 600_000,
               codec: str = "libx264") -> Path:
    """Write RGB frames as a video (even dimensions enforced), atomically."""
    import av

    dst = Path(dst)
    h, w = frames[0].shape[:2]
    w2, h2 = w // 2 * 2, h // 2 * 2
    tmp = dst.with_name(dst.name + ".tmp" + dst.suffix)
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(tmp), "w") as out:
        stream = out.add_stream(codec, rate=rate, options=x264_options(codec=codec))
        if not isinstance(stream, av.VideoStream):
            raise ConfigError(f"encode_rgb's codec must name a video encoder, got {codec!r}; use one such as 'libx264'")
        stream.width, stream.height, stream.pix_fmt, stream.bit_rate = w2, h2, "yuv420p", bitrate
        stream.codec_context.thread_count = 1  # deterministic output (x264 threading is not)
        for i, img in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(img[:h2, :w2]), format="rgb24")
            vf.pts, vf.time_base = i, 1 / rate
            for p in stream.encode(vf):
                out.mux(p)
        for p in stream.encode():
            out.mux(p)
    os.replace(tmp, dst)
    return dst


def _per_frame(fn: Callable[[NDArray[np.uint8]], NDArray[np.uint8]]) -> Edit:
    return lambda frames, fps: ([fn(f) for f in frames], fps)


def _pil(fn: Callable[[PILImage], PILImage]) -> Edit:
    from PIL import Image

    return _per_frame(lambda f: np.asarray(fn(Image.fromarray(f))))


def resize(scale: float) -> Edit:
    from PIL import Image

    def fn(img: PILImage) -> PILImage:
        return img.resize((max(16, int(img.width * scale)), max(16, int(img.height * scale))), Image.Resampling.BILINEAR)

    return _pil(fn)


def crop(frac: float, dx: float = 0.0, dy: float = 0.0) -> Edit:
    """Keep a ``frac`` x ``frac`` window, centred then shifted by (dx, dy) in [-1, 1] of the slack."""
    def fn(f: NDArray[np.uint8]) -> NDArray[np.uint8]:
        h, w = f.shape[:2]
        ch, cw = int(h * frac), int(w * frac)
        y0 = int((h - ch) / 2 * (1 + dy))
        x0 = int((w - cw) / 2 * (1 + dx))
        return f[y0 : y0 + ch, x0 : x0 + cw]

    return _per_frame(fn)


def letterbox(bar: float = 0.15) -> Edit:
    def fn(f: NDArray[np.uint8]) -> NDArray[np.uint8]:
        h = f.shape[0]
        pad = int(h * bar)
        return np.pad(f, ((pad, pad), (0, 0), (0, 0)))

    return _per_frame(fn)


def hflip() -> Edit:
    return _per_frame(lambda f: np.ascontiguousarray(f[:, ::-1]))


def photometric(brightness: float = 0.0, contrast: float = 1.0, gamma: float = 1.0) -> Edit:
    def fn(f: NDArray[np.uint8]) -> NDArray[np.uint8]:
        x = f.astype(np.float32) / 255.0
        x = np.clip((x - 0.5) * contrast + 0.5 + brightness, 0, 1) ** gamma
        return (x * 255 + 0.5).astype(np.uint8)

    return _per_frame(fn)


def blur(radius: float = 3.0) -> Edit:
    from PIL import ImageFilter

    return _pil(lambda img: img.filter(ImageFilter.GaussianBlur(radius)))


def noise(sigma: float = 20.0, seed: int = 0) -> Edit:
    def edit(frames: Frames, fps: float) -> tuple[Frames, float]:
        rng = np.random.default_rng(seed)
        return [np.clip(f + rng.normal(0, sigma, f.shape), 0, 255).astype(np.uint8) for f in frames], fps

    return edit


def text_overlay(text: str = "BREAKING NEWS  vidsearch 2026", height: float = 0.12) -> Edit:
    from PIL import ImageDraw, ImageFont

    def fn(img: PILImage) -> PILImage:
        size = max(10, int(img.height * height))
        draw = ImageDraw.Draw(img)
        font = ImageFont.load_default(size=size)
        y = img.height - int(size * 1.6)
        draw.rectangle([0, y - 4, img.width, img.height], fill=(200, 0, 0))
        draw.text((8, y), text, fill=(255, 255, 255), font=font)
        return img

    return _pil(fn)


def logo_overlay(logo_path: Path | None, width: float = 0.3) -> Edit:
    from PIL import Image

    logo = Image.open(logo_path).convert("RGBA") if logo_path and Path(logo_path).exists() else None

    def fn(img: PILImage) -> PILImage:
        if logo is None:
            mark = Image.new("RGBA", (64, 24), (255, 255, 0, 200))
        else:
            mark = logo
        lw = max(8, int(img.width * width))
        lh = max(4, int(mark.height * lw / mark.width))
        m = mark.resize((lw, lh))
        img = img.convert("RGBA")
        img.alpha_composite(m, (img.width - lw - 6, 6))
        return img.convert("RGB")

    return _pil(fn)


def picture_in_picture(background: Frames, scale: float = 0.45) -> Edit:
    """The source, scaled, in the top-left corner of unrelated footage."""
    from PIL import Image

    def edit(frames: Frames, fps: float) -> tuple[Frames, float]:
        out = []
        for i, f in enumerate(frames):
            bg = Image.fromarray(background[i % len(background)])
            fg = Image.fromarray(f)
            w = int(bg.width * scale)
            h = int(fg.height * w / fg.width)
            bg.paste(fg.resize((w, h)), (int(bg.width * 0.05), int(bg.height * 0.05)))
            out.append(np.asarray(bg))
        return out, fps

    return edit


def frame_rate(new_fps: float) -> Edit:
    def edit(frames: Frames, fps: float) -> tuple[Frames, float]:
        n = max(1, int(round(len(frames) * new_fps / fps)))
        idx = np.minimum((np.arange(n) * fps / new_fps).astype(int), len(frames) - 1)
        return [frames[i] for i in idx], new_fps

    return edit


def speed(factor: float) -> Edit:
    """Play ``factor`` times faster (0.5: slow motion), keeping the frame rate."""
    def edit(frames: Frames, fps: float) -> tuple[Frames, float]:
        n = max(1, int(round(len(frames) / factor)))
        idx = np.minimum((np.arange(n) * factor).astype(int), len(frames) - 1)
        return [frames[i] for i in idx], fps

    return edit


def reverse() -> Edit:
    return lambda frames, fps: (frames[::-1], fps)


def insert_into(before: Frames, after: Frames) -> Edit:
    """Unrelated footage, then the source, then more unrelated footage (resized to match)."""
    from PIL import Image

    def edit(frames: Frames, fps: float) -> tuple[Frames, float]:
        h, w = frames[0].shape[:2]
        fit = [np.asarray(Image.fromarray(f).resize((w, h))) for f in before + after]
        return fit[: len(before)] + frames + fit[len(before) :], fps

    return edit
