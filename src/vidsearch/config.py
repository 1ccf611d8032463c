"""Build-time configuration: frozen dataclasses saved in the collection manifest.

Search-time parameters are not here; they travel per call in :class:`vidsearch.search.SearchParams`.

Choices are enums (``IndexKind.IVFPQ``, ``Quantizer.OPQ``, ``Aggregator.MEAN``), checked once in
``__post_init__``: a field accepts the member or its string value (``kind="ivfpq"``) and always
holds the member afterwards. The members are ``str`` subclasses (:class:`enum.StrEnum`), so
``config.kind == "ivfpq"`` holds, ``f"{config.kind}"`` is ``ivfpq`` and the manifest stores plain
strings, as it always has. Encoder names are checked against :mod:`vidsearch.encode.registry`.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from dataclasses import dataclass, field
from typing import Any, TypeVar, Union

from vidsearch.encode import registry
from vidsearch.errors import ConfigError

_E = TypeVar("_E", bound=enum.StrEnum)


class IndexKind(enum.StrEnum):
    """Which vector index a collection keeps (:class:`IndexConfig`)."""

    AUTO = "auto"  # exact until ``train_min`` segments, then the compressed index
    FLAT = "flat"  # FAISS exact inner product, always
    IVFPQ = "ivfpq"  # the compressed index
    MILVUS = "milvus"  # vectors in Milvus (``IndexConfig.milvus_uri``): Milvus Lite or a server


MILVUS_INDEX_TYPES = ("HNSW", "IVF_FLAT", "IVF_SQ8", "IVF_PQ", "FLAT")
"""Milvus index types a collection may ask for (Milvus Lite has no IVF_PQ: ``index/milvus.py``)."""


class Quantizer(enum.StrEnum):
    """Codebooks of the compressed index."""

    PQ = "pq"  # FAISS k-means per sub-space
    OPQ = "opq"  # learned rotation + PQ
    LEARNED = "learned"  # differentiable PQ (needs PyTorch: pip install 'vidsearch[train]')


class Aggregator(enum.StrEnum):
    """Temporal aggregator: a window of frame vectors -> one segment vector."""

    MEAN = "mean"  # mean of the frame vectors, L2-normalised


# What a field accepts: the member or its value (a manifest's string, a CLI argument); the field
# holds the member once the dataclass is built.
IndexKindLike = Union[IndexKind, str]
QuantizerLike = Union[Quantizer, str]
AggregatorLike = Union[Aggregator, str]


def choice(enum_type: type[_E], value: Any, what: str) -> _E:
    """``value`` as a member of ``enum_type`` (a member or its string value); else :class:`ConfigError`."""
    try:
        return enum_type(value)
    except ValueError:
        expected = ", ".join(repr(m.value) for m in enum_type)
        raise ConfigError(f"unknown {what} {value!r}; expected one of {expected}") from None


def _plain_dict(items: list[tuple[str, Any]]) -> dict[str, Any]:
    return {k: (v.value if isinstance(v, enum.Enum) else v) for k, v in items}


@dataclass(frozen=True)
class DecodeConfig:
    """How frames are sampled from a video.

    Decoding is exact by default: only the frames the sampler takes and the frames they are predicted from
    are decoded (``vidsearch.decode.iter_frames``), which yields the very pixels of a decode of every frame.
    The two ``skip_*`` fields trade exactness for speed (docs/RESULTS.md measures what they do to vectors).

    Attributes:
        fps: frames sampled per second of video (uniform in presentation time).
        keyframes_only: decode only key frames (fast path); ``fps`` then caps their rate.
        skip_nonref: never decode a non-reference frame; a sample is the first decodable frame at or after
            its time (a few frames late at most; times are those frames' own). Approximate.
        skip_loop_filter: ``"none"``, ``"nonref"`` (no deblocking of non-reference frames) or ``"all"``
            (none of any frame: errors carry on to the frames predicted from it). Approximate.

    ``skip_nonref`` and ``skip_loop_filter`` came after format_version 1; their defaults are what decoding
    always did, so a manifest without them loads as it did.
    """

    fps: float = 1.0
    keyframes_only: bool = False
    skip_nonref: bool = False
    skip_loop_filter: str = "none"

    def __post_init__(self) -> None:
        if not (0.01 <= self.fps <= 60):
            raise ConfigError(f"fps must be between 0.01 and 60 frames per second, got {self.fps}; pass e.g. --fps 1")
        if not isinstance(self.skip_nonref, bool):
            raise ConfigError(f"skip_nonref must be true or false, got {self.skip_nonref!r}")
        if self.skip_loop_filter not in ("none", "nonref", "all"):
            raise ConfigError(f"skip_loop_filter must be one of 'none', 'nonref', 'all', got {self.skip_loop_filter!r}")


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
    """Which pretrained frame encoder and which temporal aggregator make segment vectors.

    Attributes:
        encoder: a name in :mod:`vidsearch.encode.registry` (``sscd``, ``sscd-distilled``, ``effnet-lite0``).
        aggregator: :class:`Aggregator` (or its value), used when there is no ``temporal_model``.
        batch_size: frames per encoder call.
        temporal_model: path of a learned temporal model (ONNX, from ``vidsearch train``) that replaces
            ``aggregator``; "" for none (the default).
        temporal_hash: SHA-256 (hex) of that model's weights, as its file records it: a collection refuses
            a model file whose weights differ. Set with ``temporal_model``, empty without it.
        variant: the encoder's runtime (a name in its registry entry's ``variants``, e.g. ``onnx`` fp32 or
            ``onnx-int8``); "" is ``onnx``, what every collection made before this field ran. A new collection
            records its encoder's default variant (:func:`resolve_variant`; ``effnet-lite0``: ``onnx-int8``), so
            a later change of the default never changes how an existing collection encodes.
        motion: a pixel-motion stream fused with each frame vector (:data:`MOTIONS`): "" none (the default), or
            ``flow`` (:mod:`vidsearch.encode.motion`: optical flow from the frame before, at 64 px, fused as
            :func:`vidsearch.encode.depth.fuse` does): the stored frame vectors are then
            ``encoder dim + flow dim`` wide (:func:`vidsearch.encode.streams.frame_dim`); what a ``+flow``
            temporal model takes.
        depth: :data:`DEPTHS`: "" none (the default), or ``early``: each frame vector fused with the depth vector
            (:func:`vidsearch.encode.depth.depth_vectors`) of the file's depth frame nearest to it (an RGB-D
            recording's depth stream; a colour-only file gets a zero depth part), what an ``rgbd-early`` model takes.

    The ``temporal_*``, ``variant``, ``motion`` and ``depth`` fields came after format_version 1: :meth:`CollectionConfig.to_dict`
    writes them only when set, so a collection without a learned model, on fp32, has the manifest it always had.
    """

    encoder: str = "sscd"
    aggregator: AggregatorLike = Aggregator.MEAN
    batch_size: int = 32
    temporal_model: str = ""
    temporal_hash: str = ""
    variant: str = ""
    motion: str = ""
    depth: str = ""

    def __post_init__(self) -> None:
        spec = registry.get(self.encoder)  # ConfigError naming the registered encoders
        if self.motion not in MOTIONS:
            raise ConfigError(f"motion must be one of {', '.join(repr(m) for m in MOTIONS)} (\"\": none), got "
                              f"{self.motion!r}")
        if self.depth not in DEPTHS:
            raise ConfigError(f"depth must be one of {', '.join(repr(m) for m in DEPTHS)} (\"\": none), got "
                              f"{self.depth!r}")
        if not isinstance(self.variant, str):
            raise ConfigError(f"variant must be a string, got {self.variant!r}")
        if self.variant:
            spec.check_variant(self.variant)  # ConfigError naming the encoder's variants
        object.__setattr__(self, "aggregator", choice(Aggregator, self.aggregator, "temporal aggregator"))
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ConfigError(f"batch_size must be a positive integer, got {self.batch_size!r}; e.g. 32")
        if not isinstance(self.temporal_model, str) or not isinstance(self.temporal_hash, str):
            raise ConfigError(f"temporal_model and temporal_hash must be strings, got {self.temporal_model!r} and "
                              f"{self.temporal_hash!r}")
        if bool(self.temporal_model) != bool(self.temporal_hash) or (
                self.temporal_hash and (len(self.temporal_hash) != 64
                                        or any(c not in "0123456789abcdef" for c in self.temporal_hash))):
            raise ConfigError(f"a temporal model needs the 64-hex SHA-256 of its weights (and a hash needs its model), "
                              f"got temporal_model={self.temporal_model!r}, temporal_hash={self.temporal_hash!r}; "
                              "pass the model with `vidsearch index --temporal MODEL`, which reads its hash")


MOTIONS = ("", "flow")
"""Values of ``EncodeConfig.motion``."""
DEPTHS = ("", "early")
"""Values of ``EncodeConfig.depth``."""


def resolve_variant(encode: EncodeConfig) -> EncodeConfig:
    """``encode`` with its variant named for a new collection: "" becomes the encoder's default variant (kept ""
    when that is ``onnx``, the meaning "" always had)."""
    if encode.variant:
        return encode
    default = registry.get(encode.encoder).check_variant(None)
    return encode if default == "onnx" else dataclasses.replace(encode, variant=default)


def runtime_variant(encode: EncodeConfig) -> str:
    """The variant a collection with ``encode`` runs its encoder in ("" is ``onnx``)."""
    return encode.variant or "onnx"


@dataclass(frozen=True)
class IndexConfig:
    """Which vector index the collection keeps.

    Attributes:
        kind: :class:`IndexKind` (or its value): ``auto`` (exact search until ``train_min`` segments, then the compressed index),
            ``flat`` (FAISS exact inner product, always) or ``ivfpq`` (the compressed index:
            IVF lists, 4-bit PQ codes scanned by FAISS's fast-scan kernels, exact re-rank from the stored vectors).
        pq_m: bytes of a vector's PQ code, each byte two 4-bit sub-quantizers (``index.base.ivfpq_config``);
            2 * pq_m must divide the code dimension (``reduce``). Indexes saved with 8-bit codes (one
            sub-quantizer a byte, before 4-bit became the default) are still read and searched as they are.
        nlist: IVF lists; 0 chooses about 4*sqrt(N) for the N segments indexed, within 6 B/vector
            of centroids and list padding (``index.ivf.choose_nlist``).
        quantizer: :class:`Quantizer` (or its value): ``pq``, ``opq`` or ``learned`` codebooks.
        reduce: dimensions the centroids and codes live in: -1 (auto) projects wider segments by
            PCA onto the top ``max(256, 8 * pq_m)`` components, 0 keeps every dimension (re-rank is exact on
            the full vectors either way).
        train_min: segments needed before the compressed index is trained.
        seed: training seed (k-means, codebooks).
        milvus_uri: with ``kind="milvus"``: ``milvus:PATH.db`` (Milvus Lite; a relative path is taken from the
            collection folder) or ``milvus://HOST:PORT`` (a server; its token from ``MILVUS_TOKEN``, never stored).
        milvus_index: the Milvus index type (:data:`MILVUS_INDEX_TYPES`).
        milvus_collection: the Milvus collection holding the segments; "" lets ``Collection.create`` (or a move
            into Milvus) choose a name of its own (``vidsearch_`` and 16 random hex digits), so several vidsearch
            collections can share one Milvus server without replacing each other's rows.
    """

    kind: IndexKindLike = IndexKind.AUTO
    pq_m: int = 32
    nlist: int = 0
    quantizer: QuantizerLike = Quantizer.PQ
    reduce: int = -1
    train_min: int = 20_000
    seed: int = 0
    milvus_uri: str = ""
    milvus_index: str = "HNSW"
    milvus_collection: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", choice(IndexKind, self.kind, "index kind"))
        if (self.kind == IndexKind.MILVUS) != bool(self.milvus_uri):
            raise ConfigError("a Milvus store needs kind='milvus' and milvus_uri (milvus:PATH.db or milvus://HOST:PORT) "
                              f"together; got kind={str(self.kind)!r}, milvus_uri={self.milvus_uri!r}")
        if self.milvus_uri and not self.milvus_uri.startswith("milvus:"):
            raise ConfigError(f"milvus_uri must be milvus:PATH.db or milvus://HOST:PORT, got {self.milvus_uri!r}")
        if self.milvus_index not in MILVUS_INDEX_TYPES:
            raise ConfigError(f"milvus_index must be one of {', '.join(MILVUS_INDEX_TYPES)}, got {self.milvus_index!r}")
        if self.milvus_collection and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,254}", self.milvus_collection):
            raise ConfigError("milvus_collection must be a Milvus collection name (a letter or _, then letters, digits "
                              f"or _, at most 255), got {self.milvus_collection!r}")
        object.__setattr__(self, "quantizer", choice(Quantizer, self.quantizer, "quantizer"))
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
        """Plain JSON types (choices as their string values), the form the manifest stores; fields added after
        format_version 1 (``decode.skip_*``, ``encode.temporal_*``, ``encode.variant``, ``encode.motion``, ``encode.depth``, ``index.milvus_*``) only
        when set."""
        plain = dataclasses.asdict(self, dict_factory=_plain_dict)
        if not plain["decode"]["skip_nonref"] and plain["decode"]["skip_loop_filter"] == "none":
            del plain["decode"]["skip_nonref"], plain["decode"]["skip_loop_filter"]  # exact decoding, as always
        for name in ("temporal_model", "temporal_hash", "variant", "motion", "depth"):
            if not plain["encode"][name]:
                del plain["encode"][name]
        if not plain["index"]["milvus_uri"]:
            del plain["index"]["milvus_uri"], plain["index"]["milvus_index"]
        if not plain["index"]["milvus_collection"]:
            del plain["index"]["milvus_collection"]
        return plain

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
