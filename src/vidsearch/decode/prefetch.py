"""Decode in a thread, ahead of the consumer, through a bounded queue (decode and encode overlapped).

PyAV (FFmpeg) and ONNX Runtime both release the GIL while they work, so a decode thread filling a small
queue of frame batches keeps one core decoding while the encoder runs on the other. The queue is bounded
(``depth`` batches), so a slow consumer holds at most that many batches in memory.

An exception in the decode thread (a :class:`~vidsearch.errors.DecodeError`, anything) is raised again
in the consumer, the same object, when it reaches that point of the stream. Closing early (``close()``,
leaving the ``with`` block, an exception in the consumer) stops the thread, closes the source iterator
(so its file is closed) and joins the thread before returning: no thread outlives its prefetcher.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Generic, TypeVar

T = TypeVar("T")

THREAD_NAME = "vidsearch-decode"
"""Name of the decode threads (tests check none is left running)."""


class _End:
    """The source is exhausted."""


class _Failed:
    """The source raised ``error``."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


class Prefetcher(Generic[T]):
    """Iterate ``make()`` in a thread, in lists of up to ``chunk`` items, at most ``depth`` lists ahead.

    Use as a context manager (or call :meth:`close`)::

        with Prefetcher(lambda: iter_frames(path, size), chunk=8) as batches:
            for frames in batches:  # list[SampledFrame]
                ...

    Attributes:
        busy_seconds: time the thread spent inside the source iterator (decoding), so far.
    """

    def __init__(self, make: Callable[[], Iterator[T]], chunk: int = 8, depth: int = 2) -> None:
        if chunk < 1 or depth < 1:
            raise ValueError(f"chunk and depth must be >= 1, got chunk={chunk}, depth={depth}")
        self._make = make
        self._chunk = chunk
        self._queue: queue.Queue[list[T] | _End | _Failed] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._done = False
        self.busy_seconds = 0.0
        self._thread = threading.Thread(target=self._run, name=THREAD_NAME, daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ the decode thread
    def _put(self, item: list[T] | _End | _Failed) -> bool:
        """Hand ``item`` over; False when the consumer has gone (stop asked)."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        source: Iterator[T] | None = None
        try:
            source = self._make()
            batch: list[T] = []
            while not self._stop.is_set():
                t = time.perf_counter()
                try:
                    item = next(source)
                except StopIteration:
                    self.busy_seconds += time.perf_counter() - t
                    break
                self.busy_seconds += time.perf_counter() - t
                batch.append(item)
                if len(batch) >= self._chunk:
                    if not self._put(batch):
                        return
                    batch = []
            if batch and not self._put(batch):
                return
            self._put(_End())
        except BaseException as exc:  # handed to the consumer, raised there
            self._put(_Failed(exc))
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()  # a generator's finally blocks run here, in this thread: the file is closed

    # ------------------------------------------------------------------ the consumer
    def __iter__(self) -> Iterator[list[T]]:
        while not self._done:
            item = self._queue.get()
            if isinstance(item, _End):
                self._done = True
                return
            if isinstance(item, _Failed):
                self._done = True
                raise item.error
            yield item

    def close(self) -> None:
        """Stop the thread (if still running), drop what it decoded ahead, and wait for it to end."""
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._queue.get(timeout=0.05)  # unblock a put
            except queue.Empty:
                pass
        self._thread.join()
        self._done = True

    def __enter__(self) -> Prefetcher[T]:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
