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
from vidsearch.store.files import path_text

META_KEYS = ("generation", "segment_rows", "frame_rows")
DAMAGED = "the collection is damaged (restore it or re-index)"
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
        CollectionError: the file is missing or unreadable, is not an SQLite database, or lacks the catalogue
            tables or counters.
    """
    if not path.is_file():
        raise CollectionError(f"{path} is missing; {DAMAGED}")
    try:
        with open(path, "rb") as f:  # check before SQLite touches it: it would turn an empty file into a database
            head = f.read(len(SQLITE_MAGIC))
    except OSError as exc:
        raise CollectionError(f"{path}: cannot read the catalogue ({exc}); {DAMAGED}") from exc
    if head != SQLITE_MAGIC:
        raise CollectionError(f"{path}: expected an SQLite catalogue (header {SQLITE_MAGIC!r}), found {head[:16]!r}; {DAMAGED}")
    conn = None
    try:
        conn = connect(path)
        found = meta(conn)
        missing = [k for k in META_KEYS if k not in found]
        if missing:
            raise CollectionError(f"{path}: catalogue lacks {', '.join(missing)}; expected a vidsearch catalogue, {DAMAGED}")
    except (sqlite3.DatabaseError, CollectionError) as exc:
        if conn is not None:
            conn.close()
        if isinstance(exc, CollectionError):
            raise
        raise CollectionError(
            f"{path}: unreadable catalogue ({exc}); expected a vidsearch SQLite catalogue, {DAMAGED}"
        ) from exc
    return conn


def initialise(conn: sqlite3.Connection) -> None:
    conn.executescript(SCHEMA)


def meta(conn: sqlite3.Connection) -> dict[str, int]:
    """The catalogue's counters (``META_KEYS``).

    Raises:
        CollectionError: a damaged file, or a counter that is not a non-negative integer
            (``sqlite3.OperationalError``, e.g. a locked database or a missing table, passes through).
    """
    try:
        rows = conn.execute("SELECT key, value FROM meta").fetchall()
    except sqlite3.OperationalError:
        raise
    except sqlite3.DatabaseError as exc:  # found damaged after it was opened (SQLITE_CORRUPT, SQLITE_NOTADB)
        raise CollectionError(f"{_where(conn)}: the catalogue is damaged ({exc}); restore it from a backup or "
                              "re-index") from exc
    out = {}
    for key, value in rows:
        if type(value) is not int or value < 0:
            raise CollectionError(f"{_where(conn)}: expected the counter {key!r} to be a non-negative integer, "
                                  f"found {value!r}; {DAMAGED}")
        out[str(key)] = value
    return out


def _where(conn: sqlite3.Connection) -> str:
    """The catalogue's file, for messages ('the catalogue' when SQLite cannot say)."""
    try:
        row = conn.execute("PRAGMA database_list").fetchone()
    except sqlite3.Error:
        return "the catalogue"
    return str(row[2]) if row and row[2] else "the catalogue"


def _rows_on_disk(conn: sqlite3.Connection, name: str) -> tuple[Path, int] | None:
    """(path, rows) of the vector file ``name`` beside the catalogue, None without one."""
    from vidsearch.store.vectors import VectorFile

    where = _where(conn)
    path = Path(where).parent / name
    if where == "the catalogue" or not path.is_file():
        return None
    return path, VectorFile.open(path).rows_on_disk()


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
        CollectionError: the catalogue is damaged or inconsistent (a counter past the rows of the vector
            files beside it, a segment id past the committed rows or of an unknown video, a video's
            frames outside the committed ones, a value of the wrong type).
    """
    where = _where(conn)
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
        raise CollectionError(f"{where}: the catalogue is damaged ({exc}); restore it from a backup or re-index") from exc
    missing = [k for k in META_KEYS if k not in m]
    if missing:
        raise CollectionError(f"{where}: catalogue lacks {', '.join(missing)}; expected a vidsearch catalogue, {DAMAGED}")
    n, frame_rows = m["segment_rows"], m["frame_rows"]
    for name, committed in (("segments.f32", n), ("frames.f16", frame_rows)):  # before arrays of that size
        found = _rows_on_disk(conn, name)
        if found is not None and found[1] < committed:
            raise CollectionError(f"{found[0]}: expected at least {committed} committed rows (the count in {where}), "
                                  f"found {found[1]}; the vector file was truncated or the catalogue is damaged: {DAMAGED}")
    problem = _check_rows(videos, frame_rows)
    if problem:
        raise CollectionError(f"{where}: {problem}; {DAMAGED}")
    position = {r[1]: i for i, r in enumerate(videos)}
    try:
        video = np.full(n, -1, np.int32)
        start = np.zeros(n, np.float64)
        end = np.zeros(n, np.float64)
    except (MemoryError, ValueError) as exc:
        raise CollectionError(f"{where}: the catalogue commits {n} segment rows, more than fit in memory ({exc}); "
                              f"{DAMAGED}") from exc
    if segs:
        try:
            ids = np.fromiter((r[0] for r in segs), np.int64, len(segs))
            seg_start = np.fromiter((r[2] for r in segs), np.float64, len(segs))
            seg_end = np.fromiter((r[3] for r in segs), np.float64, len(segs))
        except (ValueError, TypeError, OverflowError) as exc:
            raise CollectionError(f"{where}: expected segment rows of integer ids and numeric start and end times, "
                                  f"found one that is not ({exc}); {DAMAGED}") from exc
        outside = ids[(ids < 0) | (ids >= n)]
        if len(outside):
            raise CollectionError(f"{where}: the catalogue lists segment {int(outside[0])} but commits only rows 0 to "
                                  f"{n - 1}; {DAMAGED}")
        if not (np.isfinite(seg_start).all() and np.isfinite(seg_end).all()):
            raise CollectionError(f"{where}: expected finite segment times, found {seg_start[~np.isfinite(seg_start)][:1]} "
                                  f"{seg_end[~np.isfinite(seg_end)][:1]}; {DAMAGED}")
        unknown = next((r[1] for r in segs if r[1] not in position), None)
        if unknown is not None:
            raise CollectionError(f"{where}: the catalogue has segments of an unknown video {unknown!r}; {DAMAGED}")
        video[ids] = np.fromiter((position[r[1]] for r in segs), np.int32, len(segs))
        start[ids] = seg_start
        end[ids] = seg_end
    return CatalogSnapshot(
        generation=m["generation"], segment_rows=n, frame_rows=frame_rows,
        segment_video=video, segment_start=start, segment_end=end,
        video_ids=[r[1] for r in videos], video_paths=[r[2] for r in videos],
        video_frame_row=np.array([r[3] for r in videos], np.int64), video_n_frames=np.array([r[4] for r in videos], np.int64),
        video_frame_times=[bytes(r[5]) for r in videos])


def _check_rows(videos: list[tuple[Any, ...]], frame_rows: int) -> str | None:
    """What is wrong with the video rows a snapshot is built from (None: nothing): SQLite stores any value
    in any column, so each is checked for the type the writer stored."""
    for rowid, video_id, path, frame_row, n_frames, times in videos:
        if not (isinstance(video_id, str) and isinstance(path, str) and type(frame_row) is int
                and type(n_frames) is int and isinstance(times, bytes)):
            return (f"expected video rows of text id and path, integer frame_row and n_frames and a blob of frame "
                    f"times, found {video_id!r}, {path!r}, {frame_row!r}, {n_frames!r}, {type(times).__name__}")
        if not 0 <= n_frames <= frame_rows - frame_row or frame_row < 0 or len(times) != 8 * n_frames:
            return (f"expected video {video_id}'s frames within the {frame_rows} committed rows with 8 bytes of time "
                    f"each, found rows {frame_row} to {frame_row + n_frames} and {len(times)} bytes of times")
    return None


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
        resolved = path_text(video) if video else video
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


def segment_fields(conn: sqlite3.Connection, ids: NDArray[np.int64]) -> tuple[NDArray[np.int64], NDArray[np.float64],
                                                                            NDArray[np.float64]]:
    """Each segment row's video (its 12-hex id as an integer), start and end seconds: what a vector store that
    keeps them beside the vectors (Milvus) is given. Rows without a segment (removed) get -1, 0, 0."""
    ids = np.asarray(ids, np.int64)
    video = np.full(len(ids), -1, np.int64)
    start, end = np.zeros(len(ids)), np.zeros(len(ids))
    if len(ids) == 0:
        return video, start, end
    lo, hi = int(ids.min()), int(ids.max())
    rows = conn.execute("SELECT id, video_id, start, \"end\" FROM segments WHERE id BETWEEN ? AND ?", (lo, hi)).fetchall()
    at = {int(r[0]): r for r in rows}
    for i, sid in enumerate(ids.tolist()):
        r = at.get(sid)
        if r is not None:
            video[i], start[i], end[i] = int(r[1], 16), float(r[2]), float(r[3])
    return video, start, end


def content_hashes(conn: sqlite3.Connection) -> set[str]:
    """The SHA-256 of every indexed file."""
    return {str(r[0]) for r in conn.execute("SELECT content_hash FROM videos").fetchall()}


def find_by_hash(conn: sqlite3.Connection, digest: str) -> tuple[str, str] | None:
    row = conn.execute("SELECT id, path FROM videos WHERE content_hash = ?", (digest,)).fetchone()
    return None if row is None else (str(row[0]), str(row[1]))
