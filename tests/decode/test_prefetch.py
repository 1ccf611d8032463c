"""Prefetcher: a decode thread ahead of the consumer; errors arrive as raised; nothing outlives it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from vidsearch.decode import iter_frames
from vidsearch.decode.prefetch import THREAD_NAME, Prefetcher
from vidsearch.errors import DecodeError


def _decode_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == THREAD_NAME]


def test_items_arrive_in_order_in_chunks() -> None:
    with Prefetcher(lambda: iter(range(10)), chunk=4, depth=2) as ahead:
        got = list(ahead)
    assert got == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert not _decode_threads()


def test_the_thread_runs_at_most_depth_chunks_ahead() -> None:
    made: list[int] = []

    def source() -> Iterator[int]:
        for i in range(1000):
            made.append(i)
            yield i

    with Prefetcher(source, chunk=3, depth=2) as ahead:
        first = next(iter(ahead))
        time.sleep(0.3)  # let the thread fill the queue
        # one chunk taken, two queued, one being built and waiting to be queued
        assert first == [0, 1, 2] and len(made) <= 3 * 4, len(made)
    assert not _decode_threads()


def test_a_decode_error_reaches_the_consumer_as_the_same_exception(tmp_path: Path) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all" * 100)
    with pytest.raises(DecodeError) as direct:
        list(iter_frames(bad, (32, 32)))
    with pytest.raises(DecodeError) as prefetched, Prefetcher(lambda: iter_frames(bad, (32, 32))) as ahead:
        list(ahead)
    assert str(prefetched.value) == str(direct.value) and "bad.mp4" in str(prefetched.value)
    assert not _decode_threads()


def test_an_error_after_some_items_arrives_after_them() -> None:
    def source() -> Iterator[int]:
        yield from range(5)
        raise DecodeError("broken at 5")

    got: list[int] = []
    with pytest.raises(DecodeError, match="broken at 5"), Prefetcher(source, chunk=2) as ahead:
        for chunk in ahead:
            got += chunk
    assert got == [0, 1, 2, 3]  # the last partial chunk [4] is lost with the error, as a list() would lose it
    assert not _decode_threads()


def test_closing_early_stops_the_thread_and_closes_the_source(hd_clip: Path) -> None:
    closed = threading.Event()

    def source() -> Iterator[object]:
        try:
            yield from iter_frames(hd_clip, (64, 64), fps=10)
        finally:
            closed.set()

    with Prefetcher(source, chunk=1, depth=1) as ahead:
        next(iter(ahead))
    assert closed.is_set() and not _decode_threads()


def test_a_consumer_exception_leaves_no_thread(hd_clip: Path) -> None:
    with pytest.raises(RuntimeError, match="encoder failed"), Prefetcher(lambda: iter_frames(hd_clip, (64, 64))) as ahead:
        for _ in ahead:
            raise RuntimeError("encoder failed")
    assert not _decode_threads()
