"""Training data for temporal models: clips of frame vectors, batches, augmented views, look-alikes.

A :class:`ClipSet` holds N clips, each an (F_i, D) float32 array of L2-normalised frame vectors, with
optional class labels (supervised losses), the source video of each clip and its first frame there
(for "same video at another time" negatives). Two sources:

- :func:`collection_clips`: the windows of a collection's videos, read from its ``frames.f16`` (the
  frame vectors the collection stored), cut where the catalogue's segments are, i.e. exactly the
  inputs the model gets when the collection is indexed with it. No labels: self-supervised only.
- :func:`clip_set`: arrays built elsewhere (the Moving Fashion-MNIST clips of
  ``vidsearch.evaluate.fashion.moving_clip_vectors``), with labels.

:func:`augment` makes a view of a clip (temporal crop, speed change, dropped or repeated frames, a
frame of another clip spliced in, feature noise); every view is resampled to the model's fixed frame
count (:func:`vidsearch.encode.temporal.resample_frames`). Randomness comes from one seeded
``numpy.random.Generator``, so a run is reproducible.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from vidsearch.encode.temporal import l2_normalize, resample_frames
from vidsearch.errors import CollectionError, ConfigError, ShapeError


@dataclass(frozen=True)
class ClipSet:
    """Clips of frame vectors.

    Attributes:
        clips: N arrays (F_i, D) float32, F_i >= 1, rows L2-normalised.
        labels: (N,) int64 class of each clip, or None (unlabelled).
        groups: (N,) int64 source video of each clip (clips of one video share it).
        starts: (N,) int64 first frame of each clip within its video.
        source: what the clips are (recorded with a trained model).
    """

    clips: list[NDArray[np.float32]]
    labels: NDArray[np.int64] | None
    groups: NDArray[np.int64]
    starts: NDArray[np.int64]
    source: str

    def __len__(self) -> int:
        return len(self.clips)

    @property
    def dim(self) -> int:
        return int(self.clips[0].shape[1])

    def resampled(self, frames: int) -> NDArray[np.float32]:
        """(N, frames, D) float32: every clip resampled to ``frames`` (no augmentation)."""
        return np.stack([resample_frames(c, frames) for c in self.clips])


def clip_set(clips: Sequence[NDArray[np.floating]] | NDArray[np.floating], labels: Sequence[int] | NDArray[np.integer] | None = None,
             groups: Sequence[int] | NDArray[np.integer] | None = None, starts: Sequence[int] | NDArray[np.integer] | None = None,
             source: str = "arrays") -> ClipSet:
    """A :class:`ClipSet` from arrays: ``clips`` (N, F, D) or N arrays (F_i, D); rows are L2-normalised here.

    Raises:
        ShapeError: no clips, a clip that is not (F >= 1, D) of the common D, or labels/groups/starts not (N,).
    """
    out = [l2_normalize(np.asarray(c, np.float32)) for c in clips]
    if not out:
        raise ShapeError("expected at least one clip, got none")
    dim = out[0].shape[-1]
    bad = next((c.shape for c in out if c.ndim != 2 or len(c) == 0 or c.shape[1] != dim), None)
    if bad is not None:
        raise ShapeError(f"expected clips of shape (F >= 1, {dim}), found one of shape {bad}")
    n = len(out)

    def column(values: Sequence[int] | NDArray[np.integer] | None, default: NDArray[np.int64], what: str) -> NDArray[np.int64]:
        arr = default if values is None else np.asarray(values, np.int64)
        if arr.shape != (n,):
            raise ShapeError(f"expected {what} of shape ({n},), one per clip, got {arr.shape}")
        return arr

    return ClipSet(out, None if labels is None else column(labels, np.zeros(n, np.int64), "labels"),
                   column(groups, np.arange(n, dtype=np.int64), "groups"), column(starts, np.zeros(n, np.int64), "starts"),
                   source)


def collection_clips(path: str | os.PathLike[str], min_frames: int = 1, max_clips: int | None = None,
                     seed: int = 0) -> ClipSet:
    """The windows of a collection's videos as clips of their stored frame vectors (``frames.f16``).

    Each catalogue segment gives one clip: the frames of its video whose times fall in [start, end).

    Args:
        path: a collection directory.
        min_frames: skip windows with fewer frames.
        max_clips: keep at most this many, drawn at random (seeded) when there are more.
        seed: seeds that draw.

    Raises:
        CollectionError: not a collection, or no window with ``min_frames`` frames.
    """
    from vidsearch.store import catalog
    from vidsearch.store.manifest import read_manifest
    from vidsearch.store.vectors import open_checked

    directory = Path(path)
    manifest = read_manifest(directory)
    conn = catalog.open_existing(directory / "catalog.sqlite")
    try:
        snap = catalog.read_snapshot(conn)
    finally:
        conn.close()
    frames = open_checked(directory / "frames.f16", manifest["dims"]["frame"], "float16").view(snap.frame_rows)
    clips: list[NDArray[np.float32]] = []
    groups, starts = [], []
    for row in np.flatnonzero(snap.segment_video >= 0):
        video = int(snap.segment_video[row])
        times = snap.frame_times(video)
        first, last = np.searchsorted(times, [snap.segment_start[row], snap.segment_end[row]], side="left")
        last = max(int(last), int(first) + 1) if first < len(times) else int(first)
        if last - first < min_frames:
            continue
        base = int(snap.video_frame_row[video])
        clips.append(np.asarray(frames[base + first : base + last], np.float32))
        groups.append(video)
        starts.append(int(first))
    if not clips:
        raise CollectionError(f"{directory}: expected windows of at least {min_frames} frames to train on, found none; "
                              "index some videos first (or lower min_frames)")
    keep = np.arange(len(clips))
    if max_clips is not None and len(clips) > max_clips:
        keep = np.sort(np.random.default_rng(seed).choice(len(clips), max_clips, replace=False))
    return clip_set([clips[i] for i in keep], None, np.asarray(groups)[keep], np.asarray(starts)[keep],
                    source=f"collection {directory} ({len(keep)} windows of {len(snap.video_ids)} videos)")


@dataclass(frozen=True)
class Augmentation:
    """How :func:`augment` changes a clip; each change happens with its probability.

    Attributes:
        crop: keep a contiguous run of at least ``min_keep`` of the frames (temporal crop).
        speed: play at half or double speed (every other frame, or every frame twice).
        drop: drop a random frame. repeat: repeat a random frame.
        splice: replace one frame by a frame of another clip.
        noise: standard deviation of Gaussian noise added to each frame vector before re-normalising.
        min_keep: smallest fraction of the frames a crop keeps.
    """

    crop: float = 0.5
    speed: float = 0.3
    drop: float = 0.3
    repeat: float = 0.3
    splice: float = 0.1
    noise: float = 0.02
    min_keep: float = 0.6

    def __post_init__(self) -> None:
        for name in ("crop", "speed", "drop", "repeat", "splice"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"Augmentation.{name} is a probability in [0, 1], got {getattr(self, name)}")
        if self.noise < 0 or not 0 < self.min_keep <= 1:
            raise ConfigError(f"expected noise >= 0 and min_keep in (0, 1], got {self.noise}, {self.min_keep}")


def augment(clip: NDArray[np.float32], frames: int, rng: np.random.Generator, aug: Augmentation,
            other: NDArray[np.float32] | None = None) -> NDArray[np.float32]:
    """One random view of ``clip`` (F, D), resampled to (frames, D) float32, rows L2-normalised.

    ``other``: a clip whose frame :attr:`Augmentation.splice` may splice in.
    """
    x = clip
    n = len(x)
    if n > 1 and rng.random() < aug.crop:
        keep = int(rng.integers(max(1, int(np.ceil(aug.min_keep * n))), n + 1))
        first = int(rng.integers(0, n - keep + 1))
        x = x[first : first + keep]
    if rng.random() < aug.speed:
        x = x[::2] if (rng.random() < 0.5 and len(x) > 2) else np.repeat(x, 2, axis=0)
    if len(x) > 2 and rng.random() < aug.drop:
        x = np.delete(x, int(rng.integers(0, len(x))), axis=0)
    if rng.random() < aug.repeat:
        at = int(rng.integers(0, len(x)))
        x = np.insert(x, at, x[at], axis=0)
    if other is not None and len(x) > 2 and rng.random() < aug.splice:
        x = x.copy()
        x[int(rng.integers(0, len(x)))] = other[int(rng.integers(0, len(other)))]
    out = resample_frames(x, frames)
    if aug.noise > 0:
        out = out + rng.normal(0.0, aug.noise, out.shape).astype(np.float32)
    return l2_normalize(out)


def other_time(data: ClipSet, index: int, rng: np.random.Generator) -> int | None:
    """A clip of the same video as clip ``index`` that does not overlap it (None when there is none)."""
    same = np.flatnonzero(data.groups == data.groups[index])
    length = len(data.clips[index])
    far = [int(j) for j in same if abs(int(data.starts[j]) - int(data.starts[index])) >= length]
    return far[int(rng.integers(0, len(far)))] if far else None


def class_batches(labels: NDArray[np.int64], batch_size: int, per_class: int, rng: np.random.Generator,
                  focus: NDArray[np.int64] | None = None) -> list[NDArray[np.int64]]:
    """One epoch of P x K batches for batch-hard mining: ``per_class`` clips of each of batch_size // per_class
    classes (classes with fewer clips than ``per_class`` give what they have; classes of one clip are skipped).

    ``focus``: clip indices every batch is built around (hard-sample retraining): each batch holds some of
    them plus clips of their classes, and the epoch covers every focus clip once.
    """
    by_class = {int(c): np.flatnonzero(labels == c) for c in np.unique(labels)}
    usable = [c for c, idx in by_class.items() if len(idx) >= 2]
    if not usable:
        raise ConfigError("a triplet loss needs classes with at least two clips; found none (give labels with repeats)")
    p = max(2, batch_size // per_class)
    batches: list[NDArray[np.int64]] = []
    if focus is not None and len(focus):
        order = rng.permutation(focus)
        for start in range(0, len(order), p):
            chosen: list[int] = []
            for i in order[start : start + p]:
                mates = by_class[int(labels[i])]
                mates = mates[mates != i]
                chosen += [int(i)] + [int(j) for j in rng.choice(mates, min(per_class - 1, len(mates)), replace=False)]
            extra = [c for c in rng.permutation(usable)[:p] if c not in {int(labels[i]) for i in order[start : start + p]}]
            for c in extra[: max(0, p - len(order[start : start + p]))]:
                chosen += [int(j) for j in rng.choice(by_class[c], min(per_class, len(by_class[c])), replace=False)]
            batches.append(np.asarray(chosen, np.int64))
        return batches
    pools = {c: list(rng.permutation(by_class[c])) for c in usable}
    while True:
        live = [c for c in usable if len(pools[c]) >= 2]
        if len(live) < 2:
            return batches
        picked = rng.permutation(live)[:p]
        chosen = []
        for c in picked:
            take = min(per_class, len(pools[c]))
            chosen += [int(j) for j in pools[c][:take]]
            pools[c] = pools[c][take:]
        batches.append(np.asarray(chosen, np.int64))
