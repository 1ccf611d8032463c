"""decode -> frame encoder -> windows -> temporal aggregator, for one file.

Used the same way for indexing and for queries, so a query is cut and encoded exactly like the
references it is compared with.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from vidsearch.config import CollectionConfig
from vidsearch.decode import MediaInfo, Segment, iter_frames, make_segments, probe
from vidsearch.encode.frame import FrameEncoder, load_encoder
from vidsearch.encode.temporal import TemporalAggregator, load_aggregator


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
    """

    info: MediaInfo
    times: NDArray[np.float64]
    frame_vectors: NDArray[np.float32]
    segments: list[Segment]
    segment_vectors: NDArray[np.float32]
    timings: dict[str, float] = field(default_factory=dict)


def segment_vectors(
    frame_vectors: NDArray[np.float32], segments: list[Segment], aggregator: TemporalAggregator
) -> NDArray[np.float32]:
    """(S, D) segment vectors from (F, D) frame vectors and the windows' frame ranges."""
    if not segments:
        return np.zeros((0, aggregator.output_dim(frame_vectors.shape[1])), np.float32)
    return np.stack([aggregator.aggregate(frame_vectors[s.frame_start : s.frame_end]) for s in segments])


class MediaEncoder:
    """Holds the loaded models for one collection configuration."""

    def __init__(self, config: CollectionConfig, encoder: FrameEncoder | None = None) -> None:
        self.config = config
        self.encoder = encoder or load_encoder(config.encode.encoder)
        self.aggregator = load_aggregator(config.encode.aggregator)

    @property
    def frame_dim(self) -> int:
        return self.encoder.dim

    @property
    def segment_dim(self) -> int:
        return self.aggregator.output_dim(self.encoder.dim)

    def encode_file(self, path: str | Path) -> EncodedMedia:
        """Decode, encode and segment one file.

        Raises:
            DecodeError: the file is not a readable video or image.
        """
        cfg = self.config
        t0 = time.perf_counter()
        info = probe(path)
        decode_s = time.perf_counter() - t0
        encode_s = 0.0
        batch: list[NDArray[np.uint8]] = []
        times: list[float] = []
        chunks: list[NDArray[np.float32]] = []
        frames = iter_frames(path, self.encoder.input_size, fps=cfg.decode.fps, keyframes_only=cfg.decode.keyframes_only)
        t = time.perf_counter()
        for frame in frames:
            batch.append(frame.image)
            times.append(frame.time)
            if len(batch) == cfg.encode.batch_size:
                decode_s += time.perf_counter() - t
                t = time.perf_counter()
                chunks.append(self.encoder.encode(np.stack(batch)))
                batch.clear()
                encode_s += time.perf_counter() - t
                t = time.perf_counter()
        decode_s += time.perf_counter() - t
        if batch:
            t = time.perf_counter()
            chunks.append(self.encoder.encode(np.stack(batch)))
            encode_s += time.perf_counter() - t
        frame_vectors = np.concatenate(chunks)
        times_arr = np.asarray(times, dtype=np.float64)
        if not info.is_image:
            frame_period = 1.0 / info.fps if info.fps > 0 else 0.0
            duration = max(info.duration, float(times_arr[-1]) + frame_period)
            info = MediaInfo(**{**info.__dict__, "duration": round(duration, 3)})
        return self.encode_frames(info, times_arr, frame_vectors, {"decode": decode_s, "encode": encode_s})

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
