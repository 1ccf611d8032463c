"""The dynamic batch scheduler: the controller on a virtual clock (an event-driven simulation of a fake
encoder of known cost), then the threaded scheduler with a sleeping fake ``run`` and with the real
ONNX encoder."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pytest

from vidsearch.errors import ConfigError, OverloadedError, VidsearchError
from vidsearch.serve.scheduler import Batch, BatchController, BatchPolicy, BatchScheduler, pad_shape

SHAPES = (1, 2, 4, 8, 16, 32)


def affine_cost(shape: int) -> float:
    """A fake encoder whose batches amortise a fixed cost: 20 ms + 3 ms per padded unit."""
    return 0.020 + 0.003 * shape


def linear_cost(shape: int) -> float:
    """A fake encoder that batching cannot help: 10 ms per padded unit."""
    return 0.010 * shape


# -- a deterministic event-driven simulation of the controller -------------------------------------------

@dataclass
class SimResult:
    offered: int
    duration_s: float
    admitted: int = 0
    rejected: int = 0
    latencies: list[float] = field(default_factory=list)
    waits_before_start: list[float] = field(default_factory=list)
    batches: list[Batch[int]] = field(default_factory=list)
    reject_answer_s: list[float] = field(default_factory=list)
    stranded: int = 0

    @property
    def p99(self) -> float:
        return float(np.percentile(self.latencies, 99)) if self.latencies else 0.0

    @property
    def goodput(self) -> float:
        """Completed requests per second of offered traffic."""
        return len(self.latencies) / self.duration_s

    @property
    def reject_fraction(self) -> float:
        return self.rejected / self.offered


def poisson_arrivals(rate: float, count: int, seed: int = 0) -> list[float]:
    rng = np.random.default_rng(seed)
    return list(np.cumsum(rng.exponential(1.0 / rate, count)))


def simulate(policy: BatchPolicy, cost: Callable[[int], float], arrivals: list[float], *,
             warm: bool = True, noise: float = 0.0, seed: int = 1,
             slowdown_at: float = math.inf, slowdown: float = 1.0) -> SimResult:
    """Run the controller against ``arrivals`` (times in s, one unit each) and a worker whose batch at
    shape s takes ``cost(s)`` (times a log-normal factor of sigma ``noise``, times ``slowdown`` from
    ``slowdown_at`` on). Events: arrivals and batch completions, in time order (completion first on a tie)."""
    rng = np.random.default_rng(seed)
    controller: BatchController[int] = BatchController(policy)
    if warm:
        for shape in controller.shapes:
            controller.set_service(shape, cost(shape))
    result = SimResult(offered=len(arrivals), duration_s=arrivals[-1] - arrivals[0] if len(arrivals) > 1 else 1.0)
    arrival_of: dict[int, float] = {}
    running: Batch[int] | None = None
    busy_until = math.inf
    i = 0
    while i < len(arrivals) or controller.queue_len or running is not None:
        next_arrival = arrivals[i] if i < len(arrivals) else math.inf
        if running is not None and busy_until <= next_arrival:
            now = busy_until
            controller.finish(running, busy_until - running.started)
            result.latencies += [now - arrival_of[k] for k in running.keys]
            running, busy_until = None, math.inf
        else:
            now = next_arrival
            decision = controller.offer(now, i, 1)
            if decision.admitted:
                result.admitted += 1
                arrival_of[i] = now
            else:
                result.rejected += 1
                assert decision.retry_after_s > 0
            i += 1
        if running is None:
            batch = controller.next_batch(now)
            if batch is not None:
                service = cost(batch.shape)
                if noise:
                    service *= float(rng.lognormal(0.0, noise))
                if now >= slowdown_at:
                    service *= slowdown
                running, busy_until = batch, now + service
                result.batches.append(batch)
                result.waits_before_start += [now - arrival_of[k] for k in batch.keys]
        if running is None and controller.queue_len:  # the worker is free, yet items wait: stranded
            result.stranded += controller.queue_len
            break
    return result


def sweep(policy: BatchPolicy, cost: Callable[[int], float], rates: list[float], count: int = 2000,
          **kw: object) -> dict[float, SimResult]:
    return {rate: simulate(policy, cost, poisson_arrivals(rate, count), **kw) for rate in rates}  # type: ignore[arg-type]


def throughput_at_target(results: dict[float, SimResult], target_s: float) -> float:
    """Best completed requests/s among offered loads whose admitted p99 stays within the target."""
    return max((r.goodput for r in results.values() if r.p99 <= target_s), default=0.0)


def sustainable_rate(results: dict[float, SimResult], target_s: float) -> float:
    """Largest offered load served with under 1 % rejected and p99 within the target."""
    return max((rate for rate, r in results.items() if r.reject_fraction < 0.01 and r.p99 <= target_s), default=0.0)


RATES = [10, 20, 30, 40, 45, 50, 60, 80, 100, 125, 150, 175, 200, 225, 250, 275, 300, 350, 400]


@pytest.fixture(scope="module")
def affine_sweeps() -> dict[str, dict[float, SimResult]]:
    batched = BatchPolicy(latency_target_ms=200)
    single = BatchPolicy(latency_target_ms=200, max_batch=1)
    return {"batched": sweep(batched, affine_cost, RATES), "single": sweep(single, affine_cost, RATES)}


# -- the policy and pad_shape ---------------------------------------------------------------------------

def test_pad_shape() -> None:
    assert [pad_shape(u, SHAPES) for u in (0, 1, 2, 3, 5, 8, 9, 31, 32, 33, 100)] == [1, 1, 2, 4, 8, 8, 16, 32, 32, 32, 32]
    assert pad_shape(3, (4, 8)) == 4


@pytest.mark.parametrize("kwargs, words", [
    ({"latency_target_ms": 0}, "latency_target_ms"),
    ({"latency_target_ms": float("nan")}, "latency_target_ms"),
    ({"max_batch": 0}, "max_batch"),
    ({"max_batch": 2.5}, "max_batch"),
    ({"shapes": ()}, "shapes"),
    ({"shapes": (4, 2)}, "increasing"),
    ({"shapes": (1, 1, 2)}, "increasing"),
    ({"unit_bytes": 0}, "unit_bytes"),
    ({"memory_budget_mb": -1}, "memory_budget_mb"),
    ({"memory_budget_mb": 0.1}, "no batch shape fits"),  # 0.1 MiB holds no 602112-byte unit
    ({"max_batch": 1, "shapes": (2, 4)}, "no batch shape fits"),
])
def test_policy_rejects_bad_values(kwargs: dict[str, object], words: str) -> None:
    with pytest.raises(ConfigError, match=words) as info:
        BatchPolicy(**kwargs)  # type: ignore[arg-type]
    assert isinstance(info.value, ValueError) and isinstance(info.value, VidsearchError)


def test_policy_allowed_shapes_follow_max_batch_and_memory() -> None:
    assert BatchPolicy().allowed_shapes == SHAPES
    assert BatchPolicy(max_batch=1).allowed_shapes == (1,)
    assert BatchPolicy(max_batch=12).allowed_shapes == (1, 2, 4, 8)
    unit = 288 * 288 * 3
    policy = BatchPolicy(unit_bytes=unit, memory_budget_mb=5 * unit / 2**20)
    assert policy.memory_units == 5 and policy.allowed_shapes == (1, 2, 4)
    assert BatchPolicy(shapes=[1, 4]).shapes == (1, 4)  # type: ignore[arg-type]


# -- the controller on a virtual clock ------------------------------------------------------------------

def warmed(policy: BatchPolicy, cost: Callable[[int], float] = affine_cost) -> BatchController[int]:
    controller: BatchController[int] = BatchController(policy)
    for shape in controller.shapes:
        controller.set_service(shape, cost(shape))
    return controller


def test_lone_request_on_idle_worker_runs_at_once() -> None:
    controller = warmed(BatchPolicy())
    assert controller.offer(5.0, 0).admitted
    batch = controller.next_batch(5.0)
    assert batch is not None and batch.keys == (0,) and batch.started == 5.0 and batch.shape == 1
    assert batch.predicted_s == pytest.approx(affine_cost(1))
    # a lone request is admitted even when it alone is over the target: refusing could not help it
    slow = warmed(BatchPolicy(latency_target_ms=5))
    assert slow.offer(0.0, 0).admitted and slow.next_batch(0.0) is not None


def test_items_arriving_while_busy_run_together_padded() -> None:
    controller = warmed(BatchPolicy())
    controller.offer(0.0, 0)
    first = controller.next_batch(0.0)
    assert first is not None
    for k in (1, 2, 3):
        assert controller.offer(0.001 * k, k).admitted
    assert controller.next_batch(0.010) is None  # the worker is busy
    controller.finish(first, affine_cost(1))
    batch = controller.next_batch(affine_cost(1))
    assert batch is not None and batch.keys == (1, 2, 3) and batch.units == 3 and batch.shape == 4


def test_busy_for_counts_the_running_batch_and_what_waits_behind_it() -> None:
    controller = warmed(BatchPolicy())
    assert controller.busy_for(0.0) == 0.0  # idle
    controller.offer(0.0, 0)
    first = controller.next_batch(0.0)
    assert first is not None
    assert controller.busy_for(0.004) == pytest.approx(affine_cost(1) - 0.004)  # the rest of the running batch
    for k in (1, 2, 3):
        controller.offer(0.005, k)
    # then the 3 queued units in one batch padded to 4, at the typical ratio (1.0 for a fresh controller)
    assert controller.busy_for(0.005) == pytest.approx(affine_cost(1) - 0.005 + affine_cost(4))
    assert controller.best_shape() == 16
    controller.reserve(0.005, 2)  # admitted, still decoding: counted too (5 units: one batch, padded to 8)
    assert controller.busy_for(0.005) == pytest.approx(affine_cost(1) - 0.005 + affine_cost(8))
    controller.reserve(0.005, 14)  # 19 units: a batch of 16, then one of 3 padded to 4
    assert controller.busy_for(0.005) == pytest.approx(affine_cost(1) - 0.005 + affine_cost(16) + affine_cost(4))


def test_shared_cores_delay_is_processor_sharing() -> None:
    from vidsearch.serve.query import shared_cores_delay

    assert shared_cores_delay(0.04, 0.0) == 0.0  # nothing else running: no delay
    assert shared_cores_delay(0.04, 0.02) == pytest.approx(0.01)  # half speed for the 20 ms they overlap
    assert shared_cores_delay(0.04, 1.0) == pytest.approx(0.04)  # half speed throughout: twice as long
    assert shared_cores_delay(0.04, -1.0) == 0.0


def test_batching_that_cannot_help_runs_one_by_one() -> None:
    controller = warmed(BatchPolicy(), linear_cost)
    assert controller.best_shape() == 1
    controller.offer(0.0, 0)
    first = controller.next_batch(0.0)
    assert first is not None
    for k in (1, 2, 3):
        controller.offer(0.001, k)
    controller.finish(first, linear_cost(1))
    batch = controller.next_batch(0.01)
    # 3 units would run padded to 4 (40 ms for 3 units): one at a time serves as many per second, sooner
    assert batch is not None and batch.shape == 1 and batch.keys == (1,)


def test_model_learns_from_batches() -> None:
    controller = warmed(BatchPolicy())
    before = {s: controller.predict(s) for s in SHAPES}
    for _ in range(40):
        controller.offer(0.0, 0)
        batch = controller.next_batch(0.0)
        assert batch is not None and batch.shape == 1
        controller.finish(batch, 2 * affine_cost(1))  # the machine got twice as slow
    assert controller.predict(1) == pytest.approx(2 * affine_cost(1), rel=0.01)
    # shapes not run follow part of the way (coupling), so admission does not trust stale numbers
    assert all(controller.predict(s) > 1.3 * before[s] for s in SHAPES[1:])
    assert controller.safety() > 1.0


def test_a_shape_measured_too_dear_is_run_again_and_learned() -> None:
    from vidsearch.serve.scheduler import EXPLORE_EVERY

    # a warm-up call of shape 2 was slow (3x): batching looks useless, so shape 2 would never run again
    controller = warmed(BatchPolicy(latency_target_ms=200, max_batch=2, shapes=(1, 2)))
    controller.set_service(2, 3 * affine_cost(2))
    assert controller.best_shape() == 1
    now, shapes = 0.0, []
    for i in range(2 * EXPLORE_EVERY):
        controller.offer(now, 2 * i)
        controller.offer(now, 2 * i + 1)  # two queued: a batch of 2 can be filled
        batch = controller.next_batch(now)
        assert batch is not None
        shapes.append(batch.shape)
        now += affine_cost(batch.shape)
        controller.finish(batch, affine_cost(batch.shape))
        while (rest := controller.next_batch(now)) is not None:
            now += affine_cost(rest.shape)
            controller.finish(rest, affine_cost(rest.shape))
            shapes.append(rest.shape)
    first = shapes.index(2)
    assert first >= EXPLORE_EVERY - 1, "not before EXPLORE_EVERY batches"
    assert controller.predict(2) < 2 * affine_cost(2), "the new measurement moved the estimate toward the truth"
    assert controller.explored >= 1 and shapes[-1] == 2 and controller.best_shape() == 2


def test_no_exploration_at_the_cost_of_a_deadline() -> None:
    controller = warmed(BatchPolicy(latency_target_ms=200, max_batch=2, shapes=(1, 2)))
    controller.set_service(2, 3 * affine_cost(2))
    controller.batches = 10_000  # long since shape 2 was measured
    controller.offer(0.0, 0)
    controller.offer(0.0, 1)
    late = controller.next_batch(0.150)  # the oldest has waited 150 ms: 2 x 78 ms more would miss 200 ms
    assert late is not None and late.shape == 1 and controller.explored == 0


def test_unmeasured_shapes_are_interpolated() -> None:
    controller: BatchController[int] = BatchController(BatchPolicy())
    assert controller.predict(8) == 0.0
    controller.set_service(2, 0.010)
    controller.set_service(8, 0.040)
    assert controller.predict(4) == pytest.approx(0.020)
    # beyond the measured shapes the guess is optimistic, so a cold scheduler tries larger batches
    assert controller.predict(32) == pytest.approx(0.040)
    assert controller.predict(1) == pytest.approx(0.005)
    assert controller.best_shape() == 32


def test_batching_beats_max_batch_1_by_1_5x(affine_sweeps: dict[str, dict[float, SimResult]]) -> None:
    target = 0.200
    batched = throughput_at_target(affine_sweeps["batched"], target)
    single = throughput_at_target(affine_sweeps["single"], target)
    assert single == pytest.approx(1 / affine_cost(1), rel=0.1)  # one worker, one at a time: ~43/s
    assert batched >= 1.5 * single, (batched, single)


def test_every_run_keeps_p99_and_never_strands(affine_sweeps: dict[str, dict[float, SimResult]]) -> None:
    for name, results in affine_sweeps.items():
        for rate, r in results.items():
            assert r.stranded == 0, (name, rate)
            assert r.admitted + r.rejected == r.offered
            assert len(r.latencies) == r.admitted, (name, rate)  # every admitted request completed
            assert r.p99 <= 0.200 + 1e-9, (name, rate, r.p99)
            assert all(b.shape in SHAPES and b.units <= b.shape for b in r.batches)
            if name == "single":
                assert all(b.shape == 1 for b in r.batches)


def test_light_load_is_served_without_waiting(affine_sweeps: dict[str, dict[float, SimResult]]) -> None:
    light = affine_sweeps["batched"][10]
    # at 10/s (23 ms each) most requests find the worker idle and start at once
    assert float(np.median(light.waits_before_start)) == 0.0
    assert light.rejected == 0


def test_twice_the_sustainable_load_rejects_the_excess(affine_sweeps: dict[str, dict[float, SimResult]]) -> None:
    target = 0.200
    for name, cost_policy in (("batched", BatchPolicy(latency_target_ms=200)),
                              ("single", BatchPolicy(latency_target_ms=200, max_batch=1))):
        sustainable = sustainable_rate(affine_sweeps[name], target)
        capacity = throughput_at_target(affine_sweeps[name], target)
        assert 0 < sustainable <= capacity * 1.02
        r = simulate(cost_policy, affine_cost, poisson_arrivals(2 * sustainable, 4000, seed=7))
        assert r.p99 <= target and max(r.latencies) <= target, (name, r.p99)
        assert r.goodput >= 0.9 * sustainable, (name, r.goodput, sustainable)  # throughput holds
        # what the worker cannot serve is refused at once, not queued: admitted ~ capacity
        assert r.goodput <= 1.05 * capacity, (name, r.goodput, capacity)
        assert r.reject_fraction >= 1 - 1.05 * capacity / (2 * sustainable), (name, r.reject_fraction)
        assert r.stranded == 0


def test_no_batching_gain_costs_no_throughput() -> None:
    target = 0.200
    rates = [20, 40, 60, 80, 90, 100, 120, 200]
    batched = sweep(BatchPolicy(latency_target_ms=200), linear_cost, rates)
    single = sweep(BatchPolicy(latency_target_ms=200, max_batch=1), linear_cost, rates)
    assert throughput_at_target(batched, target) >= 0.95 * throughput_at_target(single, target)
    for r in batched.values():
        assert r.p99 <= target and r.stranded == 0


def test_memory_budget_caps_units_per_batch() -> None:
    unit = 288 * 288 * 3
    policy = BatchPolicy(latency_target_ms=500, unit_bytes=unit, memory_budget_mb=10 * unit / 2**20)
    r = simulate(policy, affine_cost, poisson_arrivals(300, 2000))
    assert r.batches and max(b.units for b in r.batches) <= 8 and {b.shape for b in r.batches} <= {1, 2, 4, 8}
    assert max(b.shape for b in r.batches) == 8  # the queue was long enough to need the cap
    assert all(b.units * unit <= policy.memory_budget_mb * 2**20 for b in r.batches)


def test_noisy_service_keeps_p99_near_target() -> None:
    policy = BatchPolicy(latency_target_ms=200)
    r = simulate(policy, affine_cost, poisson_arrivals(400, 5000, seed=3), noise=0.15, seed=4)
    assert r.p99 <= 0.200 * 1.05, r.p99
    assert r.goodput >= 150


def test_slowdown_is_learned() -> None:
    policy = BatchPolicy(latency_target_ms=200)
    arrivals = poisson_arrivals(150, 6000, seed=5)
    r = simulate(policy, affine_cost, arrivals, slowdown_at=arrivals[2000], slowdown=2.0)
    late = [lat for lat in r.latencies[-2000:]]
    assert float(np.percentile(late, 99)) <= 0.200 * 1.02
    assert r.stranded == 0


def test_oversize_item_runs_alone() -> None:
    controller = warmed(BatchPolicy(max_batch=8, latency_target_ms=1000))
    controller.offer(0.0, 0, units=1)
    first = controller.next_batch(0.0)
    assert first is not None
    controller.offer(0.001, 1, units=20)
    controller.offer(0.002, 2, units=1)
    controller.finish(first, affine_cost(1))
    big = controller.next_batch(0.03)
    assert big is not None and big.keys == (1,) and big.oversize and big.units == 20
    assert big.predicted_s == pytest.approx(2 * affine_cost(8) + affine_cost(4))
    controller.finish(big, 0.5)  # not a shape: not learned
    assert controller.predict(8) == pytest.approx(affine_cost(8))


def test_rejection_says_when_to_retry() -> None:
    controller = warmed(BatchPolicy(latency_target_ms=100, max_batch=1))
    answers = [controller.offer(0.0, k) for k in range(10)]
    admitted = [a for a in answers if a.admitted]
    rejected = [a for a in answers if not a.admitted]
    assert len(admitted) == 4  # 4 x 23 ms fit in 100 ms, the 5th would finish at 115 ms
    assert rejected and all(a.retry_after_s == pytest.approx(a.predicted_s - 0.1) for a in rejected)
    assert controller.stats()["rejected"] == 6 and controller.queue_len == 4


# -- the threaded scheduler -----------------------------------------------------------------------------

class SleepyRun:
    """A fake ``run``: sleeps 4 ms + 0.5 ms per padded unit, doubles each item; an item < 0 is bad input."""

    def __init__(self, shapes: tuple[int, ...] = SHAPES) -> None:
        self.shapes = shapes
        self.batch_sizes: list[int] = []
        self.gate = threading.Event()
        self.gate.set()
        self.lock = threading.Lock()

    def __call__(self, items: list[int]) -> list[int]:
        self.gate.wait(10)
        with self.lock:
            self.batch_sizes.append(len(items))
        if any(x < 0 for x in items):
            raise ValueError(f"bad item among {items}")
        time.sleep(0.004 + 0.0005 * pad_shape(len(items), self.shapes))
        return [2 * x for x in items]


def test_threads_get_their_own_results_from_batches() -> None:
    run = SleepyRun()
    batches: list[tuple[int, float]] = []
    waits: list[float] = []
    scheduler: BatchScheduler[int, int] = BatchScheduler(
        "fake", run, BatchPolicy(latency_target_ms=2000), on_batch=lambda u, s: batches.append((u, s)),
        on_wait=waits.append)
    scheduler.warm_up(lambda n: 1, repeats=2)
    assert scheduler.stats()["measured_shapes"] == list(SHAPES)
    run.batch_sizes.clear()
    results: dict[int, int] = {}
    errors: list[BaseException] = []

    def client(c: int) -> None:
        try:
            for j in range(25):
                x = c * 1000 + j
                results[x] = scheduler.submit(x).result(timeout=10)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    with scheduler:
        threads = [threading.Thread(target=client, args=(c,)) for c in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors
    assert results == {x: 2 * x for x in results} and len(results) == 200
    assert max(run.batch_sizes) > 1  # 8 clients in flight: batches formed
    assert sum(u for u, _ in batches) == 200 and len(waits) == 200
    stats = scheduler.stats()
    assert stats["batches"] == len(batches) and stats["mean_units"] > 1 and stats["rejected"] == 0


def test_one_bad_item_fails_only_its_own_future() -> None:
    run = SleepyRun()
    scheduler: BatchScheduler[int, int] = BatchScheduler("fake", run, BatchPolicy(latency_target_ms=5000))
    scheduler.warm_up(lambda n: 1, repeats=1)
    run.batch_sizes.clear()
    with scheduler:
        run.gate.clear()  # hold the worker on the first item so the next ones queue up together
        first = scheduler.submit(1)
        deadline = time.monotonic() + 5
        while scheduler.stats()["busy"] is False and time.monotonic() < deadline:
            time.sleep(0.001)
        futures = [scheduler.submit(x) for x in (2, -3, 4, 5)]
        run.gate.set()
        assert first.result(5) == 2
        assert futures[0].result(5) == 4 and futures[2].result(5) == 8 and futures[3].result(5) == 10
        with pytest.raises(ValueError, match="bad item"):
            futures[1].result(5)
    assert 4 in run.batch_sizes  # the four ran as one batch first, then one by one
    assert scheduler.stats()["failed_items"] == 1


def test_overload_is_refused_at_once_with_retry_after() -> None:
    run = SleepyRun()
    scheduler: BatchScheduler[int, int] = BatchScheduler("fake", run, BatchPolicy(latency_target_ms=30, max_batch=1))
    scheduler.warm_up(lambda n: 1, repeats=2)
    accepted, refused, answer_s = [], [], []
    with scheduler:
        run.gate.clear()
        for x in range(30):
            t0 = time.monotonic()
            try:
                accepted.append(scheduler.submit(x))
            except OverloadedError as exc:
                answer_s.append(time.monotonic() - t0)
                refused.append(exc)
        run.gate.set()
        assert [f.result(5) for f in accepted] == [2 * x for x in range(len(accepted))]
    assert 1 <= len(accepted) <= 10 and len(refused) == 30 - len(accepted)
    assert all(e.retry_after > 0 and "target" in str(e) for e in refused)
    assert max(answer_s) < 0.020


def test_asubmit_and_close() -> None:
    run = SleepyRun()
    scheduler: BatchScheduler[int, int] = BatchScheduler("fake", run, BatchPolicy(latency_target_ms=5000))
    scheduler.start()

    async def many() -> list[int]:
        return list(await asyncio.gather(*(scheduler.asubmit(x) for x in range(12))))

    assert asyncio.run(many()) == [2 * x for x in range(12)]
    run.gate.clear()
    held = scheduler.submit(100)
    while not scheduler.stats()["busy"]:
        time.sleep(0.001)
    pending = [scheduler.submit(x) for x in range(3)]
    threading.Timer(0.05, run.gate.set).start()
    scheduler.close()
    assert held.result(5) == 200  # the running batch finishes
    for f in pending:
        with pytest.raises(OverloadedError, match="shutting down"):
            f.result(5)
    with pytest.raises(OverloadedError, match="closed"):
        scheduler.submit(1)


def test_cancelled_item_is_skipped() -> None:
    run = SleepyRun()
    scheduler: BatchScheduler[int, int] = BatchScheduler("fake", run, BatchPolicy(latency_target_ms=5000))
    with scheduler:
        run.gate.clear()
        first = scheduler.submit(1)
        while not scheduler.stats()["busy"]:
            time.sleep(0.001)
        dropped = scheduler.submit(2)
        kept = scheduler.submit(3)
        assert dropped.cancel()
        run.gate.set()
        assert first.result(5) == 2 and kept.result(5) == 6
    assert dropped.cancelled()
    assert run.batch_sizes[-1] == 1  # only the live item ran


# -- the real encoder -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def encoder_and_frames(footage: dict[str, object]) -> tuple[object, np.ndarray]:
    from vidsearch.config import EncodeConfig
    from vidsearch.decode import iter_frames
    from vidsearch.encode.frame import load_encoder

    encoder = load_encoder(EncodeConfig().encoder)
    frames = [f.image for f in iter_frames(footage["bigbuckbunny.mp4"], encoder.input_size, fps=5)][:24]  # type: ignore[arg-type]
    assert len(frames) == 24
    return encoder, np.stack(frames)


def test_real_encoder_batched_equals_alone(encoder_and_frames: tuple[object, np.ndarray]) -> None:
    encoder, frames = encoder_and_frames
    w, h = encoder.input_size  # type: ignore[attr-defined]
    shapes = (1, 2, 4, 8)
    sizes: list[int] = []
    gate = threading.Event()

    def run(images: list[np.ndarray]) -> list[np.ndarray]:
        gate.wait(30)
        shape = pad_shape(len(images), shapes)
        batch = np.zeros((shape, h, w, 3), np.uint8)  # padded with black frames up to a fixed shape
        batch[: len(images)] = np.stack(images)
        sizes.append(len(images))
        return list(encoder.encode(batch)[: len(images)])  # type: ignore[attr-defined]

    alone = np.stack([encoder.encode(frames[i : i + 1])[0] for i in range(len(frames))])  # type: ignore[attr-defined]
    # No warm-up: a cold model guesses larger shapes no dearer than the measured ones, so batches form
    # whatever this CPU's curve is (after warm-up, a flat curve rightly keeps batches at 1).
    policy = BatchPolicy(latency_target_ms=60_000, max_batch=8, shapes=shapes, unit_bytes=w * h * 3)
    scheduler: BatchScheduler[np.ndarray, np.ndarray] = BatchScheduler("encode", run, policy)
    out: dict[int, np.ndarray] = {}

    def client(c: int) -> None:
        for i in range(c, len(frames), 6):
            out[i] = scheduler.submit(frames[i]).result(timeout=120)

    with scheduler:
        held = scheduler.submit(frames[0])  # holds the worker at the gate while the clients queue up
        while not scheduler.stats()["busy"]:
            time.sleep(0.001)
        threads = [threading.Thread(target=client, args=(c,)) for c in range(6)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 30
        while scheduler.stats()["queue_items"] < 6 and time.monotonic() < deadline:
            time.sleep(0.001)
        gate.set()
        for t in threads:
            t.join()
        assert np.allclose(held.result(60), alone[0], atol=1e-4)
    assert sorted(out) == list(range(len(frames)))
    assert np.allclose(np.stack([out[i] for i in range(len(frames))]), alone, atol=1e-4)
    assert max(sizes) > 1, sizes
    assert max(sizes) <= 8


def test_real_encoder_warm_up_measures_every_shape(encoder_and_frames: tuple[object, np.ndarray]) -> None:
    encoder, frames = encoder_and_frames

    def run(images: list[np.ndarray]) -> list[np.ndarray]:
        return list(encoder.encode(np.stack(images)))  # type: ignore[attr-defined]

    scheduler: BatchScheduler[np.ndarray, np.ndarray] = BatchScheduler(
        "encode", run, BatchPolicy(max_batch=2, shapes=(1, 2)))
    scheduler.warm_up(lambda n: frames[0], repeats=1)
    stats = scheduler.stats()
    assert stats["measured_shapes"] == [1, 2]
    assert 0 < stats["service_ms"][1] and 0 < stats["service_ms"][2]


# -- admission at light load, reservations, several workers, the warm-up's limits ------------------------

def test_light_load_on_a_noisy_machine_never_refuses() -> None:
    # A busy machine: service times spread (safety > 1) and a lone request's batch far from full. Counting
    # the own batch as a full one of the cap, times the safety factor, refused 25-30 % of lone images here.
    policy = BatchPolicy(latency_target_ms=200)
    r = simulate(policy, affine_cost, poisson_arrivals(5, 1000, seed=11), noise=0.3, seed=12)
    assert r.rejected == 0 and r.p99 <= 0.200
    controller = warmed(policy)
    for i in range(200):
        controller.record_ratio(1.0 + 0.4 * (i % 2))  # a wide spread: safety well above 1
    assert controller.safety() > 1.3
    controller.offer(0.0, 0)
    running = controller.next_batch(0.0)
    assert running is not None
    assert controller.offer(0.001, 1).admitted  # worker busy, nothing queued: admitted
    assert controller.predicted_wait(0.001, 1) < 0.1


def test_a_joiner_may_not_push_its_batch_past_the_oldest_deadline() -> None:
    controller = warmed(BatchPolicy(latency_target_ms=100))  # 20 ms + 3 ms per unit: batches of up to 8
    assert controller.best_shape() == 8
    controller.offer(0.0, 0)
    assert controller.next_batch(0.0) is not None  # runs 0 - 23 ms
    assert controller.offer(0.0, 1).admitted  # queued behind it
    assert controller.offer(0.060, 2).admitted  # joins item 1: a batch of 2 (26 ms) ends at 86 ms
    decision = controller.offer(0.070, 3)  # would make it 4 (32 ms), ending at 102 ms: item 1 would be late
    assert not decision.admitted and decision.retry_after_s == pytest.approx(0.002)
    assert decision.predicted_s == pytest.approx(affine_cost(4))  # its own prediction alone was fine


def test_reservations_count_ahead_and_are_given_back() -> None:
    controller = warmed(BatchPolicy(latency_target_ms=200, max_batch=1), lambda s: 0.050 * s)
    first = controller.reserve(0.0, 1, arrive_after=0.030)  # decoding for 30 ms; nothing else: admitted
    assert first.admitted and first.predicted_s == pytest.approx(0.080)
    assert controller.reserved_units == 1
    # a second query decoding as long is predicted behind the first one's encode: 50 + 50 ms
    assert controller.predicted_wait(0.0, 1, arrive_after=0.030) == pytest.approx(0.100)
    # a decode outlasting the backlog: the backlog does not count on top of it
    assert controller.predicted_wait(0.0, 1, arrive_after=0.150) == pytest.approx(0.200)
    for _ in range(3):  # 100, 150 and 200 ms
        assert controller.reserve(0.0, 1, arrive_after=0.030).admitted
    refused = controller.reserve(0.0, 1, arrive_after=0.030)
    assert not refused.admitted and refused.predicted_s == pytest.approx(0.250)
    assert controller.reserved_units == 4 and controller.stats()["rejected"] == 1
    assert controller.offer(0.03, 100, 1, reserved=1).admitted  # queued in place of its reservation
    assert controller.reserved_units == 3 and controller.queue_units == 1
    for _ in range(3):
        controller.release(1)  # their decodes failed
    assert controller.reserved_units == 0 and controller.admitted == 4


def test_two_workers_run_two_batches_at_once_and_admission_knows() -> None:
    policy = BatchPolicy(latency_target_ms=100, max_batch=1)
    one = warmed(policy, lambda s: 0.040 * s)
    two: BatchController[int] = BatchController(policy, workers=2)
    two.set_service(1, 0.040)
    for c in (one, two):
        c.offer(0.0, 0)
        c.offer(0.0, 1)
    assert one.next_batch(0.0) is not None and one.next_batch(0.0) is None
    assert two.next_batch(0.0) is not None and two.next_batch(0.0) is not None and two.next_batch(0.0) is None
    # one worker: a third item waits 40 ms + 40 ms of the queued one, then runs 40 ms; two: 40 + 40
    assert one.predicted_wait(0.0, 1) == pytest.approx(0.120)
    assert two.predicted_wait(0.0, 1) == pytest.approx(0.080)
    assert not one.offer(0.0, 2).admitted and two.offer(0.0, 2).admitted


def test_threaded_scheduler_with_two_workers_overlaps_batches() -> None:
    active, peak = [0], [0]
    lock = threading.Lock()

    def run(items: list[int]) -> list[int]:
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.02)
        with lock:
            active[0] -= 1
        return [2 * x for x in items]

    scheduler: BatchScheduler[int, int] = BatchScheduler("fake", run, BatchPolicy(latency_target_ms=5000, max_batch=1),
                                                         workers=2)

    async def many() -> list[int]:
        return list(await asyncio.gather(*(scheduler.asubmit(x) for x in range(10))))

    with scheduler:
        t0 = time.monotonic()
        assert asyncio.run(many()) == [2 * x for x in range(10)]
        elapsed = time.monotonic() - t0
    assert peak[0] == 2 and elapsed < 0.19  # 10 x 20 ms on one worker would take 200 ms


def test_warm_up_stops_at_the_target_and_the_memory_budget() -> None:
    memory = [0]
    now = [0.0]  # a virtual clock that only `run` advances: a loaded CI machine cannot stretch a batch

    def run(items: list[int]) -> list[int]:
        units = pad_shape(sum(items), SHAPES)
        memory[0] = max(memory[0], units * 10 * 2**20)  # an arena keeping 10 MiB per unit of the largest batch
        now[0] += 0.002 * units
        return items

    def clock() -> float:
        return now[0]

    slow: BatchScheduler[int, int] = BatchScheduler("fake", run, BatchPolicy(latency_target_ms=40), clock=clock)
    slow.warm_up(lambda n: 1, repeats=1)
    # 2 ms per unit: shape 8 (16 ms) fits half the 40 ms target, shape 16 (32 ms) does not
    assert slow.warmed_shapes == (1, 2, 4, 8) and slow.shapes == (1, 2, 4, 8)
    memory[0] = 0
    tight: BatchScheduler[int, int] = BatchScheduler("fake", run, BatchPolicy(latency_target_ms=10_000,
                                                                              memory_budget_mb=50), clock=clock)
    tight.warm_up(lambda n: 1, repeats=1, memory_probe=lambda: memory[0])
    # 10 MiB per unit: 4 units grow 40 MiB; 8 would be 80 MiB, past the 50 MiB budget
    assert tight.warmed_shapes == (1, 2, 4) and max(tight.warm_up_memory.values()) <= 50
    assert tight.stats()["shapes"] == [1, 2, 4]


def test_time_outside_the_scheduler_counts_against_the_target() -> None:
    controller = warmed(BatchPolicy(latency_target_ms=100))
    controller.offer(0.0, 0)
    assert controller.next_batch(0.0) is not None  # busy until 23 ms; an item now would end at 46 ms
    assert controller.offer(0.0, 1, extra_s=0.050).admitted  # 96 ms with the 50 ms outside: fits
    decision = controller.offer(0.0, 2, extra_s=0.080)  # joins item 1 (a batch of 2: 26 ms): 129 ms
    assert not decision.admitted and decision.predicted_s == pytest.approx(0.023 + 0.026 + 0.080)


def test_tail_estimate_is_a_high_quantile_of_the_recent_window() -> None:
    from vidsearch.serve.query import TailEstimate

    tail = TailEstimate(quantile=0.99, window=100, every=10)
    for i in range(9):
        tail.add(1.0)
    assert tail.value == 0.0  # not computed before `every` values
    tail.add(1.0)
    assert tail.value == 1.0
    for i in range(100):
        tail.add(0.001 * i)  # the old values leave the window
    assert tail.value == pytest.approx(0.099)
