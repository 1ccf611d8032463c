"""Make transformed copies of real videos with PyAV (no ffmpeg binary): re-encode at another size
and bitrate, crop, excerpt. Used by the demo and the benchmarks."""

from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from vidsearch.errors import ConfigError
from vidsearch.evaluate.edits import x264_options


@dataclass(frozen=True)
class Transform:
    """A copy of ``[start, end)`` seconds of the source, optionally cropped to the central
    ``crop`` fraction, scaled to ``width`` pixels wide, encoded at ``bitrate`` bits/s."""

    start: float = 0.0
    end: float | None = None
    crop: float = 1.0
    width: int | None = None
    bitrate: int = 400_000
    codec: str = "libx264"
    fps: float | None = None


def make_copy(src: str | os.PathLike[str], dst: str | os.PathLike[str], t: Transform) -> Path:
    """Write a transformed copy of ``src`` to ``dst`` (container from the file ending)."""
    import av

    dst = Path(dst)
    with av.open(str(src)) as inp:
        stream = inp.streams.video[0]
        rate = t.fps or float(stream.average_rate or 25)
        w0, h0 = stream.codec_context.width, stream.codec_context.height
        cw, ch = int(w0 * t.crop) // 2 * 2, int(h0 * t.crop) // 2 * 2
        x0, y0 = (w0 - cw) // 2, (h0 - ch) // 2
        out_w = (t.width or cw) // 2 * 2
        out_h = max(2, int(round(ch * out_w / cw)) // 2 * 2)
        tmp = dst.with_name(dst.name + ".tmp" + dst.suffix)
        with av.open(str(tmp), "w") as out:
            frame_rate = Fraction(rate).limit_denominator(1001)
            ostream = out.add_stream(t.codec, rate=frame_rate, options=x264_options(codec=t.codec))
            if not isinstance(ostream, av.VideoStream):
                raise ConfigError(f"Transform.codec must name a video encoder, got {t.codec!r}; use one such as 'libx264'")
            ostream.width, ostream.height, ostream.pix_fmt = out_w, out_h, "yuv420p"
            ostream.bit_rate = t.bitrate
            ostream.codec_context.thread_count = 1  # x264's own threading makes the output differ run to run
            origin = None
            n = 0
            for frame in inp.decode(stream):
                ft = frame.time if frame.time is not None else 0.0
                origin = ft if origin is None else origin
                ft -= origin
                if ft < t.start - 1e-6:
                    continue
                if t.end is not None and ft >= t.end - 1e-6:
                    break
                rgb = frame.to_ndarray(format="rgb24")[y0 : y0 + ch, x0 : x0 + cw]
                vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb, dtype=np.uint8), format="rgb24").reformat(
                    width=out_w, height=out_h, format="yuv420p"
                )
                vf.pts = n
                vf.time_base = 1 / frame_rate
                for packet in ostream.encode(vf):
                    out.mux(packet)
                n += 1
            for packet in ostream.encode():
                out.mux(packet)
        os.replace(tmp, dst)
    return dst
