"""The SQLite catalogue (WAL mode): videos, segments, and the committed row counts of the vector
files. One transaction per video is the commit point of ingest."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from vidsearch.errors import CollectionError

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
