"""``Collection``: the write path over a collection directory (create, add, remove, rebuild, calibrate).

Searching goes through :class:`vidsearch.search.engine.Engine`; ``Collection.search`` is a
convenience that opens one on the same directory.

Directory layout (see docs/ARCHITECTURE.md):
    manifest.json            format_version, library versions, every stage's frozen config
    catalog.sqlite (+ -wal)  videos, segments, committed vector-file row counts, generation
    segments.f32             segment vectors (float32), row = segment id
    frames.f16               per-frame vectors (float16), rows referenced by videos/segments
    index-<generation>.faiss the vector index as saved at that catalogue generation, with the rows it covers
    .lock                    the writer lock

Durability: vectors are appended and fsynced first, then one SQLite transaction per video
records the video, its segments and the new row counts. A crash before that commit leaves rows
past the committed counts, which the next writer truncates. The writer saves the index it holds
after a commit at most every ``PUBLISH_SECONDS`` and at the end of every call, and saves any index it
had to rebuild at once, so readers never train: they search the last saved index plus an exact
scan of the rows committed since.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
from numpy.typing import NDArray

from vidsearch.atomic import fsync_dir
from vidsearch.config import CollectionConfig, IndexConfig, resolve_variant
from vidsearch.errors import CollectionError, QueryError, ShapeError, VidsearchError
from vidsearch.index import VectorIndex, build_index, load_index
from vidsearch.index.base import outgrown, uses_ivf
from vidsearch.index.flat import FlatIndex
from vidsearch.index.ivf import MemmapStore
from vidsearch.search.engine import Engine, stored_segmenter
from vidsearch.search.results import SearchParams, SearchResult
from vidsearch.store import catalog
from vidsearch.store.catalog import VideoRecord
from vidsearch.store.files import file_hash, iter_media_files, path_text
from vidsearch.store.lock import WriterLock
from vidsearch.store.manifest import (
    MANIFEST,
    index_files,
    index_path,
    read_manifest,
    read_search_defaults,
    write_manifest,
    write_search_defaults,
)
from vidsearch.store.vectors import VectorFile, open_checked

if TYPE_CHECKING:  # imported when files are encoded (it loads the frame model's runtime)
    from vidsearch.encode.pipeline import MediaEncoder

log = logging.getLogger(__name__)
_Item = TypeVar("_Item")

# After a commit the writer saves its index when the last save is at least this old (and always at
# the end of add/remove): readers meanwhile scan at most this many seconds of new rows exactly.
PUBLISH_SECONDS = 2.0


@dataclass(frozen=True)
class VectorVideo:
    """A video given by pre-computed vectors (``Collection.add_vectors``).

    Attributes:
        name: recorded as its path; its id is the first 12 hex digits of the SHA-256 of the name
            and the frame vectors.
        frame_times: (F,) seconds, increasing.
        frame_vectors: (F, D) frame vectors from the collection's frame encoder (L2-normalised).
        segment_vectors: (S, D') segment vectors; None computes them from the frames with the
            collection's windows and aggregator, as ``add`` does for media files.
        segment_times: (S, 2) start and end seconds of the given segments.
        duration: seconds (default: last frame time + the sampling period).
    """

    name: str
    frame_times: NDArray[np.float64]
    frame_vectors: NDArray[np.floating]
    segment_vectors: NDArray[np.floating] | None = None
    segment_times: NDArray[np.float64] | None = None
    duration: float | None = None


KNOWN = "known"  # EncodedFile.media of a file whose content the collection holds (not decoded; reported skipped)


@dataclass(frozen=True)
class EncodedFile:
    """A media file decoded and encoded by another process (a Spark task: ``vidsearch.distributed.spark``),
    for :meth:`Collection.add_encoded` to commit as :meth:`Collection.add` would have.

    Attributes:
        path: the file as the input named it (the catalogue stores it absolute, as ``add`` does).
        digest: SHA-256 of its bytes (its id is the first 12 hex digits); None when it failed first.
        size_bytes: its size.
        media: what the pipeline made of it (``MediaEncoder.encode_file`` with the collection's config);
            None when it failed; ``KNOWN`` when its content was indexed already (not decoded).
        error: why it failed (reported, and the batch goes on).
        timings: seconds spent where it was encoded (``decode``, ``encode``, ``hash``).
    """

    path: str
    digest: str | None
    size_bytes: int
    media: Any = None  # EncodedMedia (encode layer: imported lazily)
    error: str | None = None
    timings: dict[str, float] = field(default_factory=dict)


def encode_for_add(path: Path, encoder: Callable[[], MediaEncoder], known: Callable[[str], bool]) -> EncodedFile:
    """What ``add`` does to one file before its commit, here or in a Spark task: check it, hash it and, unless
    ``known(sha256)`` (then ``media=KNOWN``, not decoded), decode and encode it with ``encoder()`` (called only
    then: a run of known files loads no model). A failure is returned as ``error``, never raised: the batch goes on.
    """
    t0 = time.perf_counter()
    shown = str(path)
    try:
        if not path.is_file():
            raise CollectionError(f"{path}: no such file (or not a regular file)")
        size = path.stat().st_size
        digest = file_hash(path)
        if known(digest):
            return EncodedFile(shown, digest, size, KNOWN)
        hash_s = time.perf_counter() - t0
        media = encoder().encode_file(path)
        return EncodedFile(shown, digest, size, media, timings={**media.timings, "hash": hash_s})
    except (VidsearchError, OSError) as exc:
        return EncodedFile(shown, None, 0, error=str(exc))
    except Exception as exc:  # an unexpected library error on one file must not stop the batch
        log.exception("unexpected error on %s", path)
        return EncodedFile(shown, None, 0, error=f"{type(exc).__name__}: {exc}")


@dataclass
class FileReport:
    """What happened to one input file in :meth:`Collection.add`."""

    path: str
    status: str  # "indexed" | "skipped" | "failed"
    video_id: str | None = None
    segments: int = 0
    duration: float = 0.0
    error: str | None = None
    timings: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path, "status": self.status, "video_id": self.video_id, "segments": self.segments,
            "duration": round(self.duration, 3), "error": self.error,
            "timings_s": {k: round(v, 4) for k, v in self.timings.items()},
        }



def _own_milvus_collection(config: CollectionConfig) -> CollectionConfig:
    """A Milvus store without a collection name gets one of its own (``vidsearch_`` + 16 random hex digits),
    recorded in the manifest: two vidsearch collections on one Milvus server never replace each other's rows."""
    if config.index.kind != "milvus" or config.index.milvus_collection:
        return config
    return replace(config, index=replace(config.index, milvus_collection=f"vidsearch_{os.urandom(8).hex()}"))

class Collection:
    """A collection of videos in one directory: the writer's side.

    Use :meth:`create` or :meth:`open`. Adding and removing take the writer lock for the duration
    of the call; :meth:`search` (and any number of :class:`Engine` readers) need no lock.
    """

    def __init__(self, path: Path, manifest: dict[str, Any]) -> None:
        self.path = path
        self.manifest = manifest
        self.config = CollectionConfig.from_dict(manifest["config"])
        self._db = catalog.open_existing(path / "catalog.sqlite")
        try:
            self._segments = open_checked(path / "segments.f32", manifest["dims"]["segment"], "float32")
            self._frames = open_checked(path / "frames.f16", manifest["dims"]["frame"], "float16")
            meta = catalog.meta(self._db)
            for vf, committed in ((self._segments, meta["segment_rows"]), (self._frames, meta["frame_rows"])):
                if vf.rows_on_disk() < committed:
                    raise CollectionError(
                        f"{vf.path}: the catalogue says {committed} rows are committed, found {vf.rows_on_disk()}; "
                        "the vector file was truncated, the collection is damaged (restore it or re-index)"
                    )
        except BaseException:
            self._db.close()
            raise
        self._lock = WriterLock(path)
        self._media_encoder: MediaEncoder | None = None
        self._index: VectorIndex | None = None
        self._index_generation = -1  # the generation self._index reflects
        self._saved_at = 0.0
        self._dirty = False  # the in-memory index differs from the saved file of its generation
        self._engine: Engine | None = None
        self.last_build_seconds: float | None = None
        self._segmenter: MediaEncoder | None = None

    # ------------------------------------------------------------------ lifecycle
    @classmethod
    def create(cls, path: str | os.PathLike[str], config: CollectionConfig | None = None) -> "Collection":
        """Create an empty collection at ``path`` (absent or an empty directory).

        Raises:
            CollectionError: ``path`` exists and is not empty.
        """
        from vidsearch.encode.streams import check_streams
        from vidsearch.encode.streams import frame_dim as stored_frame_dim
        from vidsearch.encode.temporal import load_aggregator

        config = _own_milvus_collection(config or CollectionConfig())
        config = replace(config, encode=resolve_variant(config.encode))  # the encoder's runtime, pinned
        check_streams(config.encode)  # OpenCV for the flow: refused before the collection exists
        target = Path(path)
        if target.exists() and (not target.is_dir() or any(target.iterdir())):
            what = "a collection" if (target / MANIFEST).exists() else "not empty"
            raise CollectionError(f"cannot create a collection at {target}: it is {what}; open it or choose a new directory")
        target.parent.mkdir(parents=True, exist_ok=True)
        frame_dim = stored_frame_dim(config.encode)  # the encoder's width, + the motion stream's
        segment_dim = load_aggregator(config.encode.aggregator).output_dim(frame_dim)
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.creating-"))
        try:
            VectorFile.create(tmp / "segments.f32", segment_dim, "float32")
            VectorFile.create(tmp / "frames.f16", frame_dim, "float16")
            conn = catalog.connect(tmp / "catalog.sqlite")
            catalog.initialise(conn)
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            conn.close()
            write_manifest(tmp, config, {"frame": frame_dim, "segment": segment_dim})
            fsync_dir(tmp)
            if target.exists():
                target.rmdir()
            os.replace(tmp, target)  # the collection appears whole or not at all
            fsync_dir(target.parent)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return cls.open(target)

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> "Collection":
        """Open an existing collection; needs no other argument than its path.

        Raises:
            CollectionError: not a collection, damaged, or written by a newer format.
        """
        target = Path(path)
        return cls(target, read_manifest(target))

    @classmethod
    def open_or_create(cls, path: str | os.PathLike[str], config: CollectionConfig | None = None) -> "Collection":
        target = Path(path)
        if (target / MANIFEST).exists():
            coll = cls.open(target)
            if config is not None and config.index.kind == "milvus" and not config.index.milvus_collection:
                # the name the collection chose for itself is not an option the caller could give
                config = replace(config, index=replace(config.index,
                                                       milvus_collection=coll.config.index.milvus_collection))
            if config is not None and not config.encode.variant:
                # no variant named: the one the collection pinned when it was made (its default then)
                config = replace(config, encode=replace(config.encode, variant=coll.config.encode.variant))
            if config is not None and config != coll.config:
                coll.close()
                raise CollectionError(
                    f"{target} was built with {coll.config.to_dict()}; it cannot change to {config.to_dict()}. "
                    "Omit the build options, or index into a new collection"
                )
            return coll
        return cls.create(target, config)

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()
            self._engine = None
        self._close_index()
        self._db.close()

    def _close_index(self) -> None:
        close = getattr(self._index, "close", None)
        if close is not None:  # a Milvus store: Milvus Lite serves one process at a time
            close()
        self._index = None

    def __enter__(self) -> "Collection":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ the writer's index
    def _store(self, rows: int) -> MemmapStore:
        return MemmapStore(self._segments.view(rows))

    def _live_ids(self, snap: catalog.CatalogSnapshot) -> NDArray[np.int64]:
        return np.flatnonzero(snap.segment_video >= 0).astype(np.int64)

    def _ensure_index(self) -> None:
        """Hold an index that reflects the catalogue: the newest saved one, brought up to date (rows committed
        after it was saved added, removed videos dropped) and saved; else rebuilt from the vectors and saved."""
        meta = catalog.meta(self._db)
        if self._index is not None and self._index_generation == meta["generation"]:
            return
        snap = catalog.read_snapshot(self._db)
        store = self._store(snap.segment_rows)
        live = self._live_ids(snap)
        for generation, path in index_files(self.path)[:1]:
            if generation > snap.generation:
                break
            try:
                index = load_index(path, store)
            except VidsearchError as exc:
                log.warning("%s; rebuilding the index from the vector files", exc)
                break
            if (getattr(index, "kind", "") == "milvus") != (self.config.index.kind == "milvus"):
                # the manifest moved the vectors to (or from) Milvus and the writer stopped before saving the new index
                log.warning("%s is not of the index backend the manifest names (%s); rebuilding the index", path,
                            self.config.index.kind)
                close = getattr(index, "close", None)
                if close is not None:
                    close()
                break
            covered = index.info.get("segment_rows", snap.segment_rows if generation == snap.generation else None)
            if not isinstance(covered, int) or index.dim != self._segments.dim or not 0 <= covered <= snap.segment_rows:
                log.warning("%s does not match the catalogue; rebuilding the index from the vector files", path)
                break
            gone = np.flatnonzero(snap.segment_video[:covered] < 0).astype(np.int64)
            if len(gone) and generation != snap.generation:
                index.remove(gone)  # videos removed after this index was saved (ids absent from it are no-ops)
            if len(index) != int(np.count_nonzero(snap.segment_video[:covered] >= 0)):
                log.warning("%s holds %d vectors, the catalogue %d at its rows; rebuilding the index", path,
                            len(index), int(np.count_nonzero(snap.segment_video[:covered] >= 0)))
                break
            new = live[live >= covered]
            if len(new):  # committed after the index was saved (a writer stopped before publishing)
                self._index_add(index, new, np.asarray(self._segments.view(snap.segment_rows)[new], np.float32))
            self._index, self._index_generation = index, snap.generation
            self._dirty = generation != snap.generation or covered != snap.segment_rows
            self._publish(force=True)
            return
        self._rebuild(snap, live)

    def _index_add(self, index: VectorIndex, ids: NDArray[np.int64], vectors: NDArray[np.float32]) -> None:
        """Add committed rows to ``index``; a Milvus store also gets each row's video and times."""
        if getattr(index, "kind", "") == "milvus":
            video, start, end = catalog.segment_fields(self._db, ids)
            index.add(ids, vectors, video=video, start=start, end=end)  # type: ignore[call-arg]
        else:
            index.add(ids, vectors)

    def _rebuild(self, snap: catalog.CatalogSnapshot, live: NDArray[np.int64]) -> None:
        """Build (training the compressed index when due) from the stored vectors, and save it at once."""
        t = time.perf_counter()
        vectors = np.asarray(self._segments.view(snap.segment_rows)[live], dtype=np.float32)
        fields = None
        if self.config.index.kind == "milvus":
            video = np.array([int(snap.video_ids[v], 16) for v in snap.segment_video[live].tolist()], np.int64)
            fields = {"video": video, "start": snap.segment_start[live], "end": snap.segment_end[live]}
        self._index = build_index(self.config.index, self._segments.dim, live, vectors, self._store(snap.segment_rows),
                                  base=self.path, fields=fields)
        self.last_build_seconds = time.perf_counter() - t  # train + add, read by bench/engine.py
        self._index_generation = snap.generation
        self._dirty = True
        self._publish(force=True)

    def _publish(self, force: bool = False) -> None:
        """Save the index for the current generation when it changed (after a commit: only if the last save
        is ``PUBLISH_SECONDS`` old, unless ``force``) and drop older index files."""
        if self._index is None or (not force and time.monotonic() - self._saved_at < PUBLISH_SECONDS):
            return
        meta = catalog.meta(self._db)
        if self._index_generation != meta["generation"]:  # internal invariant, not user input
            raise CollectionError(f"internal: the writer's index is at generation {self._index_generation}, "
                                  f"the catalogue at {meta['generation']}")
        target = index_path(self.path, meta["generation"])
        self._index.info = {"generation": meta["generation"], "segment_rows": meta["segment_rows"]}
        if self._dirty or not target.exists():
            self._index.save(target)
            self._dirty = False
        for generation, old in index_files(self.path):
            if old != target:
                old.unlink(missing_ok=True)
        self._saved_at = time.monotonic()

    def rebuild_index(self, index: IndexConfig | None = None) -> dict[str, Any]:
        """Rebuild (and retrain, for the compressed index) the index from the stored vectors, and save it.

        Args:
            index: a new index configuration (move the segment vectors into Milvus, or back to FAISS, or retrain
                with other PQ settings); the manifest records it first, so a crash before the new index is saved
                leaves a collection that rebuilds it on open (``_ensure_index`` rejects an index of the other
                backend). The stored vectors and the catalogue do not change. A Milvus collection left behind
                keeps its rows until dropped in Milvus.
        """
        with self._lock:
            self._recover()
            before = self.config.index
            if index is not None and index != before:
                self.config = _own_milvus_collection(replace(self.config, index=index))
                self.manifest = write_manifest(self.path, self.config, {"frame": self._frames.dim,
                                                                        "segment": self._segments.dim})
                self._close_index()
                if self._engine is not None:  # it holds the old backend's index at this same generation
                    self._engine.close()
                    self._engine = None
            snap = catalog.read_snapshot(self._db)
            t = time.perf_counter()
            self._rebuild(snap, self._live_ids(snap))
            assert self._index is not None  # set by _rebuild
            return {"index": type(self._index).__name__, "kind": str(self.config.index.kind),
                    "changed_from": None if before == self.config.index
                    else replace(self.config, index=before).to_dict()["index"],
                    "vectors": len(self._index), "seconds": round(time.perf_counter() - t, 2),
                    "memory_bytes": self._index.memory_bytes()}

    def _retrain_if_due(self) -> None:
        n = len(self._index) if self._index is not None else 0
        if (isinstance(self._index, FlatIndex) and uses_ivf(self.config.index, n)) or \
                (self._index is not None and outgrown(self.config.index, self._index, n)):
            # enough segments now: train the compressed index (or retrain one trained for a
            # collection 16x smaller, whose lists have grown 16x)
            snap = catalog.read_snapshot(self._db)
            self._rebuild(snap, self._live_ids(snap))

    def _encoder(self) -> MediaEncoder:
        if self._media_encoder is None:
            from vidsearch.encode.pipeline import MediaEncoder

            self._media_encoder = MediaEncoder(self.config)
        return self._media_encoder

    # ------------------------------------------------------------------ writing
    def add(
        self,
        paths: Iterable[str | os.PathLike[str]],
        on_file: Callable[[FileReport], None] | None = None,
    ) -> list[FileReport]:
        """Index files and folders (recursively). A bad file is reported and skipped; the batch goes on.

        Args:
            paths: files or folders.
            on_file: called after each file with its report (for progress display).

        Returns:
            One report per file: ``indexed``, ``skipped`` (same content already indexed) or ``failed``.

        Raises:
            CollectionLockedError: another process is writing to this collection.
        """
        return self._each_file(iter_media_files(paths), lambda path: self._add_one(path, self._encoder), on_file)

    def _each_file(self, items: Iterable[_Item], add_one: Callable[[_Item], FileReport],
                   on_file: Callable[[FileReport], None] | None) -> list[FileReport]:
        """The writer's loop of ``add`` and ``add_encoded``: under the lock, after crash recovery and with an
        up-to-date index, one report per item; the index retrained if due and saved at the end, whatever happens."""
        reports: list[FileReport] = []
        with self._lock:
            self._recover()
            self._ensure_index()
            try:
                for item in items:
                    report = add_one(item)
                    reports.append(report)
                    if on_file is not None:
                        on_file(report)
            finally:
                self._retrain_if_due()
                self._publish(force=True)
        return reports

    def add_vectors(self, videos: Iterable[VectorVideo], batch_segments: int = 20_000,
                    on_batch: Callable[[int], None] | None = None) -> list[str]:
        """Add videos from pre-computed vectors instead of media files (imports, tests, benchmarks at scale).

        Each batch of about ``batch_segments`` segments is one commit (vectors, then one catalogue
        transaction). The index is kept up to date as in :meth:`add`; when the import takes the
        collection past ``IndexConfig.train_min`` segments, the compressed index is trained once at
        the end on everything (readers meanwhile search the last saved index plus an exact scan).

        Args:
            videos: the videos (see :class:`VectorVideo`).
            batch_segments: segments per commit.
            on_batch: called with the number of videos added so far after each commit.

        Returns:
            The new videos' ids, in order.

        Raises:
            ShapeError: arrays of the wrong shape or width for this collection.
            CollectionError: a video with the same content is already indexed.
        """
        ids: list[str] = []
        with self._lock:
            self._recover()
            self._ensure_index()
            pending: list[tuple[VideoRecord, NDArray[np.float32], NDArray[np.float32]]] = []
            try:
                for video in videos:
                    pending.append(self._vector_record(video))
                    if sum(len(p[2]) for p in pending) >= batch_segments:
                        ids += self._commit_many(pending)
                        pending = []
                        if on_batch is not None:
                            on_batch(len(ids))
                if pending:
                    ids += self._commit_many(pending)
                    if on_batch is not None:
                        on_batch(len(ids))
            finally:
                if self._index is None:  # the import outgrew the exact index: train once, on everything
                    snap = catalog.read_snapshot(self._db)
                    self._rebuild(snap, self._live_ids(snap))
                self._retrain_if_due()
                self._publish(force=True)
        return ids

    def _vector_record(self, video: VectorVideo) -> tuple[VideoRecord, NDArray[np.float32], NDArray[np.float32]]:
        import hashlib

        from vidsearch.decode import MediaInfo, Segment

        times = np.asarray(video.frame_times, np.float64)
        frames = np.asarray(video.frame_vectors, np.float32)
        if frames.ndim != 2 or frames.shape[1] != self._frames.dim or len(times) != len(frames) or len(frames) == 0:
            raise ShapeError(f"{video.name}: expected (F,) frame times and (F, {self._frames.dim}) frame vectors with "
                             f"F >= 1, got {times.shape} and {frames.shape}")
        duration = float(video.duration if video.duration is not None else times[-1] + 1.0 / self.config.decode.fps)
        if video.segment_vectors is None:
            info = MediaInfo(video.name, duration, self.config.decode.fps, 0, 0, "vectors", "vectors", False)
            media = self._stored_segmenter().encode_frames(info, times, frames)
            segs, seg_vectors = media.segments, media.segment_vectors
        else:
            seg_vectors = np.asarray(video.segment_vectors, np.float32)
            st = np.asarray(video.segment_times if video.segment_times is not None else np.zeros((0, 2)), np.float64)
            if seg_vectors.ndim != 2 or seg_vectors.shape[1] != self._segments.dim or st.shape != (len(seg_vectors), 2):
                raise ShapeError(f"{video.name}: expected (S, {self._segments.dim}) segment vectors and (S, 2) segment "
                                 f"times, got {seg_vectors.shape} and {st.shape}")
            bounds = np.searchsorted(times, st)
            segs = [Segment(float(a), float(b), int(fa), int(max(fb, fa + 1))) for (a, b), (fa, fb) in zip(st, bounds)]
        digest = hashlib.sha256(video.name.encode() + frames.tobytes()).hexdigest()
        if catalog.find_by_hash(self._db, digest) is not None:
            raise CollectionError(f"{video.name}: these vectors are already indexed")
        record = VideoRecord(
            digest[:12], video.name, digest, 0, duration, float(self.config.decode.fps), 0, 0, "vectors", False, times,
            np.array([s.start for s in segs], np.float64), np.array([s.end for s in segs], np.float64),
            np.array([s.frame_start for s in segs], np.int64), np.array([s.frame_end for s in segs], np.int64))
        return record, frames, seg_vectors

    def _commit_many(self, items: list[tuple[VideoRecord, NDArray[np.float32], NDArray[np.float32]]]) -> list[str]:
        """Vectors of several videos appended at once, then one catalogue transaction for all of them."""
        meta = catalog.meta(self._db)
        seg_row, frame_row = meta["segment_rows"], meta["frame_rows"]
        self._frames.append(np.concatenate([f for _, f, _ in items]).astype(np.float16), frame_row)
        vectors = np.concatenate([v for _, _, v in items])
        self._segments.append(vectors, seg_row)
        catalog.commit_videos(self._db, [r for r, _, _ in items], seg_row, frame_row)
        live = (len(self._index) if self._index is not None else 0) + len(vectors)
        if isinstance(self._index, FlatIndex) and uses_ivf(self.config.index, live):
            self._index = None  # past train_min: the compressed index is trained at the end of the import
        if self._index is not None:
            self._index_add(self._index, np.arange(seg_row, seg_row + len(vectors), dtype=np.int64), vectors)
            self._index_generation = catalog.meta(self._db)["generation"]
            self._dirty = True
            self._publish()
        return [r.video_id for r, _, _ in items]

    def _stored_segmenter(self) -> MediaEncoder:
        if self._segmenter is None:  # one per collection: add_vectors cuts every imported video with it
            self._segmenter = stored_segmenter(self.config, self._frames.dim)
        return self._segmenter

    def add_encoded(self, files: Iterable[EncodedFile],
                    on_file: Callable[[FileReport], None] | None = None) -> list[FileReport]:
        """Commit files encoded elsewhere (a Spark job's tasks), in the order given, exactly as :meth:`add`
        commits the files it encodes: same ids, same rows, a file whose content is already indexed skipped.

        Raises:
            CollectionLockedError: another process is writing to this collection.
            ShapeError: a file's vectors do not have the collection's width (encoded with another config).
        """
        return self._each_file(files, self._add_encoded_one, on_file)

    def writing(self) -> WriterLock:
        """The writer lock, to hold across several writes (reentrant): ``with coll.writing(): ...``; a Spark job
        holds it from listing what is indexed to its commit, so nothing else writes in between."""
        return self._lock

    def content_hashes(self) -> set[str]:
        """The SHA-256 of every indexed file (a file with one of these contents is skipped by ``add``)."""
        return catalog.content_hashes(self._db)

    def _add_encoded_one(self, item: EncodedFile) -> FileReport:
        if item.error is not None or item.media is None or item.digest is None:
            return FileReport(item.path, "failed", error=item.error or "not encoded")
        found = catalog.find_by_hash(self._db, item.digest)
        if found is not None:
            return FileReport(item.path, "skipped", found[0], error=f"already indexed as {found[0]} ({found[1]})")
        if item.media is KNOWN:
            return FileReport(item.path, "failed", error="its content was indexed when the job started and has been "
                                                         "removed since; index it again")
        media = item.media
        frame_dim, segment_dim = self._frames.dim, self._segments.dim
        if media.segment_vectors.shape[1:] != (segment_dim,) or media.frame_vectors.shape[1:] != (frame_dim,):
            raise ShapeError(f"{item.path}: encoded with frame/segment width {media.frame_vectors.shape[1:]}/"
                             f"{media.segment_vectors.shape[1:]}, the collection holds ({frame_dim},)/({segment_dim},); "
                             "encode with the collection's config")
        t_store = time.perf_counter()
        video_id = self._commit(path_text(item.path), item.digest, media.info, media.times, media.frame_vectors,
                                media.segments, media.segment_vectors, size_bytes=item.size_bytes)
        self._publish()
        timings = {**item.timings, "store": time.perf_counter() - t_store}
        return FileReport(item.path, "indexed", video_id, len(media.segments), media.info.duration, timings=timings)

    def _recover(self) -> None:
        """Drop vector rows past the committed counts and half-written index files (left by a crash mid-write)."""
        meta = catalog.meta(self._db)
        self._segments.truncate(meta["segment_rows"])
        self._frames.truncate(meta["frame_rows"])
        for stale in self.path.glob("index-*.faiss.*.tmp"):  # only a writer saves, and we hold the lock
            stale.unlink(missing_ok=True)

    def _add_one(self, path: Path, encoder: Callable[[], MediaEncoder]) -> FileReport:
        item = encode_for_add(path, encoder, lambda digest: catalog.find_by_hash(self._db, digest) is not None)
        try:
            return self._add_encoded_one(item)
        except (VidsearchError, OSError) as exc:
            return FileReport(item.path, "failed", error=str(exc))

    def _commit(self, path: str, digest: str, info: Any, times: NDArray[np.float64], frame_vectors: NDArray[np.float32],
                segments: list[Any], segment_vectors: NDArray[np.float32], size_bytes: int) -> str:
        meta = catalog.meta(self._db)
        seg_row, frame_row = meta["segment_rows"], meta["frame_rows"]
        # 1. vectors first (fsynced), past the committed rows
        self._frames.append(frame_vectors.astype(np.float16), frame_row)
        self._segments.append(segment_vectors, seg_row)
        _crash_point("after-vectors")
        # 2. one transaction: video, segments, counts, generation
        video_id = digest[:12]
        record = VideoRecord(
            video_id, path, digest, size_bytes, float(info.duration), float(info.fps), int(info.width),
            int(info.height), str(info.codec), bool(info.is_image), np.asarray(times, np.float64),
            np.array([s.start for s in segments], np.float64), np.array([s.end for s in segments], np.float64),
            np.array([s.frame_start for s in segments], np.int64), np.array([s.frame_end for s in segments], np.int64))
        catalog.commit_videos(self._db, [record], seg_row, frame_row, before_commit=lambda: _crash_point("before-commit"))
        _crash_point("after-commit")
        # 3. the in-memory index follows the catalogue
        assert self._index is not None  # _ensure_index ran under the same lock
        self._index_add(self._index, np.arange(seg_row, seg_row + len(segments), dtype=np.int64), segment_vectors)
        self._index_generation = catalog.meta(self._db)["generation"]
        self._dirty = True
        return video_id

    def remove(self, video: str) -> dict[str, Any]:
        """Remove a video by id (or unique id prefix) or by path.

        Raises:
            NotFoundError: no such video in the collection.
        """
        with self._lock:
            self._recover()
            self._ensure_index()
            video_id, path = catalog.resolve_video(self._db, video, self.path)
            ids = catalog.remove_video(self._db, video_id)
            assert self._index is not None  # _ensure_index ran under the same lock
            self._index.remove(ids)
            self._index_generation = catalog.meta(self._db)["generation"]
            self._dirty = True
            self._publish(force=True)
        return {"video_id": video_id, "path": path, "segments_removed": int(len(ids))}

    def calibrate(self, par_threshold: float, source: str = "") -> None:
        """Store the PAR threshold (cosine) measured on a calibration split; per-query params still override it."""
        if not -1.0 <= par_threshold <= 1.0:
            raise QueryError(f"par_threshold is a cosine in [-1, 1], got {par_threshold}")
        with self._lock:
            write_search_defaults(self.path, {"par_threshold": float(par_threshold), "source": source})

    # ------------------------------------------------------------------ reading
    def videos(self) -> list[dict[str, Any]]:
        return catalog.list_videos(self._db)

    def engine(self) -> Engine:
        """This process's reader of the collection, refreshed to the latest commit."""
        if self._engine is None:
            self._engine = Engine(self.path, refresh_seconds=0.0)
        else:
            self._engine.refresh()
        return self._engine

    def search(self, query: str | os.PathLike[str], k: int = 10, params: SearchParams | None = None) -> SearchResult:
        """``Engine.search`` on this collection (see there)."""
        return self.engine().search(query, k, params)

    def search_defaults(self) -> dict[str, Any]:
        return self.engine().search_defaults()

    def frame_vectors(self, video_id: str) -> tuple[NDArray[np.float64], NDArray[np.float16]]:
        """The stored (F,) frame times and (F, D) float16 frame vectors of a video."""
        return self.engine().frame_vectors(video_id)

    def info(self) -> dict[str, Any]:
        """Counts, sizes and configuration of the collection, and which index answers searches."""
        meta = catalog.meta(self._db)
        totals = catalog.totals(self._db)
        disk = sum(f.stat().st_size for f in self.path.iterdir() if f.is_file())
        read_search_defaults(self.path)  # a damaged defaults file is reported here, not at the next search
        return {
            "path": str(self.path),
            "format_version": self.manifest["format_version"],
            "config": self.config.to_dict(),
            "dims": self.manifest.get("dims", {}),
            "videos": totals["videos"],
            "segments": totals["segments"],
            "frames": int(meta["frame_rows"]),
            "duration_s": round(totals["duration_s"], 3),
            "generation": int(meta["generation"]),
            "disk_bytes": int(disk),
            "index": self.engine().index_info(),
            "versions": self.manifest.get("versions", {}),
        }


def _crash_point(name: str) -> None:
    """Tests set VIDSEARCH_CRASH_AT=<name> to SIGKILL the process at that point of a commit."""
    if os.environ.get("VIDSEARCH_CRASH_AT") == name:
        import signal

        os.kill(os.getpid(), signal.SIGKILL)
