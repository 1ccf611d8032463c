"""decode -> frame encoder -> windows -> temporal aggregator, for one file.

Used the same way for indexing and for queries, so a query is cut and encoded exactly like the
references it is compared with.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from vidsearch.config import CollectionConfig, runtime_variant
from vidsearch.decode import MediaInfo, SampledFrame, Segment, is_image_path, iter_frames, make_segments, probe
from vidsearch.decode.prefetch import Prefetcher
from vidsearch.encode.frame import FrameEncoder, load_encoder
from vidsearch.encode.layout import MAX_INSETS, detect_insets
from vidsearch.encode.motion import FLOW_SIZE, pair_flow
from vidsearch.encode.streams import check_streams, fuse_streams, stream_dim
from vidsearch.encode.temporal import MeanPool, TemporalAggregator, l2_normalize, load_temporal
from vidsearch.errors import QueryError, ShapeError


@dataclass
class EncodedMedia:
    """Everything the pipeline learns about one file.

    Attributes:
        info: probe result; ``duration`` corrected from the decoded frames when the header lied.
        times: (F,) float64 frame times in seconds.
        frame_vectors: (F, D) float32 L2-normalised frame vectors.
        segments: the windows, each a frame range.
        segment_vectors: (S, D) float32 L2-normalised segment vectors.
        timings: seconds spent in ``decode`` and ``encode``.
        region_segment_vectors: with ``encode_file(crops=True)``, (S, D) segment vectors of each
            crop region (:data:`CROP_REGIONS`), same windows; with ``insets=True`` also of each inset
            slot (``layout.MAX_INSETS``); empty otherwise.
        region_segment_blank: (S,) bool per region: every frame of the window is blank in that
            region (:func:`blank_images`).
        query_encoder: set when a query was encoded by another encoder than its collection's
            (``SearchParams.query_encoder``); None otherwise.

    With extra streams (``EncodeConfig.motion``, ``depth``) ``frame_vectors`` and every region's vectors are the
    frame encoder's fused with the frame's streams (:func:`vidsearch.encode.streams.fuse_streams`).
    """

    info: MediaInfo
    times: NDArray[np.float64]
    frame_vectors: NDArray[np.float32]
    segments: list[Segment]
    segment_vectors: NDArray[np.float32]
    timings: dict[str, float] = field(default_factory=dict)
    region_segment_vectors: list[NDArray[np.float32]] = field(default_factory=list)
    region_segment_blank: list[NDArray[np.bool_]] = field(default_factory=list)
    query_encoder: str | None = None


@dataclass
class DecodedMedia:
    """One file's sampled frames, decoded and converted to the encoder's input size, not yet encoded
    (:meth:`MediaEncoder.decode_file`).

    Attributes:
        info: probe result (duration as the header says; :meth:`MediaEncoder.finish` corrects it).
        times: (F,) float64 frame times in seconds.
        images: (F, H, W, 3) uint8 RGB frames at the encoder's ``input_size``.
        decode_seconds: time spent probing and decoding (and finding insets).
        insets: with ``decode_file(insets=True)``, (K, H, W, 3) uint8: every inset found in the frames, cut and
            resized to the encoder's input size (K may be 0); None without insets.
        inset_where: (frame index, slot) of each of ``insets``.
        streams: with extra streams (``EncodeConfig.motion``, ``depth``), (F, M) float32: each frame's stream
            rows (:meth:`MediaEncoder.streams`; computed in the decode step, so off the server's event loop);
            None without.
    """

    info: MediaInfo
    times: NDArray[np.float64]
    images: NDArray[np.uint8]
    decode_seconds: float
    insets: NDArray[np.uint8] | None = None
    inset_where: list[tuple[int, int]] = field(default_factory=list)
    streams: NDArray[np.float32] | None = None

    @property
    def units(self) -> int:
        """Images to encode: the frames and the insets."""
        return len(self.images) + (0 if self.insets is None else len(self.insets))

    @property
    def all_images(self) -> NDArray[np.uint8]:
        """The frames, then the insets: one encoder input (:meth:`MediaEncoder.finish` splits it back)."""
        if self.insets is None or not len(self.insets):
            return self.images
        return np.concatenate([self.images, self.insets])


# Frames the decode thread hands over at a time (encode_file); small, so the encoder waits little for its batch.
PREFETCH_CHUNK = 4
# Decoder threads (FFmpeg frame + slice threads) while the encoder runs on the other core; 0 lets FFmpeg choose.
DECODE_THREADS = 0
# Frames per encoder call in encode_file (None: the configuration's batch_size).
ENCODE_CHUNK: int | None = None

# A crop is blank when at least this fraction of its pixels lie within BLANK_TOLERANCE (0-255 grey
# levels) of its median: a black border, a dark corner, a small object on a plain background. Blank
# crops look alike in every video (any fade to black), so they must not vote.
BLANK_FRACTION = 0.85
BLANK_TOLERANCE = 12


def blank_images(images: NDArray[np.uint8]) -> NDArray[np.bool_]:
    """(N, H, W, 3) uint8 -> (N,) bool: mostly one flat colour (see BLANK_FRACTION)."""
    grey = images[..., :3].astype(np.int16).mean(axis=3).reshape(len(images), -1)
    median = np.median(grey, axis=1, keepdims=True)
    return (np.abs(grey - median) <= BLANK_TOLERANCE).mean(axis=1) >= BLANK_FRACTION


# Query crop regions (left, top, right, bottom as fractions of the frame): the four corners and the
# centre, each 55 % of each side. A video shown inside another (picture-in-picture, a phone filming
# a screen, a split screen) fills most of one of them, while the whole frame is mostly the host.
CROP_REGIONS: tuple[tuple[float, float, float, float], ...] = (
    (0.0, 0.0, 0.55, 0.55), (0.45, 0.0, 1.0, 0.55), (0.0, 0.45, 0.55, 1.0), (0.45, 0.45, 1.0, 1.0),
    (0.225, 0.225, 0.775, 0.775),
)


def segment_vectors(
    frame_vectors: NDArray[np.float32], segments: list[Segment], aggregator: TemporalAggregator
) -> NDArray[np.float32]:
    """(S, D) segment vectors from (F, D) frame vectors and the windows' frame ranges."""
    if not segments:
        return np.zeros((0, aggregator.output_dim(frame_vectors.shape[1])), np.float32)
    many = getattr(aggregator, "aggregate_many", None)  # learned models run every window in a few batched calls
    if many is not None:
        return np.asarray(many([frame_vectors[s.frame_start : s.frame_end] for s in segments]), np.float32)
    if isinstance(aggregator, MeanPool) and frame_vectors.ndim == 2 and len(frame_vectors):
        # every window's mean from one float64 running sum (a stored-range query: 70 against 191 us for 9 windows,
        # within 2e-8 of the mean per window)
        lo = np.array([s.frame_start for s in segments], np.intp)
        hi = np.array([s.frame_end for s in segments], np.intp)
        if (hi > lo).all():
            cs = np.zeros((len(frame_vectors) + 1, frame_vectors.shape[1]), np.float64)
            np.cumsum(frame_vectors, axis=0, dtype=np.float64, out=cs[1:])
            return l2_normalize(((cs[hi] - cs[lo]) / (hi - lo)[:, None]).astype(np.float32))
    return np.stack([aggregator.aggregate(frame_vectors[s.frame_start : s.frame_end]) for s in segments])


class MediaEncoder:
    """Holds the loaded models for one collection configuration.

    ``MediaEncoder.cache``: when set to a dict (benchmarks do, ``vidsearch eval``), results of
    ``encode_file`` are kept per (file, size, mtime, configuration, crops) for the life of the
    process, so several methods over the same references and queries decode and encode them once.
    Off (None) by default: a long-lived server must not grow without bound.
    """

    cache: dict[tuple[object, ...], "EncodedMedia"] | None = None

    def __init__(self, config: CollectionConfig, encoder: FrameEncoder | None = None, overlap: bool = True,
                 decode_threads: int = DECODE_THREADS, encode_chunk: int | None = ENCODE_CHUNK) -> None:
        """
        Args:
            config: the collection's configuration.
            encoder: a loaded frame encoder (default: the collection's encoder in its variant,
                :func:`vidsearch.config.runtime_variant`).
            overlap: decode in a thread while this one encodes (:meth:`encode_file`).
            decode_threads: FFmpeg decoder threads (0: FFmpeg's choice).
            encode_chunk: frames per encoder call (None: ``config.encode.batch_size``; never more than it);
                smaller calls start the encoder sooner after the decoder, so a short clip overlaps too.
        """
        self.config = config
        self.encoder = encoder or load_encoder(config.encode.encoder, runtime_variant(config.encode))
        self.aggregator = load_temporal(config.encode)  # mean pooling, or the collection's learned model
        info = getattr(self.aggregator, "info", None)
        check_streams(config.encode, getattr(info, "streams", None))
        # extra streams fused with each frame vector: the grey pairs the flow is measured on, depth
        self.pair_size = FLOW_SIZE if config.encode.motion == "flow" else None
        self.depth = config.encode.depth == "early"
        self.overlap = overlap
        self.decode_threads = decode_threads
        self.encode_chunk = encode_chunk

    def iter_frames(self, path: str | Path, size: tuple[int, int]) -> Iterator[SampledFrame]:
        """The sampled frames of ``path`` at ``size``, decoded as the configuration says (``DecodeConfig``)."""
        d = self.config.decode
        return iter_frames(path, size, fps=d.fps, keyframes_only=d.keyframes_only, skip_nonref=d.skip_nonref,
                           skip_loop_filter=d.skip_loop_filter, threads=self.decode_threads, pair_size=self.pair_size)

    def streams(self, path: str | Path, times: NDArray[np.float64] | list[float],
                pairs: list[NDArray[np.uint8]]) -> NDArray[np.float32] | None:
        """The extra stream rows of the sampled frames of ``path`` at ``times`` (None without streams): the flow of
        each frame's grey pair (``pairs``, decoded with them), then the depth vector of the depth frame nearest
        to it (zero for a file with no depth stream)."""
        parts = []
        if self.pair_size is not None:
            parts.append(pair_flow(np.stack(pairs)))
        if self.depth:
            from vidsearch.decode.depth import depth_near
            from vidsearch.encode.depth import depth_dim, depth_vectors

            near = None if is_image_path(path) else depth_near(path, times, lambda frame: depth_vectors(frame[None])[0])
            parts.append(np.zeros((len(times), depth_dim()), np.float32) if near is None else near)
        return np.concatenate(parts, axis=1) if parts else None

    @property
    def frame_dim(self) -> int:
        """Width of the frame vectors stored: the encoder's, + the streams'."""
        return self.encoder.dim + stream_dim(self.config.encode)

    @property
    def segment_dim(self) -> int:
        return self.aggregator.output_dim(self.frame_dim)

    def encode_file(self, path: str | Path, crops: bool = False, insets: bool = False) -> EncodedMedia:
        """Decode, encode and segment one file.

        Args:
            path: a video or image file.
            crops: also encode the :data:`CROP_REGIONS` of every sampled frame (queries only:
                6x the encoding work); their segment vectors go to ``region_segment_vectors``.
            insets: also encode the insets :func:`~vidsearch.encode.layout.detect_insets` finds in each
                sampled frame (picture-in-picture, split screens; queries only): ``MAX_INSETS`` more
                regions after the crops, blank where a frame has none, so only frames with an inset
                cost more encoding.

        Raises:
            DecodeError: the file is not a readable video or image.
        """
        cfg = self.config
        key = None
        if MediaEncoder.cache is not None:
            st = Path(path).stat()
            key = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns, self.encoder.name, repr(cfg.decode),
                   repr(cfg.segment), repr(cfg.encode), crops, insets)
            hit = MediaEncoder.cache.get(key)
            if hit is not None:
                return hit
        t0 = time.perf_counter()
        info = probe(path)
        decode_s = time.perf_counter() - t0
        encode_s = 0.0
        batch: list[NDArray[np.uint8]] = []
        times: list[float] = []
        pairs: list[NDArray[np.uint8]] = []
        chunks: list[NDArray[np.float32]] = []
        n_regions = (len(CROP_REGIONS) if crops else 0) + (MAX_INSETS if insets else 0)
        region_chunks: list[list[NDArray[np.float32]]] = [[] for _ in range(n_regions)]
        region_blank: list[list[NDArray[np.bool_]]] = [[] for _ in range(n_regions)]
        w, h = self.encoder.input_size
        # crops and insets are cut from frames decoded at twice the model size, so each is about model size
        size = (2 * w, 2 * h) if crops or insets else (w, h)

        def flush() -> None:
            images = np.stack(batch)
            if not crops and not insets:
                chunks.append(self.encoder.encode(images))
                return
            chunks.append(self.encoder.encode(_resize_all(images, (w, h))))
            if crops:
                for r, region in enumerate(CROP_REGIONS):
                    cut = _resize_all(_crop_all(images, region), (w, h))
                    region_chunks[r].append(self.encoder.encode(cut))
                    region_blank[r].append(blank_images(cut))
            if insets:
                first = len(CROP_REGIONS) if crops else 0
                cuts, where = _cut_insets(images, (w, h))
                vectors = self.encoder.encode(cuts) if len(cuts) else np.zeros((0, self.encoder.dim), np.float32)
                for slot, (v, blank) in enumerate(_place_insets(len(images), cuts, where, vectors)):
                    region_chunks[first + slot].append(v)
                    region_blank[first + slot].append(blank)

        call_size = min(cfg.encode.batch_size, self.encode_chunk or cfg.encode.batch_size)

        def add(frame: SampledFrame) -> None:
            nonlocal encode_s
            batch.append(frame.image)
            times.append(frame.time)
            if frame.pair is not None:
                pairs.append(frame.pair)
            if len(batch) == call_size:
                t = time.perf_counter()
                flush()
                batch.clear()
                encode_s += time.perf_counter() - t

        decode_thread_s = 0.0
        if self.overlap and not info.is_image:
            # decode in a thread, PREFETCH_CHUNK frames at a time, while this thread encodes (both release the
            # GIL); ``decode`` is then the time spent waiting for frames, so decode + encode is still wall time
            depth = max(2, -(-2 * cfg.encode.batch_size // PREFETCH_CHUNK))  # about two encoder batches ahead
            with Prefetcher(lambda: self.iter_frames(path, size), chunk=PREFETCH_CHUNK, depth=depth) as ahead:
                t = time.perf_counter()
                for frames in ahead:
                    decode_s += time.perf_counter() - t
                    for frame in frames:
                        add(frame)
                    t = time.perf_counter()
                decode_s += time.perf_counter() - t
                decode_thread_s = ahead.busy_seconds
        else:
            t = time.perf_counter()
            for frame in self.iter_frames(path, size):
                decode_s += time.perf_counter() - t
                add(frame)
                t = time.perf_counter()
            decode_s += time.perf_counter() - t
        if batch:
            t = time.perf_counter()
            flush()
            encode_s += time.perf_counter() - t
        t = time.perf_counter()
        streams = self.streams(path, times, pairs)
        streams_s = time.perf_counter() - t
        frame_vectors = fuse_streams(np.concatenate(chunks), streams)
        times_arr = np.asarray(times, dtype=np.float64)
        info = _decoded_duration(info, times_arr)
        timings = {"decode": decode_s, "encode": encode_s + streams_s}
        if streams is not None:
            timings["streams"] = streams_s  # part of "encode": the flow, the depth read and reduced
        if decode_thread_s:
            timings["decode_thread"] = decode_thread_s  # overlapped with encoding: not part of the wall time
        media = self.encode_frames(info, times_arr, frame_vectors, timings)
        self._add_regions(media, [fuse_streams(np.concatenate(c), streams) for c in region_chunks],
                          [np.concatenate(b) for b in region_blank])
        if key is not None and MediaEncoder.cache is not None:
            MediaEncoder.cache[key] = media
        return media

    def _add_regions(self, media: EncodedMedia, vectors: list[NDArray[np.float32]],
                     blank: list[NDArray[np.bool_]]) -> None:
        """Set ``media``'s region segment vectors and blank flags from each region's (F, D) frame vectors and
        (F,) blank flags, over the same windows as the whole frame."""
        media.region_segment_vectors = [segment_vectors(v, media.segments, self.aggregator) for v in vectors]
        media.region_segment_blank = [
            np.array([bool(np.all(b[sg.frame_start : sg.frame_end])) for sg in media.segments], dtype=bool)
            for b in blank]

    def decode_file(self, path: str | Path, max_seconds: float | None = None, insets: bool = False) -> DecodedMedia:
        """The decode step of :meth:`encode_file` alone (no crops): probe, then every sampled frame at the
        encoder's input size, so frames of several files can be encoded in one call (the server's batches).

        ``encode_file(path, insets=insets)`` equals ``finish(decoded, encoder.encode(decoded.all_images), seconds)``.

        Args:
            path: a video or image file.
            max_seconds: refuse a video longer than this (by its header, and by the frames decoded, in
                case the header lies), so a long file cannot fill memory with frames.
            insets: also find the insets of each frame (decoded at twice the input size, as
                :meth:`encode_file` does) and cut them out (``DecodedMedia.insets``).

        Raises:
            DecodeError: the file is not a readable video or image.
            QueryError: the video is longer than ``max_seconds``.
        """
        cfg = self.config
        t0 = time.perf_counter()
        info = probe(path)
        if max_seconds is not None and info.duration > max_seconds:
            raise QueryError(f"{path}: the video lasts {info.duration:.1f} s, longer than the {max_seconds:g} s "
                             "allowed for a query; cut a shorter clip")
        # frames sampled over max_seconds at the configured rate, plus slack for rounding
        limit = None if max_seconds is None else int(math.ceil(max_seconds * cfg.decode.fps)) + 2
        images: list[NDArray[np.uint8]] = []
        times: list[float] = []
        pairs: list[NDArray[np.uint8]] = []
        w, h = self.encoder.input_size
        for frame in self.iter_frames(path, (2 * w, 2 * h) if insets else (w, h)):
            if limit is not None and len(images) >= limit:
                raise QueryError(f"{path}: more than {limit} frames sampled at {cfg.decode.fps:g} fps (longer than "
                                 f"the {max_seconds:g} s allowed for a query, whatever its header says); cut a "
                                 "shorter clip")
            images.append(frame.image)
            times.append(frame.time)
            if frame.pair is not None:
                pairs.append(frame.pair)
        frames = np.stack(images)
        times_arr = np.asarray(times, dtype=np.float64)
        streams = self.streams(path, times_arr, pairs)
        if not insets:
            return DecodedMedia(info, times_arr, frames, time.perf_counter() - t0, streams=streams)
        cuts, where = _cut_insets(frames, (w, h))
        return DecodedMedia(info, times_arr, _resize_all(frames, (w, h)), time.perf_counter() - t0, cuts, where,
                            streams=streams)

    def finish(self, decoded: DecodedMedia, frame_vectors: NDArray[np.float32],
               encode_seconds: float = 0.0) -> EncodedMedia:
        """The rest of :meth:`encode_file` after its frames were encoded elsewhere: the duration taken from
        the decoded frames, windows and segment vectors.

        Args:
            decoded: from :meth:`decode_file`.
            frame_vectors: (F + K, D) float32 vectors of ``decoded.all_images`` (the F frames, then the K
                insets) from this encoder (the streams, if any, are fused here).
            encode_seconds: time spent encoding them (reported in ``timings["encode"]``).

        Raises:
            ShapeError: not one vector of this encoder's width per decoded frame and inset.
        """
        if frame_vectors.shape != (decoded.units, self.encoder.dim):
            raise ShapeError(f"expected ({decoded.units}, {self.encoder.dim}) vectors, one per decoded frame and "
                             f"inset, got {frame_vectors.shape}")
        n = len(decoded.times)
        info = _decoded_duration(decoded.info, decoded.times)
        media = self.encode_frames(info, decoded.times, fuse_streams(frame_vectors[:n], decoded.streams),
                                   {"decode": decoded.decode_seconds, "encode": encode_seconds})
        if decoded.insets is not None:
            placed = _place_insets(n, decoded.insets, decoded.inset_where, frame_vectors[n:])
            self._add_regions(media, [fuse_streams(v, decoded.streams) for v, _ in placed], [b for _, b in placed])
        return media

    def encode_frames(
        self,
        info: MediaInfo,
        times: NDArray[np.float64],
        frame_vectors: NDArray[np.float32],
        timings: dict[str, float] | None = None,
    ) -> EncodedMedia:
        """Cut windows over already-encoded frames and aggregate them into segment vectors."""
        t = time.perf_counter()
        segs = make_segments(times, info.duration, self.config.segment.window, self.config.segment.stride)
        vectors = segment_vectors(frame_vectors, segs, self.aggregator)
        timings = dict(timings or {})
        timings["encode"] = timings.get("encode", 0.0) + time.perf_counter() - t
        return EncodedMedia(info, times, frame_vectors, segs, vectors, timings)


def _decoded_duration(info: MediaInfo, times: NDArray[np.float64]) -> MediaInfo:
    """``info`` with a video's duration at least up to its last decoded frame (headers may lie)."""
    if info.is_image:
        return info
    frame_period = 1.0 / info.fps if info.fps > 0 else 0.0
    duration = max(info.duration, float(times[-1]) + frame_period)
    return MediaInfo(**{**info.__dict__, "duration": round(duration, 3)})


def _cut_insets(images: NDArray[np.uint8], size: tuple[int, int]) -> tuple[NDArray[np.uint8], list[tuple[int, int]]]:
    """Every inset :func:`detect_insets` finds in ``images`` (N, H, W, 3), cut and resized to ``size``:
    (K, size[1], size[0], 3) uint8, and the (frame index, slot) of each."""
    cuts, where = [], []
    for i, image in enumerate(images):
        for slot, box in enumerate(detect_insets(image)):
            cuts.append(_resize_all(_crop_all(images[i : i + 1], box.region), size)[0])
            where.append((i, slot))
    if not cuts:
        return np.zeros((0, size[1], size[0], 3), np.uint8), where
    return np.stack(cuts), where


def _place_insets(n: int, cuts: NDArray[np.uint8], where: list[tuple[int, int]],
                  vectors: NDArray[np.float32]) -> list[tuple[NDArray[np.float32], NDArray[np.bool_]]]:
    """Per inset slot (``MAX_INSETS``): (n, D) vectors of each of ``n`` frames' inset in that slot (zeros
    where it has none) and (n,) True where a frame has none (or a blank one), from the cuts of
    :func:`_cut_insets` and their vectors (K, D)."""
    dim = vectors.shape[1]
    out = [(np.zeros((n, dim), np.float32), np.ones(n, bool)) for _ in range(MAX_INSETS)]
    if len(cuts):
        for (i, slot), v, b in zip(where, vectors, blank_images(cuts)):
            out[slot][0][i] = v
            out[slot][1][i] = b
    return out


def _crop_all(images: NDArray[np.uint8], region: tuple[float, float, float, float]) -> NDArray[np.uint8]:
    _, h, w, _ = images.shape
    left, top, right, bottom = region
    return images[:, int(round(top * h)) : int(round(bottom * h)), int(round(left * w)) : int(round(right * w))]


def _resize_all(images: NDArray[np.uint8], size: tuple[int, int]) -> NDArray[np.uint8]:
    """(N, H, W, 3) -> (N, size[1], size[0], 3), bilinear (Pillow)."""
    from PIL import Image

    if images.shape[2] == size[0] and images.shape[1] == size[1]:
        return images
    return np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(im)).resize(size, Image.Resampling.BILINEAR)) for im in images])
