"""Semantic benchmarks on Fashion-MNIST (Debian package ``dataset-fashion-mnist``).

Two benchmarks, both deterministic for a fixed seed (no training happens here):

1. **Image retrieval with a seen/unseen class split.** From the test split, ``n_gallery`` images per
   class form the gallery and ``n_query`` other images per class the queries. Each image (28x28
   grey) is upscaled with Pillow to the encoder's input size and replicated to 3 channels; the
   gallery is ranked by cosine similarity; relevant = same class. P/R/F1/accuracy@k and mAP are
   reported over all queries, over queries of the "seen" classes (0-6 by default), over queries
   of the "unseen" classes (7-9), and per class. The gallery always holds every class. The split
   only matters for learned (temporal) models trained later on the seen classes; frozen encoders
   are reported on both so the later figures have a baseline.

2. **Moving Fashion-MNIST.** Clips of real item images moving on a black canvas: translating
   left/right/up/down, zooming in/out, rotating clockwise/anticlockwise. Each motion passes
   through the centred, upright, scale-1 pose at mid-clip, and opposite motions are exact time
   reversals of each other (``left`` is ``right`` played backwards, and so on). A clip's class is
   (item, motion). Mean-pooled frame vectors ignore frame order, so they cannot tell a motion from
   its reverse (``direction_within_axis`` stays at chance) while retrieval by item is high. The
   motion *axis* (translate / zoom / rotate) still shows a little through appearance, since rotated
   or shrunken frames look different, so motion mAP sits somewhat above 1/8 and P@5 more so.
   Clips can be written as mp4 (:func:`write_clip`) to be indexed by the normal pipeline.
"""

from __future__ import annotations

import gzip
import logging
import math
import os
import re
import struct
import time
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from vidsearch.encode.frame import FrameEncoder, load_encoder
from vidsearch.encode.temporal import MeanPool, TemporalAggregator
from vidsearch.errors import ConfigError, DecodeError
from vidsearch.evaluate import metrics
from vidsearch.evaluate.edits import x264_options

log = logging.getLogger(__name__)

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
"""Where Debian's ``dataset-fashion-mnist`` puts the idx files."""

CLASS_NAMES: tuple[str, ...] = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
"""Fashion-MNIST class names, indexed by label."""

UNSEEN_CLASSES: tuple[int, ...] = (7, 8, 9)
"""Default held-out classes (Sneaker, Bag, Ankle boot); the others (0-6) are "seen"."""

MOTIONS: tuple[str, ...] = ("left", "right", "up", "down", "zoom_in", "zoom_out", "rotate_cw", "rotate_ccw")
"""Motions of :func:`make_moving_fashion`; consecutive pairs are time reversals of each other."""

MOTION_AXIS: dict[str, str] = {
    "left": "horizontal", "right": "horizontal", "up": "vertical", "down": "vertical",
    "zoom_in": "zoom", "zoom_out": "zoom", "rotate_cw": "rotate", "rotate_ccw": "rotate",
}
"""The motion pair (axis) of each motion; the two motions of an axis play the same frames in opposite order."""

ENCODERS: tuple[str, ...] = ("sscd", "sscd-distilled", "effnet-lite0")

MAX_ZOOM = 1.6
"""Zooms go from 1/MAX_ZOOM to MAX_ZOOM times the 28-pixel item (geometric, through 1)."""
MAX_ANGLE = 90.0
"""Rotations go from -MAX_ANGLE to +MAX_ANGLE degrees (clockwise positive)."""
MIN_CANVAS = 48
"""Smallest canvas (pixels) on which the item fits at every pose."""

_SPLIT_PREFIX = {"train": "train", "test": "t10k", "t10k": "t10k"}
_ITEM = 28  # Fashion-MNIST images are 28x28
_BATCH = 64  # images per encoder call
_INSTALL_HINT = "install the Debian package with `apt-get install dataset-fashion-mnist` (or pass data_dir=)"


# ---------------------------------------------------------------------------------------- loading
def _read_idx(path: Path, ndim: int) -> NDArray[np.uint8]:
    """Read a gzipped idx file of unsigned bytes with ``ndim`` dimensions (LeCun's MNIST format)."""
    try:
        with gzip.open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError as exc:
        raise DecodeError(f"{path} does not exist; {_INSTALL_HINT}") from exc
    except (OSError, EOFError) as exc:  # gzip.BadGzipFile is an OSError
        raise DecodeError(f"{path}: not a readable gzip file ({exc}); reinstall dataset-fashion-mnist") from exc
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DecodeError(f"{path}: {len(data)} bytes, shorter than an idx header of {header} bytes; the file is truncated")
    zero, dtype_code, got_ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08 or got_ndim != ndim:
        raise DecodeError(
            f"{path}: idx magic says type 0x{dtype_code:02x} with {got_ndim} dimensions, expected unsigned "
            f"bytes (0x08) with {ndim}; not a Fashion-MNIST idx file"
        )
    shape = struct.unpack(f">{ndim}I", data[4:header])
    expected = int(np.prod(shape))
    if len(data) - header != expected:
        raise DecodeError(
            f"{path}: header says shape {shape} ({expected} bytes) but {len(data) - header} bytes follow; "
            "the file is truncated or corrupt"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape).copy()


def load_fashion_mnist(
    split: str = "test", data_dir: str | os.PathLike[str] | None = None
) -> tuple[NDArray[np.uint8], NDArray[np.int64]]:
    """Read Fashion-MNIST from its gzipped idx files with numpy.

    Args:
        split: ``"train"`` (60,000 images) or ``"test"`` (10,000; ``"t10k"`` also accepted).
        data_dir: folder holding ``{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz``;
            default :data:`FASHION_MNIST_DIR`.

    Returns:
        images uint8 (N, 28, 28), white item on black; labels int64 (N,) in 0..9, see :data:`CLASS_NAMES`.

    Raises:
        ConfigError: unknown split.
        DecodeError: a file is missing, unreadable or malformed (the message says how to install it).
    """
    if split not in _SPLIT_PREFIX:
        raise ConfigError(f"unknown Fashion-MNIST split {split!r}; expected 'train' or 'test'")
    folder = Path(data_dir) if data_dir is not None else FASHION_MNIST_DIR
    prefix = _SPLIT_PREFIX[split]
    images = _read_idx(folder / f"{prefix}-images-idx3-ubyte.gz", 3)
    labels = _read_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", 1).astype(np.int64)
    if images.shape[1:] != (_ITEM, _ITEM) or len(images) != len(labels):
        raise DecodeError(
            f"{folder}: {split} images have shape {images.shape} and labels {labels.shape}; expected "
            f"(N, 28, 28) images and N labels"
        )
    if labels.size and labels.max() >= len(CLASS_NAMES):
        raise DecodeError(f"{folder}: label {labels.max()} in the {split} split; expected 0..9")
    return images, labels


def class_names() -> list[str]:
    """The ten class names, indexed by label."""
    return list(CLASS_NAMES)


def _class_indices(labels: NDArray[np.int64], classes: Sequence[int], per_class: int,
                   rng: np.random.Generator, split: str) -> dict[int, NDArray[np.int64]]:
    """``per_class`` distinct random indices of each class, in a seeded random order."""
    out = {}
    for c in classes:
        idx = np.flatnonzero(labels == c)
        if per_class > len(idx):
            raise ConfigError(
                f"asked for {per_class} images of class {c} ({CLASS_NAMES[c]}) but the {split} split has "
                f"{len(idx)}; lower the per-class counts"
            )
        out[c] = rng.permutation(idx)[:per_class]
    return out


def _check_classes(classes: Sequence[int], what: str) -> tuple[int, ...]:
    out = tuple(int(c) for c in classes)
    bad = [c for c in out if not 0 <= c < len(CLASS_NAMES)]
    if bad or len(set(out)) != len(out) or not out:
        raise ConfigError(f"{what} must be distinct labels in 0..9, got {list(classes)}")
    return out


# ---------------------------------------------------------------------------------------- encoding
def to_encoder_input(images: NDArray[np.uint8], size: tuple[int, int]) -> NDArray[np.uint8]:
    """Resize grey (N, H, W) or RGB (N, H, W, 3) uint8 images to ``size`` (width, height) with
    Pillow (bicubic) and return RGB (N, height, width, 3) uint8, grey replicated to 3 channels."""
    from PIL import Image

    if images.dtype != np.uint8 or images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[3] != 3):
        raise ConfigError(f"expected uint8 images (N, H, W) or (N, H, W, 3), got {images.dtype} {images.shape}")
    w, h = size
    out = np.empty((len(images), h, w, 3), np.uint8)
    for i, img in enumerate(images):
        resized = np.asarray(Image.fromarray(img).resize((w, h), Image.Resampling.BICUBIC))
        out[i] = resized[..., None] if resized.ndim == 2 else resized
    return out


def encode_images(encoder: FrameEncoder, images: NDArray[np.uint8], batch: int = _BATCH) -> NDArray[np.float32]:
    """Encode grey or RGB uint8 images of any size: (N, H, W[, 3]) -> (N, dim) float32, L2-normalised."""
    parts = [encoder.encode(to_encoder_input(images[i : i + batch], encoder.input_size))
             for i in range(0, len(images), batch)]
    return np.concatenate(parts) if parts else np.zeros((0, encoder.dim), np.float32)


def _resolve(encoder: str | FrameEncoder) -> FrameEncoder:
    return load_encoder(encoder) if isinstance(encoder, str) else encoder


def _rank(similarity: NDArray[np.float32]) -> NDArray[np.int64]:
    """(Q, G) similarities -> (Q, G) column indices, most similar first (ties by index)."""
    return np.argsort(-similarity, axis=1, kind="stable")


def _scores(rankings: NDArray[np.int64] | Sequence[Sequence[int]], relevant: list[set[int]],
            k: int) -> dict[str, list[float]]:
    """Per-query P/R/F1/accuracy@k and AP, via the metric functions; one ranking (ids, best first) per query."""
    out: dict[str, list[float]] = {f"precision@{k}": [], f"recall@{k}": [], f"f1@{k}": [],
                                   f"accuracy@{k}": [], "AP": []}
    lists = rankings.tolist() if isinstance(rankings, np.ndarray) else rankings
    for ranking, rel in zip(lists, relevant):
        out[f"precision@{k}"].append(metrics.precision_at_k(ranking, rel, k))
        out[f"recall@{k}"].append(metrics.recall_at_k(ranking, rel, k))
        out[f"f1@{k}"].append(metrics.f1_at_k(ranking, rel, k))
        out[f"accuracy@{k}"].append(metrics.accuracy_at_k(ranking, rel, k))
        out["AP"].append(metrics.average_precision(ranking, rel))
    return out


def _summarise(per_query: dict[str, list[float]], classes: Sequence[Hashable],
               keep: NDArray[np.bool_] | None = None) -> dict[str, float]:
    """Macro means (every class weighs the same) over the queries selected by ``keep``; AP -> mAP."""
    out = {}
    for name, values in per_query.items():
        v = np.asarray(values)
        c = np.asarray(classes, dtype=object)
        if keep is not None:
            v, c = v[keep], c[keep]
        out["mAP" if name == "AP" else name] = metrics.macro_mean(v.tolist(), c.tolist())
    return out


def _label_scores(
    rankings: NDArray[np.int64] | list[list[int]], key: Sequence[Hashable], k: int,
    ids: Sequence[int] | None = None, chance: float | None = None,
) -> tuple[dict[str, list[float]], dict[str, Any]]:
    """Leave-one-out retrieval scores with relevance = same ``key`` value.

    ``rankings[q]`` ranks candidate ids (query excluded) for the query ``ids[q]`` (default q);
    ``key[q]`` is that query's label, and candidates are relevant when their label (looked up
    through ``ids``) is equal. Returns per-query scores and macro means with chance levels
    (``chance`` defaults to 1 / number of labels; pass it when each query sees fewer labels).
    """
    ids = list(range(len(key))) if ids is None else list(ids)
    label_of = dict(zip(ids, key))
    groups: dict[Hashable, set[int]] = {}
    for i, v in label_of.items():
        groups.setdefault(v, set()).add(i)
    pool_sizes = [len(r) for r in rankings]
    relevant = [groups[v] - {i} for i, v in zip(ids, key)]
    scores = _scores(rankings, relevant, k)
    summary = {
        "mAP": metrics.macro_mean(scores["AP"], key),
        f"precision@{k}": metrics.macro_mean(scores[f"precision@{k}"], key),
        f"recall@{k}": metrics.macro_mean(scores[f"recall@{k}"], key),
        f"f1@{k}": metrics.macro_mean(scores[f"f1@{k}"], key),
        "n_classes": len(groups),
        "n_queries": len(key),
        "chance": 1.0 / len(groups) if chance is None else chance,
        "random_precision": float(np.mean([len(r) / n for r, n in zip(relevant, pool_sizes)])),
        "random_mAP": metrics.macro_mean(
            [random_average_precision(n, len(r)) for r, n in zip(relevant, pool_sizes)], key),
    }
    return scores, summary


def random_average_precision(n_total: int, n_relevant: int) -> float:
    """Expected AP of a uniformly random ranking of ``n_total`` items, ``n_relevant`` of them relevant.

    With H_N the N-th harmonic number: E[AP] = (H_N + (R - 1) (N - H_N) / (N - 1)) / N, slightly
    above R / N for small N (the item at rank r has on average (R-1)(r-1)/(N-1) relevant above it).
    """
    n, r = n_total, n_relevant
    if r <= 0 or n <= 0:
        return 0.0
    if n == 1:
        return 1.0
    harmonic = float(np.sum(1.0 / np.arange(1, n + 1)))
    return (harmonic + (r - 1) * (n - harmonic) / (n - 1)) / n


def _chance_accuracy(n_total: int, n_relevant: int, k: int) -> float:
    """P(at least one relevant in k draws without replacement)."""
    if n_total - n_relevant < k:
        return 1.0
    return 1.0 - math.comb(n_total - n_relevant, k) / math.comb(n_total, k)


# ---------------------------------------------------------------------------------------- retrieval
def run_fashion_retrieval(
    encoders: Sequence[str | FrameEncoder] = ENCODERS,
    n_gallery: int = 100,
    n_query: int = 20,
    seed: int = 0,
    unseen_classes: Sequence[int] = UNSEEN_CLASSES,
    k: int = 5,
    data_dir: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Image retrieval on the Fashion-MNIST test split, per frame encoder, split by seen/unseen class.

    Args:
        encoders: encoder names (see :func:`vidsearch.encode.frame.load_encoder`) or encoder objects.
        n_gallery: gallery images per class.
        n_query: query images per class (distinct from the gallery images).
        seed: seeds the choice of gallery and query images.
        unseen_classes: labels held out as "unseen"; the rest are "seen".
        k: cut-off of P/R/F1/accuracy@k.
        data_dir: Fashion-MNIST folder (default the Debian one).

    Returns:
        A JSON-serialisable dict: ``config``, ``chance`` (exact expected figures of a random ranking), and
        ``encoders[name]`` with ``overall``, ``seen``, ``unseen`` (each ``precision@k``, ``recall@k``,
        ``f1@k``, ``accuracy@k``, ``mAP``; macro means over classes of the per-query values),
        ``by_class`` (class name -> the same figures) and ``timing``.
    """
    if n_gallery < 1 or n_query < 1 or k < 1:
        raise ConfigError(f"n_gallery, n_query and k must be >= 1, got {n_gallery}, {n_query}, {k}")
    if isinstance(encoders, str):  # one name, not a sequence of one-letter names
        encoders = (encoders,)
    unseen = _check_classes(unseen_classes, "unseen_classes")
    seen = tuple(c for c in range(len(CLASS_NAMES)) if c not in unseen)
    images, labels = load_fashion_mnist("test", data_dir)
    rng = np.random.default_rng(seed)
    picked = _class_indices(labels, range(len(CLASS_NAMES)), n_gallery + n_query, rng, "test")
    gallery_idx = np.concatenate([picked[c][:n_gallery] for c in range(len(CLASS_NAMES))])
    query_idx = np.concatenate([picked[c][n_gallery:] for c in range(len(CLASS_NAMES))])
    g_labels, q_labels = labels[gallery_idx], labels[query_idx]
    relevant = [set(np.flatnonzero(g_labels == c).tolist()) for c in q_labels]
    q_names = [CLASS_NAMES[c] for c in q_labels]
    is_unseen = np.isin(q_labels, unseen)

    n_total = len(gallery_idx)
    result: dict[str, Any] = {
        "dataset": {"name": "fashion-mnist", "split": "test",
                    "data_dir": str(Path(data_dir) if data_dir is not None else FASHION_MNIST_DIR)},
        "config": {
            "n_gallery_per_class": n_gallery, "n_query_per_class": n_query, "seed": seed, "k": k,
            "seen_classes": list(seen), "unseen_classes": list(unseen),
            "class_names": list(CLASS_NAMES), "gallery": "all classes", "similarity": "cosine",
            "resize": "Pillow bicubic to the encoder input size, grey replicated to RGB",
            "averaging": "macro mean over classes of per-query values",
        },
        "chance": {
            f"precision@{k}": n_gallery / n_total,
            f"recall@{k}": k / n_total,
            # F1@k = 2 * hits / (k + relevant) exactly, so its expectation is linear in the expected hits
            f"f1@{k}": 2 * (k * n_gallery / n_total) / (k + n_gallery),
            f"accuracy@{k}": _chance_accuracy(n_total, n_gallery, k),
            "mAP": random_average_precision(n_total, n_gallery),
        },
        "encoders": {},
    }
    for spec in encoders:
        encoder = _resolve(spec)
        t0 = time.perf_counter()
        xb = encode_images(encoder, images[gallery_idx])  # gallery vectors (G, dim)
        xq = encode_images(encoder, images[query_idx])  # query vectors (Q, dim)
        encode_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        per_query = _scores(_rank(xq @ xb.T), relevant, k)
        score_s = time.perf_counter() - t1
        log.info("fashion retrieval %s: encoded %d images in %.1f s, scored %d queries in %.2f s",
                 encoder.name, n_total + len(query_idx), encode_s, len(query_idx), score_s)
        by_class = {CLASS_NAMES[c]: _summarise(per_query, q_names, q_labels == c) for c in range(len(CLASS_NAMES))}
        result["encoders"][encoder.name] = {
            "dim": int(encoder.dim),
            "input_size": list(encoder.input_size),
            "overall": _summarise(per_query, q_names),
            "seen": _summarise(per_query, q_names, ~is_unseen),
            "unseen": _summarise(per_query, q_names, is_unseen),
            "by_class": by_class,
            "timing": {"encode_s": encode_s, "images": n_total + len(query_idx),
                       "images_per_s": (n_total + len(query_idx)) / encode_s if encode_s > 0 else None,
                       "score_s": score_s},
        }
    return result


# ---------------------------------------------------------------------------------------- moving
@dataclass(frozen=True, eq=False)
class MovingClip:
    """One Moving Fashion-MNIST clip.

    Attributes:
        frames: uint8 (T, H, W) grey, or (T, H, W, 3) RGB, white item on black.
        item: Fashion-MNIST label of the item (0..9).
        motion: one of :data:`MOTIONS`.
        source_index: index of the item image in the split it was taken from.
    """

    frames: NDArray[np.uint8]
    item: int
    motion: str
    source_index: int

    @property
    def item_name(self) -> str:
        return CLASS_NAMES[self.item]

    @property
    def label(self) -> tuple[int, str]:
        """The clip's class: (item, motion)."""
        return (self.item, self.motion)


def render_item(
    image: NDArray[np.uint8],
    size: int,
    shift: tuple[float, float] = (0.0, 0.0),
    scale: float = 1.0,
    angle: float = 0.0,
) -> NDArray[np.uint8]:
    """Draw a (h, w) uint8 item image on a black ``size`` x ``size`` canvas with one Pillow affine warp.

    The item's centre goes to the canvas centre plus ``shift`` (dx, dy pixels, y down), scaled by
    ``scale`` and rotated by ``angle`` degrees clockwise as seen on screen. Bilinear interpolation.
    """
    from PIL import Image

    h, w = image.shape
    cx_in, cy_in = w / 2, h / 2
    cx_out, cy_out = size / 2 + shift[0], size / 2 + shift[1]
    theta = math.radians(angle)
    cos, sin = math.cos(theta) / scale, math.sin(theta) / scale
    # Pillow wants the inverse map, output (x, y) -> input: p_in = c_in + R(-angle) (p_out - c_out) / scale
    a, b, d, e = cos, sin, -sin, cos
    coeffs = (a, b, cx_in - a * cx_out - b * cy_out, d, e, cy_in - d * cx_out - e * cy_out)
    warped = Image.fromarray(image).transform(
        (size, size), Image.Transform.AFFINE, coeffs, resample=Image.Resampling.BILINEAR, fillcolor=0
    )
    return np.asarray(warped, dtype=np.uint8)


def motion_pose(motion: str, t: float, size: int) -> tuple[tuple[float, float], float, float]:
    """(shift, scale, angle) of ``motion`` at time ``t`` in [-1, 1]; every motion is at rest pose at t=0."""
    amp = (size - _ITEM) / 2 - 2  # translation amplitude: the item stays inside the canvas
    poses = {
        "left": ((-amp * t, 0.0), 1.0, 0.0),
        "right": ((amp * t, 0.0), 1.0, 0.0),
        "up": ((0.0, -amp * t), 1.0, 0.0),
        "down": ((0.0, amp * t), 1.0, 0.0),
        "zoom_in": ((0.0, 0.0), MAX_ZOOM**t, 0.0),
        "zoom_out": ((0.0, 0.0), MAX_ZOOM**-t, 0.0),
        "rotate_cw": ((0.0, 0.0), 1.0, MAX_ANGLE * t),
        "rotate_ccw": ((0.0, 0.0), 1.0, -MAX_ANGLE * t),
    }
    if motion not in poses:
        raise ConfigError(f"unknown motion {motion!r}; expected some of {', '.join(MOTIONS)}")
    return poses[motion]


def render_motion(image: NDArray[np.uint8], motion: str, frames: int = 16, size: int = 64) -> NDArray[np.uint8]:
    """(h, w) uint8 item image -> uint8 (frames, size, size) clip of ``motion``."""
    times = np.linspace(-1.0, 1.0, frames) if frames > 1 else np.zeros(1)
    out = np.empty((frames, size, size), np.uint8)
    for i, t in enumerate(times):
        shift, scale, angle = motion_pose(motion, float(t), size)
        out[i] = render_item(image, size, shift, scale, angle)
    return out


def make_moving_fashion(
    n_per_class: int,
    motions: Sequence[str] = MOTIONS,
    frames: int = 16,
    size: int = 64,
    seed: int = 0,
    items: Sequence[int] | None = None,
    split: str = "test",
    rgb: bool = False,
    data_dir: str | os.PathLike[str] | None = None,
) -> list[MovingClip]:
    """Build Moving Fashion-MNIST clips: ``n_per_class`` clips of every (item class, motion).

    Every clip uses a different real image (drawn without replacement, seeded), so no two clips
    share an item image.

    Args:
        n_per_class: clips per (item, motion) class.
        motions: some of :data:`MOTIONS`.
        frames: frames per clip (>= 2).
        size: canvas side in pixels (>= :data:`MIN_CANVAS`).
        seed: seeds the choice of item images.
        items: item labels to use (default all ten).
        split: Fashion-MNIST split the images come from.
        rgb: frames (T, H, W, 3) instead of grey (T, H, W).
        data_dir: Fashion-MNIST folder (default the Debian one).

    Returns:
        Clips ordered by item, then motion, then draw.
    """
    motions = tuple(motions)
    if not motions or len(set(motions)) != len(motions) or any(m not in MOTIONS for m in motions):
        raise ConfigError(f"motions must be distinct names among {', '.join(MOTIONS)}, got {list(motions)}")
    if n_per_class < 1 or frames < 2:
        raise ConfigError(f"need n_per_class >= 1 and frames >= 2, got {n_per_class} and {frames}")
    if size < MIN_CANVAS:
        raise ConfigError(f"canvas size {size} is too small; expected >= {MIN_CANVAS} so the item fits at every pose")
    item_classes = _check_classes(range(len(CLASS_NAMES)) if items is None else items, "items")
    images, labels = load_fashion_mnist(split, data_dir)
    rng = np.random.default_rng(seed)
    picked = _class_indices(labels, item_classes, n_per_class * len(motions), rng, split)
    clips = []
    for c in item_classes:
        for m, motion in enumerate(motions):
            for src in picked[c][m * n_per_class : (m + 1) * n_per_class]:
                video = render_motion(images[src], motion, frames, size)
                if rgb:
                    video = np.repeat(video[..., None], 3, axis=3)
                clips.append(MovingClip(video, c, motion, int(src)))
    return clips


@dataclass(frozen=True, eq=False)
class MovingVectors:
    """Moving Fashion-MNIST clips and their encoded frames (:func:`encode_moving_clips`).

    Attributes:
        clips: the clips (see :func:`make_moving_fashion`).
        vectors: (N, P, dim) float32 frame vectors of the P encoded frames of each clip.
        picks: (P,) the frame indices encoded.
        encoder: the frame encoder's name, dim and input size.
        config: how the clips were made (n_per_class, motions, frames, size, seed, items, split).
        build_s, encode_s: seconds spent rendering and encoding.
    """

    clips: list[MovingClip]
    vectors: NDArray[np.float32]
    picks: NDArray[np.int64]
    encoder: dict[str, Any]
    config: dict[str, Any]
    build_s: float
    encode_s: float


def encode_moving_clips(
    encoder: str | FrameEncoder,
    n_per_class: int = 5,
    motions: Sequence[str] = MOTIONS,
    frames: int = 16,
    size: int = 64,
    seed: int = 0,
    items: Sequence[int] | None = None,
    encode_frames: int | None = None,
    split: str = "test",
    data_dir: str | os.PathLike[str] | None = None,
) -> MovingVectors:
    """Render Moving Fashion-MNIST clips (:func:`make_moving_fashion`) and encode their frames.

    Args:
        encode_frames: encode only this many frames per clip, evenly spaced and symmetric in time
            (first and last included); ``None`` encodes all.
        split: the Fashion-MNIST split the item images come from: ``test`` for evaluation, ``train`` for
            the clips a temporal model learns from (no image is in both).
        the others: as :func:`make_moving_fashion`.
    """
    if encode_frames is not None and not 1 <= encode_frames <= frames:
        raise ConfigError(f"encode_frames must be in 1..{frames} (or None for all), got {encode_frames}")
    enc = _resolve(encoder)
    t0 = time.perf_counter()
    clips = make_moving_fashion(n_per_class, motions, frames, size, seed, items, split=split, data_dir=data_dir)
    build_s = time.perf_counter() - t0
    picks = (np.arange(frames) if encode_frames is None
             else np.unique(np.linspace(0, frames - 1, encode_frames).round().astype(int)))
    stack = np.concatenate([c.frames[picks] for c in clips])  # (N * F, size, size)
    t1 = time.perf_counter()
    vectors = encode_images(enc, stack).reshape(len(clips), len(picks), -1)
    encode_s = time.perf_counter() - t1
    log.info("moving fashion %s: %d clips x %d frames encoded in %.1f s", enc.name, len(clips), len(picks), encode_s)
    config = {"n_per_class": n_per_class, "motions": list(motions), "frames": frames, "size": size, "seed": seed,
              "items": sorted({c.item for c in clips}), "encode_frames": [int(i) for i in picks], "split": split}
    return MovingVectors(clips, vectors, picks.astype(np.int64),
                         {"name": enc.name, "dim": int(enc.dim), "input_size": list(enc.input_size)},
                         config, build_s, encode_s)


def moving_training_set(data: MovingVectors, label: str = "motion") -> Any:
    """The clips as a :class:`vidsearch.train.datasets.ClipSet` to train a temporal model on.

    Args:
        label: what a clip's class is for the supervised losses: ``motion`` (8 classes), ``item_x_motion``,
            or ``item``.
    """
    from vidsearch.train.datasets import clip_set

    keys = {"motion": lambda c: MOTIONS.index(c.motion), "item": lambda c: c.item,
            "item_x_motion": lambda c: c.item * len(MOTIONS) + MOTIONS.index(c.motion)}
    if label not in keys:
        raise ConfigError(f"unknown label {label!r}; expected one of {', '.join(keys)}")
    cfg = data.config
    return clip_set(data.vectors, [keys[label](c) for c in data.clips], groups=np.arange(len(data.clips)),
                    source=(f"moving fashion-mnist ({cfg['split']} split, seed {cfg['seed']}, {cfg['n_per_class']} clips "
                            f"per (item, motion), frames {cfg['encode_frames']} of {cfg['frames']}, "
                            f"{data.encoder['name']}, labels: {label})"))


def run_moving_fashion(
    encoder: str | FrameEncoder,
    n_per_class: int = 5,
    motions: Sequence[str] = MOTIONS,
    frames: int = 16,
    size: int = 64,
    seed: int = 0,
    items: Sequence[int] | None = None,
    encode_frames: int | None = None,
    k: int = 5,
    aggregator: TemporalAggregator | None = None,
    data_dir: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Clip-to-clip retrieval on Moving Fashion-MNIST with mean-pooled frame vectors.

    Each clip's frames are encoded, mean-pooled (:class:`~vidsearch.encode.temporal.MeanPool`, or
    ``aggregator``) to one L2-normalised vector, and every clip queries all the others by cosine. mAP and P@k are reported with relevance
    by item, by motion and by (item, motion), next to their chance levels.

    Args:
        encoder: encoder name or object.
        n_per_class: clips per (item, motion) class (>= 2, so every query has a relevant clip).
        motions, frames, size, seed, items: as :func:`make_moving_fashion`.
        encode_frames: encode only this many frames per clip, evenly spaced and symmetric in time
            (first and last included), to save time; ``None`` encodes all.
        k: cut-off of P@k.
        aggregator: temporal model mapping a clip's (F, dim) frame vectors to one vector
            (default :class:`~vidsearch.encode.temporal.MeanPool`).
        data_dir: Fashion-MNIST folder (default the Debian one).

    Returns:
        JSON-serialisable dict: ``config``, ``encoder``, ``labels[item|motion|item_x_motion|motion_axis]``
        each with ``mAP``, ``precision@k``, ``chance`` (1 / number of classes), ``random_precision``
        (mean fraction of relevant clips among the others, the exact expected P@k of a random
        ranking) and ``random_mAP`` (exact expected mAP of a random ranking);
        ``labels["direction_within_axis"]``, the same figures when each query ranks only the clips
        of its own axis (left/right, up/down, zoom in/out, rotate cw/ccw) and relevant = same motion:
        the frames of the two motions are the same set, so only an order-aware model beats chance
        (0.5); ``by_motion`` (motion -> mAP and P@k with motion relevance); ``timing``.
    """
    if n_per_class < 2:
        raise ConfigError(f"n_per_class must be >= 2 so every (item, motion) query has a relevant clip, got {n_per_class}")
    data = encode_moving_clips(encoder, n_per_class, motions, frames, size, seed, items, encode_frames,
                               data_dir=data_dir)
    return score_moving(data, aggregator, k)


def par_scores(similarity: NDArray[np.float32], rankings: NDArray[np.int64], key: Sequence[Hashable],
               k: int) -> dict[str, Any]:
    """P/R/F1@k with and without proximal-affinity re-ranking (PAR, the CNN + LSTM paper: of the top k, keep
    only those whose cosine exceeds a threshold), relevant = same ``key``.

    The threshold is calibrated on the even-numbered queries (the best macro F1@k among the top-k
    similarities they see) and both rankings are scored on the odd-numbered queries only, so the
    threshold never sees the queries it is scored on. With PAR a query's precision is over what it
    returns (fewer than k when the threshold cuts; an empty answer scores 0) and its recall over all its
    relevant clips; F1 per query. Macro means over ``key``'s classes, like the other figures.
    """
    n = len(key)
    index = {v: i for i, v in enumerate(dict.fromkeys(key))}
    label = np.asarray([index[v] for v in key])
    top = rankings[:, :k]
    top_sim = np.take_along_axis(similarity, top, axis=1)  # (n, k), best first
    hit = label[top] == label[:, None]
    n_rel = np.asarray([int((label == label[q]).sum()) - 1 for q in range(n)])

    def per_query(rows: NDArray[np.int64], threshold: float | None) -> tuple[NDArray[np.float64], ...]:
        kept = np.ones((len(rows), k), bool) if threshold is None else top_sim[rows] > threshold
        hits = (hit[rows] & kept).sum(axis=1).astype(np.float64)
        returned = kept.sum(axis=1)
        p = np.where(returned > 0, hits / np.maximum(returned, 1), 0.0)
        r = np.where(n_rel[rows] > 0, hits / np.maximum(n_rel[rows], 1), 0.0)
        f1 = np.where(p + r > 0, 2 * p * r / np.maximum(p + r, 1e-12), 0.0)
        return p, r, f1, (returned == 0).astype(np.float64)

    def macro(values: NDArray[np.float64], rows: NDArray[np.int64]) -> float:
        return metrics.macro_mean(values.tolist(), [key[q] for q in rows])

    even, odd = np.arange(0, n, 2), np.arange(1, n, 2)
    candidates = np.unique(np.round(top_sim[even].ravel(), 4))
    # below the lowest similarity (keeps everything) and each value seen; the best F1, the lower threshold on ties
    grid = np.concatenate([[candidates.min() - 1e-3], candidates]) if len(candidates) else np.asarray([-1.0])
    best = max(grid, key=lambda t: (round(macro(per_query(even, float(t))[2], even), 6), -t))
    out: dict[str, Any] = {"threshold": round(float(best), 4), "calibrated_on": "even-numbered queries",
                           "scored_on": "odd-numbered queries", "n_queries": len(odd), "k": k}
    for name, threshold in (("plain", None), ("par", float(best))):
        p, r, f1, empty = per_query(odd, threshold)
        out[name] = {f"precision@{k}": macro(p, odd), f"recall@{k}": macro(r, odd), f"f1@{k}": macro(f1, odd),
                     "empty_answers": float(empty.mean())}
    return out


def score_moving(data: MovingVectors, aggregator: TemporalAggregator | None = None, k: int = 5,
                 unseen_items: Sequence[int] | None = None) -> dict[str, Any]:
    """The retrieval figures of :func:`run_moving_fashion` for already encoded clips and one aggregator.

    With ``unseen_items`` (the item classes a learned model was not trained on), ``labels`` also holds
    ``motion_seen``/``motion_unseen`` and ``direction_within_axis_seen``/``_unseen``: the same per-query
    figures averaged over the queries whose item is seen or unseen (every clip stays a candidate).

    ``timing`` also holds the aggregator's cost: ``aggregate_s`` (all clips, batched where the aggregator
    can), ``aggregate_ms_per_clip``, ``encode_ms_per_clip`` (the frame encoder, for the clip's encoded frames)
    and their ratio ``aggregate_vs_encode``.
    """
    clips, vectors, picks = data.clips, data.vectors, data.picks
    motions = data.config["motions"]
    pool = aggregator if aggregator is not None else MeanPool()
    t = time.perf_counter()
    many = getattr(pool, "aggregate_many", None)
    pooled = np.asarray(many(list(vectors)), np.float32) if many is not None else np.stack([pool.aggregate(v) for v in vectors])
    aggregate_s = time.perf_counter() - t
    similarity = pooled @ pooled.T
    np.fill_diagonal(similarity, -np.inf)  # a clip does not retrieve itself
    rankings = _rank(similarity)[:, :-1]  # drop self (last)

    keys: dict[str, list[Hashable]] = {
        "item": [c.item for c in clips],
        "motion": [c.motion for c in clips],
        "item_x_motion": [c.label for c in clips],
        "motion_axis": [MOTION_AXIS[c.motion] for c in clips],
    }
    labels_out: dict[str, Any] = {}
    by_motion: dict[str, dict[str, float]] = {}
    motion_scores: dict[str, list[float]] = {}
    for name, key in keys.items():
        scores, summary = _label_scores(rankings, key, k)
        labels_out[name] = summary
        if name == "motion":
            motion_scores = scores
            ap = metrics.by_class(scores["AP"], key)
            pk = metrics.by_class(scores[f"precision@{k}"], key)
            by_motion = {m: {"mAP": ap[m], f"precision@{k}": pk[m]} for m in motions}
    labels_out["motion_par"] = par_scores(similarity, rankings, keys["motion"], k)
    # Direction: each query ranks only the clips of its own axis (other items included); relevant =
    # same motion. Frames are the same set either way, so only frame order tells the two apart.
    axis = keys["motion_axis"]
    paired = [i for i in range(len(clips)) if sum(MOTION_AXIS[m] == axis[i] for m in motions) == 2]
    if paired:
        axis_arr = np.asarray(axis)
        within = [rankings[i][axis_arr[rankings[i]] == axis[i]].tolist() for i in paired]
        direction_scores, labels_out["direction_within_axis"] = _label_scores(
            within, [keys["motion"][i] for i in paired], k, ids=paired, chance=0.5)
    if unseen_items is not None:
        unseen = {int(i) for i in unseen_items}
        groups = [("motion", motion_scores, list(range(len(clips))))]
        if paired:
            groups.append(("direction_within_axis", direction_scores, paired))
        for name, scores, queries in groups:
            for part, wanted in (("seen", False), ("unseen", True)):
                rows = [n for n, q in enumerate(queries) if (clips[q].item in unseen) == wanted]
                motion_of = [keys["motion"][queries[n]] for n in rows]
                labels_out[f"{name}_{part}"] = {
                    stat: metrics.macro_mean([scores[stat][n] for n in rows], motion_of) if rows else None
                    for stat in ("AP", f"precision@{k}", f"recall@{k}", f"f1@{k}")}
                labels_out[f"{name}_{part}"]["mAP"] = labels_out[f"{name}_{part}"].pop("AP")
                labels_out[f"{name}_{part}"]["n_queries"] = len(rows)
    cfg = data.config
    n_frames = int(vectors.shape[0] * vectors.shape[1])
    return {
        "dataset": {"name": "moving-fashion-mnist", "source": f"fashion-mnist {cfg.get('split', 'test')} split"},
        "config": {
            "n_per_class": cfg["n_per_class"], "motions": list(motions), "frames": cfg["frames"], "size": cfg["size"],
            "seed": cfg["seed"], "items": cfg["items"], "encode_frames": [int(i) for i in picks], "k": k,
            "aggregator": pool.name, "similarity": "cosine", "max_zoom": MAX_ZOOM, "max_angle_deg": MAX_ANGLE,
            "n_clips": len(clips), "averaging": "macro mean over classes of per-query values; leave-one-out",
            "unseen_items": None if unseen_items is None else sorted(int(i) for i in unseen_items),
        },
        "encoder": data.encoder,
        "labels": labels_out,
        "by_motion": by_motion,
        "timing": {"build_s": data.build_s, "encode_s": data.encode_s, "frames_encoded": n_frames,
                   "frames_per_s": n_frames / data.encode_s if data.encode_s > 0 else None,
                   "aggregate_s": aggregate_s, "aggregate_ms_per_clip": 1e3 * aggregate_s / max(len(clips), 1),
                   "encode_ms_per_clip": 1e3 * data.encode_s / max(len(clips), 1),
                   "aggregate_vs_encode": aggregate_s / data.encode_s if data.encode_s > 0 else None},
    }


# ---------------------------------------------------------------------------------------- writing
def write_clip(clip: MovingClip | NDArray[np.uint8], path: str | os.PathLike[str], fps: int = 8) -> Path:
    """Write a clip as H.264 mp4 (PyAV, libx264, yuv420p, CRF 18); atomic (temp file, then rename).

    Args:
        clip: a :class:`MovingClip` or uint8 frames (T, H, W) grey / (T, H, W, 3) RGB, H and W even.
        path: target file, normally ``*.mp4``.
        fps: frame rate.
    """
    import av

    video = clip.frames if isinstance(clip, MovingClip) else np.asarray(clip)
    if video.dtype != np.uint8 or video.ndim not in (3, 4) or (video.ndim == 4 and video.shape[3] != 3) or not len(video):
        raise ConfigError(f"expected uint8 frames (T, H, W) or (T, H, W, 3) with T >= 1, got {video.dtype} {video.shape}")
    height, width = video.shape[1:3]
    if height % 2 or width % 2:
        raise ConfigError(f"H.264 yuv420p needs even frame sizes, got {width}x{height}; use an even canvas size")
    if fps < 1:
        raise ConfigError(f"fps must be >= 1, got {fps}")
    target = Path(path)
    tmp = target.with_name(f".{target.stem}.tmp{target.suffix}")
    try:
        with av.open(str(tmp), "w", format="mp4") as out:
            stream = out.add_stream("libx264", rate=fps, options=x264_options({"crf": "18"}))
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            for i, image in enumerate(video):
                rgb = np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24").reformat(format="yuv420p")
                frame.pts = i
                for packet in stream.encode(frame):
                    out.mux(packet)
            for packet in stream.encode():
                out.mux(packet)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target
