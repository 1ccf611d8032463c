"""Probing and frame sampling with PyAV; images through Pillow.

Frames are converted to RGB only when sampled, and straight to the encoder's input size in one
swscale call (``VideoFrame.reformat``), so a 4K or 8K video never holds more than the decoder's
own current frame at full size (and, with ``pair_size``, the frame decoded before it).
"""

from __future__ import annotations

import logging
import math
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

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
    """One sampled frame: ``time`` in seconds from the start, ``image`` uint8 RGB (H, W, 3); with
    ``iter_frames(pair_size=...)``, ``pair`` (2, h, w) uint8 grey: the frame's neighbour and the frame itself
    (see :func:`iter_frames`), for the motion between them."""

    time: float
    image: NDArray[np.uint8]
    pair: NDArray[np.uint8] | None = None


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
    from vidsearch.decode.depth import is_depth_stream

    # An RGB-D file's depth stream is not its colour (decode/depth.py reads it); a file of depth alone has none.
    streams = [s for s in container.streams.video if not is_depth_stream(s)]
    # Cover art is a video stream with one attached picture; prefer real video streams.
    real = [s for s in streams if not (s.disposition & 0x400)] if streams else []  # AV_DISPOSITION_ATTACHED_PIC
    chosen = real or streams
    if not chosen:
        if container.streams.video:
            raise DecodeError(f"{path}: only a depth stream, no colour; expected a video with a colour stream "
                              "(depth is read beside it with vidsearch.decode.depth)")
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
    *,
    skip_nonref: bool = False,
    skip_loop_filter: str = "none",
    skip_unsampled: bool = True,
    threads: int = 0,
    stats: DecodeStats | None = None,
    pair_size: tuple[int, int] | None = None,
) -> Iterator[SampledFrame]:
    """Yield frames sampled uniformly at ``fps`` (by presentation time), resized to ``size``.

    Only what the sampler takes is decoded (``skip_unsampled``, on by default, exact): the packets of
    a group of pictures (key frame to key frame) are read ahead, the sampler is run on their timestamps,
    and the decoder is told to skip each non-reference frame it will not take; a group holding no sampled
    frame, followed by an IDR frame, is not decoded at all (the packet-level equivalent of seeking to the key
    frame before the next sample: no decoder state is lost and no container index is needed; before a key frame
    that is not an IDR, an open group of pictures, it is decoded). The frames yielded are the very frames, with
    the very pixels and times, of a decode of every frame (tests/decode check it on every sample video and on
    open-GOP H.264 in MP4 and MKV). Planning is done for H.264 and HEVC, whose frames carry their packets' timestamps;
    where a file's timestamps cannot be planned on (another codec, no timestamps, decode-order timestamps
    with frame reordering, or the decoder's frames are not the planned ones) everything is decoded, as before.

    Args:
        path: a video or image file.
        size: (width, height) of the images yielded, normally the encoder's input size.
        fps: frames per second to keep; the first frame at or after each multiple of 1/fps is kept.
        keyframes_only: decode key frames only (much faster, coarser); ``fps`` still caps the rate.
        skip_nonref: never decode a non-reference frame: a sample is the first *decodable* frame at or
            after its time (up to a few frames later: the times yielded are those frames' own). Approximate.
        skip_loop_filter: ``"none"``, ``"nonref"`` (no deblocking of non-reference frames: only the sampled
            frame itself changes) or ``"all"`` (errors then carry on to the frames predicted from it). Approximate.
        skip_unsampled: plan on the timestamps as described above (exact); False decodes every frame.
        threads: decoder threads (FFmpeg frame + slice threads); 0 lets FFmpeg choose (one per core + 1).
        stats: counts what was decoded and skipped, filled in as frames are yielded (benchmarks, tests).
        pair_size: (width, height): each sample also carries ``pair``, (2, height, width) grey: the frame
            decoded just before it (the plan decodes that frame too, so it is the one a decode of every frame
            gives) and the sample itself. The first frame, having none before it, is paired with the frame after
            it; a neighbour more than 1.5 frame periods away (nothing decoded near: key frames only, skipped
            non-reference frames, a one-frame video or an image) gives the sample paired with itself (no motion).

    Yields:
        SampledFrame with ``time`` in seconds from the first frame and a (H, W, 3) uint8 image.

    Raises:
        DecodeError: the file cannot be opened, has no video stream, or yields no decodable frame.
        ConfigError: a bad ``fps``, ``size`` or ``skip_loop_filter``.
    """
    if not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
        raise ConfigError(f"fps must be a finite number of frames per second > 0, got {fps!r}; e.g. fps=1")
    if len(size) != 2 or min(size) < 1:
        raise ConfigError(f"size must be (width, height) in pixels, both >= 1, got {size!r}")
    if skip_loop_filter not in LOOP_FILTER_SKIPS:
        raise ConfigError(f"skip_loop_filter must be one of {', '.join(LOOP_FILTER_SKIPS)}, got {skip_loop_filter!r}")
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
        raise ConfigError(f"threads must be an integer >= 0 (0: FFmpeg chooses), got {threads!r}")
    if pair_size is not None and (len(pair_size) != 2 or min(pair_size) < 1):
        raise ConfigError(f"pair_size must be (width, height) in pixels, both >= 1, got {pair_size!r}")
    p = Path(path)
    _check_file(p)
    if is_image_path(p):
        image = _read_image(p, size)
        pair = None
        if pair_size is not None:
            from PIL import Image

            grey = np.asarray(Image.fromarray(image).convert("L").resize(pair_size, Image.Resampling.BILINEAR))
            pair = np.stack([grey, grey])
        yield SampledFrame(0.0, image, pair)
        return
    with _open_container(p) as container:
        stream = _video_stream(container, p)
        yield from _decode_sampled(container, stream, p, size, 1.0 / fps, keyframes_only, skip_nonref,
                                   skip_loop_filter, skip_unsampled and not keyframes_only and not skip_nonref, threads,
                                   stats if stats is not None else DecodeStats(), pair_size)


LOOP_FILTER_SKIPS = ("none", "nonref", "all")
"""Values of ``iter_frames(skip_loop_filter=...)`` (and ``DecodeConfig.skip_loop_filter``)."""

# what the decoder is told to skip (AVCodecContext.skip_frame), per packet
_Skip = Literal["DEFAULT", "NONREF", "NONKEY"]
# FFmpeg's AVDiscard names for the loop filter choices
_LOOP_FILTER_DISCARD = {"none": "default", "nonref": "noref", "all": "all"}
# Codecs whose frames carry their packet's timestamp and honour skip_frame per packet (checked on every sample
# video by tests/decode); MPEG-4 part 2 in AVI packs two frames in a packet, so its frames' times are not the packets'.
_PLANNABLE_CODECS = frozenset({"h264", "hevc"})
# Read at most this many packets ahead (one group of pictures); a longer group is decoded as it comes.
_MAX_GROUP_PACKETS = 1200


@dataclass
class DecodeStats:
    """What one :func:`iter_frames` call decoded.

    Attributes:
        packets: video packets read from the container.
        packets_not_decoded: packets of groups of pictures holding no sampled frame, never sent to the decoder.
        packets_skippable: packets sent with "skip this frame if nothing refers to it" (non-reference frames
            the sampler does not take; the decoder skips those that are non-reference).
        frames_decoded: frames the decoder returned.
        frames_sampled: frames yielded.
        planned: the timestamps plan held to the end (False: from some point on every frame was decoded).
        pairs_without_neighbour: with ``pair_size``, samples paired with themselves (no frame decoded within 1.5
            frame periods of them: key frames only, skipped non-reference frames, a one-frame video; or a frame
            rate the stream misstates).
    """

    packets: int = 0
    packets_not_decoded: int = 0
    packets_skippable: int = 0
    frames_decoded: int = 0
    frames_sampled: int = 0
    planned: bool = False
    pairs_without_neighbour: int = 0


def _nal_length_size(codec: Any) -> int | None:
    """Bytes of each NAL unit's length prefix in H.264/HEVC packets stored as in MP4/MKV (avcC/hvcC extradata),
    or None for Annex B packets (start codes)."""
    extra = bytes(codec.extradata or b"")
    at = 21 if codec.name == "hevc" else 4  # lengthSizeMinusOne's byte; configurationVersion 1 first
    return (extra[at] & 3) + 1 if len(extra) > at and extra[0] == 1 else None


def _is_idr(packet: Any, codec_name: str, length_size: int | None) -> bool:
    """Whether an H.264/HEVC packet holds an IDR picture (nothing after it refers to anything before it): its NAL
    unit types, read from the length prefixes or the start codes. A key frame that is not an IDR (an open group of
    pictures' recovery point, HEVC's CRA) lets later frames refer across it. (Parsed here: PyAV exposes only
    ``is_keyframe``, which FFmpeg also sets for those.)"""
    data = bytes(packet)
    types: list[int] = []
    if length_size is not None:
        i = 0
        while i + length_size < len(data):
            n = int.from_bytes(data[i : i + length_size], "big")
            types.append(data[i + length_size])
            i += length_size + max(n, 1)
    else:
        i = data.find(b"\x00\x00\x01")
        while 0 <= i < len(data) - 3:
            types.append(data[i + 3])
            i = data.find(b"\x00\x00\x01", i + 3)
    if codec_name == "hevc":
        return any((b >> 1) & 0x3F in (19, 20) for b in types)  # IDR_W_RADL, IDR_N_LP
    return any(b & 0x1F == 5 for b in types)


class _Plan:
    """Which packets the uniform sampler will take, found from the packets' timestamps alone.

    The sampler keeps the first frame at or after each multiple of the period (times measured from the
    first frame). Run on a group of pictures' presentation times in order, it names the frames it will
    take; every other non-reference frame need not be decoded, and a group with none need not be decoded.
    ``ok`` turns False for good when the decoder's frames disagree with the plan (then all is decoded).
    """

    def __init__(self, period: float, before: bool = False) -> None:
        self.period = period
        self.before = before  # also decode the frame before each sampled one (``iter_frames(pair_size=...)``)
        self.origin: float | None = None  # time of the first frame, from the first group's timestamps
        self.next_time = 0.0
        self.ok = True
        self.wanted: set[int] = set()  # pts of the packets planned to be sampled, not yet seen decoded

    def plan(self, times: list[tuple[float, int]]) -> set[int]:
        """The pts of the packets in ``times`` ((time in seconds, pts), any order) the sampler will take and,
        with ``before``, of the frame before each of them in presentation order (decoded, not taken)."""
        if self.origin is None:
            self.origin = min(t for t, _ in times)
        taken: set[int] = set()
        needed: set[int] = set()
        previous: int | None = None
        for t, pts in sorted(times):
            rel = t - self.origin
            if rel + 1e-6 >= self.next_time:
                taken.add(pts)
                if self.before and previous is not None:
                    needed.add(previous)
                self.next_time = max(self.next_time + self.period, rel + self.period * 0.5)
            previous = pts
        self.wanted |= taken
        return taken | needed


def _decode_sampled(
    container: InputContainer, stream: VideoStream, p: Path, size: tuple[int, int], period: float,
    keyframes_only: bool, skip_nonref: bool, skip_loop_filter: str, plan_ahead: bool, threads: int,
    stats: DecodeStats, pair_size: tuple[int, int] | None = None,
) -> Iterator[SampledFrame]:
    import av

    width, height = size
    codec = stream.codec_context
    stream.thread_type = "AUTO"
    codec.thread_count = threads
    if skip_loop_filter != "none":
        codec.options = {**codec.options, "skip_loop_filter": _LOOP_FILTER_DISCARD[skip_loop_filter]}
    base_skip: _Skip = "NONKEY" if keyframes_only else "NONREF" if skip_nonref else "DEFAULT"
    codec.skip_frame = base_skip
    time_base = stream.time_base
    plan = (_Plan(period, before=pair_size is not None)
            if plan_ahead and time_base is not None and codec.name in _PLANNABLE_CODECS else None)
    length_size = _nal_length_size(codec) if plan is not None else None
    rate = float(stream.average_rate or stream.base_rate or 25.0)
    near = 1.5 / rate  # a pair's neighbour must be this close (seconds), else the sample is paired with itself
    state = _State()
    last_error: list[Exception] = []

    def grey(frame: av.VideoFrame) -> NDArray[np.uint8]:
        assert pair_size is not None
        return cast("NDArray[np.uint8]", frame.reformat(width=pair_size[0], height=pair_size[1],
                                                       format="gray").to_ndarray())

    def held_out(neighbour: av.VideoFrame | None, t: float | None) -> Iterator[SampledFrame]:
        """The first sample, held until the frame after it was decoded (or the end: ``neighbour`` None)."""
        if state.held is None:
            return
        time_s, image, own, own_t = state.held
        state.held = None
        other = grey(neighbour) if neighbour is not None and t is not None and 0 < t - own_t <= near else own
        stats.pairs_without_neighbour += other is own
        yield SampledFrame(time_s, image, np.stack([own, other]))

    def decode(packet: av.Packet, skip: _Skip) -> Iterator[SampledFrame]:
        if codec.skip_frame != skip:
            codec.skip_frame = skip
        stats.packets_skippable += skip == "NONREF" and base_skip != "NONREF"
        try:
            frames = packet.decode()
            state.consecutive = 0
        except av.error.FFmpegError as exc:  # corrupt packet: skip it, keep decoding
            state.failures += 1
            state.consecutive += 1
            last_error[:] = [exc]
            if state.consecutive >= _MAX_CONSECUTIVE_PACKET_ERRORS:
                raise _TooManyErrors() from exc
            return
        stats.frames_decoded += len(frames)
        for frame in frames:
            t = frame.time
            if t is None:  # raw elementary streams carry no timestamps
                t = state.index / rate
            state.index += 1
            if pair_size is not None:
                if state.held is not None:
                    yield from held_out(frame, t)
                last, last_t = state.last, state.last_t
                state.last, state.last_t = frame, t
            if state.origin is None:
                state.origin = t
                if plan is not None and (plan.origin is None or abs(plan.origin - t) > 1e-9):
                    plan.ok = False
            raw_t = t
            t -= state.origin
            if t + 1e-6 < state.next_time:
                continue
            if plan is not None and plan.ok:
                if frame.pts in plan.wanted:
                    plan.wanted.discard(frame.pts)
                else:  # the decoder's frames are not the planned ones: decode everything from here on
                    plan.ok = False
                    log.debug("%s: sampled frame at %.3f s was not planned; decoding every frame", p, t)
            rgb = frame.reformat(width=width, height=height, format="rgb24")
            image = cast("NDArray[np.uint8]", rgb.to_ndarray())  # rgb24: uint8
            state.produced += 1
            stats.frames_sampled += 1
            state.next_time = max(state.next_time + period, t + period * 0.5)
            if pair_size is None:
                yield SampledFrame(float(t), image)
                continue
            own = grey(frame)
            if last is None:  # the first frame: paired with the one after it, once decoded
                state.held = (float(t), image, own, raw_t)
                continue
            before = grey(last) if last_t is not None and 0 < raw_t - last_t <= near else own
            stats.pairs_without_neighbour += before is own
            yield SampledFrame(float(t), image, np.stack([before, own]))

    def plannable(group: list[av.Packet]) -> list[tuple[float, int]] | None:
        assert time_base is not None
        times = [(float(pk.pts * time_base), int(pk.pts)) for pk in group if pk.pts is not None and not pk.is_discard]
        if not times or any(pk.pts is None for pk in group) or not group[0].is_keyframe:
            return None
        return times

    def decode_group(group: list[av.Packet], taken: set[int] | None) -> Iterator[SampledFrame]:
        for packet in group:
            skip: _Skip = base_skip
            if taken is not None and plan is not None and plan.ok and packet.pts not in taken:
                skip = "NONREF"
            yield from decode(packet, skip)

    try:
        if plan is None:
            for packet in container.demux(stream):
                stats.packets += packet.size > 0 or packet.pts is not None
                yield from decode(packet, base_skip)
        else:
            # groups of pictures, key frame to key frame; the previous group's fate is decided once the next
            # is known (an open group's leading frames refer to the group before it, which then must decode)
            pending: tuple[list[av.Packet], set[int] | None] | None = None
            group: list[av.Packet] = []
            first = True
            first_group: list[av.Packet] = []

            def close_group(group: list[av.Packet]) -> Iterator[SampledFrame]:
                nonlocal pending, first, first_group
                times = plannable(group) if plan.ok else None
                if times is None:  # no timestamps to plan on: this group and the rest are decoded whole
                    plan.ok = False
                taken = plan.plan(times) if times is not None else None
                if first:  # the first group is decoded whole: it fixes the origin the plan is checked against
                    first, taken, first_group = False, None, group
                if pending is not None:
                    previous, previous_taken = pending
                    key_pts = group[0].pts  # frames before this key frame lean on the previous group:
                    leading = times is not None and key_pts is not None and min(times)[1] < key_pts
                    if plan.before and taken and previous_taken is not None and times is not None \
                            and min(times)[1] in taken:  # this group's first frame is sampled: the frame before
                        before = plannable(previous)  # it, the previous group's last, must be decoded too
                        if before is not None:
                            previous_taken = previous_taken | {max(before)[1]}
                    # a group is left out only before an IDR: after a key frame that is not one (open groups of
                    # pictures), the decoder's output of the frames that follow went wrong when the group before it
                    # was not fed (frames missing, others late; an open-GOP x264 MP4 at 0.7 fps, tests/decode)
                    if (previous_taken is not None and not previous_taken and not leading and plan.ok
                            and _is_idr(group[0], codec.name, length_size)):  # parsed only when it decides
                        stats.packets_not_decoded += len(previous)  # nothing sampled in it, nothing after refers to it
                    else:
                        yield from decode_group(previous, previous_taken)
                    if previous is first_group and plan.ok:
                        # a packet's timestamp is its frame's only where the container stores presentation times
                        # (some differ from decode times) or the decoder does not reorder (AVI's guessed times do not)
                        reordered = any(pk.pts != pk.dts for pk in previous if pk.pts is not None and pk.dts is not None)
                        plan.ok = reordered or codec.has_b_frames == 0
                pending = (group, taken)

            flush: av.Packet | None = None
            for packet in container.demux(stream):
                if packet.size == 0 and packet.pts is None:  # the flush packet at the end: decoded last
                    flush = packet
                    continue
                stats.packets += 1
                if (packet.is_keyframe and group) or len(group) >= _MAX_GROUP_PACKETS:
                    if len(group) >= _MAX_GROUP_PACKETS:  # too long to read ahead: decode it whole, plan no more
                        plan.ok = False
                    yield from close_group(group)
                    group = []
                group.append(packet)
            if group:
                yield from close_group(group)
            if pending is not None:
                if pending[1] is not None and not pending[1] and plan.ok:  # the last group, and nothing sampled in it
                    stats.packets_not_decoded += len(pending[0])
                else:
                    yield from decode_group(*pending)
            if flush is not None:  # the decoder's delayed frames
                yield from decode(flush, base_skip)
            stats.planned = plan.ok
    except _TooManyErrors:
        pass
    except av.error.FFmpegError as exc:
        state.failures += 1
        last_error[:] = [exc]
    yield from held_out(None, None)  # a first sample with nothing decoded after it: paired with itself
    if stats.pairs_without_neighbour and base_skip == "DEFAULT" and stats.frames_sampled > 1:
        log.warning("%s: %d of %d samples had no frame decoded within %.3f s (the stream's frame rate %.3g may be "
                    "misstated): paired with themselves, no motion", p, stats.pairs_without_neighbour,
                    stats.frames_sampled, near, rate)
    failures = state.failures
    error = last_error[0] if last_error else None
    if failures:
        log.warning("%s: %d packet(s) failed to decode (last: %s)", p, failures, error)
    if state.produced == 0:
        detail = f" ({failures} packet errors, last: {error})" if failures else ""
        raise DecodeError(f"{p}: no decodable video frame{detail}; the file may be truncated or corrupt")


@dataclass
class _State:
    """The sampler's running state in one :func:`iter_frames` call."""

    next_time: float = 0.0
    origin: float | None = None
    index: int = 0
    produced: int = 0
    failures: int = 0
    consecutive: int = 0
    last: Any = None  # with pairs: the last frame decoded (av.VideoFrame) and its time
    last_t: float | None = None
    held: tuple[float, NDArray[np.uint8], NDArray[np.uint8], float] | None = None  # the first sample, see held_out


class _TooManyErrors(Exception):
    """Internal: this many packets in a row failed to decode; give up on the file."""
