"""Append-only vector files with a self-describing header, read through a memory map.

Layout: a 36-byte header (magic ``VIDSVEC\\0``, format version u32, dtype code u32, dim u32,
16 reserved bytes), then rows of ``dim`` values, little-endian. The catalogue, not the file size,
says how many rows are committed: rows past that are the remains of a write that crashed before
its catalogue commit and are truncated away by the next writer.
"""

from __future__ import annotations

import os
import struct
from typing import Any
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from vidsearch.errors import CollectionError, ShapeError

MAGIC = b"VIDSVEC\x00"
VERSION = 1
HEADER = struct.Struct("<8sIII16x")
_DTYPES: dict[int, np.dtype[Any]] = {0: np.dtype("<f4"), 1: np.dtype("<f2")}
_CODES = {v: k for k, v in _DTYPES.items()}


class VectorFile:
    """Rows of ``dim`` float32 or float16 values, appended and never rewritten in place."""

    def __init__(self, path: Path, dim: int, dtype: np.dtype) -> None:
        self.path = path
        self.dim = dim
        self.dtype = np.dtype(dtype)
        self._map: np.memmap | None = None
        self._mapped_rows = 0

    @classmethod
    def create(cls, path: Path, dim: int, dtype: str) -> "VectorFile":
        dt = np.dtype(dtype).newbyteorder("<")
        with open(path, "wb") as f:
            f.write(HEADER.pack(MAGIC, VERSION, _CODES[dt], dim))
            f.flush()
            os.fsync(f.fileno())
        return cls(path, dim, dt)

    @classmethod
    def open(cls, path: Path) -> "VectorFile":
        """The vector file at ``path``, its header checked.

        Raises:
            CollectionError: missing, unreadable, or a header that is not one this vidsearch wrote.
        """
        damaged = "the collection is damaged (restore it or re-index)"
        try:
            with open(path, "rb") as f:
                head = f.read(HEADER.size)
        except FileNotFoundError as exc:
            raise CollectionError(f"{path} is missing; {damaged}") from exc
        except OSError as exc:  # a directory in its place, no permission, an I/O error
            raise CollectionError(f"{path}: cannot read the vector file ({exc}); {damaged}") from exc
        if len(head) < HEADER.size:
            raise CollectionError(f"{path}: expected a {HEADER.size}-byte header, found {len(head)} bytes; {damaged}")
        magic, version, code, dim = HEADER.unpack(head)
        if magic != MAGIC:
            raise CollectionError(f"{path}: not a vidsearch vector file (magic {magic!r}, expected {MAGIC!r}); {damaged}")
        if version > VERSION:
            raise CollectionError(f"{path}: vector file format {version} is newer than this vidsearch reads ({VERSION}); upgrade")
        if version < 1:
            raise CollectionError(f"{path}: expected vector file format 1 to {VERSION}, found {version}; {damaged}")
        if code not in _DTYPES:
            raise CollectionError(f"{path}: expected dtype code {' or '.join(map(str, _DTYPES))} (float32, float16), "
                                  f"found {code}; {damaged}")
        if dim == 0:
            raise CollectionError(f"{path}: expected a row width of at least 1 in the header, found 0; the file is damaged")
        return cls(path, dim, _DTYPES[code])

    @property
    def row_bytes(self) -> int:
        return self.dim * self.dtype.itemsize

    def rows_on_disk(self) -> int:
        return max(0, (self.path.stat().st_size - HEADER.size) // self.row_bytes)

    def truncate(self, rows: int) -> None:
        """Drop rows past ``rows`` (uncommitted remains of a crashed write)."""
        size = HEADER.size + rows * self.row_bytes
        found = self.path.stat().st_size
        if found < size:  # never extend: missing committed rows would silently become zeros
            raise CollectionError(
                f"{self.path}: expected at least {rows} committed rows ({size} bytes), found {found} bytes; "
                "the vector file was truncated, the collection is damaged (restore it or re-index)"
            )
        if found != size:
            self._map = None
            os.truncate(self.path, size)

    def append(self, rows: NDArray[np.floating], at: int) -> None:
        """Write ``rows`` (N, dim) starting at row ``at`` (the committed count) and fsync."""
        data = np.ascontiguousarray(rows, dtype=self.dtype)
        if data.ndim != 2 or data.shape[1] != self.dim:
            raise ShapeError(f"expected rows of shape (N, {self.dim}), got {data.shape}")
        with open(self.path, "r+b") as f:
            f.seek(HEADER.size + at * self.row_bytes)
            f.write(data.tobytes())
            f.truncate()
            f.flush()
            os.fsync(f.fileno())

    def read(self, rows: NDArray[np.int64] | slice, committed: int) -> NDArray[np.floating]:
        """Return a copy of the given rows (indices below ``committed``)."""
        if self._map is None or self._mapped_rows < committed:
            self._map = None
            if committed == 0:
                return np.zeros((0, self.dim), self.dtype)
            self._map = np.memmap(self.path, dtype=self.dtype, mode="r", offset=HEADER.size, shape=(committed, self.dim))
            self._mapped_rows = committed
        return np.array(self._map[rows])

    def view(self, rows: int) -> NDArray[np.floating]:
        """A read-only memory map of the first ``rows`` (committed) rows: a reader's snapshot of the file.

        Rows past ``rows`` may be appended or truncated by the writer meanwhile; these never are.
        """
        if rows == 0:
            return np.zeros((0, self.dim), self.dtype)
        return np.memmap(self.path, dtype=self.dtype, mode="r", offset=HEADER.size, shape=(rows, self.dim))


def open_checked(path: Path, dim: int, dtype: str) -> VectorFile:
    """Open a vector file and check it holds the rows the manifest promises.

    Raises:
        CollectionError: missing, damaged, or of another width or dtype than ``dim``/``dtype``.
    """
    vf = VectorFile.open(path)
    if vf.dim != dim or vf.dtype != np.dtype(dtype):
        raise CollectionError(
            f"{path}: expected {dim}-dim {dtype} rows (from the manifest), found {vf.dim}-dim {vf.dtype} in its header; "
            "the collection is damaged (restore it or re-index)"
        )
    return vf
