"""The server's query path: uploads decoded in a thread pool, their frames encoded in batches with the
frames of concurrent queries, their segment vectors searched in batches in one index call.

::

    upload ─► decode pool (bounded) ─► encode scheduler ─► segments ─► search scheduler ─► result
                                        (frames of several        (segment vectors of several
                                         queries, one ORT call)    queries, one index call)
    VIDEO_ID@START-END (stored frames) ──────────────────────────► search scheduler

A query with ``crops`` (six encodings per frame) is decoded and encoded whole in the pool, then searched
in a batch like the others. Every stage refuses work it cannot finish within the latency target at
once (:class:`~vidsearch.errors.OverloadedError`, a 503 with ``Retry-After``) instead of queueing it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
from numpy.typing import NDArray

from vidsearch.errors import DecodeError, OverloadedError, QueryError
from vidsearch.search.engine import Engine, parse_ref
from vidsearch.search.results import SearchParams, SearchResult
from vidsearch.serve.metrics import ServeMetrics
from vidsearch.serve.scheduler import BatchPolicy, BatchScheduler, pad_shape
from vidsearch.serve.settings import MAX_K, ServeSettings

if TYPE_CHECKING:
    from vidsearch.encode.pipeline import EncodedMedia

log = logging.getLogger(__name__)

_R = TypeVar("_R")

# Bytes one query occupies in a search batch (its segment vectors and hit lists): small; the index
# call's cost, not memory, limits search batches.
SEARCH_UNIT_BYTES = 64 * 1024


@dataclass
class EncodeItem:
    """One query's frames for the encode scheduler: (F, H, W, 3) uint8 at the encoder's input size."""

    images: NDArray[np.uint8]


@dataclass
class SearchItem:
    """One encoded query for the search scheduler."""

    media: Any  # EncodedMedia
    name: str
    k: int
    params: SearchParams


def check_k(k: int) -> int:
    """``k`` if it is 1..MAX_K.

    Raises:
        QueryError: out of range (the server refuses rather than clamps, so a client never silently gets
            fewer results than it asked for).
    """
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
        raise QueryError(f"k must be a whole number from 1 to {MAX_K}, got {k!r}")
    return k


class QueryService:
    """Runs queries against one engine through the two batch schedulers.

    Args:
        engine: the open engine (its current snapshot answers each batch).
        settings: latency target, memory budget, batch limits, decode pool size, longest query.
        metrics: where stage times, batch sizes and queue waits go.
    """

    def __init__(self, engine: Engine, settings: ServeSettings, metrics: ServeMetrics) -> None:
        from vidsearch.encode.pipeline import MediaEncoder

        self.engine = engine
        self.settings = settings
        self.metrics = metrics
        self.media = MediaEncoder(engine.config)  # the frame model is loaded once per process (load_encoder)
        width, height = self.media.encoder.input_size
        self._frame_shape = (height, width, 3)
        shapes = settings.shapes()
        self.encoder: BatchScheduler[EncodeItem, tuple[NDArray[np.float32], float]] = BatchScheduler(
            "encode", self._encode_batch,
            BatchPolicy(settings.latency_target_ms, settings.memory_budget_mb, settings.max_batch, shapes,
                        unit_bytes=width * height * 3 * 4),  # the float32 tensor the graph makes of the frames
            units=lambda item: max(1, len(item.images)),
            on_batch=self._batch_metrics("encode"), on_wait=self._wait_metrics("encode"))
        self.searcher: BatchScheduler[SearchItem, SearchResult] = BatchScheduler(
            "search", self._search_batch,
            BatchPolicy(settings.latency_target_ms, settings.memory_budget_mb, settings.max_batch, shapes,
                        unit_bytes=SEARCH_UNIT_BYTES),
            on_batch=self._batch_metrics("search"), on_wait=self._wait_metrics("search"))
        self.pool = ThreadPoolExecutor(settings.decode_workers, thread_name_prefix="vidsearch-decode")
        metrics.watch_schedulers(lambda: [self.encoder.stats(), self.searcher.stats()])
        self._pending = 0
        self._pending_lock = threading.Lock()
        self._decode_s = 0.05  # EWMA of one decode, for Retry-After

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Start the schedulers' workers; with ``settings.warm_up``, measure their service times first."""
        if self.settings.warm_up:
            self.encoder.warm_up(lambda n: EncodeItem(np.zeros((n, *self._frame_shape), np.uint8)), repeats=2)
            sample = self._sample_query()
            if sample is not None:
                self.searcher.warm_up(lambda n: sample, repeats=2)
        else:  # at least run the model once, so the first query does not pay ONNX Runtime's set-up
            self.media.encoder.encode(np.zeros((1, *self._frame_shape), np.uint8))
        self.encoder.start()
        self.searcher.start()

    def close(self) -> None:
        self.encoder.close()
        self.searcher.close()
        self.pool.shutdown(wait=False, cancel_futures=True)

    def _sample_query(self) -> SearchItem | None:
        """A stored-range query of the first indexed video (None for an empty collection)."""
        snap = self.engine.snapshot
        if not snap.catalog.video_ids:
            return None
        video = snap.catalog.video_ids[0]
        times = snap.catalog.frame_times(0)
        end = float(times[-1]) + 1.0 if len(times) else 1.0
        text = f"{video}@0-{min(end, 10.0):.3f}"
        try:
            media = self.engine.encode_query(text, snap=snap)
        except (QueryError, KeyError, ValueError):
            return None
        return SearchItem(media, text, 10, SearchParams())

    # ------------------------------------------------------------------ metrics hooks
    def _batch_metrics(self, name: str) -> Callable[[int, float], None]:
        size, seconds = self.metrics.batch_size.labels(name), self.metrics.batch_seconds.labels(name)

        def on_batch(units: int, service: float) -> None:
            size.observe(units)
            seconds.observe(service)
        return on_batch

    def _wait_metrics(self, name: str) -> Callable[[float], None]:
        return self.metrics.queue_wait.labels(name).observe

    # ------------------------------------------------------------------ batch runners (worker threads)
    def _encode_batch(self, items: list[EncodeItem]) -> list[tuple[NDArray[np.float32], float]]:
        """Frames of every item, encoded in calls padded to the scheduler's shapes; split back per item."""
        t0 = time.perf_counter()
        frames = items[0].images if len(items) == 1 else np.concatenate([it.images for it in items])
        shapes = self.encoder.shapes
        largest = shapes[-1]
        parts = []
        for start in range(0, len(frames), largest):  # more than the largest shape: one item, run in chunks
            chunk = frames[start : start + largest]
            shape = pad_shape(len(chunk), shapes)
            if shape > len(chunk):
                chunk = np.concatenate([chunk, np.zeros((shape - len(chunk), *chunk.shape[1:]), np.uint8)])
            parts.append(self.media.encoder.encode(chunk)[: min(largest, len(frames) - start)])
        vectors = parts[0] if len(parts) == 1 else np.concatenate(parts)
        seconds = time.perf_counter() - t0
        out, offset = [], 0
        for it in items:
            out.append((vectors[offset : offset + len(it.images)], seconds))
            offset += len(it.images)
        return out

    def _search_batch(self, items: list[SearchItem]) -> list[SearchResult]:
        """One ``search_encoded`` call (one index call) per distinct (k, params) in the batch, on one snapshot."""
        snap = self.engine.snapshot
        groups: dict[tuple[int, SearchParams], list[int]] = {}
        for i, it in enumerate(items):
            groups.setdefault((it.k, it.params), []).append(i)
        results: list[SearchResult | None] = [None] * len(items)
        for (k, params), members in groups.items():
            found = self.engine.search_encoded([items[i].media for i in members], [items[i].name for i in members],
                                               k, params, snap)
            for i, result in zip(members, found):
                results[i] = result
        return [r for r in results if r is not None]

    # ------------------------------------------------------------------ the decode pool
    async def in_pool(self, fn: Callable[..., _R], *args: Any) -> _R:
        """Run ``fn`` on a decode thread; refuse at once (503) when ``max_pending_decodes`` already wait."""
        with self._pending_lock:
            if self._pending >= self.settings.max_pending_decodes:
                self.metrics.overloaded.labels("decode").inc()
                wait = self._pending * self._decode_s / self.settings.decode_workers
                raise OverloadedError(f"decode: {self._pending} queries are being decoded, the most this server "
                                      f"queues; retry after {wait:.2f} s", retry_after=wait)
            self._pending += 1
        t0 = time.perf_counter()
        try:
            return await asyncio.get_running_loop().run_in_executor(self.pool, lambda: fn(*args))
        finally:
            with self._pending_lock:
                self._pending -= 1
                self._decode_s += 0.2 * ((time.perf_counter() - t0) - self._decode_s)

    async def _submit(self, scheduler: BatchScheduler[Any, _R], item: Any) -> _R:
        try:
            return await scheduler.asubmit(item)
        except OverloadedError:
            self.metrics.overloaded.labels(scheduler.name).inc()
            raise

    # ------------------------------------------------------------------ queries
    async def search_file(self, path: Path, name: str, k: int, params: SearchParams) -> SearchResult:
        """Search with an uploaded video or image (already on disk, its ending chosen from its content).

        Raises:
            DecodeError: not a readable video or image.
            QueryError: longer than ``max_query_seconds``; bad ``k``.
            OverloadedError: a stage cannot take it within the latency target now.
        """
        check_k(k)
        started = time.perf_counter()
        try:
            media = await self._encode_file(path, params.crops)
        except (DecodeError, QueryError) as exc:  # name the client's file, not the server's temporary copy
            raise type(exc)(str(exc).replace(str(path), name)) from None
        return await self._search(media, name, k, params, started)

    async def _encode_file(self, path: Path, crops: bool) -> EncodedMedia:
        if crops:
            media = await self.in_pool(self._encode_with_crops, path)
            self.metrics.observe_stage("decode", media.timings.get("decode", 0.0))
            self.metrics.observe_stage("encode", media.timings.get("encode", 0.0))
        else:
            decoded = await self.in_pool(self.media.decode_file, path, self.settings.max_query_seconds)
            self.metrics.observe_stage("decode", decoded.decode_seconds)
            vectors, encode_s = await self._submit(self.encoder, EncodeItem(decoded.images))
            media = self.media.finish(decoded, vectors, encode_s)
            del decoded
            self.metrics.observe_stage("encode", media.timings["encode"])
        return media

    def _encode_with_crops(self, path: Path) -> EncodedMedia:
        from vidsearch.decode import probe

        info = probe(path)
        if info.duration > self.settings.max_query_seconds:
            raise QueryError(f"{path}: the video lasts {info.duration:.1f} s, longer than the "
                             f"{self.settings.max_query_seconds:g} s allowed for a query; cut a shorter clip")
        return self.media.encode_file(path, crops=True)

    async def search_ref(self, text: str, k: int, params: SearchParams) -> SearchResult:
        """Search with ``VIDEO_ID@START-END`` of an indexed video (its stored frame vectors: no decode or encode).

        Raises:
            QueryError: not of that form, END not after START, no frame in the range; bad ``k``.
            NotFoundError: no such video.
        """
        check_k(k)
        started = time.perf_counter()
        if parse_ref(text) is None:
            raise QueryError(f"ref {text[:200]!r}: expected VIDEO_ID@START-END, a video id (hex) and seconds, "
                             "e.g. 3fa9c2d41b07@10-20")
        media = self.engine.encode_query(text, snap=self.engine.snapshot)
        return await self._search(media, text, k, params, started)

    async def _search(self, media: EncodedMedia, name: str, k: int, params: SearchParams,
                      started: float) -> SearchResult:
        result = await self._submit(self.searcher, SearchItem(media, name, k, params))
        rerank_s = result.rerank_ms / 1000
        self.metrics.observe_stage("search", result.timings_ms.get("search", 0.0) / 1000 - rerank_s)
        if params.rerank != "none":
            self.metrics.observe_stage("rerank", rerank_s)
        result.timings_ms["total"] = (time.perf_counter() - started) * 1000  # with the queue waits
        return result
