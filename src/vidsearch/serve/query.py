"""The server's query path: uploads decoded in a thread pool, their frames encoded in batches with the
frames of concurrent queries, their segment vectors searched in batches in one index call.

::

    upload ─► admission ─► decode pool (bounded) ─► encode scheduler ─► search scheduler ─► JSON bytes
              (frames from a probe,                  (frames of several   (several queries: stored ranges
               decode + encode + search predicted)    queries, one call)   read, one index call, answers
    VIDEO_ID@START-END ─────────────────────────────────────────────────►  serialised in the worker)

A file query is admitted before it is decoded: its frame count comes from a probe (1 for an image), its
decode time from the measured decode rate and the decode pool's backlog, and the encode scheduler says
whether its batch would finish within the latency target (:meth:`BatchScheduler.reserve`); if not, the
answer is a 503 with ``Retry-After`` at once, not after a decode. A stored-range query is read from the
stored frames, searched and serialised by the search scheduler's worker: one hand-off to the worker and
one back per request. With ``insets`` (the default) the decode pool also finds each frame's insets and cuts
them out; they join the frames in the encode scheduler's batches (an image with one inset is two units). A
query with ``crops`` (six encodings per frame) or another encoder is decoded and encoded whole in the pool,
then searched in a batch like the others.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
from numpy.typing import NDArray

from vidsearch.errors import ConfigError, DecodeError, OverloadedError, QueryError, VidsearchError
from vidsearch.search.engine import Engine, parse_ref
from vidsearch.search.results import SearchParams, SearchResult
from vidsearch.serve.metrics import ServeMetrics
from vidsearch.serve.scheduler import BatchPolicy, BatchScheduler, pad_shape
from vidsearch.serve.settings import MAX_K, ServeSettings

if TYPE_CHECKING:
    from vidsearch.encode.pipeline import DecodedMedia, EncodedMedia

log = logging.getLogger(__name__)

_R = TypeVar("_R")

# Bytes one query occupies in a search batch (its segment vectors and hit lists): small; the index
# call's cost, not memory, limits search batches.
SEARCH_UNIT_BYTES = 64 * 1024


def shared_cores_delay(own_s: float, busy_s: float) -> float:
    """Seconds a job of ``own_s`` (alone on the cores) loses to another that holds them for ``busy_s`` more:
    both use every core, so while they overlap each runs at half speed; the job then takes ``own_s +
    busy_s / 2`` when the other ends first, ``2 * own_s`` when it does not. (Processor sharing, by hand: no
    library predicts ONNX Runtime sessions sharing cores.)"""
    return min(max(0.0, own_s), max(0.0, busy_s) / 2)


@dataclass
class EncodeItem:
    """One query's frames for the encode scheduler: (F, H, W, 3) uint8 at the encoder's input size."""

    images: NDArray[np.uint8]


@dataclass
class SearchItem:
    """One query for the search scheduler: encoded ``media`` (an upload), or a stored range ``ref`` that
    the worker reads from the stored frames.

    Attributes:
        name: the query's name in the answer (the upload's file name, or the ref).
        started: ``time.perf_counter()`` when the request arrived (``timings_ms.total`` counts from it).
    """

    name: str
    k: int
    params: SearchParams
    started: float
    media: Any = None  # EncodedMedia
    ref: str | None = None


@dataclass
class SearchAnswer:
    """A search's result and its JSON (``SearchResult.to_dict()``, serialised by the search worker).

    Attributes:
        done: ``time.perf_counter()`` when the worker finished it (the hand-back to the event loop starts).
    """

    result: SearchResult
    body: bytes
    done: float = 0.0


class TailEstimate:
    """A high quantile (default the 99th percentile) of the last ``window`` observed seconds, recomputed
    every ``every`` observations (0 until the first)."""

    def __init__(self, quantile: float = 0.99, window: int = 256, every: int = 16) -> None:
        self.quantile, self.every = quantile, every
        self._values: deque[float] = deque(maxlen=window)
        self._fresh = 0
        self.value = 0.0

    def add(self, seconds: float) -> None:
        self._values.append(seconds)
        self._fresh += 1
        if self._fresh >= self.every:
            self._fresh = 0
            ranked = sorted(self._values)
            self.value = ranked[min(len(ranked) - 1, int(self.quantile * len(ranked)))]


class Hold:
    """Encode units reserved for an upload by :meth:`QueryService.hold` before it is stored; :meth:`take` hands
    them to the admission of its decoded frames, :meth:`release` gives back what was not taken (safe twice)."""

    def __init__(self, service: QueryService, units: int) -> None:
        self._service, self.units = service, units

    def take(self) -> int:
        units, self.units = self.units, 0
        return units

    def release(self) -> None:
        units = self.take()
        if units:
            self._service.encoder.release(units)


def dump_json(content: Any) -> bytes:
    """JSON bytes as Starlette's ``JSONResponse`` renders them (compact, UTF-8), by orjson when installed (the
    [serve] extra: 6 us against 79 for a 10-video answer); the bytes are the same, but for a float that is not
    finite, which orjson writes as null where the standard library refuses it."""
    if _orjson is not None:
        return _orjson.dumps(content)
    return json.dumps(content, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")).encode()


_orjson: Any
try:
    import orjson as _orjson
except ImportError:  # pragma: no cover - the [serve] extra installs it
    _orjson = None


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
        self._fps = float(engine.config.decode.fps)
        shapes = settings.shapes()
        # --max-batch 1 stays the honest baseline: one image per call of the one session, as the CLI encodes
        self._sessions = self._encoder_sessions(settings.encode_workers if settings.max_batch > 1 else 1)
        self._idle_sessions = list(self._sessions)  # list.pop/append are atomic: a free session per worker
        self.encoder: BatchScheduler[EncodeItem, tuple[NDArray[np.float32], float]] = BatchScheduler(
            "encode", self._encode_batch,
            BatchPolicy(settings.file_target_ms, settings.memory_budget_mb, settings.max_batch, shapes,
                        unit_bytes=width * height * 3 * 4),  # the float32 tensor the graph makes of the frames
            units=lambda item: max(1, len(item.images)), workers=len(self._sessions),
            on_batch=self._batch_metrics("encode"), on_wait=self._wait_metrics("encode"))
        self.searcher: BatchScheduler[SearchItem, SearchAnswer | BaseException] = BatchScheduler(
            "search", self._search_batch,
            BatchPolicy(settings.search_target_ms, settings.memory_budget_mb, settings.max_batch, shapes,
                        unit_bytes=SEARCH_UNIT_BYTES),
            on_batch=self._batch_metrics("search"), on_wait=self._wait_metrics("search"))
        self.pool = ThreadPoolExecutor(settings.decode_workers, thread_name_prefix="vidsearch-decode")
        metrics.watch_schedulers(lambda: [self.encoder.stats(), self.searcher.stats()])
        self._pending = 0
        self._pending_lock = threading.Lock()
        self._decode_s = 0.05  # EWMA of one decode, for Retry-After
        # Measured decode cost (EWMA) for admission, keyed (is an image, insets found too): seconds per image,
        # and per sampled frame of a video (first guesses from this machine: a 480p JPEG in 26 ms, a 10 s clip
        # at 1 fps in ~0.25 s; with insets, frames decoded at twice the model size and searched for insets).
        self._decode_cost: dict[tuple[bool, bool], float] = {(True, False): 0.03, (False, False): 0.03,
                                                             (True, True): 0.05, (False, True): 0.05}
        # insets found per frame (EWMA), to reserve a query's encode units before it is decoded
        self._insets_per_frame = 0.1
        self._decoding_s = 0.0  # predicted decode seconds of the admitted queries not decoded yet
        # Measured cost (EWMA) of a query decoded and encoded whole in the pool (crops): seconds per
        # image, and per sampled frame of a video (first guesses: decode at twice the model size, the frame
        # and its crops encoded).
        self._whole_image_s = 0.12
        self._whole_frame_s = 0.12
        # seconds to store and probe an upload (learn_store): the median, as the decode cost is a mean
        self._store = TailEstimate(0.5)
        self._hand_back = TailEstimate()  # seconds from a search's end in the worker to its await resuming
        # The light encoder (settings.light_encoder): checked against the collection and loaded now (a
        # ConfigError at start-up, not a 4xx per query); its measured cost (EWMA) per image and per frame
        # of a query encoded whole with it (first guesses: half the collection encoder's, as measured for
        # sscd-distilled against sscd on the VSC-style queries).
        self.light: str | None = None
        if settings.light_encoder is not None and settings.light_encoder != engine.config.encode.encoder:
            try:
                engine.query_media_encoder(settings.light_encoder)
            except QueryError as exc:
                raise ConfigError(f"--light-encoder: {exc}") from None
            self.light = settings.light_encoder
        self._light_image_s = 0.5 * self._whole_image_s
        self._light_frame_s = 0.5 * self._whole_frame_s

    def _encoder_sessions(self, workers: int) -> list[Any]:
        """The frame encoders the encode workers use: the process's loaded one alone, or ``workers`` ONNX
        Runtime sessions of the same model with ``cores / workers`` threads each.

        Two single-threaded sessions encoding two batches at once can beat one two-threaded session on
        2 cores (intra-op parallelism of small convolutions is poor). Measured here (SSCD, 2 cores shared
        with other work, load 3-5): standalone, 2 x 1 thread against 1 x 2 threads gave 0.71-1.76x images/s
        (median about 1.2x) at batches 1-4; through the server (closed loop of 6 image queries, same run)
        5.6-6.4 images/s either way, the decode threads and other processes already taking the cores. Not
        a gain we could show, so one worker is the default (``ServeSettings.encode_workers``); each extra
        session costs ~65 MB.
        """
        from vidsearch.encode.frame import OnnxFrameEncoder

        base = self.media.encoder
        if workers <= 1 or not isinstance(base, OnnxFrameEncoder):
            return [base]
        from vidsearch.encode.registry import get

        spec = get(base.name)
        threads = max(1, (os.cpu_count() or 1) // workers)
        return [OnnxFrameEncoder(spec, base.model_path, threads=threads) for _ in range(workers)]

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Start the schedulers' workers; with ``settings.warm_up``, measure their service times first (the
        encoder only at the shapes the latency target and the memory budget allow)."""
        from vidsearch.search.vote import load_kernels

        load_kernels()  # the compiled vote, loaded before the first query (a fresh process would vote by the loop)
        self._blas_limits = single_threaded_blas()
        if self.settings.warm_up:
            self.encoder.warm_up(lambda n: EncodeItem(np.zeros((n, *self._frame_shape), np.uint8)), repeats=2,
                                 memory_probe=process_memory)
            sample = self._sample_query()
            if sample is not None:  # a search costs milliseconds: more repeats, so one slow call does not
                # make a shape look too dear (the model would then never batch, nor run that shape again to learn)
                self.searcher.warm_up(lambda n: sample, repeats=7)
        else:  # at least run the model and one search once, so the first query does not pay ONNX Runtime's
            # set-up or the search kernels' first call (numba loads or compiles them then: seconds, while
            # concurrent queries queue up behind it and get 503s)
            for session in self._sessions:
                session.encode(np.zeros((1, *self._frame_shape), np.uint8))
            first = self._sample_query()
            if first is not None:
                self._search_batch([first])
        self.encoder.start()
        self.searcher.start()

    def close(self) -> None:
        self.encoder.close()
        self.searcher.close()
        self.pool.shutdown(wait=False, cancel_futures=True)
        limits, self._blas_limits = getattr(self, "_blas_limits", None), None
        if limits is not None:
            limits.restore_original_limits()

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
            self.engine.encode_ref(text, snap=snap)
        except (QueryError, KeyError, ValueError):
            return None
        return SearchItem(text, 10, SearchParams(), time.perf_counter(), ref=text)

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
        session = self._idle_sessions.pop()  # one per worker: never two batches on one session
        try:
            for start in range(0, len(frames), largest):  # more than the largest shape: one item, in chunks
                chunk = frames[start : start + largest]
                shape = pad_shape(len(chunk), shapes)
                if shape > len(chunk):
                    chunk = np.concatenate([chunk, np.zeros((shape - len(chunk), *chunk.shape[1:]), np.uint8)])
                parts.append(session.encode(chunk)[: min(largest, len(frames) - start)])
        finally:
            self._idle_sessions.append(session)
        vectors = parts[0] if len(parts) == 1 else np.concatenate(parts)
        seconds = time.perf_counter() - t0
        out, offset = [], 0
        for it in items:
            out.append((vectors[offset : offset + len(it.images)], seconds))
            offset += len(it.images)
        return out

    def _search_batch(self, items: list[SearchItem]) -> list[SearchAnswer | BaseException]:
        """The batch's stored ranges read, then one ``search_encoded`` call (one index call) per distinct
        (k, params), on one snapshot; each answer serialised here, off the event loop.

        An item that cannot be searched (a bad or unknown ref) gets its exception as its result.
        """
        snap = self.engine.snapshot
        out: list[SearchAnswer | BaseException | None] = [None] * len(items)
        groups: dict[tuple[int, SearchParams], list[int]] = {}
        media: list[Any] = [None] * len(items)
        for i, it in enumerate(items):
            if it.ref is not None:
                try:
                    media[i] = self.engine.encode_ref(it.ref, snap=snap)
                except (VidsearchError, ValueError, KeyError) as exc:
                    out[i] = exc
                    continue
            else:
                media[i] = it.media
            groups.setdefault((it.k, it.params), []).append(i)
        observe = self.metrics.observe_stage
        for (k, params), members in groups.items():
            found = self.engine.search_encoded([media[i] for i in members], [items[i].name for i in members],
                                               k, params, snap)
            for i, result in zip(members, found):
                rerank_s = result.rerank_ms / 1000
                observe("search", result.timings_ms.get("search", 0.0) / 1000 - rerank_s)
                if params.rerank != "none":
                    observe("rerank", rerank_s)
                result.timings_ms["total"] = (time.perf_counter() - items[i].started) * 1000  # with the waits
                out[i] = SearchAnswer(result, dump_json(result.to_dict()), time.perf_counter())
        return [o if o is not None else RuntimeError("not searched") for o in out]

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

    async def _submit(self, scheduler: BatchScheduler[Any, _R], item: Any, reserved: int = 0,
                      extra_s: float = 0.0) -> _R:
        try:
            return await scheduler.asubmit(item, reserved=reserved, extra_s=extra_s)
        except OverloadedError:
            self.metrics.overloaded.labels(scheduler.name).inc()
            raise

    # ------------------------------------------------------------------ admission of file queries
    def predicted_decode(self, frames: int, is_image: bool, insets: bool = False) -> float:
        """Predicted seconds until a query of ``frames`` sampled frames is decoded: the pool's backlog
        shared by its threads, then its own decode."""
        backlog = max(0.0, self._decoding_s) / self.settings.decode_workers
        return backlog + self.own_decode(frames, is_image, insets)

    def own_decode(self, frames: int, is_image: bool, insets: bool = False) -> float:
        """Predicted seconds to decode one query of ``frames`` sampled frames (measured, EWMA), finding its
        insets too when ``insets``."""
        per = self._decode_cost[(is_image, insets)]
        return per if is_image else per * max(1, frames)

    def predicted_units(self, frames: int, insets: bool) -> int:
        """Encode units reserved for a query of ``frames`` frames before it is decoded: its frames, and with
        ``insets`` the insets expected in them (measured per frame); the real count replaces it once decoded."""
        return frames + (int(round(frames * self._insets_per_frame)) if insets else 0)

    def precheck(self) -> None:
        """Refuse (503) at once, from a request's headers (its form not read yet), when not even the cheapest
        file query, a one-frame image without insets, could be decoded, encoded and searched within the target
        now (by the collection's encoder, or by the light one). :meth:`hold` decides once the form is read."""
        units, decode_s, after_s = self._batched_prediction(1, True, False, 0.0)
        try:
            self.encoder.check(units, arrive_after=decode_s, extra_s=after_s)
        except OverloadedError:
            if self.light is not None and self._whole_fits(self._light_image_s):
                return
            self.metrics.overloaded.labels("encode").inc()
            raise

    def hold(self, params: SearchParams, spent_s: float) -> Hold:
        """Admission of an upload once its form is read, before it is stored: for the encode scheduler's
        batches (:meth:`batched`), a one-frame image's encode units with ``params.insets`` are reserved as
        :meth:`_admit` would after storing and probing it (the median of that time, learnt by
        :meth:`learn_store`, counted before its decode); pass the hold to :meth:`search_file`, which keeps it
        for an image and trades it for the real reservation for a video. Otherwise (crops, another encoder) the
        headers' check again; that path admits after probing.

        Why here: at twice the sustainable image load on two saturated cores, refusals by ``_admit`` came 9-18 ms
        after the request's first byte (storing and probing the upload in a thread came first), against <= 1.5 ms
        for those of :meth:`precheck`, and made the 503s' p99 22-31 ms (bench/serve.py, target 20). A check
        without a reservation here did not do: the requests admitted while the upload was stored took the room.

        Raises:
            OverloadedError: the image would not be answered within the target (and no light encoder can).
        """
        if not self.batched(params):
            self.precheck()
            return Hold(self, 0)
        units, decode_s, after_s = self._batched_prediction(1, True, params.insets, spent_s)
        try:
            self.encoder.reserve(units, arrive_after=self._store.value + decode_s, extra_s=after_s)
        except OverloadedError:
            if self.light is not None and self._whole_fits(self._light_image_s, spent_s + self._store.value):
                return Hold(self, 0)
            self.metrics.overloaded.labels("encode").inc()
            raise
        return Hold(self, units)

    def learn_store(self, seconds: float) -> None:
        """Seconds the server took to store an upload and probe it (:meth:`hold` predicts with them)."""
        self._store.add(seconds)

    def _batched_prediction(self, frames: int, is_image: bool, insets: bool,
                            spent_s: float) -> tuple[int, float, float]:
        """(encode units, seconds until decoded, seconds after its batch) of a file query on the batched path:
        what :meth:`_admit` reserves, and :meth:`hold` and :meth:`precheck` predict."""
        decode_s = self.predicted_decode(frames, is_image, insets)
        # after its batch: the search, then the hand-back to the event loop (measured p99, as for stored ranges)
        after_s = self.searcher.controller.predict(1) + self._hand_back.value + max(0.0, spent_s)
        return self.predicted_units(frames, insets), decode_s, after_s

    def _admit(self, frames: int, is_image: bool, spent_s: float = 0.0, insets: bool = False) -> int:
        """Admission of a file query of ``frames`` frames before decoding (finding its insets too when
        ``insets``); returns the encode units reserved (:meth:`predicted_units`).

        Args:
            spent_s: seconds the request has taken already (reading and storing the upload, the probe):
                they count against its target too.

        Raises:
            OverloadedError: predicted past the latency target (counted in ``vidsearch_overloaded``).
        """
        units, decode_s, after_s = self._batched_prediction(frames, is_image, insets, spent_s)
        try:
            self.encoder.reserve(units, arrive_after=decode_s, extra_s=after_s)
        except OverloadedError:
            self.metrics.overloaded.labels("encode").inc()
            raise
        return units

    def _whole_predicted(self, own_s: float, spent_s: float = 0.0) -> tuple[float, float]:
        """(seconds until a query encoded whole in the pool is answered, the seconds of that spent waiting: the
        pool's backlog per thread plus what the encode scheduler's batches take from it).

        The pool's encodes share the cores with the encode scheduler's batches (both run on every core): while
        they overlap each runs at about half speed, so with the scheduler busy for ``b`` seconds the query
        loses ``min(own_s, b / 2)`` (:func:`shared_cores_delay`). (Without this, light-encoder queries admitted
        while the pool was empty but the scheduler busy overran the target: p99 209-222 ms against 200 near 35
        images/s, serve-light-2.json.)"""
        backlog = max(0.0, self._decoding_s) / self.settings.decode_workers
        contention = shared_cores_delay(own_s, self.encoder.busy_for())
        return (backlog + own_s + contention + self.searcher.controller.predict(1) + self._hand_back.value
                + max(0.0, spent_s)), backlog + contention

    def _whole_verdict(self, own_s: float, spent_s: float = 0.0) -> tuple[bool, float]:
        """(whether a query encoded whole in the pool is admitted, its predicted seconds): admitted when predicted
        within the target, or when it finds the pool and the encode scheduler idle (nothing would make it faster)."""
        predicted, waiting = self._whole_predicted(own_s, spent_s)
        return waiting <= 0 or predicted <= self.settings.file_target_ms / 1000, predicted

    def _whole_fits(self, own_s: float, spent_s: float = 0.0) -> bool:
        return self._whole_verdict(own_s, spent_s)[0]

    def _admit_whole(self, own_s: float, spent_s: float = 0.0) -> None:
        """Admission of a query encoded whole in the decode pool (crops, or another encoder: outside the encode
        scheduler, so its model does not see them): the pool's backlog shared by its threads, then its own
        ``own_s`` (longer while the encode scheduler has work: :meth:`_whole_predicted`), the search and the
        hand-back after it, and the ``spent_s`` it has taken already, against the latency target. Without it
        such queries only met the pool's queue limit: 16 waiting, over a second at overload, instead of a 503
        at once. A query that finds the pool and the scheduler idle is always admitted.

        Raises:
            OverloadedError: predicted past the target (counted in ``vidsearch_overloaded{stage="decode"}``).
        """
        fits, predicted = self._whole_verdict(own_s, spent_s)
        if fits:
            return
        target = self.settings.file_target_ms / 1000
        self.metrics.overloaded.labels("decode").inc()
        raise OverloadedError(f"decode: a query with crops or another encoder would take about "
                              f"{predicted * 1000:.0f} ms here now, past the {self.settings.file_target_ms:g} ms "
                              f"admitted (the latency target less its headroom); retry after "
                              f"{predicted - target:.2f} s (with crops=false and the collection's encoder its frames "
                              "are batched with other queries')",
                              retry_after=predicted - target)

    def frames_of(self, path: Path) -> tuple[int, bool]:
        """(frames the query will sample, is it an image) from a probe of its headers (blocking: a thread)."""
        from vidsearch.decode import probe

        info = probe(path)
        if info.is_image:
            return 1, True
        if info.duration > self.settings.max_query_seconds:
            raise QueryError(f"{path}: the video lasts {info.duration:.1f} s, longer than the "
                             f"{self.settings.max_query_seconds:g} s allowed for a query; cut a shorter clip")
        return max(1, math.ceil(info.duration * self._fps)), False

    # ------------------------------------------------------------------ queries
    async def search_file(self, path: Path, name: str, k: int, params: SearchParams,
                          started: float | None = None, frames: tuple[int, bool] | None = None,
                          hold: Hold | None = None) -> SearchAnswer:
        """Search with an uploaded video or image (already on disk, its ending chosen from its content).

        Args:
            frames: ``frames_of(path)`` when the caller probed it already.
            hold: the upload's :meth:`hold` (taken for an image, released otherwise).

        Raises:
            DecodeError: not a readable video or image.
            QueryError: longer than ``max_query_seconds``; bad ``k``.
            OverloadedError: it cannot be served within the latency target now.
        """
        started = time.perf_counter() if started is None else started
        try:
            check_k(k)
            if frames is None:
                frames = await asyncio.get_running_loop().run_in_executor(None, self.frames_of, path)
            media = await self._encode_file(path, params, *frames, started=started, hold=hold)
        except (DecodeError, QueryError) as exc:  # name the client's file, not the server's temporary copy
            raise type(exc)(str(exc).replace(str(path), name)) from None
        finally:
            if hold is not None:
                hold.release()  # not taken: a video, or the query failed before its admission
        return await self._search(SearchItem(name, k, params, started, media=media))

    async def _encode_file(self, path: Path, params: SearchParams, frames: int, is_image: bool,
                           started: float | None = None, hold: Hold | None = None) -> EncodedMedia:
        try:
            return await self._encode_file_as_asked(path, params, frames, is_image, started, hold)
        except OverloadedError:
            if self.light is None or params.query_encoder is not None:
                raise
            # the collection's encoder cannot meet the target now: the light one, if it can (else the 503)
            own_s = self._light_image_s if is_image else self._light_frame_s * max(1, frames)
            if not self._whole_fits(own_s, 0.0 if started is None else time.perf_counter() - started):
                raise
        self.metrics.light_queries.inc()
        return await self._whole_in_pool(path, params, own_s, is_image, self.light)

    def batched(self, params: SearchParams) -> bool:
        """Whether a file query with ``params`` is encoded by the encode scheduler's batches (no crops, the
        collection's encoder); else it is decoded and encoded whole in the decode pool."""
        return not params.crops and params.query_encoder in (None, self.engine.config.encode.encoder)

    async def _encode_file_as_asked(self, path: Path, params: SearchParams, frames: int, is_image: bool,
                                    started: float | None = None, hold: Hold | None = None) -> EncodedMedia:
        other = params.query_encoder not in (None, self.engine.config.encode.encoder)
        if not self.batched(params):  # six crops per frame, or another encoder: decoded and encoded whole in the
            # pool, as the CLI does (the batched path has no crops, and batches the collection's encoder only)
            light = other and params.query_encoder == self.light
            if is_image:
                own_s = self._light_image_s if light else self._whole_image_s
            else:
                own_s = (self._light_frame_s if light else self._whole_frame_s) * max(1, frames)
            self._admit_whole(own_s, 0.0 if started is None else time.perf_counter() - started)
            return await self._whole_in_pool(path, params, own_s, is_image, params.query_encoder if other else None)
        insets = params.insets
        held = hold.take() if hold is not None else 0
        if held and is_image:
            units = held  # admitted before its upload was stored (hold); the real count replaces it once decoded
        else:
            if held:
                self.encoder.release(held)
            units = self._admit(frames, is_image, 0.0 if started is None else time.perf_counter() - started, insets)
        own_s = self.own_decode(frames, is_image, insets)
        self._decoding_s += own_s
        try:
            decoded = await self.in_pool(self.media.decode_file, path, self.settings.max_query_seconds, insets)
        except BaseException:
            self.encoder.release(units)
            raise
        finally:
            self._decoding_s -= own_s
        self._learn_decode(decoded, is_image, insets)
        self.metrics.observe_stage("decode", decoded.decode_seconds)
        vectors, encode_s = await self._submit(self.encoder, EncodeItem(decoded.all_images), reserved=units)
        media = self.media.finish(decoded, vectors, encode_s)
        del decoded
        self.metrics.observe_stage("encode", media.timings["encode"])
        return media

    async def _whole_in_pool(self, path: Path, params: SearchParams, own_s: float, is_image: bool,
                             query_encoder: str | None) -> EncodedMedia:
        """Decode and encode a query whole in the decode pool (admitted already, ``own_s`` its predicted cost),
        with the collection's encoder or ``query_encoder``; learns the cost per image or frame (EWMA) of the
        collection's encoder or of the light one (another encoder's cost is not learnt: nothing predicts it)."""
        self._decoding_s += own_s
        try:
            media = await self.in_pool(self._encode_whole, path, params.crops, params.insets, query_encoder)
        finally:
            self._decoding_s -= own_s
        decode_s, encode_s = media.timings.get("decode", 0.0), media.timings.get("encode", 0.0)
        # learnt as measured, contention included: learning the cost as if alone (minus the predicted overlap)
        # admitted more than the cores could serve, since three or more encodes share them at overload
        # (serve-light-after.json: 17.9 images/s at p99 <= 200 ms against 30.6 before, same VM)
        cost = decode_s + encode_s if is_image else (decode_s + encode_s) / max(1, len(media.times))
        if query_encoder is None:
            if is_image:
                self._whole_image_s += 0.2 * (cost - self._whole_image_s)
            else:
                self._whole_frame_s += 0.2 * (cost - self._whole_frame_s)
        elif query_encoder == self.light:
            if is_image:
                self._light_image_s += 0.2 * (cost - self._light_image_s)
            else:
                self._light_frame_s += 0.2 * (cost - self._light_frame_s)
        self.metrics.observe_stage("decode", decode_s)
        self.metrics.observe_stage("encode", encode_s)
        return media

    def _learn_decode(self, decoded: DecodedMedia, is_image: bool, insets: bool) -> None:
        """Learn (EWMA) the decode cost per image or frame, and with ``insets`` the insets found per frame."""
        frames = max(1, len(decoded.images))
        per = decoded.decode_seconds if is_image else decoded.decode_seconds / frames
        self._decode_cost[(is_image, insets)] += 0.2 * (per - self._decode_cost[(is_image, insets)])
        if insets:
            self._insets_per_frame += 0.2 * ((decoded.units - len(decoded.images)) / frames - self._insets_per_frame)

    def _encode_whole(self, path: Path, crops: bool, insets: bool, query_encoder: str | None = None) -> EncodedMedia:
        from vidsearch.decode import probe

        info = probe(path)
        if info.duration > self.settings.max_query_seconds:
            raise QueryError(f"{path}: the video lasts {info.duration:.1f} s, longer than the "
                             f"{self.settings.max_query_seconds:g} s allowed for a query; cut a shorter clip")
        if query_encoder is not None:  # the engine's encoder of that name (checked against the collection's)
            return self.engine.encode_query(path, crops=crops, insets=insets, query_encoder=query_encoder)
        return self.media.encode_file(path, crops=crops, insets=insets)

    async def search_ref(self, text: str, k: int, params: SearchParams, started: float | None = None) -> SearchAnswer:
        """Search with ``VIDEO_ID@START-END`` of an indexed video (its stored frame vectors: no decode or encode;
        read by the search worker).

        Raises:
            QueryError: not of that form, END not after START, no frame in the range; bad ``k``.
            NotFoundError: no such video.
            OverloadedError: it cannot be served within the search target now.
        """
        check_k(k)
        if parse_ref(text) is None:
            raise QueryError(f"ref {text[:200]!r}: expected VIDEO_ID@START-END, a video id (hex) and seconds, "
                             "e.g. 3fa9c2d41b07@10-20")
        return await self._search(SearchItem(text, k, params, time.perf_counter() if started is None else started,
                                             ref=text))

    async def _search(self, item: SearchItem) -> SearchAnswer:
        # The event loop's delays around the scheduler count against the target too: the hand-back of an
        # answer (measured, p99) and, as much again, the wait of a request for the loop before it reaches
        # the scheduler (not measurable from here). At 600 stored ranges/s they were 9 ms of a 50 ms target
        # at the p99, and admission, not knowing them, let the answers' p99 reach 58 ms.
        answer = await self._submit(self.searcher, item, extra_s=2 * self._hand_back.value)
        if isinstance(answer, BaseException):
            raise answer
        if answer.done:
            self._hand_back.add(time.perf_counter() - answer.done)
        return answer


def single_threaded_blas() -> Any:
    """Limit the BLAS libraries loaded (numpy's and FAISS's OpenBLAS) to one thread each, for the process,
    until ``.restore_original_limits()`` on what this returns (None without ``threadpoolctl``).

    A server runs many small products at once (a flat search is one (Q, d) x (d, N) product per batch),
    so its parallelism is between requests; a second BLAS thread per product only fights the event loop
    and the other worker for the 2 cores. Measured here (9 query segments x 1,337 rows x 512, k = 100,
    machine loaded by other work): 0.70 ms a search with one thread, 5.0-12.9 ms with two.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # the [serve] extra installs it; without it the BLAS keeps its own thread count
        log.warning("threadpoolctl is not installed (pip install 'vidsearch[serve]'): BLAS keeps several threads "
                    "per call, which slows concurrent searches")
        return None
    return threadpool_limits(limits=1, user_api="blas")


def process_memory() -> int:
    """Resident memory of this process in bytes (Linux ``/proc/self/statm``; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0
