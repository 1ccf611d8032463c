"""Session fixtures built once per test run rather than once per pytest-xdist worker."""

from __future__ import annotations

import fcntl
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest


def built_once(tmp_path_factory: pytest.TempPathFactory, worker_id: str, name: str,
               build: Callable[[Path], None]) -> Path:
    """``build(path)`` run once per test run, not once per pytest-xdist worker: the first worker to get here
    builds under the run's shared temporary folder while holding a file lock, the others wait for it and
    reuse what it built (read-only). Without xdist it builds in this session's own temporary folder.
    (pytest-xdist's documented pattern for session fixtures; fcntl instead of the filelock package.)"""
    if worker_id == "master":
        path = tmp_path_factory.mktemp(name) / name
        build(path)
        return path
    shared = tmp_path_factory.getbasetemp().parent  # the run's folder, above each worker's own
    path, done = shared / f"shared-{name}" / name, shared / f"shared-{name}.done"
    with open(shared / f"shared-{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            shutil.rmtree(path.parent, ignore_errors=True)
            path.parent.mkdir()
            build(path)
            done.touch()
    return path
