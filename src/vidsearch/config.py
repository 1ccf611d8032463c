"""Build-time configuration: frozen dataclasses saved in the collection manifest.

Search-time parameters are not here; they travel per call in :class:`vidsearch.search.SearchParams`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from vidsearch.errors import ConfigError

ENCODERS = ("sscd", "sscd-distilled", "effnet-lite0")


@dataclass(frozen=True)
class DecodeConfig:
    """How frames are sampled from a video.

    Attributes:
        fps: frames sampled per second of video (uniform in presentation time).
        keyframes_only: decode only key frames (fast path); ``fps`` then caps their rate.
    """

    fps: float = 1.0
    keyframes_only: bool = False

    def __post_init__(self) -> None:
        if not (0.01 <= self.fps <= 60):
            raise ConfigError(f"fps must be between 0.01 and 60 frames per second, got {self.fps}; pass e.g. --fps 1")


@dataclass(frozen=True)
class SegmentConfig:
    """Fixed windows (segments) of ``window`` seconds every ``stride`` seconds."""

    window: float = 2.0
    stride: float = 1.0

    def __post_init__(self) -> None:
        if self.window <= 0 or self.stride <= 0:
            raise ConfigError(f"window and stride must be > 0 seconds, got window={self.window}, stride={self.stride}")
        if self.stride > self.window:
            raise ConfigError(
                f"stride ({self.stride}s) larger than window ({self.window}s) would leave gaps; use stride <= window"
            )


@dataclass(frozen=True)
class EncodeConfig:
    """Which pretrained frame encoder and which temporal aggregator make segment vectors."""

    encoder: str = "sscd"
    aggregator: str = "mean"
    batch_size: int = 32

    def __post_init__(self) -> None:
        if self.encoder not in ENCODERS:
            raise ConfigError(f"unknown encoder {self.encoder!r}; expected one of {', '.join(ENCODERS)}")
        if self.aggregator != "mean":
            raise ConfigError(f"unknown aggregator {self.aggregator!r}; expected 'mean'")


@dataclass(frozen=True)
class IndexConfig:
    """Which vector index the collection keeps.

    Attributes:
        kind: ``auto`` (exact search until ``train_min`` segments, then the compressed index),
            ``flat`` (FAISS exact inner product, always) or ``ivfpq`` (the compressed index:
            HNSW over IVF centroids, 8-bit PQ codes, exact re-rank from the stored vectors).
        pq_m: PQ sub-quantizers (a code is pq_m bytes); must divide the code dimension (``reduce``).
        nlist: IVF lists; 0 chooses about 4*sqrt(N) for the N segments indexed, within 6 B/vector
            of centroids (``index.ivf.choose_nlist``).
        quantizer: ``pq``, ``opq`` or ``learned`` codebooks.
        reduce: dimensions the centroids and codes live in: -1 (auto) projects wider segments by
            PCA onto the top ``max(256, 8 * pq_m)`` components, 0 keeps every dimension (re-rank is exact on
            the full vectors either way).
        train_min: segments needed before the compressed index is trained.
        seed: training seed (k-means, codebooks).
    """

    kind: str = "auto"
    pq_m: int = 32
    nlist: int = 0
    quantizer: str = "pq"
    reduce: int = -1
    train_min: int = 20_000
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in ("auto", "flat", "ivfpq"):
            raise ConfigError(f"unknown index kind {self.kind!r}; expected 'auto', 'flat' or 'ivfpq'")
        if self.quantizer not in ("pq", "opq", "learned"):
            raise ConfigError(f"unknown quantizer {self.quantizer!r}; expected 'pq', 'opq' or 'learned'")
        if self.reduce < -1:
            raise ConfigError(f"reduce must be -1 (auto), 0 (every dimension) or a dimension, got {self.reduce}")
        if self.train_min < 256:
            raise ConfigError(f"train_min must be >= 256 segments, got {self.train_min}")


@dataclass(frozen=True)
class CollectionConfig:
    """Every stage's build-time configuration, in pipeline order."""

    decode: DecodeConfig = field(default_factory=DecodeConfig)
    segment: SegmentConfig = field(default_factory=SegmentConfig)
    encode: EncodeConfig = field(default_factory=EncodeConfig)
    index: IndexConfig = field(default_factory=IndexConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CollectionConfig":
        try:
            return cls(
                decode=DecodeConfig(**data.get("decode", {})),
                segment=SegmentConfig(**data.get("segment", {})),
                encode=EncodeConfig(**data.get("encode", {})),
                index=IndexConfig(**data.get("index", {})),
            )
        except TypeError as exc:
            raise ConfigError(f"manifest config has unexpected fields: {exc}; was it written by a newer vidsearch?") from exc
