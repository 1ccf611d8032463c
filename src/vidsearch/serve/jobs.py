"""Index jobs: one writer thread runs ``Collection.add`` for each job in turn, and removes videos.

The writer holds one :class:`~vidsearch.collection.Collection` (opened on its own thread) and takes the
collection's writer lock only while it writes, so ``vidsearch index`` from a shell can write between
jobs (while a job runs, it gets ``CollectionLockedError``, and so does a job started while the shell
writes: the job fails with that message). Each file is committed as it is indexed (the collection's
crash safety: a SIGKILL loses at most the file in progress); after each commit the engine refreshes,
so searches see the new video at once.

A removal asked for while a job runs is made between two files of the job, not after the whole job.
Jobs are kept in memory (the last ``MAX_JOBS``); their results outlive them in the collection.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from vidsearch.errors import NotFoundError, OverloadedError, VidsearchError
from vidsearch.serve.metrics import ServeMetrics

log = logging.getLogger(__name__)

MAX_JOBS = 1000


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass
class Job:
    """One index job; ``to_dict`` is the JSON of ``GET /jobs/{id}``.

    ``files`` holds the per-file reports exactly as ``vidsearch index --json`` writes them, in the order the
    files were processed; entries refused before the job started (links leading out of the allowed
    roots) come first, as ``failed``.
    """

    job_id: str
    paths: list[Path]
    status: str = "queued"  # queued | running | done | failed
    total: int = 0
    files: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    created: str = field(default_factory=_now)
    finished: str | None = None

    @property
    def done(self) -> int:
        return len(self.files)

    def summary(self) -> dict[str, int]:
        return {s: sum(f["status"] == s for f in self.files) for s in ("indexed", "skipped", "failed")}

    def to_dict(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "status": self.status, "done": self.done, "total": self.total,
                "files": list(self.files), "summary": self.summary(), "error": self.error,
                "created": self.created, "finished": self.finished}


class _Pause(Exception):
    """Raised from ``on_file`` to stop ``Collection.add`` after a committed file, so removals can run."""


@dataclass
class _Removal:
    video: str
    future: Future[dict[str, Any]]


class IndexJobs:
    """The writer thread and the jobs it ran.

    Args:
        collection: the collection directory.
        on_commit: called (on the writer thread) after each change is committed: the server refreshes its
            engine there.
        metrics: counts of files processed and jobs by status.
    """

    def __init__(self, collection: Path, on_commit: Callable[[], None], metrics: ServeMetrics) -> None:
        self.collection = Path(collection)
        self.on_commit = on_commit
        self.metrics = metrics
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._removals: queue.Queue[_Removal] = queue.Queue()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._work, name="vidsearch-writer", daemon=True)
        self._closed = False
        self._ids = itertools.count(1)

    def start(self) -> None:
        self._thread.start()

    def close(self, timeout: float = 5.0) -> None:
        """Stop after the file in progress (the rest of a running job is not indexed; queued jobs fail)."""
        self._closed = True
        self._queue.put(None)
        self._wake.set()
        self._thread.join(timeout)

    # ------------------------------------------------------------------ the API's side
    def submit(self, paths: list[Path], refused: list[dict[str, Any]] | None = None) -> Job:
        """Queue a job indexing ``paths`` (files, already checked); ``refused`` reports go first in its files."""
        job = Job(f"{next(self._ids)}-{uuid.uuid4().hex[:8]}", list(paths))
        job.files.extend(refused or [])
        job.total = len(job.files) + len(job.paths)
        with self._lock:
            self._jobs[job.job_id] = job
            while len(self._jobs) > MAX_JOBS:
                oldest = next(iter(self._jobs))
                if self._jobs[oldest].status in ("queued", "running"):
                    break
                self._jobs.pop(oldest)
        if self._closed:
            self._finish(job, "failed", "the index writer has stopped; restart the server")
            return job
        self._count_jobs()
        self._queue.put(job)
        self._wake.set()
        return job

    def get(self, job_id: str) -> dict[str, Any]:
        """The job's JSON.

        Raises:
            NotFoundError: no such job (or forgotten: only the last MAX_JOBS are kept).
        """
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                raise NotFoundError(f"no job {job_id!r} on this server (jobs are kept in memory, the last "
                                    f"{MAX_JOBS}); GET /jobs lists them")
            return job.to_dict()

    def list_jobs(self) -> list[dict[str, Any]]:
        """Every job's JSON, newest first."""
        with self._lock:
            return [j.to_dict() for j in reversed(self._jobs.values())]

    def remove(self, video: str) -> Future[dict[str, Any]]:
        """Ask the writer to remove a video (between two files of a running job); the future gives
        ``Collection.remove``'s answer or its error."""
        future: Future[dict[str, Any]] = Future()
        if self._closed:
            future.set_exception(OverloadedError("the index writer has stopped; restart the server", retry_after=5.0))
            return future
        self._removals.put(_Removal(video, future))
        self._wake.set()
        return future

    # ------------------------------------------------------------------ the writer thread
    def _count_jobs(self) -> None:
        with self._lock:
            counts = {s: 0 for s in ("queued", "running", "done", "failed")}
            for j in self._jobs.values():
                counts[j.status] += 1
        for status, n in counts.items():
            self.metrics.jobs.labels(status).set(n)

    def _work(self) -> None:
        from vidsearch.collection import Collection

        coll: Collection | None = None
        try:
            while not self._closed:
                self._wake.wait()
                self._wake.clear()
                if coll is None:
                    try:  # on this thread: the collection's SQLite connection stays on it
                        coll = Collection.open(self.collection)
                    except (VidsearchError, OSError) as exc:
                        self._fail_pending(f"cannot open the collection for writing: {exc}")
                        continue
                self._run_removals(coll)
                while not self._closed:
                    try:
                        job = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if job is not None:
                        self._run_job(coll, job)
                    self._run_removals(coll)
        except BaseException as exc:  # a bug: fail what is waiting rather than leave it queued forever
            log.exception("the index writer stopped")
            self._fail_pending(f"the index writer stopped ({type(exc).__name__}: {exc}); restart the server")
        finally:
            self._closed = True
            self._fail_pending("the server stopped before this job ran")
            if coll is not None:
                coll.close()

    def _fail_pending(self, message: str) -> None:
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is not None and job.status == "queued":
                self._finish(job, "failed", message)
        while True:
            try:
                removal = self._removals.get_nowait()
            except queue.Empty:
                break
            removal.future.set_exception(OverloadedError(message, retry_after=5.0))

    def _run_removals(self, coll: Any) -> None:
        while True:
            try:
                removal = self._removals.get_nowait()
            except queue.Empty:
                return
            try:
                removal.future.set_result(coll.remove(removal.video))
            except Exception as exc:  # NotFoundError, CollectionLockedError, OSError: the caller maps it
                removal.future.set_exception(exc)
                continue
            self._committed()

    def _committed(self) -> None:
        try:
            self.on_commit()
        except Exception:  # a refresh that fails now is retried by the periodic refresh
            log.exception("refreshing the engine after a commit failed")

    def _run_job(self, coll: Any, job: Job) -> None:
        with self._lock:
            job.status = "running"
        self._count_jobs()
        remaining = list(job.paths)

        def on_file(report: Any) -> None:
            with self._lock:
                job.files.append(report.to_dict())
            remaining.pop(0)
            self.metrics.indexed_files.labels(report.status).inc()
            if report.status == "indexed":
                self._committed()
            if self._closed or not self._removals.empty():
                raise _Pause()

        try:
            while remaining and not self._closed:
                try:
                    coll.add(list(remaining), on_file=on_file)
                except _Pause:
                    self._run_removals(coll)
                    continue
                break
        except (VidsearchError, OSError) as exc:
            self._finish(job, "failed", str(exc))
            return
        except Exception as exc:  # a bug: the job fails with its type, the server goes on
            log.exception("index job %s failed", job.job_id)
            self._finish(job, "failed", f"internal error ({type(exc).__name__}: {exc})")
            return
        if remaining:
            self._finish(job, "failed", f"the server stopped after {job.done} of {job.total} files")
        else:
            self._finish(job, "done", None)

    def _finish(self, job: Job, status: str, error: str | None) -> None:
        with self._lock:
            job.status, job.error, job.finished = status, error, _now()
        self._count_jobs()
