"""``Collection``: the public API over a collection directory.

Directory layout (see docs/ARCHITECTURE.md):
    manifest.json            format_version, library versions, every stage's frozen config
    catalog.sqlite (+ -wal)  videos, segments, committed vector-file row counts, generation
    segments.f32             segment vectors (float32), row = segment id
    frames.f16               per-frame vectors (float16), rows referenced by videos/segments
    index-<generation>.faiss the vector index as of that catalogue generation (a cache)
    .lock                    the writer lock

Durability: vectors are appended and fsynced first, then one SQLite transaction per video
records the video, its segments and the new row counts. A crash before that commit leaves rows
past the committed counts, which the next writer truncates; the index file is named by the
generation it reflects and is rebuilt from the vector files when it is missing or stale.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from vidsearch.config import CollectionConfig
from vidsearch.decode import IMAGE_EXTENSIONS, MediaInfo
from vidsearch.errors import CollectionError, NotFoundError, QueryError, VidsearchError
from vidsearch.index.base import IndexHits, VectorIndex, build_index, load_index, outgrown, uses_ivf
from vidsearch.index.flat import FlatIndex
from vidsearch.index.ivf import IVFPQConfig, IVFPQIndex
from vidsearch.search.results import Match, SearchParams, SearchResult, VideoHit
from vidsearch.search.vote import SegmentTable, vote
from vidsearch.store import catalog
from vidsearch.store.lock import WriterLock
from vidsearch.store.manifest import MANIFEST, read_manifest, write_manifest
from vidsearch.store.vectors import VectorFile

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = frozenset(
    ".mp4 .m4v .mov .mkv .webm .avi .wmv .asf .flv .f4v .3gp .3g2 .mpg .mpeg .m1v .m2v .vob .ts .mts .m2ts "
    ".ogv .ogg .rm .rmvb .swf .gif .mxf .dv .divx .y4m".split()
)
MEDIA_EXTENSIONS = VIDEO_EXTENSIONS | IMAGE_EXTENSIONS
_ID_PREFIX = re.compile(r"[0-9a-f]+")
_REF_QUERY = re.compile(r"^(?P<video>[0-9a-f]{4,64})@(?P<start>\d+(?:\.\d+)?)-(?P<end>\d+(?:\.\d+)?)$")


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


def iter_media_files(paths: Iterable[str | os.PathLike[str]]) -> Iterator[Path]:
    """Expand files and folders (recursively, following links but never a loop) into media files.

    Files named explicitly are always yielded (a bad one is reported later); files found in
    folders are yielded only when their ending is a known video or image ending.
    """
    seen_dirs: set[tuple[int, int]] = set()
    for raw in paths:
        p = Path(raw)
        if not p.is_dir():
            yield p
            continue
        stack = [p]
        while stack:
            d = stack.pop()
            try:
                st = d.stat()
            except OSError:
                continue
            key = (st.st_dev, st.st_ino)
            if key in seen_dirs:
                continue  # symlink loop or a folder reached twice
            seen_dirs.add(key)
            try:
                entries = sorted(os.scandir(d), key=lambda e: e.name)
            except OSError as exc:
                log.warning("cannot list %s: %s", d, exc)
                continue
            subdirs = []
            for entry in entries:
                try:
                    if entry.is_dir(follow_symlinks=True):
                        subdirs.append(Path(entry.path))
                    elif entry.is_file(follow_symlinks=True) and Path(entry.name).suffix.lower() in MEDIA_EXTENSIONS:
                        yield Path(entry.path)
                except OSError:
                    continue
            stack.extend(reversed(subdirs))


def file_hash(path: Path) -> str:
    """SHA-256 of the file's bytes."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


class Collection:
    """A searchable collection of videos in one directory.

    Use :meth:`create` or :meth:`open`; searching needs no lock, adding and removing take the
    writer lock for the duration of the call.
    """

    def __init__(self, path: Path, manifest: dict[str, Any]) -> None:
        self.path = path
        self.manifest = manifest
        self.config = CollectionConfig.from_dict(manifest["config"])
        self._db = catalog.open_existing(path / "catalog.sqlite")
        try:
            self._segments = _open_vectors(path / "segments.f32", manifest["dims"]["segment"], "float32")
            self._frames = _open_vectors(path / "frames.f16", manifest["dims"]["frame"], "float16")
            meta = self._meta()
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
        self._media_encoder = None
        self._index: VectorIndex | None = None
        self._table: SegmentTable | None = None
        self._generation = -1

    # ------------------------------------------------------------------ lifecycle
    @classmethod
    def create(cls, path: str | os.PathLike[str], config: CollectionConfig | None = None) -> "Collection":
        """Create an empty collection at ``path`` (absent or an empty directory).

        Raises:
            CollectionError: ``path`` exists and is not empty.
        """
        from vidsearch.encode.frame import SPECS
        from vidsearch.encode.temporal import load_aggregator

        config = config or CollectionConfig()
        target = Path(path)
        if target.exists() and (not target.is_dir() or any(target.iterdir())):
            what = "a collection" if (target / MANIFEST).exists() else "not empty"
            raise CollectionError(f"cannot create a collection at {target}: it is {what}; open it or choose a new directory")
        target.parent.mkdir(parents=True, exist_ok=True)
        frame_dim = SPECS[config.encode.encoder].dim
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
            if target.exists():
                target.rmdir()
            os.replace(tmp, target)  # the collection appears whole or not at all
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
        manifest = read_manifest(target)
        return cls(target, manifest)

    @classmethod
    def open_or_create(cls, path: str | os.PathLike[str], config: CollectionConfig | None = None) -> "Collection":
        target = Path(path)
        if (target / MANIFEST).exists():
            coll = cls.open(target)
            if config is not None and config != coll.config:
                raise CollectionError(
                    f"{target} was built with {coll.config.to_dict()}; it cannot change to {config.to_dict()}. "
                    "Omit the build options, or index into a new collection"
                )
            return coll
        return cls.create(target, config)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "Collection":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ state
    def _meta(self) -> dict[str, int]:
        return catalog.meta(self._db)

    def _load_table(self, meta: dict[str, int]) -> NDArray[np.int64]:
        """Rebuild the in-memory segment table from the catalogue; returns the live segment ids."""
        rows = self._db.execute("SELECT id, video_id, start, \"end\" FROM segments ORDER BY id").fetchall()
        committed = meta["segment_rows"]
        video_ids = sorted({r[1] for r in rows})
        position = {v: i for i, v in enumerate(video_ids)}
        video = np.full(committed, -1, np.int32)
        start = np.zeros(committed, np.float64)
        end = np.zeros(committed, np.float64)
        ids = np.fromiter((r[0] for r in rows), np.int64, len(rows))
        if len(rows):
            video[ids] = [position[r[1]] for r in rows]
            start[ids] = [r[2] for r in rows]
            end[ids] = [r[3] for r in rows]
        self._table = SegmentTable(video, start, end, video_ids)
        return ids

    def _load_state(self) -> None:
        """(Re)load the segment table and the index if the catalogue moved on since last time."""
        meta = self._meta()
        if meta["generation"] == self._generation and self._index is not None:
            return
        ids = self._load_table(meta)
        index_path = self.path / f"index-{meta['generation']}.faiss"
        index = None
        if index_path.exists():
            try:
                index = load_index(self.config.index, index_path, self._store)
                if len(index) != len(ids) or index.dim != self._segments.dim:
                    log.warning("%s does not match the catalogue; rebuilding the index from the vector files", index_path)
                    index = None
            except CollectionError as exc:
                log.warning("%s; rebuilding the index from the vector files", exc)
        if index is None:
            index = self._build_index(ids, meta)
        self._index = index
        self._generation = meta["generation"]

    @property
    def _store(self) -> "_SegmentStore":
        return _SegmentStore(self)

    def _build_index(self, ids: NDArray[np.int64], meta: dict[str, int]) -> VectorIndex:
        vectors = self._segments.read(ids, meta["segment_rows"]).astype(np.float32)
        return build_index(self.config.index, self._segments.dim, ids, vectors, self._store)

    def rebuild_index(self) -> dict[str, Any]:
        """Rebuild (and retrain, for the compressed index) the index from the stored vectors."""
        with self._lock:
            self._recover()
            meta = self._meta()
            ids = self._load_table(meta)
            t = time.perf_counter()
            self._index = self._build_index(ids, meta)
            self._generation = meta["generation"]
            (self.path / f"index-{self._generation}.faiss").unlink(missing_ok=True)
            self._save_index()
            return {"index": type(self._index).__name__, "vectors": len(self._index),
                    "seconds": round(time.perf_counter() - t, 2), "memory_bytes": self._index.memory_bytes()}

    def _save_index(self) -> None:
        """Persist the index for the current generation and drop older index files."""
        assert self._index is not None  # internal invariant, not user input
        target = self.path / f"index-{self._generation}.faiss"
        if not target.exists():
            self._index.save(target)
        for old in self.path.glob("index-*.faiss"):
            if old != target:
                old.unlink(missing_ok=True)

    def _encoder(self):  # type: ignore[no-untyped-def]
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
        reports: list[FileReport] = []
        with self._lock:
            self._recover()
            self._load_state()
            encoder = self._encoder()
            try:
                for path in iter_media_files(paths):
                    report = self._add_one(path, encoder)
                    reports.append(report)
                    if on_file is not None:
                        on_file(report)
            finally:
                if (isinstance(self._index, FlatIndex) and uses_ivf(self.config.index, len(self._index))) or \
                        outgrown(self.config.index, self._index, len(self._index)):
                    # enough segments now: train the compressed index (or retrain one trained for a
                    # collection 16x smaller, whose lists have grown 16x)
                    meta = self._meta()
                    self._index = self._build_index(self._load_table(meta), meta)
                self._save_index()
        return reports

    def _recover(self) -> None:
        """Drop vector rows past the committed counts and half-written index files (left by a crash mid-write)."""
        meta = self._meta()
        self._segments.truncate(meta["segment_rows"])
        self._frames.truncate(meta["frame_rows"])
        for stale in self.path.glob("index-*.faiss.*.tmp"):  # only a writer saves, and we hold the lock
            stale.unlink(missing_ok=True)

    def _add_one(self, path: Path, encoder) -> FileReport:  # type: ignore[no-untyped-def]
        t0 = time.perf_counter()
        shown = str(path)
        try:
            if not path.is_file():
                raise CollectionError(f"{path}: no such file (or not a regular file)")
            digest = file_hash(path)
            row = self._db.execute("SELECT id, path FROM videos WHERE content_hash = ?", (digest,)).fetchone()
            if row is not None:
                return FileReport(shown, "skipped", row[0], error=f"already indexed as {row[0]} ({row[1]})")
            hash_s = time.perf_counter() - t0
            media = encoder.encode_file(path)
            t_store = time.perf_counter()
            video_id = self._commit(path, digest, media)
            timings = {**media.timings, "hash": hash_s, "store": time.perf_counter() - t_store}
            return FileReport(shown, "indexed", video_id, len(media.segments), media.info.duration, timings=timings)
        except (VidsearchError, OSError) as exc:
            return FileReport(shown, "failed", error=str(exc))
        except Exception as exc:  # an unexpected library error on one file must not stop the batch
            log.exception("unexpected error on %s", path)
            return FileReport(shown, "failed", error=f"{type(exc).__name__}: {exc}")

    def _commit(self, path: Path, digest: str, media) -> str:  # type: ignore[no-untyped-def]
        meta = self._meta()
        seg_row, frame_row = meta["segment_rows"], meta["frame_rows"]
        n_seg, n_frames = len(media.segments), len(media.times)
        # 1. vectors first (fsynced), past the committed rows
        self._frames.append(media.frame_vectors.astype(np.float16), frame_row)
        self._segments.append(media.segment_vectors, seg_row)
        _crash_point("after-vectors")
        # 2. one transaction: video, segments, counts, generation
        video_id = digest[:12]
        info: MediaInfo = media.info
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute(
                "INSERT INTO videos (id, path, content_hash, size_bytes, duration, fps, width, height, codec, is_image,"
                " status, frame_row, n_frames, frame_times) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (video_id, str(path.resolve()), digest, path.stat().st_size, info.duration, info.fps, info.width,
                 info.height, info.codec, int(info.is_image), "indexed", frame_row, n_frames,
                 media.times.astype("<f8").tobytes()),
            )
            db.executemany(
                "INSERT INTO segments (id, video_id, start, \"end\", frame_start, frame_end) VALUES (?,?,?,?,?,?)",
                [(seg_row + i, video_id, s.start, s.end, frame_row + s.frame_start, frame_row + s.frame_end)
                 for i, s in enumerate(media.segments)],
            )
            db.execute("UPDATE meta SET value = ? WHERE key = 'segment_rows'", (seg_row + n_seg,))
            db.execute("UPDATE meta SET value = ? WHERE key = 'frame_rows'", (frame_row + n_frames,))
            db.execute("UPDATE meta SET value = value + 1 WHERE key = 'generation'")
            _crash_point("before-commit")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        _crash_point("after-commit")
        # 3. the in-memory index and table follow the catalogue
        ids = np.arange(seg_row, seg_row + n_seg, dtype=np.int64)
        assert self._index is not None and self._table is not None
        self._index.add(ids, media.segment_vectors)
        self._extend_table(video_id, media, seg_row)
        self._generation = self._meta()["generation"]
        return video_id

    def _extend_table(self, video_id: str, media, seg_row: int) -> None:  # type: ignore[no-untyped-def]
        t = self._table
        assert t is not None
        n_new = seg_row + len(media.segments)
        video = np.full(n_new, -1, np.int32)
        video[: len(t.video)] = t.video
        start = np.zeros(n_new, np.float64)
        start[: len(t.start)] = t.start
        end = np.zeros(n_new, np.float64)
        end[: len(t.end)] = t.end
        ids = t.video_ids + [video_id]
        video[seg_row:n_new] = len(ids) - 1
        start[seg_row:n_new] = [s.start for s in media.segments]
        end[seg_row:n_new] = [s.end for s in media.segments]
        self._table = SegmentTable(video, start, end, ids)

    def remove(self, video: str) -> dict[str, Any]:
        """Remove a video by id (or unique id prefix) or by path.

        Raises:
            NotFoundError: no such video in the collection.
        """
        with self._lock:
            self._recover()
            self._load_state()
            video_id, path = self._resolve_video(video)
            ids = np.array([r[0] for r in self._db.execute("SELECT id FROM segments WHERE video_id = ?", (video_id,))], np.int64)
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute("DELETE FROM segments WHERE video_id = ?", (video_id,))
                db.execute("DELETE FROM videos WHERE id = ?", (video_id,))
                db.execute("UPDATE meta SET value = value + 1 WHERE key = 'generation'")
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            assert self._index is not None
            self._index.remove(ids)
            self._load_table(self._meta())
            self._generation = self._meta()["generation"]
            self._save_index()
        return {"video_id": video_id, "path": path, "segments_removed": int(len(ids))}

    def _resolve_video(self, video: str) -> tuple[str, str]:
        row = self._db.execute("SELECT id, path FROM videos WHERE id = ?", (video,)).fetchone()
        if row is None and _ID_PREFIX.fullmatch(video):  # hex only: '' or '%' must not match every id
            rows = self._db.execute("SELECT id, path FROM videos WHERE id LIKE ?", (video + "%",)).fetchall()
            if len(rows) > 1:
                raise NotFoundError(f"video id prefix {video!r} is ambiguous ({len(rows)} videos); give more characters")
            row = rows[0] if rows else None
        if row is None:
            resolved = str(Path(video).resolve()) if video else video
            row = self._db.execute("SELECT id, path FROM videos WHERE path = ?", (resolved,)).fetchone()
        if row is None:
            raise NotFoundError(f"no video {video!r} in {self.path}; `vidsearch info --collection {self.path}` lists them")
        return str(row[0]), str(row[1])

    # ------------------------------------------------------------------ reading
    def videos(self) -> list[dict[str, Any]]:
        cols = ["id", "path", "duration", "fps", "width", "height", "codec", "is_image", "status", "n_frames", "added_at"]
        rows = self._db.execute(f"SELECT {', '.join(cols)} FROM videos ORDER BY added_at, id").fetchall()
        out = []
        for r in rows:
            d = dict(zip(cols, r))
            d["is_image"] = bool(d["is_image"])
            d["segments"] = self._db.execute("SELECT COUNT(*) FROM segments WHERE video_id = ?", (d["id"],)).fetchone()[0]
            out.append(d)
        return out

    def info(self) -> dict[str, Any]:
        """Counts, sizes and configuration of the collection."""
        meta = self._meta()
        n_videos, total_duration = self._db.execute("SELECT COUNT(*), COALESCE(SUM(duration), 0) FROM videos").fetchone()
        n_segments = self._db.execute("SELECT COUNT(*) FROM segments").fetchone()[0]
        disk = sum(f.stat().st_size for f in self.path.iterdir() if f.is_file())
        return {
            "path": str(self.path),
            "format_version": self.manifest["format_version"],
            "config": self.config.to_dict(),
            "dims": self.manifest.get("dims", {}),
            "videos": int(n_videos),
            "segments": int(n_segments),
            "frames": int(meta["frame_rows"]),
            "duration_s": round(float(total_duration), 3),
            "generation": int(meta["generation"]),
            "disk_bytes": int(disk),
            "index": self._index_info(),
            "versions": self.manifest.get("versions", {}),
        }

    def _video_segments(self, video_id: str) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float32]]:
        """A video's segment (starts, ends, vectors (m, d)) in time order, from segments.f32."""
        rows = self._db.execute(
            "SELECT id, start, \"end\" FROM segments WHERE video_id = ? ORDER BY start, id", (video_id,)).fetchall()
        ids = np.array([r[0] for r in rows], np.int64)
        vectors = self._segments.read(ids, self._meta()["segment_rows"]).astype(np.float32)
        return np.array([r[1] for r in rows]), np.array([r[2] for r in rows]), vectors

    def search_defaults(self) -> dict[str, Any]:
        """Search-time defaults stored with the collection (``calibrate``), else the encoder's built-in ones."""
        from vidsearch.search.rerank import DEFAULT_PAR_THRESHOLD

        path = self.path / "search_defaults.json"
        stored = json.loads(path.read_text()) if path.exists() else {}
        return {"par_threshold": stored.get("par_threshold", DEFAULT_PAR_THRESHOLD[self.config.encode.encoder]),
                "calibrated": "par_threshold" in stored, **{k: v for k, v in stored.items() if k != "par_threshold"}}

    def calibrate(self, par_threshold: float, source: str = "") -> None:
        """Store the PAR threshold (cosine) measured on a calibration split; per-query params still override it."""
        from vidsearch.store.manifest import atomic_write_text

        if not -1.0 <= par_threshold <= 1.0:
            raise QueryError(f"par_threshold is a cosine in [-1, 1], got {par_threshold}")
        with self._lock:
            atomic_write_text(self.path / "search_defaults.json",
                              json.dumps({"par_threshold": float(par_threshold), "source": source}, indent=2) + "\n")

    def _index_info(self) -> dict[str, Any]:
        self._load_state()
        assert self._index is not None
        kind = "ivfpq" if not isinstance(self._index, FlatIndex) else "flat"
        n = len(self._index)
        info: dict[str, Any] = {"kind": kind, "vectors": n, "memory_bytes": int(self._index.memory_bytes())}
        if isinstance(self._index, IVFPQIndex) and self._index._ivf is not None:
            ivf = self._index
            wanted = IVFPQConfig(pq_m=ivf.config.pq_m, reduce=self.config.index.reduce).code_dim(ivf.dim)
            info.update(lists=int(ivf._ivf.nlist), dim=ivf.dim, code_dim=ivf.code_dim, quantizer=ivf.config.quantizer,
                        pq_bytes=ivf.config.pq_m * ivf.config.nbits // 8,
                        memory_bytes_per_vector=round(info["memory_bytes"] / max(n, 1), 1), advice=None)
            if ivf.code_dim != wanted:
                # e.g. a file from before the PCA projection: codes of the full vectors, slower (issue #4)
                info["advice"] = (f"the index codes {ivf.code_dim}-d vectors where this configuration asks for "
                                  f"{wanted}-d; run `vidsearch index {self.path} --rebuild-index` to rebuild it")
        return info

    def frame_vectors(self, video_id: str) -> tuple[NDArray[np.float64], NDArray[np.float16]]:
        """The stored (F,) frame times and (F, D) float16 frame vectors of a video."""
        row = self._db.execute("SELECT frame_row, n_frames, frame_times FROM videos WHERE id = ?", (video_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"no video {video_id!r} in {self.path}")
        frame_row, n, times = row
        vectors = self._frames.read(slice(frame_row, frame_row + n), self._meta()["frame_rows"])
        return np.frombuffer(times, dtype="<f8").copy(), vectors

    def search(self, query: str | os.PathLike[str], k: int = 10, params: SearchParams | None = None) -> SearchResult:
        """Find the videos that contain (or look like) the query, best first.

        Args:
            query: a video file, an image file, or ``VIDEO_ID@START-END`` (seconds) of an indexed video.
            k: number of videos to return.
            params: search-time parameters.

        Returns:
            SearchResult with up to ``k`` videos, each with matched time ranges.

        Raises:
            QueryError: the query is neither a readable file nor a valid ``VIDEO_ID@START-END``.
            DecodeError: the query file cannot be decoded.
        """
        if k < 1:
            raise QueryError(f"k must be >= 1, got {k}")
        params = params or SearchParams()
        t0 = time.perf_counter()
        media = self._encode_query(str(query), crops=params.crops)
        t1 = time.perf_counter()
        rerank_ms = 0.0
        self._load_state()
        assert self._index is not None and self._table is not None
        starts = np.array([s.start for s in media.segments], np.float64)
        ends = np.array([s.end for s in media.segments], np.float64)
        from vidsearch.index.ivf import IVFSearchParams

        depth = 0 if params.rerank_depth == 0 else max(params.rerank_depth, params.segment_k)
        ivf_params = IVFSearchParams(params.nprobe, params.ef_search, depth)
        if not media.region_segment_vectors:
            hits = self._index.search(media.segment_vectors, params.segment_k, ivf_params)
        else:  # crops: one batch for the frame and its regions; each region's hits vote for its query segment
            n_seg = len(media.segment_vectors)
            both = self._index.search(np.concatenate([media.segment_vectors, *media.region_segment_vectors]),
                                      params.segment_k, ivf_params)
            parts = range(1 + len(media.region_segment_vectors))
            scores = [both.scores[i * n_seg : (i + 1) * n_seg].copy() for i in parts]
            for i, blank in enumerate(media.region_segment_blank, start=1):
                scores[i][blank] = -np.inf  # a blank crop (black corner) matches every fade to black
            hits = IndexHits(np.concatenate([both.ids[i * n_seg : (i + 1) * n_seg] for i in parts], axis=1),
                             np.concatenate(scores, axis=1))
        votes = vote(starts, ends, hits.ids, hits.scores, self._table, self.config.segment.stride,
                     params.min_similarity, params.max_matches)
        if params.rerank != "none":
            from vidsearch.search.rerank import rerank

            threshold = params.par_threshold
            if threshold is None and params.rerank == "par":
                threshold = self.search_defaults()["par_threshold"]
            t_rerank = time.perf_counter()
            votes = rerank(params.rerank, media.segment_vectors, starts, ends, votes[: params.rerank_candidates],
                           self._video_segments, threshold, regions=media.region_segment_vectors,
                           region_blank=media.region_segment_blank)
            rerank_ms = (time.perf_counter() - t_rerank) * 1000
        votes = votes[:k]
        paths = dict(self._db.execute(
            f"SELECT id, path FROM videos WHERE id IN ({','.join('?' * len(votes))})", [v.video_id for v in votes]
        ).fetchall()) if votes else {}
        results = [VideoHit(i + 1, v.video_id, paths.get(v.video_id, ""), v.score, v.matches) for i, v in enumerate(votes)]
        t2 = time.perf_counter()
        timings = {
            "decode": media.timings.get("decode", 0.0) * 1000,
            "encode": media.timings.get("encode", 0.0) * 1000,
            "search": (t2 - t1) * 1000,
            "total": (t2 - t0) * 1000,
        }
        result = SearchResult(str(query), k, results, timings)
        result.rerank_ms = rerank_ms  # part of "search"; not in the JSON shape
        return result

    def _encode_query(self, query: str, crops: bool = False):  # type: ignore[no-untyped-def]
        m = _REF_QUERY.match(query)
        if m and not Path(query).exists():
            video_id, _ = self._resolve_video(m.group("video"))
            start, end = float(m.group("start")), float(m.group("end"))
            if end <= start:
                raise QueryError(f"query {query!r}: END must be after START (seconds), got {start}-{end}")
            times, vectors = self.frame_vectors(video_id)
            keep = (times >= start - 1e-6) & (times < end - 1e-6)
            if not keep.any():
                raise QueryError(f"query {query!r}: video {video_id} has no frame between {start}s and {end}s")
            info = MediaInfo(query, end - start, 0.0, 0, 0, "stored", "stored", False)
            return self._encoder_for_stored().encode_frames(info, times[keep] - start, vectors[keep].astype(np.float32))
        path = Path(query)
        if not path.exists():
            raise QueryError(
                f"query {query!r} is neither an existing file nor VIDEO_ID@START-END of an indexed video "
                "(e.g. 3fa9c2d41b07@10-20)"
            )
        return self._encoder().encode_file(path, crops=crops)

    def _encoder_for_stored(self):  # type: ignore[no-untyped-def]
        """Segmenting stored frames needs the aggregator only, not the frame model."""
        from vidsearch.encode.pipeline import MediaEncoder

        class _NoFrameModel:
            name = self.config.encode.encoder
            dim = self._frames.dim
            input_size = (0, 0)

        return MediaEncoder(self.config, encoder=_NoFrameModel())  # type: ignore[arg-type]


class _SegmentStore:
    """Exact segment vectors by id (= row of segments.f32, memory-mapped) for the index's re-rank."""

    def __init__(self, collection: "Collection") -> None:
        self._c = collection

    def get(self, ids: NDArray[np.int64]) -> NDArray[np.float32]:
        return self._c._segments.read(ids, self._c._meta()["segment_rows"]).astype(np.float32, copy=False)


def _open_vectors(path: Path, dim: int, dtype: str) -> VectorFile:
    """Open a vector file and check it holds the rows the manifest promises."""
    vf = VectorFile.open(path)
    if vf.dim != dim or vf.dtype != np.dtype(dtype):
        raise CollectionError(
            f"{path}: expected {dim}-dim {dtype} rows (from the manifest), found {vf.dim}-dim {vf.dtype} in its header; "
            "the collection is damaged (restore it or re-index)"
        )
    return vf


def _crash_point(name: str) -> None:
    """Tests set VIDSEARCH_CRASH_AT=<name> to SIGKILL the process at that point of a commit."""
    if os.environ.get("VIDSEARCH_CRASH_AT") == name:
        import signal

        os.kill(os.getpid(), signal.SIGKILL)
