"""Prometheus metrics of one server (a registry per app, never the process-global one, so two apps in
one process, as in the tests, do not mix their counts).

Per-stage latency histograms (decode, encode, search, rerank), the batch schedulers' batch sizes and
queue waits, requests and errors by endpoint and status, and the collection's size.

With several worker processes (``vidsearch serve --workers N``) ``prometheus_client`` runs in its
multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``, set by the parent before the import): counters and
histograms are summed over the workers at each scrape; the collection gauges are the most recent value
written by any worker; the schedulers' live state is the answering worker's.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# seconds: 1 ms .. 30 s (a stored-range query takes about a millisecond, a long clip's decode seconds)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)

CONTENT_TYPE = CONTENT_TYPE_LATEST


class ServeMetrics:
    """The server's metrics, in their own :class:`CollectorRegistry`."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.stage_seconds = Histogram("vidsearch_stage_seconds", "Time per query in each stage",
                                       ["stage"], buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("vidsearch_batch_size", "Units per batch (frames for encode, queries for search)",
                                    ["scheduler"], buckets=BATCH_BUCKETS, registry=r)
        self.batch_seconds = Histogram("vidsearch_batch_seconds", "Service time of one batch", ["scheduler"],
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.queue_wait = Histogram("vidsearch_queue_wait_seconds", "Time an item waited before its batch ran",
                                    ["scheduler"], buckets=LATENCY_BUCKETS, registry=r)
        self.requests = Counter("vidsearch_http_requests", "HTTP requests answered",
                                ["endpoint", "method", "status"], registry=r)
        self.errors = Counter("vidsearch_http_errors", "HTTP requests answered with an error",
                              ["endpoint", "status", "type"], registry=r)
        self.request_seconds = Histogram("vidsearch_http_request_seconds", "Time to answer a request",
                                         ["endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.overloaded = Counter("vidsearch_overloaded", "Requests refused with 503 to keep the latency target "
                                  "(a file query then served by the light encoder counts here too)", ["stage"], registry=r)
        self.light_queries = Counter("vidsearch_light_encoder_queries", "File queries encoded by the light encoder "
                                     "because the collection's could not meet the latency target", registry=r)
        self.videos = Gauge("vidsearch_videos", "Videos in the searched snapshot", registry=r,
                            multiprocess_mode="livemostrecent")
        self.segments = Gauge("vidsearch_segments", "Segments in the searched snapshot", registry=r,
                              multiprocess_mode="livemostrecent")
        self.generation = Gauge("vidsearch_generation", "Catalogue generation of the searched snapshot", registry=r,
                                multiprocess_mode="livemax")
        self.jobs = Gauge("vidsearch_index_jobs", "Index jobs by status", ["status"], registry=r,
                          multiprocess_mode="livesum")  # only the writer runs jobs
        self._live = CollectorRegistry(auto_describe=True)  # per-process state, collected at each scrape
        self.indexed_files = Counter("vidsearch_indexed_files", "Files processed by index jobs", ["status"], registry=r)

    def watch_schedulers(self, stats: Callable[[], list[dict[str, Any]]]) -> None:
        """Export the batch schedulers' state at each scrape: ``stats()`` returns their ``stats()`` dicts."""
        collector = _SchedulerCollector(stats)
        (self._live if multiprocess_dir() else self.registry).register(collector)

    def observe_stage(self, stage: str, seconds: float) -> None:
        self.stage_seconds.labels(stage).observe(max(0.0, seconds))

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric (of every worker, in multiprocess mode)."""
        if not multiprocess_dir():
            return generate_latest(self.registry)
        from prometheus_client import multiprocess

        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged)
        return generate_latest(merged) + generate_latest(self._live)


def multiprocess_dir() -> str | None:
    """The folder of ``prometheus_client``'s multiprocess mode (None: one process)."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get("prometheus_multiproc_dir") or None


class _SchedulerCollector:
    """Queue length, predicted service time per batch shape, admissions and refusals of each scheduler."""

    def __init__(self, stats: Callable[[], list[dict[str, Any]]]) -> None:
        self.stats = stats

    def describe(self) -> list[Metric]:
        return []  # collected on each scrape only (no fixed series)

    def collect(self) -> Iterator[Metric]:
        queue = GaugeMetricFamily("vidsearch_scheduler_queue_units", "Units queued in a batch scheduler",
                                  labels=["scheduler"])
        service = GaugeMetricFamily("vidsearch_scheduler_service_seconds",
                                    "Predicted service time of a batch of each shape", labels=["scheduler", "shape"])
        admitted = CounterMetricFamily("vidsearch_scheduler_admitted", "Items admitted", labels=["scheduler"])
        rejected = CounterMetricFamily("vidsearch_scheduler_rejected", "Items refused (503) to keep the target",
                                       labels=["scheduler"])
        for st in self.stats():
            name = str(st.get("name", ""))
            queue.add_metric([name], float(st.get("queue_units", 0)))
            for shape, ms in (st.get("service_ms") or {}).items():
                service.add_metric([name, str(shape)], float(ms) / 1000)
            admitted.add_metric([name], float(st.get("admitted", 0)))
            rejected.add_metric([name], float(st.get("rejected", 0)))
        yield from (queue, service, admitted, rejected)
