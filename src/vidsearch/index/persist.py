"""The index file container: magic tag, version, a JSON header, and a checksummed FAISS blob.

Layout: ``VIDSIDX\\0`` (8 bytes), format version (u32), JSON length (u64), the JSON header (``kind``,
``blob_bytes``, ``blob_sha256`` and the index's own fields), then the blob FAISS serialised. The
checksum is verified before FAISS parses a byte, so a flipped bit anywhere in the blob is a
``CollectionError`` and never reaches FAISS's reader (which trusts its sizes); every header field is
validated by the reader that asks for it (:func:`field`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import struct
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from vidsearch.atomic import atomic_write
from vidsearch.errors import CollectionError

MAGIC = b"VIDSIDX\x00"
VERSION = 1
HEADER = struct.Struct("<8sIQ")  # magic, version, JSON length
_MAX_JSON = 1 << 30
REBUILT = "the collection searches its vectors exactly and its next write rebuilds the index"


def write_index_file(path: Path, kind: str, header: dict[str, Any], blob: bytes) -> None:
    """Write the container atomically (``vidsearch.atomic``)."""
    meta = json.dumps({"kind": kind, **header, "blob_bytes": len(blob),
                       "blob_sha256": hashlib.sha256(blob).hexdigest()}).encode()

    def write(f: BinaryIO) -> None:
        f.write(HEADER.pack(MAGIC, VERSION, len(meta)))
        f.write(meta)
        f.write(blob)

    atomic_write(path, write)


def is_index_file(path: Path) -> bool:
    """Whether ``path`` starts with the container's magic tag (older flat indexes are bare FAISS files)."""
    try:
        with open(path, "rb") as f:
            return f.read(len(MAGIC)) == MAGIC
    except OSError as exc:
        raise CollectionError(f"{path}: cannot read the index ({exc}); {REBUILT}") from exc


def read_index_file(path: Path) -> tuple[dict[str, Any], np.ndarray]:
    """(header, blob as uint8 array) of a container whose checksum holds.

    Raises:
        CollectionError: unreadable, not a container, newer format, or damaged anywhere.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CollectionError(f"{path}: cannot read the index ({exc}); {REBUILT}") from exc
    if len(data) < HEADER.size:
        raise CollectionError(f"{path}: expected a {HEADER.size}-byte index header, found {len(data)} bytes; damaged ({REBUILT})")
    magic, version, n = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise CollectionError(f"{path}: not a vidsearch index (magic {magic!r}, expected {MAGIC!r}); damaged ({REBUILT})")
    if version > VERSION:
        raise CollectionError(f"{path}: index format {version} is newer than this vidsearch reads ({VERSION}); upgrade")
    if version < 1:
        raise CollectionError(f"{path}: expected index format 1 to {VERSION}, found {version}; damaged ({REBUILT})")
    if n > min(_MAX_JSON, len(data) - HEADER.size):
        raise CollectionError(f"{path}: the index header claims {n} bytes of JSON, the file has "
                              f"{len(data) - HEADER.size} after the header; truncated or damaged ({REBUILT})")
    try:
        meta = json.loads(data[HEADER.size : HEADER.size + n])
    except (ValueError, RecursionError) as exc:  # RecursionError: arrays nested thousands deep
        raise CollectionError(f"{path}: expected a JSON index header, found damaged JSON ({exc}); {REBUILT}") from exc
    if not isinstance(meta, dict):
        raise CollectionError(f"{path}: expected a JSON object as the index header, found {type(meta).__name__}; damaged ({REBUILT})")
    blob = data[HEADER.size + n :]
    if len(blob) != meta.get("blob_bytes") or hashlib.sha256(blob).hexdigest() != meta.get("blob_sha256"):
        raise CollectionError(f"{path}: checksum mismatch (expected {meta.get('blob_bytes')!r} bytes with the stored "
                              f"SHA-256, found {len(blob)} bytes that differ); truncated or damaged ({REBUILT})")
    return meta, np.frombuffer(blob, np.uint8)


def field(path: Path, meta: dict[str, Any], name: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
    """``meta[name]`` checked to be of ``kind`` (bool is not an int here).

    Raises:
        CollectionError: missing (without a default) or of another type.
    """
    if name not in meta:
        if default is ...:
            raise CollectionError(f"{path}: the index header lacks {name!r}; damaged ({REBUILT})")
        return default
    value = meta[name]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        raise CollectionError(f"{path}: index header field {name!r} should be {'/'.join(k.__name__ for k in kinds)}, "
                              f"found {type(value).__name__} {value!r}; damaged ({REBUILT})")
    return value


def bounded_int(path: Path, meta: dict[str, Any], name: str, low: int, high: int, default: Any = ...) -> Any:
    """``meta[name]``, an int (not a bool) in ``[low, high]``.

    Raises:
        CollectionError: missing (without a default), of another type, or out of range.
    """
    value = field(path, meta, name, int, default)
    if value is not default and not low <= value <= high:
        raise CollectionError(f"{path}: index header field {name!r} should be between {low} and {high}, found {value}; "
                              f"damaged ({REBUILT})")
    return value


def dataclass_field(path: Path, meta: dict[str, Any], name: str, cls: type,
                    bounds: dict[str, tuple[float, float]] | None = None) -> dict[str, Any]:
    """``meta[name]``: an object holding some of the fields of the dataclass ``cls`` (the others take their
    defaults), each of its default's JSON type (a float field takes an int, no field takes a bool unless its
    default is one; floats finite) and within ``bounds`` (field -> inclusive (low, high)).

    Raises:
        CollectionError: not an object, an unknown key, a value of another type, or out of range.
    """
    value = field(path, meta, name, dict)
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    unknown = sorted(set(value) - set(defaults))
    if unknown:
        raise CollectionError(f"{path}: index header field {name!r} has unknown keys {unknown}, expected some of "
                              f"{sorted(defaults)}; damaged or written by a newer vidsearch (upgrade vidsearch; else {REBUILT})")
    for key, item in value.items():
        default = defaults[key]
        kinds: tuple[type, ...] = (int, float) if isinstance(default, float) else (type(default),)
        if not isinstance(item, kinds) or isinstance(item, bool) != isinstance(default, bool) or (
                isinstance(item, float) and not math.isfinite(item)):
            raise CollectionError(f"{path}: index header field {name}.{key} should be "
                                  f"{'a finite number' if float in kinds else kinds[0].__name__}, found "
                                  f"{type(item).__name__} {item!r}; damaged ({REBUILT})")
        low, high = (bounds or {}).get(key, (-math.inf, math.inf))
        if isinstance(item, (int, float)) and not low <= item <= high:
            raise CollectionError(f"{path}: index header field {name}.{key} should be between {low} and {high}, "
                                  f"found {item!r}; damaged ({REBUILT})")
    return dict(value)
