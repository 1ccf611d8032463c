"""The SQLite catalogue (WAL mode): videos, segments, and the committed row counts of the vector
files. One transaction per video is the commit point of ingest."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from vidsearch.errors import CollectionError, NotFoundError

META_KEYS = ("generation", "segment_rows", "frame_rows")
SQLITE_MAGIC = b"SQLite format 3\x00"

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS videos (
    id TEXT PRIMARY KEY,
    path TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    duration REAL NOT NULL,
    fps REAL NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    codec TEXT NOT NULL,
    is_image INTEGER NOT NULL,
    status TEXT NOT NULL,
    frame_row INTEGER NOT NULL,
    n_frames INTEGER NOT NULL,
    frame_times BLOB NOT NULL,
    added_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ','now'))
);
CREATE INDEX IF NOT EXISTS videos_hash ON videos(content_hash);
CREATE INDEX IF NOT EXISTS videos_path ON videos(path);
CREATE TABLE IF NOT EXISTS segments (
    id INTEGER PRIMARY KEY,
    video_id TEXT NOT NULL REFERENCES videos(id) ON DELETE CASCADE,
    start REAL NOT NULL,
    "end" REAL NOT NULL,
    frame_start INTEGER NOT NULL,
    frame_end INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS segments_video ON segments(video_id);
INSERT OR IGNORE INTO meta VALUES ('generation', 0), ('segment_rows', 0), ('frame_rows', 0);
"""


def connect(path: Path) -> sqlite3.Connection:
    """Open the catalogue in WAL mode with foreign keys on; ``synchronous=FULL`` so a commit survives power loss."""
    conn = sqlite3.connect(str(path), timeout=30, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


def open_existing(path: Path) -> sqlite3.Connection:
    """Connect to an existing catalogue and check that it is one (never creates an empty file in its place).

    Raises:
        CollectionError: the file is missing, is not an SQLite database, or lacks the catalogue tables.
    """
    if not path.is_file():
        raise CollectionError(f"{path} is missing; the collection is damaged (restore it or re-index)")
    with open(path, "rb") as f:  # check before SQLite touches it: it would turn an empty file into a database
        head = f.read(len(SQLITE_MAGIC))
    if head != SQLITE_MAGIC:
        raise CollectionError(
            f"{path}: expected an SQLite catalogue (header {SQLITE_MAGIC!r}), found {head[:16]!r}; "
            "the collection is damaged (restore it or re-index)"
        )
    conn = None
    try:
        conn = connect(path)
        found = meta(conn)
    except sqlite3.DatabaseError as exc:
        if conn is not None:
            conn.close()
        raise CollectionError(
            f"{path}: unreadable catalogue ({exc}); expected a vidsearch SQLite catalogue, "
            "the collection is damaged (restore it or re-index)"
        ) from exc
    missing = [k for k in META_KEYS if k not in found]
    if missing:
        conn.close()
        raise CollectionError(
            f"{path}: catalogue lacks {', '.join(missing)}; expected a vidsearch catalogue, "
            "the collection is damaged (restore it or re-index)"
        )
    return conn


def initialise(conn: sqlite3.Connection) -> None:
    conn.executescript(SCHEMA)


def meta(conn: sqlite3.Connection) -> dict[str, int]:
    return {k: int(v) for k, v in conn.execute("SELECT key, value FROM meta")}


# ---------------------------------------------------------------------------------------------- reading
@dataclass(frozen=True)
class CatalogSnapshot:
    """Everything a reader needs from the catalogue at one generation, as arrays (one read transaction).

    Attributes:
        generation, segment_rows, frame_rows: the committed counters.
        segment_video: (segment_rows,) int32 index into ``video_ids``; -1 for rows of removed videos.
        segment_start, segment_end: (segment_rows,) float64 seconds.
        video_ids, video_paths: the live videos, in ``rowid`` order.
        video_frame_row, video_n_frames: (V,) int64 first row and count of each video's frames in frames.f16.
        video_frame_times: each video's frame times (float64 little-endian bytes; decode with ``frame_times``).
    """

    generation: int
    segment_rows: int
    frame_rows: int
    segment_video: NDArray[np.int32]
    segment_start: NDArray[np.float64]
    segment_end: NDArray[np.float64]
    video_ids: list[str]
    video_paths: list[str]
    video_frame_row: NDArray[np.int64]
    video_n_frames: NDArray[np.int64]
    video_frame_times: list[bytes]

    def frame_times(self, video: int) -> NDArray[np.float64]:
        return np.frombuffer(self.video_frame_times[video], dtype="<f8")


def read_snapshot(conn: sqlite3.Connection) -> CatalogSnapshot:
    """Read counters, videos and segments in one read transaction (WAL: never waits for the writer).

    Raises:
        CollectionError: the catalogue is damaged or inconsistent (a segment id past the committed rows).
    """
    try:
        conn.execute("BEGIN")
        try:
            m = meta(conn)
            videos = conn.execute(
                "SELECT rowid, id, path, frame_row, n_frames, frame_times FROM videos ORDER BY rowid").fetchall()
            segs = conn.execute("SELECT id, video_id, start, \"end\" FROM segments").fetchall()
        finally:
            conn.execute("COMMIT")
    except sqlite3.DatabaseError as exc:
        raise CollectionError(f"the catalogue is damaged ({exc}); restore it from a backup or re-index") from exc
    n = m["segment_rows"]
    position = {r[1]: i for i, r in enumerate(videos)}
    video = np.full(n, -1, np.int32)
    start = np.zeros(n, np.float64)
    end = np.zeros(n, np.float64)
    if segs:
        ids = np.fromiter((r[0] for r in segs), np.int64, len(segs))
        if ids.min() < 0 or ids.max() >= n:
            raise CollectionError(f"the catalogue lists segment {int(ids.max())} but commits only {n} rows; damaged")
        try:
            video[ids] = np.fromiter((position[r[1]] for r in segs), np.int32, len(segs))
        except KeyError as exc:
            raise CollectionError(f"the catalogue has segments of an unknown video {exc}; damaged") from exc
        start[ids] = np.fromiter((r[2] for r in segs), np.float64, len(segs))
        end[ids] = np.fromiter((r[3] for r in segs), np.float64, len(segs))
    return CatalogSnapshot(
        generation=m["generation"], segment_rows=n, frame_rows=m["frame_rows"],
        segment_video=video, segment_start=start, segment_end=end,
        video_ids=[r[1] for r in videos], video_paths=[r[2] for r in videos],
        video_frame_row=np.array([r[3] for r in videos], np.int64), video_n_frames=np.array([r[4] for r in videos], np.int64),
        video_frame_times=[bytes(r[5]) for r in videos])


_ID_PREFIX = re.compile(r"[0-9a-f]+")


def resolve_video(conn: sqlite3.Connection, video: str, where: Path) -> tuple[str, str]:
    """(id, path) of a video given by id, unique id prefix (hex) or path.

    Raises:
        NotFoundError: no such video, or an ambiguous prefix.
    """
    row = conn.execute("SELECT id, path FROM videos WHERE id = ?", (video,)).fetchone()
    if row is None and _ID_PREFIX.fullmatch(video):  # hex only: '' or '%' must not match every id
        rows = conn.execute("SELECT id, path FROM videos WHERE id LIKE ?", (video + "%",)).fetchall()
        if len(rows) > 1:
            raise NotFoundError(f"video id prefix {video!r} is ambiguous ({len(rows)} videos); give more characters")
        row = rows[0] if rows else None
    if row is None:
        resolved = str(Path(video).resolve()) if video else video
        row = conn.execute("SELECT id, path FROM videos WHERE path = ?", (resolved,)).fetchone()
    if row is None:
        raise NotFoundError(f"no video {video!r} in {where}; `vidsearch info --collection {where}` lists them")
    return str(row[0]), str(row[1])


VIDEO_COLUMNS = ("id", "path", "duration", "fps", "width", "height", "codec", "is_image", "status", "n_frames", "added_at")


def list_videos(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """Every video's row (``VIDEO_COLUMNS``) and its segment count, oldest first."""
    counts = dict(conn.execute("SELECT video_id, COUNT(*) FROM segments GROUP BY video_id").fetchall())
    out = []
    for r in conn.execute(f"SELECT {', '.join(VIDEO_COLUMNS)} FROM videos ORDER BY added_at, id").fetchall():
        d = dict(zip(VIDEO_COLUMNS, r))
        d["is_image"] = bool(d["is_image"])
        d["segments"] = int(counts.get(d["id"], 0))
        out.append(d)
    return out


def totals(conn: sqlite3.Connection) -> dict[str, Any]:
    """Counts of videos and segments and the total duration."""
    n_videos, duration = conn.execute("SELECT COUNT(*), COALESCE(SUM(duration), 0) FROM videos").fetchone()
    n_segments = conn.execute("SELECT COUNT(*) FROM segments").fetchone()[0]
    return {"videos": int(n_videos), "segments": int(n_segments), "duration_s": float(duration)}


# ---------------------------------------------------------------------------------------------- writing
@dataclass(frozen=True)
class VideoRecord:
    """One video's catalogue row and its segments' times (the vectors are already in the vector files)."""

    video_id: str
    path: str
    content_hash: str
    size_bytes: int
    duration: float
    fps: float
    width: int
    height: int
    codec: str
    is_image: bool
    frame_times: NDArray[np.float64]
    segment_start: NDArray[np.float64]
    segment_end: NDArray[np.float64]
    segment_frame_start: NDArray[np.int64]  # relative to the video's first frame
    segment_frame_end: NDArray[np.int64]


def commit_videos(conn: sqlite3.Connection, records: list[VideoRecord], seg_row: int, frame_row: int,
                  before_commit: Callable[[], None] | None = None) -> None:
    """One transaction: the videos, their segments (ids from ``seg_row`` on, frames from ``frame_row`` on, in
    order), the new row counts, generation + 1."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        for record in records:
            n_seg, n_frames = len(record.segment_start), len(record.frame_times)
            conn.execute(
                "INSERT INTO videos (id, path, content_hash, size_bytes, duration, fps, width, height, codec, is_image,"
                " status, frame_row, n_frames, frame_times) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (record.video_id, record.path, record.content_hash, record.size_bytes, record.duration, record.fps,
                 record.width, record.height, record.codec, int(record.is_image), "indexed", frame_row, n_frames,
                 np.asarray(record.frame_times, "<f8").tobytes()))
            conn.executemany(
                "INSERT INTO segments (id, video_id, start, \"end\", frame_start, frame_end) VALUES (?,?,?,?,?,?)",
                [(seg_row + i, record.video_id, float(s), float(e), frame_row + int(fs), frame_row + int(fe))
                 for i, (s, e, fs, fe) in enumerate(zip(record.segment_start.tolist(), record.segment_end.tolist(),
                                                        record.segment_frame_start.tolist(),
                                                        record.segment_frame_end.tolist()))])
            seg_row += n_seg
            frame_row += n_frames
        conn.execute("UPDATE meta SET value = ? WHERE key = 'segment_rows'", (seg_row,))
        conn.execute("UPDATE meta SET value = ? WHERE key = 'frame_rows'", (frame_row,))
        conn.execute("UPDATE meta SET value = value + 1 WHERE key = 'generation'")
        if before_commit is not None:
            before_commit()
        conn.execute("COMMIT")
    except sqlite3.IntegrityError as exc:
        conn.execute("ROLLBACK")
        raise CollectionError(f"a video of this batch is already in the catalogue ({exc}); nothing of the batch was "
                              "committed") from exc
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def remove_video(conn: sqlite3.Connection, video_id: str) -> NDArray[np.int64]:
    """Delete a video and its segments in one transaction (generation + 1); returns the segment ids removed."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        ids = np.array([r[0] for r in conn.execute("SELECT id FROM segments WHERE video_id = ?", (video_id,))], np.int64)
        conn.execute("DELETE FROM segments WHERE video_id = ?", (video_id,))
        conn.execute("DELETE FROM videos WHERE id = ?", (video_id,))
        conn.execute("UPDATE meta SET value = value + 1 WHERE key = 'generation'")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return ids


def find_by_hash(conn: sqlite3.Connection, digest: str) -> tuple[str, str] | None:
    row = conn.execute("SELECT id, path FROM videos WHERE content_hash = ?", (digest,)).fetchone()
    return None if row is None else (str(row[0]), str(row[1]))
