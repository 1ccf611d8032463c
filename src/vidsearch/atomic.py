"""The one atomic write: a temp file beside the target, fsync, ``os.replace``, then an fsync of the
directory so the rename itself survives a power loss (faiss ``contrib/big_batch_search.py`` does
the first three; without the last, a crash right after ``os.replace`` can bring back the old file
or no file at all on some file systems).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def fsync_dir(directory: str | os.PathLike[str]) -> None:
    """Make the entries of ``directory`` (creations, renames, deletions) durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike[str], data: bytes | str | Callable[[BinaryIO], None]) -> None:
    """Write ``path`` whole or not at all.

    Args:
        path: the target file; its directory must exist.
        data: the bytes, a str (written as UTF-8), or a function that writes into the open
            binary temp file (for large payloads written in parts).
    """
    target = Path(path)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=target.name + ".", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes 0600: a reader running as another user (a server) must read it
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(target.parent)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """``atomic_write`` for text (UTF-8)."""
    atomic_write(path, text)
