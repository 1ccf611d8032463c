"""The writer lock: one process at a time may change a collection (fcntl advisory lock)."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from vidsearch.errors import CollectionLockedError


class WriterLock:
    """Non-blocking exclusive lock on ``DIR/.lock``; the holder's pid is written for the message."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / ".lock"
        self._fd: int | None = None
        self._depth = 0

    def __enter__(self) -> "WriterLock":
        if self._depth == 0:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise CollectionLockedError(
                    f"collection {self.path.parent} is locked by another writer (pid {holder}); "
                    "wait for it to finish, then retry (searching does not need the lock)"
                ) from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
            self._fd = fd
        self._depth += 1
        return self

    def __exit__(self, *exc: object) -> None:
        self._depth -= 1
        if self._depth == 0 and self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
