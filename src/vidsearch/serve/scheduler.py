"""Dynamic batch scheduler: work items of concurrent requests (frames to encode, vectors to search) run
together in batches whose size is chosen online to meet a latency target within a memory budget.

Two parts:

* :class:`BatchController` is the decision logic, pure and driven by the ``now`` its caller passes (a
  virtual clock in the tests' event-driven simulation, ``time.monotonic`` in the server). It keeps the
  queue (arrival time and units of each item), a service-time model per batch shape and the worker's
  predicted finish, and answers three questions: admit this item? (:meth:`BatchController.offer`),
  which items form the next batch? (:meth:`BatchController.next_batch`), and what did the batch cost?
  (:meth:`BatchController.finish`).
* :class:`BatchScheduler` wraps a controller with one worker thread that runs ``run(items)`` serially
  (ONNX Runtime already uses both cores), futures for the callers, and an asyncio wrapper.

The rules:

1. **Fixed shapes.** A batch is padded up to one of ``BatchPolicy.shapes`` (the caller's ``run`` pads),
   so ONNX Runtime's CPU arena only ever sees a few input shapes and stays bounded. Shapes above
   ``max_batch`` or above what ``memory_budget_mb`` holds (``units * unit_bytes``) are never used.
2. **Measured service times.** ``warm_up`` times ``run`` at every shape (median of a few repeats), then
   every batch updates its shape's estimate (EWMA); a misprediction also nudges the other shapes (a
   machine that got busier slows every shape, not only the one run last). A shape above the cap that
   has not run for ``EXPLORE_EVERY`` batches runs once more when the queue fills it and the oldest item's
   deadline allows, its new measurement weighed 0.5: one slow warm-up call had made the search
   scheduler's model say 13.6 ms for 2 stored ranges against 3.7 ms for one, so it never batched them,
   never ran 2 again, and never learned otherwise.
3. **Never wait to fill a batch.** When the worker is free and anything is queued, a batch starts at
   once with what is there. Batches grow by themselves under load: items arriving while the worker
   runs wait for it anyway, and are taken together next time.
4. **Batch cap.** Under load an item waits, at worst, for the batch running when it arrived, then
   runs in the next one; so the largest batch run (:meth:`BatchController.best_shape`) is the shape
   serving the most units per second among those whose ``service * (1 + safety)`` fits the target
   (20 ms + 3 ms per frame and a 200 ms target: 16, not 32, whose 116 ms twice over is 232 ms).
5. **Batch choice.** Up to the cap, take queued items in arrival order as long as they fit, at the
   shape that serves the most real (unpadded) units per second; ties (within 5 %) go to the smaller batch
   (sooner done). With a long queue this is the cap; with 3 items queued and a fixed cost per call it is all 3,
   padded to 4; when batching does not pay (10 ms per frame) it is 1. An item larger than the largest
   shape runs alone (``run`` splits it). A first version shrank the batch whenever the oldest item's
   deadline could not afford the larger one; in simulation that fed on itself (smaller batches, lower
   throughput, older heads, smaller batches: p99 267 ms for a 200 ms target at 225 requests/s), so
   deadlines are kept by the cap and by admission instead.
6. **Admission.** An item is admitted only if its predicted completion is within the target: the
   workers' remaining time, then the units ahead (queued, and admitted but still being decoded:
   :meth:`BatchController.reserve`) in batches of the cap, then its own batch at its real size (the
   units left over ahead of it plus its own, padded), the service scaled by a safety factor (a robust
   p99 of measured / predicted service times). A first version counted the own batch as a full one of
   the cap (later arrivals may fill it) times that factor: on a busy machine it refused 25-30 % of lone
   images at 2 per second with nothing queued. Instead, an item that would join a batch is refused if
   the larger batch would make that batch's oldest item miss its deadline. A file query is admitted
   before it is decoded (its frame count from a probe, its decode time from the measured rate and the
   decode pool's backlog: the decode overlaps the encode backlog, so the later of the two counts), so
   a refusal costs a probe, not a decode. Otherwise ``submit`` (or ``reserve``) raises
   :class:`~vidsearch.errors.OverloadedError` at once, with a Retry-After of the predicted excess. The
   queue never grows past what the target allows, so at twice the sustainable load the admitted
   requests keep their latency and the rest get an immediate 503. A lone item (nothing running, queued
   or being decoded) is always admitted (refusing it could not make it faster).
7. **Warm-up at the shapes that can be used.** Shapes are warmed smallest first and the warm-up stops
   before a shape predicted to take over half the target (it could never be the cap) or to grow the
   process's memory past ``memory_budget_mb`` (bytes per unit measured on the smaller shapes); only the
   warmed shapes run afterwards. ONNX Runtime's CPU arena keeps the buffers of the largest shape it ran
   (warming the SSCD encoder up to 32 held the server at ~520 MB idle against ~190 MB for batch 1).
8. **Workers.** ``workers`` threads each run one batch at a time (the encoder: one ONNX Runtime session
   each, see ``QueryService._encoder_sessions`` for what two single-threaded sessions measured); results
   go back to asyncio callers with one ``call_soon_threadsafe`` per batch.

What we took from the systems the issue names (their docs and their users' issues):

* **Triton's dynamic batcher** (``preferred_batch_size``, ``max_queue_delay_microseconds``, a queue
  policy with ``max_queue_size`` and timeouts that reject): with no delay configured it sends the
  largest batch the queue holds as soon as an instance is free; with preferred sizes it sends the
  largest preferred size it can form. We keep both: a small set of sizes (``shapes``; ONNX Runtime,
  like TensorRT, pays a first-call cost per new input shape: Triton #7776 reports seconds for the first
  request of each new batch size, hence ``warm_up`` at every shape) and rejection at the queue instead
  of an unbounded queue. Not taken: a fixed queue delay. Users report batches that stay at 1 or far
  below the maximum (Triton #3624, #7205, #8094) and latency that rises with the configured delay
  (#4667); a delay is a latency cost paid at low load for a gain that only exists at high load, where
  the queue fills batches by itself.
* **Ray Serve's** ``@serve.batch`` (``max_batch_size``, ``batch_wait_timeout_s``, default 10 ms): a
  batch runs when it is full or when the timeout since its first request expires; since Ray #36510
  even a request arriving at an idle replica waits the timeout. Users report batches that never reach
  ``max_batch_size`` whatever the timeout, because the router caps requests in flight
  (``max_ongoing_requests``; Ray #43288, #43840). Hence rule 3 (a lone request on an idle worker runs
  at once; no item waits for a timer, only for the worker) and a batch size that follows the queue
  rather than a fixed size the traffic must reach. The server's own concurrency limit (threads,
  uvicorn's limits) must stay above the largest shape, or batches cannot fill: the same trap.
* **Clipper's adaptive batching** (the paper: AIMD, grow the batch size additively while the latency
  SLO holds and cut it by 10 % when not; the later code, ucbrise/clipper #451: the earliest deadline
  in the queue gives a latency budget, decayed for slack, that a regression of p99 service time on
  batch size turns into a batch size; queries past their deadline dropped): the batch size comes from
  the latency objective and from measured service times per size, with a p99 margin.
  We measure the six shapes directly (warm-up, then every batch) instead of probing with AIMD, which
  overshoots the SLO to find it, and time ``run`` alone: Clipper #222 found that timing a task
  including its queue wait under-estimated batch sizes as queues filled. We add admission control,
  which Clipper leaves to its frontend, so an item that cannot meet the target is refused at once
  instead of queued and dropped later.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import math
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Generic, TypeVar

from vidsearch.errors import ConfigError, OverloadedError

log = logging.getLogger(__name__)

__all__ = ["Admission", "Batch", "BatchController", "BatchPolicy", "BatchScheduler", "pad_shape"]

T = TypeVar("T")
R = TypeVar("R")
K = TypeVar("K")

_MIB = 1 << 20
# A larger batch must serve this factor more units per second than a smaller one to be chosen: measured
# service times move by several % between runs, and where the curve is flat (the default SSCD encoder on
# a 2-core CPU: 1.03x at batch 32 against batch 1, bench/results/encoder-batch.json) a larger batch only
# adds latency.
TIE = 1.05
# Ratios recorded between two computations of the safety factor (see BatchController.record_ratio).
SAFETY_EVERY = 16
# Batches after which a shape above the cap that was not run since is run once more when the queue can fill
# it (see BatchController.next_batch): a shape measured too slow once (one noisy warm-up) is otherwise never
# run again, and the model keeps it wrong.
EXPLORE_EVERY = 64


def pad_shape(units: int, shapes: tuple[int, ...]) -> int:
    """The smallest shape >= ``units`` (the largest shape when ``units`` exceeds them all).

    Args:
        units: units in a batch (frames, vectors), >= 0.
        shapes: the batch shapes run, increasing.
    """
    for shape in shapes:
        if shape >= units:
            return shape
    return shapes[-1]


@dataclass(frozen=True)
class BatchPolicy:
    """How the scheduler batches.

    Attributes:
        latency_target_ms: the p99 goal, in ms, for queue wait + service of one item (what the server
            adds before and after, such as decoding an upload, is not in it).
        memory_budget_mb: MiB of batch input at most: caps units per batch at
            ``memory_budget_mb * 2**20 // unit_bytes``.
        max_batch: units per batch at most; 1 means no batching (the ``--max-batch 1`` baseline).
        shapes: the only batch sizes run (``run`` pads up to one), increasing.
        unit_bytes: bytes of one unit in the batch input (one frame of the encoder input).
    """

    latency_target_ms: float = 200.0
    memory_budget_mb: float = 256.0
    max_batch: int = 32
    shapes: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
    unit_bytes: int = 224 * 224 * 3 * 4

    def __post_init__(self) -> None:
        def positive_number(name: str, value: Any, example: str) -> None:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 < value < math.inf):
                raise ConfigError(f"{name} must be a positive finite number, got {value!r}; e.g. {example}")

        def positive_int(name: str, value: Any, example: str) -> None:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}; e.g. {example}")

        positive_number("latency_target_ms", self.latency_target_ms, "200")
        positive_number("memory_budget_mb", self.memory_budget_mb, "256")
        positive_int("max_batch", self.max_batch, "32 (1 turns batching off)")
        positive_int("unit_bytes", self.unit_bytes, f"{224 * 224 * 3} for 224x224 uint8 RGB frames")
        try:
            shapes = tuple(self.shapes)
        except TypeError:
            raise ConfigError(f"shapes must be a sequence of batch sizes, got {self.shapes!r}; "
                              f"e.g. (1, 2, 4, 8, 16, 32)") from None
        if (not shapes or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in shapes)
                or any(a >= b for a, b in zip(shapes, shapes[1:]))):
            raise ConfigError(f"shapes must be positive integers in increasing order, got {self.shapes!r}; "
                              f"e.g. (1, 2, 4, 8, 16, 32)")
        object.__setattr__(self, "shapes", shapes)
        if not self.allowed_shapes:
            raise ConfigError(
                f"no batch shape fits: shapes {shapes}, max_batch {self.max_batch}, memory_budget_mb "
                f"{self.memory_budget_mb} (holds {self.memory_units} units of {self.unit_bytes} bytes); "
                f"raise max_batch and memory_budget_mb to at least the smallest shape, {shapes[0]} "
                f"(memory_budget_mb >= {shapes[0] * self.unit_bytes / _MIB:.3g})")

    @property
    def memory_units(self) -> int:
        """Units the memory budget holds."""
        return int(self.memory_budget_mb * _MIB // self.unit_bytes)

    @property
    def allowed_shapes(self) -> tuple[int, ...]:
        """The shapes actually run: those <= ``max_batch`` and <= what the memory budget holds."""
        limit = min(self.max_batch, self.memory_units)
        return tuple(s for s in self.shapes if s <= limit)

    @property
    def target_s(self) -> float:
        return self.latency_target_ms / 1000.0


@dataclass(frozen=True)
class Admission:
    """The controller's answer to :meth:`BatchController.offer`.

    Attributes:
        admitted: whether the item was queued.
        predicted_s: predicted queue wait + service of the item, in seconds.
        retry_after_s: when rejected, seconds after which a retry should fit (0 when admitted).
    """

    admitted: bool
    predicted_s: float
    retry_after_s: float = 0.0


@dataclass(frozen=True)
class Batch(Generic[K]):
    """A batch the controller chose.

    Attributes:
        keys: the queued items' keys, in arrival order.
        arrivals: their arrival times (the ``now`` they were offered at).
        units: real units in the batch (sum over items).
        shape: the shape it runs at (``units`` padded up); for an item larger than the largest shape,
            the largest shape (``oversize`` is then True and ``run`` splits the item).
        started: the ``now`` it was taken at.
        predicted_s: its predicted service time.
    """

    keys: tuple[K, ...]
    arrivals: tuple[float, ...]
    units: int
    shape: int
    started: float
    predicted_s: float
    oversize: bool = False


@dataclass
class _Entry(Generic[K]):
    key: K
    units: int
    arrival: float


class BatchController(Generic[K]):
    """Queue, service-time model, batch choice and admission; pure: every method takes ``now``.

    Not thread-safe: :class:`BatchScheduler` calls it under its lock.

    Args:
        policy: the :class:`BatchPolicy`.
        alpha: EWMA weight of a new measurement of a shape's service time.
        coupling: when a shape's estimate changes by a factor f, the other shapes' estimates change by
            ``f ** coupling`` (a busier machine slows every shape; 0: shapes are independent).
        ratio_window: measured / predicted service ratios kept for the admission safety factor.
        workers: batches run at once (each worker takes the next batch when it is free).
    """

    def __init__(self, policy: BatchPolicy, *, alpha: float = 0.2, coupling: float = 0.5,
                 ratio_window: int = 256, workers: int = 1) -> None:
        if not (0 < alpha <= 1) or not (0 <= coupling <= 1) or ratio_window < 1 or workers < 1:
            raise ConfigError(f"alpha must be in (0, 1], coupling in [0, 1], ratio_window >= 1 and workers >= 1; "
                              f"got {alpha}, {coupling}, {ratio_window}, {workers}")
        self.policy = policy
        self.shapes = policy.allowed_shapes
        self.workers = workers
        self.alpha = alpha
        self.coupling = coupling
        self._service: dict[int, float] = {}  # seconds per shape: measured, then EWMA
        self._measured_at: dict[int, int] = {}  # shape -> batches run when it was last measured
        self.explored = 0  # batches run at a shape above the cap, to measure it again
        self._ratios: deque[float] = deque(maxlen=ratio_window)
        self._safety: float | None = None  # cached until SAFETY_EVERY new ratios
        self._centre = 1.0  # the typical measured / predicted ratio (with _safety)
        self._stale_ratios = 0
        self._best: int | None = None  # cached until the model changes
        self._queue: deque[_Entry[K]] = deque()
        self._queued_units = 0
        self._reserved_units = 0  # admitted items not queued yet (being decoded)
        self.running: list[Batch[K]] = []
        self.batches = 0
        self.batch_units = 0
        self.admitted = 0
        self.rejected = 0

    # -- service-time model -------------------------------------------------------------------------
    def set_service(self, shape: int, seconds: float) -> None:
        """Set a shape's service time (a warm-up measurement), replacing its estimate."""
        self._check_shape(shape)
        if not (0 < seconds < math.inf):
            raise ConfigError(f"service time must be positive and finite, got {seconds!r} s for shape {shape}")
        self._service[shape] = float(seconds)
        self._measured_at[shape] = self.batches
        self._best = None

    def observe(self, shape: int, seconds: float) -> None:
        """Update the model with a measured service time of one batch at ``shape``."""
        self._check_shape(shape)
        if not (0 < seconds < math.inf):
            return  # a clock that did not advance says nothing
        self._best = None
        stale = self.batches - self._measured_at.get(shape, self.batches) >= EXPLORE_EVERY
        self._measured_at[shape] = self.batches
        if shape not in self._service:
            self._service[shape] = float(seconds)
            return
        old = self._service[shape]
        self.record_ratio(seconds / old)
        # a shape not run for EXPLORE_EVERY batches (explored again): its estimate is old, weigh the new one more
        self._service[shape] = old + (max(self.alpha, 0.5) if stale else self.alpha) * (seconds - old)
        if self.coupling:
            # the other shapes move by the same factor, damped: a busier machine slows every shape
            scale = (self._service[shape] / old) ** self.coupling
            for other in self._service:
                if other != shape:
                    self._service[other] *= scale

    def limit_shapes(self, largest: int) -> None:
        """Run no shape above ``largest`` from now on (the warm-up stopped there: a shape ONNX Runtime has
        not seen would grow its arena past the memory budget, or could not meet the target anyway)."""
        kept = tuple(s for s in self.shapes if s <= largest)
        if not kept:
            raise ConfigError(f"no shape <= {largest} among {self.shapes}")
        self.shapes = kept
        self._best = None

    def record_ratio(self, ratio: float) -> None:
        """Record a measured / predicted service ratio (warm-up repeats against their median) for :meth:`safety`.

        The factor is recomputed from the window every :data:`SAFETY_EVERY` ratios (and while fewer than 10
        are known): two medians over 256 logs after every batch cost ~0.1 ms, a third of a stored-range
        query's scheduling.
        """
        if 0 < ratio < math.inf:
            self._ratios.append(ratio)
            self._stale_ratios += 1
            if self._stale_ratios >= SAFETY_EVERY or len(self._ratios) <= 10:
                self._safety = self._best = None

    def predict(self, shape: int) -> float:
        """Predicted service time (s) of a batch at ``shape``; 0 while nothing is measured.

        Unmeasured shapes are interpolated linearly between measured neighbours; beyond them the
        guess is optimistic (no dearer than the largest measured shape; in proportion below the smallest)
        so that, without a warm-up, larger batches get tried and measured.
        """
        if shape in self._service:
            return self._service[shape]
        if not self._service:
            return 0.0
        measured = sorted(self._service)
        lower = [s for s in measured if s < shape]
        upper = [s for s in measured if s > shape]
        if lower and upper:
            a, b = lower[-1], upper[0]
            ta, tb = self._service[a], self._service[b]
            return ta + (tb - ta) * (shape - a) / (b - a)
        # Optimistic outside the measured range (a larger batch costs no more than the largest measured,
        # a smaller one its share), so an unmeasured shape gets tried, and then measured.
        if lower:
            return self._service[lower[-1]]
        return self._service[upper[0]] * shape / upper[0]

    def predict_units(self, units: int) -> float:
        """Predicted service time (s) of ``units`` real units: padded to a shape, or split into
        largest-shape chunks when above the largest shape."""
        if units <= 0:
            return 0.0
        largest = self.shapes[-1]
        full, rest = divmod(units, largest) if units > largest else (0, units)
        return full * self.predict(largest) + (self.predict(pad_shape(rest, self.shapes)) if rest else 0.0)

    def best_shape(self) -> int:
        """The largest batch run: among the shapes whose worst case fits the target, the one serving
        the most units per second (within :data:`TIE` of the best: the smaller).

        The worst case of an item under load is arriving just after a batch started: it waits for that
        batch, then runs in the next, so a shape fits when ``service * (1 + safety) <= target``. When
        none fits, the smallest shape.
        """
        if self._best is None:
            limit = self.policy.target_s / (1.0 + self.safety())
            rates = {s: s / self.predict(s) for s in self.shapes if 0 < self.predict(s) <= limit}
            if not rates:
                self._best = self.shapes[0] if self._service else self.shapes[-1]
            else:
                top = max(rates.values())
                self._best = min(s for s, r in rates.items() if r >= top / TIE)
        return self._best

    def safety(self) -> float:
        """The admission safety factor, in [1, 3]: a robust 99th percentile of measured / predicted service.

        Computed as ``exp(2.33 * sigma)`` with sigma the spread of the log ratios estimated from their
        median absolute deviation (``1.4826 * MAD``), so a burst of large ratios while the model catches
        up with a step change (the machine got busier) does not hold the factor up for long.
        """
        if self._safety is None:
            self._stale_ratios = 0
            if len(self._ratios) < 10:
                self._safety, self._centre = 1.0, 1.0
            else:
                logs = [math.log(r) for r in self._ratios]
                centre = statistics.median(logs)
                sigma = 1.4826 * statistics.median(abs(x - centre) for x in logs)
                self._safety = min(3.0, max(1.0, math.exp(centre + 2.326 * sigma)))
                self._centre = min(self._safety, max(1.0, math.exp(centre)))
        return self._safety

    # -- queue --------------------------------------------------------------------------------------
    @property
    def queue_len(self) -> int:
        return len(self._queue)

    @property
    def queue_units(self) -> int:
        return self._queued_units

    @property
    def reserved_units(self) -> int:
        return self._reserved_units

    @property
    def busy(self) -> Batch[K] | None:
        """The oldest running batch (None when every worker is idle)."""
        return self.running[0] if self.running else None

    def _free_at(self, now: float) -> list[float]:
        """Seconds from ``now`` until each worker is predicted free, soonest first."""
        free = [max(0.0, b.started + b.predicted_s - now) for b in self.running]
        return sorted(free + [0.0] * (self.workers - len(free)))

    def busy_for(self, now: float) -> float:
        """Seconds from ``now`` until every worker is predicted idle: the running batches finish and the units
        queued or reserved drain in batches of :meth:`best_shape` at the typical ratio (0: idle now)."""
        cap = self.best_shape()
        full, rest = divmod(self._queued_units + self._reserved_units, cap)
        services = [self.predict(pad_shape(cap, self.shapes))] * full
        if rest:
            services.append(self.predict(pad_shape(rest, self.shapes)))
        free = self._free_at(now)
        for service in services:  # each batch to the worker free first
            free[0] += self._centre * service
            free.sort()
        return free[-1]

    def predicted_wait(self, now: float, units: int, arrive_after: float = 0.0) -> float:
        """Predicted queue wait + service (s), at worst, of an item of ``units`` offered now (or reaching the
        queue ``arrive_after`` seconds from now, after decoding).

        The workers finish their batches, the units ahead (queued, and admitted but still decoding) drain
        in batches of :meth:`best_shape` (what :meth:`next_batch` takes when the queue is long), then the
        item's own batch runs: the units left over ahead of it plus its own, padded to a shape, or a batch
        of its own when they do not fit the cap. Services are scaled by :meth:`safety`. (A first version
        counted the own batch as a full one, in case later arrivals filled it, times the safety factor: at
        light load on a busy machine that refused 25-30 % of lone images with nothing queued. A later
        arrival that would delay the items of a batch past their deadline is refused instead, see
        :meth:`offer`.)
        """
        return self._plan(now, units, arrive_after)[0]

    def _plan(self, now: float, units: int, arrive_after: float) -> tuple[float, int]:
        """(predicted completion of the item, s from now; units queued ahead of it in its own batch)."""
        cap = self.best_shape()
        safety = self.safety()
        ahead = self._queued_units + self._reserved_units
        full, rest = divmod(ahead, cap)
        batches = [cap] * full
        joined = 0
        if units > cap:  # runs alone, after everything ahead
            if rest:
                batches.append(rest)
            own = self.predict_units(units)
        elif rest and rest + units <= cap:
            joined = rest
            own = self.predict(pad_shape(rest + units, self.shapes))
        else:
            if rest:
                batches.append(rest)
            own = self.predict(pad_shape(units, self.shapes))
        # The batches ahead at the typical ratio (``centre``), the item's own at the p99 one (``safety``), and a
        # margin for the spread of the batches ahead: (safety - centre) per batch over the square root of the
        # sum of squares, as the variations of independent batches partly cancel. (The p99 factor on every
        # batch of a queue, the first version, made a queue of 10 batches with a p99 ratio of 2.5 about
        # twice as long as it was: admission refused 3-5 % of stored-range queries at half the rate the
        # server could serve.) Nothing ahead: ``own * safety``, as before.
        centre = self._centre
        services = [self.predict(pad_shape(b, self.shapes)) for b in batches]
        free = self._free_at(now)
        if self.workers == 1:
            start = free[0] + centre * sum(services)
        else:  # each batch ahead goes to the worker free first; the item starts on the soonest free
            import heapq

            heapq.heapify(free)
            for service in services:
                heapq.heappush(free, heapq.heappop(free) + centre * service)
            start = free[0]
        margin = 0.0
        if services and safety > centre:
            spread = math.sqrt(sum(x * x for x in services) + own * own) - own
            margin = (safety - centre) * spread / self.workers
        return max(start, arrive_after) + own * safety + margin, joined

    def _deadline_of_joined(self, joined: int) -> float:
        """Arrival of the oldest queued item among the last ``joined`` queued units (the batch an item joins)."""
        arrival, count = math.inf, 0
        for entry in reversed(self._queue):
            if count >= joined:
                break
            arrival = entry.arrival
            count += entry.units
        return arrival

    def offer(self, now: float, key: K, units: int = 1, *, reserved: int = 0, extra_s: float = 0.0) -> Admission:
        """Admit (queue) the item ``key`` of ``units`` units if it is predicted to finish within the
        target; otherwise leave the queue as it is and say when to retry.

        With ``reserved`` (units) the item was admitted earlier by :meth:`reserve` (before it was decoded,
        when its frame count was an estimate): it is queued without a second check, in place of its
        reservation. ``extra_s``: what the request still costs outside the scheduler (counted against the target).
        """
        if isinstance(units, bool) or not isinstance(units, int) or units < 1:
            raise ConfigError(f"an item must have a positive integer number of units, got {units!r}")
        if reserved:
            self._reserved_units = max(0, self._reserved_units - reserved)
            self._enqueue(now, key, units)
            return Admission(True, 0.0)
        decision = self.check(now, units, extra_s=extra_s)
        if decision.admitted:
            self._enqueue(now, key, units)
            self.admitted += 1
        return decision

    def reserve(self, now: float, units: int, arrive_after: float = 0.0, extra_s: float = 0.0) -> Admission:
        """Admit an item before it exists (``units`` frames still to be decoded, in ``arrive_after`` s),
        counting ``extra_s`` more seconds after its batch (the search); on success the units count as
        queued ahead of later items until :meth:`offer` (``reserved=units``) or :meth:`release`."""
        if isinstance(units, bool) or not isinstance(units, int) or units < 1:
            raise ConfigError(f"an item must have a positive integer number of units, got {units!r}")
        decision = self.check(now, units, arrive_after, extra_s)
        if decision.admitted:
            self._reserved_units += units
            self.admitted += 1
        return decision

    def release(self, units: int) -> None:
        """Give back a reservation whose item never came (its decode failed)."""
        self._reserved_units = max(0, self._reserved_units - units)

    def check(self, now: float, units: int, arrive_after: float = 0.0, extra_s: float = 0.0) -> Admission:
        """Whether an item of ``units`` would be admitted now (counts a refusal; queues nothing).

        Refused when its predicted completion is past the target, or when the batch it would join would
        make the oldest item in it finish past that item's deadline. A lone item (nothing running, queued
        or reserved) is always admitted: refusing it could not make it faster.
        """
        predicted, joined = self._plan(now, units, arrive_after)
        predicted += extra_s
        target = self.policy.target_s
        late = predicted - target
        if joined:
            late = max(late, now + predicted - (self._deadline_of_joined(joined) + target))
        if late > 0 and (self._queue or self.running or self._reserved_units):
            self.rejected += 1
            return Admission(False, predicted, retry_after_s=max(0.001, late))
        return Admission(True, predicted)

    def _enqueue(self, now: float, key: K, units: int) -> None:
        self._queue.append(_Entry(key, units, now))
        self._queued_units += units

    def drop(self, keys: Sequence[K] | None = None) -> list[K]:
        """Remove queued items (``keys``, or all when None: the scheduler closing); returns the keys removed."""
        wanted = None if keys is None else set(map(id, keys))
        kept: deque[_Entry[K]] = deque()
        removed: list[K] = []
        for entry in self._queue:
            if wanted is None or id(entry.key) in wanted:
                removed.append(entry.key)
                self._queued_units -= entry.units
            else:
                kept.append(entry)
        self._queue = kept
        return removed

    def next_batch(self, now: float) -> Batch[K] | None:
        """The batch to run now, taken off the queue (None when the queue is empty or every worker busy).

        Marks a worker busy until :meth:`finish`.
        """
        if len(self.running) >= self.workers or not self._queue:
            return None
        head = self._queue[0]
        if head.units > self.shapes[-1]:  # an oversize item runs alone
            count, units, shape, oversize = 1, head.units, self.shapes[-1], True
            predicted = self.predict_units(units)
        else:
            cap = max(self.best_shape(), pad_shape(head.units, self.shapes))
            explore = self._stale_shape_above(cap, now - head.arrival)
            options: dict[int, tuple[int, int, float]] = {}  # shape run -> (items, units, predicted s)
            for limit in self.shapes:
                if head.units <= limit <= (explore or cap):
                    count, units = self._take(limit)
                    shape = pad_shape(units, self.shapes)
                    options[shape] = (count, units, self.predict(shape))

            def rate(option: tuple[int, int, float]) -> float:
                return option[1] / option[2] if option[2] > 0 else float(option[1])

            if explore is not None and explore in options:  # the queue fills it: measure it again
                shape = explore
                self.explored += 1
            else:
                options = {s: o for s, o in options.items() if s <= cap}
                top = max(rate(o) for o in options.values())
                shape = min(s for s, o in options.items() if rate(o) >= top / TIE)
            count, units, predicted = options[shape]
            oversize = False
        taken = [self._queue.popleft() for _ in range(count)]
        self._queued_units -= units
        batch = Batch(tuple(e.key for e in taken), tuple(e.arrival for e in taken), units, shape, now,
                      predicted, oversize)
        self.running.append(batch)
        return batch

    def _stale_shape_above(self, cap: int, waited: float) -> int | None:
        """The shape just above ``cap`` when it was not measured for :data:`EXPLORE_EVERY` batches and its
        predicted service fits the target as the cap's must, also after the ``waited`` seconds of the
        oldest queued item (else None: never at the cost of a deadline). Run once when the queue fills it,
        its measurement corrects a model that a noisy warm-up made too pessimistic; if it was right, the
        cap stays where it was, at the cost of one batch in EXPLORE_EVERY."""
        above = [s for s in self.shapes if s > cap]
        if not above or self.batches - self._measured_at.get(above[0], -EXPLORE_EVERY) < EXPLORE_EVERY:
            return None
        if waited + self.predict(above[0]) * (1.0 + self.safety()) > self.policy.target_s:
            return None
        return above[0]

    def _take(self, shape: int) -> tuple[int, int]:
        """How many queued items, in arrival order, fit ``shape`` units; and their units."""
        count = units = 0
        for entry in self._queue:
            if units + entry.units > shape:
                break
            count += 1
            units += entry.units
        return count, units

    def finish(self, batch: Batch[K], service_s: float | None) -> None:
        """The worker finished ``batch`` after ``service_s`` seconds (None: do not learn from it)."""
        self.running = [b for b in self.running if b is not batch]
        self.batches += 1
        self.batch_units += batch.units
        if service_s is not None and not batch.oversize:
            self.observe(batch.shape, service_s)

    def _check_shape(self, shape: int) -> None:
        if shape not in self.policy.shapes:
            raise ConfigError(f"shape {shape} is not one of the policy's shapes {self.policy.shapes}")

    def stats(self) -> dict[str, Any]:
        """Queue, model and counters, for ``/metrics`` and logs."""
        return {
            "queue_items": len(self._queue),
            "queue_units": self._queued_units,
            "busy": bool(self.running),
            "running_batches": len(self.running),
            "workers": self.workers,
            "reserved_units": self._reserved_units,
            "service_ms": {s: round(self.predict(s) * 1000, 3) for s in self.shapes},
            "measured_shapes": sorted(s for s in self._service if s in self.shapes),
            "best_shape": self.best_shape(),
            "safety": round(self.safety(), 3),
            "batches": self.batches,
            "mean_units": self.batch_units / self.batches if self.batches else 0.0,
            "admitted": self.admitted,
            "rejected": self.rejected,
            "explored": self.explored,
        }


class _Item(Generic[T, R]):
    """A submitted item and where its result goes: a ``concurrent.futures.Future`` (threads) or an asyncio
    future of ``loop`` (handlers; resolved on the loop, once per batch for all its items)."""

    __slots__ = ("item", "units", "future", "loop")

    def __init__(self, item: T, units: int, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.item = item
        self.units = units
        self.loop = loop
        self.future: concurrent.futures.Future[R] | asyncio.Future[R] = (
            concurrent.futures.Future() if loop is None else loop.create_future())

    def start(self) -> bool:
        """False when the caller gave up (cancelled) before its batch ran."""
        if isinstance(self.future, concurrent.futures.Future):
            return self.future.set_running_or_notify_cancel()
        return not self.future.cancelled()


def _settle(outcomes: list[tuple[asyncio.Future[Any], BaseException | None, Any]]) -> None:
    """Resolve asyncio futures on their loop (callers that were cancelled meanwhile are skipped)."""
    for future, error, result in outcomes:
        if not future.done():
            if error is None:
                future.set_result(result)
            else:
                future.set_exception(error)


class BatchScheduler(Generic[T, R]):
    """Batches items submitted from many threads (or asyncio handlers) into calls of ``run`` on worker threads.

    Args:
        name: for logs, errors and metrics (``"encode"``, ``"search"``).
        run: takes a list of items whose units sum to at most the chosen shape (or one item larger
            than the largest shape) and returns one result per item, in order. Padding the batch up
            to ``pad_shape(units, scheduler.shapes)`` is its job. With several workers it is called
            from several threads at once.
        policy: the :class:`BatchPolicy`.
        units: units of one item (frames it holds); 1 by default.
        clock: seconds, monotonic.
        on_batch: called after each batch with (units in it, service seconds), for metrics.
        on_wait: called with each item's queue wait in seconds, for metrics.
        workers: worker threads, each running one batch at a time.
        controller_options: passed to :class:`BatchController` (``alpha``, ``coupling``, ...).
    """

    def __init__(self, name: str, run: Callable[[list[T]], list[R]], policy: BatchPolicy, *,
                 units: Callable[[T], int] = lambda item: 1, clock: Callable[[], float] = time.monotonic,
                 on_batch: Callable[[int, float], None] | None = None,
                 on_wait: Callable[[float], None] | None = None, workers: int = 1,
                 controller_options: dict[str, Any] | None = None) -> None:
        self.name = name
        self.policy = policy
        self._run = run
        self._units = units
        self._clock = clock
        self._on_batch = on_batch
        self._on_wait = on_wait
        self.workers = workers
        self.controller: BatchController[_Item[T, R]] = BatchController(
            policy, workers=workers, **(controller_options or {}))
        self._cond = threading.Condition()
        self._slots = threading.BoundedSemaphore(workers)  # warm-up takes them all: never beside a worker
        self._threads: list[threading.Thread] = []
        self._closed = False
        self.failed_batches = 0
        self.failed_items = 0
        self.warmed_shapes: tuple[int, ...] = ()
        self.warm_up_memory: dict[int, float] = {}  # shape -> MiB grown since before the warm-up

    @property
    def shapes(self) -> tuple[int, ...]:
        """The shapes batches run at (the policy's, within ``max_batch``, the memory budget and the warm-up)."""
        return self.controller.shapes

    def start(self) -> None:
        """Start the worker threads (once)."""
        with self._cond:
            if self._closed:
                raise OverloadedError(f"scheduler {self.name!r} is closed; create a new one", retry_after=1.0)
            if not self._threads:
                for i in range(self.workers):
                    thread = threading.Thread(target=self._work, name=f"vidsearch-batch-{self.name}-{i}", daemon=True)
                    thread.start()
                    self._threads.append(thread)

    def close(self, timeout: float | None = 10.0) -> None:
        """Stop the workers after their current batches; queued items fail with OverloadedError."""
        with self._cond:
            self._closed = True
            pending = self.controller.drop()
            self._cond.notify_all()
        error = OverloadedError(f"scheduler {self.name!r} is shutting down; retry on the restarted server",
                                retry_after=1.0)
        self._resolve([(entry, error, None) for entry in pending])
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout)

    def __enter__(self) -> BatchScheduler[T, R]:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _admit(self, item: T, loop: asyncio.AbstractEventLoop | None, reserved: int,
               extra_s: float = 0.0) -> _Item[T, R]:
        units = self._units(item)
        entry: _Item[T, R] = _Item(item, units, loop)
        with self._cond:
            if self._closed:
                if reserved:
                    self.controller.release(reserved)
                raise OverloadedError(f"scheduler {self.name!r} is closed; retry on the restarted server",
                                      retry_after=1.0)
            decision = self.controller.offer(self._clock(), entry, units, reserved=reserved, extra_s=extra_s)
            if not decision.admitted:
                raise self._refusal(decision)
            self._cond.notify()
        return entry

    def _refusal(self, decision: Admission) -> OverloadedError:
        return OverloadedError(
            f"{self.name}: predicted {decision.predicted_s * 1000:.0f} ms for this request, over the "
            f"{self.policy.latency_target_ms:g} ms target ({self.controller.queue_units} units queued, "
            f"{self.controller.reserved_units} being decoded); retry after {decision.retry_after_s:.2f} s",
            retry_after=decision.retry_after_s)

    def submit(self, item: T, *, reserved: int = 0, extra_s: float = 0.0) -> concurrent.futures.Future[R]:
        """Queue ``item``; the future resolves with ``run``'s result for it (or the exception ``run``
        raised for it alone).

        Args:
            reserved: the units :meth:`reserve` admitted it with (it is queued without a second check).
            extra_s: seconds the request still costs outside the scheduler (the event loop's delays before
                and after), counted against the target.

        Raises:
            OverloadedError: at once, when the item is predicted to miss the latency target (or the
                scheduler is closed); ``retry_after`` says when to try again.
        """
        future = self._admit(item, None, reserved, extra_s).future
        assert isinstance(future, concurrent.futures.Future)
        return future

    async def asubmit(self, item: T, *, reserved: int = 0, extra_s: float = 0.0) -> R:
        """``submit`` for asyncio handlers: awaits the result on the running loop (one asyncio future per item,
        resolved by one callback per batch; cancelling the await skips a queued item)."""
        future = self._admit(item, asyncio.get_running_loop(), reserved, extra_s).future
        assert isinstance(future, asyncio.Future)
        return await future

    def reserve(self, units: int, arrive_after: float = 0.0, extra_s: float = 0.0) -> float:
        """Admit, before it is decoded, an item of about ``units`` that will be submitted (``reserved=units``) in
        about ``arrive_after`` seconds; ``extra_s`` is what the request still costs after its batch. Returns
        the predicted seconds until its batch is done (+ ``extra_s``).

        Raises:
            OverloadedError: at once, when it is predicted to miss the latency target.
        """
        with self._cond:
            if self._closed:
                raise OverloadedError(f"scheduler {self.name!r} is closed; retry on the restarted server",
                                      retry_after=1.0)
            decision = self.controller.reserve(self._clock(), units, arrive_after, extra_s)
            if not decision.admitted:
                raise self._refusal(decision)
            return decision.predicted_s

    def check(self, units: int, arrive_after: float = 0.0, extra_s: float = 0.0) -> float:
        """:meth:`reserve` without the reservation: raises OverloadedError when an item of ``units`` would be
        refused now; returns its predicted seconds."""
        with self._cond:
            decision = self.controller.check(self._clock(), units, arrive_after, extra_s)
            if not decision.admitted:
                raise self._refusal(decision)
            return decision.predicted_s

    def busy_for(self) -> float:
        """Seconds until the workers are predicted idle (:meth:`BatchController.busy_for`)."""
        with self._cond:
            return self.controller.busy_for(self._clock())

    def release(self, units: int) -> None:
        """Give back a reservation whose item will not come (its decode failed)."""
        with self._cond:
            self.controller.release(units)

    def warm_up(self, make_item: Callable[[int], T], repeats: int = 3, *,
                memory_probe: Callable[[], int] | None = None, memory_budget_mb: float | None = None) -> None:
        """Time ``run`` at each shape, smallest first (one untimed call, then the median of ``repeats``),
        set the model, and from then on run only the shapes warmed.

        The warm-up stops before a shape that cannot serve within the target (its service, extrapolated
        from the two largest measured shapes, over half the target: the batch cap needs ``service * (1 +
        safety)`` within it, see :meth:`BatchController.best_shape`), and, with ``memory_probe`` (bytes the
        process holds, e.g. its RSS), before a shape whose predicted growth (bytes per unit measured on the
        shapes before it) would take the growth since the warm-up began past ``memory_budget_mb``: ONNX
        Runtime's CPU arena keeps the largest buffers a shape needed, so the shapes run bound its memory.

        Args:
            make_item: ``make_item(n)`` returns an item of at most ``n`` units (one unit is fine: it is
                called until the units reach the shape).
            repeats: timed calls per shape.
            memory_probe: returns the process's memory in bytes (None: memory is not measured).
            memory_budget_mb: growth allowed over the warm-up, MiB (None: the policy's ``memory_budget_mb``).
        """
        budget = (memory_budget_mb if memory_budget_mb is not None else self.policy.memory_budget_mb) * _MIB
        base = memory_probe() if memory_probe is not None else 0
        target = self.policy.target_s
        measured: list[tuple[int, float]] = []
        grown: list[tuple[int, int]] = []
        warmed: list[int] = []
        for shape in self.shapes:
            if len(measured) >= 2:  # extrapolate a + b * shape from the two largest measured shapes
                (s1, t1), (s2, t2) = measured[-2], measured[-1]
                slope = max(0.0, (t2 - t1) / (s2 - s1))
                if t2 + slope * (shape - s2) > target / 2:
                    log.info("%s: warm-up stops before shape %d (predicted over half the %g ms target)",
                             self.name, shape, self.policy.latency_target_ms)
                    break
            if memory_probe is not None and grown:
                last_shape, last_grown = grown[-1]
                per_unit = max(g / s for s, g in grown)
                if last_grown + per_unit * (shape - last_shape) > budget:
                    log.info("%s: warm-up stops before shape %d (predicted memory over the %g MiB budget)",
                             self.name, shape, budget / _MIB)
                    break
            items: list[T] = []
            total = 0
            while total < shape:
                item = make_item(shape - total)
                items.append(item)
                total += max(1, self._units(item))
            times = []
            for _ in range(self.workers):
                self._slots.acquire()
            try:
                for i in range(repeats + 1):
                    t0 = self._clock()
                    out = self._run(items)
                    elapsed = self._clock() - t0
                    if len(out) != len(items):
                        raise ConfigError(f"{self.name}: run returned {len(out)} results for {len(items)} items; "
                                          f"it must return one result per item")
                    if i:
                        times.append(elapsed)
            finally:
                for _ in range(self.workers):
                    self._slots.release()
            median = statistics.median(times) if times else 0.0
            with self._cond:
                if median > 0:
                    self.controller.set_service(shape, median)
                for t in times:
                    if median > 0 and t > 0:
                        self.controller.record_ratio(t / median)
            measured.append((shape, median))
            warmed.append(shape)
            if memory_probe is not None:
                grown.append((shape, max(0, memory_probe() - base)))
                self.warm_up_memory[shape] = round(grown[-1][1] / _MIB, 1)
        if warmed:
            with self._cond:
                self.controller.limit_shapes(warmed[-1])
        self.warmed_shapes = tuple(warmed)
        log.info("%s: warm-up service ms per shape %s, memory grown MiB %s", self.name,
                 self.controller.stats()["service_ms"], self.warm_up_memory)

    def stats(self) -> dict[str, Any]:
        """Queue length, service-time model per shape (ms), batches run, mean units, admitted, rejected."""
        with self._cond:
            out = self.controller.stats()
        out.update(name=self.name, shapes=list(self.shapes), policy=asdict(self.policy),
                   failed_batches=self.failed_batches, failed_items=self.failed_items,
                   warmed_shapes=list(self.warmed_shapes), warm_up_memory_mb=dict(self.warm_up_memory),
                   running=not self._closed and any(t.is_alive() for t in self._threads))
        return out

    # -- workers ------------------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            with self._cond:
                batch = self.controller.next_batch(self._clock())
                while batch is None and not self._closed:
                    self._cond.wait()
                    batch = self.controller.next_batch(self._clock())
                if batch is None:
                    return
                if self.controller.queue_len:  # another idle worker can take the rest
                    self._cond.notify()
            try:
                self._run_batch(batch)
            except BaseException:  # never leave a worker marked busy
                log.exception("%s: batch failed unexpectedly", self.name)
                with self._cond:
                    self.controller.finish(batch, None)
                    self._cond.notify()
                error = OverloadedError(f"{self.name}: internal error", retry_after=1.0)
                self._resolve([(entry, error, None) for entry in batch.keys if not entry.future.done()])

    def _resolve(self, outcomes: list[tuple[_Item[T, R], BaseException | None, Any]]) -> None:
        """Hand results and errors to their callers: thread futures at once, asyncio futures with one
        ``call_soon_threadsafe`` per loop (one wake-up of the loop per batch, not per item)."""
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], BaseException | None, Any]]] = {}
        for entry, error, result in outcomes:
            future = entry.future
            if isinstance(future, concurrent.futures.Future):
                if future.done():
                    continue
                if error is None:
                    future.set_result(result)
                else:
                    future.set_exception(error)
            else:
                assert entry.loop is not None
                by_loop.setdefault(entry.loop, []).append((future, error, result))
        for loop, settled in by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle, settled)
            except RuntimeError:  # the loop is closed: nobody waits for these any more
                pass

    def _run_batch(self, batch: Batch[_Item[T, R]]) -> None:
        live = [e for e in batch.keys if e.start()]
        if self._on_wait is not None:
            for arrival in batch.arrivals:
                self._on_wait(max(0.0, batch.started - arrival))
        if not live:
            with self._cond:
                self.controller.finish(batch, None)
                self._cond.notify()
            return
        learn = len(live) == len(batch.keys)  # a batch with cancelled items ran smaller: do not learn
        with self._slots:
            t0 = self._clock()
            error: Exception | None = None
            try:
                results = self._run([e.item for e in live])
                if results is None or len(results) != len(live):
                    raise RuntimeError(f"{self.name}: run returned "
                                       f"{'None' if results is None else len(results)} results for "
                                       f"{len(live)} items; it must return one result per item")
            except Exception as exc:
                error = exc
            service = self._clock() - t0
        if self._on_batch is not None:
            self._on_batch(sum(e.units for e in live), service)
        if error is None:
            with self._cond:
                self.controller.finish(batch, service if learn else None)
                self._cond.notify()
            self._resolve([(entry, None, result) for entry, result in zip(live, results)])
            return
        self.failed_batches += 1
        if len(live) == 1:
            outcomes: list[tuple[_Item[T, R], BaseException | None, Any]] = [(live[0], error, None)]
        else:  # one bad item must not fail the others: retry each alone
            outcomes = [self._run_alone(entry) for entry in live]
        with self._cond:
            self.controller.finish(batch, None)
            self._cond.notify()
        self.failed_items += sum(1 for _, failure, _ in outcomes if failure is not None)
        self._resolve(outcomes)

    def _run_alone(self, entry: _Item[T, R]) -> tuple[_Item[T, R], BaseException | None, Any]:
        try:
            with self._slots:
                out = self._run([entry.item])
            if out is None or len(out) != 1:
                raise RuntimeError(f"{self.name}: run returned {'None' if out is None else len(out)} results "
                                   f"for 1 item; it must return one result per item")
            return entry, None, out[0]
        except Exception as exc:
            return entry, exc, None
